// crow.js outside a browser (as in React Native or a worker): no window, no
// document, no localStorage. Run with `node --test ingest/sdk/test`.
const test = require("node:test");
const assert = require("node:assert");

function fresh() {
  delete require.cache[require.resolve("../crow.js")];
  return require("../crow.js");
}

function memory() {
  const m = new Map();
  return { getItem: (k) => (m.has(k) ? m.get(k) : null), setItem: (k, v) => m.set(k, String(v)), removeItem: (k) => m.delete(k), m };
}

function fakeFetch(statuses) {
  const calls = [];
  const fn = async (url, init) => {
    calls.push({ url, init, body: JSON.parse(init.body) });
    const status = statuses.length ? statuses.shift() : 200;
    return { ok: status < 300, status, headers: { get: (h) => (h === "Retry-After" ? "0" : null) } };
  };
  fn.calls = calls;
  return fn;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Wait for a condition instead of a fixed time (fails after `ms`).
async function until(cond, ms = 10000) {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error("condition not met in " + ms + " ms");
    await sleep(10);
  }
}


test("batches, authenticates and sends Segment-shaped events", async () => {
  const crow = fresh();
  const fetch = fakeFetch([]);
  crow.load({ writeKey: "wk_test", host: "http://collector", fetch, storage: memory(), flushAt: 3, flushInterval: 10000 });
  crow.track("Product Viewed", { product_id: "p1" });
  crow.identify("u1", { plan: "pro" });
  crow.productAdded({ product_id: "p1", quantity: 1 });
  await until(() => fetch.calls.length === 1);
  const { url, init, body } = fetch.calls[0];
  assert.strictEqual(url, "http://collector/v1/batch");
  assert.strictEqual(init.headers.Authorization, "Basic " + Buffer.from("wk_test:").toString("base64"));
  assert.deepStrictEqual(body.batch.map((e) => e.type), ["track", "identify", "track"]);
  assert.strictEqual(body.batch[2].event, "Product Added");
  assert.strictEqual(body.batch[2].userId, "u1", "identify sticks to later events");
  assert.ok(body.batch.every((e) => e.messageId && e.anonymousId && e.timestamp));
  assert.ok(body.sentAt);
});

test("retries with backoff on 503 and keeps the queue until acknowledged", async () => {
  const crow = fresh();
  const storage = memory();
  const fetch = fakeFetch([503, 503]);
  crow.load({ writeKey: "wk_r", host: "http://c", fetch, storage, flushAt: 1, maxRetries: 5 });
  crow.track("A");
  assert.ok(storage.getItem("crow:wk_r:queue").includes('"A"'), "persisted before sending");
  await until(() => fetch.calls.length === 3 && crow.queue.length === 0);
  assert.strictEqual(JSON.parse(storage.getItem("crow:wk_r:queue")).length, 0);
});

test("an offline queue survives a reload", async () => {
  const storage = memory();
  let crow = fresh();
  crow.load({ writeKey: "wk_o", host: "http://c", fetch: async () => { throw new Error("offline"); }, storage, flushAt: 100 });
  crow.track("Offline 1");
  crow.track("Offline 2");
  crow = fresh();
  const fetch = fakeFetch([]);
  crow.load({ writeKey: "wk_o", host: "http://c", fetch, storage, flushAt: 100, flushInterval: 10 });
  await until(() => fetch.calls.length === 1);
  assert.deepStrictEqual(fetch.calls[0].body.batch.map((e) => e.event), ["Offline 1", "Offline 2"]);
});

test("consent off sends nothing and clears the queue", async () => {
  const crow = fresh();
  const fetch = fakeFetch([]);
  crow.load({ writeKey: "wk_c", host: "http://c", fetch, storage: memory(), flushAt: 100, flushInterval: 10 });
  crow.track("Before");
  crow.setConsent(false);
  crow.track("After");
  // The flush "Before" scheduled has run, and sent nothing.
  await until(() => crow.timer === null);
  assert.strictEqual(fetch.calls.length, 0);
  assert.strictEqual(crow.queue.length, 0);
});

// A minimal browser around the SDK: window, location, history, navigator
// and event listeners on globalThis, removed by the returned cleanup.
function browser(url, navigatorProps) {
  const g = globalThis;
  const listeners = {};
  const loc = new URL(url);
  const saved = {};
  const set = (k, v) => {
    saved[k] = Object.getOwnPropertyDescriptor(g, k);
    Object.defineProperty(g, k, { value: v, configurable: true, writable: true });
  };
  set("window", g);
  set("location", {
    get href() { return loc.href; },
    get pathname() { return loc.pathname; },
    get search() { return loc.search; },
    origin: loc.origin,
  });
  set("history", { pushState(s, t, u) { loc.href = new URL(u, loc.href).href; }, replaceState() {} });
  set("navigator", Object.assign({ userAgent: "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0) Mobile", language: "en" }, navigatorProps));
  set("addEventListener", (name, f) => (listeners[name] = listeners[name] || []).push(f));
  return {
    back(u) { loc.href = new URL(u, loc.href).href; (listeners.popstate || []).forEach((f) => f()); },
    cleanup() {
      for (const [k, d] of Object.entries(saved)) {
        if (d) Object.defineProperty(g, k, d); else delete g[k];
      }
    },
  };
}

test("honours Retry-After before retrying", async () => {
  const crow = fresh();
  const calls = [];
  const fetch = async (url, init) => {
    calls.push(Date.now());
    const status = calls.length === 1 ? 429 : 200;
    return { ok: status < 300, status, headers: { get: (h) => (h === "Retry-After" ? "2" : null) } };
  };
  crow.load({ writeKey: "wk_ra", host: "http://c", fetch, storage: memory(), flushAt: 1 });
  crow.track("Throttled");
  await until(() => calls.length === 2);
  assert.ok(calls[1] - calls[0] >= 2000, `retried after ${calls[1] - calls[0]} ms, asked 2 s`);
  await until(() => crow.queue.length === 0);
});

test("honours a real server's Retry-After over HTTP", async () => {
  // A collector stand-in on a local port: the first batch is refused with
  // 429 and `retry-after: 2` (a real response's lower-case header, read
  // through fetch's Headers), the next is acknowledged.
  const http = require("node:http");
  const arrivals = [];
  const server = http.createServer((req, res) => {
    let body = "";
    req.on("data", (c) => (body += c));
    req.on("end", () => {
      arrivals.push({ at: Date.now(), path: req.url, auth: req.headers.authorization, batch: JSON.parse(body).batch });
      if (arrivals.length === 1) {
        res.writeHead(429, { "content-type": "application/json", "retry-after": "2" });
        res.end('{"success":false,"code":"rate_limited"}');
      } else {
        res.writeHead(200, { "content-type": "application/json" });
        res.end('{"success":true}');
      }
    });
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  try {
    const crow = fresh();
    // No `fetch` option: the runtime's own fetch.
    crow.load({ writeKey: "wk_http", host: `http://127.0.0.1:${server.address().port}`, storage: memory(), flushAt: 1 });
    crow.track("Over HTTP");
    await until(() => arrivals.length === 2 && crow.queue.length === 0);
    const waited = arrivals[1].at - arrivals[0].at;
    assert.ok(waited >= 2000, `retried after ${waited} ms, asked 2 s (its own backoff would be under 1 s)`);
    assert.strictEqual(arrivals[0].path, "/v1/batch");
    assert.strictEqual(arrivals[0].auth, "Basic " + Buffer.from("wk_http:").toString("base64"));
    assert.deepStrictEqual(arrivals[1].batch.map((e) => e.event), ["Over HTTP"]);
    assert.strictEqual(arrivals[1].batch[0].messageId, arrivals[0].batch[0].messageId, "the same event, retried");
  } finally {
    server.close();
  }
});

test("gives up after maxRetries and keeps the queue for later", async () => {
  const crow = fresh();
  const storage = memory();
  const fetch = fakeFetch([503, 503, 503, 503, 503]);
  crow.load({ writeKey: "wk_g", host: "http://c", fetch, storage, flushAt: 1, maxRetries: 1 });
  crow.track("Kept");
  // The first attempt and one retry, then no retry is scheduled.
  await until(() => fetch.calls.length === 2 && !crow.sending);
  assert.strictEqual(crow.timer, null, "no further retry scheduled");
  assert.strictEqual(crow.attempt, 0);
  assert.ok(storage.getItem("crow:wk_g:queue").includes('"Kept"'), "the event stays queued");
  // The next event tries again, with both.
  crow.track("Next");
  await until(() => fetch.calls.length === 3);
  assert.deepStrictEqual(fetch.calls[2].body.batch.map((e) => e.event), ["Kept", "Next"]);
});

test("group, alias, screen and the e-commerce helpers send Segment's shapes", async () => {
  const crow = fresh();
  const fetch = fakeFetch([]);
  crow.load({ writeKey: "wk_e", host: "http://c", fetch, storage: memory(), flushAt: 13, flushInterval: 10000 });
  crow.group("g1", { name: "Acme" });
  crow.alias("u9", "anon-1");
  crow.screen("Home", { tab: 1 });
  crow.productsSearched("headphones");
  crow.productViewed({ product_id: "p1" });
  crow.productAdded({ product_id: "p1" });
  crow.productRemoved({ product_id: "p1" });
  crow.cartViewed({ cart_id: "c1" });
  crow.checkoutStarted({ order_id: "o1" });
  crow.checkoutStepViewed({ step: 2 });
  crow.paymentInfoEntered({ step: 3 });
  crow.orderCompleted({ order_id: "o1", revenue: 99 });
  crow.track("Last");
  await until(() => fetch.calls.length === 1);
  const b = fetch.calls[0].body.batch;
  assert.deepStrictEqual(
    b.map((e) => e.type + ":" + (e.event || e.name || e.groupId || e.previousId)),
    ["group:g1", "alias:anon-1", "screen:Home", "track:Products Searched", "track:Product Viewed",
     "track:Product Added", "track:Product Removed", "track:Cart Viewed", "track:Checkout Started",
     "track:Checkout Step Viewed", "track:Payment Info Entered", "track:Order Completed", "track:Last"]);
  assert.strictEqual(b[1].userId, "u9");
  assert.deepStrictEqual(b[0].traits, { name: "Acme" });
  assert.strictEqual(b[3].properties.query, "headphones");
  assert.strictEqual(b[11].properties.revenue, 99);
});

test("Do-Not-Track is respected unless told otherwise", () => {
  const env = browser("https://shop.example/", { doNotTrack: "1" });
  try {
    let crow = fresh();
    crow.load({ writeKey: "wk_d", host: "http://c", fetch: fakeFetch([]), storage: memory(), flushAt: 100, autoPage: false });
    assert.strictEqual(crow.track("Tracked?"), null);
    assert.strictEqual(crow.queue.length, 0);
    crow = fresh();
    crow.load({ writeKey: "wk_d2", host: "http://c", fetch: fakeFetch([]), storage: memory(), flushAt: 100, autoPage: false, respectDNT: false });
    assert.ok(crow.track("Tracked"));
    assert.strictEqual(crow.queue.length, 1);
  } finally {
    env.cleanup();
  }
});

test("single-page navigation: pushState and popstate each send a page view", async () => {
  const env = browser("https://shop.example/home?utm_source=news");
  try {
    const crow = fresh();
    const fetch = fakeFetch([]);
    crow.load({ writeKey: "wk_spa", host: "http://c", fetch, storage: memory(), flushAt: 3, flushInterval: 10000 });
    crow.page();
    globalThis.history.pushState({}, "", "/product/aria");
    env.back("/home?utm_source=news");
    await until(() => fetch.calls.length === 1);
    const b = fetch.calls[0].body.batch;
    assert.deepStrictEqual(b.map((e) => e.type + ":" + e.properties.path), ["page:/home", "page:/product/aria", "page:/home"]);
    assert.strictEqual(b[1].properties.referrer, "https://shop.example/home?utm_source=news");
    assert.deepStrictEqual(b[0].context.campaign, { source: "news" });
    assert.strictEqual(b[0].context.device.type, "mobile");
  } finally {
    env.cleanup();
  }
});
