#!/usr/bin/env bash
# The storage benchmark of BENCHMARKS.md ("Storage: bytes per event"):
#  1. land EVENTS generated web events (default 1 million, 28 days) in a
#     temp lake with `crow bench generate` (the collector's flush-sized files);
#  2. bytes per event of raw_web_events as flushed;
#  3. `crow optimize` + `crow vacuum --retention-hours 0`, bytes per event
#     compacted;
#  4. scripts/bench/storage_settings.py: the same rows under other writer
#     settings (pyarrow), to compare CROW's choice with the alternatives.
# Usage: scripts/bench-storage.sh   (EVENTS=10000000 for the full size;
#        CROWTEST_BIN=PATH to use an already built binary)
set -euo pipefail
cd "$(dirname "$0")/.."
EVENTS="${EVENTS:-1000000}"
crow="${CROWTEST_BIN:-target/debug/crow}"
[ -x "$crow" ] || cargo build --locked --bin crow
venv="${CROWTEST_VENV:-.venv}"
[ -x "$venv/bin/python" ] || bash scripts/test-deps.sh >/dev/null
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$crow" --lake "$work/lake" bench generate --events "$EVENTS" --days 28 >/dev/null
bytes() { find "$work/lake/raw_web_events" -name '*.parquet' -printf '%s\n' | awk '{s+=$1} END {print s}'; }
files() { find "$work/lake/raw_web_events" -name '*.parquet' | wc -l; }
fresh="$(bytes)"; fresh_files="$(files)"
"$venv/bin/python" scripts/bench/storage_settings.py "$work/lake"
"$crow" --lake "$work/lake" optimize raw_web_events >/dev/null
"$crow" --lake "$work/lake" vacuum raw_web_events --retention-hours 0 >/dev/null
compacted="$(bytes)"; compacted_files="$(files)"
awk -v n="$EVENTS" -v f="$fresh" -v ff="$fresh_files" -v c="$compacted" -v cf="$compacted_files" 'BEGIN {
  printf "CROW as flushed:   %d files, %.1f bytes/event\n", ff, f / n
  printf "CROW compacted:    %d files, %.1f bytes/event\n", cf, c / n }'
