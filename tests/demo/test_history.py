"""The demo's synthetic history: weeks of seasonal spend per department, marked as demo data,
only ever in the embedded store of a demo server."""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from proxy.app import create_app
from proxy.config.loader import load_config
from proxy.demo.history import HISTORY_DAYS, SYNTHETIC_USER, synthetic_history
from proxy.insights.forecast import weekday_of
from tests.conftest import ProxyStarter
from tests.support.servers import REPO_ROOT, ServerThread, running

ADMIN = {"authorization": "Bearer sk-demo-admin"}
DEPARTMENTS = ("engineering", "sales", "marketing", "executive")


def get(server: ServerThread, path: str, headers: dict[str, str] = ADMIN) -> Any:
    r = httpx.get(server.url + path, headers=headers, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def test_history_is_seasonal_marked_and_ends_before_today() -> None:
    now = time.time()
    config = load_config(REPO_ROOT / "rules")
    records = synthetic_history(now, DEPARTMENTS, config.pricing)
    today = now // 86_400 * 86_400
    assert min(r.ts for r in records) >= today - HISTORY_DAYS * 86_400
    assert max(r.ts for r in records) < today  # today's numbers stay real traffic only
    assert {r.user for r in records} == {SYNTHETIC_USER}
    assert all(r.extra == {"synthetic": True} and r.request_id.startswith("demo-history-")
               for r in records)
    for dept in DEPARTMENTS:
        daily: dict[int, float] = {}
        for r in records:
            if r.department == dept:
                daily[int(r.ts // 86_400)] = daily.get(int(r.ts // 86_400), 0.0) + r.cost
        weekdays = [v for d, v in daily.items() if weekday_of(d) < 5]
        weekends = [v for d, v in daily.items() if weekday_of(d) >= 5]
        assert statistics.mean(weekdays) > 2 * statistics.mean(weekends), dept
        assert len(daily) >= HISTORY_DAYS - 1


def test_demo_server_shows_forecast_advice_and_spend_on_first_start(
        start_proxy: ProxyStarter) -> None:
    proxy = start_proxy(demo_history=True)
    forecast = get(proxy, "/admin/forecast?horizon=7d")
    for dept in forecast["departments"]:
        assert dept["history_days"] >= 28 and float(dept["total"]["expected"]) > 0, dept
    advice = get(proxy, "/admin/budget-recommendations?period=weekly")["data"]
    assert {row["department"] for row in advice} == set(DEPARTMENTS)
    assert all(row["forecast"] > 0 and row["recommended_budget"] > 0 for row in advice)
    users = get(proxy, "/admin/spend?by=user&from=" + str(int(time.time()) - 30 * 86_400))
    assert SYNTHETIC_USER in [row["user"] for row in users["rows"]]


def non_demo_settings(tmp_path: Path, **overrides: Any) -> Any:
    from proxy.settings import Settings

    return Settings.from_env({"MET_ADMIN_KEY": "sk-admin-test"}, config_dir=REPO_ROOT / "rules",
                             demo_history=True, **overrides)


@pytest.mark.redis
def test_never_written_to_redis_or_a_non_demo_store(start_proxy: ProxyStarter, tmp_path: Path,
                                                    redis_url: str, redis_prefix: str) -> None:
    since = "/admin/spend?by=user&from=" + str(int(time.time()) - 30 * 86_400)
    shared = start_proxy(demo_history=True, redis_url=redis_url, redis_prefix=redis_prefix)
    assert get(shared, since)["rows"] == []
    with running(create_app(non_demo_settings(tmp_path))) as real:
        assert get(real, since, {"authorization": "Bearer sk-admin-test"})["rows"] == []
