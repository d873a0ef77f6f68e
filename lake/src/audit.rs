//! The audit log: append-only rows of `audit_log` — who did what, when,
//! from where, with what outcome. Written by the API, the CLI and the
//! system (webhook deliveries); no API changes or deletes a row.

use chrono::{DateTime, Utc};
use crow_schemas::AUDIT_LOG;
use serde::{Deserialize, Serialize};

use crate::batch::{rows_to_batch, ts_micros};
use crate::ids::new_id;
use crate::{Lake, Result};

/// One audit entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Organization acted on.
    pub org_id: String,
    /// Entry id.
    pub audit_id: String,
    /// When.
    #[serde(with = "ts_micros")]
    pub at: DateTime<Utc>,
    /// Who.
    pub actor: String,
    /// What.
    pub action: String,
    /// On what.
    pub target: Option<String>,
    /// 'ok', 'denied' or 'failed'.
    pub outcome: String,
    /// Client address hash.
    pub ip_hash: Option<String>,
    /// User-Agent.
    pub user_agent: Option<String>,
    /// More, as JSON text.
    pub detail: Option<String>,
    /// Days since the epoch of `at`.
    pub audit_date: i32,
}

/// What happened, for [`audit`].
#[derive(Debug, Clone, Default)]
pub struct Audit<'a> {
    /// Organization acted on.
    pub org_id: &'a str,
    /// Who (`user:<id>`, `key:<id>`, `cli`, `anonymous`).
    pub actor: &'a str,
    /// What.
    pub action: &'a str,
    /// On what.
    pub target: Option<&'a str>,
    /// 'ok', 'denied' or 'failed'.
    pub outcome: &'a str,
    /// Client address hash.
    pub ip_hash: Option<&'a str>,
    /// User-Agent.
    pub user_agent: Option<&'a str>,
    /// More.
    pub detail: Option<serde_json::Value>,
}

/// Append one entry to `audit_log`.
pub async fn audit(lake: &Lake, a: Audit<'_>) -> Result<()> {
    let at = Utc::now();
    let e = AuditEntry {
        org_id: a.org_id.to_string(),
        audit_id: new_id("aud"),
        at,
        actor: a.actor.to_string(),
        action: a.action.to_string(),
        target: a.target.map(str::to_string),
        outcome: a.outcome.to_string(),
        ip_hash: a.ip_hash.map(str::to_string),
        user_agent: a.user_agent.map(|u| u.chars().take(512).collect()),
        detail: a.detail.map(|d| d.to_string()),
        audit_date: i32::try_from(at.timestamp().div_euclid(86_400)).unwrap_or(0),
    };
    let batch = rows_to_batch(&AUDIT_LOG, std::slice::from_ref(&e))?;
    lake.append(AUDIT_LOG.name, vec![batch]).await?;
    Ok(())
}
