"""Images per second of ``xgir explain`` with 1 process and under ``torchrun`` with N (not a test).

Grad-CAM (``--method gradcam``, the model's default layer) of EfficientNet-Lite0 (the
built-in ``efficientnet-lite0``, 224 px) on a folder of the bundled photos repeated (PNG
files written once to a temporary folder). Each setting runs the real command in a fresh
process - 1 process: ``python -m xgir explain ...``; N: ``python -m torch.distributed.run
--standalone --nproc_per_node=N -m xgir explain ...`` - with ``--n-images`` = the small and
the large count. Reported per setting: end-to-end images/s of the large run (start-up,
model load, image reading and the figure included), and the marginal rate (large - small
images) / (time large - time small), which leaves out the fixed start-up. Settings are run
alternately (``--repeats``), best time kept; torch threads per process = cores / N on the
CPU, or ``--threads`` (on a loaded machine 2 threads in one process can be much slower than
1: compare with ``--threads 1``). One line per setting, then the ratio N : 1 of the same run:

    PYTHONPATH=src python benchmarks/explain_passes.py --images 8 32 --procs 1 2
    PYTHONPATH=src python benchmarks/explain_passes.py --images 8 32 --procs 1 2 --threads 1
    PYTHONPATH=src python benchmarks/explain_passes.py --device cuda --images 256 2048 --batch-size 64 \\
        --procs 1 8
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def write_photos(folder: Path, count: int) -> Path:
    """``count`` PNG files: the bundled photos, repeated."""
    from xgir.data.images import PHOTOS, photo

    folder.mkdir(parents=True, exist_ok=True)
    names = list(PHOTOS)
    images = {n: photo(n).convert("RGB") for n in names}
    for i in range(count):
        images[names[i % len(names)]].save(folder / f"{i:05d}-{names[i % len(names)]}.png")
    return folder


def run_once(procs: int, n: int, folder: Path, out: Path, args: argparse.Namespace) -> float:
    """Wall seconds of one ``xgir explain`` command."""
    cores = len(os.sched_getaffinity(0))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1] / "src"),
                                                        os.environ.get("PYTHONPATH", "")])}
    if args.device == "cpu":
        env["OMP_NUM_THREADS"] = str(args.threads or max(1, cores // procs))
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    launch = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}"]
              if procs > 1 else [sys.executable])
    cmd = [*launch, "-m", "xgir", "explain", "--model", "efficientnet-lite0", "--images", str(folder),
           "--n-images", str(n), "--method", "gradcam", "--batch-size", str(args.batch_size),
           "--chunk-images", str(args.chunk_images), "--device", args.device, "--out", str(out), "--quiet"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    meta = json.loads((out / "explain.json").read_text())
    assert len(meta["preds"]) == n
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, nargs=2, default=[8, 32], help="the small and the large count")
    ap.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--chunk-images", type=int, default=8)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0, help="torch threads per process (0: cores / processes)")
    args = ap.parse_args()
    small, large = sorted(args.images)
    best: dict[tuple[int, int], float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_photos(Path(tmp) / "photos", large)
        for _ in range(args.repeats):
            for procs in args.procs:  # alternated: fair under a shared machine
                for n in (small, large):
                    t = run_once(procs, n, folder, Path(tmp) / f"out-{procs}-{n}", args)
                    best[procs, n] = min(best.get((procs, n), t), t)
    cores = len(os.sched_getaffinity(0))
    rates = {}
    for procs in args.procs:
        t_small, t_large = best[procs, small], best[procs, large]
        rates[procs] = (large - small) / max(1e-9, t_large - t_small)
        threads = args.threads or max(1, cores // procs)
        print(f"procs {procs} x {threads} threads device {args.device} ({cores} cores) batch {args.batch_size}: "
              f"{large} images in "
              f"{t_large:.1f} s = {large / t_large:.2f} images/s end to end; {small} images in {t_small:.1f} s; "
              f"marginal {rates[procs]:.2f} images/s (best of {args.repeats})", flush=True)
    first = args.procs[0]
    for procs in args.procs[1:]:
        print(f"ratio procs {procs} : {first}: end to end {best[first, large] / best[procs, large]:.2f}, "
              f"marginal {rates[procs] / rates[first]:.2f}")


if __name__ == "__main__":
    main()
