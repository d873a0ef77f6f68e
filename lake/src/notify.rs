//! Notifications: rows of `notifications`, one per user, written by the
//! system (jobs, the API) and read by the user through the API.

use chrono::{DateTime, Utc};
use crow_schemas::NOTIFICATIONS;
use datafusion::prelude::{col, lit};
use serde::{Deserialize, Serialize};

use crate::batch::{batches_to_rows, rows_to_batch, ts_micros};
use crate::ids::new_id;
use crate::{Lake, Result};

/// One notification, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// Organization.
    pub org_id: String,
    /// Id.
    pub notification_id: String,
    /// The user.
    pub user_id: String,
    /// Kind.
    pub kind: String,
    /// One line.
    pub title: String,
    /// More.
    pub body: Option<String>,
    /// Where to look.
    pub link: Option<String>,
    /// When.
    #[serde(with = "ts_micros")]
    pub created_at: DateTime<Utc>,
    /// When read.
    #[serde(with = "ts_micros::option", default)]
    pub read_at: Option<DateTime<Utc>>,
}

/// What to tell.
#[derive(Debug, Clone)]
pub struct Notice<'a> {
    /// Kind (`job_failed`, `new_sign_in`, `export_ready`, …).
    pub kind: &'a str,
    /// One line.
    pub title: String,
    /// More.
    pub body: Option<String>,
    /// Where to look.
    pub link: Option<String>,
}

/// Rank of a role name (unknown: lowest).
fn rank(role: &str) -> u8 {
    match role {
        "owner" => 3,
        "admin" => 2,
        "analyst" => 1,
        _ => 0,
    }
}

#[derive(Deserialize)]
struct UserRow {
    org_id: String,
    user_id: String,
    role: String,
    status: String,
}

/// Notify the users (active or invited, not disabled) with at least
/// `min_role` (of `org_id`, or of every active organization). Returns how many rows were written.
pub async fn notify_role(
    lake: &Lake,
    org_id: Option<&str>,
    min_role: &str,
    notice: &Notice<'_>,
) -> Result<usize> {
    let active_orgs: std::collections::HashSet<String> = crate::orgs::list(lake)
        .await?
        .into_iter()
        .filter(|o| o.status == "active")
        .map(|o| o.org_id)
        .collect();
    let mut df = lake.dataframe(crow_schemas::USERS.name).await?;
    if let Some(o) = org_id {
        df = df.filter(col("org_id").eq(lit(o)))?;
    }
    let users: Vec<UserRow> = batches_to_rows(&df.collect().await?)?;
    let to: Vec<(String, String)> = users
        .into_iter()
        .filter(|u| {
            u.status != "disabled"
                && rank(&u.role) >= rank(min_role)
                && active_orgs.contains(&u.org_id)
        })
        .map(|u| (u.org_id, u.user_id))
        .collect();
    notify_users(lake, &to, notice).await
}

/// Like [`notify_role`] for one organization, once per notice: nothing is
/// written when the organization already has a notification of this kind
/// with this link (a job that recomputes a day, or a retried export, tells
/// no one twice). The notice must carry a link; it is the notice's identity.
pub async fn notify_role_once(
    lake: &Lake,
    org_id: &str,
    min_role: &str,
    notice: &Notice<'_>,
) -> Result<usize> {
    let Some(link) = notice.link.as_deref() else {
        return notify_role(lake, Some(org_id), min_role, notice).await;
    };
    let seen = lake
        .dataframe(NOTIFICATIONS.name)
        .await?
        .filter(
            col("org_id")
                .eq(lit(org_id))
                .and(col("kind").eq(lit(notice.kind)))
                .and(col("link").eq(lit(link))),
        )?
        .count()
        .await?;
    if seen > 0 {
        return Ok(0);
    }
    notify_role(lake, Some(org_id), min_role, notice).await
}

/// Notify these `(org_id, user_id)` users.
pub async fn notify_users(
    lake: &Lake,
    users: &[(String, String)],
    notice: &Notice<'_>,
) -> Result<usize> {
    if users.is_empty() {
        return Ok(0);
    }
    let now = Utc::now();
    let rows: Vec<Notification> = users
        .iter()
        .map(|(org, user)| Notification {
            org_id: org.clone(),
            notification_id: new_id("ntf"),
            user_id: user.clone(),
            kind: notice.kind.to_string(),
            title: notice.title.clone(),
            body: notice.body.clone(),
            link: notice.link.clone(),
            created_at: now,
            read_at: None,
        })
        .collect();
    let batch = rows_to_batch(&NOTIFICATIONS, &rows)?;
    lake.append(NOTIFICATIONS.name, vec![batch]).await?;
    // One webhook call per organization with a webhook.
    let mut orgs: Vec<&str> = rows.iter().map(|r| r.org_id.as_str()).collect();
    orgs.sort_unstable();
    orgs.dedup();
    for org_id in orgs {
        let Some(org) = crate::orgs::get(lake, org_id).await? else {
            continue;
        };
        if let (Some(url), Some(secret)) = (org.webhook_url, org.webhook_secret) {
            let payload = serde_json::json!({
                "org_id": org_id,
                "kind": notice.kind,
                "title": notice.title,
                "body": notice.body,
                "link": notice.link,
                "created_at": now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                "users": rows.iter().filter(|r| r.org_id == org_id).count(),
            });
            crate::webhook::deliver(lake.clone(), org_id.to_string(), url, secret, payload);
        }
    }
    Ok(rows.len())
}

/// A user's notifications: unread first, then newest first.
pub async fn for_user(lake: &Lake, user_id: &str) -> Result<Vec<Notification>> {
    let df = lake
        .dataframe(NOTIFICATIONS.name)
        .await?
        .filter(col("user_id").eq(lit(user_id)))?;
    let mut rows: Vec<Notification> = batches_to_rows(&df.collect().await?)?;
    rows.sort_by(|a, b| {
        a.read_at
            .is_some()
            .cmp(&b.read_at.is_some())
            .then(b.created_at.cmp(&a.created_at))
            .then(b.notification_id.cmp(&a.notification_id))
    });
    Ok(rows)
}

/// Mark a user's notification read (`None`: all of them). Returns how many
/// changed.
pub async fn mark_read(lake: &Lake, user_id: &str, id: Option<&str>) -> Result<usize> {
    let now = Utc::now();
    let mut rows: Vec<Notification> = for_user(lake, user_id)
        .await?
        .into_iter()
        .filter(|n| n.read_at.is_none() && id.is_none_or(|i| n.notification_id == i))
        .collect();
    for n in &mut rows {
        n.read_at = Some(now);
    }
    if !rows.is_empty() {
        let batch = rows_to_batch(&NOTIFICATIONS, &rows)?;
        lake.merge(NOTIFICATIONS.name, vec![batch], &["notification_id"])
            .await?;
    }
    Ok(rows.len())
}
