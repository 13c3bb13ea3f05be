#!/usr/bin/env bash
# The full fuzz run: hostile requests through a running `meterline serve --demo` process
# (tests/test_fuzz.py, tests/support/fuzzing.py), then the numbers it saw.
#
#   bash scripts/fuzz.sh [EXAMPLES]      default 10000; writes fuzz-report.json (or $MET_FUZZ_REPORT)
#
# The proxy runs on embedded state (never a shared Redis); no Redis is needed for this run.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
export MET_FUZZ_EXAMPLES=${1:-10000} MET_FUZZ_RANDOM=1
export MET_FUZZ_REPORT=${MET_FUZZ_REPORT:-$REPO/fuzz-report.json}
rc=0
"${PYTHON:-python3}" -m pytest -q -p no:cacheprovider tests/test_fuzz.py || rc=$?
[ -f "$MET_FUZZ_REPORT" ] && cat "$MET_FUZZ_REPORT"
exit "$rc"
