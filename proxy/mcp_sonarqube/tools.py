"""The tools' logic: SonarQube JSON in, the models of ``models.py`` out.

Each function takes the clients it needs, so it can be called without an MCP session.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from typing import Any

from proxy.mcp_sonarqube.errors import SonarQubeError
from proxy.mcp_sonarqube.fixes import MeterlineClient, build_prompt, split_answer
from proxy.mcp_sonarqube.models import (
    Finding,
    FindingPage,
    FixSuggestion,
    GateCondition,
    Project,
    ProjectList,
    ProjectQuality,
    QualityGate,
    Rating,
    Ratings,
    SecurityFindings,
    Severity,
)
from proxy.mcp_sonarqube.sonarqube import SonarQubeClient

PAGE_SIZE = 20
CONTEXT_LINES = 10  # lines of code on each side of an issue sent to the LLM
RULE_TEXT_CHARS = 4000
MEASURES = ("bugs", "vulnerabilities", "code_smells", "security_hotspots", "coverage",
            "duplicated_lines_density", "ncloc", "reliability_rating", "security_rating",
            "sqale_rating", "security_review_rating")
RATINGS: dict[str, Rating] = {"1": "A", "2": "B", "3": "C", "4": "D", "5": "E"}
SEVERITY_ORDER: tuple[Severity, ...] = ("HIGH", "MEDIUM", "LOW")
TAG = re.compile(r"<[^>]+>")
BLOCK_END = re.compile(r"</(p|li|h\d|pre|div)>|<br\s*/?>", re.IGNORECASE)


def at_least(severity: Severity) -> tuple[Severity, ...]:
    """HIGH -> (HIGH,); MEDIUM -> (HIGH, MEDIUM); LOW -> all three."""
    return SEVERITY_ORDER[: SEVERITY_ORDER.index(severity) + 1]


def plain_text(markup: str) -> str:
    """SonarQube's HTML (rule descriptions, highlighted source) as plain text."""
    return html.unescape(TAG.sub("", BLOCK_END.sub("\n", markup)))


# -- get_project_quality ---------------------------------------------------------------------


def _number(measures: dict[str, str], key: str) -> float | None:
    raw = measures.get(key)
    try:
        return float(raw) if raw is not None else None
    except ValueError:
        return None


def _count(measures: dict[str, str], key: str) -> int | None:
    value = _number(measures, key)
    return int(value) if value is not None else None


def _rating(measures: dict[str, str], key: str) -> Rating | None:
    value = _number(measures, key)
    return RATINGS.get(str(int(value))) if value is not None else None


async def project_quality(sonar: SonarQubeClient, project_key: str) -> ProjectQuality:
    component = (await sonar.measures(project_key, MEASURES)).get("component", {})
    status = (await sonar.quality_gate(project_key)).get("projectStatus", {})
    values = {m["metric"]: str(m["value"]) for m in component.get("measures", [])
              if "value" in m}
    conditions = [GateCondition(
        metric=c.get("metricKey", ""), status=c.get("status", ""), comparator=c.get("comparator"),
        threshold=c.get("errorThreshold"), actual=c.get("actualValue"))
        for c in status.get("conditions", [])]
    gate_status = status.get("status", "NONE")
    return ProjectQuality(
        project_key=project_key, name=component.get("name", project_key),
        quality_gate=QualityGate(
            status=gate_status if gate_status in ("OK", "WARN", "ERROR") else "NONE",
            conditions=conditions),
        bugs=_count(values, "bugs"), vulnerabilities=_count(values, "vulnerabilities"),
        code_smells=_count(values, "code_smells"),
        security_hotspots=_count(values, "security_hotspots"),
        coverage_percent=_number(values, "coverage"),
        duplicated_lines_percent=_number(values, "duplicated_lines_density"),
        lines_of_code=_count(values, "ncloc"),
        ratings=Ratings(reliability=_rating(values, "reliability_rating"),
                        security=_rating(values, "security_rating"),
                        maintainability=_rating(values, "sqale_rating"),
                        security_review=_rating(values, "security_review_rating")),
        url=f"{sonar.base_url}/dashboard?id={project_key}")


# -- find_security_issues --------------------------------------------------------------------


def _file(item: dict[str, Any], paths: dict[str, str]) -> str | None:
    component, project = str(item.get("component", "")), str(item.get("project", ""))
    if component in paths:
        return paths[component]
    if project and component.startswith(project + ":"):
        return component[len(project) + 1:]
    return None


def _paths(data: dict[str, Any]) -> dict[str, str]:
    return {c["key"]: c.get("path") or c.get("longName") or c["key"]
            for c in data.get("components", []) if "key" in c and c.get("qualifier") != "TRK"}


def _line(item: dict[str, Any]) -> int | None:
    line = item.get("line") or (item.get("textRange") or {}).get("startLine")
    return int(line) if line else None


def _issue_severity(issue: dict[str, Any]) -> str:
    for impact in issue.get("impacts", []):
        if impact.get("softwareQuality") == "SECURITY":
            return str(impact.get("severity", ""))
    return str(issue.get("severity", ""))


def _vulnerabilities(data: dict[str, Any]) -> FindingPage:
    paths = _paths(data)
    items = [Finding(
        key=i["key"], kind="vulnerability", severity=_issue_severity(i),
        project=i.get("project", ""), file=_file(i, paths), line=_line(i), rule=i.get("rule", ""),
        message=i.get("message", ""), status=i.get("issueStatus") or i.get("status"))
        for i in data.get("issues", [])]
    return FindingPage(total=int(data.get("paging", {}).get("total", len(items))), items=items)


def _hotspots(data: dict[str, Any], levels: tuple[Severity, ...]) -> FindingPage:
    paths = _paths(data)
    items = [Finding(
        key=h["key"], kind="hotspot", severity=h.get("vulnerabilityProbability", ""),
        project=h.get("project", ""), file=_file(h, paths), line=_line(h),
        rule=h.get("ruleKey", ""), message=h.get("message", ""), status=h.get("status"))
        for h in data.get("hotspots", []) if h.get("vulnerabilityProbability") in levels]
    return FindingPage(total=int(data.get("paging", {}).get("total", len(items))), items=items)


async def security_findings(sonar: SonarQubeClient, severity: Severity,
                            project_key: str | None, page: int) -> SecurityFindings:
    levels = at_least(severity)
    params: dict[str, str | int] = {
        "impactSoftwareQualities": "SECURITY", "impactSeverities": ",".join(levels),
        "resolved": "false", "p": page, "ps": PAGE_SIZE}
    subject = f"project '{project_key}'" if project_key else "issues"
    if project_key:
        params["projects"] = project_key
    elif sonar.organization:
        params["organization"] = sonar.organization
    vulnerabilities = _vulnerabilities(await sonar.search_issues(params, subject=subject))
    notes = []
    if project_key:
        hotspots = _hotspots(await sonar.search_hotspots({
            "projectKey": project_key, "status": "TO_REVIEW", "p": page, "ps": PAGE_SIZE},
            subject=subject), levels)
        notes.append("hotspots.total counts every hotspot to review; SonarQube can't filter "
                     "hotspots by probability, so items holds this page's hotspots at or above "
                     "the severity.")
    else:
        hotspots = FindingPage(total=0, items=[])
        notes.append("Security hotspots are listed per project: pass project_key to see them.")
    shown = page * PAGE_SIZE
    return SecurityFindings(
        project_key=project_key, min_severity=severity, page=page, page_size=PAGE_SIZE,
        vulnerabilities=vulnerabilities, hotspots=hotspots,
        has_more=shown < vulnerabilities.total or shown < hotspots.total, notes=notes)


# -- list_projects ---------------------------------------------------------------------------


async def projects(sonar: SonarQubeClient, query: str | None, page: int) -> ProjectList:
    data = await sonar.search_projects(query, page, PAGE_SIZE)
    found = [Project(key=c["key"], name=c.get("name", c["key"]))
             for c in data.get("components", []) if "key" in c]
    total = int(data.get("paging", {}).get("total", len(found)))
    return ProjectList(query=query, page=page, page_size=PAGE_SIZE, total=total, projects=found)


# -- suggest_fixes ---------------------------------------------------------------------------


@dataclass(frozen=True)
class FixTarget:
    """The finding to fix, from an issue or a security hotspot."""

    key: str
    rule: str
    rule_name: str
    rule_text: str
    component: str
    file: str | None
    line: int | None
    message: str


async def _issue_target(sonar: SonarQubeClient, key: str) -> FixTarget | None:
    data = await sonar.search_issues({"issues": key, "additionalFields": "_all"},
                                     subject=f"issue '{key}'")
    if not data.get("issues"):
        return None
    issue: dict[str, Any] = data["issues"][0]
    rule_key = str(issue.get("rule", ""))
    rule = (await sonar.rule(rule_key)).get("rule", {})
    return FixTarget(key=key, rule=rule_key, rule_name=str(rule.get("name", rule_key)),
                  rule_text=_rule_text(rule), component=str(issue.get("component", "")),
                  file=_file(issue, _paths(data)), line=_line(issue),
                  message=str(issue.get("message", "")))


async def _hotspot_target(sonar: SonarQubeClient, key: str) -> FixTarget:
    try:
        hotspot = await sonar.hotspot(key)
    except SonarQubeError as exc:
        if exc.outcome != "not_found":
            raise
        raise SonarQubeError("not_found", (
            f"SonarQube has no issue or hotspot '{key}' (or the token can't see it). Keys come "
            "from find_security_issues.")) from None
    rule, component = hotspot.get("rule", {}), hotspot.get("component", {})
    sections = [{"content": rule.get(part, "")} for part in (
        "riskDescription", "vulnerabilityDescription", "fixRecommendations")]
    return FixTarget(key=key, rule=str(rule.get("key", "")), rule_name=str(rule.get("name", "")),
                  rule_text=_rule_text({"descriptionSections": sections}),
                  component=str(component.get("key", "")),
                  file=component.get("path") or component.get("longName"), line=_line(hotspot),
                  message=str(hotspot.get("message", "")))


def _rule_text(rule: dict[str, Any]) -> str:
    sections = rule.get("descriptionSections") or []
    markup = "\n".join(str(s.get("content", "")) for s in sections) if sections else str(
        rule.get("htmlDesc") or rule.get("mdDesc") or "")
    text = re.sub(r"\n{3,}", "\n\n", plain_text(markup)).strip()
    return text[:RULE_TEXT_CHARS] or "(no description)"


async def _code(sonar: SonarQubeClient, component: str, line: int | None) -> str:
    first = max(1, (line or 1) - CONTEXT_LINES)
    last = (line or 1) + CONTEXT_LINES * (1 if line else 3)
    try:
        data = await sonar.source_lines(component, first, last)
    except SonarQubeError as exc:
        if exc.outcome not in ("not_found", "auth_failed"):
            raise
        return f"(source not available: {exc.message})"
    rows = [(int(s.get("line", 0)), plain_text(str(s.get("code", ""))))
            for s in data.get("sources", [])]
    return "\n".join(f"{'>' if n == line else ' '}{n:>5} | {code}" for n, code in rows) or (
        "(no source lines)")


async def fix_suggestion(sonar: SonarQubeClient, llm: MeterlineClient,
                         key: str) -> FixSuggestion:
    target = await _issue_target(sonar, key) or await _hotspot_target(sonar, key)
    code = await _code(sonar, target.component, target.line)
    answer = await llm.ask(build_prompt(
        rule=target.rule, rule_name=target.rule_name, rule_text=target.rule_text,
        file=target.file, line=target.line, message=target.message, code=code))
    explanation, patch = split_answer(answer.text)
    return FixSuggestion(
        issue_key=key, rule=target.rule, rule_name=target.rule_name, file=target.file,
        line=target.line, message=target.message, code=code, explanation=explanation,
        patch=patch, model=answer.model, cache=answer.cache, cost_usd=answer.cost_usd)
