#!/usr/bin/env bash
# Start Meterline as a target of ../shared/bench/run.sh: a config copied from rules/ whose providers
# all point at $UPSTREAM_BASE, with the bench key (sk-bench-1234) as an engineering key.
# Usage in targets.conf:
#   meterline|UPSTREAM_BASE=$UPSTREAM_BASE exec /path/to/repo/scripts/bench_target.sh 18300|http://127.0.0.1:18300/v1|
# MET_BENCH_CACHE=0 (default) turns the response cache off so the bench's identical requests measure
# the proxy path, not cache hits; MET_BENCH_CACHE_MODE=exact|semantic|shadow sets the cache's mode
# (default: the one in rules/cache.yaml). Redis is used when REDIS_URL is set.
set -euo pipefail
PORT=${1:-18300}
REPO=$(cd "$(dirname "$0")/.." && pwd)
CONF=$(mktemp -d /tmp/meterline-bench.XXXXXX)
cp -r "$REPO/rules/." "$CONF/"
python3 - "$CONF" "${UPSTREAM_BASE:?UPSTREAM_BASE not set}" "${MET_BENCH_CACHE:-0}" \
  "${MET_BENCH_CACHE_MODE:-}" <<'PY'
import hashlib, sys, pathlib, yaml
conf, upstream, cache = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3] == "1"
cache_mode = sys.argv[4]
providers = yaml.safe_load((conf / "providers.yaml").read_text())
for p in providers["providers"].values():
    p["base_url"] = upstream
    p["api_key_env"] = "BENCH_UPSTREAM_KEY"
(conf / "providers.yaml").write_text(yaml.safe_dump(providers))
key = hashlib.sha256(b"sk-bench-1234").hexdigest()
(conf / "keys.yaml").write_text(yaml.safe_dump(
    {"keys": [{"id": "bench", "sha256": key, "department": "engineering"}]}))
# Keep every check on the request path (budgets, rpm/tpm, breaker) but with limits the bench's
# tens of thousands of requests a second cannot reach: it measures the proxy, not a 429.
depts = yaml.safe_load((conf / "departments.yaml").read_text())
eng = depts["departments"]["engineering"]
eng.update(budgets={"hourly": 1e9, "daily": 1e9, "monthly": 1e9}, rpm=10**9, tpm=10**12,
           circuit_breaker={"window_minutes": 10, "max_dollars": 1e9})
(conf / "departments.yaml").write_text(yaml.safe_dump(depts))
cache_file = conf / "cache.yaml"
if cache_file.exists():
    data = yaml.safe_load(cache_file.read_text()) or {}
    data["enabled"] = cache
    if cache_mode:  # and no per-department mode (the shipped executive shadow needs an embedder)
        data["mode"] = cache_mode
        data.setdefault("overrides", {})["departments"] = {}
    cache_file.write_text(yaml.safe_dump(data))
PY
export BENCH_UPSTREAM_KEY=sk-upstream MET_LOG_LEVEL=warning
exec python3 ${MET_PY_WRAPPER:--m proxy} serve --config "$CONF" --port "$PORT"
