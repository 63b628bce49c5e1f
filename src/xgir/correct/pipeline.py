"""XGIR on a user's model and ImageFolder data, driven by a YAML config (``xgir correct``).

Usage: write a config (see ``configs/xgir-imagefolder.yaml``) naming the model factory as
``"package.module:function"`` (called with ``model.kwargs``; optional ``model.weights``, a
state_dict / checkpoint ``.pt`` or ``.safetensors``), its linear head (``fc``) and Grad-CAM
layer(s), and three folders ``root/<class>/<image>`` (source train, source test, target
test; optional target val). Then ``xgir correct --config FILE.yaml`` or, in Python,
``run_xgir_pipeline(load_config(path, XGIRRunConfig))``. Images are resized to
``image_size`` and read in [0, 1]; ``data.normalize`` is applied inside a wrapper module,
so heatmaps, supports and the empty image x0 live in image space (x0 = "zeros" is black).
Everything runs batch by batch: only the features h and responses r [N,D] of source train
(and the features of the test splits) are held in memory; cap N with ``data.max_images``.
Writes results.json, report.md, xgir_model.pt (state_dict of the unwrapped model, head
replaced) and heatmaps.png to ``out``.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, PositiveInt, field_validator, model_validator
from torch import nn
from torch.utils.data import DataLoader, Subset, default_collate

from xgir.config import StrictModel
from xgir.correct.xgir import (
    XGIRConfig,
    cwox_true_cluster_heatmaps,
    empty_images,
    frozen_copy,
    retrain_head,
    support_from_heatmaps,
    true_class_heatmaps,
    unit_responses,
)
from xgir.data.real import ImageFolderDataset
from xgir.errors import XgirError, warn
from xgir.explain.clusters import ConfusionTree, top_label_sets
from xgir.io import check_output_folder, run_folder, torch_save, write_json, write_text
from xgir.models.load import import_factory, load_weights
from xgir.models.split import get_module, split
from xgir.progress import iterate

SPLITS = ("source_train", "source_test", "target_val", "target_test")


class ModelSection(StrictModel):
    factory: str  # "package.module:function" returning an nn.Module
    kwargs: dict[str, Any] = Field(default_factory=dict)
    weights: str | None = None  # .pt / .pth (state_dict or {"state_dict": ...}) or .safetensors
    head: str = "fc"
    deep_layer: str = "layer4"
    shallow_layer: str | None = None  # needed for explainer: cwox

    @field_validator("factory")
    @classmethod
    def _factory_form(cls, v: str) -> str:
        mod, sep, attr = v.partition(":")
        if not sep or not mod.strip() or not attr.strip() or ":" in attr:
            raise ValueError(f"model.factory must look like 'package.module:function', got '{v}'")
        return v


class NormalizeSection(StrictModel):
    mean: list[float]
    std: list[float]

    @model_validator(mode="after")
    def _same_length(self) -> NormalizeSection:
        if len(self.mean) != len(self.std) or not self.mean:
            raise ValueError("normalize.mean and normalize.std need the same (non-zero) number of values")
        if any(s <= 0 for s in self.std):
            raise ValueError("normalize.std values must be positive")
        return self


class MaxImages(StrictModel):
    source_train: int | None = Field(None, gt=0)
    source_test: int | None = Field(None, gt=0)
    target_val: int | None = Field(None, gt=0)
    target_test: int | None = Field(None, gt=0)


class DataSection(StrictModel):
    source_train: str
    source_test: str
    target_test: str
    target_val: str | None = None
    image_size: int = Field(224, gt=0)
    classes: list[str] | None = None  # source class folders in label order (default: sorted)
    # target class folders in label order: default the source's; "index" = folders 0..K-1
    # (ImageNet-V2's layout); or a list
    target_classes: list[str] | Literal["index"] | None = None
    normalize: NormalizeSection | None = None
    max_images: PositiveInt | MaxImages | None = None  # one cap for every split, or per split
    batch_size: int = Field(64, gt=0)
    workers: int = Field(0, ge=0)  # DataLoader worker processes for reading images
    # an unreadable image: stop with its name (error) or leave it out and list it in the report (skip)
    on_bad_image: Literal["error", "skip"] = "error"


XGIRSection = XGIRConfig  # the ``xgir:`` section is the library's dataclass, validated the same way


class XGIRRunConfig(StrictModel):
    """The ``xgir correct`` config (see the module docstring)."""

    model: ModelSection
    data: DataSection
    explainer: Literal["iox", "cwox"] = "iox"
    cwox_level: float = Field(0.5, ge=0, le=1)  # cut level of the confusion tree
    xgir: XGIRConfig = Field(default_factory=XGIRConfig)
    out: str = "runs/xgir"
    device: Literal["auto", "cpu", "cuda"] = "auto"

    @field_validator("xgir", mode="wrap")
    @classmethod
    def _xgir_errors(cls, value: Any, handler: Any) -> XGIRConfig:
        try:
            return handler(value)
        except XgirError as err:  # a range check of XGIRConfig: name the section
            raise XgirError(f"xgir: {err}") from None

    @model_validator(mode="after")
    def _cwox_layers(self) -> XGIRRunConfig:
        if self.explainer == "cwox" and not self.model.shallow_layer:
            raise ValueError("explainer cwox needs model.shallow_layer (e.g. layer3)")
        return self


# ---- model --------------------------------------------------------------------------------
class Normalized(nn.Module):
    """``model((x - mean) / std)``: the model takes images in [0, 1]. Layers are ``model.<name>``."""

    def __init__(self, model: nn.Module, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x - self.mean) / self.std)


def build_user_model(section: ModelSection) -> nn.Module:
    """Call the factory with its kwargs, load the weights: the model in eval mode, frozen."""
    factory = import_factory(section.factory)
    try:
        model = factory(**section.kwargs)
    except Exception as err:  # noqa: BLE001 - the user's factory: one line, not a traceback
        raise XgirError(f"model.factory '{section.factory}'(**{section.kwargs}) failed: "
                        f"{type(err).__name__}: {err}") from None
    if not isinstance(model, nn.Module):
        raise XgirError(f"model.factory '{section.factory}' returned a {type(model).__name__}, "
                        "not a torch nn.Module")
    if section.weights is not None:
        load_weights(model, section.weights)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _device(choice: str) -> torch.device:
    if choice == "cuda" and not torch.cuda.is_available():
        raise XgirError("device: cuda requested but no CUDA GPU is available (use auto or cpu)")
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(choice)


# ---- data ---------------------------------------------------------------------------------
def _cap(data: DataSection, split_name: str) -> int | None:
    if data.max_images is None or isinstance(data.max_images, int):
        return data.max_images
    return getattr(data.max_images, split_name)


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


def _check_counts(ds: ImageFolderDataset, key: str) -> None:
    """An empty class folder: an error in source_train (the head would lose that class),
    a warning line elsewhere."""
    counts = torch.bincount(ds.labels, minlength=ds.num_classes).tolist()
    empty = [c for c, n in zip(ds.classes, counts, strict=True) if n == 0]
    if not empty:
        return
    where = ", ".join(str(ds.root / c) for c in empty[:8]) + (f" and {len(empty) - 8} more" if len(empty) > 8 else "")
    if key == "source_train":
        raise XgirError(f"data.source_train: class folder{'s' if len(empty) > 1 else ''} {where} "
                        "hold no images; every class needs training images")
    warn(f"data.{key}: empty class folder{'s' if len(empty) > 1 else ''} {where}")


def _datasets(data: DataSection, num_classes: int, head: str) -> dict[str, ImageFolderDataset]:
    """The folders of every given split, with one class list so labels agree; the class
    folders of every split must match that list (see :func:`check_class_folders`)."""
    def folder(key: str, classes: list[str] | None, hint: str) -> ImageFolderDataset:
        try:
            if classes is not None:
                check_class_folders(getattr(data, key), classes, key, hint)
            ds = ImageFolderDataset(getattr(data, key), data.image_size, classes)
        except XgirError as err:
            msg = str(err)
            raise XgirError(msg if msg.startswith("data.") else f"data.{key}: {msg}") from None
        _check_counts(ds, key)
        return ds

    src = folder("source_train", data.classes, "data.classes lists the class folders in label order")
    classes = src.classes
    if len(classes) != num_classes:
        raise XgirError(f"the model's head '{head}' has {num_classes} outputs but source_train has "
                        f"{len(classes)} classes; give data.classes (folder names in label order)")
    if data.target_classes == "index":
        target_classes = [str(i) for i in range(num_classes)]
    else:
        target_classes = list(data.target_classes) if data.target_classes is not None else classes
        if len(target_classes) != num_classes:
            raise XgirError(f"data.target_classes has {len(target_classes)} names, the model "
                            f"{num_classes} classes")
    source_hint = "the source test folders must be named as the source classes (" + ", ".join(classes[:8]) + \
        (", ..." if len(classes) > 8 else "") + ")"
    target_hint = ("give data.target_classes: the target folder names in the source's label order, "
                   "or 'index' for folders 0..K-1" if data.target_classes is None
                   else "data.target_classes lists the target folders in label order")
    out = {"source_train": src, "source_test": folder("source_test", classes, source_hint)}
    for name in ("target_val", "target_test"):
        if getattr(data, name) is not None:
            out[name] = folder(name, target_classes, target_hint)
    return out


def _indices(ds: ImageFolderDataset, cap: int | None, seed: int) -> torch.Tensor:
    """All indices, or a seeded random subset of ``cap`` of them (sorted)."""
    n = len(ds)
    if cap is None or cap >= n:
        return torch.arange(n)
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=g)[:cap].sort().values


class _Guarded(torch.utils.data.Dataset):
    """Items of ``ds`` with their index ``i``; an unreadable image gives ``{"i", "bad": message}``
    instead of raising, so that a worker process does not print a traceback."""

    def __init__(self, ds: ImageFolderDataset) -> None:
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> dict[str, Any]:
        try:
            return {**self.ds[i], "i": i}
        except XgirError as err:
            return {"i": i, "bad": str(err)}


def _collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    good = [it for it in items if "bad" not in it]
    batch: dict[str, Any] = default_collate(good) if good else {"i": torch.empty(0, dtype=torch.long)}
    batch["bad"] = [(it["i"], it["bad"]) for it in items if "bad" in it]
    return batch


def _loader(ds: ImageFolderDataset, idx: torch.Tensor, data: DataSection) -> DataLoader:
    """Batches of the images ``idx`` of ``ds``; each batch lists its unreadable images in ``bad``."""
    return DataLoader(Subset(_Guarded(ds), idx.tolist()), batch_size=data.batch_size, shuffle=False,
                      num_workers=data.workers, collate_fn=_collate)


def _bad_images(batch: dict[str, Any], key: str, data: DataSection, skipped: list[str],
                ds: ImageFolderDataset) -> None:
    """Stop on the batch's first unreadable image (on_bad_image: error) or note them (skip)."""
    for i, message in batch["bad"]:
        if data.on_bad_image == "error":
            raise XgirError(f"data.{key}: {message} (fix or remove the file, or set data.on_bad_image: skip "
                            "to leave unreadable images out)")
        skipped.append(str(ds.files[i]))


@torch.no_grad()
def _extract(features: nn.Module, loader: DataLoader, device: torch.device, desc: str,
             progress: bool, want_mean: bool, skip: Callable[[dict[str, Any]], None]
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Features h float[N,D] (CPU), labels long[N], (optionally) the mean image [C,H,W] and the
    dataset indices long[N] of the images read (``skip`` handles the unreadable ones)."""
    hs, ys, kept, total = [], [], [], None
    for batch in iterate(loader, desc=desc, enabled=progress):
        skip(batch)
        if "image" not in batch:
            continue
        x = batch["image"].to(device)
        try:
            hs.append(features(x).float().cpu())
        except RuntimeError as err:  # e.g. a model made for other channels or sizes
            first = (str(err).splitlines() or [""])[0]
            raise XgirError(f"the model cannot take the images ({tuple(x.shape[1:])}, RGB in [0, 1] at "
                            f"data.image_size): {first}; check model.kwargs and data.image_size") from None
        ys.append(batch["label"])
        kept.append(batch["i"])
        if want_mean:
            s = x.sum(0, dtype=torch.float64)
            total = s if total is None else total + s
    n = sum(len(y) for y in ys)
    if n == 0:
        raise XgirError(f"{desc}: no readable images")
    mean = (total / n).float() if total is not None else None
    return torch.cat(hs), torch.cat(ys), mean, torch.cat(kept)


# ---- the pipeline -------------------------------------------------------------------------
def run_xgir_pipeline(cfg: XGIRRunConfig, progress: bool = True) -> dict[str, Any]:
    """Run XGIR on the config's model and folders; write the outputs to ``cfg.out``.

    Returns the results dict (also written to results.json): accuracies of the original and
    the XGIR model per split, image counts, the XGIR record and the output paths.
    """
    start = time.time()
    out = check_output_folder(cfg.out, "out")
    xcfg = cfg.xgir
    device = _device(cfg.device)
    inner = build_user_model(cfg.model)
    # names are checked on the user's model so errors list the user's layer names
    for name in (cfg.model.deep_layer, cfg.model.shallow_layer if cfg.explainer == "cwox" else None):
        if name is not None:
            get_module(inner, name)
    _, linear_inner = split(inner, cfg.model.head)
    num_classes = linear_inner.out_features
    if linear_inner.bias is None:
        raise XgirError(f"head '{cfg.model.head}' has no bias; XGIR retrains a linear head with a bias")
    model: nn.Module = inner
    prefix = ""
    if cfg.data.normalize is not None:
        model = Normalized(inner, cfg.data.normalize.mean, cfg.data.normalize.std)
        prefix = "model."
    model = model.to(device).eval()
    features, linear = split(model, prefix + cfg.model.head)
    deep = prefix + cfg.model.deep_layer
    shallow = prefix + cfg.model.shallow_layer if cfg.model.shallow_layer else None

    datasets = _datasets(cfg.data, num_classes, cfg.model.head)
    channels = 3  # ImageFolderDataset reads RGB
    if cfg.data.normalize is not None and len(cfg.data.normalize.mean) not in (1, channels):
        raise XgirError(f"data.normalize has {len(cfg.data.normalize.mean)} values; images have "
                        f"{channels} channels (RGB)")
    idx = {k: _indices(ds, _cap(cfg.data, k), xcfg.seed) for k, ds in datasets.items()}

    # pass 1: features (and the mean image of source train for x0 = mean)
    h: dict[str, torch.Tensor] = {}
    labels: dict[str, torch.Tensor] = {}
    data_mean = None
    skipped: dict[str, list[str]] = {}
    for k, ds in datasets.items():
        want_mean = k == "source_train" and xcfg.empty == "mean"
        skipped[k] = []
        h[k], labels[k], mean, idx[k] = _extract(
            features, _loader(ds, idx[k], cfg.data), device, f"features {k}", progress, want_mean,
            lambda b, k=k, ds=ds: _bad_images(b, k, cfg.data, skipped[k], ds))
        if want_mean:
            data_mean = mean
    orig_head = copy.deepcopy(linear).cpu()

    tree = None
    if cfg.explainer == "cwox":  # confusion tree fitted on the model's source-train predictions
        with torch.no_grad():
            probs = torch.softmax(orig_head(h["source_train"]), dim=1)
        tree = ConfusionTree.from_top_labels(top_label_sets(probs), num_classes,
                                             datasets["source_train"].classes,
                                             meta={"k": 5, "mass": 0.95, "dataset": "source_train"})

    # pass 2: heatmaps of the true class, supports, responses r, batch by batch
    rs, empties = [], []
    kept = 0.0
    fallback = 0.0
    examples: dict[str, list[torch.Tensor]] = {"images": [], "maps": [], "supports": [], "labels": []}
    y_train = labels["source_train"]
    size = (cfg.data.image_size, cfg.data.image_size)
    seen = 0
    shown = torch.linspace(0, len(y_train) - 1, min(6, len(y_train))).round().long().unique()  # spread over classes
    loader = _loader(datasets["source_train"], idx["source_train"], cfg.data)
    for batch in iterate(loader, desc="heatmaps and responses", enabled=progress):
        if batch["bad"]:
            raise XgirError(f"data.source_train: {batch['bad'][0][1]} (it was read in the first pass)")
        x = batch["image"].to(device)
        y = batch["label"]
        if not torch.equal(y, y_train[seen : seen + len(y)]):
            raise XgirError("source_train changed between passes (labels differ); rerun")
        seen += len(y)
        maps = true_class_heatmaps(model, x, y.to(device), deep, batch_size=len(x))
        if tree is not None:
            maps, fb = cwox_true_cluster_heatmaps(model, x, y, tree, cfg.cwox_level, maps, deep,
                                                  shallow or "", batch_size=len(x))
            fallback += fb * len(x)
        sup = support_from_heatmaps(maps, size, xcfg.delta1)
        x0 = empty_images(x, xcfg.empty, data_mean, xcfg.blur_sigma)
        rs.append(unit_responses(features, x, sup, x0, batch_size=len(x), response=xcfg.response).cpu())
        empties.append(~sup.flatten(1).any(1).cpu())
        kept += float(sup.float().mean()) * len(x)
        take = [int(i) - (seen - len(y)) for i in shown if seen - len(y) <= i < seen]
        if take:  # examples for the figure
            up = F.interpolate(maps[take, None].float(), size=size, mode="bilinear", align_corners=False)
            examples["images"] += list(x[take].cpu())
            examples["maps"] += list(up[:, 0].detach().cpu())
            examples["supports"] += list(sup[take].float().cpu())
            examples["labels"] += list(y[take])
    n_train = len(y_train)
    r = torch.cat(rs)
    empty = torch.cat(empties)
    support_share = kept / n_train

    new_head, record = retrain_head(h["source_train"], r, y_train, num_classes, xcfg, empty, support_share)
    new_inner, _, new_linear = frozen_copy(inner, cfg.model.head)
    with torch.no_grad():
        new_linear.weight.copy_(new_head.weight)
        new_linear.bias.copy_(new_head.bias)

    acc: dict[str, dict[str, float]] = {"original": {}, "xgir": {}}
    with torch.no_grad():
        for k in h:
            if k == "source_train":
                continue
            for name, head in (("original", orig_head), ("xgir", new_head)):
                acc[name][k] = float((head(h[k]).argmax(1) == labels[k]).float().mean())

    paths = {"model": out / "xgir_model.pt", "figure": out / "heatmaps.png"}
    results: dict[str, Any] = {
        "config": cfg.model_dump(),
        "device": str(device),
        "num_classes": num_classes,
        "images": {k: len(v) for k, v in idx.items()},
        "skipped_images": {k: {"count": len(v), "files": v} for k, v in skipped.items() if v},
        "accuracy": acc,
        "summary": {
            "frac_units_randomised": record.frac_units_randomised,
            "frac_units_fully_randomised": record.frac_units_fully_randomised,
            "support_share": support_share,
            "empty_supports": int(empty.sum()),
            "cwox_fallback_to_iox": fallback / n_train if tree is not None else None,
        },
        "record": record.to_dict(),
        "outputs": {k: str(v) for k, v in paths.items()},
        "seconds": round(time.time() - start, 1),
    }
    with run_folder(out, "out") as tmp:  # the outputs as a set
        torch_save({k: v.cpu() for k, v in new_inner.state_dict().items()}, tmp / "xgir_model.pt")
        _plot_examples(examples, datasets["source_train"].classes, tmp / "heatmaps.png")
        write_json(tmp / "results.json", results)
        write_text(tmp / "report.md", _report(cfg, results))
    results["outputs"]["results"] = str(out / "results.json")
    results["outputs"]["report"] = str(out / "report.md")
    return results


def _report(cfg: XGIRRunConfig, res: dict[str, Any]) -> str:
    splits = [k for k in ("source_test", "target_val", "target_test") if k in res["accuracy"]["original"]]
    titles = {"source_test": "source acc", "target_val": "target-val acc", "target_test": "target acc"}
    s = res["summary"]
    lines = [
        f"# XGIR on {cfg.model.factory}", "",
        f"Explainer {cfg.explainer.upper()} at {cfg.model.deep_layer}; {res['num_classes']} classes; images: "
        + ", ".join(f"{k} {n}" for k, n in res["images"].items()) + ".", "",
        "| model | " + " | ".join(titles[k] for k in splits) + " |",
        "|---|" + "---|" * len(splits),
    ]
    for name, label in (("original", "original"), ("xgir", "XGIR")):
        lines.append(f"| {label} | " + " | ".join(f"{res['accuracy'][name][k]:.4f}" for k in splits) + " |")
    x = cfg.xgir
    lines += [
        "",
        f"XGIR: share of units randomised (mean lambda) {s['frac_units_randomised']:.3f}, fully "
        f"randomised {s['frac_units_fully_randomised']:.3f}; support share of pixels "
        f"{s['support_share']:.3f}; images with empty support {s['empty_supports']}"
        + (f"; CWOX fell back to IOX on {s['cwox_fallback_to_iox']:.2f} of images"
           if s["cwox_fallback_to_iox"] is not None else "") + ".",
        f"Settings: delta1 {x.delta1}, delta2 {x.delta2} ({x.delta2_mode}), x0 {x.empty}, response {x.response}, "
        f"noise scale {x.noise_scale}, {x.draws} draws, {x.head_epochs} head epochs, lr {x.lr}, seed {x.seed}.",
        f"Run time: {res['seconds']} s on {res['device']}.",
    ]
    for k, sk in res["skipped_images"].items():
        lines += ["", f"Skipped {sk['count']} unreadable image{'s' if sk['count'] > 1 else ''} in {k} "
                  "(data.on_bad_image: skip):"] + [f"- {f}" for f in sk["files"]]
    return "\n".join(lines) + "\n"


def _plot_examples(ex: dict[str, list[torch.Tensor]], classes: list[str], path: Path) -> Path:
    from xgir.viz import heatmap_grid

    images = torch.stack(ex["images"])
    maps = torch.stack([torch.stack(ex["maps"]), torch.stack(ex["supports"])], dim=1)
    rows = [f"y={classes[int(y)]}" for y in ex["labels"]]
    return heatmap_grid(images, maps, path, row_titles=rows, col_titles=["true-class heatmap", "support"])
