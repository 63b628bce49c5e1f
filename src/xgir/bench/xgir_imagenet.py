"""``xgir bench xgir-imagenet``: XGIR on a frozen ImageNet-pretrained extractor (EfficientNet-Lite0).

Setting (``xgir.data.objects``): font digits at 128 px over the procedural textures, exact
binary foreground masks; source bias p (texture family = digit with probability p), target
independent; groups (digit, family). The extractor is the pretrained network up to its
``_fc`` head (1280 signed units); a new 10-class softmax head trained on the biased source
set is the model XGIR corrects.

Compute plan: one source pool (aligned + misaligned images) is rendered and passed through the
network once; each (p, seed) draws its source-train set from it (:func:`bias_subset`), and
source-val / source-test likewise from their own pools. The images do not change with the
seed; the subset, the heads, the noise and the random masks do. The last maps M (input of the
global pool) are kept, so every linear head's CAM (= Grad-CAM at M) costs no backward pass.
Every network pass is cached on disk (``xgir.io.cached``; :mod:`xgir.bench.xgir_imagenet_stage`
holds the data, passes and supports), and so is the DFR head of each seed (it does not depend on
p): a rerun only fits heads. The ~20 XGIR heads of one (p, seed) are fitted as one batched problem
(:func:`xgir.train.heads.fit_heads`: each head as ``fit_head`` fits it, to float summation order).

Core sources (support s = 1[map / max > DELTA1], upsampled): the ERM head's CAM of the true
class (the note's IOX; the map of the seed-0 ERM head of each p, shared by the seeds), the
pretrained ImageNet head's CAM of its top-5 classes, the class-agnostic novelty map, and the
controls: the exact foreground mask (clean ground truth) and a random blob mask of the same
size. Settings are fixed before the run (below); the "best variant" of each p is chosen on
source-val accuracy among annotation-free rows (never on target data). Writes report.md,
results.json, gap.png, heatmaps.png.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from xgir.bench import fmt, one_thread, spread_note
from xgir.bench._matched import fit_rows
from xgir.bench.xgir_imagenet_stage import DELTA1, MODEL, QUICK, Sizes, Stage, present
from xgir.bench.xgir_two_stage import unit_r2
from xgir.correct.dfr import dfr_head
from xgir.correct.xgir import XGIRConfig, support_from_heatmaps, xgir_training_set
from xgir.correct.xgir_variants import support_precision
from xgir.io import cached, save_figure, write_json, write_text
from xgir.models.accuracy import accuracy_from_predictions
from xgir.train.features import fit_head, linear_probe

SUITE = "xgir-imagenet"
FLOOR = 0.05  # signed reading: the unit's 5 % quantile of r is its "no response"


def _methods(seed: int) -> dict[str, tuple[str, XGIRConfig, bool]]:
    """Row name -> (core source, config, annotation-free). The note's rule with today's defaults
    first, then the signed reading and the variants (labelled 'variant')."""
    base = XGIRConfig(seed=seed, delta1=DELTA1)
    signed = replace(base, floor=FLOOR, empty="data-mean")
    swap = replace(base, variant="swap", empty="data-mean")
    rows: dict[str, tuple[str, XGIRConfig, bool]] = {
        "note's rule (defaults, x0 = zeros), ERM CAM": ("erm", base, True),
        "note's rule (defaults, x0 = mean), pretrained core": ("pretrained", replace(base, empty="data-mean"), True),
    }
    rows[f"note, signed (floor q{FLOOR}, x0 = zeros), erm core"] = ("erm", replace(signed, empty="zeros"), True)
    for core, free in (("pretrained", True), ("novelty", True), ("gt", False), ("random", True)):
        rows[f"note, signed (floor q{FLOOR}, x0 = mean), {core} core"] = (core, signed, free)
    for core, free in (("pretrained", True), ("gt", False)):
        rows[f"variant: r = f(x') - f(x) (signed), {core} core"] = (
            core, replace(signed, response="core-vs-whole"), free)
        rows[f"variant: signed + empirical noise, {core} core"] = (core, replace(signed, noise="empirical"), free)
        rows[f"variant: signed in PCA basis, {core} core"] = (core, replace(signed, basis="pca"), free)
        rows[f"variant: signed in whitened basis, {core} core"] = (core, replace(signed, basis="whiten"), free)
    rows["variant: context swap (x0 = zeros), erm core"] = ("erm", replace(swap, empty="zeros"), True)
    for core, free in (("pretrained", True), ("novelty", True), ("gt", False), ("random", True)):
        rows[f"variant: context swap, {core} core"] = (core, swap, free)
    return rows


def _accuracies(head: torch.nn.Module, h: dict[str, torch.Tensor], y: dict[str, torch.Tensor],
                groups: torch.Tensor, val_groups: torch.Tensor) -> dict[str, float]:
    """source (source-test), source-val, source-val worst group, target and worst-group (target-test)."""
    with torch.no_grad():
        pred = {k: head(h[k]).argmax(1) for k in ("source-val", "source-test", "target-test")}
    val = accuracy_from_predictions(pred["source-val"], y["source-val"], val_groups)
    tgt = accuracy_from_predictions(pred["target-test"], y["target-test"], groups)
    return {"source": accuracy_from_predictions(pred["source-test"], y["source-test"])["accuracy"],
            "source-val": val["accuracy"], "source-val_worst_group": val["worst_group"],
            "target": tgt["accuracy"], "worst_group": tgt["worst_group"]}


def probes(st: Stage) -> dict[str, float]:
    """Linear probes fitted on target-val features, scored on target-test: digit and texture."""
    tv, tt = st.data["target-val"], st.data["target-test"]
    return {"digit": linear_probe(st.h["target-val"], tv.labels, st.h["target-test"], tt.labels),
            "texture": linear_probe(st.h["target-val"], tv.extras["texture"], st.h["target-test"],
                                    tt.extras["texture"])}


def dfr_reference(st: Stage, seed: int) -> torch.nn.Linear:
    """The DFR head on target-val (it does not depend on p), cached on disk per seed."""
    tv = st.data["target-val"]

    def compute() -> dict[str, torch.Tensor]:
        head, _ = dfr_head(st.h["target-val"], tv.labels, present(tv.groups, "groups"), 10, seed=seed)
        return {"weight": head.weight.detach(), "bias": head.bias.detach()}

    got = cached("xgir-imagenet", f"{st.keys['target-val']}-dfr-seed{seed}", compute)
    head = torch.nn.Linear(got["weight"].shape[1], 10)
    with torch.no_grad():
        head.weight.copy_(got["weight"])
        head.bias.copy_(got["bias"])
    return head.eval()


def run_p(st: Stage, p: float, seeds: list[int], progress: bool = False) -> dict[str, Any]:
    """Every method at bias p for each seed: {seed: {row: accuracies}}, plus diagnostics."""
    pool = st.data["pool"]
    sz = st.sizes
    out: dict[int, dict[str, dict[str, float]]] = {}
    diag: dict[str, Any] = {}
    groups = present(st.data["target-test"].groups, "groups")
    for seed in seeds:
        idx, hs, ys, h, y, vg = st.draw(p, seed)
        erm = fit_head(hs, ys, 10, epochs=30, lr=1e-2, seed=seed)
        if seed == seeds[0] and p in sz.erm_core_ps:
            st.set_erm_support(p, erm)
        rows = {"ERM head": _accuracies(erm, h, y, groups, vg),
                "DFR (group labels, reference)": _accuracies(dfr_reference(st, seed), h, y, groups, vg)}
        jobs: dict[str, tuple[torch.Tensor, torch.Tensor, XGIRConfig]] = {}
        shares: dict[str, float] = {}
        for name, (core, config, _free) in _methods(seed).items():
            if core == "erm" and p not in sz.erm_core_ps:
                continue
            key = f"erm p={p}" if core == "erm" else core
            sup = st.supports[key][idx]
            r = st.responses(key, config)[idx]
            empty = ~sup.flatten(1).any(1)
            x, yy, rec = xgir_training_set(hs, r, ys, config, empty, float(sup.float().mean()))
            jobs[name] = (x, yy, config)
            shares[name] = rec.frac_units_randomised
        for name, head in fit_rows(jobs, 10).items():
            rows[name] = {**_accuracies(head, h, y, groups, vg), "frac_randomised": shares[name]}
        out[seed] = {n: rows[n] for n in ["ERM head", "DFR (group labels, reference)", *jobs]}  # table order
    kinds = [k for k in ("gt", "random", "pretrained", "novelty", f"erm p={p}") if k in st.supports]
    diag["support_precision"] = {k: support_precision(st.supports[k], present(pool.masks, "masks")) for k in kinds}
    diag["support_share"] = {k: float(st.supports[k].float().mean()) for k in kinds}
    return {"seeds": out, "diagnostics": diag}


def diagnostics(st: Stage) -> dict[str, Any]:
    """Unit selectivity (target-val R^2 for digit and texture), distributions of r (GT core)."""
    tv = st.data["target-val"]
    r2d, r2t = unit_r2(st.h["target-val"], tv.labels), unit_r2(st.h["target-val"], tv.extras["texture"])
    out: dict[str, Any] = {
        "unit_r2_digit_median": float(r2d.median()), "unit_r2_texture_median": float(r2t.median()),
        "share_units_digit_gt_texture": float((r2d > r2t).float().mean()),
        "share_units_digit_r2_above_0.3": float((r2d > 0.3).float().mean()),
        "share_units_texture_r2_above_0.3": float((r2t > 0.3).float().mean()),
        "share_units_selective (one R^2 > 0.3, other < 0.05)": float(
            (((r2d > 0.3) & (r2t < 0.05)) | ((r2t > 0.3) & (r2d < 0.05))).float().mean()),
    }
    qs = torch.tensor([0.05, 0.25, 0.5, 0.75, 0.95])
    erm_core = f"erm p={st.sizes.erm_core_ps[0]}"
    for core, empty, resp in (("gt", "data-mean", "core"), ("gt", "data-mean", "core-vs-whole"),
                              (erm_core, "zeros", "core"), ("pretrained", "data-mean", "core")):
        if core not in st.supports:
            continue
        cfg = XGIRConfig(empty=empty, response=resp)  # type: ignore[arg-type]  # literals from the tuple above
        r = st.responses(core, cfg).flatten()[::7]
        out[f"r quantiles 5/25/50/75/95 % ({core} core, x0 = {empty}, {resp})"] = [
            round(float(v), 3) for v in torch.quantile(r, qs)]
        out[f"share r < 0 ({core} core, x0 = {empty}, {resp})"] = float((r < 0).float().mean())
    masks = present(st.data["pool"].masks, "masks")
    hw = (int(masks.shape[-2]), int(masks.shape[-1]))
    for k in ("pretrained", "novelty"):  # is there a threshold at which the map finds the object?
        out[f"{k} map: support precision / share at delta1 0.3, 0.5, 0.7, 0.9"] = [
            (round(support_precision(sp, masks), 3), round(float(sp.float().mean()), 3))
            for sp in (support_from_heatmaps(st.heatmaps[k], hw, d1) for d1 in (0.3, 0.5, 0.7, 0.9))]
    u, v = st.maps.shape[-2:]
    cells = F.adaptive_avg_pool2d(masks[:, None].float(), (u, v))[:, 0].flatten(1)
    out["object share: mean cell / best cell / the pretrained map's top cell"] = [
        round(float(cells.mean()), 3), round(float(cells.max(1).values.mean()), 3),
        round(float(cells.gather(1, st.heatmaps["pretrained"].flatten(1).argmax(1, keepdim=True)).mean()), 3)]
    r = st.responses("gt", XGIRConfig(empty="data-mean"))
    std = st.h["pool"].std(0).clamp(min=1e-6)
    mean_r = (r / std).mean(0)
    corr = lambda a, b: float(np.corrcoef(a.numpy(), b.numpy())[0, 1])  # noqa: E731
    out["corr(unit mean r / std, digit R^2)"] = corr(mean_r, r2d)
    out["corr(unit mean r / std, texture R^2)"] = corr(mean_r, r2t)
    return out


def run(out: Path, seeds: list[int], quick: bool = False, device: str = "cpu") -> dict[str, Any]:
    """The suite (``device``: where the network passes run, e.g. ``cuda``; the heads are fitted on
    the CPU from the cached features)."""
    start = time.time()
    out = Path(out)
    sizes = QUICK if quick else Sizes()
    with one_thread() if quick else _threads(2):
        st = Stage(sizes, device=device)
        t_feat = time.time() - start
        probe = probes(st)
        per_p = {p: run_p(st, p, seeds) for p in sizes.ps}
        diag = diagnostics(st)
    names = list(dict.fromkeys(n for p in sizes.ps for n in per_p[p]["seeds"][seeds[0]]))
    free = {n for n, (_c, _cfg, f) in _methods(0).items() if f}
    lines = [f"# XGIR on a frozen ImageNet extractor ({MODEL}, object-shift at {sizes.size} px)", "",
             f"Seeds {seeds}{' (quick)' if quick else ''}; " + spread_note(len(seeds))
             + f" Source-train {sizes.n_train} "
             f"images drawn from a pool of {sum(sizes.pool_train)} at each p; DFR on target-val "
             f"({sizes.target_val}, 100 groups); scores on target-test ({sizes.target_test}). delta1 = {DELTA1} "
             f"for map supports; note's defaults otherwise (delta2 = pooled quantile 0.5, 5 draws). "
             "'gap closed' = (target - ERM) / (DFR - ERM), per p.", "",
             f"Linear probes (fitted on target-val, scored on target-test): digit {probe['digit']:.3f}, "
             f"texture {probe['texture']:.3f} (goals 0.85 / 0.95).", ""]
    summary: dict[float, dict[str, Any]] = {}
    for p in sizes.ps:
        res = per_p[p]["seeds"]
        col = lambda n, m, res=res: [res[s][n][m] for s in seeds]  # noqa: E731
        erm, dfr = np.mean(col("ERM head", "target")), np.mean(col("DFR (group labels, reference)", "target"))

        def gap(n: str, col=col, erm=erm, dfr=dfr) -> float:
            return float((np.mean(col(n, "target")) - erm) / (dfr - erm)) if dfr != erm else float("nan")

        present = [n for n in names if n in res[seeds[0]]]
        cand = [n for n in present if n in free]
        best = max(cand, key=lambda n: np.mean(col(n, "source-val")))
        best_wg = max(cand, key=lambda n: np.mean(col(n, "source-val_worst_group")))
        summary[p] = {"gap": {n: gap(n) for n in present}, "best_on_source_val": best,
                      "best_on_source_val_worst_group": best_wg,
                      "worst_group": {n: float(np.mean(col(n, "worst_group"))) for n in present}}
        lines += [f"## p = {p}", "", "| method | source acc | target acc | worst-group acc | gap closed | "
                  "source-val acc | source-val worst group | share randomised |", "|---|---|---|---|---|---|---|---|"]
        for n in present:
            fr = [res[s][n].get("frac_randomised", float("nan")) for s in seeds]
            share = np.nanmean(fr) if not np.isnan(fr).all() else 0.0
            tag = (" **(best on source-val)**" if n == best else "") + (
                " **(best on source-val worst group)**" if n == best_wg else "")
            lines.append(f"| {n}{tag} | {fmt(col(n, 'source'))} "
                         f"| {fmt(col(n, 'target'))} | {fmt(col(n, 'worst_group'))} | {gap(n):+.2f} "
                         f"| {fmt(col(n, 'source-val'))} | {fmt(col(n, 'source-val_worst_group'))} "
                         f"| {share:.2f} |")
        d = per_p[p]["diagnostics"]
        lines += ["", "Support precision on the digit (share of the support's pixels on the object) / share of "
                  "pixels kept: " + "; ".join(f"{k} {d['support_precision'][k]:.2f} / {d['support_share'][k]:.2f}"
                                              for k in d["support_precision"]), ""]
    lines += ["## Diagnostics", ""] + [f"- {k}: {v}" for k, v in diag.items()]
    lines += ["", f"Feature and response passes {t_feat:.0f} s (cached after the first run); total run time "
              f"{time.time() - start:.0f} s."]
    _plot_gap(summary, sizes.ps, out / "gap.png")
    _plot_examples(st, sizes.erm_core_ps[0], out / "heatmaps.png")
    results = {"seeds": seeds, "quick": quick, "sizes": str(sizes), "probes": probe,
               "per_p": {str(p): per_p[p] for p in sizes.ps}, "summary": {str(p): v for p, v in summary.items()},
               "diagnostics": diag}
    write_json(out / "results.json", results)
    write_text(out / "report.md", "\n".join(lines) + "\n")
    return results


class _threads:
    """torch on ``n`` threads inside the block (the 1280-unit network is worth two)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __enter__(self) -> None:
        self.before = torch.get_num_threads()
        torch.set_num_threads(self.n)

    def __exit__(self, *exc: object) -> None:
        torch.set_num_threads(self.before)


def _plot_gap(summary: dict[float, dict[str, Any]], ps: tuple[float, ...], path: Path) -> None:
    import matplotlib.pyplot as plt

    from xgir.viz import legend_outside

    fig, ax = plt.subplots(figsize=(8.5, 3.8), layout="constrained")
    rows = {"note's rule (defaults, x0 = mean), pretrained core": "note's rule (defaults, x0 = mean), pretrained core",
            "note, signed, pretrained core": f"note, signed (floor q{FLOOR}, x0 = mean), pretrained core",
            "swap, pretrained core": "variant: context swap, pretrained core",
            "swap, GT core (upper bound)": "variant: context swap, gt core",
            "swap, random mask (control)": "variant: context swap, random core"}
    for label, n in rows.items():
        ax.plot(ps, [summary[p]["gap"][n] for p in ps], marker="o", label=label)
    lit = "note's rule (defaults, x0 = zeros), ERM CAM"
    pts = [p for p in ps if lit in summary[p]["gap"]]
    ax.plot(pts, [summary[p]["gap"][lit] for p in pts], marker="*", markersize=12, linestyle="none",
            label="note's rule as defined (ERM CAM, x0 = zeros)")
    ax.plot(ps, [summary[p]["gap"][summary[p]["best_on_source_val"]] for p in ps], marker="s", linestyle="--",
            color="k", label="best on source-val acc")
    ax.plot(ps, [summary[p]["gap"][summary[p]["best_on_source_val_worst_group"]] for p in ps], marker="^",
            linestyle="--", color="grey", label="best on source-val worst group")
    ax.axhline(0, color="grey", lw=0.8)
    ax.axhline(1, color="grey", lw=0.8, linestyle=":")
    ax.set_xlabel("source bias p")
    ax.set_ylabel("gap closed (ERM = 0, DFR = 1)")
    legend_outside(ax)
    ax.set_title("XGIR on EfficientNet-Lite0 features")
    save_figure(fig, path)


def _plot_examples(st: Stage, p: float, path: Path) -> None:
    from xgir.viz import heatmap_grid

    pool = st.data["pool"]
    idx = torch.arange(6)
    size = tuple(pool.images.shape[-2:])
    up = lambda m: F.interpolate(m[idx][:, None].float(), size=size, mode="bilinear")[:, 0]  # noqa: E731
    maps = [up(st.heatmaps[f"erm p={p}"]), up(st.heatmaps["pretrained"]), up(st.heatmaps["novelty"])]
    sups = [st.supports[k][idx].float() for k in (f"erm p={p}", "pretrained", "novelty", "gt", "random")]
    heatmap_grid(pool.images[idx], torch.stack(maps + sups, dim=1), path,
                 row_titles=[f"y={int(v)}" for v in pool.labels[idx]],
                 col_titles=[f"ERM CAM p={p}", "ImageNet top-5 CAM", "novelty", "s: ERM", "s: ImageNet",
                             "s: novelty", "s: GT", "s: random"])


