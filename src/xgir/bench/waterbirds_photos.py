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
means (and the same in target accuracy). The XGIR rows, the AFR anchor, the selection and the
table are shared with ``xgir-imagenet-224`` (:mod:`xgir.bench._matched`). Writes report.md,
results.json, wga.png, cores.png.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Any

import torch

from xgir.bench import spread_note
from xgir.bench._matched import (
    DELTA1,
    XgirRow,
    afr_anchor,
    family_scores,
    plot_cores,
    plot_wga,
    precisions,
    scores,
    select,
    summary_table,
    table_lines,
    xgir_heads,
)
from xgir.bench._matched import xgir_rows as matched_rows
from xgir.bench.waterbirds_photos_stage import CACHE, MODEL, QUICK, Sizes, Stage, group_counts, present
from xgir.correct.xgir import support_from_heatmaps, support_top_fraction
from xgir.correct.xgir_variants import core_heatmaps, support_precision
from xgir.data.waterbirds_photos import group_subset
from xgir.io import cached, fingerprint, write_json, write_text
from xgir.train.features import fit_head, linear_probe

SUITE = "waterbirds-photos"
K = 2


def xgir_rows(sizes: Sizes) -> dict[str, XgirRow]:
    """Row name -> setting (:func:`xgir.bench._matched.xgir_rows`) for the profile's cores and swaps."""
    return matched_rows(sizes.fractions, sizes.cores, sizes.swaps, what="bird", note_rows=sizes.note_rows,
                        controls=sizes.controls, swept=sizes.swept)


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
    from xgir.correct.class_balanced import class_balanced_head
    from xgir.correct.dac import dac_head, dac_masks
    from xgir.correct.exmap import exmap_head
    from xgir.correct.jtt import jtt_head
    from xgir.correct.xgir_variants import class_cam

    pool, sz = st.data["pool"], st.sizes
    h, y = st.h["pool"], pool.labels
    fam: dict[str, dict[str, tuple[torch.nn.Linear, dict[str, Any]]]] = {}
    fam["AFR"], erm80, rw = afr_anchor(h, y, idx, K, seed, sz.afr_gammas, sz.afr_lambdas)
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

    fixed = {"ERM head": scores(erm, st), "DFR (group labels, reference)": scores(_cached_head(dfr_key, dfr)[0], st)}
    families = {name: family_scores(settings, st) for name, settings in anchors(st, seed, idx, erm).items()}
    families["XGIR"] = {}
    for name, head in xgir_heads(st, idx, rows, seed, K).items():
        (families["XGIR"] if rows[name].free else fixed)[name] = scores(head, st)
    return {"fixed": fixed, "families": families}


def core_diagnostics(st: Stage, sizes: Sizes) -> dict[str, Any]:
    """Each core's precision (share of its support on the bird) at each size, the context
    support's recall of the bird, and the pretrained network's top-1 labels on the pool."""
    out: dict[str, Any] = {"bird share of the image": float(st.masks.float().mean()), **precisions(st, sizes.fractions)}
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
    plot_wga(table, out / "wga.png", "waterbirds-photos: annotation-free selection (and the references)")
    plot_cores(st, sizes.fractions[0], out / "cores.png")
    write_json(out / "results.json", results)
    write_text(out / "report.md", report(results, sizes))
    return results


def report(res: dict[str, Any], sizes: Sizes) -> str:
    """report.md from the results."""
    seeds, probe, cores = res["seeds"], res["probes"], res["cores"]
    label = f" ({res['label']})" if res["label"] else ""
    lines = [f"# XGIR and the annotation-free anchors on waterbirds-photos ({MODEL} features)", "",
             f"Seeds {seeds}{label}; "
             + spread_note(len(seeds)) + f" Source-train {sizes.train} images per seed (Waterbirds' shares, "
             f"p = {sizes.p}) drawn from a pool of {sum(sizes.pool.values())}; DFR on target-val "
             f"({sizes.target_val}, places balanced); scores on target-test ({sizes.target_test}). "
             "'gap closed' = (score - ERM) / (DFR - ERM) on the means, in worst-group accuracy (WGA) and in "
             "target accuracy. Selection per seed on target-val only: "
             "**annotation-free** = worst-class accuracy (class labels, no place), **group-labelled** = "
             "worst-group accuracy.", "",
             f"Linear probes (fitted on target-val, scored on target-test): bird type {probe['bird']:.3f}, place "
             f"{probe['place']:.3f} (goals 0.90 / 0.95).", "",
             *table_lines(res)]
    lines += ["", "## Cores: precision on the bird at matched sizes (source pool)", ""]
    lines += [f"- {k}: {v:.3f}" if isinstance(v, float) else f"- {k}: {v}" for k, v in cores.items()]
    lines += ["", "![worst-group accuracy per method](wga.png)", "", "![cores and supports](cores.png)"]
    lines += ["", f"Network passes {res['seconds']['stage']:.0f} s (cached after the first run: masked images "
              f"and composites too); total {res['seconds']['total']:.0f} s.", ""]
    return "\n".join(lines)
