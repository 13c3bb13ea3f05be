"""The mock upstream answers a body it cannot read as OpenAI does: 400, not 500."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.support.servers import ServerThread

BAD_BODIES: list[tuple[str, bytes]] = [
    ("/v1/chat/completions", b"[]"),
    ("/v1/chat/completions", b'{"model": "m", "messages": [{"role": "user"}], "n": "x"}'),
    ("/v1/completions", b"not json"),
    ("/v1/responses", b"[]"),
    ("/v1/embeddings", b"[]"),
]


@pytest.mark.parametrize(("path", "body"), BAD_BODIES)
def test_unreadable_bodies_are_400(mock_upstream: ServerThread, path: str, body: bytes) -> None:
    r = httpx.post(mock_upstream.url + path, content=body)
    assert r.status_code == 400
    error: dict[str, Any] = r.json()["error"]
    assert error["type"] == "invalid_request_error" and error["message"]


def test_garbage_on_passthrough_endpoints_is_never_a_5xx(proxy: ServerThread) -> None:
    """Found by the fuzz run: a non-chat body with a 'messages' field of non-objects was sized as
    chat messages (500 internal_error in accounting), and a body the upstream could not read was
    a 500 there, which counted as the provider failing and cooled it down for everyone (502)."""
    eng = {"authorization": "Bearer sk-demo-engineering"}
    for _ in range(5):
        bad = httpx.post(proxy.url + "/v1/responses", content=b'{"model": "gpt-4o-mini", '
                         b'"input": "x", "stream_options": 5, "metadata": [], "n": 2, '
                         b'"tools": {"a": 1}, "messages": [1]}', headers=eng)
        assert bad.status_code < 500, bad.text
    ok = httpx.post(proxy.url + "/v1/chat/completions", headers=eng,
                    json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
    assert ok.status_code == 200, ok.text
