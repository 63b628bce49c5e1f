"""Config files (YAML) validated with pydantic: unknown keys, wrong types and missing
files become one clear line."""

from __future__ import annotations

import numbers
import os
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from xgir.errors import XgirError

M = TypeVar("M", bound=BaseModel)

SEED_MAX = 2**63 - 1  # torch's generators take a seed in 0..2**63-1


def check_seed(seed: int, option: str = "--seed") -> int:
    """``seed`` if it is a whole number in 0..2**63-1 (what torch's generators take); one
    XgirError line naming ``option`` otherwise."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed <= SEED_MAX:
        raise XgirError(f"{option} must be a whole number in 0..2**63-1, got {seed!r}")
    return seed


class StrictModel(BaseModel):
    """Base of every config section: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=(), allow_inf_nan=False)


def format_validation_error(err: ValidationError, source: str = "config") -> str:
    """The first problem of a pydantic error as one line: where, what, and the input."""
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "(top level)"
    kind = first["type"]
    if kind in ("extra_forbidden", "unexpected_keyword_argument"):
        msg = f"unknown key '{where}' (check the spelling)"
    elif kind == "missing":
        msg = f"missing required key '{where}'"
    elif kind == "value_error" and isinstance(first.get("ctx", {}).get("error"), XgirError):
        own = str(first["ctx"]["error"])  # our own check: its message already says what to do
        msg = own if f"'{where}" in own else f"{where}: {own}"  # (and where, when it quotes the key)
    else:
        msg = f"bad value for '{where}': {first['msg']} (got {first.get('input')!r})"
    more = len(err.errors()) - 1
    return f"{source}: {msg}" + (f" (and {more} more problem{'s' if more > 1 else ''})" if more else "")


class UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping (PyYAML keeps the last
    one without a word, so a setting would be silently dropped)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, str | int | float | bool) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key '{key}' is given twice (line {key_node.start_mark.line + 1}); keep one",
                    key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_config(path: str | os.PathLike, model: type[M]) -> M:
    """Read a YAML file into the pydantic ``model``; XgirError on any problem."""
    return validate_config(read_config(path, model), model, path)


def read_config(path: str | os.PathLike, model: type[BaseModel]) -> dict[str, Any]:
    """The top-level mapping of a YAML config file (not validated: see :func:`validate_config`);
    XgirError for a missing, unreadable, empty or non-mapping file (``model`` lists the keys)."""
    path = Path(path)
    if path.is_dir():
        raise XgirError(f"config {path} is a directory; give the YAML file inside it")
    if not path.is_file():
        raise XgirError(f"config file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise XgirError(f"{path} is not a text file (not UTF-8); a config is a YAML text file") from None
    except OSError as err:
        raise XgirError(f"cannot read config {path}: {err.strerror or err}") from None
    try:
        raw: Any = yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as err:
        raise XgirError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if raw is None or raw == {}:
        raise XgirError(f"{path} is empty (or only comments); {config_keys(model)}")
    if not isinstance(raw, dict):
        raise XgirError(f"{path}: the top level must be a mapping of keys to values")
    return raw


def validate_config(raw: dict[str, Any], model: type[M], path: str | os.PathLike) -> M:
    """``raw`` (read from ``path``) validated into ``model``; XgirError with the first problem."""
    try:
        return model.model_validate(raw)
    except ValidationError as err:
        raise XgirError(format_validation_error(err, str(path))) from None
    except XgirError as err:  # a range check of a section (e.g. xgir: ...)
        raise XgirError(f"{path}: {err}") from None


def config_keys(model: type[BaseModel]) -> str:
    """The top-level keys of a config model as a sentence: required ones, then the optional ones."""
    required = [k for k, f in model.model_fields.items() if f.is_required()]
    optional = [k for k, f in model.model_fields.items() if not f.is_required()]
    parts = []
    if required:
        parts.append(f"it needs the keys {', '.join(required)}")
    if optional:
        parts.append(f"{'optional' if required else 'it sets some of the keys'}: {', '.join(optional)}")
    return "; ".join(parts) + " (see configs/ for examples)"
