"""`meterline mcp sonarqube` refuses to start without what it needs, naming the setting."""

from __future__ import annotations

import pytest

from proxy.__main__ import main
from proxy.mcp_sonarqube.settings import SonarSettings
from proxy.settings import SettingsError

GOOD = {"SONAR_HOST_URL": "https://sonar.example.com/", "SONAR_TOKEN": "squ_secret"}


@pytest.mark.parametrize("env,expect", [
    ({"SONAR_HOST_URL": "https://sonar.example.com"}, "Config 'SONAR_TOKEN' is not set"),
    ({"SONAR_TOKEN": "squ_secret"}, "Config 'SONAR_HOST_URL' is not set"),
    (GOOD | {"SONAR_HOST_URL": "sonar.example.com"},
     "Config 'SONAR_HOST_URL' has value 'sonar.example.com'. Not an http(s) URL."),
    (GOOD | {"SONAR_TIMEOUT_S": "soon"},
     "Config 'SONAR_TIMEOUT_S' has value 'soon'. Not a number of seconds"),
    (GOOD | {"SONAR_TIMEOUT_S": "0"},
     "Config 'SONAR_TIMEOUT_S' has value '0'. Not a number of seconds (more than 0"),
    (GOOD | {"MET_MCP_PROXY_URL": "localhost:8080"},
     "Config 'MET_MCP_PROXY_URL' has value 'localhost:8080'. Not an http(s) URL."),
])
def test_settings_errors_name_the_key_and_value(env: dict[str, str], expect: str) -> None:
    with pytest.raises(SettingsError) as raised:
        SonarSettings.from_env(env)
    assert expect in str(raised.value)
    assert "squ_secret" not in str(raised.value)


def test_settings_keep_the_token_out_of_repr() -> None:
    settings = SonarSettings.from_env(GOOD | {"MET_MCP_API_KEY": "sk-demo-engineering"})
    assert settings.sonar_url == "https://sonar.example.com"  # trailing slash dropped
    assert settings.sonar_token == "squ_secret"
    assert "squ_secret" not in repr(settings) and "sk-demo" not in repr(settings)


def test_missing_token_exits_2_with_the_reason(monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("SONAR_TOKEN", raising=False)
    monkeypatch.setenv("SONAR_HOST_URL", "https://sonar.example.com")
    assert main(["mcp", "sonarqube"]) == 2
    assert "Config 'SONAR_TOKEN' is not set" in capsys.readouterr().err


def test_metrics_port_is_refused_on_streamable_http(monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    for key, value in GOOD.items():
        monkeypatch.setenv(key, value)
    assert main(["mcp", "sonarqube", "--transport", "streamable-http",
                 "--metrics-port", "9999"]) == 2
    assert "streamable-http serves /metrics on --port" in capsys.readouterr().err
