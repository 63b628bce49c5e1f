"""The two-stage setup (docs/correct.md, "The two-stage setup").

Stage 1: a feature extractor is pretrained on ``glyph-pretrain`` with both labels
(character and texture family; one multi-task linear layer whose first logits are
the characters and the rest the textures), then frozen. Stage 2: a fresh softmax
head is trained on the biased source data of ``background-shift`` on the frozen
features. Pretrained extractors are cached on disk, keyed by their config.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from xgir.data import TEXTURE_FAMILIES, load_dataset
from xgir.errors import XgirError, warn
from xgir.io import cache_dir, fingerprint
from xgir.models import build_model, load_checkpoint, save_checkpoint
from xgir.models.split import copy_body
from xgir.progress import step
from xgir.train.config import ModelConfig, PretrainConfig
from xgir.train.erm import fit_classifier


def _multitask_loss(num_chars: int):
    def loss(logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.cross_entropy(logits[:, :num_chars], batch["label"]) + F.cross_entropy(
            logits[:, num_chars:], batch["texture"]
        )

    return loss


def pretrain_extractor(
    pretrain: PretrainConfig, model: ModelConfig, seed: int = 0, device: str = "cpu",
    progress: bool = True,
) -> nn.Module:
    """The stage-1 multi-task network (cached): logits = [chars..., texture families...]."""
    with step(f"building {pretrain.data.name}/train", enabled=progress):
        data = load_dataset(pretrain.data.name, "train", seed=seed, **pretrain.data.params)
    n_out = data.num_classes + len(TEXTURE_FAMILIES)
    params = {**model.params, "num_classes": n_out}
    key = fingerprint(pretrain.model_dump(), model.arch, params, seed, "pretrain-v1")
    path = cache_dir() / "extractors" / f"{model.arch}-{key}.pt"
    if path.exists():
        try:
            net, _ = load_checkpoint(path, map_location=device)
            return net
        except XgirError as err:
            warn(f"corrupt cache entry {path} ({err}); removed, retraining the extractor")
            path.unlink(missing_ok=True)
    torch.manual_seed(seed)
    net = build_model(model.arch, **params).to(device)
    fit_classifier(
        net, data, epochs=pretrain.epochs, lr=pretrain.lr, batch_size=pretrain.batch_size,
        weight_decay=pretrain.weight_decay, seed=seed, progress=progress, desc="pretrain",
        loss_fn=_multitask_loss(data.num_classes),
    )
    save_checkpoint(net, path, model.arch, params, meta={"stage": "pretrain", "num_chars": data.num_classes})
    return net.eval()


def pretrain_accuracy(net: nn.Module, seed: int, pretrain: PretrainConfig, n: int | None = None) -> dict[str, float]:
    """Character and texture accuracy of the stage-1 network on ``glyph-pretrain/val`` (``n``
    images; None: the split's default size)."""
    from xgir.models.accuracy import accuracy_from_predictions
    from xgir.train.erm import predict_logits

    params = {k: v for k, v in pretrain.data.params.items() if k != "n"}
    val = load_dataset(pretrain.data.name, "val", seed=seed, **params, **({} if n is None else {"n": n}))
    logits = predict_logits(net, val.images)
    k = val.num_classes
    return {
        "char": accuracy_from_predictions(logits[:, :k].argmax(1), val.labels)["accuracy"],
        "texture": accuracy_from_predictions(logits[:, k:].argmax(1), val.extras["texture"])["accuracy"],
    }


def frozen_with_new_head(pretrained: nn.Module, arch: str, params: dict[str, Any], num_classes: int) -> nn.Module:
    """A zoo model with ``num_classes`` outputs whose body is the pretrained one, frozen
    (no gradients, batch norm in eval mode); only ``fc`` is trainable."""
    model = copy_body(pretrained, build_model(arch, **{**params, "num_classes": num_classes}))
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith("fc."))
    return model.eval()
