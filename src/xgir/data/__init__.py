"""Datasets: embedded benchmarks built from installed packages, and real-data loaders.

Use :func:`load_dataset` with a registered name::

    ds = load_dataset("background-shift", split="target-test", seed=0, p=0.95)
    ds.images  # float[N,3,32,32] in [0,1]
    ds[0]      # {"image", "label", "mask", "group", "texture"}
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from xgir.data.base import ImageDataset
from xgir.data.benchmarks import (
    DECOY_SPLITS,
    GLYPH_SPLITS,
    SHIFT_SPLITS,
    background_shift,
    decoy_digits,
    glyph_pretrain,
)
from xgir.data.objects import OBJECT_SPLITS, object_shift
from xgir.data.real import ImageFolderDataset, load_mnist
from xgir.data.textures import TEXTURE_FAMILIES
from xgir.data.waterbirds import WaterbirdsDataset
from xgir.data.waterbirds_photos import SPLITS as WATERBIRDS_PHOTOS_SPLITS
from xgir.data.waterbirds_photos import waterbirds_photos
from xgir.errors import XgirError


def mnist(split: str = "train", seed: int = 0, root: str = "data/mnist") -> ImageDataset:
    """MNIST from IDX files in ``root`` (``seed`` is unused: the files are the data)."""
    return load_mnist(root, split)


DATASETS: dict[str, tuple[Callable[..., ImageDataset], tuple[str, ...]]] = {
    "decoy-digits": (decoy_digits, DECOY_SPLITS),
    "background-shift": (background_shift, SHIFT_SPLITS),
    "glyph-pretrain": (glyph_pretrain, GLYPH_SPLITS),
    "mnist": (mnist, ("train", "test")),
    "object-shift": (object_shift, OBJECT_SPLITS),
    "waterbirds-photos": (waterbirds_photos, WATERBIRDS_PHOTOS_SPLITS),
}


def dataset_splits(name: str) -> tuple[str, ...]:
    """The split names of a registered dataset."""
    return _lookup(name)[1]


def _lookup(name: str) -> tuple[Callable[..., ImageDataset], tuple[str, ...]]:
    if name not in DATASETS:
        raise XgirError(f"unknown dataset '{name}'; choose one of: {', '.join(DATASETS)}")
    return DATASETS[name]


def load_dataset(name: str, split: str, seed: int = 0, **params: object) -> ImageDataset:
    """Build split ``split`` of the registered dataset ``name`` (deterministic in ``seed``).

    ``params`` are the builder's keyword arguments (e.g. ``p`` and ``n`` for
    background-shift); an unknown one raises :class:`XgirError` listing the valid ones.
    """
    from xgir.config import check_seed

    check_seed(seed, "seed")
    builder, _ = _lookup(name)
    accepted = [p for p in inspect.signature(builder).parameters if p not in ("split", "seed")]
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise XgirError(
            f"unknown parameter(s) {', '.join(unknown)} for dataset '{name}'; "
            f"valid: {', '.join(accepted)}"
        )
    _check_params(name, builder, params)
    _check_size(name, builder, split, seed, params)
    return builder(split=split, seed=seed, **params)


LARGEST_SPLIT = 20_000  # images in the largest split an embedded dataset builds by default


def _check_size(name: str, builder: Callable[..., ImageDataset], split: str, seed: int,
                params: dict[str, object]) -> None:
    """The split must fit in memory (XgirError before building it otherwise): a bound from 3
    channels at ``size`` pixels first (``n`` images, or :data:`LARGEST_SPLIT`), and when that is
    too much, the bytes of one image (with its masks and extras) built to measure them."""
    from xgir.resources import MEMORY_SHARE, check_memory, machine_memory

    default = inspect.signature(builder).parameters.get("size")
    size = params.get("size", default.default if default is not None else 32)
    per_image = 2 * 4 * 3 * (size if isinstance(size, int) else 32) ** 2  # images and masks, float32
    check_memory(per_image, f"dataset '{name}' at size {size}", "lower size")
    given = params.get("n")
    n = given if isinstance(given, int) else LARGEST_SPLIT
    if n * per_image <= MEMORY_SHARE * machine_memory():
        return
    one = builder(split=split, seed=seed, **{**params, "n": 1})
    tensors = [one.images, one.labels, *(t for t in (one.masks, one.groups) if t is not None), *one.extras.values()]
    per_image = 2 * sum(t.numel() * t.element_size() for t in tensors)  # a copy while building
    what = f"dataset '{name}' with n={n}" if given is not None else f"dataset '{name}' at size {size}"
    check_memory(n * per_image, what, "lower n" if given is not None else "lower size")


_POSITIVE = ("n", "size", "patch")  # counts and sizes: at least 1


def _check_params(name: str, builder: Callable[..., ImageDataset], params: dict[str, object]) -> None:
    """Each parameter has its builder's annotated type; counts and sizes are >= 1."""
    import typing

    from pydantic import TypeAdapter, ValidationError

    hints = typing.get_type_hints(builder)
    for key, value in params.items():
        if key in hints:
            try:
                TypeAdapter(hints[key]).validate_python(value, strict=True)
            except ValidationError:
                if not (isinstance(value, int) and not isinstance(value, bool) and hints[key] is float):
                    raise XgirError(f"dataset '{name}': parameter {key} must be of type "
                                    f"{getattr(hints[key], '__name__', hints[key])}, got {value!r}") from None
        if key in _POSITIVE and isinstance(value, int | float) and value < 1:
            raise XgirError(f"dataset '{name}': parameter {key} must be at least 1, got {value!r}")
        if key == "p" and isinstance(value, int | float) and not 0 <= value <= 1:
            raise XgirError(f"dataset '{name}': parameter p is a probability in [0, 1], got {value!r}")


def __getattr__(name: str) -> object:
    """``load_images`` and ``PHOTOS`` from :mod:`xgir.data.images` (imported on first use)."""
    if name in ("load_images", "PHOTOS"):
        from xgir.data import images

        return getattr(images, name)
    raise AttributeError(f"module 'xgir.data' has no attribute '{name}'")


__all__ = [
    "DATASETS",
    "PHOTOS",
    "load_images",
    "ImageDataset",
    "ImageFolderDataset",
    "TEXTURE_FAMILIES",
    "WaterbirdsDataset",
    "dataset_splits",
    "load_dataset",
    "load_mnist",
]
