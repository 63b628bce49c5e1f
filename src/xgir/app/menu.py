"""The "Other explainers" menu: for each registered explainer, only the parameters a user sets
(each with a label and the range the app accepts), whether its maps are signed, and, for a method
that needs what the app lacks (GANMEX's generator, LRP on a model it has no rule for), the reason
it is disabled. Explanations are refused with that same line."""

from __future__ import annotations

import inspect
from typing import Any

from xgir.app.state import AppState
from xgir.errors import XgirError

DEFAULT_METHOD = "ig"  # the canonical pixel attribution (Grad-CAM is on the page already)
HIDDEN = {"cwox"}  # registered explainers shown elsewhere on the page
# one explanation holds the shared model: a request asks for at most this many times the default
# work of its explainer (its ExplainerInfo.limits parameters; occlusion: window positions)
APP_COST = 4
_CAM = ("layer",)
FIELDS: dict[str, tuple[str, ...]] = {
    "gradcam": _CAM, "gradcam++": _CAM, "xgradcam": _CAM, "layercam": _CAM, "hirescam": _CAM, "eigencam": _CAM,
    "scorecam": _CAM, "ablationcam": _CAM, "saliency": (), "input-x-gradient": (),
    "ig": ("n_steps", "baseline"), "expected-gradients": ("n_samples", "seed"), "deeplift": ("baseline",),
    "deepshap": ("baseline",), "occlusion": ("window", "stride", "baseline"), "rise": ("n_masks", "s", "p", "seed"),
    "lime": ("n_samples", "n_segments", "seed"), "iassa": ("iterations", "seed"), "lrp": ("composite", "epsilon"),
    "ganmex": (),
}
LABELS = {"layer": "layer", "n_steps": "integration steps", "baseline": "baseline", "n_samples": "samples",
          "seed": "random seed", "window": "patch size (px)", "stride": "patch stride (px)", "n_masks": "random masks",
          "s": "mask grid (cells a side)", "p": "share of cells kept", "n_segments": "superpixels",
          "iterations": "rounds", "composite": "LRP rules", "epsilon": "epsilon (stabiliser)"}
FLOATS = {"p": (0.05, 0.95, 0.05), "epsilon": (0.0, 1.0, "any")}
MAX_SEED = 2**31 - 1


def choices(name: str) -> list[str] | None:
    """The values a text parameter takes (baselines, LRP composites), or None for free text."""
    if name == "baseline":
        from xgir.explain.baselines import BASELINES

        return list(BASELINES)
    if name == "composite":
        from xgir.explain.lrp import COMPOSITES

        return list(COMPOSITES)
    return None


def field(method: str, name: str, default: Any, state: AppState | None) -> dict[str, Any]:
    """One parameter of the menu: name, label, kind (int, float, choice, text), default, range."""
    from xgir.explain.registry import explainer_info

    info = explainer_info(method)
    out: dict[str, Any] = {"name": name, "label": LABELS.get(name, name.replace("_", " ")), "default": default}
    options = choices(name)
    if name == "layer":
        out.update(kind="text", default=state.deep_layer if state is not None else "")
    elif options is not None:
        out.update(kind="choice", choices=options)
    elif name in FLOATS:
        lo, hi, stepping = FLOATS[name]
        out.update(kind="float", min=lo, max=hi, step=stepping)
    elif name == "seed":
        out.update(kind="int", min=0, max=MAX_SEED)
    elif name in ("window", "stride"):
        side = state.images.height if state is not None else 224
        out.update(kind="int", min=1, max=side, default="")  # default: from the image size
    else:
        top = APP_COST * default if isinstance(default, int) else info.limits.get(name, 10_000)
        out.update(kind="int", min=info.minimums.get(name, 1), max=min(top, info.limits.get(name, top)))
    return out


def unavailable(method: str, state: AppState | None) -> str:
    """Why ``method`` cannot run in this app (one line), or "" when it can."""
    if method == "ganmex":
        return ("needs a trained GANMEX generator, which the app does not have "
                "(use xgir explain --method ganmex --param generator=PATH)")
    if method == "lrp" and state is not None:
        from xgir.explain.lrp import check_supported

        def check() -> str:
            try:
                check_supported(state.loaded.model)
            except XgirError as err:
                return str(err)
            return ""

        return str(state.cache.get(("lrp-support",), check))
    return ""


def explainer_menu(state: AppState | None = None) -> list[dict[str, Any]]:
    """The registered explainers for the page's menu, sorted by name: name, description, signed,
    default (the one selected first), disabled (the reason, or "") and the user-facing params."""
    from xgir.explain.registry import EXPLAINERS

    menu = []
    for name, info in sorted(EXPLAINERS.items()):
        if name in HIDDEN:
            continue
        signature = inspect.signature(info.load()).parameters
        params = [field(name, p, signature[p].default, state) for p in FIELDS.get(name, ()) if p in signature]
        menu.append({"name": name, "description": info.description, "signed": info.signed, "params": params,
                     "disabled": unavailable(name, state), "default": name == DEFAULT_METHOD})
    return menu


def check_available(method: str, state: AppState) -> None:
    """XgirError (the menu's reason) for a method the app cannot run."""
    why = unavailable(method, state)
    if why:
        raise XgirError(f"{method} {why}")
