"""CWOX-2s: contrast formulas on hand-computed cases, clusters of a planted model, plot."""

import numpy as np
import pytest
import torch
from torch import nn

from xgir.errors import XgirError
from xgir.explain import get_explainer
from xgir.explain.clusters import ConfusionTree
from xgir.explain.cwox import contrast_clusters, contrast_within_clusters, cwox, plot_cwox
from xgir.explain.gradcam import grad_cam


def test_contrast_clusters_hand_case():
    g = torch.tensor([[[3.0, 1.0]], [[1.0, 1.0]], [[0.0, 2.0]]])[None]  # [1,3,1,2]
    h = contrast_clusters(g)
    # H1 = clip(2*[3,1] - [1,3]) = [5,0]; H2 = clip(2*[1,1] - [3,3]) = 0; H3 = clip([0,4]-[4,2])
    assert h[0, :, 0].tolist() == [[5.0, 0.0], [0.0, 0.0], [0.0, 2.0]]
    valid = torch.tensor([[True, True, False]])
    h2 = contrast_clusters(g, valid)  # m = 2: H1 = clip(G1 - G2), H2 = clip(G2 - G1)
    assert h2[0, :, 0].tolist() == [[2.0, 0.0], [0.0, 0.0], [0.0, 0.0]]
    h1 = contrast_clusters(g, torch.tensor([[False, True, False]]))  # m = 1: no contrast
    assert h1[0, :, 0].tolist() == [[0.0, 0.0], [1.0, 1.0], [0.0, 0.0]]


def test_contrast_within_clusters_hand_case():
    h = torch.tensor([[[[0.0, 1.0, 2.0, 3.0]]]])  # one cluster; 50th percentile 1.5
    g = torch.tensor([[[[1.0, 1.0, 3.0, 1.0]], [[2.0, 0.0, 1.0, 2.0]], [[9.0, 9.0, 9.0, 9.0]]]])
    group = torch.tensor([[0, 0, -1]])  # the third map is padding
    out = contrast_within_clusters(g, group, h, delta=50.0)
    # support [0,0,1,1]; a: clip(([1,1,3,1]-[2,0,1,2]) * s) = [0,0,2,0]; b: [0,0,0,1]
    assert out[0, :, 0].tolist() == [[0, 0, 2, 0], [0, 0, 0, 1], [0, 0, 0, 0]]
    wide = contrast_within_clusters(g, group, h, delta=0.0)  # support: H > 0
    assert wide[0, 0, 0].tolist() == [0, 1, 2, 0]
    with pytest.raises(XgirError, match="percentile"):
        contrast_within_clusters(g, group, h, delta=120.0)


class TwoClusterNet(nn.Module):
    """Top classes {0,1} (near-tied, most probable) and {2,3} (near-tied); 4, 5 improbable."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(4, 6, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.fc = nn.Linear(6, 6)
        with torch.no_grad():
            for p in (self.conv1.weight, self.conv2.weight):
                p.copy_(torch.randn(p.shape, generator=g))
            self.fc.weight.copy_(0.05 * torch.randn(6, 6, generator=g))
            self.fc.bias.copy_(torch.tensor([30.0, 30.0, 27.0, 27.0, -30.0, -30.0]))

    def forward(self, x):
        h = self.relu2(self.conv2(self.pool(self.relu1(self.conv1(x)))))
        return self.fc(h.mean(dim=(2, 3)))


@pytest.fixture(scope="module")
def setup():
    model = TwoClusterNet().eval()
    x = torch.rand(3, 1, 12, 12, generator=torch.Generator().manual_seed(1))
    tree = ConfusionTree.from_top_labels([[0, 1]] * 5 + [[2, 3]] * 5 + [[4], [5]], num_classes=6)
    return model, x, tree


def test_cwox_clusters_and_formulas(setup):
    model, x, tree = setup
    result = cwox(model, x, tree, level=0.5, deep_layer="relu2", shallow_layer="relu1", k=4,
                  mass=None, delta=50.0)
    assert len(result) == 3 and result.deep_layer == "relu2"
    for i, im in enumerate(result.images):
        assert [set(c) for c in im.clusters] == [{0, 1}, {2, 3}]
        assert im.cluster_probs[0] > im.cluster_probs[1]
        assert bool((im.cluster_maps >= 0).all())
        # cluster maps: Grad-CAM of the generalised logits, contrasted by the formula
        g = grad_cam(model, x[i:i + 1], [im.clusters[0], im.clusters[1]], "relu2")[0].numpy()
        assert np.allclose(im.raw_cluster_maps.numpy(), g, atol=1e-6)
        expect_h = np.stack([np.clip(g[0] - g[1], 0, None), np.clip(g[1] - g[0], 0, None)])
        assert np.allclose(im.cluster_maps.numpy(), expect_h, atol=1e-6)
        assert float(im.cluster_maps.abs().sum()) > 0
        # class maps: Grad-CAM at the shallow layer, contrasted inside the cluster on the
        # support of H above its 50th percentile
        for j, cluster in enumerate(im.clusters):
            gc = grad_cam(model, x[i:i + 1], list(cluster), "relu1")[0].numpy()
            assert np.allclose(im.raw_class_maps[j].numpy(), gc, atol=1e-6)
            support = expect_h[j] > np.percentile(expect_h[j], 50)
            expect = np.stack([np.clip((gc[0] - gc[1]) * support, 0, None),
                               np.clip((gc[1] - gc[0]) * support, 0, None)])
            assert np.allclose(im.class_maps[j].numpy(), expect, atol=1e-6)
            assert bool((im.class_maps[j] >= 0).all())
    assert sum(float(m.sum()) for im in result.images for m in im.class_maps) > 0  # not all empty


def test_single_cluster_and_singletons(setup):
    model, x, _ = setup
    one = cwox(model, x[:1], lambda labels: [tuple(labels)], deep_layer="relu2",
               shallow_layer="relu1", k=3, mass=None)[0]
    assert len(one.clusters) == 1 and len(one.clusters[0]) == 3
    assert torch.equal(one.cluster_maps, one.raw_cluster_maps)  # m = 1: no contrast
    singles = cwox(model, x[:1], None, deep_layer="relu2", shallow_layer="relu1", k=2,
                   mass=None)[0]
    assert len(singles.clusters) == 2 and singles.class_maps == [None, None]


def test_registry_form_and_plot(setup, tmp_path):
    model, x, tree = setup
    explainer = get_explainer("cwox", layer="relu2")
    maps = explainer(model, x, [(0, 1), (2, 3)])
    assert torch.allclose(maps, contrast_clusters(grad_cam(model, x, [(0, 1), (2, 3)], "relu2")))
    result = cwox(model, x, tree, level=0.5, deep_layer="relu2", shallow_layer="relu1", k=4,
                  mass=None)
    path = plot_cwox(result, x[1], tmp_path / "cwox.png", index=1,
                     class_names=[f"class{c}" for c in range(6)])
    assert path.is_file() and path.stat().st_size > 1000
    assert result.summary()[1]["clusters"] == [list(c) for c in result[1].clusters]


def test_errors(setup):
    model, x, _ = setup
    with pytest.raises(XgirError, match="does not cover"):
        cwox(model, x, lambda labels: [tuple(labels[:1])], deep_layer="relu2",
             shallow_layer="relu1", k=3, mass=None)
    with pytest.raises(XgirError, match="no layer named"):
        cwox(model, x, None, deep_layer="layer9", shallow_layer="relu1")
