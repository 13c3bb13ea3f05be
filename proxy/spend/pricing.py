"""Model prices -> the cost of an OpenAI usage block.

Money is counted in integer nano-dollars (1e-9 USD). A price of P dollars per 1M tokens is
P x 1000 nano-dollars per token, a whole number for every price with at most three decimals (all
list prices: the smallest step is $0.001/1M), so a request's cost is exact. A price with more
decimals (an override) is rounded once per request, half-up, to whole nano-dollars. Prices are
turned into integers once (`ExactRate`: each price times 10^k, k = its decimal places) so pricing
a request is integer arithmetic, equal to the Decimal result. Every later sum (budgets, reports,
chargeback totals) is integer addition, so totals equal the sum of per-request costs exactly.
Micro-dollar rounding was -1.6 % on a typical small call and $0 for a short embedding.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from proxy.config.errors import ConfigError, describe_validation_error, read_yaml

DEFAULT_PRICING_PATH = Path(__file__).parent.parent / "data" / "pricing.yaml"
NANOS_PER_DOLLAR = 1_000_000_000
NANOS_PER_MICRO = 1_000  # P $/1M tokens = P micro-dollars per token
# A dated snapshot of a listed model bills as that model: -YYYY-MM-DD (gpt-4o-2024-08-06),
# -YYYYMMDD (claude-3-5-sonnet-20241022), -MMDD (gpt-3.5-turbo-0125). Nothing else: o1-pro,
# gpt-4o-audio-preview or an OpenRouter ':free' variant are other models with other prices.
_SNAPSHOT = re.compile(
    r"-(?:\d{4}-(?P<m1>\d\d)-(?P<d1>\d\d)"
    r"|\d{4}(?P<m2>\d\d)(?P<d2>\d\d)"
    r"|(?P<m3>\d\d)(?P<d3>\d\d))$")


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
    nanos: int = 0


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
def to_nanos(dollars: float | Decimal) -> int:
    """Dollars -> nano-dollars, half-up. Exact for a float that was nanos / 1e9 below $8M (2^23:
    doubles there are finer than 1e-9, and str() gives the shortest decimal that reads back)."""
    return int(Decimal(str(dollars)).scaleb(9).to_integral_value(ROUND_HALF_UP))


def nanos_to_dollars(nanos: int) -> float:
    return nanos / NANOS_PER_DOLLAR


def format_nanos(nanos: int, places: int = 9) -> str:
    """Exact dollars as a decimal string: 22350 -> '0.000022350' (places=9). With fewer places the
    digits that are zero are dropped and any other digit is kept: format_nanos(22350, 8) ->
    '0.00002235', format_nanos(75, 8) -> '0.000000075'."""
    sign = "-" if nanos < 0 else ""
    whole, frac = divmod(abs(nanos), NANOS_PER_DOLLAR)
    digits = f"{frac:09d}"
    keep = max(places, len(digits.rstrip("0")))
    return f"{sign}{whole}.{digits[:keep]}"


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

    def nanos(self, counts: Usage) -> int:
        """Cost of `counts`, rounded half-up (ties away from zero) to whole nano-dollars (exact
        for prices with up to three decimals)."""
        scaled = NANOS_PER_MICRO * (
            (counts.input_tokens - counts.cached_input_tokens) * self.input
            + counts.cached_input_tokens * self.cached
            + counts.output_tokens * self.output
        )
        rounded = (2 * abs(scaled) + self.scale) // (2 * self.scale)
        return rounded if scaled >= 0 else -rounded

    def prompt_nanos(self, prompt_tokens: int) -> int:
        """Nano-dollars for `prompt_tokens` at the input price, rounded up."""
        return -(-max(prompt_tokens, 0) * self.input * NANOS_PER_MICRO // self.scale)

    def output_nanos(self) -> float:
        """Nano-dollars per output token (a whole number for list prices)."""
        return self.output * NANOS_PER_MICRO / self.scale


def _exponent(value: Decimal) -> int:
    exponent = value.as_tuple().exponent
    if not isinstance(exponent, int):  # NaN / Infinity: Price forbids them (ge=0, finite)
        raise ValueError(f"price {value} is not a finite number")
    return exponent


def snapshot_base(model: str) -> str | None:
    """`gpt-4o` for `gpt-4o-2024-08-06`; None when the name does not end in a snapshot date."""
    found = _SNAPSHOT.search(model)
    if found is None:
        return None
    parts = [int(v) for v in found.groupdict().values() if v is not None]
    month, day = parts
    return model[: found.start()] if 1 <= month <= 12 and 1 <= day <= 31 else None


class PricingTable:
    """Look up a model's price (exact name, then a dated snapshot of one) and price usage."""

    def __init__(self, models: Mapping[str, Price], default: Price) -> None:
        self.models = dict(models)
        self.default = default
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
        base = snapshot_base(model)
        return base if base is not None and base in self.models else None

    def rate(self, model: str) -> tuple[ExactRate, bool]:
        """Like `lookup`, as integers."""
        name = self.resolve(model)
        return (self._rates[name], True) if name is not None else (self._default_rate, False)

    def cost(self, model: str, usage: Mapping[str, Any] | Usage | None) -> Cost:
        counts = usage if isinstance(usage, Usage) else parse_usage(usage)
        rate, known = self.rate(model)
        nanos = rate.nanos(counts)
        return Cost(nanos_to_dollars(nanos), known, nanos)

    def worst_case(self, model: str, prompt_tokens: int) -> tuple[int, float]:
        """(nano-dollars for the prompt, rounded up; nano-dollars per output token)."""
        rate, _ = self.rate(model)
        return rate.prompt_nanos(prompt_tokens), rate.output_nanos()


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
