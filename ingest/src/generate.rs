//! A synthetic brand: a product catalog and visitors' activity as
//! Segment-spec events, deterministic for a seed.
//!
//! Used by `crow demo` and the benchmarks. Visitors arrive from search,
//! social, email and direct traffic on desktop, mobile and tablet; some come
//! back on later days; each visit walks the e-commerce funnel (page views,
//! searches, product views, cart, checkout, payment, order) and drops off
//! along the way with realistic rates. Buyers identify themselves at
//! checkout, so anonymous ids stitch to user ids.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use crow_schemas::segment::SegmentEvent;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

/// A product of the synthetic catalog.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DemoProduct {
    /// Product id.
    pub product_id: String,
    /// SKU.
    pub sku: String,
    /// Name.
    pub name: String,
    /// Category.
    pub category: String,
    /// Price in `USD`.
    pub price: f64,
    /// Product page URL.
    pub url: String,
    /// Description.
    pub description: String,
}

/// The demo brand's name.
pub const BRAND_NAME: &str = "Northwind Audio";
/// The demo brand's domain.
pub const BRAND_DOMAIN: &str = "northwind-audio.example";
/// What the brand is, for the AI provider.
pub const BRAND_CONTEXT: &str =
    "Northwind Audio sells headphones, earbuds, speakers and accessories online to music lovers and commuters.";

const CATALOG: &[(&str, &str, f64, &str)] = &[
    (
        "Aria Over-Ear Wireless Headphones",
        "Headphones",
        249.0,
        "Noise-cancelling over-ear headphones with 40 h battery.",
    ),
    (
        "Aria Lite On-Ear Headphones",
        "Headphones",
        129.0,
        "Lightweight foldable on-ear headphones.",
    ),
    (
        "Studio Monitor Headphones MK2",
        "Headphones",
        199.0,
        "Closed-back studio headphones for mixing.",
    ),
    (
        "Pulse ANC Earbuds",
        "Earbuds",
        179.0,
        "True wireless earbuds with adaptive noise cancelling.",
    ),
    (
        "Pulse Sport Earbuds",
        "Earbuds",
        99.0,
        "Sweat-proof earbuds with ear hooks.",
    ),
    (
        "Pulse Mini Earbuds",
        "Earbuds",
        59.0,
        "Compact everyday earbuds.",
    ),
    (
        "Boom Portable Speaker",
        "Speakers",
        89.0,
        "Waterproof portable speaker, 12 h playback.",
    ),
    (
        "Boom Max Party Speaker",
        "Speakers",
        299.0,
        "Loud party speaker with light show.",
    ),
    (
        "Hearth Smart Home Speaker",
        "Speakers",
        149.0,
        "Wi-Fi smart speaker with multi-room audio.",
    ),
    (
        "Hearth Soundbar 5.1",
        "Speakers",
        449.0,
        "Soundbar with wireless subwoofer.",
    ),
    (
        "Carry Case for Aria",
        "Accessories",
        29.0,
        "Hard-shell case for Aria headphones.",
    ),
    (
        "Braided USB-C Cable",
        "Accessories",
        15.0,
        "1.5 m braided charging cable.",
    ),
    (
        "Replacement Ear Cushions",
        "Accessories",
        25.0,
        "Memory-foam cushions for Aria.",
    ),
    (
        "Wireless Charging Pad",
        "Accessories",
        39.0,
        "Qi charging pad for Pulse cases.",
    ),
    (
        "Aux Adapter Kit",
        "Accessories",
        12.0,
        "3.5 mm and airplane adapters.",
    ),
    (
        "Turntable Classic",
        "Hi-Fi",
        349.0,
        "Belt-drive turntable with built-in preamp.",
    ),
    (
        "Bookshelf Speakers Pair",
        "Hi-Fi",
        399.0,
        "Passive bookshelf speakers.",
    ),
    (
        "Desktop DAC/Amp",
        "Hi-Fi",
        189.0,
        "USB DAC and headphone amplifier.",
    ),
];

/// The synthetic catalog.
pub fn catalog() -> Vec<DemoProduct> {
    CATALOG
        .iter()
        .enumerate()
        .map(|(i, (name, category, price, description))| {
            let slug: String = name
                .to_ascii_lowercase()
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
                .collect::<String>()
                .split('-')
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join("-");
            DemoProduct {
                product_id: format!("nw-{:04}", 1001 + i),
                sku: format!("NW-{}-{:03}", &category[..2].to_ascii_uppercase(), i + 1),
                name: (*name).to_string(),
                category: (*category).to_string(),
                price: *price,
                url: format!("https://{BRAND_DOMAIN}/products/{slug}"),
                description: (*description).to_string(),
            }
        })
        .collect()
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    /// Number of distinct visitors.
    pub visitors: usize,
    /// First day of activity.
    pub first_day: NaiveDate,
    /// Number of days.
    pub days: u32,
    /// Random seed.
    pub seed: u64,
    /// Incidents planted in the data (none by default).
    pub incidents: Vec<Incident>,
}

/// Something that goes wrong (or right) for a while, for the patterns job
/// to find.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Incident {
    /// Card payments on mobile fail (declined, retried, declined again) on
    /// days `[from_day, from_day + days)` of the range: mobile conversion
    /// from payment to order collapses while desktop is normal.
    MobilePaymentOutage {
        /// First affected day (0 = the first day of the range).
        from_day: u32,
        /// Number of affected days.
        days: u32,
    },
    /// One product goes viral: on the affected days, a third of visitors
    /// come for it.
    ViralProduct {
        /// Index into [`catalog`].
        product: usize,
        /// First affected day.
        from_day: u32,
        /// Number of affected days.
        days: u32,
    },
}

impl GenerateOptions {
    fn payment_outage(&self, day: u32, device: &str) -> bool {
        device == "mobile"
            && self.incidents.iter().any(|i| {
                matches!(i, Incident::MobilePaymentOutage { from_day, days }
                    if day >= *from_day && day < from_day + days)
            })
    }

    fn viral(&self, day: u32) -> Option<usize> {
        self.incidents.iter().find_map(|i| match i {
            Incident::ViralProduct {
                product,
                from_day,
                days,
            } if day >= *from_day && day < from_day + days => Some(*product),
            _ => None,
        })
    }
}

/// The demo catalog as products of `org_id`.
pub fn catalog_products(org_id: &str) -> Vec<crow_lake::products::Product> {
    catalog()
        .into_iter()
        .map(|p| crow_lake::products::Product {
            org_id: org_id.to_string(),
            product_id: p.product_id,
            sku: Some(p.sku),
            name: p.name,
            url: Some(p.url),
            category: Some(p.category),
            brand: Some(BRAND_NAME.to_string()),
            price: Some(p.price),
            currency: Some("USD".into()),
            description: Some(p.description),
            image_url: None,
            source: "demo".into(),
        })
        .collect()
}

/// Generate Segment-spec events (JSON objects as the SDK would send them),
/// ordered by visitor then time. Message ids are deterministic for the seed.
pub fn events(opts: &GenerateOptions) -> Vec<Value> {
    let products = catalog();
    let mut rng = StdRng::seed_from_u64(opts.seed);
    let mut stream = Stream {
        opts,
        products: &products,
        msg: 0,
        out: Vec::new(),
    };
    for v in 0..opts.visitors {
        let mut visitor = Visitor::new(&mut rng, v);
        // 1 visit for most, up to 3 for returning visitors.
        let visits = match rng.random_range(0..100) {
            0..=71 => 1,
            72..=91 => 2,
            _ => 3,
        };
        let mut days: Vec<u32> = (0..visits)
            .map(|_| rng.random_range(0..opts.days.max(1)))
            .collect();
        days.sort_unstable();
        for day in days {
            if let Some(t) = visit_start(&mut rng, opts, day) {
                stream.visit(&mut rng, &mut visitor, day, t);
            }
        }
    }
    stream.out
}

/// Where a visitor comes from and on what, drawn once per visitor; the user
/// id is set when they identify at checkout and kept for later visits.
struct Visitor {
    index: usize,
    anon: String,
    device: &'static str,
    source: &'static str,
    medium: &'static str,
    ua: &'static str,
    user_id: Option<String>,
}

impl Visitor {
    fn new(rng: &mut StdRng, index: usize) -> Self {
        let devices = [("desktop", 0.48), ("mobile", 0.44), ("tablet", 0.08)];
        let sources = [
            ("google", "cpc", 0.35),
            ("instagram", "social", 0.2),
            ("newsletter", "email", 0.15),
            ("", "", 0.3),
        ];
        let anon = format!("anon-{:08x}-{index:06}", rng.random::<u32>());
        let device = pick(rng, &devices.map(|(d, w)| (d, w)));
        let (source, medium) = {
            let i = pick_index(rng, &sources.map(|s| s.2));
            (sources[i].0, sources[i].1)
        };
        let ua = match device {
            "mobile" => "Mozilla/5.0 (iPhone; CPU iPhone OS 18_0 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
            "tablet" => "Mozilla/5.0 (iPad; CPU OS 18_0 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
            _ => "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/131.0 Safari/537.36",
        };
        Self {
            index,
            anon,
            device,
            source,
            medium,
            ua,
            user_id: None,
        }
    }
}

/// When a visit on `day` (of the range) starts: an hour drawn from
/// [`HOUR_WEIGHTS`] (traffic peaks in the evening) and a random second.
fn visit_start(rng: &mut StdRng, opts: &GenerateOptions, day: u32) -> Option<DateTime<Utc>> {
    let date = opts
        .first_day
        .checked_add_days(chrono::Days::new(u64::from(day)))?;
    let start = date.and_hms_opt(0, 0, 0)?;
    let hour = pick_index(rng, &HOUR_WEIGHTS) as i64;
    Some(start.and_utc() + Duration::hours(hour) + Duration::seconds(rng.random_range(0..3600)))
}

/// The events generated so far, with what every visit draws from.
struct Stream<'a> {
    opts: &'a GenerateOptions,
    products: &'a [DemoProduct],
    /// Events emitted so far (numbers the message ids).
    msg: u64,
    out: Vec<Value>,
}

impl<'a> Stream<'a> {
    /// Add one event of `visitor` at `t` (with its message id, identity,
    /// time and context), then move `t` on by a few seconds to minutes.
    fn emit(&mut self, rng: &mut StdRng, t: &mut DateTime<Utc>, visitor: &Visitor, body: Value) {
        self.msg += 1;
        let mut e = body;
        let page_url = e
            .get("properties")
            .and_then(|p| p.get("url"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let Some(obj) = e.as_object_mut() else { return };
        obj.insert(
            "messageId".into(),
            json!(format!("demo-{}-{:09}", self.opts.seed, self.msg)),
        );
        obj.insert("anonymousId".into(), json!(visitor.anon));
        if let Some(u) = visitor.user_id.as_deref() {
            obj.insert("userId".into(), json!(u));
        }
        obj.insert(
            "timestamp".into(),
            json!(t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        );
        let source = visitor.source;
        let mut context = json!({
            "userAgent": visitor.ua,
            "device": {"type": visitor.device},
            "library": {"name": "crow.js", "version": "0.1.0"},
            "page": {"url": page_url, "referrer": if source == "google" { "https://www.google.com/" } else { "" }},
        });
        if !source.is_empty() {
            context["campaign"] =
                json!({"source": source, "medium": visitor.medium, "name": "autumn-sale"});
        }
        obj.insert("context".into(), context);
        self.out.push(e);
        *t += Duration::seconds(rng.random_range(8..150));
    }

    /// One visit on `day` from `t`: the home page, an interest (sometimes
    /// searched), product views, and for some a cart and a checkout.
    fn visit(&mut self, rng: &mut StdRng, visitor: &mut Visitor, day: u32, mut t: DateTime<Utc>) {
        let products = self.products;
        let home = format!("https://{BRAND_DOMAIN}/");
        self.emit(
            rng,
            &mut t,
            visitor,
            json!({"type": "page", "name": "Home", "properties": {"url": home, "path": "/", "title": BRAND_NAME}}),
        );
        // Interest: a category, sometimes via search.
        let mut focus = rng.random_range(0..products.len());
        if let Some(p) = self.opts.viral(day) {
            if p < products.len() && rng.random_bool(0.33) {
                focus = p;
            }
        }
        if rng.random_bool(0.35) {
            let q = products[focus].category.to_ascii_lowercase();
            self.emit(
                rng,
                &mut t,
                visitor,
                json!({"type": "track", "event": SegmentEvent::ProductsSearched.as_str(), "properties": {"query": q}}),
            );
        }
        if rng.random_bool(0.18) {
            return; // bounced
        }
        let viewed = self.view_products(rng, &mut t, visitor, focus);
        if !rng.random_bool(if visitor.device == "mobile" {
            0.30
        } else {
            0.36
        }) {
            return;
        }
        let cart = self.fill_cart(rng, &mut t, visitor, &viewed);
        if !rng.random_bool(0.62) {
            return;
        }
        self.check_out(rng, &mut t, visitor, day, &cart);
    }

    /// One to three products of the focus product's category viewed (a
    /// page and a `Product Viewed` each); returns them.
    fn view_products(
        &mut self,
        rng: &mut StdRng,
        t: &mut DateTime<Utc>,
        visitor: &Visitor,
        focus: usize,
    ) -> Vec<&'a DemoProduct> {
        let products = self.products;
        let similar: Vec<&DemoProduct> = products
            .iter()
            .filter(|p| p.category == products[focus].category)
            .collect();
        let n_views = rng.random_range(1..=3.min(similar.len()));
        let mut viewed = Vec::new();
        for i in 0..n_views {
            let p = similar[(focus + i) % similar.len()];
            viewed.push(p);
            let path = p
                .url
                .trim_start_matches(&format!("https://{BRAND_DOMAIN}"))
                .to_string();
            self.emit(
                rng,
                t,
                visitor,
                json!({"type": "page", "name": "Product", "properties": {"url": p.url, "path": path, "title": p.name}}),
            );
            self.emit(
                rng,
                t,
                visitor,
                json!({"type": "track", "event": SegmentEvent::ProductViewed.as_str(), "properties": product_props(p, 1)}),
            );
        }
        viewed
    }

    /// One viewed product added (sometimes twice), sometimes an accessory
    /// too, then the cart viewed; returns the cart (product, quantity).
    fn fill_cart(
        &mut self,
        rng: &mut StdRng,
        t: &mut DateTime<Utc>,
        visitor: &Visitor,
        viewed: &[&'a DemoProduct],
    ) -> Vec<(&'a DemoProduct, u32)> {
        let chosen = viewed[rng.random_range(0..viewed.len())];
        let qty = if rng.random_bool(0.85) { 1 } else { 2 };
        self.emit(
            rng,
            t,
            visitor,
            json!({"type": "track", "event": SegmentEvent::ProductAdded.as_str(), "properties": product_props(chosen, qty)}),
        );
        let mut cart = vec![(chosen, qty)];
        if rng.random_bool(0.25) {
            let acc = &self.products[rng.random_range(10..15)];
            self.emit(
                rng,
                t,
                visitor,
                json!({"type": "track", "event": SegmentEvent::ProductAdded.as_str(), "properties": product_props(acc, 1)}),
            );
            cart.push((acc, 1));
        }
        self.emit(
            rng,
            t,
            visitor,
            json!({"type": "track", "event": SegmentEvent::CartViewed.as_str(), "properties": {"products": cart.iter().map(|(p, q)| product_props(p, *q)).collect::<Vec<_>>()}}),
        );
        cart
    }

    /// The checkout of `cart`: started, the visitor identifies (once),
    /// shipping, payment, and — unless the payment fails (always mostly
    /// during a mobile payment outage) — the order.
    fn check_out(
        &mut self,
        rng: &mut StdRng,
        t: &mut DateTime<Utc>,
        visitor: &mut Visitor,
        day: u32,
        cart: &[(&DemoProduct, u32)],
    ) {
        let total: f64 = cart.iter().map(|(p, q)| p.price * f64::from(*q)).sum();
        self.emit(
            rng,
            t,
            visitor,
            json!({"type": "track", "event": SegmentEvent::CheckoutStarted.as_str(), "properties": {"value": total, "currency": "USD", "products": cart.iter().map(|(p, q)| product_props(p, *q)).collect::<Vec<_>>()}}),
        );
        let v = visitor.index;
        if visitor.user_id.is_none() {
            visitor.user_id = Some(format!("user-{v:06}"));
            self.emit(
                rng,
                t,
                visitor,
                json!({"type": "identify", "traits": {"email_domain": "example.com", "plan": "guest"}}),
            );
        }
        self.emit(
            rng,
            t,
            visitor,
            json!({"type": "track", "event": SegmentEvent::CheckoutStepViewed.as_str(), "properties": {"step": 2, "shipping_method": "standard"}}),
        );
        if !rng.random_bool(0.75) {
            return;
        }
        self.emit(
            rng,
            t,
            visitor,
            json!({"type": "track", "event": SegmentEvent::PaymentInfoEntered.as_str(), "properties": {"step": 3, "payment_method": "card"}}),
        );
        if self.opts.payment_outage(day, visitor.device) && !rng.random_bool(0.08) {
            // Declined, retried, declined again: the shopper gives up.
            for _ in 0..rng.random_range(2..=3) {
                self.emit(
                    rng,
                    t,
                    visitor,
                    json!({"type": "track", "event": "Payment Failed", "properties": {"reason": "processor_error"}}),
                );
            }
            return;
        }
        if !rng.random_bool(0.85) {
            self.emit(
                rng,
                t,
                visitor,
                json!({"type": "track", "event": "Payment Failed", "properties": {"reason": "card_declined"}}),
            );
            return;
        }
        let order_id = format!("ord-{}-{v:06}-{day}", self.opts.seed);
        self.emit(
            rng,
            t,
            visitor,
            json!({"type": "track", "event": SegmentEvent::OrderCompleted.as_str(), "properties": {
            "order_id": order_id, "total": total, "revenue": total, "currency": "USD",
            "products": cart.iter().map(|(p, q)| product_props(p, *q)).collect::<Vec<_>>()}}),
        );
    }
}

/// Relative traffic by hour of day (UTC).
const HOUR_WEIGHTS: [f64; 24] = [
    1.0, 0.6, 0.4, 0.3, 0.3, 0.5, 1.0, 1.8, 2.4, 2.6, 2.7, 2.9, 3.2, 3.0, 2.8, 2.8, 3.0, 3.4, 4.0,
    4.6, 4.8, 4.2, 3.0, 1.8,
];

fn product_props(p: &DemoProduct, qty: u32) -> Value {
    json!({"product_id": p.product_id, "sku": p.sku, "name": p.name, "category": p.category,
           "price": p.price, "currency": "USD", "quantity": qty, "url": p.url})
}

fn pick_index(rng: &mut StdRng, weights: &[f64]) -> usize {
    let total: f64 = weights.iter().sum();
    let mut x = rng.random::<f64>() * total;
    for (i, w) in weights.iter().enumerate() {
        if x < *w {
            return i;
        }
        x -= w;
    }
    weights.len() - 1
}

fn pick<'a>(rng: &mut StdRng, items: &[(&'a str, f64)]) -> &'a str {
    let w: Vec<f64> = items.iter().map(|i| i.1).collect();
    items[pick_index(rng, &w)].0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_funnel_shaped() {
        let opts = GenerateOptions {
            visitors: 300,
            first_day: NaiveDate::from_ymd_opt(2026, 1, 5).unwrap(),
            days: 7,
            seed: 1,
            incidents: Vec::new(),
        };
        let a = events(&opts);
        assert_eq!(a, events(&opts));
        let count = |name: &str| a.iter().filter(|e| e["event"] == name).count();
        let views = count("Product Viewed");
        let added = count("Product Added");
        let orders = count("Order Completed");
        assert!(
            views > added && added > orders && orders > 0,
            "{views} {added} {orders}"
        );
        let ids: std::collections::HashSet<_> =
            a.iter().map(|e| e["messageId"].to_string()).collect();
        assert_eq!(ids.len(), a.len());
    }
}
