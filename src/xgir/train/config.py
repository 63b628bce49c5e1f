"""Training configs (YAML), validated: ``xgir train --config FILE.yaml``.

Example (two-stage setup)::

    seed: 0
    out: runs/two-stage
    mode: two-stage
    data: {name: background-shift, params: {p: 0.95}}
    model: {arch: small-resnet, params: {width: 16}}
    train: {epochs: 30, lr: 0.01, batch_size: 256}
    pretrain:
      data: {name: glyph-pretrain, params: {n: 20000}}
      epochs: 6
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field, field_validator

from xgir.config import SEED_MAX, StrictModel


class DataConfig(StrictModel):
    name: str = "background-shift"
    params: dict[str, Any] = Field(default_factory=dict)
    train_split: str = "source-train"
    eval_splits: list[str] = Field(
        default_factory=lambda: ["source-val", "source-test", "target-test"]
    )


    @field_validator("eval_splits")
    @classmethod
    def _some_split(cls, v: list[str]) -> list[str]:
        from xgir.errors import XgirError

        if not v:
            raise XgirError("data.eval_splits is empty; name at least one split to evaluate, e.g. [test]")
        return v


class ModelConfig(StrictModel):
    arch: str = "small-resnet"
    params: dict[str, Any] = Field(default_factory=dict)


class OptimConfig(StrictModel):
    epochs: int = Field(default=10, ge=1)
    lr: float = Field(default=1e-3, gt=0)
    batch_size: int = Field(default=128, ge=1)
    weight_decay: float = Field(default=0.0, ge=0)


class PretrainData(StrictModel):
    name: str = "glyph-pretrain"
    params: dict[str, Any] = Field(default_factory=dict)


class PretrainConfig(OptimConfig):
    """Stage 1 of the two-stage setup: multi-task pretraining of the extractor."""

    data: PretrainData = Field(default_factory=PretrainData)
    epochs: int = Field(default=6, ge=1)
    lr: float = Field(default=2e-3, gt=0)


class TrainConfig(StrictModel):
    seed: int = Field(default=0, ge=0, le=SEED_MAX)
    out: str = "runs/train"
    mode: Literal["erm", "two-stage"] = "erm"
    device: str = "cpu"
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: OptimConfig = Field(default_factory=OptimConfig)
    pretrain: PretrainConfig = Field(default_factory=PretrainConfig)
    probe: bool = True

    @field_validator("device")
    @classmethod
    def _device_name(cls, v: str) -> str:
        from xgir.errors import XgirError

        try:
            kind = torch.device(v).type
        except (RuntimeError, TypeError):
            kind = None
        if kind not in ("cpu", "cuda", "mps"):
            raise XgirError(f"device '{v}' is not a torch device; use cpu, cuda or cuda:N")
        return v


def two_stage_config(out: str = "runs/two-stage", seed: int = 0) -> TrainConfig:
    """The two-stage setup used by ``make demo`` and the XGIR suite (= configs/two-stage.yaml)."""
    return TrainConfig.model_validate({
        "seed": seed,
        "out": out,
        "mode": "two-stage",
        "data": {"name": "background-shift", "params": {"p": 0.95}, "train_split": "source-train",
                 "eval_splits": ["source-val", "source-test", "target-test"]},
        "model": {"arch": "small-resnet", "params": {"width": 16}},
        "train": {"epochs": 30, "lr": 0.01, "batch_size": 256},
        "pretrain": {"data": {"name": "glyph-pretrain", "params": {"n": 20000}}, "epochs": 10,
                     "lr": 0.002, "batch_size": 128},
    })
