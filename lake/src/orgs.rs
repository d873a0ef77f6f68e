//! Organizations (tenants) and their ingest write keys.
//!
//! Names are unique ignoring case: [`create`] refuses a name an
//! organization already has. (Two creations racing on different machines
//! can still both succeed, and lakes made before the check may hold
//! duplicates; [`named`] returns every match so callers can refuse the
//! ambiguity rather than pick one.)
//!
//! A write key is shown once, at creation; the lake keeps only its SHA-256.
//! The collector finds the organization of a request by hashing the key it
//! was sent.

use chrono::{DateTime, Utc};
use crow_schemas::ORGANIZATIONS;
use datafusion::prelude::{col, lit};
use serde::{Deserialize, Serialize};

use crate::batch::{batches_to_rows, rows_to_batch, ts_micros};
use crate::ids::{new_id, new_secret, sha256_hex};
use crate::{Lake, Result};

/// One organization, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Organization {
    /// Organization id.
    pub org_id: String,
    /// Display name.
    pub name: String,
    /// Primary domain.
    pub domain: Option<String>,
    /// SHA-256 of the write key.
    pub write_key_hash: String,
    /// First characters of the write key.
    pub write_key_prefix: String,
    /// Context for the AI provider.
    pub context: Option<String>,
    /// 'active' or 'disabled'.
    pub status: String,
    /// Creation time.
    #[serde(with = "ts_micros")]
    pub created_at: DateTime<Utc>,
    /// Last change.
    #[serde(with = "ts_micros")]
    pub updated_at: DateTime<Utc>,
    /// SHA-256 of the write key the last rotation replaced.
    #[serde(default)]
    pub previous_write_key_hash: Option<String>,
    /// Until when the previous write key is still accepted.
    #[serde(with = "ts_micros::option", default)]
    pub previous_write_key_expires_at: Option<DateTime<Utc>>,
    /// Where notifications are POSTed.
    #[serde(default)]
    pub webhook_url: Option<String>,
    /// The key that signs webhook bodies.
    #[serde(default)]
    pub webhook_secret: Option<String>,
}

impl Organization {
    /// The hashes of the write keys accepted at `now`: the current key of
    /// an active organization, and the previous one within its grace
    /// period. None for a disabled organization.
    pub fn accepted_key_hashes(&self, now: DateTime<Utc>) -> Vec<(&str, Option<DateTime<Utc>>)> {
        if self.status != "active" {
            return Vec::new();
        }
        let mut out = vec![(self.write_key_hash.as_str(), None)];
        if let (Some(h), Some(until)) = (
            &self.previous_write_key_hash,
            self.previous_write_key_expires_at,
        ) {
            if until > now {
                out.push((h.as_str(), Some(until)));
            }
        }
        out
    }
}

/// A newly created organization with its write key (shown once).
#[derive(Debug, Clone)]
pub struct CreatedOrg {
    /// The organization.
    pub org: Organization,
    /// The ingest write key. Not stored anywhere.
    pub write_key: String,
}

/// Create an organization and its ingest write key.
pub async fn create(
    lake: &Lake,
    name: &str,
    domain: Option<&str>,
    context: Option<&str>,
) -> Result<CreatedOrg> {
    let name = name.trim();
    if name.is_empty() {
        return Err(crate::Error::Invalid(
            "an organization needs a non-empty --name".into(),
        ));
    }
    if let Some(same) = named(lake, name).await?.into_iter().next() {
        return Err(crate::Error::Invalid(format!(
            "an organization named `{}` already exists ({}); organization names are unique, ignoring case",
            same.name, same.org_id
        )));
    }
    let write_key = new_secret("wk");
    let now = Utc::now();
    let org = Organization {
        org_id: new_id("org"),
        name: name.to_string(),
        domain: domain
            .map(str::trim)
            .filter(|d| !d.is_empty())
            .map(str::to_string),
        write_key_hash: sha256_hex(write_key.as_bytes()),
        write_key_prefix: write_key.chars().take(8).collect(),
        context: context.map(str::to_string),
        status: "active".into(),
        created_at: now,
        updated_at: now,
        previous_write_key_hash: None,
        previous_write_key_expires_at: None,
        webhook_url: None,
        webhook_secret: None,
    };
    let batch = rows_to_batch(&ORGANIZATIONS, std::slice::from_ref(&org))?;
    lake.append(ORGANIZATIONS.name, vec![batch]).await?;
    Ok(CreatedOrg { org, write_key })
}

/// Give an organization a new ingest write key (shown once); the old key
/// stops working as soon as collectors refresh their key cache.
pub async fn rotate_write_key(lake: &Lake, org_id: &str) -> Result<String> {
    rotate_write_key_with_grace(lake, org_id, chrono::Duration::zero()).await
}

/// Give an organization a new ingest write key (shown once) and keep
/// accepting the current one for `grace` (zero: refuse it at once), so
/// senders can switch without losing events. A key replaced earlier, still
/// in its own grace period, stops working now: there is one previous key.
pub async fn rotate_write_key_with_grace(
    lake: &Lake,
    org_id: &str,
    grace: chrono::Duration,
) -> Result<String> {
    let mut org = existing(lake, org_id).await?;
    let write_key = new_secret("wk");
    let now = Utc::now();
    if grace > chrono::Duration::zero() {
        org.previous_write_key_hash = Some(org.write_key_hash.clone());
        org.previous_write_key_expires_at = Some(now + grace);
    } else {
        org.previous_write_key_hash = None;
        org.previous_write_key_expires_at = None;
    }
    org.write_key_hash = sha256_hex(write_key.as_bytes());
    org.write_key_prefix = write_key.chars().take(8).collect();
    org.updated_at = now;
    save(lake, &org).await?;
    Ok(write_key)
}

/// What [`update`] changes: each `Some` field is set (an empty domain or
/// context clears it); `None` leaves the field as it is.
#[derive(Debug, Clone, Default)]
pub struct OrgUpdate {
    /// A new display name (unique, ignoring case).
    pub name: Option<String>,
    /// A new primary domain ("" clears it).
    pub domain: Option<String>,
    /// New context for the AI provider ("" clears it).
    pub context: Option<String>,
}

/// Change an organization's name, domain or context.
pub async fn update(lake: &Lake, org_id: &str, change: &OrgUpdate) -> Result<Organization> {
    let mut org = existing(lake, org_id).await?;
    if let Some(name) = &change.name {
        let name = name.trim();
        if name.is_empty() {
            return Err(crate::Error::Invalid(
                "an organization needs a non-empty --name".into(),
            ));
        }
        if let Some(same) = named(lake, name)
            .await?
            .into_iter()
            .find(|o| o.org_id != org.org_id)
        {
            return Err(crate::Error::Invalid(format!(
                "an organization named `{}` already exists ({}); organization names are unique, ignoring case",
                same.name, same.org_id
            )));
        }
        org.name = name.to_string();
    }
    let cleared = |v: &str| {
        let v = v.trim();
        (!v.is_empty()).then(|| v.to_string())
    };
    if let Some(domain) = &change.domain {
        org.domain = cleared(domain);
    }
    if let Some(context) = &change.context {
        // Kept as written (only an all-blank text clears it).
        org.context = cleared(context).map(|_| context.clone());
    }
    org.updated_at = Utc::now();
    save(lake, &org).await?;
    Ok(org)
}

/// Set an organization `active` or `disabled`. A disabled organization's
/// write keys and API keys are refused (once servers refresh their caches);
/// its data stays.
pub async fn set_status(lake: &Lake, org_id: &str, active: bool) -> Result<Organization> {
    let mut org = existing(lake, org_id).await?;
    org.status = if active { "active" } else { "disabled" }.into();
    org.updated_at = Utc::now();
    save(lake, &org).await?;
    Ok(org)
}

/// Set (or, with `None`, remove) the organization's notification webhook.
/// Returns the signing secret of a new webhook (shown once).
pub async fn set_webhook(lake: &Lake, org_id: &str, url: Option<&str>) -> Result<Option<String>> {
    let mut org = existing(lake, org_id).await?;
    let secret = match url {
        Some(u) => {
            let parsed = url::Url::parse(u.trim())
                .map_err(|e| crate::Error::Invalid(format!("--url `{u}` is not a URL: {e}")))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(crate::Error::Invalid(format!(
                    "--url `{u}` must be http:// or https://"
                )));
            }
            let secret = new_secret("whsec");
            org.webhook_url = Some(parsed.to_string());
            org.webhook_secret = Some(secret.clone());
            Some(secret)
        }
        None => {
            org.webhook_url = None;
            org.webhook_secret = None;
            None
        }
    };
    org.updated_at = Utc::now();
    save(lake, &org).await?;
    Ok(secret)
}

/// Rows deleted from one table by [`delete`].
#[derive(Debug, Clone, Serialize)]
pub struct Deleted {
    /// The table.
    pub table: &'static str,
    /// Rows deleted.
    pub rows: u64,
}

/// Delete a disabled organization and every row of it in every table (its
/// events, sessions, interactions, patterns, usage, keys, products, job
/// records), the organization's own row last, so an interrupted delete can
/// be run again. Deleted rows leave the files of older table versions until
/// a vacuum past the retention removes them.
pub async fn delete(lake: &Lake, org_id: &str) -> Result<Vec<Deleted>> {
    let org = existing(lake, org_id).await?;
    if org.status == "active" {
        return Err(crate::Error::Invalid(format!(
            "organization {} (`{}`) is active: disable it first (`crow orgs disable {}`), so collectors and the API stop accepting it, then delete it",
            org.org_id, org.name, org.org_id
        )));
    }
    let predicate = col("org_id").eq(lit(org.org_id.as_str()));
    let mut out = Vec::new();
    for def in crow_schemas::ALL_TABLES
        .iter()
        .filter(|d| d.name != ORGANIZATIONS.name)
        .chain(std::iter::once(&ORGANIZATIONS))
    {
        let rows = lake.delete_where(def.name, &predicate).await?;
        out.push(Deleted {
            table: def.name,
            rows,
        });
    }
    Ok(out)
}

async fn existing(lake: &Lake, org_id: &str) -> Result<Organization> {
    get(lake, org_id)
        .await?
        .ok_or_else(|| crate::Error::Invalid(format!("no organization with id `{org_id}`")))
}

async fn save(lake: &Lake, org: &Organization) -> Result<()> {
    let batch = rows_to_batch(&ORGANIZATIONS, std::slice::from_ref(org))?;
    lake.merge(ORGANIZATIONS.name, vec![batch], &["org_id"])
        .await?;
    Ok(())
}

/// Every organization, oldest first.
pub async fn list(lake: &Lake) -> Result<Vec<Organization>> {
    let df = lake.dataframe(ORGANIZATIONS.name).await?;
    let batches = df
        .sort(vec![col("created_at").sort(true, true)])?
        .collect()
        .await?;
    batches_to_rows(&batches)
}

/// The organization with this id.
pub async fn get(lake: &Lake, org_id: &str) -> Result<Option<Organization>> {
    find(lake, col("org_id").eq(lit(org_id))).await
}

/// Every organization with this name, oldest first: the exact matches if
/// any, else the matches ignoring case (and surrounding spaces).
pub async fn named(lake: &Lake, name: &str) -> Result<Vec<Organization>> {
    let name = name.trim();
    let all = list(lake).await?;
    let exact: Vec<Organization> = all.iter().filter(|o| o.name == name).cloned().collect();
    if !exact.is_empty() {
        return Ok(exact);
    }
    let lower = name.to_lowercase();
    Ok(all
        .into_iter()
        .filter(|o| o.name.trim().to_lowercase() == lower)
        .collect())
}

/// The first organization with this exact name.
pub async fn find_by_name(lake: &Lake, name: &str) -> Result<Option<Organization>> {
    find(lake, col("name").eq(lit(name))).await
}

/// The active organization whose write key this is (its current key, or
/// the previous one within its grace period).
pub async fn find_by_write_key(lake: &Lake, write_key: &str) -> Result<Option<Organization>> {
    let hash = sha256_hex(write_key.as_bytes());
    let now = Utc::now();
    Ok(list(lake)
        .await?
        .into_iter()
        .find(|o| o.accepted_key_hashes(now).iter().any(|(h, _)| *h == hash)))
}

async fn find(lake: &Lake, predicate: datafusion::prelude::Expr) -> Result<Option<Organization>> {
    let df = lake.dataframe(ORGANIZATIONS.name).await?;
    let batches = df
        .filter(predicate)?
        .sort(vec![col("created_at").sort(true, true)])?
        .limit(0, Some(1))?
        .collect()
        .await?;
    Ok(batches_to_rows(&batches)?.into_iter().next())
}
