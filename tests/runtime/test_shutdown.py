"""SIGTERM on a real `meterline serve`: readiness goes false first, a stream in flight finishes
and is accounted, new connections are refused, and the process exits 0; past the bound the
stream is cut and still accounted."""

from __future__ import annotations

import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.support.processes import ProxyProcess
from tests.support.servers import ServerThread, make_config_dir

pytestmark = pytest.mark.redis

ADMIN_KEY = "sk-shutdown-admin"
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture
def serve(mock_upstream: ServerThread, redis_url: str, redis_prefix: str,
          tmp_path: Path) -> Iterator[Any]:
    config_dir = make_config_dir(tmp_path / "rules", mock_upstream.url, timeout_s=30,
                                 edits={"cache.yaml": "enabled: false\n"})
    started: list[ProxyProcess] = []

    def start(**env: str) -> ProxyProcess:
        proc = ProxyProcess(config_dir, tmp_path / f"serve{len(started)}.log",
                            {"REDIS_URL": redis_url, "MET_REDIS_PREFIX": redis_prefix,
                             "MET_ADMIN_KEY": ADMIN_KEY, "MOCK_UPSTREAM_KEY": "sk-up", **env})
        started.append(proc)
        return proc.wait_ready()

    yield start
    for proc in started:
        proc.stop()


class SlowStream(threading.Thread):
    """A streamed chat whose upstream sends one event every 300 ms (~9 s in all)."""

    def __init__(self, url: str, key: str) -> None:
        super().__init__(daemon=True)
        self.url, self.key = url, key
        self.first_byte = threading.Event()
        self.body = b""
        self.request_id = ""
        self.error: BaseException | None = None

    def run(self) -> None:
        body = {"model": "gpt-4o-mini", "stream": True, "messages": [
            {"role": "user",
             "content": f"long answer please {uuid.uuid4().hex} #fault:slow_stream"}]}
        try:
            with httpx.stream("POST", self.url + "/v1/chat/completions", json=body, timeout=60,
                              headers={"authorization": f"Bearer {self.key}"}) as r:
                self.request_id = r.headers["x-request-id"]
                for chunk in r.iter_bytes():
                    self.body += chunk
                    self.first_byte.set()
        except BaseException as exc:  # noqa: BLE001 - asserted by the test
            self.error = exc
            self.first_byte.set()

    def meterline_info(self) -> dict[str, Any]:
        events = [e for e in self.body.split(b"\n\n") if b'"meterline"' in e]
        assert len(events) == 1, self.body[-400:]
        info: dict[str, Any] = orjson.loads(events[0][5:])["meterline"]
        return info


def department_key(proxy: ProxyProcess) -> str:
    r = httpx.post(proxy.url + "/admin/keys", json={"department": "engineering"}, headers=ADMIN)
    assert r.status_code == 201, r.text
    key: str = r.json()["key"]
    return key


def assert_clean_exit(proxy: ProxyProcess) -> None:
    """uvicorn re-raises the SIGTERM it handled once the shutdown is complete, so the process
    ends the way an unhandled SIGTERM would (exit status 143 in a shell or container)."""
    assert proxy.wait(30) == -signal.SIGTERM
    assert "Application shutdown complete." in proxy.log()


def recorded(observer: ProxyProcess, request_id: str) -> dict[str, Any]:
    r = httpx.get(observer.url + "/admin/spend", params={"by": "department"}, headers=ADMIN)
    return next(rec for rec in r.json()["recent"] if rec["request_id"] == request_id)


def test_sigterm_drains_readiness_and_finishes_the_stream_in_flight(serve: Any) -> None:
    proxy = serve(MET_DRAIN_SECONDS="2", MET_SHUTDOWN_TIMEOUT_SECONDS="30")
    stream = SlowStream(proxy.url, department_key(proxy))
    stream.start()
    assert stream.first_byte.wait(20) and stream.error is None
    proxy.terminate()
    time.sleep(0.3)
    ready = httpx.get(proxy.url + "/readyz")
    assert ready.status_code == 503 and ready.json()["status"] == "draining"
    assert httpx.get(proxy.url + "/healthz").status_code == 200  # still serving while draining
    time.sleep(2.5)  # past the drain: the listener is closed, the stream goes on
    with pytest.raises(httpx.ConnectError):
        httpx.get(proxy.url + "/healthz", timeout=2)
    assert proxy.proc.poll() is None and not stream.body.endswith(b"data: [DONE]\n\n")
    stream.join(30)
    assert stream.error is None
    assert stream.body.endswith(b"data: [DONE]\n\n")
    info = stream.meterline_info()
    assert info["cost_usd"] > 0 and info["estimated"] is False
    assert_clean_exit(proxy)
    observer = serve()
    record = recorded(observer, stream.request_id)
    assert record["cost"] == pytest.approx(info["cost_usd"]) and record["error"] is None
    budgets = httpx.get(observer.url + "/admin/budgets", headers=ADMIN).json()["data"]
    eng = next(d for d in budgets if d["department"] == "engineering")
    assert all(b["reserved_dollars"] == 0 for b in eng["budgets"])


def test_stream_past_the_shutdown_bound_is_cut_and_still_accounted(serve: Any) -> None:
    proxy = serve(MET_DRAIN_SECONDS="0", MET_SHUTDOWN_TIMEOUT_SECONDS="1")
    stream = SlowStream(proxy.url, department_key(proxy))
    stream.start()
    assert stream.first_byte.wait(20) and stream.error is None
    started = time.monotonic()
    proxy.terminate()
    assert_clean_exit(proxy)
    assert time.monotonic() - started < 8  # the ~9 s stream did not hold the exit
    stream.join(10)
    assert not stream.body.endswith(b"data: [DONE]\n\n")
    observer = serve()
    record = recorded(observer, stream.request_id)
    assert record["cost_estimated"] is True and record["cost"] > 0
    assert record["output_tokens"] > 0
