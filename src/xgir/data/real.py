"""Loaders for real data: IDX files (MNIST and kin, optionally gzipped) and an
ImageFolder layout (one folder per class, optional mask folder) such as ImageNet
and ImageNet-V2.
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


class ImageFolderDataset:
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
            any image suffix; non-zero = object).
    Gives the same batch dicts as :class:`ImageDataset` (``batches``, ``[i]``, ``labels``);
    :meth:`load` reads everything into an :class:`ImageDataset` (small folders only).
    """

    def __init__(self, root: str | os.PathLike, size: int = 224, classes: Sequence[str] | None = None,
                 mask_root: str | os.PathLike | None = None, preprocess: Preprocess | None = None,
                 fit: Fit = "crop") -> None:
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
        self.size = self.preprocess.size
        self.mask_root = Path(mask_root) if mask_root is not None else None
        if self.mask_root is not None and not self.mask_root.is_dir():
            raise XgirError(f"mask folder not found: {self.mask_root}")
        self.files: list[Path] = []
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

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.files)

    def _open(self, path: Path) -> Any:
        from xgir.data.images import read_image

        return read_image(path)

    def _read(self, path: Path) -> torch.Tensor:
        return self.preprocess(self._open(path))

    def _mask(self, path: Path) -> torch.Tensor | None:
        if self.mask_root is None:
            return None
        from PIL import Image

        folder = self.mask_root / path.parent.name
        for suffix in IMAGE_SUFFIXES:
            candidate = folder / f"{path.stem}{suffix}"
            if candidate.is_file():
                grey = to_rgb(self._open(candidate)).convert("L")
                arr = np.asarray(self.preprocess.geometry(grey, Image.Resampling.NEAREST), dtype=np.uint8)
                return torch.from_numpy(arr > 127)
        raise XgirError(f"no mask for {path} in {folder} (expected {path.stem}.png or similar)")

    def __getitem__(self, i: int) -> dict[str, torch.Tensor | int]:
        item: dict[str, torch.Tensor | int] = {"image": self._read(self.files[i]),
                                                "label": int(self.labels[i])}
        mask = self._mask(self.files[i])
        if mask is not None:
            item["mask"] = mask
        return item

    def batches(self, batch_size: int, shuffle: bool = False,
                generator: torch.Generator | None = None) -> Iterator[dict[str, torch.Tensor]]:
        """Batches of ``image`` float[B,3,S,S], ``label``, ``index`` and ``mask`` if present."""
        n = len(self)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            items = [self[int(i)] for i in idx]
            batch = {"image": torch.stack([_tensor(it["image"]) for it in items]),
                     "label": self.labels[idx], "index": idx}
            if self.mask_root is not None:
                batch["mask"] = torch.stack([_tensor(it["mask"]) for it in items])
            yield batch

    def load(self, n: int | None = None) -> ImageDataset:
        """Read every image (or the first ``n``) and mask into memory."""
        n = len(self) if n is None else min(int(n), len(self))
        index = torch.arange(n)
        items = [self[int(i)] for i in index]
        c, s = self.preprocess.channels, self.size
        images = torch.stack([_tensor(it["image"]) for it in items]) if items else torch.zeros(0, c, s, s)
        masks = torch.stack([_tensor(it["mask"]) for it in items]) if self.mask_root is not None and items else None
        return ImageDataset(images=images, labels=self.labels[:n].clone(), masks=masks,
                            classes=list(self.classes), name=self.name,
                            files=[str(f) for f in self.files[:n]])


def _tensor(value: torch.Tensor | int) -> torch.Tensor:
    """An item's tensor field (``image``, ``mask``), narrowed for the type checker."""
    assert isinstance(value, torch.Tensor)
    return value
