"""Images per second of the XGIR passes of ``xgir correct`` (not a test).

Model: the built-in EfficientNet-Lite0 (``xgir.models.load_model("efficientnet-lite0")``,
Grad-CAM at ``_conv_head``, head ``_fc``, D = 1280) on synthetic 224 px images (smooth random
colour fields, held on the device: image reading is not timed), IOX heatmaps of a random
true class, x0 = zeros, response core. Settings, each timed on the same images:

- ``before``: the passes as they were - a features pass, then Grad-CAM + responses;
- ``fused``: the Grad-CAM forward also yields h (no features pass);

run with 1 process and, under ``torchrun``, with N processes (``--procs 1 2`` launches them).
Network passes per image are counted by a forward pre-hook on the model (images in all
its forward calls / images), so the empty image x0, run once per batch, shows as 1/B.
Bytes per image: the stored h, r, label and empty-support flag (float16), and the size of
the chunk files on disk. One summary line per setting:

    PYTHONPATH=src python benchmarks/xgir_passes.py --images 32 --batch-size 8 --procs 1 2
    PYTHONPATH=src python benchmarks/xgir_passes.py --device cuda --batch-size 256 --images 8192
    PYTHONPATH=src torchrun --nproc_per_node=8 benchmarks/xgir_passes.py --device cuda --batch-size 256 \\
        --images 65536

(the GPU commands finish in well under 3 minutes on one H200: model load, a warm-up batch,
then 2 x --images images through the passes).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F


class SyntheticImages:
    """``[i] -> {"image": i, "label": int}``; :meth:`images` gives the images of positions on the
    device: a fixed pool of smooth random colour fields (bilinear upsampling of 7x7 noise) in
    [0, 1], reused cyclically, so that no image is read or copied to the device in the timing."""

    def __init__(self, n: int, size: int, num_classes: int, device: torch.device, pool: int = 32,
                 seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        low = torch.rand(pool, 3, 7, 7, generator=g)
        self.pool = F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)
        self.pool = self.pool.to(device)
        self.labels = torch.randint(0, num_classes, (n,), generator=g)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"image": i, "label": int(self.labels[i])}

    def wrap(self, fn: Any) -> Any:
        """``fn`` on batches whose images are the pool's (``batch["image"]`` holds positions)."""
        return lambda batch, pos: fn({**batch, "image": self.pool[pos.to(self.pool.device) % len(self.pool)]}, pos)


def _worker(args: argparse.Namespace) -> None:
    """One setting pair (before, fused) on this process / torchrun rank; rank 0 prints."""
    from xgir.correct.passes import _features_fn, _xgir_fn
    from xgir.correct.xgir import XGIRConfig
    from xgir.models import load_model, split
    from xgir.sharded import init_dist, load_pass, sharded_pass

    if args.threads:
        torch.set_num_threads(args.threads)
    dist = init_dist(torch.device(args.device))
    device = dist.device
    loaded = load_model("efficientnet-lite0", device=device)
    model = loaded.model
    features, head = split(model, loaded.head)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    seen = {"images": 0}
    model.register_forward_pre_hook(lambda _m, a: seen.__setitem__("images", seen["images"] + a[0].shape[0]))
    data = SyntheticImages(args.images, args.size, loaded.num_classes, device)
    idx = torch.arange(args.images)
    xcfg = XGIRConfig()
    xgir_fn = data.wrap(_xgir_fn(model, features, head, loaded.layer, None, None, 0.5, xcfg, None,
                                 (args.size, args.size), device, torch.float16, set(), "error"))
    feat_fn = data.wrap(_features_fn(features, device, torch.float16, True, False, "source_train", "error"))
    # warm-up (kernels, cudnn autotuning), not timed
    pos = torch.arange(min(args.batch_size, args.images))
    warm = {"image": pos, "label": data.labels[pos]}
    xgir_fn(warm, pos)
    feat_fn(warm, pos)

    run_dir = Path(args.run_dir)
    common = {"batch_size": args.batch_size, "chunk_images": args.chunk_images, "resume": False, "progress": False,
              "workers": args.workers}
    results: dict[str, Any] = {}
    for rep, setting in enumerate(["before", "fused"] * args.repeats):  # alternated: fair under a shared machine
        seen["images"] = 0
        if device.type == "cuda":
            torch.cuda.synchronize()
        dist.barrier()
        t0 = time.perf_counter()
        key = {"setting": setting, "images": args.images, "world": dist.world, "repeat": rep // 2}
        if setting == "before":
            sharded_pass(dist, run_dir, "features", key, data, idx, feat_fn, **common)
        plan = sharded_pass(dist, run_dir, "xgir", key, data, idx, xgir_fn, **common)
        if device.type == "cuda":
            torch.cuda.synchronize()
        dist.barrier()
        seconds = time.perf_counter() - t0
        passes = sum(dist.exchange(seen["images"])) / args.images
        if dist.is_main and (setting not in results or seconds < results[setting][0]):
            disk = sum(p.stat().st_size for p in plan.folder.glob("chunk-*.pt"))
            results[setting] = (seconds, passes, load_pass(plan), disk)
    if dist.is_main:
        gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} threads"
        for setting, (seconds, passes, out, disk) in results.items():
            stored = sum(v.nbytes for k, v in out.items() if torch.is_tensor(v) and not k.startswith("sum:"))
            print(f"{setting:6s} procs {dist.world} device {device.type} ({gpu}) batch {args.batch_size} "
                  f"images {args.images}: {args.images / seconds:8.1f} images/s, {passes:.3f} network passes "
                  f"per image, stored {stored / args.images:.0f} B/image (h, r float16 + label + flag; "
                  f"{disk / args.images:.0f} B/image on disk), {seconds:.1f} s (best of {args.repeats})", flush=True)
    dist.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--chunk-images", type=int, default=2048)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=1, help="time each setting this often (alternated), keep the best")
    ap.add_argument("--threads", type=int, default=0, help="torch threads per process (0: torch's default)")
    ap.add_argument("--procs", type=int, nargs="*", help="launch torchrun with each number of processes "
                    "(threads per process = cores / procs on the CPU)")
    ap.add_argument("--run-dir", default=None, help="folder for the chunk files (default: a temporary one)")
    args = ap.parse_args()
    if args.procs and "WORLD_SIZE" not in os.environ:
        cores = len(os.sched_getaffinity(0))
        for p in args.procs:
            threads = args.threads or (max(1, cores // p) if args.device == "cpu" else 0)
            with tempfile.TemporaryDirectory() as tmp:
                cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={p}",
                       __file__, "--device", args.device, "--batch-size", str(args.batch_size), "--images",
                       str(args.images), "--size", str(args.size), "--chunk-images", str(args.chunk_images),
                       "--workers", str(args.workers), "--repeats", str(args.repeats), "--threads", str(threads),
                       "--run-dir", tmp]
                subprocess.run(cmd, check=True)
        return
    if args.run_dir is None:  # the same folder on every rank of one torchrun launch
        tag = os.environ.get("MASTER_PORT", str(os.getpid()))
        args.run_dir = os.path.join(tempfile.gettempdir(), f"xgir-bench-passes-{tag}")
    try:
        _worker(args)
    finally:
        if int(os.environ.get("RANK", "0")) == 0 and "xgir-bench-passes-" in args.run_dir:
            shutil.rmtree(args.run_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
