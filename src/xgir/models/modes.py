"""Temporarily switch a model's mode without losing per-module settings."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Run a block with ``model`` (every submodule) in eval mode, then restore each submodule's
    own mode: batch-norm statistics are not updated and dropout is off inside the block."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training
