"""Mechanism tests of the XGIR variants and core sources on hand-made tensors."""

import pytest
import torch
from torch import nn

from xgir.correct.pipeline import XGIRSection
from xgir.correct.xgir import XGIRConfig, interventional_lambda, retrain_head, unit_responses
from xgir.correct.xgir_variants import (
    class_cam,
    decorrelating_basis,
    empirical_noise,
    novelty_map,
    pooled_maps,
    pretrained_cam,
    signed_lambda,
    swap_features,
    thresholds,
    uses_variant,
    variant_features,
)
from xgir.errors import XgirError
from xgir.explain.gradcam import grad_cam


def test_signed_lambda_by_hand_and_the_note_as_a_special_case():
    r = torch.tensor([[-3.0, -1.0, 0.0, 1.0, 2.0]])
    d, lo = torch.full((5,), 1.0), torch.full((5,), -1.0)
    # (d - min(d, r)) / (d - floor), clipped to [0, 1]
    assert torch.allclose(signed_lambda(r, d, lo), torch.tensor([[1.0, 1.0, 0.5, 0.0, 0.0]]))
    assert torch.allclose(signed_lambda(r, d, torch.zeros(5)), interventional_lambda(r, 1.0))
    with pytest.raises(XgirError, match="above the floor"):
        signed_lambda(r, torch.zeros(5), torch.zeros(5))


def test_thresholds_take_the_per_unit_floor_quantile_and_no_clamp():
    r = torch.tensor([[-4.0, 1.0], [-2.0, 2.0], [-1.0, 3.0], [0.0, 4.0], [-3.0, 5.0]])
    cfg = XGIRConfig(delta2=0.5, delta2_mode="unit-quantile", floor=0.0)
    d2, lo = thresholds(r, cfg)
    assert torch.allclose(d2, torch.tensor([-2.0, 3.0]))  # signed: negative delta2 kept
    assert torch.allclose(lo, torch.tensor([-4.0, 1.0]))
    lam = signed_lambda(r, d2, lo)
    assert lam[0, 0] == 1 and lam[2, 0] == 0 and lam[1, 1] == 0.5


def test_swap_is_core_plus_another_images_context():
    h = torch.tensor([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0]])
    r = torch.tensor([[0.5, 1.0], [0.0, 2.0], [1.0, 0.0]])
    g = torch.Generator().manual_seed(0)
    out = swap_features(h, r, draws=2, generator=g)
    g = torch.Generator().manual_seed(0)
    for k in range(2):
        j = torch.randperm(3, generator=g)
        assert torch.allclose(out[3 * k : 3 * k + 3], r + h[j] - r[j])
    # the core is the whole image: h' = h; no core: h' = the other image's h
    assert torch.allclose(swap_features(h, h, 1, torch.Generator().manual_seed(1)), h)
    g1, g2 = torch.Generator().manual_seed(2), torch.Generator().manual_seed(2)
    j = torch.randperm(3, generator=g2)
    assert torch.allclose(swap_features(h, torch.zeros_like(h), 1, g1), h[j])


def test_swap_with_background_context_and_other_class_partners():
    """h'_i = f(core_i) + f(background_j) - f(x0) = r_i + background_j, j of another class."""
    from xgir.correct.xgir_variants import swap_partners

    labels = torch.tensor([0, 0, 0, 1, 1, 2])
    j = swap_partners(labels, "other-class", torch.Generator().manual_seed(0))
    assert (labels[j] != labels).all()
    with pytest.raises(XgirError, match="two classes"):
        swap_partners(torch.zeros(4, dtype=torch.long), "other-class", torch.Generator())
    h, r, bg = torch.randn(6, 3), torch.randn(6, 3), torch.randn(6, 3)
    out = swap_features(h, r, 2, torch.Generator().manual_seed(3), labels=labels, partner="other-class", background=bg)
    g = torch.Generator().manual_seed(3)
    for k in range(2):
        jj = swap_partners(labels, "other-class", g)
        assert torch.allclose(out[6 * k: 6 * k + 6], r + bg[jj])
    cfg = XGIRConfig(variant="swap", partner="other-class", context="background", draws=2)
    with pytest.raises(XgirError, match="background"):  # the background features are needed
        variant_features(h, r, cfg, torch.Generator(), labels=labels)
    feats, copies, _ = variant_features(h, r, cfg, torch.Generator(), labels=labels, background=bg)
    assert copies == 3 and torch.allclose(feats[:6], h)
    with pytest.raises(XgirError, match="variant: swap"):
        XGIRConfig(partner="other-class")
    with pytest.raises(XgirError, match="support_fraction"):
        XGIRConfig(support_fraction=1.5)


def test_matched_size_supports_keep_the_same_share_of_every_map():
    from xgir.correct.xgir import support_top_fraction

    maps = torch.stack([torch.arange(16.0).view(4, 4), torch.ones(4, 4), torch.zeros(4, 4)])
    s = support_top_fraction(maps, (8, 8), 0.25)
    assert s.shape == (3, 8, 8) and (s.flatten(1).sum(1) == 16).all()
    assert s[0, 6:, 6:].all() and not s[0, :2, :2].any()  # the highest corner of the first map
    with pytest.raises(XgirError, match="fraction"):
        support_top_fraction(maps, (8, 8), 0.0)


def test_swap_trains_on_h_and_the_swaps_and_keeps_images_without_core():
    h, r = torch.randn(6, 3), torch.randn(6, 3)
    empty = torch.tensor([True, False, False, False, False, False])
    cfg = XGIRConfig(variant="swap", draws=2)
    feats, copies, _ = variant_features(h, r, cfg, torch.Generator(), empty_support=empty)
    assert copies == 3 and feats.shape == (18, 3)
    assert torch.allclose(feats[:6], h)


def test_empirical_noise_draws_each_units_own_values():
    h = torch.tensor([[1.0, 100.0], [2.0, 200.0], [3.0, 300.0]])
    eps = empirical_noise(h, draws=4, generator=torch.Generator().manual_seed(0))
    assert eps.shape == (4, 3, 2)
    assert set(eps[..., 0].flatten().tolist()) <= {1.0, 2.0, 3.0}
    assert set(eps[..., 1].flatten().tolist()) <= {100.0, 200.0, 300.0}
    assert len(set(eps[..., 0].flatten().tolist())) > 1


def test_decorrelating_basis_diagonalises_and_whitens():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(500, 3, generator=g) @ torch.tensor([[2.0, 1.0, 0.0], [0.0, 1.0, 0.5], [0.0, 0.0, 0.3]])
    for kind in ("pca", "whiten"):
        mu, b = decorrelating_basis(x, kind)
        cov = torch.cov(((x - mu) @ b).T)
        off = cov - torch.diag(torch.diag(cov))
        assert off.abs().max() < 1e-3
        if kind == "whiten":
            assert torch.allclose(torch.diag(cov), torch.ones(3), atol=1e-3)
        else:  # decreasing variance along the axes
            assert (torch.diag(cov)[:-1] >= torch.diag(cov)[1:]).all()


@pytest.mark.parametrize("basis", ["units", "pca", "whiten"])
def test_basis_round_trip_and_full_randomisation(basis):
    g = torch.Generator().manual_seed(0)
    h = torch.randn(40, 4, generator=g) @ torch.tensor([[1.0, 0.5, 0, 0], [0, 1, 0.3, 0], [0, 0, 1, 0], [0, 0, 0, 2]])
    _, b = decorrelating_basis(h, basis)
    high = (100.0 * torch.ones(40, 4)) @ torch.linalg.pinv(b)  # responses far above delta2 in that basis
    cfg = XGIRConfig(delta2=1.0, delta2_mode="absolute", floor=0.0, basis=basis, draws=2)
    feats, copies, stats = variant_features(h, high, cfg, g)
    assert stats["frac_units_randomised"] == 0
    assert torch.allclose(feats, h.repeat(copies, 1), atol=1e-4)  # lambda 0: h' = h after the round trip
    low = -high  # far below: every coordinate randomised
    feats, _, stats = variant_features(h, low, cfg, g)
    assert stats["frac_units_fully_randomised"] == 1
    assert (feats[:40] - h).abs().mean() > 0.3


def test_core_vs_whole_response_by_hand():
    class Sum(nn.Module):
        def forward(self, x):
            return x.sum(dim=(2, 3))

    x = torch.ones(1, 2, 2, 2)
    x[:, 1] = 3.0
    s = torch.zeros(1, 2, 2, dtype=torch.bool)
    s[0, 0] = True  # top row kept
    x0 = torch.zeros_like(x)
    r = unit_responses(Sum(), x, s, x0, response="core-vs-whole")
    assert torch.allclose(r, torch.tensor([[2.0 - 4.0, 6.0 - 12.0]]))


class _GapNet(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 5, 3, padding=1)
        self.act = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(5, 4)

    def forward(self, x):
        return self.fc(self.pool(self.act(self.conv(x))).flatten(1))


def test_cam_from_pooled_maps_equals_grad_cam_and_pretrained_is_label_free():
    net = _GapNet().eval()
    x = torch.rand(3, 3, 6, 6)
    h, maps = pooled_maps(net, x, "pool", dtype=torch.float32)
    assert torch.allclose(h, net.pool(net.act(net.conv(x))).flatten(1), atol=1e-6)
    y = torch.tensor([0, 2, 3])
    ref = grad_cam(net, x, y[:, None], "act", upsample=False)[:, 0]
    assert torch.allclose(class_cam(maps, net.fc, y) / 36, ref, atol=1e-5)
    probs = net(x).softmax(1)
    top = probs.argmax(1)
    one = pretrained_cam(maps, net.fc, k=1)
    assert torch.allclose(one, class_cam(maps, net.fc, top) * probs.max(1).values[:, None, None], atol=1e-5)


def test_novelty_map_points_at_the_odd_cell():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(1, 8, 1, 1, generator=g).expand(2, 8, 4, 4).clone()
    base += 0.01 * torch.randn(2, 8, 4, 4, generator=g)
    base[0, :, 1, 2] += 3 * torch.randn(8, generator=g)
    base[1, :, 3, 0] += 3 * torch.randn(8, generator=g)
    nov = novelty_map(base)
    assert nov[0].argmax() == 1 * 4 + 2 and nov[1].argmax() == 3 * 4 + 0


def test_config_fields_validate_and_dispatch():
    assert not uses_variant(XGIRConfig())
    assert uses_variant(XGIRConfig(variant="swap")) and uses_variant(XGIRConfig(floor=0.05))
    for bad in ({"variant": "x"}, {"noise": "uniform"}, {"basis": "ica"}, {"core": "x"}, {"floor": 1.5},
                {"top_k": 0}):
        with pytest.raises(XgirError):
            XGIRConfig(**bad)
    h, r = torch.randn(30, 4), torch.randn(30, 4)
    y = torch.arange(30) % 3
    head, rec = retrain_head(h, r, y, 3, XGIRConfig(variant="swap", draws=2, head_epochs=2))
    assert head.weight.shape == (3, 4) and rec.config["variant"] == "swap"
    head, rec = retrain_head(h, r, y, 3, XGIRConfig(floor=0.05, delta2_mode="unit-quantile", head_epochs=2))
    assert 0 < rec.frac_units_randomised < 1
    cfg = XGIRSection(variant="swap", floor=0.1, noise="empirical", basis="pca", core="pretrained")  # = XGIRConfig
    assert (cfg.variant, cfg.floor, cfg.noise, cfg.basis, cfg.core) == ("swap", 0.1, "empirical", "pca", "pretrained")


def test_core_heatmaps_for_xgir_correct_match_the_map_forms():
    from xgir.correct.xgir_variants import core_heatmaps

    net = _GapNet().eval()
    x = torch.rand(3, 3, 6, 6)
    _, maps = pooled_maps(net, x, "pool", dtype=torch.float32)
    got = core_heatmaps("pretrained", net, x, "act", top_k=2)
    assert torch.allclose(got, pretrained_cam(maps, net.fc, k=2) / 36, atol=1e-5)
    assert torch.allclose(core_heatmaps("novelty", net, x, "act"), novelty_map(maps), atol=1e-5)
    with pytest.raises(XgirError, match="core source"):
        core_heatmaps("gt", net, x, "act")


def _two_class_folders(tmp_path):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    folders = {}
    for split, n in (("source_train", 6), ("source_test", 3), ("target_test", 3)):
        for c, name in enumerate(("a", "b")):
            (tmp_path / split / name).mkdir(parents=True)
            for i in range(n):
                img = rng.integers(0, 80, size=(32, 32, 3)).astype(np.uint8)
                img[4 + 12 * c : 12 + 12 * c, 10:22] = 230
                Image.fromarray(img).save(tmp_path / split / name / f"{i}.png")
        folders[split] = str(tmp_path / split)
    return folders


@pytest.mark.parametrize("core,variant", [("pretrained", "swap"), ("novelty", "note")])
def test_xgir_correct_runs_the_variants_and_core_sources(tmp_path, core, variant):
    from xgir.correct.pipeline import XGIRRunConfig, run_xgir_pipeline

    folders = _two_class_folders(tmp_path)
    cfg = XGIRRunConfig.model_validate({
        "model": {"factory": "_pipeline_models:tiny_resnet", "kwargs": {"num_classes": 2, "width": 4},
                  "head": "fc", "deep_layer": "layer3"},
        "data": {**folders, "image_size": 32, "batch_size": 6},
        "xgir": {"draws": 2, "head_epochs": 2, "core": core, "variant": variant, "floor": 0.05, "empty": "mean"},
        "out": str(tmp_path / "run"), "device": "cpu"})
    res = run_xgir_pipeline(cfg, progress=False)
    assert res["record"]["config"]["core"] == core and res["record"]["config"]["variant"] == variant
    assert 0 <= res["accuracy"]["xgir"]["target_test"] <= 1


def test_core_model_gives_the_pretrained_core(tmp_path, monkeypatch, capsys):
    """xgir.core_model: the core map is that network's own top-k map (here a 3-class head on the
    same body as the corrected 2-class model); without it, the model's own head (a warning when it
    has no more classes than top_k); a network without the layer, one line; another body, a warning."""
    import xgir.correct.passes as passes
    from xgir.correct.pipeline import XGIRRunConfig, run_xgir_pipeline
    from xgir.models import SmallResNet, save_checkpoint

    seen = []
    real = passes.core_heatmaps
    monkeypatch.setattr(passes, "core_heatmaps", lambda kind, model, *a, **k: seen.append(model.fc.out_features)
                        or real(kind, model, *a, **k))
    folders = _two_class_folders(tmp_path)

    def run(name, **xgir):
        cfg = XGIRRunConfig.model_validate({
            "model": {"factory": "_pipeline_models:tiny_resnet", "kwargs": {"num_classes": 2, "width": 4},
                      "head": "fc", "deep_layer": "layer3"},
            "data": {**folders, "image_size": 32, "batch_size": 6},
            "xgir": {"draws": 1, "head_epochs": 1, "core": "pretrained", "variant": "swap", "top_k": 2,
                     "support_fraction": 0.2, **xgir},
            "out": str(tmp_path / name), "device": "cpu"})
        return run_xgir_pipeline(cfg, progress=False)

    res = run("own")
    assert set(seen) == {2} and res["summary"]["core_model"] is None
    assert "reads the model's own head, which has 2 classes" in capsys.readouterr().err
    seen.clear()
    # tiny_resnet's body is drawn before its head: num_classes 3 (the factory's default) shares it
    res = run("core", core_model="_pipeline_models:tiny_resnet")
    assert set(seen) == {3} and res["summary"]["core_model_shares_extractor"] is True
    assert "_pipeline_models:tiny_resnet's own head" in (tmp_path / "core" / "report.md").read_text()
    assert capsys.readouterr().err == ""
    torch.manual_seed(5)
    save_checkpoint(SmallResNet(num_classes=3, width=4), tmp_path / "other.pt", "small-resnet",
                    {"width": 4, "num_classes": 3})
    res = run("other", core_model=str(tmp_path / "other.pt"))
    assert res["summary"]["core_model_shares_extractor"] is False
    assert "does not share the corrected model's extractor" in capsys.readouterr().err
    from xgir.models import LeNet

    save_checkpoint(LeNet(width=4, hidden=8), tmp_path / "lenet.pt", "lenet", {"width": 4, "hidden": 8})
    with pytest.raises(XgirError, match=r"xgir.core_model '.*lenet.pt' has no layer 'layer3' \(model.deep_layer"):
        run("lenet", core_model=str(tmp_path / "lenet.pt"))
    with pytest.raises(XgirError, match="core_model names the network whose own head gives the core map"):
        XGIRConfig(core="novelty", core_model="efficientnet-lite0")


@pytest.mark.parametrize("basis", ["pca", "whiten"])
def test_basis_round_trip_with_fewer_images_than_units(basis):
    # N < D: the covariance is singular (many eigenvalues clamped); lambda = 0 must still give h' = h
    # (a pseudo-inverse of the whitening matrix used to drop the top principal directions here)
    g = torch.Generator().manual_seed(0)
    h = 3.0 * torch.randn(12, 40, generator=g) @ torch.randn(40, 40, generator=g)
    cfg = XGIRConfig(delta2=1.0, delta2_mode="absolute", floor=0.0, basis=basis, draws=2)
    _, b = decorrelating_basis(h, basis)
    high = (100.0 * torch.ones(12, 40)) @ torch.linalg.inv(b.double()).float()
    feats, copies, stats = variant_features(h, high, cfg, g, empty_support=torch.ones(12, dtype=torch.bool))
    assert stats["frac_units_randomised"] == 0
    assert torch.allclose(feats, h.repeat(copies, 1), atol=1e-3 * float(h.abs().max()))
