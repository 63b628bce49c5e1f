"""SmallResNet's ``head_width``, the unit classes, and the quick ``xgir-width`` suite."""

import json

import pytest
import torch

from xgir.bench.xgir_width import entanglement, unit_classes
from xgir.data.base import ImageDataset
from xgir.models import SmallResNet, load_checkpoint, save_checkpoint


def test_head_width_adds_units_and_leaves_the_default_unchanged(tmp_path):
    default, wide = SmallResNet(width=8), SmallResNet(width=8, head_width=96)
    assert default.feature_dim == 32 and wide.feature_dim == 96
    assert wide(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    # the default keeps its state-dict keys (old checkpoints load); the wide one only adds layer3's 1x1 conv-BN
    assert set(default.state_dict()) < set(wide.state_dict())
    assert {k.split(".")[1] for k in set(wide.state_dict()) - set(default.state_dict())} == {"1", "2"}
    # layer3 (Grad-CAM's layer) outputs the head_width channels that are pooled into the features
    assert wide.layer3(wide.layer2(wide.layer1(wide.stem(torch.rand(1, 3, 32, 32))))).shape == (1, 96, 8, 8)
    path = save_checkpoint(wide, tmp_path / "w.pt", "small-resnet", {"width": 8, "head_width": 96})
    loaded, _ = load_checkpoint(path)
    assert loaded.feature_dim == 96


def test_unit_classes_on_hand_made_r2():
    r2d = torch.tensor([0.50, 0.00, 0.30, 0.01, 0.90])
    r2t = torch.tensor([0.10, 0.40, 0.30, 0.02, 0.90])
    live = torch.tensor([True, True, True, True, False])
    shares = unit_classes(r2d, r2t, live)
    assert shares == pytest.approx({"digit-selective": 0.2, "texture-selective": 0.2, "mixed": 0.2, "weak": 0.4})


def test_entanglement_finds_a_digit_unit_a_texture_unit_a_mixed_unit_and_a_dead_one():
    g = torch.Generator().manual_seed(0)

    def split(n: int) -> tuple[torch.Tensor, ImageDataset]:
        digit, texture = torch.randint(0, 10, (n,), generator=g), torch.randint(0, 10, (n,), generator=g)
        onehot = torch.nn.functional.one_hot
        mixed = digit.float() + texture.float() + 0.1 * torch.randn(n, generator=g)
        h = torch.cat([onehot(digit, 10).float(), onehot(texture, 10).float(), mixed[:, None], torch.zeros(n, 1)], 1)
        return h, ImageDataset(images=torch.zeros(n, 1, 2, 2), labels=digit, extras={"texture": texture})

    (hv, val), (ht, test) = split(400), split(200)
    d = entanglement(hv, val, ht, test)
    assert d["units"] == 22 and d["dead_units"] == 1
    assert d["digit-selective"] == d["texture-selective"] == 10 / 22 and d["mixed"] == d["weak"] == 1 / 22
    assert d["probe_digit"] > 0.9 and d["probe_texture"] > 0.9


def test_quick_width_suite_has_a_row_per_width_and_diagnostics_that_differ(tmp_path, monkeypatch):
    from xgir.bench import get_suite
    from xgir.bench.xgir_width import QUICK, WIDTHS, extractor

    monkeypatch.setenv("XGIR_CACHE", str(tmp_path / "cache"))
    res = get_suite("xgir-width").run(tmp_path / "out", [0], quick=True, progress=False)
    assert extractor(512, QUICK, progress=False).feature_dim == 512  # the cached 512-unit extractor
    report = (tmp_path / "out" / "report.md").read_text()
    assert "## Does the note's rule randomise the texture units?" in report
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    shares = []
    for w in WIDTHS:
        assert f"## {w} units" in report and f"\n| {w} | " in report  # its table and its entanglement row
        diag = saved["per_width"][str(w)]["0"]["diagnostics"]
        assert diag["units"] == w
        cls = [diag[k] for k in ("digit-selective", "texture-selective", "mixed", "weak")]
        assert all(0 <= v <= 1 for v in cls) and sum(cls) == pytest.approx(1)
        shares.append(cls)
        rows = saved["per_width"][str(w)]["0"]["rows"]
        assert len(rows) == 6  # ERM, DFR, XGIR-IOX, GT mask, random mask, context swap
        lam = saved["per_width"][str(w)]["0"]["rule_lambda"]
        assert 0 < lam["all units"] < 1 and set(lam) == {"digit-selective", "texture-selective", "mixed", "weak",
                                                           "all units"}
        assert all(0 <= r["target"] <= 1 for r in rows.values())
    assert len({tuple(s) for s in shares}) == 3  # the unit classes are measured, not constant across widths
    assert res["summary"][512]["units"] == 512
    assert (tmp_path / "out" / "width.png").stat().st_size > 1000
