//! Outgoing webhooks: each notification of an organization with a webhook
//! is POSTed to it as JSON, signed so the receiver can check it came from
//! CROW and was not replayed.
//!
//! Headers: `X-Crow-Timestamp` (Unix seconds) and `X-Crow-Signature:
//! sha256=<hex>`, the HMAC-SHA256 of `<timestamp>.<body>` under the
//! organization's webhook secret. A delivery that fails (a network error or
//! a non-2xx answer) is retried after 1, 2 and 4 s; every delivery's
//! outcome is written to `audit_log` (`webhook.deliver`, `ok` or `failed`
//! with the status and attempts).

use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::audit::{audit, Audit};
use crate::backoff::Backoff;
use crate::Lake;

/// Attempts of one delivery.
pub const ATTEMPTS: u32 = 4;

/// The wait between deliveries: 1, 2, 4 s.
const DELIVERY_BACKOFF: Backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));

/// HMAC-SHA256 (RFC 2104) of `msg` under `key`, hex.
pub fn hmac_sha256_hex(key: &[u8], msg: &[u8]) -> String {
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(k.map(|b| b ^ 0x36));
    inner.update(msg);
    let mut outer = Sha256::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    hex::encode(outer.finalize())
}

/// The `X-Crow-Signature` value of `body` sent at `timestamp`.
pub fn signature(secret: &str, timestamp: i64, body: &str) -> String {
    format!(
        "sha256={}",
        hmac_sha256_hex(secret.as_bytes(), format!("{timestamp}.{body}").as_bytes())
    )
}

/// Deliver `payload` to `url` in the background, with retries; the outcome
/// goes to `audit_log`.
pub fn deliver(
    lake: Lake,
    org_id: String,
    url: String,
    secret: String,
    payload: serde_json::Value,
) {
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        return;
    };
    handle.spawn(async move {
        let body = payload.to_string();
        let client = match reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
        {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "webhook: no HTTP client");
                return;
            }
        };
        let mut last = String::new();
        let mut delivered = None;
        for attempt in 1..=ATTEMPTS {
            let ts = chrono::Utc::now().timestamp();
            let sent = client
                .post(&url)
                .header("Content-Type", "application/json")
                .header("User-Agent", "crow-webhook/1")
                .header("X-Crow-Timestamp", ts.to_string())
                .header("X-Crow-Signature", signature(&secret, ts, &body))
                .body(body.clone())
                .send()
                .await;
            match sent {
                Ok(r) if r.status().is_success() => {
                    delivered = Some((attempt, r.status().as_u16()));
                    break;
                }
                Ok(r) => last = format!("HTTP {}", r.status().as_u16()),
                Err(e) => last = e.to_string(),
            }
            if attempt < ATTEMPTS {
                tokio::time::sleep(DELIVERY_BACKOFF.delay(attempt - 1)).await;
            }
        }
        let (outcome, detail) = match delivered {
            Some((attempts, status)) => (
                "ok",
                serde_json::json!({"attempts": attempts, "status": status}),
            ),
            None => {
                tracing::warn!(%url, error = %last, "webhook: delivery failed after retries");
                (
                    "failed",
                    serde_json::json!({"attempts": ATTEMPTS, "error": last}),
                )
            }
        };
        let kind = payload["kind"].as_str().unwrap_or("").to_string();
        let a = Audit {
            org_id: &org_id,
            actor: "system",
            action: "webhook.deliver",
            target: Some(&kind),
            outcome,
            detail: Some(detail),
            ..Audit::default()
        };
        if let Err(e) = audit(&lake, a).await {
            tracing::warn!(error = %e, "webhook: could not record the delivery");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231() {
        // Test case 2 of RFC 4231.
        assert_eq!(
            hmac_sha256_hex(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Test case 6: a key longer than the block.
        assert_eq!(
            hmac_sha256_hex(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            ),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
        assert_eq!(
            signature("k", 1, "{}"),
            format!("sha256={}", hmac_sha256_hex(b"k", b"1.{}"))
        );
    }
}
