"""A/B experiments from YAML and sticky, deterministic variant assignment.

A user's place in an experiment comes from blake2b(salt, purpose, user) -> [0, 1), never from
Python's hash() or list position, so it is the same on every replica and after restarts, independent
across experiments (different salts), and unchanged by editing other experiments. Two independent
draws are used: one decides whether the user is in the rollout (`traffic`), the other picks the arm.
Raising `traffic` therefore only adds users, and moving `split` toward the variant only moves users
from control to variant, never back and forth.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from proxy.config.errors import ConfigError
from proxy.memo import BoundedMemo
from proxy.routing.rules import RULE_NAME, RouteDecision, RouteInput, load_yaml

CONTROL = "control"
VARIANT = "variant"
WEIGHT_TOLERANCE = 1e-6
ExperimentStatus = Literal["running", "disabled", "scheduled", "stopped", "paused"]


class Arm(BaseModel):
    """One arm of an experiment: a named model with a share of the enrolled users."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=RULE_NAME)
    model: str = Field(min_length=1)
    weight: float = Field(gt=0, le=1)


class Scope(BaseModel):
    """Which requests can enter the experiment (requested model, task header, department)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    task: tuple[str, ...] | None = None
    department: tuple[str, ...] | None = None
    model: tuple[str, ...] | None = None

    def covers(self, inp: RouteInput) -> bool:
        return (
            (self.task is None or inp.task in self.task)
            and (self.department is None or inp.department in self.department)
            and (self.model is None or inp.model in self.model)
        )


class AutoSplit(BaseModel):
    """Opt-in: let `experiment_stats.auto_split` move `split` toward the better arm."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False
    min_split: float = Field(default=0.1, ge=0, le=1)
    max_split: float = Field(default=0.9, ge=0, le=1)
    step: float = Field(default=0.1, gt=0, le=1)

    @model_validator(mode="after")
    def _ordered(self) -> AutoSplit:
        if self.min_split > self.max_split:
            raise ValueError(f"min_split {self.min_split} is above max_split {self.max_split}")
        return self


def _as_utc(value: object) -> object:
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)  # naive times in the YAML are read as UTC
    return value


class Experiment(BaseModel):
    """Either `control` + `variant` + `split` (share sent to the variant) or a `variants` list."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=RULE_NAME)
    control: str | None = None
    variant: str | None = None
    split: float | None = Field(default=None, ge=0, le=1)
    variants: tuple[Arm, ...] | None = None
    scope: Scope = Scope()
    traffic: float = Field(default=1.0, ge=0, le=1)  # share of users enrolled at all
    start: datetime | None = None
    stop: datetime | None = None
    salt: str | None = None  # defaults to the name; change it to reshuffle users
    enabled: bool = True
    auto: AutoSplit = AutoSplit()

    _normalize_times = field_validator("start", "stop", mode="before")(_as_utc)

    @model_validator(mode="after")
    def _check_shape(self) -> Experiment:
        pair = (self.control, self.variant, self.split)
        if self.variants is not None and any(v is not None for v in pair):
            raise ValueError("use either control/variant/split or variants, not both")
        if self.variants is None and (self.control is None or self.variant is None):
            raise ValueError("needs control and variant (with split) or a variants list")
        if self.variants is not None:
            _check_arms(self.variants)
        if self.start and self.stop and self.start >= self.stop:
            raise ValueError(f"start {self.start} is not before stop {self.stop}")
        if self.auto.enabled and self.variants is not None:
            raise ValueError("auto split works only with control/variant/split experiments")
        return self

    @cached_property
    def arms(self) -> tuple[Arm, ...]:
        if self.variants is not None:
            return self.variants
        split = 0.5 if self.split is None else self.split
        arms = (Arm.model_construct(name=CONTROL, model=self.control, weight=1 - split),
                Arm.model_construct(name=VARIANT, model=self.variant, weight=split))
        return tuple(a for a in arms if a.weight > 0)

    @property
    def seed(self) -> str:
        return self.name if self.salt is None else self.salt

    @cached_property
    def active_window(self) -> tuple[float, float]:
        """(start, stop) as unix seconds, open ends as -inf/inf: read on every request."""
        return (-math.inf if self.start is None else self.start.timestamp(),
                math.inf if self.stop is None else self.stop.timestamp())

    def active(self, now: float) -> bool:
        start, stop = self.active_window
        return self.enabled and self.traffic > 0 and start <= now < stop


def _check_arms(arms: tuple[Arm, ...]) -> None:
    names = [a.name for a in arms]
    if len(set(names)) != len(names):
        raise ValueError(f"variant names repeat: {names}")
    total = math.fsum(a.weight for a in arms)
    if abs(total - 1) > WEIGHT_TOLERANCE:
        raise ValueError(f"variant weights sum to {total:g}, not 1: {[a.weight for a in arms]}")


class Experiments(BaseModel):
    """The whole `rules/experiments.yaml`: a mapping name -> experiment. File order is priority."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    experiments: dict[str, Experiment] = {}

    def task_names(self) -> set[str]:
        return {t for e in self.experiments.values() for t in (e.scope.task or ())}

    @field_validator("experiments", mode="before")
    @classmethod
    def _name_from_key(cls, value: object) -> object:
        if not isinstance(value, dict):
            return value
        return {
            name: {"name": name, **body} if isinstance(body, dict) and "name" not in body else body
            for name, body in value.items()
        }

    @field_validator("experiments")
    @classmethod
    def _key_is_name(cls, value: dict[str, Experiment]) -> dict[str, Experiment]:
        wrong = [f"{key} (name {e.name!r})" for key, e in value.items() if key != e.name]
        if wrong:
            raise ValueError(f"an experiment's name is its key; remove 'name' from: {wrong}")
        return value

    def models(self) -> set[str]:
        return {a.model for e in self.experiments.values() for a in e.arms}

    @cached_property
    def scope_memo(self) -> BoundedMemo[tuple[str, str, str | None], tuple[Experiment, ...]]:
        return BoundedMemo()

    def in_scope(self, inp: RouteInput) -> tuple[Experiment, ...]:
        """Experiments whose scope covers this kind of request (department, model, task), in
        file order; remembered per kind (a new config is a new object)."""
        key = (inp.department, inp.model, inp.task)
        memo = self.scope_memo
        found = memo.get(key)
        if found is None:
            found = memo.put(key, tuple(e for e in self.experiments.values()
                                        if e.scope.covers(inp)))
        return found


@dataclass(slots=True)  # built per request: a frozen __init__ costs ~6x
class Assignment:
    """The arm a request was put in; `bucket` is the user's arm draw in [0, 1)."""

    experiment: str
    variant: str
    model: str
    bucket: float


def unit_hash(seed: str, purpose: str, user: str) -> float:
    """Stable uniform draw in [0, 1) from (seed, purpose, user)."""
    digest = hashlib.blake2b(
        f"{seed}\x1f{purpose}\x1f{user}".encode(), digest_size=8, person=b"meterline-ab"
    ).digest()
    return int.from_bytes(digest, "big") / 2**64


def enrolled(experiment: Experiment, user: str) -> bool:
    return unit_hash(experiment.seed, "traffic", user) < experiment.traffic


def pick_arm(experiment: Experiment, user: str) -> tuple[Arm, float]:
    bucket = unit_hash(experiment.seed, "arm", user)
    edge = 0.0
    arms = experiment.arms
    for arm in arms:
        edge += arm.weight
        if bucket < edge:
            return arm, bucket
    return arms[-1], bucket  # float rounding: the sum may land a hair under 1


def assign_variant(experiment: Experiment, user: str) -> Assignment | None:
    """Sticky arm for `user`, or None if the user is outside the rollout share."""
    if not enrolled(experiment, user):
        return None
    arm, bucket = pick_arm(experiment, user)
    return Assignment(experiment.name, arm.name, arm.model, bucket)


def assign(experiments: Experiments, inp: RouteInput, now: float) -> Assignment | None:
    """The first active, in-scope experiment the user is enrolled in decides (file order)."""
    for experiment in experiments.in_scope(inp):
        if experiment.active(now):
            assignment = assign_variant(experiment, inp.user)
            if assignment is not None:
                return assignment
    return None


def status(experiment: Experiment, now: float) -> ExperimentStatus:
    """Live state: running, or why not (disabled, scheduled, stopped, paused at traffic 0)."""
    if not experiment.enabled:
        return "disabled"
    if experiment.start is not None and now < experiment.start.timestamp():
        return "scheduled"
    if experiment.stop is not None and now >= experiment.stop.timestamp():
        return "stopped"
    return "paused" if experiment.traffic <= 0 else "running"


def explain(experiments: Experiments, inp: RouteInput, now: float) -> list[dict[str, Any]]:
    """Per experiment, in file order: did it take this request, and if not, why not."""
    out: list[dict[str, Any]] = []
    decided = False
    for experiment in experiments.experiments.values():
        entry: dict[str, Any] = {"experiment": experiment.name,
                                 "status": status(experiment, now),
                                 "in_scope": experiment.scope.covers(inp), "decides": False}
        if entry["status"] == "running" and entry["in_scope"]:
            assignment = assign_variant(experiment, inp.user)
            entry["enrolled"] = assignment is not None
            if assignment is not None:
                entry.update(variant=assignment.variant, model=assignment.model,
                             bucket=round(assignment.bucket, 6), decides=not decided)
                decided = True
        out.append(entry)
    return out


def control_arm(experiment: Experiment) -> str:
    """The arm others are compared with: the one named "control", else the first arm."""
    names = [a.name for a in experiment.arms]
    return CONTROL if CONTROL in names else names[0]


def plan_targets(decision: RouteDecision, assignment: Assignment | None) -> tuple[str, ...]:
    """Models to try in order: the experiment arm first (if any), then the route's chain."""
    chain = decision.targets if assignment is None else (assignment.model, *decision.targets)
    return tuple(dict.fromkeys(chain))


def load(path: str | Path) -> Experiments:
    """Load and validate `rules/experiments.yaml`."""
    return load_yaml(path, Experiments)


def scope_warnings(experiments: Experiments, departments: set[str], models: set[str],
                   source: str) -> list[str]:
    """Scope names that no request can have: the experiment would enroll nobody through them."""
    out: list[str] = []
    for name, experiment in experiments.experiments.items():
        scope = experiment.scope
        out += [f"{source}: field 'experiments.{name}.scope.department' has value {d!r}: no such "
                f"department (known: {sorted(departments)})"
                for d in scope.department or () if d not in departments]
        out += [f"{source}: field 'experiments.{name}.scope.model' has value {m!r}: no such "
                f"model" for m in scope.model or () if m not in models]
    return out


def check_models(experiments: Experiments, known: set[str], source: str = "experiments") -> None:
    """Raise ConfigError if an experiment arm uses a model the proxy does not know."""
    problems = [
        f"  field 'experiments.{e.name}.{a.name if e.variants is None else 'variants'}' "
        f"has value {a.model!r}: unknown model (known: {sorted(known)})"
        for e in experiments.experiments.values()
        for a in e.arms
        if a.model not in known
    ]
    if problems:
        raise ConfigError("\n".join([f"{source}: unknown models", *problems]))
