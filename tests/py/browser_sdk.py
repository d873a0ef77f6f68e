"""Drive CROW's browser SDK in headless Chromium (Debian's, via Playwright).

usage: browser_sdk.py COLLECTOR_URL WRITE_KEY

Serves a shop page from another origin (so requests are cross-origin, as on
a real site), loads /sdk/crow.js from the collector, views a product, adds it
to the cart, navigates like a single-page app, queues one more event and
leaves the site for another one, so that the page-hide beacon must deliver
it. Prints the visitor's anonymousId; exits non-zero when the collector
never counted the beacon's event.
"""
import sys
import time

from playwright.sync_api import sync_playwright

from crowtest import accepted, chromium, serve_pages

PAGE = """<!doctype html>
<html><head><title>Northwind Shop</title>
<script src="{collector}/sdk/crow.js"></script>
<script>
  crow.load({{writeKey: "{key}", host: "{collector}", flushInterval: 200, flushAt: 50}});
</script></head>
<body>
<h1>Aria Over-Ear</h1>
<button id="view" onclick="crow.productViewed({{product_id: 'nw-1001', sku: 'NW-HE-001', name: 'Aria Over-Ear', price: 249, currency: 'USD'}})">view</button>
<button id="add" onclick="crow.productAdded({{product_id: 'nw-1001', sku: 'NW-HE-001', name: 'Aria Over-Ear', price: 249, quantity: 1}})">add</button>
<button id="nav" onclick="history.pushState({{}}, '', '/cart')">cart</button>
<a id="leave" href="{elsewhere}/">elsewhere</a>
</body></html>
"""

ELSEWHERE = b"<!doctype html><title>Elsewhere</title><p>another site, no SDK</p>"


def main():
    collector, key = sys.argv[1].rstrip("/"), sys.argv[2]
    # The site the visitor leaves for: another origin, without the SDK.
    elsewhere, stop_elsewhere = serve_pages(lambda _path: (ELSEWHERE, "text/html"))
    html = PAGE.format(collector=collector, key=key, elsewhere=elsewhere).encode()

    origin, stop_site = serve_pages(lambda _path: (html, "text/html"))

    with sync_playwright() as p:
        browser = chromium(p)
        page = browser.new_page()
        page.goto(origin + "/product/aria")
        page.click("#view")
        page.click("#add")
        page.click("#nav")
        # Everything so far is delivered by fetch batches.
        page.wait_for_function("crow.queue.length === 0 && !crow.sending", timeout=15000)
        anon = page.evaluate("crow.anonymousId")
        # Queue one more event that only the page-hide beacon can deliver.
        page.evaluate("crow.options.flushInterval = 600000; crow.track('Checkout Abandoned', {step: 1})")
        assert page.evaluate("crow.queue.length") == 1
        before = accepted(collector)
        # The visitor follows a link to another site: the page is hidden
        # and unloaded while the browser lives on, the way visitors leave.
        # (Closing the tab instead lets Chromium kill a renderer that a
        # busy machine has not scheduled yet, before its pagehide handler
        # runs: a flaky test of the browser, not of the SDK.)
        page.click("#leave")
        page.wait_for_url(elsewhere + "/")
        deadline = time.time() + 20
        while accepted(collector) <= before and time.time() < deadline:
            time.sleep(0.1)
        counted = accepted(collector) - before
        browser.close()
    stop_site()
    stop_elsewhere()
    if counted != 1:
        sys.exit(f"the page-hide beacon's event: the collector counted {counted} in 20 s, expected 1")
    print(anon)


if __name__ == "__main__":
    main()
