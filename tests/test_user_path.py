"""The user's path on real photographs, end to end (issue 23): ``xgir data export
waterbirds-photos`` (a tiny version), ``xgir train`` mode head on EfficientNet-Lite0 with the
exported class folders (erm, and afr beside it), then ``xgir correct`` on the trained checkpoint
with the context swap and the pretrained network's own core (``xgir.core_model``). Checks that
each step writes its outputs, that the checkpoints load, and that the numbers agree across the
commands (xgir correct's "original" accuracy and worst-group accuracy are xgir train's). About
45 s on one CPU thread (EfficientNet-Lite0's features of 96 images, XGIR's passes over 40)."""

import json
from pathlib import Path

import pytest
import torch
import yaml

from xgir.cli import main
from xgir.data.waterbirds_photos import BIRDS_ROOT
from xgir.models import load_model

pytestmark = pytest.mark.skipif(not Path(BIRDS_ROOT).is_dir(), reason="tuxpaint-stamps-default not installed")
EVALS = ("source_test", "target_test")
XGIR = {"variant": "swap", "partner": "other-class", "context": "background", "core": "pretrained",
        "core_model": "efficientnet-lite0", "support_fraction": 0.1, "context_fraction": 0.3, "empty": "data-mean",
        "draws": 5}


def _run(args):
    assert main(args) == 0, args


def _yaml(path, cfg):
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return str(path)


@pytest.fixture(scope="module")
def path(tmp_path_factory):
    base = tmp_path_factory.mktemp("user-path")
    exp = base / "wbp"
    with pytest.MonkeyPatch.context() as mp:  # a module fixture runs before conftest's cache fixture
        mp.setenv("XGIR_CACHE", str(base / "cache"))
        _run(["data", "export", "waterbirds-photos", "--out", str(exp), "--n", "32", "--n-per-split",
              "source-train=40,source-test=24,source-val=2,target-val=2", "--quiet"])
        train = {"mode": "head", "seed": 0, "model": {"spec": "efficientnet-lite0"},
                 "data": {"train": str(exp / "source-train"), "fit": "squash", "batch_size": 16,
                          "eval": {"source_test": str(exp / "source-test"), "target_test": f"{exp}:test"}}}
        _run(["train", "--config", _yaml(base / "erm.yaml", {**train, "out": str(base / "erm")}), "--quiet"])
        _run(["train", "--config", _yaml(base / "afr.yaml", {**train, "out": str(base / "afr"),
                                                             "head": {"method": "afr", "gamma": 10}}), "--quiet"])
        correct = {"model": {"spec": str(base / "erm" / "model.pt"), "deep_layer": "_act_head"},
                   "data": {"source_train": str(exp / "source-train"), "source_test": str(exp / "source-test"),
                            "target_test": f"{exp}:test",
                            "fit": "squash", "batch_size": 16},
                   "xgir": XGIR, "out": str(base / "xgir"), "device": "cpu"}
        _run(["correct", "--config", _yaml(base / "xgir.yaml", correct), "--quiet"])
    return base


def _json(path):
    return json.loads(path.read_text())


def test_every_step_writes_its_outputs(path):
    assert {"metadata.csv", "images.csv", "export.json", "segmentations"} <= {p.name for p in (path / "wbp").iterdir()}
    for run in ("erm", "afr"):
        assert all((path / run / f).is_file() for f in ("model.pt", "results.json", "report.md"))
    assert all((path / "xgir" / f).is_file() for f in ("xgir_model.pt", "results.json", "report.md", "heatmaps.png"))


def test_train_counts_and_groups_match_the_export(path):
    exported = _json(path / "wbp" / "export.json")["splits"]
    for run in ("erm", "afr"):
        res = _json(path / run / "results.json")
        assert res["classes"] == ["landbird", "waterbird"] and res["head"]["new"] == [2, 1280]
        assert res["images"] == {"train": 40, "source_test": 24, "target_test": 32}
        # the Waterbirds specs carry the groups: worst-group accuracy on the target splits
        assert res["splits"]["target_test"]["num_groups"] == 4 and "worst_group" not in res["splits"]["source_test"]
    assert exported["source-train"]["images"] == 40
    afr = _json(path / "afr" / "results.json")
    assert afr["method"] == "afr" and afr["record"]["gamma"] == 10 and afr["record"]["heldout_images"] == 8
    assert afr["record"]["erm_images"] == 32 and set(afr["record"]["erm_head_accuracy"]) == set(EVALS)


def test_checkpoints_load(path):
    erm = load_model(path / "erm" / "model.pt")
    assert erm.classes == ["landbird", "waterbird"] and erm.model._fc.out_features == 2
    afr = load_model(path / "afr" / "model.pt")
    body = {k: v for k, v in erm.model.state_dict().items() if not k.startswith("_fc.")}
    assert all(torch.equal(afr.model.state_dict()[k], v) for k, v in body.items())  # the same frozen network
    assert not torch.equal(afr.model._fc.weight, erm.model._fc.weight)
    # xgir correct's model: the same network, its head retrained
    state = torch.load(path / "xgir" / "xgir_model.pt", weights_only=True)
    erm.model.load_state_dict(state)
    assert all(torch.equal(state[k], v) for k, v in body.items())


def test_correct_agrees_with_train(path):
    train = _json(path / "erm" / "results.json")
    res = _json(path / "xgir" / "results.json")
    assert res["images"] == {"source_train": 40, "source_test": 24, "target_test": 32}
    for split in EVALS:  # the same checkpoint on the same images: the same accuracy
        assert res["accuracy"]["original"][split] == pytest.approx(train["splits"][split]["accuracy"], abs=1e-9)
    # a Waterbirds spec: worst-group accuracy, as xgir train's
    assert res["groups"]["original"]["target_test"]["groups"] == train["splits"]["target_test"]["groups"]
    xgir_test = res["groups"]["xgir"]["target_test"]
    assert xgir_test["worst_group"] == min(xgir_test["groups"].values())
    assert "source_test" not in res["groups"]["original"]  # class folders: no groups
    assert res["summary"]["core_model"] == "efficientnet-lite0" and res["summary"]["core_model_shares_extractor"]
    assert res["summary"]["support_share"] == pytest.approx(0.1, abs=0.02)  # the map's top 10 % (7 x 7 cells)
    cfg = res["record"]["config"]
    assert {k: cfg[k] for k in XGIR} == XGIR
    report = (path / "xgir" / "report.md").read_text()
    assert "efficientnet-lite0's own head" in report and "context swap (partner other-class" in report
    assert "| target worst group |" in report and "nan" not in report


def test_core_at_act_head_is_the_suites_pretrained_cam():
    """What xgir correct computes for core pretrained at model.deep_layer _act_head (Grad-CAM of
    the top-5 classes, probability-weighted) is the suite's ``pretrained`` CAM over the maps the
    head reads, up to the 1/49 of the average pool: the same supports."""
    from xgir.correct.xgir import support_top_fraction
    from xgir.correct.xgir_variants import core_heatmaps, pooled_maps, pretrained_cam

    net = load_model("efficientnet-lite0").model
    x = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    _, maps = pooled_maps(net, x, "_avg_pooling", dtype=torch.float32)
    suite = pretrained_cam(maps, net._fc)
    got = core_heatmaps("pretrained", net, x, "_act_head", top_k=5)
    assert torch.allclose(got * 49, suite, rtol=1e-3, atol=1e-4)
    assert torch.equal(support_top_fraction(got, (224, 224), 0.1), support_top_fraction(suite, (224, 224), 0.1))
