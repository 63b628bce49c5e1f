"""A hand-built CNN that looks only at a known square, and images for it (black-box tests).

RegionNet: two 1x1 convolutions (colour detectors, then identity) with a ReLU, then the
mean of each class channel over a fixed square R times ``scale``: logit_c depends only on
the pixels inside R. Images: smooth random colour blobs, the square R filled with the colour of the
image's class, and a decoy square of the same colour elsewhere that the model ignores.
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


def epg(heatmap: torch.Tensor, mask: torch.Tensor) -> float:
    """Energy-based pointing game: positive mass inside ``mask`` over all positive mass."""
    pos = heatmap.clamp(min=0)
    return float((pos * mask).sum() / pos.sum().clamp(min=1e-12))


def assert_close(a: torch.Tensor, b: torch.Tensor, atol: float = 1e-5, rtol: float = 1e-5) -> None:
    """Elementwise |a - b| <= atol + rtol |b| (cheaper to import than torch.testing)."""
    assert a.shape == b.shape, (a.shape, b.shape)
    err = float(((a - b).abs() - rtol * b.abs()).max())
    assert err <= atol, f"max deviation {err:.3g} > {atol}"


