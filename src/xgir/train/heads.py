"""Many softmax heads on fixed features trained at once (one batched problem).

:func:`fit_heads` trains K heads as a stacked weight float[K,C,D] with batched matrix products:
the same minibatch Adam as :func:`xgir.train.features.fit_head`, head by head the same seed
(initialisation and batch order), the same epochs and batches, so each head equals the one
:func:`~xgir.train.features.fit_head` fits up to float summation order (tested to 1e-4). Adam
acts elementwise, and the loss is the sum of the heads' own mean losses, so the heads do not
interact. Worth it because one head's step is tiny (a [256,D] x [D,C] product): the per-step
Python and optimiser overhead, paid once for K heads instead of K times, is most of the cost.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from xgir.errors import XgirError
from xgir.train.erm import check_features, check_weights


def fit_heads(
    features: Sequence[torch.Tensor] | torch.Tensor,
    labels: Sequence[torch.Tensor] | torch.Tensor,
    num_classes: int,
    seeds: Sequence[int],
    *,
    epochs: int = 30,
    lr: float = 1e-2,
    batch_size: int = 256,
    weight_decay: float = 0.0,
) -> list[nn.Linear]:
    """K heads ``nn.Linear(D, num_classes)``, head k trained on ``features[k]`` float[N,D] and
    ``labels[k]`` long[N] with seed ``seeds[k]``, as ``fit_head(features[k], labels[k], ...,
    seed=seeds[k])`` does. Every head needs the same N (the same number of steps per epoch)."""
    k = len(seeds)
    if len(features) != k or len(labels) != k:
        raise XgirError(f"fit_heads: {len(features)} feature sets, {len(labels)} label sets and {k} seeds differ")
    if k == 0:
        return []
    if isinstance(features, torch.Tensor):
        features = list(features)
    if len({tuple(f.shape) for f in features}) != 1 or features[0].ndim != 2:
        raise XgirError(f"fit_heads: every head needs features [N,D] of one shape, got "
                        f"{sorted({tuple(f.shape) for f in features})}")
    # image-major [N,K,D]: a minibatch is one gather of contiguous K*D rows (4x faster than [K,N,D])
    x = torch.stack([f.float() for f in features], dim=1)
    check_features(x)
    y = torch.stack(list(labels), dim=1)  # [N,K]
    n, d = x.shape[0], x.shape[2]
    if y.shape != (n, k):
        raise XgirError(f"fit_heads: labels must be [N] per head with N = {n}, got {tuple(y.shape)} stacked")
    w, b = [], []
    for s in seeds:  # fit_head's initialisation: torch.manual_seed(seed), then a fresh nn.Linear
        torch.manual_seed(s)
        lin = nn.Linear(d, num_classes)
        w.append(lin.weight.detach())
        b.append(lin.bias.detach())
    weight = nn.Parameter(torch.stack(w).contiguous())  # [K,C,D]: the layout of the fast products
    bias = nn.Parameter(torch.stack(b).contiguous())  # [K,C]
    opt = torch.optim.Adam([weight, bias], lr=lr, weight_decay=weight_decay)
    distinct = list(dict.fromkeys(seeds))
    gens = {s: torch.Generator().manual_seed(s) for s in distinct}
    which = torch.tensor([distinct.index(s) for s in seeds])
    cols = torch.arange(k)
    for epoch in range(epochs):
        orders = torch.stack([torch.randperm(n, generator=gens[s]) for s in distinct])  # [S,N]
        for i in range(0, n, batch_size):
            step = orders[:, i : i + batch_size]
            if len(distinct) == 1:  # one batch order for all heads: a plain row gather
                xb, yb = x.index_select(0, step[0]).transpose(0, 1), y.index_select(0, step[0]).T
            else:
                xb, yb = x[step[which].T, cols].transpose(0, 1), y[step[which].T, cols].T  # [K,B,D], [K,B]
            with torch.no_grad():  # cross-entropy by hand: dL/dlogits = (softmax - onehot) / B per head
                logits = torch.bmm(weight, xb.transpose(1, 2)).transpose(1, 2) + bias[:, None, :]  # [K,B,C]
                logp = logits.log_softmax(dim=2)
                loss = -logp.gather(2, yb[..., None]).mean(dim=(1, 2))  # [K]
                if not bool(torch.isfinite(loss).all()):
                    bad = int((~torch.isfinite(loss)).nonzero()[0])
                    raise XgirError(f"head {bad}: training diverged (loss {float(loss[bad])} at epoch {epoch + 1}, "
                                    f"step {i // batch_size + 1}); lower the learning rate (lr {lr:g}); "
                                    "nothing was saved")
                grad = logp.exp_().scatter_add_(2, yb[..., None], torch.full_like(logits[..., :1], -1.0))
                grad /= xb.shape[1]
                weight.grad = torch.bmm(grad.transpose(1, 2), xb)  # [K,C,D]
                bias.grad = grad.sum(dim=1)
            opt.step()
    check_weights([weight, bias], "heads", lr)
    out = []
    with torch.random.fork_rng(devices=[]), torch.no_grad():  # the global RNG ends as after fit_head
        for j in range(k):
            lin = nn.Linear(d, num_classes)
            lin.weight.copy_(weight[j])
            lin.bias.copy_(bias[j])
            out.append(lin.eval())
    return out
