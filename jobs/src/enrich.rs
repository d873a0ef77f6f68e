//! Enrich: sessions → AI-written `interactions`.
//!
//! For each session of the window the job builds one prompt — the
//! organization's name and context, the session's channel, times, device,
//! source and timeline, and candidate products from the catalog (ids the
//! session referenced, product pages it visited, product names or SKUs its
//! text mentions) — and asks the configured provider for a JSON answer
//! (description, intent, sentiment, outcome, product ids, confidence),
//! validated against [`answer_schema`]. Answers of paid providers are cached
//! in `llm_cache` by provider, model and prompt hash: a re-run over the same
//! input makes zero provider calls. Each org has a daily token budget
//! (`ai.daily_token_budget`, 0 = unlimited).
//!
//! The response schema sent to the provider lists the session's candidate
//! ids as an `enum` of `product_ids` (see [`answer_schema_for`]), so a
//! provider that honours schemas cannot name another product. An answer
//! that still names ids outside the candidates is asked again once, with
//! the reason; if the next answer does too, the unknown ids are dropped and
//! the interaction is kept. The `interactions` table has no notes column,
//! so the validation note goes to `failed_events` (reason code
//! [`UNKNOWN_PRODUCTS_DROPPED`], the session id as `message_id`, and a JSON
//! `payload` with the interaction id, the dropped and kept ids and the
//! model's answer); the run report counts these notes.
//!
//! Transient errors (429, 5xx, timeouts) are retried and invalid answers
//! re-asked on separate budgets, counted apart in the report
//! (`transient_retries`, `reasks`) and in every failure's reason and payload.
//! A session whose answer stays invalid after its re-asks, whose provider
//! stays unavailable or refuses, or whose org is over budget gets no
//! interaction: the failure is written to `failed_events` (source
//! `job:enrich`, the session id as `message_id`) and the next incremental
//! run retries it. The window's
//! interactions are replaced exactly (replace-where on `started_at`), so a
//! re-run with another provider or model replaces them and the previous
//! version stays reachable by time travel.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Duration, DurationRound, Utc};
use crow_lake::batch::{batches_to_rows, rows_to_batch, ts_micros};
use crow_lake::ids::sha256_hex;
use crow_lake::Lake;
use crow_schemas::rows::{FailedEventRow, FailureSource, InteractionRow};
use crow_schemas::timeline::{self, TimelineEntry};
use crow_schemas::{FAILED_EVENTS, INTERACTIONS, LLM_CACHE};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::ai::embed::Embedder;
use crate::ai::{call_checked, AiRequest, Check, Outcome, Provider, RetryPolicy};
use crate::job::{Job, JobContext, Planned, Request, RunWindow, Split};
use crate::{runs, sessionize, Params, ProgressRef, Result, Trigger, Window};

/// Name of the job in the ledger.
pub const JOB: &str = crate::JobName::Enrich.as_str();
/// Version of the prompt template; part of every prompt hash.
pub const PROMPT_VERSION: &str = "enrich-v1";
/// Candidate products given to the model per session.
pub const MAX_CANDIDATES: usize = 20;
/// Reason code of the validation note written when unknown product ids
/// were dropped from a kept interaction.
pub const UNKNOWN_PRODUCTS_DROPPED: crow_schemas::rows::FailureCode =
    crow_schemas::rows::FailureCode::AiUnknownProductsDropped;
/// Timeline entries put into a prompt.
pub const MAX_PROMPT_TIMELINE: usize = 120;

/// Allowed intents.
pub const INTENTS: &[&str] = &[
    "purchase",
    "research",
    "browse",
    "support",
    "engagement",
    "other",
];
/// Allowed sentiments.
pub const SENTIMENTS: &[&str] = &["positive", "neutral", "negative"];
/// Allowed outcomes.
pub const OUTCOMES: &[&str] = &[
    "purchased",
    "abandoned_checkout",
    "abandoned_cart",
    "browsed",
    "bounced",
    "support",
    "engaged",
    "mentioned",
    "other",
];

/// A catalog product offered to the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct Candidate {
    pub product_id: String,
    pub name: String,
    pub sku: Option<String>,
    pub category: Option<String>,
    pub price: Option<f64>,
    pub currency: Option<String>,
    pub url: Option<String>,
    /// Cosine similarity of the session's text to the product, when it
    /// became a candidate by similarity ([`crate::embed`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub similarity: Option<f64>,
}

/// The structured input of one enrich request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct EnrichInput {
    pub task: String,
    pub channel: String,
    pub organization: String,
    pub organization_context: Option<String>,
    pub visitor_id: Option<String>,
    pub source_ref: Option<String>,
    pub started_at: String,
    pub duration_s: i64,
    pub device_type: Option<String>,
    pub traffic_source: Option<String>,
    pub is_returning: Option<bool>,
    /// The session's timeline (`[offset_s, kind, detail]` entries in JSON).
    pub timeline: Vec<TimelineEntry>,
    pub candidates: Vec<Candidate>,
}

/// The answer every provider must give.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct Answer {
    pub description: String,
    pub intent: String,
    pub sentiment: String,
    pub outcome: String,
    pub product_ids: Vec<String>,
    pub confidence: f64,
}

/// JSON Schema of [`Answer`].
pub fn answer_schema() -> serde_json::Value {
    json!({
        "type": "object",
        "properties": {
            "description": {"type": "string", "description": "What the person did, with which products, in one or two plain sentences."},
            "intent": {"type": "string", "enum": INTENTS},
            "sentiment": {"type": "string", "enum": SENTIMENTS},
            "outcome": {"type": "string", "enum": OUTCOMES},
            "product_ids": {"type": "array", "items": {"type": "string"}, "description": "Ids of the candidate products involved; only ids from the candidate list."},
            "confidence": {"type": "number", "description": "0 to 1."}
        },
        "required": ["description", "intent", "sentiment", "outcome", "product_ids", "confidence"],
        "additionalProperties": false
    })
}

/// [`answer_schema`] for one session: `product_ids` may only hold the ids
/// of its candidates (an `enum`, which Gemini's `responseSchema` and
/// OpenAI's `json_schema` both enforce). Without candidates the schema is
/// the general one (an empty `enum` is not accepted by the providers) and
/// validation drops whatever ids the model names.
pub fn answer_schema_for(candidates: &[Candidate]) -> serde_json::Value {
    let mut schema = answer_schema();
    if !candidates.is_empty() {
        let ids: Vec<&str> = candidates.iter().map(|c| c.product_id.as_str()).collect();
        schema["properties"]["product_ids"]["items"]["enum"] = json!(ids);
    }
    schema
}

/// Check an answer text against the schema and the session's candidates.
pub fn validate(text: &str, candidates: &[Candidate]) -> std::result::Result<Answer, String> {
    match check(text, candidates) {
        Check::Valid(a) => Ok(a),
        Check::Repairable { why, .. } | Check::Invalid(why) => Err(why),
    }
}

/// Like [`validate`], but an answer whose only fault is product ids outside
/// the candidates is [`Check::Repairable`]: the value is the answer without
/// those ids.
pub fn check(text: &str, candidates: &[Candidate]) -> Check<Answer> {
    let mut a = match parse_answer(text) {
        Ok(a) => a,
        Err(why) => return Check::Invalid(why),
    };
    let unknown = unknown_ids(&a, candidates);
    if unknown.is_empty() {
        return Check::Valid(a);
    }
    let why = match unknown.as_slice() {
        [one] => format!("product id `{one}` is not one of the candidates"),
        many => format!(
            "product ids {} are not among the candidates",
            many.iter()
                .map(|p| format!("`{p}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    a.product_ids
        .retain(|p| candidates.iter().any(|c| &c.product_id == p));
    Check::Repairable { value: a, why }
}

/// The answer's product ids that are not candidates, each once.
fn unknown_ids(a: &Answer, candidates: &[Candidate]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for p in &a.product_ids {
        if !candidates.iter().any(|c| &c.product_id == p) && !out.contains(p) {
            out.push(p.clone());
        }
    }
    out
}

/// Parse an answer and check everything but its product ids.
fn parse_answer(text: &str) -> std::result::Result<Answer, String> {
    let text = text.trim();
    // Some models wrap JSON in a code fence despite the response format.
    let text = text
        .strip_prefix("```json")
        .or_else(|| text.strip_prefix("```"))
        .and_then(|t| t.strip_suffix("```"))
        .map_or(text, str::trim);
    let a: Answer =
        serde_json::from_str(text).map_err(|e| format!("not the expected JSON object: {e}"))?;
    if a.description.trim().is_empty() {
        return Err("description is empty".into());
    }
    if a.description.chars().count() > 2000 {
        return Err("description is longer than 2000 characters".into());
    }
    if !INTENTS.contains(&a.intent.as_str()) {
        return Err(format!("intent `{}` is not one of {INTENTS:?}", a.intent));
    }
    if !SENTIMENTS.contains(&a.sentiment.as_str()) {
        return Err(format!(
            "sentiment `{}` is not one of {SENTIMENTS:?}",
            a.sentiment
        ));
    }
    if !OUTCOMES.contains(&a.outcome.as_str()) {
        return Err(format!(
            "outcome `{}` is not one of {OUTCOMES:?}",
            a.outcome
        ));
    }
    if !(0.0..=1.0).contains(&a.confidence) || !a.confidence.is_finite() {
        return Err(format!("confidence {} is not within 0..1", a.confidence));
    }
    Ok(a)
}

/// What to enrich.
#[derive(Debug, Clone)]
pub struct Options {
    /// Only this organization (None: all).
    pub org: Option<String>,
    /// Explicit window of session starts (None: incremental).
    pub window: Option<Window>,
    /// How the run was started.
    pub trigger: Trigger,
    /// Retries per call.
    pub policy: RetryPolicy,
    /// Concurrent provider calls.
    pub concurrency: usize,
    /// Tokens per org per UTC day (0: unlimited).
    pub daily_token_budget: u64,
    /// Catalog candidates by similarity per free-text session
    /// (`ai.embeddings.candidates`; 0: none).
    pub similar_candidates: usize,
    /// Their least cosine similarity (`ai.embeddings.min_score`).
    pub min_similarity: f64,
}

/// What a run did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// The run and its window.
    #[serde(flatten)]
    pub run: RunWindow,
    /// Provider.
    pub provider: String,
    /// Model.
    pub model: String,
    /// Sessions in the window.
    pub sessions: u64,
    /// Interactions written.
    pub interactions: u64,
    /// Answers taken from the cache.
    pub cache_hits: u64,
    /// Calls made to the provider (retries and re-asks included).
    pub provider_calls: u64,
    /// Calls repeated after a transient error (429, 5xx, timeouts).
    pub transient_retries: u64,
    /// Calls repeated because an answer was invalid (malformed, off schema,
    /// unknown product ids).
    pub reasks: u64,
    /// Interactions kept after dropping product ids that were not among the
    /// candidates (each noted in failed_events as
    /// `ai_unknown_products_dropped`).
    pub validation_notes: u64,
    /// Product ids dropped from kept interactions.
    pub dropped_product_ids: u64,
    /// Sessions that got no interaction (recorded in failed_events).
    pub failures: u64,
    /// Prompt tokens spent by this run.
    pub input_tokens: u64,
    /// Completion tokens spent by this run.
    pub output_tokens: u64,
    /// Organizations whose daily token budget ran out in this run (their
    /// admins are notified, once a day).
    pub over_budget: Vec<String>,
    /// Entities embedded by this run (products, interactions, social
    /// captures whose text changed; see [`crate::embed`]).
    #[serde(default)]
    pub embedded: u64,
    /// Why embedding failed, if it did (enrich goes on without the
    /// similarity candidates, and the next run embeds what is missing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding_error: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
struct SessionIn {
    org_id: String,
    session_id: String,
    channel: String,
    visitor_id: Option<String>,
    source_ref: Option<String>,
    #[serde(with = "ts_micros")]
    started_at: DateTime<Utc>,
    #[serde(with = "ts_micros")]
    ended_at: DateTime<Utc>,
    device_type: Option<String>,
    traffic_source: Option<String>,
    is_returning: Option<bool>,
    #[serde(default)]
    product_ids: Option<Vec<String>>,
    timeline: String,
    #[serde(default)]
    source_ids: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
struct OrgIn {
    org_id: String,
    name: String,
    context: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
struct ProductIn {
    org_id: String,
    product_id: String,
    sku: Option<String>,
    name: String,
    url: Option<String>,
    category: Option<String>,
    price: Option<f64>,
    currency: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct CacheRow {
    org_id: String,
    cache_key: String,
    provider: String,
    model: String,
    prompt_hash: String,
    response: String,
    input_tokens: i64,
    output_tokens: i64,
    #[serde(with = "ts_micros")]
    created_at: DateTime<Utc>,
}

/// The enrich job, configured for one run with its AI provider.
pub struct Enrich {
    provider: Arc<dyn Provider>,
    /// The embedder (None: `[ai.embeddings]` could not be set up; enrich
    /// runs without similarity candidates).
    embedder: Option<Arc<dyn Embedder>>,
    opts: Options,
}

impl std::fmt::Debug for Enrich {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enrich")
            .field("provider", &self.provider.name())
            .field("opts", &self.opts)
            .finish()
    }
}

#[async_trait]
impl Job for Enrich {
    const NAME: &'static str = JOB;
    const SPLIT: Option<Split> = Some(Split::Days);
    const IDLE: &'static str = "no session closed since its last run";
    type Plan = Window;
    type Report = Report;

    fn build(ctx: &JobContext, req: &Request) -> Result<Self> {
        let ai = &ctx.config.ai;
        let embedder = match crate::ai::embed::from_config(&ai.embeddings) {
            Ok(e) => Some(e),
            Err(e) => {
                tracing::warn!(error = %e, "enrich runs without embeddings");
                None
            }
        };
        Ok(Enrich {
            provider: ctx.provider()?,
            embedder,
            opts: Options {
                org: req.org.clone(),
                window: req.window,
                trigger: req.trigger,
                policy: RetryPolicy::new(ai.max_retries),
                concurrency: ai.concurrency,
                daily_token_budget: ai.daily_token_budget,
                similar_candidates: ai.embeddings.candidates,
                min_similarity: ai.embeddings.min_score,
            },
        })
    }

    async fn plan(&self, ctx: &JobContext, _req: &Request) -> Result<Planned<Window, Report>> {
        let incremental = async {
            let w = incremental_window(&ctx.lake, self.opts.org.as_deref()).await;
            w.map(|w| w.map(|w| (w, w)))
        };
        let idle = Report {
            provider: self.provider.name().into(),
            model: self.provider.model().into(),
            ..Report::default()
        };
        Self::plan_window(self.opts.window.map(|w| (w, w)), incremental, idle).await
    }

    async fn compute(
        &self,
        ctx: &JobContext,
        _req: &Request,
        window: Window,
        run_id: &str,
    ) -> Result<(Window, Report)> {
        let report = enrich_window(
            &ctx.lake,
            (self.provider.clone(), self.embedder.clone()),
            &self.opts,
            window,
            run_id,
            &ctx.progress,
        )
        .await?;
        Ok((
            window,
            Report {
                run: RunWindow {
                    run_id: run_id.to_string(),
                    ..report.run
                },
                ..report
            },
        ))
    }

    fn rows(r: &Report) -> (u64, u64) {
        (r.sessions, r.interactions)
    }

    async fn finished(&self, ctx: &JobContext, report: &Report) {
        notify_over_budget(&ctx.lake, &report.over_budget, self.opts.daily_token_budget).await;
    }
}

/// Tell each organization's admins that its AI budget for today is used
/// up, once a day (the link names the day). Failures are logged only.
async fn notify_over_budget(lake: &Lake, orgs: &[String], budget: u64) {
    let today = Utc::now().date_naive();
    for org in orgs {
        let notice = crow_lake::notify::Notice {
            kind: "ai_budget_exhausted",
            title: format!("The AI token budget for {today} is used up"),
            body: Some(format!(
                "Sessions get no interaction until tomorrow's budget ({budget} tokens, `ai.daily_token_budget`); they are enriched by the first run after it resets."
            )),
            link: Some(format!("/api/v1/usage?from={today}")),
        };
        if let Err(e) = crow_lake::notify::notify_role_once(lake, org, "admin", &notice).await {
            tracing::warn!(org, error = %e, "enrich: could not notify the exhausted budget");
        }
    }
}

/// The incremental window: from the enrich watermark — moved back to the
/// earliest window sessionize rewrote since the last enrich run, and to
/// the earliest session still without an interaction — up to the
/// sessionize watermark.
async fn incremental_window(lake: &Lake, org: Option<&str>) -> Result<Option<Window>> {
    let Some(end) = runs::watermark(lake, sessionize::JOB).await? else {
        return Ok(None);
    };
    let mut params = Params::default();
    let org_cond = params.org("s.org_id", org);
    let mut start = runs::watermark(lake, JOB).await?;
    let last = runs::last_succeeded(lake, JOB).await?;
    let rewritten = match &last {
        Some(r) => runs::succeeded_since(lake, sessionize::JOB, r.started_at).await?,
        None => Vec::new(),
    };
    for r in &rewritten {
        start = Some(start.map_or(r.window_start, |s| s.min(r.window_start)));
    }
    // Sessions without an interaction (new, or failed last time).
    let sql = format!(
        "SELECT min(s.started_at) AS t FROM sessions s
         WHERE s.started_at < {} {org_cond}
           AND NOT EXISTS (SELECT 1 FROM interactions i WHERE i.session_id = s.session_id)",
        params.ts("end", end)
    );
    let (_, batches) = params.run(lake, &sql).await?;
    #[derive(Deserialize)]
    struct T {
        #[serde(with = "ts_micros::option", default)]
        t: Option<DateTime<Utc>>,
    }
    let missing = batches_to_rows::<T>(&batches)?
        .into_iter()
        .next()
        .and_then(|t| t.t);
    if let Some(m) = missing {
        let m = m.duration_trunc(Duration::days(1)).unwrap_or(m);
        start = Some(start.map_or(m, |s| s.min(m)));
    }
    Ok(start
        .map(|start| Window { start, end })
        .filter(|w| !w.is_empty()))
}

async fn enrich_window(
    lake: &Lake,
    (provider, embedder): (Arc<dyn Provider>, Option<Arc<dyn Embedder>>),
    opts: &Options,
    window: Window,
    run_id: &str,
    progress: &ProgressRef,
) -> Result<Report> {
    let mut params = Params::default();
    let org_cond = params.org("org_id", opts.org.as_deref());
    let org = (org_cond.as_str(), &params);
    let ctx = lake.session().await?;
    let inputs = load_inputs(&ctx, window, org).await?;
    let free_text = inputs.sessions.iter().any(|s| is_free_text(&s.channel));
    let (semantic, embedding_error) =
        Semantic::for_run(lake, embedder.as_ref(), opts, free_text).await;
    let products_embedded = semantic.as_ref().map_or(0, |s| s.embedded);
    let (pname, model) = (provider.name().to_string(), provider.model().to_string());
    let cacheable = provider.cacheable();
    let (cache, used) = if cacheable {
        load_cache(&ctx, &pname, &model, org).await?
    } else {
        (HashMap::new(), HashMap::new())
    };
    let caller = Caller {
        provider: provider.as_ref(),
        opts,
        cache,
        used: Mutex::new(used),
        pname: pname.clone(),
        model: model.clone(),
        cacheable,
        semantic,
    };

    progress.phase(
        &format!("enriching sessions with {pname}/{model}"),
        inputs.sessions.len() as u64,
    );
    let mut report = Report {
        provider: pname.clone(),
        model: model.clone(),
        run: RunWindow::of(window),
        sessions: inputs.sessions.len() as u64,
        embedding_error,
        embedded: products_embedded,
        ..Report::default()
    };
    let run = RunInfo {
        run_id,
        pname: &pname,
        model: &model,
        now: Utc::now(),
    };
    let Inputs {
        sessions,
        orgs,
        catalog,
    } = inputs;
    let caller = &caller;
    let tasks = sessions.into_iter().map(|s| {
        let org = orgs.get(&s.org_id).cloned();
        let products = catalog.get(&s.org_id).map(Vec::as_slice).unwrap_or(&[]);
        caller.enrich(s, org, products)
    });
    let mut stream = futures::stream::iter(tasks).buffer_unordered(opts.concurrency.max(1));
    let mut out = Collected::default();
    while let Some(done) = stream.next().await {
        progress.inc(1);
        out.add(done, &mut report, &run);
    }
    progress.phase("writing interactions", 0);
    write_outputs(lake, window, opts.org.as_deref(), out, &mut report).await?;
    if let Some(e) = &embedder {
        progress.phase("embedding products, interactions and social captures", 0);
        embed_after(lake, e.as_ref(), opts, &mut report).await;
    }
    Ok(report)
}

/// Embed what changed (the window's interactions, new captures, changed
/// products) after the interactions were written; a failure is reported,
/// not fatal: the next run embeds what is missing.
async fn embed_after(lake: &Lake, e: &dyn Embedder, opts: &Options, report: &mut Report) {
    let kinds = crate::embed::Kind::ALL;
    match crate::embed::sync(lake, e, opts.org.as_deref(), &kinds, opts.policy).await {
        Ok(r) => report.embedded += r.embedded,
        Err(err) => {
            tracing::warn!(error = %err, "embedding after enrich failed");
            report.embedding_error = Some(err.to_string());
        }
    }
}

/// Whether a channel's sessions are free text (social posts, CCTV
/// transcripts), whose catalog candidates also come by similarity.
fn is_free_text(channel: &str) -> bool {
    matches!(channel, "social" | "cctv")
}

/// Texts of a session embedded to find similar products.
const MAX_SIMILARITY_TEXTS: usize = 20;

/// Similarity candidates: the embedder and the catalog's vectors.
struct Semantic {
    embedder: Arc<dyn Embedder>,
    products: HashMap<String, crate::embed::VectorSet>,
    k: usize,
    min_score: f64,
    policy: RetryPolicy,
    /// Products embedded while preparing.
    embedded: u64,
}

impl Semantic {
    /// The similarity candidates of a run with `free_text` sessions, when
    /// an embedder is configured and candidates are asked for; or why
    /// there are none (the run goes on with exact matches only).
    async fn for_run(
        lake: &Lake,
        embedder: Option<&Arc<dyn Embedder>>,
        opts: &Options,
        free_text: bool,
    ) -> (Option<Semantic>, Option<String>) {
        let Some(e) = embedder.filter(|_| free_text && opts.similar_candidates > 0) else {
            return (None, None);
        };
        match Semantic::prepare(lake, e.clone(), opts).await {
            Ok(s) => (Some(s), None),
            Err(err) => {
                tracing::warn!(error = %err, "enrich runs without similarity candidates");
                (None, Some(err.to_string()))
            }
        }
    }

    /// Embed the catalog products that changed, then read their vectors.
    async fn prepare(lake: &Lake, embedder: Arc<dyn Embedder>, opts: &Options) -> Result<Self> {
        use crate::embed::Kind;
        let org = opts.org.as_deref();
        let synced =
            crate::embed::sync(lake, embedder.as_ref(), org, &[Kind::Product], opts.policy).await?;
        let ctx = lake.session().await?;
        let products =
            crate::embed::load_vectors(&ctx, embedder.as_ref(), org, Kind::Product).await?;
        Ok(Semantic {
            embedder,
            products,
            k: opts.similar_candidates,
            min_score: opts.min_similarity,
            policy: opts.policy,
            embedded: synced.embedded,
        })
    }

    /// The products most similar to any text of the session (at least
    /// `min_score`), best first, at most `k`: (product id, score).
    async fn similar(&self, s: &SessionIn, timeline: &[TimelineEntry]) -> Vec<(String, f64)> {
        let Some(set) = self.products.get(&s.org_id) else {
            return Vec::new();
        };
        let texts: Vec<String> = timeline
            .iter()
            .map(|e| crate::sessionize::similarity_text(&s.channel, &e.detail).to_string())
            .filter(|d| !d.trim().is_empty())
            .take(MAX_SIMILARITY_TEXTS)
            .collect();
        let vectors =
            match crate::ai::embed::embed_all(self.embedder.as_ref(), &texts, self.policy).await {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(session = %s.session_id, error = %e, "no similarity candidates");
                    return Vec::new();
                }
            };
        let mut best: Vec<(String, f64)> = Vec::new();
        for v in &vectors {
            for (i, score) in set.nearest(v, self.k) {
                let score = f64::from(score);
                if score < self.min_score {
                    continue;
                }
                match best.iter_mut().find(|(id, _)| *id == set.ids[i]) {
                    Some(b) => b.1 = b.1.max(score),
                    None => best.push((set.ids[i].clone(), score)),
                }
            }
        }
        best.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        best.truncate(self.k);
        best
    }
}

/// What one run reads: the window's sessions, the organizations and their
/// catalogs.
struct Inputs {
    sessions: Vec<SessionIn>,
    orgs: HashMap<String, OrgIn>,
    catalog: HashMap<String, Vec<ProductIn>>,
}

async fn load_inputs(
    ctx: &crow_lake::datafusion::prelude::SessionContext,
    window: Window,
    (org_cond, org_params): (&str, &Params),
) -> Result<Inputs> {
    let mut params = org_params.clone();
    let sql = format!(
        "SELECT org_id, session_id, channel, visitor_id, source_ref, started_at, ended_at,
                device_type, traffic_source, is_returning, product_ids, timeline, source_ids
         FROM sessions WHERE started_at >= {} AND started_at < {} {org_cond}
         ORDER BY org_id, started_at, session_id",
        params.ts("start", window.start),
        params.ts("end", window.end)
    );
    let sessions: Vec<SessionIn> = batches_to_rows(&params.sql(ctx, &sql).await?.collect().await?)?;
    let orgs: HashMap<String, OrgIn> = batches_to_rows::<OrgIn>(
        &ctx.sql("SELECT org_id, name, context FROM organizations")
            .await?
            .collect()
            .await?,
    )?
    .into_iter()
    .map(|o| (o.org_id.clone(), o))
    .collect();
    let mut catalog: HashMap<String, Vec<ProductIn>> = HashMap::new();
    for p in batches_to_rows::<ProductIn>(
        &org_params.sql(ctx, &format!(
            "SELECT org_id, product_id, sku, name, url, category, price, currency FROM products WHERE TRUE {org_cond}"
        ))
        .await?
        .collect()
        .await?,
    )? {
        catalog.entry(p.org_id.clone()).or_default().push(p);
    }
    Ok(Inputs {
        sessions,
        orgs,
        catalog,
    })
}

/// The provider's cached answers (by cache key) and each organization's
/// tokens spent today.
async fn load_cache(
    ctx: &crow_lake::datafusion::prelude::SessionContext,
    pname: &str,
    model: &str,
    (org_cond, org_params): (&str, &Params),
) -> Result<(HashMap<String, CacheRow>, HashMap<String, u64>)> {
    let mut params = org_params.clone();
    let sql = format!(
        "SELECT * FROM llm_cache WHERE provider = {} AND model = {} {org_cond}",
        params.text("provider", pname),
        params.text("model", model)
    );
    let rows: Vec<CacheRow> = batches_to_rows(&params.sql(ctx, &sql).await?.collect().await?)?;
    let today = Utc::now()
        .duration_trunc(Duration::days(1))
        .unwrap_or_else(|_| Utc::now());
    #[derive(Deserialize)]
    struct Used {
        org_id: String,
        t: Option<i64>,
    }
    let mut used = HashMap::new();
    let mut params = Params::default();
    let sql = format!(
        "SELECT org_id, CAST(sum(input_tokens + output_tokens) AS BIGINT) AS t FROM llm_cache
         WHERE created_at >= {} GROUP BY org_id",
        params.ts("today", today)
    );
    for u in batches_to_rows::<Used>(&params.sql(ctx, &sql).await?.collect().await?)? {
        used.insert(u.org_id, u.t.unwrap_or(0).max(0) as u64);
    }
    Ok((
        rows.into_iter().map(|r| (r.cache_key.clone(), r)).collect(),
        used,
    ))
}

/// What every session's enrichment shares.
struct Caller<'a> {
    provider: &'a dyn Provider,
    opts: &'a Options,
    cache: HashMap<String, CacheRow>,
    /// Tokens spent today per organization (the budget).
    used: Mutex<HashMap<String, u64>>,
    pname: String,
    model: String,
    cacheable: bool,
    /// Similarity candidates for free-text sessions (None: off).
    semantic: Option<Semantic>,
}

impl Caller<'_> {
    /// One session's interaction: from the cache, refused by the budget,
    /// or from the provider (with its repairs and retries).
    async fn enrich(&self, s: SessionIn, org: Option<OrgIn>, products: &[ProductIn]) -> Done {
        // A timeline that does not read is the session's failure (in
        // failed_events with the reason), never an empty session described.
        let timeline = match timeline::parse(&s.timeline) {
            Ok(t) => t,
            Err(e) => {
                let why = format!("session {}: {e}", s.session_id);
                return Done::without_call(
                    s,
                    String::new(),
                    Err((crow_schemas::rows::FailureCode::InvalidTimeline, why)),
                    (0, 0),
                    false,
                );
            }
        };
        let similar = match &self.semantic {
            Some(sem) if is_free_text(&s.channel) => sem.similar(&s, &timeline).await,
            _ => Vec::new(),
        };
        let ask = self.ask(&s, timeline, org.as_ref(), (products, &similar));
        let prompt_hash = ask.prompt_hash.clone();
        if let Some(hit) = self.cache.get(&ask.cache_key) {
            if let Ok(answer) = validate(&hit.response, &ask.input.candidates) {
                let tokens = (
                    hit.input_tokens.max(0) as u64,
                    hit.output_tokens.max(0) as u64,
                );
                return Done::without_call(s, prompt_hash, Ok(answer), tokens, true);
            }
        }
        let budget = self.opts.daily_token_budget;
        if budget > 0 {
            let spent = self.spent_today(&s.org_id);
            if spent >= budget {
                let why = format!("the organization used {spent} of its {budget} AI tokens today");
                return Done::without_call(
                    s,
                    prompt_hash,
                    Err((crow_schemas::rows::FailureCode::AiBudgetExhausted, why)),
                    (0, 0),
                    false,
                );
            }
        }
        let Ask {
            req,
            input,
            cache_key,
            ..
        } = ask;
        let cands = input.candidates;
        let out = call_checked(self.provider, &req, self.opts.policy, |t| check(t, &cands)).await;
        self.answered(s, prompt_hash, cache_key, &cands, out)
    }

    /// The request for a session, with the hash of its prompt and its key
    /// in the response cache.
    fn ask(
        &self,
        s: &SessionIn,
        timeline: Vec<TimelineEntry>,
        org: Option<&OrgIn>,
        (products, similar): (&[ProductIn], &[(String, f64)]),
    ) -> Ask {
        let mut candidates = candidates(s, &timeline, products);
        add_similar(&mut candidates, products, similar);
        let schema = answer_schema_for(&candidates);
        let input = build_input(s, timeline, org, candidates);
        let (system, prompt) = render_prompt(&input);
        let prompt_hash = sha256_hex(
            format!("{PROMPT_VERSION}\u{0}{system}\u{0}{prompt}\u{0}{schema}").as_bytes(),
        );
        let cache_key =
            sha256_hex(format!("{}\u{0}{}\u{0}{prompt_hash}", self.pname, self.model).as_bytes());
        let req = AiRequest {
            system,
            prompt,
            schema,
            input: serde_json::to_value(&input).unwrap_or_default(),
        };
        Ask {
            req,
            input,
            prompt_hash,
            cache_key,
        }
    }

    /// Tokens `org` spent today (the budget).
    fn spent_today(&self, org: &str) -> u64 {
        self.used
            .lock()
            .map(|u| u.get(org).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    /// The provider answered (or gave up): count the tokens against the
    /// budget, note dropped ids and keep a paid answer for the cache.
    fn answered(
        &self,
        s: SessionIn,
        prompt_hash: String,
        cache_key: String,
        cands: &[Candidate],
        out: Outcome<Answer>,
    ) -> Done {
        // A kept answer with dropped ids: the note, the dropped ids and
        // the model's own text.
        let note = match (&out.note, &out.text) {
            (Some(why), Some(text)) => {
                let dropped = parse_answer(text)
                    .map(|a| unknown_ids(&a, cands))
                    .unwrap_or_default();
                Some((why.clone(), dropped, text.clone()))
            }
            _ => None,
        };
        if let Ok(mut u) = self.used.lock() {
            *u.entry(s.org_id.clone()).or_default() += out.input_tokens + out.output_tokens;
        }
        let cache_row = match (&out.value, &out.text) {
            (Ok(answer), Some(text)) if self.cacheable => Some(CacheRow {
                org_id: s.org_id.clone(),
                cache_key,
                provider: self.pname.clone(),
                model: self.model.clone(),
                prompt_hash: prompt_hash.clone(),
                // A repaired answer is cached repaired: a re-run reuses
                // it without asking or noting again.
                response: if note.is_some() {
                    serde_json::to_string(answer).unwrap_or_else(|_| text.clone())
                } else {
                    text.clone()
                },
                input_tokens: out.input_tokens as i64,
                output_tokens: out.output_tokens as i64,
                created_at: Utc::now(),
            }),
            _ => None,
        };
        Done {
            session: s,
            prompt_hash,
            result: out.value,
            tokens: (out.input_tokens, out.output_tokens),
            spent: (out.input_tokens, out.output_tokens),
            calls: out.calls,
            cache_row,
            cached: false,
            bad_answer: out.last_bad_answer,
            transient_retries: out.transient_retries,
            reasks: out.reasks,
            note,
        }
    }
}

/// A session's request to the provider, before it is sent.
struct Ask {
    req: AiRequest,
    input: EnrichInput,
    prompt_hash: String,
    cache_key: String,
}

/// The run, as recorded on its rows.
struct RunInfo<'a> {
    run_id: &'a str,
    pname: &'a str,
    model: &'a str,
    now: DateTime<Utc>,
}

/// What a run writes.
#[derive(Default)]
struct Collected {
    rows: Vec<InteractionRow>,
    cache_rows: Vec<CacheRow>,
    failed: Vec<FailedEventRow>,
}

impl Collected {
    /// Count one session's outcome and keep its rows.
    fn add(&mut self, mut done: Done, report: &mut Report, run: &RunInfo<'_>) {
        report.provider_calls += u64::from(done.calls);
        report.transient_retries += u64::from(done.transient_retries);
        report.reasks += u64::from(done.reasks);
        report.input_tokens += done.spent.0;
        report.output_tokens += done.spent.1;
        if done.cached {
            report.cache_hits += 1;
        }
        if let Some(c) = done.cache_row.take() {
            self.cache_rows.push(c);
        }
        let s = &done.session;
        let (pname, model) = (run.pname, run.model);
        let interaction_id = format!(
            "int_{}",
            &sha256_hex(format!("{}\u{0}{pname}\u{0}{model}", s.session_id).as_bytes())[..26]
        );
        if let (Ok(a), Some(note)) = (&done.result, &done.note) {
            self.kept_without_unknown_ids(&done, a, note, &interaction_id, report, run);
        }
        match done.result {
            Ok(a) => self.rows.push(interaction_row(
                done.session,
                a,
                interaction_id,
                done.prompt_hash,
                done.tokens,
                run,
            )),
            Err((code, reason)) => {
                let s = done.session;
                let now = run.now;
                report.failures += 1;
                if code == crow_schemas::rows::FailureCode::AiBudgetExhausted
                    && !report.over_budget.contains(&s.org_id)
                {
                    report.over_budget.push(s.org_id.clone());
                }
                tracing::warn!(session = %s.session_id, %code, %reason, "enrich: session left for the next run");
                let payload = json!({
                    "session_id": s.session_id,
                    "run_id": run.run_id,
                    "provider": pname,
                    "model": model,
                    "prompt_hash": done.prompt_hash,
                    "answer": done.bad_answer,
                    "reasks": done.reasks,
                    "transient_retries": done.transient_retries,
                });
                self.failed
                    .push(failed_row(&s, code, &reason, payload, now));
            }
        }
    }

    /// Record the validation note of an answer kept without the product
    /// ids that are not among the candidates (`note`: why, the dropped ids,
    /// the model's text).
    fn kept_without_unknown_ids(
        &mut self,
        done: &Done,
        a: &Answer,
        (why, dropped, text): &(String, Vec<String>, String),
        interaction_id: &str,
        report: &mut Report,
        run: &RunInfo<'_>,
    ) {
        let s = &done.session;
        let (pname, model, now) = (run.pname, run.model, run.now);
        report.validation_notes += 1;
        report.dropped_product_ids += dropped.len() as u64;
        tracing::info!(session = %s.session_id, %why, "enrich: kept the interaction without unknown product ids");
        let reason = format!(
            "interaction kept without the product ids that are not among the candidates: {why} (after {} re-ask{})",
            done.reasks,
            if done.reasks == 1 { "" } else { "s" }
        );
        let payload = json!({
            "note": "validation",
            "session_id": s.session_id,
            "interaction_id": interaction_id,
            "run_id": run.run_id,
            "provider": pname,
            "model": model,
            "prompt_hash": done.prompt_hash,
            "dropped_product_ids": dropped,
            "kept_product_ids": a.product_ids,
            "reasks": done.reasks,
            "transient_retries": done.transient_retries,
            "answer": text,
        });
        self.failed.push(failed_row(
            s,
            UNKNOWN_PRODUCTS_DROPPED,
            &reason,
            payload,
            now,
        ));
    }
}

/// The `interactions` row of a session's answer.
fn interaction_row(
    s: SessionIn,
    a: Answer,
    interaction_id: String,
    prompt_hash: String,
    tokens: (u64, u64),
    run: &RunInfo<'_>,
) -> InteractionRow {
    InteractionRow {
        interaction_id,
        org_id: s.org_id,
        session_id: s.session_id,
        channel: s.channel,
        started_at: s.started_at.timestamp_micros(),
        ended_at: s.ended_at.timestamp_micros(),
        description: a.description,
        intent: Some(a.intent),
        sentiment: Some(a.sentiment),
        outcome: Some(a.outcome),
        product_ids: a.product_ids,
        confidence: Some(a.confidence),
        source_ids: s.source_ids,
        provider: run.pname.to_string(),
        model: run.model.to_string(),
        prompt_version: PROMPT_VERSION.into(),
        prompt_hash,
        input_tokens: tokens.0 as i64,
        output_tokens: tokens.1 as i64,
        created_at: run.now.timestamp_micros(),
        session_date: crow_schemas::time::days_from_time(s.started_at),
    }
}

/// A `failed_events` row about a session.
fn failed_row(
    s: &SessionIn,
    code: crow_schemas::rows::FailureCode,
    reason: &str,
    payload: serde_json::Value,
    now: DateTime<Utc>,
) -> FailedEventRow {
    FailedEventRow::new(
        crow_lake::ids::new_id("fail"),
        FailureSource::Job(crate::JobName::Enrich),
        code,
        reason.chars().take(2000).collect::<String>(),
        now,
    )
    .with_org(s.org_id.clone())
    .with_channel(s.channel.clone())
    .with_message_id(Some(s.session_id.clone()))
    .with_payload(payload.to_string())
}

/// Keep paid answers first, then replace the window's interactions (only
/// when they changed) and record the failures.
async fn write_outputs(
    lake: &Lake,
    window: Window,
    org: Option<&str>,
    out: Collected,
    report: &mut Report,
) -> Result<()> {
    let Collected {
        mut rows,
        cache_rows,
        failed,
    } = out;
    if !cache_rows.is_empty() {
        let b = rows_to_batch(&LLM_CACHE, &cache_rows)?;
        lake.merge(LLM_CACHE.name, vec![b], &["cache_key"]).await?;
    }
    report.interactions = rows.len() as u64;
    rows.sort_by(|a, b| {
        (a.session_date, &a.org_id, a.started_at).cmp(&(b.session_date, &b.org_id, b.started_at))
    });
    let mut batches = Vec::new();
    for chunk in rows.chunks(50_000) {
        batches.push(rows_to_batch(&INTERACTIONS, chunk)?);
    }
    let last_day = (window.end - Duration::microseconds(1)).date_naive();
    let predicate = crate::window_predicate(window.start.date_naive(), last_day, window, org);
    lake.replace_where_if_changed(INTERACTIONS.name, &predicate, batches, &["created_at"])
        .await?;
    if !failed.is_empty() {
        let b = rows_to_batch(&FAILED_EVENTS, &failed)?;
        lake.append(FAILED_EVENTS.name, vec![b]).await?;
    }
    Ok(())
}

struct Done {
    session: SessionIn,
    prompt_hash: String,
    result: std::result::Result<Answer, (crow_schemas::rows::FailureCode, String)>,
    /// Tokens recorded on the interaction (the original call's, for hits).
    tokens: (u64, u64),
    /// Tokens this run spent.
    spent: (u64, u64),
    calls: u32,
    cache_row: Option<CacheRow>,
    cached: bool,
    bad_answer: Option<String>,
    /// Calls repeated after transient errors.
    transient_retries: u32,
    /// Calls repeated after invalid answers.
    reasks: u32,
    /// Set when unknown product ids were dropped: the note, the dropped
    /// ids and the model's answer.
    note: Option<(String, Vec<String>, String)>,
}

impl Done {
    /// A session answered without calling the provider: from the cache, or
    /// refused (the budget).
    fn without_call(
        session: SessionIn,
        prompt_hash: String,
        result: std::result::Result<Answer, (crow_schemas::rows::FailureCode, String)>,
        tokens: (u64, u64),
        cached: bool,
    ) -> Done {
        Done {
            session,
            prompt_hash,
            result,
            tokens,
            spent: (0, 0),
            calls: 0,
            cache_row: None,
            cached,
            bad_answer: None,
            transient_retries: 0,
            reasks: 0,
            note: None,
        }
    }
}

/// Candidate products for a session: ids and SKUs it referenced, product
/// pages it visited, names and SKUs its text mentions.
fn candidates(s: &SessionIn, timeline: &[TimelineEntry], products: &[ProductIn]) -> Vec<Candidate> {
    let mut out: Vec<Candidate> = Vec::new();
    let mut add = |p: &ProductIn| {
        if out.len() < MAX_CANDIDATES && !out.iter().any(|c| c.product_id == p.product_id) {
            out.push(Candidate {
                product_id: p.product_id.clone(),
                name: p.name.clone(),
                sku: p.sku.clone(),
                category: p.category.clone(),
                price: p.price,
                currency: p.currency.clone(),
                url: p.url.clone(),
                similarity: None,
            });
        }
    };
    for id in s.product_ids.iter().flatten() {
        if let Some(p) = products
            .iter()
            .find(|p| &p.product_id == id || p.sku.as_ref() == Some(id))
        {
            add(p);
        }
    }
    let text = timeline
        .iter()
        .map(|e| e.detail.to_lowercase())
        .collect::<Vec<_>>()
        .join("\n");
    for p in products {
        let path_hit = p
            .url
            .as_deref()
            .and_then(|u| url::Url::parse(u).ok())
            .map(|u| u.path().to_lowercase())
            .is_some_and(|path| {
                path.len() > 1
                    && timeline
                        .iter()
                        .any(|e| e.is_view() && e.detail.to_lowercase() == path)
            });
        let name = p.name.to_lowercase();
        let name_hit = name.len() >= 4 && text.contains(&name);
        let sku_hit = p
            .sku
            .as_deref()
            .is_some_and(|k| k.len() >= 3 && text.contains(&k.to_lowercase()));
        if path_hit || name_hit || sku_hit {
            add(p);
        }
    }
    out
}

/// Merge the products similar to the session's text into its candidates
/// (after the exact matches, up to [`MAX_CANDIDATES`]), with their score.
fn add_similar(out: &mut Vec<Candidate>, products: &[ProductIn], similar: &[(String, f64)]) {
    for (id, score) in similar {
        if out.len() >= MAX_CANDIDATES || out.iter().any(|c| &c.product_id == id) {
            continue;
        }
        if let Some(p) = products.iter().find(|p| &p.product_id == id) {
            out.push(Candidate {
                product_id: p.product_id.clone(),
                name: p.name.clone(),
                sku: p.sku.clone(),
                category: p.category.clone(),
                price: p.price,
                currency: p.currency.clone(),
                url: p.url.clone(),
                similarity: Some((score * 1000.0).round() / 1000.0),
            });
        }
    }
}

fn build_input(
    s: &SessionIn,
    mut timeline: Vec<TimelineEntry>,
    org: Option<&OrgIn>,
    candidates: Vec<Candidate>,
) -> EnrichInput {
    if timeline.len() > MAX_PROMPT_TIMELINE {
        let skipped = timeline.len() - MAX_PROMPT_TIMELINE;
        let tail = timeline.split_off(timeline.len() - 20);
        timeline.truncate(MAX_PROMPT_TIMELINE - 20);
        timeline.push(TimelineEntry::new(
            tail.first().map_or(0, |t| t.offset_s),
            "skipped",
            format!("{skipped} entries"),
        ));
        timeline.extend(tail);
    }
    EnrichInput {
        task: "enrich".into(),
        channel: s.channel.clone(),
        organization: org.map_or_else(|| s.org_id.clone(), |o| o.name.clone()),
        organization_context: org.and_then(|o| o.context.clone()),
        visitor_id: s.visitor_id.clone(),
        source_ref: s.source_ref.clone(),
        started_at: s.started_at.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        duration_s: (s.ended_at - s.started_at).num_seconds(),
        device_type: s.device_type.clone(),
        traffic_source: s.traffic_source.clone(),
        is_returning: s.is_returning,
        timeline,
        candidates,
    }
}

/// The system instruction and the prompt for one session.
pub fn render_prompt(i: &EnrichInput) -> (String, String) {
    let system = format!(
        "You are an analyst for a brand. You read one session of a person's activity \
         (web events, in-store CCTV transcript segments, or social media posts) and write \
         one interaction record as JSON. Describe what the person did and with which \
         products, in one or two plain sentences, without inventing anything that is not \
         in the session. intent is one of {INTENTS:?}; sentiment one of {SENTIMENTS:?}; \
         outcome one of {OUTCOMES:?}. product_ids lists only ids from the candidate \
         products that the session involves. confidence is 0..1."
    );
    let mut p = String::new();
    p.push_str(&format!("Organization: {}\n", i.organization));
    if let Some(c) = &i.organization_context {
        p.push_str(&format!("About the organization: {c}\n"));
    }
    p.push_str(&format!(
        "Channel: {}\nStarted: {} (lasted {} s)\n",
        i.channel, i.started_at, i.duration_s
    ));
    for (label, v) in [
        ("Visitor", &i.visitor_id),
        ("Source", &i.source_ref),
        ("Device", &i.device_type),
        ("Traffic source", &i.traffic_source),
    ] {
        if let Some(v) = v {
            p.push_str(&format!("{label}: {v}\n"));
        }
    }
    if let Some(r) = i.is_returning {
        p.push_str(&format!(
            "Visitor type: {}\n",
            if r { "returning" } else { "new" }
        ));
    }
    p.push_str("\nCandidate products (id | name | sku | category | price):\n");
    if i.candidates.is_empty() {
        p.push_str("(none)\n");
    }
    for c in &i.candidates {
        let similar = c
            .similarity
            .map(|x| format!(" (similar to the text: {x:.2})"))
            .unwrap_or_default();
        p.push_str(&format!(
            "- {} | {} | {} | {} | {}{similar}\n",
            c.product_id,
            c.name,
            c.sku.as_deref().unwrap_or("-"),
            c.category.as_deref().unwrap_or("-"),
            c.price
                .map(|x| format!("{x:.2} {}", c.currency.as_deref().unwrap_or("")))
                .unwrap_or_else(|| "-".into())
        ));
    }
    p.push_str("\nTimeline (seconds from start | what | detail):\n");
    for e in &i.timeline {
        p.push_str(&format!("{} | {} | {}\n", e.offset_s, e.kind, e.detail));
    }
    (system, p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cands() -> Vec<Candidate> {
        vec![Candidate {
            product_id: "p1".into(),
            name: "Aria".into(),
            sku: None,
            category: None,
            price: None,
            currency: None,
            url: None,
            similarity: None,
        }]
    }

    #[test]
    fn validation_accepts_good_answers_and_names_what_is_wrong() {
        let good = r#"{"description":"Viewed Aria.","intent":"research","sentiment":"neutral","outcome":"browsed","product_ids":["p1"],"confidence":0.8}"#;
        let a = validate(good, &cands()).expect("a good answer");
        assert_eq!(
            (
                a.description.as_str(),
                a.intent.as_str(),
                a.product_ids.clone()
            ),
            ("Viewed Aria.", "research", vec!["p1".to_string()])
        );
        assert!((a.confidence - 0.8).abs() < 1e-9);
        let fenced = format!("```json\n{good}\n```");
        assert_eq!(validate(&fenced, &cands()), Ok(a), "fences are stripped");
        let bad_intent = good.replace("research", "shopping");
        assert!(validate(&bad_intent, &cands())
            .unwrap_err()
            .contains("intent"));
        let unknown = good.replace("[\"p1\"]", "[\"p9\"]");
        assert!(validate(&unknown, &cands()).unwrap_err().contains("p9"));
        let truncated = &good[..good.len() - 10];
        assert!(validate(truncated, &cands()).unwrap_err().contains("JSON"));
        let two = good.replace("[\"p1\"]", "[\"p9\",\"p1\",\"p8\",\"p9\"]");
        match check(&two, &cands()) {
            Check::Repairable { value, why } => {
                assert_eq!(value.product_ids, vec!["p1".to_string()]);
                assert!(why.contains("`p9`, `p8`"), "{why}");
            }
            other => panic!("expected a repairable answer: {other:?}"),
        }
        assert!(matches!(check(truncated, &cands()), Check::Invalid(_)));
        let schema = answer_schema_for(&cands());
        assert_eq!(
            schema["properties"]["product_ids"]["items"]["enum"],
            json!(["p1"])
        );
        assert!(answer_schema_for(&[])["properties"]["product_ids"]["items"]
            .get("enum")
            .is_none());
        let conf = good.replace("0.8", "7");
        assert!(validate(&conf, &cands())
            .unwrap_err()
            .contains("confidence"));
    }
}
