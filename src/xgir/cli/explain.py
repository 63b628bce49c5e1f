"""``xgir explain``: explain a checkpoint's decisions on dataset images.

Writes into ``--out``: ``heatmaps.png`` (overlays, one row per image, one column per target)
and ``maps.npy`` float32[N,T,H,W] with ``explain.json`` (method, layer, targets, labels,
predictions); for ``--method cwox`` one ``cwox-XXX.png`` figure per image, ``cwox.json``
(clusters and probabilities), ``cluster_maps.npy`` float32[N,M,H,W] and ``class_maps.npy``
float32[N,S,H,W] (zero-padded; the JSON lists which cluster / class each slot holds) and the
confusion tree (``--tree``, fitted on the split and saved when the file does not exist).
Every file is written atomically.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
import typer
import yaml

from xgir.errors import XgirError
from xgir.io import atomic_path, write_json

SIGNED = {"ig", "input-x-gradient", "deeplift", "deepshap", "occlusion", "expected-gradients"}


def save_npy(path: Path, array: np.ndarray) -> Path:
    """``np.save`` to ``path`` atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, array)
    return path


def parse_params(items: list[str]) -> dict[str, Any]:
    """``["n_steps=32", "baseline=blur"]`` -> ``{"n_steps": 32, "baseline": "blur"}``."""
    params: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise XgirError(f"--param expects KEY=VALUE, got '{item}'")
        key, value = item.split("=", 1)
        params[key.strip().replace("-", "_")] = yaml.safe_load(value)
    return params


def _targets(spec: str, labels: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    if spec == "label":
        return labels[:, None]
    if spec == "pred":
        return logits.argmax(1, keepdim=True)
    match = re.fullmatch(r"top(\d+)", spec)
    if match and int(match.group(1)) >= 1:
        k = min(int(match.group(1)), logits.shape[1])
        return logits.topk(k, dim=1).indices
    raise XgirError(f"unknown --target '{spec}'; use label, pred or topK (e.g. top5)")


def run_explain(
    model_path: Path, data: str, method: str, out: Path, split: str = "", n: int = 16,
    seed: int = 0, layer: str = "", shallow_layer: str = "", target: str = "pred",
    tree: Path | None = None, level: float = 0.5, tree_images: int = 1000,
    params: dict[str, Any] | None = None, batch_size: int = 16, device: str = "cpu",
    progress: bool = True,
) -> list[Path]:
    """Explain ``n`` images of a dataset split with ``method``; returns the written files."""
    from tqdm.auto import tqdm

    from xgir.data import dataset_splits, load_dataset
    from xgir.explain import get_explainer
    from xgir.explain.registry import available_explainers
    from xgir.models import get_module, load_checkpoint
    from xgir.train import predict_logits

    if n < 1:
        raise XgirError(f"--n must be at least 1, got {n}")
    if method != "cwox" and method not in available_explainers():
        names = ", ".join(sorted(available_explainers()))
        raise XgirError(f"unknown method '{method}'; choose one of: {names}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise XgirError("--device cuda asked for, but no CUDA device is available")
    params = dict(params or {})
    model, _ = load_checkpoint(model_path, map_location=device)
    for name in (layer, shallow_layer):
        if name:
            get_module(model, name)  # unknown names fail here, listing the valid ones
    split = split or dataset_splits(data)[0]
    needs_data = method in ("expected-gradients", "deepshap") and "baselines" not in params
    extra = 64 if needs_data else 0
    count = max(n + extra, tree_images if method == "cwox" and not (tree and tree.exists()) else 0)
    ds = load_dataset(data, split, seed=seed, n=count)
    if len(ds) < n:
        raise XgirError(f"{data}/{split} has {len(ds)} images, fewer than --n {n}")
    x_all, labels = ds.images[:n], ds.labels[:n]
    try:
        logits = predict_logits(model, x_all, batch_size=max(batch_size, 64))
    except RuntimeError as err:
        raise XgirError(f"the model cannot run on {data} images {tuple(x_all.shape[1:])}: "
                        f"{str(err).splitlines()[0]}") from None
    k = logits.shape[1]
    names = ds.classes if len(ds.classes) == k else [str(c) for c in range(k)]
    out.mkdir(parents=True, exist_ok=True)
    dev = torch.device(device)
    batches = range(0, n, batch_size)
    progress = progress and len(batches) > 1
    if method == "cwox":
        return _run_cwox(model, ds, x_all, labels, logits, names, out, layer, shallow_layer, tree,
                         level, params, batches, batch_size, dev, progress)

    if needs_data:
        if len(ds) < n + 2:
            raise XgirError(f"{method} needs baseline images from data; the split is too small")
        params["baselines"] = ds.images[n:n + extra].to(dev)
    if method in ("gradcam",) and layer:
        params.setdefault("layer", layer)
    explainer = get_explainer(method, **params)
    tg = _targets(target, labels, logits)
    if method == "ganmex":  # its targets are foil classes t != prediction: the next-ranked T classes
        tg = logits.topk(min(tg.shape[1] + 1, k), dim=1).indices[:, 1:]
    maps = []
    for s in tqdm(batches, desc=f"explain {method}", disable=not progress, leave=False):
        xb = x_all[s:s + batch_size].to(dev)
        maps.append(explainer(model, xb, tg[s:s + batch_size].to(dev)).detach().float().cpu())
    heat = torch.cat(maps)
    if heat.shape[-2:] != x_all.shape[-2:]:
        heat = torch.nn.functional.interpolate(heat, size=x_all.shape[-2:], mode="bilinear")
    from xgir.viz import heatmap_grid

    pred = logits.argmax(1)
    rows = [f"y={names[int(labels[i])]} pred={names[int(pred[i])]}" for i in range(n)]
    cols = [f"target {target}" if tg.shape[1] == 1 else f"top-{j + 1}" for j in range(tg.shape[1])]
    if method == "ganmex":
        cols = [f"pred vs rank-{j + 2} class" for j in range(tg.shape[1])]
    written = [
        save_npy(out / "maps.npy", heat.numpy().astype(np.float32)),
        heatmap_grid(x_all, heat, out / "heatmaps.png", row_titles=rows, col_titles=cols,
                     signed=method in SIGNED),
        write_json(out / "explain.json", {
            "method": method, "params": {k: v for k, v in params.items() if k != "baselines"},
            "data": data, "split": split, "seed": seed, "target": target,
            "targets": tg.tolist(), "labels": labels.tolist(), "preds": pred.tolist(),
            "classes": names, "maps": "maps.npy float32[N,T,H,W]",
        }),
    ]
    return written


def _run_cwox(model, ds, x_all, labels, logits, names, out, layer,  # type: ignore[no-untyped-def]
              shallow_layer, tree, level, params, batches, batch_size, dev, progress) -> list[Path]:
    from tqdm.auto import tqdm

    from xgir.explain.clusters import ConfusionTree
    from xgir.explain.cwox import cwox, plot_cwox

    written: list[Path] = []
    tree_path = tree or out / "tree.json"
    if tree is not None and tree.exists():
        ctree = ConfusionTree.load(tree)
    else:
        ctree = ConfusionTree.fit(model, ds, k=int(params.get("k", 5)),
                                  mass=params.get("mass", 0.95))
        written.append(ctree.save(tree_path))
    unknown = set(params) - {"k", "mass", "delta", "relu"}
    if unknown:
        raise XgirError(f"unknown --param for cwox: {', '.join(sorted(unknown))}; "
                        "valid: k, mass, delta, relu")
    results = []
    for s in tqdm(batches, desc="explain cwox", disable=not progress, leave=False):
        results.append(cwox(model, x_all[s:s + batch_size].to(dev), ctree, level=level,
                            deep_layer=layer or None, shallow_layer=shallow_layer or None,
                            **params))
    images = [im for r in results for im in r.images]
    h, w = x_all.shape[-2:]
    m = max(len(im.clusters) for im in images)
    s_max = max(1, max(sum(len(c) for c, cm in zip(im.clusters, im.class_maps, strict=True)
                           if cm is not None) for im in images))
    cluster_maps = np.zeros((len(images), m, h, w), np.float32)
    class_maps = np.zeros((len(images), s_max, h, w), np.float32)
    slots = []
    for i, im in enumerate(images):
        cluster_maps[i, : len(im.clusters)] = im.cluster_maps.numpy()
        classes: list[int] = []
        for c, cm in zip(im.clusters, im.class_maps, strict=True):
            if cm is not None:
                class_maps[i, len(classes): len(classes) + len(c)] = cm.numpy()
                classes += list(c)
        slots.append(classes)
        written.append(plot_cwox(im, x_all[i], out / f"cwox-{i:03d}.png", class_names=names))
    summary = [r for res in results for r in res.summary()]
    for i, entry in enumerate(summary):
        entry["label"] = int(labels[i])
        entry["class_map_slots"] = slots[i]
    written += [
        save_npy(out / "cluster_maps.npy", cluster_maps),
        save_npy(out / "class_maps.npy", class_maps),
        write_json(out / "cwox.json", {
            "method": "cwox", "deep_layer": results[0].deep_layer,
            "shallow_layer": results[0].shallow_layer, "level": level, "delta": results[0].delta,
            "tree": str(tree_path), "classes": names, "images": summary,
        }),
    ]
    return written


def register(app: typer.Typer) -> None:
    @app.command("explain")
    def explain_cmd(
        model: Path = typer.Option(..., help="checkpoint written by xgir.models.save_checkpoint"),
        data: str = typer.Option(..., help="dataset name (decoy-digits, background-shift, ...)"),
        method: str = typer.Option("gradcam", help="gradcam, cwox, ig, saliency, deeplift, ..."),
        out: Path = typer.Option(..., help="output folder"),
        split: str = typer.Option("", help="split (default: the dataset's first)"),
        n: int = typer.Option(16, help="number of images to explain (the split's first n)"),
        seed: int = typer.Option(0, help="dataset seed"),
        layer: str = typer.Option("", help="Grad-CAM / CWOX cluster layer (default: last spatial)"),
        shallow_layer: str = typer.Option("", help="CWOX class-map layer (default: finer one)"),
        target: str = typer.Option("pred", help="label, pred or topK, e.g. top5 (not for cwox)"),
        tree: Path = typer.Option(None, help="CWOX confusion tree JSON (fitted, saved if missing)"),
        level: float = typer.Option(0.5, help="CWOX tree cut level in [0, 1]"),
        tree_images: int = typer.Option(1000, help="CWOX: images used to fit a new tree"),
        param: list[str] = typer.Option([], help="explainer parameter KEY=VALUE (repeatable)"),
        batch_size: int = typer.Option(16, help="images per explainer call"),
        device: str = typer.Option("cpu", help="cpu or cuda"),
    ) -> None:
        """Explain a classifier on dataset images: heatmap overlays (PNG) and raw maps (.npy)."""
        written = run_explain(model, data, method, out, split, n, seed, layer, shallow_layer,
                              target, tree, level, tree_images, parse_params(param), batch_size,
                              device)
        typer.echo(f"wrote {len(written)} files to {out}")
