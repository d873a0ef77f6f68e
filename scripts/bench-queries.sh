#!/usr/bin/env bash
# The query benchmark of BENCHMARKS.md ("Query API: analyst queries vs
# DuckDB"), in one run on this machine:
#  1. land EVENTS generated web events (default 10 million, 28 days) in a
#     temp lake with `crow bench generate`;
#  2. create a read key for its organization and start `crow serve --only api`
#     (default settings but the result cache off) on a free local port;
#  3. run scripts/bench/queries.py: about 15 analyst queries, each through
#     `POST /api/v1/sql` (Arrow IPC stream) and through DuckDB over the same
#     Parquet files, warm-up then best of RUNS; compares the rows and prints
#     the table, the geometric mean of the time ratios and CROW's fixed
#     per-request cost.
# Usage: scripts/bench-queries.sh   (EVENTS=1000000 for a quick run;
#        RUNS=5, ONLY=Q05,Q13 to pick queries; KEEP_LAKE=DIR to keep the lake
#        there for EXPLAIN ANALYZE with `crow --lake DIR sql …`;
#        CROWTEST_BIN=PATH to use an already built binary instead of building;
#        CROWTEST_VENV=DIR for a venv that has the packages already)
set -euo pipefail
cd "$(dirname "$0")/.."
EVENTS="${EVENTS:-10000000}"
RUNS="${RUNS:-3}"
ONLY="${ONLY:-}"
source scripts/bench/lib.sh
bench_venv 'duckdb, pyarrow, requests' duckdb==2.0.0 pyarrow requests
bench_crow
bench_work
lake="${KEEP_LAKE:-$work/lake}"
[ ! -e "$lake/raw_web_events" ] || { echo "$lake already holds a lake; KEEP_LAKE must be a new folder" >&2; exit 2; }
bench_generate "$lake"
org=$(bench_field "$work/gen.json" org_id)
key=$(bench_read_key "$lake" "$org" bench-queries)
# The result cache is off: every run computes its answer (best of RUNS of
# the engine, not of the cache; scripts/bench-cache.sh measures the cache).
bench_start_api api "$lake" CROW_API_RESULT_CACHE_MB=0
files=$(find "$lake/raw_web_events" -name '*.parquet' -not -path '*/_delta_log/*' | wc -l)
mib=$(du -sm "$lake/raw_web_events" | cut -f1)
commits=$(find "$lake/raw_web_events/_delta_log" -name '*.json' | wc -l)
echo
echo "$EVENTS events, 28 days, $files Parquet files, $mib MiB, $commits Delta commits;" \
  "$(nproc) cores; DuckDB $("$py" -c 'import duckdb; print(duckdb.__version__)') with $(nproc) threads;" \
  "best of $RUNS after one warm-up"
echo
status=0
"$py" scripts/bench/queries.py "$url" "$key" "$lake/raw_web_events" "$org" \
  --runs "$RUNS" --only "$ONLY" || status=$?
[ "$status" = 0 ] || echo "some results differ or failed (see above); server log: $(tail -5 "$work/serve-api.log")" >&2
exit "$status"
