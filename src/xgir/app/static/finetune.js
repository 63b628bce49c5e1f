// Fine-tune form: POST the parameters as JSON, then follow the job.
"use strict";
const form = document.getElementById("finetune-form");
function toggle() {
  // the method's fields, and what stops it (each precondition in one line): no start until none is left
  const method = document.getElementById("ft-method").value, bayes = method === "bayes";
  form.querySelector("fieldset.bayes").style.display = bayes ? "" : "none";
  form.querySelector("fieldset.guidance").style.display = bayes ? "none" : "";
  let blocked = false;
  for (const list of document.querySelectorAll("#problems ul")) {
    const mine = list.dataset.method === method;
    list.style.display = mine ? "" : "none";
    if (mine && list.children.length) blocked = true;
  }
  document.getElementById("start").disabled = blocked;
}
form.addEventListener("submit", async ev => {
  ev.preventDefault();
  const method = document.getElementById("ft-method").value;
  const body = {};
  const numeric = ["epochs", "lr", "batch_size", "seed", "lambda_fb", "feedback_repeats", "weight"];
  const only = method === "bayes" ? ["lambda_fb", "feedback_repeats"] : ["loss", "attribution", "weight"];
  for (const [k, v] of new FormData(form)) {
    const general = ["method", "epochs", "lr", "batch_size", "seed"].includes(k);
    if (!general && !only.includes(k)) continue;
    if (v === "") continue;
    body[k] = numeric.includes(k) ? Number(v) : v;
  }
  const status = document.getElementById("status");
  status.textContent = "starting…";
  const resp = await fetch("/api/finetune", {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)});
  const data = await resp.json();
  if (!resp.ok) { status.textContent = "error: " + data.error; status.className = "bad"; return; }
  location.href = data.url;
});
document.getElementById("ft-method").addEventListener("change", toggle);
toggle();
