import pytest
import torch
from torch import nn

from _blackbox_models import (
    RegionNet,
    assert_close,
    epg,
    region_images,
    region_mask,
)
from xgir.errors import XgirError
from xgir.explain import get_explainer
from xgir.explain.iassa import IASSA, axis_windows


@pytest.fixture(scope="module")
def setup():
    return RegionNet().eval(), region_images([0, 1], seed=2), torch.tensor([0, 1])


def test_axis_windows_cover_and_overhang():
    lo, hi = axis_windows(32, 45 * 32 / 224, 8 * 32 / 224)
    assert int(lo[0]) < 0 and int(hi[-1]) > 32  # border windows lie partly off the image
    assert bool((hi - lo == 6).all())
    assert bool((lo[1:] > lo[:-1]).all())  # no duplicates
    covered = torch.zeros(32, dtype=torch.bool)
    for a, b in zip(lo.tolist(), hi.tolist(), strict=True):
        covered[max(a, 0):b] = True
    assert bool(covered.all())
    assert 25 <= len(lo) <= 32


def test_round_zero_is_sliding_window_occlusion(setup):
    model, x, _ = setup
    iassa = IASSA(iterations=0, window=90, stride=40, batch_size=7, progress=False)
    targets = [1, (0, 2)]
    heat = iassa(model, x, targets)
    lo, hi = axis_windows(32, 90 * 32 / 224, 40 * 32 / 224)
    total = torch.zeros(2, 2, 32, 32)
    count = torch.zeros(2, 2, 32, 32)
    with torch.no_grad():
        p = torch.softmax(model(x), 1)
        clean = torch.stack([p[:, 1], p[:, 0] + p[:, 2]], 1)
        for r0, r1 in zip(lo.tolist(), hi.tolist(), strict=True):
            for c0, c1 in zip(lo.tolist(), hi.tolist(), strict=True):
                occ = x.clone()
                occ[:, :, max(r0, 0):r1, max(c0, 0):c1] = 0
                q = torch.softmax(model(occ), 1)
                drop = clean - torch.stack([q[:, 1], q[:, 0] + q[:, 2]], 1)
                total[:, :, max(r0, 0):r1, max(c0, 0):c1] += drop[..., None, None]
                count[:, :, max(r0, 0):r1, max(c0, 0):c1] += 1
    assert_close(heat, total / count, atol=1e-6)


def test_attention_blocks_and_normalisation():
    iassa = IASSA(block_size=7, temperature=0.2)
    gen = torch.Generator().manual_seed(0)
    feats = torch.randn(2, 5, 30, generator=gen)
    s = torch.rand(2, 3, 30, generator=gen)
    a = torch.softmax(torch.einsum("ndi,ndj->nij", feats, feats) / 0.2, dim=1)
    assert_close(iassa.attend(feats, s), torch.einsum("nti,nij->ntj", s, a))
    constant = torch.full((2, 1, 30), 0.7)
    assert_close(iassa.attend(feats, constant), constant)  # A's columns sum to 1


def test_refinement_is_adaptive_and_touches_only_har(setup):
    model, x, y = setup
    base = IASSA(iterations=0, progress=False).fit(model, x, y)
    fit = IASSA(iterations=2, progress=False).fit(model, x, y)
    assert len(fit.har) == 2 and len(fit.windows) == 3
    assert fit.windows[1] < fit.windows[0] / 2  # only windows overlapping the HAR
    har = fit.har[0] | fit.har[1]
    assert 0 < float(har.float().mean()) < 0.5
    outside = ~har
    assert torch.equal(fit.heatmaps[outside], base.heatmaps[outside])
    # every HAR pixel lies in or next to the region the model looks at
    grown = nn.functional.max_pool2d(region_mask().float()[None, None], 7, 1, 3)[0, 0] > 0
    assert bool((har & ~grown).sum() == 0)


def test_epg_on_region_model(setup):
    model, x, y = setup
    heat = IASSA(progress=False)(model, x, y)
    for i in range(2):
        assert epg(heat[i, 0], region_mask()) >= 0.7


def test_layers_stop_and_shapes(setup):
    model, x, _ = setup
    out = IASSA(iterations=1, layers=["conv1"], progress=False)(model, x, [0, (1, 2)])
    assert out.shape == (2, 2, 32, 32)
    assert torch.equal(out, IASSA(iterations=1, layers=["conv1"], progress=False)(
        model, x, [0, (1, 2)]))
    with pytest.raises(XgirError, match="no layer named 'conv9'.*conv1"):
        IASSA(iterations=1, layers=["conv9"], progress=False)(model, x, 0)
    stopped = IASSA(iterations=3, stop_tol=0.5, progress=False).fit(model, x, 0)
    assert stopped.windows[-1] == 0  # every map settled: no more windows
    flat = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 3)).eval()  # no conv: pixels
    assert IASSA(iterations=1, progress=False)(flat, x, 1).shape == (2, 1, 32, 32)
    assert get_explainer("iassa", iterations=0, progress=False)(model, x, 0).shape == (2, 1, 32, 32)


def test_errors(setup):
    model, x, y = setup
    iassa = IASSA(iterations=0, progress=False)
    with pytest.raises(XgirError, match="4-D"):
        iassa(model, x[0, 0], 0)
    bad = x.clone()
    bad[0, 0, 5, 5] = float("nan")
    with pytest.raises(XgirError, match="NaN"):
        iassa(model, bad, y)
    with pytest.raises(XgirError, match="lam"):
        IASSA(lam=2.0)
    with pytest.raises(XgirError, match="iterations"):
        IASSA(iterations=-1)
