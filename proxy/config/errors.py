"""Turn pydantic/YAML failures into messages that name the file, the field and the bad value."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


class ConfigError(ValueError):
    """Invalid configuration; the message names file, field and value."""


def read_yaml(path: Path) -> Any:
    try:
        with path.open(encoding="utf-8") as fh:
            return yaml.safe_load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None


def field_path(loc: tuple[int | str, ...]) -> str:
    """pydantic's error location as written in YAML terms: `rules[0].fallbacks`."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def describe_validation_error(path: Path | str, exc: ValidationError) -> str:
    lines = []
    for err in exc.errors(include_url=False):
        field = field_path(err["loc"])
        value = err.get("input")
        shown = "{...}" if isinstance(value, dict) else repr(value)
        if len(shown) > 120:
            shown = shown[:117] + "..."
        lines.append(f"{path}: field '{field}' has value {shown}: {err['msg']}")
    return "\n".join(lines)


def parse_model(model: type[M], data: Any, path: Path | str) -> M:
    try:
        return model.model_validate(data if data is not None else {})
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(path, exc)) from None


def load_model(model: type[M], path: Path) -> M:
    return parse_model(model, read_yaml(path), path)
