#!/usr/bin/env bash
# The result cache benchmark of BENCHMARKS.md ("Query API: the result cache
# on a dashboard-style repeat"), in one run on this machine:
#  1. land EVENTS generated web events (default 1 million, 28 days) in a temp
#     lake with `crow bench generate`;
#  2. start two `crow serve --only api` on it: default settings (cache on)
#     and `CROW_API_RESULT_CACHE_MB=0` (cache off);
#  3. run scripts/bench/cache.py: one dashboard query sent RUNS times (default
#     20) to each; prints first-call, median and p95 latency in ms and the
#     X-Crow-Cache answers, and checks the answers are identical.
# Usage: scripts/bench-cache.sh  (EVENTS=…, RUNS=…; CROWTEST_VENV=DIR for another
#        virtualenv; CROWTEST_BIN=PATH to use
#        an already built binary instead of building the release one)
set -euo pipefail
cd "$(dirname "$0")/.."
EVENTS="${EVENTS:-1000000}"
RUNS="${RUNS:-20}"
source scripts/bench/lib.sh
bench_venv requests requests
bench_crow
bench_work
lake="$work/lake"
bench_generate "$lake"
org=$(bench_field "$work/gen.json" org_id)
key=$(bench_read_key "$lake" "$org" bench-cache)
bench_start_api on "$lake" CROW_API_RESULT_CACHE_MB=64; on="$url"
bench_start_api off "$lake" CROW_API_RESULT_CACHE_MB=0; off="$url"
echo "| server | first call (ms) | median of the other $((RUNS - 1)) (ms) | p95 (ms) | all $RUNS (ms) | X-Crow-Cache |"
echo "|---|---|---|---|---|---|"
"$py" scripts/bench/cache.py "$key" "$on" "$off" --runs "$RUNS"
