"""Every registered explainer on CUDA against the same call on the CPU, with timings.

Run on a machine with a GPU: ``python benchmarks/gpu_smoke.py``. Model: the built-in
EfficientNet-Lite0 on two bundled photos at 224 px, top-1 targets, small sample counts.
Comparisons run in full float32 (TF32 off; Hopper's default TF32 convolutions differ by
~1e-3 relative): the max |GPU - CPU| relative to the CPU map's max for the deterministic
methods; the seeded samplers draw their random masks on the model's device, so for them
the rank correlation of the two maps is printed instead. Then GPU timings with the TF32
default, as a user gets them.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from scipy.stats import spearmanr

FAST = {"ig": {"n_steps": 16}, "expected-gradients": {"n_samples": 8}, "rise": {"n_masks": 500},
        "lime": {"n_samples": 200}, "iassa": {"iterations": 2}, "occlusion": {"window": 32, "stride": 32}}


def main() -> None:
    from xgir.data.images import load_images
    from xgir.explain.registry import EXPLAINERS, get_explainer
    from xgir.models import load_model

    assert torch.cuda.is_available(), "no CUDA device"
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    lm = load_model("efficientnet-lite0")
    x = load_images("photos:chelsea,coffee", lm.preprocess).images
    with torch.no_grad():
        t = lm.model(x).argmax(1, keepdim=True)
    print(f"{'explainer':20s} {'rel max diff':>12s} {'spearman':>9s} {'cpu s':>7s} {'gpu s (tf32)':>12s}")
    for name, info in sorted(EXPLAINERS.items()):
        if info.targets == "foils":
            continue  # ganmex needs a generator trained for this classifier
        params = dict(FAST.get(name, {}))
        if name == "gradcam":
            params["layer"] = lm.layer
        if info.baseline == "baselines":
            params["baselines"] = torch.rand(4, 3, 224, 224, generator=torch.Generator().manual_seed(0))
        try:
            lm.model.cpu()
            t0 = time.perf_counter()
            cpu = get_explainer(name, **params)(lm.model, x, t).detach().float()
            t1 = time.perf_counter()
            gparams = {k: (v.cuda() if torch.is_tensor(v) else v) for k, v in params.items()}
            gm = lm.model.cuda()
            gpu = get_explainer(name, **gparams)(gm, x.cuda(), t.cuda()).detach().float().cpu()
            torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
            torch.cuda.synchronize()
            t2 = time.perf_counter()
            get_explainer(name, **gparams)(gm, x.cuda(), t.cuda())
            torch.cuda.synchronize()
            t3 = time.perf_counter()
            torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
            rel = float((gpu - cpu).abs().max() / cpu.abs().max().clamp_min(1e-12))
            rho = float(np.nanmean([spearmanr(g.flatten(), c.flatten())[0] for g, c in zip(gpu, cpu, strict=True)]))
            ok = rel < 1e-3 or (info.sampler and rho > 0.5)
            print(f"{name:20s} {rel:12.2e} {rho:9.3f} {t1 - t0:7.2f} {t3 - t2:12.3f}{'' if ok else '  <-- CHECK'}")
        except Exception as err:  # noqa: BLE001 - report and go on
            print(f"{name:20s} FAILED: {type(err).__name__}: {str(err).splitlines()[0][:150]}")
        finally:
            lm.model.cpu()


if __name__ == "__main__":
    main()
