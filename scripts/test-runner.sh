#!/usr/bin/env bash
# Cargo's runner for the test binaries (scripts/test.sh): runs one binary
# with libtest's per-test times (`ok <12.345s>`), which scripts/test.sh
# sorts into its "slowest tests" table. RUSTC_BOOTSTRAP=1 lets stable's
# libtest take -Z unstable-options at run time; nothing is compiled with it.
set -euo pipefail
bin="$1"; shift
RUSTC_BOOTSTRAP=1 exec "$bin" "$@" -Z unstable-options --report-time
