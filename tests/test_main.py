"""The CLI: check-config names file, field and value; serve refuses invalid config."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from proxy.__main__ import main
from tests.support.servers import free_port

REPO = Path(__file__).resolve().parents[1]


def config_copy(tmp_path: Path) -> Path:
    dest = tmp_path / "rules"
    shutil.copytree(REPO / "rules", dest)
    return dest


def test_shipped_config_is_valid(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(REPO / "rules")]) == 0
    assert "OK" in capsys.readouterr().out


@pytest.mark.parametrize("file,old,new,expect", [
    ("providers.yaml", "timeout_s: 600", "timeout_s: fast",
     ["providers.yaml", "providers.openai.timeout_s", "'fast'"]),
    ("providers.yaml", "  gpt-4.1:\n    input_modalities: [text, image]\n"
     "    targets: [{provider: openai}]",
     "  gpt-4.1:\n    input_modalities: [text, image]\n    targets: [{provider: nowhere}]",
     ["providers.yaml", "nowhere"]),
    ("providers.yaml", "api_key_env: OPENAI_API_KEY",
     "api_key_env: OPENAI_API_KEY\n    api_key: sk-inline", ["providers.yaml", "api_key"]),
    ("keys.yaml", "keys: []",
     "keys: [{id: k1, sha256: '" + "a" * 64 + "', department: legal}]",
     ["keys.yaml", "keys.k1.department", "'legal'"]),
    ("providers.yaml", "\nproviders:", "\nproviders: [", ["providers.yaml", "not valid YAML"]),
])
def test_check_config_names_file_field_value(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             file: str, old: str, new: str,
                                             expect: list[str]) -> None:
    rules = config_copy(tmp_path)
    text = (rules / file).read_text()
    assert old in text
    (rules / file).write_text(text.replace(old, new, 1))
    assert main(["check-config", str(rules)]) == 1
    err = capsys.readouterr().err
    for fragment in expect:
        assert fragment in err


def test_serve_refuses_invalid_config(tmp_path: Path) -> None:
    rules = config_copy(tmp_path)
    (rules / "providers.yaml").write_text("providers: {}\nmodels: {}\n")
    result = subprocess.run([sys.executable, "-m", "proxy", "serve", "--config", str(rules),
                             "--port", "1"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "invalid config, not starting" in result.stderr
    assert "providers.yaml" in result.stderr


def serve_demo(port: int, *args: str,
               env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    # no readiness drain when the test stops it (5 s each by default)
    env = {**(os.environ if env is None else env), "MET_DRAIN_SECONDS": "0"}
    return subprocess.Popen([sys.executable, "-m", "proxy", "serve", "--port", str(port),
                             *(args or ["--demo"])], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def test_serve_on_a_busy_port_names_it_and_says_nothing_is_ready() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        server = serve_demo(port)
        out, err = server.communicate(timeout=60)
    assert server.returncode == 1
    assert f"127.0.0.1:{port} is already in use" in err and "--port" in err
    assert "ready on" not in out + err and "meterline ready" not in err


def until_ready(*args: str, env: dict[str, str] | None = None) -> tuple[str, str]:
    """Start `meterline serve ARGS`; once it says it is ready, check that it answers, stop it
    and return (the ready line, everything it wrote to stderr)."""
    port = free_port()
    server = serve_demo(port, *args, env=env)
    assert server.stdout is not None
    try:
        line = server.stdout.readline()
        assert f"ready on http://127.0.0.1:{port}" in line, line
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
    finally:
        server.terminate()
        _, err = server.communicate(timeout=30)
    return line, err


def test_serve_says_ready_only_once_it_answers() -> None:
    line, _ = until_ready()
    assert line.startswith("Meterline demo ready on http://127.0.0.1:")


def test_serve_runs_on_the_event_loop_it_is_given() -> None:
    """MET_EVENT_LOOP=asyncio: the demo serves on asyncio's own loop (docs/performance.md)."""
    line, err = until_ready(env={**os.environ, "MET_EVENT_LOOP": "asyncio",
                                 "MET_LOG_LEVEL": "debug"})
    assert line.startswith("Meterline demo ready on http://127.0.0.1:")
    assert "Using selector: EpollSelector" in err  # asyncio's loop says so at debug; uvloop not


def bare_env(**extra: str) -> dict[str, str]:
    """The environment without Meterline or provider variables."""
    keep = ("PATH", "HOME", "PYTHONPATH", "LANG")
    return {**{k: v for k, v in os.environ.items() if k in keep}, **extra}


def test_serve_without_keys_or_credentials_says_what_is_missing() -> None:
    _, err = until_ready("--config", str(REPO / "rules"), env=bare_env())
    missing = err.split("not usable yet:", 1)[1]
    for fix in ("MET_ADMIN_KEY", "meterline keys create --department", "OPENAI_API_KEY",
                "OPENROUTER_API_KEY", "VLLM_API_KEY"):
        assert fix in missing


def test_serve_with_what_it_needs_warns_about_nothing(tmp_path: Path) -> None:
    rules = config_copy(tmp_path)
    (rules / "keys.yaml").write_text(
        "keys: [{id: s1, sha256: '" + "b" * 64 + "', department: sales}]\n")
    env = bare_env(MET_ADMIN_KEY="sk-admin-test", OPENAI_API_KEY="x", OPENROUTER_API_KEY="x",
                   VLLM_API_KEY="x")
    _, err = until_ready("--config", str(rules), env=env)
    assert "not usable yet" not in err
