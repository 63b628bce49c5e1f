"""The app's image set: ``load_image_set(spec, loaded)``.

Any image spec of :func:`xgir.data.images.load_images`: an embedded ``NAME:SPLIT``
(``decoy-digits:train``), ``photos``, a class folder, image files or a glob, brought to the
model's preprocessing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from xgir.errors import XgirError
from xgir.models import LoadedModel


@dataclass
class ImageSet:
    """Images float[N,C,S,S] in [0, 1] as the model takes them; labels long[N] (-1 = unknown);
    names: one short name per image; extras: per-image tensors (e.g. ``decoy_mask`` bool[N,S,S]);
    no_labels: why the labels are unknown, where known (class folders that do not name the
    model's classes)."""

    images: torch.Tensor
    labels: torch.Tensor
    names: list[str]
    spec: str
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    no_labels: str = ""

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def height(self) -> int:
        return int(self.images.shape[2])

    @property
    def width(self) -> int:
        return int(self.images.shape[3])


def load_image_set(spec: str, loaded: LoadedModel, n: int | None = None, seed: int = 0,
                   class_folders: str = "names", option: str = "--n") -> ImageSet:
    """The images named by ``spec`` (any :func:`xgir.data.images.load_images` spec), at most ``n``
    of them, as the model takes them, a class folder labelled by the model's classes
    (``class_folders``: see :func:`xgir.data.images.folder_labels`); boolean per-pixel extras
    (e.g. decoy masks) kept. ``option`` names ``n`` in errors."""
    from xgir.data.images import load_images

    if n is not None and n < 1:
        raise XgirError(f"{option} must be at least 1, got {n}")
    ds = load_images(spec.strip(), loaded.preprocess, seed=seed, limit=n, model_classes=loaded.classes,
                     class_folders=class_folders)  # type: ignore[arg-type]  # checked by load_images
    files = list(getattr(ds, "files", None) or [])
    names = ([Path(f).name for f in files] if len(files) == len(ds)
             else [f"{ds.name or spec}/{i}" for i in range(len(ds))])
    extras = {k: v.clone() for k, v in ds.extras.items() if v.ndim == 3 and v.dtype == torch.bool}
    return ImageSet(ds.images.contiguous(), ds.labels.clone(), names, spec, extras, ds.no_labels)


def evaluation_spec(spec: str) -> str | None:
    """The held-out split matching an embedded training spec (``decoy-digits:train`` ->
    ``decoy-digits:test``), or None."""
    from xgir.data import DATASETS

    name, _, split = spec.partition(":")
    if name in DATASETS and split == "train" and "test" in DATASETS[name][1]:
        return f"{name}:test"
    return None
