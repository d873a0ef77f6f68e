//! The offline provider: deterministic, network-free, and useful.
//!
//! It reads the structured input of a request (the session's timeline and
//! the candidate products from the catalog) and writes the same JSON answer
//! a model would: a plain-language description ("compared two headphones,
//! added one to the cart, left at shipping"), intent, sentiment, outcome,
//! the products involved and a confidence. Same input, same answer. It
//! reports zero tokens: it costs nothing.

use async_trait::async_trait;

use super::{AiAnswer, AiError, AiRequest, Provider};
use crate::enrich::{Answer, Candidate, EnrichInput};
use crow_schemas::segment::SegmentEvent as E;
use crow_schemas::timeline::TimelineEntry;

/// The offline provider's model name.
pub const MODEL: &str = "crow-offline-1";

/// The offline provider.
#[derive(Debug, Clone)]
pub struct Offline {
    model: String,
}

impl Offline {
    /// An offline provider reporting `model` as its model name.
    pub fn new(model: &str) -> Self {
        Offline {
            model: model.to_string(),
        }
    }
}

#[async_trait]
impl Provider for Offline {
    fn name(&self) -> &str {
        "offline"
    }

    fn model(&self) -> &str {
        &self.model
    }

    fn cacheable(&self) -> bool {
        false
    }

    async fn generate(&self, req: &AiRequest) -> Result<AiAnswer, AiError> {
        match req.input.get("task").and_then(|t| t.as_str()) {
            Some("enrich") => {
                let input: EnrichInput = serde_json::from_value(req.input.clone())
                    .map_err(|e| AiError::Fatal(format!("offline: unreadable input: {e}")))?;
                let answer = enrich_answer(&input);
                let text = serde_json::to_string(&answer)
                    .map_err(|e| AiError::Fatal(format!("offline: {e}")))?;
                Ok(AiAnswer {
                    text,
                    input_tokens: 0,
                    output_tokens: 0,
                })
            }
            Some("pattern") => {
                // The statistical title and description, as they are.
                let text = serde_json::json!({
                    "title": req.input.get("title").cloned().unwrap_or_default(),
                    "description": req.input.get("description").cloned().unwrap_or_default(),
                })
                .to_string();
                Ok(AiAnswer {
                    text,
                    input_tokens: 0,
                    output_tokens: 0,
                })
            }
            Some("ask_sql") => Ok(AiAnswer {
                text: super::ask::offline_sql_answer(&req.input).to_string(),
                input_tokens: 0,
                output_tokens: 0,
            }),
            Some(super::refine::TASK) => Ok(AiAnswer {
                text: super::refine::offline_answer(&req.input).to_string(),
                input_tokens: 0,
                output_tokens: 0,
            }),
            Some("ask_answer") => Ok(AiAnswer {
                text: super::ask::offline_words(&req.input).to_string(),
                input_tokens: 0,
                output_tokens: 0,
            }),
            Some("ask_analyst") => Ok(AiAnswer {
                text: super::ask::offline_analyst(&req.input).to_string(),
                input_tokens: 0,
                output_tokens: 0,
            }),
            Some(super::queries::TASK) => Ok(AiAnswer {
                text: super::queries::offline_queries(&req.input).to_string(),
                input_tokens: 0,
                output_tokens: 0,
            }),
            other => Err(AiError::Fatal(format!(
                "offline: no writer for task {other:?}"
            ))),
        }
    }
}

/// The offline answer for one session.
pub fn enrich_answer(input: &EnrichInput) -> Answer {
    match input.channel.as_str() {
        "web" => web(input),
        _ => transcript(input),
    }
}

fn candidate<'a>(input: &'a EnrichInput, token: &str) -> Option<&'a Candidate> {
    input.candidates.iter().find(|c| {
        c.product_id == token
            || c.sku
                .as_deref()
                .is_some_and(|s| s.eq_ignore_ascii_case(token))
    })
}

fn name_of(input: &EnrichInput, id: &str) -> String {
    input
        .candidates
        .iter()
        .find(|c| c.product_id == id)
        .map(|c| c.name.clone())
        .unwrap_or_else(|| id.to_string())
}

fn push_unique(v: &mut Vec<String>, s: &str) {
    if !v.iter().any(|x| x == s) {
        v.push(s.to_string());
    }
}

fn list(names: &[String]) -> String {
    match names.len() {
        0 => String::new(),
        1 => names[0].clone(),
        2 => format!("{} and {}", names[0], names[1]),
        _ => format!(
            "{} and {}",
            names[..names.len() - 1].join(", "),
            names[names.len() - 1]
        ),
    }
}

fn number_word(n: usize) -> String {
    match n {
        2 => "two".into(),
        3 => "three".into(),
        4 => "four".into(),
        5 => "five".into(),
        n => n.to_string(),
    }
}

/// The common category word of products ("headphones"), if they share one.
fn shared_category(input: &EnrichInput, ids: &[String]) -> Option<String> {
    let cats: Vec<String> = ids
        .iter()
        .filter_map(|id| input.candidates.iter().find(|c| &c.product_id == id))
        .filter_map(|c| c.category.as_deref())
        .map(|c| c.rsplit('>').next().unwrap_or(c).trim().to_lowercase())
        .collect();
    if cats.len() == ids.len() && !cats.is_empty() && cats.iter().all(|c| *c == cats[0]) {
        Some(cats[0].clone())
    } else {
        None
    }
}

/// What a web session's timeline shows, read in one pass: the products
/// viewed, added, removed and ordered, searches, pages, how far checkout
/// went, the order, failures and whether help was sought.
#[derive(Default)]
struct Seen {
    viewed: Vec<String>,
    added: Vec<String>,
    removed: Vec<String>,
    ordered: Vec<String>,
    searches: Vec<String>,
    pages: Vec<String>,
    checkout: bool,
    shipping: bool,
    payment: bool,
    order: Option<String>,
    failures: Vec<String>,
    support: bool,
}

impl Seen {
    fn read(input: &EnrichInput) -> Seen {
        let mut seen = Seen::default();
        for entry in &input.timeline {
            seen.see(input, entry);
        }
        seen
    }

    /// Take one timeline entry into account.
    fn see(&mut self, input: &EnrichInput, entry: &TimelineEntry) {
        let TimelineEntry { kind, detail, .. } = entry;
        let first = detail.split_whitespace().next().unwrap_or("");
        let product = candidate(input, first).map(|c| c.product_id.clone());
        let k = kind.to_lowercase();
        match E::from_name(kind) {
            None if kind == "page" || kind == "screen" => push_unique(&mut self.pages, detail),
            Some(E::ProductsSearched) => {
                if let Some(q) = detail.strip_prefix("query=") {
                    push_unique(&mut self.searches, q);
                }
            }
            Some(E::ProductViewed | E::ProductClicked) => {
                if let Some(p) = product {
                    push_unique(&mut self.viewed, &p);
                }
            }
            Some(E::ProductAdded) => {
                if let Some(p) = product {
                    push_unique(&mut self.added, &p);
                }
            }
            Some(E::ProductRemoved) => {
                if let Some(p) = product {
                    push_unique(&mut self.removed, &p);
                }
            }
            Some(E::CheckoutStarted) => self.checkout = true,
            Some(E::CheckoutStepViewed | E::CheckoutStepCompleted) => {
                self.checkout = true;
                if detail.contains("shipping") || detail.contains("step=2") {
                    self.shipping = true;
                }
                if detail.contains("payment") || detail.contains("step=3") {
                    self.payment = true;
                }
            }
            Some(E::PaymentInfoEntered) => {
                self.checkout = true;
                self.payment = true;
            }
            Some(E::OrderCompleted) => {
                self.order = Some(detail.clone());
                for id in self.added.iter().chain(self.viewed.iter()) {
                    push_unique(&mut self.ordered, id);
                }
            }
            _ if k.contains("fail") || k.contains("error") || k.contains("declin") => {
                self.failures.push(kind.clone());
            }
            _ if k.contains("support") || k.contains("contact") || k.contains("help") => {
                self.support = true;
            }
            _ => {}
        }
    }

    /// What was bought or left: what was in the cart (less what was
    /// removed).
    fn cart(&self) -> Vec<String> {
        self.added
            .iter()
            .filter(|p| !self.removed.contains(p))
            .cloned()
            .collect()
    }

    /// What the visitor did, as phrases: searches, products viewed, the
    /// cart, removals, failures, help.
    fn activity(&self, input: &EnrichInput, cart: &[String]) -> Vec<String> {
        let mut parts: Vec<String> = Vec::new();
        if !self.searches.is_empty() {
            let qs: Vec<String> = self.searches.iter().map(|q| format!("\"{q}\"")).collect();
            parts.push(format!("searched for {}", list(&qs)));
        }
        let names =
            |ids: &[String]| -> Vec<String> { ids.iter().map(|i| name_of(input, i)).collect() };
        let viewed = &self.viewed;
        match viewed.len() {
            0 => {}
            1 => parts.push(format!("viewed {}", name_of(input, &viewed[0]))),
            n if n <= 4 => {
                let what = shared_category(input, viewed).unwrap_or_else(|| "products".into());
                parts.push(format!(
                    "compared {} {what} ({})",
                    number_word(n),
                    list(&names(viewed))
                ));
            }
            n => parts.push(format!("browsed {n} products")),
        }
        if !cart.is_empty() {
            let what = if cart.len() == 1 && viewed.len() > 1 && viewed.contains(&cart[0]) {
                format!("one ({})", name_of(input, &cart[0]))
            } else {
                list(&names(cart))
            };
            parts.push(format!("added {what} to the cart"));
        }
        if !self.removed.is_empty() {
            parts.push(format!("removed {}", list(&names(&self.removed))));
        }
        for f in &self.failures {
            parts.push(format!("hit \"{f}\""));
        }
        if self.support {
            parts.push("looked for help".into());
        }
        parts
    }

    /// How the session ended, adding the phrase that says so to `parts`.
    fn outcome(&self, cart: &[String], parts: &mut Vec<String>) -> &'static str {
        let pages = &self.pages;
        if let Some(o) = &self.order {
            let amount = o
                .split_whitespace()
                .nth(2)
                .map(|a| format!(" for {a}"))
                .unwrap_or_default();
            parts.push(format!("completed the order{amount}"));
            "purchased"
        } else if self.checkout {
            let at = if self.payment {
                "payment"
            } else if self.shipping {
                "shipping"
            } else {
                "the start of checkout"
            };
            parts.push(format!("left at {at}"));
            "abandoned_checkout"
        } else if !cart.is_empty() {
            parts.push("left without checking out".into());
            "abandoned_cart"
        } else if self.support {
            "support"
        } else if self.viewed.is_empty() && self.searches.is_empty() && pages.len() <= 1 {
            if let Some(p) = pages.first() {
                parts.push(format!("opened {p} and left"));
            }
            "bounced"
        } else {
            if self.viewed.is_empty() && !pages.is_empty() {
                parts.push(format!(
                    "read {} pages ({})",
                    pages.len(),
                    list(&pages.iter().take(3).cloned().collect::<Vec<_>>())
                ));
            }
            "browsed"
        }
    }

    fn intent(&self, cart: &[String]) -> &'static str {
        if self.order.is_some() || self.checkout || !cart.is_empty() {
            "purchase"
        } else if self.support {
            "support"
        } else if self.viewed.len() >= 2 || !self.searches.is_empty() {
            "research"
        } else {
            "browse"
        }
    }

    fn sentiment(&self) -> &'static str {
        let order = &self.order;
        if !self.failures.is_empty() && order.is_none() || self.support && order.is_none() {
            "negative"
        } else if order.is_some() {
            "positive"
        } else {
            "neutral"
        }
    }
}

/// Who the visitor was: "A returning visitor on mobile from google".
fn visitor(input: &EnrichInput) -> String {
    let who = match input.is_returning {
        Some(true) => "A returning visitor",
        Some(false) => "A new visitor",
        None => "A visitor",
    };
    let device = input
        .device_type
        .as_deref()
        .map(|d| format!(" on {d}"))
        .unwrap_or_default();
    let source = input
        .traffic_source
        .as_deref()
        .filter(|s| *s != "direct")
        .map(|s| format!(" from {s}"))
        .unwrap_or_default();
    format!("{who}{device}{source}")
}

fn web(input: &EnrichInput) -> Answer {
    let seen = Seen::read(input);
    let cart = seen.cart();
    let mut parts = seen.activity(input, &cart);
    let outcome = seen.outcome(&cart, &mut parts);
    let mut product_ids = Vec::new();
    for id in seen
        .ordered
        .iter()
        .chain(cart.iter())
        .chain(seen.viewed.iter())
    {
        push_unique(&mut product_ids, id);
    }
    let what = if parts.is_empty() {
        format!(
            "had {} events without product activity",
            input.timeline.len()
        )
    } else {
        parts.join(", ")
    };
    let description = format!("{} {what}.", visitor(input));
    let confidence = match outcome {
        "purchased" | "abandoned_checkout" | "abandoned_cart" => 0.9,
        "browsed" if !seen.viewed.is_empty() => 0.75,
        "bounced" => 0.6,
        _ => 0.65,
    };
    Answer {
        description,
        intent: seen.intent(&cart).into(),
        sentiment: seen.sentiment().into(),
        outcome: outcome.into(),
        product_ids,
        confidence,
    }
}

pub(crate) fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

const POSITIVE: &[&str] = &[
    "love",
    "great",
    "amazing",
    "happy",
    "excellent",
    "perfect",
    "awesome",
    "recommend",
    "best",
    "nice",
    "like it",
    "impressed",
];
const NEGATIVE: &[&str] = &[
    "broken",
    "hate",
    "bad",
    "refund",
    "disappointed",
    "terrible",
    "awful",
    "worst",
    "return it",
    "too expensive",
    "complain",
    "angry",
    "doesn't work",
    "does not work",
    "stopped working",
];
const BOUGHT: &[&str] = &[
    "bought", "paid", "purchase", "checkout", "till", "receipt", "ordered",
];
const HELP: &[&str] = &[
    "asked",
    "question",
    "help",
    "staff",
    "assistant",
    "where is",
];
const TRIED: &[&str] = &[
    "tried",
    "picked up",
    "looked at",
    "tested",
    "held",
    "compared",
];

fn has_any(text: &str, words: &[&str]) -> usize {
    words.iter().filter(|w| text.contains(*w)).count()
}

/// Social posts' engagement summed over the session: `; reach: 12 likes,
/// 4 replies, 6 reposts` from the ` (likes 5, replies 2, …)` the
/// sessionizer appends to each post (empty when none has any).
fn reach(input: &EnrichInput) -> String {
    let keys = ["likes", "replies", "reposts"];
    let mut sums = [0i64; 3];
    let mut any = false;
    for TimelineEntry { detail: d, .. } in &input.timeline {
        let Some(inner) = d
            .trim_end()
            .strip_suffix(')')
            .and_then(|t| t.rsplit_once(" (").map(|(_, m)| m))
        else {
            continue;
        };
        for part in inner.split(", ") {
            let Some((k, v)) = part.split_once(' ') else {
                continue;
            };
            if let (Some(i), Ok(n)) = (keys.iter().position(|x| *x == k), v.parse::<i64>()) {
                sums[i] += n;
                any = true;
            }
        }
    }
    if !any {
        return String::new();
    }
    let parts: Vec<String> = keys
        .iter()
        .zip(sums)
        .map(|(k, n)| format!("{n} {k}"))
        .collect();
    format!("; reach: {}", parts.join(", "))
}

/// CCTV and social sessions: what the text says about which products.
fn transcript(input: &EnrichInput) -> Answer {
    let text: String = input
        .timeline
        .iter()
        .map(|e| e.detail.to_lowercase())
        .collect::<Vec<_>>()
        .join(" \n ");
    let mut product_ids = Vec::new();
    for c in &input.candidates {
        let name = c.name.to_lowercase();
        let sku_hit = c
            .sku
            .as_deref()
            .is_some_and(|s| s.len() >= 3 && text.contains(&s.to_lowercase()));
        if (name.len() >= 4 && text.contains(&name)) || sku_hit {
            push_unique(&mut product_ids, &c.product_id);
        }
    }
    for id in named_by_similarity(input) {
        push_unique(&mut product_ids, &id);
    }
    let (pos, neg) = (has_any(&text, POSITIVE), has_any(&text, NEGATIVE));
    let sentiment = if neg > pos {
        "negative"
    } else if pos > neg {
        "positive"
    } else {
        "neutral"
    };
    let names: Vec<String> = product_ids.iter().map(|i| name_of(input, i)).collect();
    let mentions = if names.is_empty() {
        "no catalog product".to_string()
    } else {
        list(&names)
    };
    let (description, intent, outcome) = if input.channel == "cctv" {
        in_store(input, &text, &mentions, sentiment)
    } else {
        let outcome = if product_ids.is_empty() {
            "mentioned"
        } else {
            "engaged"
        };
        (
            social_posts(input, &mentions, sentiment),
            "engagement",
            outcome,
        )
    };
    Answer {
        description: capitalize(&description),
        intent: intent.into(),
        sentiment: sentiment.into(),
        outcome: outcome.into(),
        confidence: if product_ids.is_empty() { 0.5 } else { 0.7 },
        product_ids,
    }
}

/// Least offline similarity between a text and a product's name for the
/// offline model to say the text names it.
pub const NAMING_SIMILARITY: f32 = 0.4;

/// Products the session's texts name only by a paraphrase: for each text
/// that names no candidate exactly, the candidate that came by similarity
/// ([`Candidate::similarity`]) whose name is nearest to it, if near enough
/// ([`NAMING_SIMILARITY`], offline vectors: deterministic whatever
/// embedder found the candidates).
fn named_by_similarity(input: &EnrichInput) -> Vec<String> {
    let similar: Vec<&Candidate> = input
        .candidates
        .iter()
        .filter(|c| c.similarity.is_some())
        .collect();
    if similar.is_empty() {
        return Vec::new();
    }
    let e = super::embed::OfflineEmbedder::new(256);
    let names: Vec<Vec<f32>> = similar.iter().map(|c| e.vector(&c.name)).collect();
    let refs: Vec<&[f32]> = names.iter().map(Vec::as_slice).collect();
    let mut out = Vec::new();
    for entry in &input.timeline {
        let text = entry.detail.to_lowercase();
        let exact = input.candidates.iter().any(|c| {
            let name = c.name.to_lowercase();
            name.len() >= 4 && text.contains(&name)
        });
        if exact {
            continue;
        }
        let said = crate::sessionize::similarity_text(&input.channel, &entry.detail);
        let best = super::embed::top_k(&e.vector(said), &refs, 1);
        if let Some((i, score)) = best.first() {
            if *score >= NAMING_SIMILARITY {
                push_unique(&mut out, &similar[*i].product_id);
            }
        }
    }
    out
}

/// A camera-hour's description, intent and outcome from its transcript
/// `text` (lower case) and the products it `mentions`.
fn in_store(
    input: &EnrichInput,
    text: &str,
    mentions: &str,
    sentiment: &str,
) -> (String, &'static str, &'static str) {
    let n = input.timeline.len();
    let place = input.source_ref.as_deref().unwrap_or("a camera");
    let bought = has_any(text, BOUGHT) > 0;
    let help = has_any(text, HELP) > 0;
    let tried = has_any(text, TRIED) > 0;
    let what = if bought {
        "shoppers bought"
    } else if tried {
        "shoppers tried"
    } else if help {
        "shoppers asked about"
    } else {
        "shoppers were near"
    };
    (
        format!(
            "In-store at {place}: over {n} transcript segment{}, {what} {mentions}; the tone was {sentiment}.",
            if n == 1 { "" } else { "s" }
        ),
        if bought {
            "purchase"
        } else if help {
            "support"
        } else if tried {
            "research"
        } else {
            "browse"
        },
        if bought { "purchased" } else { "engaged" },
    )
}

/// A collector run's description from the products its posts `mention`
/// and their reach.
fn social_posts(input: &EnrichInput, mentions: &str, sentiment: &str) -> String {
    let n = input.timeline.len();
    let platform = input.visitor_id.as_deref().unwrap_or("social media");
    format!(
        "{n} {platform} post{} captured in one run mention {mentions}; the tone was {sentiment}{}.",
        if n == 1 { "" } else { "s" },
        reach(input)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(id: &str, name: &str, cat: &str) -> Candidate {
        Candidate {
            product_id: id.into(),
            name: name.into(),
            sku: Some(format!("SKU-{id}")),
            category: Some(cat.into()),
            price: Some(199.0),
            currency: Some("USD".into()),
            url: None,
            similarity: None,
        }
    }

    fn input(timeline: Vec<(i64, &str, &str)>) -> EnrichInput {
        EnrichInput {
            task: "enrich".into(),
            channel: "web".into(),
            organization: "Northwind Audio".into(),
            organization_context: None,
            visitor_id: Some("v1".into()),
            source_ref: None,
            started_at: "2026-11-01T10:00:00Z".into(),
            duration_s: 600,
            device_type: Some("mobile".into()),
            traffic_source: Some("google".into()),
            is_returning: Some(false),
            timeline: timeline
                .into_iter()
                .map(|(o, k, d)| TimelineEntry::new(o, k, d))
                .collect(),
            candidates: vec![
                cand("p1", "Aria Headphones", "Audio > Headphones"),
                cand("p2", "Nimbus Headphones", "Audio > Headphones"),
            ],
        }
    }

    #[test]
    fn social_posts_name_products_and_sum_their_reach() {
        let mut i = input(vec![
            (
                0,
                "mastodon",
                "@bob: Love my Aria Headphones (likes 5, replies 2, reposts 3)",
            ),
            (
                10,
                "mastodon",
                "@ann: the Aria Headphones are great (likes 1)",
            ),
        ]);
        i.channel = "social".into();
        i.visitor_id = Some("mastodon".into());
        let a = transcript(&i);
        assert_eq!(a.product_ids, vec!["p1".to_string()]);
        assert_eq!(a.sentiment, "positive");
        assert!(
            a.description
                .contains("reach: 6 likes, 2 replies, 3 reposts"),
            "{}",
            a.description
        );
    }

    #[test]
    fn an_abandoned_checkout_reads_like_a_person_wrote_it() {
        let a = enrich_answer(&input(vec![
            (0, "page", "/"),
            (10, "Product Viewed", "p1 Aria Headphones"),
            (40, "Product Viewed", "p2 Nimbus Headphones"),
            (90, "Product Added", "p1 Aria Headphones"),
            (120, "Checkout Started", ""),
            (
                150,
                "Checkout Step Viewed",
                "step=2 shipping_method=standard",
            ),
        ]));
        assert_eq!(
            a.description,
            "A new visitor on mobile from google compared two headphones (Aria Headphones and Nimbus Headphones), added one (Aria Headphones) to the cart, left at shipping."
        );
        assert_eq!(a.outcome, "abandoned_checkout");
        assert_eq!(a.intent, "purchase");
        assert_eq!(a.product_ids, vec!["p1", "p2"]);
    }

    #[test]
    fn same_input_same_answer_and_orders_are_purchases() {
        let i = input(vec![
            (0, "Product Viewed", "p2 Nimbus Headphones"),
            (5, "Product Added", "p2 Nimbus Headphones"),
            (9, "Payment Failed", "reason=card_declined"),
            (20, "Order Completed", "order o-1 249.00"),
        ]);
        let a = enrich_answer(&i);
        assert_eq!(a, enrich_answer(&i));
        assert_eq!(a.outcome, "purchased");
        assert_eq!(a.sentiment, "positive");
        assert!(
            a.description.contains("completed the order for 249.00"),
            "{}",
            a.description
        );
        assert!(
            a.description.contains("Payment Failed"),
            "{}",
            a.description
        );
    }

    #[test]
    fn transcripts_find_catalog_products_by_name() {
        let mut i = input(vec![(
            0,
            "segment",
            "A shopper tried the Aria Headphones and said they love them",
        )]);
        i.channel = "cctv".into();
        i.source_ref = Some("store-1/cam-2".into());
        let a = enrich_answer(&i);
        assert_eq!(a.product_ids, vec!["p1"]);
        assert_eq!(a.sentiment, "positive");
        assert_eq!(a.intent, "research");
    }

    #[test]
    fn a_paraphrase_is_named_when_it_came_by_similarity() {
        let mut i = input(vec![
            (
                0,
                "mastodon",
                "@fan: these aria noisecancelling headphone are great",
            ),
            (5, "mastodon", "@other: the weather is nice"),
        ]);
        i.channel = "social".into();
        i.candidates = vec![
            cand("p1", "Aria Noise-Cancelling Headphones", "Audio"),
            cand("p2", "Nimbus Speaker", "Audio"),
        ];
        // Without a similarity score, only exact names count.
        assert!(transcript(&i).product_ids.is_empty());
        for c in &mut i.candidates {
            c.similarity = Some(0.5);
        }
        let a = transcript(&i);
        assert_eq!(a.product_ids, ["p1"]);
        assert!(
            a.description.contains("Aria Noise-Cancelling Headphones"),
            "{}",
            a.description
        );
        assert_eq!(transcript(&i), a, "deterministic");
    }
}
