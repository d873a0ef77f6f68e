"""Drive the official Segment browser library (Analytics.js 2.0, npm
`@segment/analytics-next`, its UMD build) in headless Chromium (Debian's, via
Playwright), pointed at CROW exactly as the README says: only `cdnURL`.

usage: segment_browser.py COLLECTOR_URL WRITE_KEY

Serves a shop page and the library's files from another origin (so every
request to the collector is cross-origin, as on a real site). The library
loads its settings from the collector, which point it back at the collector;
the page then sends a page view, a product view and an identify. Fails if
any request to the collector fails or is refused. Prints the visitor's
anonymousId.
"""
import json
import mimetypes
import pathlib
import sys
import time

from playwright.sync_api import sync_playwright

from crowtest import accepted, chromium, serve_pages

PAGE = """<!doctype html>
<html><head><title>Northwind Shop</title>
<script src="/ajs/index.js"></script>
<script>
  window.analytics = AnalyticsNext.AnalyticsBrowser.load(
    {{writeKey: "{key}", cdnURL: "{collector}"}});
</script></head>
<body><h1>Aria Over-Ear</h1></body></html>
"""

SEND = """async () => {
  await analytics.page("Product", "Aria Over-Ear");
  await analytics.track("Product Viewed", {product_id: "nw-1001", sku: "NW-HE-001", price: 249, currency: "USD"});
  await analytics.identify("shopper-7", {plan: "gold"});
  const user = await analytics.user();
  return user.anonymousId();
}"""


def main():
    collector, key = sys.argv[1].rstrip("/"), sys.argv[2]
    umd = (pathlib.Path(sys.executable).parent.parent / "node" / "node_modules"
           / "@segment" / "analytics-next" / "dist" / "umd")
    if not (umd / "index.js").exists():
        sys.exit(f"{umd} is missing: run scripts/test-deps.sh")
    html = PAGE.format(collector=collector, key=key).encode()

    def page(path):
        if not path.startswith("/ajs/"):
            return html, "text/html"
        f = umd / path[len("/ajs/"):].split("?")[0]
        if f.resolve().parent != umd.resolve() or not f.is_file():
            return None
        return f.read_bytes(), mimetypes.guess_type(f.name)[0] or "application/javascript"

    origin, stop_site = serve_pages(page)

    failures = []
    with sync_playwright() as p:
        browser = chromium(p)
        page = browser.new_page()
        page.on("requestfailed", lambda r: failures.append(f"{r.url}: {r.failure}"))
        page.on("response", lambda r: r.status >= 400 and failures.append(f"{r.url}: HTTP {r.status}"))
        before = accepted(collector)
        page.goto(origin + "/product/aria")
        anon = page.evaluate(SEND)
        deadline = time.time() + 20
        while accepted(collector) < before + 3 and time.time() < deadline:
            time.sleep(0.1)
        browser.close()
    stop_site()
    if failures:
        sys.exit("requests failed:\n" + "\n".join(failures))
    print(json.dumps({"anonymousId": anon}))


if __name__ == "__main__":
    main()
