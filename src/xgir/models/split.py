"""Split a classifier into a feature extractor and its linear head.

``features, head = split(model, head="fc")`` works for any ``nn.Module`` whose
last step is the linear layer at module path ``head`` (a torchvision ResNet's
``fc``, a ViT's ``heads.head``): ``head(features(x))`` equals ``model(x)``.
The extractor runs the model and stops at the head's input, so it shares the
model's parameters and needs no knowledge of its architecture.
"""

from __future__ import annotations

import torch
from torch import nn

from xgir.errors import XgirError


def get_module(model: nn.Module, path: str) -> nn.Module:
    """The submodule at dotted path ``path`` (``"layer4"``, ``"f.6"``); a clear error listing
    the available names otherwise."""
    modules = dict(model.named_modules())
    if path not in modules or path == "":
        names = [n for n in modules if n]
        shown = ", ".join(names[:40]) + (" ..." if len(names) > 40 else "")
        raise XgirError(f"no layer named '{path}' in {type(model).__name__}; available: {shown}")
    return modules[path]


class _HeadInput(Exception):
    def __init__(self, value: torch.Tensor) -> None:
        self.value = value


class FeatureExtractor(nn.Module):
    """``features(x) -> h`` float[N,D]: the input of the model's head, flattened."""

    def __init__(self, model: nn.Module, head: str) -> None:
        super().__init__()
        self.model = model
        self.head_name = head
        self._head = get_module(model, head)
        self.train(model.training)  # same mode as the model it wraps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        def stop(_module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            raise _HeadInput(args[0])

        handle = self._head.register_forward_pre_hook(stop)
        try:
            self.model(x)
        except _HeadInput as caught:
            return caught.value.flatten(1)
        finally:
            handle.remove()
        raise XgirError(f"the forward pass of {type(self.model).__name__} never called '{self.head_name}'")


class SplitModel(nn.Module):
    """``head(features(x))``: a model rebuilt from an extractor and a (possibly new) head."""

    def __init__(self, features: nn.Module, head: nn.Linear) -> None:
        super().__init__()
        self.features = features
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def split(model: nn.Module, head: str = "fc") -> tuple[FeatureExtractor, nn.Linear]:
    """Split ``model`` at its linear head named ``head``.

    Returns:
        (features, head): ``features(x)`` gives float[N,D], ``head`` is the model's own
        ``nn.Linear`` (shared, not copied).
    """
    layer = get_module(model, head)
    if not isinstance(layer, nn.Linear):
        raise XgirError(f"layer '{head}' is a {type(layer).__name__}, not nn.Linear; name the final linear layer")
    return FeatureExtractor(model, head), layer


def replace_head(model: nn.Module, head: str, new: nn.Linear) -> nn.Module:
    """Put ``new`` (e.g. a head for other classes, ``nn.Linear(D, K)``) in place of the linear
    layer at module path ``head``, in place; returns ``model``. The new head must take the
    old one's D inputs."""
    old = split(model, head)[1]
    if new.in_features != old.in_features:
        raise XgirError(f"a new head for '{head}' must take its {old.in_features} inputs, not {new.in_features}")
    model.set_submodule(head, new)
    return model


def copy_body(source: nn.Module, target: nn.Module, head: str = "fc") -> nn.Module:
    """Load every parameter and buffer of ``source`` except its head's (module path ``head``)
    into ``target``, a model of the same body with its own head (other classes, fresh), in
    place; returns ``target``. One line when ``target`` needs anything ``source`` lacks."""
    prefix = f"{head}."
    body = {k: v for k, v in source.state_dict().items() if not k.startswith(prefix)}
    missing = [k for k in target.load_state_dict(body, strict=False).missing_keys if not k.startswith(prefix)]
    if missing:
        raise XgirError(f"{type(source).__name__} lacks {', '.join(missing)} of {type(target).__name__}'s body")
    return target
