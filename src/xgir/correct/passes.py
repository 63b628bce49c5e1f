"""The network passes of ``xgir correct``: fused, sharded over ranks, resumable.

Network passes per source-train image (a Grad-CAM pass = one forward and the backward of
the network's tail after the Grad-CAM layer):

- before (features pass, then heatmaps and responses): **3** - the features h (forward);
  Grad-CAM of the true class (forward + backward); the responses r (forward of the core
  image x s + x0 (1 - s); the empty image x0, when it is one image for the batch, once
  per batch). ``response="core-minus-context"`` adds one forward.
- now, IOX: **2** - the Grad-CAM forward also yields h (a forward pre-hook on the head
  records its input), so there is no features pass; then the responses' forward.
- CWOX: 4, as before - the confusion tree needs every image's prediction (a features pass)
  before the first CWOX map, which costs its own forward and backward.
- the swap with ``context: background`` adds one forward: the image with the top
  ``context_fraction`` of its map blanked out (stored like r).
- ``xgir.empty: data-mean``: x0 needs the mean image before the first response, so source train
  is read once more (no network) for it, unless a features pass runs anyway (CWOX).

Test splits: one features forward per image (h kept in float32: accuracies as before); their
groups too where the images have them (a Waterbirds ``ROOT:SPLIT``: worst-group accuracy).
Source-train h and r are stored as ``passes.store`` (float16 by default): 2 D bytes each
per image, plus 4 (label), 1 (empty support) bytes.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from xgir.correct.xgir import (
    XGIRConfig,
    background_features,
    cwox_true_cluster_heatmaps,
    empty_images,
    empty_name,
    support_from_heatmaps,
    support_top_fraction,
    true_class_heatmaps,
    unit_responses,
)
from xgir.correct.xgir_variants import core_heatmaps
from xgir.errors import XgirError
from xgir.explain.clusters import ConfusionTree, top_label_sets
from xgir.io import files_fingerprint, fingerprint
from xgir.sharded import (
    BatchFn,
    Dist,
    GuardedImages,
    PassesSection,
    PassPlan,
    collate_readable,
    load_pass,
    sharded_pass,
)


def readable(batch: dict[str, Any], pos: torch.Tensor, split: str, on_bad_image: str
             ) -> tuple[torch.Tensor, dict[str, Any]]:
    """Stop on the batch's first unreadable image (``on_bad_image="error"``) or leave them out
    (``"skip"``): the positions of the readable images and the outputs that list the skipped
    dataset indices (``list:skipped``)."""
    bad = batch.get("bad", [])
    if not bad:
        return pos, {}
    if on_bad_image == "error":
        raise XgirError(f"data.{split}: {bad[0][1]} (fix or remove the file, or set data.on_bad_image: skip "
                        "to leave unreadable images out)")
    return pos[batch["ok"]], {"list:skipped": [int(i) for i, _ in bad]}


# config keys that only change the head retraining (steps 4-6), not the passes
HEAD_ONLY = ("delta2", "delta2_mode", "noise_scale", "draws", "head_epochs", "lr", "batch_size", "weight_decay")


@dataclass
class PassResults:
    """What the passes give rank 0: source-train h, r (float32 copies of the stored values),
    labels, empty supports, support share, CWOX fallback share, figure examples, and the
    features and labels of the other splits."""

    h: dict[str, torch.Tensor]
    labels: dict[str, torch.Tensor]
    r: torch.Tensor
    empty: torch.Tensor
    support_share: float
    fallback: float | None
    examples: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    data_mean: torch.Tensor | None = None
    skipped: dict[str, list[str]] = field(default_factory=dict)  # split -> unreadable files left out
    groups: dict[str, torch.Tensor] = field(default_factory=dict)  # split -> groups long[N] (images with groups)
    background: torch.Tensor | None = None  # f of the background images (the swap's context="background")


@contextmanager
def head_input(head: nn.Module) -> Iterator[list[torch.Tensor]]:
    """Record the input of ``head`` (flattened, detached: float[N,D]) on every forward while open."""
    got: list[torch.Tensor] = []
    handle = head.register_forward_pre_hook(lambda _m, args: got.append(args[0].detach().flatten(1)))
    try:
        yield got
    finally:
        handle.remove()


def pass_key(cfg: Any, model: nn.Module, device: torch.device, split: str, files: list[Any],
             labels: torch.Tensor, idx: torch.Tensor, xgir: bool) -> dict[str, Any]:
    """What a pass's results depend on: the config (but the output folder and the settings
    that only change the head retraining; no XGIR settings at all unless ``xgir``), the
    model's weights, the split's files (name, size and modification time: an image replaced
    under the same name is recomputed), labels and subset, and the device type. Another
    key = another chunk folder."""
    conf = cfg.model_dump()
    conf.pop("out", None)
    conf.get("data", {}).pop("workers", None)
    conf.get("passes", {}).pop("resume", None)
    for k in HEAD_ONLY:
        conf.get("xgir", {}).pop(k, None)
    if not xgir:
        for k in ("xgir", "explainer", "cwox_level"):
            conf.pop(k, None)
        conf.get("model", {}).pop("shallow_layer", None)
        conf.get("model", {}).pop("deep_layer", None)
    return {"config": conf, "model": fingerprint(model), "device": device.type, "split": split,
            "data": fingerprint(files_fingerprint(files), labels, idx)}


def _features_fn(features: nn.Module, device: torch.device, dtype: torch.dtype, want_h: bool,
                 want_mean: bool, split: str, on_bad_image: str) -> BatchFn:
    """Per batch: labels, the features h (``want_h``) and the sum of the images (``want_mean``)."""
    @torch.no_grad()
    def fn(batch: dict[str, Any], pos: torch.Tensor) -> dict[str, Any]:
        pos, out = readable(batch, pos, split, on_bad_image)
        if not len(pos):
            return out
        x = batch["image"].to(device)
        out["label"] = batch["label"].int()
        if "group" in batch:  # images with groups (Waterbirds): worst-group accuracy
            out["group"] = batch["group"].int()
        if want_h:
            out["h"] = features(x).float().to(dtype).cpu()
        if want_mean:
            out["sum:image"] = x.sum(0, dtype=torch.float64).cpu()
        return out
    return fn


def _xgir_fn(model: nn.Module, features: nn.Module, head: nn.Module, deep: str, shallow: str | None,
             tree: ConfusionTree | None, level: float, xcfg: XGIRConfig, data_mean: torch.Tensor | None,
             size: tuple[int, int], device: torch.device, dtype: torch.dtype, shown: set[int],
             on_bad_image: str, core_model: nn.Module | None = None) -> BatchFn:
    """Per batch: true-class heatmaps (h from the same forward unless CWOX), supports, r. A
    label-free core (``xgir.core``) is the map of ``core_model`` when given (``xgir.core_model``),
    else of ``model``."""
    def fn(batch: dict[str, Any], pos: torch.Tensor) -> dict[str, Any]:
        pos, out = readable(batch, pos, "source_train", on_bad_image)
        if not len(pos):
            return out
        x = batch["image"].to(device)
        y = batch["label"]
        with head_input(head) as got:
            maps = true_class_heatmaps(model, x, y.to(device), deep, batch_size=len(x))
        out["label"] = y.int()
        if xcfg.core != "explainer":  # a label-free core source (a variant, xgir_variants)
            maps = core_heatmaps(xcfg.core, core_model if core_model is not None else model, x, deep,
                                 top_k=xcfg.top_k)
        if tree is None:
            if len(got) != 1:
                raise XgirError(f"the head ran {len(got)} times in one Grad-CAM forward; expected once")
            out["h"] = got[0].float().to(dtype).cpu()
        elif xcfg.core == "explainer":
            maps, fb = cwox_true_cluster_heatmaps(model, x, y, tree, level, maps, deep, shallow or "",
                                                  batch_size=len(x))
            out["sum:fallback"] = torch.tensor(fb * len(x), dtype=torch.float64)
        sup = (support_top_fraction(maps, size, xcfg.support_fraction) if xcfg.support_fraction is not None
               else support_from_heatmaps(maps, size, xcfg.delta1))
        x0 = empty_images(x, xcfg.empty, data_mean=data_mean, blur_sigma=xcfg.blur_sigma)
        r = unit_responses(features, x, sup, x0, batch_size=len(x), response=xcfg.response)
        out["r"] = r.float().to(dtype).cpu()
        if xcfg.variant == "swap" and xcfg.context == "background":  # one more forward: the partners' contexts
            wide = support_top_fraction(maps, size, xcfg.context_fraction)
            out["bg"] = background_features(features, x, wide, x0, batch_size=len(x)).float().to(dtype).cpu()
        out["empty"] = ~sup.flatten(1).any(1).cpu()
        out["sum:kept"] = torch.tensor(float(sup.float().mean()) * len(x), dtype=torch.float64)
        take = [j for j, p in enumerate(pos.tolist()) if p in shown]
        examples = []
        if take:  # for the figure
            up = F.interpolate(maps[take, None].float(), size=size, mode="bilinear", align_corners=False)
            for k, j in enumerate(take):
                examples.append({"image": x[j].cpu(), "map": up[k, 0].detach().cpu(),
                                 "support": sup[j].float().cpu(), "label": y[j]})
        out["list:examples"] = examples
        return out
    return fn


def run_passes(dist: Dist, cfg: Any, xcfg: XGIRConfig, model: nn.Module, features: nn.Module, head: nn.Module,
               deep: str, shallow: str | None, datasets: dict[str, Any], idx: dict[str, torch.Tensor],
               num_classes: int, device: torch.device, run_dir: Path, progress: bool,
               core_model: nn.Module | None = None) -> PassResults | None:
    """Every pass of ``xgir correct``, sharded over the ranks of ``dist``; the results on
    rank 0, None on the other ranks (which have done their share). ``core_model``: the network
    whose own head gives a ``pretrained`` core (``xgir.core_model``; its weights join the key)."""
    ps: PassesSection = cfg.passes
    dtype = torch.float16 if ps.store == "float16" else torch.float32
    size = (cfg.data.image_size, cfg.data.image_size)

    def run(split: str, name: str, fn: Any) -> PassPlan:
        ds = datasets[split]
        key = pass_key(cfg, model, device, split, ds.files, ds.labels, idx[split], name == "xgir") | {"pass": name}
        if name == "xgir" and core_model is not None:
            key["core_model"] = fingerprint(core_model)
        return sharded_pass(dist, run_dir, f"{split}-{name}", key, GuardedImages(ds), idx[split], fn,
                            batch_size=cfg.data.batch_size, chunk_images=ps.chunk_images,
                            workers=cfg.data.workers, resume=ps.resume, progress=progress,
                            collate_fn=collate_readable)

    h_train = data_mean = tree = None
    want_mean = empty_name(xcfg.empty) == "data-mean"
    cwox = cfg.explainer == "cwox"
    if cwox or want_mean:  # what must be known before the first response
        plan = run("source_train", "features" if cwox else "mean",
                   _features_fn(features, device, dtype, cwox, want_mean, "source_train", cfg.data.on_bad_image))
        if dist.is_main:  # rank 0 reads the pass; the others get the mean image and the tree from it
            pre = load_pass(plan)
            if want_mean:
                data_mean = (pre["sum:image"] / max(1, len(pre.get("label", ())))).float()
            if cwox:
                h_train = pre["h"]
                with torch.no_grad():
                    probs = torch.softmax(copy.deepcopy(head).cpu()(h_train.float()), dim=1)
                tree = ConfusionTree.from_top_labels(top_label_sets(probs), num_classes,
                                                     datasets["source_train"].classes,
                                                     meta={"k": 5, "mass": 0.95, "dataset": "source_train"})
        data_mean, tree = dist.exchange((data_mean, tree))[0]

    n_train = len(idx["source_train"])
    shown = set(torch.linspace(0, n_train - 1, min(6, n_train)).round().long().unique().tolist())
    main_plan = run("source_train", "xgir", _xgir_fn(model, features, head, deep, shallow, tree, cfg.cwox_level,
                                                     xcfg, data_mean, size, device, dtype, shown,
                                                     cfg.data.on_bad_image, core_model))
    others = {k: run(k, "features", _features_fn(features, device, torch.float32, True, False, k,
                                                 cfg.data.on_bad_image))
              for k in datasets if k != "source_train"}
    dist.release()  # every rank has passed the last meeting: rank 0 goes on alone
    if not dist.is_main:
        return None
    main = load_pass(main_plan)
    skipped: dict[str, list[str]] = {k: [] for k in datasets}

    def readable_rows(split: str, res: dict[str, Any]) -> dict[str, Any]:
        skipped[split] = [str(datasets[split].files[i]) for i in res.get("list:skipped", [])]
        if "label" not in res:
            raise XgirError(f"data.{split}: no readable images ({len(skipped[split])} skipped)")
        return res

    main = readable_rows("source_train", main)
    h = {"source_train": (h_train if h_train is not None else main["h"]).float()}
    labels = {"source_train": main["label"].long()}
    groups: dict[str, torch.Tensor] = {}
    for k, plan in others.items():
        res = readable_rows(k, load_pass(plan))
        h[k], labels[k] = res["h"].float(), res["label"].long()
        if "group" in res:
            groups[k] = res["group"].long()
    n_train = len(labels["source_train"])
    ex = main.get("list:examples", [])
    examples = {"images": [e["image"] for e in ex], "maps": [e["map"] for e in ex],
                "supports": [e["support"] for e in ex], "labels": [e["label"] for e in ex]}
    return PassResults(h=h, labels=labels, r=main["r"].float(), empty=main["empty"],
                       support_share=float(main["sum:kept"]) / n_train,
                       fallback=float(main.get("sum:fallback", 0.0)) / n_train if cwox else None,
                       examples=examples, data_mean=data_mean, skipped=skipped, groups=groups,
                       background=main["bg"].float() if "bg" in main else None)
