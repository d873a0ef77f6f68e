//! Query API keys: created for an organization with a scope, shown once,
//! stored as a SHA-256 hash only (like ingest write keys), revoked by id.

use chrono::{DateTime, Duration, Utc};
use crow_lake::batch::{batches_to_rows, rows_to_batch, ts_micros};
use crow_lake::ids::{new_id, new_secret, sha256_hex};
use crow_lake::orgs::Organization;
use crow_lake::{Error, Lake, Result};
use crow_schemas::API_KEYS;
use datafusion::prelude::{col, lit};
use serde::{Deserialize, Serialize};

/// What a key may do. Each scope includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// SQL and REST reads.
    Read,
    /// Reads and exports.
    Export,
    /// Everything.
    Admin,
}

impl Scope {
    /// The scope's name as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Export => "export",
            Scope::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Scope {
    type Err = Error;
    fn from_str(s: &str) -> Result<Scope> {
        match s {
            "read" => Ok(Scope::Read),
            "export" => Ok(Scope::Export),
            "admin" => Ok(Scope::Admin),
            other => Err(Error::Invalid(format!(
                "scope `{other}` is not one of read, export, admin"
            ))),
        }
    }
}

/// One API key, as stored (the hash never leaves this crate's API layer).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiKey {
    /// Organization.
    pub org_id: String,
    /// Public key id.
    pub key_id: String,
    /// SHA-256 of the secret.
    pub key_hash: String,
    /// First characters of the secret.
    pub key_prefix: String,
    /// 'read', 'export' or 'admin'.
    pub scope: String,
    /// Optional label.
    pub name: Option<String>,
    /// Creation time.
    #[serde(with = "ts_micros")]
    pub created_at: DateTime<Utc>,
    /// Expiry.
    #[serde(with = "ts_micros::option", default)]
    pub expires_at: Option<DateTime<Utc>>,
    /// Revocation time.
    #[serde(with = "ts_micros::option", default)]
    pub revoked_at: Option<DateTime<Utc>>,
}

impl ApiKey {
    /// Whether the key may be used at `now`.
    pub fn is_valid_at(&self, now: DateTime<Utc>) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|e| e > now)
    }

    /// The key's scope (an unknown stored scope grants nothing beyond read).
    pub fn scope(&self) -> Scope {
        self.scope.parse().unwrap_or(Scope::Read)
    }

    /// The key as shown to people: everything but the hash.
    pub fn public_json(&self) -> serde_json::Value {
        let ts = |t: &Option<DateTime<Utc>>| {
            t.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        };
        serde_json::json!({
            "id": self.key_id,
            "org_id": self.org_id,
            "name": self.name,
            "scope": self.scope,
            "prefix": self.key_prefix,
            "created_at": self.created_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "expires_at": ts(&self.expires_at),
            "revoked_at": ts(&self.revoked_at),
            "status": if self.revoked_at.is_some() { "revoked" }
                else if self.is_valid_at(Utc::now()) { "active" } else { "expired" },
        })
    }
}

/// A newly created key with its secret (shown once, never stored).
#[derive(Debug, Clone)]
pub struct CreatedKey {
    /// The stored key.
    pub key: ApiKey,
    /// The secret to send as `Authorization: Bearer SECRET`.
    pub secret: String,
}

/// The organization named by `org`: an org id, else a name (exact, else
/// ignoring case). A name that several organizations have is an error
/// naming their ids: picking one could act on the wrong tenant.
pub async fn resolve_org(lake: &Lake, org: &str) -> Result<Organization> {
    let org = org.trim();
    if let Some(o) = crow_lake::orgs::get(lake, org).await? {
        return Ok(o);
    }
    let mut found = crow_lake::orgs::named(lake, org).await?;
    match found.len() {
        0 => Err(Error::Invalid(format!(
            "no organization with id or name `{org}` (see `crow orgs list`)"
        ))),
        1 => Ok(found.remove(0)),
        n => Err(Error::Invalid(format!(
            "`{org}` is the name of {n} organizations ({}); pass the id instead (see `crow orgs list`)",
            found
                .iter()
                .map(|o| format!("{} `{}`", o.org_id, o.name))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// Create a key for `org_id`, valid for `expires_days` days (none: forever).
pub async fn create(
    lake: &Lake,
    org_id: &str,
    scope: Scope,
    expires_days: Option<u32>,
    name: Option<&str>,
) -> Result<CreatedKey> {
    if expires_days == Some(0) {
        return Err(Error::Invalid("--expires must be at least 1 day".into()));
    }
    let secret = new_secret("ck");
    let now = Utc::now();
    let key = ApiKey {
        org_id: org_id.to_string(),
        key_id: new_id("key"),
        key_hash: sha256_hex(secret.as_bytes()),
        key_prefix: secret.chars().take(8).collect(),
        scope: scope.as_str().to_string(),
        name: name
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(str::to_string),
        created_at: now,
        expires_at: expires_days.map(|d| now + Duration::days(i64::from(d))),
        revoked_at: None,
    };
    let batch = rows_to_batch(&API_KEYS, std::slice::from_ref(&key))?;
    lake.append(API_KEYS.name, vec![batch]).await?;
    Ok(CreatedKey { key, secret })
}

/// Every key (of one organization, if given), oldest first.
pub async fn list(lake: &Lake, org_id: Option<&str>) -> Result<Vec<ApiKey>> {
    rows_by_creation(lake, API_KEYS.name, org_id.map(|o| ("org_id", o)), true).await
}

/// Every row of `table` (only those whose column `only.0` is `only.1`, if
/// given) by `created_at`, oldest or newest first.
pub(crate) async fn rows_by_creation<T: serde::de::DeserializeOwned>(
    lake: &Lake,
    table: &str,
    only: Option<(&str, &str)>,
    oldest_first: bool,
) -> Result<Vec<T>> {
    let mut df = lake.dataframe(table).await?;
    if let Some((c, v)) = only {
        df = df.filter(col(c).eq(lit(v)))?;
    }
    let batches = df
        .sort(vec![col("created_at").sort(oldest_first, true)])?
        .collect()
        .await?;
    batches_to_rows(&batches)
}

/// Revoke a key by id. Returns the key as revoked; revoking twice keeps the
/// first revocation time.
pub async fn revoke(lake: &Lake, key_id: &str) -> Result<ApiKey> {
    let df = lake.dataframe(API_KEYS.name).await?;
    let batches = df
        .filter(col("key_id").eq(lit(key_id.trim())))?
        .collect()
        .await?;
    let mut key: ApiKey = batches_to_rows(&batches)?
        .into_iter()
        .next()
        .ok_or_else(|| Error::Invalid(format!("no API key with id `{key_id}`")))?;
    if key.revoked_at.is_none() {
        key.revoked_at = Some(Utc::now());
        let batch = rows_to_batch(&API_KEYS, std::slice::from_ref(&key))?;
        lake.merge(API_KEYS.name, vec![batch], &["key_id"]).await?;
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validity_and_scopes() {
        let now = Utc::now();
        let mut k = ApiKey {
            org_id: "org_a".into(),
            key_id: "key_a".into(),
            key_hash: "h".into(),
            key_prefix: "ck_x".into(),
            scope: "export".into(),
            name: None,
            created_at: now,
            expires_at: Some(now + Duration::seconds(10)),
            revoked_at: None,
        };
        assert!(k.is_valid_at(now));
        assert!(!k.is_valid_at(now + Duration::seconds(11)));
        assert!(k.scope() >= Scope::Read && k.scope() < Scope::Admin);
        assert!(k.public_json().get("key_hash").is_none());
        k.revoked_at = Some(now);
        assert!(!k.is_valid_at(now));
        assert!("write".parse::<Scope>().is_err());
    }
}
