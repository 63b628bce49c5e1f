"""The ``xgir correct`` config: its sections, validated with pydantic (every key checked;
a typo is an error naming it). :class:`XGIRRunConfig` is the whole file; see
``configs/xgir-imagefolder.yaml`` and :mod:`xgir.correct.pipeline`, which runs it."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, PositiveInt, field_validator, model_validator

from xgir.config import StrictModel
from xgir.correct.xgir import XGIRConfig
from xgir.errors import XgirError
from xgir.sharded import PassesSection


class ModelSection(StrictModel):
    """The model: ``spec`` (any :func:`xgir.models.load_model` spec: a built-in name such as
    ``efficientnet-lite0``, an xgir checkpoint, or a factory) or ``factory`` (a
    ``"package.module:function"`` called with ``kwargs``, optionally loaded from ``weights``; no
    normalisation added: use ``data.normalize``). ``head`` / ``deep_layer`` / ``shallow_layer``
    default to the loaded model's own for a ``spec`` (``fc`` / ``layer4`` for a factory)."""

    spec: str | None = None
    factory: str | None = None  # "package.module:function" returning an nn.Module
    kwargs: dict[str, Any] = Field(default_factory=dict)
    weights: str | None = None  # .pt / .pth (state_dict or {"state_dict": ...}) or .safetensors
    head: str | None = None
    deep_layer: str | None = None
    shallow_layer: str | None = None  # needed for explainer: cwox

    @field_validator("factory")
    @classmethod
    def _factory_form(cls, v: str | None) -> str | None:
        if v is None:
            return v
        mod, sep, attr = v.partition(":")
        if not sep or not mod.strip() or not attr.strip() or ":" in attr:
            raise ValueError(f"model.factory must look like 'package.module:function', got '{v}'")
        return v

    @model_validator(mode="after")
    def _one_source(self) -> ModelSection:
        if (self.spec is None) == (self.factory is None):
            raise ValueError("give exactly one of model.spec (a built-in name such as efficientnet-lite0, "
                             "an xgir checkpoint .pt, or package.module:function) and model.factory")
        if self.factory is not None:
            self.head = self.head or "fc"
            self.deep_layer = self.deep_layer or "layer4"
        return self

    @property
    def name(self) -> str:
        """How the model is named in reports."""
        return str(self.spec or self.factory)


class NormalizeSection(StrictModel):
    mean: list[float]
    std: list[float]

    @model_validator(mode="after")
    def _same_length(self) -> NormalizeSection:
        if len(self.mean) != len(self.std) or not self.mean:
            raise ValueError("normalize.mean and normalize.std need the same (non-zero) number of values")
        if any(s <= 0 for s in self.std):
            raise ValueError("normalize.std values must be positive")
        return self


class MaxImages(StrictModel):
    source_train: int | None = Field(default=None, gt=0)
    source_test: int | None = Field(default=None, gt=0)
    target_val: int | None = Field(default=None, gt=0)
    target_test: int | None = Field(default=None, gt=0)


class DataSection(StrictModel):
    source_train: str
    source_test: str
    target_test: str
    target_val: str | None = None
    image_size: int = Field(default=224, gt=0)
    # how images of any size reach image_size: "crop" (resize the shorter side to 8/7 of it,
    # centre crop: the standard evaluation transform) or "squash" (resize both sides)
    fit: Literal["crop", "squash"] = "crop"
    classes: list[str] | None = None  # source class folders in label order (default: sorted)
    # target class folders in label order: default the source's; "index" = folders 0..K-1
    # (ImageNet-V2's layout); or a list
    target_classes: list[str] | Literal["index"] | None = None
    normalize: NormalizeSection | None = None
    max_images: PositiveInt | MaxImages | None = None  # one cap for every split, or per split
    batch_size: int = Field(default=64, gt=0)
    workers: int = Field(default=0, ge=0)  # DataLoader worker processes for reading images
    # an unreadable image: stop with its name (error) or leave it out and list it in the report (skip)
    on_bad_image: Literal["error", "skip"] = "error"


XGIRSection = XGIRConfig  # the ``xgir:`` section is the library's dataclass, validated the same way


class XGIRRunConfig(StrictModel):
    """The ``xgir correct`` config (see the module docstring)."""

    model: ModelSection
    data: DataSection
    explainer: Literal["iox", "cwox"] = "iox"
    cwox_level: float = Field(default=0.5, ge=0, le=1)  # cut level of the confusion tree
    xgir: XGIRConfig = Field(default_factory=XGIRConfig)
    out: str = "runs/xgir"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    passes: PassesSection = Field(default_factory=PassesSection)  # chunked storage of the passes (torchrun)

    @field_validator("xgir", mode="wrap")
    @classmethod
    def _xgir_errors(cls, value: Any, handler: Any) -> XGIRConfig:
        try:
            return handler(value)
        except XgirError as err:  # a range check of XGIRConfig: name the section
            raise XgirError(f"xgir: {err}") from None

    @model_validator(mode="after")
    def _cwox_layers(self) -> XGIRRunConfig:
        if self.explainer == "cwox" and not self.model.shallow_layer and self.model.spec is None:
            raise ValueError("explainer cwox needs model.shallow_layer (e.g. layer3)")
        return self
