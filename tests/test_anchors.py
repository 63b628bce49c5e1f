"""The annotation-free last-layer anchors (AFR, class-balanced retraining and SELF, last-layer
error upweighting, ExMap, DaC), their shared weighted head fitter and the pseudo-group
selection score: each mechanism on hand-made tensors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import xgir.correct.dac as dac_module
from xgir.correct.afr import afr_head, afr_weights
from xgir.correct.class_balanced import (
    class_balanced_head,
    class_balanced_subset,
    class_balanced_weights,
    self_disagreement,
    self_head,
)
from xgir.correct.dac import dac_compose, dac_head, dac_masks, dac_pairs
from xgir.correct.exmap import eigengap_clusters, exmap_head, exmap_pseudo_groups
from xgir.correct.jtt import jtt_head, jtt_weights
from xgir.errors import XgirError
from xgir.models.accuracy import accuracy_from_predictions, pseudo_group_worst_accuracy
from xgir.train.features import fit_head
from xgir.train.weighted_head import fit_weighted_head


def spurious_problem(n: int, p: float, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Features [core, spurious]: core = +-1 + noise 0.6 (about 95 % accurate alone), spurious =
    +-1 + noise 0.1, equal to the label with probability p. Returns h float[n,2], y, groups 2y + s."""
    y = torch.randint(0, 2, (n,), generator=g)
    s = torch.where(torch.rand(n, generator=g) < p, y, 1 - y)
    h = torch.stack([(2 * y - 1).float() + 0.6 * torch.randn(n, generator=g),
                     (2 * s - 1).float() + 0.1 * torch.randn(n, generator=g)], dim=1)
    return h, y, 2 * y + s


@pytest.fixture(scope="module")
def biased() -> dict[str, torch.Tensor | nn.Linear]:
    """Source-train at p = 0.95 (ERM on its first 80 %), a balanced held-out split, a balanced test."""
    g = torch.Generator().manual_seed(0)
    h, y, grp = spurious_problem(2000, 0.95, g)
    h_val, y_val, g_val = spurious_problem(400, 0.5, g)
    h_test, y_test, g_test = spurious_problem(2000, 0.5, g)
    erm = fit_head(h[:1600], y[:1600], 2, epochs=30, seed=0)
    return {"h_rw": h[1600:], "y_rw": y[1600:], "h_val": h_val, "y_val": y_val, "g_val": g_val,
            "h_test": h_test, "y_test": y_test, "g_test": g_test, "erm": erm}


def wga(head: nn.Linear, data: dict) -> float:
    with torch.no_grad():
        pred = head(data["h_test"]).argmax(1)
    return accuracy_from_predictions(pred, data["y_test"], data["g_test"])["worst_group"]


# --- the shared weighted fitter ---------------------------------------------------------------

def test_full_batch_weights_act_as_sample_counts() -> None:
    """Full batch: weight 2 on a row equals the row twice, weight 0 equals the row left out."""
    g = torch.Generator().manual_seed(0)
    h, y = torch.randn(30, 3, generator=g), torch.randint(0, 3, (30,), generator=g)
    init = nn.Linear(3, 3)
    before = init.weight.detach().clone()
    w = torch.ones(30)
    w[:5], w[5:10] = 2.0, 0.0
    kw = {"init": init, "epochs": 40, "lr": 0.5}
    a, _ = fit_weighted_head(h, y, w, 3, **kw)
    idx = torch.cat([torch.arange(5), torch.arange(30)[10:], torch.arange(5)])
    b, _ = fit_weighted_head(h[idx], y[idx], torch.ones(len(idx)), 3, **kw)
    assert torch.allclose(a.weight, b.weight, atol=1e-5) and torch.allclose(a.bias, b.bias, atol=1e-5)
    assert not torch.allclose(a.weight, init.weight, atol=1e-2)  # it trained
    assert torch.equal(init.weight, before)  # the initial head is not changed


def test_minibatches_draw_by_weight_and_score_keeps_the_best_epoch() -> None:
    """A class with weight 0 is never drawn: the head learns the other class only; ``score``
    returns the best epoch's head; the global RNG is untouched."""
    g = torch.Generator().manual_seed(1)
    h, y = torch.randn(64, 2, generator=g), torch.arange(64) % 2
    w = (y == 1).double()
    state = torch.get_rng_state()
    calls: list[nn.Linear] = []

    def score(m: nn.Linear) -> float:  # falls every epoch: the first epoch's head is the best
        calls.append(m)
        return -float(len(calls))

    head, info = fit_weighted_head(h, y, w, 2, epochs=5, lr=0.1, batch_size=8, optimizer="adam", score=score)
    assert torch.equal(torch.get_rng_state(), state)
    assert (head(h).argmax(1) == 1).all()
    assert info["best_epoch"] == 1 and info["best_score"] == -1.0 and info["epochs"] == 5 and info["steps"] == 40
    assert len(calls) == 5 and torch.equal(head.weight, calls[0].weight)


# --- AFR ----------------------------------------------------------------------------------------

def test_afr_weights_equal_the_formula() -> None:
    logits = torch.tensor([[2.0, 0.0], [0.5, 0.1], [-1.0, 1.0], [0.0, 3.0], [1.0, 1.0]])
    y = torch.tensor([0, 0, 0, 1, 1])
    gamma = 3.0
    z = logits.double().numpy()
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    raw = np.exp(-gamma * p[np.arange(5), y.numpy()])
    counts = np.array([3.0, 2.0])
    expect = raw / counts[y.numpy()]
    expect /= expect.sum()
    w = afr_weights(logits, y, gamma)
    assert w.dtype == torch.float64 and np.allclose(w.numpy(), expect, rtol=1e-12, atol=0)
    # every class counts as if the classes had equal sizes: class totals = mean raw weight per class
    per_class = [expect[y.numpy() == c].sum() for c in (0, 1)]
    means = [raw[y.numpy() == c].mean() for c in (0, 1)]
    assert math.isclose(per_class[0] / per_class[1], means[0] / means[1], rel_tol=1e-12)
    plain = afr_weights(logits, y, gamma, rebalance=False).numpy()
    assert np.allclose(plain, raw / raw.sum(), rtol=1e-12, atol=0)
    assert np.allclose(afr_weights(logits, y, 0.0).numpy(), [1 / 6] * 3 + [1 / 4] * 2, rtol=1e-12)


def test_afr_huge_penalty_keeps_the_erm_head(biased: dict) -> None:
    erm = biased["erm"]
    stay, _ = afr_head(biased["h_rw"], biased["y_rw"], erm, gamma=10.0, lam=1e6, epochs=100)
    move, _ = afr_head(biased["h_rw"], biased["y_rw"], erm, gamma=10.0, lam=0.0, epochs=100)
    assert (stay.weight - erm.weight).abs().max() < 0.02 and (stay.bias - erm.bias).abs().max() < 0.02
    assert (move.weight - erm.weight).abs().max() > 0.2


def test_afr_gamma_0_lam_0_is_class_balanced_logistic_regression() -> None:
    from sklearn.linear_model import LogisticRegression

    g = torch.Generator().manual_seed(1)
    n = 300
    y = (torch.rand(n, generator=g) < 0.25).long()
    h = torch.randn(n, 2, generator=g) + 0.8 * (2 * y[:, None] - 1).float()
    head, info = afr_head(h, y, nn.Linear(2, 2), gamma=0.0, lam=0.0, epochs=400, lr=3.0, clip=None)
    cw = np.where(y.numpy() == 1, 1 / (y == 1).sum().item(), 1 / (y == 0).sum().item())
    clf = LogisticRegression(C=np.inf, tol=1e-10, max_iter=10000).fit(h.numpy(), y.numpy(), sample_weight=cw)
    with torch.no_grad():
        p = head(h).softmax(1)[:, 1].numpy()
    assert np.abs(p - clf.predict_proba(h.numpy())[:, 1]).max() < 1e-3
    assert info["gamma"] == 0.0 and info["steps"] == 400


def test_afr_improves_worst_group_accuracy_over_erm(biased: dict) -> None:
    erm = biased["erm"]
    head, info = afr_head(biased["h_rw"], biased["y_rw"], erm, gamma=10.0, lam=0.1)
    assert wga(head, biased) > wga(erm, biased) + 0.2
    assert 0.5 < info["erm_error_weight"] < 1.0  # few errors, most of the weight


# --- class-balanced retraining, SELF, error upweighting ------------------------------------------

def test_class_balanced_weights_and_subset_are_balanced() -> None:
    y = torch.tensor([0] * 7 + [1] * 2 + [2] * 3)
    w = class_balanced_weights(y, 3)
    assert torch.allclose(torch.stack([w[y == c].sum() for c in range(3)]), torch.full((3,), 1 / 3, dtype=w.dtype))
    assert w[0] == 1 / 21 and w[7] == 1 / 6
    idx = class_balanced_subset(y, 3, torch.Generator().manual_seed(0))
    assert torch.equal(torch.bincount(y[idx], minlength=3), torch.tensor([2, 2, 2]))
    assert len(torch.unique(idx)) == 6


def test_class_balanced_head_balances_an_imbalanced_split() -> None:
    """90 % class 0 with overlapping classes: uniform weights sacrifice class 1; balanced do not."""
    g = torch.Generator().manual_seed(2)
    y = (torch.rand(600, generator=g) < 0.1).long()
    h = (2 * y - 1).float()[:, None] * 0.6 + torch.randn(600, 1, generator=g)
    bal, info = class_balanced_head(h, y, 2, epochs=20)
    sub, info_sub = class_balanced_head(h, y, 2, epochs=20, balance="subset")
    plain, _ = fit_weighted_head(h, y, torch.ones(600), 2, epochs=20, lr=3e-3, batch_size=32, momentum=0.9)

    def worst_class(m: nn.Linear) -> float:
        return min(float((m(h).argmax(1) == y)[y == c].float().mean()) for c in (0, 1))

    assert worst_class(bal) > worst_class(plain) + 0.2 and worst_class(sub) > worst_class(plain) + 0.2
    assert info["n"] == 600 and info_sub["n"] == 2 * info["per_class"]


def test_self_picks_the_points_where_early_and_erm_disagree() -> None:
    g = torch.Generator().manual_seed(3)
    h, y = torch.randn(100, 2, generator=g), torch.randint(0, 2, (100,), generator=g)
    erm = nn.Linear(2, 2)
    with torch.no_grad():
        logits = erm(h)
    wrong = (logits.argmax(1) != y).nonzero().flatten()[:5]
    early = logits.clone()
    early[wrong] = early[wrong].flip(1) * 3  # the early model disagrees on 5 ERM errors only
    d = self_disagreement(early, logits)
    assert (d[wrong] > 0).all() and torch.count_nonzero(d.abs() > 1e-12) == 5
    assert torch.allclose(d, (early.softmax(1) * (early.log_softmax(1) - logits.log_softmax(1))).mean(1).double())
    head, info = self_head(h, y, erm, early, num_data=5, steps=20)
    assert info["selected_errors"] == 1.0 and info["steps"] == 20
    assert not torch.equal(head.weight, erm.weight)


def test_error_upweighting_gives_errors_lambda_up(biased: dict) -> None:
    w = jtt_weights(torch.tensor([0, 1, 1, 0]), torch.tensor([0, 0, 1, 1]), 7.0)
    assert w.tolist() == [1.0, 7.0, 1.0, 7.0]
    erm = biased["erm"]
    head, info = jtt_head(biased["h_rw"], biased["y_rw"], erm, lambda_up=20.0, epochs=30)
    e, n = info["errors"], len(biased["y_rw"])
    assert e > 0 and math.isclose(info["error_weight"], 20 * e / (20 * e + n - e))
    assert wga(head, biased) > wga(erm, biased) + 0.2


def test_pseudo_group_worst_accuracy() -> None:
    y = torch.tensor([0, 0, 0, 1, 1, 1])
    erm = torch.tensor([0, 0, 1, 1, 1, 0])  # ERM wrong on samples 2 and 5
    assert pseudo_group_worst_accuracy(y, y, erm) == 1.0
    assert pseudo_group_worst_accuracy(erm, y, erm) == 0.0  # ERM itself: 0 on its own errors
    pred = torch.tensor([0, 1, 0, 1, 1, 1])  # right on both error groups, 1/2 on (class 0, ERM right)
    assert pseudo_group_worst_accuracy(pred, y, erm) == 0.5


# --- ExMap -------------------------------------------------------------------------------------

def two_mode_heatmaps(s: torch.Tensor, g: torch.Generator, noise: float = 0.3) -> torch.Tensor:
    """8x8 maps: a blob top-left where s = 0, bottom-right where s = 1, plus uniform noise."""
    m = noise * torch.rand(len(s), 8, 8, generator=g)
    m[s == 0, :3, :3] += 1.0
    m[s == 1, 5:, 5:] += 1.0
    return m


def test_eigengap_counts_the_blocks() -> None:
    a = torch.block_diag(torch.ones(5, 5), torch.ones(6, 6), torch.ones(4, 4)).numpy()
    assert eigengap_clusters(a, max_clusters=10) == 3
    assert eigengap_clusters(a, max_clusters=2) == 2  # capped


def test_exmap_recovers_the_modes_and_dfr_on_them_helps(biased: dict) -> None:
    g = torch.Generator().manual_seed(4)
    y, grp = biased["y_val"], biased["g_val"]
    maps = two_mode_heatmaps(grp % 2, g)
    pseudo, per_class = exmap_pseudo_groups(maps, y, 2)
    assert per_class == [2, 2]
    # equal to the true groups up to relabelling: a bijection between ids
    pairs = set(zip(pseudo.tolist(), grp.tolist(), strict=True))
    assert len(pairs) == 4 and len({p for p, _ in pairs}) == 4
    head, info = exmap_head(biased["h_val"], maps, y, 2, resamples=3)
    assert info["clusters"] == [2, 2] and torch.equal(info["pseudo_groups"], pseudo)
    assert wga(head, biased) > wga(biased["erm"], biased) + 0.2
    fixed, _ = exmap_pseudo_groups(maps, y, 2, n_clusters=3)
    assert len(torch.unique(fixed)) == 6


# --- DaC ---------------------------------------------------------------------------------------

def test_dac_compose_equals_the_formula() -> None:
    g = torch.Generator().manual_seed(5)
    xi, xj = torch.rand(2, 3, 4, 4, generator=g), torch.rand(2, 3, 4, 4, generator=g)
    mi, mj = torch.rand(2, 4, 4, generator=g) > 0.5, torch.rand(2, 4, 4, generator=g) > 0.5
    mu = torch.tensor([0.1, 0.2, 0.3])[:, None, None]
    out = dac_compose(xi, mi, xj, mj, mu)
    for n in range(2):
        for r in range(4):
            for c in range(4):
                a, b = bool(mi[n, r, c]), bool(mj[n, r, c])
                want = xi[n, :, r, c] if a else (mu[:, 0, 0] if b else xj[n, :, r, c])
                assert torch.equal(out[n, :, r, c], want)
    soft_i, soft_j = torch.rand(2, 4, 4, generator=g), torch.rand(2, 4, 4, generator=g)
    expect = (soft_i[:, None] * xi + (1 - soft_i[:, None]) * (1 - soft_j[:, None]) * xj
              + (1 - soft_i[:, None]) * soft_j[:, None] * mu)
    assert torch.allclose(dac_compose(xi, soft_i, xj, soft_j, mu), expect)


def test_dac_masks_keep_the_top_of_each_map() -> None:
    maps = torch.arange(32.0).reshape(2, 4, 4)
    maps[1] = -maps[1]
    m = dac_masks(maps, quantile=0.75)
    assert m.shape == (2, 4, 4) and m.sum(dim=(1, 2)).tolist() == [4, 4]
    assert m[0, 3].all() and m[1, 0].all()
    assert dac_masks(maps, 0.5, size=(8, 8)).shape == (2, 8, 8)


def test_dac_pairs_low_loss_partners_of_another_class() -> None:
    y = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2])
    losses = torch.tensor([0.1, 0.2, 5.0, 0.3, 0.1, 4.0, 0.2, 6.0])
    i, j = dac_pairs(y, losses, quantile=0.6, generator=torch.Generator().manual_seed(0))
    assert i.tolist() == [0, 1, 3, 4, 6]
    assert (y[j] != y[i]).all() and set(j.tolist()) <= set(i.tolist())
    i2, j2 = dac_pairs(y, losses, quantile=0.6, generator=torch.Generator().manual_seed(0))
    assert torch.equal(j, j2)


def test_dac_head_trains_on_originals_masked_and_composites(monkeypatch: pytest.MonkeyPatch) -> None:
    """Images 3x4x4, the object = the left half; features_fn = per-half channel means (records
    every batch it sees). The head's training set = features of originals, masked images and
    composites, with the DaC weights."""
    g = torch.Generator().manual_seed(6)
    n = 40
    y = torch.arange(n) % 2
    x = torch.rand(n, 3, 4, 4, generator=g)
    masks = torch.zeros(n, 4, 4)
    masks[:, :, :2] = 1
    seen: list[torch.Tensor] = []

    def feats(b: torch.Tensor) -> torch.Tensor:
        return torch.cat([b[:, :, :, :2].mean((2, 3)), b[:, :, :, 2:].mean((2, 3))], dim=1)

    def features_fn(b: torch.Tensor) -> torch.Tensor:
        assert len(b) <= 16
        seen.append(b.clone())
        return feats(b)

    erm = nn.Linear(6, 2)
    with torch.no_grad():  # an ERM head that reads channel 0 of the left half: low loss in both classes
        erm.weight.zero_()
        erm.bias.zero_()
        erm.weight[1, 0], erm.weight[0, 0] = 4.0, -4.0
        erm.bias += torch.tensor([2.0, -2.0])
    captured: dict[str, torch.Tensor] = {}
    real_fit = dac_module.fit_weighted_head

    def spy(h: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor, k: int, **kw: object):
        captured.update(h=h, y=labels, w=weights)
        return real_fit(h, labels, weights, k, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(dac_module, "fit_weighted_head", spy)
    head, info = dac_head(features_fn, x, masks, y, erm, quantile=0.5, alpha=10.0, rounds=2, epochs=3, chunk=16)
    s = info["selected"]
    assert s == 20 and info["composites"] == 40 and info["mask_share"] == 0.5
    imgs = torch.cat(seen)
    assert len(imgs) == n + s * 3 and torch.equal(imgs[:n], x)
    h_all, y_all, w_all = captured["h"], captured["y"], captured["w"]
    assert torch.allclose(h_all[:n], feats(x))
    with torch.no_grad():
        losses = nn.functional.cross_entropy(erm(feats(x)), y, reduction="none")
    sel, _ = dac_pairs(y, losses, quantile=0.5)
    mu = x.mean(dim=(0, 2, 3))[:, None, None]
    masked = masks[sel, None] * x[sel] + (1 - masks[sel, None]) * mu
    assert torch.allclose(imgs[n : n + s], masked, atol=1e-6)
    # composites: the selected image's left half, a partner's right half of the other class
    comp = imgs[n + s :]
    assert torch.equal(comp[:, :, :, :2], x[sel.repeat(2)][:, :, :, :2])
    right = x[:, :, :, 2:]
    for r, img in enumerate(comp):
        i = int(sel.repeat(2)[r])
        partner = [j for j in sel.tolist() if torch.equal(right[j], img[:, :, 2:])]
        assert partner and all(int(y[j]) != int(y[i]) for j in partner)
    assert torch.equal(y_all, torch.cat([y, y[sel], y[sel], y[sel]]))
    assert torch.allclose(w_all[:n].sum() * 10, w_all[n : n + s].sum()) and torch.allclose(
        w_all[n : n + s].sum(), w_all[n + s :].sum())
    assert info["epochs"] == 3 and not torch.allclose(head.weight, erm.weight)


# --- one-line errors ---------------------------------------------------------------------------

def _erm() -> nn.Linear:
    return nn.Linear(2, 2)


BAD = {
    "afr gamma < 0": lambda: afr_weights(torch.zeros(3, 2), torch.tensor([0, 1, 0]), -1.0),
    "afr labels length": lambda: afr_head(torch.zeros(4, 2), torch.tensor([0, 1, 0]), _erm()),
    "afr head width": lambda: afr_head(torch.zeros(4, 3), torch.tensor([0, 1, 0, 1]), _erm()),
    "afr empty class": lambda: afr_head(torch.zeros(4, 2), torch.tensor([0, 0, 0, 0]), _erm()),
    "afr lam < 0": lambda: afr_head(torch.zeros(4, 2), torch.tensor([0, 1, 0, 1]), _erm(), lam=-1.0),
    "afr float labels": lambda: afr_head(torch.zeros(2, 2), torch.tensor([0.0, 1.0]), _erm()),
    "balanced empty class": lambda: class_balanced_head(torch.zeros(4, 2), torch.tensor([0, 1, 0, 1]), 3),
    "balanced mode": lambda: class_balanced_head(torch.zeros(4, 2), torch.tensor([0, 1, 0, 1]), 2, balance="x"),
    "self num_data": lambda: self_head(torch.zeros(4, 2), torch.tensor([0, 1, 0, 1]), _erm(), torch.zeros(4, 2),
                                       num_data=9),
    "self early shape": lambda: self_head(torch.zeros(4, 2), torch.tensor([0, 1, 0, 1]), _erm(), torch.zeros(3, 2)),
    "jtt lambda_up < 1": lambda: jtt_weights(torch.tensor([0]), torch.tensor([1]), 0.5),
    "jtt label out of range": lambda: jtt_head(torch.zeros(2, 2), torch.tensor([0, 2]), _erm()),
    "exmap heatmap count": lambda: exmap_head(torch.zeros(4, 2), torch.zeros(3, 4, 4), torch.tensor([0, 1, 0, 1]), 2),
    "exmap max_clusters": lambda: exmap_pseudo_groups(torch.zeros(4, 4, 4), torch.tensor([0, 1, 0, 1]), 2,
                                                      max_clusters=1),
    "dac mask shape": lambda: dac_compose(torch.zeros(2, 3, 4, 4), torch.zeros(2, 4, 5), torch.zeros(2, 3, 4, 4),
                                          torch.zeros(2, 4, 4), torch.zeros(3, 1, 1)),
    "dac one class": lambda: dac_pairs(torch.tensor([0, 0, 1]), torch.tensor([0.1, 0.2, 9.0]), quantile=0.5),
    "dac head masks": lambda: dac_head(lambda b: b.flatten(1), torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 3),
                                       torch.tensor([0, 1]), nn.Linear(48, 2)),
    "dac features_fn width": lambda: dac_head(lambda b: b.flatten(1), torch.zeros(2, 3, 4, 4), torch.zeros(2, 4, 4),
                                              torch.tensor([0, 1]), nn.Linear(5, 2)),
    "fit negative weight": lambda: fit_weighted_head(torch.zeros(2, 2), torch.tensor([0, 1]), torch.tensor([1.0, -1.0]),
                                                     2),
    "fit penalty without anchor": lambda: fit_weighted_head(torch.zeros(2, 2), torch.tensor([0, 1]), torch.ones(2), 2,
                                                            lam=1.0),
    "fit nan features": lambda: fit_weighted_head(torch.full((2, 2), math.nan), torch.tensor([0, 1]), torch.ones(2), 2),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_one_line(case: str) -> None:
    with pytest.raises(XgirError) as err:
        BAD[case]()
    assert "\n" not in str(err.value) and str(err.value)
