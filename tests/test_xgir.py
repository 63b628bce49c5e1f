import pytest
import torch
from torch import nn

from xgir.correct.xgir import (
    XGIRConfig,
    interventional_lambda,
    noisy_features,
    retrain_head,
    support_from_heatmaps,
    unit_responses,
    xgir_retrain,
)
from xgir.errors import XgirError
from xgir.models import SmallResNet


def test_lambda_formula_by_hand():
    r = torch.tensor([[0.0, 0.5, 1.0, 2.0, -1.0]])
    lam = interventional_lambda(r, 1.0)
    # (d - min(d, r)) / d, clipped to [0, 1]
    assert torch.allclose(lam, torch.tensor([[1.0, 0.5, 0.0, 0.0, 1.0]]))
    per_unit = interventional_lambda(torch.tensor([[1.0, 1.0]]), torch.tensor([2.0, 0.5]))
    assert torch.allclose(per_unit, torch.tensor([[0.5, 0.0]]))
    with pytest.raises(XgirError, match="positive"):
        interventional_lambda(r, 0.0)


def test_noisy_features_formula_and_untouched_units():
    h = torch.tensor([[1.0, 2.0, 3.0]])
    lam = torch.tensor([[0.0, 1.0, 0.5]])
    mean, std = torch.tensor([10.0, 20.0, 30.0]), torch.tensor([1.0, 1.0, 1.0])
    g = torch.Generator().manual_seed(0)
    out = noisy_features(h, lam, mean, std, draws=4, generator=g)
    g = torch.Generator().manual_seed(0)
    eps = mean + std * torch.randn(4, 1, 3, generator=g)
    assert out.shape == (4, 3)
    assert torch.allclose(out[:, 0], torch.ones(4))  # lambda 0: r >= delta2, untouched
    assert torch.allclose(out[:, 1], eps[:, 0, 1])  # lambda 1: pure noise
    assert torch.allclose(out[:, 2], 0.5 * 3.0 + 0.5 * eps[:, 0, 2])


def test_support_threshold_and_empty_maps():
    maps = torch.zeros(2, 4, 4)
    maps[0, 0, 0] = 1.0
    maps[0, 1, 1] = 0.005  # below delta1 = 0.01 of the max
    sup = support_from_heatmaps(maps, (4, 4), 0.01)
    assert sup[0].sum() == 1 and sup[0, 0, 0]
    assert not sup[1].any()  # no positive mass: empty support
    with pytest.raises(XgirError, match="NaN"):
        support_from_heatmaps(torch.full((1, 2, 2), float("nan")), (2, 2), 0.01)


def test_units_with_high_response_are_untouched_in_training_data():
    h = torch.randn(50, 3)
    r = torch.tensor([10.0, 0.0, 10.0]).expand(50, 3).clone()
    labels = torch.arange(50) % 2
    cfg = XGIRConfig(delta2=1.0, delta2_mode="absolute", draws=2, head_epochs=1)
    _, rec = retrain_head(h, r, labels, 2, cfg)
    assert rec.frac_units_randomised == pytest.approx(1 / 3)
    assert rec.frac_units_fully_randomised == pytest.approx(1 / 3)


def test_unit_responses_with_full_support_equal_feature_difference():
    feats = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    x = torch.rand(4, 3, 2, 2)
    x0 = torch.zeros_like(x)
    r = unit_responses(feats, x, torch.ones(4, 2, 2, dtype=torch.bool), x0)
    with torch.no_grad():
        assert torch.allclose(r, feats(x) - feats(x0), atol=1e-6)


def test_core_minus_context_response_by_hand():
    # a linear "extractor" summing each half of a 1x1x4 image: r = f(core) - f(context)
    w = torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]])
    feats = nn.Sequential(nn.Flatten(), nn.Linear(4, 2, bias=False))
    with torch.no_grad():
        feats[1].weight.copy_(w)
    x = torch.tensor([[[[1.0, 2.0, 3.0, 4.0]]]])
    s = torch.tensor([[[True, True, False, False]]])
    x0 = torch.full_like(x, 0.5)
    r = unit_responses(feats, x, s, x0, response="core-minus-context")
    # core image [1, 2, .5, .5] -> (3, 1); context image [.5, .5, 3, 4] -> (1, 7)
    assert torch.allclose(r, torch.tensor([[2.0, -6.0]]))
    with pytest.raises(XgirError, match="response"):
        XGIRConfig(response="context")


def test_xgir_retrain_keeps_extractor_and_original_model():
    torch.manual_seed(0)
    model = SmallResNet(width=4, num_classes=3).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(30, 3, 16, 16)
    y = torch.arange(30) % 3
    support = torch.zeros(30, 16, 16, dtype=torch.bool)
    support[:, 4:12, 4:12] = True
    new, rec = xgir_retrain(model, x, y, support, XGIRConfig(draws=2, head_epochs=2))
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])  # the input model is not modified
    for k, v in new.state_dict().items():
        if not k.startswith("fc."):
            assert torch.equal(v, before[k]), k  # extractor frozen
    assert not torch.equal(new.fc.weight, model.fc.weight)  # head retrained
    assert 0 <= rec.frac_units_randomised <= 1 and rec.support_fraction == pytest.approx(0.25)
    with pytest.raises(XgirError, match="support must be"):
        xgir_retrain(model, x, y, support[:, :8], XGIRConfig())


def test_config_errors():
    with pytest.raises(XgirError, match="quantile"):
        XGIRConfig(delta2=2.0)
    with pytest.raises(XgirError, match="empty image"):
        XGIRConfig(empty="grey")
