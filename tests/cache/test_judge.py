"""The optional LLM judge for borderline semantic candidates (proxy/cache/judge.py), through
the real proxy and the mock upstream, which answers the judge as a test scripts it
(tests.support.servers.reply / fault)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from proxy.cache.judge import ROUTE, SYSTEM_PROMPT, parse_verdict
from tests.cache.test_semantic_cache import ask, cache_yaml, stream_text
from tests.conftest import ProxyStarter
from tests.support.servers import ServerThread, fault, mock_requests, reply

ADMIN = {"authorization": "Bearer sk-demo-admin"}
CACHED = "What are the symptoms of high blood pressure?"
BAND = "Which symptoms does high blood pressure cause?"  # cosine 0.907: below 0.95, above 0.85
BELOW = "What causes high blood pressure in adults?"  # cosine 0.64: below the judge's floor
TEA = "What are the health benefits of green tea?"
TEA_TYPO = "What are the health benifits of green tea?"  # cosine 0.97: the verifier serves it
JUDGE = {"enabled": True, "model": "gpt-4o-mini", "timeout_seconds": 2.0}


def start_judged(start_proxy: ProxyStarter, judge: dict[str, Any] | None = None,
                 **overrides: Any) -> ServerThread:
    edits = {"cache.yaml": cache_yaml(judge={**JUDGE, **(judge or {})})}
    return start_proxy(edits=edits, **overrides)


def last_seq(mock: ServerThread) -> int:
    return max((r["seq"] for r in mock_requests(mock.url)), default=0)


def judge_calls(mock: ServerThread, since: int) -> list[dict[str, Any]]:
    """Bodies of the judge requests the mock received after `since`."""
    return [r["body"] for r in mock_requests(mock.url) if r["seq"] > since
            and (r["body"].get("messages") or [{}])[0].get("content") == SYSTEM_PROMPT]


def judge_records(proxy: ServerThread, count: int) -> list[dict[str, Any]]:
    """engineering's judge usage records, once `count` of them are written (after the answer)."""
    deadline = time.monotonic() + 10
    while True:
        r = httpx.get(proxy.url + "/admin/spend", params={"department": "engineering"},
                      headers=ADMIN, timeout=10)
        assert r.status_code == 200, r.text
        found = [rec for rec in r.json()["recent"] if rec["route_rule"] == ROUTE]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def metric(proxy: ServerThread, name: str, **labels: str) -> float:
    """The value of one series of GET /metrics (0 when absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in httpx.get(proxy.url + "/metrics").text.splitlines():
        head, _, value = line.rpartition(" ")
        if head.startswith(name + "{") and all(f'{k}="{v}"' in head for k, v in labels.items()):
            return float(value)
        if head == name and not want:
            return float(value)
    return 0.0


def analytics(proxy: ServerThread, key: str = "sk-demo-admin") -> dict[str, Any]:
    r = httpx.get(proxy.url + "/v1/cache/analytics", headers={"authorization": f"Bearer {key}"})
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()
    return data


def test_the_judge_is_off_by_default(start_proxy: ProxyStarter,
                                     mock_upstream: ServerThread) -> None:
    proxy = start_proxy()  # the shipped rules/cache.yaml
    ask(proxy, CACHED)
    since = last_seq(mock_upstream)
    answer, headers = ask(proxy, BAND)
    assert headers["x-meterline-cache"] == "miss"
    assert "x-meterline-cache-judge" not in headers
    assert judge_calls(mock_upstream, since) == []
    assert answer.startswith("Mock answer")  # the upstream's own answer to BAND


def test_same_serves_a_judged_hit_and_charges_the_judge_to_the_department(
        start_proxy: ProxyStarter, mock_upstream: ServerThread, state: dict[str, Any]) -> None:
    proxy = start_judged(start_proxy, **state)
    first, h1 = ask(proxy, CACHED)
    since = last_seq(mock_upstream)
    reply(mock_upstream.url, "same")
    second, h2 = ask(proxy, BAND)
    assert (h2["x-meterline-cache"], h2["x-meterline-cache-judge"]) == ("hit-semantic", "same")
    assert second == first
    assert 0.85 <= float(h2["x-meterline-cache-similarity"]) < 0.95
    calls = judge_calls(mock_upstream, since)
    assert len(calls) == 1  # the judge only: the answer came from the cache
    sent = calls[0]
    assert (sent["model"], sent["temperature"], sent["max_tokens"]) == ("gpt-4o-mini", 0, 3)
    question = sent["messages"][1]["content"]
    assert CACHED in question and BAND in question
    assert first not in str(sent)  # the cached answer never goes to the judge
    judge_cost = float(h2["x-meterline-cache-judge-cost-usd"])
    assert judge_cost > 0
    # savings are net of the judge: the first answer's cost minus the judge's
    saved = float(h2["x-meterline-cache-saved-usd"])
    assert saved == pytest.approx(float(h1["x-meterline-cost-usd"]) - judge_cost, abs=2e-8)
    [record] = judge_records(proxy, 1)
    assert (record["department"], record["model_requested"], record["status"]) == (
        "engineering", "gpt-4o-mini", 200)
    assert record["cost"] == pytest.approx(judge_cost, abs=1e-9) and record["input_tokens"] > 0
    assert record["extra"]["purpose"] == ROUTE and record["extra"]["verdict"] == "same"
    assert record["extra"]["for_request"] == h2["x-meterline-request-id"]
    assert metric(proxy, "meterline_cache_judge_decisions_total", department="engineering",
                  outcome="same") == 1
    assert metric(proxy, "meterline_cache_judge_cost_dollars_total",
                  department="engineering") == pytest.approx(judge_cost, abs=1e-9)
    judge = analytics(proxy)["judge"]
    assert (judge["calls"], judge["outcomes"]) == (1, {"same": 1})


def test_a_judged_hit_is_replayed_as_a_stream_with_net_savings(
        start_proxy: ProxyStarter, mock_upstream: ServerThread) -> None:
    proxy = start_judged(start_proxy)
    original, first, _ = stream_text(proxy, CACHED)
    reply(mock_upstream.url, "same")
    replayed, chunks, status = stream_text(proxy, BAND)
    assert status == "hit-semantic" and replayed == original
    paid = (first[-1].model_extra or {})["meterline"]["cost_usd"]
    info = (chunks[-1].model_extra or {})["meterline"]
    assert info["cache"] == "hit-semantic" and info["cost_usd"] == 0
    assert 0 < info["saved_usd"] < paid  # the judge's cost is not claimed as saved


def test_different_is_a_miss_answered_upstream(start_proxy: ProxyStarter,
                                               mock_upstream: ServerThread) -> None:
    proxy = start_judged(start_proxy)
    first, _ = ask(proxy, CACHED)
    since = last_seq(mock_upstream)
    reply(mock_upstream.url, "different")
    second, headers = ask(proxy, BAND)
    assert (headers["x-meterline-cache"], headers["x-meterline-cache-judge"]) == (
        "miss", "different")
    assert second != first and second.startswith("Mock answer")
    assert len(judge_calls(mock_upstream, since)) == 1
    [record] = judge_records(proxy, 1)
    assert record["extra"]["verdict"] == "different" and record["cost"] > 0
    data = analytics(proxy)
    # nothing was served: what the judge cost comes off the savings whole
    assert data["judge"]["uncovered_cost"] == pytest.approx(record["cost"], abs=1e-9)
    assert data["net_savings"] == pytest.approx(data["savings"] - record["cost"], abs=1e-9)


@pytest.mark.parametrize(("script", "outcome"), [
    (("fault", "500"), "error"),
    (("fault", "slow"), "timeout"),  # the mock answers after 300 ms; the judge waits 50
    (("fault", "invalid_json"), "garbled"),
    (("reply", "Same."), "garbled"),
    (("reply", "They look the same to me"), "garbled"),
    (("reply", "yes"), "garbled"),
])
def test_a_failed_or_unclear_judge_is_a_miss_answered_upstream(
        start_proxy: ProxyStarter, mock_upstream: ServerThread, script: tuple[str, str],
        outcome: str) -> None:
    proxy = start_judged(start_proxy, {"timeout_seconds": 0.05} if outcome == "timeout" else {})
    first, _ = ask(proxy, CACHED)
    kind, value = script
    if kind == "fault":
        fault(mock_upstream.url, value)
    else:
        reply(mock_upstream.url, value)
    second, headers = ask(proxy, BAND)
    assert (headers["x-meterline-cache"], headers["x-meterline-cache-judge"]) == (
        "miss", outcome)
    assert second != first and second.startswith("Mock answer")  # the upstream answered
    assert metric(proxy, "meterline_cache_judge_decisions_total", department="engineering",
                  outcome=outcome) == 1
    [record] = judge_records(proxy, 1)
    assert record["extra"]["verdict"] == outcome
    if outcome in ("error", "timeout"):  # no usage reported: nothing charged
        assert record["cost"] == 0 and record["error"]


def test_a_candidate_above_the_threshold_is_left_to_the_verifier(
        start_proxy: ProxyStarter, mock_upstream: ServerThread) -> None:
    proxy = start_judged(start_proxy)
    first, _ = ask(proxy, TEA)
    since = last_seq(mock_upstream)
    second, headers = ask(proxy, TEA_TYPO)
    assert headers["x-meterline-cache"] == "hit-semantic" and second == first
    assert "x-meterline-cache-judge" not in headers
    assert judge_calls(mock_upstream, since) == []


def test_a_candidate_below_the_floor_is_not_judged(start_proxy: ProxyStarter,
                                                    mock_upstream: ServerThread) -> None:
    proxy = start_judged(start_proxy)
    ask(proxy, CACHED)
    since = last_seq(mock_upstream)
    reply(mock_upstream.url, "same")  # would make a wrongly called judge serve
    _, headers = ask(proxy, BELOW)
    assert headers["x-meterline-cache"] == "miss"
    assert "x-meterline-cache-judge" not in headers
    assert judge_calls(mock_upstream, since) == []


def test_a_changed_number_is_refused_without_a_call(start_proxy: ProxyStarter,
                                                     mock_upstream: ServerThread) -> None:
    proxy = start_judged(start_proxy)
    ask(proxy, "How do I cook rice for 2 people?")
    since = last_seq(mock_upstream)
    reply(mock_upstream.url, "same")
    _, headers = ask(proxy, "How do I cook rice for 6 people?")  # cosine 0.88
    assert (headers["x-meterline-cache"], headers["x-meterline-cache-judge"]) == (
        "miss", "vetoed")
    assert judge_calls(mock_upstream, since) == []


def test_a_department_not_allowed_the_judge_model_gets_no_judge(
        start_proxy: ProxyStarter, mock_upstream: ServerThread) -> None:
    proxy = start_judged(start_proxy, {"model": "gpt-4.1"})  # sales may not use gpt-4.1
    sales = {"key": "sk-demo-sales", "model": "gpt-4o-mini"}
    ask(proxy, CACHED, **sales)
    since = last_seq(mock_upstream)
    answer, headers = ask(proxy, BAND, **sales)
    assert (headers["x-meterline-cache"], headers["x-meterline-cache-judge"]) == (
        "miss", "refused")
    assert answer.startswith("Mock answer")
    assert judge_calls(mock_upstream, since) == []
    assert float(headers["x-meterline-cache-judge-cost-usd"]) == 0


def test_a_department_switch_turns_the_judge_on_for_that_department_only(
        start_proxy: ProxyStarter, mock_upstream: ServerThread) -> None:
    config = cache_yaml(judge={**JUDGE, "enabled": False})
    config["overrides"]["departments"]["marketing"] = {"judge": True}
    proxy = start_proxy(edits={"cache.yaml": config})
    for key in ("sk-demo-engineering", "sk-demo-marketing"):
        ask(proxy, CACHED, key=key)
    since = last_seq(mock_upstream)
    _, engineering = ask(proxy, BAND)
    assert "x-meterline-cache-judge" not in engineering
    assert judge_calls(mock_upstream, since) == []
    reply(mock_upstream.url, "same")
    _, marketing = ask(proxy, BAND, key="sk-demo-marketing")
    assert (marketing["x-meterline-cache"], marketing["x-meterline-cache-judge"]) == (
        "hit-semantic", "same")


def test_a_reload_turns_the_judge_on(start_proxy: ProxyStarter,
                                    mock_upstream: ServerThread) -> None:
    proxy = start_proxy()  # the shipped rules/cache.yaml: judge off
    ask(proxy, CACHED)
    _, before = ask(proxy, BAND)
    assert "x-meterline-cache-judge" not in before
    config_dir = Path(proxy.server.config.app.state.services.settings.config_dir)
    (config_dir / "cache.yaml").write_text(yaml.safe_dump(cache_yaml(judge=JUDGE)))
    r = httpx.post(proxy.url + "/admin/reload", headers=ADMIN)
    assert r.status_code == 200 and r.json()["reloaded"] is True, r.text
    ask(proxy, CACHED)  # the in-process cache was rebuilt with the new settings: empty again
    reply(mock_upstream.url, "same")
    _, after = ask(proxy, BAND)
    assert (after["x-meterline-cache"], after["x-meterline-cache-judge"]) == (
        "hit-semantic", "same")


def test_shadow_mode_reports_the_judges_verdicts(start_proxy: ProxyStarter,
                                                  mock_upstream: ServerThread) -> None:
    proxy = start_judged(start_proxy)  # rules/cache.yaml: executive runs in shadow mode
    key = "sk-demo-executive"
    ask(proxy, CACHED, key=key)
    reply(mock_upstream.url, "same")
    answer, headers = ask(proxy, BAND, key=key)
    assert (headers["x-meterline-cache"], headers["x-meterline-cache-judge"]) == (
        "shadow", "same")
    assert answer.startswith("Mock answer")  # shadow never serves
    verdicts = analytics(proxy, key)["shadow"]["judge"]
    assert verdicts["accept_plausible"] + verdicts["accept_implausible"] == 1
    assert verdicts["reject_plausible"] + verdicts["reject_implausible"] == 0


def completion(content: Any, finish_reason: str = "stop", choices: int = 1) -> dict[str, Any]:
    return {"choices": [{"index": i, "finish_reason": finish_reason,
                         "message": {"role": "assistant", "content": content}}
                        for i in range(choices)]}


@pytest.mark.parametrize(("payload", "outcome"), [
    (completion("same"), "same"),
    (completion(" Same \n"), "same"),
    (completion("DIFFERENT"), "different"),
    (completion("same."), "garbled"),
    (completion("same", finish_reason="length"), "garbled"),
    (completion("same", choices=2), "garbled"),
    (completion("not the same"), "garbled"),
    (completion(None), "garbled"),
    (completion(""), "garbled"),
    ({"choices": []}, "garbled"),
    ({"error": {"message": "x"}}, "garbled"),
    (["same"], "garbled"),
])
def test_only_an_exact_one_word_verdict_counts(payload: Any, outcome: str) -> None:
    assert parse_verdict(payload) == outcome


def test_after_a_wrong_answer_report_the_partition_is_not_judged(
        start_proxy: ProxyStarter, mock_upstream: ServerThread) -> None:
    """A reported false hit tightens the department+model threshold. That must not widen what
    the judge sees (the band ends at the tightened candidate floor), and the judge, the least
    certain way to a hit, is not asked in that partition while the tightening is in force."""
    proxy = start_judged(start_proxy)
    ask(proxy, CACHED)
    reply(mock_upstream.url, "same")
    _, judged = ask(proxy, BAND)
    assert judged["x-meterline-cache-judge"] == "same"
    report = httpx.post(proxy.url + "/v1/cache/report", json={
        "request_id": judged["x-request-id"]},
        headers={"authorization": "Bearer sk-demo-engineering"})
    assert report.status_code == 200, report.text
    assert report.json()["evicted"] is True and report.json()["threshold"] > 0.95
    ask(proxy, CACHED)  # answered upstream again and stored again
    since = last_seq(mock_upstream)
    reply(mock_upstream.url, "same")
    _, headers = ask(proxy, BAND)
    assert headers["x-meterline-cache"] == "miss"
    assert "x-meterline-cache-judge" not in headers
    assert judge_calls(mock_upstream, since) == []
