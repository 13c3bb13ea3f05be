"""`meterline serve` logs one structured access line per API request, without keys, prompts or
answers; level and format come from the settings."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from proxy.settings import Settings, SettingsError
from tests.support.processes import ProxyProcess
from tests.support.servers import ServerThread, make_config_dir

ADMIN_KEY = "sk-logs-admin-secret"


@pytest.fixture
def serve(mock_upstream: ServerThread, tmp_path: Path) -> Iterator[Any]:
    started: list[ProxyProcess] = []

    def start(**env: str) -> ProxyProcess:
        config_dir = make_config_dir(tmp_path / f"rules{len(started)}", mock_upstream.url,
                                     edits={"cache.yaml": "enabled: true\nmode: exact\n"})
        proc = ProxyProcess(config_dir, tmp_path / f"serve{len(started)}.log",
                            {"MET_ADMIN_KEY": ADMIN_KEY, "MOCK_UPSTREAM_KEY": "sk-upstream-x",
                             **env})
        started.append(proc)
        return proc.wait_ready()

    yield start
    for proc in started:
        proc.stop()


def department_key(proxy: ProxyProcess) -> tuple[str, str]:
    r = httpx.post(proxy.url + "/admin/keys", json={"department": "engineering"},
                   headers={"authorization": f"Bearer {ADMIN_KEY}"})
    assert r.status_code == 201, r.text
    return r.json()["id"], r.json()["key"]


def chat(proxy: ProxyProcess, key: str, prompt: str, **body: Any) -> httpx.Response:
    return httpx.post(proxy.url + "/v1/chat/completions", timeout=30,
                      headers={"authorization": f"Bearer {key}"},
                      json={"model": "gpt-4o-mini", "temperature": 0,
                            "messages": [{"role": "user", "content": prompt}], **body})


def access_lines(proxy: ProxyProcess, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 10
    while True:
        lines = [orjson.loads(line) for line in proxy.log().splitlines() if line.strip()]
        access = [line for line in lines if line["logger"] == "meterline.access"]
        if len(access) >= count or time.monotonic() > deadline:
            return access
        time.sleep(0.1)


def test_one_json_access_line_per_request_without_secrets(serve: Any) -> None:
    proxy = serve(MET_LOG_FORMAT="json", MET_LOG_LEVEL="info")
    key_id, key = department_key(proxy)
    prompt = f"secret plan {uuid.uuid4().hex}"
    first = chat(proxy, key, prompt)
    hit = chat(proxy, key, prompt)
    stream = chat(proxy, key, prompt + " streamed", stream=True)
    bad_key = chat(proxy, "sk-not-a-key-" + uuid.uuid4().hex, prompt)
    assert (first.status_code, hit.status_code, stream.status_code, bad_key.status_code) == (
        200, 200, 200, 401)
    lines = access_lines(proxy, 4)
    by_id = {line["request_id"]: line for line in lines}
    assert len(lines) == 4 and len(by_id) == 4
    line = by_id[first.headers["x-request-id"]]
    assert line["level"] == "info" and line["message"] == "access"
    assert line["status"] == 200 and line["path"] == "/v1/chat/completions"
    assert line["department"] == "engineering" and line["key_id"] == key_id
    assert line["model_requested"] == "gpt-4o-mini" and line["model_served"] == "gpt-4o-mini"
    assert line["cache"] == "miss" and line["stream"] is False
    assert line["cost_usd"] == pytest.approx(float(first.headers["x-meterline-cost-usd"]))
    assert 0 < line["upstream_ms"] <= line["total_ms"]
    assert {"route", "experiment", "variant", "provider"} <= line.keys()
    assert by_id[hit.headers["x-request-id"]]["cache"] == "hit-exact"
    assert by_id[hit.headers["x-request-id"]]["cost_usd"] == 0
    streamed = by_id[stream.headers["x-request-id"]]
    assert streamed["stream"] is True and streamed["cost_usd"] > 0
    refused = by_id[bad_key.headers["x-request-id"]]
    assert refused["status"] == 401 and refused["key_id"] is None
    log = proxy.log()
    for secret in (key, ADMIN_KEY, "secret plan", "Mock answer"):
        assert secret not in log
    for text in log.splitlines():  # every line of the process is JSON, uvicorn's too
        orjson.loads(text)


def test_text_format_and_level_from_settings(serve: Any) -> None:
    proxy = serve(MET_LOG_FORMAT="text", MET_LOG_LEVEL="info")
    _, key = department_key(proxy)
    r = chat(proxy, key, "hello")
    assert r.status_code == 200
    deadline = time.monotonic() + 10
    while f"request_id={r.headers['x-request-id']}" not in proxy.log():
        assert time.monotonic() < deadline, proxy.log()
        time.sleep(0.1)
    line = next(t for t in proxy.log().splitlines() if r.headers["x-request-id"] in t)
    assert line.startswith("INFO meterline.access access request_id=")
    assert "status=200" in line and "department=engineering" in line

    quiet = serve(MET_LOG_LEVEL="warning")
    _, key = department_key(quiet)
    assert chat(quiet, key, "hello").status_code == 200
    time.sleep(0.5)
    assert "meterline.access" not in quiet.log()


@pytest.mark.parametrize("key,value,expect", [
    ("MET_LOG_FORMAT", "xml",
     "Config 'MET_LOG_FORMAT' has value 'xml'. Expected one of: json, text."),
    ("MET_LOG_LEVEL", "loud",
     "Config 'MET_LOG_LEVEL' has value 'loud'. Expected one of: debug, info, warning, error, "
     "critical."),
])
def test_bad_log_settings_name_key_and_value(key: str, value: str, expect: str) -> None:
    with pytest.raises(SettingsError) as err:
        Settings.from_env({key: value})
    assert str(err.value) == expect
