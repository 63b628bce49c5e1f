"""``xgir bench xgir-two-stage``: XGIR against its baselines in the two-stage setup.

Per seed (the dataset draw, the heads and the noise change with the seed; the
extractor is pretrained once, seed 0, and cached):

- ERM head on source-train features (the model XGIR starts from);
- DFR reference on a group-balanced held-out set (target-val, group labels);
- XGIR-IOX (Grad-CAM of the true class) and XGIR-CWOX (contrastive map of the
  true class's confusion cluster), swept over delta2 (pooled quantile of r);
- XGIR with ground-truth digit masks (the upper bound of the idea) and random-mask
  XGIR (same share of pixels kept per image, random places: a control);
- variants of XGIR-IOX at the default delta2: empty image mean / blur, delta2 as a
  per-unit quantile, half the noise scale.

No setting is chosen on the target split: the whole sweep is reported, and the
headline rows use the defaults fixed before the run (:class:`XGIRConfig`).
Writes report.md, results.json, delta2.png and heatmaps.png.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from xgir.bench import fmt, one_thread, spread_note
from xgir.correct.dfr import dfr_head
from xgir.correct.xgir import (
    EmptyImage,
    XGIRConfig,
    cwox_true_cluster_heatmaps,
    empty_images,
    fit_noisy_head,
    frozen_copy,
    retrain_head,
    support_from_heatmaps,
    true_class_heatmaps,
    unit_responses,
)
from xgir.data import load_dataset
from xgir.errors import XgirError
from xgir.explain.clusters import ConfusionTree
from xgir.io import cached, fingerprint, save_figure, write_json, write_text
from xgir.models.accuracy import accuracy_from_predictions
from xgir.progress import iterate, step
from xgir.train.config import two_stage_config
from xgir.train.features import cached_features, fit_head
from xgir.train.two_stage import frozen_with_new_head, pretrain_extractor

SUITE = "xgir-two-stage"
DEEP, SHALLOW = "layer3", "layer2"
DELTA2_SWEEP = (0.1, 0.25, 0.5, 0.75)
DELTA1_SWEEP = (0.01, 0.2, 0.4, 0.6, 0.8)


def head_accuracies(model: torch.nn.Module, h: dict[str, torch.Tensor], data: dict[str, Any]) -> dict[str, float]:
    """source / target / worst-group (target groups) accuracy of a head on cached features."""
    with torch.no_grad():
        src = accuracy_from_predictions(model(h["source-test"]).argmax(1), data["source-test"].labels)
        tgt = accuracy_from_predictions(model(h["target-test"]).argmax(1), data["target-test"].labels,
                                        data["target-test"].groups)
    return {"source": src["accuracy"], "target": tgt["accuracy"], "worst_group": tgt["worst_group"]}


def random_supports(support: torch.Tensor, seed: int) -> torch.Tensor:
    """Random supports keeping the same number of pixels per image as ``support``: the top
    pixels of a smooth random field (blobs, like a heatmap's support, at random places)."""
    g = torch.Generator().manual_seed(seed)
    n, h, w = support.shape
    field = F.interpolate(torch.rand(n, 1, 4, 4, generator=g), size=(h, w), mode="bicubic",
                          align_corners=False)[:, 0].flatten(1)
    counts = support.flatten(1).sum(1)
    ranks = field.argsort(dim=1, descending=True).argsort(dim=1)
    return (ranks < counts[:, None]).view(n, h, w)


QUICK_PRETRAIN = {"n": 2000, "epochs": 2}  # --quick: a small extractor (a smoke test in about a minute)
QUICK_NOTE = " (quick: extractor pretrained on 2000 images for 2 epochs, a smoke test, not a result)"


def run_seed(seed: int, quick: bool, progress: bool = True) -> dict[str, Any]:
    cfg = two_stage_config(seed=0)
    pretrain = cfg.pretrain
    if quick:
        data_cfg = pretrain.data.model_copy(update={"params": {**pretrain.data.params, "n": QUICK_PRETRAIN["n"]}})
        pretrain = pretrain.model_copy(update={"data": data_cfg, "epochs": QUICK_PRETRAIN["epochs"]})
    pre = pretrain_extractor(pretrain, cfg.model, seed=0, progress=progress)
    n = {"n": 1500} if quick else {}
    splits = ["source-train", "source-val", "source-test", "target-val", "target-test"]
    with step(f"building background-shift (seed {seed})", enabled=progress):
        data = {s: load_dataset("background-shift", s, seed=seed, p=0.95, **n) for s in splits}
    torch.manual_seed(seed)
    model = frozen_with_new_head(pre, cfg.model.arch, cfg.model.params, 10)
    model, features, head = frozen_copy(model)
    with step("features", enabled=progress):
        h = {s: cached_features(features, data[s], f"background-shift/{s}/seed={seed}/{n}") for s in splits}
    train = data["source-train"]
    y = train.labels
    masks, val_groups = train.masks, data["target-val"].groups
    if masks is None or val_groups is None:
        raise XgirError("background-shift: source-train has no object masks or target-val no groups")
    fit_head(h["source-train"], y, 10, epochs=cfg.train.epochs, lr=cfg.train.lr,
             batch_size=cfg.train.batch_size, seed=seed, head=head)
    rows: dict[str, dict[str, float]] = {"ERM head": head_accuracies(head, h, data)}
    extra: dict[str, Any] = {}

    dfr, info = dfr_head(h["target-val"], data["target-val"].labels, val_groups, 10, seed=seed)
    rows["DFR (group labels, reference)"] = head_accuracies(dfr, h, data)
    extra["dfr"] = info

    # heatmaps of the ERM model for the true class
    level = 0.5

    def heatmaps() -> dict[str, Any]:
        iox = true_class_heatmaps(model, train.images, y, DEEP)
        tree = ConfusionTree.fit(model, data["source-val"])
        cwox_maps, fallback = cwox_true_cluster_heatmaps(model, train.images, y, tree, level, iox, DEEP, SHALLOW)
        return {"iox": iox, "cwox": cwox_maps, "fallback": fallback,
                "clusters": [sorted(int(c) for c in cl) for cl in tree.clusters(level)]}

    key = fingerprint(model, f"background-shift/source-train/seed={seed}/{n}", level, DEEP, SHALLOW)
    with step("IOX and CWOX heatmaps of source-train", enabled=progress):
        maps = cached("heatmaps", key, heatmaps)  # a rerun only retrains heads
    iox, cwox_maps = maps["iox"], maps["cwox"]
    extra["cwox"] = {"level": level, "clusters": maps["clusters"], "fallback_to_iox": maps["fallback"]}
    base = XGIRConfig(seed=seed)
    supports = {
        "IOX": support_from_heatmaps(iox, (32, 32), base.delta1),
        "CWOX": support_from_heatmaps(cwox_maps, (32, 32), base.delta1),
        "GT mask": masks,
    }
    supports["random mask"] = random_supports(supports["IOX"], seed)
    extra["support_share"] = {k: float(v.float().mean()) for k, v in supports.items()}
    extra["support_precision"] = {
        k: float((v & masks).sum() / v.sum().clamp(min=1)) for k, v in supports.items()
    }

    x0_cache: dict[str, torch.Tensor] = {}

    def responses(kind: str, empty: EmptyImage, response: str = "core") -> torch.Tensor:
        key = f"{kind}/{empty}/{response}"
        if key not in x0_cache:
            x0 = empty_images(train.images, empty, data_mean=train.images.mean(0), blur_sigma=base.blur_sigma)
            x0_cache[key] = unit_responses(features, train.images, supports[kind], x0, response=response)
        return x0_cache[key]

    def run_xgir(kind: str, config: XGIRConfig) -> tuple[dict[str, float], dict[str, Any]]:
        sup = supports[kind]
        empty = ~sup.flatten(1).any(1)
        new_head, rec = retrain_head(h["source-train"], responses(kind, config.empty, config.response), y, 10, config,
                                     empty_support=empty, support_fraction=float(sup.float().mean()))
        acc = head_accuracies(new_head, h, data)
        return acc, {"frac_units_randomised": rec.frac_units_randomised,
                     "frac_units_fully_randomised": rec.frac_units_fully_randomised,
                     "delta2_abs": rec.delta2_used[0] if config.delta2_mode != "unit-quantile" else None,
                     "empty_supports": rec.empty_supports}

    sweep: dict[str, dict[float, Any]] = {}
    records: dict[str, Any] = {}
    jobs = [(k, d) for k in ("IOX", "CWOX", "GT mask", "random mask") for d in DELTA2_SWEEP]
    for kind, d2 in iterate(jobs, desc=f"xgir sweep seed {seed}", enabled=progress, unit="head"):
        acc, rec = run_xgir(kind, XGIRConfig(seed=seed, delta2=d2))
        sweep.setdefault(kind, {})[d2] = {**acc, **rec}
        if d2 == base.delta2:
            rows[f"XGIR-{kind}" if kind in ("IOX", "CWOX") else f"XGIR, {kind}"] = acc
            records[kind] = rec
    variants = {
        "XGIR-IOX, x0 = data mean": XGIRConfig(seed=seed, empty="data-mean"),
        "XGIR-IOX, x0 = blurred x": XGIRConfig(seed=seed, empty="blur"),
        "XGIR-IOX, delta2 per-unit quantile": XGIRConfig(seed=seed, delta2_mode="unit-quantile"),
        "XGIR-IOX, noise scale 0.5": XGIRConfig(seed=seed, noise_scale=0.5),
        "XGIR-IOX, r core minus context, x0 = mean": XGIRConfig(seed=seed, empty="data-mean",
                                                                response="core-minus-context"),
        "XGIR, GT mask, r core minus context, x0 = mean": XGIRConfig(seed=seed, empty="data-mean",
                                                                     response="core-minus-context"),
    }
    for name, conf in variants.items():
        acc, rec = run_xgir("GT mask" if "GT mask" in name else "IOX", conf)
        rows[name] = acc
        records[name] = rec
    # delta1 sweep (IOX, default delta2): does a tighter support find the digit?
    extra["delta1_sweep"] = {}
    for d1 in DELTA1_SWEEP:
        supports[f"IOX d1={d1}"] = sup = support_from_heatmaps(iox, (32, 32), d1)
        acc, rec = run_xgir(f"IOX d1={d1}", XGIRConfig(seed=seed, delta1=d1))
        extra["delta1_sweep"][d1] = {**acc, **rec, "support_share": float(sup.float().mean()),
                                     "support_precision": float((sup & masks).sum() / sup.sum().clamp(min=1))}
        del supports[f"IOX d1={d1}"]
    extra["diagnostics"], oracle_rows = _diagnostics(h, data, responses("GT mask", "zeros"), seed)
    rows.update({k: head_accuracies(v, h, data) for k, v in oracle_rows.items()})
    r = responses("IOX", "zeros")
    extra["r_iox_quantiles"] = {f"q{q}": float(torch.quantile(r.flatten()[::13], q / 100))
                                for q in (5, 25, 50, 75, 95)}
    extra["examples"] = {"images": train.images[:6], "iox": iox[:6], "cwox": cwox_maps[:6],
                         "supports": {k: v[:6] for k, v in supports.items()}, "labels": y[:6]}
    return {"rows": rows, "sweep": sweep, "records": records, "extra": extra}


def unit_r2(h: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Share of each unit's variance explained by a label (between-class / total), float[D]."""
    within = torch.zeros(h.shape[1])
    for c in torch.unique(labels):
        hc = h[labels == c]
        within += ((hc - hc.mean(0)) ** 2).sum(0)
    return 1 - within / len(h) / h.var(0, unbiased=False).clamp(min=1e-12)


def _diagnostics(h: dict[str, torch.Tensor], data: dict[str, Any], r_gt: torch.Tensor,
                 seed: int) -> tuple[dict[str, Any], dict[str, torch.nn.Linear]]:
    """Which units carry the background, and could randomising units help at all?

    Unit R^2 for digit and texture on target-val (independent factors); the correlation of
    each unit's mean response r (GT masks, x0 = zeros, standardised by the unit's std) with
    them; and oracle heads that randomise (lambda = 1) the k units with the highest texture
    R^2 (uses texture labels: a diagnostic of the mechanism, not a method)."""
    tv = data["target-val"]
    r2_digit = unit_r2(h["target-val"], tv.labels)
    r2_texture = unit_r2(h["target-val"], tv.extras["texture"])
    hs = h["source-train"]
    std = hs.std(0)
    r_std = (r_gt / std.clamp(min=1e-6)).mean(0)
    corr = lambda a, b: float(np.corrcoef(a.numpy(), b.numpy())[0, 1])  # noqa: E731
    info = {"unit_r2_digit_median": float(r2_digit.median()),
            "unit_r2_texture_median": float(r2_texture.median()),
            "corr_mean_r_gt_vs_r2_digit": corr(r_std, r2_digit),
            "corr_mean_r_gt_vs_r2_texture": corr(r_std, r2_texture)}
    heads = {}
    y = data["source-train"].labels
    d = hs.shape[1]
    for share in (0.25, 0.5, 0.75):
        k = int(round(share * d))
        lam = torch.zeros_like(hs)
        lam[:, r2_texture.argsort(descending=True)[:k]] = 1.0
        heads[f"oracle: randomise the {k} most texture-laden units (texture labels)"] = fit_noisy_head(
            hs, lam, y, 10, XGIRConfig(seed=seed))
    return info, heads


def run(out: Path, seeds: list[int], quick: bool = False) -> dict[str, Any]:
    start = time.time()
    out = Path(out)
    with one_thread():
        per_seed = {s: run_seed(s, quick) for s in seeds}
    first = per_seed[seeds[0]]
    names = list(first["rows"])
    table: dict[str, dict[str, list[float]]] = {
        name: {m: [per_seed[s]["rows"][name][m] for s in seeds] for m in ("source", "target", "worst_group")}
        for name in names
    }
    erm_t = np.mean(table["ERM head"]["target"])
    dfr_t = np.mean(table["DFR (group labels, reference)"]["target"])
    lines = [
        "# XGIR in the two-stage setup (background-shift, p = 0.95)", "",
        f"Seeds: {seeds}{QUICK_NOTE if quick else ''}. {spread_note(len(seeds))} Defaults: "
        f"{XGIRConfig().delta2_mode} delta2 = {XGIRConfig().delta2}, delta1 = {XGIRConfig().delta1}, "
        f"x0 = zeros, {XGIRConfig().draws} noise draws. 'gap closed' = (target - ERM) / (DFR - ERM).", "",
        "| method | source acc | target acc | worst-group acc | gap closed |",
        "|---|---|---|---|---|",
    ]
    for name in names:
        t = table[name]
        gap = (np.mean(t["target"]) - erm_t) / (dfr_t - erm_t) if dfr_t != erm_t else float("nan")
        lines.append(f"| {name} | {fmt(t['source'])} | {fmt(t['target'])} | "
                     f"{fmt(t['worst_group'])} | {gap:+.2f} |")
    lines += ["", "## Sweep over delta2 (pooled quantile of r): target accuracy", "",
              "| support | " + " | ".join(f"q = {d}" for d in DELTA2_SWEEP) + " |",
              "|---|" + "---|" * len(DELTA2_SWEEP)]
    for kind in first["sweep"]:
        cells = [fmt([per_seed[s]["sweep"][kind][d]["target"] for s in seeds]) for d in DELTA2_SWEEP]
        lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    lines += ["", "Share of units randomised (mean lambda) at each delta2, seed "
              f"{seeds[0]}: " + "; ".join(
                  f"{kind}: " + ", ".join(f"{first['sweep'][kind][d]['frac_units_randomised']:.2f}"
                                         for d in DELTA2_SWEEP) for kind in first["sweep"])]
    lines += ["", "## Sweep over delta1 (XGIR-IOX, default delta2)", "",
              "| delta1 | support share | support precision (on digit) | target acc |", "|---|---|---|---|"]
    for d1 in DELTA1_SWEEP:
        cell = lambda k, d1=d1: fmt([per_seed[s]["extra"]["delta1_sweep"][d1][k] for s in seeds])  # noqa: E731
        lines.append(f"| {d1} | {cell('support_share')} | {cell('support_precision')} | {cell('target')} |")
    ex = first["extra"]
    lines += ["", "## Supports, CWOX and unit diagnostics (seed " + f"{seeds[0]})", "",
              "| support | share of pixels | precision (share on the digit) |", "|---|---|---|"]
    lines += [f"| {k} | {v:.3f} | {ex['support_precision'].get(k, float('nan')):.3f} |"
              for k, v in ex["support_share"].items()]
    clusters = ex["cwox"]["clusters"]
    lines += ["", f"CWOX (tree fitted on source-val, cut at {ex['cwox']['level']:g}): "
              + (", ".join("{" + ", ".join(map(str, c)) + "}" for c in clusters) if clusters else
                 "no two digits share a cluster at this level (every cluster is one class)")
              + f"; images falling back to IOX: {ex['cwox']['fallback_to_iox']:.2f}.",
              "", "Quantiles of r (IOX, x0 = zeros): " + ", ".join(f"{k} {v:.3g}" for k, v in
                                                                    ex["r_iox_quantiles"].items()) + ".",
              "", "Unit diagnostics: " + "; ".join(f"{k.replace('_', ' ')} {v:.3f}" if isinstance(v, float)
                                                   else f"{k.replace('_', ' ')} {v}"
                                                   for k, v in ex["diagnostics"].items()) + ".",
              "", "![target accuracy against delta2](delta2.png)", "",
              "![IOX and CWOX maps and each support](heatmaps.png)",
              "", f"Run time: {time.time() - start:.0f} s."]
    report = "\n".join(lines) + "\n"
    _plot_sweep(per_seed, seeds, out / "delta2.png")
    _plot_examples(ex["examples"], out / "heatmaps.png")
    results = {"seeds": seeds, "quick": quick, "table": table,
               "sweep": {s: per_seed[s]["sweep"] for s in seeds},
               "records": {s: per_seed[s]["records"] for s in seeds},
               "extra": {s: {k: v for k, v in per_seed[s]["extra"].items() if k != "examples"} for s in seeds}}
    write_json(out / "results.json", results)
    write_text(out / "report.md", report)
    return results


def _plot_sweep(per_seed: dict[int, Any], seeds: list[int], path: Path) -> None:
    import matplotlib.pyplot as plt

    from xgir.viz import legend_outside

    fig, ax = plt.subplots(figsize=(7.5, 3.8), layout="constrained")
    for kind in per_seed[seeds[0]]["sweep"]:
        vals = np.array([[per_seed[s]["sweep"][kind][d]["target"] for d in DELTA2_SWEEP] for s in seeds])
        ax.errorbar(DELTA2_SWEEP, vals.mean(0), yerr=vals.std(0), marker="o", capsize=3, label=f"XGIR-{kind}")
    for name, style in (("ERM head", "--"), ("DFR (group labels, reference)", ":")):
        v = np.mean([per_seed[s]["rows"][name]["target"] for s in seeds])
        ax.axhline(v, linestyle=style, color="k", label=name)
    ax.set_xlabel("delta2 (pooled quantile of r)")
    ax.set_ylabel("target accuracy")
    legend_outside(ax)
    ax.set_title("XGIR: target accuracy against delta2")
    save_figure(fig, path)


def _plot_examples(ex: dict[str, Any], path: Path) -> None:
    """Images with their IOX and CWOX maps and each support, one row per image."""
    from xgir.viz import heatmap_grid

    size = ex["images"].shape[-2:]
    iox = F.interpolate(ex["iox"][:, None], size=size, mode="bilinear")[:, 0]
    maps = torch.stack([iox, ex["cwox"], *[v.float() for v in ex["supports"].values()]], dim=1)
    heatmap_grid(ex["images"], maps, path, row_titles=[f"y={int(y)}" for y in ex["labels"]],
                 col_titles=["IOX map", "CWOX map", *[f"support: {k}" for k in ex["supports"]]])
