"""The protocol shared by the guidance benchmarks (decoy, guidance-shift).

Per seed, on one :class:`GuidanceTask` (its data, masks, models and evaluation):

- ERM; ERM continued for ``guide_epochs`` without guidance (control); a reference trained on
  the task's shortcut-free training set for ``ref_epochs``;
- RRR and Energy (input gradient) fine-tuned from ERM with masks on each of ``fractions``
  of the images, lambda by RRR's rule (penalty = cross-entropy at the start);
- Bayes ERM (Bayes-by-backprop); optionally a Bayesian reference on the shortcut-free set;
  its control, continued for ``fb_epochs`` without feedback;
- per feedback strategy: ``fb_fraction`` of the training images selected, regions proposed
  and answered by the simulated annotator, stored in SQLite (precision / recall of the
  accepted regions on the irrelevant mask), then the feedback objective for each lambda_fb.

Each method's entry is the task's evaluation, the attribution overlap with the irrelevant
mask on test images (for the methods that report it), the seconds spent and extras.
"""

from __future__ import annotations

import copy
import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from xgir.bench import fmt, mean_std
from xgir.bench._guidance_common import OVERLAP_EXPLAINERS, explain_maps, normalised, overlaps, run_suite, table
from xgir.correct.bayes_feedback import fine_tune_feedback
from xgir.correct.feedback import FeedbackStore, SimulatedAnnotator, collect_feedback, select_random, select_uncertain
from xgir.correct.guidance import Guidance, fine_tune_guided
from xgir.data.base import ImageDataset
from xgir.errors import XgirError
from xgir.train import fit_classifier
from xgir.train.bayes import fit_bayes

STRATEGIES = ("random", "uncertainty")
GUIDED = (("rrr", "RRR"), ("energy", "Energy"))
FIGURE_MODELS = ("ERM", "RRR", "Energy", "Bayes ERM", "Bayes feedback")

_S = TypeVar("_S", bound="GuidanceSettings")


@dataclass
class GuidanceSettings:
    """Sizes and schedules shared by the guidance suites (each suite subclasses it)."""

    n_train: int = 2000
    n_test: int = 1000
    n_overlap: int = 200
    width: int = 16
    hidden: int = 64
    erm_epochs: int = 5
    guide_epochs: int = 5
    fractions: tuple[float, ...] = (1.0, 0.1, 0.01)
    bayes_epochs: int = 5
    fb_epochs: int = 10
    fb_fraction: float = 0.01
    lambda_fb: float = 1e-2
    mass: float = 0.8
    max_regions: int = 5
    samples: int = 10

    def __post_init__(self) -> None:
        unknown = [v for v in self.feedback_strategies() if v not in STRATEGIES]
        if unknown:
            raise XgirError(f"unknown feedback strategy {unknown[0]!r}; use one of {', '.join(STRATEGIES)}")

    @property
    def ref_epochs(self) -> int:
        return self.erm_epochs + max(self.guide_epochs, self.fb_epochs)

    def feedback_strategies(self) -> tuple[str, ...]:
        """How the images to annotate are chosen, one feedback run each (``STRATEGIES``)."""
        return ("random",)

    def feedback_lambdas(self) -> tuple[float, ...]:
        """The lambda_fb of each feedback fine-tuning; the first is the main one."""
        return (self.lambda_fb,)

    @classmethod
    def quick(cls: type[_S]) -> _S:
        """The ``--quick`` sizes (a smoke run in seconds, not a result)."""
        return cls(**QUICK_SIZES)


QUICK_SIZES: dict[str, Any] = {
    "n_train": 200,
    "n_test": 100,
    "n_overlap": 20,
    "width": 4,
    "hidden": 16,
    "erm_epochs": 1,
    "guide_epochs": 1,
    "fractions": (1.0, 0.1),
    "bayes_epochs": 1,
    "fb_epochs": 1,
    "fb_fraction": 0.05,
    "samples": 2,
}


@dataclass
class GuidanceTask:
    """What differs between the guidance suites.

    train / reference_train: the shortcut training set and its shortcut-free twin;
    mask_key / invert: the guidance masks (``fine_tune_guided``: the extras key, and whether
    M is its complement); irrelevant / relevant bool[N,H,W] over ``train``: the simulated
    annotator's masks (irrelevant also scores the collected feedback);
    overlap_x / overlap_y / overlap_mask: test images, labels and irrelevant masks bool[n,H,W]
    for the attribution overlap and the figure; model / bayes_model: fresh networks;
    evaluate(model, bayes): the entry's metrics; reference_name / reference_desc: the
    reference row and its progress label; bayes_reference: the row of a Bayesian reference
    on ``reference_train`` (None: none); store_per_strategy: name the feedback stores
    ``feedback-seed{seed}-{strategy}.sqlite`` (else ``feedback-seed{seed}.sqlite``);
    row_titles: label the figure's rows with the labels.
    """

    train: ImageDataset
    reference_train: ImageDataset
    mask_key: str
    invert: bool
    irrelevant: torch.Tensor
    relevant: torch.Tensor | None
    overlap_x: torch.Tensor
    overlap_y: torch.Tensor
    overlap_mask: torch.Tensor
    model: Callable[[], nn.Module]
    bayes_model: Callable[[], nn.Module]
    evaluate: Callable[[nn.Module, bool], dict[str, float]]
    reference_name: str
    reference_desc: str
    bayes_reference: str | None = None
    store_per_strategy: bool = False
    row_titles: bool = False


def run_protocol(
    make_task: Callable[[int, Any], GuidanceTask],
    seed: int,
    s: GuidanceSettings,
    out: Path,
    progress: bool = True,
) -> dict[str, dict]:
    """All methods for one seed on ``make_task(seed, s)``; returns {method: entry} and writes
    the feedback stores and, for seed 0 (or when missing), heatmaps.png."""
    torch.manual_seed(seed)
    task = make_task(seed, s)
    tr = task.train
    res: dict[str, dict] = {}
    models: dict[str, nn.Module] = {}

    def entry(model: nn.Module, t0: float, bayes: bool = False, with_overlap: bool = True, **extra: Any) -> dict:
        ev = task.evaluate(model, bayes)
        ov = overlaps(model, task.overlap_x, task.overlap_y, task.overlap_mask) if with_overlap else None
        return {**ev, "overlap": ov, "seconds": time.time() - t0, **extra}

    t = time.time()
    torch.manual_seed(seed)
    erm = fit_classifier(task.model(), tr, s.erm_epochs, seed=seed, progress=progress, desc="erm")
    res["ERM"] = entry(erm, t)
    models["ERM"] = erm

    t = time.time()
    cont = fit_classifier(copy.deepcopy(erm), tr, s.guide_epochs, seed=seed, progress=progress, desc="erm+")
    res[f"ERM + {s.guide_epochs} epochs, no guidance"] = entry(cont, t, with_overlap=False)

    t = time.time()
    torch.manual_seed(seed)
    ref = fit_classifier(task.model(), task.reference_train, s.ref_epochs, seed=seed, progress=progress,
                         desc=task.reference_desc)
    res[task.reference_name] = entry(ref, t)

    for loss, name in GUIDED:
        for frac in s.fractions:
            t = time.time()
            model, lam = fine_tune_guided(
                copy.deepcopy(erm),
                tr,
                Guidance(loss, "grad"),
                weight=None,
                epochs=s.guide_epochs,
                seed=seed,
                fraction=frac,
                mask_key=task.mask_key,
                invert=task.invert,
                progress=progress,
            )
            res[f"{name} ({frac:.0%} masks)"] = entry(model, t, with_overlap=frac == 1.0, weight=lam, fraction=frac)
            if frac == 1.0:
                models[name] = model

    t = time.time()
    torch.manual_seed(seed)
    bayes = fit_bayes(task.bayes_model(), tr, s.bayes_epochs, seed=seed, progress=progress)
    res["Bayes ERM"] = entry(bayes, t, bayes=True)
    models["Bayes ERM"] = bayes

    if task.bayes_reference is not None:
        t = time.time()
        torch.manual_seed(seed)
        bayes_ref = fit_bayes(task.bayes_model(), task.reference_train, s.bayes_epochs + s.fb_epochs, seed=seed,
                              progress=progress)
        res[task.bayes_reference] = entry(bayes_ref, t, bayes=True, with_overlap=False)

    t = time.time()
    control = copy.deepcopy(bayes)
    fine_tune_feedback(control, tr, torch.zeros_like(task.irrelevant), epochs=s.fb_epochs, seed=seed,
                       lambda_fb=s.lambda_fb, progress=progress)
    res[f"Bayes ERM + {s.fb_epochs} epochs, no feedback"] = entry(control, t, bayes=True, with_overlap=False)

    k = max(1, round(s.fb_fraction * len(tr)))
    lambdas = s.feedback_lambdas()
    for strategy in s.feedback_strategies():
        t = time.time()
        name = f"feedback-seed{seed}-{strategy}" if task.store_per_strategy else f"feedback-seed{seed}"
        fb_masks, has, quality = _collect(task, bayes, strategy, k, seed, s, out / f"{name}.sqlite")
        collect_seconds = time.time() - t
        for lam in lambdas:
            t = time.time() - collect_seconds  # each row's seconds: the collection plus its fine-tuning
            model = copy.deepcopy(bayes)
            fine_tune_feedback(model, tr, fb_masks, has, epochs=s.fb_epochs, seed=seed, lambda_fb=lam,
                               progress=progress)
            main = lam == lambdas[0]
            suffix = "" if main else f", lambda_fb {lam:g}"
            res[f"Bayes feedback ({strategy}, {k} images{suffix})"] = entry(
                model, t, bayes=True, with_overlap=main, feedback=quality
            )
            if main and "Bayes feedback" not in models:
                models["Bayes feedback"] = model

    if seed == 0 or not (out / "heatmaps.png").exists():
        _figure(models, task.overlap_x[:6], task.overlap_y[:6], out / "heatmaps.png", task.row_titles)
    return res


def run_guidance(
    make_task: Callable[[int, Any], GuidanceTask],
    report: Callable[[dict, Any, float], tuple[str, dict]],
    s: GuidanceSettings,
    out: Path,
    seeds: list[int],
    progress: bool = True,
) -> dict:
    """:func:`run_protocol` on ``make_task`` for each seed, then ``report`` (see
    :func:`xgir.bench._guidance_common.run_suite`: report.md, results.json)."""
    return run_suite(functools.partial(run_protocol, make_task), report, s, out, seeds, progress=progress)


def _collect(
    task: GuidanceTask, bayes: nn.Module, strategy: str, k: int, seed: int, s: GuidanceSettings, path: Path
) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """Ask the simulated annotator about ``k`` training images chosen by ``strategy``; returns the
    feedback masks bool[N,H,W], has-feedback bool[N] and the collection's counts and quality."""
    tr = task.train
    if strategy == "random":
        ids = select_random(range(len(tr)), k, seed=seed)
    else:  # "uncertainty" (GuidanceSettings checks the names)
        ids = select_uncertain(bayes, tr, range(len(tr)), k, seed=seed)
    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    store = FeedbackStore(path, len(tr), *tr.images.shape[-2:])
    annotator = SimulatedAnnotator(task.irrelevant, task.relevant)
    counts = collect_feedback(bayes, tr, ids, store, annotator, "relu2", round=0, mass=s.mass,
                              max_regions=s.max_regions)
    fb_masks, has = store.feedback_masks()
    store.close()
    hit = (fb_masks & task.irrelevant).sum().item()
    quality = {
        **counts,
        "with_feedback": int(has.sum()),
        "precision": hit / max(int(fb_masks.sum()), 1),
        "recall": hit / max(int(task.irrelevant[torch.as_tensor(ids)].sum()), 1),
    }
    return fb_masks, has, quality


def _figure(models: dict[str, nn.Module], x: torch.Tensor, y: torch.Tensor, path: Path, row_titles: bool) -> None:
    """Saliency maps of each model in ``FIGURE_MODELS`` (columns) on the images x (rows)."""
    from xgir.viz import heatmap_grid

    names = [m for m in FIGURE_MODELS if m in models]
    maps = [normalised(explain_maps(models[m], x, y)["Saliency"]) for m in names]
    titles = [f"label {int(v)}" for v in y] if row_titles else None
    heatmap_grid(x, torch.stack(maps, 1), path, col_titles=[f"{m}\nSaliency" for m in names], row_titles=titles)


# --- report helpers -------------------------------------------------------------------------------


def summarise(per_seed: dict[int, dict], metrics: Sequence[str]) -> dict[str, dict[str, Any]]:
    """{method: {metric: (mean, std), "overlap": {explainer: (mean, std)} when reported}}."""
    seeds = list(per_seed)
    summary: dict[str, dict[str, Any]] = {}
    for m in per_seed[seeds[0]]:
        rows = [per_seed[sd][m] for sd in seeds]
        summary[m] = {k: mean_std([r[k] for r in rows]) for k in metrics}
        if rows[0]["overlap"] is not None:
            summary[m]["overlap"] = {e: mean_std([r["overlap"][e] for r in rows]) for e in OVERLAP_EXPLAINERS}
    return summary


def metric_table(per_seed: dict[int, dict], metrics: Sequence[str], header: Sequence[str]) -> str:
    """One row per method, one column per metric (mean ± std over seeds)."""
    seeds = list(per_seed)
    rows = [[m] + [fmt([per_seed[sd][m][k] for sd in seeds]) for k in metrics] for m in per_seed[seeds[0]]]
    return table(["method", *header], rows)


def overlap_table(per_seed: dict[int, dict]) -> str:
    """The attribution overlap of each method that reports it, one column per explainer."""
    seeds = list(per_seed)
    methods = [m for m, e in per_seed[seeds[0]].items() if e["overlap"] is not None]
    rows = [[m] + [fmt([per_seed[sd][m]["overlap"][e] for sd in seeds]) for e in OVERLAP_EXPLAINERS] for m in methods]
    return table(["method", *OVERLAP_EXPLAINERS], rows)


def fraction_table(per_seed: dict[int, dict], fractions: Sequence[float], metric: str) -> str:
    """``metric`` of RRR and Energy against the annotated fraction."""
    seeds = list(per_seed)
    rows = [
        [name] + [fmt([per_seed[sd][f"{name} ({f:.0%} masks)"][metric] for sd in seeds]) for f in fractions]
        for _, name in GUIDED
    ]
    return table(["method", *[f"{f:.0%}" for f in fractions]], rows)


def feedback_table(per_seed: dict[int, dict], methods: Sequence[str], region: str) -> str:
    """What the simulated annotator gave in each feedback run; ``region`` names the irrelevant mask."""
    seeds = list(per_seed)
    rows = []
    for m in methods:
        q = [per_seed[sd][m]["feedback"] for sd in seeds]
        rows.append(
            [
                m,
                fmt([v["images"] for v in q], 0),
                fmt([v["regions"] for v in q], 1),
                fmt([v["accepted"] for v in q], 1),
                fmt([v["with_feedback"] for v in q], 1),
                fmt([v["precision"] for v in q]),
                fmt([v["recall"] for v in q]),
            ]
        )
    header = ["run", "images asked", "regions", "accepted", "images with feedback", f"precision on {region}",
              f"{region} recall"]
    return table(header, rows)
