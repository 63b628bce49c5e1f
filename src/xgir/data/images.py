"""One way to name images: :func:`load_images`.

Accepted forms of ``spec`` (a string, or a list of strings for files and globs):

- an embedded dataset and split: ``decoy-digits:test``, ``background-shift:target-test``
  (``decoy-digits`` alone: its first split);
- the bundled photos (scikit-image photos that ship with the package, no download):
  ``photos`` (all of :data:`PHOTOS`) or ``photos:chelsea,coffee``;
- a Waterbirds folder (:mod:`xgir.data.waterbirds`: a folder holding ``metadata.csv``):
  ``ROOT`` (every image) or ``ROOT:train``, ``ROOT:val``, ``ROOT:test`` (the split follows
  the LAST colon; labels landbird / waterbird, groups, places, masks when present);
- a class folder in the ImageNet layout, ``root/<class>/<image>``: labels are the model's classes
  named by the folders (``tabby``, or ImageNet's synset ``n02123045``; ``0``..``K-1`` with
  ``class_folders="index"``), see :func:`folder_labels`; without ``model_classes``, folder order;
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
from typing import Any, Literal

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
    """Open an image file as a PIL image (loaded, file closed); one line if unreadable or larger
    than PIL's ``Image.MAX_IMAGE_PIXELS`` (about 89 million pixels: a decompression bomb, or a
    photo far larger than any classifier's input)."""
    import warnings

    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.load()
                return img
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        limit = Image.MAX_IMAGE_PIXELS or 0
        raise XgirError(f"image {path} has more than {limit / 1e6:.0f} million pixels, the most xgir reads "
                        "(PIL's decompression-bomb limit); downscale it") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise XgirError(f"cannot read image {path}: {err}") from None


def check_n(n: int | None, available: int, what: str, limit: int | None = None) -> int:
    """How many of ``available`` images to take: ``n`` (more than there are is an XgirError naming
    ``what``), or with ``n`` None all of them, at most ``limit``."""
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
    count = check_n(n, len(ds), f"{name}:{split}", limit)
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
    names = names[:check_n(n, len(names), "photos", limit)]
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
    files = files[:check_n(n, len(files), "the image files", limit)]
    images = _stack([read_image(f) for f in files], preprocess)
    return ImageDataset(images, torch.full((len(files),), UNLABELLED), classes=[], name="files",
                        files=[str(f) for f in files])


ClassFolders = Literal["names", "index"]


def _norm(name: str) -> str:
    return " ".join(name.replace("_", " ").replace("-", " ").lower().split())


def folder_labels(folders: Sequence[str], classes: Sequence[str], how: ClassFolders = "names") -> list[int]:
    """The model's class index of each class folder, for a model whose K output classes are
    ``classes``; XgirError (one line) saying why when they cannot be told.

    ``how="names"``: a folder is named as one of the classes (case, ``_`` and ``-`` aside), or,
    for an ImageNet-1k model, by the class's WordNet synset (``n01440764``, ImageNet's layout). A
    model without class names (classes ``0``..``K-1``) takes folders named by index, else the
    folders in sorted order (torchvision's ImageFolder convention). ``how="index"``: folders are
    named ``0``..``K-1`` (ImageNet-V2's layout).

    >>> folder_labels(["tabby", "Egyptian_cat"], ["tench", "tabby", "Egyptian cat"])
    [1, 2]
    >>> folder_labels(["cat", "dog"], ["0", "1", "2"])
    [0, 1]
    """
    k = len(classes)
    if how == "index":
        bad = [f for f in folders if not (f.isdigit() and int(f) < k)]
        if bad:
            raise XgirError(f"class folders {_some(bad)} are not class indices 0..{k - 1} (class_folders: index)")
        return [int(f) for f in folders]
    if how != "names":
        raise XgirError(f"class_folders must be names or index, got '{how}'")
    table: dict[str, int | None] = {}
    for i, name in enumerate(classes):
        key = _norm(name)
        table[key] = None if key in table else i  # a name shared by two classes tells neither
    imagenet = _imagenet_synsets(classes)
    table.update({s.lower(): i for i, s in enumerate(imagenet)})
    found = [table.get(_norm(f)) for f in folders]
    if all(i is not None for i in found):
        return [int(i) for i in found if i is not None]
    nameless = list(classes) == [str(i) for i in range(k)]
    if nameless and len(folders) <= k:
        return list(range(len(folders)))
    bad = [f for f, i in zip(folders, found, strict=True) if i is None]
    if nameless:
        raise XgirError(f"{len(folders)} class folders but the model has {k} classes, so the folders "
                          "cannot be its classes")
    forms = "its class names" + (" or ImageNet synsets (n01440764)" if imagenet else "")
    raise XgirError(f"class folders {_some(bad)} do not name one of the model's classes ({_some(list(classes), 3)}); "
                    f"name the folders by {forms}, or 0..{k - 1} with class_folders index")


def _some(items: list[str], shown: int = 5) -> str:
    return ", ".join(items[:shown]) + (f" and {len(items) - shown} more" if len(items) > shown else "")


def _imagenet_synsets(classes: Sequence[str]) -> list[str]:
    """ImageNet-1k's synsets in label order when ``classes`` are its class names, else []."""
    if len(classes) != 1000:
        return []
    from xgir.data.imagenet import imagenet_class_names, imagenet_synsets

    return imagenet_synsets() if list(classes) == imagenet_class_names() else []


def _label_by_model(ds: ImageDataset, classes: Sequence[str], how: ClassFolders) -> ImageDataset:
    """A class folder's images labelled by the model's classes (:func:`folder_labels`); labels
    -1 and the reason in ``ds.no_labels`` when the folders do not name them."""
    try:
        index = torch.tensor(folder_labels(ds.classes, classes, how), dtype=torch.long)
    except XgirError as err:
        ds.labels = torch.full_like(ds.labels, UNLABELLED)
        ds.no_labels = str(err)
        return ds
    ds.labels = index[ds.labels]
    ds.classes = list(classes)
    return ds


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
                limit: int | None = None, masks: bool | str | os.PathLike = True,
                model_classes: Sequence[str] | None = None, class_folders: ClassFolders = "names") -> ImageDataset:
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
        model_classes: the class names of the model the images are for: a class folder's labels
            are these classes as the folders name them (:func:`folder_labels`, ``class_folders``
            saying how); when they do not, labels are -1 and ``no_labels`` says why.
    Returns:
        ImageDataset: ``images`` float[N,C,S,S] in [0, 1], ``labels`` long[N] (-1 when
        unknown), ``masks`` where the source has them, ``files`` the file or photo names;
        Waterbirds also ``groups``, ``group_names`` and ``extras["place"]``.
    """
    from xgir.data import DATASETS

    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise XgirError(f"limit must be a whole number >= 1 (or None: no limit), got {limit!r}")
    if class_folders not in ("names", "index"):
        raise XgirError(f"class_folders must be names or index, got '{class_folders}'")
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
        is_waterbirds = lazy.name.startswith("waterbirds")
        what = s if is_waterbirds else f"class folder {Path(s).expanduser()}"
        ds = lazy.load(check_n(n, len(lazy), what, limit))
        if is_waterbirds or model_classes is None or classes is not None:
            return ds
        return _label_by_model(ds, model_classes, class_folders)
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


__all__ = ["PHOTOS", "folder_labels", "load_images", "open_images", "photo", "read_image", "spec_forms"]
