//! The benchmarks' own commands (scripts/bench-*.sh, as BENCHMARKS.md gives
//! them) run at a tiny size against the dev binary and the test venv, so
//! they cannot rot: each must finish and print its table, and every
//! comparison it makes with its peer (DuckDB's rows, DuckDB's sessions)
//! must hold. The numbers themselves are not judged here; BENCHMARKS.md
//! records them from full-size runs.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{crow_bin, python};

/// The test venv (scripts/test-deps.sh), where the peers are installed.
fn venv() -> PathBuf {
    python()
        .parent()
        .and_then(Path::parent)
        .expect("the venv folder")
        .to_path_buf()
}

/// Run `cmd` (`what` names it in a failure); its stdout (it must succeed).
fn stdout_of(mut cmd: Command, what: &str) -> String {
    let out = cmd.output().expect(what);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Run `scripts/NAME` with `env`; its stdout (it must succeed).
fn script(name: &str, env: &[(&str, &str)]) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut cmd = Command::new("bash");
    cmd.arg(root.join("scripts").join(name))
        .env("CROWTEST_BIN", crow_bin())
        .env("CROWTEST_VENV", venv())
        .env("PYTHON", python())
        .envs(env.iter().copied());
    stdout_of(cmd, name)
}

/// Rows of the Markdown table in `out` whose first cell starts with `first`.
fn table_rows<'a>(out: &'a str, first: &str) -> Vec<Vec<&'a str>> {
    out.lines()
        .filter(|l| l.starts_with(&format!("| {first}")))
        .map(|l| l.trim_matches('|').split('|').map(str::trim).collect())
        .collect()
}

#[test]
fn the_query_benchmark_runs_and_agrees_with_duckdb() {
    let out = script("bench-queries.sh", &[("EVENTS", "20000"), ("RUNS", "1")]);
    let rows = table_rows(&out, "Q");
    assert_eq!(rows.len(), 18, "{out}");
    for r in &rows {
        assert!(
            r.last().is_some_and(|same| same.starts_with("yes")),
            "{r:?}\n{out}"
        );
    }
    assert!(out.contains("Geometric mean of the ratios"), "{out}");
}

#[test]
fn the_job_benchmarks_run_and_find_duckdbs_sessions() {
    let out = script("bench-jobs.sh", &[("EVENTS", "20000"), ("SESSIONS", "32")]);
    let crow = table_rows(&out, "CROW");
    assert_eq!(crow.len(), 1, "{out}");
    assert_eq!(crow[0].last().copied(), Some("yes"), "same sessions: {out}");
    assert!(out.contains("enrich: 32 sessions"), "{out}");
}

#[test]
fn the_sessionize_benchmark_runs_under_a_small_pool() {
    let out = script(
        "bench-sessionize.sh",
        &[("EVENTS", "20000"), ("LIMITS", "64")],
    );
    let rows = table_rows(&out, "jobs.memory_limit_mb=64");
    assert_eq!(rows.len(), 1, "{out}");
    let sessions: u64 = rows[0][3].replace(',', "").parse().expect("sessions");
    assert!(sessions > 0, "{out}");
}

#[test]
fn the_protocol_and_storage_benchmarks_run() {
    let out = script(
        "bench-protocols.sh",
        &[("ROWS", "20000"), ("JSON_ROWS", "20000")],
    );
    for protocol in [
        "Arrow Flight SQL",
        "HTTP Arrow IPC",
        "HTTP JSON",
        "Postgres wire",
    ] {
        assert!(
            out.lines()
                .any(|l| l.starts_with(&format!("| {protocol}")) && l.contains("20,000")),
            "{protocol}: {out}"
        );
    }
    let out = script(
        "bench-storage.sh",
        &[("EVENTS", "20000"), ("QUERY_RUNS", "1")],
    );
    let per_event = |label: &str| -> f64 {
        let line = out
            .lines()
            .find(|l| l.starts_with(label))
            .unwrap_or_else(|| panic!("no {label}: {out}"));
        let words: Vec<&str> = line.split_whitespace().collect();
        let i = words
            .iter()
            .position(|w| *w == "bytes/event")
            .unwrap_or_else(|| panic!("{line}"));
        words[i - 1].parse().unwrap_or_else(|_| panic!("{line}"))
    };
    let (flushed, compacted, before) = (
        per_event("CROW as flushed:"),
        per_event("CROW compacted:"),
        per_event("former settings:"),
    );
    // CROW's writer settings must keep paying: smaller than the former
    // Snappy-without-payload-dictionaries files, compaction smaller still.
    assert!(flushed < 0.75 * before, "{out}");
    assert!(compacted < flushed, "{out}");
    // The query set ran on the three layouts with the same rows on each
    // (the script exits non-zero otherwise) and said how they compare.
    assert_eq!(table_rows(&out, "Q").len(), 18, "{out}");
    for line in ["CROW: compacted / before", "DuckDB: flushed / before"] {
        assert!(out.contains(line), "{line}: {out}");
    }
}

#[test]
fn the_isolation_benchmark_runs() {
    let out = script(
        "bench-isolation.sh",
        &[("SECONDS_PER_RUN", "2"), ("ROWS", "1000000")],
    );
    assert_eq!(table_rows(&out, "10 | 16").len(), 2, "{out}");
    assert!(out.contains("p99 ratio"), "{out}");
    assert!(out.contains("heavy queries answered"), "{out}");
}

#[test]
fn the_result_cache_benchmark_runs_and_hits() {
    let out = script("bench-cache.sh", &[("EVENTS", "20000"), ("RUNS", "4")]);
    let rows = table_rows(&out, "with");
    assert_eq!(rows.len(), 2, "{out}");
    assert_eq!(rows[0][0], "without cache", "{out}");
    assert_eq!(rows[0][5], "bypass 4", "{out}");
    assert_eq!(rows[1][5], "hit 3, miss 1", "{out}");
}

#[test]
fn the_dashboard_benchmark_times_both_pages_on_the_demo_lake() {
    // A smaller demo than the README's (the dashboard test's size): the
    // pages and their charts are the same, the lake builds in a third of
    // the time.
    let out = script(
        "bench-dashboard.sh",
        &[("RUNS", "1"), ("DEMO_ARGS", "--visitors 3000 --days 21")],
    );
    for page in ["overview", "patterns"] {
        let rows = table_rows(&out, page);
        assert_eq!(rows.len(), 1, "{page}: {out}");
        let r = &rows[0];
        let drawn: f64 = r[1].parse().expect("drawn ms");
        let charts: u64 = r[6].parse().expect("charts");
        let requests: u64 = r[7].parse().expect("API requests");
        assert!(drawn > 0.0, "{page}: {out}");
        // The demo's overview draws its time series; its latest week has
        // patterns, each with its evidence chart; both pages ask the API.
        assert!(charts >= 1, "{page} drew no chart: {out}");
        assert!(requests >= 2, "{page}: {out}");
    }
}

#[test]
fn the_daily_patterns_benchmark_counts_one_day_per_run() {
    let out = script(
        "bench-daily.sh",
        &[
            ("DAYS", "30"),
            ("VISITORS", "1500"),
            ("PROBES", "1 30"),
            ("RUNS", "1"),
        ],
    );
    for (day, kept) in [("1", "0"), ("30", "29")] {
        let rows = table_rows(&out, &format!("{day} |"));
        assert_eq!(rows.len(), 1, "day {day}: {out}");
        let r = &rows[0];
        // The nightly run counts its own day and keeps every day before.
        assert_eq!((r[1], r[6], r[7]), ("new", "1", kept), "day {day}: {out}");
        let read: u64 = r[5].parse().expect("sessions read");
        assert!(read > 0, "day {day}: {out}");
    }
}

/// `crow bench` with `args`, from a scratch folder (the commands make their
/// own temp lakes); its stdout (it must succeed).
fn crow_bench(args: &[&str]) -> String {
    let dir = tempfile::tempdir().expect("scratch");
    let mut cmd = Command::new(crow_bin());
    cmd.arg("bench")
        .args(args)
        .current_dir(dir.path())
        .env_remove("CROW_CONFIG")
        .env_remove("CROW_LAKE");
    stdout_of(cmd, &format!("crow bench {args:?}"))
}

#[test]
fn the_bulk_import_benchmark_runs_and_accounts_for_every_event() {
    // The command itself fails unless imported + failed = the archive's
    // events; here it must also print its one row for that size.
    let out = crow_bench(&["import", "--events", "2000"]);
    let rows = table_rows(&out, "2000 |");
    assert_eq!(rows.len(), 1, "{out}");
    assert_eq!(rows[0].len(), 6, "{out}");
}

#[test]
fn the_ingest_benchmark_runs_its_own_collector() {
    // The standalone form (a collector in the process over a temp lake):
    // one row per batch size, nothing refused, and the probe event
    // becomes visible to SQL.
    let out = crow_bench(&[
        "ingest",
        "--batch",
        "1,10",
        "--clients",
        "2",
        "--seconds",
        "1",
    ]);
    for batch in ["1", "10"] {
        let rows = table_rows(&out, &format!("{batch} | 2 |"));
        assert_eq!(rows.len(), 1, "{out}");
        assert_eq!(rows[0][3], "0", "no 503s at this load: {out}");
    }
    assert!(out.contains("ack → visible to `crow sql`"), "{out}");
}

#[test]
fn the_search_benchmark_runs_both_paths() {
    // One row per path, each with the number of queries asked for; the
    // command itself fails unless every query finds its top 10 (in memory)
    // or hits (through the lake).
    let out = crow_bench(&[
        "search",
        "--vectors",
        "2000",
        "--queries",
        "3",
        "--lake-queries",
        "2",
    ]);
    assert!(out.contains("vectors: 2000 × 256 dims"), "{out}");
    let scan = table_rows(&out, "in-memory scan, top 10 |");
    assert_eq!(scan.len(), 1, "{out}");
    assert_eq!(scan[0][1], "3", "{out}");
    let lake = table_rows(&out, "lake read + embed + scan");
    assert_eq!(lake.len(), 1, "{out}");
    assert_eq!(lake[0][1], "2", "{out}");
}

/// The newest unit-test binary of `crow-jobs` beside this one (the test
/// build makes it with the `it` binary; `cargo test` cannot be run from a
/// test while cargo holds the build folder).
fn jobs_unit_tests() -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let exe = std::env::current_exe().expect("the test binary");
    let deps = exe.parent().expect("its folder");
    std::fs::read_dir(deps)
        .expect("the deps folder")
        .filter_map(Result::ok)
        .filter(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            name.starts_with("crow_jobs-") && !name.contains('.')
        })
        .filter_map(|e| {
            let m = e.metadata().ok()?;
            (m.is_file() && m.permissions().mode() & 0o111 != 0)
                .then(|| (m.modified().ok(), e.path()))
        })
        .max()
        .map(|(_, p)| p)
        .unwrap_or_else(|| panic!("no crow_jobs unit-test binary in {}", deps.display()))
}

#[test]
fn the_patterns_evaluation_prints_its_report() {
    // One seed of the funnel-break case, at both false discovery rates:
    // the report's table has it found as one story from its first day.
    let out = script(
        "bench-patterns.sh",
        &[
            (
                "CROWTEST_EVAL_BIN",
                &jobs_unit_tests().display().to_string(),
            ),
            ("CROWTEST_EVAL_SEEDS", "1"),
            // One case by its whole name (another, with a weekday effect,
            // holds the same text).
            ("CROWTEST_EVAL_CASES", "funnel break (mobile payments fail)"),
        ],
    );
    let rows = table_rows(&out, "funnel break");
    assert_eq!(rows.len(), 2, "one row per FDR: {out}");
    for r in rows {
        assert_eq!(
            (r[2], r[3]),
            ("1", "0.0"),
            "found from its first day: {out}"
        );
    }
    for summary in ["Stories: precision", "findings per month"] {
        assert_eq!(out.matches(summary).count(), 2, "a summary per FDR: {out}");
    }
}
