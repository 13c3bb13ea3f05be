"""The request path, in one place:

    authenticate -> plan (route + experiment) -> authorize -> reserve budget -> cache
    -> upstream (retries, fallbacks) -> settle + record -> metrics

Each step is a small function; features plug in through `Services` (spend, cache, cooldowns).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from starlette.requests import Request
from starlette.responses import Response

from proxy.config.departments import ADMIN_DEPARTMENT
from proxy.errors import (
    CALL_KEY,
    InvalidRequest,
    ModelNotFound,
    PermissionDenied,
    ProxyError,
    UpstreamCredentialRefused,
    UpstreamHTTPError,
    UpstreamTimeout,
    UpstreamUnavailable,
    request_id_headers,
)
from proxy.gateway import accounting
from proxy.gateway.reliability import (
    AllTargetsFailed,
    AttemptLog,
    RetryPolicy,
    UpstreamFailure,
    run_with_fallbacks,
)
from proxy.gateway.requests import (
    Call,
    authenticate,
    client_request_id_of,
    header_map,
    new_record,
    read_json_body,
    request_id_of,
    validate_chat,
    validate_passthrough,
)
from proxy.gateway.streaming import SSE_HEADERS, RelayResponse, SSERelay, StreamOutcome
from proxy.gateway.upstream import UpstreamTarget
from proxy.routing.experiments import assign
from proxy.routing.rules import DEFAULT_RULE, route_request
from proxy.runtime.services import Services
from proxy.runtime.tracing import NULL, OPERATIONS, step

log = logging.getLogger("meterline")


@dataclass(slots=True)  # built per request: a frozen __init__ costs ~6x
class Plan:
    """Where the call goes: public model names to try in order, and why."""

    model: str
    chain: tuple[str, ...]
    rule: str | None = None
    experiment: str | None = None
    variant: str | None = None


def services_of(request: Request) -> Services:
    """The app's Services (proxy.app.ProxyApp keeps them as a plain attribute too)."""
    services: Services | None = getattr(request.scope["app"], "services", None)
    if services is None:
        services = request.app.state.services
    return services


async def open_call(services: Services, request: Request, endpoint: str, path: str) -> Call:
    rid = request_id_of(request)
    started = time.perf_counter()
    with step(services.tracing, "meterline.auth"):
        principal = await authenticate(request, services)
    raw, body = await read_json_body(request, services.settings.max_body_bytes)
    client_rid = client_request_id_of(request)
    call = Call(rid, endpoint, path, started, principal, body, raw,
                headers={**request_id_headers(rid, client_rid),
                         "x-meterline-department": principal.department or ADMIN_DEPARTMENT},
                inbound=header_map(request), client_request_id=client_rid)
    request.scope[CALL_KEY] = call
    return call


def plan_route(services: Services, call: Call, request: Request) -> Plan:
    model: str = call.body["model"]
    config = services.config
    if call.endpoint != "chat.completions" or config.routing is None:
        return Plan(model, (model,))
    inp, decision = route_request(config.routing, call.body, call.department or "",
                                  call.inbound, call.principal.key_id, len(call.raw))
    call.prompt_tokens = inp.prompt_tokens
    chain = decision.targets
    assignment = assign(config.experiments, inp, time.time()) if config.experiments else None
    if assignment is not None and not services.enrollable(call.department,
                                                          assignment.experiment):
        assignment = None
    if assignment is not None:
        chain = tuple(dict.fromkeys((assignment.model, *chain)))
        return Plan(chain[0], chain, decision.rule, assignment.experiment, assignment.variant)
    return Plan(chain[0], chain, decision.rule)


def authorize(services: Services, call: Call, plan: Plan) -> None:
    """The requested model must be allowed, and so must every model the plan may call: a rule's
    target or fallback the department may not use is left out; if none is left, the requested
    model is served as if no rule applied (and the route is named "default")."""
    requested: str = call.body["model"]
    # existence first: a model nobody serves is a 404 for every key, even when a routing rule
    # would have sent the call elsewhere or the department's allow-list does not name it
    if (requested not in services.config.providers.models
            or not services.targets(plan.chain, call.department)):
        raise ModelNotFound(f"The model '{requested}' does not exist or is not served here.",
                            param="model")
    department = call.department
    if department is None:
        return
    if not services.allows(department, requested):
        raise PermissionDenied(
            f"Department '{department}' may not use model '{requested}'.", param="model")
    if len(plan.chain) == 1 and plan.chain[0] == requested:
        return
    allowed = services.allowed_chain(department, plan.chain)
    if allowed == plan.chain:
        return
    if not allowed:
        allowed, plan.rule = (requested,), DEFAULT_RULE
    plan.chain, plan.model = allowed, allowed[0]
    if not services.targets(plan.chain, department):  # a routed request for an unknown name
        raise ModelNotFound(f"The model '{requested}' does not exist or is not served here.",
                            param="model")


def has_image_part(body: dict[str, Any]) -> bool:
    for message in body.get("messages") or ():
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list) and any(
                isinstance(part, dict) and part.get("type") == "image_url" for part in content):
            return True
    return False


def check_inputs(services: Services, call: Call, plan: Plan) -> None:
    """Images only to models whose input_modalities include them (providers.yaml): a clear 400
    instead of the provider's error. Requests without the bytes "image_url" skip the scan."""
    if b'"image_url"' not in call.raw or not has_image_part(call.body):
        return
    models = services.config.providers.models
    entry = models.get(plan.model)
    if entry is None or "image" in entry.input_modalities:
        return
    able = ", ".join(sorted(name for name, e in models.items() if "image" in e.input_modalities))
    routed = f" (chosen by routing rule '{plan.rule}')" if plan.rule and plan.model != \
        call.body.get("model") else ""
    raise InvalidRequest(f"Model '{plan.model}'{routed} does not accept images; models that do: "
                         f"{able or 'none'}.", param="messages", code="image_input_not_supported")


def describe_plan(call: Call, plan: Plan) -> None:
    if plan.rule:
        call.headers["x-meterline-route"] = plan.rule
    if plan.experiment:
        call.headers["x-meterline-experiment"] = plan.experiment
        call.headers["x-meterline-variant"] = plan.variant or ""


def answered_model(services: Services, plan: Plan, target: UpstreamTarget) -> str:
    """The public model (of the plan's chain) whose target answered."""
    pair = (target.provider_name, target.model)
    for model in plan.chain:
        if pair in services.config.providers.targets_for(model):
            return model
    return plan.model


def upstream_body(call: Call, target: UpstreamTarget, add_usage: bool) -> bytes:
    """The original bytes when nothing changed; re-encoded only if model or options differ."""
    if target.model == call.body.get("model") and not add_usage:
        return call.raw
    body = dict(call.body, model=target.model)
    if add_usage:
        body["stream_options"] = {**(call.body.get("stream_options") or {}), "include_usage": True}
    return orjson.dumps(body)


def refused_credential(target: UpstreamTarget, exc: ProxyError) -> ProxyError:
    """A provider's 401/403 is about the credential the proxy sent, not about the caller."""
    if isinstance(exc, UpstreamHTTPError) and exc.status in (401, 403):
        log.error("provider %s refused the proxy's credential from %s (HTTP %d)",
                  target.provider_name, target.credential_env or "(none)", exc.status)
        return UpstreamCredentialRefused(target.provider_name, exc.status)
    return exc


def as_failure(exc: ProxyError, retry_timeouts: bool = False) -> UpstreamFailure:
    if isinstance(exc, UpstreamCredentialRefused):  # the same key fails again: next provider
        failure = UpstreamFailure(exc.message, code=exc.code, retryable=False, fallback=True)
    elif isinstance(exc, UpstreamHTTPError):
        failure = UpstreamFailure(exc.message, status=exc.status, retry_after=exc.retry_after)
    elif isinstance(exc, UpstreamTimeout):  # the provider's timeout_s: same rule as the policy's
        failure = UpstreamFailure(exc.message, code=exc.code, retryable=retry_timeouts,
                                  fallback=True)
    else:
        failure = UpstreamFailure(exc.message, code=exc.code)
    failure.proxy_error = exc  # type: ignore[attr-defined]
    return failure


def final_error(exc: AllTargetsFailed | UpstreamFailure) -> ProxyError:
    last = exc.last if isinstance(exc, AllTargetsFailed) else exc
    original = getattr(last, "proxy_error", None)
    if isinstance(original, ProxyError):
        return original
    if last is not None and last.code == "timeout":
        return UpstreamTimeout(last.message)
    return UpstreamUnavailable(str(exc))


async def send(services: Services, call: Call, plan: Plan, request: Request,
               add_usage: bool) -> tuple[UpstreamTarget, aiohttp.ClientResponse, bytes | None]:
    """Try targets in order with retries; for streams return as soon as headers are in."""
    targets = services.targets(plan.chain, call.department)

    async def attempt(key: str) -> tuple[UpstreamTarget, aiohttp.ClientResponse, bytes | None]:
        target = targets[key]
        t0 = time.perf_counter()
        try:
            resp = await services.upstream.open(target, call.path,
                                                upstream_body(call, target, add_usage),
                                                call.inbound)
            data = None if call.stream else await services.upstream.read(target, resp)
        except ProxyError as exc:
            error = refused_credential(target, exc)
            services.metrics.record_upstream(target.provider_name, error.code or "error")
            raise as_failure(error, services.retry_policy.retry_timeouts) from None
        finally:
            call.upstream_s += time.perf_counter() - t0
        return target, resp, data  # the answered attempt is counted by accounting.settle_and_count

    policy: RetryPolicy = services.retry_policy
    try:
        done = await run_with_fallbacks(tuple(targets), attempt, policy, services.cooldowns)
    except AllTargetsFailed as exc:
        count_fallbacks(services, targets, exc.attempts)
        raise final_error(exc) from None
    except UpstreamFailure as exc:
        raise final_error(exc) from None
    retries = len(done.attempts) - 1
    if retries:
        services.metrics.record_retry(done.value[0].provider_name)
        count_fallbacks(services, targets, done.attempts)
    return done.value


def count_fallbacks(services: Services, targets: dict[str, UpstreamTarget],
                    attempts: tuple[AttemptLog, ...]) -> None:
    """meterline_fallbacks_total: each target the request left for the next one."""
    tried = list(dict.fromkeys(attempt.target for attempt in attempts))
    for key in tried[:-1]:
        services.metrics.record_fallback(targets[key].provider_name)


def upstream_step(services: Services, call: Call, plan: Plan) -> Any:
    """The upstream call's span (GenAI client span name); its name is built only when traced."""
    if services.tracing is None:
        return NULL
    return step(services.tracing, f"{OPERATIONS.get(call.endpoint, 'chat')} {plan.model}",
                **{"gen_ai.request.model": plan.model})


async def chat_completions(request: Request) -> Response:
    services = services_of(request)
    call = await open_call(services, request, "chat.completions", "/chat/completions")
    validate_chat(call.body, call.raw)
    return await run_call(services, call, request)


async def run_call(services: Services, call: Call, request: Request) -> Response:
    plan = plan_route(services, call, request)
    authorize(services, call, plan)
    check_inputs(services, call, plan)
    describe_plan(call, plan)
    call.record = new_record(call, call.body["model"])
    call.record.route_rule, call.record.experiment = plan.rule, plan.experiment
    call.record.variant = plan.variant
    call.record.task = services.config.task_label(call.inbound.get("x-meterline-task"))
    with step(services.tracing, "meterline.cache.probe"):
        probed = await accounting.cache_probe(services, call, plan.model)
    if probed is not None:  # an exact hit spends nothing: admitted without a hold
        with step(services.tracing, "meterline.budget.admit"):
            await accounting.admit_hit(services, call)
        cached = await accounting.cache_lookup(services, call, plan.model, probed)
        if cached is not None:
            return await accounting.serve_cached(services, call, None, cached)
        # the cache failed in between (logged, counted): the call is answered uncached, so it
        # is admitted again, with the hold an upstream call needs (its rate counted twice)
    with step(services.tracing, "meterline.budget.reserve"):
        reservation = await accounting.reserve(services, call, plan.model)
    try:
        with step(services.tracing, "meterline.cache.lookup"):
            cached = await accounting.cache_lookup(services, call, plan.model)
        if cached is not None:
            return await accounting.serve_cached(services, call, reservation, cached)
        add_usage = (call.stream and call.endpoint in ("chat.completions", "completions")
                     and not (call.body.get("stream_options") or {}).get("include_usage"))
        with upstream_step(services, call, plan):
            target, resp, data = await send(services, call, plan, request, add_usage)
    except BaseException:
        await accounting.release(services, reservation)
        accounting.end_flight(services, call)
        raise
    call.headers["x-meterline-provider"] = services.provider_label(target.provider_name)
    call.record.model_used, call.record.provider = target.model, target.provider_name
    answered = answered_model(services, plan, target)
    if answered != plan.model:  # a fallback model answered: never cache it as plan.model's
        accounting.answered_by(services, call, answered)
    if data is None:  # a stream lands its cache flight in `finish`, once stored
        return stream_response(services, call, reservation, target, resp, add_usage)
    try:
        return await accounting.settle_json(services, call, reservation, target, resp.status,
                                            data)
    finally:
        accounting.end_flight(services, call)


def stream_response(services: Services, call: Call, reservation: Any, target: UpstreamTarget,
                    resp: aiohttp.ClientResponse, strip_usage: bool) -> RelayResponse:
    async def finish(outcome: StreamOutcome) -> tuple[dict[str, Any], Callable[[], None]]:
        try:
            with step(services.tracing, "meterline.settle"):
                return await accounting.settle_stream(services, call, reservation, target,
                                                      outcome)
        finally:  # stored (or not): requests waiting for this answer look again
            accounting.end_flight(services, call)

    relay = SSERelay(resp, strip_usage=strip_usage, finish=finish, spawn=services.spawn,
                     provider=target.provider_name, raw=call.endpoint == "responses")
    call.headers["x-meterline-overhead-ms"] = f"{call.overhead_ms():.2f}"
    return RelayResponse(relay, 200, {**SSE_HEADERS, **call.headers})


async def passthrough(request: Request, endpoint: str, path: str) -> Response:
    """/v1/completions, /v1/embeddings, /v1/responses: same auth, accounting and errors."""
    services = services_of(request)
    call = await open_call(services, request, endpoint, path)
    validate_passthrough(call.body)
    return await run_call(services, call, request)


async def completions(request: Request) -> Response:
    return await passthrough(request, "completions", "/completions")


async def embeddings(request: Request) -> Response:
    return await passthrough(request, "embeddings", "/embeddings")


async def responses(request: Request) -> Response:
    return await passthrough(request, "responses", "/responses")


async def list_models(request: Request) -> Response:
    services = services_of(request)
    request_id_of(request)
    principal = await authenticate(request, services)
    dept = services.department(principal.department)
    data = [
        {"id": name, "object": "model", "created": 0, "owned_by": entry.owned_by,
         "input_modalities": list(entry.input_modalities)}
        for name, entry in services.config.providers.models.items()
        if principal.admin or dept is None or dept.allows(name)
    ]
    return Response(orjson.dumps({"object": "list", "data": data}),
                    media_type="application/json")
