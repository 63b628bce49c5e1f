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
  classes the prediction is contrasted with);
- ``limits``: the largest value of each parameter that sets the work (``n_steps``, ``n_masks``...);
  ``minimums``: the least value of a whole-number parameter where it is not 1.

Every parameter is checked against its annotation and default (:func:`check_params`), the same
way from Python, ``xgir explain --param`` and the app.

``get_explainer(name, **params)(model, x[N,C,H,W], targets) -> float[N,T,H,W]`` runs the method
with the model in eval mode (batch-norm statistics untouched, dropout off) and restores each
submodule's mode afterwards; the conformance suite (tests/test_explainer_conformance.py)
checks every entry.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
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
    # the parameters that set the work (model evaluations, memory): the most a call may ask for
    limits: dict[str, int] = field(default_factory=dict)
    # whole-number parameters whose least value is not 1 (counts and sizes are at least 1)
    minimums: dict[str, int] = field(default_factory=dict)

    def load(self) -> Callable[..., Explainer]:
        if not isinstance(self.target, str):
            return self.target
        module, _, name = self.target.partition(":")
        return getattr(importlib.import_module(module), name)


_G = "xgir.explain.gradient"
_BATCH = 4096  # images per forward pass: beyond this a batch of 224 px images outgrows memory
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
    "bcos": ExplainerInfo(
        "xgir.explain.bcos:Bcos", "B-cos contributions W(x)ᵀx ⊙ x summed over the input channels, in "
        "explanation mode (sums to the logit minus its bias on a B-cos model; input x gradient on others; "
        "--param layer= reads them at a layer)", signed=True),
    "saliency": ExplainerInfo(f"{_G}:Saliency", "absolute input gradient (Simonyan et al.)"),
    "input-x-gradient": ExplainerInfo(f"{_G}:InputXGradient", "input times gradient", signed=True),
    "ig": ExplainerInfo(
        f"{_G}:IntegratedGradients",
        "Integrated Gradients from a baseline (--param n_steps=, baseline=zeros|blur|...)",
        signed=True, baseline="image", limits={"n_steps": 10_000, "internal_batch_size": _BATCH}),
    "expected-gradients": ExplainerInfo(
        f"{_G}:ExpectedGradients", "IG averaged over random baselines drawn from data",
        signed=True, baseline="data", sampler=True, limits={"n_samples": 10_000}),
    "deeplift": ExplainerInfo(f"{_G}:DeepLift", "DeepLIFT rescale rule against a baseline (Captum)",
                              signed=True, baseline="image"),
    "deepshap": ExplainerInfo(f"{_G}:DeepShap", "DeepLIFT-SHAP averaged over baseline images (Captum)",
                              signed=True, baseline="data"),
    "occlusion": ExplainerInfo(
        f"{_G}:Occlusion", "score drop when sliding a patch over the image (--param window=, stride=)",
        signed=True, baseline="image", limits={"perturbations_per_eval": _BATCH}),
    "rise": ExplainerInfo(
        "xgir.explain.rise:RISE",
        "randomised input sampling: masks weighted by the target score (--param n_masks=)", sampler=True,
        limits={"n_masks": 100_000, "s": 1024, "batch_size": _BATCH}),
    "lime": ExplainerInfo(
        "xgir.explain.lime:LIME",
        "LIME: ridge fit of the score on SLIC superpixels shown/hidden (--param n_samples=)",
        signed=True, sampler=True, limits={"n_samples": 100_000, "n_segments": 10_000, "batch_size": _BATCH}),
    "iassa": ExplainerInfo(
        "xgir.explain.iassa:IASSA", "IASSA: iterative attention-guided occlusion (--param iterations=)",
        sampler=True, limits={"iterations": 1_000, "grid": 1024, "block_size": 65_536, "batch_size": _BATCH},
        minimums={"iterations": 0}),  # round 0 alone: the attention-free occlusion map
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
        from xgir.models.inference import check_images
        from xgir.models.modes import eval_mode

        check_images(x, model)
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


def _number_kind(hint: Any) -> tuple[type | None, bool]:
    """(bool, int, float or None, whether None is allowed) of a parameter's annotation."""
    import types
    import typing

    args = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    optional = type(None) in args
    kinds = [a for a in args if a is not type(None)]
    return (kinds[0] if len(kinds) == 1 and kinds[0] in (bool, int, float) else None), optional


def check_params(name: str, params: dict[str, Any], option: str = "") -> None:
    """Type and range checks of an explainer's parameters, from its annotations and defaults: a
    whole-number parameter takes a whole number (counts and sizes >= 1, a seed in 0..2**63-1), a
    float one a finite number, a flag true or false; the parameters that set the work are at most
    the explainer's :attr:`ExplainerInfo.limits`. ``option`` prefixes the parameter in the message
    (``"--param "`` on the command line). XgirError on the first bad value; unknown names are left
    to :func:`get_explainer`. Shared by the Python API, the CLI and the app."""
    import math
    import typing

    from xgir.config import SEED_MAX

    info = explainer_info(name)
    factory = info.load()
    signature = inspect.signature(factory).parameters
    try:
        hints = typing.get_type_hints(factory.__init__ if inspect.isclass(factory) else factory)
    except Exception:  # noqa: BLE001 - an annotation that does not resolve: the defaults decide
        hints = {}
    for key, value in params.items():
        sig = signature.get(key)
        if sig is None:
            continue
        default = None if sig.default is inspect.Parameter.empty else sig.default
        kind, optional = _number_kind(hints.get(key, type(default) if default is not None else None))
        if kind is None or (value is None and (optional or default is None)):
            continue
        where = f"{option}{key}={value!r}: {name}"
        shown = f" (default {default})" if default is not None else ""
        if kind is bool:
            if not isinstance(value, bool):
                raise XgirError(f"{where} needs true or false{shown}")
        elif kind is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise XgirError(f"{where} needs a whole number{shown}")
            if key == "seed":
                if not 0 <= value <= SEED_MAX:
                    raise XgirError(f"{where} takes a seed in 0..2**63-1")
            else:
                low = info.minimums.get(key, 1 if default is None or default >= 1 else None)
                if low is not None and value < low:
                    raise XgirError(f"{where} must be at least {low}{shown}")
        elif isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise XgirError(f"{where} needs a finite number{shown}")
        if key in info.limits and value > info.limits[key]:
            raise XgirError(f"{where} takes at most {info.limits[key]} (time and memory grow with it)")


def get_explainer(name: str, **params: Any) -> Explainer:
    """Build the explainer ``name`` with its parameters (:func:`canonical_params`, checked by
    :func:`check_params`); clear errors for unknown names or parameters."""
    params = canonical_params(name, params)
    factory = explainer_info(name).load()
    try:
        inspect.signature(factory).bind(**params)
    except TypeError as err:
        raise XgirError(f"bad parameters for explainer '{name}': {err}") from None
    check_params(name, params)
    return _InEvalMode(factory(**params))
