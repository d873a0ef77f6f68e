//! OpenAI-compatible chat completions (OpenAI, Ollama, vLLM, gateways).
//!
//! `POST {base}/chat/completions` with `response_format` of type
//! `json_schema`; `base` defaults to `https://api.openai.com/v1` (Ollama:
//! `http://localhost:11434/v1`). The key, when set, goes in
//! `Authorization: Bearer`.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Value};

use super::{post_json, AiAnswer, AiError, AiRequest, Provider};
use crate::Result;

/// OpenAI's endpoint.
pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";
/// The default model.
pub const DEFAULT_MODEL: &str = "gpt-4o-mini";

/// The OpenAI-compatible provider.
pub struct OpenAi {
    client: reqwest::Client,
    url: String,
    model: String,
    key: Option<crow_schemas::Secret>,
}

impl std::fmt::Debug for OpenAi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAi")
            .field("url", &self.url)
            .field("model", &self.model)
            .finish_non_exhaustive()
    }
}

impl OpenAi {
    /// A client for `model` at `base`.
    pub fn new(base: &str, model: &str, key: Option<&str>, timeout: Duration) -> Result<Self> {
        let (client, base) = super::http_client(base, timeout)?;
        Ok(OpenAi {
            client,
            url: format!("{base}/chat/completions"),
            model: model.to_string(),
            key: key.map(crow_schemas::Secret::from),
        })
    }
}

#[async_trait]
impl Provider for OpenAi {
    fn name(&self) -> &str {
        "openai"
    }

    fn model(&self) -> &str {
        &self.model
    }

    async fn generate(&self, req: &AiRequest) -> Result<AiAnswer, AiError> {
        let body = json!({
            "model": self.model,
            "temperature": 0,
            "messages": [
                {"role": "system", "content": req.system},
                {"role": "user", "content": req.prompt}
            ],
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "answer", "strict": true, "schema": req.schema}
            }
        });
        let mut http = self.client.post(&self.url).json(&body);
        if let Some(k) = &self.key {
            http = http.bearer_auth(k.expose());
        }
        let v = post_json(http, "openai").await?;
        parse_response(&v)
    }
}

/// Read a chat completions response.
pub fn parse_response(v: &Value) -> Result<AiAnswer, AiError> {
    let input_tokens = v["usage"]["prompt_tokens"].as_u64().unwrap_or(0);
    let output_tokens = v["usage"]["completion_tokens"].as_u64().unwrap_or(0);
    let Some(choice) = v["choices"].get(0) else {
        return Err(AiError::Malformed("no choices in the response".into()));
    };
    let msg = &choice["message"];
    if let Some(refusal) = msg["refusal"].as_str() {
        return Err(AiError::Malformed(format!("the model refused: {refusal}")));
    }
    let text = msg["content"].as_str().unwrap_or_default().to_string();
    if text.is_empty() {
        let reason = choice["finish_reason"].as_str().unwrap_or("unknown");
        return Err(AiError::Malformed(format!(
            "the answer has no content (finish_reason {reason})"
        )));
    }
    Ok(AiAnswer {
        text,
        input_tokens,
        output_tokens,
    })
}
