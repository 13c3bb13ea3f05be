"""Query parameters of the admin API: numbers with bounds, errors that name the parameter."""

from __future__ import annotations

import math
from collections.abc import Mapping

from proxy.errors import InvalidRequest


def number_param(params: Mapping[str, str], name: str, default: float, low: float, high: float,
                 *, include_low: bool = True, include_high: bool = True) -> float:
    """`params[name]` as a float within the bounds, `default` when absent; 400 otherwise."""
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan  # fails every comparison below
    above = low <= value if include_low else low < value
    below = value <= high if include_high else value < high
    if not (above and below):
        if include_low and include_high:
            bounds = f"from {low:g} to {high:g}"
        else:
            bounds = (f"in {'[' if include_low else '('}{low:g}, {high:g}"
                      f"{']' if include_high else ')'}")
        raise InvalidRequest(f"Invalid '{name}': expected a number {bounds}, got '{raw}'.",
                             param=name, code="invalid_value")
    return value
