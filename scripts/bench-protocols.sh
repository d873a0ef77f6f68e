#!/usr/bin/env bash
# The protocol benchmark of BENCHMARKS.md ("Query API: one large result,
# protocol by protocol"), in one run on this machine:
#  1. a fresh lake in a temp folder with one organization and a read key
#     (the result is synthetic — generate_series — so no data is landed);
#  2. `crow serve --only api --flight-listen …` on free local ports, with
#     api.max_result_rows and api.query_timeout_seconds raised for it;
#  3. scripts/bench/protocols.py: the same ROWS-row result through Arrow
#     Flight SQL (ADBC), HTTP Arrow IPC and HTTP JSON; rows per second each.
# Usage: scripts/bench-protocols.sh   (ROWS=1000000 for a quick run;
#        JSON_ROWS=… for the JSON size (default 2000000); RUNS=3 for the best
#        of 3; CROWTEST_BIN=PATH to use an already built binary instead of
#        building in release; CROWTEST_VENV=DIR for a venv that has the
#        packages already)
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS="${ROWS:-10000000}"
JSON_ROWS="${JSON_ROWS:-2000000}"
RUNS="${RUNS:-1}"
source scripts/bench/lib.sh
bench_venv 'adbc_driver_flightsql, pyarrow, requests, psycopg' \
  adbc-driver-flightsql==1.13.0 adbc-driver-manager==1.13.0 pyarrow requests 'psycopg[binary]==3.3.9'
bench_crow
bench_work
lake="$work/lake"
"$crow" --lake "$lake" init >/dev/null
org=$("$crow" --lake "$lake" orgs create --name "Bench Protocols" --format json \
  | "$py" -c 'import json,sys; print(json.load(sys.stdin)["org_id"])')
key=$(bench_read_key "$lake" "$org" bench-protocols)
port=$(bench_free_port)
fport=$(bench_free_port)
pport=$(bench_free_port)
# The result cache is off: each run streams its answer anew.
bench_serve api CROW_API_RESULT_CACHE_MB=0 \
  CROW_API_MAX_RESULT_ROWS=$(( ROWS > JSON_ROWS ? ROWS : JSON_ROWS )) CROW_API_QUERY_TIMEOUT_SECONDS=3600 \
  -- --lake "$lake" serve --only api --listen "127.0.0.1:$port" \
  --flight-listen "127.0.0.1:$fport" --pg-listen "127.0.0.1:$pport" --wal-dir "$work/wal"
echo "$ROWS rows (JSON: $JSON_ROWS), 4 columns; $(nproc) cores; best of $RUNS"
echo
"$py" scripts/bench/protocols.py "http://127.0.0.1:$port" "grpc://127.0.0.1:$fport" "$key" \
  --rows "$ROWS" --json-rows "$JSON_ROWS" --runs "$RUNS" --pg "127.0.0.1:$pport" --org "$org"
