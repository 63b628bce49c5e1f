import pytest
import torch

from _blackbox_models import (
    RegionNet,
    assert_close,
    epg,
    region_images,
    region_mask,
)
from xgir.errors import XgirError
from xgir.explain import get_explainer
from xgir.explain.rise import RISE


@pytest.fixture(scope="module")
def setup():
    return RegionNet().eval(), region_images([0, 1]), torch.tensor([0, 1])


def _scores(probs):
    """Scores of the targets [2, (0, 1), weights (0.5, 0, 1)] from probabilities [N,3]."""
    return torch.stack([probs[:, 2], probs[:, 0] + probs[:, 1], 0.5 * probs[:, 0] + probs[:, 2]], 1)


def test_formula_matches_direct_sum(setup):
    model, x, _ = setup
    targets = [2, (0, 1), torch.tensor([0.5, 0.0, 1.0])]  # class, cluster, weights
    rise = RISE(n_masks=13, s=4, p=0.4, seed=3, batch_size=10, progress=False)
    sal = rise(model, x, targets)
    masks = rise.masks(32, 32)
    direct = torch.zeros(2, 3, 32, 32)
    with torch.no_grad():
        for m in masks:
            probs = torch.softmax(model(x * m), 1)  # [N,K]
            direct += _scores(probs)[..., None, None] * m
    direct /= 13 * 0.4
    assert_close(sal, direct)
    centred = RISE(n_masks=13, s=4, p=0.4, seed=3, center=True, progress=False)(model, x, targets)
    with torch.no_grad():
        mean = torch.stack([torch.softmax(model(x * m), 1) for m in masks]).mean(0)
    expected = direct - _scores(mean)[..., None, None] * masks.sum(0) / (13 * 0.4)
    assert_close(centred, expected)


def test_masks_seeded_and_in_range():
    a = RISE(n_masks=400, s=8, p=0.5, seed=1).masks(20, 28)
    b = RISE(n_masks=400, s=8, p=0.5, seed=1).masks(20, 28)
    c = RISE(n_masks=400, s=8, p=0.5, seed=2).masks(20, 28)
    assert a.shape == (400, 20, 28)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert float(a.min()) >= 0 and float(a.max()) <= 1
    assert abs(float(a.mean()) - 0.5) < 0.03  # keep probability
    # smooth masks: neighbouring pixels agree far more than independent cells would
    assert float((a[:, :, 1:] - a[:, :, :-1]).abs().mean()) < 0.2


def test_shapes_and_determinism(setup):
    model, x, y = setup
    rise = RISE(n_masks=40, seed=5, progress=False)
    assert rise(model, x, y).shape == (2, 1, 32, 32)
    out = rise(model, x, [0, (1, 2)])
    assert out.shape == (2, 2, 32, 32)
    assert torch.equal(out, rise(model, x, [0, (1, 2)]))
    assert not torch.equal(out, RISE(n_masks=40, seed=6, progress=False)(model, x, [0, (1, 2)]))
    per_image = rise(model, x, torch.tensor([[0, 1], [1, 2]]))
    assert per_image.shape == (2, 2, 32, 32)
    # grouping of images per forward pass does not change the result
    small = RISE(n_masks=40, seed=5, batch_size=1, progress=False)(model, x, [0, (1, 2)])
    assert_close(small, out)


def test_epg_on_region_model(setup):
    model, x, y = setup
    mask = region_mask()
    centred = RISE(n_masks=3000, s=16, center=True, progress=False)(model, x[:1], y[:1])
    assert epg(centred[0, 0], mask) >= 0.7
    # the raw (paper) map carries an offset of about mean P on every pixel, so its EPG is low,
    # (about the region's area fraction), but it is still larger inside the region
    raw = RISE(n_masks=3000, s=16, progress=False)(model, x[:1], y[:1])[0, 0]
    assert float(raw[mask].mean()) > float(raw[~mask].mean())
    assert epg(raw, mask) < 0.3


def test_registry_and_errors(setup):
    model, x, y = setup
    assert get_explainer("rise", n_masks=8, progress=False)(model, x, y).shape == (2, 1, 32, 32)
    rise = RISE(n_masks=8, progress=False)
    with pytest.raises(XgirError, match="4-D"):
        rise(model, x[0], 0)
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(XgirError, match="NaN"):
        rise(model, bad, y)
    with pytest.raises(XgirError, match="out of range"):
        rise(model, x, 7)
    with pytest.raises(XgirError, match="p"):
        RISE(p=1.5)
    with pytest.raises(XgirError, match="n_masks"):
        RISE(n_masks=0)
