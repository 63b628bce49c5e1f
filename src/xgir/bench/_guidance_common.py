"""Shared helpers of the guidance benchmarks (decoy, guidance-shift): attribution overlap with
a mask for four explainers, Markdown tables, the seed loop that writes the report. Their common
protocol (methods, settings) is :mod:`xgir.bench._guidance_protocol`."""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from xgir.bench import one_thread
from xgir.explain.gradcam import grad_cam
from xgir.io import write_json, write_text
from xgir.metrics.localisation import irrelevant_overlap
from xgir.models.bayes import bayes_layers, sampling

OVERLAP_EXPLAINERS = ("Saliency", "DeepLIFT", "Occlusion", "Grad-CAM")


def explain_maps(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, layer: str = "relu2", window: int = 4, stride: int = 2
) -> dict[str, torch.Tensor]:
    """Heatmaps float[N,H,W] of the ``y`` logits by Saliency (|grad|), DeepLIFT (zero baseline),
    Occlusion (``window`` px squares to zero, ``stride``), all from Captum, and Grad-CAM at
    ``layer`` (:func:`xgir.explain.gradcam.grad_cam`, equal to Captum's LayerGradCam; default
    the rectified last conv maps ``relu2``; ReLU on the map, bilinear upsampling); a Bayesian
    model is explained by its mean network."""
    from captum.attr import DeepLift, Occlusion, Saliency

    was = model.training
    model.eval()
    ctx = sampling(model, False) if bayes_layers(model) else contextlib.nullcontext()
    c = x.shape[1]
    with ctx, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # Captum's notes on hooks and requires_grad
        out = {
            "Saliency": Saliency(model).attribute(x, target=y, abs=True).sum(1),
            "DeepLIFT": DeepLift(model).attribute(x, target=y, baselines=torch.zeros_like(x)).sum(1),
            "Occlusion": Occlusion(model)
            .attribute(
                x, target=y, sliding_window_shapes=(c, window, window), strides=(c, stride, stride), baselines=0.0
            )
            .sum(1),
        }
        out["Grad-CAM"] = grad_cam(model, x, y, layer, relu=True, upsample=True)[:, 0]
    model.train(was)
    return {k: v.detach() for k, v in out.items()}


def overlap(maps: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean over images of the share of absolute attribution on ``mask`` bool[N,H,W]
    (:func:`xgir.metrics.localisation.irrelevant_overlap`). An empty mask is an error: the
    benchmarks' masks (decoy patches, backgrounds) and the app's feedback masks never are."""
    return float(irrelevant_overlap(maps, mask, empty="raise").mean())


def overlaps(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor, *, layer: str = "relu2",
    batch_size: int = 100,
) -> dict[str, float]:
    """Overlap of each explainer's maps with ``mask`` over the images x (in batches)."""
    sums = dict.fromkeys(OVERLAP_EXPLAINERS, 0.0)
    for i in range(0, len(x), batch_size):
        maps = explain_maps(model, x[i : i + batch_size], y[i : i + batch_size], layer=layer)
        for k in sums:
            sums[k] += overlap(maps[k], mask[i : i + batch_size]) * len(maps[k])
    return {k: v / len(x) for k, v in sums.items()}


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def normalised(maps: torch.Tensor) -> torch.Tensor:
    """|maps| scaled per image to max 1 (for figures)."""
    a = maps.abs()
    return a / a.flatten(1).amax(1).clamp(min=1e-12).view(-1, *([1] * (a.ndim - 1)))


def run_suite(
    run_seed: Callable[..., dict],
    report: Callable[[dict, Any, float], tuple[str, dict]],
    settings: Any,
    out: Path,
    seeds: list[int],
    progress: bool = True,
) -> dict:
    """Run ``run_seed(seed, settings, out, progress=...)`` for each seed on one thread, then write
    ``report(per_seed, settings, seconds)`` as report.md and everything as results.json."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    with one_thread():
        per_seed = {sd: run_seed(sd, settings, out, progress=progress) for sd in seeds}
    return write_suite(report, settings, out, per_seed, time.time() - start)


def write_suite(
    report: Callable[[dict, Any, float], tuple[str, dict]],
    settings: Any,
    out: Path,
    per_seed: dict,
    seconds: float,
    **extra: Any,
) -> dict:
    """Write ``report(per_seed, settings, seconds)`` as report.md and everything (with ``extra``)
    as results.json into ``out``; returns what results.json holds."""
    md, summary = report(per_seed, settings, seconds)
    result = {"settings": asdict(settings), "seconds": seconds, "per_seed": per_seed, "summary": summary, **extra}
    write_json(Path(out) / "results.json", result)
    write_text(Path(out) / "report.md", md)
    return result
