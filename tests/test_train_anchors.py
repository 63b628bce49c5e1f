"""``xgir train`` mode head with the annotation-free anchors as ``head.method``: afr,
class-balanced, error-upweighting on a held-out share of data.train (AFR's protocol, drawn as
the waterbirds-photos suite draws it); configs, the mechanism on hand-made features, the CLI
on a tiny network, one-line errors."""

import json

import pytest
import torch
import yaml

from _pipeline_models import write_folder
from xgir.cli import main
from xgir.config import validate_config
from xgir.correct.afr import afr_head
from xgir.correct.anchor_heads import ANCHOR_HEADS, holdout_split
from xgir.correct.class_balanced import class_balanced_head
from xgir.correct.jtt import jtt_head
from xgir.errors import XgirError
from xgir.train.config import (
    AFRHeadSection,
    ClassBalancedHeadSection,
    ErrorUpweightingHeadSection,
    HeadSection,
    HeadTrainConfig,
)
from xgir.train.features import fit_head
from xgir.train.pretrained import HEAD_METHODS, SplitFeatures

FACTORY = "_pipeline_models:tiny_resnet"
BASE = {"mode": "head", "model": {"spec": FACTORY}, "data": {"train": "t"}}


@pytest.mark.parametrize("head, cls, fields", [
    (None, HeadSection, {"method": "erm", "epochs": 30}),
    ({"method": "afr"}, AFRHeadSection, {"gamma": 10.0, "lam": 0.0, "holdout": 0.2, "retrain_epochs": 500}),
    ({"method": "afr", "gamma": 4, "lambda": 0.3, "holdout": 0.3}, AFRHeadSection,
     {"gamma": 4.0, "lam": 0.3, "holdout": 0.3}),
    ({"method": "class-balanced", "balance": "subset"}, ClassBalancedHeadSection,
     {"balance": "subset", "retrain_epochs": 100, "retrain_lr": 3e-3, "retrain_batch_size": 32}),
    ({"method": "error-upweighting", "lambda_up": 20}, ErrorUpweightingHeadSection,
     {"lambda_up": 20.0, "holdout": 0.2}),
])
def test_each_method_config_validates(head, cls, fields):
    cfg = validate_config({**BASE, **({"head": head} if head is not None else {})}, HeadTrainConfig, "c.yaml")
    assert type(cfg.head) is cls
    assert all(getattr(cfg.head, k) == v for k, v in fields.items())
    again = validate_config(cfg.model_dump(), HeadTrainConfig, "c.yaml")  # results.json's config reloads
    assert again.head == cfg.head
    if cls is AFRHeadSection:
        assert "lambda" in cfg.model_dump()["head"]


def _features(n=60, d=6, seed=0):
    """Two classes; unit 0 carries the class, unit 1 a spurious feature that agrees with it on
    90 % of the images."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    h = torch.randn(n, d, generator=g)
    h[:, 0] += 1.5 * (2 * y - 1)
    agree = torch.rand(n, generator=g) < 0.9
    h[:, 1] += 3.0 * (2 * torch.where(agree, y, 1 - y) - 1)
    return SplitFeatures(h, y, classes=["a", "b"])


def test_holdout_split_is_the_suites_draw():
    y = torch.arange(50) % 2
    erm, rw = holdout_split(y, 0.2, seed=7)
    perm = torch.randperm(50, generator=torch.Generator().manual_seed(7))  # bench/waterbirds_photos.py's anchors()
    assert torch.equal(erm, perm[:40]) and torch.equal(rw, perm[40:])
    with pytest.raises(XgirError, match=r"head.holdout 0.05: the held-out part of data.train \(1 of 10 images\) "
                                        r"holds no image of class (a|b)"):
        holdout_split(torch.arange(10) % 2, 0.05, seed=0, classes=["a", "b"])


def test_holdout_split_holds_out_the_same_files_in_any_read_order():
    names = [f"{i:05d}-bird.png" for i in range(50)]
    y = torch.tensor([i % 3 == 0 for i in range(50)]).long()
    by_class = sorted(range(50), key=lambda i: (int(y[i]), i))  # class folders: class by class
    files_a = [f"wbp/source-train/{'water' if y[i] else 'land'}bird/{names[i]}" for i in by_class]
    files_b = [f"wbp/source-train/{'water' if y[i] else 'land'}bird/{names[i]}" for i in range(50)]  # metadata.csv
    erm_a, rw_a = holdout_split(y[by_class], 0.2, seed=3, files=files_a)
    erm_b, rw_b = holdout_split(y, 0.2, seed=3, files=files_b)
    assert {files_a[i] for i in rw_a} == {files_b[i] for i in rw_b}
    assert {files_a[i] for i in erm_a} == {files_b[i] for i in erm_b}
    # in name order the draw is the suite's permutation
    assert torch.equal(rw_b, holdout_split(y, 0.2, seed=3)[1])


@pytest.mark.parametrize("head", [
    {"method": "afr", "gamma": 6, "lambda": 0.1, "retrain_epochs": 50},
    {"method": "class-balanced", "retrain_epochs": 5},
    {"method": "error-upweighting", "lambda_up": 20, "retrain_epochs": 5},
])
def test_each_method_is_its_anchor_on_the_held_out_part(head):
    """The fitted head equals the anchor's function called by hand on AFR's split: ERM on the
    first 80 %, the anchor on the other 20 %."""
    train, test = _features(), _features(seed=1)
    cfg = validate_config({**BASE, "seed": 3, "head": head}, HeadTrainConfig, "c.yaml")
    s = cfg.head
    got, record = {**HEAD_METHODS, **ANCHOR_HEADS}[s.method](train, {"test": test}, s, 2, 3)
    perm = torch.randperm(60, generator=torch.Generator().manual_seed(3))
    fit, rw = perm[:48], perm[48:]
    erm = fit_head(train.h[fit], train.labels[fit], 2, seed=3)
    if s.method == "afr":
        want, _ = afr_head(train.h[rw], train.labels[rw], erm, gamma=6, lam=0.1, epochs=50)
    elif s.method == "class-balanced":
        want, _ = class_balanced_head(train.h[rw], train.labels[rw], 2, epochs=5, seed=3)
    else:
        want, _ = jtt_head(train.h[rw], train.labels[rw], erm, lambda_up=20, epochs=5, seed=3)
    assert torch.allclose(got.weight, want.weight) and torch.allclose(got.bias, want.bias)
    assert record["erm_images"] == 48 and record["heldout_images"] == 12 and record["summary"]
    assert ("erm_head_accuracy" in record) == (s.method != "class-balanced")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    base = tmp_path_factory.mktemp("anchors")
    return {"train": write_folder(base / "train", 10, 0), "test": write_folder(base / "test", 3, 1, target=True)}


def _train(tmp_path, head, folders, name="run"):
    cfg = {"mode": "head", "out": str(tmp_path / name), "model": {"spec": FACTORY},
           "data": {"train": str(folders["train"]), "eval": {"test": str(folders["test"])}, "batch_size": 16},
           "head": head}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return main(["train", "--config", str(path), "--quiet"])


def test_cli_runs_each_anchor_and_reports_it(folders, tmp_path, capsys):
    for method in ("afr", "class-balanced", "error-upweighting"):
        head = {"method": method, "retrain_epochs": 20, "holdout": 0.3}
        assert _train(tmp_path, head, folders, method) == 0
        res = json.loads((tmp_path / method / "results.json").read_text())
        assert res["method"] == method and res["record"]["heldout_images"] == 9
        assert res["head"]["new"] == [3, 16] and set(res["splits"]) == {"train", "test"}
        report = (tmp_path / method / "report.md").read_text()
        assert "Method: " in report and "held-out 9" in report
    assert "Its ERM head (30 epochs" in capsys.readouterr().out


@pytest.mark.parametrize("head, pattern", [
    ({"method": "afr", "gamma": -1}, "bad value for 'head.gamma': Input should be greater than or equal to 0"),
    ({"method": "afr", "lam": 1}, "unknown key 'head.lam' (check the spelling)"),
    ({"method": "afr", "holdout": 1.0}, "bad value for 'head.holdout'"),
    ({"method": "error-upweighting", "lambda_up": 0.5}, "bad value for 'head.lambda_up'"),
    ({"method": "class-balanced", "balance": "both"}, "bad value for 'head.balance'"),
    ({"method": "jtt"}, "bad value for 'head.method': 'jtt'; choose one of erm, afr, class-balanced, "
                        "error-upweighting"),
    ({"method": "class-balanced", "holdout": 0.02}, "head.holdout 0.02: the held-out part of data.train (1 of 30 "
                                                    "images) holds no image of class"),
])
def test_bad_anchor_settings_one_line(folders, tmp_path, capsys, head, pattern):
    capsys.readouterr()
    assert _train(tmp_path, head, folders) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and pattern in err, err
    assert "head: bad value" not in err and not (tmp_path / "run").exists()


def test_user_path_example_configs_validate():
    from pathlib import Path

    from xgir.config import load_config
    from xgir.correct.pipeline import XGIRRunConfig
    from xgir.train.config import load_train_config

    root = Path(__file__).resolve().parents[1] / "configs"
    head = load_train_config(root / "head-waterbirds-photos.yaml")
    assert isinstance(head, HeadTrainConfig) and head.data.fit == "squash" and head.head.method == "erm"
    for line in ("head: {method: afr, gamma: 10, lambda: 0, holdout: 0.2}",  # the anchors in its comments
                 "head: {method: class-balanced, balance: sampler, holdout: 0.2}",
                 "head: {method: error-upweighting, lambda_up: 20, holdout: 0.2}"):
        assert line in (root / "head-waterbirds-photos.yaml").read_text()
        validate_config({**head.model_dump(), **yaml.safe_load(line)}, HeadTrainConfig, "c.yaml")
    xgir = load_config(root / "xgir-waterbirds-photos.yaml", XGIRRunConfig)
    assert xgir.xgir.core_model == "efficientnet-lite0" and xgir.xgir.variant == "swap"
