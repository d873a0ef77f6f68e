#!/usr/bin/env bash
# Sessionize alone, without DuckDB: wall time and peak memory (max RSS) of
# `crow jobs run sessionize` over EVENTS generated web events (default 1
# million), for each binary and memory pool given, each on a fresh copy of
# the same lake. With BASELINE set, the sessions of the first run of each
# binary are compared column by column (all but job_run_id).
#
#   CROWTEST_BIN=target/debug/crow BASELINE=/tmp/crow-main LIMITS="2048 512" \
#     scripts/bench-sessionize.sh
#
# CROWTEST_BIN defaults to target/release/crow (build it first: `cargo
# build --release --bin crow --features crow-cli/bench`); LIMITS are
# values of jobs.memory_limit_mb (default: the default). The baseline runs
# with its own defaults (a build from before the pool ignores the variable).
set -euo pipefail
cd "$(dirname "$0")/.."
EVENTS="${EVENTS:-1000000}"
crow="$(realpath "${CROWTEST_BIN:-target/release/crow}")"
base="${BASELINE:-}"
limits="${LIMITS:-2048}"
py="${PYTHON:-python3}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$crow" --lake "$work/gen" init >/dev/null
echo "generating $EVENTS events ..." >&2
"$crow" --lake "$work/gen" bench generate --events "$EVENTS" --days 28 >"$work/gen.json"
read -r from to < <("$py" -c 'import json,sys; g=json.load(open(sys.argv[1])); print(g["from"], g["to"])' "$work/gen.json")
run() { # label binary [VAR=value...]
  local label=$1 bin=$2; shift 2
  rm -rf "$work/lake"; cp -r "$work/gen" "$work/lake"
  env "$@" "$py" scripts/bench/measure.py "$bin" --lake "$work/lake" jobs run sessionize \
    --from "$from" --to "$to" --quiet --format json >"$work/out.json" 2>"$work/err"
  "$py" - "$label" "$work/out.json" "$work/err" <<'PY'
import json, sys
label, out, err = sys.argv[1:4]
r = json.load(open(out)); m = json.loads(open(err).read().strip().splitlines()[-1])
print(f"| {label} | {m['seconds']:.1f} | {m['peak_mib']:.0f} | {r['sessions']:,} | "
      f"{r.get('spill_count', '—')} | {round(r.get('spilled_bytes', 0) / 2**20) if 'spilled_bytes' in r else '—'} |")
PY
}
rows() { "$1" --lake "$work/lake" sql "SELECT * EXCLUDE (job_run_id) FROM sessions ORDER BY session_id" --format json; }
echo
echo "sessionize: $EVENTS events, $from .. $to"
echo
echo "| run | seconds | peak MiB | sessions | spill files | spilled MiB |"
echo "|---|---:|---:|---:|---:|---:|"
if [ -n "$base" ]; then
  run "baseline" "$base"
  rows "$base" | sha256sum >"$work/base.sha"
fi
first=1
for mb in $limits; do
  run "jobs.memory_limit_mb=$mb" "$crow" CROW_JOBS_MEMORY_LIMIT_MB="$mb"
  if [ -n "$base" ] && [ "$first" = 1 ]; then
    rows "$crow" | sha256sum >"$work/new.sha"
    first=0
  fi
done
if [ -n "$base" ]; then
  echo
  if cmp -s "$work/base.sha" "$work/new.sha"; then echo "same sessions as the baseline: yes"; else echo "same sessions as the baseline: NO"; exit 1; fi
fi
