//! `crow bench import`: bulk import rate against plain `serde_json` parsing
//! of the same decompressed archive.

use std::io::Write;
use std::time::Instant;

use anyhow::{Context, Result};
use crow_ingest::generate::{self, GenerateOptions};
use crow_lake::Lake;
use crow_schemas::config::Config;

/// `crow bench import`: a generated Segment archive (gzip'd JSON lines) of
/// `events` events, parsed by plain `serde_json` (each decompressed line to
/// a `Value`, one core, the file already in memory) and imported with
/// `crow import`'s code into a temp lake; both rates and their ratio.
pub(crate) async fn run(cfg: &Config, events: u64) -> Result<()> {
    let first_day = chrono::Utc::now()
        .date_naive()
        .checked_sub_days(chrono::Days::new(28))
        .context("date out of range")?;
    let mut plain = Vec::new();
    let (mut written, mut chunk) = (0u64, 0u64);
    while written < events {
        let remaining = events - written;
        let visitors = ((remaining as f64 / 8.5).ceil() as usize).clamp(1, 50_000);
        for e in generate::events(&GenerateOptions {
            visitors,
            first_day,
            days: 28,
            seed: 1 + chunk,
            incidents: Vec::new(),
        })
        .iter()
        .take(remaining as usize)
        {
            serde_json::to_writer(&mut plain, e)?;
            plain.push(b'\n');
            written += 1;
        }
        chunk += 1;
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&plain)?;
    let archive = gz.finish()?;
    // The ceiling: serde_json over the decompressed lines.
    let started = Instant::now();
    let mut parsed = 0u64;
    for line in plain.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let v: serde_json::Value = serde_json::from_slice(line)?;
        parsed += u64::from(v.is_object());
    }
    let parse_s = started.elapsed().as_secs_f64();
    let tmp = tempfile::tempdir()?;
    let mut lake_cfg = cfg.lake.clone();
    lake_cfg.uri = tmp.path().join("lake").display().to_string();
    let lake = Lake::open(&lake_cfg).await?;
    lake.init().await?;
    let org = crow_lake::orgs::create(&lake, "Import Bench", None, None)
        .await?
        .org
        .org_id;
    let opts = crow_ingest::import::ImportOptions {
        org_id: &org,
        strip_query_params: &cfg.ingest.strip_query_params,
        ip_salt: "bench",
        now: chrono::Utc::now(),
        chunk_events: cfg.ingest.import_chunk_events,
    };
    let r = crow_ingest::import::import_bytes(&lake, &opts, "archive.jsonl.gz", &archive, &|_| {})
        .await?;
    anyhow::ensure!(
        r.imported + r.failed == parsed,
        "imported {} + failed {} of {parsed} events",
        r.imported,
        r.failed
    );
    let parse_rate = parsed as f64 / parse_s;
    let import_rate = parsed as f64 / r.seconds;
    crate::output::line(format_args!(
        "| events | archive MiB (gzip) | decompressed MiB | serde_json events/s | import events/s | import / serde_json |"
    ))?;
    crate::output::line(format_args!("|---:|---:|---:|---:|---:|---:|"))?;
    crate::output::line(format_args!(
        "| {parsed} | {:.1} | {:.1} | {parse_rate:.0} | {import_rate:.0} | {:.2} |",
        archive.len() as f64 / 1048576.0,
        plain.len() as f64 / 1048576.0,
        import_rate / parse_rate
    ))?;
    Ok(())
}
