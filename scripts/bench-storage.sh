#!/usr/bin/env bash
# The storage benchmark of BENCHMARKS.md ("Storage: bytes per event"):
#  1. land EVENTS generated web events (default 1 million, 28 days) in a
#     temp lake with `crow bench generate` (the collector's flush-sized files);
#  2. bytes per event of raw_web_events as flushed;
#  3. scripts/bench/storage_settings.py: the same rows under other writer
#     settings (pyarrow), to compare CROW's choice with the alternatives;
#  4. `crow optimize` + `crow vacuum --retention-hours 0`, bytes per event
#     compacted;
#  5. the analyst query set (scripts/bench/queries.py) on three layouts of
#     the same rows — as flushed under CROW's former settings (Snappy, no
#     payload dictionaries; rewritten by scripts/bench/relayout.py), as
#     flushed now, compacted now — through CROW and DuckDB, so smaller can
#     be checked not to mean slower (QUERY_RUNS=0 skips it).
#     (SETTINGS=0 skips step 3, which holds the whole table in memory)
#  6. with DEMO_VISITORS=N (or DEMO_VISITORS=readme for the README's
#     `crow demo` as it is): a demo lake's bytes per table, as written under
#     CROW's former settings (every table's files rewritten by relayout.py),
#     as written now, and after `crow optimize` + `crow vacuum` of every
#     table.
# Usage: scripts/bench-storage.sh   (EVENTS=10000000 for the full size;
#        CROWTEST_BIN=PATH to use an already built binary)
set -euo pipefail
cd "$(dirname "$0")/.."
EVENTS="${EVENTS:-1000000}"
QUERY_RUNS="${QUERY_RUNS:-3}"
DEMO_VISITORS="${DEMO_VISITORS:-0}"
crow="${CROWTEST_BIN:-target/debug/crow}"
# Built with the bench feature unless it already answers `crow bench` (a
# `cargo build -p crow-cli` binary, the product's, has no benchmark commands).
if ! { [ -x "$crow" ] && "$crow" bench --help >/dev/null 2>&1; }; then
  cargo build --locked --bin crow --features crow-cli/bench
fi
venv="${CROWTEST_VENV:-.venv}"
[ -x "$venv/bin/python" ] || bash scripts/test-deps.sh >/dev/null
py="$venv/bin/python"
source scripts/bench/lib.sh
bench_work
lake="$work/lake"
"$crow" --lake "$lake" bench generate --events "$EVENTS" --days 28 >"$work/gen.json"
org=$(bench_field "$work/gen.json" org_id)
key=$(bench_read_key "$lake" "$org" bench-storage)
bytes() { find "$1/raw_web_events" -name '*.parquet' -not -path '*/_delta_log/*' -printf '%s\n' | awk '{s+=$1} END {print s}'; }
files() { find "$1/raw_web_events" -name '*.parquet' -not -path '*/_delta_log/*' | wc -l; }
fresh="$(bytes "$lake")"; fresh_files="$(files "$lake")"
[ "${SETTINGS:-1}" = 0 ] || "$py" scripts/bench/storage_settings.py "$lake"
if [ "$QUERY_RUNS" != 0 ]; then
  cp -a "$lake" "$work/before"
  "$py" scripts/bench/relayout.py "$work/before/raw_web_events"
  cp -a "$lake" "$work/flushed"
fi
"$crow" --lake "$lake" optimize raw_web_events >/dev/null
"$crow" --lake "$lake" vacuum raw_web_events --retention-hours 0 >/dev/null
compacted="$(bytes "$lake")"; compacted_files="$(files "$lake")"
awk -v n="$EVENTS" -v f="$fresh" -v ff="$fresh_files" -v c="$compacted" -v cf="$compacted_files" 'BEGIN {
  printf "CROW as flushed:   %d files, %.1f bytes/event\n", ff, f / n
  printf "CROW compacted:    %d files, %.1f bytes/event\n", cf, c / n }'
if [ "$QUERY_RUNS" != 0 ]; then
  before="$(bytes "$work/before")"
  awk -v n="$EVENTS" -v b="$before" 'BEGIN { printf "former settings:   %.1f bytes/event (as flushed)\n\n", b / n }'
  specs=()
  for layout in before flushed compacted; do
    dir="$work/$layout"; [ "$layout" = compacted ] && dir="$lake"
    # The result cache is off: every run reads the files.
    bench_start_api "$layout" "$dir" CROW_API_RESULT_CACHE_MB=0
    specs+=("$layout=$url=$dir/raw_web_events")
  done
  PYTHONPATH=scripts/bench "$py" scripts/bench/layouts.py "$key" "${specs[@]}" --org "$org" --runs "$QUERY_RUNS"
  bench_stop_all
fi
if [ "$DEMO_VISITORS" != 0 ]; then
  demo_args=(--visitors "$DEMO_VISITORS" --days 28)
  [ "$DEMO_VISITORS" != readme ] || demo_args=()
  "$crow" --lake "$work/demo" demo "${demo_args[@]}" >/dev/null 2>&1
  cp -a "$work/demo" "$work/demo-former"
  for t in "$work"/demo-former/*/; do
    [ -d "$t/_delta_log" ] && "$py" scripts/bench/relayout.py "$t" 2>/dev/null
  done
  cp -a "$work/demo" "$work/demo-optimized"
  "$crow" --lake "$work/demo-optimized" optimize >/dev/null
  "$crow" --lake "$work/demo-optimized" vacuum --retention-hours 0 >/dev/null
  "$py" - "$work/demo-former" "$work/demo" "$work/demo-optimized" <<'PY'
import os, sys
from deltalake import DeltaTable
former, written, optimized = sys.argv[1:4]
def live(lake, table):  # the live files of the table's latest version, from its log
    adds = DeltaTable(f"{lake}/{table}").get_add_actions(flatten=True)
    return sum(adds.column("size_bytes").to_pylist()), sum(adds.column("num_records").to_pylist())
web = live(written, "raw_web_events")[1]
print(f"demo lake: {web} web events; bytes per row (and per web event, all tables)\n")
print("| table | rows | former settings | as written | optimized | optimized / former |")
print("|---|---:|---:|---:|---:|---:|")
totals = [0, 0, 0]
for t in sorted(os.listdir(written)):
    if not os.path.isdir(f"{written}/{t}/_delta_log"):
        continue
    sizes = [live(lake, t) for lake in (former, written, optimized)]
    n = sizes[1][1]
    for i, (b, _) in enumerate(sizes):
        totals[i] += b
    if n:
        f, w, o = (b / n for b, _ in sizes)
        print(f"| {t} | {n} | {f:.1f} | {w:.1f} | {o:.1f} | {o / f:.2f} |")
f, w, o = (b / web for b in totals)
print(f"| all tables, per web event | {web} | {f:.1f} | {w:.1f} | {o:.1f} | {o / f:.2f} |")
PY
fi
