"""``xgir bench decoy``: correcting a decoy-digits classifier with annotations and feedback.

decoy-digits (docs/data.md): in training a corner patch's shade encodes the label, at
test time it is random. Per seed:

- ERM: LeNet on the decoy training set; no-decoy reference: the same LeNet trained on the
  same digits without patches for as many epochs as ERM plus the longest fine-tuning;
- RRR and Energy (input-gradient attribution), fine-tuned from the ERM model with the
  ground-truth feedback (M = not the decoy patch) on 100%, 10% and 1% of the training
  images, lambda chosen so that the penalty equals the cross-entropy at the start;
- Bayesian feedback: a Bayesian LeNet (Bayes-by-backprop), 1% of the training images drawn
  at random, regions proposed (input gradient x signed Grad-CAM, SLIC), answered by the
  simulated annotator from the decoy masks, stored in SQLite, then fine-tuning on the
  feedback objective; its control continues training for the same epochs without feedback.

Reports test accuracy on randomised decoys (and on clean digits), mean ± std over seeds, and
the share of normalised absolute attribution on the decoys for Saliency, DeepLIFT, Occlusion
and Grad-CAM (as the thesis's Table 6.4), plus a figure of heatmaps before and after.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from xgir.bench import fmt, mean_std, spread_note
from xgir.bench._guidance_common import (
    OVERLAP_EXPLAINERS,
    explain_maps,
    normalised,
    overlaps,
    run_suite,
    table,
)
from xgir.correct.bayes_feedback import fine_tune_feedback
from xgir.correct.feedback import FeedbackStore, SimulatedAnnotator, collect_feedback, select_random, select_uncertain
from xgir.correct.guidance import Guidance, fine_tune_guided
from xgir.data import load_dataset
from xgir.models import LeNet
from xgir.models.bayes import BayesLeNet, bayes_accuracy
from xgir.train import accuracy, fit_classifier
from xgir.train.bayes import fit_bayes

SUITE = "decoy"


@dataclass
class Settings:
    n_train: int = 2000
    n_test: int = 1000
    n_overlap: int = 200
    width: int = 16
    hidden: int = 64
    erm_epochs: int = 5
    guide_epochs: int = 5
    fractions: tuple[float, ...] = (1.0, 0.1, 0.01)
    bayes_epochs: int = 5
    fb_epochs: int = 15
    fb_fraction: float = 0.01
    lambda_fb: float = 1e-2
    mass: float = 0.8
    max_regions: int = 5
    strategies: tuple[str, ...] = ("random", "uncertainty")
    samples: int = 10

    @property
    def ref_epochs(self) -> int:
        return self.erm_epochs + max(self.guide_epochs, self.fb_epochs)


QUICK = Settings(
    n_train=200,
    n_test=100,
    n_overlap=20,
    width=4,
    hidden=16,
    erm_epochs=1,
    guide_epochs=1,
    fractions=(1.0, 0.1),
    bayes_epochs=1,
    fb_epochs=1,
    fb_fraction=0.05,
    samples=2,
)


def _lenet(s: Settings) -> LeNet:
    return LeNet(width=s.width, hidden=s.hidden)


def _entry(acc: float, acc_clean: float, seconds: float, ov: dict | None = None, **extra) -> dict:
    return {"acc": acc, "acc_clean": acc_clean, "overlap": ov, "seconds": seconds, **extra}


def run_seed(seed: int, s: Settings, out: Path, progress: bool = True) -> dict:
    """All methods for one seed; returns {method: entry} and writes the figure for the first seed."""
    torch.manual_seed(seed)
    tr = load_dataset("decoy-digits", "train", seed, n=s.n_train)
    te = load_dataset("decoy-digits", "test", seed, n=s.n_test)
    trn = load_dataset("decoy-digits", "train", seed, n=s.n_train, decoys=False)
    ten = load_dataset("decoy-digits", "test", seed, n=s.n_test, decoys=False)
    ox, oy, om = te.images[: s.n_overlap], te.labels[: s.n_overlap], te.extras["decoy_mask"][: s.n_overlap]
    res: dict[str, dict] = {}
    models = {}

    def ov(model):
        return overlaps(model, ox, oy, om)

    t = time.time()
    torch.manual_seed(seed)
    erm = fit_classifier(_lenet(s), tr, s.erm_epochs, seed=seed, progress=progress, desc="erm")
    res["ERM"] = _entry(accuracy(erm, te), accuracy(erm, ten), time.time() - t, ov(erm))
    models["ERM"] = erm

    t = time.time()
    cont = fit_classifier(copy.deepcopy(erm), tr, s.guide_epochs, seed=seed, progress=progress, desc="erm+")
    res[f"ERM + {s.guide_epochs} epochs, no guidance"] = _entry(
        accuracy(cont, te), accuracy(cont, ten), time.time() - t
    )

    t = time.time()
    torch.manual_seed(seed)
    ref = fit_classifier(_lenet(s), trn, s.ref_epochs, seed=seed, progress=progress, desc="no-decoy")
    res["No-decoy reference"] = _entry(accuracy(ref, te), accuracy(ref, ten), time.time() - t, ov(ref))

    for loss, name in (("rrr", "RRR"), ("energy", "Energy")):
        for frac in s.fractions:
            t = time.time()
            model = copy.deepcopy(erm)
            model, lam = fine_tune_guided(
                model,
                tr,
                Guidance(loss, "grad"),
                weight=None,
                epochs=s.guide_epochs,
                seed=seed,
                fraction=frac,
                mask_key="decoy_mask",
                invert=True,
                progress=progress,
            )
            key = f"{name} ({frac:.0%} masks)"
            res[key] = _entry(
                accuracy(model, te),
                accuracy(model, ten),
                time.time() - t,
                ov(model) if frac == 1.0 else None,
                weight=lam,
                fraction=frac,
            )
            if frac == 1.0:
                models[name] = model

    t = time.time()
    torch.manual_seed(seed)
    bayes = fit_bayes(BayesLeNet(width=s.width, hidden=s.hidden), tr, s.bayes_epochs, seed=seed, progress=progress)
    res["Bayes ERM"] = _entry(
        bayes_accuracy(bayes, te, s.samples), bayes_accuracy(bayes, ten, s.samples), time.time() - t, ov(bayes)
    )
    models["Bayes ERM"] = bayes

    t = time.time()
    torch.manual_seed(seed)
    bayes_ref = fit_bayes(
        BayesLeNet(width=s.width, hidden=s.hidden), trn, s.bayes_epochs + s.fb_epochs, seed=seed, progress=progress
    )
    res["Bayes no-decoy reference"] = _entry(
        bayes_accuracy(bayes_ref, te, s.samples), bayes_accuracy(bayes_ref, ten, s.samples), time.time() - t
    )

    t = time.time()
    control = copy.deepcopy(bayes)
    empty = torch.zeros_like(tr.extras["decoy_mask"])
    fine_tune_feedback(control, tr, empty, epochs=s.fb_epochs, seed=seed, lambda_fb=s.lambda_fb, progress=progress)
    res[f"Bayes ERM + {s.fb_epochs} epochs, no feedback"] = _entry(
        bayes_accuracy(control, te, s.samples), bayes_accuracy(control, ten, s.samples), time.time() - t
    )

    k = max(1, round(s.fb_fraction * len(tr)))
    for strategy in s.strategies:
        t = time.time()
        path = out / f"feedback-seed{seed}-{strategy}.sqlite"
        for suffix in ("", "-wal", "-shm"):
            Path(str(path) + suffix).unlink(missing_ok=True)
        store = FeedbackStore(path, len(tr), 28, 28)
        annotator = SimulatedAnnotator(tr.extras["decoy_mask"], tr.masks)
        if strategy == "random":
            ids = select_random(range(len(tr)), k, seed=seed)
        else:
            ids = select_uncertain(bayes, tr, range(len(tr)), k, seed=seed)
        counts = collect_feedback(bayes, tr, ids, store, annotator, "relu2", round=0, mass=s.mass,
                                  max_regions=s.max_regions)
        fb_masks, has = store.feedback_masks()
        store.close()
        decoy = tr.extras["decoy_mask"]
        hit = (fb_masks & decoy).sum().item()
        quality = {
            **counts,
            "with_feedback": int(has.sum()),
            "precision": hit / max(int(fb_masks.sum()), 1),
            "recall": hit / max(int(decoy[torch.as_tensor(ids)].sum()), 1),
        }
        model = copy.deepcopy(bayes)
        fine_tune_feedback(
            model, tr, fb_masks, has, epochs=s.fb_epochs, seed=seed, lambda_fb=s.lambda_fb, progress=progress
        )
        key = f"Bayes feedback ({strategy}, {k} images)"
        res[key] = _entry(
            bayes_accuracy(model, te, s.samples),
            bayes_accuracy(model, ten, s.samples),
            time.time() - t,
            ov(model),
            feedback=quality,
        )
        if strategy == s.strategies[0]:
            models["Bayes feedback"] = model

    if seed == 0 or not (out / "heatmaps.png").exists():
        _figure(models, ox[:6], oy[:6], out / "heatmaps.png")
    return res


def _figure(models: dict, x: torch.Tensor, y: torch.Tensor, path: Path) -> None:
    from xgir.viz import heatmap_grid

    cols, maps = [], []
    for name, explainer in (
        ("ERM", "Saliency"),
        ("RRR", "Saliency"),
        ("Energy", "Saliency"),
        ("Bayes ERM", "Saliency"),
        ("Bayes feedback", "Saliency"),
    ):
        if name in models:
            cols.append(f"{name}\n{explainer}")
            maps.append(normalised(explain_maps(models[name], x, y)[explainer]))
    heatmap_grid(x, torch.stack(maps, 1), path, col_titles=cols, row_titles=[f"label {int(v)}" for v in y])


def _report(per_seed: dict[int, dict], s: Settings, seconds: float) -> tuple[str, dict]:
    methods = list(next(iter(per_seed.values())).keys())
    summary: dict[str, dict] = {}
    for m in methods:
        rows = [per_seed[sd][m] for sd in per_seed]
        summary[m] = {"acc": mean_std([r["acc"] for r in rows]), "acc_clean": mean_std([r["acc_clean"] for r in rows])}
        if rows[0]["overlap"] is not None:
            summary[m]["overlap"] = {e: mean_std([r["overlap"][e] for r in rows]) for e in OVERLAP_EXPLAINERS}
    seeds = list(per_seed)

    def col(m, key):
        return fmt([per_seed[sd][m][key] for sd in seeds])

    acc_rows = [[m, col(m, "acc"), col(m, "acc_clean")] for m in methods]
    ov_methods = [m for m in methods if per_seed[seeds[0]][m]["overlap"] is not None]
    ov_rows = [
        [m] + [fmt([per_seed[sd][m]["overlap"][e] for sd in seeds]) for e in OVERLAP_EXPLAINERS] for m in ov_methods
    ]
    frac_rows = []
    for name in ("RRR", "Energy"):
        frac_rows.append([name] + [col(f"{name} ({f:.0%} masks)", "acc") for f in s.fractions])
    fb_keys = [m for m in methods if m.startswith("Bayes feedback")]
    fb_rows = []
    for m in fb_keys:
        q = [per_seed[sd][m]["feedback"] for sd in seeds]
        fb_rows.append(
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

    ref = summary["No-decoy reference"]["acc_clean"][0]
    erm = summary["ERM"]["acc"][0]
    checks = [
        f"- ERM on randomised decoys: {erm:.3f}; no-decoy reference on clean digits: {ref:.3f} "
        f"(gap {100 * (ref - erm):.1f} points)."
    ]
    bref = summary["Bayes no-decoy reference"]["acc_clean"][0]
    checks.append(
        f"- Bayes ERM on randomised decoys: {summary['Bayes ERM']['acc'][0]:.3f}; Bayes no-decoy reference "
        f"({s.bayes_epochs + s.fb_epochs} epochs) on clean digits: {bref:.3f}."
    )
    for m in fb_keys:
        acc = summary[m]["acc"][0]
        base = summary["Bayes ERM"]["acc"][0]
        ok = acc - base >= 0.20 or ref - acc <= 0.05
        ok_b = acc - base >= 0.20 or bref - acc <= 0.05
        checks.append(
            f"- {m}: {acc:.3f} vs Bayes ERM {base:.3f} ({100 * (acc - base):+.1f} points) after {s.fb_epochs} "
            f"epochs; {100 * (ref - acc):.1f} points below the LeNet no-decoy reference (goal >= +20 points or "
            f"within 5: {'met' if ok else 'NOT met'}), {100 * (bref - acc):.1f} below the Bayes no-decoy "
            f"reference ({'met' if ok_b else 'NOT met'})."
        )
        drops = {e: summary["Bayes ERM"]["overlap"][e][0] - summary[m]["overlap"][e][0] for e in OVERLAP_EXPLAINERS}
        checks.append(
            f"- Overlap drop, Bayes ERM -> {m}: "
            + ", ".join(f"{e} {v:+.3f}" for e, v in drops.items())
            + (" (drops for all four)" if all(v > 0 for v in drops.values()) else " (NOT all drop)")
        )
    cont_key = f"ERM + {s.guide_epochs} epochs, no guidance"
    checks.append(f"- Control for the guidance runs: {cont_key}: {summary[cont_key]['acc'][0]:.3f}.")
    for name in ("RRR", "Energy"):
        key = f"{name} (100% masks)"
        if key in summary:
            share = summary[key]["acc"][0] / ref
            checks.append(
                f"- {key}: {summary[key]['acc'][0]:.3f} = {100 * share:.1f}% of the no-decoy reference "
                f"(goal >= 90%: {'met' if share >= 0.9 else 'NOT met'})."
            )
            drops = {e: summary["ERM"]["overlap"][e][0] - summary[key]["overlap"][e][0] for e in OVERLAP_EXPLAINERS}
            checks.append(f"- Overlap drop, ERM -> {key}: " + ", ".join(f"{e} {v:+.3f}" for e, v in drops.items()))

    md = [
        "# decoy-digits: correction with annotations and feedback",
        "",
        f"Seeds {seeds}; {s.n_train} training / {s.n_test} test images; LeNet width {s.width}, hidden {s.hidden}; "
        f"ERM {s.erm_epochs} epochs, guidance fine-tuning {s.guide_epochs} epochs, Bayesian ERM {s.bayes_epochs} "
        f"epochs + {s.fb_epochs} feedback epochs (lambda_fb {s.lambda_fb}); no-decoy reference {s.ref_epochs} "
        f"epochs. {spread_note(len(seeds))} Total {seconds / 60:.1f} min.",
        "",
        "## Test accuracy",
        "",
        table(["method", "acc (random decoys)", "acc (clean digits)"], acc_rows),
        "",
        "## Attribution on the decoys (share of normalised |attribution|, test images)",
        "",
        table(["method", *OVERLAP_EXPLAINERS], ov_rows),
        "",
        "## Accuracy (random decoys) vs annotated fraction",
        "",
        table(["method", *[f"{f:.0%}" for f in s.fractions]], frac_rows),
        "",
        "## Feedback collected (simulated annotator)",
        "",
        table(
            [
                "run",
                "images asked",
                "regions",
                "accepted",
                "images with feedback",
                "precision on decoy",
                "decoy recall",
            ],
            fb_rows,
        ),
        "",
        "## Goals",
        "",
        *checks,
        "",
        "Heatmaps before and after: heatmaps.png.",
    ]
    return "\n".join(md) + "\n", summary


def run(out: Path, seeds: list[int], quick: bool = False, settings: Settings | None = None) -> dict:
    """Run the suite; writes report.md, results.json, heatmaps.png and the feedback stores."""
    s = settings or (QUICK if quick else Settings())
    return run_suite(run_seed, _report, s, out, seeds, progress=not quick)
