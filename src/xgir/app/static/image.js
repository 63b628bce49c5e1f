// Image page: CWOX and registered explainers on demand; keyboard: n / p next / previous, a annotate.
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
  const m = menu.find(x => x.name === document.getElementById("method").value);
  const box = document.getElementById("params");
  box.replaceChildren();
  for (const p of (m ? m.params : [])) {
    box.append(el("label", {}, p.name + " ", el("input", {name: "p." + p.name, value: String(p.default), size: 8})), " ");
  }
}

async function runExplainer(ev) {
  ev.preventDefault();
  const method = document.getElementById("method").value;
  const q = new URLSearchParams({method, target: document.getElementById("target").value});
  for (const input of document.querySelectorAll("#params input")) q.append(input.name, input.value);
  const out = document.getElementById("explanations");
  const src = `/api/images/${IMAGE_ID}/explain.png?${q}`;
  const resp = await fetch(src);
  if (!resp.ok) { const box = el("div", {}); out.prepend(box); return fail(resp, box); }
  const url = URL.createObjectURL(await resp.blob());
  const params = [...document.querySelectorAll("#params input")].filter(i => i.value !== "").map(i => `${i.name.slice(2)}=${i.value}`);
  out.prepend(figure(url, `${method} (${q.get("target")}) ${params.join(" ")}`));
}

document.getElementById("cwox-run").addEventListener("click", runCwox);
document.getElementById("method").addEventListener("change", showParams);
document.getElementById("explain-form").addEventListener("submit", runExplainer);
showParams();
document.addEventListener("keydown", ev => {
  if (ev.target.tagName === "INPUT" || ev.target.tagName === "SELECT" || ev.ctrlKey || ev.metaKey) return;
  if (ev.key === "n" || ev.key === "ArrowRight") location.href = `/image/${NEXT}`;
  else if (ev.key === "p" || ev.key === "ArrowLeft") location.href = `/image/${PREV}`;
  else if (ev.key === "a") location.href = `/annotate/${IMAGE_ID}`;
});
