/*! crow.js — CROW's browser SDK. Segment-compatible events to a CROW collector. Apache-2.0 */
(function (root, factory) {
  var crow = factory(root);
  if (typeof module === "object" && module.exports) {
    module.exports = crow;
  } else {
    root.crow = crow;
  }
})(typeof globalThis !== "undefined" ? globalThis : typeof self !== "undefined" ? self : this, function (g) {
  "use strict";

  var VERSION = "0.1.0";
  var hasWindow = typeof g.window !== "undefined";
  var hasDocument = typeof g.document !== "undefined";

  // ---- small helpers (no DOM assumptions) ----------------------------------
  function uuid() {
    if (g.crypto && typeof g.crypto.randomUUID === "function") return g.crypto.randomUUID();
    var d = [];
    for (var i = 0; i < 16; i++) d.push(Math.floor(Math.random() * 256));
    d[6] = (d[6] & 0x0f) | 0x40;
    d[8] = (d[8] & 0x3f) | 0x80;
    var h = d.map(function (b) { return (b + 0x100).toString(16).slice(1); }).join("");
    return h.slice(0, 8) + "-" + h.slice(8, 12) + "-" + h.slice(12, 16) + "-" + h.slice(16, 20) + "-" + h.slice(20);
  }
  function now() { return new Date().toISOString(); }
  function assign(target) {
    for (var i = 1; i < arguments.length; i++) {
      var s = arguments[i];
      if (s) for (var k in s) if (Object.prototype.hasOwnProperty.call(s, k)) target[k] = s[k];
    }
    return target;
  }
  function memoryStorage() {
    var m = {};
    return {
      getItem: function (k) { return Object.prototype.hasOwnProperty.call(m, k) ? m[k] : null; },
      setItem: function (k, v) { m[k] = String(v); },
      removeItem: function (k) { delete m[k]; }
    };
  }
  function defaultStorage() {
    try {
      if (g.localStorage) {
        var t = "__crow_test__";
        g.localStorage.setItem(t, t);
        g.localStorage.removeItem(t);
        return g.localStorage;
      }
    } catch (e) { /* private mode, sandboxed iframes */ }
    return memoryStorage();
  }
  function base64(s) {
    if (typeof g.btoa === "function") return g.btoa(s);
    if (typeof Buffer !== "undefined") return Buffer.from(s).toString("base64");
    return s;
  }
  function deviceType(ua) {
    ua = ua || "";
    if (/iPad|Tablet|PlayBook|Silk|(Android(?!.*Mobile))/i.test(ua)) return "tablet";
    if (/Mobi|iPhone|iPod|Android|BlackBerry|Opera Mini|IEMobile/i.test(ua)) return "mobile";
    return "desktop";
  }
  function campaign(search) {
    var out = {};
    if (!search) return out;
    search.replace(/^\?/, "").split("&").forEach(function (kv) {
      var p = kv.split("=");
      var k = decodeURIComponent(p[0] || "");
      if (k.indexOf("utm_") === 0 && p[1] !== undefined) {
        var name = k.slice(4) === "campaign" ? "name" : k.slice(4);
        try { out[name] = decodeURIComponent(p[1].replace(/\+/g, " ")); } catch (e) { out[name] = p[1]; }
      }
    });
    return out;
  }

  // ---- the client ------------------------------------------------------------
  function Crow() {
    this.options = null;
    this.queue = [];
    this.timer = null;
    this.sending = false;
    this.attempt = 0;
    this.userId = null;
    this.traits = {};
    this.lastPageUrl = null;
  }

  Crow.prototype.load = function (options) {
    var o = assign({
      writeKey: "",
      host: hasWindow && g.location ? g.location.origin : "",
      flushAt: 20,
      flushInterval: 2000,
      maxRetries: 10,
      maxQueue: 1000,
      respectDNT: true,
      consent: true,
      autoPage: true,
      storage: null,
      fetch: null
    }, options);
    if (!o.writeKey) throw new Error("crow.load: writeKey is required");
    this.options = o;
    this.storage = o.storage || defaultStorage();
    this.fetch = o.fetch || (typeof g.fetch === "function" ? g.fetch.bind(g) : null);
    this.key = "crow:" + o.writeKey;
    var dnt = hasWindow && g.navigator && (g.navigator.doNotTrack === "1" || g.doNotTrack === "1");
    var stored = this.storage.getItem(this.key + ":consent");
    this.consented = stored === null ? !!o.consent && !(o.respectDNT && dnt) : stored === "1";
    this.anonymousId = this.storage.getItem("crow:anonymousId");
    if (!this.anonymousId) {
      this.anonymousId = uuid();
      this.storage.setItem("crow:anonymousId", this.anonymousId);
    }
    this.userId = this.storage.getItem(this.key + ":userId");
    try { this.queue = JSON.parse(this.storage.getItem(this.key + ":queue") || "[]") || []; } catch (e) { this.queue = []; }
    this._installHooks();
    if (this.queue.length) this._schedule(0);
    if (o.autoPage && hasDocument) this.page();
    return this;
  };

  // Consent: false stops collection and clears what is queued.
  Crow.prototype.setConsent = function (granted) {
    this.consented = !!granted;
    this.storage.setItem(this.key + ":consent", granted ? "1" : "0");
    if (!granted) { this.queue = []; this._persist(); }
  };

  Crow.prototype.reset = function () {
    this.userId = null;
    this.traits = {};
    this.anonymousId = uuid();
    this.storage.setItem("crow:anonymousId", this.anonymousId);
    this.storage.removeItem(this.key + ":userId");
  };

  Crow.prototype._context = function () {
    var ctx = { library: { name: "crow.js", version: VERSION } };
    if (hasWindow && g.navigator) {
      ctx.userAgent = g.navigator.userAgent;
      ctx.locale = g.navigator.language;
      ctx.device = { type: deviceType(g.navigator.userAgent) };
    }
    if (hasWindow && g.location) {
      ctx.page = {
        url: g.location.href,
        path: g.location.pathname,
        search: g.location.search,
        referrer: hasDocument ? g.document.referrer : "",
        title: hasDocument ? g.document.title : ""
      };
      var c = campaign(g.location.search);
      if (Object.keys(c).length) ctx.campaign = c;
    }
    if (hasWindow && g.screen) ctx.screen = { width: g.screen.width, height: g.screen.height };
    return ctx;
  };

  Crow.prototype._enqueue = function (type, fields) {
    if (!this.options) throw new Error("crow: call crow.load({writeKey}) first");
    if (!this.consented) return null;
    var msg = assign({
      type: type,
      messageId: uuid(),
      anonymousId: this.anonymousId,
      timestamp: now(),
      context: this._context()
    }, fields);
    if (this.userId) msg.userId = this.userId;
    this.queue.push(msg);
    if (this.queue.length > this.options.maxQueue) this.queue.splice(0, this.queue.length - this.options.maxQueue);
    this._persist();
    if (this.queue.length >= this.options.flushAt) this.flush();
    else this._schedule(this.options.flushInterval);
    return msg.messageId;
  };

  Crow.prototype.track = function (event, properties) {
    return this._enqueue("track", { event: event, properties: properties || {} });
  };
  Crow.prototype.page = function (name, properties) {
    var p = assign({}, properties);
    if (hasWindow && g.location) {
      p.url = p.url || g.location.href;
      p.path = p.path || g.location.pathname;
      p.search = p.search || g.location.search;
      p.referrer = p.referrer || (this.lastPageUrl || (hasDocument ? g.document.referrer : ""));
      p.title = p.title || (hasDocument ? g.document.title : "");
      this.lastPageUrl = p.url;
    }
    return this._enqueue("page", { name: name || undefined, properties: p });
  };
  Crow.prototype.screen = function (name, properties) {
    return this._enqueue("screen", { name: name, properties: properties || {} });
  };
  Crow.prototype.identify = function (userId, traits) {
    if (userId) {
      this.userId = String(userId);
      this.storage.setItem(this.key + ":userId", this.userId);
    }
    this.traits = assign(this.traits, traits);
    return this._enqueue("identify", { traits: traits || {} });
  };
  Crow.prototype.group = function (groupId, traits) {
    return this._enqueue("group", { groupId: groupId, traits: traits || {} });
  };
  Crow.prototype.alias = function (userId, previousId) {
    return this._enqueue("alias", { userId: userId, previousId: previousId || this.userId || this.anonymousId });
  };

  // E-commerce spec helpers (Segment's event names and properties).
  Crow.prototype.productsSearched = function (query) { return this.track("Products Searched", { query: query }); };
  Crow.prototype.productViewed = function (product) { return this.track("Product Viewed", product); };
  Crow.prototype.productAdded = function (product) { return this.track("Product Added", product); };
  Crow.prototype.productRemoved = function (product) { return this.track("Product Removed", product); };
  Crow.prototype.cartViewed = function (cart) { return this.track("Cart Viewed", cart); };
  Crow.prototype.checkoutStarted = function (order) { return this.track("Checkout Started", order); };
  Crow.prototype.checkoutStepViewed = function (step) { return this.track("Checkout Step Viewed", step); };
  Crow.prototype.paymentInfoEntered = function (info) { return this.track("Payment Info Entered", info); };
  Crow.prototype.orderCompleted = function (order) { return this.track("Order Completed", order); };

  Crow.prototype._persist = function () {
    try { this.storage.setItem(this.key + ":queue", JSON.stringify(this.queue)); } catch (e) { /* quota */ }
  };

  Crow.prototype._schedule = function (ms) {
    var self = this;
    if (this.timer) return;
    // A timer may fire a millisecond before the wall clock says it is due
    // (the event loop's cached time): a Retry-After is a "not before", so
    // wait out the remainder rather than send early.
    var due = Date.now() + ms;
    var arm = function (wait) {
      self.timer = setTimeout(fire, wait);
      // In Node/Electron main processes, a pending retry must not keep the process alive.
      if (self.timer && typeof self.timer.unref === "function") self.timer.unref();
    };
    var fire = function () {
      var left = due - Date.now();
      if (left > 0) return arm(left);
      self.timer = null;
      self.flush();
    };
    arm(ms);
  };

  // Send what is queued; resolves when the batch is acknowledged or kept for a retry.
  Crow.prototype.flush = function () {
    var self = this;
    if (!this.options || this.sending || !this.queue.length || !this.consented) return Promise.resolve();
    if (!this.fetch) return Promise.resolve();
    var batch = this.queue.slice(0, 100);
    var body = JSON.stringify({ batch: batch, sentAt: now(), writeKey: this.options.writeKey });
    this.sending = true;
    return this.fetch(this.options.host + "/v1/batch", {
      method: "POST",
      headers: {
        "Content-Type": "application/json",
        Authorization: "Basic " + base64(this.options.writeKey + ":")
      },
      body: body,
      keepalive: body.length < 60000
    }).then(function (res) {
      self.sending = false;
      // 2xx: stored. 400/401/413: the server refused for good (and kept what it
      // could in failed_events); retrying would not help.
      if (res.ok || res.status === 400 || res.status === 401 || res.status === 413) {
        self._ack(batch);
        self.attempt = 0;
        if (self.queue.length) self._schedule(0);
      } else {
        var ra = parseInt(res.headers && res.headers.get ? res.headers.get("Retry-After") : "", 10);
        self._retry(isNaN(ra) ? null : ra * 1000);
      }
    }, function () {
      self.sending = false;
      self._retry(null);
    });
  };

  Crow.prototype._ack = function (batch) {
    var sent = {};
    batch.forEach(function (m) { sent[m.messageId] = true; });
    this.queue = this.queue.filter(function (m) { return !sent[m.messageId]; });
    this._persist();
  };

  Crow.prototype._retry = function (retryAfterMs) {
    this.attempt += 1;
    if (this.attempt > this.options.maxRetries) {
      // Keep the queue (it is in storage) and try again on the next event or load.
      this.attempt = 0;
      return;
    }
    var backoff = Math.min(60000, 500 * Math.pow(2, this.attempt)) * (0.5 + Math.random() / 2);
    this._schedule(retryAfterMs !== null ? Math.max(retryAfterMs, backoff) : backoff);
  };

  // Page hide: hand the queue to sendBeacon, which outlives the page.
  Crow.prototype.beacon = function () {
    if (!this.options || !this.queue.length || !this.consented) return false;
    if (!hasWindow || !g.navigator || typeof g.navigator.sendBeacon !== "function") return false;
    var batch = this.queue.slice(0, 100);
    var body = JSON.stringify({ batch: batch, sentAt: now(), writeKey: this.options.writeKey });
    var blob = typeof g.Blob === "function" ? new g.Blob([body], { type: "text/plain" }) : body;
    var ok = g.navigator.sendBeacon(this.options.host + "/v1/batch", blob);
    if (ok) this._ack(batch);
    return ok;
  };

  Crow.prototype._installHooks = function () {
    var self = this;
    if (this.hooked || !hasWindow || typeof g.addEventListener !== "function") return;
    this.hooked = true;
    g.addEventListener("pagehide", function () { self.beacon(); });
    if (hasDocument && typeof g.document.addEventListener === "function") {
      g.document.addEventListener("visibilitychange", function () {
        if (g.document.visibilityState === "hidden") self.beacon();
      });
    }
    g.addEventListener("online", function () { self.flush(); });
    // Single-page apps: a page view on every history navigation.
    if (g.history && this.options.autoPage) {
      ["pushState", "replaceState"].forEach(function (fn) {
        var orig = g.history[fn];
        if (typeof orig !== "function") return;
        g.history[fn] = function () {
          var r = orig.apply(this, arguments);
          if (g.location.href !== self.lastPageUrl) self.page();
          return r;
        };
      });
      g.addEventListener("popstate", function () {
        if (g.location.href !== self.lastPageUrl) self.page();
      });
    }
  };

  var crow = new Crow();
  crow.Crow = Crow;
  crow.VERSION = VERSION;
  return crow;
});
