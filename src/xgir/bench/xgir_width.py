"""``xgir bench xgir-width``: XGIR against extractor width (64, 256, 512 units at the head).

The xgir-two-stage report explains XGIR's failure on the SmallResNet extractor (64 units) by
entanglement: each unit mixes digit and texture, so randomising whole units cannot remove the
texture alone. This suite tests that explanation by widening the head. Per width, one extractor
is pretrained (seed 0, cached) with the two-stage setup's pretraining data, optimiser and
10 epochs (the same for every width).
The extractor is the SmallResNet of that setup (width 16) with ``head_width`` units: a 1x1
conv-BN-ReLU appended to ``layer3`` (:class:`xgir.models.zoo.SmallResNet`). A full widening of
the 3x3 stages costs 16-64x the compute and does not fit a CPU run.

Per width and seed (the seed changes the background-shift draw, the heads and the noise):
ERM head, DFR reference (group labels), XGIR-IOX (the note's rule, defaults), XGIR with
ground-truth digit masks, random-mask XGIR (control), and the context-swap variant with
ground-truth masks. Per width, the entanglement diagnostics: each unit's R^2 for digit and
texture on target-val (units classed as digit-selective, texture-selective, mixed or weak) and
linear probes for both factors. Writes report.md, results.json and width.png.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from xgir.bench import fmt, mean_std, one_thread, spread_note
from xgir.bench.xgir_two_stage import DEEP, head_accuracies, random_supports, unit_r2
from xgir.correct.dfr import dfr_head
from xgir.correct.xgir import (
    XGIRConfig,
    delta2_per_unit,
    empty_images,
    frozen_copy,
    interventional_lambda,
    retrain_head,
    support_from_heatmaps,
    true_class_heatmaps,
    unit_responses,
)
from xgir.data import load_dataset
from xgir.data.base import ImageDataset
from xgir.errors import XgirError
from xgir.io import cached, fingerprint, save_figure, write_json, write_text
from xgir.progress import step
from xgir.train.config import ModelConfig, PretrainConfig, two_stage_config
from xgir.train.features import cached_features, fit_head, linear_probe
from xgir.train.two_stage import frozen_with_new_head, pretrain_accuracy, pretrain_extractor

SUITE = "xgir-width"
WIDTHS = (64, 256, 512)
SPLITS = ("source-train", "source-val", "source-test", "target-val", "target-test")
ERM, DFR = "ERM head", "DFR (group labels, reference)"
# unit classes: digit-selective when digit R^2 >= 3x texture R^2 (selectivity > 0.5), texture-selective
# the other way round, mixed in between; weak when neither R^2 reaches 0.05 (dead units included)
SELECTIVITY, WEAK_R2 = 0.5, 0.05
MECHANISM_VERSION = "rule-lambda-v1"  # the same for rule_by_unit_class
CODE_VERSION = "xgir-width-v1"  # part of the cache key of each (width, seed) result: bump it when the rows change


@dataclass(frozen=True)
class Sizes:
    """Pretraining images and epochs (None: the two-stage setup's) and images per split (None: all)."""

    pretrain_n: int | None = None
    pretrain_epochs: int | None = None
    n: int | None = None


# The full run pretrains as the two-stage setup does (10 epochs, the same data, lr and batch size for every
# width); three extractors take ~50 CPU-minutes (cached: run the widths in parallel with run(widths=(w,))).
FULL, QUICK = Sizes(), Sizes(pretrain_n=256, pretrain_epochs=1, n=256)


def width_model(head_width: int) -> ModelConfig:
    """The two-stage setup's SmallResNet with ``head_width`` units at the head."""
    model = two_stage_config().model
    return ModelConfig(arch=model.arch, params={**model.params, "head_width": head_width})


def pretrain_config(sizes: Sizes) -> PretrainConfig:
    """The two-stage setup's pretraining, with ``sizes``' images and epochs where given."""
    pre = two_stage_config().pretrain
    update: dict[str, Any] = {}
    if sizes.pretrain_epochs is not None:
        update["epochs"] = sizes.pretrain_epochs
    if sizes.pretrain_n is not None:
        update["data"] = pre.data.model_copy(update={"params": {**pre.data.params, "n": sizes.pretrain_n}})
    return pre.model_copy(update=update)


def extractor(head_width: int, sizes: Sizes, progress: bool = True) -> nn.Module:
    """The pretrained stage-1 network with ``head_width`` units (seed 0, cached on disk)."""
    return pretrain_extractor(pretrain_config(sizes), width_model(head_width), seed=0, progress=progress)


def unit_class_masks(r2_digit: torch.Tensor, r2_texture: torch.Tensor, live: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each unit's class: bool[D] masks "digit-selective", "texture-selective", "mixed", "weak"
    (disjoint, covering all units) from per-unit R^2 float[D] and ``live`` bool[D] (non-constant units)."""
    informative = live & (torch.maximum(r2_digit, r2_texture) >= WEAK_R2)
    sel = (r2_digit - r2_texture) / (r2_digit + r2_texture).clamp(min=1e-12)
    digit = informative & (sel > SELECTIVITY)
    texture = informative & (sel < -SELECTIVITY)
    return {"digit-selective": digit, "texture-selective": texture, "mixed": informative & ~digit & ~texture,
            "weak": ~informative}


def unit_classes(r2_digit: torch.Tensor, r2_texture: torch.Tensor, live: torch.Tensor) -> dict[str, float]:
    """Shares of units (each in [0, 1], summing to 1) in each class of :func:`unit_class_masks`."""
    return {k: int(m.sum()) / len(m) for k, m in unit_class_masks(r2_digit, r2_texture, live).items()}


def unit_r2_both(h_val: torch.Tensor, val: ImageDataset) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Digit R^2, texture R^2 (float[D], 0 for dead units) and live units (bool[D]) on target-val."""
    live = h_val.std(0) > 1e-6  # a constant (dead) unit carries nothing; unit_r2 would read it as 1
    r2d = torch.where(live, unit_r2(h_val, val.labels), torch.zeros(()))
    r2t = torch.where(live, unit_r2(h_val, val.extras["texture"]), torch.zeros(()))
    return r2d, r2t, live


def entanglement(h_val: torch.Tensor, val: ImageDataset, h_test: torch.Tensor, test: ImageDataset) -> dict[str, Any]:
    """Per-unit R^2 for digit and texture on target-val features float[N,D] (the two factors are
    independent there), the unit classes, and linear probes (fit target-val, score target-test)."""
    tex_val, tex_test = val.extras["texture"], test.extras["texture"]
    r2d, r2t, live = unit_r2_both(h_val, val)
    return {
        "units": int(h_val.shape[1]),
        "dead_units": int((~live).sum()),
        **unit_classes(r2d, r2t, live),
        "median_r2_digit": float(r2d[live].median()) if live.any() else 0.0,
        "median_r2_texture": float(r2t[live].median()) if live.any() else 0.0,
        "probe_digit": linear_probe(h_val, val.labels, h_test, test.labels),
        "probe_texture": linear_probe(h_val, tex_val, h_test, tex_test),
    }


def methods(seed: int) -> dict[str, tuple[str, XGIRConfig]]:
    """Row name -> (support, config) of the XGIR rows; defaults fixed before the run."""
    return {
        "XGIR-IOX (note's rule, defaults)": ("IOX", XGIRConfig(seed=seed)),
        "XGIR, GT mask (upper bound of the idea)": ("GT mask", XGIRConfig(seed=seed)),
        "XGIR, random mask (control)": ("random mask", XGIRConfig(seed=seed)),
        "variant: context swap, GT mask, x0 = mean": ("GT mask",
                                                      XGIRConfig(seed=seed, variant="swap", empty="data-mean")),
    }


def run_width_seed(pre: nn.Module, head_width: int, data: dict[str, ImageDataset], seed: int,
                   sizes: Sizes, progress: bool = True) -> dict[str, Any]:
    """Every row for one extractor and one seed's data draw, plus the entanglement diagnostics."""
    model_cfg = width_model(head_width)
    torch.manual_seed(seed)
    model = frozen_with_new_head(pre, model_cfg.arch, model_cfg.params, 10)
    model, features, head = frozen_copy(model)
    n_key = f"seed={seed}/n={sizes.n}"
    with step(f"features (head width {head_width}, seed {seed})", enabled=progress):
        h = {s: cached_features(features, data[s], f"background-shift/{s}/{n_key}") for s in SPLITS}
    train, tv = data["source-train"], data["target-val"]
    y, masks, val_groups = train.labels, train.masks, tv.groups
    if masks is None or val_groups is None:
        raise XgirError("background-shift: source-train has no object masks or target-val no groups")
    cfg = two_stage_config().train
    fit_head(h["source-train"], y, 10, epochs=cfg.epochs, lr=cfg.lr, batch_size=cfg.batch_size, seed=seed,
             head=head)
    rows = {ERM: head_accuracies(head, h, data)}
    dfr, _ = dfr_head(h["target-val"], tv.labels, val_groups, 10, seed=seed)
    rows[DFR] = head_accuracies(dfr, h, data)

    key = fingerprint(model, f"background-shift/source-train/{n_key}", DEEP)
    with step("IOX heatmaps of source-train", enabled=progress):
        iox = cached("heatmaps", key, lambda: true_class_heatmaps(model, train.images, y, DEEP))
    base = XGIRConfig(seed=seed)
    size = (int(masks.shape[-2]), int(masks.shape[-1]))
    supports = {"IOX": support_from_heatmaps(iox, size, base.delta1), "GT mask": masks}
    supports["random mask"] = random_supports(supports["IOX"], seed)
    responses: dict[tuple[str, str], torch.Tensor] = {}
    records: dict[str, Any] = {}
    for name, (kind, conf) in methods(seed).items():
        if (kind, conf.empty) not in responses:
            x0 = empty_images(train.images, conf.empty, data_mean=train.images.mean(0), blur_sigma=conf.blur_sigma)
            responses[kind, conf.empty] = unit_responses(features, train.images, supports[kind], x0)
        sup = supports[kind]
        new_head, rec = retrain_head(h["source-train"], responses[kind, conf.empty], y, 10, conf,
                                     empty_support=~sup.flatten(1).any(1),
                                     support_fraction=float(sup.float().mean()))
        rows[name] = head_accuracies(new_head, h, data)
        records[name] = {"frac_units_randomised": rec.frac_units_randomised}
    erm_t, dfr_t = rows[ERM]["target"], rows[DFR]["target"]
    for r in rows.values():
        r["gap_closed"] = (r["target"] - erm_t) / (dfr_t - erm_t) if dfr_t != erm_t else float("nan")
    diag = entanglement(h["target-val"], tv, h["target-test"], data["target-test"])
    diag["support_precision"] = {k: float((v & masks).sum() / v.sum().clamp(min=1)) for k, v in supports.items()}
    diag["support_share"] = {k: float(v.float().mean()) for k, v in supports.items()}
    return {"rows": rows, "records": records, "diagnostics": diag}


def rule_by_unit_class(pre: nn.Module, head_width: int, data: dict[str, ImageDataset], seed: int,
                       sizes: Sizes) -> dict[str, float]:
    """Does the note's rule randomise the texture units? Mean lambda (defaults, ground-truth digit
    masks, x0 = zeros) over source-train images and the units of each class, and over all units."""
    model_cfg = width_model(head_width)
    _, features, _ = frozen_copy(frozen_with_new_head(pre, model_cfg.arch, model_cfg.params, 10))
    train, tv = data["source-train"], data["target-val"]
    if train.masks is None:
        raise XgirError("background-shift: source-train has no object masks")
    h_val = cached_features(features, tv, f"background-shift/target-val/seed={seed}/n={sizes.n}")
    conf = XGIRConfig(seed=seed)
    r = unit_responses(features, train.images, train.masks, torch.zeros_like(train.images[:1]).expand_as(train.images))
    lam = interventional_lambda(r, delta2_per_unit(r, conf)).mean(0)
    out = {k: float(lam[m].mean()) if m.any() else float("nan")
           for k, m in unit_class_masks(*unit_r2_both(h_val, tv)).items()}
    return {**out, "all units": float(lam.mean())}


def run(out: Path, seeds: list[int], quick: bool = False, widths: tuple[int, ...] = WIDTHS,
        progress: bool = True) -> dict[str, Any]:
    """The sweep: {"widths", "seeds", "per_width": {width: {seed: run_width_seed(...)}}, ...}."""
    start = time.time()
    out = Path(out)
    sizes = QUICK if quick else FULL
    per_width: dict[int, dict[int, Any]] = {w: {} for w in widths}
    pretrain_acc: dict[int, dict[str, float]] = {}
    with one_thread():
        nets = {}
        for w in widths:
            with step(f"pretraining the extractor with {w} units (cached)", enabled=progress):
                nets[w] = extractor(w, sizes, progress)
            pretrain_acc[w] = pretrain_accuracy(nets[w], 0, pretrain_config(sizes), n=sizes.n)
        for seed in seeds:
            with step(f"building background-shift (seed {seed})", enabled=progress):
                n = {} if sizes.n is None else {"n": sizes.n}
                data = {s: load_dataset("background-shift", s, seed=seed, p=0.95, **n) for s in SPLITS}
            for w in widths:  # cached: a rerun (or a run with more widths or seeds) only assembles
                key = fingerprint(nets[w], w, seed, asdict(sizes), CODE_VERSION)
                per_width[w][seed] = cached(
                    "xgir-width", key, partial(run_width_seed, nets[w], w, data, seed, sizes, progress))
                per_width[w][seed]["rule_lambda"] = cached(
                    "xgir-width", fingerprint(key, MECHANISM_VERSION),
                    partial(rule_by_unit_class, nets[w], w, data, seed, sizes))
    summ = summary(per_width, widths, seeds)
    results: dict[str, Any] = {"widths": list(widths), "seeds": seeds, "quick": quick,
                               "pretrain_accuracy": pretrain_acc, "per_width": per_width, "summary": summ}
    _plot(summ, widths, out / "width.png")
    write_text(out / "report.md", report(results, time.time() - start))
    write_json(out / "results.json", results)
    return results


QUICK_NOTE = " (quick: tiny pretraining and data, a smoke test, not a result)"
DIAG_KEYS = ("digit-selective", "texture-selective", "mixed", "weak", "median_r2_digit", "median_r2_texture",
             "probe_digit", "probe_texture")


def summary(per_width: dict[int, dict[int, Any]], widths: tuple[int, ...], seeds: list[int]) -> dict[int, Any]:
    """Per width: each row's metric lists over seeds, and each diagnostic's list over seeds."""
    out: dict[int, Any] = {}
    for w in widths:
        rows = per_width[w][seeds[0]]["rows"]
        out[w] = {
            "rows": {name: {m: [per_width[w][s]["rows"][name][m] for s in seeds]
                            for m in ("source", "target", "worst_group", "gap_closed")} for name in rows},
            "diagnostics": {k: [per_width[w][s]["diagnostics"][k] for s in seeds] for k in DIAG_KEYS},
            "units": per_width[w][seeds[0]]["diagnostics"]["units"],
            "rule_lambda": {k: [per_width[w][s]["rule_lambda"][k] for s in seeds]
                            for k in per_width[w][seeds[0]]["rule_lambda"]},
            "support_precision": {k: [per_width[w][s]["diagnostics"]["support_precision"][k] for s in seeds]
                                  for k in per_width[w][seeds[0]]["diagnostics"]["support_precision"]},
        }
    return out


def report(results: dict[str, Any], seconds: float) -> str:
    widths, seeds, summ = results["widths"], results["seeds"], results["summary"]
    base = XGIRConfig()
    epochs = pretrain_config(QUICK if results["quick"] else FULL).epochs
    lines = [
        "# XGIR against extractor width (background-shift, p = 0.95)", "",
        f"Seeds: {seeds}{QUICK_NOTE if results['quick'] else ''}."
        f" {spread_note(len(seeds))} Extractor: the two-stage SmallResNet (width 16) with a 1x1 conv-BN-ReLU of "
        "`head_width` units after `layer3`, pretrained once per width (seed 0) with the two-stage setup's "
        f"pretraining data for {epochs} epochs. XGIR defaults: {base.delta2_mode} delta2 = {base.delta2}, "
        f"delta1 = {base.delta1}, "
        f"x0 = {base.empty}, {base.draws} noise draws. 'gap closed' = (target - ERM) / (DFR - ERM), per seed.",
    ]
    for w in widths:
        lines += ["", f"## {w} units", "", "| method | source acc | target acc | worst-group acc | gap closed |",
                  "|---|---|---|---|---|"]
        for name, t in summ[w]["rows"].items():
            gap = "-" if name in (ERM, DFR) else fmt(t["gap_closed"], 2)
            lines.append(f"| {name} | {fmt(t['source'])} | {fmt(t['target'])} | {fmt(t['worst_group'])} | {gap} |")
        prec = summ[w]["support_precision"]
        lines += ["", "Support precision (share of the support on the digit): "
                  + ", ".join(f"{k} {fmt(v, 2)}" for k, v in prec.items())]
    lines += ["", "Stage-1 accuracy on glyph-pretrain/val (character, texture): " + "; ".join(
        f"{w} units {a['char']:.3f}, {a['texture']:.3f}" for w, a in results["pretrain_accuracy"].items())]
    lines += ["", "## Entanglement: unit classes (target-val R^2) and linear probes", "",
              f"A unit is digit-selective when its digit R^2 is at least 3x its texture R^2 (selectivity "
              f"(R2d - R2t) / (R2d + R2t) > {SELECTIVITY}), texture-selective the other way round, mixed in "
              f"between, weak when neither R^2 reaches {WEAK_R2} (dead units included). Shares of the units; "
              "probes: logistic regression fitted on target-val, scored on target-test.", "",
              "| units | digit-selective | texture-selective | mixed | weak | median R^2 digit | median R^2 texture "
              "| probe digit | probe texture |", "|---|---|---|---|---|---|---|---|---|"]
    for w in widths:
        d = summ[w]["diagnostics"]
        lines.append(f"| {summ[w]['units']} | " + " | ".join(fmt(d[k]) for k in DIAG_KEYS) + " |")
    lam_keys = list(summ[widths[0]]["rule_lambda"])
    lines += ["", "## Does the note's rule randomise the texture units?", "",
              "Mean lambda (1 = the unit is fully randomised) of the note's rule with ground-truth digit masks "
              "(defaults, x0 = zeros) over source-train images, per unit class. If the rule found the shortcut, "
              "lambda would be high on texture-selective units and low on digit-selective ones.", "",
              "| units | " + " | ".join(lam_keys) + " |", "|---|" + "---|" * len(lam_keys)]
    for w in widths:
        lines.append(f"| {summ[w]['units']} | " + " | ".join(fmt(summ[w]["rule_lambda"][k], 2) for k in lam_keys)
                     + " |")
    lines += ["", "## Gap closed against width", "", "| method | " + " | ".join(f"{w} units" for w in widths) + " |",
              "|---|" + "---|" * len(widths)]
    for name in summ[widths[0]]["rows"]:
        if name not in (ERM, DFR):
            cells = [fmt(summ[w]["rows"][name]["gap_closed"], 2) for w in widths]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", f"Run time: {seconds:.0f} s (extractors, features and heatmaps cached under XGIR_CACHE)."]
    return "\n".join(lines) + "\n"


def _plot(summ: dict[int, Any], widths: tuple[int, ...], path: Path) -> None:
    """Left: gap closed (mean ± std over seeds) per XGIR row against width; right: unit classes."""
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 3.8))
    for name in summ[widths[0]]["rows"]:
        if name in (ERM, DFR):
            continue
        ms = [mean_std(summ[w]["rows"][name]["gap_closed"]) for w in widths]
        ax.errorbar(widths, [m for m, _ in ms], yerr=[s for _, s in ms], marker="o", capsize=3, label=name)
    ax.axhline(0, color="k", linestyle="--", linewidth=1, label="ERM head (0)")
    ax.axhline(1, color="k", linestyle=":", linewidth=1, label="DFR (1)")
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(widths), [str(w) for w in widths])
    ax.set_xlabel("units at the head")
    ax.set_ylabel("gap closed")
    ax.set_title("XGIR against width")
    ax.legend(fontsize=7)
    for key in ("digit-selective", "texture-selective", "mixed", "weak"):
        ms = [mean_std(summ[w]["diagnostics"][key]) for w in widths]
        bx.errorbar(widths, [m for m, _ in ms], yerr=[s for _, s in ms], marker="o", capsize=3, label=key)
    bx.set_xscale("log", base=2)
    bx.set_xticks(list(widths), [str(w) for w in widths])
    bx.set_ylim(0, 1)
    bx.set_xlabel("units at the head")
    bx.set_ylabel("share of units")
    bx.set_title("unit classes (target-val R^2)")
    bx.legend(fontsize=7)
    save_figure(fig, path)

