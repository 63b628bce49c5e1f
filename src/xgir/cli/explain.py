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
        try:
            params[key.strip().replace("-", "_")] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise XgirError(f"--param {item}: cannot read the value (a number, a name, true/false or "
                            "a [list])") from None
    return params


def _targets(spec: str, labels: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    if spec == "label":
        return labels[:, None]
    if spec == "pred":
        return logits.argmax(1, keepdim=True)
    match = re.fullmatch(r"top(\d+)", spec)
    k = int(match.group(1)) if match else 0
    if k >= 1:
        if k > logits.shape[1]:
            raise XgirError(f"--target {spec}: the model has {logits.shape[1]} classes; "
                            f"use top1 to top{logits.shape[1]}")
        return logits.topk(k, dim=1).indices
    raise XgirError(f"unknown --target '{spec}'; use label, pred or topK (e.g. top5)")


def _all_targets(spec: str, labels: torch.Tensor, logits: torch.Tensor, foils: bool) -> torch.Tensor:
    """Target classes long[N,T] of ``--target``; for a foil method the next-ranked T classes
    after the prediction."""
    tg = _targets(spec, labels, logits)
    if foils:  # foil classes t != prediction: the next-ranked T classes
        tg = logits.topk(min(tg.shape[1] + 1, logits.shape[1]), dim=1).indices[:, 1:]
    return tg


def _sharded_maps(dist: Any, explainer: Any, model: torch.nn.Module, x_all: torch.Tensor, labels: torch.Tensor,
                  target: str, foils: bool, out: Path, key: dict[str, Any], batch_size: int, chunk: int,
                  progress: bool, method: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """The maps float[N,T,h,w], logits float[N,K] and targets long[N,T] of every image, each
    rank explaining its chunks (see :mod:`xgir.sharded`; chunks under ``out/passes``); on
    rank 0, None on the others."""
    from xgir.sharded import load_pass, sharded_pass
    from xgir.train import predict_logits

    def fn(_batch: Any, pos: torch.Tensor) -> dict[str, Any]:
        xb = x_all[pos].to(dist.device)
        logits = predict_logits(model, xb, batch_size=len(xb)).float().cpu()
        if not bool(torch.isfinite(logits).all()):
            raise XgirError("the model's outputs are not finite (NaN or inf weights?); it cannot be explained")
        tg = _all_targets(target, labels[pos], logits, foils)
        maps = explainer(model, xb, tg.to(dist.device)).detach().float().cpu()
        return {"maps": maps, "logits": logits, "targets": tg}

    n = len(x_all)
    plan = sharded_pass(dist, out / "passes", f"explain-{method}", key, range(n), torch.arange(n), fn,
                        batch_size=batch_size, chunk_images=chunk, progress=progress)
    dist.release()  # rank 0 writes the outputs alone
    if not dist.is_main:
        return None
    res = load_pass(plan)
    return res["maps"].clone(), res["logits"].clone(), res["targets"].clone()


DEFAULT_N = 16


def _image_spec(images: str | list[str] | None, data: str | None, split: str) -> str | list[str]:
    if images and data:
        raise XgirError("give --images or --data/--split, not both (--data NAME --split S is --images NAME:S)")
    if images:
        if split:
            raise XgirError("--split goes with --data; with --images write NAME:SPLIT")
        return images
    if data:
        return f"{data}:{split}" if split else data
    raise XgirError("no images: give --images SPEC (e.g. photos, decoy-digits:test, a folder or files)")


def run_explain(
    model_path: str | Path, data: str | None, method: str, out: Path, *, split: str = "",
    n: int | None = None, seed: int = 0, layer: str = "", shallow_layer: str = "",
    target: str = "pred", tree: Path | None = None, level: float | None = None, tree_images: int = 1000,
    params: dict[str, Any] | None = None, batch_size: int = 16, device: str = "cpu",
    progress: bool = True, images: str | list[str] | None = None, tree_source: str = "auto",
    chunk_images: int = 256, weights: str | Path | None = None, class_folders: str = "names",
    draw: str = "blended_heat_map", sign: str = "auto", percentile: float = 99.0,
) -> list[Path]:
    """Explain images with ``method``; returns the written files.

    Args:
        model_path: a model spec (:func:`xgir.models.load_model`: built-in name, checkpoint,
            factory); ``weights`` for a factory.
        data, split: an embedded dataset and split (the older form of ``images``).
        images: an image spec (:func:`xgir.data.images.load_images`).
        n: the first ``n`` images (None: up to 16 of a dataset or folder, all files/photos).
        tree_source: CWOX tree when ``tree`` does not exist: ``images`` (top-label
            co-occurrence over ``tree_images`` images of the dataset), ``head`` (the head's
            weight vectors, data-free) or ``auto`` (images for embedded datasets, else head).
        chunk_images: under ``torchrun``: images per resumable chunk (rounded up to a whole
            number of batches), written under ``out/passes`` and shared out over the processes.
        class_folders: how a class folder's folders name the model's classes: ``names`` or
            ``index`` (:func:`xgir.data.images.folder_labels`).
        draw, sign, percentile: how heatmaps.png draws the maps (:func:`xgir.viz.heatmap_grid`:
            Captum's methods and signs; ``sign="auto"``: ``all`` for a signed explainer, else
            ``positive``), clipped at the ``percentile``-th percentile of |A|.

    Under ``torchrun --nproc_per_node=N`` (not for cwox) every process reads the images and
    explains its chunks (logits, targets and maps of each batch); rank 0 gathers them in
    dataset order and writes the outputs once (the other ranks return no files). A killed
    run started again with the same arguments resumes from the chunks.
    """
    from xgir.data.images import is_embedded, load_images
    from xgir.explain import get_explainer
    from xgir.explain.registry import EXPLAINERS, canonical_params, check_params, explainer_info
    from xgir.io import check_output_folder, fingerprint, mark_run_folder, run_folder
    from xgir.models import get_module, load_model
    from xgir.models.inference import resolve_device
    from xgir.progress import iterate
    from xgir.sharded import init_dist, launched_world
    from xgir.train import predict_logits

    if n is not None and n < 1:
        raise XgirError(f"--n must be at least 1, got {n}")
    if batch_size < 1:
        raise XgirError(f"--batch-size must be at least 1, got {batch_size}")
    if chunk_images < 1:
        raise XgirError(f"--chunk-images must be at least 1, got {chunk_images}")
    if method not in EXPLAINERS:
        raise XgirError(f"unknown method '{method}'; choose one of: {', '.join(sorted(EXPLAINERS))}")
    if tree_source not in ("auto", "images", "head"):
        raise XgirError(f"--tree-source must be auto, images or head, got '{tree_source}'")
    if level is not None and not 0.0 <= level <= 1.0:
        raise XgirError(f"--level is a cut distance in [0, 1], got {level}")
    from xgir.config import check_seed

    check_seed(seed)
    if class_folders not in ("names", "index"):
        raise XgirError(f"--class-folders must be names or index, got '{class_folders}'")
    from xgir.viz.normalize import check_options

    check_options("positive" if sign == "auto" else sign, draw, percentile)
    if sign == "auto" and draw in ("masked_image", "alpha_scaling") and method in EXPLAINERS \
            and EXPLAINERS[method].signed:
        raise XgirError(f"--draw {draw} cannot show both signs of {method}'s maps; add --sign positive, "
                        "absolute_value or negative")
    dev = resolve_device(device)
    check_output_folder(out, "--out")
    params = dict(params or {})
    if method in EXPLAINERS:
        check_params(method, canonical_params(method, params), "--param ")
    spec = _image_spec(images, data, split)
    if method == "cwox" and launched_world() > 1:
        raise XgirError("--method cwox runs on one process (its confusion tree needs every image first); "
                        "run it without torchrun")
    dist = init_dist(dev)
    with dist.session():  # guarded on every rank; the process group closed at the end
        dev = dist.device  # under torchrun on CUDA: this rank's GPU
        loaded = load_model(model_path, weights=weights, device=dev)
        model = loaded.model
        for name in (layer, shallow_layer):
            if name:
                get_module(model, name)  # unknown names fail here, listing the valid ones
        layer = layer or (loaded.layer or "")
        shallow_layer = shallow_layer or (loaded.shallow_layer or "")
        ds = load_images(spec, loaded.preprocess, n=n, seed=seed, limit=DEFAULT_N, model_classes=loaded.classes,
                         class_folders=class_folders)  # type: ignore[arg-type]  # checked above
        n = len(ds)
        x_all, labels = ds.images, ds.labels
        try:  # under torchrun each rank predicts its own chunks; here the first image shows the classes
            logits = predict_logits(model, x_all if dist.world == 1 else x_all[:1], batch_size=max(batch_size, 32))
        except RuntimeError as err:
            raise XgirError(f"the model cannot run on these images {tuple(x_all.shape[1:])}: "
                            f"{str(err).splitlines()[0]}") from None
        if not bool(torch.isfinite(logits).all()):
            raise XgirError("the model's outputs are not finite (NaN or inf weights?); it cannot be explained")
        k = logits.shape[1]
        names = loaded.classes if len(loaded.classes) == k else (
            ds.classes if len(ds.classes) == k else [str(c) for c in range(k)])
        if target == "label" and bool((labels < 0).any()):
            why = f" ({ds.no_labels})" if ds.no_labels else ""
            raise XgirError(f"these images have no labels{why}; use --target pred or topK (e.g. top5)")
        if dist.is_main:
            mark_run_folder(out)
        batches = range(0, n, batch_size)
        progress = progress and len(batches) > 1
        if method == "cwox":
            source = tree_source if tree_source != "auto" else ("images" if is_embedded(spec) else "head")
            from xgir.cli.explain_cwox import run_cwox

            with run_folder(out, "--out") as tmp:  # the outputs as a set
                written = run_cwox(loaded, spec, seed, ds, x_all, labels, logits, names, tmp, layer, shallow_layer,
                                   tree, level, params, batches, batch_size, dev, progress, source, tree_images)
            return [out / p.relative_to(tmp) if p.is_relative_to(tmp) else p for p in written]

        info = explainer_info(method)
        params = canonical_params(method, params)
        if info.baseline == "data" and "baseline" not in params:  # a distribution of references
            extra = load_images(spec, loaded.preprocess, seed=seed, limit=n + 64) if is_embedded(spec) else ds
            base = extra.images[n:] if len(extra) > n + 1 else extra.images
            if len(base) < 2:
                raise XgirError(f"{method} needs at least 2 baseline images; pass more images or "
                                "--param baseline=zeros")
            params["baseline"] = base.to(dev)
        if info.needs_layer and layer:
            params.setdefault("layer", layer)
        explainer = get_explainer(method, **params)
        if dist.world == 1:
            tg = _all_targets(target, labels, logits, info.targets == "foils")
            maps = []
            for s in iterate(batches, desc=f"explain {method}", enabled=progress, unit="batch"):
                xb = x_all[s:s + batch_size].to(dev)
                maps.append(explainer(model, xb, tg[s:s + batch_size].to(dev)).detach().float().cpu())
            heat = torch.cat(maps)
        else:
            key = {"method": method, "model": fingerprint(model), "images": fingerprint(x_all, labels),
                   "params": {k: fingerprint(v.cpu()) if torch.is_tensor(v) else v for k, v in params.items()},
                   "target": target, "batch_size": batch_size, "device": dev.type}
            chunk = -(-chunk_images // batch_size) * batch_size  # whole batches: the batches of one process
            got = _sharded_maps(dist, explainer, model, x_all, labels, target, info.targets == "foils", out,
                                key, batch_size, chunk, progress, method)
            if got is None:  # another rank: its chunks are on disk, rank 0 writes the outputs
                return []
            heat, logits, tg = got
        if heat.shape[-2:] != x_all.shape[-2:]:
            heat = torch.nn.functional.interpolate(heat, size=x_all.shape[-2:], mode="bilinear")
        from xgir.viz import heatmap_grid

        pred = logits.argmax(1)
        rows = [_row_title(ds, i, names) for i in range(n)]
        titles = panel_titles(target, tg, torch.softmax(logits.float(), 1), names, pred,
                              foils=info.targets == "foils")
        with run_folder(out, "--out") as tmp:  # the outputs as a set (a torchrun run's chunks go with the old folder)
            save_npy(tmp / "maps.npy", heat.numpy().astype(np.float32))
            heatmap_grid(x_all, heat, tmp / "heatmaps.png", row_titles=rows, titles=titles, signed=info.signed,
                         sign=None if sign == "auto" else sign, method=draw, percentile=percentile,
                         suptitle=f"{method} on {loaded.spec}")
            write_json(tmp / "explain.json", {
                "method": method, "params": {k: v for k, v in params.items() if not isinstance(v, torch.Tensor)},
                "model": str(model_path), "images": spec if isinstance(spec, str) else list(spec),
                "data": ds.name, "split": split, "seed": seed, "target": target, "files": ds.files,
                "targets": tg.tolist(), "target_names": [[names[c] for c in row] for row in tg.tolist()],
                "labels": labels.tolist(), "preds": pred.tolist(), "pred_names": [names[int(p)] for p in pred],
                "classes": names if len(names) <= 100 else f"{len(names)} classes of {loaded.spec}",
                "maps": "maps.npy float32[N,T,H,W]",
            })
        return [out / "maps.npy", out / "heatmaps.png", out / "explain.json"]


def _row_title(ds: Any, i: int, names: list[str]) -> str:
    """The row label of image ``i``: its file name (shortened when drawn), or #i, and its true label."""
    label = int(ds.labels[i])
    head = Path(ds.files[i]).name if ds.files else f"#{i}"
    return f"{head}\ny={names[label]}" if 0 <= label < len(names) else head


def panel_titles(target: str, tg: torch.Tensor, probs: torch.Tensor, names: list[str], pred: torch.Tensor,
                 foils: bool = False) -> list[list[str]]:
    """The title of each map: its class name and probability (``1. tiger cat 0.48`` for topK,
    ``pred: ...`` / ``label: ...`` otherwise, ``tiger cat vs tabby`` for foil methods);
    tg long[N,T] the targets, probs float[N,K]."""
    out = []
    for i, row in enumerate(tg.tolist()):
        p = int(pred[i])
        if foils:
            out.append([f"{names[p]} vs {names[c]} ({float(probs[i, c]):.2f})" for c in row])
        elif target.startswith("top"):
            out.append([f"{j + 1}. {names[c]} {float(probs[i, c]):.2f}" for j, c in enumerate(row)])
        else:
            out.append([f"{target}: {names[c]} {float(probs[i, c]):.2f}" for c in row])
    return out


def _methods() -> dict[str, str]:
    """The methods of ``xgir explain`` with one line each, from the explainer declarations."""
    from xgir.explain.registry import EXPLAINERS

    return {name: info.description + (" [signed]" if info.signed else "") for name, info in EXPLAINERS.items()}


METHODS = _methods()


def register(app: typer.Typer) -> None:
    @app.command("explain", epilog="Methods:\n\n" + "\n\n".join(f"  {k}: {v}" for k, v in METHODS.items()))
    def explain_cmd(
        more_images: list[str] = typer.Argument(None, help="more image files or globs (as --images a.jpg b.png)",
                                                show_default=False),
        model: str = typer.Option(..., help="model: a built-in name (efficientnet-lite0), an xgir "
                                  "checkpoint (.pt) or a factory package.module:function"),
        weights: Path = typer.Option(None, help="weights for a factory --model: a state_dict (.pt, .safetensors) "
                                     "or a checkpoint of a model built by that factory"),
        images: list[str] = typer.Option([], help="images: photos[:NAME,...], DATASET[:SPLIT] "
                                         "(decoy-digits:test), a Waterbirds ROOT:SPLIT, a class folder, files or "
                                         "globs (repeatable)"),
        method: str = typer.Option("gradcam", help="explanation method (listed below)"),
        out: Path = typer.Option(..., help="output folder"),
        data: str = typer.Option(None, help="embedded dataset (older form of --images DATASET:SPLIT)"),
        split: str = typer.Option("", help="split of --data (default: the dataset's first)"),
        n: int = typer.Option(None, "--n", "--n-images", help="explain the first N images (default: up to 16 of a "
                              "dataset or folder, all given files); more than there are is an error; under "
                              "torchrun write --n-images (torchrun takes --n as its own option)"),
        seed: int = typer.Option(0, help="dataset seed"),
        layer: str = typer.Option("", help="Grad-CAM / CWOX cluster layer (default: the model's last spatial)"),
        shallow_layer: str = typer.Option("", help="CWOX class-map layer (default: a finer one)"),
        target: str = typer.Option("pred", help="label, pred or topK, e.g. top5 (not for cwox)"),
        tree: Path = typer.Option(None, help="CWOX confusion tree JSON (fitted and saved if missing)"),
        tree_source: str = typer.Option("auto", help="CWOX tree when --tree is missing: images (top-label "
                                        "co-occurrence), head (head weights, data-free) or auto"),
        level: float = typer.Option(None, help="CWOX tree cut level in [0, 1] (default: the tree's, "
                                    "0.5 co-occurrence / 0.8 head)"),
        tree_images: int = typer.Option(1000, help="CWOX: dataset images used to fit a new tree"),
        param: list[str] = typer.Option([], help="explainer parameter KEY=VALUE (repeatable)"),
        batch_size: int = typer.Option(16, help="images per explainer call"),
        device: str = typer.Option("cpu", help="cpu, cuda, cuda:N or mps (under torchrun: cuda = one GPU per "
                                   "process)"),
        chunk_images: int = typer.Option(256, help="under torchrun: images per resumable chunk (out/passes), "
                                         "shared out over the processes"),
        class_folders: str = typer.Option("names", help="a class folder's labels: folders named as the model's "
                                          "classes (names; ImageNet synsets too) or by class index 0..K-1 (index)"),
        draw: str = typer.Option("blended_heat_map", help="how heatmaps.png draws the maps (Captum's methods): "
                                 "blended_heat_map, heat_map, original_image, masked_image or alpha_scaling"),
        sign: str = typer.Option("auto", help="which values it shows: all, positive, absolute_value, negative, or "
                                 "auto (all for a signed method, in a diverging colour map; else positive)"),
        clip_percentile: float = typer.Option(99.0, help="each map is clipped at this percentile of |A|"),
        quiet: bool = typer.Option(False, help="no progress bar"),
    ) -> None:
        """Explain a classifier on images: heatmap overlays (PNG) and raw maps (.npy). Under
        ``torchrun --nproc_per_node=N -m xgir explain ...`` the N processes share the images
        (not for cwox); rank 0 writes the outputs."""
        if method not in METHODS:
            raise XgirError(f"unknown method '{method}'; choose one of: {', '.join(METHODS)}")
        from xgir.cli.ranks import rank0_prints_errors

        with rank0_prints_errors():
            written = run_explain(model, data, method, out, split=split, n=n, seed=seed, layer=layer,
                                  shallow_layer=shallow_layer, target=target, tree=tree, level=level,
                                  tree_images=tree_images, params=parse_params(param), batch_size=batch_size,
                                  device=device, images=list(images) + list(more_images or []) or None,
                                  tree_source=tree_source, chunk_images=chunk_images, progress=not quiet,
                                  weights=weights, class_folders=class_folders, draw=draw, sign=sign,
                                  percentile=clip_percentile)
        if written:  # under torchrun: rank 0 alone writes
            typer.echo(f"wrote {len(written)} files to {out}")
