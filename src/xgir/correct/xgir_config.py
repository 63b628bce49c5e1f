"""The settings of one XGIR run (:class:`XGIRConfig`, also the ``xgir:`` section of
``xgir correct``) and the names of the empty image x0 (see :mod:`xgir.correct.xgir`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import ConfigDict

from xgir.errors import XgirError

EmptyImage = Literal["zeros", "data-mean", "blur", "zero", "mean"]
EMPTY_IMAGES = ("zeros", "data-mean", "blur")  # canonical names of x0 (the baseline vocabulary + data-mean)
EMPTY_ALIASES = {"zero": "zeros", "mean": "data-mean"}  # other spellings, still accepted
_warned_mean = False


def empty_name(kind: str) -> str:
    """The canonical name of an empty image (``"zero"`` -> ``"zeros"``, ``"mean"`` ->
    ``"data-mean"``, with a one-time warning: elsewhere ``"mean"`` is the image's mean colour)."""
    global _warned_mean
    if kind == "mean" and not _warned_mean:
        from xgir.errors import warn

        warn("XGIR empty image 'mean' is now spelled 'data-mean' (the training mean image; the "
             "baseline 'mean' is each image's mean colour); reading it as 'data-mean'")
        _warned_mean = True
    name = EMPTY_ALIASES.get(kind, kind)
    if name not in EMPTY_IMAGES:
        raise XgirError(f"empty image must be zeros, data-mean or blur, got '{kind}'")
    return name


@dataclass
class XGIRConfig:
    """Settings of one XGIR run (see the module docstring for the symbols)."""

    delta1: float = 0.01
    delta2: float = 0.5
    delta2_mode: Literal["absolute", "quantile", "unit-quantile"] = "quantile"
    empty: EmptyImage = "zeros"
    response: Literal["core", "core-minus-context", "core-vs-whole"] = "core"
    blur_sigma: float | None = None  # px; None: max(H, W) / 8 (xgir.data.blur.default_sigma)
    noise_scale: float = 1.0
    draws: int = 5
    head_epochs: int = 10
    lr: float = 1e-2
    batch_size: int = 256
    weight_decay: float = 0.0
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    # variants (not in the method as first defined, docs/correct.md; see xgir.correct.xgir_variants)
    variant: Literal["note", "swap"] = "note"
    floor: float | None = None  # signed reading: the per-unit quantile of r taken as "no response"
    noise: Literal["gaussian", "empirical"] = "gaussian"
    basis: Literal["units", "pca", "whiten"] = "units"
    core: Literal["explainer", "pretrained", "novelty"] = "explainer"  # source of the core (xgir correct)
    top_k: int = 5  # classes of the pretrained head's map (core="pretrained")
    # core="pretrained" in xgir correct: the model spec whose own head gives the map (e.g. efficientnet-lite0,
    # the network a head-trained checkpoint was built on); None: the corrected model's own head
    core_model: str | None = None
    support_fraction: float | None = None  # supports = the map's top fraction of pixels (None: delta1)
    partner: Literal["any", "other-class"] = "any"  # the swap's partner j
    context: Literal["remainder", "background"] = "remainder"  # the swap's context of j (see xgir_variants)
    context_fraction: float = 0.3  # background context: the top fraction of j's map blanked out

    # YAML (the ``xgir:`` section of ``xgir correct``) validates this dataclass directly: the same
    # checks in Python and YAML; unknown keys and non-finite numbers are errors there too
    __pydantic_config__ = ConfigDict(extra="forbid", allow_inf_nan=False)

    def __post_init__(self) -> None:
        _number(self, "delta1", 0, 1, hi_open=True)
        if self.delta2_mode not in ("absolute", "quantile", "unit-quantile"):
            raise XgirError(f"delta2_mode must be absolute, quantile or unit-quantile, got '{self.delta2_mode}'")
        if self.delta2_mode != "absolute":
            _number(self, "delta2", 0, 1, lo_open=True, hi_open=True, what="delta2 as a quantile")
        else:
            _number(self, "delta2", 0, None, lo_open=True, what="delta2 (absolute, positive)")
        empty_name(self.empty)  # checked; kept as spelled (compare through empty_name)
        if self.response not in ("core", "core-minus-context", "core-vs-whole"):
            raise XgirError(f"response must be core, core-minus-context or core-vs-whole, got '{self.response}'")
        if self.blur_sigma is not None:
            _number(self, "blur_sigma", 0, None, lo_open=True)
        _number(self, "noise_scale", 0, None)
        _number(self, "lr", 0, None, lo_open=True)
        _number(self, "weight_decay", 0, None)
        for name in ("draws", "head_epochs", "batch_size"):
            _integer(self, name, 1)
        from xgir.config import check_seed

        check_seed(self.seed, "seed")
        from xgir.correct.xgir_variants import validate_variant_fields

        validate_variant_fields(self)


def _number(cfg: XGIRConfig, name: str, lo: float, hi: float | None, lo_open: bool = False,
            hi_open: bool = False, what: str | None = None) -> None:
    """XgirError unless ``cfg.name`` is a finite real number in the range."""
    v = getattr(cfg, name)
    ok = isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    ok = ok and (v > lo if lo_open else v >= lo) and (hi is None or (v < hi if hi_open else v <= hi))
    if not ok:
        rng = f"{'(' if lo_open else '['}{lo:g}, {'inf)' if hi is None else f'{hi:g}' + (')' if hi_open else ']')}"
        raise XgirError(f"{what or name} must be a finite number in {rng}, got {v!r}")


def _integer(cfg: XGIRConfig, name: str, lo: int) -> None:
    v = getattr(cfg, name)
    if not isinstance(v, int | np.integer) or isinstance(v, bool) or v < lo:
        raise XgirError(f"{name} must be an integer >= {lo}, got {v!r}")
