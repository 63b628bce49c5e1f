"""GANMEX: class-targeted counterfactual baselines for one-vs-one attributions.

After Shih et al. (2021), "GANMEX: One-vs-One Attributions using GAN-based Model
Explainability". A conditional generator G(x, t) (:mod:`xgir.models.gan`, trained by
:func:`xgir.train.ganmex.train_ganmex`) maps an image x to a nearby image that the
*frozen* classifier f being explained assigns to class t. G(x, t) is then the baseline of
a path/reference attribution (IG, DeepLIFT, Occlusion, Expected Gradients): the
attribution answers "why the predicted class and not t".

One-vs-one score (see :func:`one_vs_one`). Following the GANMEX paper, the default
attributes the logit of the predicted class p, z_p, with G(x, t) as the baseline, so that
for IG the attributions sum to z_p(x) - z_p(G(x, t)): the evidence for p that x has
and its class-t counterfactual lacks. ``score="contrast"`` attributes z_p - z_t instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from xgir.errors import XgirError
from xgir.explain.targets import Targets, as_targets
from xgir.models.gan import Generator, check_generator_input, load_generator


def foil_classes(targets: Targets) -> torch.Tensor:
    """The class t of each target long[N,T] for the GANMEX baseline G(x, t).

    A class target e_t gives t; a contrast target e_p - e_t (any weight vector with
    exactly one negative weight) gives its negative class t. Clusters and other weight
    vectors have no single class: XgirError.
    """
    if bool(targets.is_cluster.any()):
        raise XgirError("GANMEX baselines need class targets or contrasts e_p - e_t, not clusters")
    w = targets.weights
    neg = (w < 0).sum(-1)
    pos = (w > 0).sum(-1)
    is_class = (neg == 0) & (pos == 1)
    is_contrast = neg == 1
    if not bool((is_class | is_contrast).all()):
        raise XgirError(
            "GANMEX baselines need class targets t or contrast weights e_p - e_t "
            "(one negative class)"
        )
    return torch.where(is_contrast, w.argmin(-1), w.argmax(-1))


class GanmexBaseline:
    """Baseline protocol: ``baseline(x[N,C,H,W], targets) -> float[N,T,C,H,W]`` with entry
    (n, t) = G(x_n, class of target t) (see :func:`foil_classes`).

    With a class target t the explained score is z_t itself (attributions then sum to
    z_t(x) - z_t(G(x,t)) <= 0 for IG: where x lacks evidence for t); with a contrast
    target e_p - e_t the score is z_p - z_t, "why p and not t". For the GANMEX paper's
    one-vs-one attribution of the predicted class, use :func:`one_vs_one`.
    """

    def __init__(self, generator: Generator, *, batch_size: int = 256) -> None:
        self.generator = generator.eval()
        self.batch_size = batch_size

    @torch.no_grad()
    def generate(self, x: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """G(x_n, classes[n,t]) float[N,T,C,H,W] for classes long[N,T] (or [N])."""
        check_generator_input(x, self.generator.channels, self.generator.image_size)
        if classes.ndim == 1:
            classes = classes[:, None]
        if classes.shape[0] != x.shape[0]:
            raise XgirError(
                f"classes are for {classes.shape[0]} images, the batch has {x.shape[0]}"
            )
        n, t = classes.shape
        device = next(self.generator.parameters()).device
        flat_x = x.repeat_interleave(t, dim=0)
        flat_c = classes.reshape(-1)
        outs = [self.generator(flat_x[i:i + self.batch_size].to(device),
                               flat_c[i:i + self.batch_size].to(device))
                for i in range(0, n * t, self.batch_size)]
        return torch.cat(outs).to(x.device, x.dtype).view(n, t, *x.shape[1:])

    def __call__(self, x: torch.Tensor, targets: Any) -> torch.Tensor:
        targets = as_targets(targets, x.shape[0], self.generator.num_classes)
        return self.generate(x, foil_classes(targets))


# ---------------------------------------------------------------------------- attributions

Method = Literal["ig", "deeplift", "deepshap", "occlusion", "expected-gradients"]


def one_vs_one(
    model: nn.Module,
    x: torch.Tensor,
    foils: torch.Tensor,
    baseline: GanmexBaseline | Any,
    *,
    method: Method = "ig",
    score: Literal["predicted", "contrast"] = "predicted",
    predicted: torch.Tensor | None = None,
    **params: Any,
) -> torch.Tensor:
    """One-vs-one attributions "why the predicted class p and not t", baseline b(x, t).

    Args:
        x: float[N,C,H,W]; foils: long[N,T] (or [N]) the classes t, all != p.
        baseline: a :class:`GanmexBaseline` (reference G(x_n, t)) or any Baseline of
            :mod:`xgir.explain.baselines` / name / tensor (then the same reference for every t).
        method: a reference-based explainer of :mod:`xgir.explain.gradient` (``ig``,
            ``deeplift``, ``deepshap``, ``occlusion``, ``expected-gradients``); ``params`` go
            to it (e.g. ``n_steps``, ``window``, ``n_samples``).
        score: ``predicted`` (default, as in the GANMEX paper): the logit z_p of the
            predicted class, so that IG sums to z_p(x) - z_p(b(x, t)); ``contrast``: z_p - z_t.
        predicted: long[N] the class p (default: the model's argmax on x).
    Returns:
        float[N,T,H,W] heatmaps (signed sum over channels).
    """
    from xgir.explain.baselines import resolve_baseline
    from xgir.explain.registry import get_explainer

    if foils.ndim == 1:
        foils = foils[:, None]
    with torch.no_grad():
        logits = model(x)
    if predicted is None:
        predicted = logits.argmax(1)
    n, t = foils.shape
    k = logits.shape[1]
    if foils.shape[0] != x.shape[0]:
        raise XgirError(f"foils are for {foils.shape[0]} images, the batch has {x.shape[0]}")
    foils = foils.to(x.device)
    predicted = predicted.to(x.device)
    if bool((foils == predicted[:, None]).any()):
        raise XgirError("a foil class equals the predicted class: one-vs-one needs t != p")
    foil_targets = as_targets(foils, n, k)
    refs = resolve_baseline(baseline, x, foil_targets)  # [N,T,C,H,W], b(x_n, t)
    if score == "predicted":
        targets: Any = predicted[:, None].expand(n, t)
    elif score == "contrast":
        w = F.one_hot(predicted, k).float()[:, None, :] - F.one_hot(foils, k).float()
        targets = Targets(w.cpu(), torch.zeros(n, t, k, dtype=torch.bool),
                          torch.zeros(n, t, dtype=torch.bool))
    else:
        raise XgirError(f"score must be 'predicted' or 'contrast', got '{score}'")
    if method not in ("ig", "deeplift", "deepshap", "occlusion", "expected-gradients"):
        raise XgirError(f"method '{method}' takes no baseline; choose ig, deeplift, deepshap, "
                        "occlusion or expected-gradients")
    params["baseline"] = refs
    return get_explainer(method, **params)(model, x, targets)


class GanmexExplainer:
    """Registry explainer ``ganmex``: ``(model, x, foils) -> float[N,T,H,W]``, the one-vs-one
    attribution of the predicted class against each foil class t with G(x, t) as the
    baseline (see :func:`one_vs_one`). The *targets* of this explainer are the foils."""

    def __init__(self, generator: Generator | str | Path, *, method: Method = "ig",
                 score: Literal["predicted", "contrast"] = "predicted", **params: Any) -> None:
        if not isinstance(generator, Generator):
            generator = load_generator(generator)
        self.baseline = GanmexBaseline(generator)
        self.method, self.score, self.params = method, score, params

    def __call__(self, model: nn.Module, x: torch.Tensor, targets: Any) -> torch.Tensor:
        if isinstance(targets, int):
            targets = torch.full((x.shape[0],), targets)
        if not isinstance(targets, torch.Tensor) or targets.is_floating_point():
            raise XgirError("ganmex explainer targets are foil classes: an int or long [N] / [N,T]")
        return one_vs_one(model, x, targets.long(), self.baseline, method=self.method, score=self.score,
                          **self.params)

