"""Drive CROW's dashboard in headless Chromium (Debian's, via Playwright).

usage: dashboard.py BASE_URL OWNER_EMAIL OWNER_PASSWORD VIEWER_TOKEN WRITE_KEY AXE_JS OUT_DIR

Against `crow serve` at BASE_URL: the landing page and the sign-in page;
the owner signs in through /login and the overview renders; its figures
and top products are read from the page (data-testid attributes) as they
were first drawn; events sent to the collector then appear on the overview
without a reload; the interactions page lists, pages and opens one as a timeline;
the products page lists the catalog with its activity and draws one
product over time; the funnels page
computes a funnel (split by device, over time) and the paths between two
events, its steps in the URL; the bell lists the owner's notifications and
marks them read; Ask CROW's panel answers a question and a follow-up
(streamed), tells a refusal in words, lists, renames and deletes the chat; the SQL console
runs a query and draws it, saves it, opens it after a reload and runs it
again, renames and deletes it; billing shows the month's usage and invoice; the
patterns page draws each finding's metric over the days around its period
and moves between periods; the owner reaches Settings; a viewer accepts an
invitation through /login?token=… and sees no Settings. On every page:
no console errors, no failed requests, no HTTP error answers, no serious
or critical axe-core violations, and screenshots at 375 px and 1440 px
that are not blank or all one colour (written to OUT_DIR).

Prints one JSON object: {"first": snapshot, "live": snapshot, ...} where a
snapshot is the overview's period bounds, KPI values and top products, for
the Rust test to compare with SQL over the same lake.
"""
import base64
import json
import os
import sys
import time
import urllib.error
import urllib.request
import uuid

from playwright.sync_api import sync_playwright

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


class Watch:
    """Everything that went wrong on a page: console errors, uncaught
    exceptions, failed requests and HTTP error answers."""

    def __init__(self, page):
        self.problems = []
        page.on("console", lambda m: m.type == "error" and self.problems.append(f"console: {m.text}"))
        page.on("pageerror", lambda e: self.problems.append(f"uncaught: {e}"))
        page.on("requestfailed", lambda r: self.problems.append(f"failed: {r.url} {r.failure}"))
        page.on("response", lambda r: r.status >= 400 and self.problems.append(f"HTTP {r.status}: {r.url}"))

    def check(self, where):
        assert not self.problems, f"{where}: {self.problems}"



def wait_js(page, expr, timeout=10000):
    """Wait until the JavaScript expression `expr` is truthy in the page.
    (Playwright's wait_for_function evaluates its text with the page's
    eval, which the Content-Security-Policy rightly forbids; evaluate()
    goes through DevTools.)"""
    deadline = time.monotonic() + timeout / 1000
    while not page.evaluate(f"() => Boolean({expr})"):
        assert time.monotonic() < deadline, f"timed out waiting for {expr}"
        time.sleep(0.1)

def axe(page, axe_js, where):
    # Through DevTools, not a <script> tag: the pages' Content-Security-Policy
    # refuses inline scripts it does not know (that is what it is for).
    with open(axe_js, encoding="utf-8") as f:
        page.evaluate(f.read() + "\n;0")
    found = page.evaluate("""async () => {
        const r = await axe.run(document, {resultTypes: ['violations']});
        return r.violations.filter(v => v.impact === 'serious' || v.impact === 'critical')
            .map(v => ({id: v.id, impact: v.impact, help: v.help,
                        nodes: v.nodes.slice(0, 3).map(n => n.target.join(' '))}));
    }""")
    assert not found, f"axe-core on {where}: {json.dumps(found, indent=1)}"


def distinct_colours(page, png):
    """How many colours a PNG has (sampled), counted by the browser itself."""
    url = "data:image/png;base64," + base64.b64encode(png).decode()
    return page.evaluate("""async (url) => {
        const img = new Image();
        img.src = url;
        await img.decode();
        const c = document.createElement('canvas');
        c.width = img.width; c.height = img.height;
        const g = c.getContext('2d');
        g.drawImage(img, 0, 0);
        const d = g.getImageData(0, 0, c.width, c.height).data;
        const seen = new Set();
        for (let i = 0; i < d.length; i += 4 * 7) seen.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2]);
        return seen.size;
    }""", url)


def screenshots(page, out, name, ready=None):
    for width in (1440, 375):
        page.set_viewport_size({"width": width, "height": 900})
        if ready:
            page.wait_for_selector(ready, timeout=20000)
        page.wait_for_timeout(300)
        png = page.screenshot(full_page=True)
        path = os.path.join(out, f"{name}-{width}.png")
        with open(path, "wb") as f:
            f.write(png)
        colours = distinct_colours(page, png)
        assert colours > 8, f"{path} is blank or one colour ({colours} colours)"
        # Nothing wider than the screen: no sideways scrolling on a phone.
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        if overflow > 1:
            wide = page.evaluate("""() => [...document.querySelectorAll('body *')]
                .filter(e => e.getBoundingClientRect().right > window.innerWidth + 1)
                .slice(-5).map(e => e.tagName + '.' + e.className + ' ' + Math.round(e.getBoundingClientRect().right))""")
            raise AssertionError(f"{name} at {width} px is {overflow} px wider than the screen: {wide}")
    page.set_viewport_size({"width": 1440, "height": 900})


def snapshot(page):
    return page.evaluate("""() => {
        const o = document.querySelector('[data-testid=overview]');
        const kpis = {};
        for (const k of document.querySelectorAll('[data-testid^=kpi-]')) {
            kpis[k.dataset.testid.slice(4)] = k.dataset.value === '' ? null : Number(k.dataset.value);
        }
        const products = [...document.querySelectorAll('[data-testid=top-product]')].map(r => ({
            product_id: r.dataset.productId, views: Number(r.dataset.views), adds: Number(r.dataset.adds)}));
        const series = {};
        for (const f of document.querySelectorAll('[data-testid=figure-series]')) {
            series[f.dataset.id] = JSON.parse(f.dataset.points);
        }
        return {from: o.dataset.from, to: o.dataset.to, loads: Number(o.dataset.loads), kpis, products, series};
    }""")


def landed_in(page, anon, snap):
    """How many of `anon`'s events fall in the snapshot's period, by SQL
    through the API with the page's own session."""
    q = (f"SELECT count(*) AS n FROM raw_web_events WHERE anonymous_id = '{anon}' "
         f"AND occurred_at >= '{snap['from']}' AND occurred_at < '{snap['to']}'")
    return page.evaluate("""async (q) => {
        const csrf = (document.cookie.match(/crow_csrf=([^;]+)/) || [])[1] || '';
        const r = await fetch('/api/v1/sql', {method: 'POST', body: JSON.stringify({sql: q}),
            headers: {'Content-Type': 'application/json', 'X-CSRF-Token': csrf}});
        return (await r.json())[0].n;
    }""", q)


def wait_for_live(page, anon):
    """The overview, refreshed by itself, once its period holds the events
    just sent. (The period slides with the clock, so older events leave it:
    the figures are compared with SQL over the page's own bounds.)"""
    deadline = time.time() + 30
    while True:
        snap = snapshot(page)
        if landed_in(page, anon, snap) == 3:
            break
        assert time.time() < deadline, f"the events never landed: {snap}"
        page.wait_for_timeout(500)
    # They have landed: the page's next refresh, which starts after now,
    # must count them.
    wait_js(page, f"Number(document.querySelector('[data-testid=overview]').dataset.loads) > {snap['loads'] + 1}",
                           timeout=30000)
    snap = snapshot(page)
    assert landed_in(page, anon, snap) == 3, snap
    snap["anon"] = anon
    return snap


def send_events(base, key, n):
    anon = "live-" + uuid.uuid4().hex[:12]
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    batch = [{"type": "track", "event": "Product Viewed", "anonymousId": anon, "timestamp": now,
              "messageId": f"{anon}-{i}", "properties": {"product_id": "live-product", "name": "Live"}}
             for i in range(n)]
    req = urllib.request.Request(base + "/v1/batch", data=json.dumps({"batch": batch}).encode(),
                                 headers={"Content-Type": "application/json",
                                          "Authorization": "Basic " + base64.b64encode((key + ":").encode()).decode()})
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 200, r.status
    return anon


def public_pages(browser, base, axe_js, out):
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    w = Watch(page)
    landing = page.goto(base + "/")
    assert "CROW" in page.title()
    # Every page carries a Content-Security-Policy: scripts from this server
    # only (an inline script only by its hash), no framing; the Watch above
    # fails the test if the policy blocks anything the pages need.
    csp = landing.headers.get("content-security-policy", "")
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp, csp
    for sel in ['meta[name=description]', 'meta[property="og:title"]', 'meta[property="og:description"]',
                'meta[name="twitter:card"]']:
        assert page.locator(sel).get_attribute("content"), f"the landing page lacks {sel}"
    axe(page, axe_js, "/")
    screenshots(page, out, "landing")
    page.goto(base + "/login")
    # Keyboard: the first Tab reaches the e-mail field, with a visible focus ring.
    page.keyboard.press("Tab")
    focus = page.evaluate("""() => {
        const e = document.activeElement, st = getComputedStyle(e);
        return {id: e.id, outline: st.outlineStyle, width: parseFloat(st.outlineWidth)};
    }""")
    assert focus["id"] == "email" and focus["outline"] != "none" and focus["width"] >= 2, focus
    axe(page, axe_js, "/login")
    screenshots(page, out, "login")
    w.check("landing and sign-in")
    # A wrong password is said in words, on the page.
    page.fill("#email", "nobody@example.com")
    page.fill("#password", "not the password")
    page.click("#submit")
    wait_js(page, "document.getElementById('message').textContent.length > 0")
    assert "do not match" in page.inner_text("#message")
    w.problems = [p for p in w.problems if "401" not in p]
    w.check("a wrong password")
    page.close()
    # Signed out, the app sends you to sign in (and back afterwards).
    page = browser.new_page()
    page.goto(base + "/app/patterns?period=day")
    page.wait_for_url("**/login?next=%2Fapp%2Fpatterns%3Fperiod%3Dday", timeout=10000)
    page.close()


def owner_flow(browser, base, email, password, key, axe_js, out):
    # A user far from UTC: dates are shown in their zone, UTC on hover.
    ctx = browser.new_context(viewport={"width": 1440, "height": 900}, timezone_id="Asia/Kolkata", locale="en-IN")
    page = ctx.new_page()
    w = Watch(page)
    page.goto(base + "/login?next=/app/%3Frefresh%3D2")
    page.fill("#email", email)
    page.fill("#password", password)
    page.click("#submit")
    page.wait_for_url("**/app/?refresh=2", timeout=20000)
    page.wait_for_selector("[data-testid=overview][data-state=ready]", timeout=30000)
    page.wait_for_selector("[data-testid=series-chart] canvas", timeout=10000)
    page.wait_for_selector("[data-testid=figure-series][data-id=revenue] canvas", timeout=10000)
    first = snapshot(page)
    shown = page.evaluate("""() => {
        const t = document.querySelector('[data-testid=latest-interactions] time');
        const d = new Date(t.getAttribute('datetime'));
        return {text: t.textContent, title: t.title,
                want: d.toLocaleString('en-IN', {dateStyle: 'medium', timeStyle: 'short', timeZone: 'Asia/Kolkata'})};
    }""")
    assert shown["text"] == shown["want"] and shown["title"].endswith(" UTC"), shown
    assert page.locator("[data-testid=who]").inner_text().startswith(email)
    assert page.get_by_role("link", name="Settings").count() == 1, "an owner sees Settings"
    axe(page, axe_js, "/app/")
    screenshots(page, out, "overview", "[data-testid=overview][data-state=ready]")
    notified = bell(page, axe_js, out)
    # New events appear without a reload (the page polls every 2 s here).
    page.evaluate("window.__sameDocument = true")
    anon = send_events(base, key, 3)
    live = wait_for_live(page, anon)
    assert page.evaluate("window.__sameDocument === true"), "the page was reloaded"
    # The time range is in the URL.
    page.select_option("#range", "30d")
    wait_js(page, "new URL(location.href).searchParams.get('range') === '30d'")
    page.wait_for_selector("[data-testid=overview][data-state=ready]", timeout=30000)
    interactions = interactions_page(page, axe_js, out)
    patterns = patterns_page(page, axe_js, out)
    products = products_page(page, axe_js, out)
    funnels = funnels_page(page, axe_js, out)
    console = console_page(page, w, axe_js, out)
    console.update(history_elsewhere(browser, base, email, password, axe_js))
    billing = billing_page(page, axe_js, out)
    chat = chat_panel(page, axe_js, out)
    # Settings, through the navigation.
    page.get_by_role("link", name="Settings").click()
    page.wait_for_selector("[data-testid=settings]")
    settings_page(page, base)
    write_key_settings(page, base, key)
    social_and_camera_settings(page)
    axe(page, axe_js, "/app/settings")
    screenshots(page, out, "settings", "[data-testid=settings]")
    w.check("the owner's dashboard")
    ctx.close()
    return first, live, patterns, interactions, products, console, billing, {**funnels, "bell": notified}, chat


def settings_page(page, base):
    """An owner edits the brand's context, creates an API key (its secret
    shown once works against the API), invites a member (a one-time
    sign-up link) and revokes the key (refused at once)."""
    page.wait_for_selector("[data-testid=org-settings]")
    context = "We sell headphones and speakers; test edit " + str(int(time.time()))
    page.fill("#org-context", context)
    page.get_by_role("button", name="Save").click()
    page.wait_for_selector("[data-testid=org-saved]")
    page.fill("#key-name", "dashboard test")
    page.select_option("#key-scope", "read")
    page.get_by_role("button", name="Create key").click()
    secret = page.wait_for_selector("[data-testid=key-secret-value]").inner_text()
    assert secret.startswith("ck_"), secret

    def organization(key):
        req = urllib.request.Request(base + "/api/v1/organization", headers={"Authorization": "Bearer " + key})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, None

    status, org = organization(secret)
    assert status == 200 and org["context"] == context, (status, org)
    page.fill("#invite-email", "new.analyst@northwind-audio.example")
    page.select_option("#invite-role", "analyst")
    page.get_by_role("button", name="Invite").click()
    link = page.wait_for_selector("[data-testid=invite-link-value]").inner_text()
    assert "/login?token=inv_" in link, link
    page.wait_for_selector("[data-testid=member][data-email='new.analyst@northwind-audio.example']")
    row = page.locator("[data-testid=api-key]", has_text="dashboard test")
    row.get_by_role("button", name="Revoke").click()
    page.wait_for_selector("[data-testid=api-key][data-revoked=yes]")
    status, _ = organization(secret)
    assert status == 401, status


def social_and_camera_settings(page):
    """The owner adds a social source and two cameras in Settings; they are
    listed, and listed again after a reload (so they are on the server);
    the source and one camera are removed. The test compares the camera
    left (`till-2`) with SQL over `cameras`."""
    feed = "https://news.example/crow-dashboard-feed.xml"
    page.select_option("#social-kind", "rss")
    page.fill("#social-target", feed)
    page.fill("#social-schedule", "off")
    page.get_by_role("button", name="Add source").click()
    page.wait_for_selector(f"[data-testid=social-source][data-target='{feed}']")
    for cam, store, name, where in [("entrance-1", "store-1", "Entrance", "Main door, looking in"),
                                    ("till-2", "store-1", "Till 2", "")]:
        page.fill("#camera-id", cam)
        page.fill("#camera-store", store)
        page.fill("#camera-name", name)
        page.fill("#camera-location", where)
        page.get_by_role("button", name="Add camera").click()
        page.wait_for_selector(f"[data-testid=camera][data-id='{cam}']")
    assert page.input_value("#camera-id") == "", "the form is cleared after adding"
    page.reload()
    page.wait_for_selector("[data-testid=camera][data-id='till-2']")
    cams = page.eval_on_selector_all("[data-testid=camera]", "rs => rs.map(r => r.dataset.id)")
    assert cams == ["entrance-1", "till-2"], cams
    row = page.locator("[data-testid=camera][data-id='entrance-1']")
    assert "Main door, looking in" in row.inner_text(), row.inner_text()
    page.wait_for_selector(f"[data-testid=social-source][data-target='{feed}']")
    schedule = page.locator(f"[data-testid=social-source][data-target='{feed}'] code").inner_text()
    assert schedule == "off", schedule
    page.get_by_role("button", name="Remove source " + feed).click()
    page.wait_for_selector(f"[data-testid=social-source][data-target='{feed}']", state="detached")
    page.get_by_role("button", name="Remove camera entrance-1").click()
    page.wait_for_selector("[data-testid=camera][data-id='entrance-1']", state="detached")
    assert page.locator("[data-testid=settings] [role=alert]").count() == 0, page.inner_text("[data-testid=settings]")


def collector_status(base, key):
    """What the collector answers an empty batch sent with `key` (nothing
    is written either way)."""
    req = urllib.request.Request(base + "/v1/batch", data=json.dumps({"batch": []}).encode(),
                                 headers={"Content-Type": "application/json",
                                          "Authorization": "Basic " + base64.b64encode((key + ":").encode()).decode()})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def write_key_settings(page, base, key):
    """The owner sees the write key's first characters, makes a new one
    revoking the current at once: the new key is shown once and the
    collector accepts it; the old one is refused (within the collector's
    30 s key cache)."""
    assert page.inner_text("[data-testid=write-key-prefix]") == key[:8] + "…"
    assert collector_status(base, key) not in (401, 403)
    page.select_option("#write-key-grace", "0")
    page.get_by_role("button", name="New write key").click()
    new_key = page.wait_for_selector("[data-testid=write-key-secret-value]").inner_text()
    assert new_key.startswith("wk") and new_key != key, new_key
    wait_js(page, f"document.querySelector('[data-testid=write-key-prefix]')?.textContent === {json.dumps(new_key[:8] + '…')}")
    deadline = time.time() + 45
    while collector_status(base, key) != 401:
        assert time.time() < deadline, "the revoked write key is still accepted"
        time.sleep(0.5)
    assert collector_status(base, new_key) not in (401, 403)


def interactions_page(page, axe_js, out):
    """The list (filters in the URL, cursor paging), and one interaction
    opened: its session as a timeline."""
    page.get_by_role("link", name="Interactions", exact=True).click()
    page.wait_for_selector("[data-testid=interactions][data-state=ready]", timeout=30000)
    ids = lambda: page.eval_on_selector_all("[data-testid=interaction-row]", "rs => rs.map(r => r.dataset.id)")
    first_page = ids()
    assert len(first_page) == 25, first_page
    bounds = lambda: {k: page.get_attribute("[data-testid=interactions]", "data-" + k) for k in ("from", "to")}
    listed = bounds()
    page.get_by_role("button", name="Older interactions").click()
    wait_js(page, "document.querySelectorAll('[data-testid=interaction-row]').length > 25", timeout=30000)
    two_pages = ids()
    assert two_pages[:25] == first_page and len(set(two_pages)) == len(two_pages), "paging adds, never repeats"
    page.locator("[data-testid=interaction-row] button").first.click()
    page.wait_for_selector("[data-testid=timeline]", timeout=30000)
    opened = {"id": page.get_attribute("[data-testid=interaction]", "data-id"),
              "steps": page.locator("[data-testid=step]").count()}
    assert opened["id"] == first_page[0] and f"id={opened['id']}" in page.url, opened
    axe(page, axe_js, "/app/interactions")
    screenshots(page, out, "interactions", "[data-testid=timeline]")
    # Filters: purchased only, in the URL.
    page.select_option("#outcome", "purchased")
    page.get_by_role("button", name="Show").click()
    wait_js(page, "new URL(location.href).searchParams.get('outcome') === 'purchased'")
    page.wait_for_selector("[data-testid=interactions][data-state=ready]", timeout=30000)
    return {"listed": listed, "first_page": first_page, "two_pages": two_pages, "opened": opened,
            "purchased": {"ids": ids(), **bounds()}}


def unread_by_api(page):
    return page.evaluate("""async () => (await (await fetch('/api/v1/notifications')).json()).unread""")


def bell(page, axe_js, out):
    """The bell opens the signed-in user's notifications from the keyboard
    (Escape closes it and gives the focus back); marking one read, then all,
    drops the count, on the page and in the API."""
    wait_js(page, "Number(document.querySelector('[data-testid=bell]').dataset.unread) > 0", timeout=20000)
    unread = int(page.get_attribute("[data-testid=bell]", "data-unread"))
    assert unread == unread_by_api(page), unread
    page.focus("[data-testid=bell]")
    page.keyboard.press("Enter")
    page.wait_for_selector("[data-testid=notifications] [data-testid=notification]", timeout=10000)
    assert page.get_attribute("[data-testid=bell]", "aria-expanded") == "true"
    listed = page.locator("[data-testid=notification][data-read=no]").count()
    assert listed == unread, (listed, unread)
    axe(page, axe_js, "the notifications")
    screenshots(page, out, "notifications", "[data-testid=notifications] [data-testid=notification]")
    page.keyboard.press("Escape")
    page.wait_for_selector("[data-testid=notifications]", state="detached", timeout=5000)
    assert page.get_attribute("[data-testid=bell]", "aria-expanded") == "false"
    assert page.evaluate("document.activeElement.dataset.testid") == "bell", "the focus returns to the bell"
    page.click("[data-testid=bell]")
    first = page.locator("[data-testid=notification][data-read=no]").first
    first.get_by_role("button", name="Mark read").click()
    wait_js(page, f"document.querySelector('[data-testid=bell]').dataset.unread === '{unread - 1}'", timeout=10000)
    assert unread_by_api(page) == unread - 1
    assert page.locator("[data-testid=notification][data-read=yes]").count() == 1
    page.get_by_role("button", name="Mark all read").click()
    wait_js(page, "document.querySelector('[data-testid=bell]').dataset.unread === '0'", timeout=10000)
    assert unread_by_api(page) == 0
    assert page.locator("[data-testid=notification][data-read=no]").count() == 0
    page.keyboard.press("Escape")
    return {"unread": unread}


def funnel_rows(page):
    return page.evaluate("""() => ({
        from: document.querySelector('[data-testid=funnels]').dataset.from,
        to: document.querySelector('[data-testid=funnels]').dataset.to,
        steps: [...document.querySelectorAll('[data-testid=funnel-step]')].map(r => ({
            step: r.dataset.step, count: Number(r.dataset.count)})),
        segments: [...document.querySelectorAll('[data-testid=funnel-segment]')].map(r => ({
            seg: r.dataset.seg, counts: r.dataset.counts.split(',').map(Number)})),
        start: document.querySelector('#path-start').value,
        end: document.querySelector('#path-end').value,
        top: Number(document.querySelector('#path-top').value),
        paths: [...document.querySelectorAll('[data-testid=path]')].map(r => ({
            path: r.dataset.path, sessions: Number(r.dataset.sessions)})),
    })""")


def funnels_page(page, axe_js, out):
    """The funnel builder (its default steps, split by device, all in the
    URL), the funnel's chart over time, and the paths between its first and
    last step; a second step list from the URL alone."""
    page.get_by_role("link", name="Funnels", exact=True).click()
    page.wait_for_selector("[data-testid=funnels][data-state=ready] [data-testid=funnel-step]", timeout=30000)
    page.wait_for_selector("[data-testid=funnel-chart] canvas", timeout=10000)
    page.select_option("#split", "device")
    wait_js(page, "new URL(location.href).searchParams.get('split') === 'device'")
    page.wait_for_selector("[data-testid=funnels][data-state=ready] [data-testid=funnel-segment]", timeout=30000)
    page.wait_for_selector("[data-testid=paths][data-state=ready] [data-testid=path]", timeout=30000)
    shown = funnel_rows(page)
    assert len(shown["steps"]) >= 2 and shown["steps"][0]["count"] > 0, shown
    axe(page, axe_js, "/app/funnels")
    screenshots(page, out, "funnels", "[data-testid=funnels][data-state=ready]")
    # A shared link: steps, split and range come from the URL alone.
    url = page.url
    params = dict(p.split("=", 1) for p in url.split("?", 1)[1].split("&"))
    assert params.get("split") == "device" and url.count("step=") == len(shown["steps"]), url
    # Other steps (a product page after a product was viewed: a second
    # product, so order matters) and a path's ends, opened as a link.
    page.goto(url.split("?", 1)[0] + "?range=30d&step=Page%3A+Home&step=Product+Viewed&step=Page%3A+Product"
              "&path_start=Cart+Viewed&path_end=Order+Completed&paths_top=5")
    page.wait_for_selector("[data-testid=funnels][data-state=ready] [data-testid=funnel-step]", timeout=30000)
    page.wait_for_selector("[data-testid=paths][data-state=ready]", timeout=30000)
    linked = funnel_rows(page)
    assert [s["step"] for s in linked["steps"]] == ["Page: Home", "Product Viewed", "Page: Product"], linked
    assert page.input_value("#range") == "30d" and page.input_value("#path-top") == "5"
    return {"split": shown, "linked": linked}


def products_page(page, axe_js, out):
    """The catalog with each product's activity in the period."""
    page.get_by_role("link", name="Products", exact=True).click()
    page.wait_for_selector("[data-testid=products][data-state=ready]", timeout=30000)
    rows = page.evaluate("""() => [...document.querySelectorAll('[data-testid=product-row]')].map(r => ({
        product_id: r.dataset.productId, views: Number(r.dataset.views), adds: Number(r.dataset.adds),
        interactions: Number(r.dataset.interactions), purchased: Number(r.dataset.purchased),
        patterns: Number(r.dataset.patterns)}))""")
    assert rows, "the demo has a catalog"
    axe(page, axe_js, "/app/products")
    screenshots(page, out, "products", "[data-testid=products][data-state=ready]")
    # One product over time: the one most patterns name (ties: most viewed).
    pick = max(rows, key=lambda r: (r["patterns"], r["views"]))
    page.click(f"[data-testid=product-row][data-product-id='{pick['product_id']}'] [data-testid=product-open]")
    wait_js(page, f"new URL(location.href).searchParams.get('product') === {json.dumps(pick['product_id'])}")
    page.wait_for_selector("[data-testid=product-trend][data-state=ready] [data-testid=product-chart] canvas", timeout=30000)
    page.click("[data-testid=product-trend] summary")
    trend = page.evaluate("""() => [...document.querySelectorAll('[data-testid=product-day]')].map(r => ({
        day: r.dataset.day, views: Number(r.dataset.views), carts: Number(r.dataset.carts),
        orders: Number(r.dataset.orders), interactions: Number(r.dataset.interactions),
        patterns: Number(r.dataset.patterns)}))""")
    assert trend, "the product has days"
    axe(page, axe_js, "/app/products?product=…")
    screenshots(page, out, "product-trend", "[data-testid=product-trend][data-state=ready]")
    return {"rows": rows, "trend": {"product_id": pick["product_id"], "days": trend},
            **{k: page.get_attribute("[data-testid=products]", "data-" + k) for k in ("from", "to")}}


def console_page(page, watch, axe_js, out):
    """The SQL console runs its example, shows the rows and a chart; a bad
    query is answered in words."""
    page.get_by_role("link", name="SQL", exact=True).click()
    page.wait_for_selector("[data-testid=tables] summary", timeout=30000)
    assert "raw_web_events" in page.inner_text("[data-testid=tables]")
    query = page.input_value("#sql")
    page.get_by_role("button", name="Run", exact=True).click()
    page.wait_for_selector("[data-testid=console][data-state=ready] [data-testid=result-chart] canvas", timeout=30000)
    rows = page.eval_on_selector_all("[data-testid=result-row]", "rs => rs.map(r => [...r.cells].map(c => c.textContent))")
    # The whole result as a CSV file, through the exports API.
    page.locator("[data-testid=export]").get_by_role("button", name="CSV").click()
    link = page.wait_for_selector("[data-testid=export-download]", timeout=60000)
    with page.expect_download(timeout=30000) as d:
        link.click()
    path = d.value.path()
    with open(path, encoding="utf-8") as f:
        exported = f.read().splitlines()
    axe(page, axe_js, "/app/sql")
    screenshots(page, out, "sql", "[data-testid=console][data-state=ready]")
    page.fill("#sql", "SELECT no_such_column FROM raw_web_events")
    page.get_by_role("button", name="Run", exact=True).click()
    page.wait_for_selector("[data-testid=console][data-state=error] .error", timeout=30000)
    assert "no_such_column" in page.inner_text("[data-testid=console] .error")
    # That 400 was the point: it is not a failure of the page.
    watch.problems = [p for p in watch.problems if "400" not in p]
    saved = saved_queries(page, watch, axe_js, query)
    return {"query": query, "rows": rows, "exported": exported, **saved}


def saved_queries(page, watch, axe_js, query):
    """The example query is saved under a name (a second save under the
    same name is refused in words); after a reload it is listed, and the
    history still has the query; opened into the editor and run, it shows
    its rows; renamed, then deleted (asked twice), it is gone from the
    API too."""
    page.fill("#sql", query)
    page.fill("#save-name", "Events per day")
    page.get_by_role("button", name="Save query", exact=True).click()
    page.wait_for_selector("[data-testid=saved-query][data-name='Events per day']", timeout=15000)
    page.fill("#save-name", "Events per day")
    page.get_by_role("button", name="Save query", exact=True).click()
    page.wait_for_selector("[data-testid=saved-queries] .error", timeout=15000)
    assert "already have a saved query" in page.inner_text("[data-testid=saved-queries] .error")
    watch.problems = [p for p in watch.problems if not ("409" in p and "saved-queries" in p) and "status of 409" not in p]
    # A second query run: it heads the history (kept on the server).
    page.fill("#sql", "SELECT 1 AS one")
    page.get_by_role("button", name="Run", exact=True).click()
    wait_js(page, "document.querySelector('[data-testid=history] [data-testid=history-entry]')?.dataset.sql === 'SELECT 1 AS one'", timeout=30000)
    before = len(watch.problems)
    page.reload()
    page.wait_for_selector("[data-testid=saved-queries][data-state=ready] [data-testid=saved-query]", timeout=30000)
    page.wait_for_selector("[data-testid=history][data-state=ready] [data-testid=history-entry]", timeout=30000)
    # Requests the reload cut short are not failures of the page.
    watch.problems = watch.problems[:before] + [p for p in watch.problems[before:] if "ERR_ABORTED" not in p]
    history = history_shown(page)
    bad = "SELECT no_such_column FROM raw_web_events"
    assert history == ["SELECT 1 AS one", bad, query], history
    # The failed run is kept with its error, in words.
    failed = page.locator("[data-testid=history-entry][data-ok=no]")
    assert failed.count() == 1 and failed.get_attribute("data-sql") == bad, failed.count()
    assert "Failed:" in failed.inner_text() and "no_such_column" in failed.inner_text(), failed.inner_text()
    page.fill("#sql", "SELECT 1 AS one")
    page.locator("[data-testid=saved-query][data-name='Events per day']").get_by_role("button", name="Events per day", exact=True).click()
    assert page.input_value("#sql") == query
    page.get_by_role("button", name="Run", exact=True).click()
    page.wait_for_selector("[data-testid=console][data-state=ready] [data-testid=result-chart] canvas", timeout=30000)
    saved_rows = page.eval_on_selector_all("[data-testid=result-row]", "rs => rs.map(r => [...r.cells].map(c => c.textContent))")
    page.get_by_role("button", name="Rename Events per day", exact=True).click()
    page.fill("[data-testid=saved-query] input", "Daily events")
    page.get_by_role("button", name="Save name", exact=True).click()
    page.wait_for_selector("[data-testid=saved-query][data-name='Daily events']", timeout=15000)
    axe(page, axe_js, "/app/sql (saved queries)")
    listed = page.evaluate("""async () => (await (await fetch('/api/v1/saved-queries')).json()).data""")
    assert [(q["name"], q["sql"]) for q in listed] == [("Daily events", query)], listed
    page.get_by_role("button", name="Delete Daily events", exact=True).click()
    page.get_by_role("button", name="Yes, delete Daily events", exact=True).click()
    page.wait_for_selector("text=No saved queries yet", timeout=15000)
    listed = page.evaluate("""async () => (await (await fetch('/api/v1/saved-queries')).json()).data""")
    assert listed == [], listed
    return {"saved_rows": saved_rows}


def history_shown(page):
    return page.eval_on_selector_all("[data-testid=history-entry]", "es => es.map(e => e.dataset.sql)")


def history_elsewhere(browser, base, email, password, axe_js):
    """Another browser (nothing shared with the first but the server) signed
    in as the same user, on a phone: the console lists the queries run in
    the first, as `query_history` holds them (SQL over the lake, newest
    first); one opens into the editor; "Clear history" (asked first)
    empties it, on the server too."""
    ctx = browser.new_context(viewport={"width": 375, "height": 800})
    page = ctx.new_page()
    w = Watch(page)
    page.goto(base + "/login?next=/app/sql")
    page.fill("#email", email)
    page.fill("#password", password)
    page.click("#submit")
    page.wait_for_url("**/app/sql", timeout=20000)
    page.wait_for_selector("[data-testid=history][data-state=ready] [data-testid=history-entry]", timeout=30000)
    shown = history_shown(page)
    oks = page.eval_on_selector_all("[data-testid=history-entry]", "es => es.map(e => e.dataset.ok)")
    in_lake = page.evaluate("""async () => {
        const me = await (await fetch('/api/v1/auth/me')).json();
        const csrf = (document.cookie.match(/crow_csrf=([^;]+)/) || [])[1] || '';
        const q = `SELECT sql FROM query_history WHERE user_id = '${me.user.id}' ORDER BY ran_at DESC, entry_id DESC`;
        const r = await fetch('/api/v1/sql', {method: 'POST', body: JSON.stringify({sql: q}),
            headers: {'Content-Type': 'application/json', 'X-CSRF-Token': csrf}});
        return (await r.json()).map(x => x.sql);
    }""")
    axe(page, axe_js, "/app/sql (history on another browser)")
    page.locator("[data-testid=history-entry]").nth(1).get_by_role("button").first.click()
    opened = page.input_value("#sql")
    page.get_by_role("button", name="Clear history", exact=True).click()
    page.get_by_role("button", name="Yes, clear", exact=True).click()
    page.wait_for_selector("[data-testid=history][data-state=ready] >> text=Only you see them", timeout=15000)
    after = page.evaluate("""async () => (await (await fetch('/api/v1/query-history')).json()).data""")
    w.check("the console's history on another browser")
    ctx.close()
    return {"history_elsewhere": shown, "history_ok": oks, "history_in_lake": in_lake, "history_opened": opened, "history_after_clear": after}


def chats_by_api(page):
    return page.evaluate("""async () => (await (await fetch('/api/v1/chats')).json()).data""")


def answers_done(page):
    return page.locator("[data-testid=chat-answer]:not([data-state=streaming])").count()


def ask_in_panel(page, question, answers):
    """Ask `question` in the open panel (Enter sends it), streamed, and wait
    until the chat holds `answers` stored answers."""
    page.fill("#chat-question", question)
    with page.expect_response(lambda r: "/api/v1/chats" in r.url and r.request.method == "POST") as resp:
        page.press("#chat-question", "Enter")
    r = resp.value
    assert r.request.headers.get("accept") == "text/event-stream", r.request.headers
    assert r.headers.get("content-type", "").startswith("text/event-stream"), r.headers
    wait_js(page, f"document.querySelectorAll('[data-testid=chat-messages] [data-testid=chat-answer]:not([data-state=streaming])').length === {answers}"
               " && document.querySelector('[data-testid=chat-panel]').dataset.state === 'idle'", timeout=60000)
    last = page.locator("[data-testid=chat-answer]").nth(answers - 1)
    return last


def chat_rows(answer):
    """The answer's table as shown: its header, then its rows."""
    return answer.locator("[data-testid=chat-rows] tr").evaluate_all("rs => rs.map(r => [...r.cells].map(c => c.textContent))")


def chat_panel(page, axe_js, out):
    """Ask CROW from the top bar: a question streamed into a new chat (its
    SQL, rows, chart and words), a follow-up in the same chat, a question
    the offline provider cannot answer told in words; Escape closes the
    panel and gives the focus back; after a reload the chat is listed,
    reopened, renamed and deleted."""
    page.focus("[data-testid=ask-open]")
    page.keyboard.press("Enter")
    page.wait_for_selector("[data-testid=chat-panel]", timeout=10000)
    assert page.get_attribute("[data-testid=ask-open]", "aria-expanded") == "true"
    # The panel moves the focus once it has rendered: wait for it (a slow
    # machine renders later), then hold it to the question.
    try:
        page.wait_for_function("document.activeElement && document.activeElement.id === 'chat-question'", timeout=5000)
    except Exception:
        pass
    assert page.evaluate("document.activeElement.id") == "chat-question", "the focus goes to the question"
    first = ask_in_panel(page, "top products by views", 1)
    assert first.get_attribute("data-state") == "done", first.inner_text()
    sql_text = first.get_attribute("data-sql")
    rows = chat_rows(first)
    words = first.locator("[data-testid=chat-answer-text]").inner_text()
    page.wait_for_selector("[data-testid=chat-panel] [data-testid=result-chart] canvas", timeout=10000)
    assert page.locator("[data-testid=chat-title]").inner_text() == "top products by views"
    # The first answer as a reader sees it (README's screenshot of the panel).
    page.wait_for_timeout(300)
    with open(os.path.join(out, "chat-answer-1440.jpg"), "wb") as f:
        f.write(page.screenshot(type="jpeg", quality=80))
    follow = ask_in_panel(page, "and on mobile?", 2)
    assert follow.get_attribute("data-state") == "done", follow.inner_text()
    mobile_sql = follow.get_attribute("data-sql")
    mobile_rows = chat_rows(follow)
    refused = ask_in_panel(page, "what is the meaning of life?", 3)
    assert refused.get_attribute("data-state") == "error"
    refusal = refused.locator("[data-testid=chat-error]").inner_text()
    assert "real model" in refusal, refusal
    axe(page, axe_js, "the Ask CROW panel")
    screenshots(page, out, "chat", "[data-testid=chat-panel][data-state=idle] [data-testid=chat-answer]")
    page.keyboard.press("Escape")
    page.wait_for_selector("[data-testid=chat-panel]", state="detached", timeout=5000)
    assert page.get_attribute("[data-testid=ask-open]", "aria-expanded") == "false"
    assert page.evaluate("document.activeElement.dataset.testid") == "ask-open", "the focus returns to the button"
    # After a reload: listed (newest first), reopened with its answers.
    chat_id = chats_by_api(page)[0]["id"]
    page.reload()
    page.click("[data-testid=ask-open]")
    item = page.wait_for_selector(f"[data-testid=chat-item][data-id={chat_id}]", timeout=20000)
    assert page.locator("[data-testid=chat-item]").first.get_attribute("data-id") == chat_id
    assert item.inner_text() == "top products by views"
    item.click()
    page.locator("[data-testid=chat-messages] [data-testid=chat-answer]").nth(2).wait_for(timeout=20000)
    assert page.locator("[data-testid=chat-answer]").nth(1).get_attribute("data-sql") == mobile_sql
    # Rename, then delete.
    page.get_by_role("button", name="Rename the chat").click()
    page.fill("#chat-title-input", "Top products, all and mobile")
    page.get_by_role("button", name="Save", exact=True).click()
    page.wait_for_selector("[data-testid=chat-title]:has-text('Top products, all and mobile')", timeout=10000)
    listed = {c["id"]: c["title"] for c in chats_by_api(page)}
    assert listed.get(chat_id) == "Top products, all and mobile", listed
    page.get_by_role("button", name="Delete the chat").click()
    page.click("[data-testid=chat-delete-confirm]")
    page.wait_for_selector("[data-testid=chat-status]:has-text('deleted')", timeout=10000)
    assert page.locator(f"[data-testid=chat-item][data-id={chat_id}]").count() == 0
    assert chat_id not in [c["id"] for c in chats_by_api(page)]
    page.keyboard.press("Escape")
    return {"sql": sql_text, "rows": rows, "words": words, "mobile_sql": mobile_sql, "mobile_rows": mobile_rows,
            "refusal": refusal}


def billing_page(page, axe_js, out):
    """Usage per day, the month's total and its invoice's line items."""
    page.get_by_role("link", name="Billing", exact=True).click()
    page.wait_for_selector("[data-testid=billing][data-state=ready] [data-testid=usage-table]", timeout=30000)
    axe(page, axe_js, "/app/billing")
    screenshots(page, out, "billing", "[data-testid=billing][data-state=ready]")
    totals = page.eval_on_selector_all("[data-testid=usage-table] tfoot td", "ts => ts.map(t => t.textContent)")
    return {"month": page.get_attribute("[data-testid=billing]", "data-month"),
            "total_micros": int(page.get_attribute("[data-testid=billing]", "data-total-micros")),
            "days": page.locator("[data-testid=usage-row]").count(), "totals": totals,
            "invoice": {"total_micros": int(page.get_attribute("[data-testid=invoice]", "data-total-micros")),
                        "lines": page.eval_on_selector_all("[data-testid=invoice-line]", """ls => ls.map(l => ({
                            item: l.dataset.item, quantity: Number(l.dataset.quantity), per: Number(l.dataset.per),
                            unit_price_micros: Number(l.dataset.unitPriceMicros),
                            amount_micros: Number(l.dataset.amountMicros)}))""")}}


def patterns_page(page, axe_js, out):
    """The latest week's patterns, each with its evidence drawn; the period
    picker and the navigation between periods live in the URL."""
    page.get_by_role("link", name="Patterns", exact=True).click()
    page.wait_for_selector("[data-testid=patterns][data-state=ready]", timeout=30000)
    assert page.locator("[data-testid=pattern]").count() > 0, "the demo's latest week has patterns"
    # Each finding's metric drawn day by day over the days around the
    # period: a point per day with data (its value, k and n for the Rust
    # test to compare with SQL), the line through them, the baseline, the
    # period shaded; the days that carried it are marked.
    wait_js(page, "[...document.querySelectorAll('[data-testid=pattern]')].every(p => p.dataset.days === 'ready')", 60000)
    days = page.evaluate("""() => [...document.querySelectorAll('[data-testid=pattern]')].map(p => {
        const svg = p.querySelector('[data-testid=evidence-chart]');
        if (!svg) return {id: p.dataset.patternId, drawn: false};
        const pts = [...svg.querySelectorAll('[data-testid=day-point]')];
        const path = svg.querySelector('path');
        return {id: p.dataset.patternId, metric: svg.dataset.metric, segment: svg.dataset.segment,
                measure: svg.dataset.measure,
                drawn: pts.length > 0 && pts.every(c => c.getBBox().width > 0) && path.getTotalLength() > 0
                    && svg.querySelector('[data-testid=period-band]').getBBox().width > 0,
                baseline: !!svg.querySelector('[data-testid=baseline]'),
                carried: pts.filter(c => c.dataset.carried === '1').map(c => c.dataset.date),
                points: pts.map(c => ({date: c.dataset.date, value: Number(c.dataset.value),
                                       k: Number(c.dataset.k), n: Number(c.dataset.n)}))};
    })""")
    assert days and all(d["drawn"] for d in days), f"every pattern's evidence is drawn over its days: {days}"
    assert any(d["baseline"] for d in days), days
    with open(os.path.join(out, "patterns-readme-1440.jpg"), "wb") as f:
        f.write(page.screenshot(type="jpeg", quality=80))
    shown = {
        "kind": "week",
        "titles": page.eval_on_selector_all("[data-testid=pattern] h2", "hs => hs.map(h => h.textContent)"),
        "start": page.evaluate("new URL(location.href).searchParams.get('start')"),
        "days": days,
        # The end of the days' window as the page was answered (the
        # server's yesterday then: a run may cross midnight UTC).
        "days_to": page.get_attribute("[data-testid=patterns]", "data-days-to"),
    }
    axe(page, axe_js, "/app/patterns")
    screenshots(page, out, "patterns", "[data-testid=patterns][data-state=ready]")
    page.select_option("#period", "day")
    wait_js(page, "new URL(location.href).searchParams.get('period') === 'day'")
    page.wait_for_selector("[data-testid=patterns][data-state=ready] [data-testid=period-shown]", timeout=30000)
    latest = page.inner_text("[data-testid=period-shown]")
    page.get_by_role("button", name="← Earlier").click()
    wait_js(page, "new URL(location.href).searchParams.get('start')")
    wait_js(page, f"document.querySelector('[data-testid=period-shown]').textContent !== {json.dumps(latest)}")
    return shown


def viewer_flow(browser, base, token, axe_js, out):
    ctx = browser.new_context(viewport={"width": 1440, "height": 900})
    page = ctx.new_page()
    w = Watch(page)
    page.goto(base + "/login?token=" + token)
    assert page.locator("#confirm").is_visible(), "an invitation asks for the password twice"
    page.fill("#password", "viewer password 1")
    page.fill("#confirm", "viewer password 1")
    page.click("#submit")
    page.wait_for_url("**/app/", timeout=20000)
    page.wait_for_selector("[data-testid=overview][data-state=ready]", timeout=30000)
    assert page.get_by_role("link", name="Settings").count() == 0, "a viewer sees no Settings"
    # A viewer runs SQL but is not offered an export (the API refuses it too).
    page.goto(base + "/app/sql")
    page.wait_for_selector("[data-testid=tables] summary", timeout=30000)
    page.get_by_role("button", name="Run", exact=True).click()
    page.wait_for_selector("[data-testid=console][data-state=ready]", timeout=30000)
    page.wait_for_selector("text=Exporting a result needs the analyst role")
    assert page.locator("[data-testid=export]").count() == 0
    status = page.evaluate("""async () => {
        const csrf = (document.cookie.match(/crow_csrf=([^;]+)/) || [])[1] || '';
        const r = await fetch('/api/v1/exports', {method: 'POST', headers: {'Content-Type': 'application/json',
            'X-CSRF-Token': csrf}, body: JSON.stringify({sql: 'SELECT 1 AS one', format: 'csv'})});
        await r.text();
        return r.status;
    }""")
    assert status == 403, status
    # That refusal was the point: not a failure of the page.
    w.problems = [p for p in w.problems if not ("HTTP 403" in p and "/api/v1/exports" in p)
                  and "status of 403" not in p]
    # Nor the collector's write key: neither read nor replaced.
    refused = page.evaluate("""async () => {
        const csrf = (document.cookie.match(/crow_csrf=([^;]+)/) || [])[1] || '';
        const get = await fetch('/api/v1/organization/write-key');
        const post = await fetch('/api/v1/organization/write-key/rotate', {method: 'POST',
            headers: {'Content-Type': 'application/json', 'X-CSRF-Token': csrf}, body: JSON.stringify({grace_hours: 0})});
        return [get.status, (await get.json()).code, post.status, (await post.json()).code];
    }""")
    assert refused == [403, "insufficient_role", 403, "insufficient_role"], refused
    # Those refusals were the point too.
    w.problems = [p for p in w.problems if not ("HTTP 403" in p and "/api/v1/organization/write-key" in p)
                  and "status of 403" not in p]
    before = len(w.problems)
    page.goto(base + "/app/settings")
    # Requests of the SQL page the navigation cut short are not failures.
    w.problems = w.problems[:before] + [p for p in w.problems[before:] if "ERR_ABORTED" not in p]
    page.wait_for_selector("text=Settings are for admins")
    assert page.locator("[data-testid=settings]").count() == 0
    # Nothing of the page's own loading (the bell's count, the account)
    # still in flight when the session ends: on a loaded machine such a
    # request was answered 401 or cut short by the sign-out's navigation.
    page.wait_for_load_state("networkidle")
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/login", timeout=10000)
    w.check("the viewer's dashboard")
    # The session is over: the app asks to sign in again.
    page.goto(base + "/app/")
    page.wait_for_url("**/login?next=**", timeout=10000)
    ctx.close()


def main():
    base, email, password, token, key, axe_js, out = sys.argv[1:8]
    base = base.rstrip("/")
    os.makedirs(out, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=ARGS)
        public_pages(browser, base, axe_js, out)
        first, live, patterns, interactions, products, console, billing, funnels, chat = owner_flow(browser, base, email, password, key, axe_js, out)
        viewer_flow(browser, base, token, axe_js, out)
        browser.close()
    print(json.dumps({"first": first, "live": live, "patterns": patterns, "interactions": interactions,
                      "products": products, "console": console,
                      "billing": billing, "funnels": funnels, "chat": chat}))


if __name__ == "__main__":
    main()
