"""The production credential path (no --demo): each upstream gets its own credential. Every
provider is a separate mock that answers 401 to any key but its own, like a real provider."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import yaml

from proxy.demo.upstream import MockState, create_mock_app
from tests.conftest import ProxyStarter
from tests.runtime.test_lifecycle import NO_CACHE, keys_yaml
from tests.support.servers import REPO_ROOT, ServerThread, fault, mock_requests

SECRETS = {"OPENAI_API_KEY": "sk-openai", "OPENROUTER_API_KEY": "sk-openrouter",
           "VLLM_API_KEY": "sk-vllm", "METERLINE_VK_ENG_OPENAI": "sk-vk-eng-openai"}
# what each provider accepts: its own key, plus the department virtual keys issued for it
ACCEPTED = {"openai": {"sk-openai", "sk-vk-eng-openai"}, "openrouter": {"sk-openrouter"},
            "local-vllm": {"sk-vllm"}}
ENV = {"openai": "OPENAI_API_KEY", "openrouter": "OPENROUTER_API_KEY",
       "local-vllm": "VLLM_API_KEY"}


@pytest.fixture(scope="module")
def providers() -> Iterator[dict[str, ServerThread]]:
    servers = {name: ServerThread(create_mock_app(MockState(api_keys=frozenset(keys)))).start()
               for name, keys in ACCEPTED.items()}
    yield servers
    for server in servers.values():
        server.stop()


def config_edits(providers: dict[str, ServerThread]) -> dict[str, Any]:
    raw = yaml.safe_load((REPO_ROOT / "rules" / "providers.yaml").read_text())
    for name, provider in raw["providers"].items():
        provider.update(base_url=providers[name].url + "/v1", api_key_env=ENV[name], timeout_s=3)
    departments = yaml.safe_load((REPO_ROOT / "rules" / "departments.yaml").read_text())
    departments["departments"]["engineering"]["virtual_keys"] = {
        "openai": "METERLINE_VK_ENG_OPENAI"}
    return {"providers.yaml": raw, "departments.yaml": departments, "cache.yaml": NO_CACHE,
            "keys.yaml": keys_yaml(eng="engineering", sales="sales", exe="executive")}


def ask(proxy: ServerThread, key: str, model: str, text: str) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": text}]}
    return httpx.post(proxy.url + "/v1/chat/completions", json=body, timeout=30,
                      headers={"authorization": f"Bearer {key}"})


def keys_seen(server: ServerThread, text: str) -> list[str]:
    """The Authorization header of every request this provider received with `text`."""
    return [r["headers"].get("authorization", "") for r in mock_requests(server.url)
            if r["body"].get("messages", [{}])[-1].get("content") == text]


@pytest.fixture
def proxy(start_proxy: ProxyStarter, providers: dict[str, ServerThread]) -> ServerThread:
    return start_proxy(demo=False, admin_key="sk-admin", extra_env=SECRETS,
                       edits=config_edits(providers))


def test_virtual_key_goes_only_to_its_provider(proxy: ServerThread,
                                               providers: dict[str, ServerThread]) -> None:
    direct = ask(proxy, "sk-eng", "gpt-4o", "direct")
    assert direct.status_code == 200, direct.text
    assert keys_seen(providers["openai"], "direct") == ["Bearer sk-vk-eng-openai"]
    other = ask(proxy, "sk-sales", "gpt-4o-mini", "no virtual key")
    assert other.status_code == 200, other.text
    assert keys_seen(providers["openai"], "no virtual key") == ["Bearer sk-openai"]

    fault(providers["openai"].url, "500", times=3)  # every attempt on openai: fall back
    fell_back = ask(proxy, "sk-eng", "gpt-4o", "fallback")
    assert fell_back.status_code == 200, fell_back.text
    assert fell_back.headers["x-meterline-provider"] == "openrouter"
    assert keys_seen(providers["openrouter"], "fallback") == ["Bearer sk-openrouter"]

    fault(providers["openrouter"].url, "500", times=3)
    local = ask(proxy, "sk-eng", "llama-3.1-8b", "to the local model")
    assert local.status_code == 200, local.text
    assert local.headers["x-meterline-provider"] == "local-vllm"
    assert keys_seen(providers["local-vllm"], "to the local model") == ["Bearer sk-vllm"]


def test_a_wrong_provider_key_is_named_but_never_shown(
        start_proxy: ProxyStarter, providers: dict[str, ServerThread]) -> None:
    proxy = start_proxy(demo=False, admin_key="sk-admin",
                        extra_env={**SECRETS, "OPENAI_API_KEY": "sk-revoked-openai-secret"},
                        edits=config_edits(providers))
    r = ask(proxy, "sk-exe", "gpt-4.1", "revoked provider key")  # openai only, no fallback
    assert r.status_code == 502
    assert r.json()["error"]["code"] == "upstream_credential_refused"
    assert "'openai'" in r.json()["error"]["message"]
    assert "sk-revoked" not in r.text and "Incorrect API key" not in r.text
