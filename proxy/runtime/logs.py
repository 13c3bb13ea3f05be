"""Process logging for `meterline serve`: one line per record, JSON or text, and the access line.

The access line holds what an operator needs to find a request (ids, department, models,
route, cache, status, cost, latencies) and never a key, a prompt or an answer."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import orjson

from proxy.errors import CALL_KEY, REQUEST_ID_KEY
from proxy.settings import LogFormat

ACCESS = logging.getLogger("meterline.access")


class JsonFormatter(logging.Formatter):
    """{"ts", "level", "logger", "message", ...fields}: one JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, Mapping):
            line.update(fields)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


class TextFormatter(logging.Formatter):
    """`LEVEL logger message key=value ...` for a terminal."""

    def __init__(self) -> None:
        super().__init__("%(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = getattr(record, "fields", None)
        if isinstance(fields, Mapping):
            text += "".join(f" {k}={v}" for k, v in fields.items() if v is not None)
        return text


def configure_logging(level: str, fmt: LogFormat) -> None:
    """The root logger writes to stderr in `fmt`; uvicorn's loggers propagate to it."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())


def access_enabled() -> bool:
    return ACCESS.isEnabledFor(logging.INFO)


def log_access(scope: Mapping[str, Any], status: int, total_s: float) -> None:
    """The access line of one API request, from what the pipeline left on the scope."""
    call = scope.get(CALL_KEY)
    record = call.record if call is not None else None
    fields: dict[str, Any] = {
        "request_id": scope.get(REQUEST_ID_KEY),
        "method": scope.get("method"),
        "path": scope.get("path"),
        "status": status,
        "department": call.department if call is not None else None,
        "key_id": call.principal.key_id if call is not None else None,
        "model_requested": record.model_requested if record is not None else _model(call),
        "model_served": record.model_used if record is not None and record.provider else None,
        "provider": (record.provider or None) if record is not None else None,
        "route": record.route_rule if record is not None else None,
        "experiment": record.experiment if record is not None else None,
        "variant": record.variant if record is not None else None,
        "cache": record.cache if record is not None else None,
        "stream": call.stream if call is not None else None,
        "cost_usd": round(record.cost, 8) if record is not None else None,
        "cost_estimated": record.cost_estimated if record is not None else None,
        "input_tokens": record.input_tokens if record is not None else None,
        "output_tokens": record.output_tokens if record is not None else None,
        "error": record.error if record is not None else None,
        "upstream_ms": round(call.upstream_s * 1000, 2) if call is not None else None,
        "total_ms": round(total_s * 1000, 2),
    }
    ACCESS.info("access", extra={"fields": fields})


def _model(call: Any) -> str | None:
    model = call.body.get("model") if call is not None else None
    return model if isinstance(model, str) else None
