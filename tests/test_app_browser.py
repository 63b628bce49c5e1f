"""End to end in a real browser: Debian's Chromium driven by Playwright opens the gallery and an
image (with CWOX), marks a proposed segment in the annotator, saves it (found in the database),
starts a fine-tune on decoy-digits and reaches the before/after page; then the guards: "mark all
proposed" asks and leaves the flagged proposals, strokes are continuous, a long explainer shows
its progress, and the fine-tune preconditions are stated before any work."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import numpy as np
import pytest

from _app_common import make_state
from xgir.app.browser import CHROMIUM, guards_walk, serve, walk

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM),
                                reason=f"{CHROMIUM} is missing (apt-get install chromium; .ci/run installs it)")


def test_browser_walk_from_gallery_to_before_after(tmp_path):
    from xgir.models import load_model

    state = make_state(tmp_path, n=60, eval_n=60)
    shots = Path(os.environ["XGIR_APP_SHOTS"]) if os.environ.get("XGIR_APP_SHOTS") else tmp_path / "shots"
    with serve(state) as base:
        seen = walk(base, state.feedback_path, shots, epochs=2)
    assert seen["cards"] == 48
    assert "cluster 1" in seen["cwox_tree"]
    n = len(seen["segment_cells"])
    assert seen["status_marked"].startswith(f"{n} irrelevant")
    brushed = int(seen["status_brushed"].split()[0])
    assert brushed > n and seen["status_undone"] == seen["status_marked"]
    assert seen["status_saved"].startswith("saved: 1 region row")
    (row,) = seen["rows"]
    assert row[:4] == (0, 0, 1, 1)
    mask = np.unpackbits(np.frombuffer(row[4], np.uint8))[: 28 * 28].reshape(28, 28).astype(bool)
    assert sorted(zip(*np.nonzero(mask), strict=True)) == sorted(seen["segment_cells"])
    assert seen["status_reloaded"].startswith(f"{n} irrelevant")  # saved feedback shows on reload
    assert "/results/1" in seen["results_url"] and "held-out" in seen["accuracy_table"]
    assert load_model(seen["checkpoint"]).model is not None
    for name in ("gallery", "image-cwox", "annotator", "before-after"):
        assert (shots / f"app-{name}.png").stat().st_size > 10_000


def test_browser_guards_flagged_mark_all_strokes_and_progress(tmp_path):
    from xgir.app import analysis

    state = make_state(tmp_path, n=30, eval_n=20)
    flagged = next(i for i in range(30) if analysis.proposals(state, i).flagged
                   and len(analysis.proposals(state, i).flagged) < len(analysis.proposals(state, i).proposed))
    props = analysis.proposals(state, flagged)
    plain = sum(int((props.segments == s).sum()) for s in props.proposed if s not in props.flagged)
    slow = state.loaded.model.register_forward_pre_hook(lambda m, a: time.sleep(0.02))  # RISE takes seconds
    shots = Path(os.environ["XGIR_APP_SHOTS"]) if os.environ.get("XGIR_APP_SHOTS") else None
    try:
        with serve(state) as base:
            seen = guards_walk(base, flagged, (flagged + 1) % 30, shots)
    finally:
        slow.remove()
    assert seen["canvas"][0] >= 500  # scaled to the window (a 28 px image on a 1280 x 860 screen)
    assert f"{len(props.flagged)} of {len(props.proposed)} proposals" in seen["flagged_text"]
    assert f"Mark {len(props.proposed) - len(props.flagged)} proposed segment(s)" in seen["confirm_text"]
    assert f"{len(props.flagged)} flagged segment(s) lie on the explanation's own evidence" in seen["confirm_text"]
    assert seen["status_cancelled"].startswith("0 irrelevant")
    assert seen["status_marked"].startswith(f"{plain} irrelevant")  # the flagged ones left unmarked
    assert int(seen["status_stroke"].split()[0]) >= 24  # a continuous row across 90 % of 28 cells
    assert re.fullmatch(r"rise: computing, \d+%, \d+ s", seen["progress_text"].strip()), seen["progress_text"]
    assert 0 < seen["progress_value"] < 1
    assert seen["figure"].startswith("rise")


def test_browser_preconditions_are_stated_before_any_work(tmp_path):
    from _app_common import tiny_bayes
    from xgir.app import build_state
    from xgir.app.browser import preconditions_walk

    state = build_state(str(tiny_bayes()), "photos", tmp_path / "fb.db", tmp_path / "out", n=3, eval_images=None)
    with serve(state) as base:
        seen = preconditions_walk(base)
    assert seen["problems"][0].startswith("fine-tuning needs the true labels of the images")
    assert any(line.startswith("no feedback saved yet") for line in seen["problems"])
    assert seen["start_disabled"] and state.jobs.jobs == {}
    assert "fine-tuning needs the true labels" in seen["annotate_banner"]
