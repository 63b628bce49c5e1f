import math

import pytest
import torch
from torch import nn

from xgir.data import ImageDataset
from xgir.errors import XgirError
from xgir.metrics import (
    accuracy,
    accuracy_by_group,
    accuracy_per_split,
    evaluate_splits,
    gap_closed,
    group_accuracy,
    predict,
    worst_group_accuracy,
)


class PixelModel(nn.Module):
    """Predicts class round(10 * x[0, 0, 0]) out of 3 classes."""

    def __init__(self) -> None:
        super().__init__()
        self.k = nn.Parameter(torch.arange(3.0), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -((10 * x[:, 0, 0, 0, None] - self.k) ** 2)


def _dataset(groups: bool = True) -> ImageDataset:
    pred = torch.tensor([0, 1, 2, 0, 1, 2])
    images = torch.zeros(6, 1, 4, 4)
    images[:, 0, 0, 0] = pred / 10
    labels = torch.tensor([0, 1, 1, 0, 2, 2])  # correct: 1 1 0 1 0 1
    return ImageDataset(
        images,
        labels,
        groups=torch.tensor([0, 0, 1, 1, 3, 3]) if groups else None,
        group_names=["a", "b", "c", "d"] if groups else [],
        classes=["0", "1", "2"],
        name="toy",
    )


def test_predict_accuracy_and_groups():
    model, ds = PixelModel(), _dataset()
    logits = predict(model, ds.images, batch_size=4)
    assert logits.shape == (6, 3)
    assert torch.equal(logits.argmax(1), torch.tensor([0, 1, 2, 0, 1, 2]))
    assert torch.equal(predict(model, ds.images, batch_size=1), logits)
    assert accuracy(model, ds) == pytest.approx(4 / 6)
    # group "c" (id 2) has no sample: left out; worst group over the present ones
    assert accuracy_by_group(model, ds) == {"accuracy": pytest.approx(4 / 6), "n": 6,
                                            "groups": {"a": 1.0, "b": 0.5, "d": 0.5},
                                            "worst_group": 0.5, "num_groups": 3}
    assert worst_group_accuracy(model, ds) == 0.5
    ids, acc, count = group_accuracy(torch.tensor([True, False, True]), torch.tensor([5, 5, 1]))
    assert ids.tolist() == [1, 5] and acc.tolist() == [1.0, 0.5] and count.tolist() == [1, 2]


def test_per_split():
    model = PixelModel()
    splits = {"source": _dataset(), "target": _dataset(groups=False).subset([0, 1, 2])}
    rows = evaluate_splits(model, splits)
    assert rows["source"] == {
        "accuracy": pytest.approx(4 / 6),
        "n": 6,
        "groups": {"a": 1.0, "b": 0.5, "d": 0.5},
        "worst_group": 0.5,
        "num_groups": 3,
    }
    assert rows["target"] == {"accuracy": pytest.approx(2 / 3), "n": 3}
    assert accuracy_per_split(model, splits) == {
        "source": pytest.approx(4 / 6),
        "target": pytest.approx(2 / 3),
    }


def test_model_mode_restored():
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3), nn.Dropout(0.9)).train()
    x = torch.rand(8, 1, 4, 4)
    a, b = predict(model, x), predict(model, x)
    assert torch.equal(a, b) and model.training  # eval mode inside, restored after


def test_gap_closed():
    assert gap_closed(0.5, 0.7, 0.9) == pytest.approx(0.5)
    assert gap_closed(0.5, 0.9, 0.9) == pytest.approx(1.0)
    assert gap_closed(0.5, 0.4, 0.9) == pytest.approx(-0.25)
    assert math.isnan(gap_closed(0.8, 0.9, 0.8))  # no gap to close
    out = gap_closed(torch.tensor([0.5, 0.8]), torch.tensor([0.7, 0.9]), torch.tensor([0.9, 0.8]))
    assert out[0].item() == pytest.approx(0.5) and torch.isnan(out[1])


def test_bad_inputs():
    model = PixelModel()
    with pytest.raises(XgirError, match="no groups"):
        worst_group_accuracy(model, _dataset(groups=False))
    assert accuracy_by_group(model, _dataset(groups=False)) == {"accuracy": pytest.approx(4 / 6), "n": 6}
    with pytest.raises(XgirError, match=r"\[N,C,H,W\]"):
        predict(model, torch.zeros(4, 4))
    conv = nn.Conv2d(3, 2, 1)
    with pytest.raises(XgirError, match="cannot run"):
        predict(conv, torch.zeros(2, 1, 4, 4))
    with pytest.raises(XgirError, match="empty"):
        accuracy(model, _dataset().subset([]))
    with pytest.raises(XgirError, match=r"\[N\]"):
        group_accuracy(torch.ones(3, dtype=torch.bool), torch.zeros(2, dtype=torch.long))
