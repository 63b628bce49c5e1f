"""Screenshots of the app for the README (docs/img/app-*.png), taken by the browser test's walk
(tests/_app_browser_flow.py) on the Bayesian LeNet of ``xgir bench decoy``, after simulated
feedback on 20 training images (as benchmarks/app_feedback_loop.py gives it).

    PYTHONPATH=src python benchmarks/app_screenshots.py MODEL.pt [--out docs/img]

MODEL.pt: e.g. results/app-feedback-loop/bayes-decoy-seed0.pt (written by app_feedback_loop.py),
or ``python -m xgir.app.demo_model MODEL.pt``. Needs /usr/bin/chromium and playwright.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def main() -> None:
    from _app_browser_flow import serve, walk
    from xgir.app import build_state
    from xgir.app.analysis import proposals
    from xgir.app.api import save_feedback_sync
    from xgir.correct.feedback import SimulatedAnnotator, select_random
    from xgir.data import load_dataset

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("--out", type=Path, default=Path("docs/img"))
    ap.add_argument("--n", type=int, default=500)
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="xgir-shots-"))
    state = build_state(str(a.model), "decoy-digits:train", work / "feedback.db", work / "out", n=a.n, eval_n=1000)
    train = load_dataset("decoy-digits", "train", 0, n=a.n)
    annotator = SimulatedAnnotator(train.extras["decoy_mask"], train.masks)
    for i in select_random(range(1, a.n), 20, seed=0):
        seg, proposed = proposals(state, i)
        mask = np.zeros(seg.shape, bool)
        for s in proposed:
            if annotator.accepts(i, seg == s):
                mask |= seg == s
        save_feedback_sync(state, i, {"irrelevant": mask.astype(int).tolist(), "annotator": "simulated"})
    with serve(state) as base:
        seen = walk(base, state.feedback_path, a.out, epochs=15, image=0, timeout_ms=900_000)
    print(seen["accuracy_table"])
    print("screenshots in", a.out)


if __name__ == "__main__":
    main()
