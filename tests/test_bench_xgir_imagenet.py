"""object-shift data and the quick ``xgir-imagenet`` and ``xgir-imagenet-224`` suites."""

import json

import numpy as np
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


def test_224_setting_counts_its_network_passes():
    """The full xgir-imagenet-224: 24 XGIR rows on 14 masked passes over the pool, as its docstring says."""
    from xgir.bench import xgir_imagenet_224 as suite

    fractions, rows = suite.rows_for(quick=False)
    assert fractions == (0.1, 0.2) and len(rows) == 24
    for core in ("pretrained", "novelty", "erm"):
        for variant in ("any partner, remainder", "other class, remainder", "other class, background"):
            for frac in ("10%", "20%"):
                assert f"XGIR swap, {variant}, {core} core {frac}" in rows
    assert sum(not r.free for r in rows.values()) == 4  # exact mask, random mask, the two ablations
    assert suite.masked_passes(rows) == 14 and suite.forwards(suite.SIZES, rows) == 13200
    assert "14 times masked" in suite.__doc__ and "13200 forwards" in suite.__doc__


def test_quick_224_suite_rows_gap_and_selection(tmp_path, monkeypatch):
    from xgir.bench import get_suite
    from xgir.bench._matched import PROTOCOLS

    monkeypatch.setenv("XGIR_CACHE", str(tmp_path / "cache"))
    seeds = [0, 1]
    res = get_suite("xgir-imagenet-224").run(tmp_path / "out", seeds, quick=True)
    for name in ("report.md", "results.json", "wga.png", "cores.png"):
        assert (tmp_path / "out" / name).is_file(), name
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    table = saved["table"]
    methods = [r["method"] for r in table]
    assert methods[:2] == ["ERM head", "DFR (group labels, reference)"]
    for row in ("exact digit mask (annotation)", "random mask 10% (control)",
                "pretrained core 10%, random blank (ablation)", "random core 10%, pretrained blank (ablation)"):
        assert any(m.endswith(row) for m in methods), row
    for fam in ("AFR", "XGIR"):
        for proto in PROTOCOLS:
            assert f"{fam} ({proto} selection)" in methods
    # the gap closed comes from the table's own means over the seeds
    for metric, col in (("worst_group", "gap_closed"), ("target", "gap_closed_target")):
        erm, dfr = (np.mean(table[i][metric]) for i in (0, 1))
        for row in table:
            assert len(row[metric]) == len(seeds)
            if dfr != erm:
                assert row[col] == pytest.approx((np.mean(row[metric]) - erm) / (dfr - erm))
    # each protocol picks, per seed, the setting with the best target-val score (never target-test)
    for fam in ("AFR", "XGIR"):
        for proto, key in PROTOCOLS.items():
            for s in seeds:
                cands = saved["per_seed"][str(s)]["families"][fam]
                pick = saved["selected"][fam][proto][str(s)]
                assert cands[pick][key] == max(v[key] for v in cands.values())
    assert "XGIR note's rule, signed floor, pretrained core delta1 0.5" in saved["per_seed"]["0"]["families"]["XGIR"]
    for core in ("pretrained", "novelty", "erm", "random"):
        assert 0 <= res["cores"][f"{core} 10%: precision"] <= 1
    assert res["masked_passes"] == 9
    report = (tmp_path / "out" / "report.md").read_text()
    assert "| ERM head |" in report and "annotation-free" in report and "precision on the digit" in report
    assert f"Network passes: {res['forwards']} images" in report


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
