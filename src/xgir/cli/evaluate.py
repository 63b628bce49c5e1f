"""``xgir evaluate``: score explainers on a model and a dataset (metrics.json, report.md)."""

from __future__ import annotations

import inspect
from pathlib import Path

import typer

DEFAULT_N = 64  # images scored when --n is not given (fewer when the split holds fewer)


def register(app: typer.Typer) -> None:
    @app.command("evaluate")
    def evaluate_cmd(
        model: str = typer.Option(..., "--model", help="model: built-in name, xgir checkpoint (.pt) or "
                                  "factory package.module:function"),
        weights: Path = typer.Option(None, help="weights for a factory --model: a state_dict (.pt, .safetensors) "
                                     "or a checkpoint of a model built by that factory"),
        data: str = typer.Option(None, "--data", help="dataset name (e.g. decoy-digits)"),
        split: str = typer.Option("", "--split", help="dataset split (e.g. test)"),
        images: str = typer.Option(None, "--images", help="images with object masks, e.g. decoy-digits:test "
                                   "(instead of --data/--split)"),
        explainer: list[str] = typer.Option(..., "--explainer", help="explainer name (repeatable)"),
        out: Path = typer.Option(..., "--out", help="results folder"),
        seed: int = typer.Option(0, help="dataset seed and seed of the image subset"),
        n: int = typer.Option(None, help="number of images to explain, drawn at random (default: up to 64); "
                              "more than there are is an error"),
        layer: str = typer.Option(None, help="layer for explainers that take one (e.g. Grad-CAM)"),
        targets: str = typer.Option("label", help="explain the 'label' or the 'predicted' class"),
        step: int = typer.Option(None, help="deletion/insertion pixels per step (default ~1%)"),
        device: str = typer.Option("cpu", help="torch device (cpu, cuda)"),
        quiet: bool = typer.Option(False, help="no progress bars"),
    ) -> None:
        """Explain N images with each explainer; write EPG, IoU, pointing game, irrelevant
        overlap and deletion/insertion AUC to OUT/metrics.json and OUT/report.md."""
        from xgir.cli.explain import _image_spec
        from xgir.config import check_seed
        from xgir.data.images import check_n, load_images, open_images
        from xgir.errors import XgirError
        from xgir.explain.registry import available_explainers, get_explainer
        from xgir.io import check_output_folder, run_folder
        from xgir.metrics.report import evaluate_explainers, subset_indices
        from xgir.metrics.shift import predict
        from xgir.models import get_module, load_model
        from xgir.models.inference import resolve_device

        if n is not None and n < 1:
            raise XgirError(f"--n must be at least 1, got {n}")
        check_seed(seed)
        if targets not in ("label", "predicted"):
            raise XgirError(f"--targets must be 'label' or 'predicted', got '{targets}'")
        resolve_device(device)
        check_output_folder(out, "--out")
        spec = _image_spec(images, data, split)
        loaded = load_model(model, weights=weights, device=device)
        net = loaded.model
        no_masks = XgirError(f"xgir evaluate scores maps against object masks, and '{spec}' has none; use an "
                             "embedded dataset (decoy-digits:test, background-shift:target-test) or a Waterbirds "
                             "folder with its segmentations (ROOT/segmentations)")
        lazy = open_images(spec, loaded.preprocess)
        indices = None
        if lazy is None:
            dataset = load_images(spec, loaded.preprocess, seed=seed, model_classes=loaded.classes)
            count = check_n(n, len(dataset), dataset.name or str(spec), limit=DEFAULT_N)
        elif lazy.has_masks:  # a folder: only the n images scored are read
            count = check_n(n, len(lazy), str(spec), limit=DEFAULT_N)
            indices = subset_indices(len(lazy), count, seed)
            dataset = lazy.take(indices)
        else:
            raise no_masks
        if dataset.masks is None:
            raise no_masks
        if layer is not None:
            get_module(net, layer)  # clear error for an unknown layer
        found = available_explainers()
        built = {}
        for name in dict.fromkeys(explainer):
            params = {}
            if (
                layer is not None
                and name in found
                and "layer" in inspect.signature(found[name]).parameters
            ):
                params["layer"] = layer
            built[name] = get_explainer(name, **params)
        predict(net, dataset.images[:1])  # clear error when the model does not fit the images
        with run_folder(out, "--out") as tmp:  # metrics.json, report.md and heatmaps.png as a set
            result = evaluate_explainers(
                net,
                dataset,
                built,
                targets=targets,
                n=count,
                out_dir=tmp,
                seed=seed,
                step=step,
                progress=not quiet,
                meta={"model": str(model), "data": dataset.name.partition(":")[0],
                      "split": dataset.name.partition(":")[2], "layer": layer},
                indices=indices,
            )
        typer.echo((out / "report.md").read_text())
        typer.echo(f"results in {out} ({len(result['summary'])} rows)")
