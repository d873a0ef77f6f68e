#!/usr/bin/env bash
# The dashboard benchmark of BENCHMARKS.md ("Dashboard: time to a drawn
# page"), in one run on this machine:
#  1. a temp lake: the demo (`crow demo`, its owner's sign-in as it prints
#     it) by default; with EVENTS=N, N generated web events over 28 days
#     (`crow bench generate`), an owner created with `crow users create`, and
#     the sessionize, enrich (offline provider) and patterns jobs run over it;
#  2. `crow serve --only api` on a free local port;
#  3. scripts/bench/dashboard.py: headless Chromium (Debian's, through
#     Playwright) signs in and times navigation start → last chart drawn on
#     the overview and the patterns page, best of RUNS after a warm-up, with
#     the API requests behind each; prints a Markdown table.
# Usage: scripts/bench-dashboard.sh   (EVENTS=1000000 for a generated lake;
#        DEMO_ARGS="--visitors 3000 --days 21" for a smaller demo (the
#        suite's tiny run); RUNS=5; KEEP_LAKE=DIR to build the lake there and keep it;
#        LAKE=DIR EMAIL=… PASSWORD=… to time an existing lake instead;
#        CROWTEST_BIN=PATH to use an already built binary instead of building
#        in release; CROWTEST_VENV=DIR for a venv that has Playwright already)
set -euo pipefail
cd "$(dirname "$0")/.."
EVENTS="${EVENTS:-}"
RUNS="${RUNS:-3}"
read -r -a demo_args <<<"${DEMO_ARGS:-}"
source scripts/bench/lib.sh
bench_venv playwright playwright
[ -x /usr/bin/chromium ] || { echo "needs Debian's Chromium at /usr/bin/chromium (apt-get install chromium)" >&2; exit 2; }
bench_crow
bench_work
exec 3>&2
timed() { # timed WHAT COMMAND…: run it, say how long it took on the script's stderr
  local what="$1" started
  shift
  started=$(date +%s)
  "$@"
  echo "$what in $(( $(date +%s) - started )) s" >&3
}
if [ -n "${LAKE:-}" ]; then
  lake="$LAKE"
  email="${EMAIL:?LAKE needs EMAIL and PASSWORD: an owner or member of its organization}"
  password="${PASSWORD:?LAKE needs EMAIL and PASSWORD}"
  what="the lake at $lake"
else
  lake="${KEEP_LAKE:-$work/lake}"
  [ ! -e "$lake/raw_web_events" ] || { echo "$lake already holds a lake; KEEP_LAKE must be a new folder" >&2; exit 2; }
  if [ -z "$EVENTS" ]; then
    echo "building the demo lake ..." >&2
    timed "demo built" "$crow" --lake "$lake" demo "${demo_args[@]}" >"$work/demo.out" 2>"$work/demo.err" \
      || { cat "$work/demo.err" >&2; exit 1; }
    email=$(sed -n 's/^ *e-mail: //p' "$work/demo.out" | head -1)
    password=$(sed -n 's/^ *password: //p' "$work/demo.out" | head -1)
    [ -n "$email" ] && [ -n "$password" ] || { echo "crow demo printed no sign-in" >&2; exit 1; }
    what="the demo lake ($(sed -n 's/^created demo brand .*: //p' "$work/demo.err" | head -1))"
  else
    "$crow" --lake "$lake" init >/dev/null
    echo "generating $EVENTS events ..." >&2
    timed "generated" "$crow" --lake "$lake" bench generate --events "$EVENTS" --days 28 >"$work/gen.json"
    org=$(bench_field "$work/gen.json" org_id)
    email="owner@bench.example"
    password="bench owner password"
    echo "$password" | "$crow" --lake "$lake" users create --org "$org" --email "$email" --role owner \
      --password-stdin --format json >/dev/null
    for job in sessionize enrich patterns; do
      timed "$job" "$crow" --lake "$lake" jobs run "$job" --quiet --format json >"$work/$job.json"
    done
    what="a generated lake of $EVENTS events over 28 days"
  fi
fi
# The result cache is off: each timed visit runs its queries (a dashboard
# revisited within the same table versions would be served from it).
bench_start_api api "$lake" CROW_API_RESULT_CACHE_MB=0
events=$("$crow" --lake "$lake" sql --format csv "SELECT count(*) AS n FROM raw_web_events" 2>/dev/null \
  | tail -1 | "$py" -c 'import sys; print(f"{int(sys.stdin.read()):,}")' 2>/dev/null || echo "?")
echo
echo "Dashboard on $what: $events raw web events; $(nproc) cores;" \
  "Chromium $(/usr/bin/chromium --version 2>/dev/null | awk '{print $2}'), headless, 1440×900;" \
  "best of $RUNS after one warm-up visit"
echo
status=0
"$py" scripts/bench/dashboard.py "$url" "$email" "$password" --runs "$RUNS" || status=$?
[ "$status" = 0 ] || echo "the benchmark failed; server log: $(tail -5 "$work/serve-api.log")" >&2
exit "$status"
