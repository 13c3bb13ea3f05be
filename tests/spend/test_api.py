"""The keys / spend / budgets / chargeback admin API and `meterline keys`, through a real proxy."""

from __future__ import annotations

import csv
import io
import json
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from proxy.__main__ import main
from proxy.keys.store import hash_key
from tests.conftest import ProxyStarter
from tests.support.servers import ServerThread

ADMIN = {"authorization": "Bearer sk-demo-admin"}
NO_CACHE = {"cache.yaml": "enabled: false\n"}


@pytest.fixture
def proxy(start_proxy: ProxyStarter) -> ServerThread:
    return start_proxy(edits=NO_CACHE)


def auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def chat(proxy: ServerThread, key: str, text: str = "hello") -> httpx.Response:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]}
    return httpx.post(proxy.url + "/v1/chat/completions", json=body, headers=auth(key))


def error(param: str | None, code: str, message: str | None = None) -> dict[str, Any]:
    return {"type": "invalid_request_error", "param": param, "code": code,
            **({"message": message} if message else {})}


ADMIN_ENDPOINTS = [
    ("GET", "/admin/keys"), ("POST", "/admin/keys"), ("POST", "/admin/keys/x/rotate"),
    ("POST", "/admin/keys/x/disable"), ("GET", "/admin/spend"), ("GET", "/admin/budgets"),
    ("POST", "/admin/departments/sales/resume"), ("GET", "/admin/chargeback"),
]


@pytest.mark.parametrize(("method", "path"), ADMIN_ENDPOINTS)
def test_wrong_key_is_401_and_department_key_is_403(proxy: ServerThread, method: str,
                                                    path: str) -> None:
    wrong = httpx.request(method, proxy.url + path, headers=auth("sk-wrong"), json={})
    assert wrong.status_code == 401
    assert wrong.json() == {"error": {"message": "Incorrect API key provided.",
                                      "type": "authentication_error", "param": None,
                                      "code": "invalid_api_key"}}
    dept = httpx.request(method, proxy.url + path, headers=auth("sk-demo-sales"), json={})
    assert dept.status_code == 403  # a valid key without the right: not "invalid API key"
    assert dept.json() == {"error": {"message": "This endpoint needs an admin key.",
                                     "type": "permission_error", "param": None,
                                     "code": "admin_key_required"}}


BAD_KEYS = [
    ({}, "department", "missing_required_parameter"),
    ({"department": 5}, "department", "invalid_value"),
    ({"department": "legal"}, "department", "invalid_value"),
    ({"department": "sales", "team": "x"}, "team", "unknown_parameter"),
    ({"department": "sales", "user": ""}, "user", "invalid_value"),
    ({"department": "sales", "admin": "yes"}, "admin", "invalid_value"),
    ({"department": "sales", "expires_at": "next week"}, "expires_at", "invalid_value"),
    ({"department": "sales", "expires_at": 1_000_000}, "expires_at", "invalid_value"),
    ([1, 2], None, "invalid_json"),
]


@pytest.mark.parametrize(("body", "param", "code"), BAD_KEYS)
def test_bad_key_payload_is_400_naming_the_field(proxy: ServerThread, body: Any,
                                                 param: str | None, code: str) -> None:
    r = httpx.post(proxy.url + "/admin/keys", json=body, headers=ADMIN)
    assert r.status_code == 400
    got = r.json()["error"]
    assert {k: got[k] for k in ("type", "param", "code")} == error(param, code)
    assert param is None or param in got["message"]


BAD_QUERIES = [
    ("/admin/spend", {"by": "team"}, "by"),
    ("/admin/spend", {"from": "yesterday"}, "from"),
    ("/admin/spend", {"from": "2025-06-02", "to": "2025-06-01"}, "to"),
    ("/admin/chargeback", {"format": "xml"}, "format"),
    ("/admin/chargeback", {"to": "June"}, "to"),
]


@pytest.mark.parametrize(("path", "params", "param"), BAD_QUERIES)
def test_bad_query_is_400_naming_the_parameter(proxy: ServerThread, path: str,
                                               params: dict[str, str], param: str) -> None:
    r = httpx.get(proxy.url + path, params=params, headers=ADMIN)
    assert r.status_code == 400
    assert r.json()["error"]["param"] == param and r.json()["error"]["code"] == "invalid_value"


def test_rotate_payload_and_unknown_ids(proxy: ServerThread) -> None:
    created = httpx.post(proxy.url + "/admin/keys", json={"department": "sales"}, headers=ADMIN)
    key_id = created.json()["id"]
    bad = httpx.post(f"{proxy.url}/admin/keys/{key_id}/rotate", json={"grace_seconds": -1},
                     headers=ADMIN)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "grace_seconds"
    for action in ("rotate", "disable"):
        r = httpx.post(f"{proxy.url}/admin/keys/key-nope/{action}", json={}, headers=ADMIN)
        assert r.status_code == 404 and r.json()["error"]["code"] == "key_not_found"
    r = httpx.post(proxy.url + "/admin/departments/legal/resume", headers=ADMIN)
    assert r.status_code == 404 and r.json()["error"]["param"] == "name"


def test_key_lifecycle_create_rotate_disable(start_proxy: ProxyStarter,
                                             state: dict[str, Any]) -> None:
    proxy = start_proxy(edits=NO_CACHE, **state)
    created = httpx.post(proxy.url + "/admin/keys", headers=ADMIN,
                         json={"department": "sales", "user": "ann"})
    assert created.status_code == 201
    first = created.json()
    raw, key_id = first["key"], first["id"]
    used = chat(proxy, raw)
    assert used.status_code == 200 and used.headers["x-meterline-department"] == "sales"
    listing = httpx.get(proxy.url + "/admin/keys", headers=ADMIN)
    assert raw not in listing.text and hash_key(raw) not in listing.text
    mine = next(k for k in listing.json()["data"] if k["id"] == key_id)
    assert mine["department"] == "sales" and mine["user"] == "ann" and mine["active"] is True

    rotated = httpx.post(f"{proxy.url}/admin/keys/{key_id}/rotate", headers=ADMIN,
                         json={"grace_seconds": 60}).json()
    new_raw = rotated["key"]
    assert rotated["replaces"]["id"] == key_id and rotated["department"] == "sales"
    assert chat(proxy, raw).status_code == 200  # grace period: both keys work
    assert chat(proxy, new_raw).status_code == 200

    disabled = httpx.post(f"{proxy.url}/admin/keys/{rotated['id']}/disable", headers=ADMIN)
    assert disabled.status_code == 200 and disabled.json()["disabled"] is True
    assert chat(proxy, new_raw).status_code == 401
    assert chat(proxy, raw).status_code == 200  # still inside its own grace period
    httpx.post(f"{proxy.url}/admin/keys/{key_id}/rotate", headers=ADMIN,
               json={"grace_seconds": 0})
    assert chat(proxy, raw).status_code == 401
    spend = httpx.get(proxy.url + "/admin/spend", params={"by": "user"}, headers=ADMIN).json()
    assert [row["requests"] for row in spend["rows"] if row["user"] == "ann"] == [4]


def test_own_department_spend(proxy: ServerThread) -> None:
    r = chat(proxy, "sk-demo-sales", "what did I spend " + uuid.uuid4().hex)
    cost = float(r.headers["x-meterline-cost-usd"])
    view = httpx.get(proxy.url + "/v1/spend", headers=auth("sk-demo-sales")).json()
    assert view["department"] == "sales" and view["requests_today"] == 1
    assert float(view["today_usd"]) == pytest.approx(cost, abs=1e-6)
    assert [b["period"] for b in view["budgets"]] == ["daily", "monthly"]
    assert view["budget_remaining_usd"] == pytest.approx(30 - cost, abs=1e-6)
    other = httpx.get(proxy.url + "/v1/spend", headers=auth("sk-demo-marketing")).json()
    assert other["department"] == "marketing" and other["requests_today"] == 0
    every = httpx.get(proxy.url + "/v1/spend", headers=ADMIN)
    assert every.status_code == 200
    assert [d["department"] for d in every.json()["data"]] == [
        "engineering", "sales", "marketing", "executive", "admin"]
    named = httpx.get(proxy.url + "/v1/spend", params={"department": "sales"}, headers=ADMIN)
    assert named.json()["today_usd"] == view["today_usd"]
    bad = httpx.get(proxy.url + "/v1/spend", params={"department": "legal"}, headers=ADMIN)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "department"


def test_admin_key_traffic_has_one_name_everywhere(proxy: ServerThread) -> None:
    r = chat(proxy, "sk-demo-admin", "admin asks " + uuid.uuid4().hex)
    assert r.headers["x-meterline-department"] == "admin"
    cost = float(r.headers["x-meterline-cost-usd"])
    spend = httpx.get(proxy.url + "/admin/spend", headers=ADMIN).json()
    assert [row["department"] for row in spend["rows"]] == ["admin"]
    assert spend["recent"][0]["department"] == "admin"
    csv_text = httpx.get(proxy.url + "/admin/chargeback?format=csv", headers=ADMIN).text
    rows = [row for row in csv.DictReader(io.StringIO(csv_text)) if row["day"] != "TOTAL"]
    assert [row["department"] for row in rows] == ["admin"]
    forecast = httpx.get(proxy.url + "/admin/forecast", headers=ADMIN).json()
    assert "admin" in [d["department"] for d in forecast["departments"]]
    assert "" not in [d["department"] for d in forecast["departments"]]
    advice = httpx.get(proxy.url + "/admin/budget-recommendations", headers=ADMIN).json()
    assert {row["department"] for row in advice["data"]} == {
        "engineering", "sales", "marketing", "executive"}  # admin keys have no budget
    own = httpx.get(proxy.url + "/v1/spend", params={"department": "admin"}, headers=ADMIN)
    assert float(own.json()["today_usd"]) == pytest.approx(cost, abs=1e-6)
    metrics = httpx.get(proxy.url + "/metrics").text
    assert 'meterline_cost_dollars_total{department="admin",model="gpt-4o-mini"}' in metrics
    assert 'department="none"' not in metrics.split("meterline_requests_total", 1)[1]


def test_chargeback_csv_and_date_forms(proxy: ServerThread) -> None:
    for i in range(3):
        assert chat(proxy, "sk-demo-marketing", f"csv {i}").status_code == 200
    today = time.strftime("%Y-%m-%d", time.gmtime())
    r = httpx.get(proxy.url + "/admin/chargeback", headers=ADMIN,
                  params={"from": today, "to": today, "format": "csv"})
    assert r.status_code == 200 and r.headers["content-type"] == "text/csv; charset=utf-8"
    assert r.headers["content-disposition"] == (
        f'attachment; filename="meterline-chargeback-{today}-to-{today}.csv"')
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert rows[-1]["day"] == "TOTAL" and rows[-1]["requests"] == "3"
    assert rows[0]["department"] == "marketing" and rows[0]["model"] == "gpt-4o-mini"
    now = time.time()
    as_json = httpx.get(proxy.url + "/admin/chargeback", headers=ADMIN,
                        params={"from": str(now - 3600), "to": str(now + 60)}).json()
    assert as_json["total"]["cost_nanos"] == int(rows[-1]["cost_nanos"]) > 0
    empty = httpx.get(proxy.url + "/admin/chargeback", headers=ADMIN,
                      params={"from": "2020-01-01", "to": "2020-01-31"}).json()
    assert empty["rows"] == [] and empty["total"]["requests"] == 0


def breaker_departments(max_dollars: float) -> str:
    depts = {name: {}
             for name in ("sales", "marketing", "executive")}
    depts["engineering"] = {"budgets": {"daily": 10},
                            "circuit_breaker": {"window_minutes": 5, "max_dollars": max_dollars}}
    return yaml.safe_dump({"version": 1, "departments": depts})


def test_breaker_pauses_and_admin_resumes(start_proxy: ProxyStarter) -> None:
    proxy = start_proxy(edits={**NO_CACHE, "departments.yaml": breaker_departments(0.00003)})
    eng = "sk-demo-engineering"
    while (r := chat(proxy, eng, "spend fast " + uuid.uuid4().hex)).status_code == 200:
        pass
    assert r.status_code == 429 and r.json()["error"]["code"] == "circuit_breaker_open"
    budgets = httpx.get(proxy.url + "/admin/budgets", headers=ADMIN).json()["data"]
    eng_state = next(d for d in budgets if d["department"] == "engineering")
    assert eng_state["paused"] is True and eng_state["budgets"][0]["period"] == "daily"
    resumed = httpx.post(proxy.url + "/admin/departments/engineering/resume", headers=ADMIN)
    assert resumed.json() == {"department": "engineering", "resumed": True, "paused": False}
    assert chat(proxy, eng, "back again " + uuid.uuid4().hex).status_code == 200


def test_reload_changes_budgets_and_keeps_spend(start_proxy: ProxyStarter) -> None:
    proxy = start_proxy(edits={**NO_CACHE, "departments.yaml": breaker_departments(5)})
    assert chat(proxy, "sk-demo-engineering").status_code == 200
    config_dir = Path(proxy.server.config.app.state.services.settings.config_dir)
    raw = yaml.safe_load((config_dir / "departments.yaml").read_text())
    raw["departments"]["engineering"]["budgets"] = {"daily": 20}
    (config_dir / "departments.yaml").write_text(yaml.safe_dump(raw))
    assert httpx.post(proxy.url + "/admin/reload", headers=ADMIN).status_code == 200
    budgets = httpx.get(proxy.url + "/admin/budgets", headers=ADMIN).json()["data"]
    daily = next(d for d in budgets if d["department"] == "engineering")["budgets"][0]
    assert daily["limit_dollars"] == 20 and daily["spent_dollars"] > 0


def test_cli_keys_create_and_hash(proxy: ServerThread, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["keys", "create", "--department", "sales", "--user", "cli-user",
                 "--url", proxy.url, "--admin-key", "sk-demo-admin"])
    out = capsys.readouterr().out
    assert code == 0
    created = json.loads(out)
    assert chat(proxy, created["key"]).headers["x-meterline-department"] == "sales"
    assert main(["keys", "hash", created["key"]]) == 0
    assert capsys.readouterr().out.strip() == hash_key(created["key"])
    assert main(["keys", "create", "--department", "legal", "--url", proxy.url,
                 "--admin-key", "sk-demo-admin"]) == 1
    assert '"param": "department"' in capsys.readouterr().err


def wait_for_requests(proxy: ServerThread, key: str, count: int) -> dict[str, Any]:
    """/v1/spend/daily once `count` requests are recorded (records land after the answer)."""
    for _ in range(100):
        view: dict[str, Any] = httpx.get(proxy.url + "/v1/spend/daily", headers=auth(key),
                                         params={"days": "7"}).json()
        if sum(view["requests"]) >= count:
            return view
        time.sleep(0.05)
    raise AssertionError(f"fewer than {count} requests recorded")


def test_daily_series_reads_no_raw_records(proxy: ServerThread) -> None:
    """/v1/spend/daily reads the day rollups: with every raw-record read failing it answers the
    same."""
    chat(proxy, "sk-demo-sales", f"daily {uuid.uuid4().hex}")
    before = wait_for_requests(proxy, "sk-demo-admin", 1)
    backend = proxy.server.config.app.state.services.spend.backend

    async def refuse(*args: object) -> None:
        raise AssertionError("a report read raw records")

    backend.query_records = refuse
    after = httpx.get(proxy.url + "/v1/spend/daily", headers=ADMIN, params={"days": "7"})
    assert after.status_code == 200, after.text
    assert after.json() == before and sum(before["requests"]) == 1


def test_own_daily_series_and_chargeback(proxy: ServerThread) -> None:
    costs = [float(chat(proxy, "sk-demo-sales", f"daily {i} {uuid.uuid4().hex}")
                   .headers["x-meterline-cost-usd"]) for i in range(2)]
    chat(proxy, "sk-demo-engineering", "not sales " + uuid.uuid4().hex)
    view = wait_for_requests(proxy, "sk-demo-sales", 2)
    today = time.strftime("%Y-%m-%d", time.gmtime())
    assert view["department"] == "sales" and len(view["days"]) == 7 and view["days"][-1] == today
    assert list(view["cost_usd"]) == ["sales"]
    assert view["cost_usd"]["sales"][-1] == pytest.approx(sum(costs), abs=2e-6)
    assert view["requests"] == [0, 0, 0, 0, 0, 0, 2]
    assert [s["name"] for s in view["by_model"]] == ["gpt-4o-mini"]
    assert view["by_department"] == [{"name": "sales", "cost_usd": view["total_usd"]}]
    everything = wait_for_requests(proxy, "sk-demo-admin", 3)
    assert everything["department"] is None
    assert set(everything["cost_usd"]) == {"engineering", "sales", "marketing", "executive"}
    refused = httpx.get(proxy.url + "/v1/spend/daily", headers=auth("sk-demo-sales"),
                        params={"department": "engineering"})
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "department_mismatch"
    bad = httpx.get(proxy.url + "/v1/spend/daily", headers=ADMIN, params={"days": "0"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "days"
    own = httpx.get(proxy.url + "/v1/chargeback", headers=auth("sk-demo-sales"),
                    params={"format": "csv"})
    assert own.status_code == 200 and own.headers["content-type"] == "text/csv; charset=utf-8"
    rows = list(csv.DictReader(io.StringIO(own.text)))
    assert {r["department"] for r in rows[:-1]} == {"sales"}
    assert rows[-1]["day"] == "TOTAL" and rows[-1]["requests"] == "2"

def test_unknown_department_filter_is_a_400_naming_it(proxy: ServerThread) -> None:
    """Found by the fuzz run: GET /admin/spend?department=<not configured> was a 500."""
    r = httpx.get(proxy.url + "/admin/spend", params={"department": "0"}, headers=ADMIN)
    assert r.status_code == 400, r.text
    assert r.json() == {"error": {
        "message": "Unknown department '0'; known: engineering, sales, marketing, executive.",
        "type": "invalid_request_error", "param": "department", "code": "invalid_value"}}
