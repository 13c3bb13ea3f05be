"""Departments (rules/departments.yaml) -> frozen, validated config models."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from proxy.config.errors import ConfigError, describe_validation_error, read_yaml

Period = Literal["hourly", "daily", "monthly"]
PERIODS: tuple[Period, ...] = ("hourly", "daily", "monthly")
_NAME = r"^[a-z0-9][a-z0-9_-]{0,62}$"
# The one name of admin-key traffic wherever a department is shown (response header, records,
# spend page, chargeback, forecasts, metrics); no configured department may take it.
ADMIN_DEPARTMENT = "admin"
_ENV = r"^[A-Z_][A-Z0-9_]*$"


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Budgets(_Frozen):
    """Dollar ceilings per calendar window (UTC). None means no limit for that period."""

    hourly: Decimal | None = Field(default=None, gt=0)
    daily: Decimal | None = Field(default=None, gt=0)
    monthly: Decimal | None = Field(default=None, gt=0)

    def limit(self, period: Period) -> Decimal | None:
        value: Decimal | None = getattr(self, period)
        return value


class CircuitBreaker(_Frozen):
    """Pause a department whose spend over the last `window_minutes` exceeds `max_dollars`."""

    window_minutes: int = Field(ge=1, le=1440)
    max_dollars: Decimal = Field(gt=0)


class Department(_Frozen):
    """`virtual_keys` maps a provider name to the environment variable holding this department's
    own key for that provider; other providers get their provider key (providers.yaml)."""

    name: str = Field(pattern=_NAME)
    virtual_keys: dict[str, Annotated[str, Field(pattern=_ENV)]] = {}
    allowed_models: tuple[str, ...] = ("*",)
    budgets: Budgets = Budgets()
    rpm: int | None = Field(default=None, ge=1)
    tpm: int | None = Field(default=None, ge=1)
    soft_alerts: tuple[float, ...] = (0.8,)
    circuit_breaker: CircuitBreaker | None = None
    cap_max_tokens: bool = False
    default_max_tokens: int = Field(default=4096, ge=1)
    min_capped_tokens: int = Field(default=64, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _no_key_for_every_provider(cls, data: Any) -> Any:
        if isinstance(data, dict) and "virtual_key_env" in data:
            raise ValueError(
                f"virtual_key_env ({data['virtual_key_env']!r}) is no longer read: one key was "
                "sent to every provider. Name the provider of each key, e.g. "
                f"virtual_keys: {{openai: {data['virtual_key_env']}}}")
        return data

    @field_validator("soft_alerts")
    @classmethod
    def _fractions(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        for threshold in value:
            if not 0 < threshold < 1:
                raise ValueError(f"threshold {threshold} must be between 0 and 1 (exclusive)")
        return tuple(sorted(set(value)))

    @field_validator("allowed_models")
    @classmethod
    def _not_empty(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("list is empty; use ['*'] to allow every model")
        return value

    def allows(self, model: str) -> bool:
        """Whether `model` matches one of allowed_models (shell-style patterns, '*' = all)."""
        return any(fnmatchcase(model, pattern) for pattern in self.allowed_models)


class Notifications(_Frozen):
    slack_webhook_env: str | None = Field(default="METERLINE_SLACK_WEBHOOK_URL", pattern=_ENV)


class SpendThresholds(_Frozen):
    """Dollars in a rolling window (60 min / 24 h) above which the proxy reports an alert."""

    hourly_spend: Decimal | None = Field(default=Decimal(10), gt=0)
    daily_spend: Decimal | None = Field(default=Decimal(100), gt=0)


class AlertThresholds(SpendThresholds):
    """Thresholds for all departments together and, by default, for each one; `departments`
    overrides them per department (fields left out keep the default, null turns one off)."""

    departments: dict[str, SpendThresholds] = {}

    def for_department(self, name: str) -> SpendThresholds:
        override = self.departments.get(name)
        base = {"hourly_spend": self.hourly_spend, "daily_spend": self.daily_spend}
        if override is not None:
            base.update({k: getattr(override, k) for k in override.model_fields_set})
        return SpendThresholds(**base)


class DepartmentsConfig(_Frozen):
    version: Literal[1] = 1
    notifications: Notifications = Notifications()
    departments: dict[str, Department]
    alerts: AlertThresholds = AlertThresholds()  # after departments: its validator reads them

    @field_validator("departments")
    @classmethod
    def _names_match_keys(cls, value: dict[str, Department]) -> dict[str, Department]:
        for key, department in value.items():
            if key == ADMIN_DEPARTMENT:
                raise ValueError(f"{key!r} is reserved for the traffic of admin keys")
            if department.name != key:
                raise ValueError(f"department {key!r} has name {department.name!r}")
        return value

    @field_validator("alerts")
    @classmethod
    def _alert_departments_known(cls, value: AlertThresholds,
                                 info: ValidationInfo) -> AlertThresholds:
        known = sorted(info.data.get("departments") or {})
        unknown = sorted(set(value.departments) - set(known))
        if unknown:
            raise ValueError(f"departments {unknown} are not defined; known: {known}")
        return value

    def get(self, name: str) -> Department:
        try:
            return self.departments[name]
        except KeyError:
            raise KeyError(f"unknown department {name!r}") from None

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.departments)

    def slack_webhook_url(self, environ: Mapping[str, str]) -> str | None:
        """Resolve the webhook URL from the given environment (settings passes os.environ)."""
        env = self.notifications.slack_webhook_env
        return environ.get(env) or None if env else None


def load_departments(path: Path | str) -> DepartmentsConfig:
    """Read and validate a departments YAML file; errors name the file, field and value."""
    path = Path(path)
    return parse_departments(read_yaml(path), source=str(path))


def parse_departments(raw: Any, *, source: str = "<departments>") -> DepartmentsConfig:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    try:
        return DepartmentsConfig.model_validate(_with_names(raw))
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(source, exc)) from None


def _with_names(raw: dict[str, Any]) -> dict[str, Any]:
    """Copy each mapping key into the department's `name` so the model carries it."""
    departments = raw.get("departments")
    if not isinstance(departments, dict):
        return raw
    named = {
        key: {"name": key, **value} if isinstance(value, dict) else value
        for key, value in departments.items()
    }
    return {**raw, "departments": named}
