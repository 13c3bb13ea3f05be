#!/usr/bin/env bash
# Headless, bounded load test against a Meterline on this machine (loopback only).
#
#   loadtest/run.sh [URL] [SECONDS] [USERS]     defaults: http://127.0.0.1:8080 60 20
#
# Start the proxy first, e.g. `meterline serve --demo`. Workload knobs are env vars
# (MET_ZIPF_S, MET_PARAPHRASE_RATE, MET_STREAM_RATIO, MET_MAX_PROMPT_CHARS, MET_MODEL, ...; see
# loadtest/README.md). Results: loadtest/results/<timestamp>_{stats,failures}.csv + summary on stdout.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
URL=${1:-${MET_LOADTEST_URL:-http://127.0.0.1:8080}}
SECONDS_TO_RUN=${2:-60}
USERS=${3:-20}
MAX_USERS=200
MAX_SECONDS=1800

python3 - "$URL" <<'PY' || { echo "run.sh: refusing $URL: only loopback targets (127.0.0.0/8, localhost, [::1])" >&2; exit 2; }
import ipaddress, sys, urllib.parse
host = urllib.parse.urlsplit(sys.argv[1]).hostname or ""
try:
    sys.exit(0 if host == "localhost" or ipaddress.ip_address(host).is_loopback else 1)
except ValueError:
    sys.exit(1)
PY
[[ "$SECONDS_TO_RUN" =~ ^[0-9]+$ ]] && [ "$SECONDS_TO_RUN" -ge 1 ] && [ "$SECONDS_TO_RUN" -le $MAX_SECONDS ] \
  || { echo "run.sh: SECONDS must be 1..$MAX_SECONDS" >&2; exit 2; }
[[ "$USERS" =~ ^[0-9]+$ ]] && [ "$USERS" -ge 1 ] && [ "$USERS" -le $MAX_USERS ] \
  || { echo "run.sh: USERS must be 1..$MAX_USERS" >&2; exit 2; }

mkdir -p "$HERE/results"
stamp=$(date +%Y%m%d-%H%M%S)
echo "load test: $URL for ${SECONDS_TO_RUN}s with $USERS users -> $HERE/results/${stamp}_*.csv"
exec python3 -m locust -f "$HERE/locustfile.py" --headless --host "$URL" \
  --users "$USERS" --spawn-rate "$(( USERS < 10 ? USERS : 10 ))" --run-time "${SECONDS_TO_RUN}s" \
  --stop-timeout 10 --only-summary --csv "$HERE/results/$stamp" --exit-code-on-error 1
