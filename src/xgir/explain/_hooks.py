"""Shared helpers for explainers: input checks, layer look-up and activation capture.

:class:`LayerCapture` records a layer's output during one forward pass. With
``cut=True`` the forward pass runs without an autograd graph up to the layer and
with one after it: the layer's output becomes a fresh leaf that requires grad, so
gradients of the output w.r.t. the activation cost only the backward pass of the
network's tail (what Grad-CAM needs), and the prefix runs at inference speed.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType

import torch
from torch import nn

from xgir.errors import XgirError
from xgir.models import get_module


def check_images(x: torch.Tensor, name: str = "images") -> None:
    """Raise XgirError unless ``x`` is a finite float tensor [N,C,H,W] with N, C, H, W >= 1
    (the one image check of every explainer)."""
    if not isinstance(x, torch.Tensor):
        raise XgirError(f"{name} must be a tensor [N,C,H,W], got {type(x).__name__}")
    if x.ndim != 4:
        raise XgirError(f"{name} must be [N,C,H,W] (4-D), got shape {tuple(x.shape)}; "
                        "add a batch axis with x[None]")
    if not x.is_floating_point():
        raise XgirError(f"{name} must be floating point, got {x.dtype}")
    if 0 in x.shape:
        raise XgirError(f"the {name} batch is empty: shape {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise XgirError(f"{name} contain NaN or infinite values; clean the images first")


def resolve_layer(model: nn.Module, layer: str | nn.Module) -> nn.Module:
    """The module named by its dotted path (or the module itself if given one)."""
    if isinstance(layer, nn.Module):
        if not any(m is layer for m in model.modules()):
            raise XgirError(f"the given {type(layer).__name__} is not a submodule of the model")
        return layer
    if not isinstance(layer, str):
        raise XgirError(f"a layer is named by its module path (a string), got {layer!r}")
    return get_module(model, layer)


class LayerCapture:
    """Context manager recording the outputs of one or more layers during a forward pass.

    Args:
        modules: the layer(s) whose output to capture (each must return one tensor and run
            once per forward pass).
        cut: run the model without grad up to the first captured layer and make that layer's
            output a leaf that requires grad (see the module docstring); later captured layers
            are then in the graph. Enter it before calling the model and compute with
            ``torch.enable_grad()`` after the forward pass.
    """

    def __init__(self, modules: nn.Module | Sequence[nn.Module], *, cut: bool = False) -> None:
        mods = [modules] if isinstance(modules, nn.Module) else list(modules)
        self.modules: list[nn.Module] = []
        for m in mods:
            if not any(m is seen for seen in self.modules):
                self.modules.append(m)
        self.cut = cut
        self.activations: dict[int, torch.Tensor] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._grad_mode: torch.no_grad | None = None

    def _hook(self, index: int, output: object) -> torch.Tensor | None:
        name = type(self.modules[index]).__name__
        if not isinstance(output, torch.Tensor):
            raise XgirError(
                f"layer {name} returns {type(output).__name__}, not one tensor; "
                "name a layer whose output is a tensor"
            )
        if index in self.activations:
            raise XgirError(
                f"layer {name} runs more than once per forward pass; name a module used once"
            )
        if self.cut and not self.activations:
            torch.set_grad_enabled(True)
            output = output.detach().requires_grad_(True)
            self.activations[index] = output
            return output
        self.activations[index] = output
        return None

    def __enter__(self) -> LayerCapture:
        if self.cut:
            if torch.is_inference_mode_enabled():
                raise XgirError("gradient explainers cannot run inside torch.inference_mode()")
            self._grad_mode = torch.no_grad()
            self._grad_mode.__enter__()
        for i, m in enumerate(self.modules):
            self._handles.append(
                m.register_forward_hook(lambda _m, _a, out, i=i: self._hook(i, out))
            )
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        if self._grad_mode is not None:
            self._grad_mode.__exit__(exc_type, exc, tb)
            self._grad_mode = None

    def get(self, module: nn.Module | None = None) -> torch.Tensor:
        """The captured output of ``module`` (default: the first one); an error if it never ran."""
        module = self.modules[0] if module is None else module
        index = next(i for i, m in enumerate(self.modules) if m is module)
        if index not in self.activations:
            raise XgirError(
                f"the layer ({type(module).__name__}) never ran in the model's forward pass"
            )
        return self.activations[index]


def spatial_layers(model: nn.Module, x: torch.Tensor) -> list[tuple[str, tuple[int, int]]]:
    """Top-level children of ``model`` whose output is [N,K,u,v], in forward order, with (u, v).

    Runs one forward pass on ``x[:1]`` without grad.
    """
    seen: list[tuple[str, tuple[int, int]]] = []
    handles = []
    for name, child in model.named_children():
        def hook(_m: nn.Module, _a: object, out: object, name: str = name) -> None:
            if isinstance(out, torch.Tensor) and out.ndim == 4:
                seen.append((name, (int(out.shape[-2]), int(out.shape[-1]))))
        handles.append(child.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(x[:1])
    finally:
        for h in handles:
            h.remove()
    return seen


def default_layer(model: nn.Module, x: torch.Tensor) -> str:
    """The last top-level child with a spatial output (``layer3`` of SmallResNet, ``pool2`` of
    LeNet): the usual Grad-CAM layer. A model naming its own (``cam_layer``, e.g. the B-cos
    ResNet, whose 1x1 class maps ``fc`` come after ``layer3``) gets that one."""
    own = getattr(model, "cam_layer", None)
    if isinstance(own, str) and own in dict(model.named_modules()):
        return own
    found = spatial_layers(model, x)
    if not found:
        raise XgirError(
            f"{type(model).__name__} has no top-level layer with output [N,K,u,v]; name one"
        )
    return found[-1][0]


def default_layers(model: nn.Module, x: torch.Tensor) -> tuple[str, str]:
    """(deep, shallow) layers for CWOX: the last spatial child (or the model's ``cam_layer``),
    and the last one before it with a finer grid (``layer3``/``layer2`` for SmallResNet and the
    B-cos ResNet, ``pool2``/``relu2`` for LeNet)."""
    found = spatial_layers(model, x)
    own = getattr(model, "cam_layer", None)  # a model naming its CAM layer: nothing after it counts
    names = [name for name, _ in found]
    if isinstance(own, str) and own in names:
        found = found[: names.index(own) + 1]
    if not found:
        raise XgirError(
            f"{type(model).__name__} has no top-level layer with output [N,K,u,v]; name one"
        )
    deep, size = found[-1]
    finer = [name for name, s in found if s[0] * s[1] > size[0] * size[1]]
    return deep, (finer[-1] if finer else deep)
