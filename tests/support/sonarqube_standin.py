"""A SonarQube Web API stand-in: the endpoints the MCP server uses, answering with the JSON shapes
SonarQube documents (paging objects, ``{"errors": [{"msg": ...}]}`` error bodies, impacts,
hotspots with ``vulnerabilityProbability``, ``api/sources/lines`` with highlighted HTML code).

Checks the bearer token like SonarQube (401 with an empty body), and fails on purpose:
``standin.fail("api/issues/search", 500)``, ``fail("*", 429)``, ``fail("*", "slow")``,
``"html"`` (a login page) or ``"garbage"`` (JSON of another shape).
Every request is recorded (path, query, whether the token matched).
"""

from __future__ import annotations

import asyncio
import html
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

PAYMENTS = "acme:payments"
WEB = "acme:web"
DB_FILE = "src/main/java/com/acme/payments/Db.java"
CONFIG_FILE = "src/main/java/com/acme/payments/Config.java"
SQL_ISSUE = "AZ3f1-sql-injection-0001"

PROJECTS = [
    {"key": PAYMENTS, "name": "Payments Service", "qualifier": "TRK", "project": PAYMENTS},
    {"key": WEB, "name": "Web Frontend", "qualifier": "TRK", "project": WEB},
    {"key": "acme:legacy-billing", "name": "Legacy Billing", "qualifier": "TRK",
     "project": "acme:legacy-billing"},
]

MEASURES = {
    PAYMENTS: {"bugs": "3", "vulnerabilities": "4", "code_smells": "57",
               "security_hotspots": "2", "coverage": "71.4", "duplicated_lines_density": "2.8",
               "ncloc": "12430", "reliability_rating": "3.0", "security_rating": "5.0",
               "sqale_rating": "1.0", "security_review_rating": "4.0"},
    WEB: {"bugs": "0", "vulnerabilities": "0", "code_smells": "12", "coverage": "88.0",
          "duplicated_lines_density": "0.0", "ncloc": "5120", "reliability_rating": "1.0",
          "security_rating": "1.0", "sqale_rating": "1.0"},
}

GATES = {
    PAYMENTS: {"status": "ERROR", "ignoredConditions": False, "caycStatus": "non-compliant",
               "conditions": [
                   {"status": "ERROR", "metricKey": "new_security_rating", "comparator": "GT",
                    "errorThreshold": "1", "actualValue": "5"},
                   {"status": "OK", "metricKey": "new_coverage", "comparator": "LT",
                    "errorThreshold": "80", "actualValue": "84.2"}],
               "periods": [{"index": 1, "mode": "PREVIOUS_VERSION",
                            "date": "2026-11-02T10:00:00+0000", "parameter": "1.4"}]},
    WEB: {"status": "OK", "ignoredConditions": False, "conditions": [], "periods": []},
}


def _issue(key: str, file: str, line: int, rule: str, severity: str, legacy: str,
           message: str) -> dict[str, Any]:
    return {
        "key": key, "rule": rule, "severity": legacy, "component": f"{PAYMENTS}:{file}",
        "project": PAYMENTS, "line": line, "hash": "a1b2c3",
        "textRange": {"startLine": line, "endLine": line, "startOffset": 8, "endOffset": 60},
        "flows": [], "status": "OPEN", "issueStatus": "OPEN", "message": message,
        "effort": "30min", "debt": "30min", "author": "dev@acme.test", "tags": ["cwe"],
        "creationDate": "2026-11-20T09:12:44+0000", "updateDate": "2026-11-20T09:12:44+0000",
        "type": "VULNERABILITY", "scope": "MAIN", "quickFixAvailable": False,
        "cleanCodeAttribute": "COMPLETE", "cleanCodeAttributeCategory": "INTENTIONAL",
        "impacts": [{"softwareQuality": "SECURITY", "severity": severity}],
        "messageFormattings": [], "codeVariants": [], "prioritizedRule": False,
    }


ISSUES = [
    _issue(SQL_ISSUE, DB_FILE, 12, "javasecurity:S3649", "HIGH", "BLOCKER",
           "Change this code to not construct SQL queries directly from user-controlled data."),
    _issue("AZ3f1-weak-cipher-0002", CONFIG_FILE, 7, "java:S5547", "HIGH", "CRITICAL",
           "Use a strong cipher algorithm."),
    _issue("AZ3f1-cookie-0003", CONFIG_FILE, 15, "java:S2092", "MEDIUM", "MAJOR",
           "Make sure creating this cookie without the \"secure\" flag is safe here."),
    _issue("AZ3f1-log-0004", DB_FILE, 5, "java:S5145", "LOW", "MINOR",
           "Change this code to not log user-controlled data."),
]

HOTSPOTS = [
    {"key": "AZ3h-password-0001", "component": f"{PAYMENTS}:{CONFIG_FILE}", "project": PAYMENTS,
     "securityCategory": "auth", "vulnerabilityProbability": "HIGH", "status": "TO_REVIEW",
     "line": 4, "message": "'PASSWORD' detected in this expression, review this potentially "
     "hard-coded password.", "author": "dev@acme.test", "creationDate": "2026-11-20T09:12:44+0000",
     "updateDate": "2026-11-20T09:12:44+0000", "ruleKey": "java:S2068",
     "textRange": {"startLine": 4, "endLine": 4, "startOffset": 4, "endOffset": 30},
     "flows": [], "messageFormattings": []},
    {"key": "AZ3h-random-0002", "component": f"{PAYMENTS}:{DB_FILE}", "project": PAYMENTS,
     "securityCategory": "weak-cryptography", "vulnerabilityProbability": "MEDIUM",
     "status": "TO_REVIEW", "line": 20, "message": "Make sure that using this pseudorandom "
     "number generator is safe here.", "author": "dev@acme.test",
     "creationDate": "2026-11-20T09:12:44+0000", "updateDate": "2026-11-20T09:12:44+0000",
     "ruleKey": "java:S2245", "flows": [], "messageFormattings": []},
]

RULES = {
    "javasecurity:S3649": {
        "key": "javasecurity:S3649", "repo": "javasecurity", "name": "Database queries should "
        "not be vulnerable to injection attacks", "severity": "BLOCKER", "status": "READY",
        "type": "VULNERABILITY", "lang": "java", "langName": "Java", "isTemplate": False,
        "tags": [], "sysTags": ["cwe", "sql"], "cleanCodeAttribute": "COMPLETE",
        "impacts": [{"softwareQuality": "SECURITY", "severity": "HIGH"}],
        "descriptionSections": [
            {"key": "root_cause", "content": "<p>Database injections (such as SQL injections) "
             "occur when a query is built by concatenating untrusted input.</p>"},
            {"key": "how_to_fix", "content": "<h4>How to fix it</h4><p>Use a <code>"
             "PreparedStatement</code> with bound parameters &amp; never concatenate.</p>"}],
        "educationPrinciples": ["defense_in_depth"], "params": []},
}

DB_SOURCE = [
    "package com.acme.payments;",
    "",
    "import java.sql.*;",
    "",
    "class Db {",
    "  private final Connection connection;",
    "",
    "  Db(Connection connection) { this.connection = connection; }",
    "",
    "  ResultSet findUser(String name) throws SQLException {",
    "    Statement statement = connection.createStatement();",
    "    return statement.executeQuery(\"SELECT * FROM users WHERE name = '\" + name + \"'\");",
    "  }",
    "}",
]


CONFIG_SOURCE = [
    "package com.acme.payments;",
    "",
    "class Config {",
    "  static final String PASSWORD = \"hunter2-prod\";",
    "  static final String CIPHER = \"DES/ECB/PKCS5Padding\";",
    "}",
]
SOURCES = {f"{PAYMENTS}:{DB_FILE}": DB_SOURCE, f"{PAYMENTS}:{CONFIG_FILE}": CONFIG_SOURCE}

HOTSPOT_RULES = {
    "java:S2068": {"key": "java:S2068", "name": "Credentials should not be hard-coded",
                   "securityCategory": "auth", "vulnerabilityProbability": "HIGH",
                   "riskDescription": "<p>Because it is easy to extract strings from an "
                   "application, credentials should not be hard-coded.</p>",
                   "vulnerabilityDescription": "<h2>Ask Yourself Whether</h2><ul><li>Credentials "
                   "allow access to a sensitive component.</li></ul>",
                   "fixRecommendations": "<h2>Recommended Secure Coding Practices</h2><p>Store "
                   "credentials in a vault or read them from the environment.</p>"},
}


def _highlight(code: str) -> str:
    """Escape and wrap keywords the way api/sources/lines highlights code."""
    escaped = html.escape(code, quote=False)
    for word in ("package", "import", "class", "private", "final", "return", "throws"):
        escaped = escaped.replace(f"{word} ", f'<span class="k">{word}</span> ')
    return escaped


def _errors(status: int, *messages: str) -> JSONResponse:
    return JSONResponse({"errors": [{"msg": m} for m in messages]}, status_code=status)


def _paging(request: Request, items: list[dict[str, Any]], default_size: int = 100
            ) -> tuple[list[dict[str, Any]], dict[str, int]]:
    page = int(request.query_params.get("p", 1))
    size = int(request.query_params.get("ps", default_size))
    start = (page - 1) * size
    return items[start:start + size], {"pageIndex": page, "pageSize": size, "total": len(items)}


def _file_components(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    files = sorted({i["component"] for i in items})
    comps = [{"key": f, "enabled": True, "qualifier": "FIL", "name": f.rsplit("/", 1)[-1],
              "longName": f.split(":", 2)[-1], "path": f.split(":", 2)[-1]} for f in files]
    if items:
        comps.append({"key": PAYMENTS, "enabled": True, "qualifier": "TRK",
                      "name": "Payments Service", "longName": "Payments Service"})
    return comps


@dataclass
class StandinState:
    token: str
    slow_seconds: float = 3.0
    faults: deque[tuple[str, int | str]] = field(default_factory=deque)
    requests: list[dict[str, Any]] = field(default_factory=list)

    def next_fault(self, path: str) -> int | str | None:
        for i, (where, fault) in enumerate(self.faults):
            if where in ("*", path):
                del self.faults[i]
                return fault
        return None


class SonarQubeStandin:
    """The app plus its state; ``fail`` queues a fault for the next request to a path."""

    def __init__(self, token: str) -> None:
        self.state = StandinState(token=token)
        self.app = Starlette(routes=[
            Route("/api/measures/component", self._measures),
            Route("/api/qualitygates/project_status", self._gate),
            Route("/api/issues/search", self._issues),
            Route("/api/hotspots/search", self._hotspots),
            Route("/api/hotspots/show", self._hotspot),
            Route("/api/rules/show", self._rule),
            Route("/api/sources/lines", self._lines),
            Route("/api/components/search", self._components),
        ], middleware=[])

    def fail(self, path: str, fault: int | str, times: int = 1) -> None:
        for _ in range(times):
            self.state.faults.append((path, fault))

    def requests_to(self, path: str) -> list[dict[str, Any]]:
        return [r for r in self.state.requests if r["path"] == path]

    async def _gatekeeper(self, request: Request) -> Response | None:
        path = request.url.path.lstrip("/")
        authorized = request.headers.get("authorization") == f"Bearer {self.state.token}"
        self.state.requests.append({"path": path, "query": dict(request.query_params),
                                    "authorized": authorized})
        fault = self.state.next_fault(path)
        if fault == "slow":
            await asyncio.sleep(self.state.slow_seconds)
        elif fault == 429:
            return Response(status_code=429, headers={"Retry-After": "30"})
        elif fault == 500:
            return _errors(500, "An error has occurred. Please contact your administrator")
        elif fault == 401:
            return Response(status_code=401)
        elif fault == "garbage":  # JSON, but not the documented shape
            return JSONResponse({"component": "?", "projectStatus": [], "issues": "?"})
        elif fault == "html":
            return Response("<html><body>Login</body></html>", media_type="text/html")
        if not authorized:
            return Response(status_code=401)  # SonarQube answers a bad token with no body
        return None

    async def _measures(self, request: Request) -> Response:
        if refused := await self._gatekeeper(request):
            return refused
        key = request.query_params.get("component", "")
        if key not in MEASURES:
            return _errors(404, f"Component key '{key}' not found")
        wanted = request.query_params.get("metricKeys", "").split(",")
        measures = [{"metric": m, "value": v, "bestValue": v in ("0", "0.0", "1.0")}
                    for m, v in MEASURES[key].items() if m in wanted]
        name = next(p["name"] for p in PROJECTS if p["key"] == key)
        return JSONResponse({"component": {"key": key, "name": name, "qualifier": "TRK",
                                           "measures": measures}})

    async def _gate(self, request: Request) -> Response:
        if refused := await self._gatekeeper(request):
            return refused
        key = request.query_params.get("projectKey", "")
        if key not in GATES:
            return _errors(404, f"Project '{key}' not found")
        return JSONResponse({"projectStatus": GATES[key]})

    async def _issues(self, request: Request) -> Response:
        if refused := await self._gatekeeper(request):
            return refused
        q = request.query_params
        found = ISSUES
        if project := q.get("projects"):
            if project not in {p["key"] for p in PROJECTS}:
                return _errors(404, f"Project '{project}' not found")
            found = [i for i in found if i["project"] == project]
        if keys := q.get("issues"):
            found = [i for i in found if i["key"] in keys.split(",")]
        if qualities := q.get("impactSoftwareQualities"):
            found = [i for i in found if any(
                imp["softwareQuality"] in qualities.split(",") for imp in i["impacts"])]
        if severities := q.get("impactSeverities"):
            for value in severities.split(","):
                if value not in ("INFO", "LOW", "MEDIUM", "HIGH", "BLOCKER"):
                    return _errors(400, f"Value of parameter 'impactSeverities' ({value}) must "
                                        "be one of: [INFO, LOW, MEDIUM, HIGH, BLOCKER]")
            found = [i for i in found if any(
                imp["severity"] in severities.split(",") for imp in i["impacts"])]
        page, paging = _paging(request, found)
        return JSONResponse({
            "total": paging["total"], "p": paging["pageIndex"], "ps": paging["pageSize"],
            "paging": paging, "effortTotal": 30 * len(found), "issues": page,
            "components": _file_components(page), "facets": []})

    async def _hotspots(self, request: Request) -> Response:
        if refused := await self._gatekeeper(request):
            return refused
        project = request.query_params.get("projectKey")
        if not project:
            return _errors(400, "A value must be provided for either parameter 'projectKey' "
                                "or parameter 'hotspots'")
        if project not in {p["key"] for p in PROJECTS}:
            return _errors(404, f"Project '{project}' not found")
        status = request.query_params.get("status")
        found = [h for h in HOTSPOTS if h["project"] == project
                 and (status is None or h["status"] == status)]
        page, paging = _paging(request, found)
        return JSONResponse({"paging": paging, "hotspots": page,
                             "components": _file_components(page)})

    async def _hotspot(self, request: Request) -> Response:
        if refused := await self._gatekeeper(request):
            return refused
        key = request.query_params.get("hotspot", "")
        found = [h for h in HOTSPOTS if h["key"] == key]
        if not found:
            return _errors(404, f"Hotspot '{key}' does not exist")
        hotspot = found[0]
        path = hotspot["component"].split(":", 2)[-1]
        return JSONResponse({
            "key": key, "status": hotspot["status"], "line": hotspot["line"],
            "hash": "d41d8cd9", "message": hotspot["message"], "author": hotspot["author"],
            "creationDate": hotspot["creationDate"], "updateDate": hotspot["updateDate"],
            "component": {"key": hotspot["component"], "qualifier": "FIL",
                          "name": path.rsplit("/", 1)[-1], "longName": path, "path": path},
            "project": {"key": PAYMENTS, "qualifier": "TRK", "name": "Payments Service",
                        "longName": "Payments Service"},
            "rule": HOTSPOT_RULES.get(hotspot["ruleKey"], {"key": hotspot["ruleKey"],
                                                           "name": hotspot["ruleKey"]}),
            "changelog": [], "comment": [], "users": [], "canChangeStatus": True,
            "flows": [], "messageFormattings": [], "codeVariants": []})

    async def _rule(self, request: Request) -> Response:
        if refused := await self._gatekeeper(request):
            return refused
        key = request.query_params.get("key", "")
        if key not in RULES:
            return _errors(404, f"Rule not found: {key}")
        return JSONResponse({"rule": RULES[key], "actives": []})

    async def _lines(self, request: Request) -> Response:
        if refused := await self._gatekeeper(request):
            return refused
        key = request.query_params.get("key", "")
        if key not in SOURCES:
            return _errors(404, f"Component key '{key}' not found")
        source = SOURCES[key]
        first = int(request.query_params.get("from", 1))
        last = min(int(request.query_params.get("to", len(source))), len(source))
        sources = [{"line": n, "code": _highlight(source[n - 1]), "scmRevision": "9f3e1c2",
                    "scmAuthor": "dev@acme.test", "scmDate": "2026-11-20T09:12:44+0000",
                    "duplicated": False, "isNew": n >= 10}
                   for n in range(max(1, first), last + 1)]
        return JSONResponse({"sources": sources})

    async def _components(self, request: Request) -> Response:
        if refused := await self._gatekeeper(request):
            return refused
        q = request.query_params
        if q.get("qualifiers") != "TRK":
            return _errors(400, "The 'qualifiers' parameter is missing")
        query = q.get("q")
        if query is not None and len(query) < 2:
            return _errors(400, "'q' length (1) is shorter than the minimum authorized (2)")
        found = [p for p in PROJECTS if query is None or query.lower() in p["name"].lower()
                 or query == p["key"]]
        page, paging = _paging(request, found)
        return JSONResponse({"paging": paging, "components": page})
