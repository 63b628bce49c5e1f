"""Speed on a real model: EfficientNet-Lite0 at 224 px on the bundled photos.

Usage:
    PYTHONPATH=src python benchmarks/real_model_speed.py [--device cpu|cuda] [--threads N]
        [--images 2] [--samples 256] [--repeats 3] [--skip-lime] [--gradcam-only] [--json out.json]

1. Batched top-5 Grad-CAM (xgir.explain.gradcam.grad_cam: one forward, one vmapped backward
   for the 5 targets) against Captum's LayerGradCam called once per target (5 forward +
   backward passes), same layer (_conv_head), same images; the maps are checked equal
   (max difference / map max). Goal: ratio >= 4.
2. RISE (``--samples`` masks) and LIME (``--samples`` perturbations, xgir's default batch
   chosen from image size and device) against the ``lime`` package's LimeImageExplainer
   with the same number of samples (batch_size 10, its default; and 32), top-1 target,
   one image at a time as ``lime`` works. ``lime`` is not an xgir dependency:
   ``pip install lime`` to run this part (skipped with a note when missing).

Every ratio is measured in the same run (same machine load); the median of ``--repeats``
runs after one warm-up. On a shared machine the absolute times move; the ratios less so.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device, repeats: int) -> tuple[float, object]:
    """(median seconds per call after one warm-up, last result)."""
    out = fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        out = fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-lime", action="store_true")
    parser.add_argument("--gradcam-only", action="store_true", help="part 1 only")
    parser.add_argument("--json", default="")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from captum.attr import LayerGradCam

    from xgir.data.images import load_images
    from xgir.explain._blackbox import auto_batch_size
    from xgir.explain.gradcam import grad_cam
    from xgir.explain.lime import LIME
    from xgir.explain.rise import RISE
    from xgir.models import load_model

    device = torch.device(args.device)
    lite = load_model("efficientnet-lite0", device=device)
    model = lite.model
    names = ["chelsea", "coffee", "astronaut", "rocket", "camera", "coins", "clock", "logo"][: args.images]
    x = load_images("photos:" + ",".join(names), lite.preprocess).images.to(device)
    with torch.no_grad():
        top5 = model(x).topk(5, dim=1).indices
    results: dict[str, float] = {"images": len(x), "threads": torch.get_num_threads(),
                                 "auto_batch": auto_batch_size(x, None)}
    print(f"EfficientNet-Lite0, {len(x)} images at 224 px on {device} ({torch.get_num_threads()} threads)")

    # 1. Grad-CAM: batched top-5 vs Captum's 5 calls
    layer = model.get_submodule(lite.layer)
    ours_t, ours = timed(lambda: grad_cam(model, x, top5, lite.layer, upsample=False), device, args.repeats)

    def captum5() -> torch.Tensor:
        lgc = LayerGradCam(model, layer)
        return torch.stack([lgc.attribute(x, target=top5[:, j], relu_attributions=True)[:, 0]
                            for j in range(5)], 1)

    captum_t, theirs = timed(captum5, device, args.repeats)
    theirs = theirs.detach()
    err = float(((ours - theirs).abs().amax((2, 3)) / theirs.abs().amax((2, 3)).clamp_min(1e-12)).max())
    results.update(gradcam_batched_s=ours_t, gradcam_captum5_s=captum_t, gradcam_ratio=captum_t / ours_t,
                   gradcam_max_rel_diff=err)
    print(f"Grad-CAM top-5: xgir batched {ours_t:.3f} s, Captum 5 x LayerGradCam {captum_t:.3f} s "
          f"-> {captum_t / ours_t:.2f}x (goal >= 4x); max |diff| / map max = {err:.1e}")

    if args.gradcam_only:
        if args.json:
            from pathlib import Path

            Path(args.json).write_text(json.dumps(results, indent=2))
        return
    # 2. RISE / LIME against the lime package, one image at a time, top-1 target
    n = args.samples
    top1 = top5[:, :1]
    rise_t, _ = timed(lambda: [RISE(n_masks=n, progress=False)(model, x[i:i + 1], top1[i:i + 1])
                               for i in range(len(x))], device, args.repeats)
    lime_t, _ = timed(lambda: [LIME(n_samples=n, progress=False)(model, x[i:i + 1], top1[i:i + 1])
                               for i in range(len(x))], device, args.repeats)
    results.update(rise_s_per_image=rise_t / len(x), lime_s_per_image=lime_t / len(x))
    line = f"per image, {n} samples: xgir RISE {rise_t / len(x):.2f} s, xgir LIME {lime_t / len(x):.2f} s"
    print(line, flush=True)
    try:
        from lime import lime_image
    except ImportError:
        lime_image = None
    if lime_image is None or args.skip_lime:
        print("lime package not installed or skipped (pip install lime)")
    else:
        from skimage.segmentation import slic

        def classifier(batch: np.ndarray) -> np.ndarray:
            t = torch.from_numpy(batch).permute(0, 3, 1, 2).float().to(device)
            with torch.no_grad():
                return torch.softmax(model(t), 1).cpu().numpy()

        imgs = [x[i].permute(1, 2, 0).cpu().double().numpy() for i in range(len(x))]

        def lime_pkg(batch_size: int) -> None:
            explainer = lime_image.LimeImageExplainer(random_state=0)
            for i, img in enumerate(imgs):
                explainer.explain_instance(
                    img, classifier, labels=(int(top1[i, 0]),), top_labels=None, hide_color=None,
                    num_samples=n, batch_size=batch_size,
                    segmentation_fn=lambda im: slic(im, n_segments=50, compactness=10, start_label=0))

        for bs in (10, 32):
            pkg_t, _ = timed(lambda bs=bs: lime_pkg(bs), device, args.repeats)
            results[f"lime_pkg_bs{bs}_s_per_image"] = pkg_t / len(x)
            results[f"lime_pkg_bs{bs}_over_xgir_lime"] = pkg_t / lime_t
            results[f"lime_pkg_bs{bs}_over_xgir_rise"] = pkg_t / rise_t
        print(f"lime package (batch 10) {results['lime_pkg_bs10_s_per_image']:.2f} s, "
              f"(batch 32) {results['lime_pkg_bs32_s_per_image']:.2f} s")
        print(f"lime package time / xgir LIME time: batch 10 {results['lime_pkg_bs10_over_xgir_lime']:.2f}, "
              f"batch 32 {results['lime_pkg_bs32_over_xgir_lime']:.2f} (>= 1: xgir no slower); "
              f"/ xgir RISE: {results['lime_pkg_bs10_over_xgir_rise']:.2f}, "
              f"{results['lime_pkg_bs32_over_xgir_rise']:.2f}")
    if args.json:
        from pathlib import Path

        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
