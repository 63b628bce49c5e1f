"""The one accuracy / per-group / worst-group implementation (xgir.models.accuracy) and its users."""

import doctest

import numpy as np
import pytest
import torch

import xgir.metrics
import xgir.models.accuracy
import xgir.train
from xgir.correct.dfr import _worst_group
from xgir.errors import XgirError
from xgir.models.accuracy import accuracy_from_predictions, group_accuracy


def test_hand_made_groups():
    # group 0: 2/3 right, group 2: 1/1, group 7: 0/2; group 1 absent (no samples)
    pred = torch.tensor([0, 1, 1, 2, 0, 0])
    labels = torch.tensor([0, 1, 0, 2, 1, 1])
    groups = torch.tensor([0, 0, 0, 2, 7, 7])
    r = accuracy_from_predictions(pred, labels, groups, ["g0", "g1", "g2"])
    assert r == {"accuracy": 3 / 6, "n": 6, "groups": {"g0": 2 / 3, "g2": 1.0, "7": 0.0},
                 "worst_group": 0.0, "num_groups": 3}
    assert accuracy_from_predictions(pred, labels) == {"accuracy": 0.5, "n": 6}
    ids, acc, count = group_accuracy(pred == labels, groups)
    assert ids.tolist() == [0, 2, 7] and count.tolist() == [3, 1, 2]
    assert acc.dtype == torch.float64 and acc[0].item() == 2 / 3  # exact in float64
    # the worst group is the minimum over groups, not the group of the fewest samples
    r = accuracy_from_predictions(torch.tensor([1, 1, 1, 0]), torch.tensor([1, 1, 0, 0]), torch.tensor([0, 0, 1, 1]))
    assert r["worst_group"] == 0.5 and r["groups"] == {"0": 1.0, "1": 0.5}


def test_one_home():
    # train and metrics re-export the same functions (no second implementation)
    assert xgir.train.accuracy is xgir.metrics.accuracy is xgir.models.accuracy.accuracy
    assert xgir.train.accuracy_by_group is xgir.metrics.accuracy_by_group is xgir.models.accuracy.accuracy_by_group
    assert xgir.metrics.group_accuracy is group_accuracy
    # DFR's model selection reads the same worst group (numpy in, float out)
    rng = np.random.default_rng(0)
    pred, y, g = rng.integers(0, 3, 50), rng.integers(0, 3, 50), rng.integers(0, 4, 50)
    want = min(float((pred[g == k] == y[g == k]).mean()) for k in np.unique(g))
    assert _worst_group(pred, y, g) == pytest.approx(want, abs=1e-15)


def test_errors_and_doctests():
    with pytest.raises(XgirError, match=r"\[N\]"):
        accuracy_from_predictions(torch.zeros(3), torch.zeros(2))
    with pytest.raises(XgirError, match="no samples"):
        accuracy_from_predictions(torch.zeros(0), torch.zeros(0))
    with pytest.raises(XgirError, match=">= 0"):
        accuracy_from_predictions(torch.zeros(2), torch.zeros(2), torch.tensor([0, -1]))
    assert doctest.testmod(xgir.models.accuracy).failed == 0
