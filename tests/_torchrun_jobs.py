"""Run several jobs in ONE torchrun launch (a launch costs ~15 s here), for
tests/test_sharded_cli.py: ``python -m torch.distributed.run ... tests/_torchrun_jobs.py JOBS.json``.

JOBS.json: a list of jobs, each ``{"cli": [argv of xgir]}`` (run as ``python -m xgir ...``
runs it: :func:`xgir.cli.main`; an optional ``"env": {NAME: VALUE}`` is set first) or
``{"cached": {"folder", "out", "cache"}}`` (the features of a small folder through
:func:`xgir.train.features.cached_features` in a process group; every rank saves what it got
to ``out``-RANK.pt). Exit status: the first non-zero status of a job.

The script joins the process group once (:func:`xgir.sharded.init_dist`) and the commands
run in it (they join only when no group is active), with a barrier after each job: a
process that destroys its group and joins a new one while another still holds the old one
would meet the old group's keys in torchrun's store.)"""

import json
import os
import sys
from pathlib import Path

import torch


def cached(folder: str, out: str, cache: str) -> int:
    from _pipeline_models import tiny_resnet
    from xgir.data.images import load_images
    from xgir.data.transforms import Preprocess
    from xgir.models import split
    from xgir.train.features import cached_features

    os.environ["XGIR_CACHE"] = cache
    ds = load_images(folder, Preprocess(32))
    features = split(tiny_resnet(seed=1).eval(), "fc")[0]
    h = cached_features(features, ds, "test-folder", batch_size=4, chunk_images=4)
    torch.save(h, f"{out}-{torch.distributed.get_rank()}.pt")
    return 0


def main() -> int:
    from xgir.cli import main as xgir_main
    from xgir.sharded import init_dist

    dist = init_dist(torch.device("cpu"))
    try:
        for job in json.loads(Path(sys.argv[1]).read_text()):
            os.environ.update(job.get("env", {}))
            rc = xgir_main(job["cli"]) if "cli" in job else cached(**job["cached"])
            if rc:
                return rc
            torch.distributed.barrier()
    finally:
        dist.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
