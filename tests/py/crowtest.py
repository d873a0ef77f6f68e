"""Pieces the Python test clients share (imported from their own folder)."""

import json
import sys
import urllib.request


def accepted(collector):
    """Web events the collector has accepted so far (its /metrics)."""
    with urllib.request.urlopen(collector + "/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith('crow_ingest_events_accepted_total{channel="web"}'):
                return int(float(line.split()[-1]))
    return 0


def print_outcome(run):
    """Call `run()`; print what it returns as JSON, or, when it raises,
    {"error": "Type: message"} of the innermost exception (of an exception
    group too) and exit 3: a refusal is a result the calling test checks."""
    try:
        out = run()
    except BaseException as e:  # noqa: BLE001 - the refusal is the result
        while getattr(e, "exceptions", None):
            e = e.exceptions[0]
        print(json.dumps({"error": f"{type(e).__name__}: {e}"}))
        sys.exit(3)
    print(json.dumps(out))
