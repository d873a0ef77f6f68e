//! The AI provider layer: one trait, three providers.
//!
//! - [`offline`] (default): deterministic and network-free; writes its
//!   answers from the structured input of the request.
//! - [`gemini`]: Google's REST `generateContent` with a JSON response
//!   schema. The base URL is the part before `/v1beta/models/…`, so Google's
//!   endpoint and a Cloudflare AI Gateway URL both work.
//! - [`openai`]: OpenAI-compatible chat completions (OpenAI, Ollama, vLLM,
//!   gateways) with a JSON-schema response format.
//!
//! What all providers share lives here: [`call_checked`] retries
//! transient failures with exponential backoff (each wait jittered between
//! half and all of it), honouring `Retry-After`, and re-asks when an answer does not validate; the two
//! have separate budgets and are counted apart. An answer that can be
//! repaired (see [`Check::Repairable`]) is asked again once and then kept
//! repaired, with a note. The response
//! cache and the per-org token budget live in the jobs that call it (see
//! [`crate::enrich`]).

pub mod ask;
pub mod embed;
pub mod gemini;
pub mod offline;
pub mod openai;
pub mod queries;
pub mod refine;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use crow_lake::backoff::{Backoff, Jitter};
use crow_schemas::config::{AiConfig, AiProvider};
use serde_json::Value;

use crate::{Error, Result};

/// One request to a model.
#[derive(Debug, Clone)]
pub struct AiRequest {
    /// System instruction.
    pub system: String,
    /// The user prompt.
    pub prompt: String,
    /// JSON Schema of the expected answer (an object).
    pub schema: Value,
    /// The same input, structured (the offline provider writes from this).
    pub input: Value,
}

/// A model's raw answer and its token usage.
#[derive(Debug, Clone, PartialEq)]
pub struct AiAnswer {
    /// The answer text (JSON expected).
    pub text: String,
    /// Prompt tokens.
    pub input_tokens: u64,
    /// Completion tokens.
    pub output_tokens: u64,
}

/// A failed call.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AiError {
    /// Worth retrying: 429, 5xx, timeouts, connection errors.
    #[error("{message}")]
    Transient {
        /// What happened.
        message: String,
        /// The provider's `Retry-After`, when it sent one.
        retry_after: Option<Duration>,
    },
    /// The answer could not be read (truncated or malformed JSON, no
    /// candidates): worth asking again.
    #[error("malformed answer: {0}")]
    Malformed(String),
    /// Retrying will not help (bad key, bad request, unknown model).
    #[error("{0}")]
    Fatal(String),
}

/// An AI provider.
#[async_trait]
pub trait Provider: Send + Sync {
    /// 'offline', 'gemini' or 'openai'.
    fn name(&self) -> &str;
    /// The model.
    fn model(&self) -> &str;
    /// Whether answers are worth caching (the offline provider costs
    /// nothing and is not cached).
    fn cacheable(&self) -> bool {
        true
    }
    /// Ask once.
    async fn generate(&self, req: &AiRequest) -> std::result::Result<AiAnswer, AiError>;
}

/// The provider the configuration selects. Keys come from
/// `GEMINI_API_KEY` / `OPENAI_API_KEY`.
pub fn from_config(cfg: &AiConfig) -> Result<Arc<dyn Provider>> {
    let model = |default: &str| {
        if cfg.model.is_empty() {
            default.to_string()
        } else {
            cfg.model.clone()
        }
    };
    let base = |default: &str| {
        if cfg.base_url.is_empty() {
            default.to_string()
        } else {
            cfg.base_url.trim_end_matches('/').to_string()
        }
    };
    let timeout = Duration::from_secs(120);
    match cfg.provider {
        AiProvider::Offline => Ok(Arc::new(offline::Offline::new(&model(offline::MODEL)))),
        AiProvider::Gemini => {
            let key = std::env::var("GEMINI_API_KEY").unwrap_or_default();
            if key.is_empty() {
                return Err(Error::Ai(
                    "ai.provider is 'gemini' but GEMINI_API_KEY is not set".into(),
                ));
            }
            Ok(Arc::new(gemini::Gemini::new(
                &base(gemini::DEFAULT_BASE_URL),
                &model(gemini::DEFAULT_MODEL),
                &key,
                timeout,
            )?))
        }
        AiProvider::OpenAi => {
            let key = std::env::var("OPENAI_API_KEY")
                .ok()
                .filter(|k| !k.is_empty());
            Ok(Arc::new(openai::OpenAi::new(
                &base(openai::DEFAULT_BASE_URL),
                &model(openai::DEFAULT_MODEL),
                key.as_deref(),
                timeout,
            )?))
        }
    }
}

/// Retries and backoff.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Retries after the first attempt, for each kind apart: transient
    /// errors, and re-asks after invalid answers.
    pub max_retries: u32,
    /// First backoff; doubles each retry (jittered in [wait/2, wait]).
    pub base: Duration,
    /// Longest backoff.
    pub cap: Duration,
    /// Longest `Retry-After` honoured within a run; a provider asking for
    /// more makes the call fail (and the session is retried next run).
    pub max_retry_after: Duration,
}

impl RetryPolicy {
    /// The policy for `ai.max_retries`.
    pub fn new(max_retries: u32) -> Self {
        RetryPolicy {
            max_retries,
            base: Duration::from_millis(500),
            cap: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(120),
        }
    }

    fn backoff(&self, retry: u32) -> Duration {
        // Uniform in [exp/2, exp].
        Backoff::new(self.base, self.cap)
            .with_jitter(Jitter::Half)
            .delay(retry)
    }
}

/// What a checker makes of one answer text.
#[derive(Debug, Clone, PartialEq)]
pub enum Check<T> {
    /// The answer is accepted as it is.
    Valid(T),
    /// The answer is wrong in a way that can be repaired (e.g. unknown
    /// product ids that can be dropped): it is asked again once, and if
    /// the next answer is still only repairable, the repaired value is
    /// kept with `why` as its validation note.
    Repairable {
        /// The repaired value.
        value: T,
        /// What was wrong (the validation note).
        why: String,
    },
    /// The answer is not usable: ask again.
    Invalid(String),
}

/// The result of a validated call: the value or why it failed, with the
/// tokens spent on every attempt.
#[derive(Debug)]
pub struct Outcome<T> {
    /// The validated value, or (reason code, reason).
    pub value: std::result::Result<T, (crow_schemas::rows::FailureCode, String)>,
    /// The accepted answer text (for the cache); for a repaired value, the
    /// model's text before the repair.
    pub text: Option<String>,
    /// The last answer text that failed validation (for failed_events).
    pub last_bad_answer: Option<String>,
    /// Prompt tokens over all attempts.
    pub input_tokens: u64,
    /// Completion tokens over all attempts.
    pub output_tokens: u64,
    /// Provider calls made.
    pub calls: u32,
    /// Calls repeated after a transient error (429, 5xx, timeouts,
    /// connection errors).
    pub transient_retries: u32,
    /// Calls repeated because the answer was invalid (malformed, off
    /// schema, repairable).
    pub reasks: u32,
    /// Set when the value is a repaired answer: what was repaired.
    pub note: Option<String>,
}

/// Ask `provider` until `validate` accepts the answer, retrying transient
/// errors (honouring `Retry-After`) and re-asking on invalid answers, each
/// up to the policy's limit. Never panics, never gives up silently: a
/// failure says why. See [`call_checked`].
pub async fn call_validated<T, F>(
    provider: &dyn Provider,
    req: &AiRequest,
    policy: RetryPolicy,
    validate: F,
) -> Outcome<T>
where
    F: Fn(&str) -> std::result::Result<T, String>,
{
    call_checked(provider, req, policy, |t| match validate(t) {
        Ok(v) => Check::Valid(v),
        Err(why) => Check::Invalid(why),
    })
    .await
}

/// Ask `provider` until `check` accepts the answer.
///
/// Transient errors (429, 5xx, timeouts) and invalid answers have separate
/// budgets of `policy.max_retries` each and are counted apart
/// ([`Outcome::transient_retries`], [`Outcome::reasks`]): a 503 does not use
/// up a re-ask, and a failure is reported with the cause whose budget ran
/// out, the last invalid answer's reason and the last transient error both
/// named in the message. A re-ask repeats the prompt with the reason the
/// previous answer was rejected. A [`Check::Repairable`] answer is asked
/// again once; when the next answer is repairable too (or no better answer
/// comes before the budgets run out), the repaired value is kept and
/// [`Outcome::note`] says what was repaired.
pub async fn call_checked<T, F>(
    provider: &dyn Provider,
    req: &AiRequest,
    policy: RetryPolicy,
    check: F,
) -> Outcome<T>
where
    F: Fn(&str) -> Check<T>,
{
    let mut calls = Calls::new(policy);
    let mut current = req.clone();
    loop {
        calls.out.calls += 1;
        let next = match provider.generate(&current).await {
            Ok(answer) => calls.answered(provider.name(), answer, &check),
            Err(e) => calls.failed(e),
        };
        let Some(wait) = next.and_then(|n| calls.again(n, req, &mut current)) else {
            return calls.out;
        };
        tokio::time::sleep(wait).await;
    }
}

/// What [`call_checked`] asks next: again with the reason the answer was
/// rejected, or the same after a transient error, after this wait.
enum Next {
    Reask(String),
    Transient(Duration),
}

/// The state of one [`call_checked`]: the outcome so far, a repaired answer
/// kept in reserve, and the last error of each kind. Each step returns
/// `None` once the outcome is final.
struct Calls<T> {
    policy: RetryPolicy,
    out: Outcome<T>,
    /// A repaired answer kept in reserve: (value, note, text).
    repaired: Option<(T, String, String)>,
    last_invalid: Option<String>,
    last_transient: Option<String>,
}

impl<T> Calls<T> {
    fn new(policy: RetryPolicy) -> Self {
        Calls {
            policy,
            out: Outcome {
                value: Err((crow_schemas::rows::FailureCode::AiError, String::new())),
                text: None,
                last_bad_answer: None,
                input_tokens: 0,
                output_tokens: 0,
                calls: 0,
                transient_retries: 0,
                reasks: 0,
                note: None,
            },
            repaired: None,
            last_invalid: None,
            last_transient: None,
        }
    }

    /// An answer came: count its tokens and check it.
    fn answered<F>(&mut self, provider: &str, answer: AiAnswer, check: &F) -> Option<Next>
    where
        F: Fn(&str) -> Check<T>,
    {
        self.out.input_tokens += answer.input_tokens;
        self.out.output_tokens += answer.output_tokens;
        match check(&answer.text) {
            Check::Valid(v) => {
                self.out.value = Ok(v);
                self.out.text = Some(answer.text);
                None
            }
            Check::Repairable { value, why } => {
                tracing::debug!(provider, %why, "answer repairable");
                self.out.last_bad_answer = Some(answer.text.clone());
                let asked_again = self.repaired.is_some();
                self.repaired = Some((value, why.clone(), answer.text));
                if asked_again || self.out.reasks >= self.policy.max_retries {
                    self.keep_repaired();
                    return None;
                }
                self.last_invalid = Some(why.clone());
                Some(Next::Reask(why))
            }
            Check::Invalid(why) => {
                tracing::debug!(provider, %why, "answer failed validation");
                self.out.last_bad_answer = Some(answer.text);
                self.last_invalid = Some(why.clone());
                Some(Next::Reask(why))
            }
        }
    }

    /// The call failed: a malformed answer is asked again, a refusal is
    /// final, a transient error is retried after its `Retry-After` (when
    /// this run can wait that long) or the backoff.
    fn failed(&mut self, e: AiError) -> Option<Next> {
        match e {
            AiError::Malformed(why) => {
                self.last_invalid = Some(why.clone());
                Some(Next::Reask(why))
            }
            AiError::Fatal(why) => {
                let why = explain(why, &self.out, None, self.last_transient.as_deref());
                self.give_up(crow_schemas::rows::FailureCode::AiRequestRefused, why);
                None
            }
            AiError::Transient {
                message,
                retry_after,
            } => {
                self.last_transient = Some(message.clone());
                match retry_after {
                    Some(ra) if ra > self.policy.max_retry_after => {
                        let why = format!(
                            "{message} (Retry-After {}s is longer than this run waits)",
                            ra.as_secs()
                        );
                        let why = explain(why, &self.out, self.last_invalid.as_deref(), None);
                        self.give_up(crow_schemas::rows::FailureCode::AiUnavailable, why);
                        None
                    }
                    Some(ra) => Some(Next::Transient(ra)),
                    None => Some(Next::Transient(
                        self.policy.backoff(self.out.transient_retries),
                    )),
                }
            }
        }
    }

    /// Ask again as `next` says, within its kind's budget: the wait before
    /// the next call (a re-ask repeats `req`'s prompt into `current` with
    /// the reason), or `None` when the budget ran out.
    fn again(&mut self, next: Next, req: &AiRequest, current: &mut AiRequest) -> Option<Duration> {
        match next {
            Next::Reask(why) => {
                if self.out.reasks >= self.policy.max_retries {
                    let why = explain(why, &self.out, None, self.last_transient.as_deref());
                    self.give_up(crow_schemas::rows::FailureCode::AiMalformedOutput, why);
                    return None;
                }
                let wait = self.policy.backoff(self.out.reasks);
                self.out.reasks += 1;
                current.prompt = format!(
                    "{}\n\nYour previous answer was not accepted: {why}. Answer again, \
                     following the schema and the instructions exactly.",
                    req.prompt
                );
                Some(wait)
            }
            Next::Transient(wait) => {
                if self.out.transient_retries >= self.policy.max_retries {
                    let why = explain(
                        self.last_transient.clone().unwrap_or_default(),
                        &self.out,
                        self.last_invalid.as_deref(),
                        None,
                    );
                    self.give_up(crow_schemas::rows::FailureCode::AiUnavailable, why);
                    return None;
                }
                self.out.transient_retries += 1;
                Some(wait)
            }
        }
    }

    /// Stop asking: keep the repaired answer in reserve if there is one,
    /// else fail with `code` and `why`.
    fn give_up(&mut self, code: crow_schemas::rows::FailureCode, why: String) {
        if self.repaired.is_some() {
            self.keep_repaired();
        } else {
            self.out.value = Err((code, why));
        }
    }

    /// Accept the repaired answer kept in reserve.
    fn keep_repaired(&mut self) {
        if let Some((value, why, text)) = self.repaired.take() {
            self.out.value = Ok(value);
            self.out.note = Some(why);
            self.out.text = Some(text);
        }
    }
}

/// A failure reason with what was tried: the cause, then the re-asks and
/// transient retries made and the other kind of error last seen.
fn explain<T>(
    cause: String,
    out: &Outcome<T>,
    last_invalid: Option<&str>,
    last_transient: Option<&str>,
) -> String {
    let plural = |n: u32, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    let mut s = format!(
        "{cause} (after {} for invalid answers and {}",
        plural(out.reasks, "re-ask", "re-asks"),
        plural(
            out.transient_retries,
            "transient retry",
            "transient retries"
        )
    );
    if let Some(i) = last_invalid {
        s.push_str(&format!("; last invalid answer: {i}"));
    }
    if let Some(t) = last_transient {
        s.push_str(&format!("; last transient error: {t}"));
    }
    s.push(')');
    s
}

/// Parse a `Retry-After` header: delta-seconds or an HTTP date.
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    if let Ok(secs) = v.parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            return Some(Duration::from_secs_f64(secs));
        }
    }
    let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let d = at.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(d.to_std().unwrap_or(Duration::ZERO))
}

/// The HTTP client of a network provider and its base URL (checked).
pub(crate) fn http_client(base: &str, timeout: Duration) -> Result<(reqwest::Client, &str)> {
    let base = base.trim_end_matches('/');
    url::Url::parse(base)
        .map_err(|e| Error::Invalid(format!("ai.base_url `{base}` is not a URL: {e}")))?;
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .user_agent(concat!("crow/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| Error::Ai(e.to_string()))?;
    Ok((client, base))
}

/// Shared HTTP handling of the network providers: POST JSON, map statuses.
pub(crate) async fn post_json(
    req: reqwest::RequestBuilder,
    provider: &str,
) -> std::result::Result<Value, AiError> {
    let resp = req.send().await.map_err(|e| AiError::Transient {
        message: format!("{provider}: request failed: {}", redact(&e.to_string())),
        retry_after: None,
    })?;
    let status = resp.status();
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    let body = resp.bytes().await.map_err(|e| AiError::Transient {
        message: format!(
            "{provider}: reading the answer failed: {}",
            redact(&e.to_string())
        ),
        retry_after: None,
    })?;
    if status.as_u16() == 429 || status.is_server_error() || status.as_u16() == 408 {
        return Err(AiError::Transient {
            message: format!("{provider}: HTTP {status}: {}", snippet(&body)),
            retry_after,
        });
    }
    if !status.is_success() {
        return Err(AiError::Fatal(format!(
            "{provider}: HTTP {status}: {}",
            snippet(&body)
        )));
    }
    serde_json::from_slice(&body).map_err(|e| {
        AiError::Malformed(format!(
            "{provider}: the response is not JSON ({e}): {}",
            snippet(&body)
        ))
    })
}

/// The start of a body, for error messages.
fn snippet(body: &[u8]) -> String {
    let s = String::from_utf8_lossy(body);
    let s: String = s.chars().take(300).collect();
    redact(&s)
}

/// Remove anything that looks like an API key from a message.
fn redact(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for (i, part) in s.split("key=").enumerate() {
        if i == 0 {
            out.push_str(part);
        } else {
            out.push_str("key=***");
            let rest: String = part
                .chars()
                .skip_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                .collect();
            out.push_str(&rest);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after(" 0 "), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn keys_are_redacted_from_messages() {
        assert_eq!(
            redact("GET https://x/y?key=AIzaSyABC-123_x&alt=json"),
            "GET https://x/y?key=***&alt=json"
        );
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy::new(5);
        // Retry r waits between half and all of 500 ms × 2^r (jittered),
        // capped at 30 s.
        for r in 0..10u32 {
            let exp = Duration::from_millis(500 * (1u64 << r)).min(p.cap);
            for _ in 0..50 {
                let b = p.backoff(r);
                assert!(
                    b >= exp / 2 && b <= exp,
                    "retry {r}: {b:?} outside {exp:?}/2..={exp:?}"
                );
            }
        }
        assert!(p.backoff(20) <= p.cap);
    }
}
