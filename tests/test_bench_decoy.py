import json
from dataclasses import replace

import pytest
import torch

from xgir.bench import decoy, fmt, get_suite, guidance_shift, mean_std
from xgir.bench._guidance_common import overlap
from xgir.bench._guidance_protocol import QUICK_SIZES
from xgir.correct.feedback import FeedbackStore
from xgir.errors import XgirError
from xgir.metrics.localisation import irrelevant_overlap


def test_helpers():
    assert mean_std([1.0, 3.0]) == pytest.approx((2.0, 2**0.5))
    assert fmt([0.5]) == "0.500"  # one seed: the value alone (issue 14 item 21)
    maps = torch.zeros(2, 4, 4)
    maps[0, 0, 0] = -3.0  # absolute values count
    maps[0, 1, 1] = 1.0
    maps[1, 2, 2] = 1.0
    mask = torch.zeros(2, 4, 4, dtype=torch.bool)
    mask[:, 0, 0] = True
    assert overlap(maps, mask) == pytest.approx((0.75 + 0.0) / 2)
    assert overlap(maps, mask) == pytest.approx(float(irrelevant_overlap(maps, mask).mean()))
    mask[1] = False
    with pytest.raises(XgirError, match="empty"):  # the benchmarks' masks are never empty
        overlap(maps, mask)


def test_shared_settings():
    for suite in (decoy, guidance_shift):
        assert {k: getattr(suite.QUICK, k) for k in QUICK_SIZES} == QUICK_SIZES
    assert decoy.Settings().lambda_fb == 1e-2 and guidance_shift.Settings().lambda_fb == 1e-4
    assert guidance_shift.Settings().feedback_lambdas() == (1e-4, 1e-2)
    assert decoy.Settings().feedback_strategies() == ("random", "uncertainty")
    with pytest.raises(XgirError, match="unknown feedback strategy 'bogus'"):
        replace(decoy.QUICK, strategies=("bogus",))


def test_suites_are_registered():
    assert get_suite("decoy") is decoy
    assert get_suite("guidance-shift") is guidance_shift


def test_decoy_smoke(tmp_path):
    s = replace(decoy.QUICK, n_train=100, n_test=40, n_overlap=8, hidden=8, strategies=("random",))
    result = decoy.run(tmp_path, [0], settings=s)
    report = (tmp_path / "report.md").read_text()
    for text in (
        "| ERM |",
        "No-decoy reference",
        "RRR (10% masks)",
        "Energy (100% masks)",
        "Bayes feedback",
        "Saliency | DeepLIFT | Occlusion | Grad-CAM",
        "## Goals",
    ):
        assert text in report
    saved = json.loads((tmp_path / "results.json").read_text())
    entry = saved["per_seed"]["0"]["ERM"]
    erm_row = next(line for line in report.splitlines() if line.startswith("| ERM |"))
    assert f"{entry['acc']:.3f}" in erm_row  # the report shows the stored accuracy
    assert set(entry["overlap"]) == {"Saliency", "DeepLIFT", "Occlusion", "Grad-CAM"}
    assert (tmp_path / "heatmaps.png").stat().st_size > 0
    fb = saved["per_seed"]["0"]["Bayes feedback (random, 5 images)"]["feedback"]
    with FeedbackStore(tmp_path / "feedback-seed0-random.sqlite") as store:
        assert store.asked_images() and len(store) == fb["regions"]
    assert result["summary"]["ERM"]["acc"][0] == pytest.approx(entry["acc"])


def test_guidance_shift_smoke(tmp_path):
    s = replace(guidance_shift.QUICK, n_train=100, n_test=40, n_overlap=8, hidden=8, fractions=(1.0,))
    guidance_shift.run(tmp_path, [0], settings=s)
    report = (tmp_path / "report.md").read_text()
    for text in ("| ERM |", "Unbiased-data reference", "worst group", "Bayes feedback"):
        assert text in report
    assert (tmp_path / "heatmaps.png").exists()
    res = json.loads((tmp_path / "results.json").read_text())["per_seed"]["0"]
    main, extra = res["Bayes feedback (random, 5 images)"], res["Bayes feedback (random, 5 images, lambda_fb 0.01)"]
    assert set(main["overlap"]) == {"Saliency", "DeepLIFT", "Occlusion", "Grad-CAM"} and extra["overlap"] is None
    assert main["feedback"] == extra["feedback"]  # one collection, two weights
    assert "Bayes no-decoy reference" not in res and "No-decoy reference" not in res
    with FeedbackStore(tmp_path / "feedback-seed0.sqlite") as store:
        assert len(store) == main["feedback"]["regions"]
