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
The protocol is shared with ``guidance-shift`` (:mod:`xgir.bench._guidance_protocol`); this
module holds the data, the evaluation and the report.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from xgir.bench import spread_note
from xgir.bench._guidance_common import OVERLAP_EXPLAINERS
from xgir.bench._guidance_protocol import (
    GuidanceSettings,
    GuidanceTask,
    feedback_table,
    fraction_table,
    metric_table,
    overlap_table,
    run_guidance,
    summarise,
)
from xgir.data import load_dataset
from xgir.models import LeNet
from xgir.models.bayes import BayesLeNet, bayes_accuracy
from xgir.train import accuracy

SUITE = "decoy"


@dataclass
class Settings(GuidanceSettings):
    fb_epochs: int = 15
    lambda_fb: float = 1e-2
    strategies: tuple[str, ...] = ("random", "uncertainty")

    def feedback_strategies(self) -> tuple[str, ...]:
        return self.strategies


QUICK = Settings.quick()


def _task(seed: int, s: Settings) -> GuidanceTask:
    """decoy-digits: guidance M = not the decoy patch; overlap and annotator on the patch."""
    tr = load_dataset("decoy-digits", "train", seed, n=s.n_train)
    te = load_dataset("decoy-digits", "test", seed, n=s.n_test)
    trn = load_dataset("decoy-digits", "train", seed, n=s.n_train, decoys=False)
    ten = load_dataset("decoy-digits", "test", seed, n=s.n_test, decoys=False)

    def evaluate(model: nn.Module, bayes: bool) -> dict[str, float]:
        if bayes:
            return {"acc": bayes_accuracy(model, te, s.samples), "acc_clean": bayes_accuracy(model, ten, s.samples)}
        return {"acc": accuracy(model, te), "acc_clean": accuracy(model, ten)}

    return GuidanceTask(
        train=tr,
        reference_train=trn,
        mask_key="decoy_mask",
        invert=True,
        irrelevant=tr.extras["decoy_mask"],
        relevant=tr.masks,
        overlap_x=te.images[: s.n_overlap],
        overlap_y=te.labels[: s.n_overlap],
        overlap_mask=te.extras["decoy_mask"][: s.n_overlap],
        model=lambda: LeNet(width=s.width, hidden=s.hidden),
        bayes_model=lambda: BayesLeNet(width=s.width, hidden=s.hidden),
        evaluate=evaluate,
        reference_name="No-decoy reference",
        reference_desc="no-decoy",
        bayes_reference="Bayes no-decoy reference",
        store_per_strategy=True,
        row_titles=True,
    )


def _report(per_seed: dict[int, dict], s: Settings, seconds: float) -> tuple[str, dict]:
    seeds = list(per_seed)
    methods = list(per_seed[seeds[0]])
    summary = summarise(per_seed, ("acc", "acc_clean"))
    fb_keys = [m for m in methods if m.startswith("Bayes feedback")]

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
        metric_table(per_seed, ("acc", "acc_clean"), ["acc (random decoys)", "acc (clean digits)"]),
        "",
        "## Attribution on the decoys (share of normalised |attribution|, test images)",
        "",
        overlap_table(per_seed),
        "",
        "## Accuracy (random decoys) vs annotated fraction",
        "",
        fraction_table(per_seed, s.fractions, "acc"),
        "",
        "## Feedback collected (simulated annotator)",
        "",
        feedback_table(per_seed, fb_keys, "decoy"),
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
    return run_guidance(_task, _report, settings or (QUICK if quick else Settings()), out, seeds, progress=not quick)
