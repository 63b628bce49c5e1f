"""Throughput of the black-box explainers (RISE, LIME, IASSA) on a small CNN.

Usage:
    PYTHONPATH=src python benchmarks/blackbox_speed.py [--device cpu|cuda] [--threads 1]
        [--images 4] [--sizes 28,64] [--n-masks 1000] [--n-samples 1000] [--iterations 5]
        [--json out.json]

For each image size: a LeNet (random weights: speed only) on 3-channel images; each
method explains ``--images`` images for their top class in one call. Reported: images/s,
model evaluations per image (perturbed copies scored) and the plain forward throughput
of the same model, so the ratio shows how much of the time is spent outside the model.
Timings share the machine with whatever else runs on it.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from functools import partial

import torch

from xgir.explain.iassa import IASSA
from xgir.explain.lime import LIME
from xgir.explain.rise import RISE
from xgir.models.zoo import LeNet


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], object], device: torch.device, repeats: int = 1
           ) -> tuple[float, object]:
    """(seconds per call after one warm-up call, the last result)."""
    fn()
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        out = fn()
    _sync(device)
    return (time.perf_counter() - start) / repeats, out


def _explainers(n_masks: int, n_samples: int, iterations: int, batch_size: int) -> dict:
    return {
        "rise": RISE(n_masks=n_masks, batch_size=batch_size, progress=False),
        "lime": LIME(n_samples=n_samples, batch_size=batch_size, progress=False),
        "iassa": IASSA(iterations=iterations, batch_size=batch_size, progress=False),
    }


def _evals(name: str, explainer: object, fit: object, images: int) -> float:
    """Model evaluations (perturbed copies scored) per image."""
    if name == "rise":
        return float(explainer.n_masks)
    if name == "lime":
        return float(explainer.n_samples)
    return sum(fit.windows) / images


def run(device: torch.device, images: int, sizes: list[int], n_masks: int, n_samples: int,
        iterations: int, batch_size: int) -> list[dict]:
    rows = []
    for size in sizes:
        gen = torch.Generator().manual_seed(0)
        model = LeNet(in_channels=3, num_classes=10, image_size=size).to(device).eval()
        x = torch.rand(images, 3, size, size, generator=gen).to(device)
        with torch.no_grad():
            targets = model(x).argmax(1)
            big = x.repeat(max(1, batch_size // images), 1, 1, 1)[:batch_size]
            fwd, _ = _timed(partial(model, big), device, repeats=5)
        forward_rate = big.shape[0] / fwd
        for name, explainer in _explainers(n_masks, n_samples, iterations, batch_size).items():
            call = explainer.fit if name == "iassa" else explainer
            seconds, fit = _timed(partial(call, model, x, targets), device)
            per_image = _evals(name, explainer, fit, images)
            rows.append({
                "size": size, "method": name, "images_per_s": images / seconds,
                "evals_per_image": per_image, "seconds": seconds,
                "evals_per_s": per_image * images / seconds, "forward_per_s": forward_rate,
            })
            print(f"{size:>4} px  {name:<6} {images / seconds:9.3f} img/s  "
                  f"{per_image:7.0f} evals/img  {per_image * images / seconds:9.0f} evals/s  "
                  f"(plain forward {forward_rate:9.0f} img/s)", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--sizes", default="28,64")
    parser.add_argument("--n-masks", type=int, default=1000)
    parser.add_argument("--n-samples", type=int, default=1000)
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--json", default=None, help="write the rows to this JSON file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rows = run(device, args.images, [int(s) for s in args.sizes.split(",")], args.n_masks,
               args.n_samples, args.iterations, args.batch_size)
    print("\n| size | method | images/s | evals/image | evals/s | plain forward img/s |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['size']} | {r['method']} | {r['images_per_s']:.3f} | "
              f"{r['evals_per_image']:.0f} | {r['evals_per_s']:.0f} | {r['forward_per_s']:.0f} |")
    if args.json:
        from pathlib import Path

        from xgir.io import write_json
        write_json(Path(args.json), {"device": str(device), "threads": args.threads,
                                     "rows": rows})


if __name__ == "__main__":
    main()
