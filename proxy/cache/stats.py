"""Cache analytics counters: one flat `name -> number` table in the backend, summed on read.

Field names are `metric|sub|department|model|task`; every part comes from config or code
(a task the config does not name is counted as "other"), so the table stays small.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

SEP = "|"
_SAFE = re.compile(r"[^a-z0-9_.:-]")


def label(value: str | None, limit: int = 40) -> str:
    """A bounded, separator-free label from a header value (e.g. x-meterline-task)."""
    if not value:
        return "none"
    return _SAFE.sub("_", value.strip().lower())[:limit] or "none"


def field_name(metric: str, sub: str, department: str, model: str, task: str = "") -> str:
    return SEP.join((metric, sub, label(department), model.replace(SEP, "_"), task))


def request_field(result: str, kind: str, department: str, model: str, task: str) -> str:
    return field_name("req", f"{result}:{kind}", department, model, task)


def plain_field(metric: str, department: str, model: str) -> str:
    return field_name(metric, "", department, model)


def hit_field_names(kind: str, department: str, model: str, task: str) -> tuple[str, str]:
    """The fields a hit adds to: its count and its savings."""
    return (request_field("hit", kind, department, model, task),
            field_name("saved", kind, department, model, task))


def shadow_fields(kind: str, department: str, model: str, plausible: bool,
                  would_save: float) -> dict[str, float]:
    verdict = "plausible" if plausible else "implausible"
    return {field_name("shadow", f"{verdict}:{kind}", department, model): 1,
            plain_field("shadow_saved", department, model): would_save}


def verdict_field(accepted: bool, plausible: bool, department: str, model: str) -> str:
    """The match rule's decision on its best semantic candidate, against the real answer."""
    decision = "accept" if accepted else "reject"
    verdict = "plausible" if plausible else "implausible"
    return field_name("shadow_rule", f"{decision}_{verdict}", department, model)


def judge_fields(outcomes: list[str], department: str, model: str, covered: float,
                 uncovered: float) -> dict[str, float]:
    """One lookup's LLM judge calls: each outcome, and their spend split into the part the hit
    they led to saved back (`covered`) and the rest (`uncovered`: subtracted from savings)."""
    fields: dict[str, float] = {}
    for outcome in outcomes:
        name = field_name("judge", outcome, department, model)
        fields[name] = fields.get(name, 0) + 1
    if covered:
        fields[field_name("judge_cost", "covered", department, model)] = covered
    if uncovered:
        fields[field_name("judge_cost", "uncovered", department, model)] = uncovered
    return fields


def judge_verdict_field(same: bool, plausible: bool, department: str, model: str) -> str:
    """The LLM judge's verdict on a band candidate in shadow mode, against the real answer."""
    decision = "accept" if same else "reject"
    verdict = "plausible" if plausible else "implausible"
    return field_name("shadow_judge", f"{decision}_{verdict}", department, model)


def answer_text(completion: Mapping[str, Any]) -> str:
    """The visible text of an answer (content, or tool-call names and arguments)."""
    parts: list[str] = []
    for choice in completion.get("choices") or []:
        message = choice.get("message") or {}
        parts.append(message.get("content") or "")
        for call in message.get("tool_calls") or []:
            function = call.get("function") or {}
            parts.append(f"{function.get('name', '')}({function.get('arguments', '')})")
    return "\n".join(parts)


def _ratio(hits: float, misses: float) -> float:
    return round(hits / (hits + misses), 6) if hits + misses else 0.0


def _group() -> dict[str, float]:
    return {"hits": 0, "misses": 0, "savings": 0.0}


def _add(groups: dict[str, dict[str, float]], name: str, what: str, amount: float) -> None:
    groups.setdefault(name, _group())[what] += amount


def summarise(counters: Mapping[str, float], department: str | None) -> dict[str, Any]:
    """Totals and breakdowns; `department` limits everything to that department's requests."""
    verdicts = {f"{d}_{v}": 0 for d in ("accept", "reject") for v in ("plausible", "implausible")}
    out: dict[str, Any] = {
        "hits": 0, "misses": 0, "bypassed": 0, "savings": 0.0,
        "hits_by_kind": {"exact": 0, "semantic": 0}, "false_hit_reports": 0, "evicted": 0,
        "shadow": {"lookups": 0, "would_hit": 0, "plausible": 0, "implausible": 0,
                   "would_save": 0.0,
                   "rule": dict(verdicts), "judge": dict(verdicts)},
        "judge": {"outcomes": {}, "cost": 0.0, "uncovered_cost": 0.0},
    }
    groups: dict[str, dict[str, dict[str, float]]] = {
        "by_department": {}, "by_model": {}, "by_task": {}}
    for name, amount in counters.items():
        parts = name.split(SEP)
        if len(parts) != 5 or (department is not None and parts[2] != label(department)):
            continue
        _count(out, groups, parts, amount)
    for table in groups.values():
        for row in table.values():
            row["hit_rate"] = _ratio(row["hits"], row["misses"])
            row["savings"] = round(row["savings"], 8)
    judge = out["judge"]
    judge["calls"] = sum(n for k, n in judge["outcomes"].items() if k not in ("vetoed", "refused"))
    # hits already count net of their own judge calls; the judge spend no hit paid back is
    # taken off here
    out["net_savings"] = round(out["savings"] - judge["uncovered_cost"], 8)
    judge["cost"], judge["uncovered_cost"] = (round(judge["cost"], 8),
                                              round(judge["uncovered_cost"], 8))
    out["savings"] = round(out["savings"], 8)
    out["shadow"]["would_save"] = round(out["shadow"]["would_save"], 8)
    out["lookups"] = out["hits"] + out["misses"]
    out["hit_rate"] = _ratio(out["hits"], out["misses"])
    return {**out, **groups}


def _count(out: dict[str, Any], groups: dict[str, dict[str, dict[str, float]]],
           parts: list[str], amount: float) -> None:
    metric, sub, dept, model, task = parts
    keys = (("by_department", dept), ("by_model", model), ("by_task", task or "none"))
    if metric == "req":
        result, _, kind = sub.partition(":")
        if result == "hit":
            out["hits"] += int(amount)
            out["hits_by_kind"][kind] = out["hits_by_kind"].get(kind, 0) + int(amount)
        elif result == "miss":
            out["misses"] += int(amount)
        elif result == "bypass":
            out["bypassed"] += int(amount)
        elif result == "shadow":
            out["shadow"]["lookups"] += int(amount)
            out["shadow"]["would_hit"] += int(amount) if kind != "none" else 0
        if result in ("hit", "miss"):
            for table, name in keys:
                _add(groups[table], name, result + "es" if result == "miss" else "hits",
                     int(amount))
    elif metric == "saved":
        out["savings"] += amount
        for table, name in keys:
            _add(groups[table], name, "savings", amount)
    elif metric == "shadow":
        out["shadow"][sub.partition(":")[0]] += int(amount)
    elif metric == "shadow_rule":
        out["shadow"]["rule"][sub] = out["shadow"]["rule"].get(sub, 0) + int(amount)
    elif metric == "shadow_judge":
        out["shadow"]["judge"][sub] = out["shadow"]["judge"].get(sub, 0) + int(amount)
    elif metric == "judge":
        outcomes = out["judge"]["outcomes"]
        outcomes[sub] = outcomes.get(sub, 0) + int(amount)
    elif metric == "judge_cost":
        out["judge"]["cost"] += amount
        if sub == "uncovered":
            out["judge"]["uncovered_cost"] += amount
    elif metric == "shadow_saved":
        out["shadow"]["would_save"] += amount
    elif metric == "false_hit":
        out["false_hit_reports"] += int(amount)
    elif metric == "evicted":
        out["evicted"] += int(amount)
