"""Every Prometheus metric Meterline exports, defined once.

Nothing else in the project imports ``prometheus_client``: the proxy records through the
verb-named methods of :class:`Metrics` with plain values. Label values are bounded: departments,
models, providers, experiments and routing rules come from config via :meth:`Metrics.set_known`;
anything else is recorded as ``"other"``. Closed sets (directions, cache kinds, ...) are checked
against the constants below.

Multi-worker mode: when ``PROMETHEUS_MULTIPROC_DIR`` is set *before* ``prometheus_client`` is
first imported, values live in per-process files in that directory and :meth:`Metrics.render`
aggregates them with a ``MultiProcessCollector``. The start command wipes that directory.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
    values,
)

from proxy.memo import BoundedMemo

OTHER = "other"
NONE = "none"
DEFAULT_ROUTES = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/models")
DIRECTIONS = ("input", "output", "cached_input")
CACHE_FAILURE_STAGES = ("lookup", "store", "bookkeeping")
CACHE_KINDS = ("exact", "semantic", "none")
CACHE_RESULTS = ("hit", "miss", "bypass", "shadow")
CACHE_SCOPE_KINDS = ("global", "department", "user")
# what the LLM judge of a borderline candidate came to (proxy/cache/judge.py): a verdict, a failed
# call, or no call ("refused": budget or allow-list; "vetoed": the guards found a changed number)
CACHE_JUDGE_OUTCOMES = ("same", "different", "timeout", "error", "garbled", "refused", "vetoed")
JUDGE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5)
BUDGET_PERIODS = ("day", "month")
REJECT_REASONS = ("budget_exhausted", "rate_limited", "model_not_allowed")
# ProxyError codes raised by the upstream client.
UPSTREAM_ERROR_KINDS = ("timeout", "upstream_unavailable", "upstream_error", "rate_limit_exceeded",
                        "upstream_credential_refused")
# The MCP servers' tools (`meterline mcp ...`) and how a call ended.
MCP_TOOLS = ("get_project_quality", "find_security_issues", "suggest_fixes", "list_projects")
MCP_OUTCOMES = ("ok", "invalid_input", "auth_failed", "not_found", "rate_limited", "timeout",
                "unavailable", "sonarqube_error", "llm_error", "error")

MCP_TOOL_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300)
OVERHEAD_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1)
TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60)
QUALITY_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


class InFlight:
    """The in-flight request count as a context manager. A plain int read by the gauge at
    scrape time; in multiprocess mode (values in files) the gauge itself is moved. A
    @contextmanager with gauge.inc()/dec() cost 5-12 us per request (timeit on the loaded shared
    host, 2026-12-05; 2-5 % of a chat request's CPU), this 0.7-0.8 us in the same runs."""

    __slots__ = ("count", "gauge")

    def __init__(self, gauge: Gauge | None) -> None:
        self.count = 0
        self.gauge = gauge

    def current(self) -> float:
        return float(self.count)

    def __enter__(self) -> None:
        self.count += 1
        if self.gauge is not None:
            self.gauge.inc()

    def __exit__(self, *_: object) -> None:
        self.count -= 1
        if self.gauge is not None:
            self.gauge.dec()


def multiprocess_enabled() -> bool:
    """True when prometheus_client chose file-backed values (the env var was set at import)."""
    return values.ValueClass is not values.MutexValue


def mark_process_dead(pid: int) -> None:
    """Drop a dead worker's live gauges (call from the process manager's child-exit hook)."""
    multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


def status_class(status: int) -> str:
    """HTTP status -> "2xx" .. "5xx" (bounded)."""
    return f"{status // 100}xx" if 100 <= status < 600 else OTHER


def _bounded(value: str | None, allowed: Iterable[str]) -> str:
    if value is None or value == "":
        return NONE
    return value if value in allowed else OTHER


def _package_version() -> str:
    try:
        return importlib.metadata.version("meterline")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class Metrics:
    """The proxy's metrics, registered on one registry per app.

    ``registry`` is where metrics are registered (a fresh one by default). In multiprocess
    mode the metric objects stay unregistered and ``registry`` instead holds a
    ``MultiProcessCollector`` that reads every worker's files.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        multiprocess_dir: str | None = None,
        build_version: str | None = None,
    ) -> None:
        # *_created series double the series count and do not exist in multiprocess mode;
        # the switch is process-wide and idempotent.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = registry if registry is not None else CollectorRegistry()
        self.multiprocess = multiprocess_enabled()
        target: CollectorRegistry | None = self.registry
        if self.multiprocess:
            multiprocess.MultiProcessCollector(  # type: ignore[no-untyped-call]
                self.registry, path=multiprocess_dir)
            target = None
        self._departments: frozenset[str] = frozenset()
        self._models: frozenset[str] = frozenset()
        self._providers: frozenset[str] = frozenset()
        self._experiments: dict[str, frozenset[str]] = {}
        self._rules: frozenset[str] = frozenset()
        self._routes: frozenset[str] = frozenset(DEFAULT_ROUTES)
        self._config_version: str | None = None
        self._children: dict[tuple[object, ...], Any] = {}
        # per-request series by raw (unmapped) arguments; cleared when the label sets change
        # raw model names come from requests: bounded
        self._series: BoundedMemo[tuple[object, ...], tuple[Any, ...]] = BoundedMemo()
        self._pending_budgets: dict[tuple[str | None, str], tuple[float, float]] = {}
        self._define_traffic(target)
        self._define_spend(target)
        self._define_cache(target)
        self._define_experiments(target)
        self._define_budget(target)
        self._define_upstream(target)
        self._define_process(target)
        self._define_mcp(target)
        self._labels(self._build_info, version=build_version or _package_version()).set(1)

    # -- definitions -------------------------------------------------------------------------

    def _define_traffic(self, r: CollectorRegistry | None) -> None:
        self._requests = Counter(
            "meterline_requests_total", "Requests answered by the proxy.",
            ["route", "model", "department", "status_class"], registry=r)
        self._duration = Histogram(
            "meterline_request_duration_seconds", "Time from request received to response end.",
            ["route", "model"], buckets=DURATION_BUCKETS, registry=r)
        self._overhead = Histogram(
            "meterline_overhead_seconds", "Proxy time minus upstream time per request.",
            buckets=OVERHEAD_BUCKETS, registry=r)
        self._ttft = Histogram(
            "meterline_time_to_first_token_seconds", "Time to the first streamed token.",
            ["model"], buckets=TTFT_BUCKETS, registry=r)
        self._inflight = Gauge(
            "meterline_inflight_requests", "Requests being processed now.",
            registry=r, multiprocess_mode="livesum")
        self._inflight_requests = InFlight(self._inflight if self.multiprocess else None)
        if not self.multiprocess:  # read at scrape time: no gauge update per request
            self._inflight.set_function(self._inflight_requests.current)

    def _define_spend(self, r: CollectorRegistry | None) -> None:
        self._tokens = Counter(
            "meterline_tokens_total", "Tokens billed, by direction.",
            ["department", "model", "direction"], registry=r)
        self._cost = Counter(
            "meterline_cost_dollars_total", "Spend in US dollars.",
            ["department", "model"], registry=r)
        self._cost_estimated = Counter(
            "meterline_cost_estimated_total", "Requests whose cost was estimated, not reported.",
            ["department", "model"], registry=r)
        self._unpriced = Counter(
            "meterline_unpriced_requests_total", "Requests for a model without a price.",
            ["model"], registry=r)
        self._route_decisions = Counter(
            "meterline_route_decisions_total", "Routing rule matches, by target model.",
            ["rule", "target_model"], registry=r)
        self._routing_saved = Counter(
            "meterline_routing_saved_dollars_total", "Dollars saved by routing to a cheaper model.",
            ["department"], registry=r)

    def _define_cache(self, r: CollectorRegistry | None) -> None:
        self._cache_requests = Counter(
            "meterline_cache_requests_total", "Cache lookups by kind and result.",
            ["department", "model", "kind", "result"], registry=r)
        self._cache_saved = Counter(
            "meterline_cache_saved_dollars_total", "Dollars not spent thanks to cache hits.",
            ["department"], registry=r)
        self._cache_entries = Gauge(
            "meterline_cache_entries", "Entries stored in the cache.",
            ["scope_kind"], registry=r, multiprocess_mode="mostrecent")
        self._false_hits = Counter(
            "meterline_cache_false_hit_reports_total", "Users reporting a wrong cached answer.",
            ["department"], registry=r)
        self._cache_failures = Counter(
            "meterline_cache_failures_total",
            "Cache errors the request was answered through (served uncached, not stored, or "
            "a batch of hit bookkeeping not written).",
            ["stage"], registry=r)
        self._cache_judge = Counter(
            "meterline_cache_judge_decisions_total",
            "Borderline semantic candidates the LLM judge was asked about, by outcome.",
            ["department", "outcome"], registry=r)
        self._cache_judge_cost = Counter(
            "meterline_cache_judge_cost_dollars_total",
            "Spend on LLM judge calls (also in meterline_cost_dollars_total).",
            ["department"], registry=r)
        self._cache_judge_duration = Histogram(
            "meterline_cache_judge_duration_seconds",
            "Time a lookup waited for the LLM judge.", buckets=JUDGE_BUCKETS, registry=r)

    def _define_experiments(self, r: CollectorRegistry | None) -> None:
        self._exp_requests = Counter(
            "meterline_experiment_requests_total", "Requests assigned to an experiment variant.",
            ["experiment", "variant"], registry=r)
        self._exp_cost = Counter(
            "meterline_experiment_cost_dollars_total", "Spend per experiment variant.",
            ["experiment", "variant"], registry=r)
        self._exp_duration = Histogram(
            "meterline_experiment_duration_seconds", "Request duration per experiment variant.",
            ["experiment", "variant"], buckets=DURATION_BUCKETS, registry=r)
        self._exp_quality = Histogram(
            "meterline_experiment_quality_score", "Quality score in [0, 1] per variant.",
            ["experiment", "variant"], buckets=QUALITY_BUCKETS, registry=r)

    def _define_budget(self, r: CollectorRegistry | None) -> None:
        self._budget_remaining = Gauge(
            "meterline_budget_remaining_dollars", "Budget left in the current period.",
            ["department", "period"], registry=r, multiprocess_mode="mostrecent")
        self._budget_limit = Gauge(
            "meterline_budget_limit_dollars", "Budget limit for the period.",
            ["department", "period"], registry=r, multiprocess_mode="mostrecent")
        self._budget_rejections = Counter(
            "meterline_budget_rejections_total", "Requests refused by budget or rate limits.",
            ["department", "reason"], registry=r)

    def _define_upstream(self, r: CollectorRegistry | None) -> None:
        self._upstream_requests = Counter(
            "meterline_upstream_requests_total", "Upstream attempts, retries included.",
            ["provider"], registry=r)
        self._upstream_errors = Counter(
            "meterline_upstream_errors_total", "Failed upstream attempts by kind.",
            ["provider", "kind"], registry=r)
        self._retries = Counter(
            "meterline_upstream_retries_total", "Upstream retries.", ["provider"], registry=r)
        self._fallbacks = Counter(
            "meterline_fallbacks_total", "Requests that fell back away from a provider.",
            ["provider"], registry=r)

    def _define_process(self, r: CollectorRegistry | None) -> None:
        self._backlog = Gauge(
            "meterline_spend_backlog_records", "Spend records waiting to be written.",
            registry=r, multiprocess_mode="livesum")
        self._config_info = Gauge(
            "meterline_config_info", "Loaded rules version (value is always 1).",
            ["version"], registry=r, multiprocess_mode="livemax")
        self._build_info = Gauge(
            "meterline_build_info", "Meterline build (value is always 1).",
            ["version"], registry=r, multiprocess_mode="max")

    def _define_mcp(self, r: CollectorRegistry | None) -> None:
        self._mcp_calls = Counter(
            "meterline_mcp_tool_calls_total", "MCP tool calls by tool and outcome.",
            ["tool", "outcome"], registry=r)
        self._mcp_duration = Histogram(
            "meterline_mcp_tool_duration_seconds", "Time to answer an MCP tool call.",
            ["tool"], buckets=MCP_TOOL_BUCKETS, registry=r)

    # -- label mapping -----------------------------------------------------------------------

    def _labels(self, metric: Any, **labels: str) -> Any:
        """`metric.labels(**labels)`, memoised: label sets are bounded, and prometheus_client's
        own lookup (kwargs, validation, lock) costs more than the increment on the hot path."""
        key = (id(metric), *labels.values())
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(**labels)
        return child

    def set_known(
        self,
        departments: Iterable[str],
        models: Iterable[str],
        *,
        providers: Iterable[str] = (),
        experiments: Mapping[str, Iterable[str]] | None = None,
        routing_rules: Iterable[str] = (),
        routes: Iterable[str] | None = None,
    ) -> None:
        """Declare the configured label values and pre-create their series at zero."""
        self._series.clear()
        self._departments = frozenset(departments)
        self._models = frozenset(models)
        self._providers = frozenset(providers)
        self._experiments = {k: frozenset(v) for k, v in (experiments or {}).items()}
        self._rules = frozenset(routing_rules)
        if routes is not None:
            self._routes = frozenset(routes)
        self._precreate()

    def label_model(self, model: str | None) -> str:
        return _bounded(model, self._models)

    def label_department(self, department: str | None) -> str:
        return _bounded(department, self._departments)

    def label_provider(self, provider: str | None) -> str:
        return _bounded(provider, self._providers)

    def label_variant(self, experiment: str, variant: str) -> tuple[str, str]:
        if experiment not in self._experiments:
            return OTHER, OTHER
        return experiment, _bounded(variant, self._experiments[experiment])

    def _precreate(self) -> None:
        for dept in self._departments:
            self._precreate_department(dept)
        for model in self._models:
            self._labels(self._unpriced, model=model)
            self._labels(self._ttft, model=model)
        for provider in self._providers:
            self._labels(self._upstream_requests, provider=provider)
            self._labels(self._retries, provider=provider)
            self._labels(self._fallbacks, provider=provider)
        for experiment, variants in self._experiments.items():
            for variant in variants:
                self._labels(self._exp_requests, experiment=experiment, variant=variant)
                self._labels(self._exp_cost, experiment=experiment, variant=variant)
        for stage in CACHE_FAILURE_STAGES:
            self._labels(self._cache_failures, stage=stage)

    def _precreate_department(self, dept: str) -> None:
        for model in self._models:
            self._labels(self._cost, department=dept, model=model)
            self._labels(self._cost_estimated, department=dept, model=model)
            for direction in DIRECTIONS:
                self._labels(self._tokens, department=dept, model=model, direction=direction)
            for kind in ("exact", "semantic"):
                for result in ("hit", "miss"):
                    self._labels(self._cache_requests, 
                        department=dept, model=model, kind=kind, result=result)
        self._labels(self._cache_saved, department=dept)
        self._labels(self._cache_judge_cost, department=dept)
        for outcome in ("same", "different"):
            self._labels(self._cache_judge, department=dept, outcome=outcome)
        self._labels(self._routing_saved, department=dept)
        self._labels(self._false_hits, department=dept)

    # -- recording ---------------------------------------------------------------------------

    def record_request(
        self,
        route: str,
        model: str | None,
        department: str | None,
        status: int,
        duration_seconds: float,
        upstream_seconds: float | None = None,
    ) -> None:
        """One answered request; ``upstream_seconds`` is None when no upstream call was made."""
        key = ("request", route, model, department, status)
        series = self._series.get(key) or self._request_series(key, route, model, department,
                                                                 status)
        series[0].inc()
        series[1].observe(duration_seconds)
        self._overhead.observe(max(0.0, duration_seconds - (upstream_seconds or 0.0)))

    def _request_series(
        self, key: tuple[object, ...], route: str, model: str | None, department: str | None,
        status: int,
    ) -> tuple[Any, ...]:  # fmt: skip
        route_label, model_label = _bounded(route, self._routes), self.label_model(model)
        requests = self._labels(self._requests,
            route=route_label, model=model_label,
            department=self.label_department(department), status_class=status_class(status))
        duration = self._labels(self._duration, route=route_label, model=model_label)
        return self._remember(key, (requests, duration))

    def _remember(self, key: tuple[object, ...], series: tuple[Any, ...]) -> tuple[Any, ...]:
        return self._series.put(key, series)

    def record_first_token(self, model: str | None, seconds: float) -> None:
        self._labels(self._ttft, model=self.label_model(model)).observe(seconds)

    def record_usage(
        self,
        department: str | None,
        model: str | None,
        input_tokens: int,
        output_tokens: int,
        cached_input_tokens: int = 0,
    ) -> None:
        """Billed tokens; ``input_tokens`` excludes the cached part."""
        key = ("tokens", department, model)
        series = self._series.get(key)
        if series is None:
            dept, model_label = self.label_department(department), self.label_model(model)
            series = self._remember(key, tuple(
                self._labels(self._tokens, department=dept, model=model_label, direction=d)
                for d in DIRECTIONS))
        counts = (input_tokens, output_tokens, cached_input_tokens)
        for child, count in zip(series, counts, strict=True):
            if count > 0:
                child.inc(count)

    def record_cost(
        self, department: str | None, model: str | None, dollars: float,
        *, estimated: bool = False, priced: bool = True,
    ) -> None:
        """Spend of one request. ``priced=False``: the model has no price and ``dollars`` came
        from the default price; it is counted as spend and as an unpriced request."""
        if not priced:
            self._labels(self._unpriced, model=self.label_model(model)).inc()
        key = ("cost", department, model)
        series = self._series.get(key)
        if series is None:
            dept, model_label = self.label_department(department), self.label_model(model)
            series = self._remember(key, (
                self._labels(self._cost, department=dept, model=model_label),
                self._labels(self._cost_estimated, department=dept, model=model_label)))
        series[0].inc(dollars)
        if estimated:
            series[1].inc()

    def record_cache(
        self, department: str | None, model: str | None, kind: str, result: str,
        saved_dollars: float = 0.0,
    ) -> None:
        """One cache lookup; ``saved_dollars`` is the upstream cost a hit avoided."""
        key = ("cache", department, model, kind, result)
        series = self._series.get(key)
        if series is None:
            dept = self.label_department(department)
            series = self._remember(key, (
                self._labels(self._cache_requests, department=dept,
                             model=self.label_model(model), kind=_bounded(kind, CACHE_KINDS),
                             result=_bounded(result, CACHE_RESULTS)),
                self._labels(self._cache_saved, department=dept)))
        series[0].inc()
        if saved_dollars > 0:
            series[1].inc(saved_dollars)

    def record_cache_failure(self, stage: str) -> None:
        """A cache error the request went on without (lookup: served uncached; store: the
        answer was not cached; bookkeeping: a batch of hit counts / counters not written)."""
        self._labels(self._cache_failures, stage=_bounded(stage, CACHE_FAILURE_STAGES)).inc()

    def record_cache_judge(self, department: str | None, outcome: str, dollars: float,
                           seconds: float | None) -> None:
        """One borderline candidate put to the LLM judge (``seconds`` None: no call made)."""
        dept = self.label_department(department)
        self._labels(self._cache_judge, department=dept,
                     outcome=_bounded(outcome, CACHE_JUDGE_OUTCOMES)).inc()
        if dollars > 0:
            self._labels(self._cache_judge_cost, department=dept).inc(dollars)
        if seconds is not None:
            self._cache_judge_duration.observe(seconds)

    def set_cache_entries(self, scope_kind: str, entries: int) -> None:
        kind = _bounded(scope_kind, CACHE_SCOPE_KINDS)
        self._labels(self._cache_entries, scope_kind=kind).set(entries)

    def record_false_hit(self, department: str | None) -> None:
        self._labels(self._false_hits, department=self.label_department(department)).inc()

    def record_experiment(
        self, experiment: str, variant: str, cost_dollars: float = 0.0,
        duration_seconds: float | None = None,
    ) -> None:
        """One request served by an experiment variant (cost and duration when known)."""
        exp, var = self.label_variant(experiment, variant)
        self._labels(self._exp_requests, experiment=exp, variant=var).inc()
        if cost_dollars > 0:
            self._labels(self._exp_cost, experiment=exp, variant=var).inc(cost_dollars)
        if duration_seconds is not None:
            self._labels(self._exp_duration, experiment=exp, variant=var).observe(duration_seconds)

    def record_quality(self, experiment: str, variant: str, score: float) -> None:
        exp, var = self.label_variant(experiment, variant)
        self._labels(self._exp_quality, experiment=exp, variant=var).observe(score)

    def record_route_decision(
        self, rule: str, target_model: str | None, department: str | None = None,
        saved_dollars: float = 0.0,
    ) -> None:
        key = ("route", rule, target_model)
        child = self._series.get(key)
        if child is None:
            child = self._remember(key, (self._labels(
                self._route_decisions, rule=_bounded(rule, self._rules),
                target_model=self.label_model(target_model)),))
        child[0].inc()
        if saved_dollars > 0:
            self._labels(self._routing_saved, department=self.label_department(department)).inc(
                saved_dollars)

    def set_budget(
        self, department: str | None, period: str, remaining_dollars: float, limit_dollars: float,
    ) -> None:
        """Every settlement reports its budget; the gauges only need the latest value at
        exposition, so it is kept here and written by `flush_budgets` (on render and once a
        second from the spend store's loop) instead of twice per request."""
        self._pending_budgets[(department, period)] = (remaining_dollars, limit_dollars)

    def flush_budgets(self) -> None:
        pending, self._pending_budgets = self._pending_budgets, {}
        for (department, period), (remaining, limit) in pending.items():
            labels = {"department": self.label_department(department),
                      "period": _bounded(period, BUDGET_PERIODS)}
            self._labels(self._budget_remaining, **labels).set(remaining)
            self._labels(self._budget_limit, **labels).set(limit)

    def record_budget_rejection(self, department: str | None, reason: str) -> None:
        self._labels(self._budget_rejections, 
            department=self.label_department(department),
            reason=_bounded(reason, REJECT_REASONS)).inc()

    def record_upstream(self, provider: str | None, error_kind: str | None = None) -> None:
        """One upstream attempt; ``error_kind`` (see UPSTREAM_ERROR_KINDS) when it failed."""
        key = ("upstream", provider)
        series = self._series.get(key)
        if series is None:
            series = self._remember(key, (self._labels(
                self._upstream_requests, provider=self.label_provider(provider)),))
        series[0].inc()
        if error_kind is not None:
            label = self.label_provider(provider)
            self._labels(self._upstream_errors, 
                provider=label, kind=_bounded(error_kind, UPSTREAM_ERROR_KINDS)).inc()

    def precreate_mcp_tools(self) -> None:
        """Zero series for every MCP tool, so "calls per day" starts at 0 rather than absent."""
        for tool in MCP_TOOLS:
            self._labels(self._mcp_calls, tool=tool, outcome="ok")
            self._labels(self._mcp_duration, tool=tool)

    def record_tool_call(self, tool: str, outcome: str, duration_seconds: float) -> None:
        """One MCP tool call; unknown tool names (a client's typo) are recorded as "other"."""
        label = _bounded(tool, MCP_TOOLS)
        self._labels(self._mcp_calls, tool=label, outcome=_bounded(outcome, MCP_OUTCOMES)).inc()
        self._labels(self._mcp_duration, tool=label).observe(duration_seconds)

    def record_retry(self, provider: str | None) -> None:
        self._labels(self._retries, provider=self.label_provider(provider)).inc()

    def record_fallback(self, provider: str | None) -> None:
        """A request left ``provider`` for the next target."""
        self._labels(self._fallbacks, provider=self.label_provider(provider)).inc()

    def set_spend_backlog(self, records: int) -> None:
        """Called once a second by the spend store: also the moment budget gauges are written
        (in multiprocess mode each worker's files must be current without a scrape of it)."""
        self._backlog.set(records)
        self.flush_budgets()

    def set_config_version(self, version: str) -> None:
        """Mark ``version`` as the loaded rules; the previous version's series is removed."""
        old = self._config_version
        if old is not None and old != version:
            # multiprocess files keep the series, so it is zeroed as well as removed
            self._labels(self._config_info, version=old).set(0)
            if not self.multiprocess:
                self._config_info.remove(old)
                self._children.pop((id(self._config_info), old), None)
        self._config_version = version
        self._labels(self._config_info, version=version).set(1)

    def inflight(self) -> InFlight:
        """`with metrics.inflight():` counts a request as in flight for the block."""
        return self._inflight_requests

    # -- exposition --------------------------------------------------------------------------

    def render(self) -> tuple[bytes, str]:
        """Body and content type for ``GET /metrics``."""
        self.flush_budgets()
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
