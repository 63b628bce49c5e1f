"""``xgir bench xgir-imagenet-224``: the digits of xgir-imagenet at 224 px with waterbirds-photos' matched-size rows.

Setting: xgir-imagenet's object-shift (font digits over the procedural textures, exact masks,
10 classes, groups (digit, texture family), target independent) at 224 px, EfficientNet-Lite0's
own resolution (7 x 7 maps), at one bias p = 0.95; the data, cached passes and maps are those of
:mod:`xgir.bench.xgir_imagenet_stage`. The rows, the selection and the table are those of
``waterbirds-photos`` (:mod:`xgir.bench._matched`), so that the two settings compare:

- **ERM** (a new 10-class head on the frozen features of source-train); **DFR** with group
  labels on target-val (the reference, not annotation-free);
- **AFR** (ERM on a random 80 % of source-train, AFR's head on the other 20 %: gamma x lambda grid);
- **XGIR** at matched support sizes (the map's top 10 or 20 % of pixels): the context swap with
  partners of any class or of the other class, the context the partner's remainder or its
  background (its image with the top 30 % of the same map blanked out to x0 = the pool's mean
  image), for the cores ``pretrained`` (the ImageNet head's top-5 CAM), ``novelty`` and ``erm``
  (the first seed's ERM head's CAM of the true class); the note's signed rule on the pretrained
  core at 10 % and at delta1 = 0.5. Controls: the exact digit mask (annotation) and a random blob
  of the same size; ablations: the pretrained core with a random blank, a random core with the
  pretrained blank.

Selection per seed on target-val under two protocols: **annotation-free** (worst-class accuracy:
digit labels, no texture) and **group-labelled** (worst-group accuracy over the 100 groups).
Reported: source, target and worst-group accuracy with the ERM -> DFR gap closed (in WGA and in
target accuracy), each core's precision on the digit at each matched size. Writes report.md,
results.json, wga.png, cores.png.

Compute (the network passes, each image one forward of EfficientNet-Lite0 at 224 px): the pool
(700 images: 600 aligned, 100 misaligned; 500 drawn per seed) once plain and 14 times masked (9
core supports: pretrained, novelty, erm at 10 and 20 %, pretrained at delta1, the exact mask, the
random blob; 5 context blanks: the top 30 % of the three maps, the dilated mask, a random blob),
source-test 200, target-val 1500 and target-test 1000: 700 x 15 + 2700 = 13200 forwards (and a
few of the empty image x0), measured 4680 s for 3 seeds on a 2-core CPU shared with two other
jobs (cached: a rerun only fits heads, a few minutes). ``--quick`` renders at 64 px (2 x 2 maps)
with tiny sizes: a smoke test.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from xgir.bench import one_thread, spread_note
from xgir.bench._matched import (
    AFR_GAMMAS,
    AFR_LAMBDAS,
    DELTA1,
    SWAPS,
    XgirRow,
    afr_anchor,
    family_scores,
    masked_passes,
    plot_cores,
    plot_wga,
    precisions,
    scores,
    select,
    summary_table,
    table_lines,
    xgir_heads,
    xgir_rows,
)
from xgir.bench.xgir_imagenet import _threads, dfr_reference, probes
from xgir.bench.xgir_imagenet_stage import MODEL, Sizes, Stage
from xgir.correct.xgir import support_from_heatmaps
from xgir.correct.xgir_variants import class_cam, support_precision
from xgir.data.objects import bias_subset
from xgir.io import write_json, write_text
from xgir.train.features import fit_head

SUITE = "xgir-imagenet-224"
K = 10
P = 0.95
FRACTIONS = (0.1, 0.2)
SIZES = Sizes(size=224, pool_train=(600, 100), n_train=500, pool_val=(0, 0), n_val=0, pool_test=(190, 10),
              n_test=200, target_val=1500, target_test=1000, ps=(P,), erm_core_ps=())
QUICK = Sizes(size=64, pool_train=(190, 12), n_train=200, pool_val=(0, 0), n_val=0, pool_test=(19, 1), n_test=20,
              target_val=120, target_test=60, ps=(P,), erm_core_ps=())


def rows_for(quick: bool) -> tuple[tuple[float, ...], dict[str, XgirRow]]:
    """The support fractions and the XGIR rows (quick: 10 % only, the background context, two cores)."""
    fractions = FRACTIONS[:1] if quick else FRACTIONS
    cores = ("pretrained", "erm") if quick else ("pretrained", "novelty", "erm")
    swaps = ("other class, background",) if quick else SWAPS
    return fractions, xgir_rows(fractions, cores, swaps, what="digit")


def forwards(sizes: Sizes, rows: dict[str, XgirRow]) -> int:
    """Images passed through the network: the pool plain and once per masked pass, source-test,
    target-val and target-test (not counted: the few forwards of the empty image x0)."""
    plain = sum(sizes.pool_test) + sizes.target_val + sizes.target_test
    return sum(sizes.pool_train) * (1 + masked_passes(rows)) + plain


def run_seed(st: Stage, seed: int, rows: dict[str, XgirRow], quick: bool) -> dict[str, Any]:
    """Every method for one seed: {"fixed": {row: scores}, "families": {family: {setting: scores}}}."""
    pool = st.data["pool"]
    idx = bias_subset(pool.extras["aligned"], P, st.sizes.n_train, seed)
    erm = fit_head(st.h["pool"][idx], pool.labels[idx], K, seed=seed)
    if "erm" not in st.heatmaps:  # the first seed's ERM head: the 'erm' core of every seed
        st.heatmaps["erm"] = class_cam(st.maps, erm, pool.labels)
    fixed = {"ERM head": scores(erm, st), "DFR (group labels, reference)": scores(dfr_reference(st, seed), st)}
    grid = ((4.0, 10.0), (0.0,)) if quick else (AFR_GAMMAS, AFR_LAMBDAS)
    families = {"AFR": family_scores(afr_anchor(st.h["pool"], pool.labels, idx, K, seed, *grid)[0], st), "XGIR": {}}
    for name, head in xgir_heads(st, idx, rows, seed, K).items():
        (families["XGIR"] if rows[name].free else fixed)[name] = scores(head, st)
    return {"fixed": fixed, "families": families}


def core_diagnostics(st: Stage, fractions: tuple[float, ...]) -> dict[str, float]:
    """Each core's precision and recall on the digit at each matched size, and the delta1 support's."""
    sup = support_from_heatmaps(st.heatmaps["pretrained"], st.size, DELTA1)
    return {"digit share of the image": float(st.masks.float().mean()), **precisions(st, fractions),
            f"pretrained delta1 {DELTA1}: precision": support_precision(sup, st.masks),
            f"pretrained delta1 {DELTA1}: share kept": float(sup.float().mean())}


def run(out: Path, seeds: list[int], quick: bool = False, device: str = "cpu") -> dict[str, Any]:
    """The suite (``device``: where the network passes run; heads on the CPU)."""
    start = time.time()
    out = Path(out)
    sizes = QUICK if quick else SIZES
    fractions, rows = rows_for(quick)
    with one_thread() if quick else _threads(2):
        st = Stage(sizes, device=device)
        t_stage = time.time() - start
        per_seed = {seed: run_seed(st, seed, rows, quick) for seed in seeds}
        chosen = select(per_seed)
        diag = core_diagnostics(st, fractions)
        probe = probes(st)
    table = summary_table(per_seed, chosen, seeds)
    results = {"seeds": seeds, "quick": quick, "sizes": str(sizes), "probes": probe, "per_seed": per_seed,
               "selected": {f: {p: {str(s): n for s, n in v.items()} for p, v in d.items()} for f, d in chosen.items()},
               "table": table, "cores": diag, "forwards": forwards(sizes, rows), "masked_passes": masked_passes(rows),
               "seconds": {"stage": t_stage, "total": time.time() - start}}
    plot_wga(table, out / "wga.png", f"xgir-imagenet-224: digits at {sizes.size} px, annotation-free selection")
    plot_cores(st, fractions[0], out / "cores.png")
    write_json(out / "results.json", results)
    write_text(out / "report.md", report(results, sizes))
    return results


def report(res: dict[str, Any], sizes: Sizes) -> str:
    """report.md from the results."""
    seeds, probe = res["seeds"], res["probes"]
    lines = [f"# XGIR at matched support sizes on the digits at {sizes.size} px ({MODEL} features)", "",
             f"Seeds {seeds}{' (quick: tiny sizes at 64 px, a smoke test, not a result)' if res['quick'] else ''}; "
             + spread_note(len(seeds)) + f" object-shift at p = {P}: source-train {sizes.n_train} images per seed "
             f"drawn from a pool of {sum(sizes.pool_train)}; source-test {sum(sizes.pool_test)}; DFR on target-val "
             f"({sizes.target_val}, 100 groups: digit x texture family); scores on target-test ({sizes.target_test}). "
             "'gap closed' = (score - ERM) / (DFR - ERM) on the means, in worst-group and in target accuracy. "
             "Selection per seed on target-val only: **annotation-free** = worst-class accuracy (digit labels, no "
             "texture), **group-labelled** = worst-group accuracy. The rows of waterbirds-photos (without its CWOX "
             "core and its other anchors), so that the two settings compare.", "",
             f"Linear probes (fitted on target-val, scored on target-test): digit {probe['digit']:.3f}, texture "
             f"{probe['texture']:.3f}.", "",
             *table_lines(res),
             "", "## Cores: precision on the digit at matched sizes (source pool)", ""]
    lines += [f"- {k}: {v:.3f}" for k, v in res["cores"].items()]
    lines += ["", f"Network passes: {res['forwards']} images through {MODEL} (the pool plain and "
              f"{res['masked_passes']} times masked, source-test, target-val and target-test), all cached: this "
              f"run took {res['seconds']['stage']:.0f} s for the stage (plain passes and maps) and "
              f"{res['seconds']['total']:.0f} s in all (masked passes, heads).", ""]
    return "\n".join(lines)
