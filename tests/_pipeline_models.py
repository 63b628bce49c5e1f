"""Model factories for tests/test_xgir_pipeline.py, importable as "_pipeline_models:NAME"
(pytest puts tests/ on sys.path)."""

import torch

from xgir.models import SmallResNet


def tiny_resnet(num_classes: int = 3, width: int = 4, seed: int = 0) -> SmallResNet:
    torch.manual_seed(seed)
    return SmallResNet(num_classes=num_classes, width=width)


NOT_CALLABLE = 3


def not_a_module(**kwargs: object) -> str:
    return "not a model"


def gray_resnet(num_classes: int = 3, width: int = 4) -> SmallResNet:
    """A model for one-channel images (the pipeline reads RGB)."""
    torch.manual_seed(0)
    return SmallResNet(num_classes=num_classes, width=width, in_channels=1)
