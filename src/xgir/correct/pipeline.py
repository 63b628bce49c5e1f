"""XGIR on a user's model and ImageFolder data, driven by a YAML config (``xgir correct``).

Usage: write a config (see ``configs/xgir-imagefolder.yaml``) naming the model factory as
``"package.module:function"`` (called with ``model.kwargs``; optional ``model.weights``, a
state_dict / checkpoint ``.pt`` or ``.safetensors``), its linear head (``fc``) and Grad-CAM
layer(s), and three folders ``root/<class>/<image>`` (source train, source test, target
test; optional target val; or Waterbirds splits ``ROOT:train``, see
:mod:`xgir.data.waterbirds`). Then ``xgir correct --config FILE.yaml`` or, in Python,
``run_xgir_pipeline(load_config(path, XGIRRunConfig))``. Images are resized to
``image_size`` and read in [0, 1]; ``data.normalize`` is applied inside a wrapper module,
so heatmaps, supports and the empty image x0 live in image space (x0 = "zeros" is black).
Everything runs batch by batch, written in chunks under ``out/passes`` (a rerun with the
same config resumes from them); under ``torchrun --nproc_per_node=N -m xgir correct ...``
the passes are sharded over the N processes (see correct/passes.py and xgir/sharded.py).
The features h and responses r [N,D] of source train (float16 by default) and the
features of the test splits are loaded on rank 0 for the head; cap N with ``data.max_images``.
Writes results.json, report.md, xgir_model.pt (state_dict of the unwrapped model, head
replaced) and heatmaps.png to ``out``.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from xgir.correct.passes import run_passes
from xgir.correct.run_config import (  # the config sections, importable from here too
    DataSection,
    MaxImages,
    ModelSection,
    NormalizeSection,
    XGIRRunConfig,
    XGIRSection,
)
from xgir.correct.xgir import XGIRConfig, frozen_copy, retrain_head
from xgir.data.checks import check_class_counts, check_class_folders, open_split
from xgir.data.real import LazyImageDataset
from xgir.data.transforms import Preprocess
from xgir.errors import XgirError
from xgir.io import check_output_folder, mark_run_folder, run_folder, torch_save, write_json, write_text
from xgir.models.accuracy import accuracy_from_predictions
from xgir.models.inference import resolve_device
from xgir.models.load import attach_normalization, import_factory, load_weights
from xgir.models.split import get_module, split
from xgir.resources import cap_workers, check_memory
from xgir.sharded import Dist, init_dist

SPLITS = ("source_train", "source_test", "target_val", "target_test")
__all__ = ["DataSection", "MaxImages", "ModelSection", "NormalizeSection", "XGIRRunConfig",
           "XGIRSection", "build_user_model", "check_class_folders", "resolve_model", "run_xgir_pipeline"]


# ---- model --------------------------------------------------------------------------------
def resolve_model(section: ModelSection) -> tuple[nn.Module, ModelSection, list[str]]:
    """The model (eval mode, frozen), the section with its head and layers filled in from the
    loaded model (``spec``) or the factory defaults, and the model's class names (``spec``; none
    for a factory). One line listing the model's layers when a named layer does not exist."""
    if section.spec is None:
        return build_user_model(section), section, []
    from xgir.models.load import load_model

    loaded = load_model(section.spec, weights=section.weights, kwargs=section.kwargs)
    filled = section.model_copy(update={
        "head": section.head or loaded.head,
        "deep_layer": section.deep_layer or loaded.layer,
        "shallow_layer": section.shallow_layer or loaded.shallow_layer,
    })
    if not filled.deep_layer:
        raise XgirError(f"model.spec '{section.spec}' has no default Grad-CAM layer; set model.deep_layer")
    return loaded.model, filled, list(loaded.classes)


def build_user_model(section: ModelSection) -> nn.Module:
    """Call the factory with its kwargs, load the weights: the model in eval mode, frozen."""
    if section.factory is None:
        return resolve_model(section)[0]
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


def core_model(xcfg: XGIRConfig, model: nn.Module, head: str, layer: str, num_classes: int,
               device: torch.device) -> tuple[nn.Module | None, dict[str, Any]]:
    """The network whose own head gives the core map (``xgir.core: pretrained``): the model spec
    ``xgir.core_model`` (loaded frozen on ``device``; it must have the Grad-CAM ``layer``), or None
    for the corrected model's own head; and what the report says of it: whether it shares the
    corrected model's extractor (every weight outside ``head`` equal). Warns when the model's own
    head is asked for and has no more classes than ``top_k`` (e.g. a new head of ``xgir train``)."""
    if xcfg.core != "pretrained":
        return None, {}
    if xcfg.core_model is None:
        if num_classes <= xcfg.top_k:
            from xgir.errors import warn

            warn(f"xgir.core pretrained reads the model's own head, which has {num_classes} classes (top_k "
                 f"{xcfg.top_k}): the core is then the new head's view, not the pretrained network's; name the "
                 "network it was built on as xgir.core_model (e.g. efficientnet-lite0)")
        return None, {"core_model": None}
    from xgir.models.load import load_model

    net = load_model(xcfg.core_model, device=device).model
    try:
        get_module(net, layer)
    except XgirError:
        raise XgirError(f"xgir.core_model '{xcfg.core_model}' has no layer '{layer}' (model.deep_layer, where the "
                        "core map is taken); name a network with the corrected model's layers") from None
    mine, theirs = model.state_dict(), net.state_dict()
    body = [k for k in mine if not k.startswith(f"{head}.")]
    shares = all(k in theirs and theirs[k].shape == mine[k].shape and torch.equal(theirs[k].to(mine[k].device),
                                                                                  mine[k]) for k in body)
    if not shares:
        from xgir.errors import warn

        warn(f"xgir.core_model '{xcfg.core_model}' does not share the corrected model's extractor (weights outside "
             f"'{head}' differ): its core maps are another network's view")
    return net.eval(), {"core_model": xcfg.core_model, "core_model_shares_extractor": shares}


# ---- data ---------------------------------------------------------------------------------
def _cap(data: DataSection, split_name: str) -> int | None:
    if data.max_images is None or isinstance(data.max_images, int):
        return data.max_images
    return getattr(data.max_images, split_name)


def _model_order(root: str, model_classes: list[str]) -> list[str] | None:
    """The class folders of ``root`` in the order of the model's classes when they name all of
    them (:func:`xgir.data.images.folder_labels`: names, ImageNet synsets, indices), else None."""
    from xgir.data.images import folder_labels

    path = Path(root)
    if not model_classes or not path.is_dir():
        return None
    found = sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    try:
        order = folder_labels(found, model_classes)
    except XgirError:
        return None
    return [f for _, f in sorted(zip(order, found, strict=True))] if sorted(order) == list(range(len(found))) else None


def _datasets(data: DataSection, num_classes: int, head: str,
              model_classes: list[str] | None = None) -> dict[str, LazyImageDataset]:
    """The folders of every given split, with one class list so labels agree: ``data.classes``,
    else the source folders in the order of the model's classes when they name them all
    (``model_classes``), else sorted. The class folders of every split must match that list
    (see :func:`check_class_folders`). A split may be a Waterbirds ``ROOT:SPLIT``
    (:mod:`xgir.data.waterbirds`): classes landbird, waterbird."""
    def folder(key: str, classes: list[str] | None, hint: str) -> LazyImageDataset:
        ds = open_split(getattr(data, key), key, Preprocess(data.image_size, fit=data.fit), classes, hint)
        assert isinstance(ds, LazyImageDataset)  # a folder or a Waterbirds split (else open_split's error)
        check_class_counts(ds, key, required=key == "source_train")
        return ds

    order = data.classes if data.classes is not None else _model_order(data.source_train, model_classes or [])
    src = folder("source_train", order, "data.classes lists the class folders in label order")
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


def _indices(ds: LazyImageDataset, cap: int | None, seed: int) -> torch.Tensor:
    """All indices, or a seeded random subset of ``cap`` of them (sorted)."""
    n = len(ds)
    if cap is None or cap >= n:
        return torch.arange(n)
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=g)[:cap].sort().values


# ---- the pipeline -------------------------------------------------------------------------
def run_xgir_pipeline(cfg: XGIRRunConfig, *, progress: bool = True) -> dict[str, Any]:
    """Run XGIR on the config's model and folders; write the outputs to ``cfg.out``.

    Returns the results dict (also written to results.json): accuracies of the original and
    the XGIR model per split, image counts, the XGIR record and the output paths.
    """
    start = time.time()
    check_output_folder(cfg.out, "out")  # before any work
    d = cfg.data
    check_memory(2 * 4 * 3 * d.image_size ** 2 * d.batch_size, f"a batch of {d.batch_size} images at "
                 f"data.image_size {d.image_size}", "lower data.image_size or data.batch_size")
    cfg = cfg.model_copy(update={"data": d.model_copy(update={"workers": cap_workers(d.workers, "data.workers")})})
    xcfg = cfg.xgir
    device = resolve_device(cfg.device, "device:", allow_auto=True)
    dist = init_dist(device)  # one process, or this rank of torchrun's group
    with dist.session():  # guarded on every rank; the process group closed at the end
        return _run(cfg, xcfg, dist, start, progress)


def _run(cfg: XGIRRunConfig, xcfg: XGIRConfig, dist: Dist, start: float, progress: bool) -> dict[str, Any]:
    out = Path(cfg.out)
    device = dist.device
    inner, model_section, model_classes = resolve_model(cfg.model)
    cfg = cfg.model_copy(update={"model": model_section})
    head_name, deep_layer = cfg.model.head, cfg.model.deep_layer
    assert head_name is not None and deep_layer is not None  # resolve_model fills them in
    if cfg.model.spec is not None and cfg.data.normalize is not None and hasattr(inner, "_xgir_normalization"):
        raise XgirError(f"model.spec '{cfg.model.spec}' normalises its inputs itself; remove data.normalize")
    # names are checked on the user's model so errors list the user's layer names
    for name in (cfg.model.deep_layer, cfg.model.shallow_layer if cfg.explainer == "cwox" else None):
        if name is not None:
            get_module(inner, name)
    _, linear_inner = split(inner, head_name)
    num_classes = linear_inner.out_features
    if linear_inner.bias is None:
        raise XgirError(f"head '{cfg.model.head}' has no bias; XGIR retrains a linear head with a bias")
    channels = 3  # ImageFolderDataset reads RGB
    if cfg.data.normalize is not None:
        norm = cfg.data.normalize
        if len(norm.mean) not in (1, channels):
            raise XgirError(f"data.normalize has {len(norm.mean)} values; images have {channels} channels (RGB)")
        # inside the model, as for every loaded model: layer names stay the user's own
        attach_normalization(inner, norm.mean * (channels // len(norm.mean)), norm.std * (channels // len(norm.std)))
    model: nn.Module = inner.to(device).eval()
    features, linear = split(model, head_name)
    deep, shallow = deep_layer, cfg.model.shallow_layer or None

    core_net, core_info = core_model(xcfg, model, head_name, deep, num_classes, device)
    datasets = _datasets(cfg.data, num_classes, head_name, model_classes or [str(i) for i in range(num_classes)])
    idx = {k: _indices(ds, _cap(cfg.data, k), xcfg.seed) for k, ds in datasets.items()}

    # the passes over every split (sharded over torchrun's ranks, resumable; see correct/passes.py)
    if dist.is_main:
        mark_run_folder(out)  # the passes' chunks live in out/passes and survive a rerun
    dist.barrier()
    res = run_passes(dist, cfg, xcfg, model, features, linear, deep, shallow, datasets, idx, num_classes,
                     device, out / "passes", progress, core_model=core_net)
    if res is None:  # another rank: its share is on disk; rank 0 retrains the head and writes the outputs
        return {"rank": dist.rank, "world": dist.world}
    h, labels, r, empty, skipped = res.h, res.labels, res.r, res.empty, res.skipped
    y_train = labels["source_train"]
    support_share, fallback, examples = res.support_share, res.fallback, res.examples
    orig_head = copy.deepcopy(linear).cpu()

    new_head, record = retrain_head(h["source_train"], r, y_train, num_classes, xcfg, empty_support=empty,
                                    support_fraction=support_share, background=res.background)
    new_inner, _, new_linear = frozen_copy(inner, head_name)
    with torch.no_grad():
        new_linear.weight.copy_(new_head.weight)
        new_linear.bias.copy_(new_head.bias)

    acc: dict[str, dict[str, float]] = {"original": {}, "xgir": {}}
    by_group: dict[str, dict[str, Any]] = {"original": {}, "xgir": {}}  # splits with groups (Waterbirds)
    with torch.no_grad():
        for k in h:
            if k == "source_train":
                continue
            for name, head in (("original", orig_head), ("xgir", new_head)):
                got = accuracy_from_predictions(head(h[k]).argmax(1), labels[k], res.groups.get(k),
                                                datasets[k].group_names)
                acc[name][k] = got["accuracy"]
                if "worst_group" in got:
                    by_group[name][k] = {"worst_group": got["worst_group"], "groups": got["groups"]}

    paths = {"model": out / "xgir_model.pt", "figure": out / "heatmaps.png"}
    results: dict[str, Any] = {
        "config": cfg.model_dump(),
        "device": str(device),
        "processes": dist.world,  # torchrun's ranks that shared the passes
        "num_classes": num_classes,
        "images": {k: len(v) for k, v in labels.items()},  # images read (skipped ones left out)
        "skipped_images": {k: {"count": len(v), "files": v} for k, v in skipped.items() if v},
        "accuracy": acc,
        "groups": by_group if by_group["original"] else None,
        "summary": {
            "frac_units_randomised": record.frac_units_randomised,
            "frac_units_fully_randomised": record.frac_units_fully_randomised,
            "support_share": support_share,
            "empty_supports": int(empty.sum()),
            "cwox_fallback_to_iox": fallback,
            **core_info,
        },
        "record": record.to_dict(),
        "outputs": {k: str(v) for k, v in paths.items()},
        "seconds": round(time.time() - start, 1),
    }
    with run_folder(out, "out", keep=("passes",)) as tmp:  # the outputs as a set (the chunks kept)
        torch_save({k: v.cpu() for k, v in new_inner.state_dict().items()}, tmp / "xgir_model.pt")
        _plot_examples(examples, datasets["source_train"].classes, tmp / "heatmaps.png",
                       "true-class heatmap" if xcfg.core == "explainer" else f"{xcfg.core} core map")
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
        f"# XGIR on {cfg.model.name}", "",
        f"Explainer {cfg.explainer.upper()} at {cfg.model.deep_layer}; {res['num_classes']} classes; images: "
        + ", ".join(f"{k} {n}" for k, n in res["images"].items()) + ".", "",
        "| model | " + " | ".join(titles[k] for k in splits) + " |",
        "|---|" + "---|" * len(splits),
    ]
    grouped = [k for k in splits if res["groups"] and k in res["groups"]["original"]]
    if grouped:
        lines[-2] += "".join(f" {titles[k].replace(' acc', '')} worst group |" for k in grouped)
        lines[-1] += "---|" * len(grouped)
    for name, label in (("original", "original"), ("xgir", "XGIR")):
        lines.append(f"| {label} | " + " | ".join(f"{res['accuracy'][name][k]:.4f}" for k in splits) + " |"
                     + "".join(f" {res['groups'][name][k]['worst_group']:.4f} |" for k in grouped))
    x = cfg.xgir
    lines += [
        "",
        "XGIR: " + (f"share of units randomised (mean lambda) {s['frac_units_randomised']:.3f}, fully "
                    f"randomised {s['frac_units_fully_randomised']:.3f}; " if s["frac_units_randomised"]
                    == s["frac_units_randomised"] else "")  # NaN: the swap randomises no unit
        + f"support share of pixels "
        f"{s['support_share']:.3f}; images with empty support {s['empty_supports']}"
        + (f"; CWOX fell back to IOX on {s['cwox_fallback_to_iox']:.2f} of images"
           if s["cwox_fallback_to_iox"] is not None else "") + ".",
        f"Settings: delta1 {x.delta1}, delta2 {x.delta2} ({x.delta2_mode}), x0 {x.empty}, response {x.response}, "
        f"noise scale {x.noise_scale}, {x.draws} draws, {x.head_epochs} head epochs, lr {x.lr}, seed {x.seed}.",
        _variant_line(x, s),
        f"Run time: {res['seconds']} s on {res['device']}.",
    ]
    for k, sk in res["skipped_images"].items():
        lines += ["", f"Skipped {sk['count']} unreadable image{'s' if sk['count'] > 1 else ''} in {k} "
                  "(data.on_bad_image: skip):"] + [f"- {f}" for f in sk["files"]]
    return "\n".join(lines) + "\n"


def _variant_line(x: XGIRConfig, summary: dict[str, Any]) -> str:
    """The variant, the core's source and the support size, in words."""
    variant = (f"context swap (partner {x.partner}, context {x.context}"
               + (f", top {x.context_fraction:.0%} of the partner's map blanked out" if x.context == "background"
                  else "") + ")" if x.variant == "swap" else "the note's rule")
    core = {"explainer": "the explainer's true-class map", "novelty": "the novelty map"}.get(x.core, "")
    if x.core == "pretrained":
        who = (f"{x.core_model}'s own head" + ("" if summary.get("core_model_shares_extractor") else
                                                 " (another network than the one corrected)")
               if x.core_model else "the model's own head")
        core = f"the probability-weighted map of the top {x.top_k} classes of {who}"
    size = (f"the map's top {x.support_fraction:.0%} of pixels" if x.support_fraction is not None
            else f"delta1 {x.delta1}")
    return f"Variant: {variant}; core: {core}; support: {size}."


def _plot_examples(ex: dict[str, list[torch.Tensor]], classes: list[str], path: Path,
                   title: str = "true-class heatmap") -> Path:
    from xgir.viz import heatmap_grid

    images = torch.stack(ex["images"])
    maps = torch.stack([torch.stack(ex["maps"]), torch.stack(ex["supports"])], dim=1)
    rows = [f"y={classes[int(y)]}" for y in ex["labels"]]
    return heatmap_grid(images, maps, path, row_titles=rows, col_titles=[title, "support"])
