//! The fake AI provider of `crow bench enrich`: an HTTP server on a free
//! loopback port that speaks the OpenAI chat-completions wire format,
//! answers every call after a fixed latency with a valid enrichment, and
//! counts the calls and the most it held at once.
//!
//! It exists only for the benchmark (and only in a `crow` built with the
//! `bench` feature): the enrich job's throughput is measured against a
//! provider whose latency is known, so the ideal is `concurrency / latency`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use serde_json::json;
use tokio::task::JoinHandle;

/// The content of every answer: an enrichment the job accepts.
const ANSWER: &str = r#"{"description":"Viewed products.","intent":"browse","sentiment":"neutral","outcome":"browsed","product_ids":[],"confidence":0.5}"#;

/// Token usage reported with every answer.
const PROMPT_TOKENS: u64 = 400;
const COMPLETION_TOKENS: u64 = 40;

/// What the server counts, shared with its handler.
#[derive(Default)]
struct Counters {
    /// Calls answered or in flight.
    calls: AtomicU64,
    /// Calls being answered now.
    in_flight: AtomicU64,
    /// The most calls in flight at once.
    max_in_flight: AtomicU64,
}

/// A running fake provider; dropping it stops the server.
pub(crate) struct FakeProvider {
    addr: std::net::SocketAddr,
    counters: Arc<Counters>,
    server: JoinHandle<std::io::Result<()>>,
}

impl FakeProvider {
    /// Start the server on 127.0.0.1 (a free port); every call is answered
    /// after `latency`.
    pub(crate) async fn start(latency: Duration) -> std::io::Result<Self> {
        let counters = Arc::new(Counters::default());
        let app = axum::Router::new()
            .route("/v1/chat/completions", axum::routing::post(complete))
            .with_state((counters.clone(), latency));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(Self {
            addr,
            counters,
            server,
        })
    }

    /// The base URL to give an OpenAI-compatible client (`http://…/v1`).
    pub(crate) fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Calls received so far.
    pub(crate) fn calls(&self) -> u64 {
        self.counters.calls.load(Ordering::Relaxed)
    }

    /// The most calls that were in flight at once.
    pub(crate) fn max_in_flight(&self) -> u64 {
        self.counters.max_in_flight.load(Ordering::Relaxed)
    }
}

impl Drop for FakeProvider {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// `POST /v1/chat/completions`: wait out the latency, then answer
/// [`ANSWER`] whatever was asked.
async fn complete(
    State((counters, latency)): State<(Arc<Counters>, Duration)>,
) -> axum::Json<serde_json::Value> {
    counters.calls.fetch_add(1, Ordering::Relaxed);
    let now = counters.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
    counters.max_in_flight.fetch_max(now, Ordering::Relaxed);
    tokio::time::sleep(latency).await;
    counters.in_flight.fetch_sub(1, Ordering::Relaxed);
    axum::Json(json!({
        "choices": [{"index": 0, "message": {"role": "assistant", "content": ANSWER}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": COMPLETION_TOKENS}
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One chat completion, as the enrich job's OpenAI client sends it.
    async fn ask(fake: &FakeProvider) -> serde_json::Value {
        let r = reqwest::Client::new()
            .post(format!("{}/chat/completions", fake.base_url()))
            .json(&json!({"model": "bench-model", "messages": [{"role": "user", "content": "x"}]}))
            .send()
            .await
            .expect("the fake provider answers");
        assert!(r.status().is_success(), "{}", r.status());
        r.json().await.expect("a JSON answer")
    }

    #[tokio::test]
    async fn answers_a_valid_enrichment_after_the_latency_and_counts_calls() {
        let fake = FakeProvider::start(Duration::from_millis(50))
            .await
            .expect("start");
        let started = std::time::Instant::now();
        let (a, b) = tokio::join!(ask(&fake), ask(&fake));
        assert!(started.elapsed() >= Duration::from_millis(50));
        for v in [a, b] {
            let content = v["choices"][0]["message"]["content"]
                .as_str()
                .expect("content");
            let answer: serde_json::Value = serde_json::from_str(content).expect("JSON content");
            assert_eq!(answer["intent"], "browse");
            assert_eq!(v["usage"]["prompt_tokens"], PROMPT_TOKENS);
        }
        assert_eq!(fake.calls(), 2);
        assert!((1..=2).contains(&fake.max_in_flight()));
    }
}
