import math

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter
from torch import nn

from xgir.errors import XgirError
from xgir.metrics import (
    auc,
    deletion,
    gaussian_blur,
    insertion,
    perturbation_curves,
    step_fractions,
)


class RegionModel(nn.Module):
    """Two classes; P(class 0) = 0.1 + 0.8 * a, a = mean of the image over a 4x4 region R
    (top-left corner of an 8x8 image)."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = x[:, 0, :4, :4].mean((-2, -1)) * self.scale
        p = 0.1 + 0.8 * a
        z = torch.log(p) - torch.log1p(-p)
        return torch.stack([z, torch.zeros_like(z)], dim=1)


def _region_maps() -> torch.Tensor:
    """Map 0 ranks R first, map 1 ranks R last."""
    first = torch.zeros(8, 8)
    first[:4, :4] = 1.0
    return torch.stack([first, 1.0 - first])


def test_deletion_known_curves_and_auc():
    model, x = RegionModel(), torch.ones(2, 1, 8, 8)
    res = deletion(model, x, _region_maps(), step=4)
    # 16 of 64 pixels in R; 4 pixels per step -> 16 steps, 17 points
    first = [0.9, 0.7, 0.5, 0.3] + [0.1] * 13
    last = [0.9] * 13 + [0.7, 0.5, 0.3, 0.1]
    assert torch.allclose(res.curves, torch.tensor([first, last]), atol=1e-5)
    # trapezoid by hand: (1/16) * (0.45 + 0.7 + 0.5 + 0.3 + 12 * 0.1 + 0.05) = 0.2, and 0.8
    assert torch.allclose(res.auc, torch.tensor([0.2, 0.8]), atol=1e-5)


def test_insertion_known_curves_and_auc():
    model, x = RegionModel(), torch.ones(2, 1, 8, 8)
    res = insertion(model, x, _region_maps(), step=4, baseline=0.0)
    assert torch.allclose(res.auc, torch.tensor([0.8, 0.2]), atol=1e-5)
    # the default start is a blur of x: a constant image stays constant -> flat curve
    flat = insertion(model, x, _region_maps(), step=4)
    assert torch.allclose(flat.curves, torch.full((2, 17), 0.9), atol=1e-5)


def test_targets_and_top_class():
    model, x = RegionModel(), torch.ones(1, 1, 8, 8)
    maps = _region_maps()[:1]
    top = deletion(model, x, maps, step=4)  # top class is 0
    other = deletion(model, x, maps, targets=torch.tensor([1]), step=4)
    assert torch.allclose(top.curves + other.curves, torch.ones(1, 17), atol=1e-5)
    assert torch.allclose(deletion(model, x, maps, targets=0, step=4).auc, top.auc)


def _reference(model, x, sal, step, mode, base):
    """A straightforward per-image, per-step loop."""
    n, c, h, w = x.shape
    p = h * w
    out = []
    for i in range(n):
        order = torch.argsort(sal[i].flatten(), descending=True, stable=True)
        cls = model(x[i : i + 1]).argmax(1)
        row = []
        for s in range(math.ceil(p / step) + 1):
            k = min(s * step, p)
            img = (x[i] if mode == "deletion" else base[i]).clone().reshape(c, p)
            src = (base[i] if mode == "deletion" else x[i]).reshape(c, p)
            img[:, order[:k]] = src[:, order[:k]]
            row.append(torch.softmax(model(img.reshape(1, c, h, w)), 1)[0, cls].item())
        out.append(row)
    return torch.tensor(out)


@pytest.mark.parametrize("mode", ["deletion", "insertion"])
def test_batched_matches_per_image_loop(mode):
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 64, 3)
    ).eval()
    x = torch.rand(3, 2, 8, 8)
    sal = torch.rand(3, 8, 8)
    base = torch.rand(3, 2, 8, 8)
    # step 5 does not divide 64: the last step is short; batch_size 7 splits images across chunks
    res = perturbation_curves(model, x, sal, mode, step=5, baseline=base, batch_size=7)
    with torch.no_grad():
        ref = _reference(model, x, sal, 5, mode, base)
    assert res.curves.shape == (3, 14)
    assert torch.allclose(res.curves, ref, atol=1e-5)
    frac = step_fractions(64, 5)
    assert frac[-1] == 1.0 and frac[-2] == pytest.approx(60 / 64)
    assert torch.allclose(
        res.auc, torch.from_numpy(np.trapezoid(ref.numpy(), frac.numpy())).float()
    )


def test_multi_target_maps_and_model_mode_restored():
    model, x = RegionModel(), torch.ones(2, 1, 8, 8)
    maps = _region_maps()
    stacked = torch.stack([maps, maps.flip(0)], dim=1)  # [N=2, T=2, 8, 8]
    model.train()
    res = deletion(model, x, stacked, step=4)
    assert model.training
    assert res.curves.shape == (2, 2, 17) and res.auc.shape == (2, 2)
    assert torch.allclose(res.auc, torch.tensor([[0.2, 0.8], [0.8, 0.2]]), atol=1e-5)
    # a lower-resolution map is upsampled: a 2x2 map with R's quadrant hottest
    low = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    assert deletion(model, x[:1], low, step=4).auc.item() < 0.35


def test_auc_and_blur_reference():
    assert auc(torch.linspace(0, 1, 11)).item() == pytest.approx(0.5)
    assert auc(torch.tensor([1.0, 1.0])).item() == pytest.approx(1.0)
    img = torch.rand(1, 1, 20, 23, dtype=torch.float64)
    ours = gaussian_blur(img, 5.0, radius=5)[0, 0].numpy()
    # scipy 'mirror' = torch 'reflect'; truncate 1.0 * sigma 5 -> 11 taps
    ref = gaussian_filter(img[0, 0].numpy(), sigma=5.0, mode="mirror", truncate=1.0)
    assert np.allclose(ours, ref, atol=1e-10)


def test_bad_inputs():
    model, x = RegionModel(), torch.ones(2, 1, 8, 8)
    maps = _region_maps()
    with pytest.raises(XgirError, match="2 images"):
        deletion(model, x, maps[:1])
    bad = maps.clone()
    bad[0, 0, 0] = float("nan")
    with pytest.raises(XgirError, match="NaN"):
        deletion(model, x, bad)
    with pytest.raises(XgirError, match="step"):
        deletion(model, x, maps, step=0)
    with pytest.raises(XgirError, match="mode"):
        perturbation_curves(model, x, maps, "erase")
    with pytest.raises(XgirError, match="broadcast"):
        deletion(model, x, maps, baseline=torch.zeros(3, 8, 8))
    with pytest.raises(XgirError, match="baseline"):
        deletion(model, x, maps, baseline="noise")
    with pytest.raises(XgirError, match="target classes"):
        deletion(model, x, maps, targets=torch.tensor([0, 5]))
    with pytest.raises(XgirError, match=r"\[N,C,H,W\]"):
        deletion(model, x[0], maps)
