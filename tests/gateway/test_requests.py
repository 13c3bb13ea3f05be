"""Reading request bodies: a client that leaves during the upload is not a proxy error."""

from __future__ import annotations

import socket
import time
from typing import Any

import httpx

from tests.support.servers import ServerThread

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


def status_classes(metrics: str, route: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in metrics.splitlines():
        if line.startswith("meterline_requests_total{") and f'route="{route}"' in line:
            cls = line.split('status_class="')[1].split('"')[0]
            out[cls] = out.get(cls, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


def test_client_gone_during_upload_is_not_a_proxy_error(proxy: ServerThread) -> None:
    """A client that hangs up mid-body used to count as a 5xx internal_error (and log a
    traceback), so flaky clients tripped the error-ratio alerts."""
    host, port = proxy.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                     b"Authorization: Bearer sk-demo-engineering\r\n"
                     b"Content-Type: application/json\r\nContent-Length: 5000\r\n\r\n"
                     b'{"model": "gpt-4o-mini", "messages": [')
    deadline = time.monotonic() + 5
    classes: dict[str, float] = {}
    while time.monotonic() < deadline and not classes:
        time.sleep(0.05)
        classes = status_classes(httpx.get(proxy.url + "/metrics").text, "/v1/chat/completions")
    assert classes.get("5xx", 0.0) == 0.0
    assert classes.get("4xx") == 1.0
