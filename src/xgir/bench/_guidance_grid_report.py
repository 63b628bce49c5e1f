"""The guidance grid's report: tables, the study's four claims checked, the trade-off figure.

Claims (Rao et al. 2023), each marked reproduced or not on each dataset from the means over
seeds, with the figures it rests on (the criteria are stated in the report):

1. Energy gives the best EPG-accuracy trade-off: it has the highest EPG of the four losses in
   most (model, attribution, layer) configurations, and its mean accuracy change against the
   control is no more than 1 point below the best other loss's.
2. B-cos attributions at the input localise best: B-cos @ input has the highest mean EPG (over
   the losses) of the seven guided configurations.
3. Guidance helps accuracy only for B-cos: the mean accuracy change against the control over a
   model's main-grid runs is above +0.5 points for B-cos and not for vanilla and X-DNN.
4. 1 % of annotations improve worst-group accuracy: B-cos with Energy at the input on the
   smallest annotated fraction (boxes) beats the control's worst-group accuracy by more than
   the spread over seeds (by more than 0 with one seed).

Claims 3 and 4 are about accuracy; they are judged only where the ERM models they involve pass
the gate (:data:`GATE`): a worst-group accuracy at or above 0.10, i.e. features that hold some of
the object to fall back on. Below it (a model that learned the shortcut alone) guidance can move
the attribution but has no decision to move it to: the claim is marked not testable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from xgir.bench import fmt, mean_std, spread_note
from xgir.bench._guidance_common import table
from xgir.bench.guidance_grid import CONFIGS, MODELS, Settings, layer_name

Entries = dict[Any, dict[str, dict[str, dict]]]  # seed -> dataset -> run -> entry
GATE = 0.10  # the least mean ERM worst-group accuracy at which claims 3 and 4 are judged
NOT_TESTABLE = "**not testable here**"


def _values(per_seed: Entries, ds: str, key: str, metric: str, loc: str | None = None) -> list[float]:
    out = []
    for runs in per_seed.values():
        e = runs[ds][key]
        if metric in ("epg", "iou"):
            found = e["loc"][loc] if loc is not None else next(iter(e["loc"].values()))
            out.append(found[metric])
        else:
            out.append(e[metric])
    return out


def _mean(per_seed: Entries, ds: str, key: str, metric: str, loc: str | None = None) -> float:
    return mean_std(_values(per_seed, ds, key, metric, loc))[0]


def _run_key(model: str, attr: str, layer: str | None, loss: str, fraction: float = 1.0,
             annotation: str = "boxes") -> str:
    return f"{model} | {attr} @ {layer_name(layer)} | {loss} | {fraction:.0%} {annotation}"


def _main_table(per_seed: Entries, ds: str, s: Settings) -> str:
    rows = []
    for model, attr, method, layer in CONFIGS:
        loc = f"{method}@{layer_name(layer)}"
        keys = [(f"{model} | reference", "reference (no shortcut)"), (f"{model} | ERM", "ERM"),
                (f"{model} | control", f"control (+{s.guide_epochs} epochs)")]
        keys += [(_run_key(model, attr, layer, loss), loss) for loss in s.losses]
        for key, what in keys:
            rows.append([model, attr, layer_name(layer), what]
                        + [fmt(_values(per_seed, ds, key, m, loc)) for m in ("acc", "worst_group", "epg", "iou")])
    return table(["model", "attribution", "layer", "training", "accuracy", "worst group", "EPG", "IoU"], rows)


def _fraction_table(per_seed: Entries, ds: str, s: Settings, metric: str) -> str:
    rows = []
    for model, attr, method, layer in CONFIGS:
        if layer is not None or attr == "Grad-CAM":
            continue
        loc = f"{method}@input"
        for loss in s.fraction_losses:
            for ann in s.annotations:
                cells = [fmt(_values(per_seed, ds, _run_key(model, attr, None, loss, f, ann), metric, loc))
                         for f in s.fractions]
                rows.append([model, attr, loss, ann, fmt(_values(per_seed, ds, f"{model} | control", metric, loc)),
                             *cells])
    return table(["model", "attribution", "loss", "annotation", "control", *[f"{f:.0%}" for f in s.fractions]], rows)


def _mark(ok: bool) -> str:
    return "**reproduced**" if ok else "**not reproduced**"


def claims(per_seed: Entries, ds: str, s: Settings) -> list[str]:
    """The four claims on dataset ``ds``, one Markdown bullet each (see the module docstring)."""
    lines = []
    delta: dict[str, list[float]] = {loss: [] for loss in s.losses}
    wins, configs = 0, 0
    for model, attr, _, layer in CONFIGS:
        control = _mean(per_seed, ds, f"{model} | control", "acc")
        epgs = {loss: _mean(per_seed, ds, _run_key(model, attr, layer, loss), "epg") for loss in s.losses}
        for loss in s.losses:
            delta[loss].append(_mean(per_seed, ds, _run_key(model, attr, layer, loss), "acc") - control)
        configs += 1
        wins += max(epgs, key=lambda k: epgs[k]) == "Energy"
    mean_delta = {loss: sum(v) / len(v) for loss, v in delta.items()}
    if "Energy" in s.losses and len(s.losses) > 1:
        best_other = max(v for k, v in mean_delta.items() if k != "Energy")
        ok = wins > configs / 2 and mean_delta["Energy"] >= best_other - 0.01
        lines.append(f"- Claim 1, Energy's EPG-accuracy trade-off: {_mark(ok)}. Energy has the highest EPG in "
                     f"{wins} of {configs} configurations; mean accuracy change vs the control: "
                     + ", ".join(f"{k} {100 * v:+.1f}" for k, v in mean_delta.items()) + " points.")
    guided = {f"{m} {a} @ {layer_name(lay)}": sum(_mean(per_seed, ds, _run_key(m, a, lay, loss), "epg")
                                                for loss in s.losses) / len(s.losses)
              for m, a, _, lay in CONFIGS}
    erm = {f"{m} {a} @ {layer_name(lay)}": _mean(per_seed, ds, f"{m} | ERM", "epg", f"{meth}@{layer_name(lay)}")
           for m, a, meth, lay in CONFIGS}
    best = max(guided, key=lambda k: guided[k])
    lines.append(f"- Claim 2, B-cos at the input localises best: {_mark(best == 'B-cos B-cos @ input')}. Mean EPG "
                 "over the losses (ERM in brackets): "
                 + ", ".join(f"{k} {v:.3f} ({erm[k]:.3f})" for k, v in sorted(guided.items(), key=lambda kv: -kv[1]))
                 + ".")
    erm_wg = {m: _mean(per_seed, ds, f"{m} | ERM", "worst_group") for m in MODELS}
    gate = ", ".join(f"{m} {v:.3f}" for m, v in erm_wg.items())
    per_model = {}
    for model in MODELS:
        control = _mean(per_seed, ds, f"{model} | control", "acc")
        vals = [_mean(per_seed, ds, _run_key(m, a, lay, loss), "acc") - control
                for m, a, _, lay in CONFIGS if m == model for loss in s.losses]
        per_model[model] = sum(vals) / len(vals)
    ok = per_model["B-cos"] > 0.005 and all(per_model[m] <= 0.005 for m in MODELS if m != "B-cos")
    mark = _mark(ok) if min(erm_wg.values()) >= GATE else NOT_TESTABLE
    lines.append(f"- Claim 3, guidance helps accuracy only for B-cos: {mark}. Mean accuracy change vs the "
                 "control over each model's main-grid runs: "
                 + ", ".join(f"{m} {100 * v:+.1f}" for m, v in per_model.items())
                 + f" points (ERM worst group, gate {GATE:.2f}: {gate}).")
    frac, ann = min(s.fractions), "boxes" if "boxes" in s.annotations else s.annotations[0]
    if "Energy" in s.fraction_losses:
        gains = [g - c for g, c in zip(
            _values(per_seed, ds, _run_key("B-cos", "B-cos", None, "Energy", frac, ann), "worst_group"),
            _values(per_seed, ds, "B-cos | control", "worst_group"), strict=True)]
        m, sd = mean_std(gains)
        ok = m > (sd if len(gains) > 1 else 0.0)
        mark = _mark(ok) if erm_wg["B-cos"] >= GATE else NOT_TESTABLE
        lines.append(f"- Claim 4, {frac:.0%} of annotations ({ann}) improve worst-group accuracy (B-cos, Energy, "
                     f"input): {mark}. Worst-group change vs the control {100 * m:+.1f} ± {100 * sd:.1f} "
                     f"points (B-cos ERM worst group {erm_wg['B-cos']:.3f}).")
    return lines


GROUPS_TEXT = {
    ds: f"Accuracy on {split}; worst group: the lower accuracy of the images whose {feature} agrees with the label "
        "as in training and of those where it does not."
    for ds, split, feature in (("decoy-digits", "test (random decoys)", "decoy shade"),
                               ("background-shift", "target-test", "texture family"))}
GROUPS_TEXT["waterbirds-photos"] = ("Accuracy on target-test (places independent of the bird); worst group: the "
                                    "lowest of Waterbirds' four (bird type, place) groups.")


def _pretraining(s: Settings) -> str:
    """What the models learned before ERM, in the report's words."""
    if not s.pretrain_epochs:
        return "from scratch, "
    parts = []
    if any(ds != "waterbirds-photos" for ds in s.datasets):
        parts.append(f"on the digits on {s.n_pretrain} glyph-pretrain images (36 characters on label-free textures)")
    if "waterbirds-photos" in s.datasets:
        parts.append(f"on waterbirds-photos ({s.photo_size} px) on {s.n_pretrain_photos} images of the birds' species "
                     "(34 classes) over procedural textures")
    return f"each first trained for {s.pretrain_epochs} epochs {' and '.join(parts)}, then given a fresh head; "


def report(per_seed: Entries, s: Settings, seconds: float) -> tuple[str, dict]:
    """(report.md, summary {dataset: {run: {metric: (mean, std)}}}) of the grid."""
    seeds = list(per_seed)
    md = ["# The guidance grid: models x attributions x losses x layers x annotations", "",
          f"Seeds {seeds}; {s.n_train} training / {s.n_test} test images, EPG and IoU (against the object's "
          f"bounding box, IoU at threshold 0.5) on {s.n_eval}; ResNets of width {s.width} (vanilla = small-resnet, "
          f"X-DNN = x-small-resnet, B-cos = bcos-resnet); "
          + _pretraining(s) + f"ERM {s.erm_epochs} epochs, control and guidance "
          f"{s.guide_epochs} epochs, Adam at lr " + ", ".join(f"{v:g} ({k})" for k, v in s.lr.items())
          + f", batch {s.batch_size}, lambda by RRR's rule. IntGrad on "
          "the X-DNN is computed as IxG (equal on a bias-free network); L1 is the study's |M - A+/max A+| on every "
          "pixel (xgir's l1-mask), RRR* RRR's penalty on the attribution map (rrr-map). "
          f"{spread_note(len(seeds))} Total {seconds / 60:.1f} min.", ""]
    summary: dict[str, dict] = {}
    for ds in s.datasets:
        runs = per_seed[seeds[0]][ds]
        summary[ds] = {k: {m: mean_std(_values(per_seed, ds, k, m)) for m in ("acc", "worst_group")}
                       for k in runs}
        md += [f"## {ds}", "", GROUPS_TEXT[ds], "",
               "### Main grid (boxes on 100 % of the training images)", "", _main_table(per_seed, ds, s), "",
               "### Annotated fraction: worst-group accuracy", "", _fraction_table(per_seed, ds, s, "worst_group"), "",
               "### Annotated fraction: EPG", "", _fraction_table(per_seed, ds, s, "epg"), "",
               "### The study's claims here", "", *claims(per_seed, ds, s), ""]
    md += ["Figures: tradeoff.png (EPG against accuracy of every main-grid run, means over seeds), "
           "bcos-DATASET.png (B-cos colour explanations before and after Energy guidance, seed 0)."]
    return "\n".join(md) + "\n", summary


MARKERS = {"vanilla": "o", "X-DNN": "s", "B-cos": "^"}


def trade_off_figure(per_seed: Entries, s: Settings, path: Path) -> Path:
    """EPG against accuracy of every main-grid run (colour = loss, marker = model; crosses: the
    controls), one panel per dataset."""
    import matplotlib.pyplot as plt

    from xgir.io import save_figure

    fig, axes = plt.subplots(1, len(s.datasets), figsize=(4.2 * len(s.datasets), 3.6), squeeze=False)
    cmap = plt.get_cmap("tab10")
    colours = {loss: cmap(i) for i, loss in enumerate(s.losses)}
    for ax, ds in zip(axes[0], s.datasets, strict=True):
        for model, attr, method, layer in CONFIGS:
            loc = f"{method}@{layer_name(layer)}"
            ax.scatter(_mean(per_seed, ds, f"{model} | control", "acc"),
                       _mean(per_seed, ds, f"{model} | control", "epg", loc), marker="x", color="black", s=18)
            for loss in s.losses:
                key = _run_key(model, attr, layer, loss)
                ax.scatter(_mean(per_seed, ds, key, "acc"), _mean(per_seed, ds, key, "epg"),
                           marker=MARKERS[model], color=colours[loss], s=22, alpha=0.8)
        ax.set_title(ds, fontsize=9)
        ax.set_xlabel("accuracy")
        ax.set_ylabel("EPG (box)")
    handles = [plt.Line2D([], [], marker=MARKERS[m], linestyle="", color="grey", label=m) for m in MODELS]
    handles += [plt.Line2D([], [], marker="o", linestyle="", color=c, label=loss) for loss, c in colours.items()]
    handles.append(plt.Line2D([], [], marker="x", linestyle="", color="black", label="control"))
    axes[0][-1].legend(handles=handles, fontsize=6, loc="best")
    return save_figure(fig, path)
