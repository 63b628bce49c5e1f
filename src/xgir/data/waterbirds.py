"""Waterbirds (Sagawa et al. 2020) read from its standard folder, lazily.

The folder (e.g. ``waterbird_complete95_forest2water2``) holds ``metadata.csv`` with the
columns ``img_filename, y, split, place`` (``img_id`` and ``place_filename`` are read past):
``y`` 1 = waterbird, ``place`` 1 = water, ``split`` 0 = train, 1 = val, 2 = test, and the
images at the relative paths ``img_filename``. Optional masks: CUB's segmentations, one grey
PNG per image at ``<mask root>/<img_filename with .png>`` (grey > 0 = the bird); the mask root
defaults to the folder ``segmentations`` inside the root when there is one.

As an image spec (:func:`xgir.data.images.load_images`): ``ROOT`` (every row) or
``ROOT:train``, ``ROOT:val``, ``ROOT:test``, where ROOT is a folder holding ``metadata.csv``;
the split is what follows the last colon.

Labels y (classes ``landbird``, ``waterbird``); groups ``2 y + place`` (:data:`GROUP_NAMES`);
``extras["place"]`` long[N].
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import torch

from xgir.data.real import LazyImageDataset
from xgir.data.transforms import Fit, Preprocess
from xgir.errors import XgirError

METADATA = "metadata.csv"
SPLITS = {"train": 0, "val": 1, "test": 2}
CLASSES = ["landbird", "waterbird"]
PLACES = ["land", "water"]
GROUP_NAMES = [f"{c}/{p}" for c in CLASSES for p in PLACES]
"""Group ``2 y + place``: landbird/land, landbird/water, waterbird/land, waterbird/water."""
COLUMNS = ("img_filename", "y", "split", "place")
_RANGES = {"y": (0, 1, "0 (landbird) or 1 (waterbird)"), "place": (0, 1, "0 (land) or 1 (water)"),
           "split": (0, 2, "0 (train), 1 (val) or 2 (test)")}


def is_waterbirds(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder holding ``metadata.csv``."""
    p = Path(path).expanduser()
    return p.is_dir() and (p / METADATA).is_file()


def parse_spec(spec: str) -> tuple[Path, str | None] | None:
    """``(root, split)`` of a Waterbirds spec (``ROOT`` -> split None, ``ROOT:SPLIT``), or None
    when ``spec`` names no folder holding ``metadata.csv``. The split is not checked here."""
    if is_waterbirds(spec):
        return Path(spec).expanduser(), None
    root, sep, split = spec.rpartition(":")
    if sep and root and is_waterbirds(root):
        return Path(root).expanduser(), split
    return None


def read_metadata(root: Path) -> list[dict[str, str]]:
    """The rows of ``root/metadata.csv`` (each with its ``line`` number), the four columns
    present and ``y``, ``place``, ``split`` whole numbers in range; one line per problem."""
    path = root / METADATA
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            header = [h.strip() for h in (reader.fieldnames or [])]
            reader.fieldnames = header
            rows = [{**{k: (v or "").strip() for k, v in row.items() if k is not None}, "line": str(n)}
                    for n, row in enumerate(reader, start=2)]
    except UnicodeDecodeError:
        raise XgirError(f"{path} is not a text file (not UTF-8); a Waterbirds metadata.csv is CSV text") from None
    except (OSError, csv.Error) as err:
        raise XgirError(f"cannot read {path}: {err}") from None
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise XgirError(f"{path} lacks the column{'s' if len(missing) > 1 else ''} {', '.join(missing)} (found: "
                        f"{', '.join(header) or 'none'}); a Waterbirds metadata.csv has img_id, img_filename, y, "
                        "split, place, place_filename")
    if not rows:
        raise XgirError(f"{path} has a header but no rows; it must list the images")
    for row in rows:
        if not row["img_filename"]:
            raise XgirError(f"{path} line {row['line']}: img_filename is empty; give the image's path under {root}")
        for col, (low, high, allowed) in _RANGES.items():
            value = row[col]
            if not (value.isdigit() and low <= int(value) <= high):
                raise XgirError(f"{path} line {row['line']}: {col} is '{value}'; it must be {allowed}")
    return rows


class WaterbirdsDataset(LazyImageDataset):
    """The images of a Waterbirds folder (see the module docstring), read lazily.

    Args:
        root: the folder holding ``metadata.csv``.
        split: ``train``, ``val``, ``test`` or None (every row).
        preprocess: how each image becomes a tensor (default ``Preprocess(size, fit=fit)``).
        masks: True: the folder ``root/segmentations`` when it exists (else no masks); False:
            no masks; a path: the mask root (it must exist).
    Every selected image (and mask) must exist: the constructor checks, one line naming the
    first missing file. Items: ``image``, ``label`` (y), ``group`` (2 y + place), ``place``,
    ``mask`` (bool[S,S]) when there are masks.
    """

    mask_threshold = 0

    def __init__(self, root: str | os.PathLike, split: str | None = None, *, preprocess: Preprocess | None = None,
                 size: int = 224, fit: Fit = "crop", masks: bool | str | os.PathLike = True) -> None:
        super().__init__()
        self.root = Path(root).expanduser()
        if not is_waterbirds(self.root):
            raise XgirError(f"{self.root} is not a Waterbirds folder (no {METADATA} in it)")
        where = f"{self.root}:{split}" if split is not None else str(self.root)
        if split is not None and split not in SPLITS:
            raise XgirError(f"unknown Waterbirds split '{split}' in '{where}'; choose train, val or test "
                            f"({self.root} alone reads every image)")
        rows = read_metadata(self.root)
        if split is not None:
            rows = [r for r in rows if int(r["split"]) == SPLITS[split]]
            if not rows:
                raise XgirError(f"'{where}' selects no images: {self.root / METADATA} has no row with split "
                                f"{SPLITS[split]} ({split})")
        self.split = split
        self.files = [self.root / r["img_filename"] for r in rows]
        _check_exist(self.files, rows, f"{self.root / METADATA} names {{count}} missing from {self.root} "
                     f"({{first}}); check that {self.root} is the whole Waterbirds folder (img_filename is "
                     "relative to it)")
        self.preprocess = preprocess if preprocess is not None else Preprocess(size, fit=fit)
        self.mask_root = _mask_root(self.root, masks)
        self.has_masks = self.mask_root is not None
        if self.mask_root is not None:
            self.mask_files = [self.mask_root / Path(r["img_filename"]).with_suffix(".png") for r in rows]
            _check_exist(self.mask_files, rows, f"'{where}' has {{count}} without a mask in {self.mask_root} "
                         "({first}; CUB's segmentations: <mask root>/<img_filename with .png>); give the right mask "
                         "folder, or masks=False to read no masks")
        y = torch.tensor([int(r["y"]) for r in rows], dtype=torch.long)
        place = torch.tensor([int(r["place"]) for r in rows], dtype=torch.long)
        self.labels, self.classes = y, list(CLASSES)
        self.groups, self.group_names = 2 * y + place, list(GROUP_NAMES)
        self.extras = {"place": place}
        self.name = f"waterbirds:{split}" if split is not None else "waterbirds"

    def _mask_file(self, i: int) -> Path | None:
        return self.mask_files[i] if self.mask_root is not None else None


def _mask_root(root: Path, masks: bool | str | os.PathLike) -> Path | None:
    if masks is False:
        return None
    if masks is True:
        default = root / "segmentations"
        return default if default.is_dir() else None
    path = Path(masks).expanduser()
    if not path.is_dir():
        raise XgirError(f"Waterbirds mask folder not found: {path}")
    return path


def _check_exist(files: list[Path], rows: list[dict[str, str]], message: str) -> None:
    """XgirError ``message`` (with ``{count}`` and ``{first}`` filled in) when a file is missing."""
    missing = [(f, r) for f, r in zip(files, rows, strict=True) if not f.is_file()]
    if missing:
        f, r = missing[0]
        count = f"{len(missing)} image{'s' if len(missing) > 1 else ''}"
        first = f"first: metadata.csv line {r['line']}, {f}"
        raise XgirError(message.replace("{count}", count).replace("{first}", first))
