// Annotator: click SLIC segments or paint with a brush to mark pixels irrelevant (1) or relevant (2);
// undo, clear, save. Keys: n / p next / previous image, s save, z undo, b brush, g segments, 1 2 3 mode.
"use strict";
const NONE = 0, IRR = 1, REL = 2;
const COLOURS = {1: [220, 30, 30, 130], 2: [30, 170, 60, 130]};
const canvas = document.getElementById("canvas"), ctx = canvas.getContext("2d");
const statusLine = document.getElementById("status");
let H = 0, W = 0, S = 1, seg = null, proposed = [], labels = null, history = [], dirty = false, painting = false;
const base = new Image();
const overlay = document.createElement("canvas");

const mode = () => document.querySelector("input[name=mode]:checked").value;
const tool = () => document.querySelector("input[name=tool]:checked").value;
const value = () => ({irrelevant: IRR, relevant: REL, erase: NONE})[mode()];
function say(text, bad) { statusLine.textContent = text; statusLine.className = bad ? "bad" : "muted"; }

function draw() {
  // overlay at display resolution: label colours per cell, 1-px lines where segments meet
  const K = canvas.width / W, CW = canvas.width, CH = canvas.height;
  const img = new ImageData(CW, CH), d = img.data;
  const isProposed = new Set(proposed);
  for (let y = 0; y < CH; y++) {
    const r = Math.floor(y / K), yEdge = (y + 1) % K < 1 && r + 1 < H;
    for (let x = 0; x < CW; x++) {
      const c = Math.floor(x / K), i = r * W + c, s = seg[i], o = 4 * (y * CW + x);
      const xEdge = (x + 1) % K < 1 && c + 1 < W;
      const edgeWith = xEdge && seg[i + 1] !== s ? seg[i + 1] : (yEdge && seg[i + W] !== s ? seg[i + W] : null);
      let rgba = COLOURS[labels[i]] || [0, 0, 0, 0];
      if (edgeWith !== null) rgba = isProposed.has(s) || isProposed.has(edgeWith) ? [255, 150, 0, 255] : [255, 255, 255, 110];
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
  draw();
}
function paint(r, c) {
  const rad = Number(document.getElementById("brush").value) - 1, v = value();
  for (let dr = -rad; dr <= rad; dr++) for (let dc = -rad; dc <= rad; dc++) {
    const rr = r + dr, cc = c + dc;
    if (rr >= 0 && rr < H && cc >= 0 && cc < W && dr * dr + dc * dc <= rad * rad + rad) labels[rr * W + cc] = v;
  }
  draw();
}

canvas.addEventListener("mousedown", ev => {
  const [r, c] = pixel(ev);
  if (tool() === "segment") return clickSegment(r, c);
  remember(); painting = true; paint(r, c);
});
canvas.addEventListener("mousemove", ev => { if (painting) { const [r, c] = pixel(ev); paint(r, c); } });
window.addEventListener("mouseup", () => { painting = false; });

function undo() { if (history.length) { labels = history.pop(); dirty = true; draw(); } }
function clear() { remember(); labels.fill(NONE); draw(); }
function markProposed() {
  remember();
  const p = new Set(proposed);
  for (let i = 0; i < labels.length; i++) if (p.has(seg[i])) labels[i] = IRR;
  draw();
}
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
document.getElementById("mark-proposed").addEventListener("click", markProposed);
document.addEventListener("keydown", ev => {
  if (ev.target.tagName === "INPUT" && ev.target.type !== "radio" && ev.target.type !== "range") return;
  if (ev.key === "s" && !ev.altKey) { ev.preventDefault(); save(); }
  else if (ev.ctrlKey || ev.metaKey) return;
  else if (ev.key === "n" || ev.key === "ArrowRight") location.href = `/annotate/${NEXT}`;
  else if (ev.key === "p" || ev.key === "ArrowLeft") location.href = `/annotate/${PREV}`;
  else if (ev.key === "z") undo();
  else if (ev.key === "b") document.querySelector("input[name=tool][value=brush]").checked = true;
  else if (ev.key === "g") document.querySelector("input[name=tool][value=segment]").checked = true;
  else if ("123".includes(ev.key) && ev.key) document.querySelectorAll("input[name=mode]")[Number(ev.key) - 1].checked = true;
});
window.addEventListener("beforeunload", ev => { if (dirty) ev.preventDefault(); });

async function start() {
  const [sr, fr] = await Promise.all([fetch(`/api/images/${IMAGE_ID}/segments`), fetch(`/api/images/${IMAGE_ID}/feedback`)]);
  if (!sr.ok || !fr.ok) return say("error: " + (await (sr.ok ? fr : sr).json()).error, true);
  const s = await sr.json(), f = await fr.json();
  H = s.height; W = s.width; S = s.scale; proposed = s.proposed;
  seg = Int32Array.from(s.segments.flat());
  labels = new Uint8Array(H * W);
  f.irrelevant.flat().forEach((v, i) => { if (v) labels[i] = IRR; });
  f.relevant.flat().forEach((v, i) => { if (v) labels[i] = REL; });
  const k = Math.max(1, Math.round(Math.max(S * W, 256) / W));
  canvas.width = W * k; canvas.height = H * k;
  overlay.width = canvas.width; overlay.height = canvas.height;
  base.onload = () => { draw(); canvas.dataset.ready = "1"; };
  base.src = `/api/images/${IMAGE_ID}/image.png`;
}
start();
