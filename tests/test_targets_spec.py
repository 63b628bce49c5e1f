"""The target spec has one reading whatever the batch size."""

import pytest
import torch

from xgir.errors import XgirError
from xgir.explain.targets import as_targets


def test_list_of_lists_is_per_image_for_every_n():
    t = as_targets([[1, 2], [3, 4]], n=2, num_classes=5)
    assert not bool(t.is_cluster.any())
    assert t.weights.argmax(-1).tolist() == [[1, 2], [3, 4]]
    with pytest.raises(XgirError, match="per-image targets: got 2 rows for 3 images"):
        as_targets([[1, 2], [3, 4]], n=3, num_classes=5)


def test_tuples_are_clusters_for_every_n():
    for n in (2, 3):
        t = as_targets([(1, 2), (3, 4)], n=n, num_classes=5)
        assert t.shape == (n, 2) and bool(t.is_cluster.all())
        assert t.cluster[0, 0].nonzero().flatten().tolist() == [1, 2]


def test_a_list_is_never_a_cluster():
    with pytest.raises(XgirError, match=r"a cluster is a tuple of classes, e.g. \(1, 2\)"):
        as_targets([[[1, 2]], [[3]]], n=2, num_classes=5)


def test_per_image_rows_mix_classes_clusters_and_weights():
    w = torch.tensor([0.0, 1.0, -1.0, 0.0])
    t = as_targets([[0, (1, 2), w], [3, (0,), w]], n=2, num_classes=4)
    assert t.is_cluster.tolist() == [[False, True, False], [False, True, False]]
    assert torch.equal(t.weights[1, 2], w)
