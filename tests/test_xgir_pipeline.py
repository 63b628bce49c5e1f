"""XGIR on a user's model ("module:function") and ImageFolder data, via the API and the CLI."""

import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save_file

from _pipeline_models import CLASSES, tiny_resnet, write_folder
from xgir.cli import main
from xgir.config import load_config
from xgir.correct.pipeline import ModelSection, XGIRRunConfig, build_user_model, run_xgir_pipeline
from xgir.correct.xgir import support_from_heatmaps, true_class_heatmaps, xgir_retrain
from xgir.data.real import ImageFolderDataset
from xgir.errors import XgirError
from xgir.models.load import attach_normalization

MEAN, STD = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    base = tmp_path_factory.mktemp("imagefolder")
    return {
        "source_train": write_folder(base / "train", 8, 0),
        "source_test": write_folder(base / "test", 4, 1),
        "target_test": write_folder(base / "target", 4, 2, target=True),
    }


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "tiny.pt"
    torch.save(tiny_resnet(seed=1).state_dict(), path)
    return path


def _config(folders, weights, out, **over):
    cfg = {
        "model": {"factory": "_pipeline_models:tiny_resnet", "kwargs": {"num_classes": 3, "width": 4},
                  "weights": str(weights), "head": "fc", "deep_layer": "layer3", "shallow_layer": "layer2"},
        "data": {**{k: str(v) for k, v in folders.items()}, "image_size": 32, "batch_size": 10,
                 "normalize": {"mean": MEAN, "std": STD}},
        "explainer": "iox",
        "xgir": {"draws": 2, "head_epochs": 3, "delta2": 0.5},
        "out": str(out),
        "device": "cpu",
    }
    for key, value in over.items():
        section, _, name = key.partition(".")
        if name:
            cfg[section][name] = value
        else:
            cfg[section] = value
    return cfg


def _write_yaml(path, cfg):
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def iox_run(folders, weights, tmp_path_factory):
    out = tmp_path_factory.mktemp("iox")
    # h and r stored in float32, so that the streaming run can be compared with the in-memory one
    # to 1e-5 (float16 storage, the default, moves the head by ~2e-5: see tests/test_sharded.py)
    cfg = XGIRRunConfig.model_validate(_config(folders, weights, out / "run", passes={"store": "float32"}))
    return cfg, run_xgir_pipeline(cfg, progress=False)


def test_pipeline_writes_outputs_and_keeps_extractor(iox_run, weights, folders):
    cfg, res = iox_run
    out = Path(cfg.out)
    for name in ("results.json", "report.md", "xgir_model.pt", "heatmaps.png"):
        assert (out / name).is_file(), name
    assert res["images"] == {"source_train": 24, "source_test": 12, "target_test": 12}
    # the values are recomputed from the saved models below (test_original_accuracy_matches_the_model)
    for model in ("original", "xgir"):
        assert set(res["accuracy"][model]) == {"source_test", "target_test"}, model
    assert json.loads((out / "results.json").read_text())["accuracy"] == res["accuracy"]
    report = (out / "report.md").read_text()
    assert "| model | source acc | target acc |" in report and "| XGIR |" in report
    s = res["summary"]
    assert 0.0 <= s["frac_units_randomised"] <= 1.0 and 0.0 < s["support_share"] <= 1.0

    # the saved state_dict loads into a fresh factory model: extractor as given, head changed
    original = torch.load(weights, weights_only=True)
    new = torch.load(out / "xgir_model.pt", weights_only=True)
    assert set(new) == set(original)
    for k in original:
        if k.startswith("fc."):
            assert not torch.equal(new[k], original[k]), k
        else:
            assert torch.equal(new[k], original[k]), k
    fresh = tiny_resnet(seed=5)
    fresh.load_state_dict(new)
    fresh.eval()
    # its accuracy on the target images (normalised as in the config) is the reported one
    data = ImageFolderDataset(folders["target_test"], 32).load()
    x = (data.images - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    with torch.no_grad():
        acc = float((fresh(x).argmax(1) == data.labels).float().mean())
    assert acc == pytest.approx(res["accuracy"]["xgir"]["target_test"])


def test_original_accuracy_matches_the_model(iox_run, folders):
    cfg, res = iox_run
    model = tiny_resnet(seed=1).eval()  # the weights file holds seed 1
    data = ImageFolderDataset(folders["source_test"], 32).load()
    x = (data.images - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    with torch.no_grad():
        acc = float((model(x).argmax(1) == data.labels).float().mean())
    assert acc == pytest.approx(res["accuracy"]["original"]["source_test"])


def test_cli_cwox_with_caps_and_mean_x0(folders, tmp_path, capsys):
    cfg = _config(folders, "unused", tmp_path / "run", explainer="cwox")
    del cfg["model"]["weights"]
    del cfg["data"]["normalize"]
    cfg["data"]["max_images"] = {"source_train": 15}
    cfg["xgir"]["empty"] = "mean"
    cfg["xgir"]["response"] = "core-minus-context"
    rc = main(["correct", "--config", str(_write_yaml(tmp_path / "c.yaml", cfg)), "--quiet"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "| original |" in printed and "| XGIR |" in printed and "CWOX fell back" in printed
    assert "x0 mean, response core-minus-context" in printed
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    assert res["images"]["source_train"] == 15
    assert 0.0 <= res["summary"]["cwox_fallback_to_iox"] <= 1.0


def test_target_classes_by_index(folders, weights, tmp_path):
    base = tmp_path / "v2"
    for c, name in enumerate(CLASSES):  # the target folder named 0..K-1, as ImageNet-V2
        (base / str(c)).mkdir(parents=True)
        for f in (folders["target_test"] / name).iterdir():
            (base / str(c) / f.name).write_bytes(f.read_bytes())
    cfg = _config(folders, weights, tmp_path / "a", **{"data.target_test": str(base),
                                                      "data.target_classes": "index"})
    cfg["data"]["target_val"] = str(folders["target_test"])  # class names: wrong for this split
    cfg["xgir"]["head_epochs"] = 1
    cfg["data"]["max_images"] = 6
    with pytest.raises(XgirError, match="data.target_val: class folders in .* no folder for classes 0, 1, 2"):
        run_xgir_pipeline(XGIRRunConfig.model_validate(cfg), progress=False)
    cfg["data"]["target_val"] = str(base)
    res = run_xgir_pipeline(XGIRRunConfig.model_validate(cfg), progress=False)
    assert res["images"] == {"source_train": 6, "source_test": 6, "target_val": 6, "target_test": 6}
    # same folder and same seeded subset: the two target splits agree exactly
    assert res["accuracy"]["xgir"]["target_val"] == res["accuracy"]["xgir"]["target_test"]
    assert "target-val acc" in (tmp_path / "a" / "report.md").read_text()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model.factory": "no_such_module_xyz:build"}, "cannot import module 'no_such_module_xyz'"),
        ({"model.factory": "_pipeline_models:missing"}, "has no attribute 'missing'"),
        ({"model.factory": "_pipeline_models:NOT_CALLABLE"}, "not a callable"),
        ({"model.factory": "_pipeline_models:not_a_module"}, "returned a str, not a torch nn.Module"),
        ({"model.factory": "just_a_module"}, "must look like 'package.module:function'"),
        ({"model.kwargs": {"colour": 1}}, "failed: TypeError"),
        ({"model.deep_layer": "layer9"}, "no layer named 'layer9' in SmallResNet; available: stem"),
        ({"model.head": "pool"}, "not nn.Linear"),
        ({"model.weights": "/no/such/weights.pt"}, "model.weights not found"),
        ({"model.kwargs": {"num_classes": 4, "width": 4}}, "do not fit SmallResNet: 2 shape mismatches"),
        ({"model.factory": "_pipeline_models:gray_resnet", "model.weights": None},
         "the model cannot take images of shape (10, 3, 32, 32)"),
        ({"data.source_test": "/no/such/folder"}, "data.source_test: image folder not found: /no/such/folder"),
        ({"data.classes": ["cat", "dog"]}, "data.source_train: class folders in"),
        ({"data.normalize": {"mean": [0.5], "std": [0.2, 0.3]}}, "the same (non-zero) number"),
        ({"xgir": {"delta2_mode": "quantile", "delta2": 2.0}}, "xgir: delta2 as a quantile"),
        ({"xgir": {"dleta2": 0.5}}, "unknown key 'xgir.dleta2'"),
        ({"explainer": "cwox", "model.shallow_layer": None}, "explainer cwox needs model.shallow_layer"),
    ],
)
def test_errors_are_one_line(folders, weights, tmp_path, capsys, change, message):
    cfg = _config(folders, weights, tmp_path / "run", **change)
    rc = main(["correct", "--config", str(_write_yaml(tmp_path / "c.yaml", cfg)), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert message in err, err
    assert not (tmp_path / "run" / "results.json").exists()


def test_weights_with_wrong_keys_and_safetensors(tmp_path, weights):
    state = torch.load(weights, weights_only=True)
    save_file(state, tmp_path / "w.safetensors")
    section = ModelSection(factory="_pipeline_models:tiny_resnet", weights=str(tmp_path / "w.safetensors"))
    model = build_user_model(section)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    assert not any(p.requires_grad for p in model.parameters()) and not model.training
    torch.save({"state_dict": {"extra.weight": torch.zeros(1), **state}}, tmp_path / "ckpt.pt")
    with pytest.raises(XgirError, match=r"1 unexpected keys \(extra.weight\)"):
        build_user_model(section.model_copy(update={"weights": str(tmp_path / "ckpt.pt")}))
    (tmp_path / "bad.pt").write_text("not a checkpoint")
    with pytest.raises(XgirError, match=r"model.weights .*bad.pt is not a torch file"):
        build_user_model(section.model_copy(update={"weights": str(tmp_path / "bad.pt")}))


def test_example_config_is_valid():

    path = Path(__file__).resolve().parents[1] / "configs" / "xgir-imagefolder.yaml"
    cfg = load_config(path, XGIRRunConfig)
    assert cfg.model.factory == "torchvision.models:resnet50" and cfg.model.deep_layer == "layer4"
    assert cfg.data.normalize is not None and cfg.data.normalize.mean == [0.485, 0.456, 0.406]


def test_streaming_pipeline_matches_in_memory_xgir(iox_run, folders):
    """Batch-by-batch heatmaps / supports / responses give the head of xgir_retrain on the
    whole training set in memory (same supports, same config)."""
    cfg, _ = iox_run
    inner = tiny_resnet(seed=1).eval()
    model = attach_normalization(inner, MEAN, STD).eval()
    train = ImageFolderDataset(folders["source_train"], 32).load()
    maps = true_class_heatmaps(model, train.images, train.labels, "layer3")
    xcfg = cfg.xgir
    support = support_from_heatmaps(maps, (32, 32), xcfg.delta1)
    new_model, _ = xgir_retrain(model, train.images, train.labels, support, xcfg, head="fc")
    saved = torch.load(Path(cfg.out) / "xgir_model.pt", weights_only=True)
    assert torch.allclose(saved["fc.weight"], new_model.fc.weight, atol=1e-5)
    assert torch.allclose(saved["fc.bias"], new_model.fc.bias, atol=1e-5)


def _copy_folder(src, dst, rename=None):
    for cls in sorted(p.name for p in src.iterdir()):
        name = (rename or {}).get(cls, cls)
        (dst / name).mkdir(parents=True)
        for f in (src / cls).iterdir():
            (dst / name / f.name).write_bytes(f.read_bytes())
    return dst


@pytest.mark.parametrize(
    ("split", "rename", "message"),
    [  # item 1: a target class folder not among the source classes was dropped silently
        ("target_test", {"owl": "x"}, "data.target_test: class folders in .* no folder for class owl; "
         "folder x not among the classes; give data.target_classes"),
        # item 8c: names that differ only in case were dropped like unknown names
        ("target_test", {"cat": "Cat"}, "only in case \\('Cat' vs 'cat'\\)"),
        ("source_test", {"dog": "dogs"}, "data.source_test: .* no folder for class dog; folder dogs not among"),
    ],
)
def test_class_folder_mismatch_is_an_error(folders, weights, tmp_path, split, rename, message):
    moved = _copy_folder(folders[split], tmp_path / "moved", rename)
    cfg = _config(folders, weights, tmp_path / "run", **{f"data.{split}": str(moved)})
    with pytest.raises(XgirError, match=message):
        run_xgir_pipeline(XGIRRunConfig.model_validate(cfg), progress=False)
    assert not (tmp_path / "run").exists()


def test_empty_class_folders(folders, weights, tmp_path, capsys):
    # item 8c: an empty source class folder would drop the class from the retrained head
    train = _copy_folder(folders["source_train"], tmp_path / "train")
    for f in (train / "dog").iterdir():
        f.unlink()
    cfg = _config(folders, weights, tmp_path / "run", **{"data.source_train": str(train)})
    with pytest.raises(XgirError, match=f"data.source_train: class folder {train / 'dog'} hold no images"):
        run_xgir_pipeline(XGIRRunConfig.model_validate(cfg), progress=False)
    # item 19: an empty target class folder is a warning line naming it
    target = _copy_folder(folders["target_test"], tmp_path / "target")
    for f in (target / "owl").iterdir():
        f.unlink()
    cfg = _config(folders, weights, tmp_path / "run", **{"data.target_test": str(target)})
    cfg["xgir"]["head_epochs"] = 1
    res = run_xgir_pipeline(XGIRRunConfig.model_validate(cfg), progress=False)
    assert f"warning: data.target_test: empty class folder {target / 'owl'}\n" in capsys.readouterr().err
    assert res["images"]["target_test"] == 8


@pytest.mark.parametrize("workers", [0, 1])
def test_bad_image_error_or_skip(folders, weights, tmp_path, capsys, workers):
    """Item 19 and 10: an unreadable image stops the run with its name and the option (one line,
    also with worker processes); with on_bad_image: skip it is left out and listed."""
    train = _copy_folder(folders["source_train"], tmp_path / "train")
    bad = train / "dog" / "3.png"
    bad.write_bytes(b"\x89PNG garbage")
    cfg = _config(folders, weights, tmp_path / "run", **{"data.source_train": str(train)})
    cfg["data"]["workers"] = workers
    cfg["xgir"]["head_epochs"] = 1
    rc = main(["correct", "--config", str(_write_yaml(tmp_path / "c.yaml", cfg)), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert f"cannot read image {bad}" in err and "data.on_bad_image: skip" in err
    cfg["data"]["on_bad_image"] = "skip"
    rc = main(["correct", "--config", str(_write_yaml(tmp_path / "c.yaml", cfg)), "--quiet"])
    assert rc == 0
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    assert res["images"]["source_train"] == 23
    assert res["skipped_images"] == {"source_train": {"count": 1, "files": [str(bad)]}}
    assert "Skipped 1 unreadable image in source_train" in (tmp_path / "run" / "report.md").read_text()
