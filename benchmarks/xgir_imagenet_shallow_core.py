"""Extra experiment (not part of the suite): is a finer annotation-free core good enough?

The pretrained ImageNet head's Grad-CAM of its top-5 classes at ``_blocks.10`` (7x7 at 112 px)
instead of the last 3x3 map, as the core of the context-swap variant, on the cached
xgir-imagenet setup (same pool, subsets, seeds). Prints support precision and, per p, the
target accuracy and gap closed of ERM, DFR and the swap. Run:
    XGIR_CACHE=.xgir-cache python benchmarks/xgir_imagenet_shallow_core.py
"""

import numpy as np
import torch

from xgir.bench.xgir_imagenet import _accuracies, dfr_reference
from xgir.bench.xgir_imagenet_stage import Sizes, Stage
from xgir.correct.xgir import XGIRConfig, retrain_head, support_from_heatmaps
from xgir.correct.xgir_variants import core_heatmaps, support_precision
from xgir.io import cached
from xgir.train.features import fit_head

LAYER = "_blocks.10"
torch.set_num_threads(2)
st = Stage(Sizes())
pool = st.data["pool"]
maps = cached("xgir-imagenet", f"{st.keys['pool']}-pretrained-gradcam-{LAYER}",
              lambda: torch.cat([core_heatmaps("pretrained", st.model, pool.images[i : i + 64], LAYER)
                                 for i in range(0, len(pool.images), 64)]))
for d1 in (0.3, 0.5, 0.7):
    s = support_from_heatmaps(maps, (112, 112), d1)
    print(f"delta1 {d1}: precision {support_precision(s, pool.masks):.3f}, share {float(s.float().mean()):.3f}")
st.supports["pretrained-shallow"] = support_from_heatmaps(maps, (112, 112), 0.5)
sz = st.sizes
tt = st.data["target-test"]
for p in sz.ps:
    res = {"erm": [], "dfr": [], "swap": []}
    for seed in (0, 1, 2):
        idx, hs, ys, h, y, vg = st.draw(p, seed)
        res["erm"].append(_accuracies(fit_head(hs, ys, 10, epochs=30, lr=1e-2, seed=seed), h, y, tt.groups, vg))
        res["dfr"].append(_accuracies(dfr_reference(st, seed), h, y, tt.groups, vg))
        cfg = XGIRConfig(seed=seed, delta1=0.5, variant="swap", empty="data-mean")
        sup = st.supports["pretrained-shallow"][idx]
        head, _ = retrain_head(hs, st.responses("pretrained-shallow", cfg)[idx], ys, 10, cfg,
                               empty_support=~sup.flatten(1).any(1))
        res["swap"].append(_accuracies(head, h, y, tt.groups, vg))
    t = {k: np.mean([r["target"] for r in v]) for k, v in res.items()}
    sd = np.std([r["target"] for r in res["swap"]])
    print(f"p={p}: ERM {t['erm']:.3f}, DFR {t['dfr']:.3f}, swap (shallow pretrained core) {t['swap']:.3f} ± {sd:.3f}"
          f" gap {(t['swap'] - t['erm']) / (t['dfr'] - t['erm']):+.2f}; source "
          f"{np.mean([r['source'] for r in res['swap']]):.3f} (ERM {np.mean([r['source'] for r in res['erm']]):.3f})",
          flush=True)
