//! `crow bench search`: top-10 similarity search over N vectors of the
//! configured dimensions — the exact scan in memory (what every query
//! costs once the vectors are read), and `GET /api/v1/search`'s whole path
//! (read the organization's vectors from a temp lake, embed the query,
//! score) for a few queries. Search is exact, so there is no recall to
//! measure: it is 1 by construction.

use std::time::Instant;

use anyhow::Result;
use crow_jobs::ai::embed::{normalize, OfflineEmbedder};
use crow_jobs::ai::RetryPolicy;
use crow_jobs::embed::{self, Kind, VectorSet};
use crow_lake::Lake;
use crow_schemas::config::Config;

use crate::output::line;

/// A deterministic pseudo-random unit vector (xorshift64*).
fn vector(seed: u64, dims: usize) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v: Vec<f32> = (0..dims)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            let r = x.wrapping_mul(0x2545_F491_4F6C_DD1D);
            (r >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect();
    normalize(&mut v);
    v
}

/// Milliseconds of the p-th percentile of sorted `ms`.
fn pct(ms: &[f64], p: f64) -> f64 {
    let i = ((ms.len() as f64 - 1.0) * p).round() as usize;
    ms.get(i).copied().unwrap_or(0.0)
}

/// Run the benchmark and print a Markdown table.
pub(crate) async fn run(cfg: &Config, n: usize, queries: usize, lake_queries: usize) -> Result<()> {
    let dims = cfg.ai.embeddings.dims;
    let started = Instant::now();
    let set = VectorSet {
        ids: (0..n).map(|i| format!("p{i}")).collect(),
        labels: vec![None; n],
        vectors: (0..n as u64).map(|i| vector(i + 1, dims)).collect(),
    };
    let generated = started.elapsed().as_secs_f64();
    let mut ms = Vec::with_capacity(queries);
    for q in 0..queries as u64 {
        let query = vector(u64::MAX - q, dims);
        let t = Instant::now();
        let top = set.nearest(&query, 10);
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
        anyhow::ensure!(top.len() == 10.min(n), "top-10 gave {} results", top.len());
    }
    ms.sort_by(f64::total_cmp);
    line(format!(
        "vectors: {n} × {dims} dims (generated in {generated:.1} s); exact search, recall 1 by construction"
    ))?;
    line("| path | queries | p50 ms | p95 ms | max ms |")?;
    line("|---|---|---|---|---|")?;
    line(format!(
        "| in-memory scan, top 10 | {queries} | {:.2} | {:.2} | {:.2} |",
        pct(&ms, 0.5),
        pct(&ms, 0.95),
        pct(&ms, 1.0)
    ))?;
    if lake_queries > 0 {
        let ms = through_lake(cfg, set, lake_queries).await?;
        line(format!(
            "| lake read + embed + scan (the endpoint's path) | {lake_queries} | {:.2} | {:.2} | {:.2} |",
            pct(&ms, 0.5),
            pct(&ms, 0.95),
            pct(&ms, 1.0)
        ))?;
    }
    Ok(())
}

/// Write `set` to a temp lake as one organization's product vectors and
/// time [`embed::search`] end to end.
async fn through_lake(cfg: &Config, set: VectorSet, queries: usize) -> Result<Vec<f64>> {
    let tmp = tempfile::tempdir()?;
    let mut cfg = cfg.clone();
    cfg.lake.uri = tmp.path().join("lake").display().to_string();
    let lake = Lake::open(&cfg.lake).await?;
    lake.init().await?;
    let e = OfflineEmbedder::new(cfg.ai.embeddings.dims);
    let items: Vec<(String, Option<String>, Vec<f32>)> = set
        .ids
        .into_iter()
        .zip(set.vectors)
        .map(|(id, v)| (id, None, v))
        .collect();
    embed::append_vectors(&lake, &e, "org_bench", Kind::Product, items).await?;
    let mut ms = Vec::with_capacity(queries);
    for q in 0..queries {
        let ctx = lake.session().await?;
        let t = Instant::now();
        let hits = embed::search(
            &ctx,
            &e,
            "org_bench",
            Kind::Product,
            &format!("query {q}"),
            10,
            RetryPolicy::new(0),
        )
        .await?;
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
        anyhow::ensure!(!hits.is_empty(), "no hits from the lake");
    }
    ms.sort_by(f64::total_cmp);
    Ok(ms)
}
