"""Routing, experiments, reliability and hot reload through the real proxy and the mock upstream."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml

from proxy.__main__ import main as cli_main
from proxy.routing.experiments import Experiments, assign_variant
from proxy.runtime.lifecycle import start_services, stop_services
from proxy.runtime.reload import ReloadTriggers, start_triggers
from proxy.settings import Settings
from tests.conftest import ProxyStarter
from tests.support.servers import (
    REPO_ROOT,
    ServerThread,
    fault,
    make_config_dir,
    mock_requests,
)

ADMIN = {"authorization": "Bearer sk-demo-admin"}
ENG = {"authorization": "Bearer sk-demo-engineering"}
SALES = {"authorization": "Bearer sk-demo-sales"}
FAST = {"max_retries": 1, "backoff_base": 0.01, "backoff_max": 0.02, "retry_after_max": 0}
RULES: list[dict[str, Any]] = [
    {"name": "sales-short", "match": {"department": ["sales"], "max_prompt_tokens": 500},
     "target": "gpt-4o-mini", "fallbacks": ["gpt-4.1-mini"]},
    {"name": "reports", "match": {"keywords": ["report"]}, "target": "gpt-4.1",
     "fallbacks": ["gpt-4o-mini"]},
    {"name": "summaries", "match": {"task": ["summary"]}, "target": "gpt-4o-mini",
     "fallbacks": ["gpt-3.5-turbo"]},
]
EXPERIMENT = {"control": "gpt-4o-mini", "variant": "mixtral-8x7b", "split": 0.5,
              "scope": {"task": ["summary"]},
              "auto": {"enabled": True, "min_split": 0.2, "max_split": 0.8, "step": 0.1}}

ARM_UPSTREAM = {"control": "gpt-4o-mini", "variant": "mistralai/mixtral-8x7b-instruct"}


def cache_off() -> dict[str, Any]:
    """No answer cache here (repeated prompts must reach the mock), and no cache overrides that
    name routing rules these tests replace."""
    source = REPO_ROOT / "rules" / "cache.yaml"
    if not source.exists():
        return {}
    data = yaml.safe_load(source.read_text())
    data["enabled"] = False
    data.get("overrides", {}).pop("routes", None)
    return {"cache.yaml": data}


def edits(**reliability: Any) -> dict[str, Any]:
    return {"routing.yaml": {"rules": RULES, "reliability": {**FAST, **reliability}},
            "experiments.yaml": {"experiments": {"summary_model": EXPERIMENT}}, **cache_off()}


@pytest.fixture
def routed(start_proxy: ProxyStarter) -> ServerThread:
    return start_proxy(edits=edits())


def client(proxy: ServerThread, key: str = "sk-demo-engineering") -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy.url + "/v1", api_key=key, max_retries=0)


def marker() -> str:
    return uuid.uuid4().hex[:10]


def models_seen(mock: ServerThread, mark: str) -> list[str]:
    return [r["body"]["model"] for r in mock_requests(mock.url)
            if mark in str(r["body"].get("messages"))]


def config_dir(proxy: ServerThread) -> Path:
    path: Path = proxy.server.config.app.state.services.settings.config_dir
    return path


def chat(proxy: ServerThread, text: str, headers: dict[str, str], **body: Any) -> httpx.Response:
    return httpx.post(proxy.url + "/v1/chat/completions", headers=headers, timeout=30,
                      json={"model": "gpt-4o", "messages": [{"role": "user", "content": text}],
                            **body})


# ---- routing -------------------------------------------------------------------------------

@pytest.mark.parametrize("key,text,task,rule,model", [
    ("sk-demo-sales", "hi there", None, "sales-short", "gpt-4o-mini"),
    ("sk-demo-engineering", "write the quarterly report", None, "reports", "gpt-4.1"),
    ("sk-demo-engineering", "just chatting", None, "default", "gpt-4o"),
    # marketing may not use the experiment's mixtral arm, so it is never enrolled (pipeline tests)
    ("sk-demo-engineering", "a summary please", "summary", "summaries", None),
])
def test_route_header_names_the_rule(routed: ServerThread, mock_upstream: ServerThread,
                                     key: str, text: str, task: str | None, rule: str,
                                     model: str | None) -> None:
    mark = marker()
    model_asked = "gpt-4o-mini" if key == "sk-demo-sales" else "gpt-4o"
    raw = client(routed, key).chat.completions.with_raw_response.create(
        model=model_asked, messages=[{"role": "user", "content": f"{text} {mark}"}],
        extra_headers={"x-meterline-task": task} if task else None)
    assert raw.headers["x-meterline-route"] == rule
    seen = models_seen(mock_upstream, mark)
    assert len(seen) == 1
    if model is not None:
        assert seen == [model]
    else:  # the summary experiment picks the arm
        assert seen == [ARM_UPSTREAM[raw.headers["x-meterline-variant"]]]


def test_explain_returns_the_decision_without_calling_upstream(
        routed: ServerThread, mock_upstream: ServerThread) -> None:
    before = len(mock_requests(mock_upstream.url))
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "short question"}],
            "department": "sales"}
    r = httpx.post(routed.url + "/admin/route/explain", headers=ADMIN, json=body)
    assert r.status_code == 200, r.text
    got = r.json()
    assert (got["rule"], got["model"], got["fallbacks"]) == ("sales-short", "gpt-4o-mini",
                                                            ["gpt-4.1-mini"])
    assert got["explanation"][0]["rule"] == "sales-short" and got["explanation"][0]["matched"]
    assert got["chain"] == ["gpt-4o-mini", "gpt-4.1-mini"]
    assert [t["key"] for t in got["targets"]] == [
        "openai/gpt-4o-mini", "openrouter/openai/gpt-4o-mini", "openai/gpt-4.1-mini"]
    assert all(t["breaker"] == "closed" for t in got["targets"])
    assert got["authorization"] == {"allowed": False, "status": 403, "reason":
                                    "department 'sales' may not use model 'gpt-4o'"}
    assert len(mock_requests(mock_upstream.url)) == before


def test_explain_says_404_for_an_unknown_model_even_when_routed(routed: ServerThread) -> None:
    body = {"model": "gpt-9-ultra", "messages": [{"role": "user", "content": "short question"}],
            "department": "sales"}
    r = httpx.post(routed.url + "/admin/route/explain", headers=ADMIN, json=body)
    assert r.json()["rule"] == "sales-short"  # the rule would send it to a real model
    assert r.json()["authorization"] == {"allowed": False, "status": 404,
                                         "reason": "unknown model 'gpt-9-ultra'"}


def test_explain_agrees_with_the_real_request(routed: ServerThread) -> None:
    for user in ("ann", "bo", "cy", "di"):
        body = {"model": "gpt-4o", "user": user,
                "messages": [{"role": "user", "content": "summarize this"}]}
        real = chat(routed, "summarize this", {**ENG, "x-meterline-task": "summary"}, user=user)
        explained = httpx.post(routed.url + "/admin/route/explain", headers=ADMIN, json={
            **body, "department": "engineering", "headers": {"X-Meterline-Task": "summary"}}).json()
        assert explained["response_headers"] == {
            "x-meterline-route": real.headers["x-meterline-route"],
            "x-meterline-experiment": real.headers["x-meterline-experiment"],
            "x-meterline-variant": real.headers["x-meterline-variant"]}
        assert explained["experiments"][0]["decides"] is True


@pytest.mark.parametrize("body,headers,status,param", [
    ({"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]}, ENG, 403, None),
    ({"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}], "department": "nope"},
     ADMIN, 400, "department"),
    ({"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}], "headers": ["x"]},
     ADMIN, 400, "headers"),
    ({"model": "gpt-4o"}, ADMIN, 400, "messages"),
])
def test_explain_bad_input(routed: ServerThread, body: dict[str, Any], headers: dict[str, str],
                           status: int, param: str | None) -> None:
    r = httpx.post(routed.url + "/admin/route/explain", headers=headers, json=body)
    assert r.status_code == status
    assert r.json()["error"]["param"] == param


def test_variant_is_the_same_on_two_proxies(start_proxy: ProxyStarter,
                                           mock_upstream: ServerThread) -> None:
    first, second = start_proxy(edits=edits()), start_proxy(edits=edits())
    experiment = Experiments.model_validate({"experiments": {"summary_model": EXPERIMENT}})
    arms = []
    for i in range(12):
        user = f"user-{i}"
        answers = [chat(p, "summary of the week", {**ENG, "x-meterline-task": "summary"},
                        user=user) for p in (first, second)]
        variants = {a.headers["x-meterline-variant"] for a in answers}
        expected = assign_variant(experiment.experiments["summary_model"], user)
        assert expected is not None and variants == {expected.variant}
        arms.append(expected.variant)
    assert set(arms) == {"control", "variant"}  # both arms are in use over 12 users


# ---- reliability ---------------------------------------------------------------------------

def test_fallback_on_500(routed: ServerThread, mock_upstream: ServerThread) -> None:
    mark = marker()
    fault(mock_upstream.url, "500", times=2)  # gpt-4.1 has one target: attempt + 1 retry
    raw = client(routed).chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": f"the report {mark}"}])
    assert raw.http_response.status_code == 200
    assert raw.headers["x-meterline-route"] == "reports"
    assert models_seen(mock_upstream, mark) == ["gpt-4.1", "gpt-4.1", "gpt-4o-mini"]


def test_fallback_on_timeout_without_retry(start_proxy: ProxyStarter,
                                           mock_upstream: ServerThread) -> None:
    proxy = start_proxy(edits=edits(timeouts={"gpt-4.1": 0.5}))
    mark = marker()
    fault(mock_upstream.url, "hang", times=1)
    r = chat(proxy, f"report on latency {mark}", ENG)
    assert r.status_code == 200 and r.headers["x-meterline-route"] == "reports"
    assert models_seen(mock_upstream, mark) == ["gpt-4.1", "gpt-4o-mini"]


def test_cooldown_from_yaml_skips_a_failing_target(start_proxy: ProxyStarter,
                                                   mock_upstream: ServerThread) -> None:
    proxy = start_proxy(edits=edits(max_retries=0, cooldown={"failures": 1, "seconds": 60}))
    first, second = marker(), marker()
    fault(mock_upstream.url, "500", times=1)
    assert chat(proxy, f"report one {first}", ENG).status_code == 200
    assert chat(proxy, f"report two {second}", ENG).status_code == 200
    assert models_seen(mock_upstream, first) == ["gpt-4.1", "gpt-4o-mini"]
    assert models_seen(mock_upstream, second) == ["gpt-4o-mini"]  # gpt-4.1 is cooling down
    explained = httpx.post(proxy.url + "/admin/route/explain", headers=ADMIN, json={
        "model": "gpt-4o", "messages": [{"role": "user", "content": "a report"}]}).json()
    assert explained["targets"][0] == {"model": "gpt-4.1", "provider": "openai",
                                       "upstream_model": "gpt-4.1", "key": "openai/gpt-4.1",
                                       "timeout_s": None, "breaker": "open"}


def test_no_retry_after_the_first_stream_byte(routed: ServerThread,
                                              mock_upstream: ServerThread) -> None:
    mark = marker()
    fault(mock_upstream.url, "cut", times=1)
    with httpx.stream("POST", routed.url + "/v1/chat/completions", headers=ENG, json={
            "model": "gpt-4o", "stream": True,
            "messages": [{"role": "user", "content": f"stream a report {mark}"}]}) as r:
        body = r.read()
    events = [e for e in body.split(b"\n\n") if e]
    assert r.status_code == 200 and r.headers["x-meterline-route"] == "reports"
    assert events[-1] == b"data: [DONE]" and b"upstream_unavailable" in events[-2]
    assert models_seen(mock_upstream, mark) == ["gpt-4.1"]  # no retry, no fallback


# ---- reload --------------------------------------------------------------------------------

def write_rules(directory: Path, rules: list[dict[str, Any]] | str) -> None:
    text = rules if isinstance(rules, str) else yaml.safe_dump({"rules": rules})
    (directory / "routing.yaml").write_text(text)


def config_versions(proxy: ServerThread) -> dict[str, float]:
    lines = httpx.get(proxy.url + "/metrics").text.splitlines()
    found = [ln for ln in lines if ln.startswith("meterline_config_info{")]
    return {ln.split('"')[1]: float(ln.rsplit(" ", 1)[1]) for ln in found}


@pytest.mark.parametrize("broken,reason", [
    ("rules: [ {name: x", "not valid YAML"),
    (yaml.safe_dump({"rules": [{**RULES[1], "target": "gpt-9"}]}), "rules[0].target"),
    (yaml.safe_dump({"rules": [{**RULES[1], "color": "red"}]}), "rules[0].color"),
])
def test_invalid_reload_keeps_the_old_rules(routed: ServerThread, broken: str,
                                           reason: str) -> None:
    old_version = httpx.get(routed.url + "/readyz").json()["config_version"]
    write_rules(config_dir(routed), broken)
    r = httpx.post(routed.url + "/admin/reload", headers=ADMIN)
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["code"] == "invalid_config" and "old config stays live" in error["message"]
    assert reason in error["message"] and "routing.yaml" in error["message"]
    assert chat(routed, "the report", ENG).headers["x-meterline-route"] == "reports"
    assert config_versions(routed) == {old_version: 1.0}


def test_valid_reload_takes_effect_without_restart(routed: ServerThread,
                                                   mock_upstream: ServerThread) -> None:
    old_version = httpx.get(routed.url + "/readyz").json()["config_version"]
    new_rules = [{**RULES[1], "target": "gpt-4o"}, {"name": "greetings",
                 "match": {"keywords": ["hello"]}, "target": "gpt-4.1-mini"}]
    write_rules(config_dir(routed), new_rules)
    dry = httpx.post(routed.url + "/admin/reload?dry_run=true", headers=ADMIN).json()
    assert dry["reloaded"] is False and dry["version"] == old_version
    assert chat(routed, "hello", ENG).headers["x-meterline-route"] == "default"
    r = httpx.post(routed.url + "/admin/reload", headers=ADMIN)
    assert r.status_code == 200, r.text
    changes = r.json()["changes"]
    assert changes["rules"]["added"] == ["greetings"]
    assert changes["rules"]["removed"] == ["sales-short", "summaries"]
    assert changes["rules"]["changed"] == [{"name": "reports", "fields": ["target"]}]
    assert changes["rules"]["reliability_changed"] is True  # FAST -> defaults
    assert dry["changes"] == changes
    mark = marker()
    answer = chat(routed, f"hello {mark}", ENG)
    assert answer.headers["x-meterline-route"] == "greetings"
    assert models_seen(mock_upstream, mark) == ["gpt-4.1-mini"]
    new_version = r.json()["version"]
    assert new_version != old_version and r.json()["old_version"] == old_version
    assert config_versions(routed) == {new_version: 1.0}


def test_file_watch_reloads_on_change(start_proxy: ProxyStarter) -> None:
    proxy = start_proxy(edits=edits(), watch_config=True)
    write_rules(config_dir(proxy), [{"name": "watched", "match": {"keywords": ["ping"]},
                                     "target": "gpt-4.1-mini"}])
    deadline = time.monotonic() + 10
    route = None
    while time.monotonic() < deadline and route != "watched":
        time.sleep(0.3)
        route = chat(proxy, "ping", ENG).headers["x-meterline-route"]
    assert route == "watched"


def test_sighup_reloads_in_the_main_thread(tmp_path: Path, mock_upstream: ServerThread) -> None:
    directory = make_config_dir(tmp_path, mock_upstream.url, edits=edits())
    settings = Settings.from_env({}, config_dir=directory, demo=True)

    async def scenario() -> tuple[str, str, bool]:
        services = await start_services(settings)
        triggers = start_triggers(services)
        try:
            assert triggers.signal_installed  # otherwise SIGHUP would end the test process
            before = services.config.version
            write_rules(directory, [{"name": "hup", "target": "gpt-4o"}])
            os.kill(os.getpid(), signal.SIGHUP)
            for _ in range(100):
                await asyncio.sleep(0.02)
                if services.config.version != before:
                    break
            names = [r.name for r in services.config.routing.rules]
            return before, services.config.version, names == ["hup"]
        finally:
            await triggers.stop()
            await stop_services(services)

    before, after, swapped = asyncio.run(scenario())
    assert after != before and swapped
    assert signal.getsignal(signal.SIGHUP) == signal.SIG_DFL


def test_sighup_install_is_a_no_op_off_the_main_thread() -> None:
    result: list[bool] = []

    async def install() -> None:
        result.append(ReloadTriggers(services=None).install_signal())  # type: ignore[arg-type]

    thread = threading.Thread(target=lambda: asyncio.run(install()))
    thread.start()
    thread.join()
    assert result == [False]


def test_check_config_diff(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                           mock_upstream: ServerThread) -> None:
    live = make_config_dir(tmp_path / "live", mock_upstream.url, edits=edits())
    changed = {**EXPERIMENT, "split": 0.7}
    candidate = make_config_dir(tmp_path / "next", mock_upstream.url, edits={
        "routing.yaml": {"rules": [RULES[0], {**RULES[1], "fallbacks": ["gpt-4o"]}]},
        "experiments.yaml": {"experiments": {"summary_model": changed}}, **cache_off()})
    assert cli_main(["check-config", str(candidate), "--diff", "--against", str(live)]) == 0
    out = capsys.readouterr().out
    assert "rules:\n  - summaries\n  ~ reports: fallbacks\n  ~ reliability settings changed" in out
    assert "experiments:\n  ~ summary_model: split  (some users change arm)" in out
