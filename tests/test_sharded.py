"""Sharded, fused, resumable passes of ``xgir correct``: torchrun with 2 CPU processes gives
the run of 1 process; a killed run resumes; a failed rank is named in one line."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import _sharded_models
from _pipeline_models import tiny_resnet, write_folder
from xgir.correct.pipeline import XGIRRunConfig, run_xgir_pipeline
from xgir.sharded import STOP_ENV

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    base = tmp_path_factory.mktemp("sharded")
    write_folder(base / "train", 6, 0)  # 18 images: chunks of 4 -> 5 chunks, the last one short
    write_folder(base / "test", 3, 1)
    write_folder(base / "target", 3, 2, target=True)
    torch.save(tiny_resnet(seed=1).state_dict(), base / "w.pt")
    return base


def _config(base, out, **xgir):
    return {
        "model": {"factory": "_pipeline_models:tiny_resnet", "kwargs": {"num_classes": 3, "width": 4},
                  "weights": str(base / "w.pt"), "head": "fc", "deep_layer": "layer3"},
        "data": {"source_train": str(base / "train"), "source_test": str(base / "test"),
                 "target_test": str(base / "target"), "image_size": 32, "batch_size": 3,
                 "fit": "squash"},  # the resize these float16 figures were measured with
        "xgir": {"draws": 2, "head_epochs": 3, "empty": "mean", **xgir},
        "passes": {"chunk_images": 4},
        "out": str(out),
        "device": "cpu",
    }


def _run(cfg):
    return run_xgir_pipeline(XGIRRunConfig.model_validate(cfg), progress=False)


def _cli(base, cfg, nproc, env_extra=None):
    """``xgir correct`` in a subprocess: under torchrun with ``nproc`` processes, or plain."""
    path = Path(cfg["out"]).parent / f"{Path(cfg['out']).name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT / 'tests'}", "OMP_NUM_THREADS": "1",
           **(env_extra or {})}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    launch = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
              if nproc else [sys.executable])
    cmd = [*launch, "-m", "xgir", "correct", "--config", str(path), "--quiet"]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)


def _outputs(out):
    res = json.loads((Path(out) / "results.json").read_text())
    return res, torch.load(Path(out) / "xgir_model.pt", weights_only=True)


def _assert_same(a, b, atol=1e-5):
    (res_a, model_a), (res_b, model_b) = a, b
    for k in ("fc.weight", "fc.bias"):
        assert torch.allclose(model_a[k], model_b[k], atol=atol, rtol=0), k
    assert res_a["images"] == res_b["images"] and res_a["accuracy"] == res_b["accuracy"]
    rec_a, rec_b = res_a["record"], res_b["record"]
    assert rec_a.keys() == rec_b.keys()
    for k in rec_a:
        if isinstance(rec_a[k], (float, list)):
            assert np.allclose(np.asarray(rec_a[k], dtype=float), np.asarray(rec_b[k], dtype=float),
                               atol=atol, rtol=0), k
        elif isinstance(rec_a[k], dict) and k != "config":
            for q in rec_a[k]:
                assert np.allclose(np.asarray(rec_a[k][q], dtype=float), np.asarray(rec_b[k][q], dtype=float),
                                   atol=atol, rtol=0), (k, q)
        else:
            assert rec_a[k] == rec_b[k], k


@pytest.fixture(scope="module")
def one_process(base):
    out = base / "one"
    _run(_config(base, out))
    return _outputs(out)


def test_torchrun_two_processes_match_one(base, one_process):
    out = base / "two"
    proc = _cli(base, _config(base, out), nproc=2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("results in") == 1  # rank 0 alone prints the report
    _assert_same(_outputs(out), one_process)
    chunks = sorted(p.name for p in (out / "passes").glob("source_train-xgir-*/chunk-*.pt"))
    assert chunks == [f"chunk-{c:05d}.pt" for c in range(5)]  # 18 images, no padded duplicates


def test_error_on_one_rank_is_one_line_naming_it_then_resume_with_one_process(base, one_process, tmp_path):
    # a corrupt image in rank 1's share (chunk 1 = positions 4..7 = cat/4.png .. dog/1.png)
    bad = base / "train" / "cat" / "5.png"
    good = bad.read_bytes()
    bad.write_bytes(b"not an image")
    out = tmp_path / "run"
    cfg = _config(base, out)
    try:
        proc = _cli(base, cfg, nproc=2)
    finally:
        bad.write_bytes(good)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode != 0
    assert errors == [f"error: rank 1: data.source_train: cannot read image {bad}: cannot identify image file "
                      f"'{bad}' (fix or remove the file, or set data.on_bad_image: skip to leave unreadable "
                      "images out)"], proc.stderr
    done = sorted((out / "passes").glob("*/chunk-*.pt"))
    assert done and not (out / "results.json").exists()
    stamps = {p: p.stat().st_mtime_ns for p in done}
    _run(cfg)  # one process finishes the run of two: chunks are not tied to a world size
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())  # reused, not recomputed
    _assert_same(_outputs(out), one_process)


def test_killed_run_resumes_from_its_chunks(base, one_process, tmp_path):
    out = tmp_path / "run"
    cfg = _config(base, out)
    proc = _cli(base, cfg, nproc=0, env_extra={STOP_ENV: "7:exit"})  # os._exit after 7 chunks written
    assert proc.returncode == 9, proc.stderr[-2000:]
    done = sorted((out / "passes").glob("*/chunk-*.pt"))
    assert len(done) == 7 and not (out / "results.json").exists()
    assert not list((out / "passes").glob("*/.*.tmp"))  # atomic writes: no partial chunk left
    stamps = {p: p.stat().st_mtime_ns for p in done}
    _run(cfg)
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())
    _assert_same(_outputs(out), one_process, atol=0)  # the same chunks: the same head, exactly


def test_fused_passes_and_which_settings_reuse_chunks(base, one_process, tmp_path):
    """IOX: 2 network passes per training image (Grad-CAM forward gives h; responses), plus
    the empty image x0 once per batch and one forward per test image; a change of a
    head-only setting reuses every chunk, a change of a pass setting recomputes."""
    out = tmp_path / "run"
    cfg = _config(base, out, empty="zeros")
    cfg["model"]["factory"] = "_sharded_models:counting_resnet"
    _sharded_models.SEEN.update(images=0, calls=0)
    _run(cfg)
    n_train, n_test = 18, 9 + 9
    batches = 2 + 2 + 2 + 2 + 1  # batches of 3 never span chunks of 4: 3 + 1 per chunk, the last (2 images) 1
    assert _sharded_models.SEEN["images"] == 2 * n_train + batches + n_test
    folders = sorted(p.name for p in (out / "passes").iterdir())
    _sharded_models.SEEN.update(images=0, calls=0)
    cfg["xgir"]["head_epochs"] = 4
    cfg["xgir"]["delta2"] = 0.4
    _run(cfg)
    assert _sharded_models.SEEN["images"] == 0  # passes reused
    assert sorted(p.name for p in (out / "passes").iterdir()) == folders
    cfg["xgir"]["delta1"] = 0.2
    _run(cfg)
    assert _sharded_models.SEEN["images"] == 2 * n_train + batches  # the source-train pass again
    assert len(list((out / "passes").iterdir())) == len(folders) + 1


def test_grad_cam_forward_yields_the_features():
    from xgir.correct.passes import head_input
    from xgir.correct.xgir import true_class_heatmaps
    from xgir.models import split

    model = tiny_resnet(seed=2).eval()
    x = torch.rand(5, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    features, head = split(model, "fc")
    with head_input(head) as got:
        true_class_heatmaps(model, x, torch.tensor([0, 1, 2, 0, 1]), "layer3")
    assert len(got) == 1 and not got[0].requires_grad
    assert torch.allclose(got[0], features(x), atol=1e-6, rtol=0)


def test_float16_storage_moves_the_head_little(base, one_process, tmp_path):
    cfg = _config(base, tmp_path / "run")
    cfg["passes"]["store"] = "float32"
    _run(cfg)
    res32, model32 = _outputs(tmp_path / "run")
    res16, model16 = one_process
    diff = (model32["fc.weight"] - model16["fc.weight"]).abs().max()
    print(f"float16 vs float32 storage: max |head weight difference| {float(diff):.2e}")
    assert 0 < diff < 1e-3
    assert res32["accuracy"] == res16["accuracy"]


def test_torchrun_example_config_is_valid():
    from xgir.config import load_config

    cfg = load_config(ROOT / "configs" / "xgir-imagenet-torchrun.yaml", XGIRRunConfig)
    assert cfg.passes.store == "float16" and cfg.passes.chunk_images == 4096
    assert cfg.data.target_classes == "index"
