// Send events to a CROW collector with the official Segment (Node) and
// RudderStack (Node) SDKs, configured only with CROW's host and a write key:
// the snippets of the README's "Sending events", run as written.
//
// usage: node segment_sdks.js HOST WRITE_KEY
// Prints the user ids it sent events for; exits non-zero if an SDK reports
// an error or times out.
'use strict';

const [host, writeKey] = process.argv.slice(2);
if (!host || !writeKey) {
  console.error('usage: node segment_sdks.js HOST WRITE_KEY');
  process.exit(2);
}

async function segment() {
  const { Analytics } = require('@segment/analytics-node');
  // README: Segment's Node SDK
  const analytics = new Analytics({ writeKey, host });
  const failures = [];
  analytics.on('error', (err) => failures.push(String(err && (err.reason || err.message || err))));
  analytics.track({ userId: 'node-seg', event: 'Product Viewed', properties: { product_id: 'nw-1001', price: 249 } });
  analytics.page({ userId: 'node-seg', name: 'Home', properties: { url: 'https://shop.example/?utm_source=news' } });
  analytics.identify({ userId: 'node-seg', traits: { plan: 'pro' } });
  await analytics.closeAndFlush({ timeout: 15000 });
  if (failures.length) throw new Error('segment: ' + failures.join('; '));
}

async function rudderstack() {
  const Analytics = require('@rudderstack/rudder-sdk-node');
  // README: RudderStack's Node SDK
  let failure = null;
  const client = new Analytics(writeKey, {
    dataPlaneUrl: host,
    flushAt: 1,
    logLevel: 'error',
    errorHandler: (err) => { failure = err; },
  });
  client.track({ userId: 'node-rudder', event: 'Order Completed', properties: { order_id: 'o-1', revenue: 99 } });
  client.identify({ userId: 'node-rudder', traits: { plan: 'free' } });
  await new Promise((resolve, reject) => client.flush((err) => (err ? reject(err) : resolve())));
  if (failure) throw new Error('rudderstack: ' + String(failure && (failure.message || failure)));
}

const timeout = setTimeout(() => { console.error('timed out'); process.exit(1); }, 30000);
(async () => {
  await segment();
  console.log('node-seg');
  await rudderstack();
  console.log('node-rudder');
  clearTimeout(timeout);
})().catch((err) => {
  console.error(String(err && err.stack || err));
  process.exit(1);
});
