import numpy as np
import pytest
import torch
from sklearn.linear_model import Ridge
from sklearn.metrics.pairwise import cosine_distances

from _blackbox_models import (
    RegionNet,
    assert_close,
    epg,
    region_images,
    region_mask,
)
from xgir.errors import XgirError
from xgir.explain import get_explainer
from xgir.explain.lime import LIME


@pytest.fixture(scope="module")
def setup():
    return RegionNet().eval(), region_images([0, 2], seed=1), torch.tensor([0, 2])


@pytest.fixture(scope="module")
def fitted(setup):
    model, x, _ = setup
    lime = LIME(n_samples=300, n_segments=40, seed=0, batch_size=128, progress=False)
    return lime, lime.fit(model, x, [0, (1, 2), torch.tensor([0.5, 0.0, 1.0])])


def test_segments_start_at_zero_without_gaps(setup):
    _, x, _ = setup
    seg = LIME(n_segments=40).segments(x)
    assert seg.shape == (2, 32, 32) and seg.dtype == torch.long
    for s in seg:
        labels = torch.unique(s)
        assert int(labels[0]) == 0
        assert torch.equal(labels, torch.arange(len(labels)))
        assert len(labels) > 10
    grey = LIME(n_segments=30).segments(x[:, :1])
    assert int(grey.min()) == 0 and int(grey.max()) > 5


def test_samples_kernel_and_ridge_match_reference(fitted):
    lime, fit = fitted
    n_seg = fit.n_segments.tolist()
    for i, k in enumerate(n_seg):
        z = fit.samples[i, :, :k].numpy()
        assert (z[0] == 1).all() and set(np.unique(z)) == {0.0, 1.0}
        assert float(fit.samples[i, :, k:].abs().sum()) == 0  # padding columns
        d = cosine_distances(z, np.ones((1, k)))[:, 0]
        kernel = np.sqrt(np.exp(-(d ** 2) / 0.25 ** 2))
        np.testing.assert_allclose(fit.weights[i].numpy(), kernel, atol=1e-6)
        for t in range(3):
            ref = Ridge(alpha=1.0, fit_intercept=True).fit(z, fit.scores[i, :, t].double().numpy(),
                                                           sample_weight=kernel)
            np.testing.assert_allclose(fit.coef[i, :k, t].numpy(), ref.coef_, atol=1e-5)
            np.testing.assert_allclose(float(fit.intercept[i, t]), ref.intercept_, atol=1e-5)
        # the heatmap paints each superpixel with its coefficient
        seg = fit.segments[i]
        assert_close(fit.heatmaps[i], fit.coef[i, seg].permute(2, 0, 1))


def test_scores_are_probabilities_of_the_samples(setup, fitted):
    model, x, _ = setup
    lime, fit = fitted
    i, s = 1, 7
    shown = fit.samples[i, s][fit.segments[i]]  # [H,W]
    fill = x[i].mean((1, 2))[:, None, None]
    xs = x[i] * shown + fill * (1 - shown)
    with torch.no_grad():
        p = torch.softmax(model(xs[None]), 1)[0]
    expected = torch.stack([p[0], p[1] + p[2], 0.5 * p[0] + p[2]])
    assert_close(fit.scores[i, s], expected)
    with torch.no_grad():
        p0 = torch.softmax(model(x[i:i + 1]), 1)[0]
    # the first sample shows every superpixel: the image itself
    assert_close(fit.scores[i, 0], torch.stack([p0[0], p0[1] + p0[2], 0.5 * p0[0] + p0[2]]))


def test_epg_on_region_model(setup):
    model, x, y = setup
    heat = LIME(n_samples=400, n_segments=50, progress=False)(model, x, y)
    mask = region_mask()
    for i in range(2):
        assert epg(heat[i, 0], mask) >= 0.7


def test_shapes_determinism_and_grey(setup):
    model, x, y = setup
    lime = LIME(n_samples=60, n_segments=30, seed=4, progress=False)
    out = lime(model, x, [0, (1, 2)])
    assert out.shape == (2, 2, 32, 32)
    assert torch.equal(out, lime(model, x, [0, (1, 2)]))
    other = LIME(n_samples=60, n_segments=30, seed=5, progress=False)(model, x, [0, (1, 2)])
    assert not torch.equal(out, other)
    assert lime(model, x, y).shape == (2, 1, 32, 32)
    grey_model = RegionNet(in_channels=1).eval()
    grey = LIME(n_samples=40, n_segments=20, fill=0.0, progress=False)(grey_model, x[:, :1], 1)
    assert grey.shape == (2, 1, 32, 32) and bool(torch.isfinite(grey).all())
    assert get_explainer("lime", n_samples=20, progress=False)(model, x, y).shape == (2, 1, 32, 32)


def test_errors(setup):
    model, x, y = setup
    lime = LIME(n_samples=10, progress=False)
    with pytest.raises(XgirError, match="4-D"):
        lime(model, x[0], 0)
    bad = x.clone()
    bad[1, 2, 3, 4] = float("inf")
    with pytest.raises(XgirError, match="NaN or infinite"):
        lime(model, bad, y)
    with pytest.raises(XgirError, match="fill"):
        LIME(fill="blur")
    assert LIME(fill="zero").fill == "zeros"  # the baseline vocabulary, with its alias
    with pytest.raises(XgirError, match="fill needs"):
        LIME(n_samples=10, fill=[0.1, 0.2], progress=False)(model, x, y)
    with pytest.raises(XgirError, match="alpha"):
        LIME(alpha=0)
