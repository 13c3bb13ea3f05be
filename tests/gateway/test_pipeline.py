"""The proxy as the official openai SDK sees it, against the mock upstream."""

from __future__ import annotations

import uuid

import httpx
import openai
import pytest
import yaml

from tests.conftest import ProxyStarter
from tests.support.servers import REPO_ROOT, ServerThread, fault, mock_requests


def client(proxy: ServerThread, key: str = "sk-demo-engineering") -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy.url + "/v1", api_key=key, max_retries=0)


def ask(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def test_non_streaming_answer_and_headers(proxy: ServerThread) -> None:
    raw = client(proxy).chat.completions.with_raw_response.create(
        model="gpt-4o", messages=ask("What is a proxy?"))
    completion = raw.parse()
    assert completion.choices[0].message.content.startswith("Mock answer")
    assert completion.usage is not None and completion.usage.completion_tokens > 0
    assert raw.headers["x-meterline-department"] == "engineering"
    assert raw.headers["x-meterline-provider"] == "openai"
    assert raw.headers["x-request-id"].startswith("req_")
    assert float(raw.headers["x-meterline-overhead-ms"]) >= 0
    assert float(raw.headers["x-meterline-cost-usd"]) > 0


def test_client_request_id_is_kept(proxy: ServerThread) -> None:
    r = httpx.post(proxy.url + "/v1/chat/completions", json={"model": "gpt-4o-mini",
                   "messages": ask("hi")}, headers={"authorization": "Bearer sk-demo-sales",
                                                    "x-request-id": "my-id-1"})
    assert r.status_code == 200 and r.headers["x-request-id"] == "my-id-1"


def test_response_body_is_byte_faithful(proxy: ServerThread, mock_upstream: ServerThread) -> None:
    body = {"model": "gpt-4o", "messages": ask("exact bytes please")}
    via_proxy = httpx.post(proxy.url + "/v1/chat/completions", json=body,
                           headers={"authorization": "Bearer sk-demo-engineering"})
    direct = httpx.post(mock_upstream.url + "/v1/chat/completions", json=body)
    strip = [b'"created":']
    assert via_proxy.status_code == 200
    a, b = via_proxy.content, direct.content
    assert a.split(strip[0])[0] == b.split(strip[0])[0]
    assert a.split(b',"model"')[1] == b.split(b',"model"')[1]


def test_streaming_matches_non_streaming_text(proxy: ServerThread) -> None:
    c = client(proxy)
    full = c.chat.completions.create(model="gpt-4o", messages=ask("stream me"))
    chunks = list(c.chat.completions.create(model="gpt-4o", messages=ask("stream me"),
                                            stream=True))
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == full.choices[0].message.content
    assert all(ch.usage is None for ch in chunks)  # client did not ask for usage
    final = chunks[-1].model_extra or {}
    assert final["meterline"]["cost_usd"] > 0 and final["meterline"]["estimated"] is False


def test_stream_with_client_usage_keeps_usage_event(proxy: ServerThread) -> None:
    chunks = list(client(proxy).chat.completions.create(
        model="gpt-4o", messages=ask("usage please"), stream=True,
        stream_options={"include_usage": True}))
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens > 0
    assert (chunks[-1].model_extra or {})["meterline"]["output_tokens"] == \
        chunks[-1].usage.completion_tokens


def test_raw_sse_ends_with_done(proxy: ServerThread) -> None:
    with httpx.stream("POST", proxy.url + "/v1/chat/completions",
                      json={"model": "gpt-4o-mini", "messages": ask("raw"), "stream": True},
                      headers={"authorization": "Bearer sk-demo-sales"}) as r:
        body = r.read()
    assert r.headers["content-type"].startswith("text/event-stream")
    events = [e for e in body.split(b"\n\n") if e]
    assert events[-1] == b"data: [DONE]"
    assert all(e.startswith(b"data: ") for e in events)


def test_tools_response_format_n_logprobs_and_unknown_params_forwarded(
        proxy: ServerThread, mock_upstream: ServerThread) -> None:
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {
        "type": "object", "properties": {"query": {"type": "string"}}}}}]
    c = client(proxy)
    r = c.chat.completions.create(model="gpt-4o", messages=ask("use the tool"), tools=tools)
    assert r.choices[0].message.tool_calls[0].function.name == "lookup"
    r = c.chat.completions.create(model="gpt-4o", messages=ask("json"), n=2, logprobs=True,
                                  response_format={"type": "json_object"},
                                  extra_body={"seed": 7, "custom_vendor_flag": {"a": 1}})
    assert len(r.choices) == 2 and r.choices[0].logprobs is not None
    assert r.choices[0].message.content.startswith('{"answer"')
    sent = mock_requests(mock_upstream.url)[-1]["body"]
    assert sent["custom_vendor_flag"] == {"a": 1} and sent["seed"] == 7 and sent["n"] == 2


def test_upstream_gets_provider_credential_not_inbound_key(
        proxy: ServerThread, mock_upstream: ServerThread) -> None:
    client(proxy).chat.completions.create(model="gpt-4o", messages=ask("whose key"))
    headers = mock_requests(mock_upstream.url)[-1]["headers"]
    assert headers["authorization"] != "Bearer sk-demo-engineering"
    assert headers["authorization"].startswith("Bearer ")


def test_models_lists_only_allowed_models(proxy: ServerThread) -> None:
    eng = {m.id for m in client(proxy).models.list()}
    sales = {m.id for m in client(proxy, "sk-demo-sales").models.list()}
    assert "gpt-4o" in eng and sales and sales <= eng
    assert sales != eng  # sales has a narrower allow-list in rules/departments.yaml


@pytest.mark.parametrize("path,body", [
    ("/v1/embeddings", {"model": "text-embedding-3-small", "input": ["word " * 400, "b"]}),
    ("/v1/completions", {"model": "gpt-3.5-turbo", "prompt": "Say hi"}),
    ("/v1/responses", {"model": "gpt-4o", "input": "Say hi"}),
])
def test_other_endpoints_pass_through(proxy: ServerThread, path: str, body: dict) -> None:
    r = httpx.post(proxy.url + path, json=body,
                   headers={"authorization": "Bearer sk-demo-engineering"})
    assert r.status_code == 200, r.text
    assert "usage" in r.json()
    assert float(r.headers["x-meterline-cost-usd"]) > 0


def test_upstream_500_falls_back_to_next_provider(proxy: ServerThread,
                                                  mock_upstream: ServerThread) -> None:
    fault(mock_upstream.url, "500", times=3)  # first provider: attempt + 2 retries
    raw = client(proxy).chat.completions.with_raw_response.create(
        model="gpt-4o", messages=ask("fallback please"))
    assert raw.parse().choices[0].message.content.startswith("Mock answer")
    assert raw.headers["x-meterline-provider"] == "openrouter"


def credential_refusals(proxy: ServerThread, provider: str) -> float:
    prefix = ('meterline_upstream_errors_total{kind="upstream_credential_refused",'
              f'provider="{provider}"}} ')
    lines = httpx.get(proxy.url + "/metrics").text.splitlines()
    return sum(float(line[len(prefix):]) for line in lines if line.startswith(prefix))


@pytest.mark.parametrize("status", ["401", "403"])
@pytest.mark.parametrize("stream", [False, True])
def test_upstream_refusing_the_proxy_credential_is_a_502_naming_the_provider(
        proxy: ServerThread, mock_upstream: ServerThread, status: str, stream: bool) -> None:
    """A 401/403 from the provider is about the proxy's credential, not the caller's key: an
    SDK must not report 'invalid API key' to someone whose key is fine."""
    fault(mock_upstream.url, status, times=1)
    prompt = f"whose fault {uuid.uuid4().hex}"
    r = httpx.post(proxy.url + "/v1/chat/completions",
                   json={"model": "gpt-4.1", "messages": ask(prompt), "stream": stream},
                   headers={"authorization": "Bearer sk-demo-engineering"})
    assert r.status_code == 502
    assert r.json() == {"error": {
        "message": f"The provider 'openai' refused the proxy's credential for it (HTTP {status}). "
                   "Your API key is fine: the proxy's operator must fix the provider key.",
        "type": "api_error", "param": None, "code": "upstream_credential_refused"}}
    assert len([q for q in mock_requests(mock_upstream.url)
                if q["body"].get("messages") == ask(prompt)]) == 1  # not retried
    assert credential_refusals(proxy, "openai") == 1


def test_a_refused_credential_falls_back_to_the_next_provider(
        proxy: ServerThread, mock_upstream: ServerThread) -> None:
    fault(mock_upstream.url, "401", times=1)
    raw = client(proxy).chat.completions.with_raw_response.create(
        model="gpt-4o", messages=ask("other provider please"))
    assert raw.http_response.status_code == 200
    assert raw.headers["x-meterline-provider"] == "openrouter"
    assert credential_refusals(proxy, "openai") == 1


def test_429_is_retried_honouring_retry_after(proxy: ServerThread,
                                              mock_upstream: ServerThread) -> None:
    fault(mock_upstream.url, "429", times=1)
    raw = client(proxy).chat.completions.with_raw_response.create(
        model="gpt-4.1", messages=ask("retry me"))
    assert raw.http_response.status_code == 200
    assert raw.headers["x-meterline-provider"] == "openai"


def test_stream_cut_midway_ends_with_error_event(proxy: ServerThread) -> None:
    with httpx.stream("POST", proxy.url + "/v1/chat/completions",
                      json={"model": "gpt-4o-mini", "stream": True,
                            "messages": ask("cut this #fault:cut")},
                      headers={"authorization": "Bearer sk-demo-sales"}) as r:
        body = r.read()
    events = [e for e in body.split(b"\n\n") if e]
    assert r.status_code == 200
    assert events[-1] == b"data: [DONE]"
    assert b'"error"' in events[-2] and b"upstream_unavailable" in events[-2]


def test_client_disconnect_cancels_upstream_stream(proxy: ServerThread,
                                                   mock_upstream: ServerThread) -> None:
    import time

    httpx.post(mock_upstream.url + "/_mock/faults", json={"delay_ms": 100}).raise_for_status()
    before = httpx.get(mock_upstream.url + "/_mock/stats").json()
    try:
        with httpx.stream("POST", proxy.url + "/v1/chat/completions",
                          json={"model": "gpt-4o", "stream": True,
                                "messages": ask("long one #fault:slow_stream")},
                          headers={"authorization": "Bearer sk-demo-engineering"}) as r:
            first = next(r.iter_raw())
            assert first.startswith(b"data: ")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            after = httpx.get(mock_upstream.url + "/_mock/stats").json()
            if after["streams_aborted"] > before["streams_aborted"]:
                break
            time.sleep(0.05)
        assert after["streams_aborted"] == before["streams_aborted"] + 1
        assert after["streams_completed"] == before["streams_completed"]
    finally:
        httpx.post(mock_upstream.url + "/_mock/faults", json={"delay_ms": 300})


def test_graceful_shutdown_drains_inflight_stream(start_proxy: ProxyStarter,
                                                  mock_upstream: ServerThread) -> None:
    import threading

    proxy = start_proxy()
    httpx.post(mock_upstream.url + "/_mock/faults", json={"delay_ms": 40}).raise_for_status()
    try:
        with httpx.stream("POST", proxy.url + "/v1/chat/completions",
                          json={"model": "gpt-4o", "stream": True,
                                "messages": ask("drain me #fault:slow_stream")},
                          headers={"authorization": "Bearer sk-demo-engineering"}) as r:
            stopper = threading.Thread(target=proxy.stop)
            chunks = []
            for chunk in r.iter_raw():
                if not chunks:
                    stopper.start()  # shutdown begins while the stream is in flight
                chunks.append(chunk)
        stopper.join(timeout=20)
    finally:
        httpx.post(mock_upstream.url + "/_mock/faults", json={"delay_ms": 300})
    body = b"".join(chunks)
    assert body.endswith(b"data: [DONE]\n\n")
    assert b'"error"' not in body


def test_responses_api_stream_passes_through_and_is_charged(proxy: ServerThread) -> None:
    c = client(proxy)
    events = list(c.responses.create(model="gpt-4o", input="Say hi", stream=True))
    kinds = [e.type for e in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == events[-1].response.output_text
    metrics = httpx.get(proxy.url + "/metrics").text
    line = next(ln for ln in metrics.splitlines() if ln.startswith("meterline_tokens_total{")
                and 'department="engineering"' in ln and 'direction="output"' in ln
                and 'model="gpt-4o"' in ln)
    assert float(line.rsplit(" ", 1)[1]) == events[-1].response.usage.output_tokens


def test_cache_control_object_never_goes_upstream(start_proxy: ProxyStarter,
                                                  mock_upstream: ServerThread) -> None:
    proxy = start_proxy(edits={"cache.yaml": {"enabled": False}})
    client(proxy).chat.completions.create(
        model="gpt-4o", messages=ask("no cache here"),
        extra_body={"cache": {"mode": "off"}, "metadata": {"cache": "off", "team": "x"}})
    sent = mock_requests(mock_upstream.url)[-1]["body"]
    assert "cache" not in sent and sent["metadata"] == {"team": "x"}


def test_user_header_is_recorded_when_body_has_none(proxy: ServerThread) -> None:
    r = httpx.post(proxy.url + "/v1/chat/completions",
                   headers={"authorization": "Bearer sk-demo-engineering",
                            "x-meterline-user": "u-header-42"},
                   json={"model": "gpt-4o", "messages": ask("who am i")})
    assert r.status_code == 200
    spend = httpx.get(proxy.url + "/admin/spend", params={"by": "user"},
                      headers={"authorization": "Bearer sk-demo-admin"})
    assert spend.status_code == 200
    assert [row["requests"] for row in spend.json()["rows"] if row["user"] == "u-header-42"] == [1]


# ----- allowed_models hold for the model actually called ----------------------------------------

ROUTES = {
    "routing.yaml": {"rules": [
        {"name": "to-4o", "match": {"keywords": ["bigmodel"]}, "target": "gpt-4o",
         "fallbacks": ["gpt-4.1-mini"]},
        {"name": "only-4o", "match": {"keywords": ["onlybig"]}, "target": "gpt-4o"},
    ]},
    "experiments.yaml": {"experiments": {"arms_sales_may_not_use": {
        "control": "gpt-4o-mini", "variant": "gpt-4o", "split": 0.5,
        "scope": {"task": ["exp"]}}}},
    "cache.yaml": "enabled: false\n",
}


def served(proxy: ServerThread, mock: ServerThread, key: str, text: str,
           headers: dict[str, str] | None = None) -> tuple[list[str], httpx.Headers]:
    prompt = f"{text} {uuid.uuid4().hex}"
    r = httpx.post(proxy.url + "/v1/chat/completions",
                   json={"model": "gpt-4o-mini", "messages": ask(prompt)},
                   headers={"authorization": f"Bearer {key}", **(headers or {})})
    assert r.status_code == 200, r.text
    models = [q["body"]["model"] for q in mock_requests(mock.url)
              if q["body"].get("messages") == ask(prompt)]
    return models, r.headers


def test_routing_never_serves_a_model_the_department_may_not_use(
        start_proxy: ProxyStarter, mock_upstream: ServerThread) -> None:
    """sales may use gpt-4o-mini* and gpt-4.1-mini* only (rules/departments.yaml)."""
    proxy = start_proxy(edits=ROUTES)
    models, headers = served(proxy, mock_upstream, "sk-demo-engineering", "bigmodel")
    assert models == ["gpt-4o"] and headers["x-meterline-route"] == "to-4o"
    models, headers = served(proxy, mock_upstream, "sk-demo-sales", "bigmodel")
    assert models == ["gpt-4.1-mini"]  # the rule's allowed fallback
    assert headers["x-meterline-route"] == "to-4o"
    models, headers = served(proxy, mock_upstream, "sk-demo-sales", "onlybig")
    assert models == ["gpt-4o-mini"]  # what was asked, as if no rule applied
    assert headers["x-meterline-route"] == "default"
    for user in range(6):  # sales may use one arm, not the other: never enrolled
        models, headers = served(proxy, mock_upstream, "sk-demo-sales", "plain",
                                 {"x-meterline-task": "exp", "x-meterline-user": f"u{user}"})
        assert models == ["gpt-4o-mini"] and "x-meterline-experiment" not in headers
    arms = set()
    for user in range(12):
        models, headers = served(proxy, mock_upstream, "sk-demo-engineering", "plain",
                                 {"x-meterline-task": "exp", "x-meterline-user": f"u{user}"})
        arms.add((headers["x-meterline-variant"], models[0]))
    assert arms == {("control", "gpt-4o-mini"), ("variant", "gpt-4o")}
    explained = httpx.post(proxy.url + "/admin/route/explain",
                           headers={"authorization": "Bearer sk-demo-admin"},
                           json={"model": "gpt-4o-mini", "department": "sales",
                                 "messages": ask("bigmodel")}).json()
    assert (explained["rule"], explained["chain"]) == ("to-4o", ["gpt-4.1-mini"])


def test_built_in_demo_mock_is_labelled_as_the_mock(start_proxy: ProxyStarter,
                                                    mock_upstream: ServerThread) -> None:
    """`meterline serve --demo` answers from the built-in mock: the provider header must not
    claim the answer came from OpenAI."""
    proxy = start_proxy(mock_upstream_url=mock_upstream.url + "/v1")
    raw = client(proxy).chat.completions.with_raw_response.create(
        model="gpt-4o", messages=ask("Who answered?"))
    assert raw.parse().choices[0].message.content.startswith("Mock answer")
    assert raw.headers["x-meterline-provider"] == "mock"


IMAGE_PART = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}


def test_images_to_a_text_only_model_are_a_clear_400(start_proxy: ProxyStarter,
                                                     mock_upstream: ServerThread) -> None:
    """Without the shipped `vision` routing rule (which sends images to gpt-4o), an image for a
    text-only model is refused before any upstream call."""
    routing = yaml.safe_load((REPO_ROOT / "rules" / "routing.yaml").read_text())
    routing["rules"] = [rule for rule in routing["rules"] if rule["name"] != "vision"]
    proxy = start_proxy(edits={"routing.yaml": routing})
    before = len(mock_requests(mock_upstream.url))
    content = [{"type": "text", "text": "What is this?"}, IMAGE_PART]
    with pytest.raises(openai.BadRequestError) as caught:
        client(proxy).chat.completions.create(
            model="gpt-3.5-turbo", messages=[{"role": "user", "content": content}])
    error = caught.value.body
    assert error == {
        "message": "Model 'gpt-3.5-turbo' does not accept images; models that do: gpt-4.1, "
                   "gpt-4.1-mini, gpt-4o, gpt-4o-mini.",
        "type": "invalid_request_error", "param": "messages", "code": "image_input_not_supported"}
    assert len(mock_requests(mock_upstream.url)) == before
    ok = client(proxy).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": content}])
    assert ok.choices[0].message.content
    sent = mock_requests(mock_upstream.url)[-1]["body"]["messages"][0]["content"]
    assert sent[1] == IMAGE_PART
