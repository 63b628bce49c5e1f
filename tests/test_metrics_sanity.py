import numpy as np
import pytest
import torch
from scipy.stats import rankdata as scipy_rankdata
from scipy.stats import spearmanr
from skimage.metrics import structural_similarity

from xgir.errors import XgirError
from xgir.metrics import (
    cascading_randomisation,
    parameter_layers,
    randomised_models,
    rankdata,
    spearman,
    ssim,
)
from xgir.models import LeNet


def test_rankdata_and_spearman_match_scipy_with_ties():
    g = torch.Generator().manual_seed(0)
    a = torch.randint(0, 4, (3, 6, 6), generator=g).float()
    b = torch.randint(0, 4, (3, 6, 6), generator=g).float()
    ranks = rankdata(a.flatten(1))
    for i in range(3):
        assert np.allclose(ranks[i].numpy(), scipy_rankdata(a[i].flatten().numpy()))
        ref = spearmanr(a[i].flatten().numpy(), b[i].flatten().numpy())[0]
        assert spearman(a[i], b[i]).item() == pytest.approx(ref, abs=1e-6)


def test_spearman_identical_reversed_constant():
    a = torch.rand(2, 3, 5, 5)
    assert torch.allclose(spearman(a, a), torch.ones(2, 3))
    assert torch.allclose(spearman(a, -a), -torch.ones(2, 3))
    assert torch.allclose(spearman(a, 3 * a + 1), torch.ones(2, 3))  # monotone map: still 1
    assert torch.isnan(spearman(torch.ones(4, 4), a[0, 0, :4, :4]))  # undefined for a constant


@pytest.mark.parametrize("size", [(16, 16), (28, 23)])
def test_ssim_matches_skimage(size):
    g = torch.Generator().manual_seed(1)
    a = torch.rand(2, *size, generator=g, dtype=torch.float64)
    b = (a + 0.3 * torch.rand(2, *size, generator=g, dtype=torch.float64)).clamp(0, 1)
    ours = ssim(a, b, normalise=False)
    for i in range(2):
        ref = structural_similarity(
            a[i].numpy(),
            b[i].numpy(),
            data_range=1.0,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
        )
        assert ours[i].item() == pytest.approx(ref, abs=1e-5)


def test_ssim_identical_and_normalised():
    a = torch.randn(3, 12, 12)
    assert torch.allclose(ssim(a, a), torch.ones(3))
    # min-max normalisation makes SSIM invariant to positive affine changes
    assert torch.allclose(ssim(a, 5 * a + 2), torch.ones(3), atol=1e-6)
    assert (ssim(a, torch.randn(3, 12, 12)) < 0.5).all()
    assert ssim(torch.rand(5, 5), torch.rand(5, 5)).shape == ()  # smaller window fits
    with pytest.raises(XgirError, match="same shape"):
        ssim(a, a[:2])


def test_randomised_models_are_cumulative_seeded_and_leave_original():
    torch.manual_seed(0)
    model = LeNet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert parameter_layers(model) == ["fc", "hidden", "conv2", "conv1"]
    changed = []
    for name, rand in randomised_models(model, seed=3):
        state = rand.state_dict()
        changed.append(
            (name, [k.split(".")[0] for k in before if not torch.equal(before[k], state[k])])
        )
    assert changed[0] == ("fc", ["fc", "fc"])  # weight and bias
    assert sorted(set(changed[1][1])) == ["fc", "hidden"]
    assert sorted(set(changed[3][1])) == ["conv1", "conv2", "fc", "hidden"]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    a = [r.fc.weight.clone() for _, r in randomised_models(model, ["fc"], seed=3)]
    b = [r.fc.weight.clone() for _, r in randomised_models(model, ["fc"], seed=3)]
    c = [r.fc.weight.clone() for _, r in randomised_models(model, ["fc"], seed=4)]
    assert torch.equal(a[0], b[0]) and not torch.equal(a[0], c[0])
    with pytest.raises(XgirError, match="unknown layer"):
        next(randomised_models(model, ["fc", "nope"]))


def _input_gradient(model, x, targets):
    x = x.clone().requires_grad_(True)
    model(x).gather(1, targets[:, None]).sum().backward()
    return x.grad.detach().sum(1, keepdim=True)


def test_cascading_randomisation():
    torch.manual_seed(0)
    model = LeNet().eval()
    x = torch.rand(4, 1, 28, 28)
    targets = torch.tensor([0, 1, 2, 3])

    def constant(model, x, targets):  # ignores the model entirely
        return x.mean(1, keepdim=True)

    res = cascading_randomisation(model, constant, x, targets)
    assert res.layers == ["fc", "hidden", "conv2", "conv1"]
    for v in (res.spearman_abs, res.spearman_signed, res.ssim):
        assert v.shape == (4, 4, 1)
        assert torch.allclose(v, torch.ones_like(v), atol=1e-6)

    res = cascading_randomisation(model, _input_gradient, x, targets, layers=["fc", "conv1"])
    assert res.layers == ["fc", "conv1"]
    last = res.summary()[-1]
    assert abs(last["spearman_signed"]) < 0.5 and last["ssim"] < 0.5
    assert last["spearman_abs_nan"] == 0


def test_cascading_randomisation_bad_explainer():
    model = LeNet().eval()
    x = torch.rand(2, 1, 28, 28)
    with pytest.raises(XgirError, match=r"\[N,T,H,W\]"):
        cascading_randomisation(model, lambda m, x, t: x[:, 0], x, torch.tensor([0, 1]))
    with pytest.raises(XgirError, match="NaN"):
        cascading_randomisation(
            model, lambda m, x, t: torch.full_like(x, float("nan")), x, torch.tensor([0, 1])
        )
