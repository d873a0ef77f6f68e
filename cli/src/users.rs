//! `crow users`: the people of an organization — invite, list, roles,
//! disable/enable, password resets, sessions. Every change is written to
//! `audit_log` with actor `cli`.

use std::io::Read;

use anyhow::{bail, Result};
use clap::Subcommand;
use crow_lake::Lake;
use crow_query_api::users::{self, Audit, Role};

use crate::output::{self, Format};
use crate::FormatArg;

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Create a user of an organization. Prints a one-time invitation
    /// token (valid 24 h) that sets their password at
    /// `POST /api/v1/auth/accept`; or read the password from stdin.
    Create {
        /// Organization id or name.
        #[arg(long)]
        org: String,
        /// E-mail address (unique).
        #[arg(long)]
        email: String,
        /// owner, admin, analyst or viewer.
        #[arg(long, default_value = "viewer")]
        role: String,
        /// Name shown in the dashboard.
        #[arg(long)]
        name: Option<String>,
        /// Read the password from stdin (for scripts) instead of inviting.
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        format: FormatArg,
    },
    /// List users (of one organization).
    List {
        /// Organization id or name.
        #[arg(long)]
        org: Option<String>,
        #[command(flatten)]
        format: FormatArg,
    },
    /// Change a user's role.
    SetRole {
        /// User id or e-mail.
        user: String,
        /// owner, admin, analyst or viewer.
        role: String,
        #[command(flatten)]
        format: FormatArg,
    },
    /// Disable a user: sign-in refused, sessions revoked (within 60 s on
    /// every server).
    Disable {
        /// User id or e-mail.
        user: String,
        #[command(flatten)]
        format: FormatArg,
    },
    /// Enable a disabled user again.
    Enable {
        /// User id or e-mail.
        user: String,
        #[command(flatten)]
        format: FormatArg,
    },
    /// Issue a one-time password-reset token (valid 24 h; earlier tokens of
    /// the user stop working).
    ResetPassword {
        /// User id or e-mail.
        user: String,
        #[command(flatten)]
        format: FormatArg,
    },
    /// A user's sign-in sessions, newest first.
    Sessions {
        /// User id or e-mail.
        user: String,
        #[command(flatten)]
        format: FormatArg,
    },
    /// Revoke a user's sessions (all, or one with --session).
    RevokeSessions {
        /// User id or e-mail.
        user: String,
        /// Only this session id.
        #[arg(long)]
        session: Option<String>,
        #[command(flatten)]
        format: FormatArg,
    },
}

const COLUMNS: &[&str] = &[
    "id",
    "org_id",
    "email",
    "display_name",
    "role",
    "status",
    "created_at",
    "last_sign_in_at",
];

/// Append an entry by the CLI (actor `cli`) to `audit_log`; a failure to
/// write it is logged, not fatal to the change already made.
pub async fn audit_cli(
    lake: &Lake,
    org_id: &str,
    action: &str,
    target: &str,
    detail: serde_json::Value,
) {
    let a = Audit {
        org_id,
        actor: "cli",
        action,
        target: Some(target),
        outcome: "ok",
        detail: Some(detail),
        ..Audit::default()
    };
    if let Err(e) = users::audit(lake, a).await {
        tracing::error!(error = %e, "could not write the audit log");
    }
}

/// Run one `crow users` command.
pub async fn run(lake: &Lake, cfg: &crow_schemas::config::Config, cmd: UsersCommand) -> Result<()> {
    lake.prepare().await?;
    match cmd {
        UsersCommand::Create {
            org,
            email,
            role,
            name,
            password_stdin,
            format,
        } => {
            create(
                lake,
                &org,
                &email,
                &role,
                name,
                password_stdin,
                format.format,
            )
            .await
        }
        UsersCommand::List { org, format } => list(lake, org.as_deref(), format.format).await,
        UsersCommand::SetRole { user, role, format } => {
            let role: Role = role.parse()?;
            let u = users::set_role(lake, &user, role).await?;
            audit_cli(
                lake,
                &u.org_id,
                "user.role",
                &u.user_id,
                serde_json::json!({"role": u.role}),
            )
            .await;
            output::print_object(format.format, COLUMNS, &u.public_json())
        }
        UsersCommand::Disable { user, format } => status(lake, &user, true, format.format).await,
        UsersCommand::Enable { user, format } => status(lake, &user, false, format.format).await,
        UsersCommand::ResetPassword { user, format } => {
            reset_password(lake, &user, format.format).await
        }
        UsersCommand::Sessions { user, format } => sessions(lake, cfg, &user, format.format).await,
        UsersCommand::RevokeSessions {
            user,
            session,
            format,
        } => {
            let u = users::find(lake, &user).await?;
            let n = users::revoke_sessions(lake, &u.user_id, session.as_deref()).await?;
            audit_cli(
                lake,
                &u.org_id,
                "user.sessions_revoke",
                &u.user_id,
                serde_json::json!({"session": session, "revoked": n}),
            )
            .await;
            let obj = serde_json::json!({"id": u.user_id, "sessions_revoked": n});
            output::print_object(format.format, &["id", "sessions_revoked"], &obj)
        }
    }
}

/// `crow users list`: the users (of one organization, by id or name).
async fn list(lake: &Lake, org: Option<&str>, format: Format) -> Result<()> {
    let org_id = match org {
        Some(o) => Some(crate::orgs::resolve(lake, o).await?.org_id),
        None => None,
    };
    let rows: Vec<serde_json::Value> = users::list(lake, org_id.as_deref())
        .await?
        .iter()
        .map(|u| u.public_json())
        .collect();
    output::print_rows(format, COLUMNS, &rows)
}

/// `crow users reset-password`: a reset token for an enabled user (shown
/// once), audited.
async fn reset_password(lake: &Lake, user: &str, format: Format) -> Result<()> {
    let u = users::find(lake, user).await?;
    if u.status == "disabled" {
        bail!("user {} is disabled: enable them first", u.email);
    }
    let token = users::issue_token(lake, &u, "reset").await?;
    audit_cli(
        lake,
        &u.org_id,
        "user.reset_password",
        &u.user_id,
        serde_json::json!({}),
    )
    .await;
    let obj = serde_json::json!({"id": u.user_id, "email": u.email, "reset_token": token});
    output::print_object(format, &["id", "email", "reset_token"], &obj)
}

/// `crow users sessions`: a user's dashboard sessions and their status.
async fn sessions(
    lake: &Lake,
    cfg: &crow_schemas::config::Config,
    user: &str,
    format: Format,
) -> Result<()> {
    let u = users::find(lake, user).await?;
    let now = chrono::Utc::now();
    let idle =
        chrono::Duration::minutes(i64::try_from(cfg.api.session_idle_minutes).unwrap_or(720));
    let rows: Vec<serde_json::Value> = users::sessions(lake, Some(&u.user_id))
        .await?
        .iter()
        .map(|s| s.public_json(now, idle))
        .collect();
    output::print_rows(
        format,
        &[
            "id",
            "user_id",
            "status",
            "created_at",
            "last_seen_at",
            "expires_at",
            "revoked_at",
            "user_agent",
        ],
        &rows,
    )
}

/// `crow users create`: an invited user (token shown once), or an active
/// one with the password read from stdin.
async fn create(
    lake: &Lake,
    org: &str,
    email: &str,
    role: &str,
    name: Option<String>,
    password_stdin: bool,
    format: Format,
) -> Result<()> {
    let role: Role = role.parse()?;
    let org = crate::orgs::resolve(lake, org).await?;
    let password = if password_stdin {
        Some(read_password_stdin()?)
    } else {
        None
    };
    let invited = users::create(
        lake,
        &org.org_id,
        email,
        role,
        name.as_deref(),
        password.as_deref(),
    )
    .await?;
    let u = &invited.user;
    audit_cli(
        lake,
        &u.org_id,
        "user.create",
        &u.user_id,
        serde_json::json!({"email": u.email, "role": u.role}),
    )
    .await;
    let mut obj = u.public_json();
    obj["invitation_token"] = serde_json::json!(invited.token);
    if format != Format::Json && invited.token.is_some() {
        eprintln!(
            "The invitation token is shown once and works once, for {} hours: the user sets a password with POST /api/v1/auth/accept {{\"token\", \"password\"}}.",
            users::TOKEN_LIFETIME_HOURS
        );
    }
    let mut cols = COLUMNS.to_vec();
    cols.push("invitation_token");
    output::print_object(format, &cols, &obj)
}

/// The password on stdin (its final line break removed; empty refused).
fn read_password_stdin() -> Result<String> {
    let mut p = String::new();
    std::io::stdin().read_to_string(&mut p)?;
    let p = p.trim_end_matches(['\n', '\r']).to_string();
    if p.is_empty() {
        bail!("--password-stdin read an empty password");
    }
    Ok(p)
}

async fn status(lake: &Lake, user: &str, disabled: bool, format: Format) -> Result<()> {
    let u = users::set_disabled(lake, user, disabled).await?;
    audit_cli(
        lake,
        &u.org_id,
        if disabled {
            "user.disable"
        } else {
            "user.enable"
        },
        &u.user_id,
        serde_json::json!({}),
    )
    .await;
    output::print_object(format, COLUMNS, &u.public_json())
}
