"""Explanation feedback as evidence for a Bayesian CNN (docs/correct.md).

Feedback F_i bool[H,W] (1 = irrelevant pixel) on some training images. It is max-pooled to
the resolution of the last conv layer; the activations a (sampled pre-activations of
``conv2``, all channels) at those positions that have a non-zero gradient of the
log-likelihood (they pass the ReLU and win their max-pool window, so they affect the output)
form a_F. Per minibatch the fine-tuning loss is

    kl_weight * KL(q || prior) / N
      - mean over MC samples of mean over images of
        [ log P(y | a_F = 0, rest)  +  lambda_fb * sum_{a in a_F} log q(a = 0 | x) ]

where q(a | x) = N(mean_a, var_a) is the activation's Gaussian under the local
reparameterisation trick, so log q(a = 0 | x) = -log(2 pi var_a) / 2 - mean_a^2 / (2 var_a).
The masked activations are also zeroed in the forward pass of the likelihood term. Images
without feedback contribute their plain log-likelihood. N = training set size (the KL divided
by the number of minibatches, per image), one MC sample by default (as the authors run it).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from xgir.data.base import ImageDataset
from xgir.errors import XgirError
from xgir.models.bayes import kl_divergence, set_sampling
from xgir.progress import Progress

LOG_2PI = math.log(2 * math.pi)


def pool_feedback(feedback: torch.Tensor, size: tuple[int, int], *, dilate: int = 0) -> torch.Tensor:
    """Max-pool feedback bool[N,H,W] to the layer size (h, w): bool[N,1,h,w]; ``dilate`` > 0 grows
    the pooled region by that many cells (a square neighbourhood)."""
    if feedback.ndim != 3:
        raise XgirError(f"feedback masks must be [N,H,W], got shape {tuple(feedback.shape)}")
    if dilate < 0:
        raise XgirError(f"dilate must be >= 0, got {dilate}")
    pooled = F.adaptive_max_pool2d(feedback.float().unsqueeze(1), size)
    if dilate:
        pooled = F.max_pool2d(pooled, 2 * dilate + 1, stride=1, padding=dilate)
    return pooled > 0.5


def feedback_objective(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    feedback: torch.Tensor,
    has_feedback: torch.Tensor | None = None,
    *,
    num_train: int = 1,
    lambda_fb: float = 1e-4,
    samples: int = 1,
    kl_weight: float = 1.0,
    dilate: int = 0,
) -> dict[str, torch.Tensor]:
    """The fine-tuning loss of one minibatch and its parts.

    x float[B,C,H,W], y long[B], feedback bool[B,H,W] (1 = irrelevant), has_feedback bool[B]
    (default: images whose feedback is non-empty). Returns ``loss`` (scalar to minimise), ``nll``,
    ``log_density`` (mean over images of the summed log q(a_F = 0 | x)), ``kl``
    (per image, weighted) and ``masked`` (mean count of a_F activations per image with feedback).
    """
    last_conv = getattr(model, "last_conv", None)
    head_from_last_conv = getattr(model, "head_from_last_conv", None)
    if not callable(last_conv) or not callable(head_from_last_conv):
        raise XgirError(
            f"{type(model).__name__} does not expose last_conv / head_from_last_conv; "
            "use BayesLeNet"
        )
    if feedback.shape != (x.shape[0], x.shape[2], x.shape[3]):
        raise XgirError(
            f"feedback shape {tuple(feedback.shape)} does not match images {tuple(x.shape)}"
        )
    if samples < 1:
        raise XgirError(f"samples must be at least 1, got {samples}")
    if has_feedback is None:
        has_feedback = feedback.flatten(1).any(1)
    nll_total = torch.zeros((), device=x.device)
    dens_total = torch.zeros((), device=x.device)
    masked_total = 0.0
    for _ in range(samples):
        a, mean, var = last_conv(x)
        region = pool_feedback(feedback, (a.shape[-2], a.shape[-1]), dilate=dilate) & has_feedback.view(-1, 1, 1, 1)
        # which activations affect the output: gradient of the log-likelihood through the head
        a_d = a.detach().requires_grad_(True)
        with torch.enable_grad():
            ll = F.log_softmax(head_from_last_conv(a_d), 1).gather(1, y.view(-1, 1)).sum()
            (g,) = torch.autograd.grad(ll, a_d)
        a_f = region & (g != 0)
        logits = head_from_last_conv(a.masked_fill(a_f, 0.0))
        nll_total = nll_total + F.cross_entropy(logits, y)
        log_q0 = -0.5 * (LOG_2PI + torch.log(var)) - mean**2 / (2 * var)
        dens_total = dens_total + (log_q0 * a_f).flatten(1).sum(1).mean()
        n_fb = int(has_feedback.sum())
        masked_total += float(a_f.sum()) / max(n_fb, 1)
    nll = nll_total / samples
    dens = dens_total / samples
    kl = kl_weight * kl_divergence(model) / num_train
    return {
        "loss": kl + nll - lambda_fb * dens,
        "nll": nll.detach(),
        "log_density": dens.detach(),
        "kl": kl.detach(),
        "masked": torch.tensor(masked_total / samples),
    }


def with_feedback(
    dataset: ImageDataset, feedback: torch.Tensor, has_feedback: torch.Tensor | None = None
) -> ImageDataset:
    """A copy of ``dataset`` with ``extras["feedback"]`` bool[N,H,W] and
    ``extras["has_feedback"]`` bool[N]."""
    n, _, h, w = dataset.images.shape
    if feedback.shape != (n, h, w):
        raise XgirError(f"feedback must have shape ({n}, {h}, {w}), got {tuple(feedback.shape)}")
    if has_feedback is None:
        has_feedback = feedback.flatten(1).any(1)
    out = dataset.subset(torch.arange(n))
    out.extras["feedback"] = feedback.bool()
    out.extras["has_feedback"] = has_feedback.bool() & feedback.flatten(1).any(1)
    return out


def fine_tune_feedback(
    model: nn.Module,
    dataset: ImageDataset,
    feedback: torch.Tensor,
    has_feedback: torch.Tensor | None = None,
    *,
    epochs: int = 10,
    lr: float = 1e-3,
    batch_size: int = 128,
    seed: int = 0,
    lambda_fb: float = 1e-4,
    samples: int = 1,
    kl_weight: float = 1.0,
    feedback_repeats: int = 1,
    dilate: int = 0,
    progress: bool = True,
) -> nn.Module:
    """Fine-tune a Bayesian CNN in place on the feedback objective with Adam (eval mode out).

    feedback bool[N,H,W] (1 = irrelevant pixel), has_feedback bool[N]. ``feedback_repeats`` > 1
    adds that many extra copies of the images with feedback to each epoch (oversampling; 1 = none);
    ``dilate`` grows the pooled feedback region by that many cells of the last conv layer.
    """
    if epochs < 1:
        raise XgirError(f"epochs must be at least 1, got {epochs}")
    data = with_feedback(dataset, feedback, has_feedback)
    if feedback_repeats > 1:
        idx = torch.nonzero(data.extras["has_feedback"]).flatten()
        data = data.subset(torch.cat([torch.arange(len(data))] + [idx] * (feedback_repeats - 1)))
    device = next(model.parameters()).device
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    set_sampling(model, True)
    model.train()
    steps = epochs * -(-len(data) // batch_size)
    bar = Progress(total=steps, desc="bayes feedback", enabled=progress)
    for epoch in range(epochs):
        for batch in data.batches(batch_size, shuffle=True, generator=g):
            batch = {k: v.to(device) for k, v in batch.items()}
            parts = feedback_objective(
                model,
                batch["image"],
                batch["label"],
                batch["feedback"],
                batch["has_feedback"],
                num_train=len(dataset),
                lambda_fb=lambda_fb,
                samples=samples,
                kl_weight=kl_weight,
                dilate=dilate,
            )
            opt.zero_grad(set_to_none=True)
            parts["loss"].backward()
            opt.step()
            bar.update(1, epoch=epoch + 1, nll=f"{float(parts['nll']):.3f}")
    bar.close()
    return model.eval()


def make_fine_tune(**kwargs):
    """A ``fine_tune(model, dataset, F, has_feedback) -> model`` for
    :func:`xgir.correct.feedback.active_feedback_loop` with :func:`fine_tune_feedback`'s
    options."""

    def run(
        model: nn.Module, dataset: ImageDataset, feedback: torch.Tensor, has: torch.Tensor
    ) -> nn.Module:
        return fine_tune_feedback(model, dataset, feedback, has, **kwargs)

    return run
