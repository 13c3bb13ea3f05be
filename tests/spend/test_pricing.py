"""Pricing: name matching, usage shapes, exact nano-dollar costs, overrides, bad files."""

from __future__ import annotations

import math
import random
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import pytest

from proxy.config.errors import ConfigError
from proxy.spend.pricing import (
    Cost,
    Price,
    PricingTable,
    Usage,
    format_nanos,
    load_pricing,
    parse_usage,
    to_nanos,
)

TABLE = load_pricing()


@pytest.mark.parametrize(
    ("model", "entry"),
    [
        ("gpt-4o", "gpt-4o"),
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),  # longest prefix wins over gpt-4o
        ("gpt-4.1-nano-2025-04-14", "gpt-4.1-nano"),
        ("o1-mini-2024-09-12", "o1-mini"),
        ("openai/gpt-4o-mini", "gpt-4o-mini"),
        ("anthropic/claude-3.5-sonnet", "anthropic/claude-3.5-sonnet"),
        ("gpt-3.5-turbo-0125", "gpt-3.5-turbo"),  # -MMDD snapshot
        ("o3-2025-04-16", "o3"),
        ("o1-pro", "o1-pro"),  # its own price: not an o1 snapshot (10x o1)
        ("o1-pro-2025-03-19", "o1-pro"),
        ("o3-pro", "o3-pro"),
        ("gpt-4o-audio-preview", None),  # audio tokens: not gpt-4o's price
        ("gpt-4o-search-preview", None),
        ("gpt-4o-mini-tts", None),
        ("gpt-4o-2024", None),  # not a whole date
        ("gpt-4o-2024-13-45", None),  # not a date
        ("anthropic/claude-3.5-sonnet:beta", None),  # OpenRouter variants are priced apart
        ("meta-llama/llama-3.1-70b-instruct", "meta-llama/llama-3.1-70b-instruct"),
        ("meta-llama/llama-3.1-405b-instruct", None),
        ("gpt-4", "gpt-4"),
        ("gpt-4oxyz", None),
        ("my-fine-tune", None),
    ],
)
def test_model_names_resolve_exact_then_dated_snapshot(model: str, entry: str | None) -> None:
    assert TABLE.resolve(model) == entry


def test_unlisted_variants_are_billed_at_the_default_not_a_cheaper_base() -> None:
    usage = {"prompt_tokens": 1000, "completion_tokens": 1000}
    assert TABLE.cost("o1-pro", usage).nanos == 150_000_000 + 600_000_000
    assert TABLE.cost("o3-pro", usage).nanos == 20_000_000 + 80_000_000
    audio = TABLE.cost("gpt-4o-audio-preview", usage)
    assert not audio.priced and audio.nanos == TABLE.cost("unknown", usage).nanos


def test_the_bundled_table_says_when_its_prices_were_checked() -> None:
    from proxy.spend.pricing import DEFAULT_PRICING_PATH

    header = DEFAULT_PRICING_PATH.read_text().split("\n", 3)[:3]
    assert any("Prices as of 20" in line for line in header), header


@pytest.mark.parametrize(
    ("model", "usage", "nanos"),
    [
        # 600 uncached x 2.5 + 400 cached x 1.25 + 500 out x 10
        ("gpt-4o", {"prompt_tokens": 1000, "completion_tokens": 500,
                    "prompt_tokens_details": {"cached_tokens": 400}}, 7_000_000),
        # Responses API shape
        ("gpt-4.1", {"input_tokens": 1000, "output_tokens": 100,
                     "input_tokens_details": {"cached_tokens": 1000}}, 500_000 + 800_000),
        ("text-embedding-3-small", {"prompt_tokens": 1000, "total_tokens": 1000}, 20_000),
        ("text-embedding-3-small", {"prompt_tokens": 10}, 200),  # was $0 in micro-dollars
        # the docs/spend.md example: 81 x 150 + 17 x 600 nano-dollars (was 22 micro-dollars)
        ("gpt-4o-mini", {"prompt_tokens": 81, "completion_tokens": 17}, 22_350),
        ("gpt-4o-mini", {"prompt_tokens": 7}, 1050),
        ("gpt-4o-mini", {"prompt_tokens": 3, "completion_tokens": 1,
                         "prompt_tokens_details": {"cached_tokens": 1}}, 2 * 150 + 75 + 600),
        ("gpt-3.5-turbo", {"prompt_tokens": 100, "completion_tokens": 10,
                           "prompt_tokens_details": {"cached_tokens": 50}}, 50_000 + 15_000),
        ("gpt-4o", None, 0),
    ],
)  # fmt: skip
def test_cost_is_exact_in_nano_dollars(model: str, usage: Any, nanos: int) -> None:
    assert TABLE.cost(model, usage) == Cost(nanos / 1_000_000_000, True, nanos)


def test_unknown_model_uses_the_default_price_and_is_flagged() -> None:
    cost = TABLE.cost("mystery-model", {"prompt_tokens": 1000, "completion_tokens": 1000})
    assert cost == Cost(0.04, False, 40_000_000)  # default: $10 in / $30 out per 1M


def test_parse_usage_ignores_junk_and_caps_cached_at_prompt() -> None:
    usage = parse_usage({"prompt_tokens": 5, "completion_tokens": "x",
                         "prompt_tokens_details": {"cached_tokens": 9}})  # fmt: skip
    assert (usage.input_tokens, usage.cached_input_tokens, usage.output_tokens) == (5, 5, 0)


def test_worst_case_rounds_the_prompt_up_and_returns_the_output_rate() -> None:
    assert TABLE.worst_case("gpt-4o-mini", 7) == (1050, 600.0)
    assert TABLE.worst_case("nope", 1) == (10_000, 30_000.0)


def test_overrides_replace_entries_and_the_default(tmp_path: Path) -> None:
    override = tmp_path / "prices.yaml"
    override.write_text(
        "default: {input: 1, output: 2}\n"
        "models:\n  gpt-4o: {input: 1.0, output: 1.0}\n  house-model: {input: 0, output: 0}\n"
    )
    table = load_pricing(override)
    assert table.cost("gpt-4o-2024-11-20", {"prompt_tokens": 10}).nanos == 10_000
    assert table.cost("house-model", {"prompt_tokens": 10}) == Cost(0.0, True, 0)
    assert table.cost("other", {"completion_tokens": 10}) == Cost(2e-05, False, 20_000)
    assert table.cost("gpt-4o-mini", {"prompt_tokens": 100}).nanos == 15_000  # untouched


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("models:\n  gpt-4o: {input: -1, output: 1}\n",
         "field 'models.gpt-4o.input' has value -1: Input should be greater than or equal to 0"),
        ("models:\n  gpt-4o: {input: 1, outptu: 1}\n",
         "field 'models.gpt-4o.outptu' has value 1"),
        ("models: [1, 2\n", "not valid YAML"),
    ],
)  # fmt: skip
def test_bad_pricing_files_name_file_field_and_value(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        load_pricing(path)
    assert str(path) in str(info.value)


def test_to_nanos_is_exact_for_recorded_costs() -> None:
    values = (0.1, 1e-06, 123.456789, 0.0000005, 2.235e-05, 1e-09, 7_999_999.999999999)
    assert [to_nanos(x) for x in values] == [
        100_000_000, 1000, 123_456_789_000, 500, 22_350, 1, 7_999_999_999_999_999]
    rng = random.Random(7)
    for nanos in (rng.randint(0, 8 * 10**15) for _ in range(10_000)):
        assert to_nanos(nanos / 1e9) == nanos


def test_format_nanos_keeps_every_digit() -> None:
    assert [format_nanos(n) for n in (0, 22_350, 1, -5, 1_234_567_891)] == [
        "0.000000000", "0.000022350", "0.000000001", "-0.000000005", "1.234567891"]
    assert [format_nanos(n, 8) for n in (22_350, 75, 0)] == [
        "0.00002235", "0.000000075", "0.00000000"]


def _decimal_cost(price: Price, usage: Usage) -> int:
    """The reference: exact Decimal arithmetic in nano-dollars, rounded half-up once."""
    exact = 1000 * (
        (usage.input_tokens - usage.cached_input_tokens) * price.input
        + usage.cached_input_tokens * price.cached
        + usage.output_tokens * price.output
    )
    return int(exact.to_integral_value(ROUND_HALF_UP))


def _random_price(rng: random.Random) -> Price:
    def amount() -> Decimal:
        places = rng.choice((0, 1, 2, 3, 4, 6, 9))
        return Decimal(rng.randint(0, 10**6)).scaleb(-places)

    cached = rng.choice((None, amount()))
    return Price(input=amount(), cached_input=cached, output=amount())


def test_integer_rates_equal_decimal_pricing_over_random_usages() -> None:
    rng = random.Random(2024)
    bundled = load_pricing()
    prices = [*bundled.models.values(), bundled.default]
    prices += [_random_price(rng) for _ in range(300)]
    prices += [Price(input=Decimal("0.5"), output=Decimal("1.5")),  # ties: .5 rounds up
               Price(input=Decimal("0.0000001"), output=Decimal("12345.6789012"))]
    for price in prices:
        table = PricingTable({"m": price}, price)
        for _ in range(60):
            prompt = rng.choice((0, 1, 3, rng.randint(0, 2_000_000)))
            usage = Usage(prompt, rng.randint(0, prompt), rng.choice((0, 1, rng.randint(0, 10**6))))
            cost = table.cost("m", usage)
            assert cost.nanos == _decimal_cost(price, usage), (price, usage)
            assert cost.dollars == cost.nanos / 1_000_000_000
            fixed, per_token = table.worst_case("m", prompt)
            assert fixed == math.ceil(Decimal(prompt) * price.input * 1000)
            assert per_token == float(price.output * 1000)
        assert table.worst_case("m", -5)[0] == 0


def test_integer_rates_round_half_up_away_from_zero_like_decimal() -> None:
    price = Price(input=Decimal("0.5"), cached_input=Decimal(0), output=Decimal("0.25"))
    table = PricingTable({}, price)
    for usage in (Usage(1, 0, 0), Usage(3, 0, 0), Usage(0, 0, 2), Usage(0, 0, 6), Usage(1, 2, 0),
                  Usage(3, 6, 0)):  # cached > input: negative, -0.5 -> -1
        assert table.cost("x", usage).nanos == _decimal_cost(price, usage)
