//! AI product refinement: a product page without schema.org JSON-LD or
//! OpenGraph product data is read by the AI provider, which extracts the
//! name, price, currency, category, brand and attributes from the page's
//! visible text.
//!
//! Every answer is validated before it becomes a product (and re-asked with
//! the reason when it is not accepted, through [`super::call_checked`]):
//! the name must not be empty; a price must be a number that appears in the
//! page's text (a model cannot invent one) and needs a currency; the
//! currency must be an ISO 4217 code. A page the model says sells no
//! product yields none. A refinement that fails says why; the crawler
//! reports it with the page and never drops it silently.
//!
//! The offline provider answers deterministically (see [`offline_answer`]):
//! the page's first `<h1>` (else its title) as the name, the first amount
//! written with a currency symbol or code as the price, and `Key: Value`
//! lines as attributes (`Category:` and `Brand:` lines fill those fields).

use std::sync::Arc;

use crow_lake::products::Product;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{call_checked, AiRequest, Check, Provider, RetryPolicy};
use crate::html::{visible_text, Page};

/// The task name in the request's structured input.
pub const TASK: &str = "refine_product";
/// Characters of page text sent to the model at most.
const MAX_TEXT: usize = 6000;
/// Attributes kept at most.
const MAX_ATTRIBUTES: usize = 30;

/// ISO 4217 codes accepted as a product's currency.
const CURRENCIES: &[&str] = &[
    "AED", "ARS", "AUD", "BGN", "BRL", "CAD", "CHF", "CLP", "CNY", "COP", "CZK", "DKK", "EUR",
    "GBP", "HKD", "HUF", "IDR", "ILS", "INR", "ISK", "JPY", "KRW", "MXN", "MYR", "NOK", "NZD",
    "PEN", "PHP", "PLN", "RON", "RUB", "SAR", "SEK", "SGD", "THB", "TRY", "TWD", "UAH", "USD",
    "VND", "ZAR",
];

/// What the model reads: the page's address, title, first heading and
/// visible text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RefineInput {
    /// Always [`TASK`].
    pub task: String,
    /// The page.
    pub url: String,
    /// Its `<title>`.
    pub title: Option<String>,
    /// Its first `<h1>`.
    pub h1: Option<String>,
    /// Its visible text (navigation, scripts and footers left out).
    pub text: String,
}

impl RefineInput {
    /// The input of the page `html` at `url`.
    pub fn of_page(html: &str, url: &str) -> RefineInput {
        let page = Page::parse(html);
        RefineInput {
            task: TASK.into(),
            url: url.into(),
            title: page.title(),
            h1: page.first_h1(),
            text: visible_text(html, MAX_TEXT),
        }
    }
}

/// One attribute of a product (`colour` = `black`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attribute {
    /// Its name.
    pub name: String,
    /// Its value.
    pub value: String,
}

/// The answer, as the schema asks for it (empty strings for unknowns: the
/// providers' strict schemas have no common way to say `null`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Answer {
    /// Whether the page sells one product.
    pub is_product: bool,
    /// The product's name.
    pub name: String,
    /// The price as written in the page ("" if none).
    pub price: String,
    /// ISO 4217 code ("" if none).
    pub currency: String,
    /// Category ("" if none).
    pub category: String,
    /// Brand ("" if none).
    pub brand: String,
    /// Other attributes.
    pub attributes: Vec<Attribute>,
}

/// A validated refinement.
#[derive(Debug, Clone, PartialEq)]
pub struct Refined {
    /// Name.
    pub name: String,
    /// Price, found in the page's text.
    pub price: Option<f64>,
    /// ISO 4217 code.
    pub currency: Option<String>,
    /// Category.
    pub category: Option<String>,
    /// Brand.
    pub brand: Option<String>,
    /// Attributes (name, value).
    pub attributes: Vec<(String, String)>,
}

/// The JSON Schema of [`Answer`].
pub fn schema() -> Value {
    let s = |d: &str| json!({"type": "string", "description": d});
    json!({
        "type": "object",
        "properties": {
            "is_product": {"type": "boolean", "description": "true when the page offers one product for sale"},
            "name": s("the product's name as the page gives it"),
            "price": s("the price exactly as the page's text shows it, digits and separators only (e.g. 1299.00); empty if the page shows none"),
            "currency": s("ISO 4217 code of the price (EUR, USD, GBP, …); empty if no price"),
            "category": s("the product's category if the page names one, else empty"),
            "brand": s("the brand if the page names one, else empty"),
            "attributes": {"type": "array", "description": "other attributes the page states (colour, size, weight, …)", "items": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "value": {"type": "string"}},
                "required": ["name", "value"],
                "additionalProperties": false
            }}
        },
        "required": ["is_product", "name", "price", "currency", "category", "brand", "attributes"],
        "additionalProperties": false
    })
}

/// The request for `input`.
pub fn request(input: &RefineInput) -> AiRequest {
    let system = "You read the text of a web shop's page and extract the product it sells. \
                  Use only what the text says: never invent a name, a price or a currency. \
                  Answer with JSON following the schema.";
    let prompt = format!(
        "Page: {}\nTitle: {}\nFirst heading: {}\n\nPage text:\n{}",
        input.url,
        input.title.as_deref().unwrap_or(""),
        input.h1.as_deref().unwrap_or(""),
        input.text
    );
    AiRequest {
        system: system.into(),
        prompt,
        schema: schema(),
        input: serde_json::to_value(input).unwrap_or(Value::Null),
    }
}

/// Check an answer against the page's text: `None` when the page sells no
/// product.
pub fn check(text: &str, page_text: &str) -> Check<Option<Refined>> {
    let a: Answer = match serde_json::from_str(text.trim()) {
        Ok(a) => a,
        Err(e) => return Check::Invalid(format!("the answer does not follow the schema: {e}")),
    };
    match validate(a, page_text) {
        Ok(r) => Check::Valid(r),
        Err(why) => Check::Invalid(why),
    }
}

fn validate(a: Answer, page_text: &str) -> Result<Option<Refined>, String> {
    if !a.is_product {
        return Ok(None);
    }
    let name = collapse(&a.name);
    if name.is_empty() || name.chars().count() > 300 {
        return Err("`name` must be the product's name (1 to 300 characters)".into());
    }
    let nonempty = |s: &str| Some(collapse(s)).filter(|s| !s.is_empty());
    let price = match nonempty(&a.price) {
        None => None,
        Some(p) => {
            let v = parse_amount(&p).ok_or(format!("`price` {p:?} is not a number"))?;
            if !amounts(page_text)
                .iter()
                .any(|x| (x.value - v).abs() < 0.005)
            {
                return Err(format!("`price` {p} does not appear in the page's text"));
            }
            Some(v)
        }
    };
    let currency = nonempty(&a.currency).map(|c| c.to_ascii_uppercase());
    if let Some(c) = &currency {
        if !CURRENCIES.contains(&c.as_str()) {
            return Err(format!("`currency` {c:?} is not an ISO 4217 code"));
        }
    }
    if price.is_some() && currency.is_none() {
        return Err("a `price` needs its `currency` (an ISO 4217 code)".into());
    }
    let attributes = a
        .attributes
        .iter()
        .filter_map(|at| Some((nonempty(&at.name)?, nonempty(&at.value)?)))
        .take(MAX_ATTRIBUTES)
        .collect();
    Ok(Some(Refined {
        name,
        price,
        currency,
        category: nonempty(&a.category),
        brand: nonempty(&a.brand),
        attributes,
    }))
}

/// Refines product pages through one provider, with the AI layer's retries
/// and re-asks.
pub struct Refiner {
    provider: Arc<dyn Provider>,
    policy: RetryPolicy,
    permits: tokio::sync::Semaphore,
}

impl std::fmt::Debug for Refiner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Refiner")
            .field("provider", &self.provider.name())
            .field("model", &self.provider.model())
            .finish_non_exhaustive()
    }
}

impl Refiner {
    /// A refiner asking `provider`, `concurrency` calls at once.
    pub fn new(provider: Arc<dyn Provider>, policy: RetryPolicy, concurrency: usize) -> Refiner {
        Refiner {
            provider,
            policy,
            permits: tokio::sync::Semaphore::new(concurrency.max(1)),
        }
    }

    /// The product the page `html` at `url` sells (source left empty for
    /// the caller), `None` when it sells none, or why refinement failed
    /// (its reason code and the reason).
    pub async fn refine(
        &self,
        html: &str,
        url: &str,
        org_id: &str,
    ) -> Result<Option<Product>, String> {
        let input = RefineInput::of_page(html, url);
        let req = request(&input);
        let out = {
            let _permit = self.permits.acquire().await.map_err(|e| e.to_string())?;
            call_checked(self.provider.as_ref(), &req, self.policy, |t| {
                check(t, &input.text)
            })
            .await
        };
        let refined = out.value.map_err(|(code, why)| {
            format!(
                "AI refinement by {} failed ({}): {why}",
                self.provider.name(),
                code.as_str()
            )
        })?;
        Ok(refined.map(|r| r.into_product(org_id, url)))
    }
}

impl Refined {
    /// The catalog product (attributes as its description, `Key: value`
    /// joined by `; `).
    pub fn into_product(self, org_id: &str, url: &str) -> Product {
        let description = (!self.attributes.is_empty()).then(|| {
            self.attributes
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect::<Vec<_>>()
                .join("; ")
        });
        Product {
            org_id: org_id.into(),
            product_id: String::new(),
            sku: None,
            name: self.name,
            url: Some(url.into()),
            category: self.category,
            brand: self.brand,
            price: self.price,
            currency: self.currency,
            description,
            image_url: None,
            source: String::new(),
        }
    }
}

/// The offline provider's answer: deterministic, from the page alone.
pub fn offline_answer(input: &Value) -> Value {
    let input: RefineInput = match serde_json::from_value(input.clone()) {
        Ok(i) => i,
        Err(_) => {
            return json!({"is_product": false, "name": "", "price": "", "currency": "", "category": "", "brand": "", "attributes": []})
        }
    };
    let priced = amounts(&input.text)
        .into_iter()
        .find_map(|a| a.currency.map(|c| (a.raw, c)));
    let name = input
        .h1
        .clone()
        .or_else(|| input.title.as_deref().map(title_name))
        .unwrap_or_default();
    let (mut category, mut brand, mut attributes) = (String::new(), String::new(), Vec::new());
    for line in input.text.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let (k, v) = (k.trim(), v.trim());
        if k.is_empty() || k.chars().count() > 30 || v.is_empty() || v.chars().count() > 120 {
            continue;
        }
        match k.to_ascii_lowercase().as_str() {
            "category" => category = v.to_string(),
            "brand" => brand = v.to_string(),
            "price" => {}
            _ => attributes.push(json!({"name": k, "value": v})),
        }
    }
    let (price, currency) = priced.unwrap_or_default();
    json!({
        "is_product": !price.is_empty() && !name.is_empty(),
        "name": name,
        "price": price,
        "currency": currency,
        "category": category,
        "brand": brand,
        "attributes": attributes,
    })
}

/// A page title without its site's name (`Nimbus Lamp | Acme`: `Nimbus
/// Lamp`).
fn title_name(title: &str) -> String {
    let cut = [" | ", " – ", " - "]
        .iter()
        .filter_map(|sep| title.find(sep))
        .min()
        .unwrap_or(title.len());
    title[..cut].trim().to_string()
}

/// An amount written in a text, with the currency written next to it.
#[derive(Debug, Clone, PartialEq)]
pub struct Amount {
    /// As written (digits and separators).
    pub raw: String,
    /// Its value.
    pub value: f64,
    /// The ISO code of a symbol or code right before or after it.
    pub currency: Option<String>,
}

/// Every number in `text`, in order, with the currency beside it.
pub fn amounts(text: &str) -> Vec<Amount> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if !chars[i].is_ascii_digit() || (i > 0 && chars[i - 1].is_alphanumeric()) {
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len()
            && (chars[i].is_ascii_digit()
                || (matches!(chars[i], '.' | ',')
                    && chars.get(i + 1).is_some_and(char::is_ascii_digit)))
        {
            i += 1;
        }
        let raw: String = chars[start..i].iter().collect();
        if let Some(value) = parse_amount(&raw) {
            let currency = currency_before(&chars[..start]).or_else(|| currency_after(&chars[i..]));
            out.push(Amount {
                raw,
                value,
                currency,
            });
        }
    }
    out
}

/// A currency symbol or code ending just before an amount (one space
/// allowed between).
fn currency_before(before: &[char]) -> Option<String> {
    let b = match before.last() {
        Some(' ') | Some('\u{a0}') => &before[..before.len() - 1],
        _ => before,
    };
    if let Some(c) = b.last().and_then(|c| symbol(*c)) {
        return Some(c.into());
    }
    let n = b.len();
    if n >= 3 && (n == 3 || !b[n - 4].is_alphanumeric()) {
        return code(&b[n - 3..]);
    }
    None
}

/// A currency symbol or code starting just after an amount.
fn currency_after(after: &[char]) -> Option<String> {
    let a = match after.first() {
        Some(' ') | Some('\u{a0}') => &after[1..],
        _ => after,
    };
    if let Some(c) = a.first().and_then(|c| symbol(*c)) {
        return Some(c.into());
    }
    if a.len() >= 3 && (a.len() == 3 || !a[3].is_alphanumeric()) {
        return code(&a[..3]);
    }
    None
}

fn symbol(c: char) -> Option<&'static str> {
    Some(match c {
        '€' => "EUR",
        '$' => "USD",
        '£' => "GBP",
        '¥' => "JPY",
        '₹' => "INR",
        _ => return None,
    })
}

fn code(c: &[char]) -> Option<String> {
    let s: String = c.iter().collect();
    CURRENCIES.contains(&s.as_str()).then_some(s)
}

/// A written amount's value: `1,299.00`, `1.299,00`, `12,99`, `1299`.
/// The last separator followed by one or two digits is the decimal one;
/// other separators group thousands.
pub fn parse_amount(raw: &str) -> Option<f64> {
    let raw = raw.trim();
    if raw.is_empty()
        || !raw
            .chars()
            .all(|c| c.is_ascii_digit() || c == '.' || c == ',')
    {
        return None;
    }
    let last = raw.rfind(['.', ',']);
    let normal: String = match last {
        Some(p) if (2..=3).contains(&(raw.len() - p)) => {
            let (int, frac) = raw.split_at(p);
            format!("{}.{}", int.replace(['.', ','], ""), &frac[1..])
        }
        _ => raw.replace(['.', ','], ""),
    };
    normal.parse::<f64>().ok().filter(|v| v.is_finite())
}

fn collapse(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_read_with_their_currency() {
        let a = amounts("Was €1.299,00 now 1,099.50 EUR, ships in 2 days, or $ 25");
        let got: Vec<(f64, Option<&str>)> =
            a.iter().map(|a| (a.value, a.currency.as_deref())).collect();
        assert_eq!(
            got,
            vec![
                (1299.0, Some("EUR")),
                (1099.5, Some("EUR")),
                (2.0, None),
                (25.0, Some("USD"))
            ]
        );
        assert_eq!(parse_amount("12,99"), Some(12.99));
        assert_eq!(parse_amount("1.299"), Some(1299.0));
        assert_eq!(parse_amount("1e9"), None);
    }

    #[test]
    fn the_offline_answer_reads_the_heading_and_first_priced_amount() {
        let html =
            "<html><head><title>Nimbus Lamp | Acme</title></head><body><nav>Home 3 items</nav>\
                    <h1>Nimbus Desk Lamp</h1><p>Only 2 left! Now £49.90</p>\
                    <p>Category: Lighting</p><p>Colour: Black</p></body></html>";
        let input = RefineInput::of_page(html, "https://shop.example/lamp");
        let text = offline_answer(&serde_json::to_value(&input).expect("input")).to_string();
        let r = match check(&text, &input.text) {
            Check::Valid(Some(r)) => r,
            other => panic!("{other:?}: {text}"),
        };
        assert_eq!(r.name, "Nimbus Desk Lamp");
        assert_eq!((r.price, r.currency.as_deref()), (Some(49.9), Some("GBP")));
        assert_eq!(r.category.as_deref(), Some("Lighting"));
        assert_eq!(r.attributes, vec![("Colour".into(), "Black".into())]);
    }

    #[test]
    fn a_price_not_in_the_page_or_a_bad_currency_is_refused() {
        let page = "Aria Headphones. Now 199.00 USD.";
        let answer = |price: &str, cur: &str| {
            json!({"is_product": true, "name": "Aria", "price": price, "currency": cur,
                   "category": "", "brand": "", "attributes": []})
            .to_string()
        };
        assert!(
            matches!(check(&answer("149", "USD"), page), Check::Invalid(w) if w.contains("does not appear"))
        );
        assert!(
            matches!(check(&answer("199", "DOLLARS"), page), Check::Invalid(w) if w.contains("ISO 4217"))
        );
        assert!(matches!(check(&answer("199", ""), page), Check::Invalid(_)));
        assert!(
            matches!(check(&answer("199.00", "usd"), page), Check::Valid(Some(r)) if r.price == Some(199.0))
        );
        assert!(matches!(
            check("{\"is_product\": true}", page),
            Check::Invalid(_)
        ));
    }
}
