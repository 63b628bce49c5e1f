import json

import torch

from xgir.cli import main
from xgir.data import load_dataset
from xgir.models import LeNet
from xgir.train import accuracy, fit_classifier
from xgir.train.config import TrainConfig
from xgir.train.features import fit_head
from xgir.train.runner import run_training


def test_fit_classifier_learns_decoy_shortcut():
    """A LeNet trained on decoy-digits fits the training set and loses accuracy when the
    decoy shade is random (the shortcut)."""
    train = load_dataset("decoy-digits", "train", seed=0, n=1500)
    test = load_dataset("decoy-digits", "test", seed=0, n=500)
    torch.manual_seed(0)
    model = fit_classifier(LeNet(width=8, hidden=32), train, epochs=4, lr=3e-3, progress=False)
    assert accuracy(model, train) > 0.8
    assert accuracy(model, test) < accuracy(model, train) - 0.05


def test_fit_head_separable():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 5, generator=g)
    y = (x[:, 0] > 0).long()
    head = fit_head(x, y, 2, epochs=20, lr=0.05)
    assert (head(x).argmax(1) == y).float().mean() > 0.97


def test_two_stage_pipeline_writes_results(tmp_path):
    cfg = TrainConfig.model_validate({
        "out": str(tmp_path / "run"), "mode": "two-stage",
        "data": {"params": {"n": 200}, "eval_splits": ["source-test", "target-test"]},
        "model": {"arch": "small-resnet", "params": {"width": 4}},
        "train": {"epochs": 2, "lr": 0.01},
        "pretrain": {"epochs": 1, "data": {"params": {"n": 300}}},
    })
    results = run_training(cfg, progress=False)
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert set(saved["splits"]) == {"source-test", "target-test"}
    assert "worst_group" in saved["splits"]["target-test"]
    # the features encode the texture family (chance 0.1) after one pretraining epoch
    assert results["probe"]["texture"] > 0.3
    assert (tmp_path / "run" / "model.pt").exists() and (tmp_path / "run" / "report.md").exists()
    # the extractor is frozen: the second run hits the cache and gives the same numbers
    again = run_training(cfg, progress=False)
    assert again["splits"] == results["splits"]


def test_cli_config_errors(tmp_path, capsys):
    bad_key = tmp_path / "a.yaml"
    bad_key.write_text("mode: erm\ntrian: {epochs: 1}\n")
    assert main(["train", "--config", str(bad_key)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unknown key 'trian'" in err
    bad_type = tmp_path / "b.yaml"
    bad_type.write_text("train: {epochs: many}\n")
    assert main(["train", "--config", str(bad_type)]) == 2
    assert "bad value for 'train.epochs'" in capsys.readouterr().err
    assert main(["train", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err
    bad_yaml = tmp_path / "c.yaml"
    bad_yaml.write_text("train: [unclosed\n")
    assert main(["train", "--config", str(bad_yaml)]) == 2
    assert "not valid YAML" in capsys.readouterr().err


def test_cli_preview(tmp_path, capsys):
    out = tmp_path / "p.png"
    assert main(["data", "preview", "decoy-digits", "--n", "4", "--out", str(out)]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG"
    assert main(["data", "preview", "nope"]) == 2
    assert "unknown dataset" in capsys.readouterr().err


def test_two_stage_yaml_matches_demo_config():
    from pathlib import Path

    from xgir.config import load_config
    from xgir.train.config import two_stage_config

    path = Path(__file__).parents[1] / "configs" / "two-stage.yaml"
    assert load_config(path, TrainConfig) == two_stage_config()
