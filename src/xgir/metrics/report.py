"""Evaluate several explainers on one model and dataset: a JSON file, a Markdown table and
a picture of the maps.

For each explainer the same n images (a seeded random subset) are explained for
one target each (the true label or the model's prediction) and scored with:

- ``epg``, ``box_epg``, ``iou``, ``pointing`` against the dataset's object masks
  (when it has them);
- ``irrelevant_overlap`` against ``extras["decoy_mask"]`` (when present);
- ``deletion`` and ``insertion`` AUC, scoring the probability of the explained class.

Images whose mask is empty get NaN for that metric and are left out of its mean
(``*_n`` in the JSON says how many images count). A ``random`` row (uniform noise
maps, seeded) gives the chance level of each metric.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from xgir.data.base import ImageDataset
from xgir.errors import XgirError
from xgir.io import write_json, write_text
from xgir.metrics.faithfulness import default_step, deletion, insertion
from xgir.metrics.localisation import box_epg, epg, iou, irrelevant_overlap, pointing_game
from xgir.metrics.shift import accuracy_from_predictions, predict
from xgir.progress import iterate

COLUMNS = [  # (key, header, direction)
    ("epg", "EPG", "↑"),
    ("box_epg", "box EPG", "↑"),
    ("iou", "IoU", "↑"),
    ("pointing", "pointing", "↑"),
    ("irrelevant_overlap", "irrelevant overlap", "↓"),
    ("deletion", "deletion AUC", "↓"),
    ("insertion", "insertion AUC", "↑"),
]


def _explain(
    explainer: Any, name: str, model: nn.Module, x: torch.Tensor, cls: torch.Tensor, batch_size: int
) -> torch.Tensor:
    """Heatmaps float[N,H,W] (CPU, at the input's size) for one class per image."""
    out = []
    for i in range(0, len(x), batch_size):
        maps = explainer(model, x[i : i + batch_size], cls[i : i + batch_size])
        if (
            not isinstance(maps, torch.Tensor)
            or maps.ndim != 4
            or maps.shape[:2] != (len(cls[i : i + batch_size]), 1)
        ):
            raise XgirError(
                f"explainer '{name}' returned {getattr(maps, 'shape', type(maps).__name__)}; "
                "expected heatmaps [N,1,H,W] for one target per image"
            )
        out.append(maps.detach().float().cpu())
    maps = torch.cat(out)
    if not bool(torch.isfinite(maps).all()):
        raise XgirError(f"explainer '{name}' returned NaN or infinite heatmaps")
    if maps.shape[-2:] != x.shape[-2:]:
        maps = F.interpolate(maps, size=tuple(x.shape[-2:]), mode="bilinear", align_corners=False)
    return maps[:, 0]


def _score(
    model: nn.Module,
    ds: ImageDataset,
    x: torch.Tensor,
    cls: torch.Tensor,
    maps: torch.Tensor,
    step: int,
    batch_size: int | None,
) -> dict[str, torch.Tensor]:
    values: dict[str, torch.Tensor] = {}
    if ds.masks is not None:
        values["epg"] = epg(maps, ds.masks, empty="nan")
        values["box_epg"] = box_epg(maps, ds.masks, empty="nan")
        values["iou"] = iou(maps, ds.masks, empty="nan")
        values["pointing"] = pointing_game(maps, ds.masks, empty="nan")
    if "decoy_mask" in ds.extras:
        values["irrelevant_overlap"] = irrelevant_overlap(
            maps, ds.extras["decoy_mask"], empty="nan"
        )
    dev = x.device
    values["deletion"] = deletion(
        model, x, maps.to(dev), cls.to(dev), step, batch_size=batch_size
    ).auc.cpu()
    values["insertion"] = insertion(
        model, x, maps.to(dev), cls.to(dev), step, batch_size=batch_size
    ).auc.cpu()
    return values


def _summary(values: dict[str, torch.Tensor]) -> dict[str, float | int]:
    out: dict[str, float | int] = {}
    for key, v in values.items():
        ok = v[~torch.isnan(v)].double()
        out[key] = float(ok.mean()) if len(ok) else math.nan
        out[f"{key}_std"] = float(ok.std()) if len(ok) > 1 else 0.0 if len(ok) else math.nan  # ddof 1
        out[f"{key}_n"] = len(ok)
    return out


def _fmt(row: Mapping[str, Any], key: str) -> str:
    if key not in row or row[key] is None or (isinstance(row[key], float) and math.isnan(row[key])):
        return "n/a"
    if row.get(f"{key}_n", 2) < 2:  # one image: no spread to show
        return f"{row[key]:.3f}"
    return f"{row[key]:.3f} ± {row[f'{key}_std']:.3f}"


def markdown_table(summary: Mapping[str, Mapping[str, Any]]) -> str:
    """A Markdown table: one row per explainer, mean ± std over images of each metric present."""
    keys = [c for c in COLUMNS if any(c[0] in row for row in summary.values())]
    head = "| explainer | " + " | ".join(f"{h} {d}" for _, h, d in keys) + " | seconds |"
    rule = "|---|" + "---:|" * (len(keys) + 1)
    lines = [head, rule]
    for name, row in summary.items():
        cells = [_fmt(row, k) for k, _, _ in keys]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {row.get('seconds', 0.0):.1f} |")
    return "\n".join(lines)


def subset_indices(total: int, n: int | None, seed: int) -> torch.Tensor:
    """The rows :func:`evaluate_explainers` scores out of ``total``: all when ``n`` is None or
    at least ``total``, else ``n`` drawn with ``seed`` (sorted) - long[n]."""
    if total == 0:
        raise XgirError("the dataset is empty")
    if n is None or n >= total:
        return torch.arange(total)
    if n < 1:
        raise XgirError(f"n must be at least 1, got {n}")
    return torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:n].sort().values


def evaluate_explainers(
    model: nn.Module,
    dataset: ImageDataset,
    explainers: Mapping[str, Any],
    *,
    targets: str | torch.Tensor = "label",
    n: int | None = 64,
    out_dir: str | Path | None = None,
    seed: int = 0,
    step: int | None = None,
    batch_size: int | None = None,
    explain_batch_size: int = 64,
    random_baseline: bool = True,
    progress: bool = True,
    meta: Mapping[str, Any] | None = None,
    figure: bool = True,
    indices: torch.Tensor | None = None,
) -> dict[str, Any]:
    """Explain n images of ``dataset`` with each explainer and score the maps.

    Args:
        explainers: name -> ``explainer(model, x, targets) -> [N,T,H,W]``.
        targets: ``"label"`` (true class), ``"predicted"`` (model's top class) or long [n].
        n: images to use (a random subset drawn with ``seed``; None = all).
        out_dir: where to write ``metrics.json``, ``report.md`` and ``heatmaps.png`` (atomically,
            only once every explainer has run); None writes nothing.
        figure: also write ``heatmaps.png`` (the first 8 images, one column per explainer).
        step: deletion/insertion pixels per step (default ~1% of the pixels).
        batch_size: perturbed images per forward pass in deletion/insertion (default: see
            :func:`xgir.metrics.faithfulness.default_batch_size`).
        indices: ``dataset`` is already the subset: these are its rows in the image set the
            caller read from (:func:`subset_indices` of it), recorded as ``indices``; ``n`` is
            then ignored.

    Returns:
        ``{"summary": {explainer: {metric: mean, metric_std, metric_n, seconds}},
        "per_image": {explainer: {metric: list}}, ...}``.
    """
    if not explainers:
        raise XgirError("give at least one explainer to evaluate")
    if indices is None:
        idx = subset_indices(len(dataset), n, seed)
        ds = dataset.subset(idx)
    elif len(indices) != len(dataset) or len(dataset) == 0:
        raise XgirError(f"indices name {len(indices)} rows but the dataset holds {len(dataset)}")
    else:
        ds, idx = dataset, torch.as_tensor(indices)
    try:
        device = next(model.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    x = ds.images.to(device)
    logits = predict(model, ds.images)
    pred = logits.argmax(1)
    if isinstance(targets, str):
        if targets not in ("label", "predicted"):
            raise XgirError(
                f"targets must be 'label', 'predicted' or a class tensor, got '{targets}'"
            )
        cls = ds.labels if targets == "label" else pred
        target_desc = targets
    else:
        cls = torch.as_tensor(targets).long().cpu()
        if cls.shape != (len(ds),):
            raise XgirError(f"class targets must have shape ({len(ds)},), got {tuple(cls.shape)}")
        target_desc = "given"
    if bool((cls < 0).any() | (cls >= logits.shape[1]).any()):
        raise XgirError(f"target classes must lie in [0, {logits.shape[1] - 1}]")
    h, w = x.shape[-2:]
    step = default_step(h * w) if step is None else step

    noise_name = "random" if "random" not in explainers else "random (noise)"
    names = list(explainers) + ([noise_name] if random_baseline else [])
    summary: dict[str, dict[str, Any]] = {}
    per_image: dict[str, dict[str, list[float]]] = {}
    shown: dict[str, torch.Tensor] = {}
    for name in iterate(names, desc="explainers", enabled=progress, unit="explainer"):
        t0 = time.perf_counter()
        if name in explainers:
            maps = _explain(explainers[name], name, model, x, cls, explain_batch_size)
        else:  # chance level: uniform noise maps
            maps = torch.rand(len(ds), h, w, generator=torch.Generator().manual_seed(seed))
        seconds = time.perf_counter() - t0
        values = _score(model, ds, x, cls, maps, step, batch_size)
        summary[name] = {**_summary(values), "seconds": seconds}
        per_image[name] = {k: v.tolist() for k, v in values.items()}
        shown[name] = maps[:8]

    result = {
        "dataset": dataset.name,
        "n": len(ds),
        "indices": idx.tolist(),
        "targets": target_desc,
        "accuracy": accuracy_from_predictions(pred, ds.labels)["accuracy"],
        "step": step,
        "seed": seed,
        **({"meta": dict(meta)} if meta else {}),
        "summary": summary,
        "per_image": per_image,
    }
    if out_dir is not None:
        write_outputs(result, ds, shown if figure else None, Path(out_dir))
    return result


def _jsonable(obj: Any) -> Any:
    """NaN -> None (strict JSON), recursively."""
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, Mapping):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


def write_outputs(
    result: Mapping[str, Any],
    ds: ImageDataset,
    shown: Mapping[str, torch.Tensor] | None,
    out_dir: Path,
) -> None:
    """Write ``heatmaps.png`` (when ``shown`` maps are given), ``metrics.json`` and
    ``report.md`` (last) into ``out_dir``."""
    if shown:
        from xgir.explain.registry import EXPLAINERS
        from xgir.viz import heatmap_grid

        k = min(len(ds), 8)
        heatmap_grid(
            ds.images[:k],
            torch.stack([m[:k] for m in shown.values()], dim=1),
            out_dir / "heatmaps.png",
            col_titles=list(shown),
            signed=[name in EXPLAINERS and EXPLAINERS[name].signed for name in shown],  # others: by their values
        )
    write_json(out_dir / "metrics.json", _jsonable(result))
    lines = [
        f"# Explanation metrics: {result['dataset'] or 'dataset'}",
        "",
        f"{result['n']} images (seed {result['seed']}), target = {result['targets']} class, "
        f"model accuracy on them {result['accuracy']:.3f}; deletion/insertion step "
        f"{result['step']} px. Mean ± sample standard deviation (ddof 1) over images; ↑ higher is better, ↓ lower.",
        "",
        markdown_table(result["summary"]),
        "",
        "EPG: share of positive attribution inside the object mask (box EPG: inside its bounding "
        "box); IoU: min-max normalised positive map >= 0.5 vs the mask; pointing: argmax within "
        "15 px at 224 px (scaled) of the mask; irrelevant overlap: share of |attribution| on the "
        "decoy patches; deletion/insertion: probability of the explained class as pixels are "
        "removed (to zero) / inserted (into a blurred copy), area on [0, 1]. `random` = uniform "
        "noise maps (chance level); seconds = time to explain the images.",
        "",
    ]
    write_text(out_dir / "report.md", "\n".join(lines))
