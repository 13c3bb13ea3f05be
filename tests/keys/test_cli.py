"""`meterline keys ...` against a running proxy, with only the runtime dependencies installed."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import httpx
import orjson
import pytest

from proxy.__main__ import main
from proxy.app import create_app
from proxy.settings import Settings
from tests.support.servers import REPO_ROOT, ServerThread, running


@pytest.fixture
def without_httpx(monkeypatch: pytest.MonkeyPatch) -> None:
    """httpx is a test dependency only: `import httpx` fails as after `pip install -e .`."""
    monkeypatch.setitem(sys.modules, "httpx", None)
    monkeypatch.delenv("MET_ADMIN_KEY", raising=False)


def create_key(url: str, *extra: str) -> int:
    return main(["keys", "create", "--department", "sales", "--url", url, *extra])


def test_create_on_a_demo_finds_the_demo_admin_key(proxy: ServerThread, without_httpx: None,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert create_key(proxy.url) == 0
    created = orjson.loads(capsys.readouterr().out)
    assert created["department"] == "sales" and created["key"].startswith("sk-")
    sys.modules.pop("httpx")  # the test itself may use it again
    r = httpx.get(proxy.url + "/v1/models", headers={"authorization": f"Bearer {created['key']}"})
    assert r.status_code == 200


def test_create_without_admin_key_on_a_real_server_says_how(
        tmp_path: Path, without_httpx: None, capsys: pytest.CaptureFixture[str]) -> None:
    settings = Settings.from_env({}, config_dir=REPO_ROOT / "rules")
    with running(create_app(settings)) as server:
        assert create_key(server.url) == 2
        assert "MET_ADMIN_KEY" in capsys.readouterr().err
        assert create_key(server.url, "--admin-key", "sk-wrong") == 1
        error = orjson.loads(capsys.readouterr().err)["error"]
        assert error["type"] == "authentication_error"


def test_unreachable_proxy_is_one_line(without_httpx: None,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert create_key("http://127.0.0.1:9", "--admin-key", "sk-x") == 1
    assert capsys.readouterr().err.startswith("meterline: cannot reach http://127.0.0.1:9")


def test_init_writes_a_config_with_an_admin_and_a_department_key(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "meterline"
    assert main(["init", str(target), "--department", "sales"]) == 0
    out = capsys.readouterr().out
    admin_key = re.search(r"admin key:\s+(sk-ml-\S+)", out)
    sales_key = re.search(r"sales key:\s+(sk-ml-\S+)", out)
    assert admin_key and sales_key and f"meterline serve --config {target}" in out
    assert admin_key[1] not in (target / "keys.yaml").read_text()  # only hashes are stored
    settings = Settings.from_env({}, config_dir=target)
    with running(create_app(settings)) as server:
        created = httpx.post(server.url + "/admin/keys", json={"department": "marketing"},
                             headers={"authorization": f"Bearer {admin_key[1]}"})
        assert created.status_code == 201, created.text
        models = httpx.get(server.url + "/v1/models",
                           headers={"authorization": f"Bearer {sales_key[1]}"})
        assert models.status_code == 200
    assert main(["init", str(target)]) == 1  # never overwrites a config (or its keys)
    assert "not empty" in capsys.readouterr().err
