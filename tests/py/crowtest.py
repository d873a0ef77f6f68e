"""Pieces the Python test clients share (imported from their own folder)."""

import http.server
import json
import sys
import threading
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


def serve_pages(page):
    """Serve GET requests on a free local port from a thread: `page(path)`
    answers (body bytes, content type), or None for a 404. The origin
    (http://127.0.0.1:PORT) and the function that stops the server."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            found = page(self.path)
            if found is None:
                self.send_error(404)
                return
            body, ctype = found
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    site = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=site.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{site.server_address[1]}", site.shutdown


def chromium(p):
    """Debian's Chromium (/usr/bin/chromium), headless, launched through the
    Playwright `p`, without the background traffic that slows it down."""
    return p.chromium.launch(
        executable_path="/usr/bin/chromium",
        headless=True,
        args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync"],
    )
