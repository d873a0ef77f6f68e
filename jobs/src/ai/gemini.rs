//! Google Gemini: REST `generateContent` with a JSON response schema.
//!
//! `POST {base}/v1beta/models/{model}:generateContent`, key in the
//! `x-goog-api-key` header (never in the URL, so it stays out of logs).
//! `base` is `https://generativelanguage.googleapis.com` or a gateway URL
//! that forwards to it, e.g. Cloudflare AI Gateway's
//! `https://gateway.ai.cloudflare.com/v1/ACCOUNT/GATEWAY/google-ai-studio`.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Value};

use super::{post_json, AiAnswer, AiError, AiRequest, Provider};
use crate::Result;

/// Google's endpoint.
pub const DEFAULT_BASE_URL: &str = "https://generativelanguage.googleapis.com";
/// The default model.
pub const DEFAULT_MODEL: &str = "gemini-2.5-flash";

/// The Gemini provider.
pub struct Gemini {
    client: reqwest::Client,
    url: String,
    model: String,
    key: crow_schemas::Secret,
}

impl std::fmt::Debug for Gemini {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gemini")
            .field("url", &self.url)
            .field("model", &self.model)
            .finish_non_exhaustive()
    }
}

impl Gemini {
    /// A client for `model` at `base`.
    pub fn new(base: &str, model: &str, key: &str, timeout: Duration) -> Result<Self> {
        let (client, base) = super::http_client(base, timeout)?;
        Ok(Gemini {
            client,
            url: format!("{base}/v1beta/models/{model}:generateContent"),
            model: model.to_string(),
            key: key.into(),
        })
    }
}

/// JSON Schema → Gemini's OpenAPI-subset schema (upper-case types, no
/// `additionalProperties`).
pub fn to_gemini_schema(s: &Value) -> Value {
    match s {
        Value::Object(m) => {
            let mut out = serde_json::Map::new();
            for (k, v) in m {
                match k.as_str() {
                    "type" => {
                        if let Some(t) = v.as_str() {
                            out.insert(k.clone(), Value::String(t.to_uppercase()));
                        }
                    }
                    "properties" => {
                        let props = v
                            .as_object()
                            .map(|p| {
                                p.iter()
                                    .map(|(name, sub)| (name.clone(), to_gemini_schema(sub)))
                                    .collect()
                            })
                            .unwrap_or_default();
                        out.insert(k.clone(), Value::Object(props));
                    }
                    "items" => {
                        out.insert(k.clone(), to_gemini_schema(v));
                    }
                    "required" | "enum" | "description" | "minimum" | "maximum" | "nullable"
                    | "format" => {
                        out.insert(k.clone(), v.clone());
                    }
                    _ => {}
                }
            }
            Value::Object(out)
        }
        other => other.clone(),
    }
}

#[async_trait]
impl Provider for Gemini {
    fn name(&self) -> &str {
        "gemini"
    }

    fn model(&self) -> &str {
        &self.model
    }

    async fn generate(&self, req: &AiRequest) -> Result<AiAnswer, AiError> {
        let body = json!({
            "systemInstruction": {"parts": [{"text": req.system}]},
            "contents": [{"role": "user", "parts": [{"text": req.prompt}]}],
            "generationConfig": {
                "responseMimeType": "application/json",
                "responseSchema": to_gemini_schema(&req.schema),
                "temperature": 0
            }
        });
        let http = self
            .client
            .post(&self.url)
            .header("x-goog-api-key", self.key.expose())
            .json(&body);
        let v = post_json(http, "gemini").await?;
        parse_response(&v)
    }
}

/// Read a `generateContent` response.
pub fn parse_response(v: &Value) -> Result<AiAnswer, AiError> {
    let usage = &v["usageMetadata"];
    let input_tokens = usage["promptTokenCount"].as_u64().unwrap_or(0);
    let output_tokens = usage["candidatesTokenCount"].as_u64().unwrap_or(0)
        + usage["thoughtsTokenCount"].as_u64().unwrap_or(0);
    let Some(candidate) = v["candidates"].get(0) else {
        let why = v["promptFeedback"]["blockReason"]
            .as_str()
            .map(|r| format!("the prompt was blocked ({r})"))
            .unwrap_or_else(|| "no candidates in the response".into());
        return Err(AiError::Malformed(why));
    };
    let text: String = candidate["content"]["parts"]
        .as_array()
        .map(|parts| {
            parts
                .iter()
                .filter(|p| !p["thought"].as_bool().unwrap_or(false))
                .filter_map(|p| p["text"].as_str())
                .collect()
        })
        .unwrap_or_default();
    if text.is_empty() {
        let reason = candidate["finishReason"].as_str().unwrap_or("unknown");
        return Err(AiError::Malformed(format!(
            "the candidate has no text (finishReason {reason})"
        )));
    }
    Ok(AiAnswer {
        text,
        input_tokens,
        output_tokens,
    })
}
