"""What the tools return: pydantic models, so every tool publishes an output schema and answers
with structured content as well as text."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

Rating = Literal["A", "B", "C", "D", "E"]
Severity = Literal["HIGH", "MEDIUM", "LOW"]


class GateCondition(BaseModel):
    metric: str = Field(description="SonarQube metric key, e.g. new_coverage")
    status: str = Field(description="OK or ERROR")
    comparator: str | None = Field(None, description="GT or LT")
    threshold: str | None = Field(None, description="the error threshold")
    actual: str | None = Field(None, description="the measured value")


class QualityGate(BaseModel):
    status: Literal["OK", "WARN", "ERROR", "NONE"] = Field(
        description="OK passes; ERROR fails; NONE: no gate computed yet")
    conditions: list[GateCondition]


class Ratings(BaseModel):
    reliability: Rating | None = None
    security: Rating | None = None
    maintainability: Rating | None = None
    security_review: Rating | None = None


class ProjectQuality(BaseModel):
    project_key: str
    name: str
    quality_gate: QualityGate
    bugs: int | None
    vulnerabilities: int | None
    code_smells: int | None
    security_hotspots: int | None
    coverage_percent: float | None
    duplicated_lines_percent: float | None
    lines_of_code: int | None
    ratings: Ratings
    url: str = Field(description="the project's dashboard in SonarQube")


class Finding(BaseModel):
    key: str = Field(description="issue or hotspot key (suggest_fixes takes either)")
    kind: Literal["vulnerability", "hotspot"]
    severity: str = Field(description="impact severity, or a hotspot's vulnerability probability")
    project: str
    file: str | None
    line: int | None
    rule: str
    message: str
    status: str | None


class FindingPage(BaseModel):
    total: int = Field(description="matches on the server across all pages")
    items: list[Finding]


class SecurityFindings(BaseModel):
    project_key: str | None
    min_severity: Severity
    page: int
    page_size: int
    vulnerabilities: FindingPage
    hotspots: FindingPage
    has_more: bool = Field(description="true when a next page has more vulnerabilities or hotspots")
    notes: list[str] = Field(default_factory=list)


class FixSuggestion(BaseModel):
    issue_key: str
    rule: str
    rule_name: str
    file: str | None
    line: int | None
    message: str
    code: str = Field(description="the lines around the issue, numbered, as sent to the LLM")
    explanation: str
    patch: str | None = Field(description="unified diff; null when the model proposed none")
    model: str = Field(description="the model Meterline answered with")
    cache: str | None = Field(description="Meterline's x-meterline-cache: hit-exact, miss ...")
    cost_usd: float | None = Field(description="what this answer was charged to the key's "
                                               "department (0 for a cache hit)")


class Project(BaseModel):
    key: str
    name: str


class ProjectList(BaseModel):
    query: str | None
    page: int
    page_size: int
    total: int
    projects: list[Project]
