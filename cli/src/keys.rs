//! `crow keys`: query API keys (create, list, revoke).

use anyhow::Result;
use crow_lake::Lake;
use crow_query_api::keys::{self, Scope};

use crate::output::{self, Format};

const COLUMNS: &[&str] = &[
    "id",
    "org_id",
    "name",
    "scope",
    "prefix",
    "status",
    "created_at",
    "expires_at",
    "revoked_at",
];

pub async fn create(
    lake: &Lake,
    org: &str,
    scope: &str,
    expires_days: Option<u32>,
    name: Option<&str>,
    format: Format,
) -> Result<()> {
    let scope: Scope = scope.parse()?;
    lake.prepare().await?;
    let org = keys::resolve_org(lake, org).await?;
    let created = keys::create(lake, &org.org_id, scope, expires_days, name).await?;
    let k = &created.key;
    crate::users::audit_cli(
        lake,
        &k.org_id,
        "key.create",
        &k.key_id,
        serde_json::json!({"scope": k.scope}),
    )
    .await;
    let obj = serde_json::json!({
        "id": k.key_id,
        "secret": created.secret,
        "org_id": k.org_id,
        "scope": k.scope,
        "name": k.name,
        "expires_at": k.expires_at.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
    });
    if format != Format::Json {
        eprintln!("The secret is shown once; only its hash is stored.");
    }
    output::print_object(
        format,
        &["id", "secret", "org_id", "scope", "name", "expires_at"],
        &obj,
    )
}

pub async fn list(lake: &Lake, org: Option<&str>, format: Format) -> Result<()> {
    let org_id = match org {
        Some(o) => Some(keys::resolve_org(lake, o).await?.org_id),
        None => None,
    };
    let rows: Vec<serde_json::Value> = keys::list(lake, org_id.as_deref())
        .await?
        .iter()
        .map(|k| k.public_json())
        .collect();
    output::print_rows(format, COLUMNS, &rows)
}

pub async fn revoke(lake: &Lake, id: &str, format: Format) -> Result<()> {
    let k = keys::revoke(lake, id).await?;
    crate::users::audit_cli(
        lake,
        &k.org_id,
        "key.revoke",
        &k.key_id,
        serde_json::json!({}),
    )
    .await;
    output::print_object(format, COLUMNS, &k.public_json())
}
