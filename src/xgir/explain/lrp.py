"""Layer-wise relevance propagation (LRP) with Zennit-style composites, batched over targets.

Relevance starts at the logits z float[N,K] as ``R = z * dy/dz`` for a target score y (the
logit z_c for a class, ``w * z`` for weighted logits: both sum to y; for a cluster C, the
softmax shares of its classes times their logits) and is passed down layer by layer:

- a convolution or linear layer with input a, weights W, bias b and output z gets a rule
  (with ``stab(z) = z + eps * sign(z)``, sign(0) = +1):

  - ``epsilon``: ``R_in = a * W^T (R_out / stab(z))`` (LRP-epsilon; eps = ``epsilon``);
  - ``zplus``: ``R_in = a+ * W+^T s + a- * W-^T s`` with ``s = R_out / stab(W+ a+ + W- a- + b+)``
    (z+, as Zennit's ZPlus: alpha=1, beta=0 allowing negative inputs);
  - ``alpha2-beta1`` (alpha-beta, alpha=2, beta=1):
    ``R_in = 2 (a+ * W+^T s_p + a- * W-^T s_p) - (a+ * W-^T s_n + a- * W+^T s_n)`` with
    ``s_p = R_out / stab(W+ a+ + W- a- + b+)``, ``s_n = R_out / stab(W- a+ + W+ a- + b-)``;
  - ``flat`` (first layer only): ``R_in = 1^T (R_out / stab(1 * 1))``, all weights and inputs
    set to 1 (relevance spread evenly over the receptive field);

- a batch norm right after a convolution or linear layer is merged into it first (the
  canonizer: ``W' = W gamma / sqrt(var + eps)``, ``b' = (b - mean) gamma / sqrt(var + eps) +
  beta``) and the rule uses W', b'; any other batch norm passes relevance through;
- an elementwise activation (ReLU, ReLU6, ...) passes relevance through (``R_in = R_out``);
- average pooling: ``R_in = a * P^T (R_out / stab(P a))`` (proportional, Zennit's Norm);
- max pooling, flatten, identity, dropout (eval), zero padding: the gradient (relevance goes to
  the max); a residual add splits relevance in proportion to the summands
  (``R_i = a_i R / stab(sum)``: Zennit's Norm rule on the Sum module its canonizers put there;
  the stabiliser is applied at the adds of xgir's BasicBlock and EfficientNet's MBConv blocks,
  an add elsewhere gets the same split without it).

Composites (:data:`COMPOSITES`, as Zennit's of the same names): ``epsilon-plus-flat`` (default:
flat first layer, z+ for the other convolutions, epsilon for linear layers), ``epsilon-plus``,
``epsilon-alpha2-beta1-flat``, ``epsilon-alpha2-beta1`` and ``epsilon`` (epsilon everywhere:
with ``zero_bias=True`` and a tiny epsilon the relevance of the input sums to the target's score,
the conservation check). The "first layer" is the first convolution or linear layer the forward
pass runs; its input is what the returned relevance is about (a model's input normalisation is
elementwise and passes relevance through).

Implementation (the gradient x input view): the relevance at a tensor a is carried as
``R = a * v`` where v flows back as a gradient. Forward hooks replace each rule layer's output by
a tensor with the same value whose gradient applies the rule (``out.detach() + q * (h(a) -
h(a).detach())`` with h the rule's modified linear map and ``q = out / stab(z)``), activations by
one with gradient ``out / a`` (pass), so ONE forward pass builds the graph and the T targets are
T vector-Jacobian products batched with ``is_grads_batched``. The first layer is cut off the
graph (as Grad-CAM cuts before its layer) and its rule applied explicitly.

Supported layers (:func:`check_supported` says which module is not, in one line): Conv2d
(also grouped / depthwise and the TF "same"-padding convolutions of EfficientNet), Linear,
BatchNorm1d/2d, elementwise activations (ReLU, ReLU6 and xgir's ReLU6, LeakyReLU, ELU, SiLU,
GELU, Tanh, Sigmoid, ...), MaxPool2d, AvgPool2d, the adaptive poolings, Flatten, Identity,
Dropout, ZeroPad2d; inside nn.Sequential / ModuleList containers, xgir's zoo models (LeNet,
SmallResNet with its BasicBlocks) and EfficientNet-Lite (its MBConv blocks without
squeeze-and-excitation). Other containers are refused: their forward may compute with
functions that no rule covers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from xgir.errors import XgirError
from xgir.explain._hooks import check_images
from xgir.explain.gradcam import forward_logits, read_targets

LINEAR_RULES = ("epsilon", "zplus", "alpha2-beta1")


@dataclass(frozen=True)
class Composite:
    """Which rule each layer gets: ``first`` for the first layer (None: its type's rule),
    ``conv`` for the other convolutions, ``linear`` for fully connected layers."""

    first: str | None
    conv: str
    linear: str


COMPOSITES: dict[str, Composite] = {
    "epsilon-plus-flat": Composite("flat", "zplus", "epsilon"),
    "epsilon-plus": Composite(None, "zplus", "epsilon"),
    "epsilon-alpha2-beta1-flat": Composite("flat", "alpha2-beta1", "epsilon"),
    "epsilon-alpha2-beta1": Composite(None, "alpha2-beta1", "epsilon"),
    "epsilon": Composite(None, "epsilon", "epsilon"),
}

_ACTIVATIONS: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
    nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Tanh, nn.Sigmoid, nn.Softplus,
)
_AVG_POOLS: tuple[type[nn.Module], ...] = (nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AvgPool1d, nn.AdaptiveAvgPool1d)
_GRADIENT: tuple[type[nn.Module], ...] = (
    nn.MaxPool2d, nn.AdaptiveMaxPool2d, nn.MaxPool1d, nn.Flatten, nn.Unflatten, nn.Identity, nn.Dropout,
    nn.Dropout2d, nn.ZeroPad2d,
)
_LINEARS: tuple[type[nn.Module], ...] = (nn.Conv2d, nn.Linear)
_NORMS: tuple[type[nn.Module], ...] = (nn.BatchNorm2d, nn.BatchNorm1d)
SUPPORTED = ("Conv2d, Linear, BatchNorm, elementwise activations, max/avg pooling, Flatten, Identity, "
             "Dropout, ZeroPad2d, in Sequential containers, xgir's zoo models and EfficientNet-Lite")


def _activation_types() -> tuple[type[nn.Module], ...]:
    from xgir.models.efficientnet import ReLU6 as XgirReLU6

    return (*_ACTIVATIONS, XgirReLU6)


def _container_types() -> tuple[type[nn.Module], ...]:
    from xgir.models.zoo import BasicBlock, LeNet, SmallResNet

    found: list[type[nn.Module]] = [nn.Sequential, nn.ModuleList, nn.ModuleDict, LeNet, SmallResNet, BasicBlock]
    try:
        from efficientnet_lite_pytorch.model import EfficientNet, MBConvBlock
    except ImportError:  # pragma: no cover - a declared dependency
        return tuple(found)
    return (*found, EfficientNet, MBConvBlock)


def check_supported(model: nn.Module) -> None:
    """XgirError (one line) naming the first module LRP has no rule for (see the module docstring)."""
    activations, containers = _activation_types(), _container_types()
    leaves = (*_LINEARS, *_NORMS, *activations, *_AVG_POOLS, *_GRADIENT)

    def visit(module: nn.Module, path: str) -> None:
        where = path or type(module).__name__
        if isinstance(module, _LINEARS):
            if isinstance(module, nn.Conv2d) and module.padding_mode != "zeros":
                raise XgirError(f"LRP does not support '{where}': padding_mode='{module.padding_mode}' "
                                "(only zero padding)")
            for name, child in module.named_children():  # e.g. the static 'same' padding of EfficientNet
                if not (isinstance(child, (nn.ZeroPad2d, nn.Identity)) or type(child).__name__ == "Identity"):
                    raise XgirError(f"LRP does not support '{where}.{name}' ({type(child).__name__}) "
                                    "inside a convolution")
            return
        if isinstance(module, leaves):
            return
        if getattr(module, "has_se", False):
            raise XgirError(f"LRP does not support '{where}': squeeze-and-excitation (a product of two "
                            "branches) has no rule here")
        if not isinstance(module, containers):
            raise XgirError(f"LRP does not support '{where}' ({type(module).__name__}); supported: {SUPPORTED}")
        for name, child in module.named_children():
            visit(child, f"{path}.{name}" if path else name)

    visit(model, "")


def stabilize(z: torch.Tensor, eps: float) -> torch.Tensor:
    """``z + eps * sign(z)`` with sign(0) = +1 (Zennit's stabilizer)."""
    sign = (z == 0).to(z) + z.sign()
    return z + sign * eps


def _linear_map(module: nn.Module, a: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """The layer's forward with other parameters (its own padding, stride, groups)."""
    if bias is None:
        out_features = weight.shape[0]
        bias = torch.zeros(out_features, dtype=weight.dtype, device=weight.device)
    return torch.func.functional_call(module, {"weight": weight, "bias": bias}, (a,))


def _terms(rule: str, module: nn.Module, a: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
           zero_bias: bool) -> list[tuple[float, torch.Tensor, torch.Tensor]]:
    """(coefficient c_i, h_i(a) in the graph, denominator z_i detached) of a rule:
    ``R_in = sum_i c_i a * dh_i/da^T (R_out / stab(z_i))``."""
    b = None if (bias is None or zero_bias) else bias
    if rule == "epsilon":
        h = _linear_map(module, a, weight, None)
        z = h.detach() + (0 if b is None else _bias_like(b, h))
        return [(1.0, h, z)]
    pos, neg = weight.clamp(min=0), weight.clamp(max=0)
    a_pos, a_neg = a.clamp(min=0), a.clamp(max=0)
    h_p = _linear_map(module, a_pos, pos, None) + _linear_map(module, a_neg, neg, None)
    z_p = h_p.detach() + (0 if b is None else _bias_like(b.clamp(min=0), h_p))
    if rule == "zplus":
        return [(1.0, h_p, z_p)]
    if rule == "alpha2-beta1":
        h_n = _linear_map(module, a_pos, neg, None) + _linear_map(module, a_neg, pos, None)
        z_n = h_n.detach() + (0 if b is None else _bias_like(b.clamp(max=0), h_n))
        return [(2.0, h_p, z_p), (-1.0, h_n, z_n)]
    raise XgirError(f"unknown LRP rule '{rule}'; choose one of: {', '.join(LINEAR_RULES)}")


def _bias_like(bias: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    return bias.view(1, -1, *([1] * (out.ndim - 2)))


def _merged(layer: nn.Module, norm: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """(W', b') of ``layer`` followed by the eval-mode batch norm ``norm`` (the canonizer)."""
    assert isinstance(norm, nn.modules.batchnorm._BatchNorm)
    mean, var = norm.running_mean, norm.running_var
    assert mean is not None and var is not None, "a batch norm without running statistics"
    weight, _ = _params(layer)
    layer_bias = getattr(layer, "bias", None)
    bias = layer_bias.detach() if isinstance(layer_bias, torch.Tensor) else torch.zeros_like(mean)
    gamma = norm.weight.detach() if norm.weight is not None else torch.ones_like(mean)
    beta = norm.bias.detach() if norm.bias is not None else torch.zeros_like(mean)
    scale = gamma / torch.sqrt(var + norm.eps)
    w = weight * scale.view(-1, *([1] * (weight.ndim - 1)))
    b = (bias - mean) * scale + beta
    return w, b


def _params(layer: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    weight, bias = layer.weight, getattr(layer, "bias", None)
    assert isinstance(weight, torch.Tensor)
    return weight.detach(), (bias.detach() if isinstance(bias, torch.Tensor) else None)


class _Plan:
    """What the pre-pass found: the first rule layer and the (layer, batch norm) pairs to merge."""

    def __init__(self) -> None:
        self.first: nn.Module | None = None
        self.first_input_shape: tuple[int, ...] = ()
        self.merged: dict[nn.Module, nn.Module] = {}  # batch norm -> the layer before it
        self.merged_layers: set[nn.Module] = set()


def _plan(model: nn.Module, x: torch.Tensor) -> _Plan:
    """One forward pass on one image recording which layer runs first and which batch norms
    take a convolution's or linear layer's output directly."""
    plan = _Plan()
    last_out: list[torch.Tensor] = []  # output of the last rule layer (kept alive for `is`)
    last_layer: list[nn.Module] = []

    def on_linear(module: nn.Module, inp: tuple[Any, ...], out: torch.Tensor) -> None:
        if plan.first is None:
            plan.first = module
            plan.first_input_shape = tuple(inp[0].shape)
        last_out[:] = [out]
        last_layer[:] = [module]

    def on_norm(module: nn.Module, inp: tuple[Any, ...], out: torch.Tensor) -> None:
        if last_out and inp[0] is last_out[0]:
            plan.merged[module] = last_layer[0]
            plan.merged_layers.add(last_layer[0])

    handles = []
    for module in model.modules():
        if isinstance(module, _LINEARS):
            handles.append(module.register_forward_hook(on_linear))
        elif isinstance(module, _NORMS):
            handles.append(module.register_forward_hook(on_norm))
    try:
        with torch.no_grad():
            forward_logits(model, x[:1])
    finally:
        for h in handles:
            h.remove()
    if plan.first is None:
        raise XgirError("LRP needs a model with at least one Conv2d or Linear layer")
    if plan.first_input_shape[1:] != tuple(x.shape[1:]):
        raise XgirError(f"LRP: the first layer ({type(plan.first).__name__}) takes shape "
                        f"{plan.first_input_shape[1:]}, not the images' {tuple(x.shape[1:])}; relevance "
                        "could not be mapped to pixels")
    return plan


def _rule_output(rule: str, module: nn.Module, a: torch.Tensor, out: torch.Tensor, weight: torch.Tensor,
                 bias: torch.Tensor | None, zero_bias: bool, eps: float) -> torch.Tensor:
    """``out`` (same value) whose gradient applies ``rule`` (v-form, see the module docstring)."""
    value = out.detach()
    result = value
    for coef, h, z in _terms(rule, module, a, weight, bias, zero_bias):
        q = value / stabilize(z, eps)
        result = result + coef * q * (h - h.detach())
    return result


def _pass_output(a: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``out`` (same value) with gradient ``out / a`` (0 where a = 0): relevance passes through."""
    a_d = a.detach()
    ratio = torch.where(a_d != 0, out.detach() / torch.where(a_d != 0, a_d, 1.0), 0.0)
    return out.detach() + ratio * (a - a_d)


def _sum_output(total: torch.Tensor, eps: float) -> torch.Tensor:
    """A residual sum s (same value) whose gradient is scaled by ``s / stab(s)``: with the plain
    gradient of the add after it, the summands get ``R_i = a_i R / stab(s)`` (Zennit's Norm rule
    on its canonizers' Sum module)."""
    value = total.detach()
    return value + (value / stabilize(value, eps)) * (total - value)


def _residual_hooks(model: nn.Module, eps: float) -> list[Any]:
    """Hooks putting the Norm stabiliser on the residual adds of xgir's BasicBlock (the input of
    its ``relu2``) and of EfficientNet's MBConv blocks with a skip (the block's output)."""
    from xgir.models.zoo import BasicBlock

    def on_block(_m: nn.Module, _a: object, out: torch.Tensor) -> torch.Tensor | None:
        return _sum_output(out, eps) if torch.is_grad_enabled() else None

    def on_relu(_m: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        return (_sum_output(args[0], eps), *args[1:]) if torch.is_grad_enabled() else None

    handles = []
    for module in model.modules():
        if isinstance(module, BasicBlock):
            handles.append(module.relu2.register_forward_pre_hook(on_relu))
        args = getattr(module, "_block_args", None)
        if args is not None and hasattr(module, "_depthwise_conv"):
            if getattr(module, "id_skip", False) and args.stride == 1 and args.input_filters == args.output_filters:
                handles.append(module.register_forward_hook(on_block))
    return handles


def _norm_output(module: nn.Module, a: torch.Tensor, out: torch.Tensor, eps: float) -> torch.Tensor:
    """Average pooling's proportional rule: gradient ``P^T (out / stab(out))``."""
    h = module(a)
    q = out.detach() / stabilize(out.detach(), eps)
    return out.detach() + q * (h - h.detach())


def _first_relevance(rule: str, module: nn.Module, a: torch.Tensor, relevance: torch.Tensor,
                     weight: torch.Tensor, bias: torch.Tensor | None, zero_bias: bool, eps: float) -> torch.Tensor:
    """Relevance of the first layer's input, float[T,N,*a.shape[1:]], from that of its output
    float[T,N,...] (the rule applied explicitly)."""
    t = relevance.shape[0]
    flat_r = relevance.reshape(t * a.shape[0], *relevance.shape[2:])
    a_rep = a.detach().repeat(t, *([1] * (a.ndim - 1)))
    with torch.enable_grad():
        if rule == "flat":
            ones = torch.ones_like(a_rep).requires_grad_(True)
            h = _linear_map(module, ones, torch.ones_like(weight), None)
            (grad,) = torch.autograd.grad(h, ones, flat_r / stabilize(h.detach(), eps))
            r_in = grad
        else:
            a_rep.requires_grad_(True)
            total = torch.zeros((), dtype=a.dtype, device=a.device)
            for coef, h, z in _terms(rule, module, a_rep, weight, bias, zero_bias):
                total = total + coef * (h * (flat_r / stabilize(z, eps))).sum()
            (grad,) = torch.autograd.grad(total, a_rep)
            r_in = a_rep.detach() * grad
    return r_in.reshape(t, a.shape[0], *a.shape[1:])


def lrp(
    model: nn.Module,
    x: torch.Tensor,
    targets: Any,
    *,
    composite: str = "epsilon-plus-flat",
    epsilon: float = 1e-6,
    stabilizer: float = 1e-6,
    zero_bias: bool = False,
    channels: str = "sum",
) -> torch.Tensor:
    """LRP relevance of every (image, target) pair (module docstring).

    Args:
        model: classifier returning logits float[N,K] (put it in eval mode yourself).
        x: images float[N,C,H,W].
        targets: any form :func:`xgir.explain.targets.as_targets` reads.
        composite: a name of :data:`COMPOSITES`.
        epsilon: the epsilon rule's stabiliser (Zennit's default 1e-6).
        stabilizer: the other rules' stabiliser (Zennit's default 1e-6).
        zero_bias: leave biases out of the rules (Zennit's ``zero_params='bias'``): with the
            ``epsilon`` composite the relevance is then conserved.
        channels: ``"sum"`` relevance summed over the input channels, float[N,T,H,W];
            ``"keep"`` float[N,T,C,H,W].

    >>> import torch
    >>> from xgir.models import LeNet
    >>> net = LeNet(width=4, hidden=8).eval()
    >>> lrp(net, torch.rand(2, 1, 28, 28), [3, 7]).shape
    torch.Size([2, 2, 28, 28])
    """
    check_images(x)
    if composite not in COMPOSITES:
        raise XgirError(f"unknown LRP composite '{composite}'; choose one of: {', '.join(COMPOSITES)}")
    if channels not in ("sum", "keep"):
        raise XgirError(f"channels must be 'sum' or 'keep', got {channels!r}")
    if torch.is_inference_mode_enabled():
        raise XgirError("LRP cannot run inside torch.inference_mode()")
    check_supported(model)
    comp = COMPOSITES[composite]
    plan = _plan(model, x)
    first = plan.first
    assert first is not None
    activations = _activation_types()
    inputs: dict[nn.Module, torch.Tensor] = {}
    cut: dict[str, Any] = {}

    def rule_of(module: nn.Module) -> str:
        return comp.conv if isinstance(module, nn.Conv2d) else comp.linear

    def first_output(module: nn.Module, a: torch.Tensor, out: torch.Tensor, weight: torch.Tensor,
                     bias: torch.Tensor | None) -> torch.Tensor:
        torch.set_grad_enabled(True)
        leaf = out.detach().requires_grad_(True)
        cut.update(leaf=leaf, module=module, a=a.detach(), weight=weight, bias=bias)
        return leaf

    def on_linear(module: nn.Module, inp: tuple[Any, ...], out: torch.Tensor) -> torch.Tensor | None:
        a = inp[0]
        if module in plan.merged_layers:
            inputs[module] = a
            return None  # its batch norm applies the merged rule
        weight, bias = _params(module)
        if module is first:
            return first_output(module, a, out, weight, bias)
        return _rule_output(rule_of(module), module, a, out, weight, bias, zero_bias,
                            epsilon if rule_of(module) == "epsilon" else stabilizer)

    def on_norm(module: nn.Module, inp: tuple[Any, ...], out: torch.Tensor) -> torch.Tensor | None:
        layer = plan.merged.get(module)
        if layer is None or layer not in inputs:
            return _pass_output(inp[0], out) if torch.is_grad_enabled() else None
        a = inputs.pop(layer)
        weight, bias = _merged(layer, module)
        if layer is first:
            return first_output(layer, a, out, weight, bias)
        rule = rule_of(layer)
        return _rule_output(rule, layer, a, out, weight, bias, zero_bias, epsilon if rule == "epsilon" else stabilizer)

    def on_activation(module: nn.Module, inp: tuple[Any, ...], out: torch.Tensor) -> torch.Tensor | None:
        return _pass_output(inp[0], out) if torch.is_grad_enabled() else None

    def on_avgpool(module: nn.Module, inp: tuple[Any, ...], out: torch.Tensor) -> torch.Tensor | None:
        return _norm_output(module, inp[0], out, stabilizer) if torch.is_grad_enabled() else None

    busy: list[bool] = []  # a rule's own calls of the layer (functional_call) must not re-enter

    def guarded(hook: Callable[..., torch.Tensor | None]) -> Callable[..., torch.Tensor | None]:
        def run(module: nn.Module, inp: tuple[Any, ...], out: torch.Tensor) -> torch.Tensor | None:
            if busy:
                return None
            busy.append(True)
            try:
                return hook(module, inp, out)
            finally:
                busy.pop()
        return run

    hooks: list[tuple[tuple[type[nn.Module], ...], Callable[..., Any]]] = [
        (_LINEARS, on_linear), (_NORMS, on_norm), (activations, on_activation), (_AVG_POOLS, on_avgpool)]
    handles = []
    for module in model.modules():
        for types, hook in hooks:
            if isinstance(module, types):
                handles.append(module.register_forward_hook(guarded(hook)))
                break
    handles += _residual_hooks(model, stabilizer)
    grad_mode = torch.is_grad_enabled()
    try:
        torch.set_grad_enabled(False)
        logits = forward_logits(model, x)
        tg = read_targets(targets, logits)
        if "leaf" not in cut or not logits.requires_grad:
            raise XgirError("LRP: the model's output does not depend on its first layer")
        seeds = tg.logit_grads(logits.detach()).to(logits.dtype)  # [N,T,K]: R = z * seeds
        leaf = cut["leaf"]
        with torch.enable_grad():
            if seeds.shape[1] == 1:
                (v,) = torch.autograd.grad(logits, leaf, seeds[:, 0])
                v = v[None]
            else:
                (v,) = torch.autograd.grad(logits, leaf, seeds.transpose(0, 1), is_grads_batched=True)
    finally:
        torch.set_grad_enabled(grad_mode)
        for h in handles:
            h.remove()
    rel_out = leaf.detach()[None] * v  # [T,N,...]
    first_rule = comp.first or rule_of(cut["module"])
    rel = _first_relevance(first_rule, cut["module"], cut["a"], rel_out, cut["weight"], cut["bias"],
                           zero_bias, epsilon if first_rule == "epsilon" else stabilizer)
    rel = rel.transpose(0, 1)  # [N,T,C,H,W]
    return rel.sum(2) if channels == "sum" else rel


class LRP:
    """LRP explainer ``(model, x[N,C,H,W], targets) -> float[N,T,H,W]`` (signed relevance summed
    over the input channels).

    Args:
        composite: ``epsilon-plus-flat`` (default), ``epsilon-plus``, ``epsilon-alpha2-beta1-flat``,
            ``epsilon-alpha2-beta1`` or ``epsilon`` (:data:`COMPOSITES`).
        epsilon, stabilizer, zero_bias: as :func:`lrp`.
    """

    def __init__(self, *, composite: str = "epsilon-plus-flat", epsilon: float = 1e-6, stabilizer: float = 1e-6,
                 zero_bias: bool = False) -> None:
        if composite not in COMPOSITES:
            raise XgirError(f"unknown LRP composite '{composite}'; choose one of: {', '.join(COMPOSITES)}")
        self.composite = composite
        self.epsilon = epsilon
        self.stabilizer = stabilizer
        self.zero_bias = zero_bias

    def __call__(self, model: nn.Module, x: torch.Tensor, targets: Any) -> torch.Tensor:
        return lrp(model, x, targets, composite=self.composite, epsilon=self.epsilon,
                   stabilizer=self.stabilizer, zero_bias=self.zero_bias)
