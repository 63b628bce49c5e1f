"""Build models by name and save / load them as checkpoints with their config."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from xgir.errors import XgirError
from xgir.io import load_torch, torch_save
from xgir.models.zoo import ARCHITECTURES

ACCEPTS = ("xgir reads .pt checkpoints written by xgir train, xgir correct or xgir.models.save_loaded "
           "(weights and the config that rebuilds the model)")


MIN_IMAGE_SIZE = {"lenet": 4, "x-lenet": 4}  # two 2x2 poolings: at least one pixel left


def build_model(arch: str, **params: Any) -> nn.Module:
    """A zoo model by name (``lenet``, ``small-resnet``, ``x-lenet``, ``x-small-resnet``,
    ``bcos-resnet``) with its keyword arguments: each a whole number >= 1 (``head_width`` may be
    None; a parameter with a float default, B-cos's ``b``, a number >= 1), the weights within
    memory; XgirError otherwise."""
    import inspect

    from xgir.resources import check_memory

    if not isinstance(arch, str) or arch not in ARCHITECTURES:
        raise XgirError(f"unknown architecture {str(arch)[:60]!r}; choose one of: {', '.join(ARCHITECTURES)}")
    cls = ARCHITECTURES[arch]
    accepted = inspect.signature(cls).parameters
    unknown = sorted(str(k) for k in params if k not in accepted)
    if unknown:
        raise XgirError(f"bad parameters for architecture '{arch}': unknown {', '.join(unknown)}; "
                        f"it takes {', '.join(accepted)}")
    for key, value in params.items():
        if value is None and accepted[key].default is None:
            continue
        low = MIN_IMAGE_SIZE.get(arch, 1) if key == "image_size" else 1
        if isinstance(accepted[key].default, float):  # a real parameter (B-cos's b): a finite number >= 1
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 1 <= value < float("inf"):
                raise XgirError(f"architecture '{arch}': {key} must be a number >= 1, got {value!r}")
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise XgirError(f"architecture '{arch}': {key} must be a whole number >= {low}, got {value!r}")
    with torch.device("meta"):  # shapes only: count the weights before allocating them
        size = sum(p.numel() for p in cls(**params).parameters())
    check_memory(4 * size, f"architecture '{arch}' with {params}", "lower its width, hidden or image_size")
    return cls(**params)


def check_finite_state(state: dict[str, Any], what: str) -> None:
    """XgirError naming the first floating tensor of ``state`` holding NaN or infinity."""
    for name, t in state.items():
        if isinstance(t, torch.Tensor) and t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise XgirError(f"{what}: weight '{name}' holds NaN or infinite values (training diverged); "
                            "retrain with a lower learning rate")


def save_checkpoint(
    model: nn.Module, path: str | os.PathLike, arch: str, params: dict[str, Any],
    meta: dict[str, Any] | None = None,
) -> Path:
    """Save weights with the config that rebuilds the model, atomically; XgirError (and nothing
    written) when a weight is NaN or infinite."""
    check_finite_state(model.state_dict(), str(path))
    state = {"arch": arch, "params": dict(params), "state_dict": model.state_dict(), "meta": meta or {}}
    return torch_save(state, path)


def load_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model saved by :func:`save_checkpoint`; returns (model in eval mode, checkpoint dict)."""
    path = Path(path)
    state = load_torch(path, "checkpoint", ACCEPTS, map_location=map_location)
    if not isinstance(state, dict) or "arch" not in state or "state_dict" not in state:
        raise XgirError(f"{path} is not an xgir checkpoint (no 'arch' / 'state_dict'); {ACCEPTS}")
    check_finite_state(state["state_dict"], f"checkpoint {path}")
    params = state.get("params") or {}
    if not isinstance(params, dict) or not all(isinstance(k, str) for k in params):
        raise XgirError(f"{path}: its 'params' are a {type(params).__name__}, not a mapping of names to values; "
                        "retrain or re-save the checkpoint")
    model = build_model(state["arch"], **params)
    try:
        model.load_state_dict(state["state_dict"])
    except RuntimeError as err:
        first = next((ln.strip() for ln in str(err).splitlines()[1:] if ln.strip()), str(err).splitlines()[0])
        raise XgirError(f"{path}: its params {state.get('params')} do not fit its weights "
                        f"({first[:160]}); the checkpoint is inconsistent, retrain or re-save it") from None
    return model.eval(), state


def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` of any xgir checkpoint (zoo or
    :func:`xgir.models.save_loaded`), with :func:`xgir.io.load_torch`'s one-line errors."""
    return load_torch(path, "checkpoint", ACCEPTS, map_location=map_location)
