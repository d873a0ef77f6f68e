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
    };
    let batch = rows_to_batch(&ORGANIZATIONS, std::slice::from_ref(&org))?;
    lake.append(ORGANIZATIONS.name, vec![batch]).await?;
    Ok(CreatedOrg { org, write_key })
}

/// Give an organization a new ingest write key (shown once); the old key
/// stops working as soon as collectors refresh their key cache.
pub async fn rotate_write_key(lake: &Lake, org_id: &str) -> Result<String> {
    let Some(mut org) = get(lake, org_id).await? else {
        return Err(crate::Error::Invalid(format!(
            "no organization with id `{org_id}`"
        )));
    };
    let write_key = new_secret("wk");
    org.write_key_hash = sha256_hex(write_key.as_bytes());
    org.write_key_prefix = write_key.chars().take(8).collect();
    org.updated_at = Utc::now();
    let batch = rows_to_batch(&ORGANIZATIONS, std::slice::from_ref(&org))?;
    lake.merge(ORGANIZATIONS.name, vec![batch], &["org_id"])
        .await?;
    Ok(write_key)
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

/// The active organization whose write key this is.
pub async fn find_by_write_key(lake: &Lake, write_key: &str) -> Result<Option<Organization>> {
    let hash = sha256_hex(write_key.as_bytes());
    find(
        lake,
        col("write_key_hash")
            .eq(lit(hash))
            .and(col("status").eq(lit("active"))),
    )
    .await
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
