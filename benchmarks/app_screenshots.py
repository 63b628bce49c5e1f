"""Screenshots of the app for the README (docs/img/app-*.png), taken by the browser test's walk
(xgir.app.browser) on the Bayesian LeNet of ``xgir bench decoy``, after simulated
feedback on the 20 most uncertain of 2000 training images (as benchmarks/app_feedback_loop.py
gives it) and one more marked in the browser.

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


def main() -> None:
    from xgir.app import build_state
    from xgir.app.analysis import proposals
    from xgir.app.api import save_feedback_sync, select
    from xgir.app.browser import serve, walk
    from xgir.correct.feedback import SimulatedAnnotator
    from xgir.data import load_dataset

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("--out", type=Path, default=Path("docs/img"))
    ap.add_argument("--n", type=int, default=2000)
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="xgir-shots-"))
    state = build_state(str(a.model), "decoy-digits:train", work / "feedback.db", work / "out", n=a.n, eval_n=1000)
    train = load_dataset("decoy-digits", "train", 0, n=a.n)
    annotator = SimulatedAnnotator(train.extras["decoy_mask"], train.masks)
    chosen = select(state, sort="uncertainty")[:20]  # as app_feedback_loop.py --strategy uncertainty
    for i in chosen:
        found = proposals(state, i)
        seg = found.segments
        mask = np.zeros(seg.shape, bool)
        for s in found.proposed:
            if annotator.accepts(i, seg == s):
                mask |= seg == s
        save_feedback_sync(state, i, {"irrelevant": mask.astype(int).tolist(), "annotator": "simulated"})
    # the walk marks the first proposed segment of an image on the gallery's first page: pick one where
    # that segment is the decoy, as a person would mark it
    image = next(i for i in range(48) if i not in chosen and proposals(state, i).proposed
                 and annotator.accepts(i, proposals(state, i).segments == proposals(state, i).proposed[0]))
    with serve(state) as base:
        seen = walk(base, state.feedback_path, a.out, epochs=15, image=image, timeout_ms=900_000)
    print(seen["accuracy_table"])
    photo_page(a.out / "app-image-cwox-photo.png", Path(tempfile.mkdtemp(prefix="xgir-shots-")))
    print("screenshots in", a.out)


def photo_page(path: Path, work: Path) -> None:
    """The image page of efficientnet-lite0 on scikit-image's cat, CWOX computed."""
    from playwright.sync_api import sync_playwright

    from xgir.app import build_state
    from xgir.app.browser import CHROMIUM, FLAGS, serve

    state = build_state("efficientnet-lite0", "photos", work / "feedback.db", work / "out", n=3)
    with serve(state) as base, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 860})
        page.set_default_timeout(300_000)
        page.goto(base + "/image/0")
        page.click("#cwox-run")
        page.wait_for_selector("#cwox-tree")
        page.wait_for_function("[...document.querySelectorAll('img')].every(i => i.complete && i.naturalWidth)")
        page.screenshot(path=str(path), full_page=True)
        browser.close()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--photo-only"]:
        photo_page(Path("docs/img/app-image-cwox-photo.png"), Path(tempfile.mkdtemp(prefix="xgir-shots-")))
    else:
        main()
