"""EfficientNet-Lite (package ``efficientnet-lite-pytorch``) with one activation module per use.

The package's blocks call one ``self._swish`` (an ``nn.ReLU6`` for the Lite models) two or
three times per block, and the network reuses its own ``_swish`` at the stem and the head.
DeepLIFT (Captum) keeps per-module state between forward and backward, so a reused
nonlinearity module gives wrong multipliers. :func:`distinct_activations` gives every use its
own module (``_act_expand``, ``_act_depthwise``, ``_act_se`` in each block; ``_act_stem`` and
``_act_head`` on the network) with a forward equivalent to the package's: logits are unchanged
(to float rounding), layer names and the state_dict too (activations have no parameters). Each
ReLU6 is :class:`ReLU6`, ``relu(x) - relu(x - 6)``, since Captum's DeepLIFT has no ReLU6 rule.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812 - the usual name
from torch import nn


class ReLU6(nn.Module):
    """``min(max(x, 0), 6)`` written as ``relu(x) - relu(x - 6)`` with two ``nn.ReLU`` modules,
    so that Captum's DeepLIFT (which has a rule for ReLU, none for ReLU6) applies its rescale
    rule to each and its attributions sum to f(x) - f(baseline)."""

    def __init__(self) -> None:
        super().__init__()
        self.low = nn.ReLU()
        self.high = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # each ReLU gets its own input tensor: DeepLIFT hooks a ReLU's input gradient, which
        # would otherwise also rescale the other branch's gradient
        return self.low(x + 0.0) - self.high(x - 6.0)


def _activation(old: nn.Module) -> nn.Module:
    """A fresh, non-custom-autograd module computing the package's activation."""
    if isinstance(old, (nn.ReLU6, ReLU6)):
        return ReLU6()
    return nn.SiLU()  # the package's (memory-efficient) Swish is x * sigmoid(x)


def _block_class(base: type) -> type:
    class DistinctActMBConvBlock(base):
        """MBConvBlock whose activations are distinct modules (forward as the package's)."""

        def forward(self, inputs: torch.Tensor, drop_connect_rate: float | None = None) -> torch.Tensor:
            from efficientnet_lite_pytorch.utils import drop_connect

            x = inputs
            if self._block_args.expand_ratio != 1:
                x = self._act_expand(self._bn0(self._expand_conv(inputs)))
            x = self._act_depthwise(self._bn1(self._depthwise_conv(x)))
            if self.has_se:
                x_squeezed = F.adaptive_avg_pool2d(x, 1)
                x_squeezed = self._se_expand(self._act_se(self._se_reduce(x_squeezed)))
                x = torch.sigmoid(x_squeezed) * x
            x = self._bn2(self._project_conv(x))
            input_filters, output_filters = self._block_args.input_filters, self._block_args.output_filters
            if self.id_skip and self._block_args.stride == 1 and input_filters == output_filters:
                if drop_connect_rate:
                    x = drop_connect(x, p=drop_connect_rate, training=self.training)
                x = x + inputs
            return x

    return DistinctActMBConvBlock


def _net_class(base: type) -> type:
    class DistinctActEfficientNet(base):
        """EfficientNet whose stem and head activations are distinct modules."""

        def extract_features(self, inputs: torch.Tensor) -> torch.Tensor:
            x = self._act_stem(self._bn0(self._conv_stem(inputs)))
            for idx, block in enumerate(self._blocks):
                rate = self._global_params.drop_connect_rate
                if rate:
                    rate *= float(idx) / len(self._blocks)
                x = block(x, drop_connect_rate=rate)
            return self._act_head(self._bn1(self._conv_head(x)))

    return DistinctActEfficientNet


_CLASSES: dict[type, type] = {}


def distinct_activations(net: nn.Module) -> nn.Module:
    """Give each activation use of an ``efficientnet_lite_pytorch.EfficientNet`` its own module,
    in place (the shared ``_swish`` attributes are removed). Returns ``net``."""
    act = net.get_submodule("_swish")
    for block in list(net.get_submodule("_blocks").children()):
        shared = block.get_submodule("_swish")
        block._act_expand = _activation(shared)
        block._act_depthwise = _activation(shared)
        if block.has_se:
            block._act_se = _activation(shared)
        del block._swish
        cls = type(block)
        block.__class__ = _CLASSES.setdefault(cls, _block_class(cls))
    net._act_stem = _activation(act)
    net._act_head = _activation(act)
    del net._swish
    cls = type(net)
    net.__class__ = _CLASSES.setdefault(cls, _net_class(cls))
    return net
