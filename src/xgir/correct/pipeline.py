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
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator, model_validator
from torch import nn
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

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
from xgir.correct.xgir_variants import core_heatmaps
from xgir.data.real import ImageFolderDataset
from xgir.errors import XgirError
from xgir.explain.clusters import ConfusionTree, top_label_sets
from xgir.io import torch_save, write_json, write_text
from xgir.models.load import import_factory, load_weights
from xgir.models.split import get_module, split

_D = XGIRConfig  # dataclass defaults (class attributes) shared with the library API
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
    max_images: int | MaxImages | None = None  # one cap for every split, or per split
    batch_size: int = Field(64, gt=0)
    workers: int = Field(0, ge=0)  # DataLoader worker processes for reading images


class XGIRSection(StrictModel):
    delta1: float = _D.delta1
    delta2: float = _D.delta2
    delta2_mode: Literal["absolute", "quantile", "unit-quantile"] = _D.delta2_mode
    empty: Literal["zeros", "mean", "blur"] = _D.empty
    response: Literal["core", "core-minus-context", "core-vs-whole"] = _D.response
    blur_sigma: float = _D.blur_sigma
    noise_scale: float = _D.noise_scale
    draws: int = _D.draws
    head_epochs: int = _D.head_epochs
    lr: float = _D.lr
    batch_size: int = _D.batch_size
    weight_decay: float = _D.weight_decay
    seed: int = _D.seed
    variant: Literal["note", "swap"] = _D.variant
    floor: float | None = _D.floor
    noise: Literal["gaussian", "empirical"] = _D.noise
    basis: Literal["units", "pca", "whiten"] = _D.basis
    core: Literal["explainer", "pretrained", "novelty"] = _D.core
    top_k: int = _D.top_k

    def to_config(self) -> XGIRConfig:
        try:
            return XGIRConfig(**self.model_dump())
        except XgirError as err:
            raise XgirError(f"xgir: {err}") from None


class XGIRRunConfig(StrictModel):
    """The ``xgir correct`` config (see the module docstring)."""

    model: ModelSection
    data: DataSection
    explainer: Literal["iox", "cwox"] = "iox"
    cwox_level: float = Field(0.5, ge=0, le=1)  # cut level of the confusion tree
    xgir: XGIRSection = Field(default_factory=XGIRSection)
    out: str = "runs/xgir"
    device: Literal["auto", "cpu", "cuda"] = "auto"

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


def _datasets(data: DataSection, num_classes: int, head: str) -> dict[str, ImageFolderDataset]:
    """The folders of every given split, with one class list so labels agree."""
    def folder(key: str, classes: list[str] | None) -> ImageFolderDataset:
        try:
            return ImageFolderDataset(getattr(data, key), data.image_size, classes)
        except XgirError as err:
            raise XgirError(f"data.{key}: {err}") from None

    src = folder("source_train", data.classes)
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
    out = {"source_train": src, "source_test": folder("source_test", classes)}
    for name in ("target_val", "target_test"):
        if getattr(data, name) is not None:
            out[name] = folder(name, target_classes)
    return out


def _indices(ds: ImageFolderDataset, cap: int | None, seed: int) -> torch.Tensor:
    """All indices, or a seeded random subset of ``cap`` of them (sorted)."""
    n = len(ds)
    if cap is None or cap >= n:
        return torch.arange(n)
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=g)[:cap].sort().values


def _loader(ds: ImageFolderDataset, idx: torch.Tensor, data: DataSection) -> DataLoader:
    return DataLoader(Subset(ds, idx.tolist()), batch_size=data.batch_size, shuffle=False,
                      num_workers=data.workers)


@torch.no_grad()
def _extract(features: nn.Module, loader: DataLoader, device: torch.device, desc: str,
             progress: bool, want_mean: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Features h float[N,D] (CPU), labels long[N] and (optionally) the mean image [C,H,W]."""
    hs, ys, total = [], [], None
    for batch in tqdm(loader, desc=desc, disable=not progress, leave=False):
        x = batch["image"].to(device)
        hs.append(features(x).float().cpu())
        ys.append(batch["label"])
        if want_mean:
            s = x.sum(0, dtype=torch.float64)
            total = s if total is None else total + s
    n = sum(len(y) for y in ys)
    mean = (total / n).float() if total is not None else None
    return torch.cat(hs), torch.cat(ys), mean


# ---- the pipeline -------------------------------------------------------------------------
def run_xgir_pipeline(cfg: XGIRRunConfig, progress: bool = True) -> dict[str, Any]:
    """Run XGIR on the config's model and folders; write the outputs to ``cfg.out``.

    Returns the results dict (also written to results.json): accuracies of the original and
    the XGIR model per split, image counts, the XGIR record and the output paths.
    """
    start = time.time()
    out = Path(cfg.out)
    xcfg = cfg.xgir.to_config()
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
    for k, ds in datasets.items():
        want_mean = k == "source_train" and xcfg.empty == "mean"
        h[k], labels[k], mean = _extract(features, _loader(ds, idx[k], cfg.data), device,
                                         f"features {k}", progress, want_mean)
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
    for batch in tqdm(loader, desc="heatmaps and responses", disable=not progress, leave=False):
        x = batch["image"].to(device)
        y = batch["label"]
        if not torch.equal(y, y_train[seen : seen + len(y)]):
            raise XgirError("source_train changed between passes (labels differ); rerun")
        seen += len(y)
        maps = true_class_heatmaps(model, x, y.to(device), deep, batch_size=len(x))
        if xcfg.core != "explainer":  # a label-free core source (a variant, xgir_variants)
            maps = core_heatmaps(xcfg.core, model, x, deep, xcfg.top_k)
        elif tree is not None:
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

    paths = {
        "model": torch_save({k: v.cpu() for k, v in new_inner.state_dict().items()}, out / "xgir_model.pt"),
        "figure": _plot_examples(examples, datasets["source_train"].classes, out / "heatmaps.png"),
    }
    results: dict[str, Any] = {
        "config": cfg.model_dump(),
        "device": str(device),
        "num_classes": num_classes,
        "images": {k: len(v) for k, v in idx.items()},
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
    write_json(out / "results.json", results)
    write_text(out / "report.md", _report(cfg, results))
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
    return "\n".join(lines) + "\n"


def _plot_examples(ex: dict[str, list[torch.Tensor]], classes: list[str], path: Path) -> Path:
    from xgir.viz import heatmap_grid

    images = torch.stack(ex["images"])
    maps = torch.stack([torch.stack(ex["maps"]), torch.stack(ex["supports"])], dim=1)
    rows = [f"y={classes[int(y)]}" for y in ex["labels"]]
    return heatmap_grid(images, maps, path, row_titles=rows, col_titles=["true-class heatmap", "support"])
