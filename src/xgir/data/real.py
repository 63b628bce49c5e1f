"""Loaders for real data: IDX files (MNIST and kin, optionally gzipped), lazily read
image files (:class:`LazyImageDataset`) and their ImageFolder layout (one folder per class,
optional mask folder) such as ImageNet and ImageNet-V2.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from xgir.data.base import ImageDataset
from xgir.data.transforms import Fit, Preprocess, to_rgb
from xgir.errors import XgirError

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (``.gz`` or plain, detected from the bytes) into an array."""
    path = Path(path)
    if not path.is_file():
        raise XgirError(f"IDX file not found: {path}")
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as err:
            raise XgirError(f"{path}: corrupt gzip data ({err})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise XgirError(f"{path} is not an IDX file (bad magic number)")
    dtype: np.dtype = np.dtype(_IDX_DTYPES[raw[2]])  # type: ignore[call-overload]  # numpy stubs: str|type
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise XgirError(f"{path}: truncated IDX header")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    count = int(np.prod(shape)) if shape else 1
    if len(raw) - header != count * dtype.itemsize:
        raise XgirError(
            f"{path}: IDX header says shape {shape} ({count * dtype.itemsize} bytes of data) "
            f"but the file holds {len(raw) - header}"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def _find(root: Path, stems: Sequence[str]) -> Path:
    for stem in stems:
        for candidate in (root / stem, root / f"{stem}.gz"):
            if candidate.is_file():
                return candidate
    raise XgirError(f"no file {' or '.join(stems)}[.gz] in {root}")


def load_mnist(root: str | os.PathLike, split: str = "train") -> ImageDataset:
    """MNIST-style IDX files in ``root`` (``train-images-idx3-ubyte[.gz]``, ...,
    ``t10k-labels-idx1-ubyte[.gz]``): images float[N,1,H,W] in [0,1], labels long[N]."""
    root = Path(root)
    if split not in ("train", "test"):
        raise XgirError(f"unknown split '{split}' for mnist; choose one of: train, test")
    prefix = "train" if split == "train" else "t10k"
    images = read_idx(_find(root, [f"{prefix}-images-idx3-ubyte", f"{prefix}-images.idx3-ubyte"]))
    labels = read_idx(_find(root, [f"{prefix}-labels-idx1-ubyte", f"{prefix}-labels.idx1-ubyte"]))
    if images.ndim != 3:
        raise XgirError(f"MNIST images must be 3-D [N,H,W], got shape {images.shape}")
    if len(images) != len(labels):
        raise XgirError(f"{len(images)} images but {len(labels)} labels in {root}")
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    return ImageDataset(images=x, labels=torch.from_numpy(labels.astype(np.int64)),
                        name=f"mnist/{split}")


class LazyImageDataset:
    """Labelled images read from files on demand (the shared reading of
    :class:`ImageFolderDataset` and :class:`~xgir.data.waterbirds.WaterbirdsDataset`).

    A subclass sets ``files`` (N paths), ``labels`` long[N], ``classes``, ``preprocess``
    and ``name``, and may set ``groups`` long[N] with ``group_names``, ``extras`` (per-image
    tensors with first dimension N) and override :meth:`_mask_file` (the mask of image i,
    read as ``grey > mask_threshold``, brought to the image's geometry by nearest neighbour).
    Gives the same items and batch dicts as :class:`ImageDataset` (``[i]``, ``batches``);
    :meth:`load` / :meth:`take` read images into an :class:`ImageDataset` (small sets only:
    float[N,3,S,S] is 0.6 MB per image at 224 px).
    """

    files: list[Path]
    labels: torch.Tensor
    classes: list[str]
    preprocess: Preprocess
    name: str = ""
    groups: torch.Tensor | None = None
    group_names: list[str]
    extras: dict[str, torch.Tensor]
    mask_threshold = 127
    has_masks = False

    def __init__(self) -> None:
        self.group_names = []
        self.extras = {}

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def size(self) -> int:
        return self.preprocess.size

    def __len__(self) -> int:
        return len(self.files)

    def _open(self, path: Path) -> Any:
        from xgir.data.images import read_image

        return read_image(path)

    def _read(self, path: Path) -> torch.Tensor:
        return self.preprocess(self._open(path))

    def _mask_file(self, i: int) -> Path | None:
        """The mask file of image ``i`` (None: no masks); XgirError when it should exist and does not."""
        return None

    def _mask(self, i: int) -> torch.Tensor | None:
        path = self._mask_file(i)
        if path is None:
            return None
        from PIL import Image

        grey = to_rgb(self._open(path)).convert("L")
        arr = np.asarray(self.preprocess.geometry(grey, Image.Resampling.NEAREST), dtype=np.uint8)
        return torch.from_numpy(arr > self.mask_threshold)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor | int]:
        item: dict[str, torch.Tensor | int] = {"image": self._read(self.files[i]), "label": int(self.labels[i])}
        mask = self._mask(i)
        if mask is not None:
            item["mask"] = mask
        if self.groups is not None:
            item["group"] = int(self.groups[i])
        for key, value in self.extras.items():
            item[key] = value[i]
        return item

    def batches(self, batch_size: int, shuffle: bool = False,
                generator: torch.Generator | None = None) -> Iterator[dict[str, torch.Tensor]]:
        """Batches of ``image`` float[B,3,S,S], ``label``, ``index``, and ``mask``, ``group``
        and the extras where present."""
        n = len(self)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            items = [self[int(i)] for i in idx]
            batch = {"image": torch.stack([_tensor(it["image"]) for it in items]),
                     "label": self.labels[idx], "index": idx}
            if self.has_masks:
                batch["mask"] = torch.stack([_tensor(it["mask"]) for it in items])
            if self.groups is not None:
                batch["group"] = self.groups[idx]
            for key, value in self.extras.items():
                batch[key] = value[idx]
            yield batch

    def take(self, indices: torch.Tensor | Sequence[int]) -> ImageDataset:
        """Read the images (and masks) at ``indices`` into memory, in that order."""
        index = torch.as_tensor(indices, dtype=torch.long).reshape(-1)
        items = [self[int(i)] for i in index]
        c, s = self.preprocess.channels, self.size
        images = torch.stack([_tensor(it["image"]) for it in items]) if items else torch.zeros(0, c, s, s)
        masks = torch.stack([_tensor(it["mask"]) for it in items]) if self.has_masks and items else None
        return ImageDataset(images=images, labels=self.labels[index].clone(), masks=masks,
                            groups=None if self.groups is None else self.groups[index].clone(),
                            extras={k: v[index].clone() for k, v in self.extras.items()},
                            classes=list(self.classes), group_names=list(self.group_names), name=self.name,
                            files=[str(self.files[int(i)]) for i in index])

    def load(self, n: int | None = None) -> ImageDataset:
        """Read every image (or the first ``n``) and mask into memory."""
        return self.take(torch.arange(len(self) if n is None else min(int(n), len(self))))


class ImageFolderDataset(LazyImageDataset):
    """Class folders of images, read lazily: ``root/<class>/<image>``.

    Args:
        root: the folder of class folders.
        size: input size when no ``preprocess`` is given.
        preprocess: how each image becomes a tensor (its ``geometry`` is applied to masks
            too); default ``Preprocess(size, fit=fit)``: the standard evaluation transform
            (resize the shorter side to size * 8/7, centre crop) unless ``fit="squash"``.
        fit: ``"crop"`` (default) or ``"squash"`` (the old resize of both sides), used
            when ``preprocess`` is None.
        classes: class folder names in label order (default: sorted folder names); give
            the same list for two folders (e.g. ImageNet and ImageNet-V2) so labels agree.
        mask_root: optional folder with the same layout holding masks (same file stem,
            any image suffix; grey > 127 = object).
    Items and batches as :class:`LazyImageDataset`.
    """

    def __init__(self, root: str | os.PathLike, size: int = 224, classes: Sequence[str] | None = None,
                 mask_root: str | os.PathLike | None = None, preprocess: Preprocess | None = None,
                 fit: Fit = "crop") -> None:
        super().__init__()
        self.root = Path(root)
        if not self.root.is_dir():
            raise XgirError(f"image folder not found: {self.root}")
        found = sorted(p.name for p in self.root.iterdir() if p.is_dir())
        self.classes = list(classes) if classes is not None else found
        if not self.classes:
            raise XgirError(f"{self.root} has no class folders (expected root/<class>/<image>)")
        missing = [c for c in self.classes if not (self.root / c).is_dir()]
        if missing:
            shown = ", ".join(missing[:8]) + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
            raise XgirError(f"no folder for class{'es' if len(missing) > 1 else ''} {shown} in {self.root}; "
                            "give only classes that have a folder (root/<class>/<image>)")
        self.preprocess = preprocess if preprocess is not None else Preprocess(size, fit=fit)
        self.mask_root = Path(mask_root) if mask_root is not None else None
        if self.mask_root is not None and not self.mask_root.is_dir():
            raise XgirError(f"mask folder not found: {self.mask_root}")
        self.has_masks = self.mask_root is not None
        self.files = []
        labels = []
        for label, cls in enumerate(self.classes):
            folder = self.root / cls
            if not folder.is_dir():
                continue
            for f in sorted(folder.iterdir()):
                if f.suffix.lower() in IMAGE_SUFFIXES:
                    self.files.append(f)
                    labels.append(label)
        if not self.files:
            raise XgirError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {self.root}")
        self.labels = torch.tensor(labels, dtype=torch.long)
        self.name = f"imagefolder/{self.root.name}"

    def _mask_file(self, i: int) -> Path | None:
        if self.mask_root is None:
            return None
        path = self.files[i]
        folder = self.mask_root / path.parent.name
        for suffix in IMAGE_SUFFIXES:
            candidate = folder / f"{path.stem}{suffix}"
            if candidate.is_file():
                return candidate
        raise XgirError(f"no mask for {path} in {folder} (expected {path.stem}.png or similar)")


def _tensor(value: torch.Tensor | int) -> torch.Tensor:
    """An item's tensor field (``image``, ``mask``), narrowed for the type checker."""
    assert isinstance(value, torch.Tensor)
    return value
