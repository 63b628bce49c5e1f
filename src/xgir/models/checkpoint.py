"""Build models by name and save / load them as checkpoints with their config."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from xgir.errors import XgirError
from xgir.io import torch_save
from xgir.models.zoo import ARCHITECTURES


def build_model(arch: str, **params: Any) -> nn.Module:
    """A zoo model by name (``lenet``, ``small-resnet``) with its keyword arguments."""
    if arch not in ARCHITECTURES:
        raise XgirError(f"unknown architecture '{arch}'; choose one of: {', '.join(ARCHITECTURES)}")
    try:
        return ARCHITECTURES[arch](**params)
    except TypeError as err:
        raise XgirError(f"bad parameters for architecture '{arch}': {err}") from None


def save_checkpoint(
    model: nn.Module, path: str | os.PathLike, arch: str, params: dict[str, Any],
    meta: dict[str, Any] | None = None,
) -> Path:
    """Save weights with the config that rebuilds the model, atomically."""
    state = {"arch": arch, "params": dict(params), "state_dict": model.state_dict(), "meta": meta or {}}
    return torch_save(state, path)


def load_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model saved by :func:`save_checkpoint`; returns (model in eval mode, checkpoint dict)."""
    path = Path(path)
    state = read_checkpoint(path, map_location)
    if not isinstance(state, dict) or "arch" not in state or "state_dict" not in state:
        raise XgirError(f"{path} is not an xgir checkpoint (no 'arch' / 'state_dict')")
    model = build_model(state["arch"], **(state.get("params") or {}))
    try:
        model.load_state_dict(state["state_dict"])
    except RuntimeError as err:
        first = next((ln.strip() for ln in str(err).splitlines()[1:] if ln.strip()), str(err).splitlines()[0])
        raise XgirError(f"{path}: its params {state.get('params')} do not fit its weights "
                        f"({first[:160]}); the checkpoint is inconsistent, retrain or re-save it") from None
    return model.eval(), state


def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` with one-line errors: missing, empty, or not a
    file of tensors (never advising to load untrusted files with weights_only=False)."""
    path = Path(path)
    if path.is_dir():
        raise XgirError(f"checkpoint {path} is a folder, not a file")
    if not path.is_file():
        raise XgirError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise XgirError(f"checkpoint {path} is empty (0 bytes): an interrupted write? retrain or re-save it")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - corrupt or foreign file
        text = str(err)
        if "Weights only load failed" in text or "weights_only" in text:
            detail = next((ln.strip() for ln in text.splitlines() if ln.strip().startswith("Unsupported")), "")
            reason = "not a file of tensors that can be loaded safely" + (f": {detail}" if detail else "")
        else:
            reason = text.splitlines()[0] if text else type(err).__name__
        raise XgirError(f"cannot read checkpoint {path} ({reason[:160]}); xgir reads .pt files "
                        "written by xgir train, xgir correct or save_loaded") from None
