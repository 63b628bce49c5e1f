"""Models: a small zoo, the feature/head split, checkpoints."""

from xgir.models.checkpoint import build_model, load_checkpoint, save_checkpoint
from xgir.models.split import FeatureExtractor, SplitModel, get_module, split
from xgir.models.zoo import ARCHITECTURES, LeNet, SmallResNet

__all__ = [
    "ARCHITECTURES",
    "FeatureExtractor",
    "LeNet",
    "SmallResNet",
    "SplitModel",
    "build_model",
    "get_module",
    "load_checkpoint",
    "save_checkpoint",
    "split",
]
