//! CCTV: one session per camera-hour of the segments.

use super::*;

pub(super) async fn cctv(
    ctx: &SessionContext,
    opts: &Options,
    read_start: DateTime<Utc>,
    read_end: DateTime<Utc>,
    run_id: &str,
    built: &mut Built,
) -> Result<()> {
    // A camera-hour starting before the window start belongs to an earlier
    // window, so the read starts at the hour of `read_start + gap`.
    let mut params = Params::default();
    let org = params.org("org_id", opts.org.as_deref());
    let (a, b) = (params.ts("start", read_start), params.ts("end", read_end));
    let sql = format!(
        "SELECT * FROM (
           SELECT org_id, segment_id, store_id, camera_id, segment_start, segment_end, text,
                  row_number() OVER (PARTITION BY org_id, segment_id ORDER BY received_at) AS rn
           FROM raw_cctv_transcripts
           WHERE segment_start >= {a} AND segment_start < {b} {org})
         WHERE rn = 1
         ORDER BY org_id, store_id, camera_id, segment_start, segment_id"
    );
    let hour = 3_600_000_000i64;
    let read_end = read_end.timestamp_micros();
    let batches = params.sql(ctx, &sql).await?.collect().await?;
    struct Seg {
        id: String,
        start: i64,
        end: i64,
        text: String,
    }
    type CameraHour = (String, String, String, i64);
    let mut groups: Vec<(CameraHour, Vec<Seg>)> = Vec::new();
    for batch in &batches {
        built.events += batch.num_rows() as u64;
        let (o, id, st, cam) = (
            text(batch, "org_id")?,
            text(batch, "segment_id")?,
            text(batch, "store_id")?,
            text(batch, "camera_id")?,
        );
        let (s, e, t) = (
            micros(batch, "segment_start")?,
            micros(batch, "segment_end")?,
            text(batch, "text")?,
        );
        for i in 0..batch.num_rows() {
            let h = s.value(i).div_euclid(hour) * hour;
            let key = (
                o.value(i).to_string(),
                st.value(i).to_string(),
                cam.value(i).to_string(),
                h,
            );
            let seg = Seg {
                id: id.value(i).to_string(),
                start: s.value(i),
                end: e.value(i),
                text: t.value(i).to_string(),
            };
            match groups.last_mut() {
                Some((k, v)) if *k == key => v.push(seg),
                _ => groups.push((key, vec![seg])),
            }
        }
    }
    for ((org, store, camera, h), segs) in groups {
        if h + hour > read_end {
            built.open_session(h);
            continue;
        }
        let started = segs.iter().map(|s| s.start).min().unwrap_or(h);
        let ended = segs.iter().map(|s| s.end).max().unwrap_or(h);
        let source = format!("{store}/{camera}");
        let timeline: Vec<TimelineEntry> = segs
            .iter()
            .take(MAX_TIMELINE)
            .map(|s| {
                TimelineEntry::new(
                    (s.start - started) / 1_000_000,
                    "segment",
                    truncate(&s.text, 500),
                )
            })
            .collect();
        built.out.push(SessionRow {
            session_id: session_id(&org, "cctv", &source, h),
            org_id: org,
            channel: "cctv",
            visitor_id: Some(source.clone()),
            user_id: None,
            anonymous_ids: None,
            started_at: started,
            ended_at: ended,
            event_count: segs.len() as i64,
            page_views: None,
            product_ids: None,
            device_type: None,
            traffic_source: None,
            is_returning: None,
            converted: None,
            source_ref: Some(source),
            timeline: timeline::to_json(&timeline),
            source_ids: segs.iter().map(|s| s.id.clone()).collect(),
            job_run_id: run_id.to_string(),
            session_date: days_from_micros(started),
        })?;
    }
    Ok(())
}
