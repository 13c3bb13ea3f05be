#!/usr/bin/env bash
# The one test command: installs what the tests need, starts Redis Stack, runs pytest.
#
#   bash scripts/test.sh [pytest args...]      e.g. bash scripts/test.sh -x -k cache
#
# Built for a fresh Debian 12 machine with Python 3.11, run as root (CI runs it via .ci/run).
# Installs are skipped when already in place, so reruns are fast; MET_SKIP_INSTALL=1 skips them all.
# If REDIS_URL is set it is used as is; otherwise a private Redis Stack is started on a free port
# and stopped on exit. pytest's "no tests collected" (exit 5) counts as a failure.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
PY=${PYTHON:-python3}
APT_UPDATED=0

step() { printf '\n==> %s\n' "$*"; }
note() { printf '    %s\n' "$*"; }

apt_install() {
  if [ "$APT_UPDATED" = 0 ]; then
    note "apt-get update"
    apt-get update -qq
    APT_UPDATED=1
  fi
  note "apt-get install $*"
  # Don't let package scripts start prometheus/alertmanager daemons: tests start their own.
  local guard=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    guard=/usr/sbin/policy-rc.d
    printf '#!/bin/sh\nexit 101\n' > "$guard" && chmod +x "$guard"
  fi
  local rc=0
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null || rc=$?
  [ -z "$guard" ] || rm -f "$guard"
  return "$rc"
}

install_system_packages() {
  step "system packages (prometheus, alertmanager, chromium)"
  local missing=()
  command -v promtool >/dev/null && command -v prometheus >/dev/null || missing+=(prometheus)
  command -v amtool >/dev/null || missing+=(prometheus-alertmanager)
  command -v chromium >/dev/null || missing+=(chromium)
  if [ ${#missing[@]} = 0 ]; then
    note "already installed"
    return
  fi
  [ "$(id -u)" = 0 ] || { echo "need root to apt-get install ${missing[*]}" >&2; exit 1; }
  apt_install "${missing[@]}"
}

use_venv_if_externally_managed() {
  # Debian's own python3 refuses system-wide pip installs (PEP 668); use a venv in .venv there.
  "$PY" - <<'EOF' || return 0
import os, sys, sysconfig
managed = os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED"))
sys.exit(0 if managed and sys.prefix == sys.base_prefix else 1)
EOF
  if [ ! -x .venv/bin/python ]; then
    note "$PY is externally managed; creating .venv"
    "$PY" -m venv .venv 2>/dev/null || { apt_install python3-venv && "$PY" -m venv .venv; }
  fi
  PY="$REPO/.venv/bin/python"
  export PATH="$REPO/.venv/bin:$PATH"
}

python_deps_missing() {
  # Prints why an install is needed (exit 1), or nothing (exit 0) when this checkout is installed
  # editable with every base + [test] requirement satisfied. -I: don't find ./*.egg-info.
  "$PY" -I - <<'EOF'
import json, sys, tomllib
from importlib import metadata
from pathlib import Path
try:
    from packaging.requirements import Requirement
except ImportError:
    from pip._vendor.packaging.requirements import Requirement
repo = Path.cwd()
project = tomllib.loads((repo / "pyproject.toml").read_text())["project"]
problems = []
try:
    dist = metadata.distribution(project["name"])
    if json.loads(dist.read_text("direct_url.json") or "{}").get("url") != repo.as_uri():
        problems.append(f"{project['name']} is installed from elsewhere")
except metadata.PackageNotFoundError:
    problems.append(f"{project['name']} is not installed")
for spec in project["dependencies"] + project["optional-dependencies"]["test"]:
    req = Requirement(spec)
    try:
        version = metadata.version(req.name)
    except metadata.PackageNotFoundError:
        problems.append(f"missing {req.name}")
        continue
    if not req.specifier.contains(version, prereleases=True):
        problems.append(f"{req.name} {version} does not satisfy '{req.specifier}'")
print("\n".join(f"    {p}" for p in problems))
sys.exit(1 if problems else 0)
EOF
}

install_python_packages() {
  step "python packages (pip install -e '.[test]')"
  use_venv_if_externally_managed
  if python_deps_missing >/dev/null; then
    note "already installed"
    return
  fi
  python_deps_missing || true
  PIP_ROOT_USER_ACTION=ignore "$PY" -m pip install -q --disable-pip-version-check --no-input \
    -e '.[test]'
}

install_redis_stack() {
  step "Redis Stack (scripts/redis-stack.sh install)"
  PYTHON="$PY" bash scripts/redis-stack.sh install 2>&1 | sed 's/^/    /'
}

free_port() {
  "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

STARTED_REDIS=0
cleanup() {
  if [ "$STARTED_REDIS" = 1 ]; then
    PYTHON="$PY" bash scripts/redis-stack.sh stop 2>&1 | sed 's/^/    /' || true
  fi
}

start_redis() {
  step "Redis"
  if [ -n "${REDIS_URL:-}" ]; then
    note "using REDIS_URL=$REDIS_URL"
    return
  fi
  local status
  if status=$(PYTHON="$PY" bash scripts/redis-stack.sh status 2>/dev/null); then
    # Left running by a developer (or an interrupted run): reuse it rather than kill it.
    export REDIS_URL=${status##*url=}
    note "reusing the server already running from .redis-stack ($REDIS_URL)"
    return
  fi
  local port
  port=$(free_port)
  trap cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  STARTED_REDIS=1
  PYTHON="$PY" bash scripts/redis-stack.sh start "$port" 2>&1 | sed 's/^/    /'
  export REDIS_URL="redis://127.0.0.1:$port"
}

if [ "${MET_SKIP_INSTALL:-0}" = 1 ]; then
  step "installs skipped (MET_SKIP_INSTALL=1)"
  if [ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ]; then PY="$REPO/.venv/bin/python"; fi
else
  install_system_packages
  install_python_packages
  install_redis_stack
fi
start_redis

step "pytest $*"
set +e
"$PY" -m pytest "$@"
rc=$?
set -e
if [ "$rc" = 5 ]; then
  echo "test.sh: pytest collected no tests; treating that as a failure" >&2
  rc=1
fi
step "done: pytest exit code $rc"
exit "$rc"
