// The CROW dashboard (issue 16): Preact + htm, no build step. Every number
// comes from the query API (`POST /api/v1/sql`, tenant-scoped by the
// signed-in user's organization) or its REST resources; the SQL is in this
// file, so what the page shows is what that SQL says over the same lake.
import { h, render } from "preact";
import { useEffect, useMemo, useRef, useState } from "preact/hooks";
import htm from "htm";
import uPlot from "uplot";

const html = htm.bind(h);

// ---------------------------------------------------------------- the API

class Problem extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
  }
}

function csrfToken() {
  const m = document.cookie.match(/(?:^|;\s*)crow_csrf=([^;]+)/);
  return m ? decodeURIComponent(m[1]) : "";
}

// Set while signing out: the session ends on the server before the
// sign-out request is answered, and another request's 401 in that moment
// must not navigate away and abort it (sign-out goes to /login itself).
let signingOut = false;

function toSignIn() {
  if (signingOut) return;
  const next = location.pathname + location.search;
  location.assign("/login?next=" + encodeURIComponent(next));
}

async function call(path, init = {}) {
  const headers = { Accept: "application/json", ...(init.headers || {}) };
  if (init.method && init.method !== "GET") headers["X-CSRF-Token"] = csrfToken();
  for (let attempt = 0; ; attempt++) {
    let r;
    try {
      r = await fetch(path, { ...init, headers, credentials: "same-origin" });
    } catch (_) {
      throw new Problem(0, "The server could not be reached. Check that crow serve is running; the page retries by itself.");
    }
    if (r.status === 401) {
      toSignIn();
      throw new Problem(401, "Your session has ended: sign in again.");
    }
    if (r.status === 429 && attempt < 3) {
      const wait = Number(r.headers.get("Retry-After")) || 1;
      await new Promise((ok) => setTimeout(ok, Math.min(wait, 5) * 1000));
      continue;
    }
    let body = null;
    try {
      body = await r.json();
    } catch (_) {
      body = null;
    }
    if (!r.ok) {
      const detail = body && body.detail ? body.detail : `the server answered HTTP ${r.status}`;
      throw new Problem(r.status, detail);
    }
    return body;
  }
}

const get = (path) => call(path);
const sql = (query) =>
  call("/api/v1/sql", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ sql: query }),
  });

// At most `n` requests at once (the API allows a few concurrent queries
// per user; more would wait in 429s).
async function pool(tasks, n = 3) {
  const out = new Array(tasks.length);
  let next = 0;
  async function worker() {
    while (next < tasks.length) {
      const i = next++;
      out[i] = await tasks[i]();
    }
  }
  await Promise.all(Array.from({ length: Math.min(n, tasks.length) }, worker));
  return out;
}

// ----------------------------------------------------------- formatting

const locale = navigator.language || "en";
const num = (v, d = 0) =>
  v == null || Number.isNaN(v) ? "–" : Number(v).toLocaleString(locale, { maximumFractionDigits: d, minimumFractionDigits: d });
const when = (d) => d.toLocaleString(locale, { dateStyle: "medium", timeStyle: "short" });
const utc = (d) => d.toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
const sqlText = (s) => "'" + String(s).replace(/'/g, "''") + "'";

function change(cur, prev) {
  if (prev == null || cur == null) return null;
  if (prev === 0) return cur === 0 ? 0 : null;
  return (cur - prev) / Math.abs(prev);
}

// ------------------------------------------------------------ URL state

const RANGES = [
  { id: "24h", label: "Last 24 hours", hours: 24 },
  { id: "7d", label: "Last 7 days", hours: 24 * 7 },
  { id: "30d", label: "Last 30 days", hours: 24 * 30 },
  { id: "90d", label: "Last 90 days", hours: 24 * 90 },
];

function urlParam(name, fallback) {
  return new URLSearchParams(location.search).get(name) || fallback;
}

function setUrlParam(name, value) {
  const u = new URL(location.href);
  u.searchParams.set(name, value);
  history.replaceState(null, "", u);
}

function rangeOf(id) {
  return RANGES.find((r) => r.id === id) || RANGES[1];
}

// Seconds between refreshes: `?refresh=N` (at least 2), else 10.
function refreshSeconds() {
  const n = Number(urlParam("refresh", "10"));
  return Number.isFinite(n) && n >= 2 ? n : 10;
}

// The period shown and the one before it, ending now (whole seconds).
function bounds(range) {
  const to = new Date(Math.floor(Date.now() / 1000) * 1000);
  const from = new Date(to.getTime() - range.hours * 3600 * 1000);
  const prev = new Date(from.getTime() - range.hours * 3600 * 1000);
  return { to, from, prev };
}

// ------------------------------------------------------------- the data

// `col` moved to the browser's wall-clock time over [from, to), so that
// date_trunc('day', …) of it is the user's local day: the UTC offset, and
// where it changes in the range (daylight saving), the instant it changes
// (found to the millisecond), as a CASE.
function localTime(col, from, to) {
  const off = (t) => -new Date(t).getTimezoneOffset();
  const parts = [[from.getTime(), off(from.getTime())]];
  const step = 15 * 60 * 1000;
  for (let t = from.getTime() + step; t < to.getTime() + step; t += step) {
    if (off(t) === parts[parts.length - 1][1]) continue;
    let [lo, hi] = [t - step, t];
    while (hi - lo > 1) {
      const mid = Math.floor((lo + hi) / 2);
      if (off(mid) === off(hi)) hi = mid;
      else lo = mid;
    }
    parts.push([hi, off(hi)]);
  }
  const shifted = (m) => (m >= 0 ? `${col} + INTERVAL '${m} minutes'` : `${col} - INTERVAL '${-m} minutes'`);
  if (parts.length === 1) return shifted(parts[0][1]);
  const arms = parts
    .slice(1)
    .reverse()
    .map(([t, m]) => `WHEN ${col} >= ${sqlText(new Date(t).toISOString())} THEN ${shifted(m)}`);
  return `CASE ${arms.join(" ")} ELSE ${shifted(parts[0][1])} END`;
}

// One query per figure family; each reads the period and the one before.
function overviewQueries(b, hourly) {
  const [P, F, T] = [b.prev, b.from, b.to].map((d) => sqlText(d.toISOString()));
  const cur = (col) => `${col} >= ${F}`;
  // The bucket of a row: its UTC hour, or its local day as the UTC
  // midnight of that date (an hour can straddle two local days).
  const bucket = (col) =>
    hourly
      ? `CAST(to_unixtime(date_trunc('hour', ${col})) AS BIGINT) AS hour`
      : `CAST(to_unixtime(date_trunc('day', ${localTime(col, b.from, b.to)})) AS BIGINT) AS day`;
  return {
    web: `SELECT
        sum(CASE WHEN ${cur("occurred_at")} THEN 1 ELSE 0 END) AS events,
        sum(CASE WHEN occurred_at < ${F} THEN 1 ELSE 0 END) AS events_prev,
        count(DISTINCT CASE WHEN ${cur("occurred_at")} THEN anonymous_id END) AS visitors,
        count(DISTINCT CASE WHEN occurred_at < ${F} THEN anonymous_id END) AS visitors_prev,
        sum(CASE WHEN ${cur("occurred_at")} AND event = 'Order Completed' THEN 1 ELSE 0 END) AS orders,
        sum(CASE WHEN occurred_at < ${F} AND event = 'Order Completed' THEN 1 ELSE 0 END) AS orders_prev,
        sum(CASE WHEN ${cur("occurred_at")} AND event = 'Order Completed' THEN revenue ELSE 0 END) AS revenue,
        sum(CASE WHEN occurred_at < ${F} AND event = 'Order Completed' THEN revenue ELSE 0 END) AS revenue_prev,
        count(DISTINCT CASE WHEN event = 'Order Completed' THEN currency END) AS currencies,
        max(CASE WHEN event = 'Order Completed' THEN currency END) AS currency
      FROM raw_web_events WHERE occurred_at >= ${P} AND occurred_at < ${T}`,
    sessions: `SELECT channel,
        sum(CASE WHEN ${cur("started_at")} THEN 1 ELSE 0 END) AS sessions,
        sum(CASE WHEN started_at < ${F} THEN 1 ELSE 0 END) AS sessions_prev,
        sum(CASE WHEN ${cur("started_at")} AND converted THEN 1 ELSE 0 END) AS converted,
        sum(CASE WHEN started_at < ${F} AND converted THEN 1 ELSE 0 END) AS converted_prev
      FROM sessions WHERE started_at >= ${P} AND started_at < ${T} GROUP BY channel ORDER BY channel`,
    interactions: `SELECT channel,
        sum(CASE WHEN ${cur("started_at")} THEN 1 ELSE 0 END) AS interactions,
        sum(CASE WHEN started_at < ${F} THEN 1 ELSE 0 END) AS interactions_prev
      FROM interactions WHERE started_at >= ${P} AND started_at < ${T} GROUP BY channel ORDER BY channel`,
    series: `SELECT ${bucket("occurred_at")},
        count(*) AS events,
        count(DISTINCT anonymous_id) AS visitors,
        sum(CASE WHEN event = 'Order Completed' THEN 1 ELSE 0 END) AS orders,
        sum(CASE WHEN event = 'Order Completed' THEN revenue ELSE 0 END) AS revenue
      FROM raw_web_events WHERE ${cur("occurred_at")} AND occurred_at < ${T} GROUP BY 1 ORDER BY 1`,
    sessionSeries: `SELECT ${bucket("started_at")}, count(*) AS sessions,
        sum(CASE WHEN converted THEN 1 ELSE 0 END) AS converted
      FROM sessions WHERE ${cur("started_at")} AND started_at < ${T} GROUP BY 1 ORDER BY 1`,
    interactionSeries: `SELECT ${bucket("started_at")}, count(*) AS interactions
      FROM interactions WHERE ${cur("started_at")} AND started_at < ${T} GROUP BY 1 ORDER BY 1`,
    products: `WITH t AS (
        SELECT product_id,
          sum(CASE WHEN event = 'Product Viewed' THEN 1 ELSE 0 END) AS views,
          sum(CASE WHEN event = 'Product Added' THEN 1 ELSE 0 END) AS adds
        FROM raw_web_events
        WHERE ${cur("occurred_at")} AND occurred_at < ${T} AND product_id IS NOT NULL
        GROUP BY product_id)
      SELECT t.product_id, coalesce(p.name, t.product_id) AS name, t.views, t.adds
      FROM t LEFT JOIN products p ON p.product_id = t.product_id
      ORDER BY t.views DESC, t.adds DESC, t.product_id LIMIT 10`,
    stories: `SELECT story_id, title, description, direction, kind, ongoing, impact, impact_unit,
        CAST(start_date AS VARCHAR) AS start_date, CAST(last_date AS VARCHAR) AS last_date
      FROM stories ORDER BY last_date DESC, rank_score DESC, story_id LIMIT 5`,
    latest: `SELECT interaction_id, channel, CAST(to_unixtime(started_at) AS BIGINT) AS started,
        description, outcome, sentiment
      FROM interactions WHERE ${cur("started_at")} AND started_at < ${T}
      ORDER BY started_at DESC, interaction_id LIMIT 8`,
  };
}

const n0 = (v) => (v == null ? 0 : Number(v));

function sumBy(rows, col) {
  return rows.reduce((s, r) => s + n0(r[col]), 0);
}

function kpis(r) {
  const w = r.web[0] || {};
  const sessions = sumBy(r.sessions, "sessions");
  const sessionsPrev = sumBy(r.sessions, "sessions_prev");
  const conv = sessions ? sumBy(r.sessions, "converted") / sessions : null;
  const convPrev = sessionsPrev ? sumBy(r.sessions, "converted_prev") / sessionsPrev : null;
  const split = (rows, col) => rows.filter((x) => n0(x[col]) > 0).map((x) => `${x.channel} ${num(x[col])}`).join(" · ");
  const currencies = n0(w.currencies);
  const revenueLabel = currencies === 1 ? `Revenue (${w.currency})` : currencies > 1 ? "Revenue (mixed currencies)" : "Revenue";
  return [
    { id: "events", label: "Events", value: n0(w.events), prev: n0(w.events_prev) },
    { id: "visitors", label: "Visitors", value: n0(w.visitors), prev: n0(w.visitors_prev) },
    { id: "sessions", label: "Sessions", value: sessions, prev: sessionsPrev, split: split(r.sessions, "sessions") },
    {
      id: "interactions", label: "Interactions", value: sumBy(r.interactions, "interactions"),
      prev: sumBy(r.interactions, "interactions_prev"), split: split(r.interactions, "interactions"),
    },
    { id: "conversion", label: "Conversion rate", value: conv, prev: convPrev, percent: true },
    { id: "orders", label: "Orders", value: n0(w.orders), prev: n0(w.orders_prev) },
    { id: "revenue", label: revenueLabel, value: n0(w.revenue), prev: n0(w.revenue_prev), digits: 2 },
  ];
}

async function loadOverview(range) {
  const b = bounds(range);
  const q = overviewQueries(b, range.hours <= 48);
  const names = Object.keys(q);
  const rows = await pool(names.map((k) => () => sql(q[k])));
  const r = Object.fromEntries(names.map((k, i) => [k, rows[i] || []]));
  return { bounds: b, range, kpis: kpis(r), ...r };
}

// ---------------------------------------------------------------- views

function Kpi({ k }) {
  const c = change(k.value, k.prev);
  const shown = k.percent ? (k.value == null ? "–" : num(k.value * 100, 1) + " %") : num(k.value, k.digits || 0);
  const raw = k.value == null ? "" : String(k.percent ? Math.round(k.value * 1e6) / 1e6 : k.value);
  let text = "no data in the period before";
  if (c === 0) text = "no change vs the period before";
  else if (c != null) text = `${c > 0 ? "▲" : "▼"} ${num(Math.abs(c) * 100, 1)} % vs the period before`;
  return html`<li class="kpi" data-testid=${"kpi-" + k.id} data-value=${raw}>
    <h2>${k.label}</h2>
    <p class="value">${shown}</p>
    <p class=${"change" + (c > 0 ? " up" : c < 0 ? " down" : "")}>${text}</p>
    ${k.split ? html`<p class="split">${k.split}</p>` : null}
  </li>`;
}

// Rows per bucket → a map from the bucket's start (seconds): a local day
// (its UTC midnight in `day`) as its local midnight; an hour (`hour`) as
// is, or, unless `hourly`, as the local day it starts in.
function buckets(rows, cols, hourly = true) {
  const map = new Map();
  for (const r of rows) {
    let t;
    if (r.day != null) {
      const u = new Date(n0(r.day) * 1000);
      t = new Date(u.getUTCFullYear(), u.getUTCMonth(), u.getUTCDate()).getTime() / 1000;
    } else {
      const d = new Date(n0(r.hour) * 1000);
      if (!hourly) d.setHours(0, 0, 0, 0);
      t = d.getTime() / 1000;
    }
    const acc = map.get(t) || Object.fromEntries(cols.map((c) => [c, 0]));
    for (const c of cols) acc[c] += n0(r[c]);
    map.set(t, acc);
  }
  return map;
}

function seriesData(data) {
  const web = buckets(data.series, ["events", "orders"]);
  const ses = buckets(data.sessionSeries, ["sessions"]);
  const times = [...new Set([...web.keys(), ...ses.keys()])].sort((a, b) => a - b);
  return [
    times,
    times.map((t) => (web.get(t) || {}).events || 0),
    times.map((t) => (ses.get(t) || {}).sessions || 0),
    times.map((t) => (web.get(t) || {}).orders || 0),
  ];
}

// Every figure per bucket (hour or local day), on the same times;
// conversion as converted / sessions of the bucket (none without
// sessions).
function kpiSeries(data) {
  const web = buckets(data.series, ["events", "visitors", "orders", "revenue"]);
  const ses = buckets(data.sessionSeries, ["sessions", "converted"]);
  const int = buckets(data.interactionSeries, ["interactions"]);
  const times = [...new Set([...web.keys(), ...ses.keys(), ...int.keys()])].sort((a, b) => a - b);
  const of = (m, c) => times.map((t) => (m.get(t) || {})[c] || 0);
  const sessions = of(ses, "sessions");
  const converted = of(ses, "converted");
  return {
    times,
    values: {
      events: of(web, "events"),
      visitors: of(web, "visitors"),
      sessions,
      interactions: of(int, "interactions"),
      conversion: sessions.map((n, i) => (n ? converted[i] / n : null)),
      orders: of(web, "orders"),
      revenue: of(web, "revenue"),
    },
  };
}

// A uPlot chart drawn in the element `box` refers to, made anew when `deps`
// change: `make()` gives its options (without a size) and data, or nothing
// to draw nothing. It is as wide as its box (`minWidth` at least) and
// `height` high, follows the window's size, and is destroyed with the
// component. Returns the ref to the live chart (for `setData`).
function useUPlot(box, { height, minWidth }, make, deps) {
  const plot = useRef(null);
  useEffect(() => {
    const el = box.current;
    const made = el && make();
    if (!made) return undefined;
    const [options, data] = made;
    const width = () => Math.max(minWidth, el.clientWidth);
    plot.current = new uPlot({ ...options, width: width(), height }, data, el);
    const onResize = () => plot.current && plot.current.setSize({ width: width(), height });
    window.addEventListener("resize", onResize);
    return () => {
      window.removeEventListener("resize", onResize);
      plot.current && plot.current.destroy();
      plot.current = null;
    };
  }, deps);
  return plot;
}

// One figure over time: a small chart, its points in `data-points`
// ([time in seconds, value], for tests and assistive reading).
function Spark({ k, times, values, hourly }) {
  const box = useRef(null);
  const data = [times, values];
  const plot = useUPlot(box, { height: 120, minWidth: 200 }, () => {
    const fmt = (v) => (v == null ? "–" : k.percent ? num(v * 100, 1) + " %" : num(v, k.digits || 0));
    const opts = {
      legend: { show: false },
      scales: { x: { time: true } },
      axes: [{ space: 60 }, { size: 60, values: (u, vs) => vs.map(fmt) }],
      series: [{}, { label: k.label, stroke: "#1d4ed8", width: 2, fill: "rgba(29, 78, 216, .08)", spanGaps: false }],
    };
    return [opts, data];
  }, []);
  useEffect(() => {
    plot.current && plot.current.setData(data);
  }, [times, values]);
  const points = JSON.stringify(times.map((t, i) => [t, values[i]]));
  return html`<figure class="spark" data-testid="figure-series" data-id=${k.id} data-points=${points}>
    <figcaption>${k.label} <span class="meta">${hourly ? "per hour" : "per day"}</span></figcaption>
    <div class="chart" ref=${box}></div>
  </figure>`;
}

function Chart({ data, label }) {
  const box = useRef(null);
  const plot = useUPlot(box, { height: 260, minWidth: 260 }, () => {
    const opts = {
      scales: { x: { time: true } },
      axes: [{}, { label: "Events, sessions", size: 70 }, { label: "Orders", scale: "n", side: 1, size: 50, grid: { show: false } }],
      series: [
        {},
        { label: "Events", stroke: "#1d4ed8", width: 2 },
        { label: "Sessions", stroke: "#0f766e", width: 2 },
        { label: "Orders", stroke: "#b45309", width: 2, scale: "n" },
      ],
    };
    return [opts, data];
  }, []);
  useEffect(() => {
    plot.current && plot.current.setData(data);
  }, [data]);
  return html`<figure class="chart-figure">
    <figcaption class="visually-hidden">${label}</figcaption>
    <div class="chart" ref=${box} data-testid="series-chart"></div>
  </figure>`;
}

function TopProducts({ rows }) {
  if (!rows.length) return html`<p class="status">No product was viewed in this period.</p>`;
  return html`<table data-testid="top-products">
    <caption class="visually-hidden">Most viewed products in the period</caption>
    <thead><tr><th scope="col">Product</th><th scope="col" class="num">Views</th><th scope="col" class="num">Added to cart</th></tr></thead>
    <tbody>
      ${rows.map(
        (p) => html`<tr data-testid="top-product" data-product-id=${p.product_id} data-views=${n0(p.views)} data-adds=${n0(p.adds)}>
          <td>${p.name}</td><td class="num">${num(p.views)}</td><td class="num">${num(p.adds)}</td>
        </tr>`,
      )}
    </tbody>
  </table>`;
}

function Stories({ rows }) {
  if (!rows.length) return html`<p class="status">No patterns found yet: they appear after the patterns job has run over a few days of data.</p>`;
  return html`<ul class="list" data-testid="stories">
    ${rows.map(
      (s) => html`<li data-testid="story">
        <strong>${s.title}</strong>
        <div class="meta"><span class=${"tag " + s.direction}>${s.direction}</span> ${s.kind} · ${s.start_date}${s.ongoing ? " – ongoing" : s.last_date !== s.start_date ? " – " + s.last_date : ""}</div>
        <p>${s.description}</p>
      </li>`,
    )}
  </ul>`;
}

function Latest({ rows, go }) {
  if (!rows.length) return html`<p class="status">No interactions in this period yet: they are written when sessions close and the enrich job runs.</p>`;
  return html`<ul class="list" data-testid="latest-interactions">
    ${rows.map((i) => {
      const d = new Date(n0(i.started) * 1000);
      return html`<li>
        <div class="meta"><time datetime=${d.toISOString()} title=${utc(d)}>${when(d)}</time> · ${i.channel}${i.outcome ? " · " + i.outcome.replace(/_/g, " ") : ""}</div>
        <p>${i.description} <a href=${"/app/interactions?id=" + i.interaction_id} onClick=${(e) => go(e, "/app/interactions?id=" + i.interaction_id)}>Open<span class="visually-hidden"> the interaction of ${when(d)}</span></a></p>
      </li>`;
    })}
  </ul>`;
}

function RangePicker({ value, onChange }) {
  return html`<label for="range">Time range</label>
    <select id="range" value=${value} onChange=${(e) => onChange(e.target.value)}>
      ${RANGES.map((r) => html`<option value=${r.id}>${r.label}</option>`)}
    </select>`;
}

function Overview({ go }) {
  const [rangeId, setRangeId] = useState(rangeOf(urlParam("range", "7d")).id);
  const [data, setData] = useState(null);
  const [error, setError] = useState(null);
  const [loads, setLoads] = useState(0);
  useEffect(() => {
    let stop = false;
    let timer = null;
    const range = rangeOf(rangeId);
    async function tick() {
      try {
        const d = await loadOverview(range);
        if (stop) return;
        setData(d);
        setError(null);
        setLoads((n) => n + 1);
      } catch (e) {
        if (!stop) setError(e.message);
      }
      if (!stop) timer = setTimeout(tick, refreshSeconds() * 1000);
    }
    tick();
    return () => {
      stop = true;
      clearTimeout(timer);
    };
  }, [rangeId]);
  const pick = (id) => {
    setUrlParam("range", id);
    setData(null);
    setRangeId(id);
  };
  const b = data && data.bounds;
  return html`<div class="page" data-testid="overview" data-state=${data ? "ready" : error ? "error" : "loading"}
      data-loads=${loads} data-from=${b ? b.from.toISOString() : ""} data-to=${b ? b.to.toISOString() : ""}>
    <div class="toolbar">
      <h1>Overview</h1>
      <div class="controls">
        <${RangePicker} value=${rangeId} onChange=${pick} />
        <span class="updated" aria-live="polite">${b ? `Updated ${b.to.toLocaleTimeString(locale)}` : ""}</span>
      </div>
    </div>
    ${error ? html`<p class="error" role="alert">Could not load the overview: ${error}. It retries every ${refreshSeconds()} s.</p>` : null}
    ${!data
      ? !error && html`<p class="status" role="status">Loading the overview…</p>`
      : html`
        <ul class="kpis" aria-label="Key figures">${data.kpis.map((k) => html`<${Kpi} k=${k} />`)}</ul>
        <div class="grid">
          <section class="panel wide" aria-labelledby="h-series">
            <h2 id="h-series">Events, sessions and orders (${data.range.hours <= 48 ? "per hour" : "per day"}, your time zone)</h2>
            ${data.series.length
              ? html`<${Chart} data=${seriesData(data)} label="Events, sessions and orders over the period" />`
              : html`<p class="status">No events in this period. Send some to the collector, or pick a longer range.</p>`}
          </section>
          <section class="panel wide" aria-labelledby="h-each">
            <h2 id="h-each">Each figure ${data.range.hours <= 48 ? "per hour" : "per day"} (your time zone)</h2>
            ${(() => {
              const ks = kpiSeries(data);
              return ks.times.length
                ? html`<div class="sparks">${data.kpis.map((k) => html`<${Spark} k=${k} times=${ks.times} values=${ks.values[k.id]} hourly=${data.range.hours <= 48} />`)}</div>`
                : html`<p class="status">Nothing happened in this period.</p>`;
            })()}
          </section>
          <section class="panel" aria-labelledby="h-products">
            <h2 id="h-products">Top products</h2>
            <${TopProducts} rows=${data.products} />
          </section>
          <section class="panel" aria-labelledby="h-stories">
            <h2 id="h-stories">Latest patterns</h2>
            <${Stories} rows=${data.stories} />
            <p><a href="/app/patterns" onClick=${(e) => go(e, "/app/patterns")}>All patterns, by day, week, month and year</a></p>
          </section>
          <section class="panel wide" aria-labelledby="h-latest">
            <h2 id="h-latest">Latest interactions</h2>
            <${Latest} rows=${data.latest} go=${go} />
          </section>
        </div>`}
  </div>`;
}

// --------------------------------------------------------- interactions

const PAGE = 25;
const CHANNELS = ["web", "social", "cctv"];

// The list's filters as SQL conditions (values quoted, never pasted raw).
function interactionFilters(f, b) {
  const w = [`started_at >= ${sqlText(b.from.toISOString())}`, `started_at < ${sqlText(b.to.toISOString())}`];
  if (CHANNELS.includes(f.channel)) w.push(`channel = ${sqlText(f.channel)}`);
  if (f.outcome) w.push(`outcome = ${sqlText(f.outcome)}`);
  if (f.product) w.push(`array_has(product_ids, ${sqlText(f.product)})`);
  if (f.q) w.push(`strpos(lower(description), ${sqlText(f.q.toLowerCase())}) > 0`);
  return w;
}

async function loadInteractions(f, b, after) {
  const w = interactionFilters(f, b);
  if (after) {
    w.push(`(CAST(started_at AS BIGINT) < ${Number(after.t)} OR (CAST(started_at AS BIGINT) = ${Number(after.t)} AND interaction_id > ${sqlText(after.id)}))`);
  }
  return sql(`SELECT interaction_id, channel, CAST(started_at AS BIGINT) AS t, outcome, sentiment, description
    FROM interactions WHERE ${w.join(" AND ")}
    ORDER BY started_at DESC, interaction_id LIMIT ${PAGE + 1}`);
}

async function loadInteraction(id) {
  const rows = await sql(`SELECT i.interaction_id, i.session_id, i.channel, CAST(i.started_at AS BIGINT) AS t,
      i.description, i.intent, i.sentiment, i.outcome, i.product_ids, i.confidence, i.provider, i.model,
      i.prompt_version, i.source_ids, s.timeline, s.device_type, s.traffic_source
    FROM interactions i LEFT JOIN sessions s ON s.session_id = i.session_id
    WHERE i.interaction_id = ${sqlText(id)}`);
  const it = rows[0];
  if (!it) return null;
  const ids = Array.isArray(it.product_ids) ? it.product_ids : [];
  it.products = ids.length
    ? await sql(`SELECT product_id, name, url FROM products WHERE product_id IN (${ids.map(sqlText).join(", ")}) ORDER BY name`)
    : [];
  try {
    it.steps = JSON.parse(it.timeline || "[]");
  } catch (_) {
    it.steps = [];
  }
  return it;
}

const gap = (s) => (s < 60 ? `${Math.round(s)} s` : s < 3600 ? `${Math.round(s / 60)} min` : `${num(s / 3600, 1)} h`);

function Timeline({ it }) {
  const start = n0(it.t) / 1000;
  let prev = 0;
  return html`<ol class="timeline" data-testid="timeline">
    ${it.steps.map(([off, kind, detail]) => {
      const d = new Date(start + n0(off) * 1000);
      const g = n0(off) - prev;
      prev = n0(off);
      return html`<li data-testid="step">
        <time datetime=${d.toISOString()} title=${utc(d)}>${d.toLocaleTimeString(locale)}</time>
        ${g > 0 ? html` <span class="meta">(+${gap(g)})</span>` : null}
        <strong> ${kind}</strong>${detail ? html` <span>${detail}</span>` : null}
      </li>`;
    })}
  </ol>`;
}

function InteractionDetail({ id, onClose }) {
  const [it, setIt] = useState(undefined);
  const [error, setError] = useState(null);
  useEffect(() => {
    setIt(undefined);
    loadInteraction(id).then(setIt, (e) => setError(e.message));
  }, [id]);
  const head = useRef(null);
  useEffect(() => {
    if (it && head.current) head.current.focus();
  }, [it]);
  if (error) return html`<p class="error" role="alert">Could not open the interaction: ${error}.</p>`;
  if (it === undefined) return html`<p class="status" role="status">Opening the interaction…</p>`;
  if (it === null) return html`<p class="status">No interaction has this id in your organization.</p>`;
  const d = new Date(n0(it.t) / 1000);
  const sources = Array.isArray(it.source_ids) ? it.source_ids.length : 0;
  return html`<section class="panel detail" data-testid="interaction" data-id=${it.interaction_id} aria-labelledby="h-detail">
    <div class="toolbar">
      <h2 id="h-detail" tabindex="-1" ref=${head}>Interaction of <time datetime=${d.toISOString()} title=${utc(d)}>${when(d)}</time></h2>
      <button class="button" type="button" onClick=${onClose}>Close</button>
    </div>
    <p>${it.description}</p>
    <p class="meta">${it.channel}${it.device_type ? " · " + it.device_type : ""}${it.traffic_source ? " · from " + it.traffic_source : ""}${it.intent ? " · intent: " + it.intent : ""}${it.sentiment ? " · " + it.sentiment : ""}${it.outcome ? " · " + it.outcome.replace(/_/g, " ") : ""}</p>
    <div class="grid">
      <div>
        <h3>The session, step by step</h3>
        ${it.steps.length ? html`<${Timeline} it=${it} />` : html`<p class="status">The session's timeline is not in the lake (its session row is missing).</p>`}
      </div>
      <div>
        <h3>Products</h3>
        ${it.products.length
          ? html`<ul>${it.products.map((p) => html`<li>${p.url ? html`<a href=${p.url} rel="noopener noreferrer">${p.name}</a>` : p.name} <span class="meta">${p.product_id}</span></li>`)}</ul>`
          : html`<p class="meta">No catalog product.</p>`}
        <h3>How it was written</h3>
        <p class="meta">${it.provider} / ${it.model}, prompt ${it.prompt_version}${it.confidence != null ? `, confidence ${num(it.confidence, 2)}` : ""}</p>
        <p class="meta">From session <code>${it.session_id}</code> and ${num(sources)} source event${sources === 1 ? "" : "s"}; interaction <code>${it.interaction_id}</code>.</p>
      </div>
    </div>
  </section>`;
}

function Interactions() {
  const read = () => ({
    range: rangeOf(urlParam("range", "7d")).id,
    channel: urlParam("channel", ""),
    outcome: urlParam("outcome", ""),
    product: urlParam("product", ""),
    q: urlParam("q", ""),
  });
  const [f, setF] = useState(read());
  const [rows, setRows] = useState(null);
  const [more, setMore] = useState(false);
  const [error, setError] = useState(null);
  const [open, setOpen] = useState(urlParam("id", ""));
  const [shownBounds, setBounds] = useState(null);
  useEffect(() => {
    let stop = false;
    const b = bounds(rangeOf(f.range));
    setRows(null);
    setError(null);
    loadInteractions(f, b, null).then(
      (r) => {
        if (stop) return;
        setBounds(b);
        setMore(r.length > PAGE);
        setRows(r.slice(0, PAGE));
      },
      (e) => !stop && setError(e.message),
    );
    return () => {
      stop = true;
    };
  }, [f]);
  const apply = (e) => {
    e.preventDefault();
    const form = e.target;
    const next = {
      range: form.range.value,
      channel: form.channel.value,
      outcome: form.outcome.value,
      product: form.product.value.trim(),
      q: form.q.value.trim(),
    };
    for (const [k, v] of Object.entries(next)) setUrlParam(k, v);
    setF(next);
  };
  const older = async () => {
    const last = rows[rows.length - 1];
    try {
      const r = await loadInteractions(f, shownBounds, { t: last.t, id: last.interaction_id });
      setMore(r.length > PAGE);
      setRows(rows.concat(r.slice(0, PAGE)));
    } catch (e) {
      setError(e.message);
    }
  };
  const show = (id) => {
    setUrlParam("id", id);
    setOpen(id);
  };
  const close = () => {
    setUrlParam("id", "");
    setOpen("");
  };
  return html`<div class="page" data-testid="interactions" data-state=${rows ? "ready" : error ? "error" : "loading"}
      data-from=${shownBounds ? shownBounds.from.toISOString() : ""} data-to=${shownBounds ? shownBounds.to.toISOString() : ""}>
    <div class="toolbar"><h1>Interactions</h1></div>
    <form class="filters controls" onSubmit=${apply} aria-label="Filter the interactions">
      <label for="range">Time range</label>
      <select id="range" name="range" value=${f.range}>${RANGES.map((r) => html`<option value=${r.id}>${r.label}</option>`)}</select>
      <label for="channel">Channel</label>
      <select id="channel" name="channel" value=${f.channel}>
        <option value="">All</option>${CHANNELS.map((c) => html`<option value=${c}>${c}</option>`)}
      </select>
      <label for="outcome">Outcome</label>
      <select id="outcome" name="outcome" value=${f.outcome}>
        <option value="">All</option>
        ${["purchased", "abandoned_checkout", "abandoned_cart", "browsed", "bounced"].map((o) => html`<option value=${o}>${o.replace(/_/g, " ")}</option>`)}
      </select>
      <label for="product">Product id</label>
      <input id="product" name="product" value=${f.product} size="10" />
      <label for="q">Text</label>
      <input id="q" name="q" type="search" value=${f.q} size="14" />
      <button class="button primary" type="submit">Show</button>
    </form>
    ${open ? html`<${InteractionDetail} id=${open} onClose=${close} />` : null}
    ${error ? html`<p class="error" role="alert">Could not load the interactions: ${error}. Change the filters or reload the page.</p>` : null}
    ${!rows
      ? !error && html`<p class="status" role="status">Loading the interactions…</p>`
      : !rows.length
        ? html`<p class="status">No interaction matches these filters in this period.</p>`
        : html`<ul class="list panel" data-testid="interaction-list">
            ${rows.map((i) => {
              const d = new Date(n0(i.t) / 1000);
              return html`<li data-testid="interaction-row" data-id=${i.interaction_id}>
                <div class="meta"><time datetime=${d.toISOString()} title=${utc(d)}>${when(d)}</time> · ${i.channel}${i.outcome ? " · " + i.outcome.replace(/_/g, " ") : ""}</div>
                <p>${i.description}</p>
                <button class="button" type="button" onClick=${() => show(i.interaction_id)}>Open<span class="visually-hidden"> the interaction of ${when(d)}</span></button>
              </li>`;
            })}
          </ul>
          ${more ? html`<p><button class="button" type="button" onClick=${older}>Older interactions</button></p>` : html`<p class="meta">That is all in this period.</p>`}`}
  </div>`;
}

// ------------------------------------------------------------- products

// The catalog, each product with what happened to it in the period.
function productsQuery(b) {
  const [F, T] = [b.from, b.to].map((d) => sqlText(d.toISOString()));
  return `WITH ev AS (
      SELECT product_id,
        sum(CASE WHEN event = 'Product Viewed' THEN 1 ELSE 0 END) AS views,
        sum(CASE WHEN event = 'Product Added' THEN 1 ELSE 0 END) AS adds
      FROM raw_web_events WHERE occurred_at >= ${F} AND occurred_at < ${T} AND product_id IS NOT NULL
      GROUP BY product_id),
    it AS (
      SELECT pid AS product_id, count(*) AS interactions,
        sum(CASE WHEN outcome = 'purchased' THEN 1 ELSE 0 END) AS purchased
      FROM (SELECT unnest(product_ids) AS pid, outcome FROM interactions
            WHERE started_at >= ${F} AND started_at < ${T})
      GROUP BY pid),
    pa AS (
      SELECT pid AS product_id, count(*) AS patterns
      FROM (SELECT unnest(product_ids) AS pid FROM patterns) GROUP BY pid)
    SELECT p.product_id, p.name, p.category, p.price, p.currency, p.url,
      coalesce(ev.views, 0) AS views, coalesce(ev.adds, 0) AS adds,
      coalesce(it.interactions, 0) AS interactions, coalesce(it.purchased, 0) AS purchased,
      coalesce(pa.patterns, 0) AS patterns
    FROM products p
      LEFT JOIN ev ON ev.product_id = p.product_id
      LEFT JOIN it ON it.product_id = p.product_id
      LEFT JOIN pa ON pa.product_id = p.product_id
    ORDER BY views DESC, p.product_id
    LIMIT 500`;
}

// One product per UTC day in the period: views and carts (its events),
// orders (sessions with an order that had it in the cart), interactions
// naming it, and day patterns naming it.
function productDaysQuery(b, pid) {
  const [F, T] = [b.from, b.to].map((d) => sqlText(d.toISOString()));
  const P = sqlText(pid);
  const added = (end) => sqlText(`%,"Product Added","${pid}${end}%`);
  return `WITH ev AS (
      SELECT CAST(CAST(occurred_at AS DATE) AS VARCHAR) AS day,
        sum(CASE WHEN event = 'Product Viewed' THEN 1 ELSE 0 END) AS views,
        sum(CASE WHEN event = 'Product Added' THEN 1 ELSE 0 END) AS carts
      FROM raw_web_events WHERE occurred_at >= ${F} AND occurred_at < ${T} AND product_id = ${P} GROUP BY 1),
    od AS (
      SELECT CAST(session_date AS VARCHAR) AS day, count(*) AS orders FROM sessions
      WHERE started_at >= ${F} AND started_at < ${T} AND converted
        AND (timeline LIKE ${added(" ")} OR timeline LIKE ${added('"')}) GROUP BY 1),
    it AS (
      SELECT CAST(CAST(started_at AS DATE) AS VARCHAR) AS day, count(*) AS interactions FROM interactions
      WHERE started_at >= ${F} AND started_at < ${T} AND array_has(product_ids, ${P}) GROUP BY 1),
    pa AS (
      SELECT CAST(period_start AS VARCHAR) AS day, count(*) AS patterns FROM patterns
      WHERE period_kind = 'day' AND period_start >= CAST(CAST(${F} AS TIMESTAMP) AS DATE) AND period_start < CAST(CAST(${T} AS TIMESTAMP) AS DATE)
        AND array_has(product_ids, ${P}) GROUP BY 1),
    days AS (SELECT day FROM ev UNION SELECT day FROM od UNION SELECT day FROM it UNION SELECT day FROM pa)
    SELECT days.day, coalesce(ev.views, 0) AS views, coalesce(ev.carts, 0) AS carts, coalesce(od.orders, 0) AS orders,
      coalesce(it.interactions, 0) AS interactions, coalesce(pa.patterns, 0) AS patterns
    FROM days LEFT JOIN ev ON ev.day = days.day LEFT JOIN od ON od.day = days.day
      LEFT JOIN it ON it.day = days.day LEFT JOIN pa ON pa.day = days.day
    ORDER BY days.day`;
}

const TREND = [
  ["views", "Views", "#1d4ed8"],
  ["carts", "Added to cart", "#0f766e"],
  ["orders", "Orders", "#b45309"],
  ["interactions", "Interactions", "#7c3aed"],
  ["patterns", "Day patterns", "#be123c"],
];

function TrendChart({ rows }) {
  const box = useRef(null);
  useUPlot(box, { height: 240, minWidth: 260 }, () => {
    if (!rows.length) return null;
    const data = [rows.map((r) => Date.parse(r.day + "T00:00:00Z") / 1000), ...TREND.map(([c]) => rows.map((r) => n0(r[c])))];
    const opts = {
      scales: { x: { time: true } },
      axes: [{}, { size: 50 }],
      series: [{}, ...TREND.map(([, label, stroke]) => ({ label, stroke, width: 2 }))],
    };
    return [opts, data];
  }, [rows]);
  return html`<figure class="chart-figure"><figcaption class="visually-hidden">The product's views, carts, orders, interactions and patterns per day</figcaption>
    <div class="chart" ref=${box} data-testid="product-chart"></div></figure>`;
}

function ProductTrend({ b, product, onClose }) {
  const [rows, setRows] = useState(null);
  const [error, setError] = useState(null);
  useEffect(() => {
    let stop = false;
    setRows(null);
    setError(null);
    sql(productDaysQuery(b, product.product_id)).then(
      (r) => !stop && setRows(r),
      (e) => !stop && setError(e.message),
    );
    return () => {
      stop = true;
    };
  }, [b, product.product_id]);
  return html`<section class="panel" aria-labelledby="trend-title" data-testid="product-trend" data-product-id=${product.product_id}
      data-state=${rows ? "ready" : error ? "error" : "loading"}>
    <div class="toolbar"><h2 id="trend-title">${product.name} over time</h2>
      <button class="button" type="button" onClick=${onClose}>Close</button></div>
    <p class="meta">Per UTC day in the period. Orders: sessions that ended in an order with the product in the cart; patterns: day findings naming it.</p>
    ${error ? html`<p class="error" role="alert">Could not load the product's days: ${error}. Reload the page to try again.</p>` : null}
    ${!rows
      ? !error && html`<p class="status" role="status">Loading the product's days…</p>`
      : !rows.length
        ? html`<p class="status">Nothing happened to this product in the period.</p>`
        : html`<${TrendChart} rows=${rows} />
          <details><summary>Figures per day</summary>
          <div class="scroll" tabindex="0" role="region" aria-label="The product's figures per day">
          <table data-testid="product-days">
            <caption class="visually-hidden">${product.name} per day</caption>
            <thead><tr><th scope="col">Day (UTC)</th>${TREND.map(([, l]) => html`<th scope="col" class="num">${l}</th>`)}</tr></thead>
            <tbody>${rows.map((r) => html`<tr data-testid="product-day" data-day=${r.day} data-views=${n0(r.views)} data-carts=${n0(r.carts)}
                data-orders=${n0(r.orders)} data-interactions=${n0(r.interactions)} data-patterns=${n0(r.patterns)}>
              <td>${day(r.day)}</td>${TREND.map(([c]) => html`<td class="num">${num(r[c])}</td>`)}</tr>`)}</tbody>
          </table></div></details>`}
  </section>`;
}

function Products() {
  const [rangeId, setRangeId] = useState(rangeOf(urlParam("range", "7d")).id);
  const [data, setData] = useState(null);
  const [error, setError] = useState(null);
  useEffect(() => {
    let stop = false;
    const b = bounds(rangeOf(rangeId));
    setData(null);
    setError(null);
    sql(productsQuery(b)).then(
      (rows) => !stop && setData({ b, rows }),
      (e) => !stop && setError(e.message),
    );
    return () => {
      stop = true;
    };
  }, [rangeId]);
  const pick = (id) => {
    setUrlParam("range", id);
    setRangeId(id);
  };
  const [open, setOpen] = useState(urlParam("product", ""));
  const show = (pid) => {
    setUrlParam("product", pid);
    setOpen(pid);
  };
  const opened = data && open ? data.rows.find((p) => p.product_id === open) : null;
  return html`<div class="page" data-testid="products" data-state=${data ? "ready" : error ? "error" : "loading"}
      data-from=${data ? data.b.from.toISOString() : ""} data-to=${data ? data.b.to.toISOString() : ""}>
    <div class="toolbar">
      <h1>Products</h1>
      <div class="controls"><${RangePicker} value=${rangeId} onChange=${pick} /></div>
    </div>
    ${error ? html`<p class="error" role="alert">Could not load the products: ${error}. Reload the page to try again.</p>` : null}
    ${!data
      ? !error && html`<p class="status" role="status">Loading the catalog…</p>`
      : !data.rows.length
        ? html`<p class="status">The catalog is empty: import it with <code>crow products import</code>.</p>`
        : html`${opened ? html`<${ProductTrend} b=${data.b} product=${opened} onClose=${() => show("")} />` : null}
          <div class="panel scroll" tabindex="0" role="region" aria-label="Products table (scrolls sideways on a small screen)">
          <table data-testid="product-table">
            <caption class="visually-hidden">The catalog with each product's activity in the period</caption>
            <thead><tr>
              <th scope="col">Product</th><th scope="col">Category</th><th scope="col" class="num">Price</th>
              <th scope="col" class="num">Views</th><th scope="col" class="num">Added to cart</th>
              <th scope="col" class="num">Interactions</th><th scope="col" class="num">Purchased in</th>
              <th scope="col" class="num">Patterns (all time)</th>
            </tr></thead>
            <tbody>${data.rows.map(
              (p) => html`<tr data-testid="product-row" data-product-id=${p.product_id} data-views=${n0(p.views)}
                  data-adds=${n0(p.adds)} data-interactions=${n0(p.interactions)} data-purchased=${n0(p.purchased)} data-patterns=${n0(p.patterns)}>
                <td>${p.url ? html`<a href=${p.url} rel="noopener noreferrer">${p.name}</a>` : p.name} <span class="meta">${p.product_id}</span>
                  <button class="button small" type="button" data-testid="product-open" aria-label=${"Show " + p.name + " over time"}
                    onClick=${() => show(p.product_id)}>Over time</button></td>
                <td>${p.category || ""}</td>
                <td class="num">${p.price == null ? "" : num(p.price, 2) + (p.currency ? " " + p.currency : "")}</td>
                <td class="num">${num(p.views)}</td><td class="num">${num(p.adds)}</td>
                <td class="num"><a href=${"/app/interactions?product=" + encodeURIComponent(p.product_id) + "&range=" + rangeId}>${num(p.interactions)}</a></td>
                <td class="num">${num(p.purchased)}</td><td class="num">${num(p.patterns)}</td>
              </tr>`,
            )}</tbody>
          </table></div>`}
  </div>`;
}

// ------------------------------------------------------ funnels and paths

// A web session's events, each named as the funnel names it: a track
// call by its event ('Product Viewed'), a page or screen view by its name
// ('Page: Home'); identify, group and alias calls are not steps.
const EVENT_NAME = `CASE e.type WHEN 'track' THEN e.event
    WHEN 'page' THEN 'Page: ' || coalesce(e.name, 'unnamed')
    WHEN 'screen' THEN 'Screen: ' || coalesce(e.name, 'unnamed') END`;

const SPLITS = [
  { id: "", label: "Nothing", col: "'all'" },
  { id: "device", label: "Device", col: "coalesce(device_type, 'unknown')" },
  { id: "source", label: "Traffic source", col: "coalesce(traffic_source, 'unknown')" },
  { id: "returning", label: "New or returning", col: "CASE WHEN is_returning THEN 'returning' WHEN NOT is_returning THEN 'new' ELSE 'unknown' END" },
];
const DEFAULT_STEPS = ["Product Viewed", "Product Added", "Checkout Started", "Order Completed"];
const MAX_STEPS = 6;
const PATH_TOPS = [5, 10, 20, 50];

// The web sessions that started in the period, and each one's events in
// order (time, then message id), read through the session's lineage
// (`source_ids`, the message ids it was built from).
function sessionEvents(b, names) {
  const [F, T] = [b.from, b.to].map((d) => sqlText(d.toISOString()));
  const inPeriod = `channel = 'web' AND started_at >= ${F} AND started_at < ${T}`;
  const only = names ? `WHERE name IN (${names.map(sqlText).join(", ")})` : "WHERE name IS NOT NULL";
  return {
    inPeriod,
    ctes: `ids AS (SELECT session_id, unnest(source_ids) AS message_id FROM sessions WHERE ${inPeriod}),
    ev0 AS (SELECT DISTINCT ids.session_id, e.message_id, e.occurred_at, ${EVENT_NAME} AS name
      FROM ids JOIN raw_web_events e ON e.message_id = ids.message_id
      WHERE e.event_date >= CAST(${sqlText(b.from.toISOString().slice(0, 10))} AS DATE)),
    ev AS (SELECT session_id, name, row_number() OVER (PARTITION BY session_id ORDER BY occurred_at, message_id) AS seq
      FROM ev0 ${only})`,
  };
}

// Per hour of session start and split value: the sessions, and how many
// reached each step in order (step k: the first step-k event after the
// step k−1 event the session reached).
function funnelQuery(b, steps, split) {
  const s = sessionEvents(b, [...new Set(steps)]);
  const col = (SPLITS.find((x) => x.id === split) || SPLITS[0]).col;
  const reach = steps.map((name, i) =>
    i === 0
      ? `s1 AS (SELECT session_id, min(seq) AS seq FROM ev WHERE name = ${sqlText(name)} GROUP BY session_id)`
      : `s${i + 1} AS (SELECT ev.session_id, min(ev.seq) AS seq FROM ev JOIN s${i} ON ev.session_id = s${i}.session_id
          WHERE ev.name = ${sqlText(name)} AND ev.seq > s${i}.seq GROUP BY ev.session_id)`,
  );
  return `WITH ses AS (SELECT session_id, CAST(to_unixtime(date_trunc('hour', started_at)) AS BIGINT) AS hour, ${col} AS seg
      FROM sessions WHERE ${s.inPeriod}),
    ${s.ctes},
    ${reach.join(",\n    ")}
    SELECT ses.hour, ses.seg, count(*) AS sessions, ${steps.map((_, i) => `count(s${i + 1}.session_id) AS step${i + 1}`).join(", ")}
    FROM ses ${steps.map((_, i) => `LEFT JOIN s${i + 1} ON s${i + 1}.session_id = ses.session_id`).join(" ")}
    GROUP BY ses.hour, ses.seg ORDER BY ses.hour, ses.seg`;
}

// The most common paths from a session's first `start` event to its first
// `end` event after it: the events between, repeats in a row shown once.
function pathsQuery(b, start, end, top) {
  const s = sessionEvents(b, null);
  return `WITH ${s.ctes},
    ev1 AS (SELECT session_id, name, seq, lag(name) OVER (PARTITION BY session_id ORDER BY seq) AS prev FROM ev),
    ev2 AS (SELECT session_id, name, seq FROM ev1 WHERE prev IS NULL OR prev <> name),
    a AS (SELECT session_id, min(seq) AS seq FROM ev2 WHERE name = ${sqlText(start)} GROUP BY session_id),
    z AS (SELECT ev2.session_id, a.seq AS a, min(ev2.seq) AS z FROM ev2 JOIN a ON ev2.session_id = a.session_id
      WHERE ev2.name = ${sqlText(end)} AND ev2.seq > a.seq GROUP BY ev2.session_id, a.seq),
    p AS (SELECT z.session_id, array_to_string(array_agg(ev2.name ORDER BY ev2.seq), ' → ') AS path, count(*) AS steps
      FROM z JOIN ev2 ON ev2.session_id = z.session_id AND ev2.seq > z.a AND ev2.seq < z.z GROUP BY z.session_id)
    SELECT coalesce(p.path, '') AS path, coalesce(max(p.steps), 0) AS steps, count(*) AS sessions,
      sum(count(*)) OVER () AS total
    FROM z LEFT JOIN p ON p.session_id = z.session_id
    GROUP BY 1 ORDER BY sessions DESC, path LIMIT ${Math.max(1, Math.min(50, Number(top) || 10))}`;
}

function eventNamesQuery(b) {
  const [F, T] = [b.from, b.to].map((d) => sqlText(d.toISOString()));
  return `SELECT name, count(*) AS events FROM (SELECT ${EVENT_NAME} AS name FROM raw_web_events e
      WHERE e.occurred_at >= ${F} AND e.occurred_at < ${T}) WHERE name IS NOT NULL
    GROUP BY name ORDER BY events DESC, name LIMIT 200`;
}

// Hourly rows → totals per step, per split value and per day.
function funnelFigures(rows, n, hourly) {
  const stepCols = Array.from({ length: n }, (_, i) => "step" + (i + 1));
  const add = (acc, r) => {
    acc.sessions += n0(r.sessions);
    stepCols.forEach((c, i) => (acc.steps[i] += n0(r[c])));
    return acc;
  };
  const empty = () => ({ sessions: 0, steps: new Array(n).fill(0) });
  const total = rows.reduce(add, empty());
  const segs = new Map();
  for (const r of rows) segs.set(r.seg, add(segs.get(r.seg) || empty(), r));
  const bySeg = [...segs.entries()].map(([seg, v]) => ({ seg, ...v })).sort((a, b) => b.steps[0] - a.steps[0] || (a.seg < b.seg ? -1 : 1));
  const t = buckets(rows, ["step1", "step" + n], hourly);
  const times = [...t.keys()].sort((a, b) => a - b);
  const rate = (v) => (v.step1 ? (v["step" + n] / v.step1) * 100 : null);
  const series = [times, times.map((x) => t.get(x).step1), times.map((x) => t.get(x)["step" + n]), times.map((x) => rate(t.get(x)))];
  return { total, bySeg, series };
}

const pct = (a, b) => (b ? num((a / b) * 100, 1) + " %" : "–");

function FunnelTable({ steps, fig }) {
  const first = fig.total.steps[0];
  return html`<div class="scroll" tabindex="0" role="region" aria-label="The funnel's steps"><table data-testid="funnel">
    <caption class="visually-hidden">Sessions reaching each step, in order</caption>
    <thead><tr><th scope="col">Step</th><th scope="col" class="num">Sessions</th><th scope="col">Of step 1</th>
      <th scope="col" class="num">From the step before</th><th scope="col" class="num">Dropped off</th></tr></thead>
    <tbody>${steps.map((s, i) => {
      const c = fig.total.steps[i];
      const before = i ? fig.total.steps[i - 1] : null;
      const share = first ? c / first : 0;
      return html`<tr data-testid="funnel-step" data-step=${s} data-count=${c}>
        <th scope="row">${i + 1}. ${s}</th><td class="num">${num(c)}</td>
        <td><span class="bar" style=${`width: ${Math.round(share * 60)}%`}></span> ${pct(c, first)}</td>
        <td class="num">${i ? pct(c, before) : "–"}</td>
        <td class="num">${i ? `${num(before - c)} (${pct(before - c, before)})` : "–"}</td>
      </tr>`;
    })}</tbody>
  </table></div>`;
}

function SplitTable({ steps, fig, split }) {
  const label = (SPLITS.find((x) => x.id === split) || SPLITS[0]).label;
  return html`<div class="scroll" tabindex="0" role="region" aria-label=${"The funnel by " + label.toLowerCase()}>
    <table data-testid="funnel-split">
      <caption class="visually-hidden">Sessions reaching each step by ${label.toLowerCase()}</caption>
      <thead><tr><th scope="col">${label}</th>${steps.map((s, i) => html`<th scope="col" class="num">${i + 1}. ${s}</th>`)}<th scope="col" class="num">Conversion</th></tr></thead>
      <tbody>${fig.bySeg.map((g) => html`<tr data-testid="funnel-segment" data-seg=${g.seg} data-counts=${g.steps.join(",")}>
        <th scope="row">${g.seg}</th>${g.steps.map((c) => html`<td class="num">${num(c)}</td>`)}<td class="num">${pct(g.steps[steps.length - 1], g.steps[0])}</td>
      </tr>`)}</tbody>
    </table>
  </div>`;
}

function FunnelChart({ data, hourly }) {
  const box = useRef(null);
  useUPlot(box, { height: 240, minWidth: 260 }, () => {
    const opts = {
      scales: { x: { time: true }, pct: { range: [0, 100] } },
      axes: [{}, { label: "Sessions", size: 60 }, { label: "Conversion %", scale: "pct", side: 1, size: 50, grid: { show: false } }],
      series: [
        {},
        { label: "Reached step 1", stroke: "#1d4ed8", width: 2 },
        { label: "Reached the last step", stroke: "#0f766e", width: 2 },
        { label: "Conversion %", stroke: "#b45309", width: 2, scale: "pct", dash: [6, 4] },
      ],
    };
    return [opts, data];
  }, [data]);
  return html`<figure class="chart-figure">
    <figcaption class="visually-hidden">Sessions reaching the first and last step, and the conversion between them, ${hourly ? "per hour" : "per day"}</figcaption>
    <div class="chart" ref=${box} data-testid="funnel-chart"></div>
  </figure>`;
}

function readFunnelState() {
  const p = new URLSearchParams(location.search);
  const steps = p.getAll("step").filter(Boolean).slice(0, MAX_STEPS);
  return {
    range: rangeOf(p.get("range") || "7d").id,
    steps,
    split: SPLITS.some((x) => x.id === p.get("split")) ? p.get("split") : "",
    start: p.get("path_start") || "",
    end: p.get("path_end") || "",
    top: PATH_TOPS.includes(Number(p.get("paths_top"))) ? Number(p.get("paths_top")) : 10,
  };
}

function writeFunnelState(f) {
  const u = new URL(location.href);
  u.searchParams.delete("step");
  for (const s of f.steps) u.searchParams.append("step", s);
  for (const [k, v] of [["range", f.range], ["split", f.split], ["path_start", f.start], ["path_end", f.end], ["paths_top", f.top === 10 ? "" : String(f.top)]]) {
    if (v) u.searchParams.set(k, v);
    else u.searchParams.delete(k);
  }
  history.replaceState(null, "", u);
}

// Steps to start with when the URL names none: the shop's funnel if its
// events exist, else the three most frequent events.
function defaultSteps(names) {
  const have = names.map((r) => r.name);
  const shop = DEFAULT_STEPS.filter((s) => have.includes(s));
  return shop.length >= 2 ? shop : have.slice(0, 3);
}

function StepPicker({ steps, names, onChange }) {
  const set = (i, v) => onChange(steps.map((s, j) => (j === i ? v : s)));
  const options = (cur) => {
    const list = names.map((r) => r.name);
    return (list.includes(cur) || !cur ? list : [cur, ...list]).map((n) => html`<option value=${n}>${n}</option>`);
  };
  return html`<ol class="steps">
    ${steps.map(
      (s, i) => html`<li>
        <label for=${"step-" + i}>Step ${i + 1}</label>
        <select id=${"step-" + i} value=${s} onChange=${(e) => set(i, e.target.value)}>${options(s)}</select>
        ${steps.length > 2
          ? html`<button class="button" type="button" onClick=${() => onChange(steps.filter((_, j) => j !== i))}>Remove<span class="visually-hidden"> step ${i + 1}</span></button>`
          : null}
      </li>`,
    )}
  </ol>
  ${steps.length < MAX_STEPS
    ? html`<button class="button" type="button" onClick=${() => onChange([...steps, (names[0] || {}).name || ""])}>Add a step</button>`
    : null}`;
}

function Paths({ b, names, f, onChange }) {
  const [rows, setRows] = useState(null);
  const [error, setError] = useState(null);
  useEffect(() => {
    let stop = false;
    setRows(null);
    setError(null);
    if (!f.start || !f.end) return undefined;
    sql(pathsQuery(b, f.start, f.end, f.top)).then(
      (r) => !stop && setRows(r),
      (e) => !stop && setError(e.message),
    );
    return () => {
      stop = true;
    };
  }, [b, f.start, f.end, f.top]);
  const opts = names.map((r) => html`<option value=${r.name}>${r.name}</option>`);
  const total = rows && rows[0] ? n0(rows[0].total) : 0;
  return html`<section class="panel wide" aria-labelledby="h-paths" data-testid="paths" data-state=${rows ? "ready" : error ? "error" : "loading"}>
    <h2 id="h-paths">Most common paths</h2>
    <div class="controls">
      <label for="path-start">From</label>
      <select id="path-start" value=${f.start} onChange=${(e) => onChange({ start: e.target.value })}>${opts}</select>
      <label for="path-end">to</label>
      <select id="path-end" value=${f.end} onChange=${(e) => onChange({ end: e.target.value })}>${opts}</select>
      <label for="path-top">Show</label>
      <select id="path-top" value=${f.top} onChange=${(e) => onChange({ top: Number(e.target.value) })}>
        ${PATH_TOPS.map((n) => html`<option value=${n}>top ${n}</option>`)}
      </select>
    </div>
    <p class="meta">In each session that has both: the events from its first “${f.start}” to the first “${f.end}” after it (in order; an event repeated in a row counts once). The ${f.top} most common, of ${num(total)} session${total === 1 ? "" : "s"}.</p>
    ${error ? html`<p class="error" role="alert">Could not load the paths: ${error}. Pick other events or reload the page.</p>` : null}
    ${!rows
      ? !error && html`<p class="status" role="status">Loading the paths…</p>`
      : !rows.length
        ? html`<p class="status">No session went from “${f.start}” to “${f.end}” in this period.</p>`
        : html`<ol class="list paths" data-testid="path-list">${rows.map(
            (r) => html`<li data-testid="path" data-path=${r.path} data-sessions=${n0(r.sessions)}>
              <strong>${num(r.sessions)}</strong> <span class="meta">(${pct(n0(r.sessions), total)})</span>:${" "}
              ${f.start} → ${r.path ? html`<span>${r.path}</span> → ` : html`<em>straight</em> → `}${f.end}
            </li>`,
          )}</ol>`}
  </section>`;
}

async function loadFunnel(b, steps, split) {
  const rows = await sql(funnelQuery(b, steps, split));
  return { rows, fig: funnelFigures(rows, steps.length, b.hours <= 48) };
}

function Funnels() {
  const [f, setF] = useState(readFunnelState());
  const [b, setB] = useState(() => ({ ...bounds(rangeOf(f.range)), hours: rangeOf(f.range).hours }));
  const [names, setNames] = useState(null);
  const [data, setData] = useState(null);
  const [error, setError] = useState(null);
  const update = (patch) => {
    const next = { ...f, ...patch };
    writeFunnelState(next);
    setF(next);
    if (patch.range) setB({ ...bounds(rangeOf(patch.range)), hours: rangeOf(patch.range).hours });
  };
  useEffect(() => {
    let stop = false;
    setNames(null);
    sql(eventNamesQuery(b)).then(
      (r) => {
        if (stop) return;
        setNames(r);
        const steps = f.steps.length >= 2 ? f.steps : defaultSteps(r);
        update({ steps, start: f.start || steps[0] || "", end: f.end || steps[steps.length - 1] || "" });
      },
      (e) => !stop && setError(e.message),
    );
    return () => {
      stop = true;
    };
  }, [b]);
  const key = JSON.stringify([f.steps, f.split]);
  useEffect(() => {
    let stop = false;
    if (!names || f.steps.length < 2) return undefined;
    setData(null);
    setError(null);
    loadFunnel(b, f.steps, f.split).then(
      (d) => !stop && setData(d),
      (e) => !stop && setError(e.message),
    );
    return () => {
      stop = true;
    };
  }, [b, names, key]);
  const last = f.steps.length;
  return html`<div class="page" data-testid="funnels" data-state=${data ? "ready" : error ? "error" : "loading"}
      data-from=${b.from.toISOString()} data-to=${b.to.toISOString()}>
    <div class="toolbar">
      <h1>Funnels and paths</h1>
      <div class="controls"><${RangePicker} value=${f.range} onChange=${(id) => update({ range: id })} /></div>
    </div>
    <p class="meta help" data-testid="funnel-help">A funnel counts <strong>web sessions that started in the period</strong>. A session reaches step 1 when it has step 1's event; it reaches step <em>k</em> when, after the event that took it to step <em>k</em>−1, it has step <em>k</em>'s event (other events may come between; events are ordered by time). Page views are named “Page: ” and the page's name. Conversion is the share of step 1's sessions that reach the last step.</p>
    ${!names
      ? !error && html`<p class="status" role="status">Loading the events…</p>`
      : !names.length
        ? html`<p class="status">No web events in this period: send some to the collector, or pick a longer range.</p>`
        : html`<div class="grid">
          <section class="panel" aria-labelledby="h-funnel">
            <h2 id="h-funnel">The funnel</h2>
            ${error ? html`<p class="error" role="alert">Could not compute the funnel: ${error}. Change the steps or reload the page.</p>` : null}
            ${!data
              ? !error && html`<p class="status" role="status">Computing the funnel…</p>`
              : html`<p class="big" data-testid="funnel-conversion">${pct(data.fig.total.steps[last - 1], data.fig.total.steps[0])}</p>
                <p class="meta">of the ${num(data.fig.total.steps[0])} sessions that reached step 1 reached step ${last}; ${num(data.fig.total.sessions)} web sessions started in the period.</p>
                <${FunnelTable} steps=${f.steps} fig=${data.fig} />`}
          </section>
          <section class="panel" aria-labelledby="h-steps">
            <h2 id="h-steps">Steps</h2>
            <${StepPicker} steps=${f.steps} names=${names} onChange=${(steps) => update({ steps })} />
            <p class="controls">
              <label for="split">Split by</label>
              <select id="split" value=${f.split} onChange=${(e) => update({ split: e.target.value })}>
                ${SPLITS.map((x) => html`<option value=${x.id}>${x.label}</option>`)}
              </select>
            </p>
          </section>
          ${data && f.split ? html`<section class="panel wide" aria-labelledby="h-split"><h2 id="h-split">Split</h2><${SplitTable} steps=${f.steps} fig=${data.fig} split=${f.split} /></section>` : null}
          ${data
            ? html`<section class="panel wide" aria-labelledby="h-time">
                <h2 id="h-time">Over time (by the session's start, ${b.hours <= 48 ? "per hour" : "per day"}, your time zone)</h2>
                ${data.fig.series[0].length ? html`<${FunnelChart} data=${data.fig.series} hourly=${b.hours <= 48} />` : html`<p class="status">No sessions in this period.</p>`}
              </section>`
            : null}
          <${Paths} b=${b} names=${names} f=${f} onChange=${update} />
        </div>`}
  </div>`;
}


// ---------------------------------------------------------- SQL console

const GRID_PAGE = 50;
const short = (q) => (q.length > 90 ? q.slice(0, 90) + "…" : q);

// A chart for the result: a line over time when the first column is a
// date or time, bars when it is text; the numeric columns after it.
function chartOf(rows) {
  if (rows.length < 2) return null;
  const cols = Object.keys(rows[0]);
  if (cols.length < 2) return null;
  const numeric = cols.slice(1).filter((c) => rows.every((r) => r[c] == null || typeof r[c] === "number"));
  if (!numeric.length) return null;
  const first = rows.map((r) => r[cols[0]]);
  const isTime = first.every((v) => typeof v === "string" && /^\d{4}-\d{2}-\d{2}/.test(v));
  const isText = first.every((v) => typeof v === "string");
  if (!isTime && !isText) return null;
  return { kind: isTime ? "line" : "bar", x: cols[0], ys: numeric.slice(0, 4) };
}

const COLOURS = ["#1d4ed8", "#0f766e", "#b45309", "#7c3aed"];

function ResultChart({ rows, spec }) {
  const box = useRef(null);
  useUPlot(box, { height: 260, minWidth: 260 }, () => {
    const xs = spec.kind === "line" ? rows.map((r) => Date.parse(r[spec.x]) / 1000) : rows.map((_, i) => i);
    const order = xs.map((_, i) => i).sort((a, b) => xs[a] - xs[b]);
    const data = [order.map((i) => xs[i]), ...spec.ys.map((c) => order.map((i) => rows[i][c]))];
    const bars = spec.kind === "bar" ? uPlot.paths.bars({ size: [0.6, 60] }) : undefined;
    const opts = {
      // Bars start at zero, so their lengths compare.
      scales: { x: { time: spec.kind === "line" }, y: bars ? { range: (u, lo, hi) => [Math.min(0, lo), hi > 0 ? hi * 1.05 : 1] } : {} },
      // Bars' labels at least 90 px apart (every other one on a phone).
      axes: [spec.kind === "bar" ? { space: 90, values: (u, ticks) => ticks.map((t) => String(rows[order[t]] ? rows[order[t]][spec.x] : "").slice(0, 14)) } : {}, {}],
      series: [{}, ...spec.ys.map((c, i) => ({ label: c, stroke: COLOURS[i], fill: bars ? COLOURS[i] + "99" : undefined, paths: bars, width: 2 }))],
    };
    return [opts, data];
  }, [rows, spec]);
  return html`<figure class="chart-figure"><figcaption class="visually-hidden">${spec.ys.join(", ")} by ${spec.x}</figcaption>
    <div class="chart" ref=${box} data-testid="result-chart"></div></figure>`;
}

function Grid({ rows }) {
  const [page, setPage] = useState(0);
  useEffect(() => setPage(0), [rows]);
  const cols = Object.keys(rows[0] || {});
  const pages = Math.max(1, Math.ceil(rows.length / GRID_PAGE));
  const shown = rows.slice(page * GRID_PAGE, (page + 1) * GRID_PAGE);
  const cell = (v) => (v == null ? "∅" : typeof v === "object" ? JSON.stringify(v) : typeof v === "number" ? v.toLocaleString(locale, { maximumFractionDigits: 6 }) : String(v));
  return html`<div class="panel scroll" tabindex="0" role="region" aria-label="Result rows">
    <table data-testid="result-grid">
      <caption class="visually-hidden">The query's result</caption>
      <thead><tr>${cols.map((c) => html`<th scope="col">${c}</th>`)}</tr></thead>
      <tbody>${shown.map((r) => html`<tr data-testid="result-row">${cols.map((c) => html`<td class=${typeof r[c] === "number" ? "num" : ""}>${cell(r[c])}</td>`)}</tr>`)}</tbody>
    </table>
    ${pages > 1
      ? html`<p class="controls">
          <button class="button" type="button" disabled=${page === 0} onClick=${() => setPage(page - 1)}>Previous rows</button>
          <span>Rows ${num(page * GRID_PAGE + 1)}–${num(Math.min(rows.length, (page + 1) * GRID_PAGE))} of ${num(rows.length)}</span>
          <button class="button" type="button" disabled=${page >= pages - 1} onClick=${() => setPage(page + 1)}>Next rows</button>
        </p>`
      : null}
  </div>`;
}

function Tables({ onPick }) {
  const [cols, setCols] = useState(null);
  useEffect(() => {
    sql(`SELECT table_name, column_name, data_type FROM information_schema.columns
      WHERE table_schema = 'public' ORDER BY table_name, ordinal_position`).then(setCols, () => setCols([]));
  }, []);
  if (!cols) return html`<p class="status">Loading the tables…</p>`;
  const tables = [...new Set(cols.map((c) => c.table_name))];
  return html`<nav aria-label="Tables and columns" class="tables" data-testid="tables">
    ${tables.map(
      (t) => html`<details>
        <summary>${t}</summary>
        <button class="linkish" type="button" onClick=${() => onPick(`SELECT * FROM ${t} LIMIT 100`)}>Query ${t}</button>
        <ul>${cols.filter((c) => c.table_name === t).map((c) => html`<li><code>${c.column_name}</code> <span class="meta">${c.data_type}</span></li>`)}</ul>
      </details>`,
    )}
  </nav>`;
}

const canExport = (me) => ["analyst", "admin", "owner"].includes(me && me.user && me.user.role);

// The query's whole result as a file, through the exports API: started,
// its status checked every second, then a link to download it.
function Export({ q, me }) {
  const [job, setJob] = useState(null);
  const [error, setError] = useState(null);
  useEffect(() => {
    setJob(null);
    setError(null);
  }, [q]);
  useEffect(() => {
    if (!job || job.status !== "running") return undefined;
    const t = setTimeout(async () => {
      try {
        setJob(await get("/api/v1/exports/" + encodeURIComponent(job.id)));
      } catch (e) {
        setError(e.message);
      }
    }, 1000);
    return () => clearTimeout(t);
  }, [job]);
  if (!canExport(me)) return html`<p class="meta">Exporting a result needs the analyst role or above.</p>`;
  const start = async (format) => {
    setError(null);
    setJob(null);
    try {
      setJob(await send("POST", "/api/v1/exports", { sql: q, format }));
    } catch (e) {
      setError(e.message);
    }
  };
  const running = job && job.status === "running";
  return html`<div class="controls" data-testid="export" data-status=${job ? job.status : ""}>
    <span>Export the whole result:</span>
    <button class="button" type="button" disabled=${running} onClick=${() => start("csv")}>CSV</button>
    <button class="button" type="button" disabled=${running} onClick=${() => start("parquet")}>Parquet</button>
    <span role="status">
      ${running ? "Exporting…" : null}
      ${job && job.status === "succeeded"
        ? html`<a data-testid="export-download" href=${"/api/v1/exports/" + encodeURIComponent(job.id) + "/download"} download="">Download the ${job.format === "csv" ? "CSV" : "Parquet"} file (${num(job.rows)} rows)</a>`
        : null}
      ${job && (job.status === "failed" || job.status === "cancelled") ? html`<span class="error">The export ${job.status}: ${job.error || "no reason given"}</span>` : null}
    </span>
    ${error ? html`<p class="error" role="alert">Could not export: ${error}</p>` : null}
  </div>`;
}

// The user's saved queries (`/api/v1/saved-queries`): open one into the
// editor, rename it, delete it (asked twice).
function SavedItem({ q, onOpen, onChanged, setError }) {
  const [renaming, setRenaming] = useState(false);
  const [name, setName] = useState(q.name);
  const [confirming, setConfirming] = useState(false);
  const path = "/api/v1/saved-queries/" + encodeURIComponent(q.id);
  const rename = async (e) => {
    e.preventDefault();
    try {
      await send("PATCH", path, { name });
      setRenaming(false);
      onChanged();
    } catch (err) {
      setError(`Could not rename “${q.name}”: ${err.message}`);
    }
  };
  const remove = async () => {
    try {
      await call(path, { method: "DELETE" });
      onChanged();
    } catch (err) {
      setError(`Could not delete “${q.name}”: ${err.message}`);
    }
  };
  if (renaming) {
    return html`<li data-testid="saved-query" data-name=${q.name}><form class="controls" onSubmit=${rename}>
      <label for=${"rename-" + q.id} class="visually-hidden">New name for ${q.name}</label>
      <input id=${"rename-" + q.id} value=${name} maxlength="200" required onInput=${(e) => setName(e.target.value)} />
      <button class="button" type="submit">Save name</button>
      <button class="button" type="button" onClick=${() => setRenaming(false)}>Cancel</button></form></li>`;
  }
  return html`<li data-testid="saved-query" data-name=${q.name}>
    <button class="linkish" type="button" title=${q.sql} onClick=${() => onOpen(q.sql)}>${q.name}</button>
    <span class="controls">
      <button class="button" type="button" aria-label=${"Rename " + q.name} onClick=${() => { setName(q.name); setRenaming(true); }}>Rename</button>
      ${confirming
        ? html`<span>Delete it?</span>
          <button class="button" type="button" aria-label=${"Yes, delete " + q.name} onClick=${remove}>Yes, delete</button>
          <button class="button" type="button" onClick=${() => setConfirming(false)}>Keep</button>`
        : html`<button class="button" type="button" aria-label=${"Delete " + q.name} onClick=${() => setConfirming(true)}>Delete</button>`}
    </span></li>`;
}

function SavedQueries({ q, onOpen }) {
  const [list, setList] = useState(null);
  const [name, setName] = useState("");
  const [error, setError] = useState(null);
  const [saved, setSaved] = useState(null);
  const load = async () => {
    try {
      setList((await get("/api/v1/saved-queries")).data);
    } catch (err) {
      setList([]);
      setError("Could not load your saved queries: " + err.message);
    }
  };
  useEffect(() => {
    load();
  }, []);
  const save = async (e) => {
    e.preventDefault();
    setError(null);
    setSaved(null);
    try {
      const r = await send("POST", "/api/v1/saved-queries", { name, sql: q });
      setSaved(r.saved_query.name);
      setName("");
      await load();
    } catch (err) {
      setError("Could not save the query: " + err.message);
    }
  };
  const changed = () => {
    setError(null);
    setSaved(null);
    load();
  };
  return html`<section class="panel" data-testid="saved-queries" data-state=${list ? "ready" : "loading"}><h2>Saved queries</h2>
    <form class="controls" onSubmit=${save}>
      <label for="save-name">Save the editor's query as</label>
      <input id="save-name" value=${name} maxlength="200" required placeholder="Orders by day" onInput=${(e) => setName(e.target.value)} />
      <button class="button" type="submit" disabled=${!q.trim()}>Save query</button>
    </form>
    <p role="status" class="meta">${saved ? `Saved as “${saved}”.` : ""}</p>
    ${error ? html`<p class="error" role="alert">${error}</p>` : null}
    ${!list
      ? html`<p class="status">Loading your saved queries…</p>`
      : list.length
        ? html`<ul class="list saved">${list.map((s) => html`<${SavedItem} key=${s.id} q=${s} onOpen=${onOpen} onChanged=${changed} setError=${setError} />`)}</ul>`
        : html`<p class="meta">No saved queries yet: name the query in the editor and save it. Only you see them.</p>`}
  </section>`;
}

// The queries the user ran (`/api/v1/query-history`): kept on the server
// per user, so they follow them to any browser; one click puts one back in
// the editor. `stamp` changes after each run, which reloads the list.
function History({ stamp, onOpen }) {
  const [list, setList] = useState(null);
  const [error, setError] = useState(null);
  const [confirming, setConfirming] = useState(false);
  const load = async () => {
    try {
      setList((await get("/api/v1/query-history")).data);
      setError(null);
    } catch (err) {
      setList([]);
      setError("Could not load your query history: " + err.message);
    }
  };
  useEffect(() => {
    load();
  }, [stamp]);
  const clear = async () => {
    setConfirming(false);
    try {
      await call("/api/v1/query-history", { method: "DELETE" });
      await load();
    } catch (err) {
      setError("Could not clear your history: " + err.message);
    }
  };
  return html`<section class="panel" data-testid="history" data-state=${list ? "ready" : "loading"}><h2>History</h2>
    ${error ? html`<p class="error" role="alert">${error}</p>` : null}
    ${!list
      ? html`<p class="status">Loading your history…</p>`
      : list.length
        ? html`<ul class="list history">${list.map((h) => html`<li data-testid="history-entry" data-sql=${h.sql} data-ok=${h.ok ? "yes" : "no"}><button class="linkish" type="button"
            title=${h.sql} onClick=${() => onOpen(h.sql)}><code>${short(h.sql)}</code></button>
            ${h.ok ? null : html`<span class="error history-error" title=${h.error}>Failed: ${short(h.error || "")}</span>`}
            <time class="meta" datetime=${h.ran_at} title=${utc(new Date(h.ran_at))}>${when(new Date(h.ran_at))}</time></li>`)}</ul>
          <p class="controls">${confirming
            ? html`<span>Forget all ${num(list.length)}?</span>
              <button class="button" type="button" onClick=${clear}>Yes, clear</button>
              <button class="button" type="button" onClick=${() => setConfirming(false)}>Keep</button>`
            : html`<button class="button" type="button" onClick=${() => setConfirming(true)}>Clear history</button>`}</p>`
        : html`<p class="meta">The queries you run are kept here, most recent first (the last 50), on any browser you sign in from. Only you see them.</p>`}
  </section>`;
}

function Console({ me }) {
  const [q, setQ] = useState(urlParam("sql", "SELECT event_date, count(*) AS events FROM raw_web_events GROUP BY event_date ORDER BY event_date"));
  const [res, setRes] = useState(null);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState(null);
  const [ran, setRan] = useState(0);
  const run = async (e) => {
    if (e) e.preventDefault();
    setBusy(true);
    setError(null);
    const started = performance.now();
    let failed = null;
    try {
      const rows = await sql(q);
      setRes({ rows, q, ms: performance.now() - started });
      setUrlParam("sql", q);
    } catch (err) {
      failed = err.message || String(err);
      setRes(null);
      setError(failed);
    }
    // Kept in the user's history on the server, a failed run with its
    // error; a failure to record it does not hide the result.
    await send("POST", "/api/v1/query-history", { sql: q, error: failed }).catch(() => null);
    setRan((n) => n + 1);
    setBusy(false);
  };
  const spec = res ? chartOf(res.rows) : null;
  return html`<div class="page" data-testid="console" data-state=${busy ? "running" : res ? "ready" : error ? "error" : "idle"}>
    <div class="toolbar"><h1>SQL</h1></div>
    <div class="grid">
      <div>
        <form onSubmit=${run} class="panel">
          <label for="sql">Query (your organization's tables; read-only)</label>
          <textarea id="sql" rows="6" spellcheck="false" value=${q} onInput=${(e) => setQ(e.target.value)}
            onKeyDown=${(e) => (e.ctrlKey || e.metaKey) && e.key === "Enter" && run(e)}></textarea>
          <p class="controls"><button class="button primary" type="submit" disabled=${busy}>${busy ? "Running…" : "Run"}</button>
            <span class="meta">Ctrl+Enter runs it.</span></p>
        </form>
        ${error ? html`<p class="error" role="alert">The query failed: ${error}</p>` : null}
        ${res
          ? html`<p class="meta" role="status">${num(res.rows.length)} row${res.rows.length === 1 ? "" : "s"} in ${num(res.ms / 1000, 2)} s</p>
            <${Export} q=${res.q} me=${me} />
            ${spec ? html`<${ResultChart} rows=${res.rows} spec=${spec} />` : null}
            ${res.rows.length ? html`<${Grid} rows=${res.rows} />` : html`<p class="status">No rows.</p>`}`
          : null}
      </div>
      <div>
        <${SavedQueries} q=${q} onOpen=${setQ} />
        <${History} stamp=${ran} onOpen=${setQ} />
        <section class="panel"><h2>Tables</h2><${Tables} onPick=${setQ} /></section>
      </div>
    </div>
  </div>`;
}

// -------------------------------------------------------------- billing

const isMonth = (m) => /^\d{4}-\d{2}$/.test(m || "");

async function loadUsage(month) {
  const months = (
    await sql(`SELECT DISTINCT substr(CAST(usage_date AS VARCHAR), 1, 7) AS m FROM usage_daily ORDER BY m DESC`)
  ).map((r) => r.m);
  const m = months.includes(month) ? month : months[0];
  if (!m) return { months, m: null, rows: [] };
  const [y, mo] = m.split("-").map(Number);
  const next = mo === 12 ? `${y + 1}-01` : `${y}-${String(mo + 1).padStart(2, "0")}`;
  const [rows, invoice] = await Promise.all([
    sql(`SELECT CAST(usage_date AS VARCHAR) AS day, events, sessions, interactions, patterns,
      ai_input_tokens, ai_output_tokens, amount_micros, currency
    FROM usage_daily WHERE usage_date >= CAST(${sqlText(m + "-01")} AS DATE) AND usage_date < CAST(${sqlText(next + "-01")} AS DATE)
    ORDER BY usage_date`),
    get(`/api/v1/invoice?month=${encodeURIComponent(m)}`),
  ]);
  return { months, m, rows, invoice };
}

const USAGE_COLS = [
  ["events", "Events"],
  ["sessions", "Sessions"],
  ["interactions", "Interactions"],
  ["patterns", "Patterns"],
  ["ai_input_tokens", "AI input tokens"],
  ["ai_output_tokens", "AI output tokens"],
];

const ITEM_WORDS = {
  events: "Events",
  interactions: "Interactions",
  patterns: "Patterns (daily findings)",
  ai_input_tokens: "AI input tokens",
  ai_output_tokens: "AI output tokens",
};

// The month's invoice with its line items (`GET /api/v1/invoice`).
function Invoice({ inv }) {
  const money = (micros) => num(micros / 1e6, 6) + " " + inv.currency;
  return html`<section class="panel" aria-labelledby="invoice-title" data-testid="invoice" data-total-micros=${inv.total_micros}>
    <h2 id="invoice-title">Invoice for ${inv.month}</h2>
    <p class="meta">${day(inv.period_start)} – ${day(addDays(inv.period_end, -1))} · ${num(inv.days)} day${inv.days === 1 ? "" : "s"} with usage · ${num(inv.usage.sessions)} sessions metered, not priced</p>
    <div class="scroll" tabindex="0" role="region" aria-label="Invoice line items">
    <table>
      <caption class="visually-hidden">Line items of the invoice for ${inv.month}</caption>
      <thead><tr><th scope="col">Item</th><th scope="col" class="num">Quantity</th><th scope="col" class="num">Unit price</th><th scope="col" class="num">Amount</th></tr></thead>
      <tbody>${inv.lines.map(
        (l) => html`<tr data-testid="invoice-line" data-item=${l.item} data-quantity=${l.quantity} data-per=${l.per}
            data-unit-price-micros=${l.unit_price_micros} data-amount-micros=${l.amount_micros}>
          <td>${ITEM_WORDS[l.item] || l.item}</td><td class="num">${num(l.quantity)}</td>
          <td class="num">${money(l.unit_price_micros)}${l.per > 1 ? ` per ${num(l.per)}` : ""}</td><td class="num">${money(l.amount_micros)}</td></tr>`,
      )}</tbody>
      <tfoot><tr><th scope="row" colspan="3">Total</th><td class="num" data-testid="invoice-total">${money(inv.total_micros)}</td></tr></tfoot>
    </table></div>
  </section>`;
}

function Billing() {
  const [month, setMonth] = useState(isMonth(urlParam("month", "")) ? urlParam("month", "") : "");
  const [data, setData] = useState(null);
  const [error, setError] = useState(null);
  useEffect(() => {
    let stop = false;
    loadUsage(month).then(
      (d) => !stop && setData(d),
      (e) => !stop && setError(e.message),
    );
    return () => {
      stop = true;
    };
  }, [month]);
  const pick = (m) => {
    setUrlParam("month", m);
    setMonth(m);
  };
  const total = (c) => (data ? data.rows.reduce((t, r) => t + n0(r[c]), 0) : 0);
  const currencies = data ? [...new Set(data.rows.map((r) => r.currency))] : [];
  const money = (micros) => num(micros / 1e6, 6) + (currencies.length === 1 ? " " + currencies[0] : "");
  return html`<div class="page" data-testid="billing" data-state=${data ? "ready" : error ? "error" : "loading"}
      data-month=${data && data.m ? data.m : ""} data-total-micros=${data ? total("amount_micros") : ""}>
    <div class="toolbar">
      <h1>Usage and billing</h1>
      ${data && data.months.length
        ? html`<div class="controls"><label for="month">Month</label>
            <select id="month" value=${data.m} onChange=${(e) => pick(e.target.value)}>
              ${data.months.map((m) => html`<option value=${m}>${m}</option>`)}
            </select></div>`
        : null}
    </div>
    ${error ? html`<p class="error" role="alert">Could not load the usage: ${error}. Reload the page to try again.</p>` : null}
    ${!data
      ? !error && html`<p class="status" role="status">Loading the usage…</p>`
      : !data.m
        ? html`<p class="status">No usage yet: the billing job rolls it up each day.</p>`
        : html`<p class="big" data-testid="month-total">${money(total("amount_micros"))}</p>
          <p class="meta">The month so far: the sum of its days' priced amounts. The invoice below prices the month's quantities line by line (as <code>crow billing report --month ${data.m}</code> does), so its total can differ by the rounding of per-1,000 lines.</p>
          <${Invoice} inv=${data.invoice} />
          <h2>Usage per day</h2>
          <div class="panel scroll" tabindex="0" role="region" aria-label="Usage per day">
          <table data-testid="usage-table">
            <caption class="visually-hidden">Usage per day in ${data.m}</caption>
            <thead><tr><th scope="col">Day (UTC)</th>${USAGE_COLS.map(([, l]) => html`<th scope="col" class="num">${l}</th>`)}<th scope="col" class="num">Amount</th></tr></thead>
            <tbody>${data.rows.map((r) => html`<tr data-testid="usage-row" data-day=${r.day} data-amount-micros=${n0(r.amount_micros)}>
              <td>${day(r.day)}</td>${USAGE_COLS.map(([c]) => html`<td class="num">${num(r[c])}</td>`)}<td class="num">${money(n0(r.amount_micros))}</td></tr>`)}</tbody>
            <tfoot><tr><th scope="row">Total</th>${USAGE_COLS.map(([c]) => html`<td class="num">${num(total(c))}</td>`)}<td class="num">${money(total("amount_micros"))}</td></tr></tfoot>
          </table></div>`}
  </div>`;
}

// ------------------------------------------------------------- patterns

const PERIODS = [
  { id: "day", label: "Day" },
  { id: "week", label: "Week" },
  { id: "month", label: "Month" },
  { id: "year", label: "Year" },
  { id: "all", label: "All time" },
];

const isDate = (s) => /^\d{4}-\d{2}-\d{2}$/.test(s || "");

// A date (YYYY-MM-DD, a UTC calendar day) in words, in the user's locale.
const day = (s) => new Date(s + "T00:00:00Z").toLocaleDateString(locale, { timeZone: "UTC", dateStyle: "medium" });

function periodWords(kind, start, end) {
  if (kind === "all") return "All time";
  if (kind === "day") return day(start);
  const last = new Date(new Date(end + "T00:00:00Z").getTime() - 86400000).toISOString().slice(0, 10);
  return `${day(start)} – ${day(last)}`;
}

async function loadPatterns(kind, start) {
  const starts = (
    await sql(`SELECT DISTINCT CAST(period_start AS VARCHAR) AS s FROM patterns
      WHERE period_kind = ${sqlText(kind)} ORDER BY s DESC`)
  ).map((r) => r.s);
  const at = starts.includes(start) ? start : starts[0];
  if (!at) return { kind, starts, at: null, rows: [] };
  const rows = await sql(`SELECT pattern_id, kind, segment, title, description, significance, support,
      provisional, product_ids, evidence, CAST(period_end AS VARCHAR) AS period_end
    FROM patterns WHERE period_kind = ${sqlText(kind)} AND period_start = CAST(${sqlText(at)} AS DATE)
    ORDER BY significance DESC, pattern_id LIMIT 50`);
  return { kind, starts, at, rows };
}

function parseEvidence(text) {
  try {
    return JSON.parse(text || "{}");
  } catch (_) {
    return {};
  }
}

// The value and its baseline: per-day counts (mean ± 1 sd) or rates.
function evidenceFigures(ev) {
  const st = ev.statistics || {};
  if (typeof st.value === "number" && typeof st.baseline_mean === "number") {
    return { value: st.value, base: st.baseline_mean, sd: st.baseline_sd || 0, unit: "per day", fmt: (v) => num(v, 1) };
  }
  if (st.value && st.baseline && typeof st.value.rate === "number") {
    return { value: st.value.rate, base: st.baseline.rate, sd: 0, unit: "rate", fmt: (v) => num(v * 100, 1) + " %" };
  }
  return null;
}

// Dates (YYYY-MM-DD) from `start` for `n` days.
function addDays(s, n) {
  return new Date(new Date(s + "T00:00:00Z").getTime() + n * 86400000).toISOString().slice(0, 10);
}

// The days the parts a finding was confirmed from cover ("day:2026-11-03",
// "week:2026-11-02", …).
function partDays(labels) {
  const out = new Set();
  for (const l of labels || []) {
    const [k, s] = String(l).split(":");
    if (!isDate(s)) continue;
    let end = addDays(s, k === "week" ? 7 : 1);
    if (k === "month" || k === "year") {
      const d = new Date(s + "T00:00:00Z");
      if (k === "month") d.setUTCMonth(d.getUTCMonth() + 1);
      else d.setUTCFullYear(d.getUTCFullYear() + 1);
      end = d.toISOString().slice(0, 10);
    }
    for (let d = s; d < end; d = addDays(d, 1)) out.add(d);
  }
  return out;
}

// Which days of the period carried a finding: the days of the parts it was
// confirmed from, else the period's days on its side of the baseline.
function carriedDays(ev, series, period, f) {
  const parts = partDays(ev.from_periods);
  if (parts.size) return parts;
  const up = Number(ev.z) >= 0;
  const out = new Set();
  if (!f) return out;
  for (const d of series.days) {
    if (d.date < period.start || d.date >= period.end || d.value == null) continue;
    if (up ? d.value > f.base : d.value < f.base) out.add(d.date);
  }
  return out;
}

// The metric day by day over the days around the period, against its
// baseline (mean ± 1 sd, or the baseline rate); the period shaded, its own
// figure a line across it, the days that carried the finding filled.
function EvidenceChart({ ev, series, period }) {
  const f = evidenceFigures(ev);
  if (!series) return html`<p class="meta" role="status">Drawing the days…</p>`;
  const days = series.days;
  if (!days.length) return html`<p class="meta">No days to draw for this finding.</p>`;
  const rate = series.measure === "rate";
  const fmt = rate ? (v) => num(v * 100, 1) + " %" : (v) => num(v, 1);
  const carried = carriedDays(ev, series, period, f);
  const W = 640, H = 190, L = 52, R = 10, T = 10, B = 28;
  const vals = days.map((d) => d.value).filter((v) => v != null);
  const top = Math.max(...vals, f ? f.value : 0, f ? f.base + f.sd : 0, 1e-9) * 1.1;
  const step = (W - L - R) / days.length;
  const x = (i) => L + (i + 0.5) * step;
  const y = (v) => T + (1 - v / top) * (H - T - B);
  const inPeriod = days.map((d, i) => [d, i]).filter(([d]) => d.date >= period.start && d.date < period.end);
  const p0 = inPeriod.length ? inPeriod[0][1] : -1;
  const p1 = inPeriod.length ? inPeriod[inPeriod.length - 1][1] : -1;
  let path = "";
  let pen = false;
  days.forEach((d, i) => {
    if (d.value == null) {
      pen = false;
      return;
    }
    path += `${pen ? "L" : "M"}${x(i).toFixed(1)},${y(d.value).toFixed(1)}`;
    pen = true;
  });
  const label = `${series.metric}${series.segment ? " (" + series.segment + ")" : ""} per day from ${day(days[0].date)} to ${day(days[days.length - 1].date)}`
    + (f ? `: this period ${fmt(f.value)} against a baseline of ${fmt(f.base)}${f.sd ? " ± " + fmt(f.sd) : ""}` : "")
    + (carried.size ? `; carried by ${carried.size} day${carried.size === 1 ? "" : "s"}` : "");
  return html`<svg class="evidence" data-testid="evidence-chart" data-metric=${series.metric} data-segment=${series.segment || ""}
      data-measure=${series.measure} viewBox=${`0 0 ${W} ${H}`} role="img" aria-label=${label} width="100%">
    ${p0 >= 0 ? html`<rect data-testid="period-band" x=${x(p0) - step / 2} y=${T} width=${(p1 - p0 + 1) * step} height=${H - T - B} fill="#eff6ff"></rect>` : null}
    ${f && f.sd ? html`<rect x=${L} width=${W - L - R} y=${y(f.base + f.sd)} height=${Math.max(0, y(Math.max(0, f.base - f.sd)) - y(f.base + f.sd))} fill="#e5e7eb" opacity="0.7"></rect>` : null}
    ${f ? html`<line data-testid="baseline" data-value=${f.base} x1=${L} x2=${W - R} y1=${y(f.base)} y2=${y(f.base)} stroke="#6b7280" stroke-dasharray="4 3"></line>` : null}
    ${f && p0 >= 0 ? html`<line data-testid="period-value" data-value=${f.value} x1=${x(p0) - step / 2} x2=${x(p1) + step / 2} y1=${y(f.value)} y2=${y(f.value)} stroke="#b45309" stroke-width="2"></line>` : null}
    <path d=${path} fill="none" stroke="#1d4ed8" stroke-width="1.5"></path>
    ${days.map((d, i) =>
      d.value == null
        ? null
        : html`<circle data-testid="day-point" data-date=${d.date} data-value=${d.value} data-k=${d.k} data-n=${d.n}
            data-carried=${carried.has(d.date) ? "1" : "0"} cx=${x(i)} cy=${y(d.value)} r=${carried.has(d.date) ? 4 : 2.5}
            fill=${carried.has(d.date) ? "#b45309" : "#1d4ed8"}><title>${day(d.date)}: ${fmt(d.value)}${rate ? ` (${num(d.k)} of ${num(d.n)})` : ""}</title></circle>`,
    )}
    <line x1=${L} x2=${W - R} y1=${H - B} y2=${H - B} stroke="#9ca3af"></line>
    <text x=${L - 4} y=${T + 10} font-size="11" fill="#374151" text-anchor="end">${fmt(top / 1.1)}</text>
    <text x=${L - 4} y=${H - B} font-size="11" fill="#374151" text-anchor="end">0</text>
    <text x=${L} y=${H - 8} font-size="11" fill="#374151">${day(days[0].date)}</text>
    <text x=${W - R} y=${H - 8} font-size="11" fill="#374151" text-anchor="end">${day(days[days.length - 1].date)}</text>
  </svg>
  <p class="meta legend"><span class="key key-day"></span> per day · <span class="key key-base"></span> baseline${f && f.sd ? " (band: ± 1 sd)" : ""} · <span class="key key-period"></span> this period${f ? ` (${fmt(f.value)})` : ""} · <span class="key key-carried"></span> days that carried it</p>
  ${carried.size ? html`<p class="meta" data-testid="carried">Days that carried it: ${[...carried].sort().map(day).join(", ")}</p>` : null}`;
}

function Pattern({ p, series, period }) {
  const ev = parseEvidence(p.evidence);
  const products = Array.isArray(p.product_ids) ? p.product_ids : [];
  return html`<li class="panel pattern" data-testid="pattern" data-pattern-id=${p.pattern_id} data-days=${series ? "ready" : "loading"}>
    <h2>${p.title}</h2>
    <p class="meta">
      ${p.segment ? html`<span class="tag">${p.segment.replace("=", ": ")}</span> ` : "All traffic · "}
      ${p.kind} · significance z = ${num(Math.abs(n0(p.significance)), 1)}${ev.p_value != null ? ` (p ${ev.p_value < 1e-4 ? "< 0.0001" : "= " + num(ev.p_value, 4)})` : ""}
      · ${num(p.support)} supporting${p.provisional ? " · provisional: the period is not over" : ""}
    </p>
    <p>${p.description}</p>
    <${EvidenceChart} ev=${ev} series=${series} period=${period} />
    ${products.length ? html`<p class="meta">Products: ${products.join(", ")}</p>` : null}
  </li>`;
}

function Patterns() {
  const [kind, setKind] = useState(PERIODS.some((x) => x.id === urlParam("period", "")) ? urlParam("period", "") : "week");
  const [start, setStart] = useState(urlParam("start", ""));
  const [data, setData] = useState(null);
  const [error, setError] = useState(null);
  const [days, setDays] = useState(null);
  useEffect(() => {
    let stop = false;
    setError(null);
    setDays(null);
    loadPatterns(kind, start)
      .then((d) => {
        if (stop) return;
        setData(d);
        if (!d.at) return;
        get(`/api/v1/insights/days?period_kind=${encodeURIComponent(kind)}&period_start=${encodeURIComponent(d.at)}`)
          .then((r) => !stop && setDays(r))
          .catch((e) => !stop && setError(e.message));
      })
      .catch((e) => !stop && setError(e.message));
    return () => {
      stop = true;
    };
  }, [kind, start]);
  const seriesOf = (id) => (days ? days.patterns.find((x) => x.pattern_id === id) || { days: [], metric: "", measure: "count" } : null);
  const pickKind = (k) => {
    setUrlParam("period", k);
    setUrlParam("start", "");
    setData(null);
    setStart("");
    setKind(k);
  };
  const goTo = (s) => {
    setUrlParam("start", s);
    setStart(s);
  };
  const i = data && data.at ? data.starts.indexOf(data.at) : -1;
  const older = i >= 0 ? data.starts[i + 1] : null;
  const newer = i > 0 ? data.starts[i - 1] : null;
  const end = data && data.rows[0] ? data.rows[0].period_end : null;
  return html`<div class="page" data-testid="patterns" data-state=${data ? "ready" : error ? "error" : "loading"} data-days-to=${days ? days.to : ""}>
    <div class="toolbar">
      <h1>Patterns</h1>
      <div class="controls">
        <label for="period">Period</label>
        <select id="period" value=${kind} onChange=${(e) => pickKind(e.target.value)}>
          ${PERIODS.map((x) => html`<option value=${x.id}>${x.label}</option>`)}
        </select>
        <button class="button" type="button" disabled=${!older} onClick=${() => goTo(older)}>← Earlier</button>
        <button class="button" type="button" disabled=${!newer} onClick=${() => goTo(newer)}>Later →</button>
      </div>
    </div>
    ${error ? html`<p class="error" role="alert">Could not load the patterns: ${error}. Reload the page to try again.</p>` : null}
    ${!data
      ? !error && html`<p class="status" role="status">Loading the patterns…</p>`
      : !data.at
        ? html`<p class="status">No ${kind === "all" ? "all-time" : kind} patterns yet: the patterns job finds them once there are enough days of data to compare with.</p>`
        : html`<p class="meta" data-testid="period-shown">${end ? periodWords(kind, data.at, end) : day(data.at)} · ${data.rows.length} finding${data.rows.length === 1 ? "" : "s"}, strongest first</p>
          <ul class="list patterns">${data.rows.map((p) => html`<${Pattern} p=${p} series=${seriesOf(p.pattern_id)}
            period=${{ start: data.at, end: p.period_end }} />`)}</ul>`}
  </div>`;
}

const send = (method, path, body) =>
  call(path, { method, headers: { "Content-Type": "application/json" }, body: JSON.stringify(body || {}) });

// A secret or one-time link, shown once with what to do with it.
function Shown({ what, value, testid }) {
  return value
    ? html`<p class="notice" role="status" data-testid=${testid}>${what} (shown once; copy it now):${" "}<code data-testid=${testid + "-value"}>${value}</code></p>`
    : null;
}

function OrgSettings() {
  const [org, setOrg] = useState(null);
  const [saved, setSaved] = useState(null);
  const [error, setError] = useState(null);
  useEffect(() => {
    get("/api/v1/organization").then(setOrg, (e) => setError(e.message));
  }, []);
  if (!org) return error ? html`<p class="error" role="alert">${error}</p>` : html`<p class="status">Loading…</p>`;
  const save = async (e) => {
    e.preventDefault();
    setError(null);
    try {
      const o = await send("PATCH", "/api/v1/organization", { name: org.name, domain: org.domain || "", context: org.context || "" });
      setOrg(o);
      setSaved(new Date());
    } catch (err) {
      setError(err.message);
    }
  };
  const field = (k) => (e) => setOrg({ ...org, [k]: e.target.value });
  return html`<form class="panel" onSubmit=${save} data-testid="org-settings">
    <h2>Organization</h2>
    <label for="org-name">Name</label>
    <input id="org-name" value=${org.name} onInput=${field("name")} required />
    <label for="org-domain">Web domain</label>
    <input id="org-domain" value=${org.domain || ""} onInput=${field("domain")} />
    <label for="org-context">About the brand (given to the AI that writes interactions and answers)</label>
    <textarea id="org-context" rows="4" value=${org.context || ""} onInput=${field("context")}></textarea>
    <p class="controls"><button class="button primary" type="submit">Save</button>
      ${saved ? html`<span class="meta" role="status" data-testid="org-saved">Saved.</span>` : null}</p>
    ${error ? html`<p class="error" role="alert">Not saved: ${error}</p>` : null}
  </form>`;
}

const ROLES = ["viewer", "analyst", "admin", "owner"];

function Members({ me }) {
  const [users, setUsers] = useState(null);
  const [error, setError] = useState(null);
  const [invite, setInvite] = useState({ email: "", role: "viewer" });
  const [link, setLink] = useState(null);
  const load = () => get("/api/v1/users").then((r) => setUsers(r.data), (e) => setError(e.message));
  useEffect(load, []);
  const act = async (method, path, body) => {
    setError(null);
    try {
      const r = await send(method, path, body);
      await load();
      return r;
    } catch (err) {
      setError(err.message);
      return null;
    }
  };
  const onInvite = async (e) => {
    e.preventDefault();
    const r = await act("POST", "/api/v1/users", invite);
    if (r) {
      setLink(location.origin + "/login?token=" + encodeURIComponent(r.invitation_token));
      setInvite({ email: "", role: invite.role });
    }
  };
  const self = me.user && me.user.id;
  return html`<section class="panel" data-testid="members">
    <h2>Members</h2>
    ${users
      ? html`<div class="scroll"><table><thead><tr><th scope="col">E-mail</th><th scope="col">Role</th><th scope="col">Status</th><th scope="col"><span class="visually-hidden">Actions</span></th></tr></thead>
        <tbody>${users.map((u) => html`<tr data-testid="member" data-email=${u.email}>
          <td>${u.email}</td>
          <td><label class="visually-hidden" for=${"role-" + u.id}>Role of ${u.email}</label>
            <select id=${"role-" + u.id} value=${u.role} disabled=${u.id === self}
              onChange=${(e) => act("PATCH", "/api/v1/users/" + u.id, { role: e.target.value })}>
              ${ROLES.map((r) => html`<option value=${r}>${r}</option>`)}</select></td>
          <td>${u.status}</td>
          <td>${u.id === self
            ? html`<span class="meta">you</span>`
            : html`<button class="button" type="button"
                onClick=${() => act("PATCH", "/api/v1/users/" + u.id, { disabled: u.status !== "disabled" })}>
                ${u.status === "disabled" ? "Enable" : "Disable"}</button>`}</td>
        </tr>`)}</tbody></table></div>`
      : html`<p class="status">Loading…</p>`}
    <form onSubmit=${onInvite} class="inline">
      <label for="invite-email">Invite by e-mail</label>
      <input id="invite-email" type="email" required value=${invite.email} onInput=${(e) => setInvite({ ...invite, email: e.target.value })} />
      <label for="invite-role">Role</label>
      <select id="invite-role" value=${invite.role} onChange=${(e) => setInvite({ ...invite, role: e.target.value })}>
        ${ROLES.map((r) => html`<option value=${r}>${r}</option>`)}</select>
      <button class="button primary" type="submit">Invite</button>
    </form>
    <${Shown} what="Send this sign-up link to the new member; it works once, for 24 hours" value=${link} testid="invite-link" />
    ${error ? html`<p class="error" role="alert">${error}</p>` : null}
  </section>`;
}

function ApiKeys() {
  const [keys, setKeys] = useState(null);
  const [error, setError] = useState(null);
  const [form, setForm] = useState({ name: "", scope: "read" });
  const [secret, setSecret] = useState(null);
  const load = () => get("/api/v1/keys").then((r) => setKeys(r.data), (e) => setError(e.message));
  useEffect(load, []);
  const create = async (e) => {
    e.preventDefault();
    setError(null);
    try {
      const k = await send("POST", "/api/v1/keys", form);
      setSecret(k.secret);
      await load();
    } catch (err) {
      setError(err.message);
    }
  };
  const revoke = async (id) => {
    setError(null);
    try {
      await send("POST", "/api/v1/keys/" + id + "/revoke");
      await load();
    } catch (err) {
      setError(err.message);
    }
  };
  const day = (t) => (t ? new Date(t).toLocaleDateString(locale, { dateStyle: "medium" }) : "never");
  return html`<section class="panel" data-testid="api-keys">
    <h2>API keys</h2>
    ${keys
      ? html`<div class="scroll"><table><thead><tr><th scope="col">Name</th><th scope="col">Scope</th><th scope="col">Starts with</th><th scope="col">Expires</th><th scope="col"><span class="visually-hidden">Actions</span></th></tr></thead>
        <tbody>${keys.map((k) => html`<tr data-testid="api-key" data-id=${k.id} data-revoked=${k.revoked_at ? "yes" : "no"}>
          <td>${k.name || html`<span class="meta">unnamed</span>`}</td><td>${k.scope}</td><td><code>${k.prefix}…</code></td>
          <td>${day(k.expires_at)}</td>
          <td>${k.revoked_at
            ? html`<span class="meta">revoked</span>`
            : html`<button class="button" type="button" onClick=${() => revoke(k.id)}>Revoke</button>`}</td>
        </tr>`)}</tbody></table></div>`
      : html`<p class="status">Loading…</p>`}
    <form onSubmit=${create} class="inline">
      <label for="key-name">New key's name</label>
      <input id="key-name" value=${form.name} onInput=${(e) => setForm({ ...form, name: e.target.value })} />
      <label for="key-scope">Scope</label>
      <select id="key-scope" value=${form.scope} onChange=${(e) => setForm({ ...form, scope: e.target.value })}>
        <option value="read">read</option><option value="export">export</option><option value="admin">admin</option></select>
      <button class="button primary" type="submit">Create key</button>
    </form>
    <${Shown} what="The new key's secret" value=${secret} testid="key-secret" />
    ${error ? html`<p class="error" role="alert">${error}</p>` : null}
  </section>`;
}

// The collector's write key (what a site's tracking snippet and server
// send with their events): its first characters; a new one is shown once;
// the current one keeps working for the grace chosen (none: refused at
// once, within the collector's 30 s key cache).
function WriteKey() {
  const [key, setKey] = useState(null);
  const [error, setError] = useState(null);
  const [grace, setGrace] = useState("24");
  const [secret, setSecret] = useState(null);
  const load = () => get("/api/v1/organization/write-key").then(setKey, (e) => setError(e.message));
  useEffect(load, []);
  const rotate = async (e) => {
    e.preventDefault();
    setError(null);
    try {
      const k = await send("POST", "/api/v1/organization/write-key/rotate", { grace_hours: Number(grace) });
      setSecret(k.write_key);
      setKey(k);
    } catch (err) {
      setError(err.message);
    }
  };
  const until = key && key.previous_key_valid_until;
  return html`<section class="panel" data-testid="write-key">
    <h2>Write key</h2>
    <p class="meta">The collector accepts events sent with this key (in the tracking snippet and your servers' calls to <code>/v1/track</code>).</p>
    ${key
      ? html`<p>Current key: <code data-testid="write-key-prefix">${key.prefix}…</code>
          ${until ? html` · the previous key works until <time datetime=${until} title=${utc(new Date(until))}>${when(new Date(until))}</time>` : null}</p>`
      : error ? null : html`<p class="status">Loading…</p>`}
    <form onSubmit=${rotate} class="inline">
      <label for="write-key-grace">The current key keeps working</label>
      <select id="write-key-grace" value=${grace} onChange=${(e) => setGrace(e.target.value)}>
        <option value="24">for 24 hours</option><option value="168">for 7 days</option><option value="0">no longer: revoke it now</option></select>
      <button class="button primary" type="submit">New write key</button>
    </form>
    <${Shown} what="The new write key" value=${secret} testid="write-key-secret" />
    ${error ? html`<p class="error" role="alert">${error}</p>` : null}
  </section>`;
}

// Every row of a paged REST listing (`next_cursor` followed to the end).
async function listAll(path) {
  const rows = [];
  let cursor = null;
  for (let page = 0; page < 50; page++) {
    const sep = path.includes("?") ? "&" : "?";
    const r = await get(path + sep + "limit=100" + (cursor ? "&cursor=" + encodeURIComponent(cursor) : ""));
    rows.push(...r.data);
    cursor = r.next_cursor;
    if (!cursor) break;
  }
  return rows;
}

// A small list an admin adds to and removes from: its rows, reloaded after
// each change, and the error of the last action in words.
function useManagedList(path) {
  const [rows, setRows] = useState(null);
  const [error, setError] = useState(null);
  const load = () => listAll(path).then(setRows, (e) => setError(e.message));
  useEffect(() => {
    load();
  }, []);
  const act = async (method, url, body) => {
    setError(null);
    try {
      const r = await send(method, url, body);
      await load();
      return r || true;
    } catch (err) {
      setError(err.message);
      return null;
    }
  };
  return { rows, error, act };
}

// The organization's CCTV cameras (`/api/v1/cameras`): the ids their
// transcripts carry, the store, a name and where each looks.
function Cameras() {
  const { rows, error, act } = useManagedList("/api/v1/cameras");
  const empty = { camera_id: "", store_id: "", name: "", location: "" };
  const [form, setForm] = useState(empty);
  const field = (k) => (e) => setForm({ ...form, [k]: e.target.value });
  const add = async (e) => {
    e.preventDefault();
    const body = { camera_id: form.camera_id, store_id: form.store_id, name: form.name };
    if (form.location.trim()) body.location = form.location;
    if (await act("POST", "/api/v1/cameras", body)) setForm(empty);
  };
  return html`<section class="panel" data-testid="cameras">
    <h2>Cameras</h2>
    <p class="meta">The CCTV cameras of your stores. Their ids are the <code>camera_id</code> and <code>store_id</code> their transcripts carry.</p>
    ${rows
      ? rows.length
        ? html`<div class="scroll"><table><thead><tr><th scope="col">Camera id</th><th scope="col">Store</th><th scope="col">Name</th><th scope="col">Where it looks</th><th scope="col"><span class="visually-hidden">Actions</span></th></tr></thead>
          <tbody>${rows.map((c) => html`<tr data-testid="camera" data-id=${c.camera_id}>
            <td><code>${c.camera_id}</code></td><td>${c.store_id}</td><td>${c.name}</td><td>${c.location || html`<span class="meta">—</span>`}</td>
            <td><button class="button" type="button"
              onClick=${() => act("DELETE", "/api/v1/cameras/" + encodeURIComponent(c.camera_id))}>Remove<span class="visually-hidden"> camera ${c.camera_id}</span></button></td>
          </tr>`)}</tbody></table></div>`
        : html`<p class="status" data-testid="no-cameras">No cameras yet: add the first below.</p>`
      : error ? null : html`<p class="status">Loading…</p>`}
    <form onSubmit=${add} class="inline">
      <label for="camera-id">Camera id</label>
      <input id="camera-id" required maxlength="64" value=${form.camera_id} onInput=${field("camera_id")} />
      <label for="camera-store">Store id</label>
      <input id="camera-store" required maxlength="64" value=${form.store_id} onInput=${field("store_id")} />
      <label for="camera-name">Name</label>
      <input id="camera-name" required maxlength="200" value=${form.name} onInput=${field("name")} />
      <label for="camera-location">Where it looks</label>
      <input id="camera-location" maxlength="200" value=${form.location} onInput=${field("location")} />
      <button class="button primary" type="submit">Add camera</button>
    </form>
    ${error ? html`<p class="error" role="alert">${error}</p>` : null}
  </section>`;
}

const SOCIAL_KINDS = [
  ["rss", "RSS or Atom feed (its URL)"],
  ["mastodon", "Mastodon (#tag or @account)"],
  ["reddit", "Reddit (r/sub or a search)"],
  ["hackernews", "Hacker News (a search)"],
  ["youtube", "YouTube (a channel or playlist id)"],
  ["bluesky", "Bluesky (@handle or a search)"],
  ["web", "A web page (its URL)"],
];

// The social sources the collector reads (`/api/v1/social/sources`).
function SocialSources() {
  const { rows, error, act } = useManagedList("/api/v1/social/sources");
  const empty = { kind: "rss", target: "", schedule: "" };
  const [form, setForm] = useState(empty);
  const field = (k) => (e) => setForm({ ...form, [k]: e.target.value });
  const add = async (e) => {
    e.preventDefault();
    const body = { kind: form.kind, target: form.target };
    if (form.schedule.trim()) body.schedule = form.schedule;
    if (await act("POST", "/api/v1/social/sources", body)) setForm({ ...empty, kind: form.kind });
  };
  const last = (s) =>
    s.last_run_at
      ? html`<time datetime=${s.last_run_at} title=${utc(new Date(s.last_run_at))}>${when(new Date(s.last_run_at))}</time>: ${s.last_status || "?"}${s.last_error ? " (" + s.last_error + ")" : ""}`
      : html`<span class="meta">not read yet</span>`;
  return html`<section class="panel" data-testid="social-sources">
    <h2>Social sources</h2>
    <p class="meta">What the social collector reads for your brand: feeds, hashtags, accounts, searches.</p>
    ${rows
      ? rows.length
        ? html`<div class="scroll"><table><thead><tr><th scope="col">Kind</th><th scope="col">Target</th><th scope="col">Schedule (UTC)</th><th scope="col">Last read</th><th scope="col"><span class="visually-hidden">Actions</span></th></tr></thead>
          <tbody>${rows.map((s) => html`<tr data-testid="social-source" data-id=${s.source_id} data-target=${s.target}>
            <td>${s.kind}</td><td class="wrap">${s.target}</td><td><code>${s.schedule}</code></td><td>${last(s)}</td>
            <td><button class="button" type="button"
              onClick=${() => act("DELETE", "/api/v1/social/sources/" + encodeURIComponent(s.source_id))}>Remove<span class="visually-hidden"> source ${s.target}</span></button></td>
          </tr>`)}</tbody></table></div>`
        : html`<p class="status" data-testid="no-social-sources">No social sources yet: add the first below.</p>`
      : error ? null : html`<p class="status">Loading…</p>`}
    <form onSubmit=${add} class="inline">
      <label for="social-kind">Kind</label>
      <select id="social-kind" value=${form.kind} onChange=${field("kind")}>
        ${SOCIAL_KINDS.map(([k, label]) => html`<option value=${k}>${label}</option>`)}</select>
      <label for="social-target">Target</label>
      <input id="social-target" required maxlength="2000" value=${form.target} onInput=${field("target")} />
      <label for="social-schedule">Schedule (cron, UTC; empty: hourly; off: manual)</label>
      <input id="social-schedule" value=${form.schedule} placeholder="0 * * * *" onInput=${field("schedule")} />
      <button class="button primary" type="submit">Add source</button>
    </form>
    ${error ? html`<p class="error" role="alert">${error}</p>` : null}
  </section>`;
}

function Settings({ me }) {
  return html`<div class="page" data-testid="settings">
    <div class="toolbar"><h1>Settings</h1></div>
    <${OrgSettings} />
    <${Members} me=${me} />
    <${ApiKeys} />
    <${WriteKey} />
    <${SocialSources} />
    <${Cameras} />
  </div>`;
}

// ------------------------------------------------------------ the shell

const isAdmin = (me) => ["owner", "admin"].includes(me.user && me.user.role);

function route() {
  const p = location.pathname.replace(/\/+$/, "");
  if (p === "/app/settings") return "settings";
  if (p === "/app/patterns") return "patterns";
  if (p === "/app/interactions") return "interactions";
  if (p === "/app/products") return "products";
  if (p === "/app/funnels") return "funnels";
  if (p === "/app/sql") return "sql";
  if (p === "/app/billing") return "billing";
  return "overview";
}

const BELL_PAGE = 20;

// One notification: read or not, with its link when it is a dashboard page.
function Notice({ n, onRead }) {
  const d = new Date(n.created_at);
  const unread = !n.read_at;
  return html`<li class=${unread ? "unread" : ""} data-testid="notification" data-id=${n.id} data-read=${unread ? "no" : "yes"}>
    <div class="meta">${unread ? html`<span class="tag">Unread</span> ` : null}<time datetime=${d.toISOString()} title=${utc(d)}>${when(d)}</time></div>
    <strong>${n.title}</strong>
    ${n.body ? html`<p>${n.body}</p>` : null}
    ${n.link && n.link.startsWith("/app") ? html`<p><a href=${n.link}>Open</a></p>` : n.link ? html`<p class="meta">See <code>${n.link}</code></p>` : null}
    ${unread ? html`<button class="button" type="button" onClick=${() => onRead(n.id)}>Mark read<span class="visually-hidden">: ${n.title}</span></button>` : null}
  </li>`;
}

function Bell() {
  const [unread, setUnread] = useState(null);
  const [open, setOpen] = useState(false);
  const [list, setList] = useState(null);
  const [next, setNext] = useState(null);
  const [error, setError] = useState(null);
  const [at, setAt] = useState(null);
  const button = useRef(null);
  const box = useRef(null);
  // Under the bell, as near its right edge as the screen allows (the bar
  // wraps on narrow screens, so the bell is not always on the right).
  const place = () => {
    if (!button.current) return;
    const r = button.current.getBoundingClientRect();
    const width = Math.min(416, window.innerWidth - 16);
    const left = Math.max(8, Math.min(r.right - width, window.innerWidth - width - 8));
    setAt({ top: r.bottom + 6 + "px", left: left + "px", width: width + "px" });
  };
  const refresh = async () => {
    const r = await get("/api/v1/notifications?limit=1");
    setUnread(n0(r.unread));
  };
  useEffect(() => {
    let stop = false;
    let timer = null;
    async function tick() {
      try {
        if (!stop) await refresh();
      } catch (_) {
        // The bell is not worth an error of its own.
      }
      if (!stop) timer = setTimeout(tick, 60000);
    }
    tick();
    return () => {
      stop = true;
      clearTimeout(timer);
    };
  }, []);
  const load = async (cursor) => {
    setError(null);
    try {
      const r = await get(`/api/v1/notifications?limit=${BELL_PAGE}${cursor ? "&cursor=" + encodeURIComponent(cursor) : ""}`);
      setUnread(n0(r.unread));
      setList((cur) => (cursor && cur ? cur.concat(r.data) : r.data));
      setNext(r.next_cursor || null);
    } catch (e) {
      setError(e.message);
    }
  };
  const close = (focus) => {
    setOpen(false);
    if (focus && button.current) button.current.focus();
  };
  useEffect(() => {
    if (!open) return undefined;
    load(null);
    place();
    window.addEventListener("resize", place);
    const onKey = (e) => e.key === "Escape" && close(true);
    const onClick = (e) => box.current && !box.current.contains(e.target) && close(false);
    document.addEventListener("keydown", onKey);
    document.addEventListener("mousedown", onClick);
    return () => {
      document.removeEventListener("keydown", onKey);
      document.removeEventListener("mousedown", onClick);
      window.removeEventListener("resize", place);
    };
  }, [open]);
  const read = async (id) => {
    setError(null);
    try {
      await send("POST", `/api/v1/notifications/${encodeURIComponent(id)}/read`);
      const at = new Date().toISOString();
      setList((cur) => (cur || []).map((n) => (id === "all" || n.id === id ? { ...n, read_at: n.read_at || at } : n)));
      await refresh();
    } catch (e) {
      setError(e.message);
    }
  };
  const label = unread == null ? "Notifications" : `Notifications: ${unread} unread`;
  return html`<div class="bell-box" ref=${box}>
    <button type="button" class="bell" ref=${button} data-testid="bell" data-unread=${unread == null ? "" : unread}
        aria-expanded=${open ? "true" : "false"} aria-controls="notifications" title=${label} onClick=${() => (open ? close(false) : setOpen(true))}>
      <svg aria-hidden="true" width="18" height="18" viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="2"><path d="M6 8a6 6 0 0 1 12 0c0 7 3 9 3 9H3s3-2 3-9"/><path d="M10.3 21a1.94 1.94 0 0 0 3.4 0"/></svg>
      <span class="visually-hidden">Notifications: </span><span class="badge">${unread == null ? "…" : unread}</span><span class="visually-hidden"> unread</span>
    </button>
    ${open
      ? html`<section id="notifications" class="bell-panel" style=${at || {}} aria-label="Notifications" data-testid="notifications">
          <div class="toolbar"><h2>Notifications</h2>
            <button class="button" type="button" disabled=${!unread} onClick=${() => read("all")}>Mark all read</button></div>
          ${error ? html`<p class="error" role="alert">${error}. Try again in a moment.</p>` : null}
          ${!list
            ? !error && html`<p class="status" role="status">Loading…</p>`
            : !list.length
              ? html`<p class="status">No notifications: failed jobs, new sign-ins and finished exports are told here.</p>`
              : html`<ul class="list">${list.map((n) => html`<${Notice} n=${n} onRead=${read} />`)}</ul>`}
          ${next ? html`<p><button class="button" type="button" onClick=${() => load(next)}>Older notifications</button></p>` : null}
        </section>`
      : null}
  </div>`;
}

// ------------------------------------------------------------- Ask CROW

// POST `body` to `path` asking for server-sent events; `onEvent(name,
// data)` for each. Errors before the stream are thrown as for `call`.
async function streamed(path, body, onEvent) {
  const headers = { "Content-Type": "application/json", Accept: "text/event-stream", "X-CSRF-Token": csrfToken() };
  let r;
  try {
    r = await fetch(path, { method: "POST", headers, body: JSON.stringify(body), credentials: "same-origin" });
  } catch (_) {
    throw new Problem(0, "The server could not be reached. Check that crow serve is running, then ask again.");
  }
  if (r.status === 401) {
    toSignIn();
    throw new Problem(401, "Your session has ended: sign in again.");
  }
  if (!r.ok) {
    let detail = null;
    try {
      detail = (await r.json()).detail;
    } catch (_) {
      detail = null;
    }
    if (r.status === 429) detail = "Ask CROW is busy with your other questions: wait a moment and ask again";
    throw new Problem(r.status, detail || `the server answered HTTP ${r.status}`);
  }
  const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += value.replace(/\r\n/g, "\n");
    let end;
    while ((end = buf.indexOf("\n\n")) >= 0) {
      const frame = buf.slice(0, end);
      buf = buf.slice(end + 2);
      let name = "message";
      const data = [];
      for (const line of frame.split("\n")) {
        if (line.startsWith("event:")) name = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (!data.length) continue; // a keep-alive
      try {
        onEvent(name, JSON.parse(data.join("\n")));
      } catch (_) {
        // Not JSON: not one of ours.
      }
    }
  }
}

const CHAT_ROWS = 20;
const CHAT_PAGE = 20;

// Words for a problem that stopped an answer, with what to do.
function problemWords(e) {
  const detail = (e && (e.detail || e.message)) || "something went wrong";
  if (e && e.code === "question_not_supported") return `Ask CROW cannot answer this yet: ${detail}. Try “top products by views” or “conversion by device”.`;
  if (e && e.code === "ai_failed") return `The AI provider failed: ${detail}. Ask again in a moment.`;
  return `No answer: ${detail}.`;
}

// The answer's chart (`{kind, x, y}` from the API) as the console draws
// it, when it is a line or bars of numbers.
function chatChart(chart, rows) {
  if (!chart || !["bar", "line"].includes(chart.kind) || !chart.x || rows.length < 2) return null;
  const ys = (chart.y || []).filter((c) => rows.every((r) => r[c] == null || typeof r[c] === "number"));
  if (!ys.length) return null;
  const kind = chart.kind === "line" && rows.every((r) => /^\d{4}-\d{2}-\d{2}/.test(String(r[chart.x]))) ? "line" : "bar";
  return { kind, x: chart.x, ys: ys.slice(0, 4) };
}

function ChatRows({ a }) {
  const rows = a.rows || [];
  const cols = a.columns && a.columns.length ? a.columns : Object.keys(rows[0] || {});
  const shown = rows.slice(0, CHAT_ROWS);
  const total = a.row_count == null ? rows.length : a.row_count;
  const cell = (v) => (v == null ? "∅" : typeof v === "object" ? JSON.stringify(v) : typeof v === "number" ? v.toLocaleString(locale, { maximumFractionDigits: 6 }) : String(v));
  if (!rows.length) return html`<p class="meta">The query returned no rows.</p>`;
  return html`<div class="scroll chat-rows" tabindex="0" role="region" aria-label="Rows of the answer">
    <table data-testid="chat-rows">
      <caption class="visually-hidden">The rows behind the answer</caption>
      <thead><tr>${cols.map((c) => html`<th scope="col">${c}</th>`)}</tr></thead>
      <tbody>${shown.map((r) => html`<tr data-testid="chat-row">${cols.map((c) => html`<td class=${typeof r[c] === "number" ? "num" : ""}>${cell(r[c])}</td>`)}</tr>`)}</tbody>
    </table>
    ${total > shown.length || a.truncated
      ? html`<p class="meta">${num(shown.length)} of ${num(total)}${a.truncated ? "+" : ""} rows shown: run the SQL in the console for all of them.</p>`
      : null}
  </div>`;
}

// One answer: its SQL, rows, chart and words (or why there are none).
function Answer({ a, live }) {
  const rows = a.rows || [];
  // Memoized: a new spec would draw the chart again on every keystroke.
  const spec = useMemo(() => (a.answer != null ? chatChart(a.chart, rows) : null), [a]);
  const state = a.error ? "error" : live ? "streaming" : "done";
  return html`<li class="chat-a" data-testid="chat-answer" data-state=${state} data-sql=${a.sql || ""}>
    ${a.sql
      ? html`<details open=${live}><summary>SQL${a.repairs ? ` (repaired ${a.repairs}×)` : ""}</summary><pre data-testid="chat-sql"><code>${a.sql}</code></pre></details>`
      : live && !a.error
        ? html`<p class="meta">Writing the SQL…</p>`
        : null}
    ${a.rows ? html`<${ChatRows} a=${a} />` : live && a.sql && !a.error ? html`<p class="meta">Running it…</p>` : null}
    ${spec ? html`<${ResultChart} rows=${rows} spec=${spec} />` : null}
    ${a.answer != null ? html`<p class="chat-words" data-testid="chat-answer-text">${a.answer}</p>` : null}
    ${a.error ? html`<p class="error" data-testid="chat-error">${problemWords(a.error)}</p>` : null}
  </li>`;
}

function ChatList({ chats, next, error, onOpen, onMore }) {
  if (error) return html`<p class="error" role="alert">Your chats could not be listed: ${error}. Close and open the panel to try again.</p>`;
  if (!chats) return html`<p class="status" role="status">Loading your chats…</p>`;
  if (!chats.length) return html`<p class="meta">No chats yet: ask a question below to start one.</p>`;
  return html`<ul class="list chat-list" data-testid="chat-list">
      ${chats.map((c) => {
        const d = new Date(c.updated_at);
        return html`<li><button class="linkish" type="button" data-testid="chat-item" data-id=${c.id} onClick=${() => onOpen(c.id)}>${c.title}</button>
          <div class="meta"><time datetime=${d.toISOString()} title=${utc(d)}>${when(d)}</time> · ${num(c.message_count / 2)} question${c.message_count === 2 ? "" : "s"}</div></li>`;
      })}
    </ul>
    ${next ? html`<p><button class="button" type="button" onClick=${onMore}>Older chats</button></p>` : null}`;
}

// The open chat's title with rename and delete.
function ChatHead({ chat, onRenamed, onDeleted, onBack }) {
  const [mode, setMode] = useState(null);
  const [title, setTitle] = useState(chat.title);
  const [error, setError] = useState(null);
  const field = useRef(null);
  useEffect(() => {
    setMode(null);
    setTitle(chat.title);
    setError(null);
  }, [chat.id]);
  useEffect(() => {
    if (mode === "rename" && field.current) field.current.focus();
  }, [mode]);
  const rename = async (e) => {
    e.preventDefault();
    setError(null);
    try {
      const r = await send("PATCH", `/api/v1/chats/${encodeURIComponent(chat.id)}`, { title });
      setMode(null);
      onRenamed(r.chat);
    } catch (err) {
      setError(err.message);
    }
  };
  const remove = async () => {
    setError(null);
    try {
      await call(`/api/v1/chats/${encodeURIComponent(chat.id)}`, { method: "DELETE" });
      onDeleted(chat.id);
    } catch (err) {
      setError(err.message);
    }
  };
  return html`<div class="chat-head">
    <p><button class="linkish" type="button" onClick=${onBack}>← All chats</button></p>
    ${mode === "rename"
      ? html`<form class="inline" onSubmit=${rename}>
          <label for="chat-title-input">Chat title</label>
          <input id="chat-title-input" ref=${field} maxlength="200" required value=${title} onInput=${(e) => setTitle(e.target.value)} />
          <button class="button primary" type="submit">Save</button>
          <button class="button" type="button" onClick=${() => setMode(null)}>Cancel</button>
        </form>`
      : html`<h3 data-testid="chat-title">${chat.title}</h3>
        ${mode === "delete"
          ? html`<p class="notice" role="alert">Delete this chat and its answers for good?${" "}
              <button class="button" type="button" data-testid="chat-delete-confirm" onClick=${remove}>Delete</button>${" "}
              <button class="button" type="button" onClick=${() => setMode(null)}>Keep it</button></p>`
          : html`<p class="controls">
              <button class="button" type="button" onClick=${() => setMode("rename")}>Rename<span class="visually-hidden"> the chat</span></button>
              <button class="button" type="button" onClick=${() => setMode("delete")}>Delete<span class="visually-hidden"> the chat</span></button></p>`}`}
    ${error ? html`<p class="error" role="alert">${error}. Try again.</p>` : null}
  </div>`;
}

// A chat's questions and answers, and the one being answered.
function ChatMessages({ messages, live }) {
  const q = (text) => html`<li class="chat-q"><span class="visually-hidden">You asked: </span>${text}</li>`;
  return html`<ol class="list chat-messages" data-testid="chat-messages">
    ${messages.map((m) => (m.role === "user" ? q(m.question) : html`<${Answer} a=${m} />`))}
    ${live ? html`${q(live.question)}<${Answer} a=${live} live=${true} />` : null}
  </ol>`;
}

// What a stream's events make of the answer being written.
function liveStep(a, name, d) {
  if (name === "sql") return { ...a, sql: d.sql };
  if (name === "repair") return { ...a, repairs: (a.repairs || 0) + 1 };
  if (name === "rows") return { ...a, rows: d.rows, columns: d.columns, truncated: d.truncated, row_count: (d.rows || []).length };
  if (name === "answer") return { ...a, sql: d.sql, rows: d.rows, columns: d.columns, truncated: d.truncated, row_count: d.rows.length, chart: d.chart, answer: d.answer };
  if (name === "error") return { ...a, error: { code: d.code, detail: d.detail || d.title } };
  return a;
}

// The side panel: the user's chats, the open one and the question box.
function ChatPanel({ onClose }) {
  const [chats, setChats] = useState(null);
  const [next, setNext] = useState(null);
  const [listError, setListError] = useState(null);
  const [open, setOpen] = useState(null); // {chat, messages}
  const [live, setLive] = useState(null); // {question, ...answer so far}
  const [question, setQuestion] = useState("");
  const [status, setStatus] = useState("");
  const box = useRef(null);
  const input = useRef(null);
  const load = async (cursor) => {
    setListError(null);
    try {
      const r = await get(`/api/v1/chats?limit=${CHAT_PAGE}${cursor ? "&cursor=" + encodeURIComponent(cursor) : ""}`);
      setChats((cur) => (cursor && cur ? cur.concat(r.data) : r.data));
      setNext(r.next_cursor || null);
    } catch (e) {
      setListError(e.message);
    }
  };
  useEffect(() => {
    load(null);
    if (input.current) input.current.focus();
    const onKey = (e) => e.key === "Escape" && onClose();
    document.addEventListener("keydown", onKey);
    return () => document.removeEventListener("keydown", onKey);
  }, []);
  const show = async (id) => {
    setStatus("Opening the chat…");
    try {
      setOpen(await get(`/api/v1/chats/${encodeURIComponent(id)}`));
      setStatus("");
      if (input.current) input.current.focus();
    } catch (e) {
      setStatus(`The chat could not be opened: ${e.message}.`);
    }
  };
  const ask = async (e) => {
    e.preventDefault();
    const q = question.trim();
    if (!q || (live && !live.error)) return;
    let a = { question: q };
    setLive(a);
    setStatus("Ask CROW is answering…");
    let chat = open && open.chat;
    const path = chat ? `/api/v1/chats/${encodeURIComponent(chat.id)}/messages` : "/api/v1/chats";
    let stored = null;
    try {
      await streamed(path, { question: q }, (name, d) => {
        if (name === "chat" && !chat) {
          chat = d.chat;
          setOpen({ chat, messages: [] });
        } else if (name === "message") {
          stored = d;
        } else {
          a = liveStep(a, name, d);
          setLive(a);
        }
      });
      if (!stored) throw new Problem(0, a.error ? a.error.detail : "the answer stopped before it was stored; ask again");
      setOpen((cur) => ({ chat: stored.chat, messages: ((cur && cur.messages) || []).concat(stored.messages) }));
      setLive(null);
      setQuestion("");
      setStatus(a.error ? "Ask CROW could not answer that question." : "Answered.");
      load(null);
    } catch (err) {
      setLive({ ...a, error: { detail: err.message } });
      setStatus("No answer.");
    }
  };
  const renamed = (chat) => {
    setOpen((cur) => ({ ...cur, chat }));
    load(null);
  };
  const deleted = (id) => {
    setOpen(null);
    setLive(null);
    setChats((cur) => (cur || []).filter((c) => c.id !== id));
    setStatus("The chat was deleted.");
    if (input.current) input.current.focus();
  };
  const fresh = () => {
    setOpen(null);
    setLive(null);
    setStatus("");
    if (input.current) input.current.focus();
  };
  const messages = open ? open.messages : [];
  // The latest question in view as it is answered.
  const asked = messages.length + (live ? 1 : 0);
  useEffect(() => {
    const qs = box.current ? box.current.querySelectorAll(".chat-q") : [];
    if (qs.length && asked) qs[qs.length - 1].scrollIntoView({ block: "start" });
  }, [asked]);
  return html`<aside id="chat-panel" class="chat-panel" ref=${box} role="dialog" aria-labelledby="chat-panel-title" data-testid="chat-panel"
      data-state=${live ? (live.error ? "error" : "asking") : "idle"}>
    <div class="toolbar"><h2 id="chat-panel-title">Ask CROW</h2>
      <p class="controls"><button class="button" type="button" data-testid="chat-new" onClick=${fresh}>New chat</button>
        <button class="button" type="button" data-testid="chat-close" onClick=${onClose}>Close<span class="visually-hidden"> Ask CROW</span></button></p></div>
    <p class="meta">Questions in plain words about your organization's data, answered with SQL over your tables: the numbers come from the rows.</p>
    ${open
      ? html`<${ChatHead} chat=${open.chat} onRenamed=${renamed} onDeleted=${deleted} onBack=${fresh} />
        <${ChatMessages} messages=${messages} live=${live} />`
      : html`<section aria-labelledby="chat-list-title"><h3 id="chat-list-title">Your chats</h3>
          <${ChatList} chats=${chats} next=${next} error=${listError} onOpen=${show} onMore=${() => load(next)} /></section>
        ${live ? html`<${ChatMessages} messages=${[]} live=${live} />` : null}`}
    <p class="visually-hidden" role="status">${status}</p>
    ${status && !live ? html`<p class="meta" data-testid="chat-status">${status}</p>` : null}
    <form class="chat-ask" onSubmit=${ask}>
      <label for="chat-question">${open ? "A follow-up question" : "Your question"}</label>
      <textarea id="chat-question" ref=${input} rows="2" maxlength="2000" required value=${question} placeholder=${open ? "and on mobile?" : "top products by views"}
        onInput=${(e) => setQuestion(e.target.value)} onKeyDown=${(e) => e.key === "Enter" && !e.shiftKey && !e.isComposing && ask(e)}></textarea>
      <p class="controls"><button class="button primary" type="submit" disabled=${!!live && !live.error}>${live && !live.error ? "Answering…" : "Ask"}</button>
        <span class="meta">Enter asks; Shift+Enter for a new line.</span></p>
    </form>
  </aside>`;
}

function Shell({ me }) {
  const [page, setPage] = useState(route());
  const [asking, setAsking] = useState(false);
  const askButton = useRef(null);
  const closeAsk = () => {
    setAsking(false);
    if (askButton.current) askButton.current.focus();
  };
  useEffect(() => {
    const onPop = () => setPage(route());
    window.addEventListener("popstate", onPop);
    return () => window.removeEventListener("popstate", onPop);
  }, []);
  const go = (e, path) => {
    e.preventDefault();
    history.pushState(null, "", path.includes("?") ? path : path + location.search);
    setPage(route());
  };
  const signOut = async () => {
    signingOut = true;
    try {
      await call("/api/v1/auth/logout", { method: "POST" });
    } finally {
      location.assign("/login");
    }
  };
  useEffect(() => {
    document.title = { settings: "Settings", patterns: "Patterns", interactions: "Interactions", products: "Products", funnels: "Funnels and paths", sql: "SQL", billing: "Billing" }[page] || "Overview";
    document.title += " — CROW";
  }, [page]);
  const admin = isAdmin(me);
  const link = (path, id, label) =>
    html`<a href=${path} aria-current=${page === id ? "page" : null} onClick=${(e) => go(e, path)}>${label}</a>`;
  return html`<header class="topbar">
      <a class="brand" href="/app/"><img src=${document.querySelector("link[rel=icon]").href} alt="" width="28" height="28" /> CROW</a>
      <nav aria-label="Dashboard">
        ${link("/app/", "overview", "Overview")}
        ${link("/app/interactions", "interactions", "Interactions")}
        ${link("/app/patterns", "patterns", "Patterns")}
        ${link("/app/funnels", "funnels", "Funnels")}
        ${link("/app/products", "products", "Products")}
        ${link("/app/sql", "sql", "SQL")}
        ${link("/app/billing", "billing", "Billing")}
        ${admin ? link("/app/settings", "settings", "Settings") : null}
      </nav>
      <div class="controls">
        <button type="button" class="button ask" ref=${askButton} data-testid="ask-open" aria-expanded=${asking ? "true" : "false"}
          aria-controls="chat-panel" onClick=${() => (asking ? closeAsk() : setAsking(true))}>Ask CROW</button>
        <${Bell} />
        <span class="who" data-testid="who">${me.user.email} · ${me.user.role} · ${(me.organization || {}).name || ""}</span>
        <button class="button" type="button" onClick=${signOut}>Sign out</button>
      </div>
    </header>
    <main id="main">
      ${page === "patterns"
        ? html`<${Patterns} />`
        : page === "interactions"
        ? html`<${Interactions} />`
        : page === "products"
        ? html`<${Products} />`
        : page === "funnels"
        ? html`<${Funnels} />`
        : page === "sql"
        ? html`<${Console} me=${me} />`
        : page === "billing"
        ? html`<${Billing} />`
        : page === "settings"
        ? admin
          ? html`<${Settings} me=${me} />`
          : html`<div class="page"><p class="error" role="alert">Settings are for admins of the organization: ask one of them.</p></div>`
        : html`<${Overview} go=${go} />`}
    </main>
    ${asking ? html`<${ChatPanel} onClose=${closeAsk} />` : null}`;
}

async function start() {
  const root = document.getElementById("root");
  try {
    const me = await get("/api/v1/auth/me");
    root.textContent = "";
    render(html`<${Shell} me=${me} />`, root);
  } catch (e) {
    if (e.status !== 401) {
      root.innerHTML = "";
      render(html`<main class="page"><p class="error" role="alert">Could not open the dashboard: ${e.message}. Reload the page to try again.</p></main>`, root);
    }
  }
}

start();
