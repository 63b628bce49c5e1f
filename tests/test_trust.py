"""Issue 20, items 1-3: a checkpoint never names code to run, ``--out`` never replaces a
user's folder, and ``xgir correct`` never reuses passes of images replaced under the same names.
End to end through the command line (and the Python entry points the CLI uses)."""

from __future__ import annotations

import json
import os
import sys

import pytest
import torch
import yaml

from _pipeline_models import tiny_resnet, write_folder
from xgir.cli import main
from xgir.errors import XgirError
from xgir.models import LeNet, load_model, save_checkpoint, save_loaded
from xgir.models.load import reload_options


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and err.count("\n") == 0, err
    return err


def _hostile_checkpoints(folder, witness):
    """Checkpoints that hold only strings, dicts and tensors (so they pass weights_only=True) but
    name a function that would create ``witness`` if it were called."""
    command = f"{sys.executable} -c \"open('{witness}', 'w').write('ran')\""
    self_path = folder / "self.pt"
    specs = {
        "system.pt": {"spec": "os:system", "kwargs": {"command": command}, "state_dict": {}},
        "dotted.pt": {"spec": "subprocess:run", "kwargs": {"args": ["touch", str(witness)]}, "state_dict": {}},
        "self.pt": {"spec": str(self_path), "kwargs": {}, "state_dict": {}},
        "arch.pt": {"arch": "os:system", "params": {"command": command}, "state_dict": {}},
        "arch-list.pt": {"arch": ["lenet"], "params": {}, "state_dict": {}},
        "params-str.pt": {"arch": "lenet", "params": "width=3", "state_dict": {}},
        "kwargs-obj.pt": {"spec": "efficientnet-lite0", "kwargs": {"a": torch.zeros(1)}, "state_dict": {}},
    }
    paths = {}
    for name, state in specs.items():
        torch.save(state, folder / name)
        paths[name] = folder / name
    return paths


def test_a_checkpoint_naming_code_is_refused_and_nothing_runs(tmp_path, capsys):
    witness = tmp_path / "ran.txt"
    paths = _hostile_checkpoints(tmp_path, witness)
    for name, path in paths.items():
        with pytest.raises(XgirError) as err:
            load_model(path)
        assert "\n" not in str(err.value), name
        assert not witness.exists(), name
    # every command that takes a model: one line, exit 2, nothing run
    system = str(paths["system.pt"])
    commands = [
        ["explain", "--model", system, "--images", "photos:chelsea", "--out", str(tmp_path / "e")],
        ["evaluate", "--model", system, "--images", "decoy-digits:test", "--explainer", "saliency",
         "--out", str(tmp_path / "v")],
        ["features", "--model", system, "--images", "photos:chelsea", "--out", str(tmp_path / "f.pt")],
        ["explain", "--model", str(paths["self.pt"]), "--images", "photos:chelsea", "--out", str(tmp_path / "s")],
    ]
    for args in commands:
        assert main(args) == 2, args
        err = _one_line(capsys)
        assert "never names code to run" in err or "not plain values" in err, err
        assert not witness.exists(), args
    # the app and a correct config's model.spec
    from xgir.app import build_state

    with pytest.raises(XgirError, match="never names code to run"):
        build_state(system, "photos:chelsea", tmp_path / "fb.db", tmp_path / "app")
    cfg = {"model": {"spec": system}, "data": {"source_train": str(tmp_path), "source_test": str(tmp_path),
                                               "target_test": str(tmp_path)}, "out": str(tmp_path / "c")}
    config = tmp_path / "correct.yaml"
    config.write_text(yaml.safe_dump(cfg))
    assert main(["correct", "--config", str(config)]) == 2
    _one_line(capsys)
    assert not witness.exists()


def test_xgir_own_checkpoints_still_load_and_a_factory_model_needs_its_factory(tmp_path, capsys):
    # a zoo checkpoint, and a save_loaded copy of it: no file path is recorded as the model
    torch.manual_seed(0)
    net = LeNet(width=4, hidden=8)
    save_checkpoint(net, tmp_path / "lenet.pt", "lenet", {"width": 4, "hidden": 8},
                    meta={"classes": list("abcdefghij")})
    loaded = load_model(tmp_path / "lenet.pt")
    assert loaded.arch == "lenet" and loaded.classes[:2] == ["a", "b"]
    save_loaded(loaded, tmp_path / "copy.pt")
    saved = torch.load(tmp_path / "copy.pt", weights_only=True)
    assert saved["arch"] == "lenet" and "spec" not in saved
    again = load_model(tmp_path / "copy.pt")
    x = torch.rand(2, 1, 28, 28)
    assert torch.equal(again.model(x), loaded.model(x)) and again.classes == loaded.classes
    assert reload_options(again, "copy.pt") == "--model copy.pt"

    # a model built by a user's factory: the checkpoint names it for the record only
    user = load_model("_pipeline_models:tiny_resnet", kwargs={"num_classes": 3, "width": 4})
    user.classes = ["cat", "dog", "owl"]
    save_loaded(user, tmp_path / "user.pt")
    with pytest.raises(XgirError, match="never names code to run.*--weights"):
        load_model(tmp_path / "user.pt")
    back = load_model("_pipeline_models:tiny_resnet", kwargs={"num_classes": 3, "width": 4},
                      weights=tmp_path / "user.pt")
    y = torch.rand(2, 3, 32, 32)
    assert torch.equal(back.model(y), user.model(y)) and back.classes == ["cat", "dog", "owl"]
    assert reload_options(user, "user.pt") == "--model _pipeline_models:tiny_resnet --weights user.pt"
    # --weights with anything but a factory is refused
    with pytest.raises(XgirError, match="go with a factory"):
        load_model(tmp_path / "lenet.pt", weights=tmp_path / "user.pt")


def _user_folder(path):
    path.mkdir()
    (path / "thesis.tex").write_text("\\chapter{Results}")
    (path / "report.md").write_text("# my own report")
    (path / "results.json").write_text("{}")
    return {p.name: p.read_text() for p in path.iterdir()}


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "lenet.pt"
    save_checkpoint(LeNet(width=4, hidden=8), path, "lenet", {"width": 4, "hidden": 8})
    return path


def test_out_never_replaces_a_users_folder(tmp_path, capsys, tiny_checkpoint):
    thesis = tmp_path / "thesis"
    before = _user_folder(thesis)
    train_cfg = tmp_path / "train.yaml"
    train_cfg.write_text(yaml.safe_dump({"out": str(thesis), "data": {"params": {"n": 50}},
                                         "model": {"arch": "lenet", "params": {"width": 4}},
                                         "train": {"epochs": 1}}))
    correct_cfg = tmp_path / "correct.yaml"
    correct_cfg.write_text(yaml.safe_dump({"model": {"spec": str(tiny_checkpoint)},
                                           "data": {"source_train": str(tmp_path), "source_test": str(tmp_path),
                                                    "target_test": str(tmp_path)},
                                           "out": str(thesis)}))
    runs = [
        ["train", "--config", str(train_cfg)],
        ["correct", "--config", str(correct_cfg)],
        ["evaluate", "--model", str(tiny_checkpoint), "--images", "decoy-digits:test", "--explainer", "saliency",
         "--n", "2", "--out", str(thesis), "--quiet"],
        ["explain", "--model", str(tiny_checkpoint), "--images", "decoy-digits:test", "--n", "2",
         "--method", "saliency", "--out", str(thesis), "--quiet"],
    ]
    for args in runs:
        assert main(args) == 2, args
        err = _one_line(capsys)
        assert "did not write" in err, err
        assert {p.name: p.read_text() for p in thesis.iterdir()} == before, args
    # an xgir results folder (its marker) is replaced as a whole by a rerun
    out = tmp_path / "ours"
    args = ["evaluate", "--model", str(tiny_checkpoint), "--images", "decoy-digits:test", "--explainer",
            "saliency", "--n", "2", "--out", str(out), "--quiet"]
    assert main(args) == 0 and (out / ".xgir-run").is_file()
    (out / "report.md").write_text("stale")
    capsys.readouterr()
    assert main(args) == 0
    assert (out / "report.md").read_text() != "stale"


def _correct_config(folders, weights, out):
    return {
        "model": {"factory": "_pipeline_models:tiny_resnet", "kwargs": {"num_classes": 3, "width": 4},
                  "weights": str(weights), "head": "fc", "deep_layer": "layer3", "shallow_layer": "layer2"},
        "data": {**{k: str(v) for k, v in folders.items()}, "image_size": 32, "batch_size": 6},
        "explainer": "iox",
        "xgir": {"draws": 2, "head_epochs": 3, "delta2": 0.5},
        "passes": {"store": "float32"},
        "out": str(out),
        "device": "cpu",
    }


def test_correct_recomputes_passes_of_images_replaced_under_the_same_names(tmp_path):
    from xgir.correct.pipeline import XGIRRunConfig, run_xgir_pipeline

    folders = {"source_train": write_folder(tmp_path / "train", 6, 0),
               "source_test": write_folder(tmp_path / "test", 3, 1),
               "target_test": write_folder(tmp_path / "target", 3, 2, target=True)}
    weights = tmp_path / "tiny.pt"
    torch.save(tiny_resnet(seed=1).state_dict(), weights)
    run = tmp_path / "run"
    first = run_xgir_pipeline(XGIRRunConfig.model_validate(_correct_config(folders, weights, run)), progress=False)
    # replace every source-train image by another one under the same name (same size on disk is
    # not guaranteed; the modification time is moved on explicitly, as a copy would)
    replacement = write_folder(tmp_path / "other", 6, 7)
    for cls in os.listdir(replacement):
        for name in os.listdir(replacement / cls):
            target = folders["source_train"] / cls / name
            target.write_bytes((replacement / cls / name).read_bytes())
            st = target.stat()
            os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    rerun = run_xgir_pipeline(XGIRRunConfig.model_validate(_correct_config(folders, weights, run)), progress=False)
    fresh = run_xgir_pipeline(XGIRRunConfig.model_validate(_correct_config(folders, weights, tmp_path / "fresh")),
                              progress=False)
    assert rerun["summary"] == fresh["summary"]
    assert rerun["summary"] != first["summary"]  # the replaced images changed the passes
    head = {k: v for k, v in torch.load(run / "xgir_model.pt", weights_only=True).items() if k.startswith("fc.")}
    head_fresh = {k: v for k, v in torch.load(tmp_path / "fresh" / "xgir_model.pt", weights_only=True).items()
                  if k.startswith("fc.")}
    for k in head:
        assert torch.allclose(head[k], head_fresh[k], atol=1e-6), k
    assert json.loads((run / "results.json").read_text())["summary"] == fresh["summary"]
