import math

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Normal, kl_divergence

from xgir.data.base import ImageDataset
from xgir.errors import XgirError
from xgir.models import bayes as B
from xgir.train.bayes import fit_bayes


def test_kl_matches_closed_form_and_torch_distributions():
    torch.manual_seed(0)
    layer = B.BayesLinear(5, 3, prior_std=0.1, init_std=0.05)
    with torch.no_grad():
        layer.weight_mu.normal_()
        layer.weight_rho.uniform_(-4, 0)
    ours = layer.kl()
    prior = Normal(0.0, 0.1)
    ref = kl_divergence(Normal(layer.weight_mu, layer.weight_sigma), prior).sum()
    ref = ref + kl_divergence(Normal(layer.bias_mu, layer.bias_sigma), prior).sum()
    assert ours.item() == pytest.approx(ref.item(), rel=1e-5)
    # closed form by hand for one weight: log(s/sigma) + (sigma^2 + mu^2) / (2 s^2) - 1/2
    mu, sigma, s = layer.weight_mu[0, 0].item(), layer.weight_sigma[0, 0].item(), 0.1
    by_hand = math.log(s / sigma) + (sigma**2 + mu**2) / (2 * s**2) - 0.5
    one = kl_divergence(Normal(layer.weight_mu[0, 0], layer.weight_sigma[0, 0]), prior)
    assert one.item() == pytest.approx(by_hand, rel=1e-5)
    # zero when the posterior equals the prior
    with torch.no_grad():
        for p in (layer.weight_mu, layer.bias_mu):
            p.zero_()
        for p in (layer.weight_rho, layer.bias_rho):
            p.fill_(math.log(math.expm1(0.1)))
    assert layer.kl().item() == pytest.approx(0.0, abs=1e-4)


def _mc_check(layer, x, draw_output, n_draws=20000):
    """Compare the layer's analytic moments with Monte Carlo over sampled weights."""
    mean, var = layer.moments(x)
    outs = draw_output(n_draws)  # [S, ...]
    assert torch.allclose(outs.mean(0), mean, atol=4 * var.sqrt().max().item() / math.sqrt(n_draws))
    assert torch.allclose(outs.var(0), var, rtol=0.06, atol=1e-6)


def test_lrt_linear_moments_match_weight_sampling():
    torch.manual_seed(0)
    layer = B.BayesLinear(6, 4, init_std=0.3)
    x = torch.randn(3, 6)

    def draw(s):
        w = layer.weight_mu + layer.weight_sigma * torch.randn(s, 4, 6)
        b = layer.bias_mu + layer.bias_sigma * torch.randn(s, 4)
        return torch.einsum("soi,ni->sno", w, x) + b[:, None, :]

    with torch.no_grad():
        _mc_check(layer, x, draw)
        # sampled activations have the same moments
        samples = torch.stack([layer(x) for _ in range(20000)])
        mean, var = layer.moments(x)
        assert torch.allclose(samples.var(0), var, rtol=0.06)
        assert torch.allclose(samples.mean(0), mean, atol=0.02)
        layer.sample = False
        assert torch.equal(layer(x), mean)


def test_lrt_conv_moments_match_weight_sampling():
    torch.manual_seed(1)
    layer = B.BayesConv2d(2, 3, 3, padding=1, init_std=0.2)
    x = torch.rand(2, 2, 5, 5)

    def draw(s):
        w = layer.weight_mu + layer.weight_sigma * torch.randn(s, 3, 2, 3, 3)
        b = layer.bias_mu + layer.bias_sigma * torch.randn(s, 3)
        out = F.conv2d(x, w.reshape(s * 3, 2, 3, 3), b.reshape(-1), padding=1)  # [N, S*3, 5, 5]
        return out.reshape(2, s, 3, 5, 5).transpose(0, 1)

    with torch.no_grad():
        _mc_check(layer, x, draw)


def test_bayes_lenet_shapes_last_conv_and_sampling():
    torch.manual_seed(0)
    model = B.BayesLeNet(width=4, hidden=8)
    x = torch.rand(2, 1, 28, 28)
    a, mean, var = model.last_conv(x)
    assert a.shape == mean.shape == var.shape == (2, 8, 14, 14)
    assert (var > 0).all()
    with B.sampling(model, False):
        a0, m0, _ = model.last_conv(x)
        assert torch.equal(a0, m0)
        assert torch.allclose(model.head_from_last_conv(m0), model(x), atol=1e-6)
    assert model.conv2.sample  # restored
    assert not torch.equal(model(x), model(x))  # stochastic
    assert B.kl_divergence(model).item() > 0
    with pytest.raises(XgirError, match="no Bayesian layers"):
        B.kl_divergence(torch.nn.Linear(2, 2))
    with pytest.raises(XgirError, match="divisible by 4"):
        B.BayesLeNet(image_size=30)


def test_predictive_uncertainty_and_training():
    torch.manual_seed(0)
    n = 96
    labels = torch.arange(n) % 2
    images = torch.rand(n, 1, 8, 8) * 0.2
    images[labels == 1, :, :4] += 0.8  # class 1: bright top half
    ds = ImageDataset(images=images, labels=labels)
    model = B.BayesLeNet(width=4, hidden=8, num_classes=2, image_size=8, init_std=0.05)
    kl0 = B.kl_divergence(model).item()
    fit_bayes(model, ds, epochs=15, lr=1e-2, batch_size=32, kl_weight=1e-3, progress=False)
    assert B.bayes_accuracy(model, ds, samples=5) > 0.95
    out = B.predictive(model, images, samples=8)
    assert out["probs"].shape == (n, 2)
    assert torch.allclose(out["probs"].sum(1), torch.ones(n), atol=1e-5)
    assert (out["mutual_information"] >= 0).all()
    assert (out["mutual_information"] <= out["entropy"] + 1e-6).all()
    # same seed, same samples; the global RNG is left alone
    torch.manual_seed(5)
    r = torch.rand(1)
    torch.manual_seed(5)
    again = B.predictive(model, images, samples=8)
    assert torch.equal(again["probs"], out["probs"])
    assert torch.equal(torch.rand(1), r)
    assert B.kl_divergence(model).item() != pytest.approx(kl0)
    with pytest.raises(XgirError, match="samples"):
        B.predict_samples(model, images, samples=0)
