"""Opt-in OpenTelemetry traces (MET_TRACES=otlp): one server span per API request, following the
GenAI semantic conventions, with child spans for auth, budget reserve, cache lookup, the
upstream call and settlement. Off by default; then no OpenTelemetry module is imported and each
step costs one attribute check (`step` hands out a shared null context).

The request span continues an incoming `traceparent` and carries the `x-request-id`; its GenAI
attributes are set when the answer has been sent (a stream's once it has ended)."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from proxy.errors import CALL_KEY, REQUEST_ID_KEY
from proxy.settings import Settings, SettingsError

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer

NULL = contextlib.nullcontext()
OPERATIONS = {"chat.completions": "chat", "completions": "text_completion",
              "embeddings": "embeddings", "responses": "chat"}


class Tracing:
    """The tracer and its provider (flushed and shut down with the services)."""

    def __init__(self, provider: TracerProvider) -> None:
        self.provider = provider
        self.tracer: Tracer = provider.get_tracer("meterline")

    def shutdown(self) -> None:
        self.provider.shutdown()  # exports what is still queued


def build_tracing(settings: Settings) -> Tracing | None:
    if settings.traces == "off" and settings.trace_exporter is None:
        return None
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    except ImportError:
        raise SettingsError("Config 'MET_TRACES' has value 'otlp' but OpenTelemetry is not "
                            "installed: pip install 'meterline[tracing]'.") from None

    name = settings.env.get("OTEL_SERVICE_NAME") or "meterline"
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    if settings.trace_exporter is not None:  # an embedding application's (tests: in memory)
        provider.add_span_processor(SimpleSpanProcessor(settings.trace_exporter))
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        # endpoint, headers and batching from the standard OTEL_EXPORTER_OTLP_* / OTEL_BSP_*
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return Tracing(provider)


def step(tracing: Tracing | None, name: str, **attributes: Any) -> Any:
    """A child span of the current request span, or a shared no-op when tracing is off."""
    if tracing is None:
        return NULL
    return tracing.tracer.start_as_current_span(name, attributes=attributes or None)


def start_request(tracing: Tracing, scope: Mapping[str, Any]) -> tuple[Span, Any]:
    """The request's server span, continuing the caller's `traceparent`; returns the span and
    the context token to detach once the request is done."""
    from opentelemetry import context, trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", ())
               if k in (b"traceparent", b"tracestate")}
    parent = TraceContextTextMapPropagator().extract(carrier)
    span = tracing.tracer.start_span(f"POST {scope.get('path')}", context=parent,
                                     kind=trace.SpanKind.SERVER)
    token = context.attach(trace.set_span_in_context(span, parent))
    return span, token


def end_request(span: Span, token: Any, scope: Mapping[str, Any], status: int) -> None:
    from opentelemetry import context
    from opentelemetry.trace import Status, StatusCode

    span.set_attributes(request_attributes(scope, status))
    call = scope.get(CALL_KEY)
    if call is not None:
        model = call.body.get("model")
        span.update_name(f"{OPERATIONS.get(call.endpoint, call.endpoint)} {model}")
    if status >= 500 or status == 0:
        span.set_status(Status(StatusCode.ERROR))
    span.end()
    context.detach(token)


def request_attributes(scope: Mapping[str, Any], status: int) -> dict[str, Any]:
    """GenAI semantic-convention attributes (and ours, `meterline.*`) of a finished request;
    no prompt, answer or key."""
    attributes: dict[str, Any] = {"http.request.method": "POST", "url.path": scope.get("path"),
                                  "http.response.status_code": status}
    if rid := scope.get(REQUEST_ID_KEY):
        attributes["meterline.request_id"] = rid
    call = scope.get(CALL_KEY)
    if call is None:
        return attributes
    attributes["gen_ai.operation.name"] = OPERATIONS.get(call.endpoint, call.endpoint)
    if isinstance(model := call.body.get("model"), str):
        attributes["gen_ai.request.model"] = model
    if call.department:
        attributes["meterline.department"] = call.department
    record = call.record
    if record is None:
        return attributes
    attributes.update({"meterline.cache": record.cache, "meterline.cost_usd": record.cost,
                       "gen_ai.usage.input_tokens": record.input_tokens,
                       "gen_ai.usage.output_tokens": record.output_tokens})
    if record.provider:
        attributes["gen_ai.system"] = record.provider
        attributes["gen_ai.response.model"] = record.model_used
    for key, value in (("meterline.route", record.route_rule),
                       ("meterline.experiment", record.experiment),
                       ("meterline.variant", record.variant), ("error.type", record.error)):
        if value:
            attributes[key] = value
    return attributes
