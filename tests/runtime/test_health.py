"""Liveness, readiness and metrics endpoints."""

from __future__ import annotations

import httpx

from tests.conftest import ProxyStarter
from tests.support.servers import ServerThread, free_port


def test_healthz(proxy: ServerThread) -> None:
    r = httpx.get(proxy.url + "/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok", "demo": True}


def test_readyz_when_upstream_reachable(proxy: ServerThread) -> None:
    r = httpx.get(proxy.url + "/readyz")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ready" and body["checks"]["redis"] == "embedded"
    assert body["checks"]["upstream:openai"] == "ok"


def test_readyz_when_upstream_down(start_proxy: ProxyStarter) -> None:
    proxy = start_proxy(mock_upstream_url=f"http://127.0.0.1:{free_port()}/v1")
    r = httpx.get(proxy.url + "/readyz")
    assert r.status_code == 503
    assert r.json()["checks"]["upstream:openai"] == "unreachable"


def test_readyz_with_redis(start_proxy: ProxyStarter, redis_url: str, redis_prefix: str) -> None:
    proxy = start_proxy(redis_url=redis_url, redis_prefix=redis_prefix)
    r = httpx.get(proxy.url + "/readyz")
    assert r.status_code == 200 and r.json()["checks"]["redis"] == "ok"


def test_metrics_exposition(proxy: ServerThread) -> None:
    httpx.post(proxy.url + "/v1/chat/completions", headers={"authorization":
               "Bearer sk-demo-engineering"}, json={"model": "gpt-4o", "messages": [
                   {"role": "user", "content": "count me"}]}).raise_for_status()
    text = httpx.get(proxy.url + "/metrics").text
    assert 'meterline_requests_total{' in text
    line = next(ln for ln in text.splitlines() if ln.startswith("meterline_requests_total{")
                and 'department="engineering"' in ln and 'model="gpt-4o"' in ln)
    assert float(line.rsplit(" ", 1)[1]) == 1.0
    assert "meterline_config_info{" in text


def test_failed_requests_are_counted(proxy: ServerThread) -> None:
    for _ in range(2):
        r = httpx.post(proxy.url + "/v1/chat/completions", headers={"authorization":
                       "Bearer sk-demo-sales"}, json={"model": "gpt-4o", "messages": [
                           {"role": "user", "content": "not allowed"}]})
        assert r.status_code == 403
    text = httpx.get(proxy.url + "/metrics").text
    line = next(ln for ln in text.splitlines() if ln.startswith("meterline_requests_total{")
                and 'department="sales"' in ln and 'status_class="4xx"' in ln
                and 'route="/v1/chat/completions"' in ln)
    assert float(line.rsplit(" ", 1)[1]) == 2.0
