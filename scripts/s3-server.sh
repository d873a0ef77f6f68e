#!/usr/bin/env bash
# Starts a local S3-compatible server (moto's server mode, which honours
# conditional writes) for the S3 tests, creates the test bucket, and prints
# `PID PORT`. Stop it with `kill PID`.
set -euo pipefail
venv="$1"
port="${CROWTEST_S3_PORT:-$("$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')}"
log="${TMPDIR:-/tmp}/crow-moto-$port.log"
"$venv/bin/python" "$(dirname "$0")/moto-server.py" -H 127.0.0.1 -p "$port" >"$log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do
  if "$venv/bin/python" - "$port" <<'PY' 2>/dev/null
import sys, urllib.request
urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/moto-api/", timeout=1)
PY
  then break; fi
  if ! kill -0 "$pid" 2>/dev/null; then echo "moto_server exited: $(cat "$log")" >&2; exit 1; fi
  sleep 0.2
done
AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_DEFAULT_REGION=us-east-1 \
"$venv/bin/python" - "$port" "${CROWTEST_S3_BUCKET:-crow-test}" <<'PY'
import sys, boto3
s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{sys.argv[1]}")
s3.create_bucket(Bucket=sys.argv[2])
PY
echo "$pid $port"
