"""Every registered explainer on CUDA against the same call on the CPU, with timings.

Run on a machine with a GPU: ``python benchmarks/gpu_smoke.py``. Model: the built-in
EfficientNet-Lite0 on four bundled photos at 224 px, top-1 targets. For each explainer it
prints the max |GPU - CPU| difference relative to the CPU map's max (seeded samplers draw
their masks on the model's device, so RISE / LIME / IASSA / Expected Gradients are compared
by rank correlation instead) and the GPU and CPU wall times.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from PIL import Image
from scipy.stats import spearmanr


def main() -> None:
    import skimage.data as d

    from xgir.explain import available_explainers, get_explainer
    from xgir.models import load_model

    assert torch.cuda.is_available(), "no CUDA device"
    lm = load_model("efficientnet-lite0")
    x = torch.stack([lm.preprocess(Image.fromarray(getattr(d, n)())) for n in
                     ("chelsea", "coffee", "astronaut", "rocket")])
    with torch.no_grad():
        t = lm.model(x).argmax(1, keepdim=True)
    sampled = {"rise", "lime", "iassa", "expected-gradients", "deepshap", "ganmex"}
    print(f"{'explainer':22s} {'rel max diff':>12s} {'spearman':>9s} {'cpu s':>7s} {'gpu s':>7s}")
    for name in sorted(available_explainers()):
        if name == "ganmex":
            continue  # needs a trained generator
        params = {"layer": lm.layer} if name == "gradcam" else {}
        if name in ("expected-gradients", "deepshap"):
            params = {"baselines": torch.rand(8, 3, 224, 224, generator=torch.Generator().manual_seed(0))}
        try:
            ex = get_explainer(name, **params)
            t0 = time.perf_counter()
            cpu = ex(lm.model.cpu(), x, t).detach().float()
            t1 = time.perf_counter()
            gparams = {k: (v.cuda() if torch.is_tensor(v) else v) for k, v in params.items()}
            gex = get_explainer(name, **gparams)
            gm = lm.model.cuda()
            gex(gm, x[:1].cuda(), t[:1].cuda())  # warm-up
            torch.cuda.synchronize()
            t2 = time.perf_counter()
            gpu = gex(gm, x.cuda(), t.cuda()).detach().float().cpu()
            torch.cuda.synchronize()
            t3 = time.perf_counter()
            rel = float((gpu - cpu).abs().max() / cpu.abs().max().clamp_min(1e-12))
            rho = float(np.mean([spearmanr(g.flatten(), c.flatten())[0] for g, c in zip(gpu, cpu, strict=True)]))
            flag = "" if (rel < 1e-3 or (name in sampled and rho > 0.5)) else "  <-- CHECK"
            print(f"{name:22s} {rel:12.2e} {rho:9.3f} {t1 - t0:7.2f} {t3 - t2:7.3f}{flag}")
        except Exception as err:  # noqa: BLE001 - report and go on
            print(f"{name:22s} FAILED: {type(err).__name__}: {str(err).splitlines()[0][:150]}")
        finally:
            lm.model.cpu()


if __name__ == "__main__":
    main()
