"""``xgir train --config FILE.yaml``: ERM or the two-stage setup, evaluation, results JSON; mode
head (a new head on a pretrained network) is run by :mod:`xgir.train.pretrained`."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from xgir.data import load_dataset
from xgir.errors import XgirError
from xgir.io import check_output_folder, run_folder, write_json, write_text
from xgir.models import build_model, save_checkpoint, split
from xgir.models.inference import resolve_device
from xgir.progress import iterate, step
from xgir.train.config import HeadTrainConfig, TrainConfig
from xgir.train.erm import accuracy_by_group, fit_classifier
from xgir.train.features import cached_features, fit_head, linear_probe
from xgir.train.two_stage import frozen_with_new_head, pretrain_accuracy, pretrain_extractor


def _dataset_key(cfg: TrainConfig, split_name: str) -> str:
    return f"{cfg.data.name}/{split_name}/seed={cfg.seed}/{sorted(cfg.data.params.items())}"


def evaluate_splits(model: torch.nn.Module, cfg: TrainConfig, progress: bool = False) -> dict[str, Any]:
    """Accuracy, per-group and worst-group accuracy on each eval split."""
    out = {}
    for name in iterate(cfg.data.eval_splits, desc="evaluate", enabled=progress, unit="split"):
        ds = load_dataset(cfg.data.name, name, seed=cfg.seed, **cfg.data.params)
        out[name] = accuracy_by_group(model, ds)
    return out


def run_training(cfg: TrainConfig | HeadTrainConfig, progress: bool = True,
                 head_methods: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Train as ``cfg`` says, save ``model.pt``, ``results.json`` and ``report.md`` in ``cfg.out``.
    ``head_methods``: more ``head.method`` fits for mode head (``xgir train`` passes the anchors,
    :data:`xgir.correct.anchor_heads.ANCHOR_HEADS`)."""
    if isinstance(cfg, HeadTrainConfig):
        from xgir.train.pretrained import run_head_training

        return run_head_training(cfg, progress, head_methods)
    if cfg.mode == "two-stage" and cfg.model.arch == "bcos-resnet":
        raise XgirError("mode two-stage fits a linear head on frozen features; bcos-resnet's head is a B-cos "
                        "convolution before the pooling: use mode erm")
    start = time.time()
    out = Path(cfg.out)
    resolve_device(cfg.device, "device:")
    check_output_folder(out, "output folder")
    with step(f"building {cfg.data.name}/{cfg.data.train_split}", enabled=progress):
        train = load_dataset(cfg.data.name, cfg.data.train_split, seed=cfg.seed, **cfg.data.params)
    params = {**cfg.model.params, "num_classes": train.num_classes}
    from xgir.models.zoo import ARCHITECTURES

    if cfg.model.arch in ARCHITECTURES:  # the data's channels and size, for the architectures that take them
        import inspect

        takes = inspect.signature(ARCHITECTURES[cfg.model.arch]).parameters
        if "in_channels" in takes:
            params.setdefault("in_channels", train.image_shape[0])
        if "image_size" in takes:
            params.setdefault("image_size", train.image_shape[1])
    for key, found, what in (("in_channels", train.image_shape[0], "channels"),
                             ("image_size", train.image_shape[1], "pixels a side")):
        if key in params and params[key] != found:
            raise XgirError(f"model.params.{key} is {params[key]} but {cfg.data.name} images have {found} {what}; "
                            f"remove {key} or set it to {found}")
    build_model(cfg.model.arch, **params)  # its parameters checked before any training
    results: dict[str, Any] = {"config": cfg.model_dump(), "mode": cfg.mode}
    if cfg.mode == "erm":
        torch.manual_seed(cfg.seed)
        model = build_model(cfg.model.arch, **params).to(cfg.device)
        fit_classifier(model, train, epochs=cfg.train.epochs, lr=cfg.train.lr,
                       batch_size=cfg.train.batch_size, weight_decay=cfg.train.weight_decay,
                       seed=cfg.seed, progress=progress)
    else:
        pre = pretrain_extractor(cfg.pretrain, cfg.model, seed=cfg.seed, device=cfg.device, progress=progress)
        results["pretrain"] = pretrain_accuracy(pre, cfg.seed, cfg.pretrain)
        torch.manual_seed(cfg.seed)
        model = frozen_with_new_head(pre, cfg.model.arch, params, train.num_classes).to(cfg.device)
        features, head = split(model, "fc")
        h = cached_features(features, train, _dataset_key(cfg, cfg.data.train_split), progress=progress)
        fit_head(h, train.labels, train.num_classes, epochs=cfg.train.epochs, lr=cfg.train.lr,
                 batch_size=cfg.train.batch_size, weight_decay=cfg.train.weight_decay,
                 seed=cfg.seed, head=head)
        if cfg.probe and "target-val" in _splits(cfg) and "target-test" in _splits(cfg):
            results["probe"] = probe_two_factors(features, cfg)
    results["splits"] = evaluate_splits(model, cfg, progress)
    results["seconds"] = round(time.time() - start, 1)
    with run_folder(out, "output folder") as tmp:  # the three files as a set
        save_checkpoint(model, tmp / "model.pt", cfg.model.arch, params,
                        meta={"mode": cfg.mode, "image_size": int(train.image_shape[1])})  # the size it was trained at
        write_json(tmp / "results.json", results)
        write_text(tmp / "report.md", format_report(results))
    return results


def _splits(cfg: TrainConfig) -> tuple[str, ...]:
    from xgir.data import dataset_splits

    return dataset_splits(cfg.data.name)


def probe_two_factors(features: torch.nn.Module, cfg: TrainConfig) -> dict[str, float]:
    """Linear probes on the frozen features: fitted on ``target-val`` (texture independent of
    the digit), scored on ``target-test``, for the digit label and the texture family."""
    fit = load_dataset(cfg.data.name, "target-val", seed=cfg.seed, **cfg.data.params)
    score = load_dataset(cfg.data.name, "target-test", seed=cfg.seed, **cfg.data.params)
    hf = cached_features(features, fit, _dataset_key(cfg, "target-val"))
    hs = cached_features(features, score, _dataset_key(cfg, "target-test"))
    return {
        "digit": linear_probe(hf, fit.labels, hs, score.labels),
        "texture": linear_probe(hf, fit.extras["texture"], hs, score.extras["texture"]),
    }


def format_report(results: dict[str, Any]) -> str:
    """A Markdown summary: accuracy and worst-group accuracy per split, probes."""
    lines = [f"# Training results ({results['mode']})", "", "| split | accuracy | worst group |",
             "|---|---|---|"]
    for name, r in results["splits"].items():
        wg = r.get("worst_group")
        lines.append(f"| {name} | {r['accuracy']:.3f} | {'' if wg is None else f'{wg:.3f}'} |")
    if "pretrain" in results:
        p = results["pretrain"]
        lines += ["", f"Stage-1 network on glyph-pretrain/val: char {p['char']:.3f}, texture {p['texture']:.3f}"]
    if "probe" in results:
        p = results["probe"]
        lines += ["", "Linear probes on the frozen features (fit target-val, score target-test): "
                  f"digit {p['digit']:.3f}, texture {p['texture']:.3f}"]
    return "\n".join(lines) + "\n"
