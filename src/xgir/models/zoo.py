"""A small model zoo: a LeNet-style CNN and a small ResNet with batch norm, their X-DNN
variants (no biases), and a small B-cos ResNet (:mod:`xgir.models.bcos`).

Every vanilla and X-DNN model ends in a linear layer named ``fc`` (the softmax head), so
``split(model, head="fc")`` works on them, as on a torchvision ResNet; the B-cos ResNet's
``fc`` is a 1x1 B-cos convolution before the pooling (as B-cos v2).

X-DNNs (Hesse, Schaub-Meyer, Roth, NeurIPS 2021, "Fast axiomatic attribution for neural
networks"): a ReLU network without any bias term is positively homogeneous of degree 1,
f(a x) = a f(x) for a > 0 (ReLU, max pooling, average pooling and bias-free linear maps all
are), so its gradient is constant along the ray from 0 to x and Integrated Gradients from the
zero baseline equals input x gradient, computed in one backward pass. ``x-lenet`` is LeNet with
``bias=False`` everywhere; ``x-small-resnet`` also replaces batch norm (whose running mean and
bias are offsets) by :class:`~xgir.models.bcos.UncenteredBatchNorm2d` (x * gamma / sqrt(var +
eps)). What differs from the paper: its X-DNNs are ImageNet AlexNet / VGG / Fixup ResNets;
these are the zoo's small networks with the same change. In training mode the batch variance
couples the images of a batch (detached in :func:`~xgir.models.bcos.explanation_mode`); in eval
mode the network is exactly homogeneous.
"""

from __future__ import annotations

import torch
from torch import nn

from xgir.models.bcos import BcosResNet, UncenteredBatchNorm2d


class LeNet(nn.Module):
    """LeNet-style CNN: two conv-ReLU-maxpool stages, a hidden linear layer, head ``fc``.

    Input float[N,C,H,W] with H, W divisible by 4; output logits float[N,num_classes].
    Layers: ``conv1``, ``conv2`` (the last conv layer), ``hidden``, ``fc``.
    """

    bias = True  # the X-DNN variant (XLeNet) has none

    def __init__(self, in_channels: int = 1, num_classes: int = 10, image_size: int = 28,
                 width: int = 32, hidden: int = 128) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 5, padding=2, bias=self.bias)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(width, 2 * width, 5, padding=2, bias=self.bias)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.hidden = nn.Linear(2 * width * (image_size // 4) ** 2, hidden, bias=self.bias)
        self.relu3 = nn.ReLU()
        self.fc = nn.Linear(hidden, num_classes, bias=self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.pool2(self.relu2(self.conv2(x)))
        return self.fc(self.relu3(self.hidden(self.flatten(x))))


class XLeNet(LeNet):
    """The X-DNN variant of :class:`LeNet`: the same layers without biases (``x-lenet``)."""

    bias = False


Norm = type[nn.BatchNorm2d] | type[UncenteredBatchNorm2d]


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 conv-BN layers and an identity or 1x1 shortcut; ``norm``
    the normalisation layer (batch norm; the X-DNN's uncentred bias-free one)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1,
                 norm: Norm = nn.BatchNorm2d) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = norm(out_channels)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = norm(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                norm(out_channels),
            )
        self.relu2 = nn.ReLU()  # a module (not F.relu) so hooks and DeepLIFT see it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class SmallResNet(nn.Module):
    """A small ResNet: stem, three stages of basic blocks (strides 1, 2, 2), global average
    pooling and head ``fc``. Feature size = 4 * width. Layers: ``stem``, ``layer1``,
    ``layer2``, ``layer3`` (the last conv stage), ``pool``, ``fc``.

    ``head_width`` (default None: none) appends a 1x1 conv-BN-ReLU with that many output
    channels to ``layer3``, so the feature size (units at the head) is ``head_width`` at little
    cost: a wider head without widening the 3x3 stages (used by the ``xgir-width`` suite)."""

    norm: Norm = nn.BatchNorm2d
    fc_bias = True

    def __init__(self, in_channels: int = 3, num_classes: int = 10, width: int = 16,
                 blocks: int = 1, head_width: int | None = None) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), self.norm(width), nn.ReLU()
        )
        chans = [width, 2 * width, 4 * width]
        layers = []
        in_c = width
        for i, c in enumerate(chans):
            stage = [BasicBlock(in_c, c, 1 if i == 0 else 2, self.norm)]
            stage += [BasicBlock(c, c, norm=self.norm) for _ in range(blocks - 1)]
            layers.append(nn.Sequential(*stage))
            in_c = c
        if head_width is not None:
            layers[-1].extend([nn.Conv2d(in_c, head_width, 1, bias=False), self.norm(head_width), nn.ReLU()])
            in_c = head_width
        self.layer1, self.layer2, self.layer3 = layers
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(in_c, num_classes, bias=self.fc_bias)

    @property
    def feature_dim(self) -> int:
        return self.fc.in_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(self.pool(x))


class XSmallResNet(SmallResNet):
    """The X-DNN variant of :class:`SmallResNet` (``x-small-resnet``): no biases, and batch norm
    replaced by :class:`~xgir.models.bcos.UncenteredBatchNorm2d` (no mean, no bias)."""

    norm = UncenteredBatchNorm2d
    fc_bias = False


ARCHITECTURES: dict[str, type[nn.Module]] = {
    "lenet": LeNet, "small-resnet": SmallResNet, "x-lenet": XLeNet, "x-small-resnet": XSmallResNet,
    "bcos-resnet": BcosResNet,
}
