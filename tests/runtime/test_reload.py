"""POST /admin/reload applies every file, keys.yaml included; its dry run lists key changes by
id only (never a hash)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from proxy.keys.store import hash_key
from tests.conftest import ProxyStarter
from tests.runtime.test_lifecycle import NO_CACHE, chat, keys_yaml

ADMIN = {"authorization": "Bearer sk-admin"}


def test_reload_applies_keys_yaml_and_its_dry_run_names_key_ids(
        start_proxy: ProxyStarter, state: dict[str, Any]) -> None:
    proxy = start_proxy(demo=False, admin_key="sk-admin", **state,
                        edits={"keys.yaml": keys_yaml(a="sales", b="sales", c="sales"),
                               "cache.yaml": NO_CACHE})
    assert [chat(proxy, f"sk-{k}").status_code for k in "abc"] == [200, 200, 200]
    config_dir = Path(proxy.server.config.app.state.services.settings.config_dir)
    (config_dir / "keys.yaml").write_text(keys_yaml(a="sales", c="marketing", d="sales"))

    dry = httpx.post(proxy.url + "/admin/reload", params={"dry_run": "true"}, headers=ADMIN)
    assert dry.status_code == 200, dry.text
    assert dry.json()["changes"]["keys"] == {
        "added": ["d"], "removed": ["b"], "changed": [{"name": "c", "fields": ["department"]}]}
    assert hash_key("sk-d") not in dry.text and hash_key("sk-b") not in dry.text
    assert chat(proxy, "sk-b").status_code == 200  # a dry run changes nothing

    done = httpx.post(proxy.url + "/admin/reload", headers=ADMIN)
    assert done.status_code == 200 and done.json()["reloaded"] is True
    assert done.json()["changes"]["keys"]["removed"] == ["b"]
    assert chat(proxy, "sk-b").status_code == 401
    assert chat(proxy, "sk-d").status_code == 200
    moved = chat(proxy, "sk-c")
    assert moved.status_code == 200 and moved.headers["x-meterline-department"] == "marketing"
