"""POST /admin/reload (proxy/runtime/api.py) on a demo proxy: the dry-run switch, the answer's
shape, and a rejected config as a 400 that leaves the old one live. What a reload changes is in
tests/runtime/test_reload.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from proxy.app import create_app
from proxy.settings import Settings
from tests.support.servers import ServerThread, make_config_dir

ADMIN = {"authorization": "Bearer sk-demo-admin"}


@pytest.fixture(scope="module")
def config_dir(mock_upstream: ServerThread, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_config_dir(tmp_path_factory.mktemp("rules"), mock_upstream.url)


@pytest.fixture(scope="module")
def server(config_dir: Path) -> Iterator[ServerThread]:
    settings = Settings.from_env({"MOCK_UPSTREAM_KEY": "sk-upstream-test"},
                                 config_dir=config_dir, demo=True)
    running = ServerThread(create_app(settings)).start()
    yield running
    running.stop()


def reload(server: ServerThread, headers: dict[str, str] = ADMIN,
           **params: str) -> httpx.Response:
    return httpx.post(server.url + "/admin/reload", params=params, headers=headers, timeout=30)


@pytest.mark.parametrize(("raw", "dry"), [
    ("1", True), ("true", True), ("TRUE", True), ("Yes", True),
    ("0", False), ("false", False), ("", False), ("no", False), ("on", False),
])
def test_dry_run_switch(server: ServerThread, raw: str, dry: bool) -> None:
    response = reload(server, dry_run=raw)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["reloaded"] is (not dry)
    assert set(body) == {"reloaded", "old_version", "version", "changes"}
    assert body["old_version"] == body["changes"]["version"]["old"]


def test_an_unchanged_directory_keeps_its_version(server: ServerThread) -> None:
    body = reload(server).json()
    assert body["version"] == body["old_version"]


def test_a_rejected_config_is_a_400_and_the_old_one_stays(server: ServerThread,
                                                          config_dir: Path) -> None:
    before = reload(server, dry_run="true").json()["version"]
    path = config_dir / "cache.yaml"
    original = path.read_text()
    path.write_text("threshold: 7\n")
    try:
        for flag in ("false", "true"):
            response = reload(server, dry_run=flag)
            assert response.status_code == 400
            error = response.json()["error"]
            assert (error["type"], error["code"], error["param"]) == (
                "invalid_request_error", "invalid_config", None)
            assert error["message"].startswith("Config rejected, old config stays live:\n")
            assert f"{path}: field 'threshold' has value 7" in error["message"]
    finally:
        path.write_text(original)
    models = httpx.get(server.url + "/v1/models", headers=ADMIN)
    assert models.status_code == 200
    assert reload(server, dry_run="true").json()["version"] == before


def test_reload_needs_an_admin_key(server: ServerThread) -> None:
    as_department = reload(server, {"authorization": "Bearer sk-demo-sales"})
    assert as_department.status_code == 403
    assert as_department.json()["error"]["code"] == "admin_key_required"
    assert reload(server, {}).status_code == 401
    assert httpx.get(server.url + "/admin/reload", headers=ADMIN).status_code == 405
