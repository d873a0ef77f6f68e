#!/usr/bin/env bash
# The daily patterns run over a long history (BENCHMARKS.md, "Patterns: a
# daily run's cost follows the day"):
#  1. a lake with DAYS days of the demo's activity (`crow demo --days DAYS
#     --visitors VISITORS`, its clock fixed so every run sees the same data);
#  2. for each probe day d (day 1 is the first day with data), on a fresh
#     copy of that lake (so no run sees the commits of the runs before
#     it: the ledger grows with every run, and its log with it): the state the
#     scheduler would have left the day before (the kept daily figures of
#     the days before d: `daily_metrics` emptied, then the patterns job over
#     [first day, d) — not timed), then the patterns job for day d as the
#     nightly run does it (`--from d --to d+1 --now d+1T02:00Z`), timed:
#     wall time, peak memory, bytes read (`rchar`), sessions read, days
#     counted and kept; RUNS times (each from the same state), the median
#     printed.
# With OLD_BIN=PATH the same timed runs are made with another build of
# `crow` (one that reads every session of the history, say) beside it.
# Usage: scripts/bench-daily.sh   (DAYS=121 VISITORS=80000 PROBES="1 30 60 120" RUNS=3;
#        CROWTEST_BIN=PATH to use an already built binary instead of building
#        in release; DAYS=35 VISITORS=3000 PROBES="1 30" for a quick run)
set -euo pipefail
cd "$(dirname "$0")/.."
DAYS="${DAYS:-121}"
VISITORS="${VISITORS:-80000}"
PROBES="${PROBES:-1 30 60 120}"
RUNS="${RUNS:-3}"
source scripts/bench/lib.sh
bench_venv json
bench_crow
bench_work
base="$work/base"
lake="$work/lake"
# The last whole hour: the demo's activity ends the day before it. Not
# midnight itself: the sessions of the day before close a gap after their
# last event, and a day with open sessions is not counted yet (a run at
# 01:06 UTC found day 30 empty), so then the hour before.
clock="$(date -u -d '-1 hour' +%Y-%m-%dT%H:00:00Z)"
if [ "${clock:11:2}" = 00 ]; then clock="$(date -u -d '-2 hour' +%Y-%m-%dT%H:00:00Z)"; fi
first="$(date -u -d "${clock:0:10} - $DAYS days" +%Y-%m-%d)"
echo "building $DAYS days of history ($VISITORS visitors) ..." >&2
"$py" scripts/bench/measure.py "$crow" --lake "$base" demo --days "$DAYS" --visitors "$VISITORS" \
  --now "$clock" --format json >"$work/demo.json" 2>"$work/demo.err" || { cat "$work/demo.err" >&2; exit 1; }
sessions=$("$crow" --lake "$base" sql "SELECT count(*) AS n FROM sessions" --format json | "$py" -c 'import json,sys; print(json.load(sys.stdin)[0]["n"])')
echo "probe,binary,seconds,peak_mib,read_mib,sessions_read,days_counted,days_kept" >"$work/runs.csv"
for d in $PROBES; do
  day="$(date -u -d "$first + $((d - 1)) days" +%Y-%m-%d)"
  next="$(date -u -d "$day + 1 day" +%Y-%m-%d)"
  for which in new old; do
    for _ in $(seq 1 "$RUNS"); do
      bin="$crow"
      rm -rf "$lake"
      cp -a "$base" "$lake"
      if [ "$which" = old ]; then
        [ -n "${OLD_BIN:-}" ] || continue
        bin="$OLD_BIN"
      else
        # The kept figures of the days before d, as the nightly runs left them.
        # (Made again empty by `crow init`: the jobs trust the lake's
        # tables marker and do not look for a table removed by hand.)
        rm -rf "$lake/daily_metrics"
        "$crow" --lake "$lake" init >/dev/null
        if [ "$d" -gt 1 ]; then
          "$crow" --lake "$lake" jobs run patterns --from "$first" --to "$day" \
            --now "${day}T02:00:00Z" --quiet --format json >/dev/null
        fi
      fi
      echo "day $d ($day), $which build ..." >&2
      "$py" scripts/bench/measure.py "$bin" --lake "$lake" jobs run patterns --from "$day" --to "$next" \
        --now "${next}T02:00:00Z" --quiet --format json >"$work/run.json" 2>"$work/run.err" \
        || { cat "$work/run.err" >&2; exit 1; }
      "$py" - "$work" "$d" "$which" >>"$work/runs.csv" <<'PY'
import json, sys
work, d, which = sys.argv[1:4]
r = json.load(open(f"{work}/run.json"))
m = json.loads(open(f"{work}/run.err").read().strip().splitlines()[-1])
print(",".join(str(x) for x in [d, which, m["seconds"], m["peak_mib"], m["read_mib"],
      r.get("sessions_read", ""), r.get("days_counted", ""), r.get("days_kept", "")]))
PY
    done
  done
done
"$py" - "$work" "$DAYS" "$VISITORS" "$sessions" <<'PY'
import csv, sys
work, days, visitors, sessions = sys.argv[1:5]
runs = list(csv.DictReader(open(f"{work}/runs.csv")))
# The median run of each probe and build (by wall time).
rows = []
for key in dict.fromkeys((r["probe"], r["binary"]) for r in runs):
    same = sorted((r for r in runs if (r["probe"], r["binary"]) == key), key=lambda r: float(r["seconds"]))
    rows.append(same[(len(same) - 1) // 2])
print(f"\ndaily patterns run: {days} days of the demo ({int(visitors):,} visitors, {int(sessions):,} sessions), median of {len(runs) // max(len(rows), 1)} runs\n")
print("| day | build | seconds | peak MiB | MiB read | sessions read | days counted | days kept |")
print("|---:|---|---:|---:|---:|---:|---:|---:|")
for r in rows:
    print(f"| {r['probe']} | {r['binary']} | {float(r['seconds']):.2f} | {float(r['peak_mib']):.0f} | "
          f"{float(r['read_mib']):.1f} | {r['sessions_read']} | {r['days_counted']} | {r['days_kept']} |")
new = {int(r["probe"]): float(r["seconds"]) for r in rows if r["binary"] == "new"}
probes = sorted(new)
if len(probes) >= 2:
    last = probes[-1]
    base = 30 if 30 in new and last != 30 else probes[0]
    print(f"\nnew build: day {last} takes {new[last] / new[base]:.2f}× the time of day {base} (goal ≤ 1.5)")
PY
