"""Cache analytics, wrong-answer reports, purge and shadow mode over HTTP, on both backends."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import pytest

from tests.cache.test_semantic_cache import (
    Starter,
    ask,
    start_cached_fixture,  # noqa: F401 - the fixture
    upstream_calls,
)
from tests.support.servers import ServerThread

ADMIN = "sk-demo-admin"


def auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def analytics(proxy: ServerThread, key: str = ADMIN) -> dict[str, Any]:
    r = httpx.get(proxy.url + "/v1/cache/analytics", headers=auth(key))
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()
    return data


def report(proxy: ServerThread, request_id: Any, key: str) -> httpx.Response:
    return httpx.post(proxy.url + "/v1/cache/report", json={"request_id": request_id},
                      headers=auth(key))


def purge(proxy: ServerThread, key: str = ADMIN, **params: str) -> httpx.Response:
    return httpx.delete(proxy.url + "/admin/cache", params=params, headers=auth(key))


def saved(headers: dict[str, str]) -> float:
    return float(headers.get("x-meterline-cache-saved-usd", 0))


def test_analytics_numbers_equal_what_was_sent(start_cached: Starter) -> None:
    proxy = start_cached()
    task = {"x-meterline-task": "faq"}
    sent = [ask(proxy, "Where is the VPN guide?", headers=task),
            ask(proxy, "Where is the VPN guide?", headers=task),
            ask(proxy, "What are the health benefits of green tea?"),
            ask(proxy, "What are the health benifits of green tea?"),
            ask(proxy, "Name a colour", temperature=1.5),
            ask(proxy, "What is our quota?", key="sk-demo-sales", model="gpt-4o-mini"),
            ask(proxy, "What is our quota?", key="sk-demo-sales", model="gpt-4o-mini")]
    statuses = [h["x-meterline-cache"] for _, h in sent]
    assert statuses == ["miss", "hit-exact", "miss", "hit-semantic", "bypass", "miss",
                        "hit-exact"]
    data = analytics(proxy)
    assert (data["hits"], data["misses"], data["bypassed"]) == (3, 3, 1)
    assert data["hit_rate"] == pytest.approx(0.5)
    assert data["hits_by_kind"] == {"exact": 2, "semantic": 1}
    assert data["savings"] == pytest.approx(sum(saved(h) for _, h in sent), abs=1e-7)
    assert data["cache_size"] == 3
    eng, sales = data["by_department"]["engineering"], data["by_department"]["sales"]
    assert (eng["hits"], eng["misses"], sales["hits"], sales["misses"]) == (2, 2, 1, 1)
    assert data["by_model"]["gpt-4o-mini"]["hits"] == 1
    assert data["by_task"]["faq"] == {"hits": 1, "misses": 1, "savings": pytest.approx(
        saved(sent[1][1]), abs=1e-7), "hit_rate": 0.5}
    queries = data["top_cached_queries"]
    assert len(queries) == 3 and all(q["query"].startswith("sha256:") for q in queries)
    assert sorted(q["hits"] for q in queries) == [1, 1, 1]


def test_department_sees_only_its_own_numbers_and_prompts(start_cached: Starter) -> None:
    proxy = start_cached(display={"top_cached_queries": "truncate", "chars": 12})
    ask(proxy, "An engineering question about builds")
    ask(proxy, "A sales question about prices", key="sk-demo-sales", model="gpt-4o-mini")
    ask(proxy, "A sales question about prices", key="sk-demo-sales", model="gpt-4o-mini")
    data = analytics(proxy, "sk-demo-engineering")
    assert data["scope"] == "department:engineering"
    assert (data["hits"], data["misses"], data["cache_size"]) == (0, 1, 1)
    assert [q["query"] for q in data["top_cached_queries"]] == ["An engineeri…"]
    assert set(data["by_department"]) == {"engineering"}
    sales = analytics(proxy, "sk-demo-sales")
    assert (sales["hits"], sales["misses"], sales["cache_size"]) == (1, 1, 1)


def test_shared_scope_never_shows_another_departments_prompt(start_cached: Starter) -> None:
    proxy = start_cached(shared_scopes={"gtm": {"departments": ["sales", "marketing"]}},
                         display={"top_cached_queries": "truncate"})
    ask(proxy, "Marketing secret launch plan?", key="sk-demo-marketing", model="gpt-4o-mini")
    data = analytics(proxy, "sk-demo-sales")
    assert data["cache_size"] == 1  # the shared scope holds it ...
    assert data["top_cached_queries"] == []  # ... but sales may not read marketing's prompt


def test_report_evicts_counts_and_tightens(start_cached: Starter) -> None:
    proxy = start_cached(report={"tighten_step": 0.045, "max_threshold": 0.995})
    ask(proxy, "What are the health benefits of green tea?")
    _, hit = ask(proxy, "What are the health benifits of green tea?")
    assert hit["x-meterline-cache"] == "hit-semantic"
    rid = hit["x-request-id"]
    assert report(proxy, rid, "sk-demo-marketing").status_code == 404  # not theirs
    r = report(proxy, rid, "sk-demo-engineering")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["evicted"] is True and body["entry_id"] == hit["x-meterline-cache-entry"]
    assert body["threshold"] == pytest.approx(0.995)
    assert ask(proxy, "What are the health benefits of green tea?")[1]["x-meterline-cache"] \
        == "miss"
    # similarity of the misspelt question is ~0.974: below the tightened threshold now
    assert ask(proxy, "What are the health benifits of green tea?")[1]["x-meterline-cache"] \
        == "miss"
    assert analytics(proxy)["false_hit_reports"] == 1
    metrics = httpx.get(proxy.url + "/metrics").text
    assert 'meterline_cache_false_hit_reports_total{department="engineering"} 1.0' in metrics


@pytest.mark.parametrize("payload,param", [({}, "request_id"), ({"request_id": 5}, "request_id")])
def test_report_needs_a_request_id(start_cached: Starter, payload: dict[str, Any],
                                   param: str) -> None:
    proxy = start_cached()
    r = httpx.post(proxy.url + "/v1/cache/report", json=payload,
                   headers=auth("sk-demo-engineering"))
    assert r.status_code == 400
    assert r.json()["error"] == {"message": "Missing required parameter: 'request_id' "
                                 "(a string).", "type": "invalid_request_error",
                                 "param": param, "code": "missing_required_parameter"}


def test_report_of_a_request_that_was_not_a_hit_is_404(start_cached: Starter) -> None:
    proxy = start_cached()
    _, h = ask(proxy, "Never served from cache")
    r = report(proxy, h["x-request-id"], "sk-demo-engineering")
    assert r.status_code == 404 and r.json()["error"]["param"] == "request_id"


def test_purge_by_entry_scope_department_and_all(start_cached: Starter) -> None:
    proxy = start_cached()
    sales = {"key": "sk-demo-sales", "model": "gpt-4o-mini"}
    for text in ("Purge one?", "Purge two?", "Purge three?"):
        ask(proxy, text)
    ask(proxy, "Sales purge?", **sales)
    entry = ask(proxy, "Purge one?")[1]["x-meterline-cache-entry"]
    assert purge(proxy, entry_id=entry).json()["deleted"] == 1
    assert ask(proxy, "Purge one?")[1]["x-meterline-cache"] == "miss"
    top = {q["entry_id"]: q for q in analytics(proxy)["top_cached_queries"]}
    scope = next(q["scope"] for q in top.values() if q["department"] == "sales")
    assert purge(proxy, scope=scope).json()["deleted"] == 1
    assert ask(proxy, "Sales purge?", **sales)[1]["x-meterline-cache"] == "miss"
    assert purge(proxy, department="engineering").json()["deleted"] == 3
    assert ask(proxy, "Sales purge?", **sales)[1]["x-meterline-cache"] == "hit-exact"
    assert purge(proxy, all="true").json()["deleted"] == 1
    assert analytics(proxy)["cache_size"] == 0


@pytest.mark.parametrize("key,params,status", [
    ("sk-demo-engineering", {"all": "true"}, 403),
    (ADMIN, {}, 400),
    (ADMIN, {"all": "true", "scope": "x"}, 400),
])
def test_purge_refuses_bad_requests(start_cached: Starter, key: str, params: dict[str, str],
                                    status: int) -> None:
    proxy = start_cached()
    r = purge(proxy, key, **params)
    assert r.status_code == status
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}


def test_shadow_mode_records_what_would_have_been_served(start_cached: Starter,
                                                         mock_upstream: ServerThread) -> None:
    proxy = start_cached()  # rules/cache.yaml: executive runs in shadow mode
    exec_key = {"key": "sk-demo-executive"}
    question = f"What was revenue in quarter {uuid.uuid4().hex[:6]}?"
    first, h1 = ask(proxy, question, **exec_key)
    second, h2 = ask(proxy, question, **exec_key)
    assert (h1["x-meterline-cache"], h2["x-meterline-cache"]) == ("shadow", "shadow")
    assert upstream_calls(mock_upstream, question) == 2  # both answered by upstream
    assert float(h2["x-meterline-cost-usd"]) > 0
    shadow = analytics(proxy, "sk-demo-executive")["shadow"]
    assert (shadow["lookups"], shadow["would_hit"]) == (2, 1)
    assert (shadow["plausible"], shadow["implausible"]) == (1, 0)  # same answer both times
    assert shadow["would_save"] == pytest.approx(float(h1["x-meterline-cost-usd"]), abs=1e-7)
    assert analytics(proxy)["hits"] == 0


def test_shadow_mode_reports_the_match_rules_decisions(start_cached: Starter) -> None:
    proxy = start_cached()  # rules/cache.yaml: executive runs in shadow mode
    exec_key = {"key": "sk-demo-executive"}
    place = uuid.uuid4().hex[:6]
    ask(proxy, f"She was born in Ohio{place} and raised in Texas.", **exec_key)
    ask(proxy, f"She was born in Texas and raised in Ohio{place}.", **exec_key)  # a swap
    ask(proxy, f"She was born in Ohio{place}, and raised in Texas.", **exec_key)  # same question
    rule = analytics(proxy, "sk-demo-executive")["shadow"]["rule"]
    assert rule["reject_plausible"] + rule["reject_implausible"] == 1
    assert rule["accept_plausible"] + rule["accept_implausible"] == 1


def test_cache_metrics_are_exported(start_cached: Starter) -> None:
    proxy = start_cached()
    ask(proxy, "Count me in metrics?")
    _, h = ask(proxy, "Count me in metrics?")
    text = httpx.get(proxy.url + "/metrics").text
    hit = ('meterline_cache_requests_total{department="engineering",kind="exact",'
           'model="gpt-4o",result="hit"} 1.0')
    assert hit in text
    line = next(x for x in text.splitlines()
                if x.startswith('meterline_cache_saved_dollars_total{department="engineering"}'))
    assert float(line.split()[-1]) == pytest.approx(saved(h), abs=1e-7)


def test_analytics_when_cache_disabled_is_404(start_cached: Starter) -> None:
    proxy = start_cached(enabled=False)
    r = httpx.get(proxy.url + "/v1/cache/analytics", headers=auth(ADMIN))
    assert r.status_code == 404 and r.json()["error"]["code"] == "cache_disabled"
    _, h = ask(proxy, "No cache here")
    assert h["x-meterline-cache"] == "off"


def served_hit(proxy: ServerThread, key: str = "sk-demo-engineering") -> str:
    ask(proxy, "What are the health benefits of green tea?", key=key)
    _, hit = ask(proxy, "What are the health benifits of green tea?", key=key)
    assert hit["x-meterline-cache"] == "hit-semantic"
    return hit["x-meterline-request-id"]


def test_one_served_answer_is_counted_and_tightens_once(start_cached: Starter) -> None:
    """Before: one request id reported four times raised the threshold four steps, for good."""
    proxy = start_cached(report={"tighten_step": 0.01, "max_threshold": 0.99})
    rid = served_hit(proxy)
    answers = [report(proxy, rid, "sk-demo-engineering") for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 200]
    assert [a.json()["false_hit_counted"] for a in answers] == [True, False, False, False]
    assert [a.json()["threshold"] for a in answers] == [pytest.approx(0.96)] * 4
    assert analytics(proxy)["false_hit_reports"] == 1
    metrics = httpx.get(proxy.url + "/metrics").text
    assert 'meterline_cache_false_hit_reports_total{department="engineering"} 1.0' in metrics


def test_threshold_changes_are_shown_expire_and_can_be_reset(start_cached: Starter) -> None:
    proxy = start_cached(report={"tighten_step": 0.02, "max_threshold": 0.99,
                                 "threshold_ttl_seconds": 600})
    assert analytics(proxy)["tightened_thresholds"] == []
    rid = served_hit(proxy)
    assert report(proxy, rid, "sk-demo-engineering").status_code == 200
    shown = analytics(proxy)["tightened_thresholds"]
    assert [(t["department"], t["model"], t["threshold"]) for t in shown] == \
        [("engineering", "gpt-4o", pytest.approx(0.97))]
    assert 590 < shown[0]["expires_in_seconds"] <= 600
    own = analytics(proxy, "sk-demo-engineering")["tightened_thresholds"]
    assert [(t["department"], t["model"], t["threshold"]) for t in own] == \
        [("engineering", "gpt-4o", pytest.approx(0.97))]
    assert analytics(proxy, "sk-demo-sales")["tightened_thresholds"] == []
    refused = httpx.delete(proxy.url + "/admin/cache/thresholds", headers=auth("sk-demo-sales"))
    assert refused.status_code in (401, 403)
    reset = httpx.delete(proxy.url + "/admin/cache/thresholds", headers=auth(ADMIN))
    assert reset.status_code == 200
    assert reset.json() == {"object": "cache.thresholds.reset", "reset": 1}
    assert analytics(proxy)["tightened_thresholds"] == []


def test_tightened_threshold_expires(start_cached: Starter) -> None:
    proxy = start_cached(report={"tighten_step": 0.045, "max_threshold": 0.995,
                                 "threshold_ttl_seconds": 1})
    rid = served_hit(proxy)
    assert report(proxy, rid, "sk-demo-engineering").json()["threshold"] == pytest.approx(0.995)
    assert len(analytics(proxy)["tightened_thresholds"]) == 1
    time.sleep(1.2)
    assert analytics(proxy)["tightened_thresholds"] == []
    ask(proxy, "What are the health benefits of green tea?")  # stored again (report evicted it)
    # the misspelt question hits again under the configured threshold
    assert ask(proxy, "What are the health benifits of green tea?")[1]["x-meterline-cache"] == (
        "hit-semantic")


def test_other_departments_cannot_report_an_answer(start_cached: Starter) -> None:
    proxy = start_cached()
    rid = served_hit(proxy)
    r = report(proxy, rid, "sk-demo-sales")
    assert r.status_code == 404 and r.json()["error"]["param"] == "request_id"
    assert analytics(proxy)["false_hit_reports"] == 0


def test_unknown_tasks_count_as_other(start_cached: Starter) -> None:
    """Before, every x-meterline-task value became counter fields: one UUID per request grew
    the analytics table (and every /v1/cache/analytics read) without limit."""
    proxy = start_cached()
    for i in range(12):
        ask(proxy, f"Question number {i} about tasks?",
            headers={"x-meterline-task": uuid.uuid4().hex})
    ask(proxy, "A question with a known task?", headers={"x-meterline-task": "faq"})
    ask(proxy, "A question without a task?")
    by_task = analytics(proxy)["by_task"]
    assert set(by_task) == {"other", "faq", "none"}
    assert by_task["other"]["misses"] == 12
    spend = httpx.get(proxy.url + "/admin/spend", headers=auth(ADMIN)).json()
    assert {r["task"] for r in spend["recent"]} == {"other", "faq", None}
