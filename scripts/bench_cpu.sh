#!/usr/bin/env bash
# Quick A/B of the request path's cost, for tuning between full harness runs: CPU per request under
# load and unloaded latency, for Meterline (this checkout) and the floor proxy, one after the other.
#
#   bash scripts/bench_cpu.sh [meterline|floor|both] [chat|stream]     (defaults: both chat)
#
# Uses the shared harness's pieces (../shared/bench: nginx+lua mock, wrk script, latency probe) and
# its floor venv (/tmp/peerbench/floor-venv, made by its setup.sh). Pinning as in the harness:
# wrk and the mock on cpu0, the proxy on cpu1. Prints, per target: req/s at c=64, proxy CPU time
# per request (more stable than req/s: it moves by ~1 % between runs where req/s moves by ~5 %),
# and the unloaded p50 of 400 back-to-back requests on one connection. DURATION (8 s) can be set.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=${BENCH:-$REPO/../shared/bench}
PEER=${PEER:-/tmp/peerbench}
WHICH=${1:-both}
MODE=${2:-chat}
DURATION=${DURATION:-8}
WORK=$(mktemp -d /tmp/bench-cpu.XXXXXX)
BODY=$BENCH/lib/req-$MODE.json
KEY="Authorization: Bearer sk-bench-1234"

python3 "$BENCH/mock/gen_mock.py" "$WORK/mock" 18000 18001 50 2 >/dev/null
mkdir -p "$WORK/mock/tmp_body"
taskset -c 0 nginx -c "$WORK/mock/nginx.conf" &
MOCK=$!
PIDS=()
cleanup() { for p in "${PIDS[@]}" "$MOCK"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
sleep 0.5

tree_cpu() {  # CPU seconds of a process and its children
  python3 - "$1" <<'PY'
import os, subprocess, sys
pids = [sys.argv[1], *subprocess.run(["pgrep", "-P", sys.argv[1]], capture_output=True,
                                      text=True).stdout.split()]
ticks = 0
for pid in pids:
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])
    except OSError:
        pass
print(ticks / os.sysconf("SC_CLK_TCK"))
PY
}

measure() {  # name port command...
  local name=$1 port=$2; shift 2
  taskset -c 1 bash -c "$*" >"$WORK/$name.log" 2>&1 &
  local pid=$!
  PIDS+=("$pid")
  local url=http://127.0.0.1:$port/v1/chat/completions
  for _ in $(seq 1 100); do
    curl -sf -o /dev/null -H "$KEY" -d @"$BENCH/lib/req-chat.json" "$url" && break
    sleep 0.3
  done
  taskset -c 0 wrk -t1 -c64 -d3s -s "$BENCH/lib/post.lua" "$url" -- "$BODY" "$KEY" >/dev/null
  local c0 c1 out probe
  c0=$(tree_cpu "$pid")
  out=$(taskset -c 0 wrk -t1 -c64 -d"${DURATION}s" -s "$BENCH/lib/post.lua" "$url" -- "$BODY" "$KEY" \
        | grep WRKJSON)
  c1=$(tree_cpu "$pid")
  probe=$(taskset -c 0 python3 "$BENCH/lib/probe.py" "$url" "$BODY" --count 400 -H "$KEY" \
          | grep PROBEJSON)
  python3 - "$name" "$MODE" "$c0" "$c1" "$out" "$probe" <<'PY'
import json, sys
name, mode, c0, c1, out, probe = sys.argv[1:]
d = json.loads(out.split(" ", 1)[1])
p = json.loads(probe.split(" ", 1)[1])
n, s = d["requests"], d["duration_us"] / 1e6
errors = sum(v for k, v in d.items() if k.startswith("err"))
print(f"{name:10s} {mode:6s} {n / s:7.0f} req/s  cpu {1e6 * (float(c1) - float(c0)) / n:6.1f} us/req"
      f"  unloaded p50 {p['total_p50_us'] / 1000:.3f} ms (ttft {p['ttft_p50_us'] / 1000:.3f})"
      f"  errors {errors}")
PY
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

direct=$(taskset -c 0 python3 "$BENCH/lib/probe.py" http://127.0.0.1:18000/v1/chat/completions \
         "$BODY" --count 400 | grep PROBEJSON)
python3 -c "import json,sys; d=json.loads(sys.argv[1].split(' ',1)[1]); print(f\"direct     $MODE  unloaded p50 {d['total_p50_us']/1000:.3f} ms\")" "$direct"
if [ "$WHICH" != meterline ]; then
  measure floor 18101 "FLOOR_CLIENT=aiohttp UPSTREAM_BASE=http://127.0.0.1:18000/v1 exec \
    $PEER/floor-venv/bin/uvicorn --app-dir $BENCH/floor floor_proxy:app --host 127.0.0.1 \
    --port 18101 --loop uvloop --http httptools --no-access-log --log-level warning"
fi
if [ "$WHICH" != floor ]; then
  measure meterline 18300 "UPSTREAM_BASE=http://127.0.0.1:18000/v1 exec $REPO/scripts/bench_target.sh 18300"
fi
