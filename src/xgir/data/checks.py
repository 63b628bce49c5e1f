"""Checks of labelled image splits named in a config (``xgir correct``, ``xgir train``): the
class folders of every split match one class list, no training class is empty, and a split
is opened with its errors named by its config key (``data.KEY: ...``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from xgir.data.base import ImageDataset
from xgir.data.real import ImageFolderDataset, LazyImageDataset
from xgir.data.transforms import Preprocess
from xgir.errors import XgirError, warn


def check_class_folders(root: str | Path, classes: list[str], key: str, hint: str) -> None:
    """The class folders in ``root`` must be exactly ``classes``: a folder missing, a folder that
    is not a class (or differs from one only in case) is an XgirError naming them and ``hint``."""
    root = Path(root)
    if not root.is_dir():
        return  # ImageFolderDataset says "image folder not found"
    found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    missing = [c for c in classes if c not in found]
    extra = [f for f in found if f not in set(classes)]
    if not missing and not extra:
        return

    def names(items: list[str]) -> str:
        return ", ".join(items[:8]) + (f" and {len(items) - 8} more" if len(items) > 8 else "")

    lower = {c.lower(): c for c in missing}
    case = [f"'{f}' vs '{lower[f.lower()]}'" for f in extra if f.lower() in lower]
    parts = []
    if case:
        parts.append(f"folder names differ from the classes only in case ({names(case)})")
    if missing:
        parts.append(f"no folder for class{'es' if len(missing) > 1 else ''} {names(missing)}")
    if extra:
        parts.append(f"folder{'s' if len(extra) > 1 else ''} {names(extra)} not among the classes")
    raise XgirError(f"data.{key}: class folders in {root} do not match the classes: "
                    f"{'; '.join(parts)}; {hint}")


def check_class_counts(ds: LazyImageDataset | ImageDataset, key: str, required: bool) -> None:
    """An empty class: an error when ``required`` (training: the head would lose that class),
    else a warning line."""
    counts = torch.bincount(ds.labels.clamp(min=0), minlength=ds.num_classes).tolist()
    empty = [c for c, n in zip(ds.classes, counts, strict=True) if n == 0]
    if not empty:
        return
    names = [str(ds.root / c) if isinstance(ds, ImageFolderDataset) else f"{c} of {ds.name}" for c in empty[:8]]
    where = ", ".join(names) + (f" and {len(empty) - 8} more" if len(empty) > 8 else "")
    kind = "class folder" if isinstance(ds, ImageFolderDataset) else "class"
    if required:
        raise XgirError(f"data.{key}: {kind}{'s' if len(empty) > 1 else ''} {where} "
                        "hold no images; every class needs training images")
    warn(f"data.{key}: empty {kind}{'s' if len(empty) > 1 else ''} {where}")


def open_split(spec: str, key: str, preprocess: Preprocess, classes: list[str] | None, hint: str, *,
               in_memory: bool = False) -> LazyImageDataset | ImageDataset:
    """The split ``data.KEY`` names: a class folder (its folders checked against ``classes``
    when given: :func:`check_class_folders`, with ``hint``) or a Waterbirds ``ROOT[:SPLIT]``,
    read lazily without masks; with ``in_memory``, any other labelled image spec (an embedded
    dataset) read by :func:`~xgir.data.images.load_images`, its classes equal to ``classes``
    when given. Errors are one line starting ``data.KEY:``."""
    from xgir.data.images import load_images, open_images
    from xgir.data.waterbirds import parse_spec

    ds: Any
    try:
        if classes is not None and parse_spec(spec) is None:
            check_class_folders(spec, classes, key, hint)
        ds = open_images(spec, preprocess, classes=classes, masks=False)
        if ds is None:
            ds = load_images(spec, preprocess) if in_memory else ImageFolderDataset(spec, preprocess=preprocess)
    except XgirError as err:
        msg = str(err)
        raise XgirError(msg if msg.startswith("data.") else f"data.{key}: {msg}") from None
    if bool((ds.labels < 0).any()):
        raise XgirError(f"data.{key}: '{spec}' names images without labels; give class folders "
                        "root/<class>/<image>, a Waterbirds folder ROOT:SPLIT or an embedded dataset NAME:SPLIT")
    if classes is not None and list(ds.classes) != list(classes):
        raise XgirError(f"data.{key}: the classes of '{spec}' ({', '.join(ds.classes[:8])}) are not "
                        f"{', '.join(classes[:8])}; {hint}")
    return ds
