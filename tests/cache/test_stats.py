"""Cache analytics counters (proxy/cache/stats.py): bounded labels, field names, summaries."""

from __future__ import annotations

import pytest

from proxy.cache.stats import (
    SEP,
    answer_text,
    field_name,
    hit_field_names,
    judge_fields,
    judge_verdict_field,
    label,
    plain_field,
    request_field,
    shadow_fields,
    summarise,
)


@pytest.mark.parametrize(("raw", "expected"), [
    (None, "none"),
    ("", "none"),
    ("Summarise", "summarise"),
    ("  FAQ-bot v2  ", "faq-bot_v2"),
    ("a|b", "a_b"),
    ("résumé", "r_sum_"),
    ("ns:task.v1", "ns:task.v1"),
    ("x" * 100, "x" * 40),
])
def test_label_is_bounded_and_separator_free(raw: str | None, expected: str) -> None:
    assert label(raw) == expected
    assert SEP not in label(raw)


def test_label_limit() -> None:
    assert label("abcdef", limit=3) == "abc"


def test_field_names_have_five_parts_whatever_the_inputs() -> None:
    name = field_name("req", "hit:exact", "Sales|EU", "vendor|model", "task")
    assert name.split(SEP) == ["req", "hit:exact", "sales_eu", "vendor_model", "task"]
    assert request_field("miss", "none", "d", "m", "t") == "req|miss:none|d|m|t"
    assert plain_field("evicted", "d", "m") == "evicted||d|m|"


def test_hit_and_shadow_fields() -> None:
    assert hit_field_names("semantic", "d", "m", "t") == (
        "req|hit:semantic|d|m|t", "saved|semantic|d|m|t")
    assert shadow_fields("exact", "d", "m", False, 0.5) == {
        "shadow|implausible:exact|d|m|": 1, "shadow_saved||d|m|": 0.5}
    assert "shadow|plausible:exact|d|m|" in shadow_fields("exact", "d", "m", True, 0)


def test_answer_text_covers_content_and_tool_calls() -> None:
    completion = {"choices": [
        {"message": {"content": "hello"}},
        {"message": {"content": None, "tool_calls": [
            {"function": {"name": "f", "arguments": '{"x":1}'}}, {}]}},
        {},
    ]}
    assert answer_text(completion) == 'hello\n\nf({"x":1})\n()\n'
    assert answer_text({}) == ""


def counters() -> dict[str, float]:
    table: dict[str, float] = {}
    for hits, saved, amount in (
            (*hit_field_names("exact", "sales", "m1", "faq"), 0.1),
            (*hit_field_names("semantic", "sales", "m2", ""), 0.2),
            (*hit_field_names("exact", "eng", "m1", "faq"), 0.4)):
        table[hits] = table.get(hits, 0) + 1
        table[saved] = table.get(saved, 0) + amount
    table[request_field("miss", "none", "sales", "m1", "faq")] = 2
    table[request_field("miss", "none", "eng", "m1", "faq")] = 1
    table[request_field("bypass", "none", "sales", "m1", "")] = 5
    table[request_field("shadow", "exact", "sales", "m1", "")] = 3
    table[request_field("shadow", "none", "sales", "m1", "")] = 1
    table.update(shadow_fields("exact", "sales", "m1", True, 0.3))
    table[judge_verdict_field(True, False, "sales", "m1")] = 1
    table.update(judge_fields(["different", "same"], "sales", "m2", 0.01, 0.02))
    table.update(judge_fields(["timeout"], "eng", "m1", 0.0, 0.0))
    table.update(judge_fields(["vetoed"], "eng", "m1", 0.0, 0.0))
    table[plain_field("false_hit", "sales", "m1")] = 1
    table[plain_field("evicted", "eng", "m1")] = 7
    table["garbage-without-separators"] = 99
    table["a|b|c"] = 99
    return table


def test_summarise_everything() -> None:
    out = summarise(counters(), None)
    assert (out["hits"], out["misses"], out["lookups"]) == (3, 3, 6)
    assert out["hit_rate"] == 0.5
    assert out["hits_by_kind"] == {"exact": 2, "semantic": 1}
    assert out["savings"] == pytest.approx(0.7)
    assert out["bypassed"] == 5
    assert out["false_hit_reports"] == 1 and out["evicted"] == 7
    assert out["shadow"] == {"lookups": 4, "would_hit": 3, "plausible": 1, "implausible": 0,
                             "would_save": 0.3,
                             "rule": {"accept_plausible": 0, "accept_implausible": 0,
                                      "reject_plausible": 0, "reject_implausible": 0},
                             "judge": {"accept_plausible": 0, "accept_implausible": 1,
                                       "reject_plausible": 0, "reject_implausible": 0}}
    # judge calls made (vetoed: none), their spend, and the savings net of what no hit paid back
    assert out["judge"] == {"outcomes": {"different": 1, "same": 1, "timeout": 1, "vetoed": 1},
                            "calls": 3, "cost": pytest.approx(0.03),
                            "uncovered_cost": pytest.approx(0.02)}
    assert out["net_savings"] == pytest.approx(0.68)
    assert out["by_department"]["sales"] == {"hits": 2, "misses": 2, "savings": 0.3,
                                             "hit_rate": 0.5}
    assert out["by_department"]["eng"]["hit_rate"] == 0.5
    assert out["by_model"]["m2"] == {"hits": 1, "misses": 0, "savings": 0.2, "hit_rate": 1.0}
    assert set(out["by_task"]) == {"faq", "none"}


def test_summarise_one_department_sees_only_its_counters() -> None:
    out = summarise(counters(), "Sales")  # matched through the same label mapping
    assert (out["hits"], out["misses"]) == (2, 2)
    assert set(out["by_department"]) == {"sales"}
    assert out["evicted"] == 0
    assert summarise(counters(), "nobody")["lookups"] == 0


def test_summarise_empty_table_has_zero_rates_not_errors() -> None:
    out = summarise({}, None)
    assert out["hit_rate"] == 0.0 and out["lookups"] == 0 and out["savings"] == 0.0
    assert out["by_department"] == {} and out["by_model"] == {} and out["by_task"] == {}
