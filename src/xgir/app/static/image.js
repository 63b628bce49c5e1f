// Image page: CWOX and registered explainers on demand (with progress); keyboard: n / p next / previous
// in the gallery's order, a annotate.
"use strict";
const menu = JSON.parse(document.getElementById("menu").textContent);

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  for (const c of children) e.append(c);
  return e;
}
function figure(src, caption) {
  return el("figure", {}, el("img", {src, alt: caption}), el("figcaption", {}, caption));
}
async function fail(resp, where) {
  let msg = resp.status + "";
  try { msg = (await resp.json()).error; } catch (e) { /* not JSON */ }
  where.replaceChildren(el("p", {class: "bad"}, "error: " + msg));
}

async function runCwox() {
  const out = document.getElementById("cwox");
  const level = document.getElementById("cwox-level").value;
  out.replaceChildren(el("p", {class: "muted"}, "computing CWOX…"));
  const resp = await fetch(`/api/images/${IMAGE_ID}/cwox?level=${encodeURIComponent(level)}`);
  if (!resp.ok) return fail(resp, out);
  const data = await resp.json();
  const tree = data.clusters.map((c, j) =>
    `cluster ${j + 1} (p=${c.prob.toFixed(3)})\n` +
    c.classes.map((k, i) => `  ${i === c.classes.length - 1 ? "└" : "├"}─ ${k.name} (p=${k.prob.toFixed(3)})`).join("\n"));
  out.replaceChildren(el("pre", {class: "cwox-tree", id: "cwox-tree"}, "top classes by confusion cluster\n" + tree.join("\n")));
  for (const c of data.clusters) {
    const names = c.classes.map(k => k.name).join(", ");
    const row = el("div", {class: "cluster"}, figure(c.map, `cluster {${names}} p=${c.prob.toFixed(2)}`));
    if (c.class_maps.length) {
      const inner = el("div", {class: "classes"});
      c.class_maps.forEach((src, i) => inner.append(figure(src, `${c.classes[i].name} within the cluster`)));
      row.append(inner);
    }
    out.append(row);
  }
}

function showParams() {
  // only the parameters a user sets, each labelled, with the range the app accepts
  const m = menu.find(x => x.name === document.getElementById("method").value);
  const box = document.getElementById("params");
  box.replaceChildren();
  document.getElementById("method-info").textContent = m ? m.description + (m.signed ? " · signed map: red +, blue −" : "") : "";
  for (const p of (m ? m.params : [])) {
    let input;
    if (p.kind === "choice") {
      input = el("select", {name: "p." + p.name});
      for (const c of p.choices) { const o = el("option", {value: c}, c); if (c === String(p.default)) o.selected = true; input.append(o); }
    } else if (p.kind === "text") {
      input = el("input", {name: "p." + p.name, value: String(p.default), size: 14});
    } else {
      input = el("input", {name: "p." + p.name, type: "number", value: String(p.default), min: String(p.min), max: String(p.max),
                           step: String(p.step || 1), placeholder: p.default === "" ? "auto" : ""});
    }
    const range = p.kind === "int" || p.kind === "float" ? ` (${p.min}–${p.max})` : "";
    box.append(el("label", {title: p.name}, `${p.label}${range} `, input), " ");
  }
}

async function runExplainer(ev) {
  ev.preventDefault();
  const method = document.getElementById("method").value;
  const run = "r" + Date.now().toString(36) + Math.random().toString(36).slice(2, 8);
  const q = new URLSearchParams({method, target: document.getElementById("target").value, run});
  const inputs = [...document.querySelectorAll("#params input, #params select")];
  for (const input of inputs) if (input.value !== "") q.append(input.name, input.value);
  const out = document.getElementById("explanations");
  const status = document.getElementById("explain-status");
  const bar = el("progress", {id: "explain-progress", max: "1"});
  const line = el("span", {id: "explain-progress-text", class: "muted"}, ` ${method}: starting…`);
  status.replaceChildren(bar, line);
  const button = document.getElementById("explain-run");
  button.disabled = true;
  let polling = true;
  (async function poll() {  // the server counts the model's images and the explainer's steps
    while (polling) {
      await new Promise(r => setTimeout(r, 300));
      if (!polling) break;
      const resp = await fetch(`/api/progress/${run}`);
      if (!resp.ok) continue;  // not started yet
      const p = await resp.json();
      if (p.fraction !== null) bar.value = p.fraction; else bar.removeAttribute("value");
      line.textContent = " " + p.text;
      bar.dataset.seen = String(Math.max(Number(bar.dataset.seen || 0), p.fraction || 0));
    }
  })();
  try {
    const resp = await fetch(`/api/images/${IMAGE_ID}/explain.png?${q}`);
    if (!resp.ok) { const box = el("div", {}); out.prepend(box); return await fail(resp, box); }
    const url = URL.createObjectURL(await resp.blob());
    const params = inputs.filter(i => i.value !== "").map(i => `${i.name.slice(2)}=${i.value}`);
    out.prepend(figure(url, `${method} (${q.get("target")}) ${params.join(" ")}`));
  } finally {
    polling = false;
    button.disabled = false;
    status.replaceChildren();
  }
}

document.getElementById("cwox-run").addEventListener("click", runCwox);
document.getElementById("method").addEventListener("change", showParams);
document.getElementById("explain-form").addEventListener("submit", runExplainer);
showParams();
document.addEventListener("keydown", ev => {
  if (ev.target.tagName === "INPUT" || ev.target.tagName === "SELECT" || ev.ctrlKey || ev.metaKey) return;
  if (ev.key === "n" || ev.key === "ArrowRight") location.href = `/image/${NEXT}${QS}`;
  else if (ev.key === "p" || ev.key === "ArrowLeft") location.href = `/image/${PREV}${QS}`;
  else if (ev.key === "a") location.href = `/annotate/${IMAGE_ID}${QS}`;
});
