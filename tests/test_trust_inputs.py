"""Issue 20, items 5 and 7-10: no silent wrong result, no traceback, no exhaustion without a
message. Each test asserts what failed before the fix (a NaN map, a dropped class, labels by
folder order, a traceback, a fork bomb...)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from xgir.cli import main
from xgir.errors import XgirError
from xgir.models import LeNet, save_checkpoint


def _one_line(capsys, message: str = "") -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and err.count("\n") == 0, err
    assert message in err, err
    return err


def _noise_folder(root, classes, per_class=2, size=32):
    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(root / c / f"{c}{i}.png")
    return root


NAMED = ["tench", "goldfish", "tabby", "espresso"]


@pytest.fixture(scope="module")
def named_rgb(tmp_path_factory):
    """A LeNet for 32 px RGB images whose classes are named (as a pretrained model's are)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("named") / "named.pt"
    params = {"in_channels": 3, "num_classes": 4, "image_size": 32, "width": 2, "hidden": 8}
    save_checkpoint(LeNet(**params), path, "lenet", params, meta={"classes": NAMED})
    return path


# ---- item 5: silent wrong results -----------------------------------------------------------
def test_occlusion_window_and_stride_are_checked_by_the_api_and_the_cli(tmp_path, capsys, named_rgb):
    from xgir.explain import get_explainer
    from xgir.explain.gradient import Occlusion

    for params in ({"stride": -1}, {"window": 0}, {"stride": 0}, {"window": 2.5}):
        with pytest.raises(XgirError, match="must be at least 1|whole number"):
            get_explainer("occlusion", **params)
        with pytest.raises(XgirError, match="occlusion"):
            Occlusion(**params)
    for bad, message in (("stride=-1", "stride=-1: occlusion must be at least 1"),
                         ("window=0", "window=0: occlusion must be at least 1")):
        assert main(["explain", "--model", str(named_rgb), "--images", "photos:chelsea", "--method", "occlusion",
                     "--param", bad, "--out", str(tmp_path / "o"), "--quiet"]) == 2
        _one_line(capsys, message)
    assert not (tmp_path / "o").exists()
    # a good stride gives finite maps
    maps = get_explainer("occlusion", window=8, stride=4)(LeNet(3, 4, 32, 2, 8), torch.rand(1, 3, 32, 32), [0])
    assert torch.isfinite(maps).all()


def test_load_images_refuses_a_bad_limit_and_a_class_without_a_folder(tmp_path):
    from xgir.data.images import load_images

    assert len(load_images("decoy-digits:test", limit=3)) == 3
    for limit in (0, -1, 2.5):
        with pytest.raises(XgirError, match="limit must be a whole number >= 1"):
            load_images("decoy-digits:test", limit=limit)
    root = _noise_folder(tmp_path / "cls", ["cat", "dog"])
    ds = load_images(str(root), classes=["dog", "cat"])
    assert ds.labels.tolist() == [0, 0, 1, 1] and "dog" in ds.files[0]
    with pytest.raises(XgirError, match="no folder for class zebra"):
        load_images(str(root), classes=["cat", "zebra"])


def test_support_delta1_and_the_device_are_checked():
    from xgir.correct.xgir import support_from_heatmaps
    from xgir.models import load_model

    maps = torch.rand(2, 4, 4)
    assert support_from_heatmaps(maps, (8, 8), np.float32(0.5)).shape == (2, 8, 8)
    for delta1 in (-1, math.nan, 5, 1.0, "0.1"):
        with pytest.raises(XgirError, match=r"delta1 is a share of the map's peak in \[0, 1\)"):
            support_from_heatmaps(maps, (8, 8), delta1)
    with pytest.raises(XgirError, match="unknown device 'meta'"):
        load_model("xgir.models:LeNet", device="meta")


def test_class_folders_are_labelled_by_the_models_class_names(tmp_path, capsys, named_rgb):
    from xgir.data.images import folder_labels, load_images
    from xgir.models.load import imagenet_class_names

    # the case: tabby and espresso are ImageNet classes 281 and 967, not 0 and 1 (tench, goldfish)
    imagenet = imagenet_class_names()
    assert folder_labels(["espresso", "tabby"], imagenet) == [967, 281]
    assert folder_labels(["n01440764", "n02123045"], imagenet) == [0, 281]  # ImageNet's own synset folders
    assert folder_labels(["281", "967"], imagenet, "index") == [281, 967]  # ImageNet-V2's layout
    with pytest.raises(XgirError, match="class folders 281 do not name one of the model's classes"):
        folder_labels(["281"], imagenet)

    root = _noise_folder(tmp_path / "cls", ["espresso", "tabby"])
    ds = load_images(str(root), model_classes=NAMED)
    assert ds.labels.tolist() == [3, 3, 2, 2] and ds.classes[2] == "tabby"
    out = tmp_path / "e"
    assert main(["explain", "--model", str(named_rgb), "--images", str(root), "--target", "label",
                 "--method", "saliency", "--out", str(out), "--quiet"]) == 0
    meta = json.loads((out / "explain.json").read_text())
    assert meta["labels"] == [3, 3, 2, 2]
    assert meta["target_names"] == [["espresso"], ["espresso"], ["tabby"], ["tabby"]]

    # folders that name none of the model's classes: no labels, and label targets are refused
    other = _noise_folder(tmp_path / "other", ["cat", "dog"])
    assert (load_images(str(other), model_classes=NAMED).labels == -1).all()
    assert main(["explain", "--model", str(named_rgb), "--images", str(other), "--target", "label",
                 "--method", "saliency", "--out", str(tmp_path / "x"), "--quiet"]) == 2
    _one_line(capsys, "class folders cat, dog do not name one of the model's classes")
    assert main(["explain", "--model", str(named_rgb), "--images", str(other), "--target", "pred",
                 "--method", "saliency", "--out", str(tmp_path / "p"), "--quiet"]) == 0


def test_the_app_labels_class_folders_by_the_models_classes(tmp_path, capsys, named_rgb):
    import warnings

    from xgir.app import build_state
    from xgir.app.server import create_app

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient

    named = _noise_folder(tmp_path / "named", ["espresso", "tabby"])
    state = build_state(str(named_rgb), str(named), tmp_path / "a.db", tmp_path / "a", eval_images=None)
    assert state.images.labels.tolist() == [3, 3, 2, 2]
    other = _noise_folder(tmp_path / "other", ["cat", "dog"])
    capsys.readouterr()
    state = build_state(str(named_rgb), str(other), tmp_path / "b.db", tmp_path / "b", eval_images=None)
    assert "warning: --images: no true labels shown (class folders cat, dog do not name" in capsys.readouterr().err
    with TestClient(create_app(state), base_url="http://127.0.0.1:8000") as client:
        assert client.get("/api/images", params={"mis": "1"}).json()["count"] == 0  # nothing marked misclassified
        r = client.get("/api/images/0/explain.png", params={"target": "label"})
        assert r.status_code == 400 and "class folders cat, dog do not name" in r.json()["error"]


def test_correct_orders_source_folders_by_the_models_classes(tmp_path):
    """xgir correct shares folder_labels: its label order follows the model's class names (not the
    alphabet), and folders named 0..K-1 are taken in numeric order (not 0, 1, 10, 11, 2...)."""
    from xgir.correct.pipeline import DataSection, _datasets

    named = _noise_folder(tmp_path / "named", ["cat", "dog", "owl"], per_class=1)
    data = DataSection(source_train=str(named), source_test=str(named), target_test=str(named), image_size=32)
    src = _datasets(data, 3, "fc", ["owl", "cat", "dog"])["source_train"]
    assert src.classes == ["owl", "cat", "dog"] and src.labels.tolist() == [0, 1, 2]
    assert "owl" in str(src.files[0])
    index = _noise_folder(tmp_path / "index", [str(i) for i in range(12)], per_class=1)
    data = DataSection(source_train=str(index), source_test=str(index), target_test=str(index), image_size=32)
    src = _datasets(data, 12, "fc", [str(i) for i in range(12)])["source_train"]
    assert src.classes == [str(i) for i in range(12)]


# ---- item 7: a damaged chunk is recomputed ---------------------------------------------------
def _damage(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # truncated, as by a full disk or a copy cut short


def test_a_damaged_chunk_is_recomputed_with_a_warning(tmp_path, capsys, monkeypatch):
    from _pipeline_models import tiny_resnet, write_folder
    from test_trust import _correct_config
    from xgir.cli.features import run_features
    from xgir.correct.pipeline import XGIRRunConfig, run_xgir_pipeline
    from xgir.sharded import STOP_ENV

    root = write_folder(tmp_path / "imgs", 2, 0)
    spec = "_pipeline_models:tiny_resnet"
    fresh = run_features(spec, str(root), tmp_path / "fresh.pt", chunk_images=2, batch_size=2, progress=False)
    monkeypatch.setenv(STOP_ENV, "2")  # killed after two of three chunks: F.passes stays
    with pytest.raises(RuntimeError, match="stopped after"):
        run_features(spec, str(root), tmp_path / "F.pt", chunk_images=2, batch_size=2, progress=False)
    monkeypatch.delenv(STOP_ENV)
    chunks = sorted((tmp_path / "F.passes").glob("*/chunk-*.pt"))
    assert len(chunks) == 2
    _damage(chunks[0])
    capsys.readouterr()
    run_features(spec, str(root), tmp_path / "F.pt", chunk_images=2, batch_size=2, progress=False)
    err = capsys.readouterr().err
    assert err.count("warning: damaged chunk") == 1 and "chunk-00000.pt removed; recomputing it" in err, err
    assert torch.equal(torch.load(tmp_path / "F.pt", weights_only=True)["h"],
                       torch.load(fresh, weights_only=True)["h"])

    # xgir correct: a damaged chunk under out/passes
    folders = {"source_train": root, "source_test": write_folder(tmp_path / "test", 2, 1),
               "target_test": write_folder(tmp_path / "target", 2, 2, target=True)}
    weights = tmp_path / "tiny.pt"
    torch.save(tiny_resnet(seed=1).state_dict(), weights)
    cfg = _correct_config(folders, weights, tmp_path / "run")
    first = run_xgir_pipeline(XGIRRunConfig.model_validate(cfg), progress=False)
    damaged = sorted((tmp_path / "run" / "passes").glob("*/chunk-*.pt"))[0]
    _damage(damaged)
    capsys.readouterr()
    again = run_xgir_pipeline(XGIRRunConfig.model_validate(cfg), progress=False)
    assert f"warning: damaged chunk {damaged} removed; recomputing it" in capsys.readouterr().err
    assert again["summary"] == first["summary"]


# ---- item 8: the tracebacks that remained are one line, exit 2 --------------------------------
def _train_yaml(tmp_path, **over):
    import yaml

    from test_cli_errors import _train_cfg

    nested = {k: v for k, v in over.items() if "." in k}
    cfg = _train_cfg(tmp_path / "run", **nested) | {k: v for k, v in over.items() if k not in nested}
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def _correct_yaml(tmp_path, **over):
    import yaml

    from _pipeline_models import write_folder

    root = tmp_path / "imgs"
    if not root.exists():
        write_folder(root, 2, 0)
    cfg = {"model": {"factory": "_pipeline_models:tiny_resnet", "kwargs": {"num_classes": 3, "width": 4},
                     "deep_layer": "layer3"},
           "data": {"source_train": str(root), "source_test": str(root), "target_test": str(root),
                    "image_size": 32, "batch_size": 6},
           "xgir": {"draws": 2, "head_epochs": 1, "delta2": 0.5}, "out": str(tmp_path / "c"), "device": "cpu"}
    for key, value in over.items():
        section, name = key.split(".")
        cfg[section][name] = value
    path = tmp_path / "correct.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


HUGE = "99999999999999999999"
EXPLAIN = ["explain", "--model", "{ckpt}", "--images", "decoy-digits:test", "--n", "2", "--out", "{tmp}/o", "--quiet"]
TRACEBACKS = [
    (EXPLAIN + ["--seed", HUGE], "--seed must be a whole number in 0..2**63-1"),
    (["evaluate", "--model", "{ckpt}", "--images", "decoy-digits:test", "--explainer", "saliency", "--seed", HUGE,
      "--out", "{tmp}/o"], "--seed must be a whole number in 0..2**63-1"),
    (["bench", "decoy", "--seeds", HUGE, "--out", "{tmp}/o"], "each of --seeds must be a whole number"),
    (EXPLAIN + ["--method", "ig", "--param", "n_steps=[1,"], "--param n_steps=[1,: cannot read the value"),
    (EXPLAIN + ["--method", "ig", "--param", "n_steps=100000000000"], "ig takes at most 10000"),
    (EXPLAIN + ["--method", "rise", "--param", f"seed={HUGE}"], "rise takes a seed in 0..2**63-1"),
    (["explain", "--model", "{tmp}/params-str.pt", "--images", "photos:chelsea", "--out", "{tmp}/o"],
     "its 'params' are a str"),
    (["explain", "--model", "{ckpt}", "--images", "{tmp}/loop", "--out", "{tmp}/o"], "Too many levels of symbolic"),
    (["train", "--config", "train:model.params.width=0"], "width must be a whole number >= 1, got 0"),
    (["train", "--config", "train:model.params.width=-1"], "width must be a whole number >= 1, got -1"),
    (["train", "--config", "train:model.params.width=1.5"], "width must be a whole number >= 1, got 1.5"),
    (["train", "--config", "train:model.params.width=abc"], "width must be a whole number >= 1, got 'abc'"),
    (["train", "--config", "train:model.params.image_size=0"], "image_size is 0 but decoy-digits images have 28"),
    (["train", "--config", "train:model.params.image_size=7"], "image_size is 7 but decoy-digits images have 28"),
    (["train", "--config", "train:out=."], "is the current folder (or one above it)"),
    (["correct", "--config", "correct:data.image_size=100000"], "a batch of 6 images at data.image_size 100000"),
    (["correct", "--config", "correct:xgir.draws=1000000000"], "1000000000 draws of 6 images' features"),
]


@pytest.mark.parametrize("args,message", TRACEBACKS, ids=[" ".join(a)[:60] for a, _ in TRACEBACKS])
def test_former_tracebacks_are_one_line(tmp_path, capsys, monkeypatch, args, message):
    torch.manual_seed(0)
    ckpt = save_checkpoint(LeNet(width=2, hidden=8), tmp_path / "lenet.pt", "lenet", {"width": 2, "hidden": 8})
    torch.save({"arch": "lenet", "params": "width=3", "state_dict": {}}, tmp_path / "params-str.pt")
    _noise_folder(tmp_path / "loop", ["a", "b"])
    (tmp_path / "loop" / "a" / "loop.png").symlink_to("loop.png")
    monkeypatch.chdir(tmp_path)  # train --out . names this folder
    argv = []
    for a in args:
        kind, _, over = a.partition(":")
        if kind in ("train", "correct") and "=" in over:
            key, value = over.split("=")
            value = yaml_value(value)
            a = (_train_yaml if kind == "train" else _correct_yaml)(tmp_path, **{key: value})
        argv.append(a.format(ckpt=ckpt, tmp=tmp_path))
    if argv[0] in ("train", "correct"):
        argv.append("--quiet")
    assert main(argv) == 2
    _one_line(capsys, message)


def yaml_value(text):
    import yaml

    return yaml.safe_load(text)


def test_an_oversized_image_unreadable_and_read_only_folders_are_one_line(tmp_path, capsys, monkeypatch):
    import os
    from pathlib import Path

    from PIL import Image as PILImage

    ckpt = save_checkpoint(LeNet(width=2, hidden=8), tmp_path / "lenet.pt", "lenet", {"width": 2, "hidden": 8})
    big = tmp_path / "big.png"
    PILImage.new("L", (100, 100)).save(big)
    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 1000)  # 10000 pixels stand for 20000 x 20000
    assert main(["explain", "--model", str(ckpt), "--images", str(big), "--out", str(tmp_path / "o")]) == 2
    _one_line(capsys, "has more than 0 million pixels, the most xgir reads")
    monkeypatch.undo()

    # a class folder this user may not read (as a user without root would see it)
    root = _noise_folder(tmp_path / "cls", ["a", "b"])
    listdir = Path.iterdir

    def iterdir(self):
        if self == root / "b":
            raise PermissionError(13, "Permission denied", str(self))
        return listdir(self)

    monkeypatch.setattr(Path, "iterdir", iterdir)
    assert main(["explain", "--model", str(ckpt), "--images", str(root), "--out", str(tmp_path / "o")]) == 2
    _one_line(capsys, f"no permission to use {root / 'b'} (Permission denied)")
    monkeypatch.undo()

    # a read-only --out (the folder exists and cannot be written)
    out = tmp_path / "ro"
    out.mkdir()
    access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: access(p, mode) and not (Path(p) == out and mode & os.W_OK))
    assert main(["explain", "--model", str(ckpt), "--images", "decoy-digits:test", "--n", "2",
                 "--out", str(out)]) == 2
    _one_line(capsys, f"--out {out}: no permission to write in it")


# ---- item 9: resources bounded with one line ----------------------------------------------------
def test_workers_are_capped_and_sizes_checked_against_memory(tmp_path, capsys, monkeypatch):
    import os

    from xgir.data import load_dataset
    from xgir.models import build_model
    from xgir.resources import cap_workers

    cpus = len(os.sched_getaffinity(0))
    assert cap_workers(cpus) == cpus and "warning" not in capsys.readouterr().err
    assert cap_workers(100_000) == cpus
    warning = f"warning: --workers 100000 is more than the {cpus} CPUs here; using {cpus}"
    assert capsys.readouterr().err.strip() == warning
    ckpt = save_checkpoint(LeNet(width=2, hidden=8), tmp_path / "lenet.pt", "lenet", {"width": 2, "hidden": 8})
    import xgir.sharded

    seen = []
    loader = xgir.sharded.DataLoader
    monkeypatch.setattr(xgir.sharded, "DataLoader", lambda *a, **kw: seen.append(kw["num_workers"]) or loader(*a, **kw))
    assert main(["features", "--model", str(ckpt), "--images", "decoy-digits:test", "--n", "2", "--workers", "100000",
                 "--out", str(tmp_path / "f.pt"), "--quiet"]) == 0
    assert seen == [cpus] and "using" in capsys.readouterr().err

    # sizes: refused before anything is allocated
    with pytest.raises(XgirError, match=r"dataset 'decoy-digits' with n=1000000000000 needs about .* GiB of memory, "
                                        r"more than half of this machine's .*; lower n"):
        load_dataset("decoy-digits", "train", n=10**12)
    with pytest.raises(XgirError, match="dataset 'object-shift' at size 100000 needs about"):
        load_dataset("object-shift", "source-train", size=100_000)
    with pytest.raises(XgirError, match="architecture 'lenet' with .* needs about .*; lower its width"):
        build_model("lenet", width=100_000, hidden=100_000)
    assert main(["train", "--config", _train_yaml(tmp_path, **{"data.params.n": 10**12}), "--quiet"]) == 2
    _one_line(capsys, "lower n")


# ---- item 10: smaller items ---------------------------------------------------------------------
def test_python_api_raises_one_line_xgir_errors():
    from xgir.correct.xgir import XGIRConfig, xgir_retrain
    from xgir.explain import get_explainer
    from xgir.explain.gradient import IntegratedGradients
    from xgir.train import fit_classifier
    from xgir.train.ganmex import train_ganmex

    model = LeNet(3, 3, 16, 2, 8)
    x, y = torch.rand(4, 3, 16, 16), torch.tensor([0, 1, 2, 0])
    support = torch.zeros(4, 16, 16, dtype=torch.bool)
    support[:, 4:8, 4:8] = True
    cfg = XGIRConfig(draws=1, head_epochs=1)
    xgir_retrain(model, x, y, support, cfg)
    bad = {"images are float64 but the model's weights are float32": (x.double(), y),
           "images are float16 but the model's weights are float32": (x.half(), y),
           "4 of the images hold NaN or infinite values": (x * math.nan, y),
           r"labels must lie in 0..2 \(the head's classes\), got 0..3": (x, torch.tensor([0, 1, 2, 3])),
           "labels must be whole class indices": (x, y.float()),
           r"labels must be a tensor \[N\] = \[4\] of class indices, got \(4, 1\)": (x, y[:, None])}
    for message, (images, labels) in bad.items():
        with pytest.raises(XgirError, match=message):
            xgir_retrain(model, images, labels, support, cfg)
    with pytest.raises(XgirError, match="ig n_steps must be a whole number >= 1, got 0"):
        IntegratedGradients(n_steps=0)
    with pytest.raises(XgirError, match="images are float64"):
        get_explainer("saliency")(model, x.double(), [0, 1, 2, 0])
    with pytest.raises(XgirError, match="unknown device 'meta'"):
        train_ganmex(model, x, device="meta")
    # NaN images are named as such, not taken for a diverged training
    from xgir.data.base import ImageDataset

    with pytest.raises(XgirError, match="1 of the training images hold NaN or infinite values.*image 2"):
        fit_classifier(model, ImageDataset(torch.where(torch.arange(4)[:, None, None, None] == 2, math.nan, x), y), 1,
                       progress=False)


def test_smaller_cli_items(tmp_path, capsys):
    from xgir.correct.feedback import FeedbackRecord, FeedbackStore

    ckpt = save_checkpoint(LeNet(width=2, hidden=8), tmp_path / "lenet.pt", "lenet", {"width": 2, "hidden": 8})
    app = ["app", "--model", str(ckpt), "--images", "decoy-digits:train", "--port", "0",
           "--feedback", str(tmp_path / "fb.db")]
    assert main(app + ["--eval-n", "0"]) == 2
    _one_line(capsys, "--eval-n must be at least 1, got 0")
    (tmp_path / "afile").write_text("x")
    assert main(app + ["--out", str(tmp_path / "afile")]) == 2  # at the start, not after a fine-tune
    _one_line(capsys, "is a file; give a folder")
    assert not (tmp_path / "fb.db").exists()  # refused before anything was opened

    config = tmp_path / "dup.yaml"
    config.write_text("out: a\nmodel: {arch: lenet}\nout: b\n")
    assert main(["train", "--config", str(config)]) == 2
    _one_line(capsys, "key 'out' is given twice (line 3); keep one")
    assert main(["train", "--config", _train_yaml(tmp_path, **{"data.eval_splits": []}), "--quiet"]) == 2
    _one_line(capsys, "data.eval_splits is empty; name at least one split")
    assert main(["evaluate", "--model", str(ckpt), "--images", "decoy-digits:test", "--explainer", "saliency",
                 "--n", "1000000", "--out", str(tmp_path / "ev")]) == 2
    _one_line(capsys, "decoy-digits:test has 2000 images, fewer than n=1000000")

    with FeedbackStore(tmp_path / "s.db", 2, 4, 4) as store:
        mask = np.ones((4, 4), bool)
        assert store.add([FeedbackRecord(0, 0, mask, True, "bob")]) == 1
        with pytest.raises(XgirError, match="holds a control character"):
            store.add([FeedbackRecord(0, 0, mask, True, "bob\n")])
        with pytest.raises(XgirError, match="holds a control character"):
            store.replace(0, "bob\n", [])
        assert len(store) == 1


# ---- the hostile round's rerun (benchmarks/hostile_round.py) -------------------------------------
def test_rerun_api_findings_raise_one_line_xgir_errors():
    """Found by the rerun: each raised a raw RuntimeError, ValueError or TypeError, or was taken
    silently (epochs -1 trained nothing, seed -1 drew the images of seed 2**32-1)."""
    from xgir.correct.xgir import XGIRConfig, support_from_heatmaps, xgir_retrain
    from xgir.data import load_dataset
    from xgir.data.base import ImageDataset
    from xgir.explain import get_explainer
    from xgir.train import fit_classifier

    for size in ((0, 0), (-1, 8), (8,), (8.0, 8)):
        with pytest.raises(XgirError, match=r"size must be \(H, W\), two whole numbers >= 1"):
            support_from_heatmaps(torch.rand(2, 4, 4), size, 0.5)
    model = LeNet(3, 3, 16, 2, 8)
    x = torch.rand(4, 3, 16, 16)
    with pytest.raises(XgirError, match="no images to retrain the head on"):
        xgir_retrain(model, x[:0], torch.zeros(0, dtype=torch.long), torch.zeros(0, 16, 16, dtype=torch.bool),
                     XGIRConfig(draws=1, head_epochs=1))
    with pytest.raises(XgirError, match=r"the model cannot run on images of shape \(1, 16, 16\)"):
        get_explainer("saliency")(model, torch.rand(2, 1, 16, 16), [0, 0])
    data = ImageDataset(x, torch.tensor([0, 1, 2, 0]))
    for epochs in (0, -1, 1.5, True):
        with pytest.raises(XgirError, match="epochs must be a whole number >= 1"):
            fit_classifier(model, data, epochs, progress=False)
    for seed in (-1, 2**63, 1.5):
        with pytest.raises(XgirError, match=r"seed must be a whole number in 0..2\*\*63-1"):
            load_dataset("decoy-digits", "test", seed=seed, n=2)


def test_rerun_cli_findings_are_one_line(tmp_path, capsys):
    """Found by the rerun: ``--target top99999`` explained the model's 10 classes without a word."""
    ckpt = save_checkpoint(LeNet(width=2, hidden=8), tmp_path / "lenet.pt", "lenet", {"width": 2, "hidden": 8})
    explain = ["explain", "--model", str(ckpt), "--images", "decoy-digits:test", "--n", "2", "--method", "saliency",
               "--out", str(tmp_path / "o"), "--quiet"]
    assert main([*explain, "--target", "top99999"]) == 2
    _one_line(capsys, "--target top99999: the model has 10 classes; use top1 to top10")
    assert not (tmp_path / "o" / "explain.json").exists()
    # --step larger than the image: one step perturbs it all (it was an OverflowError for 10**20)
    from xgir.metrics.faithfulness import deletion

    model, x = LeNet(width=2, hidden=8), torch.rand(2, 1, 28, 28)
    sal = torch.rand(2, 28, 28)
    huge = deletion(model, x, sal, torch.tensor([0, 1]), step=10**20)
    assert torch.equal(huge.curves, deletion(model, x, sal, torch.tensor([0, 1]), step=28 * 28).curves)
    assert main(["evaluate", "--model", str(ckpt), "--images", "decoy-digits:test", "--explainer", "saliency",
                 "--n", "2", "--step", "99999999999999999999", "--out", str(tmp_path / "ev"), "--quiet"]) == 0


def test_rerun_occlusion_stride_larger_than_its_window_is_one_line(tmp_path, capsys):
    """Found by the rerun: the app answered 500 (Captum's AssertionError) for p.stride=1000000000."""
    from xgir.explain import get_explainer

    with pytest.raises(XgirError, match="occlusion stride 9 is larger than the window 4.*at most 4"):
        get_explainer("occlusion", window=4, stride=9)(LeNet(width=2, hidden=8), torch.rand(1, 1, 28, 28), [0])
    with pytest.raises(XgirError, match="occlusion stride 1000000000 is larger than the window 7"):
        get_explainer("occlusion", stride=10**9)(LeNet(width=2, hidden=8), torch.rand(1, 1, 28, 28), [0])
    ckpt = save_checkpoint(LeNet(width=2, hidden=8), tmp_path / "lenet.pt", "lenet", {"width": 2, "hidden": 8})
    assert main(["explain", "--model", str(ckpt), "--images", "decoy-digits:test", "--n", "1", "--method", "occlusion",
                 "--param", "stride=1000000000", "--out", str(tmp_path / "o"), "--quiet"]) == 2
    _one_line(capsys, "occlusion stride 1000000000 is larger than the window 7")
