"""Explainers by name, each declaring what it is: ``get_explainer("gradcam", layer="layer3")``.

Registration is explicit: one entry in :data:`EXPLAINERS` per method, naming the class that
implements it (imported only when used, so listing names imports no heavy module) and what
its maps are:

- ``signed``: maps carry a sign (positive and negative evidence) or are non-negative;
- ``needs_layer``: it reads a layer (``layer=``; default the model's last spatial stage);
- ``baseline``: what its ``baseline=`` parameter takes (one name for every method):
  ``"image"`` one reference image per (image, target) (a name such as ``"zeros"`` or
  ``"blur"``, a tensor, or a callable), ``"data"`` a distribution of references (a data
  tensor [B,C,H,W]; a single reference also works), or None (no baseline);
- ``targets``: what the targets mean: ``"classes"`` (classes, clusters or weighted logits,
  :mod:`xgir.explain.targets`), ``"cluster-contrast"`` (each target is contrasted with the
  other targets of the same image: CWOX's cluster level) or ``"foils"`` (GANMEX: the
  classes the prediction is contrasted with).

``get_explainer(name, **params)(model, x[N,C,H,W], targets) -> float[N,T,H,W]`` runs the method
with the model in eval mode (batch-norm statistics untouched, dropout off) and restores each
submodule's mode afterwards; the conformance suite (tests/test_explainer_conformance.py)
checks every entry.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import torch
from torch import nn

from xgir.errors import XgirError


class Explainer(Protocol):
    """``explainer(model, x, targets) -> heatmaps``: x float[N,C,H,W]; targets in any form that
    :func:`xgir.explain.targets.as_targets` reads; heatmaps float[N,T,H',W']."""

    def __call__(self, model: nn.Module, x: torch.Tensor, targets: Any) -> torch.Tensor: ...


@dataclass(frozen=True)
class ExplainerInfo:
    """What a registered explainer is (see the module docstring)."""

    target: str | Callable[..., Explainer]  # "module:Class" implementing it (or the factory itself)
    description: str
    signed: bool = False
    needs_layer: bool = False
    baseline: Literal["image", "data"] | None = None
    targets: Literal["classes", "cluster-contrast", "foils"] = "classes"
    sampler: bool = False  # draws random samples (seeded: same seed, same map)

    def load(self) -> Callable[..., Explainer]:
        if not isinstance(self.target, str):
            return self.target
        module, _, name = self.target.partition(":")
        return getattr(importlib.import_module(module), name)


_G = "xgir.explain.gradient"
_C = "xgir.explain.cams"
_P = "xgir.explain.perturbation_cams"
EXPLAINERS: dict[str, ExplainerInfo] = {
    "gradcam": ExplainerInfo(
        "xgir.explain.gradcam:GradCAM",
        "Grad-CAM at --layer (class activation map weighted by pooled gradients)", needs_layer=True),
    "gradcam++": ExplainerInfo(
        f"{_C}:GradCAMPlusPlus",
        "Grad-CAM++ at --layer (channel weights from positive gradients, closed-form alphas)", needs_layer=True),
    "xgradcam": ExplainerInfo(
        f"{_C}:XGradCAM", "XGrad-CAM at --layer (channel weights sum(grad*A)/sum(A))", needs_layer=True),
    "layercam": ExplainerInfo(
        f"{_C}:LayerCAM", "LayerCAM at --layer (sum over channels of relu(grad)*A)", needs_layer=True),
    "hirescam": ExplainerInfo(
        f"{_C}:HiResCAM", "HiResCAM at --layer (sum over channels of grad*A)", needs_layer=True),
    "eigencam": ExplainerInfo(
        f"{_C}:EigenCAM", "Eigen-CAM at --layer (first principal component of the activations; "
        "class-agnostic: the same map for every target)", needs_layer=True),
    "scorecam": ExplainerInfo(
        f"{_P}:ScoreCAM", "Score-CAM at --layer (channels weighted by the softmax of the scores of the "
        "image masked by each channel; N*K forward passes, --param batch_size=)", needs_layer=True),
    "ablationcam": ExplainerInfo(
        f"{_P}:AblationCAM", "Ablation-CAM at --layer (channels weighted by the relative score drop when "
        "each is zeroed; N*K forward passes, --param batch_size=)", needs_layer=True),
    "lrp": ExplainerInfo(
        "xgir.explain.lrp:LRP", "layer-wise relevance propagation (--param composite=epsilon-plus-flat|"
        "epsilon-plus|epsilon-alpha2-beta1[-flat]|epsilon; conv/linear/batch-norm/ReLU nets, see docs)",
        signed=True),
    "cwox": ExplainerInfo(
        "xgir.explain.cwox:CWOX",
        "CWOX-2s cluster level: each target's Grad-CAM contrasted with the image's other targets "
        "(xgir explain --method cwox runs the whole method: clusters, then the classes inside each)",
        needs_layer=True, targets="cluster-contrast"),
    "saliency": ExplainerInfo(f"{_G}:Saliency", "absolute input gradient (Simonyan et al.)"),
    "input-x-gradient": ExplainerInfo(f"{_G}:InputXGradient", "input times gradient", signed=True),
    "ig": ExplainerInfo(
        f"{_G}:IntegratedGradients",
        "Integrated Gradients from a baseline (--param n_steps=, baseline=zeros|blur|...)",
        signed=True, baseline="image"),
    "expected-gradients": ExplainerInfo(
        f"{_G}:ExpectedGradients", "IG averaged over random baselines drawn from data",
        signed=True, baseline="data", sampler=True),
    "deeplift": ExplainerInfo(f"{_G}:DeepLift", "DeepLIFT rescale rule against a baseline (Captum)",
                              signed=True, baseline="image"),
    "deepshap": ExplainerInfo(f"{_G}:DeepShap", "DeepLIFT-SHAP averaged over baseline images (Captum)",
                              signed=True, baseline="data"),
    "occlusion": ExplainerInfo(
        f"{_G}:Occlusion", "score drop when sliding a patch over the image (--param window=, stride=)",
        signed=True, baseline="image"),
    "rise": ExplainerInfo(
        "xgir.explain.rise:RISE",
        "randomised input sampling: masks weighted by the target score (--param n_masks=)", sampler=True),
    "lime": ExplainerInfo(
        "xgir.explain.lime:LIME",
        "LIME: ridge fit of the score on SLIC superpixels shown/hidden (--param n_samples=)",
        signed=True, sampler=True),
    "iassa": ExplainerInfo(
        "xgir.explain.iassa:IASSA", "IASSA: iterative attention-guided occlusion (--param iterations=)",
        sampler=True),
    "ganmex": ExplainerInfo(
        "xgir.explain.ganmex:GanmexExplainer",
        "GANMEX: one-vs-one attribution of the prediction against the next-ranked classes, from the "
        "counterfactual baseline G(x, t) (needs --param generator=PATH, see docs)",
        signed=True, targets="foils"),
}


def explainer_info(name: str) -> ExplainerInfo:
    """The declaration of ``name``; XgirError listing the registered names otherwise.

    >>> info = explainer_info("ig")
    >>> info.signed, info.needs_layer, info.baseline, info.targets
    (True, False, 'image', 'classes')
    """
    if name not in EXPLAINERS:
        raise XgirError(f"unknown explainer '{name}'; choose one of: {', '.join(sorted(EXPLAINERS))}")
    return EXPLAINERS[name]


def available_explainers() -> dict[str, Callable[..., Explainer]]:
    """Name -> factory of every registered explainer (imports the modules; for names only,
    read :data:`EXPLAINERS`)."""
    return {name: info.load() for name, info in EXPLAINERS.items()}


class _InEvalMode:
    """Runs an explainer with the model in eval mode; each submodule's mode is restored."""

    def __init__(self, explainer: Explainer) -> None:
        self.explainer = explainer

    def __getattr__(self, name: str) -> Any:  # the wrapped explainer's settings stay readable
        return getattr(self.explainer, name)

    def __call__(self, model: nn.Module, x: torch.Tensor, targets: Any) -> torch.Tensor:
        from xgir.models.modes import eval_mode

        with eval_mode(model):
            return self.explainer(model, x, targets)


def canonical_params(name: str, params: dict[str, Any]) -> dict[str, Any]:
    """``params`` with ``baselines=`` (the old name of the sampling methods' parameter) read as
    ``baseline=``; giving both is an error."""
    params = dict(params)
    if "baselines" in params:
        if "baseline" in params:
            raise XgirError(f"explainer '{name}': give baseline= only (baselines= is its old name)")
        params["baseline"] = params.pop("baselines")
    return params


def get_explainer(name: str, **params: Any) -> Explainer:
    """Build the explainer ``name`` with its parameters (:func:`canonical_params`); clear errors
    for unknown names or parameters."""
    params = canonical_params(name, params)
    factory = explainer_info(name).load()
    try:
        inspect.signature(factory).bind(**params)
    except TypeError as err:
        raise XgirError(f"bad parameters for explainer '{name}': {err}") from None
    return _InEvalMode(factory(**params))
