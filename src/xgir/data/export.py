"""A shift benchmark written to disk as a user's data (``xgir data export``, ``xgir data shift``).

One folder DIR, written as a set (:func:`xgir.io.run_folder`), in two formats at once:

- **class folders**, every split: ``DIR/<split>/<class>/<k>-<object>-<scene>.png`` (an image
  spec of every command: ``data.train`` of ``xgir train``, ``data.source_train`` ... of
  ``xgir correct``);
- **the Waterbirds format** (:mod:`xgir.data.waterbirds`) over the same files: ``DIR/metadata.csv``
  (``img_id, img_filename, y, split, place, place_filename``; ``img_filename`` the class-folder
  path) and ``DIR/segmentations/<split>/<class>/<same name>.png`` (grey 255 = the object), so
  that ``DIR:train``, ``DIR:val``, ``DIR:test`` carry groups (worst-group accuracy) and masks.
  Only for two classes and two places, each class aligned with its own place: ``y`` is the class
  index and ``place`` the index of the class whose place it is, so ``y == place`` on the
  majority groups, as Waterbirds' (waterbird, water). Waterbirds has three splits (0 train,
  1 val, 2 test): the shift's ``source-train`` is ``train`` and the place-balanced
  ``target-val`` and ``target-test`` are ``val`` and ``test`` (Waterbirds' val and test
  balance the places too); ``source-val`` and ``source-test`` are class folders only.

Also ``DIR/images.csv`` (every image of every split: file, split, y, class, group, place,
place name, object, scene) and ``DIR/export.json`` (what was written and the specs to use).
Splits are rendered and written in chunks of :data:`CHUNK` images, never held whole.
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from xgir.data.base import ImageDataset
from xgir.errors import XgirError

CHUNK = 128  # images rendered and written at a time
WATERBIRDS_MAP = {"source-train": "train", "target-val": "val", "target-test": "test"}
"""Shift split -> Waterbirds split (``split`` column 0, 1, 2)."""
SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
SHIFT_SPLITS = ("source-train", "source-val", "source-test", "target-val", "target-test")


@dataclass(frozen=True)
class ExportSplit:
    """One split to write: its ``name``, image count ``n`` and ``chunks()``, the datasets of
    consecutive chunks (labels, optional masks, ``extras["place"]`` / ``object`` / ``scene``)."""

    name: str
    n: int
    chunks: Callable[[], Iterator[ImageDataset]]


@dataclass(frozen=True)
class Layout:
    """Names of what is written: ``classes`` (label order), ``places`` (``extras["place"]``
    values, or None), ``place_code`` (place index -> Waterbirds place 0/1, or None: no
    metadata.csv), ``objects`` / ``scenes`` (names of ``extras["object"]`` / ``["scene"]``)."""

    classes: tuple[str, ...]
    places: tuple[str, ...] | None = None
    place_code: tuple[int, ...] | None = None
    objects: tuple[str, ...] = ()
    scenes: tuple[str, ...] = ()


def waterbirds_place_code(classes: Sequence[str], places: Sequence[str], aligned_place: Sequence[int]
                          ) -> tuple[tuple[int, ...] | None, str]:
    """Place index -> Waterbirds place (the index of the class aligned with it), or None with the
    reason when the shift is not two classes each aligned with its own of two places."""
    if len(classes) != 2 or len(places) != 2:
        return None, (f"the Waterbirds format has 2 classes and 2 places; this shift has {len(classes)} and "
                      f"{len(places)}: class folders only")
    if sorted(aligned_place) != [0, 1]:
        return None, "the Waterbirds format needs each class aligned with its own place: class folders only"
    code = [0, 0]
    for c, q in enumerate(aligned_place):
        code[q] = c
    return tuple(code), ""


def split_sizes(splits: Sequence[str], defaults: dict[str, int] | None, n: int | None,
                n_per_split: dict[str, int]) -> dict[str, int | None]:
    """Images per split: ``n_per_split[s]``, else ``n``, else ``defaults[s]`` (None: the
    dataset's own size); one line for an unknown split or a count below 1."""
    unknown = [s for s in n_per_split if s not in splits]
    if unknown:
        raise XgirError(f"--n-per-split: unknown split '{unknown[0]}'; the splits are {', '.join(splits)}")
    sizes = {s: n_per_split.get(s, n if n is not None else (defaults or {}).get(s)) for s in splits}
    bad = [s for s, k in sizes.items() if k is not None and k < 1]
    if bad:
        raise XgirError(f"split {bad[0]}: give at least 1 image, got {sizes[bad[0]]}")
    return sizes


def parse_pairs(text: str | None, option: str, value: Callable[[str], Any] = str) -> dict[str, Any]:
    """``"a=1,b=2"`` -> ``{"a": value("1"), "b": value("2")}``; one line naming ``option`` for a
    malformed item or a key given twice."""
    out: dict[str, Any] = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        key, sep, val = item.partition("=")
        key, val = key.strip(), val.strip()
        if not sep or not key or not val:
            raise XgirError(f"{option} expects NAME=VALUE,NAME=VALUE, got '{item.strip()}'")
        if key in out:
            raise XgirError(f"{option} gives '{key}' twice")
        try:
            out[key] = value(val)
        except ValueError:
            what = {"int": "a whole number", "float": "a number"}.get(getattr(value, "__name__", ""), "valid")
            raise XgirError(f"{option} {key}={val}: not {what}") from None
    return out


def _safe(name: str) -> str:
    """A file-name-safe form of ``name`` (letters, digits, ``-``, ``_``, ``.``)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "x"


def _folder_names(classes: Sequence[str]) -> list[str]:
    names = [_safe(c) for c in classes]
    if len(set(names)) != len(names):
        raise XgirError(f"the classes {', '.join(classes)} do not give distinct folder names")
    return names


def _png(array: np.ndarray, path: Path) -> None:
    from PIL import Image

    Image.fromarray(array).save(path, format="PNG", compress_level=1)


def _to_uint8(image: torch.Tensor) -> np.ndarray:
    """float[C,H,W] in [0, 1] -> uint8[H,W,3] or uint8[H,W] (one channel)."""
    arr = (image.clamp(0, 1) * 255).round().to(torch.uint8)
    return arr[0].numpy() if arr.shape[0] == 1 else arr.permute(1, 2, 0).numpy()


def write_export(out: str | os.PathLike, splits: Sequence[ExportSplit], layout: Layout, meta: dict[str, Any], *,
                 progress: bool = True) -> dict[str, Any]:
    """Write ``splits`` into the folder ``out`` (module docstring), as a set; returns (and
    writes as ``export.json``) ``meta`` with what was written."""
    from xgir.io import check_output_folder, run_folder, write_json, write_text
    from xgir.progress import Progress

    check_output_folder(out, "--out")  # before any rendering
    folders = _folder_names(layout.classes)
    waterbirds = layout.place_code is not None
    rows: list[list[Any]] = []
    meta_rows: list[list[Any]] = []
    summary: dict[str, dict[str, Any]] = {}
    with run_folder(out, "--out") as tmp, Progress(total=sum(s.n for s in splits), desc="export",
                                                    enabled=progress, unit="image") as bar:
        for split in splits:
            wb = WATERBIRDS_MAP.get(split.name) if waterbirds else None
            counts: dict[str, int] = {}
            k = 0
            for folder in folders:  # every class, even one this split has no image of: labels by name agree
                (tmp / split.name / folder).mkdir(parents=True, exist_ok=True)
            for ds in split.chunks():
                for i in range(len(ds)):
                    rel, row = _write_one(tmp, split.name, k, ds, i, layout, folders)
                    rows.append(row)
                    counts[row[4] or row[3]] = counts.get(row[4] or row[3], 0) + 1
                    if wb is not None and layout.place_code is not None:
                        place = layout.place_code[int(ds.extras["place"][i])]
                        meta_rows.append([len(meta_rows) + 1, rel, int(ds.labels[i]), SPLIT_CODES[wb], place, row[8]])
                    k += 1
                bar.update(len(ds))
            summary[split.name] = {"images": k, "folder": split.name, "waterbirds_split": wb,
                                   "per_group" if layout.places else "per_class": dict(sorted(counts.items()))}
        write_text(tmp / "images.csv", _csv(["img_filename", "split", "y", "class", "group", "place",
                                              "place_name", "object", "scene"], rows))
        if waterbirds:
            write_text(tmp / "metadata.csv", _csv(["img_id", "img_filename", "y", "split", "place",
                                                   "place_filename"], meta_rows))
        result = {**meta, "classes": list(layout.classes), "class_folders": folders,
                  "places": list(layout.places) if layout.places else None, "splits": summary,
                  "waterbirds": _waterbirds_note(layout, out) if waterbirds else None}
        write_json(tmp / "export.json", result)
    return result


def _write_one(tmp: Path, split: str, k: int, ds: ImageDataset, i: int, layout: Layout,
               folders: list[str]) -> tuple[str, list[Any]]:
    """Write image i of ``ds`` (and its mask) as image ``k`` of ``split``; its path relative to
    the folder and its images.csv row."""
    y = int(ds.labels[i])
    ex = {key: int(v[i]) for key, v in ds.extras.items() if key in ("place", "object", "scene")}
    obj = layout.objects[ex["object"]] if "object" in ex and layout.objects else ""
    scene = layout.scenes[ex["scene"]] if "scene" in ex and layout.scenes else ""
    stem = f"{k:05d}" + "".join(f"-{_safe(s)}" for s in (obj, scene) if s)
    rel = f"{split}/{folders[y]}/{stem}.png"
    (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
    _png(_to_uint8(ds.images[i]), tmp / rel)
    if ds.masks is not None:
        mask_path = tmp / "segmentations" / rel
        mask_path.parent.mkdir(parents=True, exist_ok=True)
        _png(ds.masks[i].numpy().astype(np.uint8) * 255, mask_path)
    place = ex.get("place")
    place_name = layout.places[place] if place is not None and layout.places else ""
    group = f"{layout.classes[y]}/{place_name}" if place_name else ""
    return rel, [rel, split, y, layout.classes[y], group, "" if place is None else place, place_name, obj, scene]


def _csv(header: list[str], rows: list[list[Any]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def _waterbirds_note(layout: Layout, out: str | os.PathLike) -> dict[str, Any]:
    assert layout.places is not None and layout.place_code is not None
    return {"splits": dict(WATERBIRDS_MAP), "y": {str(c): name for c, name in enumerate(layout.classes)},
            "place": {str(layout.place_code[q]): name for q, name in enumerate(layout.places)},
            "specs": {wb: f"{out}:{wb}" for wb in WATERBIRDS_MAP.values()},
            "note": "the Waterbirds reader names the classes landbird (y 0) and waterbird (y 1) and the places "
                    "land (0) and water (1), whatever they are here; the class folders keep the names"}


# ---- what is exported ---------------------------------------------------------------------------
def export_dataset(name: str, out: str | os.PathLike, *, seed: int = 0, n: int | None = None,
                   n_per_split: dict[str, int] | None = None, params: dict[str, Any] | None = None,
                   progress: bool = True) -> dict[str, Any]:
    """Write the registered dataset ``name`` (every split) into ``out`` (module docstring):
    waterbirds-photos in both formats, the other datasets as class folders (with their masks)."""
    from xgir.data import DATASETS, dataset_splits, load_dataset

    if name not in DATASETS:
        raise XgirError(f"unknown dataset '{name}'; choose one of: {', '.join(DATASETS)}")
    params = dict(params or {})
    splits_all = dataset_splits(name)
    if name == "waterbirds-photos":
        from xgir.data.waterbirds_photos import SIZES, waterbirds_photos_draws

        sizes = split_sizes(splits_all, SIZES, n, n_per_split or {})
        unknown = sorted(set(params) - {"p", "size", "backgrounds", "waterbird_share", "birds_root"})
        if unknown:
            raise XgirError(f"unknown parameter(s) {', '.join(unknown)} for dataset 'waterbirds-photos'")
        draws = {s: waterbirds_photos_draws(s, seed=seed, n=k, **params) for s, k in sizes.items()}
        first = next(iter(draws.values()))
        spec = first.spec
        layout = Layout(spec.classes, spec.places, (0, 1), tuple(c.name for c in spec.cutouts),
                        tuple(sc.name for sc in spec.scenes))
        return write_export(out, [ExportSplit(s, len(d), _draw_chunks(d)) for s, d in draws.items()], layout,
                            {"dataset": name, "seed": seed, "params": params}, progress=progress)
    given = split_sizes(splits_all, None, n, n_per_split or {})
    loaded = {s: load_dataset(name, s, seed=seed, **params, **({"n": k} if k is not None else {}))
              for s, k in given.items()}
    first_ds = next(iter(loaded.values()))
    if first_ds.no_labels:
        raise XgirError(f"dataset '{name}' has no labels; xgir data export writes labelled datasets")
    layout = Layout(tuple(first_ds.classes) or tuple(str(i) for i in range(int(first_ds.labels.max()) + 1)))
    return write_export(out, [ExportSplit(s, len(ds), _subset_chunks(ds)) for s, ds in loaded.items()], layout,
                        {"dataset": name, "seed": seed, "params": params}, progress=progress)


def export_shift(objects: str | os.PathLike, places: str | os.PathLike, align: dict[str, str],
                 out: str | os.PathLike, *, p: float = 0.95, size: int = 224, seed: int = 0, n: int | None = None,
                 n_per_split: dict[str, int] | None = None, progress: bool = True) -> dict[str, Any]:
    """A shift benchmark from a user's cut-outs and background photographs
    (:func:`xgir.data.cutouts.folder_spec`), written into ``out``: ``source-*`` splits with the
    class's aligned place at probability ``p``, ``target-*`` with places balanced and independent
    of the class, classes balanced in every split; sizes as waterbirds-photos' by default."""
    from xgir.data.cutouts import draw_split, folder_spec
    from xgir.data.waterbirds_photos import SIZES

    if not 0.0 <= p <= 1.0:
        raise XgirError(f"--p must be a probability in [0, 1], got {p}")
    if not 8 <= size <= 2048:
        raise XgirError(f"--size must be between 8 and 2048 px, got {size}")
    sizes = split_sizes(SHIFT_SPLITS, SIZES, n, n_per_split or {})
    spec = folder_spec(objects, places, align)
    draws = [draw_split(spec, k or SIZES[s], p if s.startswith("source") else None, size=size, seed=seed,
                        salt=f"shift/{s}", name=f"shift/{s}") for s, k in sizes.items()]
    code, why = waterbirds_place_code(spec.classes, spec.places, spec.aligned_place)
    layout = Layout(spec.classes, spec.places, code, tuple(c.name for c in spec.cutouts),
                    tuple(sc.name for sc in spec.scenes))
    meta = {"dataset": "shift", "objects": str(objects), "places_folder": str(places),
            "align": dict(align), "p": p, "size": size, "seed": seed,
            **({"waterbirds_format": why} if code is None else {})}
    return write_export(out, [ExportSplit(s, len(d), _draw_chunks(d)) for s, d in zip(sizes, draws, strict=True)],
                        layout, meta, progress=progress)


def _draw_chunks(draws: Any) -> Callable[[], Iterator[ImageDataset]]:
    def chunks() -> Iterator[ImageDataset]:
        for start in range(0, len(draws), CHUNK):
            yield draws.dataset(start, min(start + CHUNK, len(draws)))
    return chunks


def _subset_chunks(ds: ImageDataset) -> Callable[[], Iterator[ImageDataset]]:
    def chunks() -> Iterator[ImageDataset]:
        for start in range(0, len(ds), CHUNK):
            yield ds.subset(slice(start, start + CHUNK))
    return chunks
