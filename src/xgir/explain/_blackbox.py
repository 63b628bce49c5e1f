"""Shared plumbing of the black-box explainers (RISE, LIME, IASSA).

They only query the model: ``softmax(model(x'))`` on perturbed copies x' of the input,
in batches, without gradients. The model's mode is left alone (call ``model.eval()``
first: a model in train mode gives dropout noise and batch-norm updates).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from xgir.errors import XgirError
from xgir.explain._hooks import check_images
from xgir.explain.targets import Targets, as_targets


def images_for(model: nn.Module, x: Any, name: str = "x") -> torch.Tensor:
    """``x`` (integer images are cast to float) checked by :func:`xgir.explain._hooks.check_images`,
    and on the model's device; a clear error for anything else."""
    if isinstance(x, torch.Tensor) and not x.is_floating_point():
        x = x.float()
    check_images(x, name)
    param = next(model.parameters(), None)
    if param is not None and param.device != x.device:
        raise XgirError(f"the model is on {param.device} but {name} is on {x.device}; "
                        "move both to the same device")
    return x


@torch.no_grad()
def predict_probs(model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Class probabilities float[M,K] = softmax(model(x)) for x float[M,C,H,W], in batches."""
    out = []
    for start in range(0, x.shape[0], batch_size):
        logits = model(x[start:start + batch_size])
        if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
            shape = getattr(logits, "shape", type(logits).__name__)
            raise XgirError(f"the model must return logits [N,K], got {shape}")
        if not bool(torch.isfinite(logits).all()):
            raise XgirError("the model's outputs hold NaN or infinite values (a diverged or broken model); "
                            "nothing to explain")
        out.append(torch.softmax(logits.float(), dim=1))
    return torch.cat(out)


def prepare(model: nn.Module, x: Any, targets: Any, batch_size: int
            ) -> tuple[torch.Tensor, Targets, torch.Tensor]:
    """Check ``x``, read ``targets`` and run one clean forward pass.

    Returns:
        (x float[N,C,H,W], targets on x's device, clean probabilities float[N,K]).
    """
    x = images_for(model, x)
    probs = predict_probs(model, x, batch_size)
    tg = as_targets(targets, x.shape[0], probs.shape[1]).to(x.device)
    return x, tg, probs


def score_samples(targets: Targets, probs: torch.Tensor) -> torch.Tensor:
    """Target scores float[N,B,T] of B perturbed samples per image, probs float[N,B,K]
    (``Targets.probability_scores`` of each sample with its own image's targets)."""
    n, b, k = probs.shape
    expanded = Targets(targets.weights.repeat_interleave(b, 0),
                       targets.cluster.repeat_interleave(b, 0),
                       targets.is_cluster.repeat_interleave(b, 0))
    return expanded.probability_scores(probs.reshape(n * b, k)).reshape(n, b, -1)


def generator(device: torch.device, seed: int) -> torch.Generator:
    """A torch generator on ``device`` seeded with ``seed``."""
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed))
    return gen


def check_positive(**values: float) -> None:
    """Raise XgirError for any parameter that is not > 0."""
    for key, value in values.items():
        if not value > 0:
            raise XgirError(f"{key} must be > 0, got {value}")


def take(targets: Targets, index: torch.Tensor | slice) -> Targets:
    """The targets of the images ``index`` (a slice or a long tensor of image indices)."""
    return Targets(targets.weights[index], targets.cluster[index], targets.is_cluster[index])


# Pixels per forward pass that keep a CPU near its best throughput and a GPU busy. Measured on
# EfficientNet-Lite0 at 224 px on a 2-core CPU: 48 ms per image in batches of 8, 61 ms in
# batches of 32 (larger batches leave the caches), so 8 images at 224 px (256 at 32 px).
PIXELS_PER_BATCH = {"cpu": 8 * 224 * 224, "cuda": 256 * 224 * 224, "mps": 64 * 224 * 224}


def auto_batch_size(x: torch.Tensor, batch_size: int | None, largest: int = 256) -> int:
    """``batch_size`` when given, else images per forward pass chosen from x's size and device:
    ``PIXELS_PER_BATCH[device] / (H * W)``, between 1 and ``largest`` (8 at 224 px on CPU,
    256 at 32 px)."""
    if batch_size is not None:
        return int(batch_size)
    h, w = x.shape[-2:]
    budget = PIXELS_PER_BATCH.get(x.device.type, PIXELS_PER_BATCH["cuda"])
    return int(max(1, min(largest, budget // max(1, h * w))))
