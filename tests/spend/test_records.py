"""Usage records: exact nano-dollar costs, and records written before them still read right."""

from __future__ import annotations

import orjson

from proxy.spend.records import UsageRecord
from tests.spend_helpers import T0, make_record


def test_a_record_round_trips_its_cost_in_nano_dollars() -> None:
    record = make_record("a", T0, cost_nanos=22_350, saved_nanos=75)
    data = orjson.loads(orjson.dumps(record.to_dict()))
    assert (data["cost_nanos"], data["cost"], data["saved"]) == (22_350, 2.235e-05, 7.5e-08)
    assert UsageRecord.from_dict(data) == record


def test_records_written_in_dollars_by_older_versions_read_exactly() -> None:
    old = make_record("b", T0).to_dict()
    for name in ("cost_nanos", "saved_nanos"):
        del old[name]
    old["cost"], old["saved"] = 2.2e-05, 123.456789  # micro-dollar amounts, as floats
    record = UsageRecord.from_dict(old)
    assert (record.cost_nanos, record.saved_nanos) == (22_000, 123_456_789_000)
