"""Feedback, experiment results, MODEL_AB_TESTS export and recommendations, through the proxy."""

from __future__ import annotations

import csv
import io
import statistics
from collections import defaultdict
from typing import Any

import httpx
import pytest

from tests.conftest import ProxyStarter
from tests.routing.test_api import ADMIN, ENG, SALES, chat, edits, marker
from tests.support.servers import ServerThread

SUMMARY = {**ENG, "x-meterline-task": "summary"}


def feedback(proxy: ServerThread, headers: dict[str, str], body: dict[str, Any]) -> httpx.Response:
    return httpx.post(proxy.url + "/v1/feedback", headers=headers, json=body)


def run_experiment(proxy: ServerThread, users: int,
                   score: Any) -> dict[str, list[dict[str, Any]]]:
    """One summary request per user, then feedback `score(i, variant)`; what was sent, per arm."""
    sent: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for i in range(users):
        r = chat(proxy, f"summary of meeting {marker()}", SUMMARY, user=f"u{i}")
        assert r.status_code == 200, r.text
        variant = r.headers["x-meterline-variant"]
        rid = r.headers["x-request-id"]
        quality = score(i, variant)
        answer = feedback(proxy, ENG, {"request_id": rid, "score": quality, "comment": "ok"})
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"object": "feedback", "request_id": rid, "score": quality,
                                 "experiment": "summary_model", "variant": variant}
        sent[variant].append({"cost": float(r.headers["x-meterline-cost-usd"]),
                              "score": quality, "user": f"u{i}"})
    return sent


@pytest.fixture
def routed(start_proxy: ProxyStarter) -> ServerThread:
    return start_proxy(edits=edits())


def test_feedback_for_an_unknown_request_is_404(routed: ServerThread) -> None:
    r = feedback(routed, ENG, {"request_id": "req_nope", "score": 0.5})
    assert r.status_code == 404
    assert r.json() == {"error": {
        "message": "No request with id 'req_nope' is known to this proxy.",
        "type": "invalid_request_error", "param": "request_id", "code": "request_not_found"}}


@pytest.mark.parametrize("body,param", [
    ({"score": 0.5}, "request_id"),
    ({"request_id": "", "score": 0.5}, "request_id"),
    ({"request_id": 7, "score": 0.5}, "request_id"),
    ({"request_id": "r"}, "score"),
    ({"request_id": "r", "score": -0.1}, "score"),
    ({"request_id": "r", "score": 1.5}, "score"),
    ({"request_id": "r", "score": "0.5"}, "score"),
    ({"request_id": "r", "score": True}, "score"),
    ({"request_id": "r", "score": 0.5, "comment": 3}, "comment"),
    ({"request_id": "r", "score": 0.5, "comment": "x" * 2001}, "comment"),
])
def test_feedback_bad_input_names_the_field(routed: ServerThread, body: dict[str, Any],
                                            param: str) -> None:
    r = feedback(routed, ENG, body)
    assert r.status_code == 400
    error = r.json()["error"]
    assert (error["type"], error["param"], error["code"]) == (
        "invalid_request_error", param, "invalid_value")


def test_feedback_needs_a_key(routed: ServerThread) -> None:
    r = httpx.post(routed.url + "/v1/feedback", json={"request_id": "r", "score": 1})
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"


def test_a_department_rates_only_its_own_requests(routed: ServerThread) -> None:
    rid = chat(routed, f"hi {marker()}", SALES, model="gpt-4o-mini").headers["x-request-id"]
    assert feedback(routed, ENG, {"request_id": rid, "score": 1}).status_code == 404
    assert feedback(routed, SALES, {"request_id": rid, "score": 0.25}).status_code == 200
    assert feedback(routed, ADMIN, {"request_id": rid, "score": 0.5}).status_code == 200


def test_results_equal_what_was_sent(routed: ServerThread) -> None:
    sent = run_experiment(routed, 16, lambda i, v: round(0.5 + (i % 4) * 0.1, 2))
    r = httpx.get(routed.url + "/admin/experiments/summary_model", headers=ADMIN)
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["n"] == 16 and got["status"] == "running" and got["control"] == "control"
    assert set(got["arms"]) == set(sent) == {"control", "variant"}
    for arm, rows in sent.items():
        stats = got["arms"][arm]
        assert stats["n"] == len(rows) and stats["errors"] == 0
        assert stats["model"] == {"control": "gpt-4o-mini", "variant": "mixtral-8x7b"}[arm]
        costs, scores = [x["cost"] for x in rows], [x["score"] for x in rows]
        assert stats["cost_usd"]["mean"] == pytest.approx(statistics.fmean(costs), abs=1e-8)
        assert stats["quality"]["mean"] == pytest.approx(statistics.fmean(scores), abs=1e-8)
        assert stats["quality"]["n"] == len(rows) and stats["latency_ms"]["mean"] > 0
        if len(rows) > 1 and statistics.pstdev(scores) > 0:
            assert stats["quality"]["low"] < stats["quality"]["mean"] < stats["quality"]["high"]
    comparison = got["comparisons"][0]
    control_cost = statistics.fmean(x["cost"] for x in sent["control"])
    variant_cost = statistics.fmean(x["cost"] for x in sent["variant"])
    assert comparison["cost_change"] == pytest.approx(
        (variant_cost - control_cost) / control_cost, abs=1e-5)
    assert comparison["verdict"].endswith("— n=16") and got["verdict"] == comparison["verdict"]
    metrics = httpx.get(routed.url + "/metrics").text
    for arm, rows in sent.items():
        line = f'meterline_experiment_quality_score_count{{experiment="summary_model",' \
               f'variant="{arm}"}} {float(len(rows))}'
        assert line in metrics


def test_export_has_one_row_per_request(routed: ServerThread) -> None:
    sent = run_experiment(routed, 6, lambda i, v: 0.9)
    url = routed.url + "/admin/experiments/summary_model/export"
    as_csv = httpx.get(url, headers=ADMIN, params={"format": "csv"})
    assert as_csv.status_code == 200 and as_csv.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert list(rows[0]) == ["experiment_id", "user_id", "model_used", "task_type",
                             "response_time_ms", "cost", "quality_score", "timestamp"]
    by_user = {x["user"]: (arm, x) for arm, xs in sent.items() for x in xs}
    assert sorted(r["user_id"] for r in rows) == sorted(by_user)
    for row in rows:
        arm, x = by_user[row["user_id"]]
        assert row["model_used"] == {"control": "gpt-4o-mini", "variant": "mixtral-8x7b"}[arm]
        assert (row["experiment_id"], row["task_type"]) == ("summary_model", "summary")
        assert float(row["cost"]) == pytest.approx(x["cost"], abs=1e-8)
        assert float(row["quality_score"]) == 0.9
    as_json = httpx.get(url, headers=ADMIN, params={"format": "json"}).json()
    assert [(r["user_id"], r["model_used"]) for r in as_json] == \
        [(r["user_id"], r["model_used"]) for r in rows]


def test_listing_shows_live_status_and_counts(routed: ServerThread) -> None:
    sent = run_experiment(routed, 5, lambda i, v: 0.5)
    listing = httpx.get(routed.url + "/admin/experiments", headers=ADMIN).json()["data"]
    assert [e["experiment"] for e in listing] == ["summary_model"]
    assert listing[0]["status"] == "running" and listing[0]["n"] == 5
    assert listing[0]["requests_by_arm"] == {arm: len(rows) for arm, rows in sorted(sent.items())}


@pytest.mark.parametrize("path,params,status,param", [
    ("/admin/experiments/nope", {}, 404, "name"),
    ("/admin/experiments/summary_model/export", {"format": "xml"}, 400, "format"),
    ("/admin/experiments/summary_model", {"confidence": "2"}, 400, "confidence"),
    ("/admin/experiments", {"days": "soon"}, 400, "days"),
])
def test_experiment_endpoints_bad_input(routed: ServerThread, path: str, params: dict[str, str],
                                        status: int, param: str) -> None:
    r = httpx.get(routed.url + path, headers=ADMIN, params=params)
    assert r.status_code == status and r.json()["error"]["param"] == param
    assert httpx.get(routed.url + path, headers=ENG).status_code == 403


def test_recommendations_propose_the_cheaper_arm_and_never_apply(routed: ServerThread) -> None:
    run_experiment(routed, 24, lambda i, v: 0.8)  # same quality on both arms
    r = httpx.get(routed.url + "/admin/recommendations", headers=ADMIN, params={"min_n": 2})
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["applied"] is False and got["records"] == 24
    by_kind = {rec["kind"]: rec for rec in got["recommendations"]}
    task = by_kind["route_task"]
    assert (task["key"], task["current_model"], task["proposed_model"]) == (
        "summary", "gpt-4o-mini", "mixtral-8x7b")
    assert task["randomized"] is True and task["saves_per_day"] > 0
    assert "target: mixtral-8x7b" in task["yaml"] and "- summary" in task["yaml"]
    assert by_kind["retarget_rule"]["key"] == "summaries"
    [split] = got["auto_split"]
    assert (split["old_split"], split["new_split"]) == (0.5, 0.6)
    assert "split: 0.6" in split["yaml"]
    explained = httpx.post(routed.url + "/admin/route/explain", headers=ADMIN, json={
        "model": "gpt-4o", "messages": [{"role": "user", "content": "x"}],
        "headers": {"x-meterline-task": "summary"}}).json()
    assert explained["rule"] == "summaries" and explained["fallbacks"] == ["gpt-3.5-turbo"]


def test_results_listing_and_recommendations_read_no_raw_records(routed: ServerThread) -> None:
    """They read the arm rollups: with every raw-record read failing they answer the same."""
    run_experiment(routed, 12, lambda i, v: 0.5 + (i % 3) * 0.2)
    paths = ["/admin/experiments/summary_model", "/admin/experiments",
             "/admin/recommendations?min_n=2"]
    before = [httpx.get(routed.url + path, headers=ADMIN).json() for path in paths]
    backend = routed.server.config.app.state.services.spend.backend

    async def refuse(*args: object) -> None:
        raise AssertionError("a report read raw records")

    backend.query_records = refuse
    for path, expected in zip(paths, before, strict=True):
        r = httpx.get(routed.url + path, headers=ADMIN)
        assert r.status_code == 200, r.text
        assert r.json() == expected
    assert before[0]["n"] == 12 and before[1]["data"][0]["n"] == 12
