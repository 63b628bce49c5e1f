"""One way to name images: :func:`load_images`.

Accepted forms of ``spec`` (a string, or a list of strings for files and globs):

- an embedded dataset and split: ``decoy-digits:test``, ``background-shift:target-test``
  (``decoy-digits`` alone: its first split);
- the bundled photos (scikit-image photos that ship with the package, no download):
  ``photos`` (all of :data:`PHOTOS`) or ``photos:chelsea,coffee``;
- a Waterbirds folder (:mod:`xgir.data.waterbirds`: a folder holding ``metadata.csv``):
  ``ROOT`` (every image) or ``ROOT:train``, ``ROOT:val``, ``ROOT:test`` (the split follows
  the LAST colon; labels landbird / waterbird, groups, places, masks when present);
- a class folder in the ImageNet layout, ``root/<class>/<image>`` (labels = folder order);
- image files and globs: ``cat.jpg``, ``'shots/*.png'``, a folder of images, or a list of them
  (unlabelled: label -1).

Images of any size and mode (grey, RGBA, palette, 16-bit) become float[N,C,S,S] in [0, 1]
by the model's :class:`~xgir.data.transforms.Preprocess` (class folders and files: resize the
shorter side and centre crop by default, ``fit="squash"`` to resize both sides). ``n`` takes
the FIRST ``n`` images of the split, folder or file list; asking for more than there are is
an error.

How a string is read, in order: an embedded name (``NAME`` or ``NAME:SPLIT``, unless a file
or folder of that exact name exists), ``photos[:...]``, a Waterbirds ``ROOT[:SPLIT]``, a class
folder, files and globs. So an existing path is read as itself even when it holds a colon;
write ``./decoy-digits:test`` for a Waterbirds folder that shares an embedded dataset's name.
Waterbirds folders and class folders are read lazily by :func:`open_images` (what
``xgir features`` and ``xgir train`` stream); :func:`load_images` reads them into memory.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from xgir.data.base import ImageDataset
from xgir.data.real import IMAGE_SUFFIXES, LazyImageDataset
from xgir.data.transforms import Fit, Preprocess
from xgir.errors import XgirError

PHOTOS: dict[str, str] = {
    "chelsea": "a tabby cat (Chelsea)",
    "coffee": "a cup of coffee on a saucer",
    "astronaut": "astronaut Eileen Collins",
    "rocket": "a rocket on its launch pad",
    "camera": "a cameraman with a camera on a tripod (grey)",
    "coins": "Greek coins (grey)",
    "clock": "a wall clock (grey)",
    "logo": "the scikit-image logo (RGBA)",
}
"""The bundled photos: scikit-image sample images that load without a download."""

UNLABELLED = -1


def spec_forms() -> str:
    """The accepted image specs, in one line (for error messages and help)."""
    from xgir.data import DATASETS

    return ("an embedded dataset[:split] (" + ", ".join(n for n in DATASETS if n != "mnist")
            + "; e.g. decoy-digits:test), photos or photos:NAME,NAME (" + ", ".join(PHOTOS)
            + "), a Waterbirds folder ROOT or ROOT:train|val|test (ROOT holds metadata.csv), a class folder "
            "root/<class>/<image>, or image files and globs ('shots/*.jpg')")


def photo(name: str) -> Any:
    """A bundled photo as a PIL image (its own mode and size)."""
    from PIL import Image

    if name not in PHOTOS:
        raise XgirError(f"unknown photo '{name}'; choose from: {', '.join(PHOTOS)}")
    import skimage.data

    arr = getattr(skimage.data, name)()
    return Image.fromarray(np.ascontiguousarray(arr))


def read_image(path: str | os.PathLike) -> Any:
    """Open an image file as a PIL image (loaded, file closed); one line if unreadable."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            return img
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise XgirError(f"cannot read image {path}: {err}") from None


def _check_n(n: int | None, available: int, what: str, limit: int | None = None) -> int:
    if n is None:
        return available if limit is None else min(available, limit)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise XgirError(f"n must be a whole number >= 1, got {n!r}")
    if n > available:
        raise XgirError(f"{what} has {available} images, fewer than n={n}; ask for at most {available}")
    return n


def _stack(images: list[Any], preprocess: Preprocess) -> torch.Tensor:
    return torch.stack([preprocess(im) for im in images]) if images else torch.zeros(0, preprocess.channels,
                                                                                        preprocess.size,
                                                                                        preprocess.size)


def _embedded(name: str, split: str, preprocess: Preprocess | None, n: int | None, seed: int,
              params: dict[str, Any], limit: int | None = None) -> ImageDataset:
    from xgir.data import dataset_splits, load_dataset

    splits = dataset_splits(name)
    split = split or splits[0]
    if split not in splits:
        raise XgirError(f"unknown split '{split}' for {name}; choose one of: {', '.join(splits)}")
    ds = load_dataset(name, split, seed=seed, **params)
    count = _check_n(n, len(ds), f"{name}:{split}", limit)
    if count < len(ds):
        ds = ds.subset(slice(0, count))
    ds.name = f"{name}:{split}"
    if preprocess is not None and (ds.images.shape[1] != preprocess.channels
                                   or tuple(ds.images.shape[-2:]) != (preprocess.size,) * 2):
        # small square synthetic images: resized whole (squash), masks by nearest neighbour
        pre = preprocess.with_fit("squash")
        ds.images = pre.tensor(ds.images)
        if ds.masks is not None:
            ds.masks = torch.nn.functional.interpolate(ds.masks[:, None].float(), size=ds.images.shape[-2:],
                                                       mode="nearest")[:, 0].bool()
        for key, value in list(ds.extras.items()):
            if value.ndim == 3 and value.dtype == torch.bool:
                ds.extras[key] = torch.nn.functional.interpolate(
                    value[:, None].float(), size=ds.images.shape[-2:], mode="nearest")[:, 0].bool()
    return ds


def _photos(names: list[str], preprocess: Preprocess, n: int | None, limit: int | None = None) -> ImageDataset:
    names = names or list(PHOTOS)
    unknown = [p for p in names if p not in PHOTOS]
    if unknown:
        raise XgirError(f"unknown photo(s) {', '.join(unknown)}; choose from: {', '.join(PHOTOS)}")
    names = names[:_check_n(n, len(names), "photos", limit)]
    images = _stack([photo(p) for p in names], preprocess)
    return ImageDataset(images, torch.full((len(names),), UNLABELLED), classes=[], name="photos",
                        files=list(names))


def _files(patterns: Sequence[str], preprocess: Preprocess, n: int | None, limit: int | None = None
           ) -> ImageDataset:
    files: list[Path] = []
    for pattern in patterns:
        p = Path(pattern).expanduser()
        if p.is_file():
            files.append(p)
        elif p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise XgirError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in folder {p}")
            files += found
        elif glob.has_magic(str(p)):
            found = sorted(Path(f) for f in glob.glob(str(p), recursive=True)
                           if Path(f).is_file() and Path(f).suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise XgirError(f"no image files match '{pattern}'")
            files += found
        else:
            raise XgirError(f"unknown dataset or image file '{pattern}' (no such file or folder); images are named by "
                            + spec_forms())
    files = files[:_check_n(n, len(files), "the image files", limit)]
    images = _stack([read_image(f) for f in files], preprocess)
    return ImageDataset(images, torch.full((len(files),), UNLABELLED), classes=[], name="files",
                        files=[str(f) for f in files])


def _is_class_folder(path: Path) -> bool:
    return path.is_dir() and any(p.is_dir() for p in path.iterdir())


def _spec_string(spec: str | os.PathLike | Sequence[str | os.PathLike]) -> str | None:
    """The one string of ``spec`` (None for a list of several files)."""
    if isinstance(spec, (list, tuple)):
        return str(spec[0]).strip() if len(spec) == 1 else None
    return str(spec).strip()


def open_images(spec: str | os.PathLike | Sequence[str | os.PathLike], preprocess: Preprocess | None = None, *,
                fit: Fit | None = None, classes: Sequence[str] | None = None,
                masks: bool | str | os.PathLike = True) -> LazyImageDataset | None:
    """The lazy dataset of a spec read from labelled files, None for any other spec.

    A Waterbirds ``ROOT[:SPLIT]`` gives a :class:`~xgir.data.waterbirds.WaterbirdsDataset`
    (``masks``: see there), a class folder an :class:`~xgir.data.real.ImageFolderDataset`
    (``classes`` in label order); embedded datasets, photos and files give None. Nothing is
    read but the file list (and Waterbirds' metadata.csv)."""
    from xgir.data import DATASETS

    s = _spec_string(spec)
    if not s:
        return None
    name = s.partition(":")[0]
    if name in (*DATASETS, "photos") and not Path(s).exists():
        return None
    pre = preprocess or Preprocess(224)
    if fit is not None:
        pre = pre.with_fit(fit)
    from xgir.data.waterbirds import CLASSES, WaterbirdsDataset, parse_spec

    found = parse_spec(s)
    if found is not None:
        if classes is not None and list(classes) != CLASSES:
            raise XgirError(f"{s} is a Waterbirds folder: its classes are {', '.join(CLASSES)} "
                            f"(y = 0, 1), not {', '.join(classes)}")
        return WaterbirdsDataset(found[0], found[1], preprocess=pre, masks=masks)
    path = Path(s).expanduser()
    if _is_class_folder(path):
        from xgir.data.real import ImageFolderDataset

        return ImageFolderDataset(path, classes=classes, preprocess=pre)
    return None


def load_images(spec: str | os.PathLike | Sequence[str | os.PathLike], preprocess: Preprocess | None = None, *,
                n: int | None = None, seed: int = 0, fit: Fit | None = None,
                classes: Sequence[str] | None = None, dataset_params: dict[str, Any] | None = None,
                limit: int | None = None, masks: bool | str | os.PathLike = True) -> ImageDataset:
    """Images named by ``spec`` (see the module docstring) as an :class:`ImageDataset`.

    Args:
        spec: an image spec string, or a list of files / globs.
        preprocess: the model's preprocessing; None keeps an embedded dataset's own images
            (and, for files, photos and folders, means 224 px crop without normalisation).
        n: take the first ``n`` images (None: all); more than there are is an error.
        seed: embedded datasets' generation seed.
        fit: override ``preprocess.fit`` for files, photos and folders (``"crop"``, the
            standard evaluation transform, or ``"squash"``).
        classes: class folder names in label order (class folders only).
        dataset_params: an embedded dataset's builder parameters (e.g. ``{"p": 0.9}``).
        limit: with ``n`` None, take at most the first ``limit`` images (no error when fewer).
        masks: a Waterbirds folder's masks: True (``ROOT/segmentations`` when present), False,
            or the mask root.
    Returns:
        ImageDataset: ``images`` float[N,C,S,S] in [0, 1], ``labels`` long[N] (-1 when
        unknown), ``masks`` where the source has them, ``files`` the file or photo names;
        Waterbirds also ``groups``, ``group_names`` and ``extras["place"]``.
    """
    from xgir.data import DATASETS

    pre_files = preprocess or Preprocess(224)
    if fit is not None:
        pre_files = pre_files.with_fit(fit)
    if isinstance(spec, (list, tuple)):
        items = [str(s) for s in spec]
        if len(items) != 1:
            if not items:
                raise XgirError("no images named; images are named by " + spec_forms())
            return _files(items, pre_files, n, limit)
        spec = items[0]
    s = str(spec).strip()
    if not s:
        raise XgirError("empty image spec; images are named by " + spec_forms())
    name, _, rest = s.partition(":")
    if name in DATASETS and not Path(s).exists():
        return _embedded(name, rest, preprocess, n, seed, dict(dataset_params or {}), limit)
    if name == "photos" and not Path(s).exists():
        return _photos([p.strip() for p in rest.split(",") if p.strip()], pre_files, n, limit)
    lazy = open_images(s, pre_files, classes=classes, masks=masks)
    if lazy is not None:
        what = s if lazy.name.startswith("waterbirds") else f"class folder {Path(s).expanduser()}"
        return lazy.load(_check_n(n, len(lazy), what, limit))
    return _files([s], pre_files, n, limit)


def is_embedded(spec: str | os.PathLike | Sequence[str | os.PathLike]) -> bool:
    """Whether ``spec`` names an embedded dataset (``NAME`` or ``NAME:SPLIT``)."""
    from xgir.data import DATASETS

    if isinstance(spec, (list, tuple)):
        if len(spec) != 1:
            return False
        spec = spec[0]
    s = str(spec)
    return s.partition(":")[0] in DATASETS and not Path(s).exists()


__all__ = ["PHOTOS", "load_images", "open_images", "photo", "read_image", "spec_forms"]
