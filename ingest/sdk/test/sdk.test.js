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

test("batches, authenticates and sends Segment-shaped events", async () => {
  const crow = fresh();
  const fetch = fakeFetch([]);
  crow.load({ writeKey: "wk_test", host: "http://collector", fetch, storage: memory(), flushAt: 3, flushInterval: 10000 });
  crow.track("Product Viewed", { product_id: "p1" });
  crow.identify("u1", { plan: "pro" });
  crow.productAdded({ product_id: "p1", quantity: 1 });
  await sleep(20);
  assert.strictEqual(fetch.calls.length, 1);
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
  for (let i = 0; i < 60 && fetch.calls.length < 3; i++) await sleep(100);
  assert.strictEqual(fetch.calls.length, 3);
  await sleep(20);
  assert.strictEqual(crow.queue.length, 0);
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
  await sleep(50);
  assert.deepStrictEqual(fetch.calls[0].body.batch.map((e) => e.event), ["Offline 1", "Offline 2"]);
});

test("consent off sends nothing and clears the queue", async () => {
  const crow = fresh();
  const fetch = fakeFetch([]);
  crow.load({ writeKey: "wk_c", host: "http://c", fetch, storage: memory(), flushAt: 100, flushInterval: 10 });
  crow.track("Before");
  crow.setConsent(false);
  crow.track("After");
  await sleep(50);
  assert.strictEqual(fetch.calls.length, 0);
  assert.strictEqual(crow.queue.length, 0);
});
