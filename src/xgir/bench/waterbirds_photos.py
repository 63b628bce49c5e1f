"""``xgir bench waterbirds-photos``: XGIR and the annotation-free anchors on real photographs.

Setting (:mod:`xgir.data.waterbirds_photos`): bird photographs (exact alpha) over crops of
landscape photographs at 224 px, Waterbirds' group shares (23 % waterbirds, p = 0.95: 14
waterbirds on land among 1200 source images); the same 34 birds in every split; target-val and
target-test with balanced places. The model XGIR corrects: a softmax head (landbird / waterbird)
trained on the frozen EfficientNet-Lite0 features of the biased source set (ERM).

Rows, each a last-layer method on the same frozen features (one head per seed):

- **ERM**; **DFR** with group labels on target-val (the reference, not annotation-free);
- the annotation-free anchors (``xgir.correct``): AFR (ERM on 80 % of source-train, the head
  reweighted on the other 20 %: gamma x lambda grid), class-balanced last-layer retraining and
  last-layer error upweighting (JTT's idea) on the same 20 %, ExMap (the ERM head's CAM on the
  target-val images clustered into pseudo-groups, DFR on them: Grad-CAM where the paper uses
  LRP), DaC (the ERM head's CAM masks, compositions with images of the other class);
- XGIR's context swap (:mod:`xgir.correct.xgir_variants`) with annotation-free cores at matched
  sizes (the top 10 or 20 % of the map): the ImageNet head's top-5 CAM (``pretrained``), its
  CWOX cluster map (``cwox``), ``novelty``, the ERM head's CAM (``erm``, of the first seed's
  head); partners of any class or of the other class; the context the partner's remainder
  h_j - f(core_j) or its background (its image with the top 30 % of the same map blanked out);
  the note's rule (signed floor) beside it. Controls: the exact bird mask (annotation) and a
  random blob of the same size (core and context).

Selection, per seed, among each family's settings, under two protocols labelled in the report:
**annotation-free** (worst-class accuracy on target-val: class labels, no place) and
**group-labelled** (worst-group accuracy on target-val, as the anchors' papers select). Nothing is
selected on target-test. 'gap closed' = (WGA - WGA_ERM) / (WGA_DFR - WGA_ERM) on target-test
means. Writes report.md, results.json, wga.png, cores.png.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from xgir.bench import fmt, spread_note
from xgir.bench.waterbirds_photos_stage import CACHE, MODEL, QUICK, Sizes, Stage, group_counts, present
from xgir.correct.xgir import XGIRConfig, support_from_heatmaps, support_top_fraction, xgir_training_set
from xgir.correct.xgir_variants import core_heatmaps, support_precision
from xgir.data.waterbirds_photos import group_subset
from xgir.io import cached, fingerprint, save_figure, write_json, write_text
from xgir.models.accuracy import accuracy_from_predictions
from xgir.train.features import fit_head, linear_probe
from xgir.train.heads import fit_heads

SUITE = "waterbirds-photos"
K = 2
CONTEXT = 0.3  # the partner's background: its map's top 30 % blanked out
DELTA1 = 0.5  # the note's relative rule, kept beside the matched sizes


@dataclass(frozen=True)
class XgirRow:
    """An XGIR setting: core map, support fraction (None: delta1), config, annotation-free or not,
    and the map whose top 30 % is blanked out of the partner's background (None: the core's)."""

    core: str
    fraction: float | None
    config: XGIRConfig
    free: bool
    context_core: str | None = None


def xgir_rows(sizes: Sizes) -> dict[str, XgirRow]:
    """Row name -> setting. Swaps: partner x context for every core and size; the note's signed
    rule and its delta1 support on the pretrained core; the gt and random controls and the two
    ablations."""
    swap = XGIRConfig(variant="swap", empty="data-mean", draws=5)
    variants = {"any partner, remainder": swap,
                "other class, remainder": replace(swap, partner="other-class"),
                "other class, background": replace(swap, partner="other-class", context="background")}
    rows: dict[str, XgirRow] = {}
    for core in sizes.cores:
        for frac in sizes.fractions:
            for vname in sizes.swaps:
                rows[f"XGIR swap, {vname}, {core} core {frac:.0%}"] = XgirRow(core, frac, variants[vname], True)
    if sizes.note_rows:
        signed = XGIRConfig(floor=0.05, empty="data-mean")
        rows[f"XGIR note's rule, signed floor, pretrained core {sizes.fractions[0]:.0%}"] = XgirRow(
            "pretrained", sizes.fractions[0], signed, True)
        rows[f"XGIR note's rule, signed floor, pretrained core delta1 {DELTA1}"] = XgirRow(
            "pretrained", None, signed, True)
    if not sizes.controls:
        return rows
    best, f = variants["other class, background"], sizes.fractions[0]
    rows["XGIR swap, other class, background, exact bird mask (annotation)"] = XgirRow("gt", None, best, False)
    rows[f"XGIR swap, other class, background, random mask {f:.0%} (control)"] = XgirRow("random", f, best, False)
    # which part of the explanation matters: the core, or what it blanks out of the partner's image
    rows[f"XGIR swap, other class, background: pretrained core {f:.0%}, random blank (ablation)"] = XgirRow(
        "pretrained", f, best, False, context_core="random")
    rows[f"XGIR swap, other class, background: random core {f:.0%}, pretrained blank (ablation)"] = XgirRow(
        "random", f, best, False, context_core="pretrained")
    return rows


def _scores(head: torch.nn.Module, st: Stage) -> dict[str, float]:
    """source (source-test) accuracy, target accuracy and worst-group (target-test), and the
    target-val selection scores: worst-class (no place label) and worst-group accuracy."""
    out: dict[str, float] = {}
    with torch.no_grad():
        pred = {k: head(st.h[k]).argmax(1) for k in ("source-test", "target-val", "target-test")}
    src, tv, tt = (st.data[k] for k in ("source-test", "target-val", "target-test"))
    out["source"] = accuracy_from_predictions(pred["source-test"], src.labels)["accuracy"]
    t = accuracy_from_predictions(pred["target-test"], tt.labels, present(tt.groups, "groups"))
    out["target"], out["worst_group"] = t["accuracy"], t["worst_group"]
    out["val_worst_class"] = accuracy_from_predictions(pred["target-val"], tv.labels, tv.labels)["worst_group"]
    out["val_worst_group"] = accuracy_from_predictions(pred["target-val"], tv.labels,
                                                       present(tv.groups, "groups"))["worst_group"]
    return out


def _linear(weight: torch.Tensor, bias: torch.Tensor) -> torch.nn.Linear:
    head = torch.nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        head.weight.copy_(weight)
        head.bias.copy_(bias)
    return head.eval()


def _cached_head(key: str, compute: Any) -> tuple[torch.nn.Linear, dict[str, Any]]:
    """A head and its info (``compute()``), cached on disk: the slow anchors (DFR, ExMap, DaC)
    are fitted once per seed and setting."""
    def fit() -> dict[str, Any]:
        head, info = compute()
        return {"weight": head.weight.detach(), "bias": head.bias.detach(),
                "info": {k: v for k, v in info.items() if isinstance(v, int | float | str)}}

    got = cached(CACHE, key, fit)
    return _linear(got["weight"], got["bias"]), got["info"]


def anchors(st: Stage, seed: int, idx: torch.Tensor, erm: torch.nn.Linear
            ) -> dict[str, dict[str, tuple[torch.nn.Linear, dict[str, Any]]]]:
    """Family -> {setting name -> (head, info)} of the annotation-free anchors for one seed."""
    from xgir.correct.afr import afr_head
    from xgir.correct.class_balanced import class_balanced_head
    from xgir.correct.dac import dac_head, dac_masks
    from xgir.correct.exmap import exmap_head
    from xgir.correct.jtt import jtt_head
    from xgir.correct.xgir_variants import class_cam

    pool = st.data["pool"]
    g = torch.Generator().manual_seed(seed)
    perm = idx[torch.randperm(len(idx), generator=g)]
    cut = int(0.8 * len(perm))
    tr, rw = perm[:cut], perm[cut:]
    h, y = st.h["pool"], pool.labels
    erm80 = fit_head(h[tr], y[tr], K, seed=seed)
    fam: dict[str, dict[str, tuple[torch.nn.Linear, dict[str, Any]]]] = {}
    sz = st.sizes
    fam["AFR"] = {f"gamma {gm:g}, lambda {lm:g}": afr_head(h[rw], y[rw], erm80, gamma=gm, lam=lm)
                  for gm in sz.afr_gammas for lm in sz.afr_lambdas}
    fam["class-balanced last layer"] = {"held-out 20 %": class_balanced_head(h[rw], y[rw], K, seed=seed)}
    fam["error upweighting (JTT, last layer)"] = {f"lambda_up {lu}": jtt_head(h[rw], y[rw], erm80, lambda_up=lu,
                                                                             seed=seed)
                                                  for lu in sz.jtt_upweights}
    tv = st.data["target-val"]
    with torch.no_grad():
        tv_pred = erm(st.h["target-val"]).argmax(1)
    tv_maps = class_cam(st.maps["target-val"], erm, tv_pred)  # Grad-CAM of the predicted class (paper: LRP)
    ekey = f"{st.keys['target-val']}-exmap-{fingerprint(erm)}-{seed}"
    fam["ExMap"] = {"ERM CAM": _cached_head(ekey, lambda: exmap_head(st.h["target-val"], tv_maps, tv.labels, K,
                                                                     seed=seed))}
    masks = dac_masks(class_cam(st.maps["pool"][idx], erm, y[idx]), 0.8, size=st.size)  # XGrad-CAM = CAM here

    def features_fn(x: torch.Tensor) -> torch.Tensor:  # composites are new images: one cached forward each
        return cached(CACHE, f"dac-{fingerprint(x)}", lambda: st.features(x))  # noqa: B023

    if sz.dac_alphas:
        fam["DaC"] = {}
    for alpha in sz.dac_alphas:
        key = f"{st.keys['pool']}-dac-{fingerprint(idx, erm)}-{alpha}-{sz.dac_low_loss}-{seed}"
        fam["DaC"][f"alpha {alpha:g}"] = _cached_head(key, functools.partial(
            dac_head, features_fn, pool.images[idx], masks, y[idx], erm, alpha=alpha, quantile=sz.dac_low_loss,
            seed=seed, chunk=64))
    return fam


def run_seed(st: Stage, seed: int, rows: dict[str, XgirRow]) -> dict[str, Any]:
    """Every method for one seed: {"fixed": {row: scores}, "families": {family: {setting: scores}}}."""
    pool = st.data["pool"]
    idx = group_subset(present(pool.groups, "groups"), group_counts(st.sizes.train, st.sizes.p), seed)
    hs, ys = st.h["pool"][idx], pool.labels[idx]
    erm = fit_head(hs, ys, K, seed=seed)
    tv = st.data["target-val"]
    dfr_key = f"{st.keys['target-val']}-dfr-{seed}"

    def dfr() -> tuple[torch.nn.Linear, dict[str, Any]]:
        from xgir.correct.dfr import dfr_head

        return dfr_head(st.h["target-val"], tv.labels, present(tv.groups, "groups"), K, seed=seed)

    fixed = {"ERM head": _scores(erm, st), "DFR (group labels, reference)": _scores(_cached_head(dfr_key, dfr)[0], st)}
    families: dict[str, dict[str, dict[str, Any]]] = {}
    for name, settings in anchors(st, seed, idx, erm).items():
        families[name] = {s: {**_scores(head, st), "info": {k: v for k, v in info.items()
                                                            if isinstance(v, int | float | str)}}
                          for s, (head, info) in settings.items()}
    f0 = st.empty_features()
    jobs: dict[str, tuple[torch.Tensor, torch.Tensor, XGIRConfig]] = {}
    for name, row in rows.items():
        sup = (support_from_heatmaps(st.heatmaps[row.core], st.size, DELTA1) if row.fraction is None
               and row.core != "gt" else st.support(row.core, row.fraction or 0.0))
        r = st.masked_features(sup, "core")[idx] - f0
        bg = None
        if row.config.context == "background":
            wide = _context_support(st, row)
            bg = st.masked_features(wide, "context")[idx]
        x, yy, _ = xgir_training_set(hs, r, ys, replace(row.config, seed=seed), background=bg)
        jobs[name] = (x, yy, replace(row.config, seed=seed))
    families["XGIR"] = {}
    for name, head in _fit_rows(jobs).items():
        target = families["XGIR"] if rows[name].free else fixed
        target[name] = _scores(head, st)
    return {"fixed": fixed, "families": families}


def _context_support(st: Stage, row: XgirRow) -> torch.Tensor:
    """What is blanked out of the partner's image: the top 30 % of the row's context map (the
    core's unless it names another); the exact mask dilated by 6 px for the gt control; a random
    blob of 30 % for the random control."""
    core = row.context_core or row.core
    if core == "gt":
        return F.max_pool2d(st.masks[:, None].float(), 13, 1, 6)[:, 0] > 0
    return st.support(core, CONTEXT)


def _fit_rows(jobs: dict[str, tuple[torch.Tensor, torch.Tensor, XGIRConfig]]) -> dict[str, torch.nn.Linear]:
    """The XGIR heads, those with the same number of rows and head settings fitted together."""
    groups: dict[tuple[Any, ...], list[str]] = {}
    for name, (x, _y, c) in jobs.items():
        groups.setdefault((len(x), c.head_epochs, c.lr, c.batch_size, c.weight_decay), []).append(name)
    heads: dict[str, torch.nn.Linear] = {}
    for (_m, epochs, lr, batch_size, wd), names in groups.items():
        fitted = fit_heads([jobs[n][0] for n in names], [jobs[n][1] for n in names], K,
                           [jobs[n][2].seed for n in names], epochs=epochs, lr=lr, batch_size=batch_size,
                           weight_decay=wd)
        heads.update(zip(names, fitted, strict=True))
    return heads


PROTOCOLS = {"annotation-free": "val_worst_class", "group-labelled": "val_worst_group"}


def select(per_seed: dict[int, dict[str, Any]]) -> dict[str, dict[str, dict[int, str]]]:
    """Family -> protocol -> {seed: the setting with the highest target-val score}."""
    seeds = list(per_seed)
    out: dict[str, dict[str, dict[int, str]]] = {}
    for fam in per_seed[seeds[0]]["families"]:
        out[fam] = {}
        for proto, key in PROTOCOLS.items():
            out[fam][proto] = {}
            for s in seeds:
                cands: dict[str, dict[str, Any]] = per_seed[s]["families"][fam]
                # ties: the better worst class, then the first listed
                out[fam][proto][s] = max(cands, key=lambda n: (cands[n][key], cands[n]["val_worst_class"]))  # noqa: B023
    return out


def core_diagnostics(st: Stage, sizes: Sizes) -> dict[str, Any]:
    """Each core's precision (share of its support on the bird) at each size, the context
    support's recall of the bird, and the pretrained network's top-1 labels on the pool."""
    out: dict[str, Any] = {"bird share of the image": float(st.masks.float().mean())}
    for core in [*st.heatmaps, "random"]:
        for frac in (*sizes.fractions, CONTEXT):
            sup = st.support(core, frac)
            out[f"{core} {frac:.0%}: precision"] = support_precision(sup, st.masks)
            out[f"{core} {frac:.0%}: recall"] = float((sup & st.masks).sum() / st.masks.sum())
    # better annotation-free cores? combinations of the maps, and Grad-CAM at finer layers (a subset)
    norm = lambda m: m / m.flatten(1).max(1).values.clamp(min=1e-8)[:, None, None]  # noqa: E731
    combos = {"pretrained x erm (agreement)": norm(st.heatmaps["pretrained"]) * norm(st.heatmaps["erm"]),
              "pretrained + erm": norm(st.heatmaps["pretrained"]) + norm(st.heatmaps["erm"])}
    n = min(len(st.masks), 200)
    for layer in sizes.finer_layers:
        key = f"{st.keys['pool']}-gradcam-top5-{layer}-{n}"
        combos[f"Grad-CAM of the top 5 at {layer} (first {n} images)"] = cached(CACHE, key, functools.partial(
            _batched_core, st, n, layer))
    for name, heat in combos.items():
        masks = st.masks[: len(heat)]
        for frac in sizes.fractions:
            out[f"{name} {frac:.0%}: precision"] = support_precision(support_top_fraction(heat, st.size, frac), masks)
    sup = support_from_heatmaps(st.heatmaps["pretrained"], st.size, DELTA1)
    out[f"pretrained delta1 {DELTA1}: precision"] = support_precision(sup, st.masks)
    out[f"pretrained delta1 {DELTA1}: share kept"] = float(sup.float().mean())
    with torch.no_grad():
        top1 = st.imagenet_head(st.h["pool"]).argmax(1)
    counts = torch.bincount(top1, minlength=1000)
    out["ImageNet top-1 labels on the pool (10 most frequent)"] = [
        f"{st.imagenet_classes[int(c)]} {int(counts[c])}" for c in counts.argsort(descending=True)[:10]]
    return out


def _batched_core(st: Stage, n: int, layer: str) -> torch.Tensor:
    """The pretrained network's top-5 Grad-CAM at ``layer`` for the first ``n`` pool images, float[n,u,v]."""
    x = st.data["pool"].images[:n]
    return torch.cat([core_heatmaps("pretrained", st.model, x[i : i + 20], layer) for i in range(0, n, 20)])


def probes(st: Stage) -> dict[str, float]:
    """Linear probes fitted on target-val features, scored on target-test: bird type and place."""
    tv, tt = st.data["target-val"], st.data["target-test"]
    return {"bird": linear_probe(st.h["target-val"], tv.labels, st.h["target-test"], tt.labels),
            "place": linear_probe(st.h["target-val"], tv.extras["place"], st.h["target-test"], tt.extras["place"])}


def run(out: Path, seeds: list[int], quick: bool = False, device: str = "cpu",
        sizes: Sizes | None = None) -> dict[str, Any]:
    """The suite (``device``: where the network passes run; heads on the CPU); ``sizes`` overrides
    the full or quick profile (the demo's)."""
    start = time.time()
    out = Path(out)
    sizes = sizes or (QUICK if quick else Sizes())
    before = torch.get_num_threads()
    torch.set_num_threads(1 if quick else 2)
    try:
        st = Stage(sizes, device=device)
        rows = xgir_rows(sizes)
        t_stage = time.time() - start
        per_seed: dict[int, dict[str, Any]] = {}
        for seed in seeds:
            if "erm" not in st.heatmaps:  # the first seed's ERM head: the 'erm' core of every seed
                pool = st.data["pool"]
                idx = group_subset(present(pool.groups, "groups"), group_counts(sizes.train, sizes.p), seed)
                st.set_erm(fit_head(st.h["pool"][idx], pool.labels[idx], K, seed=seed))
            per_seed[seed] = run_seed(st, seed, rows)
        chosen = select(per_seed)
        diag = core_diagnostics(st, sizes)
        probe = probes(st)
    finally:
        torch.set_num_threads(before)
    table = summary_table(per_seed, chosen, seeds)
    results = {"seeds": seeds, "quick": quick, "label": sizes.label, "sizes": str(sizes), "probes": probe,
               "per_seed": per_seed,
               "selected": {f: {p: {str(s): n for s, n in v.items()} for p, v in d.items()} for f, d in chosen.items()},
               "table": table, "cores": diag, "seconds": {"stage": t_stage, "total": time.time() - start}}
    _plot_wga(table, out / "wga.png")
    _plot_cores(st, out / "cores.png")
    write_json(out / "results.json", results)
    write_text(out / "report.md", report(results, sizes))
    return results


def summary_table(per_seed: dict[int, dict[str, Any]], chosen: dict[str, dict[str, dict[int, str]]],
                  seeds: list[int]) -> list[dict[str, Any]]:
    """The report's rows: fixed rows, then each family under each protocol (its per-seed choice)."""
    rows: list[dict[str, Any]] = []

    def add(name: str, cells: list[dict[str, Any]], settings: list[str] | None = None, kind: str = "") -> None:
        rows.append({"method": name, "kind": kind, "settings": settings,
                     **{m: [c[m] for c in cells] for m in ("source", "target", "worst_group",
                                                           "val_worst_class", "val_worst_group")}})

    first = per_seed[seeds[0]]["fixed"]
    for name in first:
        kind = "reference" if "DFR" in name else ("control" if name.endswith(("(control)", "(annotation)",
                                                                              "(ablation)")) else "")
        add(name, [per_seed[s]["fixed"][name] for s in seeds], kind=kind)
    for fam, protos in chosen.items():
        for proto, pick in protos.items():
            add(f"{fam} ({proto} selection)", [per_seed[s]["families"][fam][pick[s]] for s in seeds],
                [pick[s] for s in seeds], kind=proto)
    erm = np.mean(rows[0]["worst_group"])
    dfr = np.mean(rows[1]["worst_group"])
    for r in rows:
        r["gap_closed"] = float((np.mean(r["worst_group"]) - erm) / (dfr - erm)) if dfr != erm else float("nan")
    return rows


def report(res: dict[str, Any], sizes: Sizes) -> str:
    """report.md from the results."""
    seeds, table, probe, cores = res["seeds"], res["table"], res["probes"], res["cores"]
    label = f" ({res['label']})" if res["label"] else ""
    lines = [f"# XGIR and the annotation-free anchors on waterbirds-photos ({MODEL} features)", "",
             f"Seeds {seeds}{label}; "
             + spread_note(len(seeds)) + f" Source-train {sizes.train} images per seed (Waterbirds' shares, "
             f"p = {sizes.p}) drawn from a pool of {sum(sizes.pool.values())}; DFR on target-val "
             f"({sizes.target_val}, places balanced); scores on target-test ({sizes.target_test}). "
             "'gap closed' = (WGA - ERM) / (DFR - ERM) on the means. Selection per seed on target-val only: "
             "**annotation-free** = worst-class accuracy (class labels, no place), **group-labelled** = "
             "worst-group accuracy.", "",
             f"Linear probes (fitted on target-val, scored on target-test): bird type {probe['bird']:.3f}, place "
             f"{probe['place']:.3f} (goals 0.90 / 0.95).", "",
             "| method | source acc | target acc | worst-group acc | gap closed | target-val worst class |",
             "|---|---|---|---|---|---|"]
    for r in table:
        lines.append(f"| {r['method']} | {fmt(r['source'])} | {fmt(r['target'])} | {fmt(r['worst_group'])} | "
                     f"{r['gap_closed']:+.2f} | {fmt(r['val_worst_class'])} |")
    lines += ["", "Settings chosen per seed:", ""]
    for r in table:
        if r["settings"]:
            lines.append(f"- {r['method']}: " + "; ".join(f"seed {s}: {n}" for s, n in zip(seeds, r["settings"],
                                                                                          strict=True)))
    lines += ["", "## Every XGIR setting (annotation-free; mean over seeds)", "",
              "| setting | worst-group acc | target acc | target-val worst class | target-val worst group |",
              "|---|---|---|---|---|"]
    fam = {s: res["per_seed"][s]["families"]["XGIR"] for s in seeds}
    for name in fam[seeds[0]]:
        col = lambda m, name=name: [fam[s][name][m] for s in seeds]  # noqa: E731
        lines.append(f"| {name} | {fmt(col('worst_group'))} | {fmt(col('target'))} | "
                     f"{fmt(col('val_worst_class'))} | {fmt(col('val_worst_group'))} |")
    lines += ["", "## Cores: precision on the bird at matched sizes (source pool)", ""]
    lines += [f"- {k}: {v:.3f}" if isinstance(v, float) else f"- {k}: {v}" for k, v in cores.items()]
    lines += ["", "![worst-group accuracy per method](wga.png)", "", "![cores and supports](cores.png)"]
    lines += ["", f"Network passes {res['seconds']['stage']:.0f} s (cached after the first run: masked images "
              f"and composites too); total {res['seconds']['total']:.0f} s.", ""]
    return "\n".join(lines)


def _plot_wga(table: list[dict[str, Any]], path: Path) -> None:
    import matplotlib.pyplot as plt

    rows = [r for r in table if r["kind"] != "group-labelled"]
    fig, ax = plt.subplots(figsize=(7.5, 0.32 * len(rows) + 1.2))
    ys = np.arange(len(rows))[::-1]
    means = [np.mean(r["worst_group"]) for r in rows]
    stds = [np.std(r["worst_group"], ddof=1) if len(r["worst_group"]) > 1 else 0.0 for r in rows]
    colours = ["#888888" if r["kind"] == "reference" else "#cc6677" if r["kind"] == "control" else
               "#4477aa" if r["method"].startswith("XGIR") else "#ddaa33" for r in rows]
    ax.barh(ys, means, xerr=stds, color=colours, capsize=2)
    ax.set_yticks(ys, [r["method"] for r in rows], fontsize=7)
    ax.axvline(means[0], color="k", lw=0.8, linestyle=":")
    ax.set_xlabel("worst-group accuracy on target-test (mean ± std over seeds)")
    ax.set_xlim(0, 1)
    ax.set_title("waterbirds-photos: annotation-free selection (and the references)", fontsize=9)
    save_figure(fig, path)


def _plot_cores(st: Stage, path: Path) -> None:
    from xgir.viz import heatmap_grid

    pool = st.data["pool"]
    idx = torch.linspace(0, len(pool) - 1, 6).long()
    size = st.size
    up = lambda m: F.interpolate(m[idx][:, None].float(), size=size, mode="bilinear")[:, 0]  # noqa: E731
    cores = [c for c in ("pretrained", "cwox", "novelty", "erm") if c in st.heatmaps]
    maps = [up(st.heatmaps[c]) for c in cores]
    sups = [st.support("pretrained", st.sizes.fractions[0])[idx].float(),
            st.support("pretrained", CONTEXT)[idx].float(), st.masks[idx].float()]
    heatmap_grid(pool.images[idx], torch.stack(maps + sups, dim=1), path,
                 row_titles=[f"{pool.classes[int(pool.labels[i])]}" for i in idx],
                 col_titles=[f"{c} map" for c in cores] + [f"core: pretrained {st.sizes.fractions[0]:.0%}",
                                                           f"context blank: {CONTEXT:.0%}", "bird mask"])

