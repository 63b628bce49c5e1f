"""``xgir train`` mode ``head``: a new linear head on a pretrained network's frozen features.

The network (any :func:`xgir.models.load_model` spec) is split at its head; the features h
[N,D] of ``data.train`` and of every ``data.eval`` split are extracted once by the sharded,
resumable features pass and cached under ``$XGIR_CACHE/features`` (keyed by the network's
weights, its preprocessing and the images: file name, size and modification time for
folders); a new ``nn.Linear(D, K)`` for the K classes of ``data.train`` (class folder names,
or landbird / waterbird for Waterbirds) is fitted on them by ``head.method``
(:data:`HEAD_METHODS`). ``out`` gets ``model.pt`` (the network with its head replaced, a
:func:`~xgir.models.save_loaded` checkpoint: ``--model out/model.pt`` for a built-in or zoo
network, ``--model FACTORY --weights out/model.pt`` for a factory's), ``results.json`` and
``report.md`` (accuracy per split; per-group and worst-group accuracy where the images have
groups, e.g. Waterbirds). Under ``torchrun --nproc_per_node=N -m xgir train ...`` the ranks
share the features passes; rank 0 fits the head and writes the outputs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from xgir.data.checks import check_class_counts, open_split
from xgir.errors import XgirError
from xgir.io import check_output_folder, fingerprint, run_folder, write_json, write_text
from xgir.models.accuracy import accuracy_from_predictions
from xgir.models.inference import resolve_device
from xgir.models.load import LoadedModel, load_model, reload_options, save_loaded
from xgir.models.split import replace_head, split
from xgir.sharded import Dist, init_dist
from xgir.train.config import HeadSection, HeadTrainConfig
from xgir.train.features import cached_pass_features, fit_head, images_fingerprint


@dataclass
class SplitFeatures:
    """One split on the frozen network: features ``h`` float32[N,D], ``labels`` long[N], and
    ``groups`` long[N] with ``group_names`` where the images have groups (Waterbirds); the
    ``classes`` names; the image ``files`` where they were read from files."""

    h: torch.Tensor
    labels: torch.Tensor
    groups: torch.Tensor | None = None
    group_names: list[str] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)


HeadFit = tuple[nn.Linear, dict[str, Any]]
"""A fitted head ``nn.Linear(D, K)`` and what the method records (for results.json)."""
HeadMethod = Callable[[SplitFeatures, dict[str, SplitFeatures], Any, int, int], HeadFit]
"""``fit(train, evals, settings, num_classes, seed)``: ``settings`` is the ``head:`` section."""


def fit_erm(train: SplitFeatures, evals: dict[str, SplitFeatures], settings: HeadSection, num_classes: int,
            seed: int) -> HeadFit:
    """``head.method: erm``: cross-entropy on every training image (Adam, minibatches)."""
    head = fit_head(train.h, train.labels, num_classes, epochs=settings.epochs, lr=settings.lr,
                    batch_size=settings.batch_size, weight_decay=settings.weight_decay, seed=seed)
    return head, {}


HEAD_METHODS: dict[str, HeadMethod] = {"erm": fit_erm}
"""``head.method`` -> how the new head is fitted (a method with group labels or a held-out part
of train finds them in its arguments). The annotation-free anchors (``afr``, ``class-balanced``,
``error-upweighting``) are corrections: :data:`xgir.correct.anchor_heads.ANCHOR_HEADS`, passed in
as ``methods`` (``xgir train`` does)."""


def run_head_training(cfg: HeadTrainConfig, progress: bool = True,
                      methods: Mapping[str, HeadMethod] | None = None) -> dict[str, Any]:
    """Fit and save the new head (see the module docstring); the results dict (also
    results.json) on rank 0, ``{"rank", "world"}`` on the other ranks under torchrun."""
    start = time.time()
    check_output_folder(cfg.out, "out")  # before any work
    dist = init_dist(resolve_device(cfg.device, "device:"))
    with dist.session():  # guarded on every rank; the process group closed at the end
        return _run(cfg, dist, start, progress, {**HEAD_METHODS, **(methods or {})})


def _run(cfg: HeadTrainConfig, dist: Dist, start: float, progress: bool,
         methods: Mapping[str, HeadMethod]) -> dict[str, Any]:
    loaded = load_model(cfg.model.spec, weights=cfg.model.weights, kwargs=cfg.model.kwargs, device=dist.device)
    head_name = cfg.model.head or loaded.head
    try:
        features, old_head = split(loaded.model, head_name)
    except XgirError as err:
        raise XgirError(f"model.head: {err}") from None
    pre = loaded.preprocess if cfg.data.fit is None else loaded.preprocess.with_fit(cfg.data.fit)
    hint = "data.classes lists the class folders in label order"
    train = open_split(cfg.data.train, "train", pre, cfg.data.classes, hint, in_memory=True)
    check_class_counts(train, "train", required=True)
    classes = list(train.classes)
    if len(classes) < 2:
        raise XgirError(f"data.train: '{cfg.data.train}' has {len(classes)} class; a classifier needs at least 2")
    same = f"every split needs data.train's classes ({', '.join(classes[:8])}{', ...' if len(classes) > 8 else ''})"
    evals = {k: open_split(spec, f"eval.{k}", pre, classes, same, in_memory=True) for k, spec in cfg.data.eval.items()}
    model_fp = fingerprint(loaded.model)

    def extract(ds: Any) -> SplitFeatures:
        idx = torch.arange(len(ds))
        fp = fingerprint({"model": model_fp, "head": head_name, "preprocess": repr(pre),
                          "images": images_fingerprint(ds, idx)})
        h = cached_pass_features(dist, features, ds, fp, batch_size=cfg.data.batch_size,
                                 chunk_images=cfg.data.chunk_images, workers=cfg.data.workers, progress=progress)
        return SplitFeatures(h.float(), ds.labels.clone(), None if ds.groups is None else ds.groups.clone(),
                             list(ds.group_names), list(classes), [str(f) for f in (ds.files or [])])

    feats = {"train": extract(train), **{k: extract(ds) for k, ds in evals.items()}}
    dist.release()  # every rank has passed the last meeting: rank 0 goes on alone
    if not dist.is_main:
        return {"rank": dist.rank, "world": dist.world}
    evals_h = {k: v for k, v in feats.items() if k != "train"}
    if cfg.head.method not in methods:
        raise XgirError(f"head.method {cfg.head.method!r} is an annotation-free anchor of xgir.correct: run it with "
                        "xgir train, or pass methods=xgir.correct.anchor_heads.ANCHOR_HEADS")
    head, record = methods[cfg.head.method](feats["train"], evals_h, cfg.head, len(classes), cfg.seed)
    splits = {}
    with torch.no_grad():
        for k, f in feats.items():
            splits[k] = accuracy_from_predictions(head(f.h).argmax(1), f.labels, f.groups, f.group_names)
    net = replace_head(loaded.model.cpu(), head_name, head.cpu())
    new = LoadedModel(net, pre, classes, loaded.spec, head=head_name, layer=loaded.layer,
                      shallow_layer=loaded.shallow_layer, kwargs=dict(loaded.kwargs), arch=loaded.arch)
    out = Path(cfg.out)
    results: dict[str, Any] = {
        "config": cfg.model_dump(), "mode": "head", "method": cfg.head.method, "model": loaded.spec,
        "head": {"name": head_name, "replaced": list(old_head.weight.shape), "new": list(head.weight.shape)},
        "classes": classes, "images": {k: len(f.labels) for k, f in feats.items()}, "splits": splits,
        "record": record, "reload": reload_options(new, out / "model.pt"), "device": str(dist.device),
        "processes": dist.world, "seconds": round(time.time() - start, 1),
    }
    with run_folder(out, "out") as tmp:  # the three files as a set
        save_loaded(new, tmp / "model.pt", meta={"mode": "head", "method": cfg.head.method})
        write_json(tmp / "results.json", results)
        write_text(tmp / "report.md", head_report(results, cfg))
    return results


def head_report(results: dict[str, Any], cfg: HeadTrainConfig) -> str:
    """Markdown: what was fitted, accuracy and worst-group accuracy per split, per-group rows,
    and how to load the model."""
    from xgir.train.runner import format_report

    h = results["head"]
    k, d = h["new"]
    lines = [format_report(results).rstrip("\n"), "",
             f"A new head `{h['name']}` nn.Linear({d}, {k}) (was {h['replaced'][0]} outputs) for the classes "
             f"{', '.join(results['classes'][:10])}{', ...' if k > 10 else ''}, fitted by {results['method']} on the "
             f"frozen features of {results['model']}; images: "
             + ", ".join(f"{s} {n}" for s, n in results["images"].items()) + "."]
    for name, acc in results["splits"].items():
        if "groups" in acc:
            lines.append(f"- {name} per group: " + ", ".join(f"{g} {a:.3f}" for g, a in acc["groups"].items()))
    s, record = cfg.head, results["record"]
    if "summary" in record:  # an anchor (xgir.correct.anchor_heads)
        lines += ["", f"Method: {record['summary']}."]
    erm_line = f"{s.epochs} epochs, lr {s.lr:g}, batch {s.batch_size}, weight decay {s.weight_decay:g}"
    if "erm_head_accuracy" in record:
        lines.append(f"Its ERM head ({erm_line}) alone: "
                     + ", ".join(f"{name} {a:.3f}" for name, a in record["erm_head_accuracy"].items()) + ".")
    lines += ["", (f"Head: {erm_line}, seed" if s.method == "erm" else "Seed") +
              f" {cfg.seed}. Run time {results['seconds']} s on {results['device']}.",
              f"Load it with `{results['reload']}`" + (f" (the factory called with model.kwargs {cfg.model.kwargs}: "
                                                       "name them in a config's model section)"
                                                       if cfg.model.kwargs and "--weights" in results["reload"]
                                                       else "") + "."]
    return "\n".join(lines) + "\n"
