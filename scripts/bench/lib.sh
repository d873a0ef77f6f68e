# Shared by the benchmark scripts (source it after setting `crow`, `py` and
# `work`): start a `crow serve --only api` on a free local port and wait
# until it answers.
#   bench_start_api NAME LAKE [VAR=VALUE ...]   → sets $url; the server's
#   pid joins $bench_pids (kill them with bench_stop_all); its log is
#   $work/serve-NAME.log. Extra arguments are environment settings, e.g.
#   CROW_API_RESULT_CACHE_MB=0.
bench_pids=()
bench_start_api() {
  local name="$1" lake="$2" port
  shift 2
  port=$("$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  env "$@" "$crow" --lake "$lake" serve --only api --listen "127.0.0.1:$port" \
    --wal-dir "$work/wal-$name" >"$work/serve-$name.log" 2>&1 &
  bench_pids+=($!)
  for _ in $(seq 1 150); do
    curl -sf -o /dev/null "http://127.0.0.1:$port/api/v1/openapi.json" && break
    kill -0 "${bench_pids[-1]}" 2>/dev/null || { cat "$work/serve-$name.log" >&2; return 1; }
    sleep 0.2
  done
  url="http://127.0.0.1:$port"
}
bench_stop_all() {
  for p in "${bench_pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
}
