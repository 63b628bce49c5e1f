import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Normal

from xgir.correct import bayes_feedback as BF
from xgir.data.base import ImageDataset
from xgir.errors import XgirError
from xgir.models.bayes import BayesLeNet, kl_divergence, sampling


def _setup():
    torch.manual_seed(0)
    model = BayesLeNet(width=4, hidden=8, init_std=0.05)
    x = torch.rand(3, 1, 28, 28)
    y = torch.tensor([1, 2, 3])
    fb = torch.zeros(3, 28, 28, dtype=torch.bool)
    fb[0, :4, :4] = True  # top-left 4x4 -> 2x2 at 14x14
    fb[1, 27, 27] = True  # one pixel -> one cell
    return model, x, y, fb


def test_pool_feedback():
    _, _, _, fb = _setup()
    pooled = BF.pool_feedback(fb, (14, 14))
    assert pooled.shape == (3, 1, 14, 14)
    assert pooled[0, 0, :2, :2].all() and pooled[0].sum() == 4
    assert pooled[1, 0, 13, 13] and pooled[1].sum() == 1
    assert not pooled[2].any()
    grown = BF.pool_feedback(fb, (14, 14), dilate=1)
    assert grown[0, 0, :3, :3].all() and grown[0].sum() == 9 and grown[1].sum() == 4
    with pytest.raises(XgirError, match="dilate"):
        BF.pool_feedback(fb, (14, 14), dilate=-1)
    with pytest.raises(XgirError, match="N,H,W"):
        BF.pool_feedback(fb[0], (14, 14))


def test_objective_without_feedback_is_the_elbo():
    model, x, y, fb = _setup()
    with sampling(model, False):
        parts = BF.feedback_objective(
            model, x, y, torch.zeros_like(fb), num_train=100, lambda_fb=1.0
        )
        expected = kl_divergence(model) / 100 + F.cross_entropy(model(x), y)
    assert parts["loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert parts["log_density"].item() == 0.0 and parts["masked"].item() == 0.0


def test_objective_masks_activations_and_scores_their_density_at_zero():
    model, x, y, fb = _setup()
    with sampling(model, False):
        parts = BF.feedback_objective(model, x, y, fb, num_train=100, lambda_fb=0.5)
        _, mean, var = model.last_conv(x)
        # a_F by hand: feedback cells whose activation passes the ReLU and wins its 2x2 max-pool
        pooled = BF.pool_feedback(fb, (14, 14))
        relu = mean.clamp(min=0)
        winners = F.max_unpool2d(
            *F.max_pool2d(relu, 2, return_indices=True), 2, output_size=relu.shape[-2:]
        )
        a_f = pooled & (mean > 0) & (winners == relu) & (relu > 0)
        logits = model.head_from_last_conv(mean.masked_fill(a_f, 0.0))
        nll = F.cross_entropy(logits, y)
        dens = (
            (Normal(mean, var.sqrt()).log_prob(torch.zeros_like(mean)) * a_f)
            .flatten(1)
            .sum(1)
            .mean()
        )
        kl = kl_divergence(model) / 100
    assert a_f.sum() > 0
    assert parts["masked"].item() == pytest.approx(a_f.sum().item() / 2)  # two images have feedback
    assert parts["nll"].item() == pytest.approx(nll.item(), rel=1e-5)
    assert parts["log_density"].item() == pytest.approx(dens.item(), rel=1e-5)
    assert parts["loss"].item() == pytest.approx((kl + nll - 0.5 * dens).item(), rel=1e-5)
    # has_feedback switches images off
    off = BF.feedback_objective(
        model, x, y, fb, torch.tensor([False, True, False]), num_train=100, lambda_fb=0.5, samples=2
    )
    assert 0 < off["masked"].item()


def test_feedback_gradient_lowers_the_masked_activations():
    model, x, y, fb = _setup()
    with sampling(model, False):
        _, mean0, _ = model.last_conv(x)
    pooled = BF.pool_feedback(fb, (14, 14))
    before = (mean0.clamp(min=0) * pooled).sum()
    parts = BF.feedback_objective(model, x, y, fb, num_train=100, lambda_fb=1.0)
    parts["loss"].backward()
    assert (
        model.conv2.weight_mu.grad.abs().sum() > 0 and model.conv1.weight_rho.grad.abs().sum() > 0
    )
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    for _ in range(20):
        opt.zero_grad()
        # KL negligible, the density term dominates the likelihood
        BF.feedback_objective(model, x, y, fb, num_train=10**9, lambda_fb=100.0)["loss"].backward()
        opt.step()
    with sampling(model, False):
        _, mean1, _ = model.last_conv(x)
    after = (mean1.clamp(min=0) * pooled).sum()
    assert after < 0.9 * before


def test_fine_tune_feedback_runs_and_checks_input():
    model, _, _, _ = _setup()
    n = 32
    images = torch.rand(n, 1, 28, 28)
    ds = ImageDataset(images=images, labels=torch.randint(0, 10, (n,)))
    fb = torch.zeros(n, 28, 28, dtype=torch.bool)
    fb[:4, :4, :4] = True
    out = BF.fine_tune_feedback(
        model, ds, fb, epochs=1, batch_size=16, feedback_repeats=3, progress=False
    )
    assert out is model and not model.training
    with pytest.raises(XgirError, match="feedback must have shape"):
        BF.fine_tune_feedback(model, ds, fb[:5], epochs=1, progress=False)
    with pytest.raises(XgirError, match="last_conv"):
        BF.feedback_objective(torch.nn.Linear(2, 2), images[:2], torch.tensor([0, 1]), fb[:2])
    with pytest.raises(XgirError, match="does not match"):
        BF.feedback_objective(model, images[:2], torch.tensor([0, 1]), fb[:3])
