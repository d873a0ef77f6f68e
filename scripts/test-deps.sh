#!/usr/bin/env bash
# Installs what CROW's tests need on a fresh machine, idempotently:
# a Python virtualenv with the independent Delta readers (deltalake, polars,
# pyarrow), moto's S3-compatible server and schemathesis (the query API's
# property-based tester), the official MCP client (mcp), the Segment and
# RudderStack Node SDKs (npm, under the venv), the Segment browser library,
# axe-core (npm: the dashboard test injects it into each page)
# and Chromium. Prints the venv's path.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="${CROWTEST_VENV:-$root/.venv}"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv" >&2
fi
# Every Python package and what it pulls in, pinned with hashes
# (tests/py/requirements.lock, made from tests/py/requirements.in): a new
# release upstream cannot change what the tests run with. To change it:
# edit requirements.in, run the pip-compile command in the lock's header, and
# drop any `--find-links`/`--index-url` line it copied from the machine's own
# pip configuration (the lock names packages and hashes only).
lock="$root/tests/py/requirements.lock"
want="$(sha256sum "$lock" | cut -d' ' -f1)"
stamp="$venv/.crow-deps"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  "$venv/bin/pip" install --quiet --disable-pip-version-check --require-hashes -r "$lock" >&2
  echo "$want" > "$stamp"
fi
# The official Segment and RudderStack Node SDKs (the README's snippets run
# as written), in the venv's folder.
node_want="@segment/analytics-node@3.1.0 @rudderstack/rudder-sdk-node@3.0.13 @segment/analytics-next@1.84.3 axe-core@4.14.1"
node_stamp="$venv/node/.crow-deps"
if [ ! -f "$node_stamp" ] || [ "$(cat "$node_stamp")" != "$node_want" ]; then
  mkdir -p "$venv/node"
  npm install --silent --no-audit --no-fund --prefix "$venv/node" $node_want >&2
  echo "$node_want" > "$node_stamp"
fi
# Debian's Chromium for the browser SDK test (driven by Playwright, which
# must not download a browser of its own).
# curl: the README walkthrough test runs the README's curl examples.
# postgresql-client: psql against `crow serve --pg-listen` (tests/it/pgwire.rs).
if ! command -v chromium >/dev/null 2>&1 || ! command -v curl >/dev/null 2>&1 \
  || ! command -v psql >/dev/null 2>&1; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  log="$(mktemp)"
  if ! ($sudo apt-get update -qq && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium curl postgresql-client) >"$log" 2>&1; then
    cat "$log" >&2; exit 1
  fi
  rm -f "$log"
fi
echo "$venv"
