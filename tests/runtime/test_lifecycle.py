"""Start-up against a Redis other processes used before: config keys (keys.yaml, MET_ADMIN_KEY,
--demo) are owned by the config, so a restart with a new config is what is honoured."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import yaml

from proxy.keys.store import hash_key
from tests.conftest import ProxyStarter, delete_redis_prefix
from tests.support.servers import ServerThread

pytestmark = pytest.mark.redis
NO_CACHE = "enabled: false\n"


def keys_yaml(**departments: str) -> str:
    """keys.yaml with one department key per `id=department` (the raw key is `sk-<id>`)."""
    keys = [{"id": key_id, "sha256": hash_key(f"sk-{key_id}"), "department": dept}
            for key_id, dept in departments.items()]
    return yaml.safe_dump({"keys": keys})


def chat(proxy: ServerThread, key: str) -> httpx.Response:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]}
    return httpx.post(proxy.url + "/v1/chat/completions", json=body,
                      headers={"authorization": f"Bearer {key}"})


def admin_get(proxy: ServerThread, key: str) -> httpx.Response:
    return httpx.get(proxy.url + "/admin/keys", headers={"authorization": f"Bearer {key}"})


def production(start_proxy: ProxyStarter, redis: dict[str, Any], keys: str,
               admin_key: str) -> ServerThread:
    return start_proxy(demo=False, admin_key=admin_key, **redis,
                       edits={"keys.yaml": keys, "cache.yaml": NO_CACHE})


@pytest.fixture
def redis(redis_url: str, redis_prefix: str) -> dict[str, Any]:
    return {"redis_url": redis_url, "redis_prefix": redis_prefix}


def test_a_restart_applies_the_new_keys_yaml_and_admin_key(start_proxy: ProxyStarter,
                                                           redis: dict[str, Any]) -> None:
    first = production(start_proxy, redis, keys_yaml(a="sales", b="marketing"), "sk-admin-old")
    assert chat(first, "sk-b").status_code == 200
    disabled = httpx.post(first.url + "/admin/keys/a/disable",
                          headers={"authorization": "Bearer sk-admin-old"})
    assert disabled.status_code == 200, disabled.text
    first.stop()

    second = production(start_proxy, redis, keys_yaml(a="sales", c="sales"), "sk-admin-new")
    assert chat(second, "sk-b").status_code == 401  # removed from keys.yaml
    assert chat(second, "sk-a").status_code == 401  # disabled through the API: still disabled
    assert chat(second, "sk-c").status_code == 200
    assert admin_get(second, "sk-admin-old").status_code == 401  # the replaced MET_ADMIN_KEY
    listed = admin_get(second, "sk-admin-new").json()["data"]
    assert sorted((k["id"], k["active"]) for k in listed) == [
        ("a", False), ("c", True), ("env-admin", True)]


def test_a_demo_run_leaves_no_key_in_a_shared_redis(start_proxy: ProxyStarter,
                                                    redis: dict[str, Any]) -> None:
    demo = start_proxy(demo=True, edits={"cache.yaml": NO_CACHE}, **redis)
    assert admin_get(demo, "sk-demo-admin").status_code == 200
    demo.stop()
    second = production(start_proxy, redis, keys_yaml(a="sales"), "sk-admin")
    assert admin_get(second, "sk-demo-admin").status_code == 401
    assert chat(second, "sk-demo-sales").status_code == 401


def test_config_keys_keep_working_when_redis_comes_back_empty(
        start_proxy: ProxyStarter, redis: dict[str, Any], redis_url: str,
        redis_prefix: str) -> None:
    proxy = production(start_proxy, redis, keys_yaml(a="sales", b="sales"), "sk-admin")
    assert chat(proxy, "sk-a").status_code == 200
    delete_redis_prefix(redis_url, redis_prefix)  # a restart without persistence, a flush
    # b was never looked up before, so no replica cache can answer for it
    statuses = [chat(proxy, "sk-b").status_code for _ in range(5)]
    assert statuses == [200] * 5
    assert admin_get(proxy, "sk-admin").status_code == 200
