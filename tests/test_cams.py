"""The CAM family (Grad-CAM++, XGrad-CAM, LayerCAM, HiResCAM, Eigen-CAM, Score-CAM, Ablation-CAM):
equality with pytorch-grad-cam, batching over images and targets, options and errors.

pytorch-grad-cam does not import beside xgir's pinned torch (it needs torchvision, OpenCV and
ttach), so its maps were recorded once by tests/fixtures/make_cam_lrp_reference.py into
tests/fixtures/pytorch_grad_cam_reference.npz (SmallResNet and LeNet in float32, the pretrained
EfficientNet-Lite0 in float64 at 96 px, two layers each). Each map is compared before the peer's
min-max scaling (its ``get_cam_image`` after its ReLU, at the layer's resolution) to 1e-5 of the
map's maximum, and after it (min-max scaled, resized to the input, min-max scaled again; recorded for
the small models) to 1e-5.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from xgir.errors import XgirError
from xgir.explain import get_explainer
from xgir.explain.cams import eigen_cam, gradient_cam
from xgir.explain.gradcam import grad_cam
from xgir.explain.perturbation_cams import ablation_cam, score_cam
from xgir.models import LeNet, SmallResNet

TOL = 1e-5
REF = Path(__file__).parent / "fixtures" / "pytorch_grad_cam_reference.npz"
GRADIENT = ("gradcam++", "xgradcam", "layercam", "hirescam")


def _checksum(model: torch.nn.Module) -> float:
    return float(sum(p.detach().double().abs().sum() for p in model.state_dict().values() if p.is_floating_point()))


@pytest.fixture(scope="module")
def ref():
    return dict(np.load(REF))


def small_resnet() -> torch.nn.Module:
    torch.manual_seed(0)
    model = SmallResNet(in_channels=3, num_classes=6, width=8, blocks=1).eval()
    with torch.no_grad():
        model.fc.weight.mul_(10.0)
    return model


def lenet() -> torch.nn.Module:
    torch.manual_seed(0)
    return LeNet(in_channels=1, num_classes=10, image_size=28, width=8, hidden=32).eval()


@pytest.fixture(scope="module")
def models(ref):
    found = {"resnet": small_resnet(), "lenet": lenet()}
    for name, model in found.items():  # the recorded models are these (same seeds, same torch)
        assert abs(_checksum(model) - float(ref[f"{name}/checksum"])) < 1e-3, f"{name} differs from the recording"
    return found


@pytest.fixture(scope="module")
def lite0(ref):
    from xgir.models import load_model
    from xgir.models.load import attach_normalization

    # the inputs were recorded normalised: the network without xgir's normalisation pre-hook
    net = attach_normalization(load_model("efficientnet-lite0").model, (), ()).double().eval()
    assert abs(_checksum(net) - float(ref["lite0/checksum"])) < 1e-3 * float(ref["lite0/checksum"])
    return net


def ours(method: str, model, x, targets, layer: str, **options) -> torch.Tensor:
    if method in GRADIENT:
        return gradient_cam(model, x, targets, layer, method=method, **options)
    fn = {"gradcam": grad_cam, "eigencam": eigen_cam, "scorecam": score_cam, "ablationcam": ablation_cam}[method]
    return fn(model, x, targets, layer, **options)


def _min_max(maps: torch.Tensor) -> torch.Tensor:
    flat = maps.flatten(-2)
    lo, hi = flat.amin(-1)[..., None, None], flat.amax(-1)[..., None, None]
    return (maps - lo) / (1e-7 + hi - lo)


def peer_scaling(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """pytorch-grad-cam's output from a map at the layer: min-max per map, a bilinear resize
    (``scale_cam_image``), then min-max again (``aggregate_multi_layers``)."""
    n, t = maps.shape[:2]
    up = F.interpolate(_min_max(maps).reshape(n * t, 1, *maps.shape[-2:]), size=size, mode="bilinear",
                       align_corners=False)
    return _min_max(up.reshape(n, t, *size))


def _cases(names: tuple[str, ...]) -> list[tuple[str, str, str]]:
    keys = np.load(REF).files
    return [(k.split("/")[0], k.split("/")[1], k.split("/")[2]) for k in keys
            if k.count("/") == 3 and k.endswith("/raw") and k.split("/")[0] in names]


def _check(model, ref, name, layer, method):
    x = torch.from_numpy(ref[f"{name}/x"]).to(next(model.parameters()).dtype)
    targets = torch.from_numpy(ref[f"{name}/targets"])
    raw = torch.from_numpy(ref[f"{name}/{layer}/{method}/raw"]).double()
    mine = ours(method, model, x, targets, layer, upsample=False).double()
    assert mine.shape == raw.shape
    assert float(raw.abs().max()) > 0
    assert torch.allclose(mine, raw, atol=TOL * float(raw.abs().max()), rtol=0), \
        f"{method} at {layer}: {float((mine - raw).abs().max() / raw.abs().max()):.2e} of the maximum"
    if f"{name}/{layer}/{method}/final" in ref:  # recorded for the small models
        final = torch.from_numpy(ref[f"{name}/{layer}/{method}/final"]).double()
        scaled = peer_scaling(mine, tuple(x.shape[-2:]))
        assert torch.allclose(scaled, final, atol=TOL, rtol=0), f"{float((scaled - final).abs().max()):.2e}"


@pytest.mark.parametrize("name,layer,method", _cases(("resnet", "lenet")))
def test_equals_pytorch_grad_cam(models, ref, name, layer, method):
    _check(models[name], ref, name, layer, method)


@pytest.mark.slow
@pytest.mark.parametrize("name,layer,method", _cases(("lite0",)))
def test_equals_pytorch_grad_cam_on_efficientnet_lite0(lite0, ref, name, layer, method):
    _check(lite0, ref, name, layer, method)


@pytest.mark.parametrize("method", [*GRADIENT, "scorecam", "ablationcam"])
def test_cluster_and_weighted_targets_equal_pytorch_grad_cam(models, ref, method):
    model = models["resnet"]
    x = torch.from_numpy(ref["resnet/x"])
    mine = ours(method, model, x, [(1, 4), torch.linspace(-1, 1, 6)], "layer3", upsample=False)
    for j, kind in enumerate(("cluster", "weighted")):
        raw = torch.from_numpy(ref[f"resnet/layer3/{method}/{kind}/raw"])[:, 0]
        assert float(raw.abs().max()) > 0
        assert torch.allclose(mine[:, j], raw, atol=TOL * float(raw.abs().max()), rtol=0)


@pytest.mark.parametrize("method", [*GRADIENT, "eigencam", "scorecam", "ablationcam"])
def test_batched_equals_separate_calls(models, method):
    model = models["resnet"]
    x = torch.rand(3, 3, 24, 24, generator=torch.Generator().manual_seed(5))
    targets = torch.tensor([[0, 3], [1, 2], [4, 0]])
    batched = ours(method, model, x, targets, "layer2")
    separate = torch.cat([ours(method, model, x, targets[:, j], "layer2") for j in range(2)], 1)
    one = ours(method, model, x[1:2], targets[1:2], "layer2")  # no mixing across the batch
    scale = float(batched.abs().max())
    assert scale > 0
    assert torch.allclose(batched, separate, atol=1e-6 * scale)
    assert torch.allclose(batched[1:2], one, atol=1e-6 * scale)
    if method in GRADIENT:
        loop = ours(method, model, x, targets, "layer2", strategy="loop")
        assert torch.allclose(batched, loop, atol=1e-6 * scale)


@pytest.mark.parametrize("method", ["scorecam", "ablationcam"])
def test_perturbation_batch_size_changes_nothing(models, method):
    model = models["lenet"]
    x = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(6))
    a = ours(method, model, x, [1, 2], "pool2", batch_size=5)
    b = ours(method, model, x, [1, 2], "pool2", batch_size=256)
    assert torch.allclose(a, b, atol=1e-6 * float(a.abs().max()))


@pytest.mark.parametrize("method", GRADIENT)
def test_differentiable_maps_train_the_model(models, method):
    model = models["resnet"]
    x = torch.rand(2, 3, 24, 24, generator=torch.Generator().manual_seed(7))
    plain = gradient_cam(model, x, [0, 3], "layer2", method=method, relu=False)
    diff = gradient_cam(model, x, [0, 3], "layer2", method=method, relu=False, differentiable=True)
    assert diff.requires_grad and not plain.requires_grad
    assert torch.allclose(diff, plain, atol=1e-6 * float(plain.abs().max()))
    g_stem, g_fc = torch.autograd.grad(diff.square().sum(), [model.stem[0].weight, model.fc.weight])
    assert float(g_stem.abs().sum()) > 0 and float(g_fc.abs().sum()) > 0
    assert all(p.grad is None for p in model.parameters())


def test_eigen_cam_is_class_agnostic_and_its_options(models):
    model = models["resnet"]
    x = torch.rand(2, 3, 24, 24, generator=torch.Generator().manual_seed(8))
    maps = eigen_cam(model, x, [0, 3, 5], "layer3", relu=False)
    assert torch.equal(maps[:, 0], maps[:, 1]) and torch.equal(maps[:, 0], maps[:, 2])
    by_torch = eigen_cam(model, x, 0, "layer3", relu=False, svd="torch")
    assert torch.allclose(by_torch.abs(), maps[:, :1].abs(), atol=1e-5)  # the same up to the sign
    corrected = eigen_cam(model, x, 0, "layer3", relu=False, sign_correction=True)
    flat = corrected.flatten(1)
    assert bool((flat.amax(1) >= flat.amin(1).abs()).all())
    diff = eigen_cam(model, x, 0, "layer3", svd="torch", differentiable=True)
    assert diff.requires_grad
    with pytest.raises(XgirError, match="svd='torch'"):
        eigen_cam(model, x, 0, "layer3", differentiable=True)
    with pytest.raises(XgirError, match="svd"):
        get_explainer("eigencam", svd="lapack")


def test_registry_names_and_cli_methods():
    from xgir.cli.explain import METHODS

    for name in ("gradcam++", "xgradcam", "layercam", "hirescam", "eigencam", "scorecam", "ablationcam", "lrp"):
        assert name in METHODS
    with pytest.raises(XgirError, match="unknown gradient CAM"):
        gradient_cam(lenet(), torch.rand(1, 1, 28, 28), 0, "conv2", method="gradcam+++")


def test_ablation_cam_zero_score_gives_zero_weights():
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(2, 2)).eval()
    with torch.no_grad():
        net[4].weight.zero_()
        net[4].bias.zero_()  # every score is exactly 0: the ratio (y - y_k) / y is undefined
    maps = ablation_cam(net, torch.rand(2, 1, 8, 8), [0, 1], "1")
    assert torch.isfinite(maps).all() and float(maps.abs().max()) == 0.0
