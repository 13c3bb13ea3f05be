"""Provider URLs and credentials: OpenAI-style and Azure-style upstreams."""

from __future__ import annotations

import asyncio
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from proxy.config.errors import ConfigError, parse_model
from proxy.config.providers import Provider, ProvidersConfig
from proxy.gateway.upstream import UpstreamClient, UpstreamTarget


def test_openai_and_azure_urls() -> None:
    openai = Provider(base_url="https://api.openai.com/v1/")
    assert openai.url("/chat/completions", "gpt-4o") == "https://api.openai.com/v1/chat/completions"
    azure = Provider(base_url="https://acme.openai.azure.com", kind="azure",
                     api_version="2024-06-01")
    assert azure.url("/chat/completions", "prod-4o") == (
        "https://acme.openai.azure.com/openai/deployments/prod-4o/chat/completions"
        "?api-version=2024-06-01")


def test_models_must_name_known_providers() -> None:
    data = {"providers": {"openai": {"base_url": "https://api.openai.com/v1"}},
            "models": {"gpt-4o": {"targets": [{"provider": "nope"}]}}}
    with pytest.raises(ConfigError, match="providers.yaml.*'nope' is not one of"):
        parse_model(ProvidersConfig, data, "providers.yaml")
    data["models"] = {"gpt-4o": {"targets": [{"provider": "openai", "model": "gpt-4o-2024"}]}}
    config = parse_model(ProvidersConfig, data, "providers.yaml")
    assert config.targets_for("gpt-4o") == (("openai", "gpt-4o-2024"),)
    assert config.targets_for("unknown") == ()


class Recorder(BaseHTTPRequestHandler):
    seen: list[tuple[str, dict[str, str]]] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        self.rfile.read(int(self.headers.get("content-length", "0")))
        Recorder.seen.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        return None


@pytest.mark.parametrize("kind,header,value", [
    ("openai", "authorization", "Bearer sk-secret"),
    ("azure", "api-key", "sk-secret"),
])
def test_credential_header_by_kind(kind: str, header: str, value: str) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        provider = Provider(base_url=f"http://127.0.0.1:{server.server_port}", kind=kind,
                            api_version="2024-06-01" if kind == "azure" else None)

        async def call() -> bytes:
            client = UpstreamClient({"p": provider})
            try:
                target = UpstreamTarget("p", provider, "dep-1", "sk-secret")
                resp = await client.open(target, "/chat/completions", b"{}", {"openai-beta": "x"})
                return await client.read(target, resp)
            finally:
                await client.close()

        assert asyncio.run(call()) == b'{"ok": true}'
        path, headers = Recorder.seen[-1]
        assert headers[header] == value
        assert headers["openai-beta"] == "x"
        if kind == "azure":
            assert path == "/openai/deployments/dep-1/chat/completions?api-version=2024-06-01"
            assert "authorization" not in headers
    finally:
        server.shutdown()
        server.server_close()
