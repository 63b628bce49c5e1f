// Progress of a correction: poll until done, then open the before/after page.
"use strict";
async function poll() {
  const resp = await fetch(`/api/jobs/${JOB_ID}`);
  const job = await resp.json();
  if (!resp.ok) { document.getElementById("error").textContent = "error: " + job.error; return; }
  document.getElementById("progress").value = job.progress;
  document.getElementById("stage").textContent = `${job.stage} (${job.seconds} s)`;
  if (job.status === "done") { location.href = `/results/${JOB_ID}`; return; }
  if (job.status === "failed") { document.getElementById("error").textContent = "error: " + job.error; return; }
  setTimeout(poll, 500);
}
poll();
