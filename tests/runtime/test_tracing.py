"""Opt-in OpenTelemetry traces: GenAI attributes, child spans per step, the request id, an
incoming traceparent continued; in memory and through a real OTLP/HTTP export."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from proxy.settings import Settings
from tests.support.processes import ProxyProcess
from tests.support.servers import ServerThread, free_port, make_config_dir

ENG = {"authorization": "Bearer sk-demo-engineering"}
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
STEPS = {"meterline.auth", "meterline.cache.probe", "meterline.budget.reserve",
         "meterline.cache.lookup", "chat gpt-4o-mini", "meterline.settle"}


def chat(proxy: Any, headers: dict[str, str], **body: Any) -> httpx.Response:
    payload = {"model": "gpt-4o-mini", "temperature": 0,
               "messages": [{"role": "user", "content": f"trace me {uuid.uuid4().hex}"}], **body}
    return httpx.post(proxy.url + "/v1/chat/completions", json=payload, timeout=30,
                      headers={**ENG, **headers})


def finished(exporter: InMemorySpanExporter, count: int) -> list[ReadableSpan]:
    deadline = time.monotonic() + 10
    while len(spans := list(exporter.get_finished_spans())) < count:
        assert time.monotonic() < deadline, [s.name for s in spans]
        time.sleep(0.05)
    return spans


@pytest.mark.parametrize("stream", [False, True])
def test_request_span_continues_traceparent_with_genai_attributes_and_step_children(
        start_proxy: Callable[..., ServerThread], stream: bool) -> None:
    exporter = InMemorySpanExporter()
    proxy = start_proxy(trace_exporter=exporter)
    r = chat(proxy, {"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"}, stream=stream)
    assert r.status_code == 200
    r.read()
    spans = finished(exporter, len(STEPS) + 1)
    root = next(s for s in spans if s.name == "chat gpt-4o-mini" and s.parent is not None
                and s.parent.span_id == int(PARENT_ID, 16))
    assert f"{root.context.trace_id:032x}" == TRACE_ID
    attrs = dict(root.attributes or {})
    assert attrs["meterline.request_id"] == r.headers["x-request-id"]
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.request.model"] == attrs["gen_ai.response.model"] == "gpt-4o-mini"
    assert attrs["gen_ai.system"] == "openai"
    assert attrs["gen_ai.usage.input_tokens"] > 0 and attrs["gen_ai.usage.output_tokens"] > 0
    assert attrs["http.response.status_code"] == 200 and attrs["meterline.cost_usd"] > 0
    children = {s.name: s for s in spans
                if s.parent is not None and s.parent.span_id == root.context.span_id}
    assert set(children) == STEPS
    assert all(f"{s.context.trace_id:032x}" == TRACE_ID for s in spans)
    text = repr([dict(s.attributes or {}) for s in spans])
    assert "trace me" not in text and "sk-demo" not in text  # no prompt, no key


def test_an_exact_hit_is_traced_as_probed_and_admitted_without_a_reserve(
        start_proxy: Callable[..., ServerThread]) -> None:
    exporter = InMemorySpanExporter()
    proxy = start_proxy(trace_exporter=exporter)
    payload = {"model": "gpt-4o-mini", "temperature": 0,
               "messages": [{"role": "user", "content": f"trace a hit {uuid.uuid4().hex}"}]}
    for _ in range(2):
        r = httpx.post(proxy.url + "/v1/chat/completions", json=payload, timeout=30,
                       headers=ENG)
        assert r.status_code == 200
    assert r.headers["x-meterline-cache"] == "hit-exact"
    spans = finished(exporter, len(STEPS) + 1 + 4)
    root = next(s for s in spans if s.parent is None
                and dict(s.attributes or {})["meterline.request_id"] == r.headers["x-request-id"])
    assert dict(root.attributes or {})["meterline.cache"] == "hit-exact"
    children = {s.name for s in spans
                if s.parent is not None and s.parent.span_id == root.context.span_id}
    assert children == {"meterline.auth", "meterline.cache.probe", "meterline.budget.admit"}


def test_refused_request_is_traced_with_its_status(
        start_proxy: Callable[..., ServerThread]) -> None:
    exporter = InMemorySpanExporter()
    proxy = start_proxy(trace_exporter=exporter)
    r = chat(proxy, {"authorization": "Bearer sk-wrong"})
    assert r.status_code == 401
    [span] = [s for s in finished(exporter, 2) if s.parent is None]
    assert dict(span.attributes or {})["http.response.status_code"] == 401


def test_tracing_is_off_by_default(start_proxy: Callable[..., ServerThread]) -> None:
    assert Settings.from_env({}).traces == "off"
    proxy = start_proxy()
    assert proxy.server.config.app.state.services.tracing is None
    assert chat(proxy, {}).status_code == 200


class Receiver(BaseHTTPRequestHandler):
    """OTLP/HTTP (protobuf) trace receiver."""

    received: list[ExportTraceServiceRequest] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers["content-length"]))
        assert self.path == "/v1/traces"
        message = ExportTraceServiceRequest()
        message.ParseFromString(body)
        Receiver.received.append(message)
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        return None


@pytest.fixture
def receiver() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Receiver)
    Receiver.received = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_spans_reach_an_otlp_http_receiver(receiver: str, mock_upstream: ServerThread,
                                           tmp_path: Path) -> None:
    config_dir = make_config_dir(tmp_path / "rules", mock_upstream.url)
    proxy = ProxyProcess(config_dir, tmp_path / "serve.log", {
        "MET_TRACES": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": receiver,
        "OTEL_SERVICE_NAME": "meterline-test", "OTEL_BSP_SCHEDULE_DELAY": "100",
        "MET_ADMIN_KEY": "sk-otlp-admin", "MOCK_UPSTREAM_KEY": "sk-up", "MET_LOG_LEVEL": "warning"})
    try:
        proxy.wait_ready()
        key = httpx.post(proxy.url + "/admin/keys", json={"department": "engineering"},
                         headers={"authorization": "Bearer sk-otlp-admin"}).json()["key"]
        r = chat(proxy, {"authorization": f"Bearer {key}",
                         "traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"})
        assert r.status_code == 200
        deadline = time.monotonic() + 15
        spans: dict[str, Any] = {}
        while not STEPS <= set(spans) and time.monotonic() < deadline:  # (waited all 15 s)
            time.sleep(0.1)
            spans = {s.name: (rs, s) for message in Receiver.received
                     for rs in message.resource_spans for ss in rs.scope_spans for s in ss.spans}
    finally:
        proxy.stop()
    assert set(spans) == STEPS | {"chat gpt-4o-mini"} and len(spans) == len(STEPS)
    resource, _ = next(iter(spans.values()))
    service = {a.key: a.value.string_value for a in resource.resource.attributes}
    assert service["service.name"] == "meterline-test"
    roots = [s for message in Receiver.received for rs in message.resource_spans
             for ss in rs.scope_spans for s in ss.spans if s.parent_span_id.hex() == PARENT_ID]
    assert len(roots) == 1 and roots[0].trace_id.hex() == TRACE_ID
    attrs = {a.key: a.value for a in roots[0].attributes}
    assert attrs["meterline.request_id"].string_value == r.headers["x-request-id"]
    assert attrs["gen_ai.usage.output_tokens"].int_value > 0
