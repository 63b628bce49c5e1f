"""The feedback loop through the app's HTTP API, as a person would run it, with the simulated
annotator in the person's place; compare with ``xgir bench decoy``'s Bayesian feedback row.

1. train the Bayesian LeNet of ``xgir bench decoy`` (seed 0, 2000 decoy-digits training images,
   5 epochs, width 16, hidden 64; cached in OUT/bayes-decoy.pt);
2. start ``xgir app`` on it (a subprocess, a free local port);
3. for 20 training images (1%: ``--strategy uncertainty``, the 20 most uncertain in the app's gallery
   sorted by uncertainty; ``random``, drawn as the bench draws them) read the app's region proposals
   (GET /api/images/ID/segments), keep the proposed segments the simulated annotator accepts
   (those lying on the decoy patch) and save them (POST /api/images/ID/feedback);
4. start Bayesian feedback fine-tuning (POST /api/finetune: 15 epochs, lambda_fb 0.01, as the bench),
   poll /api/jobs/ID, print the accuracy on 1000 test images with randomised decoys before / after.

    PYTHONPATH=src python benchmarks/app_feedback_loop.py [--out results/app-feedback-loop]
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(url: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=600) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as err:
        raise SystemExit(f"error: {url}: {err.code} {err.read().decode()}") from None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("results/app-feedback-loop"))
    ap.add_argument("--images", type=int, default=20, help="images to give feedback on")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--strategy", choices=("uncertainty", "random"), default="uncertainty")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    from xgir.app.demo_model import train_decoy_bayes
    from xgir.correct.feedback import SimulatedAnnotator, select_random
    from xgir.data import load_dataset

    t0 = time.time()
    model = a.out / f"bayes-decoy-seed{a.seed}.pt"
    if not model.exists():
        print("training the Bayesian LeNet (as xgir bench decoy does) ...", flush=True)
        train_decoy_bayes(model, n=2000, epochs=5, width=16, hidden=64, seed=a.seed)
    db = a.out / f"feedback-{a.strategy}.db"
    for suffix in ("", "-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    port = free_port()
    cmd = [sys.executable, "-c", "import sys; from xgir.cli import main; sys.exit(main())", "app",
           "--model", str(model), "--images", "decoy-digits:train", "--n", "2000", "--eval-n", "1000",
           "--seed", str(a.seed), "--feedback", str(db), "--out", str(a.out), "--port", str(port)]
    server = subprocess.Popen(cmd)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                call(base + "/api/images?sort=id")
                break
            except (urllib.error.URLError, ConnectionError):
                if server.poll() is not None:
                    raise SystemExit("error: the app did not start") from None
                time.sleep(0.5)
        # the person: knows where the decoy is (the simulated annotator of the bench)
        train = load_dataset("decoy-digits", "train", a.seed, n=2000)
        annotator = SimulatedAnnotator(train.extras["decoy_mask"], train.masks)
        k = a.images
        if a.strategy == "random":
            ids = select_random(range(len(train)), k, seed=a.seed)
        else:  # the thesis's active selection, as a person does it in the gallery: sort by uncertainty
            ids = [r["id"] for r in call(base + "/api/images?sort=uncertainty")["images"][:k]]
        proposed = accepted = 0
        decoy_hit = marked = 0
        for i in ids:
            seg = call(f"{base}/api/images/{i}/segments")
            labels = np.array(seg["segments"])
            mask = np.zeros_like(labels, dtype=bool)
            for s in seg["proposed"]:
                region = labels == s
                proposed += 1
                if annotator.accepts(i, region):
                    accepted += 1
                    mask |= region
            call(f"{base}/api/images/{i}/feedback", {"irrelevant": mask.astype(int).tolist(), "annotator": "simulated"})
            decoy_hit += int((mask & train.extras["decoy_mask"][i].numpy()).sum())
            marked += int(mask.sum())
        print(f"feedback on {k} images ({a.strategy}): {proposed} proposed segments, {accepted} accepted; "
              f"precision on the decoy {decoy_hit / max(marked, 1):.3f}", flush=True)
        job = call(f"{base}/api/finetune", {"method": "bayes", "epochs": a.epochs, "lambda_fb": 0.01, "seed": a.seed})
        while True:
            state = call(f"{base}/api/jobs/{job['job']}")
            if state["status"] != "running":
                break
            time.sleep(1.0)
        if state["status"] != "done":
            raise SystemExit(f"error: the fine-tuning failed: {state['error']}")
        res = state["result"]
    finally:
        server.terminate()
        server.wait(timeout=30)
    before, after = res["before"], res["after"]
    print(f"accuracy on randomised decoys (decoy-digits:test, 1000 images): "
          f"{before['accuracy_eval']:.3f} -> {after['accuracy_eval']:.3f}")
    print(f"accuracy on the app's 2000 training images: {before['accuracy_images']:.3f} -> "
          f"{after['accuracy_images']:.3f}")
    print("share of each explanation on the rejected regions (annotated images): " + ", ".join(
        f"{e} {before['overlap'][e]:.3f} -> {after['overlap'][e]:.3f}" for e in before["overlap"]
    ))
    print(f"corrected model: {res['checkpoint']}; {time.time() - t0:.0f} s in all")
    feedback = {"images": k, "ids": ids, "proposed": proposed, "accepted": accepted}
    summary = {"strategy": a.strategy, "feedback": feedback, "job": state}
    (a.out / f"result-{a.strategy}.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
