"""object-shift data and the quick ``xgir-imagenet`` suite."""

import json

import pytest
import torch

from xgir.data import load_dataset
from xgir.data.objects import bias_subset, object_pool
from xgir.errors import XgirError


def test_object_shift_masks_are_exact_and_bias_holds():
    ds = load_dataset("object-shift", "source-train", seed=0, n=300, p=0.8, size=64)
    assert ds.images.shape == (300, 3, 64, 64) and ds.masks.dtype == torch.bool
    # binary alpha: object pixels are the bright ink colour (>= 0.8), background <= 0.55
    inside = ds.images.permute(0, 2, 3, 1)[ds.masks]
    outside = ds.images.permute(0, 2, 3, 1)[~ds.masks]
    assert inside.min() >= 0.8 - 1e-6 and outside.max() <= 0.55 + 1e-6
    aligned = (ds.extras["texture"] == ds.labels).float().mean()
    assert 0.72 < aligned < 0.88
    assert torch.equal(ds.groups, ds.labels * 10 + ds.extras["texture"])
    tgt = load_dataset("object-shift", "target-test", seed=0, n=300, size=64)
    assert (tgt.extras["texture"] == tgt.labels).float().mean() < 0.2


def test_bias_subset_draws_exactly_p_from_the_pool():
    pool = object_pool(0, 40, 20, size=32)
    assert torch.equal(pool.extras["texture"][:40], pool.labels[:40])
    assert (pool.extras["texture"][40:] != pool.labels[40:]).all()
    idx = bias_subset(pool.extras["aligned"], 0.75, 40, seed=1)
    assert len(set(idx.tolist())) == 40 and int(pool.extras["aligned"][idx].sum()) == 30
    assert not torch.equal(idx, bias_subset(pool.extras["aligned"], 0.75, 40, seed=2))
    with pytest.raises(XgirError, match="larger pool"):
        bias_subset(pool.extras["aligned"], 0.5, 60, seed=0)


def test_quick_suite_writes_tables_figures_and_diagnostics(tmp_path, monkeypatch):
    from xgir.bench import get_suite

    monkeypatch.setenv("XGIR_CACHE", str(tmp_path / "cache"))
    res = get_suite("xgir-imagenet").run(tmp_path / "out", [0], quick=True)
    report = (tmp_path / "out" / "report.md").read_text()
    for text in ("## p = 0.9", "ERM head", "DFR (group labels, reference)", "note's rule (defaults",
                 "variant: context swap, pretrained core", "random core", "Linear probes", "Support precision",
                 "unit_r2_digit_median"):
        assert text in report
    for fig in ("gap.png", "heatmaps.png"):
        assert (tmp_path / "out" / fig).stat().st_size > 1000
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    rows = saved["per_p"]["0.9"]["seeds"]["0"]
    assert all(0 <= v["target"] <= 1 and 0 <= v["worst_group"] <= 1 for v in rows.values())
    assert 0 <= res["probes"]["digit"] <= 1 and saved["summary"]["0.9"]["best_on_source_val"] in rows
    prec = saved["per_p"]["0.9"]["diagnostics"]["support_precision"]
    assert prec["gt"] == 1.0 and prec["random"] < 0.6


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_stage_on_cuda_gives_the_cpu_features(tmp_path, monkeypatch):
    """`xgir bench xgir-imagenet --device cuda`: the network passes run on the GPU and give the
    CPU's features (to 1e-3: cuDNN / TF32 sums differ in order)."""
    from xgir.bench.xgir_imagenet_stage import QUICK, Stage

    monkeypatch.setenv("XGIR_CACHE", str(tmp_path / "cpu"))
    cpu = Stage(QUICK)
    monkeypatch.setenv("XGIR_CACHE", str(tmp_path / "cuda"))
    gpu = Stage(QUICK, device="cuda")
    assert next(gpu.model.parameters()).is_cuda
    for name in cpu.h:
        assert torch.allclose(cpu.h[name], gpu.h[name], atol=1e-3, rtol=1e-3), name
