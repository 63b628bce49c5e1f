"""B-cos networks: layers that align their weights with their inputs, and a small B-cos ResNet.

A B-cos unit with weight w and input patch x (Böhle, Fritz, Schiele, CVPR 2022; B-cos v2,
TPAMI 2024) computes

    B-cos(x; w) = |cos(x, w)|^(B-1) * (ŵᵀx),   ŵ = w / ||w||,   cos(x, w) = ŵᵀx / ||x||,

with ||x|| the norm of the input patch the unit sees (all its input channels, all kernel
positions; ``sqrt(sum x^2 + 1e-6)``). B = 1 is a linear layer with unit-norm weights; B = 2 (the
default) gives |ŵᵀx| ŵᵀx / ||x||. There are no biases. With ``max_out=2`` each output is the
larger of two such units (MaxOut over the pre-scale outputs ŵᵀx).

**Explanation mode** (:func:`explanation_mode`): the dynamic scale |cos|^(B-1) and the
normalisation statistics are detached from the autograd graph. Every layer is then linear in
its input with a weight that depends on x, so the whole network is exactly linear:
f(x) = W(x) x + logit_bias, and the contribution map ``sum_c x_c * d f_y / d x_c`` (at the
6-channel encoded input) sums to the logit minus the logit bias
(:func:`xgir.explain.bcos.contributions`). The forward values do not change.

Input encoding (:class:`AddInverse`): images in [0, 1] with C channels become
[x, 1 - x] (2C channels: [r, g, b, 1-r, 1-g, 1-b]), inside the model, so that a dark pixel's
input vector is not zero and its colour is encoded by direction.

Training: binary cross-entropy on one-hot labels with a fixed logit bias
b = log(1 / (K - 1)) added to every logit (:func:`bce_loss`; :func:`xgir.train.fit_classifier`
uses it for B-cos models), as B-cos v2.

What differs from B-cos v2 (B-cos/B-cos-v2, ``bcos/modules/bcosconv2d.py``,
``extra/minimal_bcos_resnet.py``): the same layer formula, patch norms and uncentred bias-free
batch norm; the 2C encoding sits inside the model (v2 applies it in the data transform); the
small ResNet has three stages of basic blocks (strides 1, 2, 2) and a 3x3 stem, as v2's
``small_inputs`` CIFAR ResNets (no 7x7 stem, no max pool); dilation and groups are not offered.
``tests/test_bcos.py`` checks the logits and contributions against v2's minimal ResNet with the
same weights (recorded by ``tests/fixtures/make_bcos_reference.py``).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

PATCH_EPS = 1e-6  # under the square root of the patch norm (as B-cos v2)
COS_EPS = 1e-6  # added to |cos| before the power when B != 2 (its gradient at 0)


class Detachable(nn.Module):
    """A module with an explanation mode (``self.explanation``): what depends on the input
    through a scale or a statistic is detached from the graph while it is on."""

    explanation: bool = False


def dynamic_scale(linear: torch.Tensor, norm: torch.Tensor, b: float, detach: bool) -> torch.Tensor:
    """|cos|^(B-1) = |ŵᵀx / ||x|| |^(B-1), elementwise; detached from the graph when ``detach``.

    linear: ŵᵀx float[N,O,...]; norm: ||x|| float[N,1,...] (broadcast). For B = 2 the exact
    |ŵᵀx| / ||x||; otherwise (|cos| + 1e-6)^(B-1) (a finite gradient at cos = 0)."""
    if detach:
        linear, norm = linear.detach(), norm.detach()
    if b == 2:
        return linear.abs() / norm
    return ((linear / norm).abs() + COS_EPS).pow(b - 1)


def _max_out(out: torch.Tensor, units: int, dim: int) -> torch.Tensor:
    """The largest of ``units`` consecutive outputs along ``dim`` (MaxOut)."""
    if units == 1:
        return out
    return out.unflatten(dim, (out.shape[dim] // units, units)).amax(dim + 1 if dim >= 0 else dim)


class BcosConv2d(Detachable):
    """B-cos convolution (no bias): out[n,o,u,v] = |cos(x_p, w_o)|^(B-1) ŵ_oᵀ x_p for the patch
    x_p under output position (u, v). Input float[N,I,H,W] -> float[N,O,H',W'] (the shapes of
    ``nn.Conv2d`` with the same kernel, stride and padding).

    Args:
        b: the exponent B (>= 1; 1 = linear with unit-norm weights).
        max_out: units per output (2: MaxOut over two B-cos units' ŵᵀx).
    Weight: ``weight`` float[O * max_out, I, k, k] (normalised per output in the forward).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1,
                 padding: int = 0, *, b: float = 2.0, max_out: int = 1) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.b, self.max_out = float(b), max_out
        self.weight = nn.Parameter(torch.empty(out_channels * max_out, in_channels, kernel_size, kernel_size))
        nn.init.kaiming_normal_(self.weight, mode="fan_out", nonlinearity="relu")

    def patch_norms(self, x: torch.Tensor) -> torch.Tensor:
        """||x_p|| float[N,1,H',W']: sqrt(sum over the patch's channels and positions of x^2 + 1e-6)."""
        squares = x.pow(2).sum(1, keepdim=True)
        summed = F.avg_pool2d(squares, self.kernel_size, self.stride, self.padding, divisor_override=1)
        return (summed + PATCH_EPS).sqrt()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight / self.weight.flatten(1).norm(dim=1).clamp(min=1e-12).view(-1, 1, 1, 1)
        out = _max_out(F.conv2d(x, w, None, self.stride, self.padding), self.max_out, 1)
        if self.b == 1:
            return out
        return dynamic_scale(out, self.patch_norms(x), self.b, self.explanation) * out

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, b={self.b:g}, max_out={self.max_out}")


class BcosLinear(Detachable):
    """B-cos linear layer (no bias): out[...,o] = |cos(x, w_o)|^(B-1) ŵ_oᵀx, x float[...,I] ->
    float[...,O] (||x|| + 1e-12 here, as B-cos v2's); ``b`` and ``max_out`` as :class:`BcosConv2d`."""

    def __init__(self, in_features: int, out_features: int, *, b: float = 2.0, max_out: int = 1) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.b, self.max_out = float(b), max_out
        self.weight = nn.Parameter(torch.empty(out_features * max_out, in_features))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight / self.weight.norm(dim=1, keepdim=True).clamp(min=1e-12)
        out = _max_out(F.linear(x, w), self.max_out, -1)
        if self.b == 1:
            return out
        norm = x.norm(dim=-1, keepdim=True) + 1e-12  # as B-cos v2's BcosLinear
        return dynamic_scale(out, norm, self.b, self.explanation) * out

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, b={self.b:g}, max_out={self.max_out}"


class UncenteredBatchNorm2d(Detachable):
    """Batch norm without centring and without bias: y = gamma * x / sqrt(var + eps), per channel.

    var: the batch's (biased) variance over (N, H, W) in training, detached in explanation
    mode, and its running average (momentum 0.1) in eval mode. No mean is subtracted and no
    bias is added, so the layer is linear in x (positively homogeneous): the norm of B-cos v2
    (``BatchNormUncentered2d`` without bias) and of the X-DNNs here. x float[N,C,H,W].
    """

    running_var: torch.Tensor

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__()
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.weight = nn.Parameter(torch.ones(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            var = (x.detach() if self.explanation else x).var(dim=(0, 2, 3), unbiased=False)
            with torch.no_grad():
                self.running_var.mul_(1 - self.momentum).add_(self.momentum * var.detach())
        else:
            var = self.running_var
        return x * (self.weight / (var + self.eps).sqrt()).view(1, -1, 1, 1)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"


class AddInverse(nn.Module):
    """The B-cos input encoding: x float[N,C,H,W] in [0, 1] -> [x, 1 - x] float[N,2C,H,W]
    (C = 3: [r, g, b, 1-r, 1-g, 1-b])."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, 1 - x], dim=1)


@contextlib.contextmanager
def explanation_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block every :class:`Detachable` layer of ``model`` detaches its dynamic scale
    and statistics (see the module docstring); each layer's previous setting is restored after.
    A model without such layers is unchanged."""
    layers = [m for m in model.modules() if isinstance(m, Detachable)]
    before = [m.explanation for m in layers]
    for m in layers:
        m.explanation = True
    try:
        yield model
    finally:
        for m, was in zip(layers, before, strict=True):
            m.explanation = was


def is_bcos(model: nn.Module) -> bool:
    """Whether ``model`` has B-cos layers (and so trains with :func:`bce_loss`)."""
    return any(isinstance(m, (BcosConv2d, BcosLinear)) for m in model.modules())


def input_encoding(model: nn.Module) -> nn.Module | None:
    """The model's :class:`AddInverse` module (where B-cos contributions are read), or None."""
    return next((m for m in model.modules() if isinstance(m, AddInverse)), None)


def bce_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean over N x K of the binary cross-entropy of sigmoid(logits) float[N,K] against the
    one-hot labels long[N] (B-cos v2's training loss; the logits include the fixed bias)."""
    target = F.one_hot(labels, logits.shape[1]).to(logits.dtype)
    return F.binary_cross_entropy_with_logits(logits, target)


class BcosBasicBlock(nn.Module):
    """Two 3x3 B-cos convolutions, each followed by an uncentred bias-free batch norm, added to
    the identity or to a 1x1 B-cos convolution + norm when the shape changes. No ReLU: the
    dynamic scale is the non-linearity."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, b: float = 2.0,
                 max_out: int = 1) -> None:
        super().__init__()
        self.conv1 = BcosConv2d(in_channels, out_channels, 3, stride, 1, b=b, max_out=max_out)
        self.bn1 = UncenteredBatchNorm2d(out_channels)
        self.conv2 = BcosConv2d(out_channels, out_channels, 3, 1, 1, b=b, max_out=max_out)
        self.bn2 = UncenteredBatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(BcosConv2d(in_channels, out_channels, 1, stride, b=b, max_out=max_out),
                                          UncenteredBatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn2(self.conv2(self.bn1(self.conv1(x)))) + self.shortcut(x)


class BcosResNet(nn.Module):
    """A small B-cos ResNet for images in [0, 1]: ``encode`` ([x, 1-x]), ``stem`` (3x3 B-cos
    conv + norm), ``layer1``-``layer3`` (basic blocks, strides 1, 2, 2, widths w, 2w, 4w),
    ``fc`` (a 1x1 B-cos conv to K class maps), ``pool`` (global average) and the fixed logit
    bias log(1/(K-1)) (``logit_bias``; 0 for K = 1).

    Input float[N,C,H,W] in [0, 1]; output logits float[N,K]. As B-cos v2's ResNets, ``fc``
    runs before the pooling; Grad-CAM's default layer is ``layer3`` (:attr:`cam_layer`).
    """

    cam_layer = "layer3"

    def __init__(self, in_channels: int = 3, num_classes: int = 10, width: int = 16, blocks: int = 1,
                 b: float = 2.0, max_out: int = 1) -> None:
        super().__init__()
        self.encode = AddInverse()
        self.stem = nn.Sequential(BcosConv2d(2 * in_channels, width, 3, 1, 1, b=b, max_out=max_out),
                                  UncenteredBatchNorm2d(width))
        stages, c_in = [], width
        for i, c in enumerate((width, 2 * width, 4 * width)):
            blocks_i = [BcosBasicBlock(c_in, c, 1 if i == 0 else 2, b, max_out)]
            blocks_i += [BcosBasicBlock(c, c, 1, b, max_out) for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*blocks_i))
            c_in = c
        self.layer1, self.layer2, self.layer3 = stages
        self.fc = BcosConv2d(c_in, num_classes, 1, b=b, max_out=max_out)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.logit_bias = math.log(1 / (num_classes - 1)) if num_classes > 1 else 0.0

    @property
    def num_classes(self) -> int:
        return self.fc.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.stem(self.encode(x)))))
        return self.pool(self.fc(x)) + self.logit_bias
