"""Training configs (YAML), validated: ``xgir train --config FILE.yaml``
(:func:`load_train_config` picks the schema by ``mode``).

Modes ``erm`` and ``two-stage`` (:class:`TrainConfig`) train a zoo architecture on an
embedded dataset; mode ``head`` (:class:`HeadTrainConfig`) fits a new linear head for the
classes of any labelled images on a pretrained network's frozen features. Example (two-stage
setup)::

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

import os
from typing import Annotated, Any, Literal

import torch
from pydantic import ConfigDict, Discriminator, Field, Tag, ValidationError, field_validator

from xgir.config import SEED_MAX, StrictModel, read_config, validate_config
from xgir.errors import XgirError

MODES = ("erm", "two-stage", "head")


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
        return check_device_name(v)


def check_device_name(v: str) -> str:
    """``v`` when it names a torch device type (cpu, cuda, cuda:N, mps); XgirError otherwise."""
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


# ---- mode head: a new head on a pretrained network's frozen features --------------------------
class PretrainedSection(StrictModel):
    """``model:`` of mode head: the pretrained network, any :func:`xgir.models.load_model` spec
    (``efficientnet-lite0``, an xgir checkpoint, or a factory ``package.module:function`` called
    with ``kwargs``, loaded from ``weights``); ``head``: its final ``nn.Linear``, the one
    replaced (default: the loaded model's own, e.g. ``_fc``, ``fc``)."""

    spec: str
    kwargs: dict[str, Any] = Field(default_factory=dict)
    weights: str | None = None
    head: str | None = None


class ImagesSection(StrictModel):
    """``data:`` of mode head. ``train``: labelled images (an image spec of
    :mod:`xgir.data.images`: class folders ``root/<class>/<image>``, a Waterbirds ``ROOT:train``,
    an embedded ``NAME:SPLIT``); ``eval``: more splits to score, name -> spec, with the same
    classes. Class folders and Waterbirds are streamed; embedded datasets are read into memory."""

    train: str
    eval: dict[str, str] = Field(default_factory=dict)
    classes: list[str] | None = None  # the class folders in label order (default: sorted names)
    fit: Literal["crop", "squash"] | None = None  # default: the model's own preprocessing
    batch_size: int = Field(default=64, gt=0)  # images per forward pass of the features
    workers: int = Field(default=0, ge=0)  # DataLoader worker processes reading images
    chunk_images: int = Field(default=2048, gt=0)  # images per resumable chunk of the features pass

    @field_validator("eval")
    @classmethod
    def _eval_names(cls, v: dict[str, str]) -> dict[str, str]:
        if "train" in v:
            raise XgirError("data.eval: 'train' names the training split in the results; call that split otherwise")
        return v


class _HeadOptim(OptimConfig):
    """How a head is fitted with cross-entropy and Adam (:func:`xgir.train.features.fit_head`)."""

    epochs: int = Field(default=30, ge=1)
    lr: float = Field(default=1e-2, gt=0)
    batch_size: int = Field(default=256, ge=1)


class HeadSection(_HeadOptim):
    """``head:`` of mode head: how the new ``nn.Linear(D, K)`` is fitted on the cached features.
    ``method: erm``: cross-entropy with Adam (:func:`xgir.train.features.fit_head`).

    Another method is a section with its own ``method`` literal and settings (as the anchors
    below), added to :data:`HeadMethodSection`, the union discriminated by ``method``, and a fit
    function in :data:`xgir.train.pretrained.HEAD_METHODS`."""

    method: Literal["erm"] = "erm"


class _HeldOutSection(_HeadOptim):
    """An annotation-free anchor on a held-out part of ``data.train`` (:mod:`xgir.correct.anchor_heads`):
    a seeded ``holdout`` share of the training images is set aside; the ERM head (``epochs``,
    ``lr``, ``batch_size``, ``weight_decay``: as method erm) is fitted on the rest and the
    anchor's head on the held-out part (``retrain_*``: its own optimiser, the paper's defaults)."""

    holdout: float = Field(default=0.2, gt=0, lt=1)


class AFRHeadSection(_HeldOutSection):
    """``method: afr``: AFR (Qiu et al. 2023, :func:`xgir.correct.afr.afr_head`): the ERM head
    retrained on the held-out part with weights exp(-gamma p_i(y_i)), class-rebalanced, and the
    penalty ``lambda`` ||W - W0||^2; ``retrain_epochs`` full-batch SGD steps at ``retrain_lr``."""

    model_config = ConfigDict(serialize_by_alias=True)

    method: Literal["afr"]
    gamma: float = Field(default=10.0, ge=0)
    lam: float = Field(default=0.0, ge=0, alias="lambda")
    retrain_epochs: int = Field(default=500, ge=1)
    retrain_lr: float = Field(default=1e-2, gt=0)


class ClassBalancedHeadSection(_HeldOutSection):
    """``method: class-balanced``: a fresh head trained class-balanced on the held-out part
    (LaBonte et al. 2023, :func:`xgir.correct.class_balanced.class_balanced_head`; ``balance``
    sampler or subset); no ERM head is needed (``epochs``, ``lr``... are unused)."""

    method: Literal["class-balanced"]
    balance: Literal["sampler", "subset"] = "sampler"
    retrain_epochs: int = Field(default=100, ge=1)
    retrain_lr: float = Field(default=3e-3, gt=0)
    retrain_batch_size: int = Field(default=32, ge=1)


class ErrorUpweightingHeadSection(_HeldOutSection):
    """``method: error-upweighting``: JTT's idea on the last layer (:func:`xgir.correct.jtt.jtt_head`):
    a fresh head trained on the held-out part with the ERM head's errors upweighted by ``lambda_up``."""

    method: Literal["error-upweighting"]
    lambda_up: float = Field(default=100.0, ge=1)
    retrain_epochs: int = Field(default=100, ge=1)
    retrain_lr: float = Field(default=3e-3, gt=0)
    retrain_batch_size: int = Field(default=32, ge=1)


def _method_tag(value: Any) -> str:
    """``head.method`` of a section (a mapping or a model); erm when not given."""
    return str(value.get("method", "erm") if isinstance(value, dict) else getattr(value, "method", "erm"))


HeadMethodSection = Annotated[
    Annotated[HeadSection, Tag("erm")] | Annotated[AFRHeadSection, Tag("afr")]
    | Annotated[ClassBalancedHeadSection, Tag("class-balanced")]
    | Annotated[ErrorUpweightingHeadSection, Tag("error-upweighting")],
    Discriminator(_method_tag)]
"""``head:`` of mode head: one section per ``head.method`` (default erm)."""
HEAD_METHOD_NAMES = ("erm", "afr", "class-balanced", "error-upweighting")


class HeadTrainConfig(StrictModel):
    """``mode: head``: a new linear head for the classes of ``data.train`` on the frozen, cached
    features of ``model``; the saved model is the network with its head replaced. Example::

        mode: head
        out: runs/head
        model: {spec: efficientnet-lite0}
        data: {train: data/train, eval: {test: data/test}}
        head: {method: erm, epochs: 30, lr: 0.01}
    """

    mode: Literal["head"] = "head"
    seed: int = 0
    out: str = "runs/head"
    device: str = "cpu"
    model: PretrainedSection
    data: ImagesSection
    head: HeadMethodSection = Field(default_factory=HeadSection)

    @field_validator("device")
    @classmethod
    def _device_name(cls, v: str) -> str:
        return check_device_name(v)

    @field_validator("head", mode="wrap")
    @classmethod
    def _head_errors(cls, value: Any, handler: Any) -> Any:
        try:
            return handler(value)
        except ValidationError as err:  # name the key as written (head.gamma), not pydantic's head.afr.gamma
            raise XgirError(_head_error(err, value)) from None


def _head_error(err: ValidationError, value: Any) -> str:
    """The first problem of the ``head:`` section as one line, its place written as in YAML."""
    first = err.errors()[0]
    loc = [str(p) for p in first["loc"]]
    if loc and loc[0] == _method_tag(value):
        loc = loc[1:]  # the union's tag
    where = ".".join(["head", *loc])
    kind = first["type"]
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        return f"bad value for 'head.method': {_method_tag(value)!r}; choose one of {', '.join(HEAD_METHOD_NAMES)}"
    if kind == "extra_forbidden":
        return f"unknown key '{where}' (check the spelling)"
    return f"bad value for '{where}': {first['msg']} (got {first.get('input')!r})"


def load_train_config(path: str | os.PathLike) -> TrainConfig | HeadTrainConfig:
    """The ``xgir train`` config in ``path``, validated by the schema of its ``mode`` (default
    erm); XgirError (one line) on any problem."""
    raw = read_config(path, TrainConfig)
    mode = raw.get("mode", "erm")
    if mode not in MODES:
        raise XgirError(f"{path}: bad value for 'mode': {mode!r}; choose one of {', '.join(MODES)}")
    if mode == "head":
        return validate_config(raw, HeadTrainConfig, path)
    return validate_config(raw, TrainConfig, path)
