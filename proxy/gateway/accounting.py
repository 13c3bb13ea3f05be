"""The spend flow of one call, in one vocabulary: reserve (hold the worst case before the call)
-> settle (price the usage, free the hold, charge the cost and store the usage record) ->
record_metrics. `settle_json` / `settle_stream` settle an answered call; `release` frees a hold
that is never settled; `end_flight` lets identical requests waiting on this one go on."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.responses import Response

from proxy import errors
from proxy.cache.cache_key import strip_cache_control
from proxy.gateway.after_send import AfterSendResponse
from proxy.gateway.requests import Call
from proxy.gateway.streaming import StreamOutcome
from proxy.gateway.upstream import UpstreamTarget
from proxy.routing.rules import estimate_tokens
from proxy.runtime.services import Services
from proxy.runtime.tracing import step
from proxy.spend.budgets import BudgetExhausted, SpendRefusal
from proxy.spend.pricing import Cost, Usage, format_nanos, parse_usage

log = logging.getLogger(__name__)


# request fields the provider bills as prompt tokens besides the messages (chat) or the input
SCHEMA_FIELDS = ("tools", "functions", "response_format")


def prompt_tokens_of(call: Call) -> int:
    """Prompt tokens before the provider says (for the hold and a cut stream's charge): the
    messages, plus the tool/function schemas and response format, which are billed as prompt.
    Only chat bodies have their messages checked (gateway/messages.py); any other endpoint
    forwards a 'messages' field unread, so it is sized by its bytes (4 characters a token)."""
    if call.prompt_tokens is not None:
        return call.prompt_tokens + schema_tokens(call.body)
    messages = call.body.get("messages")
    if call.endpoint == "chat.completions" and isinstance(messages, list):
        return estimate_tokens(messages) + schema_tokens(call.body)
    return max(1, len(call.raw) // 4)


def schema_tokens(body: dict[str, Any]) -> int:
    chars = sum(len(orjson.dumps(body[name])) for name in SCHEMA_FIELDS if body.get(name))
    return (chars + 3) // 4


TOKEN_LIMITS = ("max_completion_tokens", "max_tokens", "max_output_tokens")


def max_tokens_of(call: Call) -> int | None:
    for name in TOKEN_LIMITS:
        value = call.body.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def choices_of(call: Call) -> int:
    n = call.body.get("n")
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 1 else 1


def worst_case_tokens(call: Call, dept: Any) -> int | None:
    """Output tokens the call may produce over all `n` choices; None = the department default."""
    per_choice = max_tokens_of(call)
    choices = choices_of(call)
    if choices == 1:
        return per_choice
    return (per_choice if per_choice is not None else dept.default_max_tokens) * choices


def cap_max_tokens(call: Call, tokens: int) -> None:
    """Lower the output limit in the field the client used (o-series chat models reject
    `max_tokens`; the Responses API only knows `max_output_tokens`)."""
    used = [name for name in TOKEN_LIMITS if call.body.get(name) is not None]
    fallback = "max_output_tokens" if call.endpoint == "responses" else "max_tokens"
    for name in used or [fallback]:
        call.body[name] = tokens
    call.raw = orjson.dumps(call.body)
    call.headers["x-meterline-max-tokens-capped"] = str(tokens)


async def reserve(services: Services, call: Call, model: str) -> Any:
    """Hold the worst-case cost; may cap max_tokens to what the budget still allows."""
    if services.spend is None or call.department is None:
        return None
    dept = services.department(call.department)
    if dept is None:  # e.g. removed by a reload
        raise errors.PermissionDenied(f"Department '{call.department}' is not configured.",
                                      code="unknown_department")
    try:
        reservation = await services.spend.reserve(
            call.department, model, prompt_tokens_of(call), worst_case_tokens(call, dept))
    except SpendRefusal as exc:
        reason = "budget_exhausted" if isinstance(exc, BudgetExhausted) else "rate_limited"
        services.metrics.record_budget_rejection(call.department, reason)
        raise
    if reservation.capped and reservation.max_tokens is not None:
        per_choice = reservation.max_tokens // choices_of(call)
        if per_choice < 1:
            await release(services, reservation)
            services.metrics.record_budget_rejection(call.department, "budget_exhausted")
            raise errors.InsufficientQuota(
                f"Department '{call.department}' has too little budget left for "
                f"{choices_of(call)} choices.")
        cap_max_tokens(call, per_choice)
    return reservation


async def admit_hit(services: Services, call: Call) -> None:
    """Admit a call the cache answers exactly: it spends nothing, so it holds nothing (see
    Ledger.admit_free); refused like any call by the breaker, rpm/tpm or a spent budget."""
    if services.spend is None or call.department is None:
        return
    if services.department(call.department) is None:  # e.g. removed by a reload
        raise errors.PermissionDenied(f"Department '{call.department}' is not configured.",
                                      code="unknown_department")
    try:
        await services.spend.admit_free(call.department, prompt_tokens_of(call))
    except SpendRefusal as exc:
        reason = "budget_exhausted" if isinstance(exc, BudgetExhausted) else "rate_limited"
        services.metrics.record_budget_rejection(call.department, reason)
        raise


async def release(services: Services, reservation: Any) -> None:
    if reservation is not None and services.spend is not None:
        await services.spend.release(reservation)


async def cache_probe(services: Services, call: Call, model: str) -> Any:
    """The exact cached answer, looked up before the call is admitted, or None (and then
    `cache_lookup` after admission). A failure is handled as `cache_lookup` handles its own,
    and the call goes on uncached."""
    if services.cache is None:
        return None
    try:
        return await services.cache.probe(call, model)
    except errors.ProxyError:  # the client's fault (a bad cache control): its 4xx
        raise
    except Exception:  # the cache is an optimisation: its failure must not fail the call
        _answer_uncached(services, call, "probe")
        return None


async def cache_lookup(services: Services, call: Call, model: str,
                       probed: Any = None) -> Any:
    """A cached answer for the call, or None; `probed`: the exact hit `cache_probe` found. Any
    cache failure (an embedder bug, a backend error nobody planned for) is logged and counted,
    and the call is answered uncached."""
    if services.cache is None:
        call.headers["x-meterline-cache"] = "off"
        if strip_cache_control(call.body):  # our control object never goes upstream
            call.raw = orjson.dumps(call.body)
        return None
    try:
        return await services.cache.lookup(services, call, model, probed)
    except errors.ProxyError:  # the client's fault (a bad cache control): its 4xx
        raise
    except Exception:  # the cache is an optimisation: its failure must not fail the call
        _answer_uncached(services, call, "lookup")
        return None


def _answer_uncached(services: Services, call: Call, stage: str) -> None:
    assert services.cache is not None
    log.exception("cache %s failed for %s; answering uncached", stage, call.request_id)
    services.metrics.record_cache_failure("lookup")
    services.cache.end_flight(call)  # if it leads a flight, its waiters go on without it
    services.cache.forgo(call)  # nothing to look up again, nothing to store
    call.headers["x-meterline-cache"] = "bypass"
    if call.record is not None:
        call.record.cache = "bypass"
    if strip_cache_control(call.body):
        call.raw = orjson.dumps(call.body)


async def cache_store(services: Services, call: Call, store: Awaitable[None]) -> None:
    """Store an answer in the cache; a failure is logged and counted, never raised: the
    upstream has answered, so the client gets it and the spend is settled."""
    try:
        await store
    except Exception:
        log.exception("answer of %s not cached", call.request_id)
        services.metrics.record_cache_failure("store")


def answered_by(services: Services, call: Call, model: str) -> None:
    """A fallback `model` answered instead of the planned one: its answer is cached as that
    model's (proxy.cache.semantic_cache.SemanticCache.answered_by)."""
    if services.cache is not None:
        services.cache.answered_by(call, model)


def end_flight(services: Services, call: Call) -> None:
    """End the call's cache flight, if it leads one: identical requests waiting for its answer
    look again (proxy.cache.semantic_cache.SemanticCache.end_flight)."""
    if services.cache is not None:
        services.cache.end_flight(call)


async def serve_cached(services: Services, call: Call, reservation: Any, cached: Any) -> Response:
    assert services.cache is not None  # cached came from it
    response: Response = await services.cache.serve(services, call, reservation, cached)
    return response


# Responses API stream events whose `delta` is generated text (output, refusal, tool-call
# arguments, reasoning summaries): what a cut stream had produced
RESPONSES_DELTAS = frozenset((
    "response.output_text.delta", "response.refusal.delta",
    "response.function_call_arguments.delta", "response.custom_tool_call_input.delta",
    "response.reasoning_summary_text.delta", "response.reasoning_text.delta",
    "response.audio.transcript.delta", "response.code_interpreter_call_code.delta",
))


def estimate_output_tokens(chunks: list[bytes]) -> int:
    """Tokens in the text a cut stream had already relayed (chars / 4), read by the stream's
    own event shapes: Chat Completions and Completions chunks, or Responses API typed events."""
    chars = 0
    for event in b"".join(chunks).split(b"\n\n"):
        payload = _event_data(event)
        if payload is not None:
            chars += _generated_chars(payload)
    return (chars + 3) // 4


def _event_data(event: bytes) -> dict[str, Any] | None:
    """The JSON object of an SSE event's `data:` line (after any `event:` line)."""
    for line in event.split(b"\n"):
        if line.startswith(b"data:") and line[5:].lstrip().startswith(b"{"):
            try:
                payload = orjson.loads(line[5:])
            except orjson.JSONDecodeError:
                return None
            return payload if isinstance(payload, dict) else None
    return None


def _generated_chars(payload: dict[str, Any]) -> int:
    kind = payload.get("type")
    if isinstance(kind, str):
        delta = payload.get("delta")
        return len(delta) if kind in RESPONSES_DELTAS and isinstance(delta, str) else 0
    chars = 0
    for choice in payload.get("choices") or []:
        if not isinstance(choice, dict):
            continue
        text = choice.get("text")  # /v1/completions
        chars += len(text) if isinstance(text, str) else 0
        delta = choice.get("delta") or {}
        chars += len(delta.get("content") or "") + len(delta.get("refusal") or "")
        for call_ in delta.get("tool_calls") or []:
            chars += len((call_.get("function") or {}).get("arguments") or "")
    return chars


def price(services: Services, call: Call, target: UpstreamTarget,
          usage: dict[str, Any] | Usage | None, estimated: bool) -> tuple[Usage, Cost]:
    """Token counts and cost of the call, written into its record (no I/O)."""
    record = call.record
    assert record is not None
    pricing = services.config.pricing
    counts = usage if isinstance(usage, Usage) else parse_usage(usage)
    cost = pricing.cost(target.model, counts)
    if not cost.priced and pricing.resolve(record.model_requested) is not None:
        cost = pricing.cost(record.model_requested, counts)
    record.input_tokens, record.output_tokens = counts.input_tokens, counts.output_tokens
    record.cached_input_tokens = counts.cached_input_tokens
    record.cost_nanos, record.priced = cost.nanos, cost.priced
    record.cost_estimated = estimated or not cost.priced
    return counts, cost


async def settle_and_count(services: Services, call: Call, reservation: Any, counts: Usage,
                           cost: Cost,
               estimated: bool) -> float | None:
    """Settle the budget, store the record and count the metrics of a call the upstream answered;
    returns the dollars left in the tightest budget window (None when unknown)."""
    remaining = await settle_spend(services, call, reservation, cost)
    record_metrics(services, call, counts, cost, estimated)
    return remaining


async def settle_spend(services: Services, call: Call, reservation: Any,
                       cost: Cost) -> float | None:
    """Settle the budget and store the record; the dollars left in the tightest window."""
    record = call.record
    assert record is not None
    record.latency_ms = call.elapsed() * 1000
    if services.spend is not None and reservation is not None:
        remaining: float | None = await services.spend.settle(reservation, cost.nanos, record)
        return remaining
    if services.spend is not None:
        await services.spend.add_record(record)
    return None


def record_metrics(services: Services, call: Call, counts: Usage, cost: Cost,
                   estimated: bool) -> None:
    """The metrics of a call the upstream answered."""
    record = call.record
    assert record is not None
    model = record.model_requested
    m = services.metrics
    if record.ttft_ms is not None:
        m.record_first_token(model, record.ttft_ms / 1000)
    m.record_upstream(record.provider)  # the attempt that answered (failed ones: pipeline.send)
    m.record_usage(call.department_name, model, counts.input_tokens, counts.output_tokens,
                   counts.cached_input_tokens)
    m.record_cost(call.department_name, model, cost.dollars, estimated=estimated,
                  priced=cost.priced)
    if record.experiment and record.variant:
        m.record_experiment(record.experiment, record.variant, cost.dollars, call.elapsed())
    if record.route_rule:
        m.record_route_decision(record.route_rule, record.model_used, call.department_name,
                                routing_saving(services, call, counts, cost))
    m.record_request("/v1" + call.path, model, call.department_name, record.status,
                     call.elapsed(), call.upstream_s)


def routing_saving(services: Services, call: Call, counts: Usage, cost: Cost) -> float:
    """Dollars a routing rule saved: the same usage at the requested model's price minus what
    was paid (0 when the requested model has no price or the answering one cost more)."""
    record = call.record
    assert record is not None
    if record.model_used == record.model_requested:
        return 0.0
    pricing = services.config.pricing
    if pricing.resolve(record.model_requested) is None:
        return 0.0
    baseline = pricing.cost(record.model_requested, counts)
    return max(0, baseline.nanos - cost.nanos) / 1e9


async def settle(services: Services, call: Call, reservation: Any, target: UpstreamTarget,
                 usage: dict[str, Any] | Usage | None, estimated: bool) -> dict[str, Any]:
    """Price the usage, settle the budget, write the record, count the metrics."""
    counts, cost = price(services, call, target, usage, estimated)
    remaining = await settle_and_count(services, call, reservation, counts, cost, estimated)
    return info_of(call, counts, cost, estimated, remaining)


def cost_header(nanos: int) -> str:
    """Exact dollars, at least 8 decimals (the header's format before nano-dollars), 9 when the
    ninth is not 0: 22350 -> '0.00002235', 75 -> '0.000000075'."""
    return format_nanos(nanos, 8)


def info_of(call: Call, counts: Usage, cost: Cost, estimated: bool,
            remaining: float | None) -> dict[str, Any]:
    """The `meterline` object a stream's last event carries."""
    assert call.record is not None
    return {"cost_usd": cost.dollars, "cost_nanos": cost.nanos,
            "input_tokens": counts.input_tokens,
            "output_tokens": counts.output_tokens, "estimated": call.record.cost_estimated,
            "priced": cost.priced,
            "cache": call.record.cache, "department": call.department,
            "budget_remaining_usd": remaining, "request_id": call.request_id}


async def settle_json(services: Services, call: Call, reservation: Any, target: UpstreamTarget,
                      status: int, data: bytes) -> Response:
    """The cache write happens before the answer goes out (the next identical request must hit);
    settling the budget, the record and the metrics run right after the body is sent, in the same
    task, so a graceful shutdown still waits for them. The reservation holds the worst case until
    then, so budgets stay safe."""
    record = call.record
    assert record is not None
    try:
        payload = orjson.loads(data)
    except orjson.JSONDecodeError:
        payload = None
    if not isinstance(payload, dict):
        record.status, record.error = 502, "invalid_upstream_json"
        estimate = Usage(prompt_tokens_of(call), 0, (len(data) + 3) // 4)
        await settle(services, call, reservation, target, estimate, True)
        raise errors.UpstreamUnavailable(
            f"Upstream {target.provider_name} returned a body that is not JSON")
    record.status = status
    if record.cache == "off":
        record.cache = "miss" if services.cache is not None else "off"
    usage = payload.get("usage")
    estimated = not isinstance(usage, dict)
    counts, cost = price(services, call, target,
                         usage if not estimated else Usage(prompt_tokens_of(call), 0, 0),
                         estimated)
    if services.cache is not None and not estimated:
        await cache_store(services, call,
                          services.cache.store_json(services, call, payload, data, cost.dollars))
    headers = call.headers
    headers["x-meterline-cost-usd"] = cost_header(cost.nanos)
    headers["x-meterline-overhead-ms"] = f"{call.overhead_ms():.2f}"

    async def settle_after_send() -> None:
        with step(services.tracing, "meterline.settle"):
            await settle_and_count(services, call, reservation, counts, cost, estimated)

    return AfterSendResponse(data, status, headers, "application/json", settle_after_send,
                             f"request {call.request_id}")


async def settle_stream(services: Services, call: Call, reservation: Any, target: UpstreamTarget,
                        outcome: StreamOutcome) -> tuple[dict[str, Any], Callable[[], None]]:
    """Settle a relayed stream: the `meterline` info for its last event, and the counting of its
    metrics, which the relay runs once that event is sent (the client need not wait for it)."""
    record = call.record
    assert record is not None
    record.status = 200
    if outcome.first_byte_at is not None:
        record.ttft_ms = (outcome.first_byte_at - call.started) * 1000
    if outcome.error is not None:
        record.error = outcome.error.code or "stream_error"
    elif not outcome.complete:
        record.error = "client_disconnected"
    usage: dict[str, Any] | Usage | None = outcome.usage
    estimated = usage is None
    if estimated:
        usage = Usage(prompt_tokens_of(call), 0, estimate_output_tokens(outcome.chunks))
    if record.cache == "off" and services.cache is not None:
        record.cache = "miss"
    counts, cost = price(services, call, target, usage, estimated)
    remaining = await settle_spend(services, call, reservation, cost)
    info = info_of(call, counts, cost, estimated, remaining)
    if services.cache is not None and outcome.complete and outcome.error is None:
        held = [outcome.held] if outcome.held is not None else []
        await cache_store(services, call, services.cache.store_stream(
            services, call, outcome.chunks + held, info["cost_usd"]))
    return info, lambda: record_metrics(services, call, counts, cost, estimated)

