"""Synthetic usage history for `meterline serve --demo`, so the forecast, budget-advice, alert
and spend views have weeks of data on a server one minute old.

Eight weeks of seasonal traffic per department, ending at today's UTC midnight (today's numbers
stay real): office hours in the department's time zone, quiet weekends, growth, day-to-day noise,
a few cache hits, one runaway day. Every record is marked as demo data (user `demo-synthetic`,
key `demo-history`, request id `demo-history-…`, `extra.synthetic`), and it is written only to
the embedded store of a demo server: never to Redis, never without --demo.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass

from proxy.spend.pricing import PricingTable, to_nanos
from proxy.spend.records import UsageRecord

DAY = 86_400
HISTORY_DAYS = 56
SYNTHETIC_USER = "demo-synthetic"
SYNTHETIC_KEY = "demo-history"
OUTPUT_SHARE = 0.25  # output tokens per input token
HIT_RATE = 0.08
# relative activity per local hour: night floor, ramp, lunch dip, evening tail
OFFICE_HOURS = (0.04, 0.04, 0.04, 0.04, 0.04, 0.04, 0.04, 0.3, 0.8, 1.0, 1.0, 1.0, 0.55, 0.95,
                1.0, 0.95, 0.85, 0.6, 0.35, 0.2, 0.12, 0.04, 0.04, 0.04)


@dataclass(frozen=True)
class Profile:
    """A department's traffic: dollars on a weekday, shape and mix."""

    weekday_dollars: float
    weekend_factor: float
    utc_offset: int
    growth_per_week: float
    models: tuple[tuple[str, float], ...]  # (model, share of requests)
    requests_per_weekday: int = 60


PROFILES = {
    "engineering": Profile(90.0, 0.2, 1, 0.03,
                           (("gpt-4o", 0.5), ("gpt-4.1", 0.3), ("gpt-4o-mini", 0.2))),
    "sales": Profile(14.0, 0.08, -5, 0.02, (("gpt-4o-mini", 0.8), ("gpt-4.1-mini", 0.2))),
    "marketing": Profile(22.0, 0.1, -8, 0.05,
                         (("gpt-4o", 0.4), ("gpt-4o-mini", 0.4), ("gpt-4.1-mini", 0.2))),
    "executive": Profile(20.0, 0.3, 0, 0.01, (("gpt-4o", 0.7), ("gpt-4o-mini", 0.3))),
}
OTHER = Profile(10.0, 0.2, 0, 0.02, (("gpt-4o-mini", 1.0),))


def synthetic_history(now: float, departments: Iterable[str], pricing: PricingTable, *,
                      days: int = HISTORY_DAYS, seed: int = 14) -> list[UsageRecord]:
    """Per-request records for `days` whole UTC days before today, oldest first."""
    rng = random.Random(seed)  # nosec B311 # synthetic demo data, not a secret
    end = int(now) // DAY * DAY
    records: list[UsageRecord] = []
    for name in departments:
        profile = PROFILES.get(name, OTHER)
        runaway = days - 10 if name == "engineering" else -1  # one runaway job, 10 days ago
        for day in range(days):
            start = end - (days - day) * DAY
            factor = day_factor(profile, start, day - days, rng) * (3.0 if day == runaway else 1)
            records += day_records(name, profile, start, factor, pricing, rng)
    records.sort(key=lambda r: r.ts)
    for i, record in enumerate(records):
        record.request_id = f"demo-history-{i:06d}"
    return records


def day_factor(profile: Profile, start: int, weeks_ago_days: int, rng: random.Random) -> float:
    """Share of a weekday's spend on this day: weekends, Fridays, growth, noise."""
    weekday = (start // DAY + 3) % 7  # 1970-01-01 was a Thursday
    factor = profile.weekend_factor if weekday >= 5 else 0.85 if weekday == 4 else 1.0
    growth: float = (1 + profile.growth_per_week) ** (weeks_ago_days / 7)
    return factor * growth * rng.gauss(1, 0.08)


def day_records(name: str, profile: Profile, start: int, factor: float, pricing: PricingTable,
                rng: random.Random) -> list[UsageRecord]:
    shape = [OFFICE_HOURS[(hour + profile.utc_offset) % 24] for hour in range(24)]
    total = sum(shape)
    mean_dollars = profile.weekday_dollars / profile.requests_per_weekday
    out: list[UsageRecord] = []
    for hour, weight in enumerate(shape):
        dollars = profile.weekday_dollars * factor * weight / total
        count = max(0, round(rng.gauss(dollars / mean_dollars, 0.5)))
        for _ in range(count):
            ts = start + hour * 3600 + rng.random() * 3600
            out.append(one_record(name, profile, ts, dollars / count, pricing, rng))
    return out


def one_record(name: str, profile: Profile, ts: float, dollars: float, pricing: PricingTable,
               rng: random.Random) -> UsageRecord:
    model = rng.choices([m for m, _ in profile.models], [w for _, w in profile.models])[0]
    price, _ = pricing.lookup(model)
    dollars_in, dollars_out = float(price.input) / 1e6, float(price.output) / 1e6  # per token
    per_input = dollars_in + OUTPUT_SHARE * dollars_out
    spend = dollars * rng.lognormvariate(0, 0.4)
    input_tokens = max(1, int(spend / per_input)) if per_input > 0 else 1000
    output_tokens = int(input_tokens * OUTPUT_SHARE)
    cost = round(input_tokens * dollars_in + output_tokens * dollars_out, 8)
    hit = rng.random() < HIT_RATE
    return UsageRecord(
        request_id="", ts=ts, department=name, key_id=SYNTHETIC_KEY, user=SYNTHETIC_USER,
        endpoint="chat.completions", model_requested=model, model_used=model,
        provider="demo", status=200, input_tokens=input_tokens, output_tokens=output_tokens,
        cost_nanos=0 if hit else to_nanos(cost), saved_nanos=to_nanos(cost) if hit else 0,
        cache="hit-exact" if hit else "miss", latency_ms=round(rng.uniform(400, 3000), 1),
        extra={"synthetic": True})
