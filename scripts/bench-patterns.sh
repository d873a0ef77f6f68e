#!/usr/bin/env bash
# The patterns evaluation harness of BENCHMARKS.md: generated 120-day
# histories with planted changes (mobile drop, traffic spike, mobile payment
# break, viral product; half with a weekday effect) and quiet controls, run
# through the patterns job's tests and story grouping in memory. Prints the
# report (Markdown) at the default FDR (0.01) and at 0.05.
# Usage: scripts/bench-patterns.sh   (CROWTEST_EVAL_SEEDS=N seeds per case, default 5;
#        CROWTEST_EVAL_VOLUME=10 for ten times the sessions a day;
#        CROWTEST_EVAL_CASES=drift for the cases whose name holds the text,
#        or the one case of exactly that name;
#        CROWTEST_EVAL_BIN=PATH to run an already built unit-test binary of
#        crow-jobs instead of building it, as the test suite does)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${CROWTEST_EVAL_BIN:-}" ]; then
  run() { "$CROWTEST_EVAL_BIN" "$@"; }
else
  run() { cargo test -p crow-jobs --lib --locked -- "$@"; }
fi
run --ignored --exact patterns::eval::tests::eval_report --nocapture --test-threads 1 2>/dev/null |
  grep -v -e '^running ' -e '^test ' -e '^$' -e '^test result'
