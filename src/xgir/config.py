"""Config files (YAML) validated with pydantic: unknown keys, wrong types and missing
files become one clear line."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from xgir.errors import XgirError

M = TypeVar("M", bound=BaseModel)


class StrictModel(BaseModel):
    """Base of every config section: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())


def format_validation_error(err: ValidationError, source: str = "config") -> str:
    """The first problem of a pydantic error as one line: where, what, and the input."""
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "(top level)"
    kind = first["type"]
    if kind == "extra_forbidden":
        msg = f"unknown key '{where}' (check the spelling)"
    elif kind == "missing":
        msg = f"missing required key '{where}'"
    else:
        msg = f"bad value for '{where}': {first['msg']} (got {first.get('input')!r})"
    more = len(err.errors()) - 1
    return f"{source}: {msg}" + (f" (and {more} more problem{'s' if more > 1 else ''})" if more else "")


def load_config(path: str | os.PathLike, model: type[M]) -> M:
    """Read a YAML file into the pydantic ``model``; XgirError on any problem."""
    path = Path(path)
    if not path.is_file():
        raise XgirError(f"config file not found: {path}")
    try:
        raw: Any = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise XgirError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise XgirError(f"{path}: the top level must be a mapping of keys to values")
    try:
        return model.model_validate(raw)
    except ValidationError as err:
        raise XgirError(format_validation_error(err, str(path))) from None
