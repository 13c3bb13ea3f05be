"""Settings of the SonarQube MCP server (proxy/mcp_sonarqube/settings.py). The CLI-facing error
cases are in tests/mcp_sonarqube/test_cli.py; these cover defaults, every variable and bounds."""

from __future__ import annotations

import pytest

from proxy.mcp_sonarqube.settings import DEFAULT_MODEL, DEFAULT_PROXY_URL, SonarSettings
from proxy.settings import SettingsError

GOOD = {"SONAR_HOST_URL": "https://sonarcloud.io", "SONAR_TOKEN": "squ_secret"}


def test_defaults() -> None:
    settings = SonarSettings.from_env(GOOD)
    assert settings == SonarSettings("https://sonarcloud.io", "squ_secret")
    assert (settings.organization, settings.timeout_s, settings.proxy_url, settings.api_key,
            settings.model, settings.llm_timeout_s) == (
        None, 10.0, DEFAULT_PROXY_URL, None, DEFAULT_MODEL, 120.0)


def test_every_variable_is_read() -> None:
    settings = SonarSettings.from_env(GOOD | {
        "SONAR_HOST_URL": "  http://sonar.local:9000///  ", "SONAR_TOKEN": "  squ_x  ",
        "SONAR_ORGANIZATION": "acme", "SONAR_TIMEOUT_S": "2.5",
        "MET_MCP_PROXY_URL": "https://meterline.local/", "MET_MCP_API_KEY": "sk-eng",
        "MET_MCP_MODEL": "mixtral-8x7b", "MET_MCP_LLM_TIMEOUT_S": "30"})
    assert settings == SonarSettings("http://sonar.local:9000", "squ_x", "acme", 2.5,
                                     "https://meterline.local", "sk-eng", "mixtral-8x7b", 30.0)


def test_empty_values_mean_unset() -> None:
    settings = SonarSettings.from_env(GOOD | {"SONAR_ORGANIZATION": "", "SONAR_TIMEOUT_S": "",
                                              "MET_MCP_PROXY_URL": "", "MET_MCP_API_KEY": "",
                                              "MET_MCP_MODEL": ""})
    assert settings == SonarSettings.from_env(GOOD)


@pytest.mark.parametrize(("env", "message"), [
    ({"SONAR_TOKEN": "   "}, "Config 'SONAR_TOKEN' is not set. Create a user token in "
                            "SonarQube (My Account > Security) and pass it in the environment, "
                            "not in a file."),
    ({"SONAR_HOST_URL": "   "}, "Config 'SONAR_HOST_URL' is not set. Set it to the SonarQube "
                               "or SonarCloud base URL, e.g. https://sonarcloud.io or "
                               "https://sonar.example.com."),
    ({"SONAR_HOST_URL": "ftp://sonar"}, "Config 'SONAR_HOST_URL' has value 'ftp://sonar'. "
                                        "Not an http(s) URL."),
    ({"MET_MCP_LLM_TIMEOUT_S": "-1"}, "Config 'MET_MCP_LLM_TIMEOUT_S' has value '-1'. "
                                      "Not a number of seconds (more than 0, below 3600)."),
    ({"MET_MCP_LLM_TIMEOUT_S": "1 min"}, "Config 'MET_MCP_LLM_TIMEOUT_S' has value '1 min'. "
                                         "Not a number of seconds (more than 0, below 3600)."),
])
def test_bad_values_name_key_and_value(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError) as info:
        SonarSettings.from_env(GOOD | env)
    assert str(info.value) == message
    assert "squ_secret" not in str(info.value)


def test_credentials_stay_out_of_repr() -> None:
    shown = repr(SonarSettings.from_env(GOOD | {"MET_MCP_API_KEY": "sk-eng-secret"}))
    assert "squ_secret" not in shown and "sk-eng-secret" not in shown
    assert "https://sonarcloud.io" in shown


def test_a_timeout_that_is_not_a_number_is_refused() -> None:
    with pytest.raises(SettingsError, match="SONAR_TIMEOUT_S"):
        SonarSettings.from_env(GOOD | {"SONAR_TIMEOUT_S": "nan"})
