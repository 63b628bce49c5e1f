"""Captum gradient family: equality with direct Captum calls, IG axioms, baselines."""

import numpy as np
import pytest
import torch
from captum import attr as ca
from torch import nn

from xgir.errors import XgirError
from xgir.explain import as_targets, get_explainer
from xgir.explain.baselines import (
    BlurBaseline,
    ConstantBaseline,
    MeanColourBaseline,
    UniformNoiseBaseline,
    gaussian_blur,
    get_baseline,
    resolve_baseline,
)
from xgir.models import LeNet


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return LeNet(in_channels=1, num_classes=5, image_size=16, width=4, hidden=16).eval()


@pytest.fixture(scope="module")
def x():
    return torch.rand(3, 1, 16, 16, generator=torch.Generator().manual_seed(1))


TARGETS = torch.tensor([[1, 2], [0, 4], [3, 3]])
DATA = torch.rand(10, 1, 16, 16, generator=torch.Generator().manual_seed(2))


def captum_ref(name, model, x, target):
    if name == "saliency":
        a = ca.Saliency(model).attribute(x, target=target, abs=True)
    elif name == "input-x-gradient":
        a = ca.InputXGradient(model).attribute(x, target=target)
    elif name == "ig":
        a = ca.IntegratedGradients(model).attribute(x, target=target, n_steps=20)
    elif name == "deeplift":
        a = ca.DeepLift(model).attribute(x, target=target)
    elif name == "deepshap":
        a = ca.DeepLiftShap(model).attribute(x, baselines=DATA, target=target)
    else:
        a = ca.Occlusion(model).attribute(x, sliding_window_shapes=(1, 4, 4), strides=(1, 2, 2),
                                          target=target, baselines=0.0)
    return a.detach().sum(dim=1)


PARAMS = {"ig": {"n_steps": 20}, "deepshap": {"baseline": DATA},
          "occlusion": {"window": 4, "stride": 2}}


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("name", ["saliency", "input-x-gradient", "ig", "deeplift", "deepshap",
                                  "occlusion"])
def test_class_targets_equal_direct_captum(model, x, name):
    ours = get_explainer(name, **PARAMS.get(name, {}))(model, x, TARGETS)
    ref = torch.stack([captum_ref(name, model, x, TARGETS[:, j]) for j in range(2)], dim=1)
    assert ours.shape == (3, 2, 16, 16)
    assert float(ref.abs().max()) > 1e-3
    assert torch.allclose(ours, ref, atol=1e-6, rtol=1e-4)


def test_expected_gradients_equals_seeded_gradient_shap(model, x):
    ours = get_explainer("expected-gradients", baseline=DATA, n_samples=8, seed=3)(
        model, x, TARGETS[:, 0])
    np.random.seed(3)
    torch.manual_seed(3)
    ref = ca.GradientShap(model).attribute(x, baselines=DATA, n_samples=8, stdevs=0.0,
                                           target=TARGETS[:, 0]).detach().sum(1)
    assert torch.allclose(ours[:, 0], ref, atol=1e-6, rtol=1e-4)
    again = get_explainer("expected-gradients", baseline=DATA, n_samples=8, seed=3)(
        model, x, TARGETS[:, 0])
    assert torch.equal(ours, again)  # seeded


def test_cluster_and_weighted_targets_equal_captum_wrappers(model, x):
    w = torch.randn(5, generator=torch.Generator().manual_seed(4))
    ours = get_explainer("ig", n_steps=20)(model, x, [(0, 3), w])
    ref_c = ca.IntegratedGradients(lambda z: model(z)[:, [0, 3]].logsumexp(1)).attribute(
        x, n_steps=20).sum(1)
    ref_w = ca.IntegratedGradients(lambda z: model(z) @ w).attribute(x, n_steps=20).sum(1)
    assert torch.allclose(ours[:, 0], ref_c, atol=1e-6, rtol=1e-4)
    assert torch.allclose(ours[:, 1], ref_w, atol=1e-6, rtol=1e-4)


def scores(model, x, targets):
    with torch.no_grad():
        logits = model(x)
    return as_targets(targets, x.shape[0], logits.shape[1]).scores(logits)


@pytest.mark.parametrize("baseline", ["zero", "mean", "blur", "uniform"])
def test_ig_completeness(model, x, baseline):
    """Sum of attributions = score(x) - score(baseline), up to the quadrature error of IG on a
    piecewise-linear network: within 2% of the largest score difference at 256 steps."""
    targets = [1, (0, 3), torch.linspace(-1, 1, 5)]
    maps = get_explainer("ig", baseline=baseline, n_steps=256)(model, x, targets)
    tg = as_targets(targets, 3, 5)
    refs = resolve_baseline(baseline, x, tg)  # [N,T,C,H,W]
    expected = scores(model, x, targets) - torch.stack(
        [scores(model, refs[:, j], targets)[:, j] for j in range(3)], dim=1)
    total = maps.sum(dim=(-2, -1))
    scale = float(expected.abs().max())
    assert scale > 1e-3
    assert float((total - expected).abs().max()) <= 0.02 * scale, (total, expected)


def test_ig_with_baseline_equal_to_input_is_zero(model, x):
    maps = get_explainer("ig", baseline=x, n_steps=16)(model, x, [0, (1, 2)])
    assert float(maps.abs().max()) == 0.0


class TargetedBaseline:
    """A fake class-targeted baseline (GANMEX stand-in): the image scaled by (1 + class)/10
    for class targets."""

    def __call__(self, x, targets):
        cls = targets.weights.argmax(-1).to(x.dtype)  # [N,T]
        return x[:, None] * ((1 + cls) / 10)[..., None, None, None]


@pytest.mark.parametrize("name", ["ig", "deeplift", "occlusion"])
def test_per_target_baseline_reaches_each_row(model, x, name):
    params = {"ig": {"n_steps": 16}, "occlusion": {"window": 4, "stride": 4}}.get(name, {})
    ours = get_explainer(name, baseline=TargetedBaseline(), **params)(model, x, TARGETS)
    for j in range(2):
        for i in range(3):
            c = int(TARGETS[i, j])
            ref = get_explainer(name, baseline=x[i:i + 1] * (1 + c) / 10, **params)(
                model, x[i:i + 1], c)
            assert torch.allclose(ours[i, j], ref[0, 0], atol=1e-6, rtol=1e-4)


def test_expected_gradients_with_row_baseline_on_linear_model(x):
    """On a linear model EG from a fixed reference r is exactly (x - r) * w, whatever the draws."""
    torch.manual_seed(0)
    linear = nn.Sequential(nn.Flatten(), nn.Linear(256, 4)).eval()
    maps = get_explainer("expected-gradients", baseline="mean", n_samples=4)(linear, x, [2, 0])
    w = linear[1].weight.detach().view(4, 1, 16, 16)
    mean = x.mean(dim=(-2, -1), keepdim=True)
    for j, c in enumerate([2, 0]):
        assert torch.allclose(maps[:, j], ((x - mean) * w[c]).sum(1), atol=1e-6)


def test_baselines():
    x = torch.rand(2, 3, 20, 20, generator=torch.Generator().manual_seed(5))
    tg = as_targets([0, 1, 2], 2, 4)
    mean = MeanColourBaseline()(x, tg)
    assert mean.shape == (2, 3, 3, 20, 20)
    assert torch.allclose(mean[:, 0].mean(dim=(-2, -1)), x.mean(dim=(-2, -1)))
    assert torch.allclose(mean[..., 0, 0], mean[..., 7, 11])
    const = torch.full((1, 3, 20, 20), 0.3)
    assert torch.allclose(gaussian_blur(const, 2.0), const)  # blur keeps constants
    blurred = BlurBaseline(sigma=3.0)(x, tg)
    assert blurred[:, 0].std() < x.std()  # smoother
    u1, u2 = UniformNoiseBaseline(seed=7)(x, tg), UniformNoiseBaseline(seed=7)(x, tg)
    assert torch.equal(u1, u2) and float(u1.min()) >= 0 and float(u1.max()) <= 1
    assert torch.equal(ConstantBaseline(x[0])(x, tg)[1, 2], x[0])
    assert isinstance(get_baseline(0.5), ConstantBaseline)
    with pytest.raises(XgirError, match="unknown baseline"):
        get_baseline("gan")
    with pytest.raises(XgirError, match=r"\[C,H,W\]"):
        resolve_baseline(torch.zeros(5, 5), x, tg)
    with pytest.raises(XgirError, match="NaN"):
        resolve_baseline(float("nan"), x, tg)


def test_errors(model, x):
    with pytest.raises(XgirError, match="needs a baseline"):
        get_explainer("expected-gradients")
    with pytest.raises(XgirError, match="baseline= only"):
        get_explainer("deepshap", baseline="zeros", baselines=DATA)
    bad = x.clone()
    bad[0, 0, 3, 3] = float("inf")
    with pytest.raises(XgirError, match="NaN"):
        get_explainer("saliency")(model, bad, 0)
    with pytest.raises(XgirError, match="larger than the image"):
        get_explainer("occlusion", window=20)(model, x, 0)
    with pytest.raises(XgirError, match=r"\[B>=2"):
        get_explainer("deepshap", baseline=DATA[:1])(model, x, 0)


def test_old_parameter_name_baselines_is_read_as_baseline(model, x):
    """One parameter name (``baseline``) for every method; ``baselines=`` still works."""
    new = get_explainer("deepshap", baseline=DATA)(model, x, 1)
    old = get_explainer("deepshap", baselines=DATA)(model, x, 1)
    assert torch.equal(new, old)
