"""The one Gaussian blur (xgir.data.blur) against scipy, and the same "blur" image everywhere."""

import doctest
import math

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

import xgir.data.blur
from xgir.correct.xgir import XGIRConfig, empty_images
from xgir.data.blur import default_sigma, gaussian_blur
from xgir.errors import XgirError
from xgir.explain import as_targets
from xgir.explain.baselines import BlurBaseline, get_baseline, reference_image
from xgir.metrics.faithfulness import insertion


def _scipy(x: torch.Tensor, sigma: float) -> np.ndarray:
    """scipy.ndimage.gaussian_filter per channel, mode 'mirror', radius ceil(3 sigma)."""
    r = math.ceil(3 * sigma)
    return np.stack([[gaussian_filter(x[i, j].numpy(), sigma, mode="mirror", radius=r)
                      for j in range(x.shape[1])] for i in range(x.shape[0])])


@pytest.mark.parametrize(("h", "w", "sigma"), [(20, 23, 2.5), (28, 28, None), (5, 7, 4.0), (1, 6, 1.0)])
def test_blur_equals_scipy_mirror(h, w, sigma):
    # includes images smaller than the kernel (5x7 with radius 12: mirrored several times)
    x = torch.rand(2, 3, h, w, dtype=torch.float64, generator=torch.Generator().manual_seed(h * w))
    s = default_sigma(h, w) if sigma is None else sigma
    assert np.abs(gaussian_blur(x, sigma).numpy() - _scipy(x, s)).max() < 1e-12


def test_blur_properties_and_errors():
    assert default_sigma(32, 20) == 4.0
    const = torch.full((1, 3, 9, 12), 0.3)
    assert torch.allclose(gaussian_blur(const, 2.0), const)  # weights sum to 1
    x = torch.rand(1, 1, 16, 16)
    assert torch.equal(gaussian_blur(x, 0.0), x)
    assert gaussian_blur(x, 3.0).std() < x.std()
    # the RISE code's kernel: 11 taps (radius 5) of sigma 5 = scipy truncate 1.0
    ref = gaussian_filter(x[0, 0].double().numpy(), 5.0, mode="mirror", truncate=1.0)
    assert np.abs(gaussian_blur(x.double(), 5.0, radius=5)[0, 0].numpy() - ref).max() < 1e-12
    with pytest.raises(XgirError, match="sigma"):
        gaussian_blur(x, -1.0)
    with pytest.raises(XgirError, match=r"\[N,C,H,W\]"):
        gaussian_blur(x[0], 1.0)


def test_blur_is_one_image_for_ig_xgir_and_insertion():
    """IG's "blur" baseline, XGIR's blurred x0 and insertion's start image are one image."""
    x = torch.rand(3, 3, 24, 24, generator=torch.Generator().manual_seed(0))
    want = gaussian_blur(x)  # sigma 24 / 8 = 3 px
    tg = as_targets([0, 1], 3, 4)
    assert torch.equal(BlurBaseline()(x, tg)[:, 1], want)
    assert torch.equal(get_baseline("blur").image(x), want)
    assert torch.equal(reference_image("blur", x), want)
    assert torch.equal(empty_images(x, XGIRConfig(empty="blur").empty), want)

    class Probe(torch.nn.Module):  # records the first batch it sees: insertion's start image
        def __init__(self) -> None:
            super().__init__()
            self.seen: list[torch.Tensor] = []

        def forward(self, z: torch.Tensor) -> torch.Tensor:
            self.seen.append(z.clone())
            return z.mean((2, 3))

    probe = Probe()
    insertion(probe, x, torch.rand(3, 24, 24), targets=0, step=24 * 24, batch_size=1000)
    start = probe.seen[-1].view(3, 2, 3, 24, 24)[:, 0]  # point 0 of each curve: the baseline
    assert torch.allclose(start, want, atol=1e-6)


def test_doctests():
    assert doctest.testmod(xgir.data.blur).failed == 0
