"""Label confusion clusters: top label sets, planted confusions recovered, save/load."""

import json

import pytest
import torch
from torch import nn

from xgir.data.base import ImageDataset
from xgir.errors import XgirError
from xgir.explain.clusters import ConfusionTree, jaccard_similarity, top_label_sets


def test_top_label_sets_mass_rule():
    probs = torch.tensor([[0.5, 0.3, 0.16, 0.04], [0.04, 0.96, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25]])
    sets = top_label_sets(probs, k=5, mass=0.95)
    assert sets[:2] == [[0, 1, 2], [1]] and sorted(sets[2]) == [0, 1, 2, 3]  # ties in any order
    assert [len(s) for s in top_label_sets(probs, k=2, mass=0.95)] == [2, 1, 2]
    assert [len(s) for s in top_label_sets(probs, k=3, mass=None)] == [3, 3, 3]
    with pytest.raises(XgirError):
        top_label_sets(probs, k=0)


def planted_model_and_data(n_pair=20, n_mix=10, seed=0):
    """Features: pixel 0 -> classes {0,1}, pixel 1 -> {2,3}, pixel 2 -> {4}; pixel 3 is noise that
    breaks the ties inside the pairs. Images: n_pair of each pair, n_mix mixing both pairs,
    n_pair of class 4."""
    g = torch.Generator().manual_seed(seed)
    w = torch.zeros(5, 4)
    w[0, 0] = w[1, 0] = 8.0
    w[2, 1] = w[3, 1] = 8.0
    w[4, 2] = 8.0
    w[:, 3] = torch.tensor([0.3, -0.3, 0.3, -0.3, 0.0])
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 5, bias=False)).eval()
    with torch.no_grad():
        model[1].weight.copy_(w)
    rows = []
    for feature in ([1, 0, 0], [0, 1, 0], [0, 0, 1]):
        rows += [feature] * n_pair
    rows += [[1, 1, 0]] * n_mix
    base = torch.tensor(rows, dtype=torch.float32)
    noise = torch.rand(len(rows), 1, generator=g) * 2 - 1
    images = torch.cat([base, noise], dim=1).view(-1, 1, 2, 2)
    labels = torch.zeros(len(rows), dtype=torch.long)
    return model, ImageDataset(images, labels, classes=[f"c{i}" for i in range(5)], name="planted")


def test_planted_confusions_recovered(tmp_path):
    model, data = planted_model_and_data()
    tree = ConfusionTree.fit(model, data, k=5, mass=0.95)
    assert tree.num_classes == 5 and tree.classes[0] == "c0"
    # {0,1} and {2,3} always co-occur; they share 10 mixed images out of 50; 4 stands apart
    assert tree.similarity[0, 1] == pytest.approx(1.0)
    assert tree.similarity[0, 2] == pytest.approx(10 / 50)
    assert tree.similarity[0, 4] == 0.0
    assert sorted(tree.clusters(0.5)) == [(0, 1), (2, 3)]
    assert tree.cluster_of(1, 0.5) == {0, 1} and tree.cluster_of(4, 0.5) == {4}
    assert tree.clusters(0.9) == [(0, 1, 2, 3)]
    assert tree.partition([2, 0, 4, 1, 3], 0.5) == [(2, 3), (0, 1), (4,)]
    assert tree.partition([2, 0, 4, 1], 0.9) == [(2, 0, 1), (4,)]
    assert tree.partition([3, 1], 0.0) == [(3,), (1,)]
    assert tree.partition([1, 0], 0.0) == [(1, 0)]  # always together: merged at height 0
    assert len(tree.partition(list(range(5)), 1.0)) == 1

    path = tree.save(tmp_path / "sub" / "tree.json")
    assert [p.name for p in path.parent.iterdir()] == ["tree.json"]  # no temporary files left
    loaded = ConfusionTree.load(path)
    assert loaded.partition([2, 0, 4, 1, 3], 0.5) == [(2, 3), (0, 1), (4,)]
    assert (loaded.linkage == tree.linkage).all() and loaded.meta["images"] == 70


def test_jaccard_and_unseen_labels():
    counts = torch.tensor([[4, 2, 0], [2, 3, 0], [0, 0, 0]]).numpy()
    sim = jaccard_similarity(counts)
    assert sim[0, 1] == pytest.approx(2 / 5) and sim[2, 2] == 1.0 and sim[0, 2] == 0.0
    tree = ConfusionTree.from_top_labels([[0, 1], [0]], num_classes=3)
    assert tree.cluster_of(2, 0.99) == {2}


def test_errors(tmp_path):
    tree = ConfusionTree.from_top_labels([[0, 1]], num_classes=3)
    with pytest.raises(XgirError, match="out of range"):
        tree.partition([0, 7], 0.5)
    with pytest.raises(XgirError, match=r"\[0, 1\]"):
        tree.cut(1.5)
    with pytest.raises(XgirError, match="not found"):
        ConfusionTree.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(XgirError, match="not an xgir confusion tree"):
        ConfusionTree.load(tmp_path / "bad.json")
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(XgirError, match="cannot read"):
        ConfusionTree.load(tmp_path / "broken.json")
    with pytest.raises(XgirError, match="no top label sets"):
        ConfusionTree.from_top_labels([], 3)
