#!/usr/bin/env bash
# Run `meterline ARGS` from this checkout's own virtual environment (.venv), creating it and
# installing the project into it first when needed:
#
#   bash scripts/meterline.sh serve --demo        the README's run command
#   bash scripts/meterline.sh keys create --department sales
#
# A virtual environment because Debian 12's python3 is externally managed (PEP 668): a plain
# `pip install -e .` is refused there. Creating it needs python3-venv, which is apt-installed
# when missing (as root). The install is redone only when pyproject.toml changes.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-python3}
VENV="$REPO/.venv"
STAMP="$VENV/.meterline-installed"

say() { echo "meterline.sh: $*" >&2; }

make_venv() {
  [ -x "$VENV/bin/python" ] && return
  say "creating $VENV (with $PY)"
  if "$PY" -m venv "$VENV" 2>/dev/null; then return; fi
  rm -rf "$VENV"
  [ "$(id -u)" = 0 ] || { say "$PY cannot create a venv: install python3-venv (apt-get install python3-venv)"; exit 1; }
  say "apt-get install python3-venv"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
  "$PY" -m venv "$VENV"
}

install_project() {
  local want
  want=$(sha256sum "$REPO/pyproject.toml" | cut -d' ' -f1)
  if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then return; fi
  say "pip install -e $REPO (into $VENV)"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-input -e "$REPO"
  echo "$want" > "$STAMP"
}

make_venv
install_project
exec "$VENV/bin/meterline" "$@"
