"""Grad-CAM: equality with Captum's LayerGradCam, batching, errors, localisation (EPG)."""

import pytest
import torch
from captum.attr import LayerAttribution, LayerGradCam

from xgir.errors import XgirError
from xgir.explain import get_explainer
from xgir.explain.gradcam import GradCAM, grad_cam
from xgir.models import SmallResNet, get_module
from xgir.testing import GatedRegionNet as RegionNet
from xgir.testing import gated_region_mask as region_mask

TOL = 1e-5


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    model = SmallResNet(in_channels=3, num_classes=6, width=8, blocks=1).eval()
    with torch.no_grad():  # larger logits so that the maps are O(1) and 1e-5 is a real check
        model.fc.weight.mul_(1000.0)
    return model


@pytest.fixture(scope="module")
def images():
    return torch.rand(4, 3, 24, 24, generator=torch.Generator().manual_seed(1))


def captum_cam(forward, model, layer, x, target, relu=True, upsample=True):
    cam = LayerGradCam(forward, get_module(model, layer)).attribute(
        x, target=target, relu_attributions=relu)
    if upsample:
        cam = LayerAttribution.interpolate(cam, tuple(x.shape[-2:]), interpolate_mode="bilinear")
    return cam[:, 0].detach()


@pytest.mark.parametrize("layer", ["layer3", "layer2", "layer2.0.conv1"])
@pytest.mark.parametrize("relu,upsample", [(True, True), (False, False)])
def test_class_targets_equal_captum(resnet, images, layer, relu, upsample):
    targets = torch.tensor([[0, 3, 5], [1, 1, 2], [4, 0, 3], [5, 2, 1]])
    ours = grad_cam(resnet, images, targets, layer, relu=relu, upsample=upsample)
    ref = torch.stack([captum_cam(resnet, resnet, layer, images, targets[:, j], relu, upsample)
                       for j in range(3)], dim=1)
    assert ours.shape == ref.shape
    assert float(ref.abs().max()) > 0.02  # maps of size >= 2e3 x TOL: not near-zero maps
    assert torch.allclose(ours, ref, atol=TOL, rtol=0)


def test_weighted_and_cluster_targets_equal_captum(resnet, images):
    g = torch.Generator().manual_seed(2)
    w1, w2 = torch.randn(6, generator=g), torch.randn(6, generator=g)
    cluster = (1, 4)
    ours = grad_cam(resnet, images, [w1, cluster, w2], "layer3", relu=False)
    ref = torch.stack([
        captum_cam(lambda x: resnet(x) @ w1, resnet, "layer3", images, None, relu=False),
        captum_cam(lambda x: resnet(x)[:, list(cluster)].logsumexp(1), resnet, "layer3", images,
                   None, relu=False),
        captum_cam(lambda x: resnet(x) @ w2, resnet, "layer3", images, None, relu=False),
    ], dim=1)
    assert float(ref.abs().max()) > 0.05
    assert torch.allclose(ours, ref, atol=TOL, rtol=0)


def test_batched_equals_separate_calls_and_loop(resnet, images):
    targets = torch.tensor([[0, 3], [1, 2], [4, 0], [5, 1]])
    batched = grad_cam(resnet, images, targets, "layer2")
    loop = grad_cam(resnet, images, targets, "layer2", strategy="loop")
    separate = torch.cat([grad_cam(resnet, images, targets[:, j], "layer2") for j in range(2)], 1)
    assert torch.allclose(batched, separate, atol=1e-6)
    assert torch.allclose(batched, loop, atol=1e-6)
    one = grad_cam(resnet, images[2:3], targets[2:3], "layer2")  # no mixing across the batch
    assert torch.allclose(batched[2:3], one, atol=1e-6)


def test_registry_default_layer_modes_and_grad_state(resnet, images):
    explainer = get_explainer("gradcam")
    assert isinstance(explainer.explainer, GradCAM)  # wrapped: runs in eval mode
    with torch.no_grad():  # works inside no_grad and restores it
        maps = explainer(resnet, images, 2)
        assert not torch.is_grad_enabled()
    assert maps.shape == (4, 1, 24, 24) and bool((maps >= 0).all())
    assert torch.allclose(maps, grad_cam(resnet, images, 2, "layer3"))
    assert not resnet.training  # mode untouched
    assert all(p.grad is None for p in resnet.parameters())  # no parameter gradients written


# ---- the differentiable option (what the Grad-CAM guidance losses train through) ----------

@pytest.mark.parametrize("strategy", ["batched", "loop"])
def test_differentiable_equals_plain_and_reaches_every_layer(resnet, images, strategy):
    targets = torch.tensor([[0, 3], [1, 2], [4, 0], [5, 1]])
    plain = grad_cam(resnet, images, targets, "layer2", relu=False, strategy=strategy)
    diff = grad_cam(resnet, images, targets, "layer2", relu=False, strategy=strategy, differentiable=True)
    assert not plain.requires_grad and diff.requires_grad
    assert float(plain.abs().max()) > 0.05
    assert torch.allclose(diff, plain, atol=1e-6, rtol=0)
    (g_stem, g_block, g_fc) = torch.autograd.grad(diff.square().sum(), [
        resnet.stem[0].weight, resnet.layer2[0].conv1.weight, resnet.fc.weight])
    # before the layer (stem), inside it and after it (fc, through alpha): all non-zero
    assert all(float(g.abs().sum()) > 0 for g in (g_stem, g_block, g_fc))
    assert all(p.grad is None for p in resnet.parameters())


class _SmoothNet(torch.nn.Module):
    """conv -> tanh -> conv (the Grad-CAM layer) -> tanh -> mean pool -> linear: smooth, so its
    maps have second derivatives everywhere (gradcheck needs that; ReLU nets are piecewise)."""

    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(2, 3, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(3, 3, 3)
        self.fc = torch.nn.Linear(3, 4)

    def forward(self, x):
        a = torch.tanh(self.conv2(torch.tanh(self.conv1(x))))
        return self.fc(a.mean((2, 3)))


def test_differentiable_gradient_matches_finite_differences():
    torch.manual_seed(0)
    net = _SmoothNet().double().eval()
    x = torch.rand(2, 2, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    names = [n for n, _ in net.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_(True) for p in net.parameters())

    class Functional(torch.nn.Module):  # the net with the parameters gradcheck perturbs
        def __init__(self):
            super().__init__()
            self.net = net
            self.weights = dict(zip(names, params, strict=True))

        def forward(self, inp):
            return torch.func.functional_call(self.net, self.weights, (inp,))

    model = Functional()

    def maps(*weights):
        model.weights = dict(zip(names, weights, strict=True))
        return grad_cam(model, x, torch.tensor([[1, 3], [0, 2]]), "net.conv2", relu=False,
                        differentiable=True)

    out = maps(*params)
    assert out.shape == (2, 2, 6, 6) and out.dtype == torch.float64
    assert torch.allclose(out, grad_cam(model, x, torch.tensor([[1, 3], [0, 2]]), "net.conv2", relu=False),
                          atol=1e-12, rtol=0)
    grads = dict(zip(names, torch.autograd.grad(out.square().sum(), params, allow_unused=True), strict=True))
    assert grads.pop("fc.bias") is None  # d logit / dA does not involve the output bias
    assert all(float(g.abs().sum()) > 1e-6 for g in grads.values())  # every other one, conv1 included
    assert torch.autograd.gradcheck(maps, params, eps=1e-6, atol=1e-7, rtol=1e-5)


def test_errors(resnet, images):
    with pytest.raises(XgirError, match="available: .*layer3"):
        grad_cam(resnet, images, 0, "layer9")
    with pytest.raises(XgirError, match=r"\[N,K,u,v\]"):
        grad_cam(resnet, images, 0, "fc")
    bad = images.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(XgirError, match="NaN"):
        grad_cam(resnet, bad, 0, "layer3")
    with pytest.raises(XgirError, match=r"\[N,C,H,W\]"):
        grad_cam(resnet, images[0], 0, "layer3")
    with pytest.raises(XgirError, match="out of range"):
        grad_cam(resnet, images, 6, "layer3")
    with pytest.raises(XgirError, match="bad parameters"):
        get_explainer("gradcam", layers="layer3")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_runs_on_cuda(resnet, images):
    model = SmallResNet(num_classes=6, width=8).eval()
    model.load_state_dict(resnet.state_dict())
    cpu = grad_cam(model, images, torch.tensor([[0, 1]] * 4), "layer3")
    # cuDNN convolutions use TF32 by default on Ampere and later (rel. error ~1e-3): compare in
    # full float32, then check that the TF32 default stays within its own tolerance
    flags = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        gpu = grad_cam(model.cuda(), images.cuda(), torch.tensor([[0, 1]] * 4), "layer3")
        assert gpu.is_cuda and torch.allclose(gpu.cpu(), cpu, atol=1e-4)
        diff = grad_cam(model, images.cuda(), torch.tensor([[0, 1]] * 4), "layer3", differentiable=True)
        assert diff.requires_grad and torch.allclose(diff.detach(), gpu, atol=1e-5)
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
        tf32 = grad_cam(model, images.cuda(), torch.tensor([[0, 1]] * 4), "layer3").cpu()
        assert (tf32 - cpu).abs().max() <= 1e-2 * cpu.abs().max()
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = flags


# ---- localisation: a model that looks only at a known region -------------------------------

def epg(maps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Energy-based pointing game per map: sum(A+ * M) / sum(A+)."""
    pos = maps.clamp(min=0)
    return (pos * mask).sum(dim=(-2, -1)) / pos.sum(dim=(-2, -1))


@pytest.mark.parametrize("name,params", [
    ("gradcam", {"layer": "conv2"}),
    ("ig", {"n_steps": 32}),
    ("saliency", {}),
    ("deeplift", {}),
    ("occlusion", {"window": 4, "stride": 2}),
])
def test_epg_on_region_model(name, params):
    model = RegionNet().eval()
    x = torch.rand(6, 1, 16, 16, generator=torch.Generator().manual_seed(3))
    maps = get_explainer(name, **params)(model, x, torch.tensor([[0, 2]] * 6))
    scores = epg(maps, region_mask())
    assert maps.shape == (6, 2, 16, 16)
    assert bool((scores >= 0.7).all()), scores
    # the same region transposed would catch swapped axes: there the mass must be small
    assert bool((epg(maps, region_mask().T) < 0.5).all())
