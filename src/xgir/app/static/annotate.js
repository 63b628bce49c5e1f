// Annotator: click SLIC segments or paint with a brush to mark pixels irrelevant (1) or relevant (2);
// undo, clear, save. Keys: n / p next / previous image (in the gallery's order), s save, z undo, b brush,
// g segments, 1 2 3 mode. The image is scaled to the window; brush strokes are continuous.
// Proposals that lie on the explanation's own evidence are flagged (violet) and are not marked by
// "Mark all proposed" (which asks first).
"use strict";
const NONE = 0, IRR = 1, REL = 2;
const COLOURS = {1: [220, 30, 30, 130], 2: [30, 170, 60, 130]};
const ORANGE = [255, 150, 0, 255], VIOLET = [170, 0, 255, 255], WHITE = [255, 255, 255, 110];
const canvas = document.getElementById("canvas"), ctx = canvas.getContext("2d");
const statusLine = document.getElementById("status"), warning = document.getElementById("warning");
let H = 0, W = 0, seg = null, proposed = [], flagged = new Set(), evidence = {}, labels = null;
let history = [], dirty = false, painting = false, last = null;
const base = new Image();
const overlay = document.createElement("canvas");

const mode = () => document.querySelector("input[name=mode]:checked").value;
const tool = () => document.querySelector("input[name=tool]:checked").value;
const value = () => ({irrelevant: IRR, relevant: REL, erase: NONE})[mode()];
function say(text, bad) { statusLine.textContent = text; statusLine.className = bad ? "bad" : "muted"; }
function warn(text) { warning.textContent = text; }
const pct = s => `${Math.round(100 * evidence[s].share)}%`;

function fit() {
  // the largest size that fits beside the tools and above the fold, at least 256 px
  const tools = document.querySelector(".tools").getBoundingClientRect().width || 240;
  const top = canvas.getBoundingClientRect().top + window.scrollY;
  const room = Math.min(window.innerWidth - tools - 80, window.innerHeight - top - 24);
  const side = Math.max(256, Math.floor(room));
  canvas.width = Math.round(side * W / Math.max(H, W)); canvas.height = Math.round(side * H / Math.max(H, W));
  overlay.width = canvas.width; overlay.height = canvas.height;
}

function draw() {
  // overlay at display resolution: label colours per cell, lines where segments meet
  // (orange around proposals, violet around flagged ones, faint white elsewhere)
  const CW = canvas.width, CH = canvas.height;
  const img = new ImageData(CW, CH), d = img.data;
  const isProposed = new Set(proposed);
  const col = new Int32Array(CW + 1);
  for (let x = 0; x <= CW; x++) col[x] = Math.min(W - 1, Math.floor(x * W / CW));
  for (let y = 0; y < CH; y++) {
    const r = Math.min(H - 1, Math.floor(y * H / CH)), r2 = Math.min(H - 1, Math.floor((y + 1) * H / CH));
    for (let x = 0; x < CW; x++) {
      const c = col[x], i = r * W + c, s = seg[i], o = 4 * (y * CW + x);
      const right = col[x + 1] !== c ? seg[r * W + col[x + 1]] : s, down = r2 !== r ? seg[r2 * W + c] : s;
      const other = right !== s ? right : (down !== s ? down : null);
      let rgba = COLOURS[labels[i]] || [0, 0, 0, 0];
      if (other !== null) {
        if (flagged.has(s) || flagged.has(other)) rgba = VIOLET;
        else rgba = isProposed.has(s) || isProposed.has(other) ? ORANGE : WHITE;
      }
      d[o] = rgba[0]; d[o + 1] = rgba[1]; d[o + 2] = rgba[2]; d[o + 3] = rgba[3];
    }
  }
  overlay.getContext("2d").putImageData(img, 0, 0);
  ctx.imageSmoothingEnabled = false;
  ctx.clearRect(0, 0, CW, CH);
  ctx.drawImage(base, 0, 0, CW, CH);
  ctx.drawImage(overlay, 0, 0);
  const n = labels.reduce((a, v) => a + (v === IRR), 0), m = labels.reduce((a, v) => a + (v === REL), 0);
  say(`${n} irrelevant, ${m} relevant pixels${dirty ? " (not saved)" : ""}`);
}

function pixel(ev) {
  const rect = canvas.getBoundingClientRect();
  const c = Math.floor((ev.clientX - rect.left) / rect.width * W), r = Math.floor((ev.clientY - rect.top) / rect.height * H);
  return [Math.min(Math.max(r, 0), H - 1), Math.min(Math.max(c, 0), W - 1)];
}
function remember() { history.push(labels.slice()); if (history.length > 100) history.shift(); dirty = true; }

function clickSegment(r, c) {
  const s = seg[r * W + c], v = value();
  let all = true;
  for (let i = 0; i < labels.length; i++) if (seg[i] === s && labels[i] !== v) { all = false; break; }
  remember();
  const next = all && v !== NONE ? NONE : v;  // clicking a marked segment again unmarks it
  for (let i = 0; i < labels.length; i++) if (seg[i] === s) labels[i] = next;
  if (next === IRR && flagged.has(s))
    warn(`Careful: this segment lies on the explanation's own evidence (${pct(s)} of it); mark it irrelevant ` +
         "only if the model must not use it (z undoes).");
  draw();
}
function stamp(r, c, rad, v) {
  for (let dr = -rad; dr <= rad; dr++) for (let dc = -rad; dc <= rad; dc++) {
    const rr = r + dr, cc = c + dc;
    if (rr >= 0 && rr < H && cc >= 0 && cc < W && dr * dr + dc * dc <= rad * rad + rad) labels[rr * W + cc] = v;
  }
}
function paint(r, c) {
  // every cell on the way from the last point: a continuous stroke however fast the pointer moves
  const rad = Number(document.getElementById("brush").value) - 1, v = value();
  const [r0, c0] = last || [r, c];
  const steps = Math.max(Math.abs(r - r0), Math.abs(c - c0), 1);
  for (let k = 0; k <= steps; k++) stamp(Math.round(r0 + (r - r0) * k / steps), Math.round(c0 + (c - c0) * k / steps), rad, v);
  last = [r, c];
  draw();
}

canvas.addEventListener("pointerdown", ev => {
  const [r, c] = pixel(ev);
  if (tool() === "segment") return clickSegment(r, c);
  canvas.setPointerCapture(ev.pointerId);
  remember(); painting = true; last = null; paint(r, c);
});
canvas.addEventListener("pointermove", ev => { if (painting) { const [r, c] = pixel(ev); paint(r, c); } });
window.addEventListener("pointerup", () => { painting = false; last = null; });

function undo() { if (history.length) { labels = history.pop(); dirty = true; warn(""); draw(); } }
function clear() { remember(); labels.fill(NONE); draw(); }

const dialog = document.getElementById("confirm-mark");
function askMarkProposed() {
  // mark the unflagged proposals only, after a confirmation that names the flagged ones
  const plain = proposed.filter(s => !flagged.has(s)), held = proposed.filter(s => flagged.has(s));
  const text = document.getElementById("confirm-text");
  text.textContent = (plain.length ? `Mark ${plain.length} proposed segment(s) as irrelevant?` :
                      "Every proposed segment is flagged: nothing to mark at once.") +
    (held.length ? ` ${held.length} flagged segment(s) lie on the explanation's own evidence ` +
                   `(${held.map(pct).join(", ")} of it) and stay unmarked; click them one by one if they are truly irrelevant.` : "");
  const ok = document.getElementById("confirm-ok");
  ok.disabled = !plain.length;
  ok.textContent = plain.length ? `Mark ${plain.length}` : "Mark";
  dialog.showModal();
}
function markProposed() {
  const p = new Set(proposed.filter(s => !flagged.has(s)));
  if (!p.size) return;
  remember();
  for (let i = 0; i < labels.length; i++) if (p.has(seg[i])) labels[i] = IRR;
  draw();
}
document.getElementById("confirm-ok").addEventListener("click", () => { dialog.close(); markProposed(); });
document.getElementById("confirm-cancel").addEventListener("click", () => dialog.close());

function rows(v) {
  const out = [];
  for (let r = 0; r < H; r++) out.push(Array.from(labels.subarray(r * W, (r + 1) * W), x => (x === v ? 1 : 0)));
  return out;
}
async function save() {
  say("saving…");
  const body = {irrelevant: rows(IRR), relevant: rows(REL), annotator: document.getElementById("annotator").value};
  const resp = await fetch(`/api/images/${IMAGE_ID}/feedback`, {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)});
  const data = await resp.json();
  if (!resp.ok) return say("error: " + data.error, true);
  dirty = false;
  draw();
  say(`saved: ${data.saved} region row(s), ${data.irrelevant_pixels} irrelevant and ${data.relevant_pixels} relevant pixels`);
  statusLine.dataset.saved = String(data.saved);
}

document.getElementById("undo").addEventListener("click", undo);
document.getElementById("clear").addEventListener("click", clear);
document.getElementById("save").addEventListener("click", save);
document.getElementById("mark-proposed").addEventListener("click", askMarkProposed);
document.addEventListener("keydown", ev => {
  if (dialog.open) return;
  if (ev.target.tagName === "INPUT" && ev.target.type !== "radio" && ev.target.type !== "range") return;
  if (ev.key === "s" && !ev.altKey) { ev.preventDefault(); save(); }
  else if (ev.ctrlKey || ev.metaKey) return;
  else if (ev.key === "n" || ev.key === "ArrowRight") location.href = `/annotate/${NEXT}${QS}`;
  else if (ev.key === "p" || ev.key === "ArrowLeft") location.href = `/annotate/${PREV}${QS}`;
  else if (ev.key === "z") undo();
  else if (ev.key === "b") document.querySelector("input[name=tool][value=brush]").checked = true;
  else if (ev.key === "g") document.querySelector("input[name=tool][value=segment]").checked = true;
  else if ("123".includes(ev.key) && ev.key) document.querySelectorAll("input[name=mode]")[Number(ev.key) - 1].checked = true;
});
window.addEventListener("beforeunload", ev => { if (dirty) ev.preventDefault(); });
window.addEventListener("resize", () => { if (labels) { fit(); draw(); } });

async function start() {
  const [sr, fr] = await Promise.all([fetch(`/api/images/${IMAGE_ID}/segments`), fetch(`/api/images/${IMAGE_ID}/feedback`)]);
  if (!sr.ok || !fr.ok) return say("error: " + (await (sr.ok ? fr : sr).json()).error, true);
  const s = await sr.json(), f = await fr.json();
  H = s.height; W = s.width; proposed = s.proposed; flagged = new Set(s.flagged); evidence = s.evidence;
  seg = Int32Array.from(s.segments.flat());
  labels = new Uint8Array(H * W);
  f.irrelevant.flat().forEach((v, i) => { if (v) labels[i] = IRR; });
  f.relevant.flat().forEach((v, i) => { if (v) labels[i] = REL; });
  const list = document.getElementById("flagged");
  list.textContent = flagged.size ? `${flagged.size} of ${proposed.length} proposals (violet) lie on the explanation's ` +
    `own evidence: ${[...flagged].map(pct).join(", ")} of its mass. Rejecting them teaches the model to ignore what ` +
    "it should use." : "";
  list.dataset.count = String(flagged.size);
  fit();
  base.onload = () => { draw(); canvas.dataset.ready = "1"; };
  base.src = `/api/images/${IMAGE_ID}/image.png`;
}
start();
