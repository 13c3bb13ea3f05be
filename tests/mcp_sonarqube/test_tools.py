"""The MCP tools' logic (proxy/mcp_sonarqube/tools.py), called without an MCP session: SonarQube
JSON in (from a stand-in client that records what it was asked), typed models out."""

from __future__ import annotations

from typing import Any, cast

import pytest

from proxy.mcp_sonarqube import tools
from proxy.mcp_sonarqube.errors import SonarQubeError
from proxy.mcp_sonarqube.fixes import Answer, MeterlineClient
from proxy.mcp_sonarqube.sonarqube import SonarQubeClient


class FakeSonar:
    """The endpoints the tools call; answers from `replies`, or raises what is in `errors`."""

    def __init__(self, organization: str | None = None, **replies: Any) -> None:
        self.base_url = "https://sonar.test"
        self.organization = organization
        self.replies = replies
        self.errors: dict[str, SonarQubeError] = {}
        self.asked: list[tuple[str, Any]] = []

    def _answer(self, name: str, asked: Any) -> dict[str, Any]:
        self.asked.append((name, asked))
        if name in self.errors:
            raise self.errors[name]
        reply: dict[str, Any] = self.replies.get(name, {})
        return reply

    async def measures(self, project_key: str, metric_keys: tuple[str, ...]) -> dict[str, Any]:
        return self._answer("measures", (project_key, metric_keys))

    async def quality_gate(self, project_key: str) -> dict[str, Any]:
        return self._answer("quality_gate", project_key)

    async def search_issues(self, params: dict[str, Any], *, subject: str) -> dict[str, Any]:
        return self._answer("search_issues", (dict(params), subject))

    async def search_hotspots(self, params: dict[str, Any], *, subject: str) -> dict[str, Any]:
        return self._answer("search_hotspots", (dict(params), subject))

    async def hotspot(self, key: str) -> dict[str, Any]:
        return self._answer("hotspot", key)

    async def rule(self, rule_key: str) -> dict[str, Any]:
        return self._answer("rule", rule_key)

    async def source_lines(self, component: str, first: int, last: int) -> dict[str, Any]:
        return self._answer("source_lines", (component, first, last))

    async def search_projects(self, query: str | None, page: int, page_size: int
                              ) -> dict[str, Any]:
        return self._answer("search_projects", (query, page, page_size))


def sonar(fake: FakeSonar) -> SonarQubeClient:
    return cast(SonarQubeClient, fake)


class FakeLLM:
    def __init__(self, text: str) -> None:
        self.text = text
        self.prompts: list[str] = []

    async def ask(self, prompt: str) -> Answer:
        self.prompts.append(prompt)
        return Answer(self.text, "gpt-4o-mini", "miss", 0.0012)


@pytest.mark.parametrize(("severity", "levels"), [
    ("HIGH", ("HIGH",)), ("MEDIUM", ("HIGH", "MEDIUM")), ("LOW", ("HIGH", "MEDIUM", "LOW"))])
def test_at_least(severity: str, levels: tuple[str, ...]) -> None:
    assert tools.at_least(severity) == levels  # type: ignore[arg-type]


@pytest.mark.parametrize(("markup", "text"), [
    ("<p>Use <code>secrets</code> &amp; not <b>random</b></p>", "Use secrets & not random\n"),
    ("line<br>next<br/>last", "line\nnext\nlast"),
    ("<h2>Why</h2><ul><li>a</li><li>b</li></ul>", "Why\na\nb\n"),
    ("x &lt; y &#x27;q&#x27;", "x < y 'q'"),
    ("", ""),
])
def test_plain_text(markup: str, text: str) -> None:
    assert tools.plain_text(markup) == text


# -- get_project_quality ---------------------------------------------------------------------

async def test_project_quality_maps_measures_ratings_and_gate() -> None:
    fake = FakeSonar(
        measures={"component": {"name": "Payments", "measures": [
            {"metric": "bugs", "value": "3"}, {"metric": "coverage", "value": "81.5"},
            {"metric": "ncloc", "value": "12000"}, {"metric": "security_rating", "value": "2.0"},
            {"metric": "sqale_rating", "value": "1"}, {"metric": "vulnerabilities"},
            {"metric": "code_smells", "value": "n/a"}]}},
        quality_gate={"projectStatus": {"status": "ERROR", "conditions": [
            {"metricKey": "new_coverage", "status": "ERROR", "comparator": "LT",
             "errorThreshold": "80", "actualValue": "61.2"}]}})
    quality = await tools.project_quality(sonar(fake), "pay")
    assert (quality.project_key, quality.name, quality.url) == (
        "pay", "Payments", "https://sonar.test/dashboard?id=pay")
    assert (quality.bugs, quality.coverage_percent, quality.lines_of_code) == (3, 81.5, 12000)
    assert (quality.vulnerabilities, quality.code_smells) == (None, None)
    assert quality.ratings.model_dump() == {"reliability": None, "security": "B",
                                            "maintainability": "A", "security_review": None}
    assert quality.quality_gate.status == "ERROR"
    assert quality.quality_gate.conditions[0].model_dump() == {
        "metric": "new_coverage", "status": "ERROR", "comparator": "LT", "threshold": "80",
        "actual": "61.2"}
    assert fake.asked[0] == ("measures", ("pay", tools.MEASURES))


async def test_project_quality_of_a_project_never_analysed() -> None:
    quality = await tools.project_quality(sonar(FakeSonar(
        quality_gate={"projectStatus": {"status": "SOMETHING_NEW"}})), "fresh")
    assert quality.name == "fresh" and quality.quality_gate.status == "NONE"
    assert quality.quality_gate.conditions == [] and quality.bugs is None


# -- find_security_issues --------------------------------------------------------------------

ISSUES = {
    "paging": {"total": 45},
    "components": [{"key": "pay:src/app.py", "path": "src/app.py", "qualifier": "FIL"},
                   {"key": "pay", "qualifier": "TRK"}],
    "issues": [
        {"key": "I1", "project": "pay", "component": "pay:src/app.py", "line": 12,
         "rule": "python:S2068", "message": "hard-coded password", "issueStatus": "OPEN",
         "severity": "MAJOR", "impacts": [{"softwareQuality": "MAINTAINABILITY",
                                           "severity": "LOW"},
                                          {"softwareQuality": "SECURITY", "severity": "HIGH"}]},
        {"key": "I2", "project": "pay", "component": "pay:lib/x.py",
         "textRange": {"startLine": 7}, "rule": "r", "message": "m", "status": "OPEN",
         "severity": "CRITICAL"},
        {"key": "I3", "project": "pay", "component": "other:z.py", "rule": "r"},
    ]}
HOTSPOTS = {"paging": {"total": 3}, "hotspots": [
    {"key": "H1", "project": "pay", "component": "pay:a.py", "line": 3, "ruleKey": "s1",
     "vulnerabilityProbability": "HIGH", "message": "weak hash", "status": "TO_REVIEW"},
    {"key": "H2", "project": "pay", "component": "pay:b.py", "ruleKey": "s2",
     "vulnerabilityProbability": "LOW", "message": "cookie", "status": "TO_REVIEW"}]}


async def test_security_findings_for_a_project() -> None:
    fake = FakeSonar(search_issues=ISSUES, search_hotspots=HOTSPOTS)
    found = await tools.security_findings(sonar(fake), "MEDIUM", "pay", 2)
    assert fake.asked[0] == ("search_issues", (
        {"impactSoftwareQualities": "SECURITY", "impactSeverities": "HIGH,MEDIUM",
         "resolved": "false", "p": 2, "ps": tools.PAGE_SIZE, "projects": "pay"},
        "project 'pay'"))
    assert fake.asked[1] == ("search_hotspots", (
        {"projectKey": "pay", "status": "TO_REVIEW", "p": 2, "ps": tools.PAGE_SIZE},
        "project 'pay'"))
    first, second, third = found.vulnerabilities.items
    assert (first.key, first.severity, first.file, first.line, first.status) == (
        "I1", "HIGH", "src/app.py", 12, "OPEN")
    assert (second.severity, second.file, second.line) == ("CRITICAL", "lib/x.py", 7)
    assert (third.file, third.line, third.message, third.status) == (None, None, "", None)
    assert found.vulnerabilities.total == 45
    assert [h.key for h in found.hotspots.items] == ["H1"]  # LOW is below MEDIUM
    assert found.hotspots.total == 3
    assert found.has_more is True  # 2 * 20 < 45
    assert "hotspots.total counts every hotspot to review" in found.notes[0]


async def test_security_findings_across_projects_use_the_organization() -> None:
    fake = FakeSonar(organization="acme", search_issues={"issues": []})
    found = await tools.security_findings(sonar(fake), "HIGH", None, 1)
    params, subject = fake.asked[0][1]
    assert (params["organization"], params["impactSeverities"], subject) == (
        "acme", "HIGH", "issues")
    assert "projects" not in params
    assert [name for name, _ in fake.asked] == ["search_issues"]  # hotspots need a project
    assert found.hotspots.total == 0 and found.has_more is False
    assert found.notes == ["Security hotspots are listed per project: pass project_key to see "
                           "them."]


# -- list_projects ---------------------------------------------------------------------------

async def test_projects() -> None:
    fake = FakeSonar(search_projects={"paging": {"total": 2}, "components": [
        {"key": "pay", "name": "Payments"}, {"key": "web"}, {"name": "no key"}]})
    listed = await tools.projects(sonar(fake), "p", 3)
    assert [(p.key, p.name) for p in listed.projects] == [("pay", "Payments"), ("web", "web")]
    assert (listed.query, listed.page, listed.page_size, listed.total) == (
        "p", 3, tools.PAGE_SIZE, 2)
    assert fake.asked == [("search_projects", ("p", 3, tools.PAGE_SIZE))]


# -- suggest_fixes ---------------------------------------------------------------------------

HIGHLIGHTED = "<span class=\"k\">password</span> = &quot;hunter2&quot;"
SOURCES = {"sources": [{"line": 11, "code": "x = 1"}, {"line": 12, "code": HIGHLIGHTED}]}
ANSWER = "Read it from the environment.\n```diff\n-password = \"hunter2\"\n+password = env\n```\n"


async def test_fix_for_an_issue() -> None:
    fake = FakeSonar(search_issues=ISSUES, source_lines=SOURCES,
                     rule={"rule": {"name": "Credentials should not be hard-coded",
                                    "descriptionSections": [{"content": "<p>Why</p>"},
                                                            {"content": "<p>Fix</p>"}]}})
    llm = FakeLLM(ANSWER)
    fix = await tools.fix_suggestion(sonar(fake), cast(MeterlineClient, llm), "I1")
    assert fake.asked[0] == ("search_issues", ({"issues": "I1", "additionalFields": "_all"},
                                               "issue 'I1'"))
    assert ("source_lines", ("pay:src/app.py", 2, 22)) in fake.asked  # 10 lines each side
    assert fix.code == "    11 | x = 1\n>   12 | password = \"hunter2\""
    assert (fix.rule, fix.rule_name, fix.file, fix.line) == (
        "python:S2068", "Credentials should not be hard-coded", "src/app.py", 12)
    assert fix.explanation == "Read it from the environment."
    assert fix.patch == "-password = \"hunter2\"\n+password = env\n"
    assert (fix.model, fix.cache, fix.cost_usd) == ("gpt-4o-mini", "miss", 0.0012)
    prompt = llm.prompts[0]
    assert "Location: src/app.py, line 12" in prompt and "Why\n\nFix" in prompt


async def test_fix_for_a_hotspot_when_no_issue_has_that_key() -> None:
    fake = FakeSonar(search_issues={"issues": []}, source_lines={"sources": []}, hotspot={
        "rule": {"key": "python:S4790", "name": "Weak hash",
                 "riskDescription": "<p>MD5 is weak</p>", "fixRecommendations": "Use SHA-256"},
        "component": {"key": "pay:a.py", "path": "a.py"}, "message": "md5 used"})
    fix = await tools.fix_suggestion(sonar(fake), cast(MeterlineClient, FakeLLM("no patch")),
                                     "H1")
    assert (fix.rule, fix.rule_name, fix.file, fix.line) == ("python:S4790", "Weak hash", "a.py",
                                                             None)
    assert ("source_lines", ("pay:a.py", 1, 31)) in fake.asked  # no line: the top of the file
    assert fix.code == "(no source lines)"
    assert (fix.explanation, fix.patch) == ("no patch", None)


async def test_an_unknown_key_says_where_keys_come_from() -> None:
    fake = FakeSonar(search_issues={"issues": []})
    fake.errors["hotspot"] = SonarQubeError("not_found", "SonarQube has no hotspot 'X' (404)")
    with pytest.raises(SonarQubeError) as info:
        await tools.fix_suggestion(sonar(fake), cast(MeterlineClient, FakeLLM("")), "X")
    assert info.value.outcome == "not_found"
    assert info.value.message == ("SonarQube has no issue or hotspot 'X' (or the token can't see "
                                  "it). Keys come from find_security_issues.")


async def test_other_hotspot_failures_pass_through() -> None:
    fake = FakeSonar(search_issues={"issues": []})
    fake.errors["hotspot"] = SonarQubeError("timeout", "slow")
    with pytest.raises(SonarQubeError, match="slow"):
        await tools.fix_suggestion(sonar(fake), cast(MeterlineClient, FakeLLM("")), "X")


@pytest.mark.parametrize(("outcome", "degrades"), [("not_found", True), ("auth_failed", True),
                                                   ("unavailable", False)])
async def test_unreadable_source_is_said_or_raised(outcome: str, degrades: bool) -> None:
    fake = FakeSonar(search_issues=ISSUES, rule={"rule": {"htmlDesc": "<p>d</p>"}})
    fake.errors["source_lines"] = SonarQubeError(outcome, "no source")  # type: ignore[arg-type]
    llm = FakeLLM("ok")
    if not degrades:
        with pytest.raises(SonarQubeError):
            await tools.fix_suggestion(sonar(fake), cast(MeterlineClient, llm), "I1")
        return
    fix = await tools.fix_suggestion(sonar(fake), cast(MeterlineClient, llm), "I1")
    assert fix.code == "(source not available: no source)"
    assert "Rule description:\nd" in llm.prompts[0]


async def test_long_rule_descriptions_are_cut() -> None:
    fake = FakeSonar(search_issues=ISSUES, source_lines=SOURCES,
                     rule={"rule": {"mdDesc": "x" * 10_000}})
    llm = FakeLLM("ok")
    await tools.fix_suggestion(sonar(fake), cast(MeterlineClient, llm), "I1")
    assert "x" * tools.RULE_TEXT_CHARS + "\n" in llm.prompts[0]
    assert "x" * (tools.RULE_TEXT_CHARS + 1) not in llm.prompts[0]
