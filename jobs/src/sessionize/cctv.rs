//! CCTV: one session per camera-hour of the segments.

use super::*;

/// An hour in microseconds.
const HOUR: i64 = 3_600_000_000;

pub(super) async fn cctv(pass: &Pass<'_>, built: &mut Built) -> Result<()> {
    // A camera-hour starting before the window start belongs to an earlier
    // window, so the read starts at the hour of `read_start + gap`.
    let batches = pass
        .first_copies(
            "raw_cctv_transcripts",
            "segment_id",
            "segment_start",
            "org_id, segment_id, store_id, camera_id, segment_start, segment_end, text",
            "org_id, store_id, camera_id, segment_start, segment_id",
        )
        .await?;
    built.events += rows(&batches);
    let read_end = pass.read_end.timestamp_micros();
    for ((org, store, camera, h), segs) in camera_hours(&batches)? {
        if h + HOUR > read_end {
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
            job_run_id: pass.run_id.to_string(),
            session_date: days_from_micros(started),
        })?;
    }
    Ok(())
}

/// A transcript segment.
struct Seg {
    id: String,
    start: i64,
    end: i64,
    text: String,
}

/// Org, store, camera and the hour's start (microseconds).
type CameraHour = (String, String, String, i64);

/// The segments of `batches` (sorted by camera and start) by camera-hour.
fn camera_hours(batches: &[RecordBatch]) -> Result<Vec<(CameraHour, Vec<Seg>)>> {
    let mut groups = Vec::new();
    for batch in batches {
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
            let h = s.value(i).div_euclid(HOUR) * HOUR;
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
            group_sorted(&mut groups, key, seg);
        }
    }
    Ok(groups)
}
