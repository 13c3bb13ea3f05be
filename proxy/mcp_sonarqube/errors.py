"""Failures a tool anticipates: each has an outcome (a metrics label) and a message that says
what to fix. The server turns them into MCP tool errors; nothing here carries a credential."""

from __future__ import annotations

from typing import Literal

Outcome = Literal["invalid_input", "auth_failed", "not_found", "rate_limited", "timeout",
                  "unavailable", "sonarqube_error", "llm_error"]


class ToolFailure(Exception):
    """A failure the caller can act on; ``outcome`` is one of ``metrics.MCP_OUTCOMES``."""

    def __init__(self, outcome: Outcome, message: str) -> None:
        super().__init__(message)
        self.outcome: Outcome = outcome
        self.message = message


class SonarQubeError(ToolFailure):
    """SonarQube answered with an error, too slowly, or not at all."""


class MeterlineError(ToolFailure):
    """The LLM call through Meterline failed."""

    def __init__(self, message: str) -> None:
        super().__init__("llm_error", message)
