import json
import math

import pytest
import torch

import xgir.explain.registry as registry
from xgir.cli import main
from xgir.data import ImageDataset
from xgir.errors import XgirError
from xgir.metrics import deletion, epg, evaluate_explainers, irrelevant_overlap
from xgir.models import LeNet, save_checkpoint


def _input_gradient(model, x, targets):
    x = x.clone().requires_grad_(True)
    cls = torch.as_tensor(targets).long().to(x.device)
    model(x).gather(1, cls[:, None]).sum().backward()
    return x.grad.detach().abs().sum(1, keepdim=True)


def _layer_explainer(layer: str = "conv2"):
    """Uses the layer only to prove that --layer reaches factories that take it."""
    seen_layers.append(layer)
    return _input_gradient


seen_layers: list[str] = []


@pytest.fixture
def fake_registry(monkeypatch):
    seen_layers.clear()
    monkeypatch.setattr(
        registry,
        "EXPLAINERS",
        {"input-grad": registry.ExplainerInfo(lambda: _input_gradient, "input gradient"),
         "layered": registry.ExplainerInfo(_layer_explainer, "records its layer")},
    )


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(0)
    return save_checkpoint(LeNet(), tmp_path / "model.pt", "lenet", {})


def test_evaluate_cli_writes_report(tmp_path, checkpoint, fake_registry, capsys):
    out = tmp_path / "eval"
    rc = main(
        [
            "evaluate",
            "--model",
            str(checkpoint),
            "--data",
            "decoy-digits",
            "--split",
            "test",
            "--n",
            "6",
            "--explainer",
            "input-grad",
            "--explainer",
            "layered",
            "--layer",
            "conv1",
            "--step",
            "49",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert rc == 0
    assert seen_layers == ["conv1"]
    result = json.loads((out / "metrics.json").read_text())
    assert list(result["summary"]) == ["input-grad", "layered", "random"]
    row = result["summary"]["input-grad"]
    for key in ("epg", "box_epg", "iou", "pointing", "irrelevant_overlap", "deletion", "insertion"):
        assert 0.0 <= row[key] <= 1.0 and row[f"{key}_n"] == 6
    assert len(result["per_image"]["random"]["epg"]) == 6
    report = (out / "report.md").read_text()
    assert "| input-grad |" in report and "| random |" in report and "EPG ↑" in report
    assert (out / "heatmaps.png").exists()
    assert "results in" in capsys.readouterr().out


@pytest.mark.parametrize(
    "change, message",
    [
        ({"--model": "missing.pt"}, "checkpoint not found"),
        ({"--explainer": "nope"}, "unknown explainer 'nope'"),
        ({"--layer": "conv9"}, "no layer named 'conv9'"),
        ({"--data": "nope"}, "unknown dataset"),
    ],
)
def test_evaluate_cli_errors(tmp_path, checkpoint, fake_registry, capsys, change, message):
    out = tmp_path / "eval"
    opts = {
        "--model": str(checkpoint),
        "--data": "decoy-digits",
        "--split": "test",
        "--n": "4",
        "--explainer": "input-grad",
        "--out": str(out),
    }
    opts.update(change)
    if change.get("--model") == "missing.pt":
        opts["--model"] = str(tmp_path / "missing.pt")
    argv = ["evaluate", "--quiet"] + [item for pair in opts.items() for item in pair]
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("error: ") and message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()


def _toy_dataset() -> ImageDataset:
    g = torch.Generator().manual_seed(0)
    images = torch.rand(5, 1, 28, 28, generator=g)
    masks = torch.zeros(5, 28, 28, dtype=torch.bool)
    masks[:, 8:20, 8:20] = True
    decoy = torch.zeros(5, 28, 28, dtype=torch.bool)
    decoy[:3, :4, :4] = True  # images 3 and 4 have no decoy: NaN, left out of the mean
    return ImageDataset(
        images, torch.tensor([0, 1, 2, 3, 4]), masks=masks, extras={"decoy_mask": decoy}, name="toy"
    )


def test_evaluate_explainers_values_match_metrics(tmp_path):
    torch.manual_seed(0)
    model = LeNet().eval()
    ds = _toy_dataset()
    res = evaluate_explainers(
        model,
        ds,
        {"input-grad": _input_gradient},
        n=None,
        out_dir=tmp_path,
        step=49,
        progress=False,
        figure=False,
    )
    maps = _input_gradient(model, ds.images, ds.labels)[:, 0]
    per = res["per_image"]["input-grad"]
    assert torch.allclose(torch.tensor(per["epg"]), epg(maps, ds.masks), atol=1e-6)
    overlap = irrelevant_overlap(maps, ds.extras["decoy_mask"], empty="nan")
    assert all(math.isnan(v) for v in per["irrelevant_overlap"][3:])
    assert torch.allclose(torch.tensor(per["irrelevant_overlap"][:3]), overlap[:3], atol=1e-6)
    assert res["summary"]["input-grad"]["irrelevant_overlap_n"] == 3
    auc = deletion(model, ds.images, maps, targets=ds.labels, step=49).auc
    assert torch.allclose(torch.tensor(per["deletion"]), auc, atol=1e-6)
    saved = json.loads((tmp_path / "metrics.json").read_text())  # strict JSON: NaN -> null
    assert saved["per_image"]["input-grad"]["irrelevant_overlap"][3] is None
    assert (tmp_path / "report.md").exists() and not (tmp_path / "heatmaps.png").exists()


def test_evaluate_explainers_bad_explainer_writes_nothing(tmp_path):
    model = LeNet().eval()
    with pytest.raises(XgirError, match=r"\[N,1,H,W\]"):
        evaluate_explainers(
            model,
            _toy_dataset(),
            {"bad": lambda m, x, t: x[:, 0]},
            out_dir=tmp_path / "out",
            progress=False,
        )
    assert not (tmp_path / "out").exists()
    with pytest.raises(XgirError, match="targets"):
        evaluate_explainers(
            model, _toy_dataset(), {"g": _input_gradient}, targets="top", progress=False
        )
