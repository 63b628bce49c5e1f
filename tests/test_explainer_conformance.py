"""The contract every registered explainer keeps, checked over all of them (in the style of
scikit-learn's ``parametrize_with_checks``): a method registered today is checked today.

For each name in :func:`xgir.explain.available_explainers`:
- output float[N,T,H,W] at the input's size, finite;
- the model's train/eval mode, its parameters and their ``.grad`` untouched;
- the caller's grad mode restored (explaining under ``torch.no_grad()`` works too);
- the same call twice gives the same map (seeded samplers are deterministic);
- a class index out of range is an XgirError, not a raw IndexError / RuntimeError;
- on CUDA (when present) the same shape on the model's device.
"""

from __future__ import annotations

import pytest
import torch

from xgir.errors import XgirError
from xgir.explain import available_explainers, get_explainer
from xgir.models import SmallResNet

N, K, S = 2, 4, 16

# small settings so the suite stays fast; the defaults are checked by each method's own tests
FAST: dict[str, dict] = {
    "ig": {"n_steps": 8},
    "expected-gradients": {"n_samples": 4},
    "occlusion": {"window": 4, "stride": 4},
    "rise": {"n_masks": 64, "s": 4},
    "lime": {"n_samples": 64, "n_segments": 8},
    "iassa": {"iterations": 2},
}


def _params(name: str, x: torch.Tensor) -> dict:
    params = dict(FAST.get(name, {}))
    if name in ("expected-gradients", "deepshap"):
        params["baseline"] = torch.rand(4, *x.shape[1:], generator=torch.Generator().manual_seed(1))
    if name == "ganmex":
        from xgir.models.gan import Generator

        torch.manual_seed(0)
        params["generator"] = Generator(num_classes=K, channels=3, image_size=S, width=4, n_res=1).eval()
    return params


def _targets(name: str, model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        logits = model(x)
    if name == "ganmex":  # its targets are foil classes, != the prediction
        return logits.argsort(1, descending=True)[:, 1:3]
    return logits.topk(2, dim=1).indices


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return SmallResNet(num_classes=K, width=4).eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    coarse = torch.rand(N, 3, 4, 4, generator=torch.Generator().manual_seed(0))  # smooth blobs: SLIC finds segments
    return torch.nn.functional.interpolate(coarse, size=(S, S), mode="bilinear", align_corners=False)


NAMES = sorted(available_explainers())


def test_registry_lists_every_method():
    expected = {"gradcam", "cwox", "saliency", "input-x-gradient", "ig", "expected-gradients", "deeplift",
                "deepshap", "occlusion", "rise", "lime", "iassa", "ganmex", "gradcam++", "xgradcam", "layercam",
                "hirescam", "eigencam", "scorecam", "ablationcam", "lrp", "bcos"}
    assert expected <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_contract(name, mode, model, images):
    model.train(mode == "train")
    try:
        params = _params(name, images)
        t = _targets(name, model, images)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        for p in model.parameters():
            p.grad = None
        explainer = get_explainer(name, **params)
        maps = explainer(model, images, t)
        assert maps.shape == (N, t.shape[1], S, S), f"{name}: shape {tuple(maps.shape)}"
        assert maps.dtype.is_floating_point and torch.isfinite(maps).all()
        assert model.training == (mode == "train"), f"{name} changed the model's mode"
        assert all(p.grad is None for p in model.parameters()), f"{name} left parameter gradients"
        after = model.state_dict()
        assert all(torch.equal(before[k], after[k]) for k in before), f"{name} changed the model's state"
        assert torch.is_grad_enabled()
        again = get_explainer(name, **params)(model, images, t)
        assert torch.allclose(maps, again, atol=1e-6), f"{name}: same inputs, different maps"
    finally:
        model.eval()


@pytest.mark.parametrize("name", NAMES)
def test_grad_mode_restored_under_no_grad(name, model, images):
    params = _params(name, images)
    t = _targets(name, model, images)
    with torch.no_grad():
        maps = get_explainer(name, **params)(model, images, t)
        assert not torch.is_grad_enabled()
    assert maps.shape == (N, t.shape[1], S, S)
    assert torch.isfinite(maps).all()


@pytest.mark.parametrize("name", NAMES)
def test_bad_target_is_a_clear_error(name, model, images):
    params = _params(name, images)
    with pytest.raises(XgirError):
        get_explainer(name, **params)(model, images, torch.full((N, 1), K + 3))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("name", NAMES)
def test_cuda(name, model, images):
    params = {k: (v.cuda() if isinstance(v, torch.Tensor | torch.nn.Module) else v)
              for k, v in _params(name, images).items()}
    gpu_model = model.cuda()
    try:
        t = _targets(name, gpu_model, images.cuda())
        maps = get_explainer(name, **params)(gpu_model, images.cuda(), t)
        assert maps.shape == (N, t.shape[1], S, S) and torch.isfinite(maps).all()
    finally:
        model.cpu()
