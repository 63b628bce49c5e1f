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


WATERBIRDS_ROWS = [  # (species folder, y, split, place): every (y, place) group in val and test
    ("001.Black_footed_Albatross", 1, 0, 1), ("001.Black_footed_Albatross", 1, 0, 1),
    ("002.Cardinal", 0, 0, 0), ("002.Cardinal", 0, 0, 0), ("001.Black_footed_Albatross", 1, 0, 0),
    ("002.Cardinal", 0, 0, 1),
    ("002.Cardinal", 0, 1, 0), ("002.Cardinal", 0, 1, 1),
    ("001.Black_footed_Albatross", 1, 1, 0), ("001.Black_footed_Albatross", 1, 1, 1),
    ("002.Cardinal", 0, 2, 0), ("002.Cardinal", 0, 2, 1),
    ("001.Black_footed_Albatross", 1, 2, 0), ("001.Black_footed_Albatross", 1, 2, 1),
]


def write_waterbirds(root, rows=WATERBIRDS_ROWS, masks=True, seed=0):
    """A tiny folder in the Waterbirds format (Sagawa et al. 2020): metadata.csv, images at
    <species>/<name>.jpg|png (a white or dark bird square on a blue water / green land
    background, 40x48 px) and CUB-style grey masks segmentations/<species>/<name>.png
    (255 inside the bird, 51 on a one-pixel soft edge). Returns ``root``."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    lines = ["img_id,img_filename,y,split,place,place_filename"]
    for i, (species, y, split, place) in enumerate(rows):
        name = f"{species.split('.')[1]}_{i:04d}.{'jpg' if i % 2 else 'png'}"
        rel = f"{species}/{name}"
        img = rng.integers(0, 40, size=(40, 48, 3)).astype(np.uint8)
        img[..., 2 if place else 1] += 150
        img[12:28, 16:32] = 240 if y else 60
        (root / species).mkdir(exist_ok=True)
        Image.fromarray(img).save(root / rel)
        lines.append(f"{i + 1},{rel},{y},{split},{place},/{'o/ocean' if place else 'b/bamboo_forest'}/x.jpg")
        if masks:
            m = np.zeros((40, 48), dtype=np.uint8)
            m[11:29, 15:33] = 51
            m[12:28, 16:32] = 255
            (root / "segmentations" / species).mkdir(parents=True, exist_ok=True)
            Image.fromarray(m).save((root / "segmentations" / rel).with_suffix(".png"))
    (root / "metadata.csv").write_text("\n".join(lines) + "\n")
    return root
