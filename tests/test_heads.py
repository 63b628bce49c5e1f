"""Batched head fitting (xgir.train.heads.fit_heads) against fit_head, one head at a time."""

import pytest
import torch

from xgir.correct.xgir import XGIRConfig, fit_config_head, retrain_head, xgir_training_set
from xgir.errors import XgirError
from xgir.train.features import fit_head
from xgir.train.heads import fit_heads


def _data(k: int, n: int, d: int, c: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    ys = [torch.randint(c, (n,), generator=g) for _ in range(k)]
    xs = [torch.randn(n, d, generator=g) + 2.0 * torch.nn.functional.one_hot(y, d).float() for y in ys]
    return xs, ys


@pytest.mark.parametrize("seeds", [[3, 3, 3], [0, 1, 0, 2]])
def test_fit_heads_matches_fit_head_one_at_a_time(seeds):
    xs, ys = _data(len(seeds), 70, 12, 4)  # 70 rows, batch 32: a short last batch
    one = [fit_head(x, y, 4, epochs=6, lr=0.05, batch_size=32, weight_decay=1e-3, seed=s)
           for x, y, s in zip(xs, ys, seeds, strict=True)]
    many = fit_heads(xs, ys, 4, seeds, epochs=6, lr=0.05, batch_size=32, weight_decay=1e-3)
    for a, b in zip(one, many, strict=True):
        assert torch.allclose(a.weight, b.weight, atol=1e-4), float((a.weight - b.weight).abs().max())
        assert torch.allclose(a.bias, b.bias, atol=1e-4)
        assert not b.training
    # the heads moved away from their initialisation (so the comparison is not vacuous)
    torch.manual_seed(seeds[0])
    init = torch.nn.Linear(12, 4)
    assert (many[0].weight - init.weight).abs().max() > 0.05


def test_fit_heads_leaves_the_global_rng_as_fit_head_does():
    xs, ys = _data(2, 40, 6, 3)
    fit_head(xs[1], ys[1], 3, epochs=2, seed=5)
    after_single = torch.rand(4)
    fit_heads(xs, ys, 3, [7, 5], epochs=2)
    assert torch.equal(torch.rand(4), after_single)


def test_fit_heads_checks_shapes_and_divergence():
    xs, ys = _data(2, 30, 5, 3)
    with pytest.raises(XgirError, match="one shape"):
        fit_heads([xs[0], xs[1][:20]], [ys[0], ys[1][:20]], 3, [0, 0])
    with pytest.raises(XgirError, match="differ"):
        fit_heads(xs, ys, 3, [0])
    with pytest.raises(XgirError, match="diverged"):
        fit_heads([x * 1e30 for x in xs], ys, 3, [0, 0], epochs=3, lr=1e30)
    assert fit_heads([], [], 3, []) == []


@pytest.mark.parametrize("config", [XGIRConfig(draws=2, head_epochs=3),
                                    XGIRConfig(draws=2, head_epochs=3, variant="swap"),
                                    XGIRConfig(draws=2, head_epochs=3, floor=0.05, basis="whiten")])
def test_training_set_then_batched_fit_equals_retrain_head(config):
    g = torch.Generator().manual_seed(1)
    h, r = torch.randn(50, 8, generator=g), torch.randn(50, 8, generator=g)
    y = torch.randint(3, (50,), generator=g)
    head, rec = retrain_head(h, r, y, 3, config, support_fraction=0.5)
    x, yy, rec2 = xgir_training_set(h, r, y, config, support_fraction=0.5)
    assert repr(rec2) == repr(rec)  # (repr: NaN fields compare equal)
    assert torch.equal(fit_config_head(x, yy, 3, config).weight, head.weight)  # the same code path: exact
    (batched,) = fit_heads([x], [yy], 3, [config.seed], epochs=config.head_epochs, lr=config.lr,
                           batch_size=config.batch_size, weight_decay=config.weight_decay)
    assert torch.allclose(batched.weight, head.weight, atol=1e-4)
