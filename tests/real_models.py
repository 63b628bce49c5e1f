"""A user's own model for the factory spec ``real_models:tiny_net`` (tests only)."""

from torch import nn


def tiny_net(num_classes: int = 2, width: int = 4) -> nn.Module:
    """A small CNN taking 3 x 224 x 224 images (any size: global pooling)."""
    return nn.Sequential(
        nn.Conv2d(3, width, 5, stride=4, padding=2), nn.ReLU(),
        nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, num_classes),
    )
