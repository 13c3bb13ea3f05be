"""rules/cache.yaml -> typed, frozen cache settings; per-request effective settings.

Overrides are applied from least to most specific: global < department < model < route, so a
route rule that must never be cached can say `enabled: false` whatever the department says.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from proxy.cache.embedder_config import LocalEmbedderSettings, OpenAIEmbedderSettings
from proxy.cache.matching.settings import MatchSettings
from proxy.config.errors import load_model

Mode = Literal["exact", "semantic", "shadow"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DynamicTTL(_Strict):
    """Entries that keep getting hit live longer: each hit sets expiry to ttl * growth**hits,
    clamped to [min_seconds, max_seconds]; entries never hit expire after `ttl`."""

    enabled: bool = True
    growth: float = Field(default=1.5, ge=1.0, le=10.0)
    min_seconds: float = Field(default=60.0, gt=0)
    max_seconds: float = Field(default=86400.0, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> DynamicTTL:
        if self.max_seconds < self.min_seconds:
            raise ValueError(f"Config 'max_seconds' has value {self.max_seconds}. "
                             f"Must be >= min_seconds ({self.min_seconds}).")
        return self


class Override(_Strict):
    """Per department / model / route: any field left out keeps the wider setting."""

    enabled: bool | None = None
    mode: Mode | None = None
    threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    ttl_seconds: float | None = Field(default=None, gt=0)
    max_size: int | None = Field(default=None, ge=1)
    max_temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    cache_tools: bool | None = None
    cache_multiple_choices: bool | None = None
    judge: bool | None = None  # the LLM judge on or off (judge.enabled by default)


class SharedScope(_Strict):
    """Departments that opt in to answering each other's questions from one cache scope."""

    departments: tuple[str, ...] = Field(min_length=2)


class Display(_Strict):
    """How `top_cached_queries` shows a prompt: a short hash or the first `chars` characters."""

    top_cached_queries: Literal["hash", "truncate"] = "hash"
    chars: int = Field(default=40, ge=8, le=200)
    limit: int = Field(default=10, ge=1, le=100)


class EmbedderConfig(_Strict):
    kind: Literal["local", "openai"] = "local"
    local: LocalEmbedderSettings = LocalEmbedderSettings()
    openai: OpenAIEmbedderSettings | None = None

    @model_validator(mode="after")
    def _openai_needs_settings(self) -> EmbedderConfig:
        if self.kind == "openai" and self.openai is None:
            raise ValueError("Config 'embedder.kind' has value 'openai' but 'embedder.openai' "
                             "(base_url, model, dim) is missing.")
        return self


# hits remembered for wrong-answer reports by the in-process backend: ~270 bytes each with its
# request id, so 100,000 grew the embedded soak's RSS by ~30 % (docs/performance.md)
MAX_REMEMBERED = 20_000


class ReportConfig(_Strict):
    """A wrong-answer report raises the department+model threshold by `tighten_step`,
    never above `max_threshold` (0 disables tightening), for `threshold_ttl_seconds` after the
    last report; each served answer counts once, and can be reported for `window_seconds`.
    The in-process (memory) backend remembers at most `max_remembered` served answers for
    that, the newest (~270 bytes each with its request id; Redis keeps every one for the
    window). Read when the backend starts."""

    tighten_step: float = Field(default=0.01, ge=0.0, le=0.2)
    max_threshold: float = Field(default=0.99, ge=0.0, le=1.0)
    threshold_ttl_seconds: float = Field(default=86400.0, gt=0, le=30 * 86400)
    window_seconds: float = Field(default=86400.0, gt=0, le=7 * 86400)
    max_remembered: int = Field(default=MAX_REMEMBERED, ge=100, le=10_000_000)


class Coalesce(_Strict):
    """Identical requests (same scope, same normalised question) that arrive while the first
    one is still out upstream wait for its answer and are served it from the cache, instead of
    each paying for the same answer. Per replica; streams only when `streams` is on, as a
    waiting stream gets its first token only when the first request's answer is complete."""

    enabled: bool = True
    streams: bool = False
    max_wait_seconds: float = Field(default=30.0, gt=0, le=600)


class JudgeConfig(_Strict):
    """The optional LLM judge (docs/cache-quality.md, "The LLM judge"): a semantic candidate
    between `floor` and the verifier's candidate floor, which the verifier never sees, is sent
    with the new question (never its cached answer) to `model` through the proxy, charged to the
    requesting department. Served only on an explicit "same"; a timeout, an error or any other
    reply is a miss. Off unless `enabled` (or a department's override) turns it on."""

    enabled: bool = False
    model: str | None = None  # a model of providers.yaml; the department must be allowed it
    floor: float = Field(default=0.85, ge=0.0, le=1.0)
    max_candidates: int = Field(default=1, ge=1, le=4)  # judged per lookup, best first
    timeout_seconds: float = Field(default=1.5, gt=0, le=30)  # for all of one lookup's calls
    max_question_chars: int = Field(default=1000, ge=1)  # longer questions are not judged


class Overrides(_Strict):
    departments: dict[str, Override] = Field(default_factory=dict)
    models: dict[str, Override] = Field(default_factory=dict)
    routes: dict[str, Override] = Field(default_factory=dict)


class CacheConfig(_Strict):
    """The whole rules/cache.yaml (see the comments in that file)."""

    enabled: bool = False
    mode: Mode = "semantic"
    threshold: float = Field(default=0.95, ge=0.0, le=1.0)
    ttl_seconds: float = Field(default=3600.0, gt=0)
    max_size: int = Field(default=1000, ge=1)
    # entries are counted, not weighed: a longer question bypasses, so max_size x this bounds
    # what one partition can hold (a department sending 8 MB prompts can't fill memory)
    max_question_chars: int = Field(default=16384, ge=1)
    max_temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    cache_tools: bool = False
    cache_multiple_choices: bool = False
    top_k: int = Field(default=4, ge=1, le=50)
    backend: Literal["auto", "memory", "redis"] = "auto"
    index_algorithm: Literal["hnsw", "flat"] = "hnsw"
    shadow_plausible_similarity: float = Field(default=0.8, ge=0.0, le=1.0)
    match: MatchSettings = MatchSettings()
    dynamic_ttl: DynamicTTL = DynamicTTL()
    display: Display = Display()
    embedder: EmbedderConfig = EmbedderConfig()
    report: ReportConfig = ReportConfig()
    coalesce: Coalesce = Coalesce()
    judge: JudgeConfig = JudgeConfig()
    overrides: Overrides = Overrides()
    shared_scopes: dict[str, SharedScope] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_shared_scope_each(self) -> CacheConfig:
        if "threshold" in self.match.model_fields_set:
            raise ValueError("Config 'match.threshold' is not used: set the top-level 'threshold'.")
        seen: dict[str, str] = {}
        for name, scope in self.shared_scopes.items():
            for dept in scope.departments:
                if dept in seen:
                    raise ValueError(f"Config 'shared_scopes.{name}.departments' has value "
                                     f"{dept!r}: already shared in scope {seen[dept]!r}.")
                seen[dept] = name
        return self

    @model_validator(mode="after")
    def _judge_is_complete(self) -> CacheConfig:
        """A judge that can be turned on (globally or by an override) needs a model and a band
        below the threshold."""
        judge = self.judge
        switched = [f"overrides.{section}.{name}.judge"
                    for section, layers in (("departments", self.overrides.departments),
                                            ("models", self.overrides.models),
                                            ("routes", self.overrides.routes))
                    for name, layer in layers.items() if layer.judge]
        where = ["judge.enabled"] if judge.enabled else switched
        if not where:
            return self
        if judge.model is None:
            raise ValueError(f"Config '{where[0]}' has value True but 'judge.model' is missing.")
        if judge.floor >= self.threshold:
            raise ValueError(f"Config 'judge.floor' has value {judge.floor}. "
                             f"Must be < threshold ({self.threshold}).")
        return self

    def owner_of(self, department: str | None) -> str:
        """Whose entries a department reads and writes: itself, or its shared scope."""
        dept = department or "admin"
        for name, scope in self.shared_scopes.items():
            if dept in scope.departments:
                return "shared:" + name
        return dept

    def effective(self, department: str | None, model: str, route: str | None) -> Effective:
        values = Effective(self.enabled, self.mode, self.threshold, self.ttl_seconds,
                           self.max_size, self.max_temperature, self.cache_tools,
                           self.cache_multiple_choices, self.judge.enabled)
        layers = (self.overrides.departments.get(department or ""),
                  self.overrides.models.get(model), self.overrides.routes.get(route or ""))
        for layer in layers:
            if layer is not None:
                values = values.apply(layer)
        return values


@dataclass(frozen=True, slots=True)
class Effective:
    """Settings for one request after overrides."""

    enabled: bool
    mode: Mode
    threshold: float
    ttl_seconds: float
    max_size: int
    max_temperature: float
    cache_tools: bool
    cache_multiple_choices: bool
    judge: bool  # the LLM judge for borderline candidates (CacheConfig.judge)

    def apply(self, layer: Override) -> Effective:
        changes = {k: v for k, v in layer.model_dump().items() if v is not None}
        return replace(self, **changes)


def load_cache_config(path: Path) -> CacheConfig:
    """Raise ConfigError naming file, field and value."""
    return load_model(CacheConfig, path)


def check_references(config: CacheConfig, path: Path, departments: Iterable[str],
                     models: Iterable[str], routes: Iterable[str]) -> list[str]:
    """Names in overrides and shared scopes must exist in the other config files."""
    problems: list[str] = []
    known = {"departments": set(departments), "models": set(models), "routes": set(routes)}
    for section, names in (("departments", config.overrides.departments),
                           ("models", config.overrides.models),
                           ("routes", config.overrides.routes)):
        for name in names:
            if name not in known[section]:
                problems.append(f"{path}: field 'overrides.{section}.{name}' has value {name!r}: "
                                f"not one of {sorted(known[section])}")
    judge = config.judge.model
    if judge is not None and judge not in known["models"]:
        problems.append(f"{path}: field 'judge.model' has value {judge!r}: "
                        f"not one of {sorted(known['models'])}")
    for scope_name, scope in config.shared_scopes.items():
        for dept in scope.departments:
            if dept not in known["departments"]:
                problems.append(f"{path}: field 'shared_scopes.{scope_name}.departments' has "
                                f"value {dept!r}: not one of {sorted(known['departments'])}")
    return problems
