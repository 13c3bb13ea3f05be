"""HTTP endpoints for routing and experiments; the logic lives in routing, experiments,
experiment_stats and experiment_report.

    POST /admin/route/explain              the decision for a body, without calling upstream
    GET  /admin/experiments                experiments with live status and request counts
    GET  /admin/experiments/{name}         counts, means, intervals and a verdict per arm
    GET  /admin/experiments/{name}/export  MODEL_AB_TESTS rows as CSV or JSON
    GET  /admin/recommendations            proposed YAML changes (never applied)
    POST /v1/feedback                      a quality score in [0, 1] for one request
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from proxy.errors import InvalidRequest, NotFound
from proxy.gateway.requests import authenticate, read_json_body, request_id_of, validate_chat
from proxy.http import json_response, number_param, require_admin
from proxy.keys.store import Principal
from proxy.routing import experiment_report as report
from proxy.routing.experiment_stats import (
    ab_rows,
    auto_split,
    recommend_arms,
    rows_to_csv,
    rows_to_json,
    summarize_arms,
)
from proxy.routing.experiments import Experiment, assign, control_arm, plan_targets
from proxy.routing.experiments import explain as explain_experiments
from proxy.routing.rules import DEFAULT_RULE, RouteDecision, RouteInput, RoutingRules, select_route
from proxy.runtime.services import Services
from proxy.spend.records import UsageRecord
from proxy.spend.rollups import ArmSlice

MAX_COMMENT_CHARS = 2000


# ---- parameters ----------------------------------------------------------------------------

def float_param(request: Request, name: str, default: float, low: float, high: float) -> float:
    return number_param(request.query_params, name, default, low, high)


def optional_str(body: dict[str, Any], name: str) -> str | None:
    value = body.pop(name, None)
    if value is not None and (not isinstance(value, str) or not value):
        raise InvalidRequest(f"Invalid type for '{name}': expected a non-empty string.",
                             param=name, code="invalid_type")
    return value


def header_map(body: dict[str, Any]) -> dict[str, str]:
    value = body.pop("headers", None) or {}
    if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise InvalidRequest("Invalid 'headers': expected an object of string values.",
                             param="headers", code="invalid_type")
    return {k.lower(): v for k, v in value.items()}


# ---- explain -------------------------------------------------------------------------------

def targets_json(services: Services, chain: tuple[str, ...]) -> list[dict[str, Any]]:
    out = []
    for model in chain:
        for provider, upstream in services.config.providers.targets_for(model):
            key = f"{provider}/{upstream}"
            out.append({"model": model, "provider": provider, "upstream_model": upstream,
                        "key": key, "timeout_s": services.retry_policy.timeout_for(key),
                        "breaker": services.cooldowns.state(key)})
    return out


def authorization(services: Services, department: str | None, requested: str,
                  chain: tuple[str, ...]) -> dict[str, Any]:
    """What the pipeline's authorize step would say (404 unknown model, 403 not allowed)."""
    if requested not in services.config.providers.models or not any(
            services.config.providers.targets_for(m) for m in chain):
        return {"allowed": False, "status": 404, "reason": f"unknown model '{requested}'"}
    dept = services.department(department)
    if dept is not None and not dept.allows(requested):
        return {"allowed": False, "status": 403,
                "reason": f"department '{department}' may not use model '{requested}'"}
    return {"allowed": True, "status": 200, "reason": None}


def route_input(services: Services, body: dict[str, Any], principal: Principal) -> RouteInput:
    department = optional_str(body, "department")
    headers = header_map(body)
    key_id = optional_str(body, "key_id") or principal.key_id
    validate_chat(body)
    if department is not None and services.department(department) is None:
        raise InvalidRequest(f"Unknown department '{department}'.", param="department",
                             code="unknown_department")
    return RouteInput.from_request(body, department or "", headers, key_id)


async def explain_route(request: Request) -> Response:
    """The decision the pipeline would make for this body; nothing is sent upstream."""
    services, principal = await require_admin(request)
    _, body = await read_json_body(request, services.settings.max_body_bytes)
    inp = route_input(services, body, principal)
    config, now = services.config, time.time()
    decision = RouteDecision(DEFAULT_RULE, inp.model, (), ())
    assignment = None
    if config.routing is not None:  # as in pipeline.plan_route: no routing, no experiments
        decision = select_route(config.routing, inp)
        assignment = assign(config.experiments, inp, now) if config.experiments else None
    department = inp.department or None
    if assignment is not None and not services.enrollable(department, assignment.experiment):
        assignment = None
    planned = plan_targets(decision, assignment)
    chain = services.allowed_chain(department, planned)  # as pipeline.authorize
    if not chain:
        chain, decision = (inp.model,), RouteDecision(DEFAULT_RULE, inp.model, (),
                                                      decision.explanation)
    headers = {"x-meterline-route": decision.rule} if config.routing is not None else {}
    if assignment is not None:
        headers.update({"x-meterline-experiment": assignment.experiment,
                        "x-meterline-variant": assignment.variant})
    return json_response({
        "config_version": config.version,
        "input": {"model": inp.model, "department": inp.department or None, "task": inp.task,
                  "user": inp.user, "prompt_tokens": inp.prompt_tokens, "tools": inp.tools},
        **decision.to_dict(),
        "model": chain[0],
        "experiment": None if assignment is None else {
            "name": assignment.experiment, "variant": assignment.variant,
            "model": assignment.model, "bucket": round(assignment.bucket, 6)},
        "experiments": explain_experiments(config.experiments, inp, now)
        if config.experiments is not None and config.routing is not None else [],
        "chain": list(chain),
        "targets": targets_json(services, chain),
        "authorization": authorization(services, department, inp.model, planned),
        "response_headers": headers,
    })


# ---- experiments ---------------------------------------------------------------------------

def configured(services: Services, name: str) -> Experiment | None:
    experiments = services.config.experiments
    return experiments.experiments.get(name) if experiments is not None else None


def known_experiment(name: str, experiment: Experiment | None, seen: bool) -> None:
    if experiment is None and not seen:
        raise NotFound(f"No experiment named '{name}' is configured or has records.",
                       param="name", code="experiment_not_found")


async def experiment_records(request: Request, services: Services,
                             days: float) -> tuple[str, Experiment | None, list[UsageRecord]]:
    """The experiment's raw records (for the export only)."""
    name = request.path_params["name"]
    experiment = configured(services, name)
    records = [r for r in await report.load_records(services, days) if r.experiment == name]
    known_experiment(name, experiment, bool(records))
    return name, experiment, records


async def experiment_arms(request: Request, services: Services,
                          days: float) -> tuple[str, Experiment | None, list[ArmSlice]]:
    name = request.path_params["name"]
    experiment = configured(services, name)
    slices = [p for p in await report.load_arms(services, days) if p.experiment == name]
    known_experiment(name, experiment, any(p.requests for p in slices))
    return name, experiment, slices


async def list_experiments(request: Request) -> Response:
    services, _ = await require_admin(request)
    days = float_param(request, "days", 30.0, 0.001, 400.0)
    slices = await report.load_arms(services, days)
    return json_response({"object": "list",
                          "data": report.listing_json(services.config.experiments, slices, days)})


async def experiment_results(request: Request) -> Response:
    services, _ = await require_admin(request)
    days = float_param(request, "days", 30.0, 0.001, 400.0)
    confidence = float_param(request, "confidence", 0.95, 0.5, 0.999)
    margin = float_param(request, "margin", 0.02, 0.0, 1.0)
    name, experiment, slices = await experiment_arms(request, services, days)
    control = control_arm(experiment) if experiment is not None else "control"
    # a month of arm statistics: tens of ms of Python, kept off the event loop
    result = await asyncio.to_thread(summarize_arms, slices, name, control, confidence, margin)
    return json_response(report.result_json(result, experiment, control, confidence, days))


async def export_experiment(request: Request) -> Response:
    services, _ = await require_admin(request)
    fmt = request.query_params.get("format", "csv")
    if fmt not in ("csv", "json"):
        raise InvalidRequest(f"Invalid 'format': expected 'csv' or 'json', got '{fmt}'.",
                             param="format", code="invalid_value")
    days = float_param(request, "days", 30.0, 0.001, 400.0)
    name, _, records = await experiment_records(request, services, days)
    rows = ab_rows(records, name)
    disposition = {"content-disposition": f'attachment; filename="{name}.{fmt}"'}
    if fmt == "json":
        return Response(rows_to_json(rows), headers=disposition, media_type="application/json")
    return Response(rows_to_csv(rows), headers=disposition, media_type="text/csv")


async def recommendations(request: Request) -> Response:
    """Cheaper routes with no measurable quality loss, and where auto split would move splits."""
    services, _ = await require_admin(request)
    days = float_param(request, "days", 7.0, 0.001, 400.0)
    min_n = int(float_param(request, "min_n", 30, 2, 1_000_000))
    margin = float_param(request, "margin", 0.02, 0.0, 1.0)
    confidence = float_param(request, "confidence", 0.95, 0.5, 0.999)
    slices = await report.load_arms(services, days, "d")
    rules = services.config.routing or RoutingRules()
    experiments = services.config.experiments
    auto = [e for e in experiments.experiments.values() if e.auto.enabled] \
        if experiments is not None else []

    def compute() -> dict[str, Any]:
        recs = recommend_arms(slices, rules, min_n, margin, confidence)
        splits = [report.split_json(auto_split(experiment, summarize_arms(
            slices, experiment.name, control_arm(experiment), confidence, margin)))
            for experiment in auto]
        return {"applied": False, "window_days": days,
                "records": sum(p.requests for p in slices),
                "recommendations": [report.recommendation_json(r) for r in recs],
                "auto_split": splits}

    # a week of arms per day for every task and rule: ~100-400 ms of statistics (the 1M-record
    # benchmark, docs/benchmarks.md), which on the event loop held every request that long;
    # in a thread the loop keeps serving between the thread's GIL slices
    return json_response(await asyncio.to_thread(compute))


# ---- feedback ------------------------------------------------------------------------------

def parse_feedback(body: dict[str, Any]) -> tuple[str, float, str | None]:
    rid = body.get("request_id")
    if not isinstance(rid, str) or not rid:
        raise InvalidRequest("Missing or invalid 'request_id': expected the "
                             "x-meterline-request-id of a response.", param="request_id",
                             code="invalid_value")
    score = body.get("score")
    if isinstance(score, bool) or not isinstance(score, int | float) \
            or not 0 <= score <= 1:  # nan fails the range check too
        raise InvalidRequest(f"Invalid 'score': expected a number from 0 to 1, got {score!r}.",
                             param="score", code="invalid_value")
    comment = body.get("comment")
    if comment is not None and (not isinstance(comment, str) or len(comment) > MAX_COMMENT_CHARS):
        raise InvalidRequest(f"Invalid 'comment': expected a string of at most "
                             f"{MAX_COMMENT_CHARS} characters.", param="comment",
                             code="invalid_value")
    return rid, float(score), comment


async def find_record(services: Services, request_id: str) -> UsageRecord | None:
    if services.spend is not None:
        record: UsageRecord | None = await services.spend.get_record(request_id)
        return record
    return None


async def store_feedback(services: Services, rid: str, score: float, comment: str | None) -> bool:
    if services.spend is not None:
        stored: bool = await services.spend.set_feedback(rid, score, comment)
        return stored
    return False


async def feedback(request: Request) -> Response:
    """Any inbound key; a department key may only rate its own department's requests (others
    look unknown, so request ids of other departments are not disclosed)."""
    services: Services = request.app.state.services
    request_id_of(request)
    principal = await authenticate(request, services)
    _, body = await read_json_body(request, services.settings.max_body_bytes)
    rid, score, comment = parse_feedback(body)
    record = await find_record(services, rid)
    foreign = record is not None and not principal.admin \
        and record.department != principal.department
    if record is None or foreign or not await store_feedback(services, rid, score, comment):
        raise NotFound(f"No request with id '{rid}' is known to this proxy.",
                       param="request_id", code="request_not_found")
    if record.experiment and record.variant:
        services.metrics.record_quality(record.experiment, record.variant, score)
    return json_response({"object": "feedback", "request_id": rid, "score": score,
                          "experiment": record.experiment, "variant": record.variant})


def routes() -> list[BaseRoute]:
    return [
        Route("/admin/route/explain", explain_route, methods=["POST"]),
        Route("/admin/experiments", list_experiments, methods=["GET"]),
        Route("/admin/experiments/{name}", experiment_results, methods=["GET"]),
        Route("/admin/experiments/{name}/export", export_experiment, methods=["GET"]),
        Route("/admin/recommendations", recommendations, methods=["GET"]),
        Route("/v1/feedback", feedback, methods=["POST"]),
    ]
