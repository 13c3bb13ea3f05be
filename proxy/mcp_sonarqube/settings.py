"""Settings of the SonarQube MCP server, read from the environment the CLI hands over.

The token is only ever taken from the environment (never a file in the repository) and is kept
out of ``repr`` so it can't reach a log line or a traceback.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from proxy.settings import SettingsError, seconds

DEFAULT_PROXY_URL = "http://127.0.0.1:8080"
DEFAULT_MODEL = "gpt-4o-mini"


def _url(env: Mapping[str, str], key: str, default: str | None) -> str:
    raw = (env.get(key) or default or "").strip()
    if not raw:
        raise SettingsError(
            f"Config '{key}' is not set. Set it to the SonarQube or SonarCloud base URL, "
            "e.g. https://sonarcloud.io or https://sonar.example.com.")
    if not raw.startswith(("http://", "https://")):
        raise SettingsError(f"Config '{key}' has value '{raw}'. Not an http(s) URL.")
    return raw.rstrip("/")


@dataclass(frozen=True)
class SonarSettings:
    """Where SonarQube and Meterline are, and the credentials for each."""

    sonar_url: str
    sonar_token: str = field(repr=False)
    organization: str | None = None  # SonarCloud needs it to list projects
    timeout_s: float = 10.0
    proxy_url: str = DEFAULT_PROXY_URL
    api_key: str | None = field(default=None, repr=False)  # an engineering key for Meterline
    model: str = DEFAULT_MODEL
    llm_timeout_s: float = 120.0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> SonarSettings:
        token = (env.get("SONAR_TOKEN") or "").strip()
        if not token:
            raise SettingsError(
                "Config 'SONAR_TOKEN' is not set. Create a user token in SonarQube "
                "(My Account > Security) and pass it in the environment, not in a file.")
        return cls(
            sonar_url=_url(env, "SONAR_HOST_URL", None),
            sonar_token=token,
            organization=env.get("SONAR_ORGANIZATION") or None,
            timeout_s=seconds(env, "SONAR_TIMEOUT_S", 10.0, allow_zero=False),
            proxy_url=_url(env, "MET_MCP_PROXY_URL", DEFAULT_PROXY_URL),
            api_key=env.get("MET_MCP_API_KEY") or None,
            model=env.get("MET_MCP_MODEL") or DEFAULT_MODEL,
            llm_timeout_s=seconds(env, "MET_MCP_LLM_TIMEOUT_S", 120.0, allow_zero=False),
        )
