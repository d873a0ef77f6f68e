#!/usr/bin/env bash
# CROW's test command: everything the tests need, then every test.
#
#   scripts/test.sh            # lint + build + all tests
#   CROWTEST_SKIP_LINT=1 scripts/test.sh   # skip fmt/clippy while iterating
#   CROWTEST_TIMINGS=1 scripts/test.sh     # also write cargo's build timings
#                                          # (target/cargo-timings/*.html)
#
# It installs the Python test dependencies into .venv (independent Delta
# readers: deltalake, polars; the S3 server: moto), starts a local
# S3-compatible server for the S3 backend tests, builds the `crow` binary and
# runs the whole workspace's tests against it.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# A build from nothing gains nothing from incremental compilation's
# bookkeeping (it only speeds up rebuilds of the workspace's own crates);
# .ci/run, whose target/ persists between runs, turns it on.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

# Seconds per phase, printed as a table at the end (pass or fail).
phases=()
mark=$SECONDS
phase() { phases+=("$(printf '%-34s %6d s' "$1" $((SECONDS - mark)))"); mark=$SECONDS; }
report() {
  echo
  echo "== time per phase"
  printf '%s\n' "${phases[@]}"
  printf '%-34s %6d s\n' "total" "$SECONDS"
}
trap report EXIT

if [ -z "${CROWTEST_SKIP_LINT:-}" ]; then
  echo "== cargo fmt (first: seconds, and fails early)"
  cargo fmt --all -- --check
  phase "cargo fmt"
  # Clippy lints the workspace's crates while the build compiles them:
  # `cargo clippy` is `cargo check` with clippy-driver as the workspace's
  # rustc wrapper, so a separate clippy run checks every dependency a second
  # time (in check mode, units the build never reuses: ~10 min cold on 2
  # cores). With the wrapper on the build (and the test run, so nothing is
  # rebuilt), the dependencies compile once and the lints are the same, with
  # warnings denied. The wrapper applies to workspace members only.
  driver="$(rustup which clippy-driver 2>/dev/null || command -v clippy-driver)"
  export RUSTC_WORKSPACE_WRAPPER="$driver"
  export CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__"
fi

# The Python/npm/Debian test dependencies install in the background while
# the build compiles (they wait on the network; the build on the CPUs).
echo "== test dependencies (in the background, beside the build)"
deps_out="$(mktemp)"; deps_err="$(mktemp)"
bash scripts/test-deps.sh >"$deps_out" 2>"$deps_err" &
deps_pid=$!

echo "== build (with clippy's lints unless CROWTEST_SKIP_LINT is set)"
# `--bins --tests`, not `--all-targets`: every binary and every test target
# whose `test` flag is on. `--all-targets` selects each library's test
# harness explicitly, even where `[lib] test = false` says it holds no
# tests (crow-cli's and crow-tests' libraries); the workspace has no
# benches or examples. The same set of units either way otherwise.
if ! cargo build --workspace --bins --tests --locked ${CROWTEST_TIMINGS:+--timings}; then
  kill "$deps_pid" 2>/dev/null || true
  exit 1
fi
phase "build (and clippy)"
# .ci/run: the content of the sources this build compiled, so the next run
# on this machine reuses it (scripts/ci-sources.py).
if [ -n "${CROWTEST_SOURCES_LIST:-}" ]; then
  python3 scripts/ci-sources.py record "$CROWTEST_SOURCES_LIST"
fi

if ! wait "$deps_pid"; then
  echo "installing the test dependencies failed:" >&2
  cat "$deps_err" >&2
  exit 1
fi
cat "$deps_err" >&2
venv="$(tail -n1 "$deps_out")"
rm -f "$deps_out" "$deps_err"
phase "test dependencies (after the build)"

echo "== local S3 servers"
# Two server processes (CROWTEST_S3_SERVERS): moto is Python, one core per
# process, and one process queued the requests of all the S3 tests running
# at once; each test's lake takes the next server (tests/tests/it/support.rs).
s3_pids=()
endpoints=()
for _ in $(seq 1 "${CROWTEST_S3_SERVERS:-2}"); do
  read -r s3_pid s3_port < <(bash scripts/s3-server.sh "$venv")
  s3_pids+=("$s3_pid")
  endpoints+=("http://127.0.0.1:$s3_port")
  trap 'kill "${s3_pids[@]}" 2>/dev/null || true; report' EXIT
done
export CROWTEST_S3_ENDPOINT="${endpoints[*]}"
export CROWTEST_PYTHON="$venv/bin/python"
echo "moto S3 servers on $CROWTEST_S3_ENDPOINT"
phase "local S3 server"

echo "== one copy each of the data stack"
for c in datafusion arrow parquet object_store deltalake-core; do
  n=$(grep -c "^name = \"$c\"$" Cargo.lock || true)
  if [ "$n" != 1 ]; then echo "Cargo.lock holds $n copies of $c" >&2; exit 1; fi
done

echo "== browser SDK unit tests (node, no DOM)"
node --test ingest/sdk/test
phase "browser SDK unit tests"

echo "== tests"
# Six test threads on two cores: many tests wait on servers, leases and
# schedules more than they compute (BENCHMARKS.md, "CI": the `it` binary
# took 431 s with 6, 484 s with 4, and 686 s with the default two, when
# it used 82 % of both cores). CROWTEST_THREADS=N to change it.
# --no-fail-fast: a failing test binary does not hide the failures of the
# binaries after it (the run still fails).
log="$(mktemp)"
set +e
# The runner adds libtest's per-test times (scripts/test-runner.sh); a
# runner changes no compiled unit, so nothing is rebuilt for it.
cargo test --workspace --tests --locked --no-fail-fast \
  --config "target.'cfg(all())'.runner=['$PWD/scripts/test-runner.sh']" \
  -- --test-threads "${CROWTEST_THREADS:-6}" "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
phase "tests"
passed=$(grep -E '^test result:' "$log" | sed -E 's/.* ([0-9]+) passed.*/\1/' | awk '{s+=$1} END {print s+0}')
failed=$(grep -E '^test result:' "$log" | sed -E 's/.* ([0-9]+) failed.*/\1/' | awk '{s+=$1} END {print s+0}')
echo
echo "== slowest tests (wall seconds; tests run ${CROWTEST_THREADS:-6} at a time)"
# A report only: it never decides the run (no `head`, whose early exit
# would end `sort` with SIGPIPE and, under pipefail, the script).
{ grep -E '^test .* <[0-9.]+s>$' "$log" | sed -E 's/^test (.*) \.\.\. [a-zA-Z]+ <([0-9.]+)s>$/\2 \1/' | sort -rn \
  | awk -v n="${CROWTEST_SLOWEST:-25}" 'NR <= n {printf "%8.1f  %s\n", $1, $2}'; } || true
if [ "$status" != 0 ]; then
  # Why each failing test failed, here at the end: a failing test's own
  # output (a server's log, dumped when it panics) can bury its message.
  echo
  echo "== why the failing tests failed (the panic and up to 60 lines of its message)"
  { sed -E 's/\x1b\[[0-9;]*m//g' "$log" | awk '
      /^thread .* panicked at / { n = 60; print "--"; print; next }
      n > 0 && /^(20[0-9][0-9]-[0-9][0-9]-[0-9][0-9]T|note: run with|stack backtrace:|---- |--- crow serve log ---)/ { n = 0 }
      n > 0 { print; n-- }'; } || true
fi
rm -f "$log"
echo
echo "$passed passed, $failed failed"
exit "$status"
