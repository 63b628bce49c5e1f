"""Model factories and a tiny class-folder writer for the ``xgir correct`` tests
(test_xgir_pipeline.py, test_sharded.py); factories importable as "_pipeline_models:NAME"
(pytest puts tests/ on sys.path)."""

import numpy as np
import torch
from PIL import Image

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


CLASSES = ("cat", "dog", "owl")


def write_folder(root, n_per_class, seed, target=False):
    """Class c: a bright square at a class-specific place on noise; in the target split the
    background colour changes (a small shift). Returns ``root``."""
    rng = np.random.default_rng(seed)
    for c, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for i in range(n_per_class):
            img = rng.integers(0, 80, size=(32, 32, 3)).astype(np.uint8)
            if target:
                img[..., 2] += 100
            y0 = 4 + 9 * c
            img[y0 : y0 + 8, 10:22] = 230
            Image.fromarray(img).save(root / name / f"{i}.png")
    return root
