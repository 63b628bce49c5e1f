"""``xgir explain`` end to end on a small LeNet checkpoint."""

import json

import numpy as np
import pytest
import torch

from xgir.cli import main
from xgir.explain.clusters import ConfusionTree
from xgir.io import RUN_MARKER
from xgir.models import build_model, save_checkpoint

PARAMS = {"in_channels": 1, "num_classes": 10, "image_size": 28, "width": 4, "hidden": 16}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model("lenet", **PARAMS)
    return save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "lenet.pt", "lenet", PARAMS)


def run(args, capsys):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_gradcam_and_ig(checkpoint, tmp_path, capsys):
    out = tmp_path / "gc"
    code, stdout, _ = run(["explain", "--model", checkpoint, "--data", "decoy-digits", "--split",
                           "test", "--n", 4, "--method", "gradcam", "--layer", "conv2",
                           "--out", out], capsys)
    assert code == 0 and "wrote" in stdout
    maps = np.load(out / "maps.npy")
    assert maps.shape == (4, 1, 28, 28) and maps.dtype == np.float32 and (maps >= 0).all()
    meta = json.loads((out / "explain.json").read_text())
    assert meta["method"] == "gradcam" and len(meta["targets"]) == 4
    assert (out / "heatmaps.png").stat().st_size > 1000

    out2 = tmp_path / "ig"
    code, _, _ = run(["explain", "--model", checkpoint, "--data", "decoy-digits", "--split", "test",
                      "--n", 3, "--method", "ig", "--target", "top3", "--param", "n_steps=8",
                      "--param", "baseline=blur", "--out", out2], capsys)
    assert code == 0
    assert np.load(out2 / "maps.npy").shape == (3, 3, 28, 28)
    assert json.loads((out2 / "explain.json").read_text())["params"] == {"n_steps": 8,
                                                                         "baseline": "blur"}
    assert not [p for p in out2.iterdir() if p.name.startswith(".") and p.name != RUN_MARKER]  # no temporary files


def test_cwox(checkpoint, tmp_path, capsys):
    out = tmp_path / "cwox"
    code, _, err = run(["explain", "--model", checkpoint, "--data", "decoy-digits", "--split",
                        "test", "--n", 2, "--method", "cwox", "--tree-images", 64, "--level",
                        0.6, "--param", "k=3", "--param", "mass=null", "--out", out], capsys)
    assert code == 0, err
    summary = json.loads((out / "cwox.json").read_text())
    assert len(summary["images"]) == 2 and summary["deep_layer"] == "pool2"
    assert sum(len(c) for c in summary["images"][0]["clusters"]) == 3
    assert ConfusionTree.load(out / "tree.json").num_classes == 10
    assert np.load(out / "cluster_maps.npy").shape[:1] == (2,)
    assert (out / "cwox-000.png").is_file() and (out / "cwox-001.png").is_file()


@pytest.mark.parametrize("args,message", [
    (["--model", "missing.pt", "--method", "gradcam"], "checkpoint not found"),
    (["--method", "nope"], "unknown method 'nope'"),
    (["--method", "gradcam", "--layer", "conv9"], "no layer named 'conv9'"),
    (["--method", "saliency", "--target", "best"], "unknown --target"),
    (["--method", "ig", "--param", "steps"], "KEY=VALUE"),
    (["--method", "ig", "--param", "steps=3"], "bad parameters for explainer 'ig'"),
])
def test_errors_are_one_line(checkpoint, tmp_path, capsys, args, message):
    base = {"--model": checkpoint, "--data": "decoy-digits", "--split": "test", "--n": 2,
            "--out": tmp_path / "o"}
    for i in range(0, len(args), 2):
        base[args[i]] = args[i + 1]
    code, _, err = run(["explain"] + [v for kv in base.items() for v in kv], capsys)
    assert code == 2
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
