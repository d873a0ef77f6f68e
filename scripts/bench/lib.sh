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
#   bench_serve NAME PORT [VAR=VALUE ...] -- CROW_ARGS...  → runs
#       `$crow CROW_ARGS...` in the background with the settings in its
#       environment, logging to $work/serve-NAME.log, and waits until
#       http://127.0.0.1:PORT/healthz answers (or prints the log and fails
#       when the server exits); sets $url; the pid joins $bench_pids.
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
  local name="$1" port="$2" settings=()
  shift 2
  while [ "$#" -gt 0 ] && [ "$1" != "--" ]; do settings+=("$1"); shift; done
  [ "$#" -gt 0 ] || { echo "bench_serve: no -- before the crow arguments" >&2; return 2; }
  shift
  env "${settings[@]}" "$crow" "$@" >"$work/serve-$name.log" 2>&1 &
  bench_pids+=($!)
  for _ in $(seq 1 150); do
    curl -sf -o /dev/null "http://127.0.0.1:$port/healthz" && break
    kill -0 "${bench_pids[-1]}" 2>/dev/null || { cat "$work/serve-$name.log" >&2; return 1; }
    sleep 0.2
  done
  url="http://127.0.0.1:$port"
}

bench_start_api() {
  local name="$1" lake="$2" port
  shift 2
  port=$(bench_free_port)
  bench_serve "$name" "$port" "$@" -- --lake "$lake" serve --only api \
    --listen "127.0.0.1:$port" --wal-dir "$work/wal-$name"
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
