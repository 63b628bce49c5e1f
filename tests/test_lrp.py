"""LRP: equality with Zennit's composites (same canonizers), conservation, batching, refusals.

Zennit does not import beside xgir's pinned torch (it needs torchvision), so its relevance was
recorded once by tests/fixtures/make_cam_lrp_reference.py into tests/fixtures/zennit_reference.npz:
LeNet and SmallResNet (batch norms merged, residual adds as Zennit Sum modules) under the five
composites, the pretrained EfficientNet-Lite0 at 96 px under EpsilonPlusFlat and
EpsilonAlpha2Beta1Flat, all computed in float64 (in float32 the z+ and alpha-beta denominators
amplify rounding to ~1e-4 of the map in either implementation) and stored as float32. xgir
runs the same models in float64 and must agree to 1e-4 of the map's maximum.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from xgir.errors import XgirError
from xgir.explain import get_explainer
from xgir.explain.lrp import COMPOSITES, check_supported, lrp
from xgir.models import LeNet, SmallResNet

TOL = 1e-4
REF = Path(__file__).parent / "fixtures" / "zennit_reference.npz"


@pytest.fixture(scope="module")
def ref():
    return dict(np.load(REF))


def small_resnet() -> nn.Module:
    torch.manual_seed(0)
    model = SmallResNet(in_channels=3, num_classes=6, width=8, blocks=1).eval()
    with torch.no_grad():
        model.fc.weight.mul_(10.0)
    return model


def lenet() -> nn.Module:
    torch.manual_seed(0)
    return LeNet(in_channels=1, num_classes=10, image_size=28, width=8, hidden=32).eval()


def _checksum(model: nn.Module) -> float:
    return float(sum(p.detach().double().abs().sum() for p in model.state_dict().values() if p.is_floating_point()))


def _compare(model, ref, name, composite, channels):
    x = torch.from_numpy(ref[f"{name}/x"]).double()
    targets = torch.from_numpy(ref[f"{name}/targets"])
    expected = torch.from_numpy(ref[f"{name}/{composite}"]).double()
    got = lrp(model, x, targets, composite=composite, channels=channels)
    assert got.shape == expected.shape
    scale = float(expected.abs().max())
    assert scale > 0
    err = float((got - expected).abs().max()) / scale
    assert err < TOL, f"{name} {composite}: {err:.2e} of the maximum"


@pytest.mark.parametrize("composite", list(COMPOSITES))
@pytest.mark.parametrize("name", ["lenet", "resnet"])
def test_equals_zennit(ref, name, composite):
    model = {"lenet": lenet, "resnet": small_resnet}[name]()
    assert abs(_checksum(model) - float(ref[f"{name}/checksum"])) < 1e-3, f"{name} differs from the recording"
    _compare(model.double(), ref, name, composite, "keep")


@pytest.mark.slow
@pytest.mark.parametrize("composite", ["epsilon-plus-flat", "epsilon-alpha2-beta1-flat"])
def test_equals_zennit_on_efficientnet_lite0(ref, composite):
    from xgir.models import load_model

    net = load_model("efficientnet-lite0").model.double().eval()  # xgir's ReLU6 and its input normalisation
    _compare(net, ref, "lite0", composite, "sum")


@pytest.mark.parametrize("make", [lenet, small_resnet])
def test_epsilon_rule_conserves_the_logit(make):
    model = make().double()
    x = torch.rand(3, model.stem[0].in_channels if hasattr(model, "stem") else 1,
                   24 if hasattr(model, "stem") else 28, 24 if hasattr(model, "stem") else 28,
                   generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    with torch.no_grad():
        logits = model(x)
    targets = torch.tensor([[0, 2], [1, 3], [5, 4]])
    rel = lrp(model, x, targets, composite="epsilon", epsilon=1e-12, stabilizer=1e-12, zero_bias=True)
    expected = logits.gather(1, targets)
    assert torch.allclose(rel.sum((-2, -1)), expected, atol=1e-7 * float(expected.abs().max()), rtol=0)
    w = torch.linspace(-1, 1, logits.shape[1], dtype=torch.float64)  # weighted logits: R sums to w . z
    rel_w = lrp(model, x, [w], composite="epsilon", epsilon=1e-12, stabilizer=1e-12, zero_bias=True)
    assert torch.allclose(rel_w.sum((-2, -1))[:, 0], logits @ w, atol=1e-7 * float((logits @ w).abs().max()))


def test_batched_targets_equal_separate_calls():
    model = small_resnet()
    x = torch.rand(2, 3, 24, 24, generator=torch.Generator().manual_seed(4))
    targets = torch.tensor([[0, 3, 5], [1, 2, 4]])
    batched = lrp(model, x, targets)
    separate = torch.cat([lrp(model, x, targets[:, j]) for j in range(3)], 1)
    one = lrp(model, x[1:], targets[1:])
    scale = float(batched.abs().max())
    assert torch.allclose(batched, separate, atol=1e-6 * scale)
    assert torch.allclose(batched[1:], one, atol=1e-6 * scale)


def test_registry_explainer_and_grad_mode():
    model = lenet()
    x = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        maps = get_explainer("lrp", composite="epsilon-plus")(model, x, [1, 2])
        assert not torch.is_grad_enabled()
    assert maps.shape == (2, 2, 28, 28)
    assert torch.allclose(maps, lrp(model, x, [1, 2], composite="epsilon-plus"))
    with pytest.raises(XgirError, match="unknown LRP composite"):
        get_explainer("lrp", composite="gamma")


class _Gated(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.fc = nn.Linear(2, 2)

    def forward(self, x):
        h = self.conv(x)
        return self.fc((h * torch.sigmoid(h)).mean((2, 3)))


def test_unsupported_modules_are_refused_in_one_line():
    with pytest.raises(XgirError, match="LRP does not support '_Gated'") as err:
        check_supported(_Gated())
    assert "\n" not in str(err.value)
    odd = nn.Sequential(nn.Conv2d(1, 2, 3), nn.LSTM(2, 2))
    with pytest.raises(XgirError, match=r"LRP does not support '1' \(LSTM\)"):
        lrp(odd, torch.rand(1, 1, 5, 5), 0)
    reflect = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1, padding_mode="reflect"), nn.Flatten(), nn.Linear(50, 2))
    with pytest.raises(XgirError, match="padding_mode"):
        lrp(reflect, torch.rand(1, 1, 5, 5), 0)
