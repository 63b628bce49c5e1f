"""End to end in a real browser: Debian's Chromium driven by Playwright opens the gallery and an
image (with CWOX), marks a proposed segment in the annotator, saves it (found in the database),
starts a fine-tune on decoy-digits and reaches the before/after page."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from _app_common import make_state
from xgir.app.browser import CHROMIUM, serve, walk

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
