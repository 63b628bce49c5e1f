import torch

from xgir.bench.xgir_two_stage import random_supports
from xgir.correct.dfr import dfr_head


def test_dfr_ignores_spurious_feature_on_balanced_data():
    """Feature 0 = label (core), feature 1 = spurious (independent of the label in the
    balanced held-out set): DFR's head predicts from feature 0."""
    g = torch.Generator().manual_seed(0)
    n = 800
    y = torch.randint(0, 2, (n,), generator=g)
    spur = torch.randint(0, 2, (n,), generator=g)
    h = torch.stack([y.float() + 0.3 * torch.randn(n, generator=g),
                     spur.float() + 0.1 * torch.randn(n, generator=g)], dim=1)
    groups = y * 2 + spur
    head, info = dfr_head(h, y, groups, 2, resamples=3)
    acc = (head(h).argmax(1) == y).float().mean()
    assert acc > 0.9 and info["C"] > 0
    w = head.weight.detach()
    assert (w[1, 0] - w[0, 0]).abs() > 5 * (w[1, 1] - w[0, 1]).abs()


def test_random_supports_keep_pixel_counts():
    sup = torch.zeros(3, 8, 8, dtype=torch.bool)
    sup[0, :2] = True
    sup[1, :, :5] = True
    rnd = random_supports(sup, seed=0)
    assert torch.equal(rnd.flatten(1).sum(1), sup.flatten(1).sum(1))
    assert not torch.equal(rnd, sup)
