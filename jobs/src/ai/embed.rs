//! Embedding providers: text → vectors, behind one trait like
//! [`super::Provider`].
//!
//! - [`OfflineEmbedder`] (default): deterministic and network-free. Words
//!   (lower-cased, a plural `s` dropped, stop words skipped) and each word's
//!   character trigrams are hashed into `dims` signed buckets and the
//!   vector L2-normalised, so a close paraphrase of a product name —
//!   another word order, a missing hyphen, plural or singular, a dropped
//!   word — shares most of its features and lands next to it.
//! - [`GeminiEmbedder`]: `POST {base}/v1beta/models/{model}:batchEmbedContents`
//!   (`outputDimensionality` = `ai.embeddings.dims`).
//! - [`OpenAiEmbedder`]: an OpenAI-compatible `POST {base}/embeddings`
//!   (`{"model", "input": [..], "dimensions"}` → `data[].embedding`); `base`
//!   is `https://api.openai.com/v1` by default, as for chat.
//!
//! Every vector is L2-normalised, so a dot product is the cosine
//! similarity. [`embed_all`] batches by `ai.embeddings.batch_size` and
//! retries transient failures with the AI layer's backoff, honouring
//! `Retry-After` (up to [`RetryPolicy::max_retry_after`]).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use crow_schemas::config::{AiProvider, EmbeddingsConfig};
use serde_json::{json, Value};

use super::{post_json, AiError, RetryPolicy};
use crate::{Error, Result};

/// The offline model's name.
pub const OFFLINE_MODEL: &str = "crow-hash-v1";
/// Gemini's default embedding model.
pub const GEMINI_MODEL: &str = "gemini-embedding-001";
/// OpenAI's default embedding model.
pub const OPENAI_MODEL: &str = "text-embedding-3-small";

/// An embedding provider.
#[async_trait]
pub trait Embedder: Send + Sync {
    /// 'offline', 'gemini' or 'openai'.
    fn name(&self) -> &str;
    /// The model.
    fn model(&self) -> &str;
    /// Dimensions of every vector.
    fn dims(&self) -> usize;
    /// Texts per call.
    fn batch_size(&self) -> usize;
    /// Embed one batch (at most [`Embedder::batch_size`] texts), one
    /// L2-normalised vector of [`Embedder::dims`] per text, in order.
    async fn embed_batch(&self, texts: &[String]) -> std::result::Result<Vec<Vec<f32>>, AiError>;
}

/// The embedder `[ai.embeddings]` selects. Keys come from
/// `GEMINI_API_KEY` / `OPENAI_API_KEY`.
pub fn from_config(cfg: &EmbeddingsConfig) -> Result<Arc<dyn Embedder>> {
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
            cfg.base_url.clone()
        }
    };
    let timeout = Duration::from_secs(60);
    let (dims, batch) = (cfg.dims, cfg.batch_size.max(1));
    match cfg.provider {
        AiProvider::Offline => Ok(Arc::new(OfflineEmbedder::new(dims))),
        AiProvider::Gemini => {
            let key = std::env::var("GEMINI_API_KEY").unwrap_or_default();
            if key.is_empty() {
                return Err(Error::Ai(
                    "ai.embeddings.provider is 'gemini' but GEMINI_API_KEY is not set".into(),
                ));
            }
            let base = base(super::gemini::DEFAULT_BASE_URL);
            let (client, b) = super::http_client(&base, timeout)?;
            let model = model(GEMINI_MODEL);
            Ok(Arc::new(GeminiEmbedder {
                url: format!("{b}/v1beta/models/{model}:batchEmbedContents"),
                client,
                model,
                key: key.as_str().into(),
                dims,
                batch,
            }))
        }
        AiProvider::OpenAi => {
            let key = std::env::var("OPENAI_API_KEY")
                .ok()
                .filter(|k| !k.is_empty());
            let base = base(super::openai::DEFAULT_BASE_URL);
            let (client, b) = super::http_client(&base, timeout)?;
            Ok(Arc::new(OpenAiEmbedder {
                url: format!("{b}/embeddings"),
                client,
                model: model(OPENAI_MODEL),
                key: key.map(|k| k.as_str().into()),
                dims,
                batch,
            }))
        }
    }
}

/// Embed `texts` in batches, retrying transient failures (429, 5xx,
/// timeouts) with backoff or the provider's `Retry-After`.
pub async fn embed_all(
    e: &dyn Embedder,
    texts: &[String],
    policy: RetryPolicy,
) -> Result<Vec<Vec<f32>>> {
    let mut out = Vec::with_capacity(texts.len());
    for chunk in texts.chunks(e.batch_size().max(1)) {
        let vectors = embed_with_retries(e, chunk, policy).await?;
        out.extend(vectors);
    }
    Ok(out)
}

async fn embed_with_retries(
    e: &dyn Embedder,
    chunk: &[String],
    policy: RetryPolicy,
) -> Result<Vec<Vec<f32>>> {
    let mut retries = 0;
    loop {
        let err = match e.embed_batch(chunk).await {
            Ok(v) => return check_answer(e, chunk.len(), v),
            Err(err) => err,
        };
        let wait = match &err {
            AiError::Transient { retry_after, .. } if retries < policy.max_retries => {
                match retry_after {
                    Some(ra) if *ra > policy.max_retry_after => None,
                    Some(ra) => Some(*ra),
                    None => Some(policy.backoff(retries)),
                }
            }
            AiError::Malformed(_) if retries < policy.max_retries => Some(policy.backoff(retries)),
            _ => None,
        };
        let Some(wait) = wait else {
            return Err(Error::Ai(format!(
                "embeddings ({}/{}): {err} (after {retries} retries)",
                e.name(),
                e.model()
            )));
        };
        retries += 1;
        tokio::time::sleep(wait).await;
    }
}

/// One vector per text, each of the configured dimensions, normalised.
fn check_answer(e: &dyn Embedder, n: usize, mut v: Vec<Vec<f32>>) -> Result<Vec<Vec<f32>>> {
    if v.len() != n {
        return Err(Error::Ai(format!(
            "embeddings ({}): {} vectors for {n} texts",
            e.name(),
            v.len()
        )));
    }
    for x in &mut v {
        if x.len() != e.dims() {
            return Err(Error::Ai(format!(
                "embeddings ({}/{}): a vector of {} dimensions, but ai.embeddings.dims is {}",
                e.name(),
                e.model(),
                x.len(),
                e.dims()
            )));
        }
        normalize(x);
    }
    Ok(v)
}

/// Scale `v` to unit length (a zero vector stays zero).
pub fn normalize(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 && n.is_finite() {
        v.iter_mut().for_each(|x| *x /= n);
    }
}

/// The dot product: the cosine similarity of two normalised vectors.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Exact top-`k` of `query` against `vectors` by dot product (cosine for
/// normalised vectors): indexes and scores, best first, ties by index.
pub fn top_k(query: &[f32], vectors: &[&[f32]], k: usize) -> Vec<(usize, f32)> {
    let mut best: Vec<(usize, f32)> = Vec::with_capacity(k + 1);
    if k == 0 {
        return best;
    }
    for (i, v) in vectors.iter().enumerate() {
        let s = dot(query, v);
        if best.len() == k && best.last().is_some_and(|(_, w)| s <= *w) {
            continue;
        }
        let at = best.partition_point(|(_, w)| *w >= s);
        best.insert(at, (i, s));
        best.truncate(k);
    }
    best
}

/// The offline embedder.
#[derive(Debug, Clone)]
pub struct OfflineEmbedder {
    dims: usize,
}

impl OfflineEmbedder {
    /// An offline embedder of `dims` dimensions.
    pub fn new(dims: usize) -> Self {
        OfflineEmbedder { dims: dims.max(1) }
    }

    /// The vector of one text.
    pub fn vector(&self, text: &str) -> Vec<f32> {
        let mut v = vec![0f32; self.dims];
        for word in words(text) {
            self.add(&mut v, word.as_bytes(), 1.0);
            let padded: Vec<char> = format!("#{word}#").chars().collect();
            let grams = padded.len().saturating_sub(2).max(1) as f32;
            for g in padded.windows(3) {
                let g: String = g.iter().collect();
                self.add(&mut v, g.as_bytes(), 1.5 / grams.sqrt());
            }
        }
        normalize(&mut v);
        v
    }

    fn add(&self, v: &mut [f32], feature: &[u8], weight: f32) {
        let h = fnv1a(feature);
        let i = (h % self.dims as u64) as usize;
        let sign = if (h >> 63) == 1 { -1.0 } else { 1.0 };
        v[i] += sign * weight;
    }
}

const STOP_WORDS: &[&str] = &[
    "a", "an", "the", "and", "or", "of", "to", "in", "on", "for", "with", "my", "our", "your", "i",
    "we", "you", "it", "its", "is", "are", "was", "this", "that", "these", "those", "just", "so",
    "at", "by", "from", "me", "new", "got", "get", "really", "very", "love", "them",
];

/// Lower-case words of `text` (letters and digits), plurals' `s` dropped,
/// stop words skipped.
fn words(text: &str) -> Vec<String> {
    text.to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty() && !STOP_WORDS.contains(w))
        .map(|w| {
            if w.len() > 3 && w.ends_with('s') && !w.ends_with("ss") {
                w[..w.len() - 1].to_string()
            } else {
                w.to_string()
            }
        })
        .collect()
}

/// 64-bit FNV-1a: a stable hash (the offline vectors never change between
/// builds or platforms).
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[async_trait]
impl Embedder for OfflineEmbedder {
    fn name(&self) -> &str {
        "offline"
    }

    fn model(&self) -> &str {
        OFFLINE_MODEL
    }

    fn dims(&self) -> usize {
        self.dims
    }

    fn batch_size(&self) -> usize {
        1024
    }

    async fn embed_batch(&self, texts: &[String]) -> std::result::Result<Vec<Vec<f32>>, AiError> {
        Ok(texts.iter().map(|t| self.vector(t)).collect())
    }
}

/// Gemini's `batchEmbedContents`.
pub struct GeminiEmbedder {
    client: reqwest::Client,
    url: String,
    model: String,
    key: crow_schemas::Secret,
    dims: usize,
    batch: usize,
}

impl std::fmt::Debug for GeminiEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeminiEmbedder")
            .field("url", &self.url)
            .field("model", &self.model)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Embedder for GeminiEmbedder {
    fn name(&self) -> &str {
        "gemini"
    }

    fn model(&self) -> &str {
        &self.model
    }

    fn dims(&self) -> usize {
        self.dims
    }

    fn batch_size(&self) -> usize {
        self.batch
    }

    async fn embed_batch(&self, texts: &[String]) -> std::result::Result<Vec<Vec<f32>>, AiError> {
        let requests: Vec<Value> = texts
            .iter()
            .map(|t| {
                json!({
                    "model": format!("models/{}", self.model),
                    "content": {"parts": [{"text": t}]},
                    "outputDimensionality": self.dims
                })
            })
            .collect();
        let http = self
            .client
            .post(&self.url)
            .header("x-goog-api-key", self.key.expose())
            .json(&json!({ "requests": requests }));
        let v = post_json(http, "gemini").await?;
        let items = v["embeddings"]
            .as_array()
            .ok_or_else(|| AiError::Malformed("no `embeddings` in the response".into()))?;
        items
            .iter()
            .map(|e| floats(&e["values"], "embeddings[].values"))
            .collect()
    }
}

/// An OpenAI-compatible `/embeddings`.
pub struct OpenAiEmbedder {
    client: reqwest::Client,
    url: String,
    model: String,
    key: Option<crow_schemas::Secret>,
    dims: usize,
    batch: usize,
}

impl std::fmt::Debug for OpenAiEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiEmbedder")
            .field("url", &self.url)
            .field("model", &self.model)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Embedder for OpenAiEmbedder {
    fn name(&self) -> &str {
        "openai"
    }

    fn model(&self) -> &str {
        &self.model
    }

    fn dims(&self) -> usize {
        self.dims
    }

    fn batch_size(&self) -> usize {
        self.batch
    }

    async fn embed_batch(&self, texts: &[String]) -> std::result::Result<Vec<Vec<f32>>, AiError> {
        let body = json!({"model": self.model, "input": texts, "dimensions": self.dims});
        let mut http = self.client.post(&self.url).json(&body);
        if let Some(k) = &self.key {
            http = http.bearer_auth(k.expose());
        }
        let v = post_json(http, "openai").await?;
        let data = v["data"]
            .as_array()
            .ok_or_else(|| AiError::Malformed("no `data` in the response".into()))?;
        let mut out: Vec<(u64, Vec<f32>)> = Vec::with_capacity(data.len());
        for (i, d) in data.iter().enumerate() {
            let index = d["index"].as_u64().unwrap_or(i as u64);
            out.push((index, floats(&d["embedding"], "data[].embedding")?));
        }
        out.sort_by_key(|(i, _)| *i);
        Ok(out.into_iter().map(|(_, v)| v).collect())
    }
}

/// A JSON array of numbers as floats.
fn floats(v: &Value, what: &str) -> std::result::Result<Vec<f32>, AiError> {
    let a = v
        .as_array()
        .ok_or_else(|| AiError::Malformed(format!("`{what}` is not an array")))?;
    a.iter()
        .map(|x| {
            x.as_f64()
                .map(|f| f as f32)
                .ok_or_else(|| AiError::Malformed(format!("`{what}` holds a non-number")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CATALOG: &[&str] = &[
        "Aria Noise-Cancelling Headphones",
        "Nimbus Bluetooth Speaker",
        "Zenith Turntable",
        "Trail Runner Shoe Blue",
        "Summit Down Jacket",
        "Aria Headphone Case",
        "Nimbus Speaker Stand",
        "Espresso Machine Pro",
    ];

    fn nearest(e: &OfflineEmbedder, q: &str) -> (usize, f32) {
        let vs: Vec<Vec<f32>> = CATALOG.iter().map(|p| e.vector(p)).collect();
        let refs: Vec<&[f32]> = vs.iter().map(Vec::as_slice).collect();
        top_k(&e.vector(q), &refs, 1)[0]
    }

    #[test]
    fn a_paraphrase_finds_its_product() {
        let e = OfflineEmbedder::new(256);
        for (q, want) in [
            ("headphones aria noise cancelling", 0),
            ("Aria noisecancelling headphone", 0),
            ("the nimbus speaker with bluetooth", 1),
            ("blue trail runners", 3),
            ("down jackets from summit", 4),
            ("espresso machines", 7),
        ] {
            let (i, s) = nearest(&e, q);
            assert_eq!(CATALOG[i], CATALOG[want], "{q}: score {s}");
            assert!(s >= 0.4, "{q}: score {s}");
        }
    }

    #[test]
    fn vectors_are_deterministic_and_normalised() {
        let e = OfflineEmbedder::new(64);
        let a = e.vector("Aria Headphones");
        assert_eq!(a, OfflineEmbedder::new(64).vector("Aria Headphones"));
        assert!((dot(&a, &a) - 1.0).abs() < 1e-5);
        assert!(e.vector("").iter().all(|x| *x == 0.0));
        // The same text in another case and spacing is the same vector.
        assert_eq!(a, e.vector("  aria   HEADPHONES "));
    }

    #[test]
    fn top_k_orders_by_score_and_keeps_k() {
        let vs: Vec<Vec<f32>> = vec![
            vec![1.0, 0.0],
            vec![0.6, 0.8],
            vec![0.0, 1.0],
            vec![0.8, 0.6],
        ];
        let refs: Vec<&[f32]> = vs.iter().map(Vec::as_slice).collect();
        let got: Vec<usize> = top_k(&[1.0, 0.0], &refs, 3)
            .iter()
            .map(|(i, _)| *i)
            .collect();
        assert_eq!(got, [0, 3, 1]);
        assert!(top_k(&[1.0, 0.0], &refs, 0).is_empty());
    }
}
