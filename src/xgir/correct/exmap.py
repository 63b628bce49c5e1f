"""ExMap (Chakraborty, Sletten, Kampffmeyer, *ExMap: Leveraging Explainability Heatmaps for
Unsupervised Group Robustness to Spurious Correlations*, CVPR 2024; code:
github.com/rwchakra/exmap). An annotation-free anchor: pseudo-groups replace group labels.

The ERM model's heatmaps on the held-out (validation) images are clustered, class by class,
into pseudo-groups, and DFR runs on them in place of the true groups:

1. each heatmap float[u,v] is divided by its largest absolute value and flattened;
2. per class c (the "local" ExMap, L-ExMap): the symmetric k-nearest-neighbour graph
   A = (C + C^T) / 2 of the n_c heatmaps, C the 0/1 connectivity with k = max(2, int(ln n_c)) (each
   point its own neighbour), as scikit-learn's ``SpectralClustering(affinity="nearest_neighbors")``;
3. the number of clusters by the eigengap heuristic on the normalised Laplacian
   L = I - D^-1/2 A D^-1/2 with eigenvalues l_0 <= l_1 <= ...: m_c = 1 + argmax_{j in [1, M-1]}
   (l_{j+1} - l_j), so 2 <= m_c <= M (M = ``max_clusters``, the authors' 10; they skip the first
   gap, so at least 2 clusters);
4. spectral clustering of A into m_c clusters (scikit-learn, ``assign_labels="cluster_qr"``);
5. pseudo-group = the class's offset + the cluster id;
6. :func:`xgir.correct.dfr.dfr_head` with the pseudo-groups as groups (C by the pseudo-group
   worst accuracy on half of the held-out set, heads averaged over pseudo-group-balanced resamples).

Which heatmaps: the paper uses LRP (zennit, an epsilon / alpha2-beta1 composite with a
"gamma-symmetric" rule for convolutions) of the ERM model for its **predicted** class, resized
to 112 x 112. This function takes any heatmaps float[N,u,v]; the caller in xgir passes Grad-CAM
of the ERM head (at the last spatial stage), not LRP. ``n_clusters`` fixes m_c instead of the
eigengap (their ``--clusters_class_*`` without ``--auto``).

What differs from the paper: the explainer (the caller's; Grad-CAM in xgir, LRP there); the
eigenvalues come from a dense symmetric solver for classes of up to 3000 samples (LOBPCG
above, as theirs); k = max(2, int(ln n_c)) (theirs: int(ln n_c), which leaves a class of fewer
than 8 samples without edges); a class with fewer than 4 samples is one pseudo-group (too few to
cluster); the spectral embedding uses scikit-learn's default eigensolver (theirs: LOBPCG).
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import torch
from torch import nn

from xgir.correct.dfr import dfr_head
from xgir.errors import XgirError
from xgir.train.weighted_head import check_labelled_features

DENSE_MAX = 3000  # per-class size up to which the eigenvalues come from a dense solver


def _knn_affinity(x: np.ndarray) -> Any:
    """The symmetric kNN connectivity (scipy sparse [n,n]) with k = max(2, int(ln n)) incl. self."""
    from sklearn.neighbors import kneighbors_graph

    k = min(len(x), max(2, int(math.log(len(x)))))
    c = kneighbors_graph(x, n_neighbors=k, include_self=True)
    return 0.5 * (c + c.T)


def eigengap_clusters(affinity: Any, max_clusters: int, seed: int = 0) -> int:
    """The eigengap number of clusters in [2, max_clusters] of a symmetric affinity (scipy
    sparse or dense [n,n]): 1 + argmax_{j >= 1} (l_{j+1} - l_j) over the smallest eigenvalues of
    the normalised Laplacian (the authors' ``np.diff(eigv)[1:10].argmax() + 2``)."""
    from scipy.sparse import csgraph, csr_matrix
    from scipy.sparse.linalg import lobpcg

    a = csr_matrix(affinity)
    n = a.shape[0]
    top = min(max_clusters, n - 1)
    if top < 2:
        return 1
    lap = csgraph.laplacian(a, normed=True)
    if n <= DENSE_MAX:
        from scipy.linalg import eigh

        vals = eigh(lap.toarray(), eigvals_only=True, subset_by_index=[0, top])
    else:
        rng = np.random.default_rng(seed)
        x0 = rng.standard_normal((n, top + 2))
        vals, _ = lobpcg(lap, x0, largest=False, maxiter=2000, tol=None)
        vals = np.sort(vals)[: top + 1]
    gaps = np.diff(vals)[1:top]
    return int(gaps.argmax()) + 2


def exmap_pseudo_groups(
    heatmaps: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    *,
    max_clusters: int = 10,
    n_clusters: int | None = None,
    seed: int = 0,
) -> tuple[torch.Tensor, list[int]]:
    """ExMap's pseudo-groups long[N] from heatmaps float[N,u,v] (or [N,P]) and labels long[N]:
    class c's samples get ids offset_c + cluster (offset_c = the clusters of the classes before
    c). Returns the pseudo-groups and the number of clusters per class."""
    if not torch.is_tensor(heatmaps) or heatmaps.ndim < 2 or not heatmaps.is_floating_point():
        raise XgirError("ExMap: heatmaps must be a float tensor [N,u,v]")
    _, y = check_labelled_features(heatmaps.reshape(len(heatmaps), -1), labels, num_classes, "ExMap")
    if max_clusters < 2:
        raise XgirError(f"ExMap: max_clusters must be >= 2, got {max_clusters}")
    if n_clusters is not None and n_clusters < 1:
        raise XgirError(f"ExMap: n_clusters must be >= 1, got {n_clusters}")
    from sklearn.cluster import SpectralClustering

    x = heatmaps.reshape(len(heatmaps), -1).double().numpy()
    scale = np.abs(x).max(1, keepdims=True)
    x = x / np.where(scale > 0, scale, 1.0)
    groups = torch.zeros(len(y), dtype=torch.long)
    per_class: list[int] = []
    offset = 0
    for c in range(num_classes):
        idx = (y == c).nonzero().flatten()
        xc = x[idx.numpy()]
        if len(xc) < 4:
            m, assign = 1, np.zeros(len(xc), dtype=np.int64)
        else:
            aff = _knn_affinity(xc)
            m = n_clusters if n_clusters is not None else eigengap_clusters(aff, max_clusters, seed)
            m = min(m, len(xc) - 1)
            if m <= 1:
                m, assign = 1, np.zeros(len(xc), dtype=np.int64)
            else:
                sc = SpectralClustering(n_clusters=m, affinity="precomputed", assign_labels="cluster_qr",
                                        random_state=seed)
                with warnings.catch_warnings():  # well-separated modes leave the kNN graph disconnected: fine
                    warnings.filterwarnings("ignore", message="Graph is not fully connected")
                    assign = sc.fit_predict(aff)
                _, assign = np.unique(assign, return_inverse=True)  # ids 0..m'-1 of the clusters used
                m = int(assign.max()) + 1
        groups[idx] = offset + torch.from_numpy(np.asarray(assign, dtype=np.int64))
        per_class.append(m)
        offset += m
    return groups, per_class


def exmap_head(
    h: torch.Tensor,
    heatmaps: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    *,
    max_clusters: int = 10,
    n_clusters: int | None = None,
    c_grid: tuple[float, ...] = (0.03, 0.1, 0.3, 1.0, 3.0),
    resamples: int = 5,
    seed: int = 0,
) -> tuple[nn.Linear, dict[str, object]]:
    """ExMap's head ``nn.Linear(D, K)`` on raw features: :func:`exmap_pseudo_groups` of the
    held-out heatmaps float[N,u,v], then :func:`~xgir.correct.dfr.dfr_head` on the held-out
    features ``h`` float[N,D] with those pseudo-groups. Returns the head and {"C": DFR's C,
    "clusters": clusters per class, "pseudo_groups": long[N]}."""
    h, y = check_labelled_features(h, labels, num_classes, "ExMap")
    if len(heatmaps) != len(h):
        raise XgirError(f"ExMap: {len(heatmaps)} heatmaps but {len(h)} feature rows")
    groups, per_class = exmap_pseudo_groups(heatmaps, y, num_classes, max_clusters=max_clusters,
                                            n_clusters=n_clusters, seed=seed)
    head, info = dfr_head(h, y, groups, num_classes, c_grid=c_grid, resamples=resamples, seed=seed)
    return head, {"C": info["C"], "clusters": per_class, "pseudo_groups": groups}
