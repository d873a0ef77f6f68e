//! `crow orgs`: organizations (tenants) and their lifecycle — create, list,
//! show, update, rotate the write key, disable, enable, delete.

use anyhow::{bail, Result};
use clap::Subcommand;
use crow_lake::orgs::{self, OrgUpdate, Organization};
use crow_lake::Lake;

use crate::output::{self, Format};
use crate::FormatArg;

#[derive(Debug, Subcommand)]
pub enum OrgsCommand {
    /// Create an organization and its ingest write key (shown once).
    Create {
        /// Display name.
        #[arg(long)]
        name: String,
        /// Primary web domain.
        #[arg(long)]
        domain: Option<String>,
        /// Context about the brand for the AI provider.
        #[arg(long)]
        context: Option<String>,
        #[command(flatten)]
        format: FormatArg,
    },
    /// List organizations.
    List(FormatArg),
    /// One organization: name, domain, status, write key prefix, the
    /// previous key's grace period, and the context given to the AI.
    Show {
        /// Organization id or name.
        org: String,
        #[command(flatten)]
        format: FormatArg,
    },
    /// Change an organization's name, domain or AI context (an empty
    /// --domain or --context clears it).
    Update {
        /// Organization id or name.
        org: String,
        /// New display name (unique, ignoring case).
        #[arg(long)]
        name: Option<String>,
        /// New primary web domain.
        #[arg(long)]
        domain: Option<String>,
        /// New context for the AI provider.
        #[arg(long, conflicts_with = "context_file")]
        context: Option<String>,
        /// Read the new context from this file.
        #[arg(long, value_name = "FILE")]
        context_file: Option<std::path::PathBuf>,
        #[command(flatten)]
        format: FormatArg,
    },
    /// Give the organization a new write key (shown once); the current key
    /// keeps working for the grace period so senders can switch.
    RotateKey {
        /// Organization id or name.
        org: String,
        /// Hours the current key stays valid (0: refuse it at once).
        #[arg(long, default_value_t = 24)]
        grace_hours: u32,
        #[command(flatten)]
        format: FormatArg,
    },
    /// Send the organization's notifications to a URL (POST, JSON, signed
    /// with HMAC-SHA256; the secret is shown once), or stop (--off).
    Webhook {
        /// Organization id or name.
        org: String,
        /// The receiving URL (http or https).
        #[arg(long, conflicts_with = "off", required_unless_present = "off")]
        url: Option<String>,
        /// Remove the webhook.
        #[arg(long)]
        off: bool,
        #[command(flatten)]
        format: FormatArg,
    },
    /// Stop accepting the organization's events and API calls (its write
    /// keys and API keys are refused); its data stays.
    Disable {
        /// Organization id or name.
        org: String,
        #[command(flatten)]
        format: FormatArg,
    },
    /// Accept a disabled organization's keys again.
    Enable {
        /// Organization id or name.
        org: String,
        #[command(flatten)]
        format: FormatArg,
    },
    /// Delete a disabled organization and all its rows in every table.
    Delete {
        /// Organization id or name.
        org: String,
        /// Confirm: this cannot be undone (older table versions keep the
        /// rows until a vacuum past the retention).
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        format: FormatArg,
    },
}

const SHOWN: &[&str] = &[
    "org_id",
    "name",
    "domain",
    "status",
    "write_key_prefix",
    "previous_key_valid_until",
    "context",
    "created_at",
    "updated_at",
];

fn shown(o: &Organization) -> serde_json::Value {
    serde_json::json!({
        "org_id": o.org_id, "name": o.name, "domain": o.domain, "status": o.status,
        "write_key_prefix": o.write_key_prefix,
        "previous_key_valid_until": o.previous_write_key_expires_at.filter(|t| *t > chrono::Utc::now()),
        "context": o.context, "created_at": o.created_at, "updated_at": o.updated_at,
    })
}

/// Run one `crow orgs` command.
pub async fn run(lake: &Lake, cmd: OrgsCommand) -> Result<()> {
    match cmd {
        OrgsCommand::Create {
            name,
            domain,
            context,
            format,
        } => {
            let created = orgs::create(lake, &name, domain.as_deref(), context.as_deref()).await?;
            let obj = serde_json::json!({
                "org_id": created.org.org_id, "name": created.org.name, "domain": created.org.domain,
                "write_key": created.write_key, "created_at": created.org.created_at,
            });
            output::print_object(
                format.format,
                &["org_id", "name", "domain", "write_key", "created_at"],
                &obj,
            )
        }
        OrgsCommand::List(f) => list(lake, f.format).await,
        OrgsCommand::Show { org, format } => {
            let o = resolve(lake, &org).await?;
            output::print_object(format.format, SHOWN, &shown(&o))
        }
        OrgsCommand::Update {
            org,
            name,
            domain,
            context,
            context_file,
            format,
        } => update(lake, &org, name, domain, context, context_file, format).await,
        OrgsCommand::RotateKey {
            org,
            grace_hours,
            format,
        } => rotate_key(lake, &org, grace_hours, format).await,
        OrgsCommand::Webhook {
            org,
            url,
            off,
            format,
        } => webhook(lake, &org, if off { None } else { url }, format).await,
        OrgsCommand::Disable { org, format } => status(lake, &org, false, format.format).await,
        OrgsCommand::Enable { org, format } => status(lake, &org, true, format.format).await,
        OrgsCommand::Delete { org, yes, format } => delete(lake, &org, yes, format.format).await,
    }
}

/// `crow orgs list`: every organization (never a write key, only its prefix).
async fn list(lake: &Lake, format: Format) -> Result<()> {
    let rows: Vec<serde_json::Value> = orgs::list(lake)
        .await?
        .iter()
        .map(|o| {
            serde_json::json!({
                "org_id": o.org_id, "name": o.name, "domain": o.domain, "status": o.status,
                "write_key_prefix": o.write_key_prefix, "created_at": o.created_at,
            })
        })
        .collect();
    output::print_rows(
        format,
        &[
            "org_id",
            "name",
            "domain",
            "status",
            "write_key_prefix",
            "created_at",
        ],
        &rows,
    )
}

/// `crow orgs delete`: remove the organization's rows from every table,
/// only when confirmed (`yes`); prints the rows deleted per table.
async fn delete(lake: &Lake, org: &str, yes: bool, format: Format) -> Result<()> {
    let o = resolve(lake, org).await?;
    if !yes {
        bail!(
            "deleting {} (`{}`) removes all its rows from every table and cannot be undone; add --yes to confirm",
            o.org_id,
            o.name
        );
    }
    let deleted = orgs::delete(lake, &o.org_id).await?;
    let rows: Vec<serde_json::Value> = deleted
        .iter()
        .map(|d| serde_json::json!({"table": d.table, "rows_deleted": d.rows}))
        .collect();
    output::print_rows(format, &["table", "rows_deleted"], &rows)
}

/// `crow orgs update`: change fields in place.
async fn update(
    lake: &Lake,
    org: &str,
    name: Option<String>,
    domain: Option<String>,
    context: Option<String>,
    context_file: Option<std::path::PathBuf>,
    format: FormatArg,
) -> Result<()> {
    let org = resolve(lake, org).await?;
    let context =
        match context_file {
            Some(path) => Some(std::fs::read_to_string(&path).map_err(|e| {
                anyhow::anyhow!("cannot read --context-file {}: {e}", path.display())
            })?),
            None => context,
        };
    if name.is_none() && domain.is_none() && context.is_none() {
        bail!("nothing to change: give --name, --domain, --context or --context-file");
    }
    let change = OrgUpdate {
        name,
        domain,
        context,
    };
    let o = orgs::update(lake, &org.org_id, &change).await?;
    crate::users::audit_cli(
        lake,
        &o.org_id,
        "org.update",
        &o.org_id,
        serde_json::json!({}),
    )
    .await;
    output::print_object(format.format, SHOWN, &shown(&o))
}

/// `crow orgs rotate-key`: a new write key; the old one for the grace.
async fn rotate_key(lake: &Lake, org: &str, grace_hours: u32, format: FormatArg) -> Result<()> {
    let o = resolve(lake, org).await?;
    let grace = chrono::Duration::hours(i64::from(grace_hours));
    let key = orgs::rotate_write_key_with_grace(lake, &o.org_id, grace).await?;
    crate::users::audit_cli(
        lake,
        &o.org_id,
        "org.rotate_write_key",
        &o.org_id,
        serde_json::json!({"grace_hours": grace_hours}),
    )
    .await;
    let until = (grace_hours > 0).then(|| chrono::Utc::now() + grace);
    let obj = serde_json::json!({
        "org_id": o.org_id, "write_key": key, "previous_key_valid_until": until,
    });
    output::print_object(
        format.format,
        &["org_id", "write_key", "previous_key_valid_until"],
        &obj,
    )
}

/// `crow orgs webhook`: set (printing the secret once) or remove it.
async fn webhook(lake: &Lake, org: &str, url: Option<String>, format: FormatArg) -> Result<()> {
    let o = resolve(lake, org).await?;
    let secret = orgs::set_webhook(lake, &o.org_id, url.as_deref()).await?;
    crate::users::audit_cli(
        lake,
        &o.org_id,
        "org.webhook",
        &o.org_id,
        serde_json::json!({"url": url}),
    )
    .await;
    if format.format != Format::Json && secret.is_some() {
        eprintln!("The signing secret is shown once: keep it to verify X-Crow-Signature.");
    }
    let obj = serde_json::json!({"org_id": o.org_id, "webhook_url": url, "webhook_secret": secret});
    output::print_object(
        format.format,
        &["org_id", "webhook_url", "webhook_secret"],
        &obj,
    )
}

async fn status(lake: &Lake, org: &str, active: bool, format: Format) -> Result<()> {
    let o = resolve(lake, org).await?;
    let o = orgs::set_status(lake, &o.org_id, active).await?;
    crate::users::audit_cli(
        lake,
        &o.org_id,
        if active { "org.enable" } else { "org.disable" },
        &o.org_id,
        serde_json::json!({}),
    )
    .await;
    output::print_object(format, SHOWN, &shown(&o))
}

/// The organization named by `org` (id, else unique name).
pub async fn resolve(lake: &Lake, org: &str) -> Result<Organization> {
    Ok(crow_query_api::keys::resolve_org(lake, org).await?)
}
