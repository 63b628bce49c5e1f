"""Deletion / insertion throughput: batched xgir.metrics vs a straightforward per-image loop.

Usage: PYTHONPATH=src python benchmarks/deletion_throughput.py [--n 16] [--steps 50] [--threads 1]
       [--repeats 2] [--batch-size B] [--device cuda]

Both versions run in the same process on the same small CNN, images and saliency maps;
the script checks that they give the same curves, then prints a Markdown table of
images per second (one image = one full curve) and the ratio batched / loop.
"""

from __future__ import annotations

import argparse
import math
import time

import torch
from torch import nn

from xgir.metrics.faithfulness import default_batch_size, gaussian_blur, perturbation_curves


def small_cnn(channels: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(channels, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(4),
        nn.Flatten(),
        nn.Linear(32 * 16, 10),
    ).eval()


@torch.no_grad()
def loop_curves(
    model: nn.Module, x: torch.Tensor, sal: torch.Tensor, mode: str, step: int
) -> torch.Tensor:
    """One image at a time, one perturbed image per forward pass."""
    n, c, h, w = x.shape
    p = h * w
    rows = []
    for i in range(n):
        base = torch.zeros_like(x[i]) if mode == "deletion" else gaussian_blur(x[i : i + 1])[0]
        order = torch.argsort(sal[i].flatten(), descending=True, stable=True)
        cls = int(model(x[i : i + 1]).argmax(1))
        src, dst = (x[i], base) if mode == "deletion" else (base, x[i])
        row = []  # probabilities stay on the device until the end: no sync per step
        for s in range(math.ceil(p / step) + 1):
            k = min(s * step, p)
            img = src.reshape(c, p).clone()
            img[:, order[:k]] = dst.reshape(c, p)[:, order[:k]]
            row.append(torch.softmax(model(img.reshape(1, c, h, w)), 1)[0, cls])
        rows.append(torch.stack(row))
    return torch.stack(rows).cpu()


def timed(fn, repeats: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()  # both return CPU tensors, so CUDA work has finished
        best = min(best, time.perf_counter() - t0)
    return best, out


def measure(
    model: nn.Module,
    x: torch.Tensor,
    sal: torch.Tensor,
    mode: str,
    step: int,
    batch: int,
    repeats: int,
) -> tuple[float, float]:
    """Seconds (best of ``repeats``) of the batched and the loop version; checks they agree."""
    t_b, fast = timed(
        lambda: perturbation_curves(model, x, sal, mode, step=step, batch_size=batch).curves.cpu(),
        repeats,
    )
    t_l, slow = timed(lambda: loop_curves(model, x, sal, mode, step), repeats)
    err = float((fast - slow).abs().max())
    assert err < 1e-4, f"batched and loop curves differ by {err}"
    return t_b, t_l


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=16, help="images per size")
    ap.add_argument("--steps", type=int, default=50, help="steps per curve")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2, help="best of R runs")
    ap.add_argument("--batch-size", type=int, default=None, help="default: default_batch_size")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    lines = [
        "| input | mode | steps | batch | batched img/s | loop img/s | ratio |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for channels, size in ((1, 28), (3, 64)):
        model = small_cnn(channels).to(args.device)
        g = torch.Generator().manual_seed(size)
        x = torch.rand(args.n, channels, size, size, generator=g).to(args.device)
        sal = torch.rand(args.n, size, size, generator=g).to(args.device)
        step = math.ceil(size * size / args.steps)
        batch = args.batch_size or default_batch_size(x)
        for mode in ("deletion", "insertion"):
            t_b, t_l = measure(model, x, sal, mode, step, batch, args.repeats)
            lines.append(
                f"| {channels}x{size}x{size} | {mode} | {math.ceil(size * size / step)} | "
                f"{batch} | "
                f"{args.n / t_b:.1f} | {args.n / t_l:.1f} | {t_l / t_b:.1f}x |"
            )
    print(
        f"n = {args.n} images per size, device {args.device}, {torch.get_num_threads()} CPU "
        f"thread(s), best of {args.repeats}; img/s = complete curves per second\n"
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
