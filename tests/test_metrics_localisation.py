import pytest
import torch

from xgir.errors import XgirError
from xgir.metrics import (
    box_epg,
    boxes_from_masks,
    default_tolerance,
    epg,
    iou,
    irrelevant_overlap,
    pointing_game,
    seg_epg,
)


def _left_half_mask(n: int = 1, h: int = 4, w: int = 4) -> torch.Tensor:
    m = torch.zeros(n, h, w, dtype=torch.bool)
    m[..., : w // 2] = True
    return m


def test_epg_inside_outside_half():
    mask = _left_half_mask(3)
    maps = torch.zeros(3, 4, 4)
    maps[0, :, :2] = 1.0  # all inside
    maps[1, :, 2:] = 2.0  # all outside
    maps[2] = 0.5  # uniform: half the mass inside
    assert torch.allclose(epg(maps, mask), torch.tensor([1.0, 0.0, 0.5]))


def test_epg_ignores_negative_and_scores_no_positive_mass_zero():
    mask = _left_half_mask(2)
    maps = torch.zeros(2, 4, 4)
    maps[0, :, :2] = 1.0
    maps[0, :, 2:] = -5.0  # negative attribution outside does not count
    maps[1] = -1.0  # no positive mass at all
    assert torch.allclose(epg(maps, mask), torch.tensor([1.0, 0.0]))


def test_epg_targets_broadcast_and_upsampling():
    mask = _left_half_mask(2)
    maps = torch.zeros(2, 3, 4, 4)
    maps[:, 0, :, :2] = 1.0
    maps[:, 1, :, 2:] = 1.0
    maps[:, 2] = 1.0
    out = epg(maps, mask)
    assert out.shape == (2, 3)
    assert torch.allclose(out, torch.tensor([[1.0, 0.0, 0.5]] * 2))
    # a 2x2 map upsampled bilinearly to 4x4 gives columns 1, 0.75, 0.25, 0
    low = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]])
    assert torch.allclose(epg(low, mask[:1]), torch.tensor([1.75 / 2.0]))


def test_seg_vs_box_epg():
    seg = torch.zeros(1, 6, 6, dtype=torch.bool)
    seg[0, 1:5, 1] = True  # an L shape: vertical bar ...
    seg[0, 4, 1:5] = True  # ... and horizontal bar; 7 pixels, box rows 1-4, cols 1-4
    box = boxes_from_masks(seg)
    expected = torch.zeros(1, 6, 6, dtype=torch.bool)
    expected[0, 1:5, 1:5] = True
    assert torch.equal(box, expected)
    maps = expected.float()  # uniform over the box (16 pixels)
    assert torch.allclose(box_epg(maps, seg), torch.tensor([1.0]))
    assert torch.allclose(seg_epg(maps, seg), torch.tensor([7 / 16]))
    assert not boxes_from_masks(torch.zeros(2, 3, 3, dtype=torch.bool)).any()


def test_iou_exact_cases():
    mask = torch.zeros(1, 8, 8, dtype=torch.bool)
    mask[0, :4, :] = True  # 32 pixels
    maps = torch.zeros(1, 8, 8)
    maps[0, :4, :4] = 1.0  # 16 salient pixels inside the mask
    assert torch.allclose(iou(maps, mask), torch.tensor([0.5]))
    maps[0, 4:, :4] = 0.4  # below the threshold after min-max normalisation
    assert torch.allclose(iou(maps, mask), torch.tensor([0.5]))
    assert torch.allclose(iou(maps, mask, threshold=0.3), torch.tensor([16 / 48]))
    assert torch.allclose(iou(mask.float(), mask), torch.tensor([1.0]))
    # no positive variation: no salient region
    assert torch.allclose(iou(-torch.ones(1, 8, 8), mask), torch.tensor([0.0]))
    with pytest.raises(XgirError, match="threshold"):
        iou(maps, mask, threshold=1.5)


def test_pointing_game_tolerance():
    mask = torch.zeros(1, 28, 28, dtype=torch.bool)
    mask[0, 10:20, 13:20] = True
    maps = torch.zeros(1, 28, 28)
    maps[0, 12, 10] = 1.0  # 3 px left of the mask
    assert pointing_game(maps, mask, tolerance=2).item() == 0.0
    assert pointing_game(maps, mask, tolerance=3).item() == 1.0
    assert pointing_game(maps, mask, tolerance=0).item() == 0.0
    assert default_tolerance(224) == 15.0 and default_tolerance(28) == pytest.approx(1.875)
    assert pointing_game(maps, mask).item() == 0.0  # 3 px > 1.875 px
    maps[0, 12, 12] = 2.0  # 1 px away: within the default
    assert pointing_game(maps, mask).item() == 1.0
    maps[0, 15, 15] = 3.0  # inside
    assert pointing_game(maps, mask, tolerance=0).item() == 1.0
    # a constant map points nowhere
    assert pointing_game(torch.ones(1, 28, 28), mask).item() == 0.0
    # diagonal distance is Euclidean: (3, 4) -> 5 px
    maps = torch.zeros(1, 28, 28)
    maps[0, 7, 9] = 1.0  # nearest mask pixel (10, 13)
    assert pointing_game(maps, mask, tolerance=4.9).item() == 0.0
    assert pointing_game(maps, mask, tolerance=5.0).item() == 1.0


def test_irrelevant_overlap_uses_absolute_normalised_attribution():
    irr = torch.zeros(3, 4, 4, dtype=torch.bool)
    irr[:, 0, 0] = True
    maps = torch.zeros(3, 4, 4)
    maps[0, 0, 0] = -1.0
    maps[0, 3, 3] = 1.0  # half of |A| on the decoy
    maps[1, 0, 0] = 5.0  # all of it
    out = irrelevant_overlap(maps, irr)  # maps[2] is all zero: 0
    assert torch.allclose(out, torch.tensor([0.5, 1.0, 0.0]))


def test_empty_masks_raise_or_nan():
    mask = _left_half_mask(2)
    mask[1] = False
    maps = torch.ones(2, 4, 4)
    for fn in (epg, iou, pointing_game, irrelevant_overlap, box_epg):
        with pytest.raises(XgirError, match="empty"):
            fn(maps, mask)
        out = fn(maps, mask, empty="nan")
        assert not torch.isnan(out[0]) and torch.isnan(out[1])
    with pytest.raises(XgirError, match="empty must be"):
        epg(maps, mask, empty="zero")


def test_bad_inputs():
    mask = _left_half_mask(2)
    with pytest.raises(XgirError, match="2 heatmaps but 3"):
        epg(torch.ones(2, 4, 4), _left_half_mask(3))
    with pytest.raises(XgirError, match=r"\[N,H,W\]"):
        epg(torch.ones(4, 4), mask)
    with pytest.raises(XgirError, match="masks must be"):
        epg(torch.ones(2, 3, 4, 4), torch.ones(2, 2, 4, 4, dtype=torch.bool))
    bad = torch.ones(2, 4, 4)
    bad[0, 0, 0] = float("nan")
    with pytest.raises(XgirError, match="NaN"):
        epg(bad, mask)
    with pytest.raises(XgirError, match="boolean"):
        epg(torch.ones(2, 4, 4), mask.float() * 0.5)
    with pytest.raises(XgirError, match="tolerance"):
        pointing_game(torch.rand(2, 4, 4), mask, tolerance=-1)


def test_boxes_from_masks_margin_grows_and_clips():
    m = torch.zeros(2, 6, 6, dtype=torch.bool)
    m[0, 2, 3] = True  # one pixel
    box = boxes_from_masks(m, margin=1)
    assert box[0].sum() == 9 and box[0, 1:4, 2:5].all()  # 3 x 3 around the pixel
    assert boxes_from_masks(m, margin=10)[0].all()  # clipped to the image
    assert not box[1].any() and not boxes_from_masks(m, margin=10)[1].any()  # empty stays empty
    with pytest.raises(XgirError, match="margin"):
        boxes_from_masks(m, margin=-1)
