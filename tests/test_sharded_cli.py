"""``xgir explain``, ``xgir features`` and ``xgir train`` mode head (and ``cached_features`` in a
process group) under torchrun with 2 CPU processes (gloo) give the results of 1 process; a killed ``xgir features``
run resumes from its chunks; cwox under torchrun is a one-line error."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from _pipeline_models import write_folder
from xgir.cli import main as xgir_main
from xgir.cli.explain import run_explain
from xgir.cli.features import run_features
from xgir.sharded import STOP_ENV

ROOT = Path(__file__).resolve().parents[1]
MODEL = "_pipeline_models:tiny_resnet"  # seeded: the same weights in every process
EXPLAIN = ["--model", MODEL, "--method", "gradcam", "--layer", "layer3", "--target", "top2", "--batch-size", "2",
           "--n-images", "10", "--quiet"]
FEATURES = ["--model", MODEL, "--store", "float32", "--batch-size", "2", "--chunk-images", "3", "--quiet"]


def _env(extra=None):
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT / 'tests'}", "OMP_NUM_THREADS": "1",
           **(extra or {})}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return env


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_folder(tmp_path_factory.mktemp("sharded_cli") / "imgs", 4, 0)  # 12 images, 3 classes


@pytest.fixture(scope="module")
def two_processes(folder):
    """One torchrun launch (2 processes): explain, features, cached_features, train mode head."""
    base = folder.parent
    (base / "head.yaml").write_text(yaml.safe_dump(_head_config(folder, base / "head2")))
    jobs = [{"cli": ["explain", "--images", str(folder), "--out", str(base / "explain2"), "--chunk-images", "3",
                     *EXPLAIN]},
            {"cli": ["features", "--images", str(folder), "--out", str(base / "f2.pt"), *FEATURES]},
            {"cached": {"folder": str(folder), "out": str(base / "cached"), "cache": str(base / "cache")}},
            {"cli": ["train", "--config", str(base / "head.yaml"), "--quiet"],
             "env": {"XGIR_CACHE": str(base / "head-cache")}}]
    (base / "jobs.json").write_text(json.dumps(jobs))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(ROOT / "tests" / "_torchrun_jobs.py"), str(base / "jobs.json")]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return base, proc


def test_torchrun_explain_matches_one_process(folder, two_processes, tmp_path):
    base, proc = two_processes
    assert proc.stdout.count("wrote 3 files") == 1  # rank 0 alone writes and reports
    one = tmp_path / "one"
    run_explain(MODEL, None, "gradcam", one, images=[str(folder)], n=10, layer="layer3", target="top2",
                batch_size=2, progress=False)
    two = base / "explain2"
    maps1, maps2 = np.load(one / "maps.npy"), np.load(two / "maps.npy")
    assert maps1.shape == maps2.shape == (10, 2, 224, 224)
    assert np.abs(maps1).max() > 0
    np.testing.assert_allclose(maps2, maps1, atol=1e-5, rtol=0)
    meta1, meta2 = (json.loads((d / "explain.json").read_text()) for d in (one, two))
    assert meta1 == meta2  # targets, predictions, files in dataset order
    assert not (two / "passes").exists()  # chunks removed once the outputs are written


def test_torchrun_features_match_one_process(folder, two_processes, tmp_path):
    base, proc = two_processes
    one = run_features(MODEL, str(folder), tmp_path / "f1.pt", store="float32", batch_size=2, chunk_images=3,
                       progress=False)
    a, b = torch.load(one, weights_only=True), torch.load(base / "f2.pt", weights_only=True)
    assert a["h"].dtype == b["h"].dtype == torch.float32 and a["h"].shape == (12, 16)
    assert torch.allclose(a["h"], b["h"], atol=1e-5, rtol=0)
    assert a["files"] == b["files"] and a["files"][0].endswith("cat/0.png")
    assert torch.equal(a["labels"], b["labels"]) and a["labels"].tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert not (base / "f2.passes").exists() and not (tmp_path / "f1.passes").exists()


def _head_config(folder, out):
    return {"mode": "head", "out": str(out), "model": {"spec": MODEL},
            "data": {"train": str(folder), "eval": {"again": str(folder)}, "batch_size": 2, "chunk_images": 3},
            "head": {"epochs": 5, "lr": 0.05}}


def test_torchrun_train_head_matches_one_process(folder, two_processes, tmp_path):
    from xgir.train.config import HeadTrainConfig
    from xgir.train.runner import run_training

    base, proc = two_processes
    assert proc.stdout.count("# Training results (head)") == 1  # rank 0 alone writes and reports
    one = run_training(HeadTrainConfig.model_validate(_head_config(folder, tmp_path / "head1")), progress=False)
    two = json.loads((base / "head2" / "results.json").read_text())
    assert two["processes"] == 2 and one["processes"] == 1
    assert two["splits"] == one["splits"] and two["images"] == {"train": 12, "again": 12}
    a, b = (torch.load(d / "model.pt", weights_only=True)["state_dict"] for d in (tmp_path / "head1", base / "head2"))
    assert torch.allclose(a["fc.weight"], b["fc.weight"], atol=1e-4, rtol=0)
    assert not list((base / "head-cache" / "features").glob("*.passes"))  # the chunks removed
    # one entry: the split "again" is the same images through the same network (the same key)
    assert len(list((base / "head-cache" / "features").glob("*.pt"))) == 1


def test_cached_features_in_a_process_group_match_one_process(folder, two_processes):
    from _pipeline_models import tiny_resnet
    from xgir.data.images import load_images
    from xgir.data.transforms import Preprocess
    from xgir.models import split
    from xgir.train.features import extract_features

    base, _ = two_processes
    ds = load_images(str(folder), Preprocess(32))
    expected = extract_features(split(tiny_resnet(seed=1).eval(), "fc")[0], ds.images, batch_size=4)
    for rank in (0, 1):  # every rank gets every image's features
        got = torch.load(base / f"cached-{rank}.pt", weights_only=True)
        assert got.dtype == torch.float32 and torch.allclose(got, expected, atol=1e-5, rtol=0)
    assert len(list((base / "cache" / "features").glob("*.pt"))) == 1  # written once, the chunks removed
    assert not list((base / "cache" / "features").glob("*.passes"))


def test_killed_features_run_resumes_from_its_chunks(folder, tmp_path):
    out = tmp_path / "f.pt"
    cmd = [sys.executable, "-m", "xgir", "features", "--images", str(folder), "--out", str(out), *FEATURES]
    proc = subprocess.run(cmd, env=_env({STOP_ENV: "2:exit"}), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 9, proc.stderr[-2000:]  # os._exit after 2 of 4 chunks
    done = sorted(out.with_suffix(".passes").glob("*/chunk-*.pt"))
    assert len(done) == 2 and not out.exists()
    seen = []
    import xgir.sharded as sharded

    real = sharded.torch_save
    sharded.torch_save = lambda obj, path: seen.append(Path(path).name) or real(obj, path)
    try:
        run_features(MODEL, str(folder), out, store="float32", batch_size=2, chunk_images=3, progress=False)
    finally:
        sharded.torch_save = real
    assert sorted(seen) == ["chunk-00002.pt", "chunk-00003.pt"]  # the two missing chunks, no more
    assert not out.with_suffix(".passes").exists()  # removed once f.pt is written
    fresh = run_features(MODEL, str(folder), tmp_path / "g.pt", store="float32", batch_size=2, chunk_images=3,
                         progress=False)
    assert torch.equal(torch.load(out, weights_only=True)["h"], torch.load(fresh, weights_only=True)["h"])


def test_cwox_under_torchrun_is_one_line(folder, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")  # as torchrun sets it; the check comes before joining a group
    rc = xgir_main(["explain", "--model", MODEL, "--images", str(folder), "--method", "cwox",
                    "--out", str(tmp_path / "c")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err == ["error: --method cwox runs on one process (its confusion tree needs every image "
                               "first); run it without torchrun"]
