"""Models: a small zoo, the feature/head split, checkpoints."""

from xgir.models.checkpoint import build_model, load_checkpoint, save_checkpoint
from xgir.models.load import PRETRAINED, LoadedModel, attach_normalization, load_model, save_loaded
from xgir.models.split import FeatureExtractor, SplitModel, get_module, split
from xgir.models.zoo import ARCHITECTURES, LeNet, SmallResNet

__all__ = [
    "ARCHITECTURES",
    "FeatureExtractor",
    "LoadedModel",
    "PRETRAINED",
    "attach_normalization",
    "load_model",
    "save_loaded",
    "LeNet",
    "SmallResNet",
    "SplitModel",
    "build_model",
    "get_module",
    "load_checkpoint",
    "save_checkpoint",
    "split",
]
