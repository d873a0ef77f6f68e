//! Social: one session per collector run of the captures.

use super::*;

pub(super) async fn social(
    ctx: &SessionContext,
    opts: &Options,
    read_start: DateTime<Utc>,
    read_end: DateTime<Utc>,
    run_id: &str,
    built: &mut Built,
) -> Result<()> {
    let mut params = Params::default();
    let org = params.org("org_id", opts.org.as_deref());
    let (a, b) = (params.ts("start", read_start), params.ts("end", read_end));
    let sql = format!(
        "SELECT * FROM (
           SELECT org_id, capture_id, run_id, platform, url, author, captured_at, text, metrics,
                  row_number() OVER (PARTITION BY org_id, capture_id ORDER BY received_at) AS rn
           FROM raw_social_captures
           WHERE captured_at >= {a} AND captured_at < {b} {org})
         WHERE rn = 1
         ORDER BY org_id, run_id, captured_at, capture_id"
    );
    let gap = opts.gap.num_microseconds().unwrap_or(i64::MAX);
    let read_end = read_end.timestamp_micros();
    let batches = params.sql(ctx, &sql).await?.collect().await?;
    struct Cap {
        id: String,
        platform: String,
        url: String,
        author: Option<String>,
        at: i64,
        text: Option<String>,
        reach: String,
    }
    let mut groups: Vec<((String, String), Vec<Cap>)> = Vec::new();
    for batch in &batches {
        built.events += batch.num_rows() as u64;
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
            match groups.last_mut() {
                Some((k, v)) if *k == key => v.push(cap),
                _ => groups.push((key, vec![cap])),
            }
        }
    }
    for ((org, run), caps) in groups {
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
            job_run_id: run_id.to_string(),
            session_date: days_from_micros(started),
        })?;
    }
    Ok(())
}

/// A capture's engagement, as the timeline shows it: ` (likes 5, replies
/// 2, reposts 3)` from its `metrics` JSON (empty when it has none).
fn reach(metrics: Option<&str>) -> String {
    let Some(m) = metrics.and_then(|m| serde_json::from_str::<serde_json::Value>(m).ok()) else {
        return String::new();
    };
    let parts: Vec<String> = ["likes", "replies", "reposts", "score", "views"]
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
