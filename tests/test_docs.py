"""The README's and docs' examples run against a demo server, as written.

Every ```bash / ```sh / ```python block in README.md and docs/*.md is marked in its info string:
`example` blocks are run here (a block with `$ ` prompts runs only the prompted lines), and a
```json output block right after one holds fields its JSON answer must contain; `manual` blocks
(set-up, benchmarks, load tests: they install, take minutes or need other machines) are not.
Examples talk to `localhost:8080` / `127.0.0.1:8080`, which is rewritten to the test server;
`$ADMIN` and `$KEY` are the demo's admin and engineering keys.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.support.servers import REPO_ROOT, ServerThread

FENCE = re.compile(r"^[ \t]*```([^\n]*)\n(.*?)^[ \t]*```[ \t]*$", re.S | re.M)
RUNNABLE = {"bash", "sh", "python"}
PAGES = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]


@dataclass(frozen=True)
class Block:
    page: str
    line: int
    language: str
    marks: frozenset[str]
    code: str
    output: dict[str, Any] | None = None  # a following ```json output block

    @property
    def name(self) -> str:
        return f"{self.page}:{self.line}"


def blocks(page: Path) -> list[Block]:
    text = page.read_text()
    found: list[Block] = []
    for match in FENCE.finditer(text):
        language, *marks = match.group(1).split() or [""]
        line = text.count("\n", 0, match.start()) + 1
        name = str(page.relative_to(REPO_ROOT))
        if language == "json" and "output" in marks and found and "example" in found[-1].marks:
            last = found.pop()
            found.append(Block(last.page, last.line, last.language, last.marks, last.code,
                               orjson.loads(match.group(2))))
            continue
        found.append(Block(name, line, language, frozenset(marks), match.group(2)))
    return found


ALL = [b for page in PAGES for b in blocks(page)]
EXAMPLES = [b for b in ALL if "example" in b.marks]


def test_every_command_block_is_an_example_or_marked_manual() -> None:
    unmarked = [b.name for b in ALL
                if b.language in RUNNABLE and not {"example", "manual"} & b.marks]
    assert unmarked == []
    assert len(EXAMPLES) >= 7  # the parser still finds them


def contains(answer: Any, expected: Any) -> bool:
    """`expected` is a part of `answer`: dicts by their keys, everything else equal."""
    if isinstance(expected, dict):
        return isinstance(answer, dict) and all(
            k in answer and contains(answer[k], v) for k, v in expected.items())
    return bool(answer == expected)


def script_of(block: Block, base: str) -> str:
    code = block.code
    if any(line.startswith("$ ") for line in code.splitlines()):
        code = "\n".join(line[2:] for line in code.splitlines() if line.startswith("$ "))
    for written in ("http://localhost:8080", "http://127.0.0.1:8080", "localhost:8080",
                    "127.0.0.1:8080"):
        code = code.replace(written, base)
    return code


def run(block: Block, proxy: ServerThread, workdir: Path) -> subprocess.CompletedProcess[str]:
    bindir = workdir / "bin"
    bindir.mkdir(exist_ok=True)
    shim = bindir / "meterline"  # the CLI of this checkout, whatever is installed
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m proxy "$@"\n')
    shim.chmod(0o755)
    env = {**os.environ, "ADMIN": "sk-demo-admin", "KEY": "sk-demo-engineering",
           "MET_PORT": str(proxy.port), "MET_CONFIG_DIR": str(workdir / "rules"),
           "PATH": f"{bindir}:{os.environ['PATH']}", "PYTHONPATH": str(REPO_ROOT)}
    env.pop("MET_ADMIN_KEY", None)
    if block.language == "python":
        command = [sys.executable, "-c", script_of(block, proxy.url)]
    else:  # curl fails on an HTTP error, like any other command
        preamble = 'curl() { command curl --fail-with-body -sS "$@"; }\n'
        command = ["bash", "-euo", "pipefail", "-c", preamble + script_of(block, proxy.url)]
    return subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("block", EXAMPLES, ids=[b.name for b in EXAMPLES])
def test_example_runs_against_a_demo_server(block: Block, proxy: ServerThread,
                                            tmp_path: Path) -> None:
    shutil.copytree(REPO_ROOT / "rules", tmp_path / "rules")
    result = run(block, proxy, tmp_path)
    assert result.returncode == 0, f"{block.name} failed:\n{result.stdout}\n{result.stderr}"
    if block.output is not None:
        answer = orjson.loads(result.stdout)
        assert contains(answer, block.output), f"{block.name} answered:\n{result.stdout}"
