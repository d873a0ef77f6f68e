"""Time to a drawn dashboard page, in headless Chromium (Debian's, via Playwright).

usage: dashboard.py BASE_URL EMAIL PASSWORD [--runs N]

Signs in through /login, then for the overview (/app/) and the patterns
page (/app/patterns) navigates to the page from about:blank once to warm up
(its time is reported as "first") and RUNS times more, and reports the best.

"Drawn" is measured in the page, on the clock of the navigation
(performance.now(), which starts at navigation start): an init script
checks on every animation frame and records the first frame at which
  - the page's root ([data-testid=overview] or [data-testid=patterns]) has
    data-state=ready and nothing on the page says "Loading…" (no
    [role=status] whose text starts with "Loading");
  - overview: every time-series chart ([data-testid=series-chart]) holds a
    uPlot canvas with a non-zero size and at least one painted pixel, and
    there is at least one (the benchmark fails on a lake whose period is
    empty: a page with no chart would be timed too fast);
  - patterns: every finding has its days (GET /api/v1/insights/days) and
    its evidence chart (an SVG) has its daily points laid out (a non-zero
    box).
The phases of the best run, from the page's Resource Timing: "boot" is
navigation start to the first API request (HTML, CSS, JS modules),
"API" from there to the last API answer received before the page was
drawn, "render" from that answer to drawn. The API requests behind the page
(all /api/ requests the navigation made, from Playwright's network events):
how many, their response bytes as sent (compressed), and the slowest, with
its time (request sent to last byte, as Chromium saw it).

Prints a Markdown table.
"""
import argparse
import json
import re
import sys
import time

from playwright.sync_api import sync_playwright

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]

# Runs in every document before its own scripts (through DevTools, so the
# pages' Content-Security-Policy does not apply to it).
DRAWN = r"""
(() => {
  const which = location.pathname.startsWith('/app/patterns') ? 'patterns'
    : (location.pathname === '/app/' || location.pathname === '/app') ? 'overview' : null;
  if (!which) return;
  const loading = () => [...document.querySelectorAll('[role=status]')]
    .some((e) => e.textContent.trim().startsWith('Loading'));
  const painted = (c) => {
    if (!c.width || !c.height) return false;
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    for (let i = 3; i < d.length; i += 64) if (d[i] !== 0) return true;
    return false;
  };
  function drawn() {
    const root = document.querySelector(`[data-testid=${which}]`);
    if (!root || root.dataset.state !== 'ready' || loading()) return null;
    if (which === 'overview') {
      const charts = [...root.querySelectorAll('[data-testid=series-chart]')];
      if (!charts.length) return null;
      for (const ch of charts) {
        const cs = [...ch.querySelectorAll('.uplot canvas')];
        if (!cs.length || !cs.every(painted)) return null;
      }
      return {charts: charts.length, items: root.querySelectorAll('[data-testid=top-product]').length};
    }
    const pats = [...root.querySelectorAll('[data-testid=pattern]')];
    if (pats.some((p) => p.dataset.days !== 'ready')) return null;
    const svgs = [...root.querySelectorAll('[data-testid=evidence-chart]')];
    for (const s of svgs) {
      const pts = [...s.querySelectorAll('[data-testid=day-point]')];
      if (!pts.length || !pts.every((c) => c.getBoundingClientRect().width > 0)) return null;
    }
    return {charts: svgs.length, items: root.querySelectorAll('[data-testid=pattern]').length};
  }
  const started = performance.now();
  function check() {
    const d = drawn();
    if (d) {
      window.__crowDrawn = {page: which, t: performance.now(), ...d};
      return;
    }
    if (performance.now() - started < 120000) requestAnimationFrame(check);
  }
  requestAnimationFrame(check);
})();
"""

PHASES = """() => {
  const d = window.__crowDrawn;
  const api = performance.getEntriesByType('resource')
    .filter((e) => new URL(e.name).pathname.startsWith('/api/') && e.startTime <= d.t);
  const first = Math.min(...api.map((e) => e.startTime));
  const answered = api.map((e) => e.responseEnd).filter((t) => t <= d.t);
  const last = answered.length ? Math.max(...answered) : first;
  return {drawn: d.t, charts: d.charts, items: d.items,
          boot: api.length ? first : d.t, api: api.length ? last - first : 0, render: d.t - last};
}"""

# Names for the dashboard's queries in the table (the SQL is in app.js);
# anything else is named by its first table.
LABELS = [
    (r"count\(DISTINCT CASE", "KPIs from raw_web_events"),
    (r"date_trunc\('hour', occurred_at\)", "events per hour"),
    (r"date_trunc\('hour', started_at\)", "sessions per hour"),
    (r"FROM sessions .*GROUP BY channel", "sessions by channel"),
    (r"FROM interactions .*GROUP BY channel", "interactions by channel"),
    (r"LEFT JOIN products", "top products"),
    (r"FROM stories", "latest stories"),
    (r"FROM interactions .*LIMIT 8", "latest interactions"),
    (r"DISTINCT CAST\(period_start", "pattern periods"),
    (r"FROM patterns", "the period's patterns"),
]


def label(req):
    path = req.url.split("://", 1)[-1].split("/", 1)[-1]
    path = "/" + path
    if not path.startswith("/api/v1/sql"):
        return f"GET {path}" if req.method == "GET" else f"{req.method} {path}"
    try:
        q = " ".join(json.loads(req.post_data or "{}").get("sql", "").split())
    except ValueError:
        q = ""
    for pattern, name in LABELS:
        if re.search(pattern, q):
            return f"SQL: {name}"
    m = re.search(r"FROM (\w+)", q)
    return f"SQL: {m.group(1) if m else q[:40]}"


def sign_in(page, base, email, password):
    page.goto(base + "/login?next=/app/settings")
    page.fill("#email", email)
    page.fill("#password", password)
    page.click("#submit")
    page.wait_for_url(lambda u: u.split("://", 1)[-1].split("/", 1)[-1] == "app/settings", timeout=30000)


def drawn_yet(page):
    try:
        return page.evaluate("() => Boolean(window.__crowDrawn)")
    except Exception as e:  # noqa: BLE001
        print(f"({page.url}: {e})", file=sys.stderr)
        return False


def visit(page, url, reqs):
    """One navigation from about:blank; its phases and its API requests."""
    page.goto("about:blank")
    reqs.clear()
    page.goto(url)
    deadline = time.monotonic() + 120
    while not drawn_yet(page):
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} was not drawn in 120 s: "
                                 + page.inner_text("#root")[:500])
        time.sleep(0.02)
    phases = page.evaluate(PHASES)
    # The requests still in flight when the page was drawn are its own too.
    try:
        page.wait_for_load_state("networkidle", timeout=10000)
    except Exception:  # noqa: BLE001 — a page that keeps polling is still measured
        pass
    api = []
    for r in list(reqs):
        if "/api/" not in r.url:
            continue
        resp = r.response()
        sizes = r.sizes()
        t = r.timing
        api.append({"label": label(r), "status": resp.status if resp else 0,
                    "bytes": sizes["responseBodySize"] + sizes["responseHeadersSize"],
                    "ms": t["responseEnd"] if t["responseEnd"] >= 0 else float("nan")})
    bad = [a for a in api if a["status"] >= 400 or a["status"] == 0]
    assert not bad, f"{url}: failed API requests {bad}"
    return phases, api


def measure(page, url, runs, reqs):
    first = visit(page, url, reqs)
    best = None
    for _ in range(runs):
        got = visit(page, url, reqs)
        if best is None or got[0]["drawn"] < best[0]["drawn"]:
            best = got
    return first, best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("base")
    ap.add_argument("email")
    ap.add_argument("password")
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    base = a.base.rstrip("/")
    rows = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=ARGS)
        ctx = browser.new_context(viewport={"width": 1440, "height": 900})
        page = ctx.new_page()
        sign_in(page, base, a.email, a.password)
        ctx.add_init_script(DRAWN)
        reqs = []
        page.on("requestfinished", lambda r: reqs.append(r))
        page.on("requestfailed", lambda r: reqs.append(r))
        for name, path in (("overview", "/app/"), ("patterns", "/app/patterns")):
            first, (ph, api) = measure(page, base + path, a.runs, reqs)
            if name == "overview":
                assert ph["charts"] >= 1, "the overview drew no chart"
            rows.append((name, first, ph, api))
        browser.close()
    print(f"| page | drawn, best of {a.runs} (ms) | first visit (ms) | boot (ms) | API (ms) | render (ms) "
          "| charts | API requests | API KiB | slowest request (ms) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for name, first, ph, api in rows:
        slow = max(api, key=lambda x: x["ms"]) if api else None
        kib = sum(x["bytes"] for x in api) / 1024
        slowest = f"{slow['label']} ({slow['ms']:.0f})" if slow else "–"
        print(f"| {name} | {ph['drawn']:.0f} | {first[0]['drawn']:.0f} | {ph['boot']:.0f} | {ph['api']:.0f} "
              f"| {ph['render']:.0f} | {ph['charts']} | {len(api)} | {kib:.1f} | {slowest} |")
    print()
    print("API requests of the best run and of the first visit (ms, request sent to last byte), slowest first:")
    for name, first, _, api in rows:
        for what, reqs in ((name, api), (f"{name}, first visit", first[1])):
            parts = ", ".join(f"{x['label']} {x['ms']:.0f}" for x in sorted(reqs, key=lambda x: -x["ms"]))
            print(f"- {what}: {parts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
