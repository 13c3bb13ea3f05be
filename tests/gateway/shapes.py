"""What the gateway tests share: the engineering demo key, a cache.yaml that turns the cache off,
OpenAI's error shape and a one-message chat."""

from __future__ import annotations

from typing import Any

ENG = {"authorization": "Bearer sk-demo-engineering"}
NO_CACHE = "enabled: false\n"


def err(message: str, type_: str, param: str | None, code: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def below_min(name: str, value: int) -> dict[str, Any]:
    return err(f"Invalid '{name}': integer below minimum value. Expected a value >= 1, "
               f"but got {value} instead.", "invalid_request_error", name,
               "integer_below_min_value")


def ask(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]
