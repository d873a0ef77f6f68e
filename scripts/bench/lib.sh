# Shared by the benchmark scripts: `source scripts/bench/lib.sh` from the
# repository's root, then
#   bench_venv IMPORTS PACKAGE...  → $py: the virtualenv's python
#       ($CROWTEST_VENV, else .venv, made if missing) once `import IMPORTS`
#       works there, pip-installing PACKAGE... when it does not.
#   bench_crow                     → $crow: $CROWTEST_BIN, else a release
#       build of `crow` with the benchmark commands.
#   bench_work                     → $work: a temporary folder, removed on
#       exit together with every server in $bench_pids (bench_stop_all).
#   bench_free_port                → prints a free local TCP port.
#   bench_serve NAME [VAR=VALUE ...] -- CROW_ARGS...  → runs
#       `$crow CROW_ARGS...` (a `serve`) in the background with the settings
#       in its environment, logging to $work/serve-NAME.log, and waits until
#       the address that this server logs ("listening on http://…") answers
#       /healthz; prints the log and fails when the server exits or has not
#       started in 60 s. Sets $url; the pid joins $bench_pids. Reading the
#       address from the server's own log, not probing a port chosen
#       beforehand, means another server that took that port in between
#       (tests run several at once) is never mistaken for this one.
#   bench_start_api NAME LAKE [VAR=VALUE ...]  → `crow serve --only api` on
#       LAKE on a free port through bench_serve, e.g. with
#       CROW_API_RESULT_CACHE_MB=0.
#   bench_generate LAKE            → a new lake at LAKE holding $EVENTS
#       generated web events over 28 days (`crow bench generate`); its
#       summary (org_id, from, to, visitors, …) in $work/gen.json.
#   bench_field FILE KEY           → prints KEY of the JSON object in FILE.
#   bench_read_key LAKE ORG NAME   → prints the secret of a new read-scope
#       API key NAME of ORG.
bench_pids=()

bench_venv() {
  local imports="$1"
  shift
  venv="${CROWTEST_VENV:-.venv}"
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/python" -c "import $imports" 2>/dev/null || "$venv/bin/pip" install -q "$@"
  py="$venv/bin/python"
}

bench_crow() {
  if [ -n "${CROWTEST_BIN:-}" ]; then
    crow="$CROWTEST_BIN"
  else
    cargo build --release --locked --bin crow --features crow-cli/bench
    crow="$PWD/target/release/crow"
  fi
}

bench_work() {
  work="$(mktemp -d)"
  trap 'bench_stop_all; rm -rf "$work"' EXIT
}

bench_free_port() {
  "${py:-python3}" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

bench_serve() {
  local name="$1" settings=() log pid addr=""
  shift
  while [ "$#" -gt 0 ] && [ "$1" != "--" ]; do settings+=("$1"); shift; done
  [ "$#" -gt 0 ] || { echo "bench_serve: no -- before the crow arguments" >&2; return 2; }
  shift
  log="$work/serve-$name.log"
  env "${settings[@]}" "$crow" "$@" >"$log" 2>&1 &
  pid=$!
  bench_pids+=("$pid")
  for _ in $(seq 1 300); do
    kill -0 "$pid" 2>/dev/null || { echo "crow serve ($name) exited:" >&2; cat "$log" >&2; return 1; }
    addr="$(sed -n 's|.*listening on http://\([0-9.:]*\).*|\1|p' "$log" | head -n 1)"
    if [ -n "$addr" ] && curl -sf -o /dev/null "http://$addr/healthz"; then
      url="http://$addr"
      return 0
    fi
    sleep 0.2
  done
  echo "crow serve ($name) did not answer in 60 s:" >&2
  cat "$log" >&2
  return 1
}

bench_start_api() {
  local name="$1" lake="$2"
  shift 2
  bench_serve "$name" "$@" -- --lake "$lake" serve --only api \
    --listen "127.0.0.1:0" --wal-dir "$work/wal-$name"
}

bench_generate() {
  local lake="$1" started
  "$crow" --lake "$lake" init >/dev/null
  echo "generating $EVENTS events ..." >&2
  started=$(date +%s)
  "$crow" --lake "$lake" bench generate --events "$EVENTS" --days 28 >"$work/gen.json"
  echo "generated in $(( $(date +%s) - started )) s" >&2
}

bench_field() {
  "${py:-python3}" -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"
}

bench_read_key() {
  "$crow" --lake "$1" keys create --org "$2" --scope read --name "$3" --format json \
    | "${py:-python3}" -c 'import json,sys; print(json.load(sys.stdin)["secret"])'
}

bench_stop_all() {
  for p in "${bench_pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  bench_pids=()
}
