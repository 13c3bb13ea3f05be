"""Model prices -> the cost of an OpenAI usage block.

Money is counted in integer micro-dollars (1e-6 USD). A price of P dollars per 1M tokens is exactly
P micro-dollars per token, so a request's cost is computed exactly and rounded once, half-up, to
whole micro-dollars. Prices are turned into integers once (`ExactRate`: each price times 10^k, k =
its decimal places) so pricing a request is integer arithmetic, equal to the Decimal result.
Every later sum (budgets, chargeback totals) is integer addition,
so totals equal the sum of per-request costs with no float drift.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from proxy.config.errors import ConfigError, describe_validation_error, read_yaml

DEFAULT_PRICING_PATH = Path(__file__).parent.parent / "data" / "pricing.yaml"
MICROS_PER_DOLLAR = 1_000_000
_SNAPSHOT_SEPARATORS = ("-", ":", "@")


class Price(BaseModel):
    """Dollars per 1M tokens (equivalently: micro-dollars per token)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input: Decimal = Field(ge=0)
    cached_input: Decimal | None = Field(default=None, ge=0)
    output: Decimal = Field(ge=0)

    @property
    def cached(self) -> Decimal:
        return self.input if self.cached_input is None else self.cached_input


class PricingFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    default: Price | None = None
    models: dict[str, Price] = Field(default_factory=dict)


@dataclass(slots=True)  # built per request: a frozen __init__ costs ~6x
class Usage:
    """Token counts normalised from a Chat Completions or Responses API usage block."""

    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0


@dataclass(slots=True)  # built per request: a frozen __init__ costs ~6x
class Cost:
    """What a request cost. `priced` is False when the model was unknown and `default` was used."""

    dollars: float
    priced: bool
    micros: int = 0


def parse_usage(usage: Mapping[str, Any] | None) -> Usage:
    """Read prompt/completion (or input/output) tokens and cached tokens from a usage block."""
    if not usage:
        return Usage()
    prompt = _int(usage.get("prompt_tokens", usage.get("input_tokens")))
    completion = _int(usage.get("completion_tokens", usage.get("output_tokens")))
    details = usage.get("prompt_tokens_details") or usage.get("input_tokens_details") or {}
    cached = _int(details.get("cached_tokens")) if isinstance(details, Mapping) else 0
    return Usage(prompt, min(cached, prompt), completion)


def _int(value: Any) -> int:
    return value if isinstance(value, int) and value > 0 else 0


@functools.lru_cache(maxsize=4096)  # called with config values: budgets, breaker ceilings
def to_micros(dollars: float | Decimal) -> int:
    return int(Decimal(str(dollars)).scaleb(6).to_integral_value(ROUND_HALF_UP))


def micros_to_dollars(micros: int) -> float:
    return micros / MICROS_PER_DOLLAR


@dataclass(frozen=True, slots=True)
class ExactRate:
    """A Price as integers: micro-dollars per token = field / scale (exact for any decimal)."""

    scale: int
    input: int
    cached: int
    output: int

    @classmethod
    def of(cls, price: Price) -> ExactRate:
        values = (price.input, price.cached, price.output)
        places = max(0, *(-_exponent(v) for v in values))
        scale = 10**places
        as_int = [int(v.scaleb(places)) for v in values]
        return cls(scale, *as_int)

    def micros(self, counts: Usage) -> int:
        """Cost of `counts`, rounded half-up (ties away from zero) to whole micro-dollars."""
        scaled = (
            (counts.input_tokens - counts.cached_input_tokens) * self.input
            + counts.cached_input_tokens * self.cached
            + counts.output_tokens * self.output
        )
        rounded = (2 * abs(scaled) + self.scale) // (2 * self.scale)
        return rounded if scaled >= 0 else -rounded

    def prompt_micros(self, prompt_tokens: int) -> int:
        """Micro-dollars for `prompt_tokens` at the input price, rounded up."""
        return -(-max(prompt_tokens, 0) * self.input // self.scale)


def _exponent(value: Decimal) -> int:
    exponent = value.as_tuple().exponent
    if not isinstance(exponent, int):  # NaN / Infinity: Price forbids them (ge=0, finite)
        raise ValueError(f"price {value} is not a finite number")
    return exponent


class PricingTable:
    """Look up a model's price (exact name, then longest snapshot prefix) and price usage."""

    def __init__(self, models: Mapping[str, Price], default: Price) -> None:
        self.models = dict(models)
        self.default = default
        self._by_length = sorted(self.models, key=len, reverse=True)
        self._rates = {name: ExactRate.of(price) for name, price in self.models.items()}
        self._default_rate = ExactRate.of(default)

    def lookup(self, model: str) -> tuple[Price, bool]:
        """Return (price, known). Unknown models get the default price and known=False."""
        name = self.resolve(model)
        return (self.models[name], True) if name is not None else (self.default, False)

    def resolve(self, model: str) -> str | None:
        """The table entry a model name bills as: exact, dated snapshot, or provider-prefixed."""
        found = self._match(model)
        if found is None and "/" in model:
            found = self._match(model.rsplit("/", 1)[1])
        return found

    def _match(self, model: str) -> str | None:
        if model in self.models:
            return model
        for name in self._by_length:
            if model.startswith(name) and model[len(name)] in _SNAPSHOT_SEPARATORS:
                return name
        return None

    def rate(self, model: str) -> tuple[ExactRate, bool]:
        """Like `lookup`, as integers."""
        name = self.resolve(model)
        return (self._rates[name], True) if name is not None else (self._default_rate, False)

    def cost(self, model: str, usage: Mapping[str, Any] | Usage | None) -> Cost:
        counts = usage if isinstance(usage, Usage) else parse_usage(usage)
        rate, known = self.rate(model)
        micros = rate.micros(counts)
        return Cost(micros_to_dollars(micros), known, micros)

    def worst_case(self, model: str, prompt_tokens: int) -> tuple[int, float]:
        """(micro-dollars for the prompt, rounded up; micro-dollars per output token)."""
        rate, _ = self.rate(model)
        return rate.prompt_micros(prompt_tokens), rate.output / rate.scale


def load_pricing(*paths: Path | str, default: Price | None = None) -> PricingTable:
    """Load the bundled table, then each override file in order (later entries win)."""
    files = [DEFAULT_PRICING_PATH, *(Path(p) for p in paths)]
    models: dict[str, Price] = {}
    chosen = default
    for path in files:
        parsed = _read_pricing_file(path)
        models.update(parsed.models)
        chosen = parsed.default or chosen
    if chosen is None:
        raise ConfigError(f"{files[-1]}: no 'default' price for unknown models")
    return PricingTable(models, default if default is not None else chosen)


def _read_pricing_file(path: Path) -> PricingFile:
    raw = read_yaml(path) or {}
    try:
        return PricingFile.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(path, exc)) from None
