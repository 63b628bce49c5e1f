"""Small hand-built models and images with known answers, for tests, benchmarks and examples.

Each model looks only at a known region of its input, so a faithful explanation must put its
mass there (EPG near 1):

- :class:`RegionNet` (32x32 colour images): two 1x1 convolutions (colour detectors, then
  identity) with a ReLU, then the mean of each class channel over a fixed square R times
  ``scale``: logit_c depends only on the pixels inside R (:func:`region_mask`).
  :func:`region_images` gives smooth random colour blobs with R filled with the colour of the
  image's class and a decoy square of the same colour elsewhere that the model ignores.
- :class:`GatedRegionNet` (16x16 grey images): a conv layer whose pooled features are gated to
  one quadrant-sized block, then a 1x1 conv and a linear head (:func:`gated_region_mask`).
"""

from __future__ import annotations

import torch
from torch import nn

SIZE = 32
REGION = (slice(6, 18), slice(16, 28))  # rows, cols of R (12 x 12)
DECOY = (slice(20, 30), slice(3, 13))  # same colour, ignored by the model
COLOURS = torch.eye(3)  # class c = pure colour channel c


class RegionNet(nn.Module):
    def __init__(self, in_channels: int = 3, num_classes: int = 3, scale: float = 4.0) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, num_classes, 1)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(num_classes, num_classes, 1)
        assert self.conv1.bias is not None and self.conv2.bias is not None  # built with bias=True
        with torch.no_grad():
            if in_channels == 3:
                self.conv1.weight.copy_((2 * COLOURS - 1)[:num_classes, :, None, None])
                self.conv1.bias.zero_()
            else:
                gen = torch.Generator().manual_seed(1)
                self.conv1.weight.copy_(torch.randn(self.conv1.weight.shape, generator=gen))
            self.conv2.weight.copy_(torch.eye(num_classes)[:, :, None, None])
            self.conv2.bias.zero_()
        mask = torch.zeros(SIZE, SIZE)
        mask[REGION] = 1.0
        self.register_buffer("region", mask / mask.sum())
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv2(self.relu(self.conv1(x)))
        return self.scale * (h * self.region).sum((2, 3))


def region_mask() -> torch.Tensor:
    """bool[SIZE,SIZE]: the square R the model looks at."""
    m = torch.zeros(SIZE, SIZE, dtype=torch.bool)
    m[REGION] = True
    return m


def region_images(labels: list[int], seed: int = 0) -> torch.Tensor:
    """float[N,3,SIZE,SIZE] in [0,1]: smooth colour blobs; R and the decoy in the label's colour."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(len(labels), 3, 5, 5, generator=gen) * 0.6
    x = torch.nn.functional.interpolate(coarse, size=(SIZE, SIZE), mode="bilinear",
                                        align_corners=False)
    for i, c in enumerate(labels):
        colour = COLOURS[c][:, None, None]
        x[i, :, REGION[0], REGION[1]] = colour
        x[i, :, DECOY[0], DECOY[1]] = colour
    return x


class GatedRegionNet(nn.Module):
    """Sees only image rows 2..9, columns 8..15 of a 16x16 image: conv features are pooled to
    8x8 and multiplied by a fixed gate that is 1 on rows 1..4, columns 4..7 of that grid."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(4, 6, 1, bias=False)
        self.relu2 = nn.ReLU()
        self.fc = nn.Linear(6, 3)
        assert self.conv1.bias is not None  # built with bias=True
        with torch.no_grad():
            self.conv1.weight.copy_(torch.rand(4, 1, 3, 3, generator=g))
            self.conv1.bias.zero_()
            self.conv2.weight.copy_(torch.rand(6, 4, 1, 1, generator=g))
            self.fc.weight.copy_(torch.rand(3, 6, generator=g))
        gate = torch.zeros(8, 8)
        gate[1:5, 4:8] = 1.0
        self.register_buffer("gate", gate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.pool(self.relu1(self.conv1(x))) * self.gate
        h = self.relu2(self.conv2(h))
        return self.fc(h.mean(dim=(2, 3)))


def gated_region_mask() -> torch.Tensor:
    """bool[16,16]: the rows 2..9, columns 8..15 that :class:`GatedRegionNet` sees."""
    m = torch.zeros(16, 16, dtype=torch.bool)
    m[2:10, 8:16] = True
    return m
