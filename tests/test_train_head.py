"""``xgir train`` mode head: a new linear head for the classes of labelled images on a pretrained
network's frozen, cached features; the checkpoint reloads (built-in and zoo networks with
--model run/model.pt, a factory's with --model FACTORY --weights) and xgir correct runs on it."""

import json
import os

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import xgir.train.features as train_features
from _pipeline_models import CLASSES, tiny_resnet, write_folder, write_waterbirds
from xgir.cli import main
from xgir.cli.features import run_features
from xgir.data.images import load_images
from xgir.errors import XgirError
from xgir.models import LeNet, load_model, save_checkpoint
from xgir.models.accuracy import accuracy

FACTORY = "_pipeline_models:tiny_resnet"


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    base = tmp_path_factory.mktemp("head")
    return {"train": write_folder(base / "train", 6, 0), "test": write_folder(base / "test", 3, 1)}


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """The 'pretrained network': tiny_resnet's weights of seed 1 (a state_dict)."""
    path = tmp_path_factory.mktemp("weights") / "tiny.pt"
    torch.save(tiny_resnet(seed=1).state_dict(), path)
    return path


def _train(tmp_path, cfg, name="c.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return main(["train", "--config", str(path), "--quiet"])


def _cfg(out, train, evals=None, **over):
    cfg = {"mode": "head", "out": str(out), "model": {"spec": FACTORY},
           "data": {"train": str(train), "eval": {k: str(v) for k, v in (evals or {}).items()}, "batch_size": 8},
           "head": {"method": "erm", "epochs": 40, "lr": 0.05}}
    for key, value in over.items():
        section, _, field = key.partition(".")
        if field:
            cfg.setdefault(section, {})[field] = value
        else:
            cfg[section] = value
    return cfg


@pytest.fixture(scope="module")
def folder_run(folders, pretrained, tmp_path_factory):
    base = tmp_path_factory.mktemp("run")
    cfg = _cfg(base / "run", folders["train"], {"test": folders["test"]}, **{"model.weights": str(pretrained)})
    with pytest.MonkeyPatch.context() as mp:  # a module fixture runs before conftest's cache fixture
        mp.setenv("XGIR_CACHE", str(base / "cache"))
        assert _train(base, cfg) == 0
    return base / "run"


def test_writes_checkpoint_results_report(folder_run):
    for name in ("model.pt", "results.json", "report.md"):
        assert (folder_run / name).is_file(), name
    res = json.loads((folder_run / "results.json").read_text())
    assert res["mode"] == "head" and res["method"] == "erm" and res["classes"] == list(CLASSES)
    assert res["images"] == {"train": 18, "test": 9}
    assert set(res["splits"]) == {"train", "test"} and "worst_group" not in res["splits"]["test"]
    assert res["head"] == {"name": "fc", "replaced": [3, 16], "new": [3, 16]}
    assert res["reload"] == f"--model {FACTORY} --weights {folder_run / 'model.pt'}"
    report = (folder_run / "report.md").read_text()
    assert "| test |" in report and "Load it with `--model _pipeline_models:tiny_resnet --weights" in report
    saved = torch.load(folder_run / "model.pt", weights_only=True)
    assert saved["spec"] == FACTORY and saved["classes"] == list(CLASSES) and saved["head_shape"] == [3, 16]


def test_checkpoint_is_the_network_with_the_new_head(folder_run, folders, pretrained, tmp_path):
    """--model FACTORY --weights model.pt: the pretrained body, the fitted head, the same
    predictions as the head on the features the run cached, the recorded accuracy."""
    back = load_model(FACTORY, weights=folder_run / "model.pt")
    assert back.classes == list(CLASSES) and back.head == "fc"
    body = {k: v for k, v in torch.load(pretrained, weights_only=True).items() if not k.startswith("fc.")}
    state = back.model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in body.items())
    test = load_images(str(folders["test"]), back.preprocess)
    res = json.loads((folder_run / "results.json").read_text())
    assert accuracy(back.model, test) == pytest.approx(res["splits"]["test"]["accuracy"], abs=1e-12)
    # the features of the pretrained network (xgir features), then the saved head: the same classes
    feats = torch.load(run_features(FACTORY, str(folders["test"]), tmp_path / "f.pt", store="float32",
                                    weights=pretrained, progress=False), weights_only=True)
    saved = torch.load(folder_run / "model.pt", weights_only=True)["state_dict"]
    by_head = (feats["h"] @ saved["fc.weight"].T + saved["fc.bias"]).argmax(1)
    with torch.no_grad():
        assert torch.equal(back.model(test.images).argmax(1), by_head)


def test_xgir_correct_runs_on_the_checkpoint(folder_run, folders, tmp_path):
    cfg = {"model": {"spec": FACTORY, "weights": str(folder_run / "model.pt"), "deep_layer": "layer3"},
           "data": {"source_train": str(folders["train"]), "source_test": str(folders["test"]),
                    "target_test": str(folders["test"]), "image_size": 32, "batch_size": 9},
           "xgir": {"draws": 1, "head_epochs": 2}, "out": str(tmp_path / "xgir"), "device": "cpu"}
    (tmp_path / "x.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["correct", "--config", str(tmp_path / "x.yaml"), "--quiet"]) == 0
    res = json.loads((tmp_path / "xgir" / "results.json").read_text())
    assert res["num_classes"] == 3 and set(res["accuracy"]["xgir"]) == {"source_test", "target_test"}


def test_waterbirds_worst_group_and_a_head_of_another_size(tmp_path, capsys):
    root = write_waterbirds(tmp_path / "wb")
    cfg = _cfg(tmp_path / "run", f"{root}:train", {"val": f"{root}:val", "test": f"{root}:test"})
    assert _train(tmp_path, cfg) == 0
    report = capsys.readouterr().out
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    assert res["classes"] == ["landbird", "waterbird"] and res["images"] == {"train": 6, "val": 4, "test": 4}
    assert res["head"] == {"name": "fc", "replaced": [3, 16], "new": [2, 16]}
    for split in ("val", "test"):
        acc = res["splits"][split]
        assert acc["num_groups"] == 4 and acc["worst_group"] == min(acc["groups"].values())
        assert list(acc["groups"]) == ["landbird/land", "landbird/water", "waterbird/land", "waterbird/water"]
    assert "- test per group: landbird/land" in report and "| val |" in report
    # tiny_resnet() has 3 outputs: the checkpoint's head of 2 is rebuilt before its weights load
    back = load_model(FACTORY, weights=tmp_path / "run" / "model.pt")
    assert back.model.fc.out_features == 2 and back.classes == ["landbird", "waterbird"]
    test = load_images(f"{root}:test", back.preprocess)
    assert accuracy(back.model, test) == pytest.approx(res["splits"]["test"]["accuracy"], abs=1e-12)
    assert main(["explain", "--model", FACTORY, "--weights", str(tmp_path / "run" / "model.pt"), "--images",
                 f"{root}:test", "--out", str(tmp_path / "explain"), "--quiet"]) == 0
    assert json.loads((tmp_path / "explain" / "explain.json").read_text())["classes"] == ["landbird", "waterbird"]


def test_features_cached_by_the_files_identity(folders, tmp_path, monkeypatch):
    passes = []
    real = train_features.features_pass
    monkeypatch.setattr(train_features, "features_pass", lambda *a, **k: passes.append(1) or real(*a, **k))
    test = tmp_path / "test"
    write_folder(test, 2, 5)
    cfg = _cfg(tmp_path / "run", folders["train"], {"test": test}, **{"head.epochs": 2})
    assert _train(tmp_path, cfg) == 0 and len(passes) == 2
    first = json.loads((tmp_path / "run" / "results.json").read_text())
    # other head settings: the features come from the cache
    assert _train(tmp_path, _cfg(tmp_path / "run", folders["train"], {"test": test}, **{"head.epochs": 3})) == 0
    assert len(passes) == 2
    # an image replaced under the same name (new size and time): that split's features again
    img = test / "cat" / "0.png"
    Image.fromarray(np.full((32, 32, 3), 200, dtype=np.uint8)).save(img)
    os.utime(img, ns=(1, 1))
    assert _train(tmp_path, cfg) == 0 and len(passes) == 3
    again = json.loads((tmp_path / "run" / "results.json").read_text())
    assert again["splits"]["train"] == first["splits"]["train"]


def test_a_zoo_checkpoint_reloads_with_model_alone(folders, tmp_path):
    """A zoo network (a LeNet checkpoint of 10 classes) with a new head of 3: its params say
    num_classes 3, so --model run/model.pt loads it as it is."""
    torch.manual_seed(0)
    save_checkpoint(LeNet(width=4, hidden=8), tmp_path / "lenet.pt", "lenet", {"width": 4, "hidden": 8})
    assert _train(tmp_path, _cfg(tmp_path / "run", folders["train"], **{"model.spec": str(tmp_path / "lenet.pt")})) == 0
    back = load_model(tmp_path / "run" / "model.pt")
    assert back.arch == "lenet" and back.model.fc.out_features == 3 and back.classes == list(CLASSES)
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    assert res["reload"] == f"--model {tmp_path / 'run' / 'model.pt'}"
    train = load_images(str(folders["train"]), back.preprocess)
    assert accuracy(back.model, train) == pytest.approx(res["splits"]["train"]["accuracy"], abs=1e-12)


def _plain_files(path):
    path.mkdir()
    for i in range(2):
        Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(path / f"{i}.png")
    return path


@pytest.mark.parametrize("change, pattern", [
    ({"head": {"epoch": 3}}, "unknown key 'head.epoch' (check the spelling)"),
    ({"mode": "heads"}, "bad value for 'mode': 'heads'; choose one of erm, two-stage, head"),
    ({"head": {"method": "ERM"}}, "bad value for 'head.method': 'ERM'; choose one of erm, afr"),
    ({"model": None}, "missing required key 'model'"),
    ({"data.eval": {"train": "x"}}, "data.eval: 'train' names the training split"),
    ({"model.weights": "w.pt", "model.spec": "efficientnet-lite0"}, "go with a factory spec"),
    ({"model.head": "layer3"}, "model.head: layer 'layer3' is a Sequential, not nn.Linear"),
    ({"data.train": "PLAIN"}, "data.train: 'PLAIN' names images without labels; give class folders"),
    ({"data.eval": {"test": "TWO"}}, "data.eval.test: class folders in TWO do not match the classes: no folder "
                                     "for class owl; every split needs data.train's classes (cat, dog, owl)"),
    ({"data.train": "ONE"}, "data.train: 'ONE' has 1 class; a classifier needs at least 2"),
])
def test_bad_configs_one_line(folders, tmp_path, capsys, change, pattern):
    plain = _plain_files(tmp_path / "plain")
    two = write_folder(tmp_path / "two", 1, 0)
    (two / "owl" / "0.png").unlink()
    (two / "owl").rmdir()
    one = tmp_path / "one"
    (one / "cat").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(one / "cat" / "0.png")
    names = {"PLAIN": str(plain), "TWO": str(two), "ONE": str(one)}

    def named(value):
        if isinstance(value, dict):
            return {k: named(v) for k, v in value.items()}
        return names.get(value, value)

    cfg = _cfg(tmp_path / "run", folders["train"])
    for key, value in change.items():
        section, _, field = key.partition(".")
        if value is None:
            cfg.pop(section)
        elif field:
            cfg[section][field] = named(value)
        else:
            cfg[section] = named(value)
    capsys.readouterr()
    assert _train(tmp_path, cfg) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    for name, path in names.items():
        pattern = pattern.replace(name, path)
    assert pattern in err, err
    assert not (tmp_path / "run").exists()


def _photos(root):
    """4 small photographs in 2 class folders: crops of scikit-image's cat and coffee cup."""
    import skimage.data

    for cls, name in (("cat", "chelsea"), ("coffee", "coffee")):
        arr = getattr(skimage.data, name)()
        h, w = arr.shape[:2]
        (root / cls).mkdir(parents=True)
        for i, (y, x) in enumerate(((0, 0), (h // 4, w // 4))):
            Image.fromarray(arr[y : y + 3 * h // 4, x : x + 3 * w // 4]).save(root / cls / f"{i}.jpg")
    return root


def test_efficientnet_lite0_head_loads_with_model_alone(tmp_path):
    photos = _photos(tmp_path / "photos")
    cfg = {"mode": "head", "out": str(tmp_path / "run"), "model": {"spec": "efficientnet-lite0"},
           "data": {"train": str(photos)}, "head": {"epochs": 20}}
    assert _train(tmp_path, cfg) == 0
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    assert res["head"] == {"name": "_fc", "replaced": [1000, 1280], "new": [2, 1280]}
    assert res["reload"] == f"--model {tmp_path / 'run' / 'model.pt'}"
    back = load_model(tmp_path / "run" / "model.pt")  # spec efficientnet-lite0, its _fc rebuilt at 2 outputs
    assert back.spec == "efficientnet-lite0" and back.classes == ["cat", "coffee"]
    assert back.model._fc.out_features == 2 and back.layer == "_conv_head"
    images = load_images(str(photos), back.preprocess)
    assert accuracy(back.model, images) == pytest.approx(res["splits"]["train"]["accuracy"], abs=1e-12)
    # a checkpoint whose head does not fit the network: one line
    state = torch.load(tmp_path / "run" / "model.pt", weights_only=True)
    torch.save({**state, "head_shape": [2, 999]}, tmp_path / "bad.pt")
    with pytest.raises(XgirError, match=r"bad.pt: its head '_fc' takes 999 inputs, this model's 1280"):
        load_model(tmp_path / "bad.pt")


def test_example_config_validates():
    from pathlib import Path

    from xgir.train.config import HeadTrainConfig, load_train_config

    cfg = load_train_config(Path(__file__).resolve().parents[1] / "configs" / "head-waterbirds.yaml")
    assert isinstance(cfg, HeadTrainConfig) and cfg.model.spec == "efficientnet-lite0"
    assert list(cfg.data.eval) == ["val", "test"] and cfg.head.method == "erm"
