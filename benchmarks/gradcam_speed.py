"""Speed of batched Grad-CAM and IG against separate calls and Captum (not a test).

In one run, on the same model and batch, times:
- a plain forward pass (no grad) and a plain forward + backward to the input;
- our Grad-CAM for the top-1 class (single target);
- our Grad-CAM for the top-5 classes as ONE batched call, as 5 separate calls of ours, and
  as 5 calls of Captum's LayerGradCam (relu + bilinear interpolation, same maps);
- our IG (one call for all targets) against Captum's IntegratedGradients with the same steps.
Methods run round-robin in every repeat (fair under a shared, loaded machine) and the best
of the repeats is reported. Prints a Markdown table (images per second and ratios).

    PYTHONPATH=src python benchmarks/gradcam_speed.py --threads 1
    PYTHONPATH=src python benchmarks/gradcam_speed.py --device cuda --arch both
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import torch
from torch import nn

from xgir.explain.gradcam import grad_cam
from xgir.explain.gradient import IntegratedGradients
from xgir.models import SmallResNet, get_module
from xgir.models.zoo import BasicBlock


class ResNet18Like(nn.Module):
    """ResNet-18 layout (7x7 stem, max pool, 4 stages x 2 basic blocks, widths 64..512, GAP, fc)
    built from xgir's BasicBlock, since torchvision is not available here."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64),
                                  nn.ReLU(), nn.MaxPool2d(3, 2, 1))
        stages, c_in = [], 64
        for i, c in enumerate([64, 128, 256, 512]):
            stages.append(nn.Sequential(BasicBlock(c_in, c, 1 if i == 0 else 2), BasicBlock(c, c)))
            c_in = c
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer4(self.layer3(self.layer2(self.layer1(self.stem(x)))))
        return self.fc(self.pool(x))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench(fns: dict[str, Callable[[], object]], repeats: int, device: torch.device,
          warmup: bool = True) -> dict[str, float]:
    """Best wall time (s) of each function over ``repeats`` round-robin runs (after a warm-up
    call of each unless ``warmup`` is False)."""
    if warmup:
        for fn in fns.values():
            fn()
        sync(device)
    best = {name: float("inf") for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def gradcam_suite(model: nn.Module, x: torch.Tensor, layer: str, repeats: int, k: int = 5
                  ) -> dict[str, float]:
    from captum.attr import LayerAttribution, LayerGradCam

    device = x.device
    with torch.no_grad():
        top = model(x).topk(k, dim=1).indices
    captum = LayerGradCam(model, get_module(model, layer))

    def forward() -> object:
        with torch.no_grad():
            return model(x)

    def forward_backward() -> object:
        xi = x.clone().requires_grad_(True)
        return torch.autograd.grad(model(xi).gather(1, top[:, :1]).sum(), xi)

    def captum_calls() -> object:
        return [LayerAttribution.interpolate(captum.attribute(x, target=top[:, j],
                                                              relu_attributions=True),
                                             tuple(x.shape[-2:]), "bilinear") for j in range(k)]

    fns = {
        "forward (no grad)": forward,
        "forward + backward to input": forward_backward,
        "ours, top-1 (single target)": lambda: grad_cam(model, x, top[:, :1], layer),
        f"ours, top-{k} batched (1 call)": lambda: grad_cam(model, x, top, layer),
        f"ours, top-{k} batched, loop VJPs": lambda: grad_cam(model, x, top, layer,
                                                              strategy="loop"),
        f"ours, top-{k} as {k} calls": lambda: [grad_cam(model, x, top[:, j], layer)
                                                 for j in range(k)],
        f"Captum LayerGradCam, {k} calls": captum_calls,
    }
    # same maps (sanity): batched vs Captum
    ref = torch.cat(captum_calls(), dim=1)
    err = float((grad_cam(model, x, top, layer) - ref.detach()).abs().max())
    times = bench(fns, repeats, device)
    times["_max_abs_diff_vs_captum"] = err
    return times


def ig_suite(model: nn.Module, x: torch.Tensor, steps: int, internal: int, repeats: int,
             k: int = 5) -> dict[str, float]:
    from captum.attr import IntegratedGradients as CaptumIG

    with torch.no_grad():
        top = model(x).topk(k, dim=1).indices
    ours = IntegratedGradients(n_steps=steps, internal_batch_size=internal)
    ref = CaptumIG(model)
    fns = {
        "ours IG, top-1": lambda: ours(model, x, top[:, :1]),
        "Captum IG, top-1": lambda: ref.attribute(x, target=top[:, 0], n_steps=steps,
                                                  internal_batch_size=internal),
        f"ours IG, top-{k} (1 call)": lambda: ours(model, x, top),
        f"Captum IG, top-{k} ({k} calls)": lambda: [
            ref.attribute(x, target=top[:, j], n_steps=steps, internal_batch_size=internal)
            for j in range(k)],
    }
    return bench(fns, repeats, x.device, warmup=False)


def table(title: str, n: int, times: dict[str, float], ratios: list[tuple[str, str, str]]) -> str:
    lines = [f"### {title}", "", "| run | time (s) | images/s |", "|---|---:|---:|"]
    for name, t in times.items():
        if not name.startswith("_"):
            lines.append(f"| {name} | {t:.3f} | {n / t:.1f} |")
    lines += ["", "| ratio | value |", "|---|---:|"]
    for label, a, b in ratios:
        lines.append(f"| {label} | {times[a] / times[b]:.2f}x |")
    if "_max_abs_diff_vs_captum" in times:
        diff = times["_max_abs_diff_vs_captum"]
        lines.append(f"\nmax |ours - Captum| over the top-5 maps: {diff:.2e}")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--arch", choices=["small", "resnet18", "both"], default="small")
    ap.add_argument("--batch", type=int, default=32, help="images per batch (SmallResNet)")
    ap.add_argument("--batch18", type=int, default=8, help="images per batch (ResNet-18-like)")
    ap.add_argument("--size", type=int, default=64, help="image size (SmallResNet)")
    ap.add_argument("--size18", type=int, default=224, help="image size (ResNet-18-like)")
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--blocks", type=int, default=2)
    ap.add_argument("--classes", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="CPU threads (0: torch default)")
    ap.add_argument("--ig-steps", type=int, default=16)
    ap.add_argument("--ig-batch", type=int, default=4, help="images for the IG comparison")
    ap.add_argument("--ig-repeats", type=int, default=2, help="IG repeats (no warm-up)")
    ap.add_argument("--no-ig", action="store_true", help="skip the IG comparison")
    ap.add_argument("--json", default="", help="also write the raw timings here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    report: dict[str, dict[str, float]] = {}
    name = f" ({torch.cuda.get_device_name()})" if device.type == "cuda" else ""
    out = [f"device: {device}{name}, torch threads: {torch.get_num_threads()}, Grad-CAM: best of "
           f"{args.repeats} round-robin repeats after a warm-up; IG: best of {args.ig_repeats}\n"]
    # note: timings on a shared machine are noisy; compare ratios within one run
    k = 5
    ratios = [
        (f"top-{k}: Captum {k} calls / ours batched", f"Captum LayerGradCam, {k} calls",
         f"ours, top-{k} batched (1 call)"),
        (f"top-{k}: ours {k} calls / ours batched", f"ours, top-{k} as {k} calls",
         f"ours, top-{k} batched (1 call)"),
        ("single target / forward (no grad)", "ours, top-1 (single target)", "forward (no grad)"),
        ("single target / forward + backward", "ours, top-1 (single target)",
         "forward + backward to input"),
    ]
    runs = []
    if args.arch in ("small", "both"):
        model = SmallResNet(3, args.classes, width=args.width, blocks=args.blocks).to(device).eval()
        x = torch.rand(args.batch, 3, args.size, args.size, device=device)
        runs.append((f"SmallResNet(width={args.width}, blocks={args.blocks}), {args.size}px, "
                     f"batch {args.batch}, layer3", model, x, "layer3"))
    if args.arch in ("resnet18", "both"):
        model18 = ResNet18Like(1000).to(device).eval()
        x18 = torch.rand(args.batch18, 3, args.size18, args.size18, device=device)
        runs.append((f"ResNet-18-like, {args.size18}px, batch {args.batch18}, layer4", model18,
                     x18, "layer4"))
    for title, model, x, layer in runs:
        times = gradcam_suite(model, x, layer, args.repeats, k)
        report[title] = times
        out.append(table("Grad-CAM: " + title, x.shape[0], times, ratios))
    if args.arch in ("small", "both") and not args.no_ig:
        model = runs[0][1]
        xi = runs[0][2][: args.ig_batch]
        times = ig_suite(model, xi, args.ig_steps, internal=xi.shape[0] * 8,
                         repeats=args.ig_repeats)
        title = f"IG, {args.ig_steps} steps, SmallResNet, batch {xi.shape[0]}"
        report[title] = times
        out.append(table(title, xi.shape[0], times, [
            ("top-1: Captum / ours", "Captum IG, top-1", "ours IG, top-1"),
            (f"top-{k}: Captum {k} calls / ours 1 call", f"Captum IG, top-{k} ({k} calls)",
             f"ours IG, top-{k} (1 call)"),
        ]))
    print("\n".join(out))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=2)


if __name__ == "__main__":
    main()
