//! Users: the people of an organization, their roles, one-time invitation
//! and reset tokens, sign-in sessions, and the audit log.
//!
//! Security rules kept here, in one place:
//! - a password is stored only as an argon2id PHC string with a per-user
//!   random salt; a token or session secret only as its SHA-256;
//! - invitation and reset tokens work once and expire
//!   ([`TOKEN_LIFETIME_HOURS`] by default);
//! - a sign-in for an unknown e-mail runs the same argon2 verification
//!   against a fixed hash, so the answer and its timing do not tell whether
//!   the address exists;
//! - every action that changes who can do what is appended to `audit_log`.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use chrono::{DateTime, Duration, Utc};
use crow_lake::batch::{batches_to_rows, rows_to_batch, ts_micros};
use crow_lake::ids::{new_id, new_secret, sha256_hex};
use crow_lake::{Error, Lake, Result};
use crow_schemas::{USERS, USER_SESSIONS, USER_TOKENS};
use datafusion::prelude::{col, lit};
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::keys::Scope;

pub use crow_lake::audit::{audit, Audit, AuditEntry};

/// Hours an invitation or reset token stays valid.
pub const TOKEN_LIFETIME_HOURS: i64 = 24;
/// Shortest password accepted.
pub const MIN_PASSWORD_LEN: usize = 10;
/// Longest password accepted (argon2 hashes any length; this bounds work).
pub const MAX_PASSWORD_LEN: usize = 256;

/// A user's role. Each role includes the permissions of the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads the organization's data and insights.
    Viewer,
    /// Also runs SQL and exports.
    Analyst,
    /// Also manages products, keys, users (not owners) and settings, and
    /// reads the audit log.
    Admin,
    /// Everything, including owners and erasing data.
    Owner,
}

impl Role {
    /// The role's name as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Analyst => "analyst",
            Role::Admin => "admin",
            Role::Owner => "owner",
        }
    }

    /// The API-key scope a user with this role acts with on the data
    /// endpoints (see the permission matrix in [`crate::auth::Permission`]).
    pub fn scope(self) -> Scope {
        match self {
            Role::Viewer => Scope::Read,
            Role::Analyst => Scope::Export,
            Role::Admin | Role::Owner => Scope::Admin,
        }
    }
}

impl std::str::FromStr for Role {
    type Err = Error;
    fn from_str(s: &str) -> Result<Role> {
        match s.trim() {
            "viewer" => Ok(Role::Viewer),
            "analyst" => Ok(Role::Analyst),
            "admin" => Ok(Role::Admin),
            "owner" => Ok(Role::Owner),
            other => Err(Error::Invalid(format!(
                "role `{other}` is not one of owner, admin, analyst, viewer"
            ))),
        }
    }
}

/// One user, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    /// Organization.
    pub org_id: String,
    /// User id.
    pub user_id: String,
    /// E-mail, lower case.
    pub email: String,
    /// Display name.
    pub display_name: Option<String>,
    /// Role name.
    pub role: String,
    /// 'invited', 'active' or 'disabled'.
    pub status: String,
    /// argon2id PHC string.
    pub password_hash: Option<String>,
    /// Creation time.
    #[serde(with = "ts_micros")]
    pub created_at: DateTime<Utc>,
    /// Last change.
    #[serde(with = "ts_micros")]
    pub updated_at: DateTime<Utc>,
    /// Last sign-in.
    #[serde(with = "ts_micros::option", default)]
    pub last_sign_in_at: Option<DateTime<Utc>>,
}

impl User {
    /// The user's role (an unknown stored role grants only viewing).
    pub fn role(&self) -> Role {
        self.role.parse().unwrap_or(Role::Viewer)
    }

    /// The user as shown to people and scripts: never the password hash.
    pub fn public_json(&self) -> serde_json::Value {
        let ts = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        serde_json::json!({
            "id": self.user_id,
            "org_id": self.org_id,
            "email": self.email,
            "display_name": self.display_name,
            "role": self.role,
            "status": self.status,
            "created_at": ts(self.created_at),
            "last_sign_in_at": self.last_sign_in_at.map(ts),
        })
    }
}

/// A one-time token, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserToken {
    /// Organization.
    pub org_id: String,
    /// Token id.
    pub token_id: String,
    /// SHA-256 of the token.
    pub token_hash: String,
    /// The user.
    pub user_id: String,
    /// 'invite' or 'reset'.
    pub kind: String,
    /// Issued.
    #[serde(with = "ts_micros")]
    pub created_at: DateTime<Utc>,
    /// Expiry.
    #[serde(with = "ts_micros")]
    pub expires_at: DateTime<Utc>,
    /// Use.
    #[serde(with = "ts_micros::option", default)]
    pub used_at: Option<DateTime<Utc>>,
}

/// A sign-in session, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserSession {
    /// Organization.
    pub org_id: String,
    /// Public session id.
    pub session_id: String,
    /// SHA-256 of the cookie secret.
    pub session_hash: String,
    /// The user.
    pub user_id: String,
    /// Sign-in time.
    #[serde(with = "ts_micros")]
    pub created_at: DateTime<Utc>,
    /// Last request seen.
    #[serde(with = "ts_micros")]
    pub last_seen_at: DateTime<Utc>,
    /// Absolute end.
    #[serde(with = "ts_micros")]
    pub expires_at: DateTime<Utc>,
    /// Sign-out or revocation.
    #[serde(with = "ts_micros::option", default)]
    pub revoked_at: Option<DateTime<Utc>>,
    /// Client address hash at sign-in.
    pub ip_hash: Option<String>,
    /// User-Agent at sign-in.
    pub user_agent: Option<String>,
}

impl UserSession {
    /// Whether the session may be used at `now` with this idle limit.
    pub fn is_live(&self, now: DateTime<Utc>, idle: Duration) -> bool {
        self.revoked_at.is_none() && now < self.expires_at && now - self.last_seen_at < idle
    }

    /// The session as shown to people: never the hash.
    pub fn public_json(&self, now: DateTime<Utc>, idle: Duration) -> serde_json::Value {
        let ts = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        serde_json::json!({
            "id": self.session_id,
            "user_id": self.user_id,
            "created_at": ts(self.created_at),
            "last_seen_at": ts(self.last_seen_at),
            "expires_at": ts(self.expires_at),
            "revoked_at": self.revoked_at.map(ts),
            "user_agent": self.user_agent,
            "status": if self.revoked_at.is_some() { "revoked" }
                else if self.is_live(now, idle) { "active" } else { "expired" },
        })
    }
}

/// A user just created, with the one-time token that sets their password
/// (none when the password was given).
#[derive(Debug, Clone)]
pub struct Invited {
    /// The stored user.
    pub user: User,
    /// The invitation token (shown once).
    pub token: Option<String>,
}

/// Normalise an e-mail address: trimmed, lower case, and plausibly an
/// address (one `@`, something on each side, no spaces or controls).
pub fn normalize_email(email: &str) -> Result<String> {
    let e = email.trim().to_lowercase();
    let ok = e.len() <= 254
        && e.split('@').count() == 2
        && !e.starts_with('@')
        && !e.ends_with('@')
        && !e.chars().any(|c| c.is_whitespace() || c.is_control());
    if ok {
        Ok(e)
    } else {
        Err(Error::Invalid(format!(
            "`{}` is not an e-mail address",
            email.trim()
        )))
    }
}

fn check_password(password: &str) -> Result<()> {
    let n = password.chars().count();
    if n < MIN_PASSWORD_LEN {
        return Err(Error::Invalid(format!(
            "a password needs at least {MIN_PASSWORD_LEN} characters"
        )));
    }
    if password.len() > MAX_PASSWORD_LEN {
        return Err(Error::Invalid(format!(
            "a password has at most {MAX_PASSWORD_LEN} bytes"
        )));
    }
    Ok(())
}

/// An argon2id PHC string of `password` with a fresh random salt.
pub fn hash_password(password: &str) -> Result<String> {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt =
        SaltString::encode_b64(&salt).map_err(|e| Error::Invalid(format!("password salt: {e}")))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::Invalid(format!("hashing the password: {e}")))
}

/// A fixed hash verified for unknown e-mails, so they cost the same time.
fn dummy_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| hash_password("crow-dummy-password-never-matches").unwrap_or_default())
}

/// Whether `password` matches the PHC string `hash` (argon2's comparison
/// is constant-time).
pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

/// Every user (of one organization, if given), oldest first.
pub async fn list(lake: &Lake, org_id: Option<&str>) -> Result<Vec<User>> {
    crate::keys::rows_by_creation(lake, USERS.name, org_id.map(|o| ("org_id", o)), true).await
}

/// The user with this id or e-mail.
pub async fn find(lake: &Lake, id_or_email: &str) -> Result<User> {
    let key = id_or_email.trim();
    let email = key.to_lowercase();
    list(lake, None)
        .await?
        .into_iter()
        .find(|u| u.user_id == key || u.email == email)
        .ok_or_else(|| Error::Invalid(format!("no user with id or e-mail `{key}`")))
}

async fn save(lake: &Lake, user: &User) -> Result<()> {
    let batch = rows_to_batch(&USERS, std::slice::from_ref(user))?;
    lake.merge(USERS.name, vec![batch], &["user_id"]).await?;
    Ok(())
}

/// Create a user of `org_id`. With `password` the user is active at once;
/// without, they are `invited` and the returned token sets their password.
pub async fn create(
    lake: &Lake,
    org_id: &str,
    email: &str,
    role: Role,
    display_name: Option<&str>,
    password: Option<&str>,
) -> Result<Invited> {
    let email = normalize_email(email)?;
    if list(lake, None).await?.iter().any(|u| u.email == email) {
        return Err(Error::Invalid(format!(
            "a user with e-mail `{email}` already exists (e-mail addresses are unique)"
        )));
    }
    if let Some(p) = password {
        check_password(p)?;
    }
    let now = Utc::now();
    let user = User {
        org_id: org_id.to_string(),
        user_id: new_id("usr"),
        email,
        display_name: display_name
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(str::to_string),
        role: role.as_str().to_string(),
        status: if password.is_some() {
            "active"
        } else {
            "invited"
        }
        .into(),
        password_hash: password.map(hash_password).transpose()?,
        created_at: now,
        updated_at: now,
        last_sign_in_at: None,
    };
    let batch = rows_to_batch(&USERS, std::slice::from_ref(&user))?;
    lake.append(USERS.name, vec![batch]).await?;
    let token = if password.is_none() {
        Some(issue_token(lake, &user, "invite").await?)
    } else {
        None
    };
    Ok(Invited { user, token })
}

/// Issue a one-time token of `kind` for `user` (earlier unused tokens of
/// the user stop working).
pub async fn issue_token(lake: &Lake, user: &User, kind: &str) -> Result<String> {
    let now = Utc::now();
    // One live token per user: the newest.
    let mut open: Vec<UserToken> = tokens_of(lake, &user.user_id)
        .await?
        .into_iter()
        .filter(|t| t.used_at.is_none() && t.expires_at > now)
        .collect();
    for t in &mut open {
        t.expires_at = now;
    }
    if !open.is_empty() {
        let batch = rows_to_batch(&USER_TOKENS, &open)?;
        lake.merge(USER_TOKENS.name, vec![batch], &["token_id"])
            .await?;
    }
    let secret = new_secret(if kind == "invite" { "inv" } else { "rst" });
    let token = UserToken {
        org_id: user.org_id.clone(),
        token_id: new_id("tok"),
        token_hash: sha256_hex(secret.as_bytes()),
        user_id: user.user_id.clone(),
        kind: kind.to_string(),
        created_at: now,
        expires_at: now + Duration::hours(TOKEN_LIFETIME_HOURS),
        used_at: None,
    };
    let batch = rows_to_batch(&USER_TOKENS, std::slice::from_ref(&token))?;
    lake.append(USER_TOKENS.name, vec![batch]).await?;
    Ok(secret)
}

async fn tokens_of(lake: &Lake, user_id: &str) -> Result<Vec<UserToken>> {
    let df = lake
        .dataframe(USER_TOKENS.name)
        .await?
        .filter(col("user_id").eq(lit(user_id)))?;
    batches_to_rows(&df.collect().await?)
}

/// Why a token was not accepted (all answered alike to the client).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRefusal {
    /// No such token.
    Unknown,
    /// Past its expiry.
    Expired,
    /// Already used.
    Used,
}

/// Set a password with a one-time token: the token is marked used, the
/// user becomes active, and their open sessions are revoked (a reset ends
/// every sign-in made with the old password).
pub async fn set_password_with_token(
    lake: &Lake,
    token: &str,
    password: &str,
) -> Result<std::result::Result<User, TokenRefusal>> {
    check_password(password)?;
    let hash = sha256_hex(token.trim().as_bytes());
    let df = lake
        .dataframe(USER_TOKENS.name)
        .await?
        .filter(col("token_hash").eq(lit(hash)))?;
    let Some(mut t) = batches_to_rows::<UserToken>(&df.collect().await?)?
        .into_iter()
        .next()
    else {
        return Ok(Err(TokenRefusal::Unknown));
    };
    let now = Utc::now();
    if t.used_at.is_some() {
        return Ok(Err(TokenRefusal::Used));
    }
    if t.expires_at <= now {
        return Ok(Err(TokenRefusal::Expired));
    }
    let mut user = find(lake, &t.user_id).await?;
    if user.status == "disabled" {
        return Ok(Err(TokenRefusal::Unknown));
    }
    t.used_at = Some(now);
    let batch = rows_to_batch(&USER_TOKENS, std::slice::from_ref(&t))?;
    lake.merge(USER_TOKENS.name, vec![batch], &["token_id"])
        .await?;
    user.password_hash = Some(hash_password(password)?);
    user.status = "active".into();
    user.updated_at = now;
    save(lake, &user).await?;
    revoke_sessions(lake, &user.user_id, None).await?;
    Ok(Ok(user))
}

/// Check an e-mail and password. `Ok(None)` for a wrong password, an
/// unknown e-mail or a user who cannot sign in — alike, in answer and time.
pub async fn check_login(lake: &Lake, email: &str, password: &str) -> Result<Option<User>> {
    let email = email.trim().to_lowercase();
    let user = list(lake, None)
        .await?
        .into_iter()
        .find(|u| u.email == email);
    let hash = user
        .as_ref()
        .and_then(|u| u.password_hash.clone())
        .unwrap_or_else(|| dummy_hash().to_string());
    let matches = verify_password(password, &hash);
    Ok(user.filter(|u| matches && u.status == "active" && u.password_hash.is_some()))
}

/// Set a user's password directly (an operator's or the demo's action):
/// the user becomes active and their sessions are revoked.
pub async fn set_password(lake: &Lake, id_or_email: &str, password: &str) -> Result<User> {
    check_password(password)?;
    let mut user = find(lake, id_or_email).await?;
    user.password_hash = Some(hash_password(password)?);
    if user.status != "disabled" {
        user.status = "active".into();
    }
    user.updated_at = Utc::now();
    save(lake, &user).await?;
    revoke_sessions(lake, &user.user_id, None).await?;
    Ok(user)
}

/// Change a user's role.
pub async fn set_role(lake: &Lake, id_or_email: &str, role: Role) -> Result<User> {
    let mut user = find(lake, id_or_email).await?;
    user.role = role.as_str().to_string();
    user.updated_at = Utc::now();
    save(lake, &user).await?;
    Ok(user)
}

/// Disable or enable a user; disabling revokes their sessions.
pub async fn set_disabled(lake: &Lake, id_or_email: &str, disabled: bool) -> Result<User> {
    let mut user = find(lake, id_or_email).await?;
    user.status = if disabled {
        "disabled".into()
    } else if user.password_hash.is_some() {
        "active".into()
    } else {
        "invited".into()
    };
    user.updated_at = Utc::now();
    save(lake, &user).await?;
    if disabled {
        revoke_sessions(lake, &user.user_id, None).await?;
    }
    Ok(user)
}

/// Record a successful sign-in and open a session lasting `lifetime`.
/// Returns the session and the cookie secret (shown once).
pub async fn open_session(
    lake: &Lake,
    user: &User,
    lifetime: Duration,
    ip_hash: Option<String>,
    user_agent: Option<String>,
) -> Result<(UserSession, String)> {
    let now = Utc::now();
    let secret = new_secret("ses");
    let session = UserSession {
        org_id: user.org_id.clone(),
        session_id: new_id("ses"),
        session_hash: sha256_hex(secret.as_bytes()),
        user_id: user.user_id.clone(),
        created_at: now,
        last_seen_at: now,
        expires_at: now + lifetime,
        revoked_at: None,
        ip_hash,
        user_agent: user_agent.map(|u| u.chars().take(512).collect()),
    };
    let batch = rows_to_batch(&USER_SESSIONS, std::slice::from_ref(&session))?;
    lake.append(USER_SESSIONS.name, vec![batch]).await?;
    let mut u = user.clone();
    u.last_sign_in_at = Some(now);
    save(lake, &u).await?;
    Ok((session, secret))
}

/// Every session (of one user, if given), newest first.
pub async fn sessions(lake: &Lake, user_id: Option<&str>) -> Result<Vec<UserSession>> {
    let only = user_id.map(|u| ("user_id", u));
    crate::keys::rows_by_creation(lake, USER_SESSIONS.name, only, false).await
}

/// Every session that may still be used: not revoked and not past its
/// absolute end (idle time is checked per request). What servers cache:
/// ended sessions, however many, cost them nothing.
pub async fn live_sessions(lake: &Lake) -> Result<Vec<UserSession>> {
    let now = datafusion::scalar::ScalarValue::TimestampMicrosecond(
        Some(Utc::now().timestamp_micros()),
        Some("UTC".into()),
    );
    let batches = lake
        .dataframe(USER_SESSIONS.name)
        .await?
        .filter(
            col("revoked_at")
                .is_null()
                .and(col("expires_at").gt(lit(now))),
        )?
        .collect()
        .await?;
    batches_to_rows(&batches)
}

/// Revoke a user's open sessions (all, or the one with `session_id`).
/// Returns how many were revoked.
pub async fn revoke_sessions(
    lake: &Lake,
    user_id: &str,
    session_id: Option<&str>,
) -> Result<usize> {
    let now = Utc::now();
    let mut open: Vec<UserSession> = sessions(lake, Some(user_id))
        .await?
        .into_iter()
        .filter(|s| s.revoked_at.is_none() && session_id.is_none_or(|id| s.session_id == id))
        .collect();
    for s in &mut open {
        s.revoked_at = Some(now);
    }
    if !open.is_empty() {
        let batch = rows_to_batch(&USER_SESSIONS, &open)?;
        lake.merge(USER_SESSIONS.name, vec![batch], &["session_id"])
            .await?;
    }
    Ok(open.len())
}

/// Note that a session was used now (callers do this at most every few
/// minutes per session).
pub async fn touch_session(lake: &Lake, session: &UserSession) -> Result<()> {
    let mut s = session.clone();
    s.last_seen_at = Utc::now();
    let batch = rows_to_batch(&USER_SESSIONS, std::slice::from_ref(&s))?;
    lake.merge(USER_SESSIONS.name, vec![batch], &["session_id"])
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_with_their_own_salt_and_verify() {
        let a = hash_password("correct horse battery").unwrap();
        let b = hash_password("correct horse battery").unwrap();
        assert!(a.starts_with("$argon2id$"), "{a}");
        assert_ne!(a, b, "per-user salt");
        assert!(verify_password("correct horse battery", &a));
        assert!(!verify_password("correct horse batterx", &a));
        assert!(!verify_password("x", "not a hash"));
        assert!(check_password("short").is_err());
        assert!(check_password(&"x".repeat(300)).is_err());
    }

    #[test]
    fn roles_and_emails() {
        assert!(Role::Owner > Role::Admin && Role::Analyst > Role::Viewer);
        assert_eq!(Role::Analyst.scope(), Scope::Export);
        assert!("root".parse::<Role>().is_err());
        assert_eq!(
            normalize_email(" Ann@Example.COM ").unwrap(),
            "ann@example.com"
        );
        for bad in ["", "ann", "@x", "a@", "a b@c", "a@b@c"] {
            assert!(normalize_email(bad).is_err(), "{bad}");
        }
    }
}
