//! Social: one session per collector run of the captures.

use super::*;

pub(super) async fn social(pass: &Pass<'_>, built: &mut Built) -> Result<()> {
    let batches = pass
        .first_copies(
            "raw_social_captures",
            "capture_id",
            "captured_at",
            "org_id, capture_id, run_id, platform, url, author, captured_at, text, metrics",
            "org_id, run_id, captured_at, capture_id",
        )
        .await?;
    built.events += rows(&batches);
    let gap = pass.opts.gap.num_microseconds().unwrap_or(i64::MAX);
    let read_end = pass.read_end.timestamp_micros();
    for ((org, run), caps) in collector_runs(&batches)? {
        let started = caps.iter().map(|c| c.at).min().unwrap_or(0);
        let ended = caps.iter().map(|c| c.at).max().unwrap_or(0);
        if ended.saturating_add(gap) > read_end {
            built.open_session(started);
            continue;
        }
        let platforms: BTreeSet<&str> = caps.iter().map(|c| c.platform.as_str()).collect();
        let platform = if platforms.len() == 1 {
            platforms.iter().next().map(|p| p.to_string())
        } else {
            Some("mixed".to_string())
        };
        let timeline: Vec<TimelineEntry> = caps
            .iter()
            .take(MAX_TIMELINE)
            .map(|c| {
                let who = c.author.as_deref().unwrap_or("unknown");
                let body = c.text.as_deref().unwrap_or(&c.url);
                TimelineEntry::new(
                    (c.at - started) / 1_000_000,
                    c.platform.clone(),
                    format!("@{who}: {}{}", truncate(body, 500), c.reach),
                )
            })
            .collect();
        built.out.push(SessionRow {
            session_id: session_id(&org, "social", &run, 0),
            org_id: org,
            channel: "social",
            visitor_id: platform,
            user_id: None,
            anonymous_ids: None,
            started_at: started,
            ended_at: ended,
            event_count: caps.len() as i64,
            page_views: None,
            product_ids: None,
            device_type: None,
            traffic_source: None,
            is_returning: None,
            converted: None,
            source_ref: Some(run),
            timeline: timeline::to_json(&timeline),
            source_ids: caps.iter().map(|c| c.id.clone()).collect(),
            job_run_id: pass.run_id.to_string(),
            session_date: days_from_micros(started),
        })?;
    }
    Ok(())
}

/// A captured post.
struct Cap {
    id: String,
    platform: String,
    url: String,
    author: Option<String>,
    at: i64,
    text: Option<String>,
    reach: String,
}

/// Org and collector run.
type Run = (String, String);

/// The captures of `batches` (sorted by run and time) by collector run.
fn collector_runs(batches: &[RecordBatch]) -> Result<Vec<(Run, Vec<Cap>)>> {
    let mut groups = Vec::new();
    for batch in batches {
        let (o, id, r, p, u, au, t) = (
            text(batch, "org_id")?,
            text(batch, "capture_id")?,
            text(batch, "run_id")?,
            text(batch, "platform")?,
            text(batch, "url")?,
            text(batch, "author")?,
            text(batch, "text")?,
        );
        let metrics = text(batch, "metrics")?;
        let at = micros(batch, "captured_at")?;
        for i in 0..batch.num_rows() {
            let key = (o.value(i).to_string(), r.value(i).to_string());
            let cap = Cap {
                id: id.value(i).to_string(),
                platform: p.value(i).to_string(),
                url: u.value(i).to_string(),
                author: opt_str(&au, i),
                at: at.value(i),
                text: opt_str(&t, i),
                reach: reach(opt_str(&metrics, i).as_deref()),
            };
            group_sorted(&mut groups, key, cap);
        }
    }
    Ok(groups)
}

/// A capture's engagement, as the timeline shows it: ` (likes 5, replies
/// 2, reposts 3)` from its `metrics` JSON (empty when it has none).
/// The post's own text in a social timeline detail as [`reach`] and the
/// session builder write it: `@author: text` and, when the platform gave
/// any, ` (likes N, replies N, …)`.
pub(super) fn post_text(detail: &str) -> &str {
    let body = detail
        .strip_prefix('@')
        .and_then(|d| d.split_once(": "))
        .map_or(detail, |(_, b)| b);
    match body.rfind(" (") {
        Some(i)
            if body.ends_with(')')
                && REACH_KEYS
                    .iter()
                    .any(|k| body[i + 2..].starts_with(&format!("{k} "))) =>
        {
            &body[..i]
        }
        _ => body,
    }
}

/// The reach metrics a social timeline entry ends with, in this order.
const REACH_KEYS: [&str; 5] = ["likes", "replies", "reposts", "score", "views"];

fn reach(metrics: Option<&str>) -> String {
    let Some(m) = metrics.and_then(|m| serde_json::from_str::<serde_json::Value>(m).ok()) else {
        return String::new();
    };
    let parts: Vec<String> = REACH_KEYS
        .iter()
        .filter_map(|k| {
            m.get(*k)
                .and_then(serde_json::Value::as_i64)
                .map(|n| format!("{k} {n}"))
        })
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!(" ({})", parts.join(", "))
    }
}

#[cfg(test)]
mod post_text_tests {
    use super::post_text;

    #[test]
    fn a_posts_own_text_without_author_and_reach() {
        assert_eq!(
            post_text("@alice: My turntable from Zenith arrived today (likes 5, replies 2)"),
            "My turntable from Zenith arrived today"
        );
        assert_eq!(post_text("@bob: just text"), "just text");
        assert_eq!(
            post_text("@bob: a remark (in brackets)"),
            "a remark (in brackets)",
            "brackets that are not the reach stay"
        );
        assert_eq!(
            post_text("https://x.example/post"),
            "https://x.example/post"
        );
    }
}
