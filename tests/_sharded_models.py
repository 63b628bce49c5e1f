"""A model factory for tests/test_sharded.py that counts the images each forward pass sees
(importable as "_sharded_models:counting_resnet"; pytest puts tests/ on sys.path)."""

from _pipeline_models import tiny_resnet
from xgir.models import SmallResNet

SEEN = {"images": 0, "calls": 0}


def counting_resnet(num_classes: int = 3, width: int = 4, seed: int = 0) -> SmallResNet:
    model = tiny_resnet(num_classes, width, seed)

    def count(_module, args):
        SEEN["images"] += args[0].shape[0]
        SEEN["calls"] += 1

    model.register_forward_pre_hook(count)
    return model
