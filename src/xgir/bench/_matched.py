"""XGIR's rows at matched support sizes, the AFR anchor, selection on target-val and the summary
table: the parts that ``xgir bench waterbirds-photos`` and ``xgir bench xgir-imagenet-224`` share.

A stage (:class:`MatchedSupports` mixed into the suite's stage) holds a source pool with exact
object masks, its pooled features h (``h["pool"]``), core maps float[N,u,v] over the pool
(``heatmaps``) and the features of target-val, target-test and source-test. Supports are the
map's top fraction of pixels (:func:`~xgir.correct.xgir.support_top_fraction`); the masked images
f(x s + x0 (1 - s)) (the core) and f(x (1 - s) + x0 s) (the context) are one network pass over
the pool each, cached under the support's fingerprint; x0 is the pool's mean image.

Every method is a last-layer head on the same frozen features, scored on target-test; each
family's setting is chosen per seed on target-val under two protocols (:data:`PROTOCOLS`):
**annotation-free** (worst-class accuracy: class labels, no group) and **group-labelled**
(worst-group accuracy). Nothing is selected on target-test.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from xgir.bench import fmt
from xgir.bench.xgir_two_stage import random_supports
from xgir.correct.xgir import XGIRConfig, support_from_heatmaps, support_top_fraction, xgir_training_set
from xgir.correct.xgir_variants import pooled_maps, support_precision
from xgir.data.base import ImageDataset
from xgir.errors import XgirError
from xgir.io import cached, fingerprint, save_figure
from xgir.models.accuracy import accuracy_from_predictions
from xgir.train.features import fit_head
from xgir.train.heads import fit_heads

CONTEXT = 0.3  # the partner's background: its map's top 30 % blanked out
DELTA1 = 0.5  # the note's relative rule, kept beside the matched sizes
POOL = "_avg_pooling"  # EfficientNet-Lite0's global pool: its input is the maps M
PROTOCOLS = {"annotation-free": "val_worst_class", "group-labelled": "val_worst_group"}


class MatchedSupports:
    """Matched-size supports over a stage's pool and the network passes of its masked images.
    The stage sets the attributes below (``cache``: the folder of :func:`xgir.io.cached`)."""

    cache: str
    model: nn.Module
    data: dict[str, ImageDataset]
    keys: dict[str, str]  # cache key per dataset
    h: dict[str, torch.Tensor]  # pooled features float[N,D] per dataset ("pool", "target-val", ...)
    heatmaps: dict[str, torch.Tensor]  # core maps float[N,u,v] over the pool
    masks: torch.Tensor  # the pool's exact object masks bool[N,H,W]
    mean_image: torch.Tensor  # x0, float[C,H,W]

    @property
    def size(self) -> tuple[int, int]:
        return int(self.masks.shape[-2]), int(self.masks.shape[-1])

    def support(self, core: str, fraction: float) -> torch.Tensor:
        """bool[N,H,W] over the pool: the top ``fraction`` of core ``core``'s map, the exact mask
        (``gt``, whatever the fraction) or a random blob of ``fraction`` of the pixels."""
        if core == "gt":
            return self.masks
        if core == "random":  # random_supports keeps each image's pixel count: any support of that size
            return random_supports(support_top_fraction(torch.zeros(len(self.masks), 1, 1), self.size, fraction),
                                   12345)
        if core not in self.heatmaps:
            raise XgirError(f"unknown core '{core}'; choose one of: gt, random, {', '.join(self.heatmaps)}")
        return support_top_fraction(self.heatmaps[core], self.size, fraction)

    def masked_features(self, support: torch.Tensor, keep: str) -> torch.Tensor:
        """f of the pool's images with ``keep`` = ``"core"`` (x s + x0 (1 - s)) or ``"context"``
        (x (1 - s) + x0 s), float[N,D], cached under the support's fingerprint."""
        if keep not in ("core", "context"):
            raise XgirError(f"keep must be core or context, got '{keep}'")
        images = self.data["pool"].images

        def compute() -> torch.Tensor:
            from xgir.progress import iterate

            out = []
            share = float(support.float().mean())
            for i in iterate(range(0, len(images), 128), desc=f"network pass: {keep} ({share:.0%} of the pixels)",
                             unit="batch"):
                s = support[i : i + 128, None].float()
                if keep == "context":
                    s = 1 - s
                out.append(self.features(images[i : i + 128] * s + self.mean_image * (1 - s)))
            return torch.cat(out)

        return cached(self.cache, f"{self.keys['pool']}-{keep}-{fingerprint(support)}", compute)

    def empty_features(self) -> torch.Tensor:
        """f(x0), float[D]."""
        return self.features(self.mean_image[None])[0]

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The pooled features float[N,D] of images float[N,3,H,W] (batches of 32)."""
        return pooled_maps(self.model, images, POOL, batch_size=32)[0]


@dataclass(frozen=True)
class XgirRow:
    """An XGIR setting: core map, support fraction (None: delta1), config, annotation-free or not,
    and the map whose top 30 % is blanked out of the partner's background (None: the core's)."""

    core: str
    fraction: float | None
    config: XGIRConfig
    free: bool
    context_core: str | None = None


SWAPS = ("any partner, remainder", "other class, remainder", "other class, background")


def xgir_rows(fractions: tuple[float, ...], cores: tuple[str, ...], swaps: tuple[str, ...] = SWAPS,
              what: str = "object", *, note_rows: bool = True, controls: bool = True,
              swept: tuple[str, ...] | None = None) -> dict[str, XgirRow]:
    """Row name -> setting. Swaps (``swaps``, names from :data:`SWAPS`: partner x context) for every
    core at every size (the cores in ``swept`` only, when given: the others at ``fractions[0]``; each
    core and size costs a network pass); the note's signed rule and its delta1 support on the pretrained core
    (``note_rows``); the gt and random controls and the two ablations (which part of the
    explanation matters: the core, or what it blanks out of the partner's image; ``controls``).
    ``what`` names the object in the exact-mask row."""
    swap = XGIRConfig(variant="swap", empty="data-mean", draws=5)
    variants = {"any partner, remainder": swap,
                "other class, remainder": replace(swap, partner="other-class"),
                "other class, background": replace(swap, partner="other-class", context="background")}
    unknown = [v for v in swaps if v not in variants]
    if unknown:
        raise XgirError(f"unknown swap setting(s) {unknown}; choose from {', '.join(variants)}")
    rows: dict[str, XgirRow] = {}
    for core in cores:
        for frac in fractions if swept is None or core in swept else fractions[:1]:
            for vname in swaps:
                rows[f"XGIR swap, {vname}, {core} core {frac:.0%}"] = XgirRow(core, frac, variants[vname], True)
    f = fractions[0]
    if note_rows:
        signed = XGIRConfig(floor=0.05, empty="data-mean")
        rows[f"XGIR note's rule, signed floor, pretrained core {f:.0%}"] = XgirRow("pretrained", f, signed, True)
        rows[f"XGIR note's rule, signed floor, pretrained core delta1 {DELTA1}"] = XgirRow(
            "pretrained", None, signed, True)
    if not controls:
        return rows
    best = variants["other class, background"]
    rows[f"XGIR swap, other class, background, exact {what} mask (annotation)"] = XgirRow("gt", None, best, False)
    rows[f"XGIR swap, other class, background, random mask {f:.0%} (control)"] = XgirRow("random", f, best, False)
    rows[f"XGIR swap, other class, background: pretrained core {f:.0%}, random blank (ablation)"] = XgirRow(
        "pretrained", f, best, False, context_core="random")
    rows[f"XGIR swap, other class, background: random core {f:.0%}, pretrained blank (ablation)"] = XgirRow(
        "random", f, best, False, context_core="pretrained")
    return rows


def masked_passes(rows: dict[str, XgirRow]) -> int:
    """How many masked network passes over the pool ``rows`` need: one per distinct core support
    and one per distinct context support (rows that share a support share its pass)."""
    used: set[tuple[str, str, float | None]] = {
        ("core", r.core, r.fraction if r.core != "gt" else None) for r in rows.values()}
    used |= {("context", r.context_core or r.core, None) for r in rows.values() if r.config.context == "background"}
    return len(used)


def context_support(st: MatchedSupports, row: XgirRow) -> torch.Tensor:
    """What is blanked out of the partner's image: the top 30 % of the row's context map (the
    core's unless it names another); the exact mask dilated by 6 px for the gt control; a random
    blob of 30 % for the random control."""
    core = row.context_core or row.core
    if core == "gt":
        return F.max_pool2d(st.masks[:, None].float(), 13, 1, 6)[:, 0] > 0
    return st.support(core, CONTEXT)


def fit_rows(jobs: dict[str, tuple[torch.Tensor, torch.Tensor, XGIRConfig]], num_classes: int
             ) -> dict[str, nn.Linear]:
    """Row name -> (training features float[M,D], labels long[M], config) -> the fitted heads: the rows
    with the same M and head settings are fitted together (:func:`xgir.train.heads.fit_heads`)."""
    groups: dict[tuple[Any, ...], list[str]] = {}
    for name, (x, _y, c) in jobs.items():
        groups.setdefault((len(x), c.head_epochs, c.lr, c.batch_size, c.weight_decay), []).append(name)
    heads: dict[str, nn.Linear] = {}
    for (_m, epochs, lr, batch_size, wd), names in groups.items():
        fitted = fit_heads([jobs[n][0] for n in names], [jobs[n][1] for n in names], num_classes,
                           [jobs[n][2].seed for n in names], epochs=epochs, lr=lr, batch_size=batch_size,
                           weight_decay=wd)
        heads.update(zip(names, fitted, strict=True))
    return heads


def xgir_heads(st: MatchedSupports, idx: torch.Tensor, rows: dict[str, XgirRow], seed: int, num_classes: int
               ) -> dict[str, nn.Linear]:
    """The XGIR head of every row, trained on the pool's images ``idx`` (the seed's source-train)."""
    hs, ys = st.h["pool"][idx], st.data["pool"].labels[idx]
    f0 = st.empty_features()
    jobs: dict[str, tuple[torch.Tensor, torch.Tensor, XGIRConfig]] = {}
    for name, row in rows.items():
        sup = (support_from_heatmaps(st.heatmaps[row.core], st.size, DELTA1) if row.fraction is None
               and row.core != "gt" else st.support(row.core, row.fraction or 0.0))
        r = st.masked_features(sup, "core")[idx] - f0
        bg = st.masked_features(context_support(st, row), "context")[idx] if row.config.context == "background" \
            else None
        config = replace(row.config, seed=seed)
        x, yy, _ = xgir_training_set(hs, r, ys, config, background=bg)
        jobs[name] = (x, yy, config)
    return fit_rows(jobs, num_classes)


AFR_GAMMAS = (2.0, 4.0, 6.0, 8.0, 10.0, 14.0, 20.0)  # AFR's own search spans gamma 4-20, lambda 0-0.3
AFR_LAMBDAS = (0.0, 0.1, 0.3)


def afr_anchor(h: torch.Tensor, labels: torch.Tensor, idx: torch.Tensor, num_classes: int, seed: int,
               gammas: tuple[float, ...] = AFR_GAMMAS, lams: tuple[float, ...] = AFR_LAMBDAS
               ) -> tuple[dict[str, tuple[nn.Linear, dict[str, Any]]], nn.Linear, torch.Tensor]:
    """AFR (:func:`xgir.correct.afr.afr_head`) on the source-train images ``idx`` of features
    h float[N,D]: an ERM head on a random 80 %, AFR's head on the other 20 % over a gamma x lambda
    grid. Returns ({setting: (head, info)}, the 80 % ERM head, the 20 %'s indices into h)."""
    from xgir.correct.afr import afr_head

    g = torch.Generator().manual_seed(seed)
    perm = idx[torch.randperm(len(idx), generator=g)]
    cut = int(0.8 * len(perm))
    tr, rw = perm[:cut], perm[cut:]
    erm80 = fit_head(h[tr], labels[tr], num_classes, seed=seed)
    family = {f"gamma {gm:g}, lambda {lm:g}": afr_head(h[rw], labels[rw], erm80, gamma=gm, lam=lm)
              for gm in gammas for lm in lams}
    return family, erm80, rw


def _groups(ds: ImageDataset) -> torch.Tensor:
    if ds.groups is None:
        raise XgirError("the benchmark's target data carry no groups")
    return ds.groups


def scores(head: nn.Module, st: MatchedSupports) -> dict[str, float]:
    """source (source-test) accuracy, target accuracy and worst-group (target-test), and the
    target-val selection scores: worst-class (no group label) and worst-group accuracy."""
    out: dict[str, float] = {}
    with torch.no_grad():
        pred = {k: head(st.h[k]).argmax(1) for k in ("source-test", "target-val", "target-test")}
    src, tv, tt = (st.data[k] for k in ("source-test", "target-val", "target-test"))
    out["source"] = accuracy_from_predictions(pred["source-test"], src.labels)["accuracy"]
    t = accuracy_from_predictions(pred["target-test"], tt.labels, _groups(tt))
    out["target"], out["worst_group"] = t["accuracy"], t["worst_group"]
    out["val_worst_class"] = accuracy_from_predictions(pred["target-val"], tv.labels, tv.labels)["worst_group"]
    out["val_worst_group"] = accuracy_from_predictions(pred["target-val"], tv.labels, _groups(tv))["worst_group"]
    return out


def family_scores(settings: dict[str, tuple[nn.Linear, dict[str, Any]]], st: MatchedSupports
                  ) -> dict[str, dict[str, Any]]:
    """{setting: scores + the head's plain-valued info} of one family."""
    return {s: {**scores(head, st), "info": {k: v for k, v in info.items() if isinstance(v, int | float | str)}}
            for s, (head, info) in settings.items()}


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


def summary_table(per_seed: dict[int, dict[str, Any]], chosen: dict[str, dict[str, dict[int, str]]],
                  seeds: list[int]) -> list[dict[str, Any]]:
    """The report's rows: fixed rows (ERM and DFR first), then each family under each protocol (its
    per-seed choice), with the share of the ERM -> DFR gap closed on the means, in worst-group
    accuracy (``gap_closed``) and in target accuracy (``gap_closed_target``)."""
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
    for metric, col in (("worst_group", "gap_closed"), ("target", "gap_closed_target")):
        erm, dfr = np.mean(rows[0][metric]), np.mean(rows[1][metric])
        for r in rows:
            r[col] = float((np.mean(r[metric]) - erm) / (dfr - erm)) if dfr != erm else float("nan")
    return rows


def table_lines(res: dict[str, Any]) -> list[str]:
    """The report's tables (Markdown lines): the summary, the settings chosen per seed, and every
    annotation-free XGIR setting."""
    seeds, table = res["seeds"], res["table"]
    lines = ["| method | source acc | target acc | worst-group acc | gap closed (WGA) | gap closed (target acc) "
             "| target-val worst class |", "|---|---|---|---|---|---|---|"]
    for r in table:
        lines.append(f"| {r['method']} | {fmt(r['source'])} | {fmt(r['target'])} | {fmt(r['worst_group'])} | "
                     f"{r['gap_closed']:+.2f} | {r['gap_closed_target']:+.2f} | {fmt(r['val_worst_class'])} |")
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
    return lines


def precisions(st: MatchedSupports, fractions: tuple[float, ...]) -> dict[str, float]:
    """Each core's precision (share of its support on the object) and recall at each matched
    size and at the context's size, over the pool."""
    out: dict[str, float] = {}
    for core in [*st.heatmaps, "random"]:
        for frac in (*fractions, CONTEXT):
            sup = st.support(core, frac)
            out[f"{core} {frac:.0%}: precision"] = support_precision(sup, st.masks)
            out[f"{core} {frac:.0%}: recall"] = float((sup & st.masks).sum() / st.masks.sum())
    return out


def plot_wga(table: list[dict[str, Any]], path: Path, title: str) -> None:
    """Worst-group accuracy per method (annotation-free selection and the references), mean ± std."""
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
    ax.set_title(title, fontsize=9)
    save_figure(fig, path)


def plot_cores(st: MatchedSupports, fraction: float, path: Path) -> None:
    """Six pool images: each core map, the pretrained core at ``fraction``, the context blank and
    the exact mask."""
    from xgir.viz import heatmap_grid

    pool = st.data["pool"]
    idx = torch.linspace(0, len(pool) - 1, 6).long()
    up = lambda m: F.interpolate(m[idx][:, None].float(), size=st.size, mode="bilinear")[:, 0]  # noqa: E731
    cores = [c for c in ("pretrained", "cwox", "novelty", "erm") if c in st.heatmaps]
    maps = [up(st.heatmaps[c]) for c in cores]
    sups = [st.support("pretrained", fraction)[idx].float(), st.support("pretrained", CONTEXT)[idx].float(),
            st.masks[idx].float()]
    heatmap_grid(pool.images[idx], torch.stack(maps + sups, dim=1), path,
                 row_titles=[f"{pool.classes[int(pool.labels[i])]}" for i in idx],
                 col_titles=[f"{c} map" for c in cores] + [f"core: pretrained {fraction:.0%}",
                                                           f"context blank: {CONTEXT:.0%}", "exact mask"])
