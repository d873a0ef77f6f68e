//! Properties of the collector's input path, on generated input: the event
//! normaliser never panics and stores what it promises to keep as sent; the
//! WAL's segment reader and row decoder never panic on arbitrary bytes, and
//! a torn or altered segment is detected.
//!
//! Bounded in time: `PROPTEST_CASES` (default 256 per property) sets the
//! number of cases.

use std::collections::BTreeMap;

use chrono::Utc;
use crow_ingest::normalize::{normalize_json, Defaults, NormalizeContext};
use crow_ingest::wal::{RowFormat, Segment, Wal, WalBatch, WalOptions, WalTable};
use proptest::prelude::*;
use serde_json::{json, Map, Value};

fn ctx_for(strip: &[String]) -> NormalizeContext<'_> {
    NormalizeContext {
        org_id: "org_prop",
        received_at: Utc::now(),
        ip_hash: None,
        strip_query_params: strip,
        ip_salt: "salt",
    }
}

/// Arbitrary JSON: nulls, booleans, integers, finite floats, text (any
/// Unicode), arrays and objects, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("\\PC{0,8}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn json_object() -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::btree_map("[a-zA-Z_\\PC]{1,10}", json_value(), 0..8)
        .prop_map(|m: BTreeMap<String, Value>| m.into_iter().collect())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256)
    ))]

    /// Any text at all: an answer (a row or a rejection), never a panic.
    #[test]
    fn normaliser_never_panics_on_any_text(text in "\\PC{0,300}") {
        let strip = vec!["email".to_string()];
        let ctx = ctx_for(&strip);
        let _ = normalize_json(&text, &Defaults::default(), &ctx);
    }

    /// Valid-looking events with arbitrary members, cut or altered at any
    /// point: never a panic.
    #[test]
    fn normaliser_never_panics_on_damaged_events(
        props in json_object(),
        cut in any::<prop::sample::Index>(),
        junk in "[\\PC\"\\\\{}\\[\\],:]{0,4}",
    ) {
        let strip = vec!["*".to_string()];
        let ctx = ctx_for(&strip);
        let text = json!({
            "type": "track", "event": "Order Completed", "messageId": "m1",
            "anonymousId": "a", "properties": props,
            "context": {"ip": "10.0.0.1", "page": {"url": "https://x.test/?email=a"}},
        })
        .to_string();
        let i = cut.index(text.len() + 1);
        let i = (0..=i).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
        let damaged = format!("{}{}{}", &text[..i], junk, &text[i..]);
        let _ = normalize_json(&damaged, &Defaults::default(), &ctx);
        let _ = normalize_json(&text[..i], &Defaults::default(), &ctx);
    }

    /// What is promised to be kept as sent is kept: ids and names exactly,
    /// `properties` and `traits` byte for byte, `context` byte for byte
    /// when nothing must go, and otherwise the same members in the same
    /// order and with the same values, minus `ip` and stripped parameters.
    #[test]
    fn normaliser_round_trips_what_it_stores(
        message_id in "[a-zA-Z0-9_-]{1,36}",
        anonymous_id in "\\PC{1,24}",
        event in "\\PC{1,40}",
        props in json_object(),
        extra in json_object(),
        with_ip in any::<bool>(),
        with_page in any::<bool>(),
    ) {
        let strip = vec!["email".to_string()];
        let ctx = ctx_for(&strip);
        let mut context = extra.clone();
        context.remove("ip");
        context.remove("page");
        if with_ip {
            context.insert("ip".into(), json!("203.0.113.5"));
        }
        if with_page {
            context.insert(
                "page".into(),
                json!({"url": "https://shop.test/p?email=x%40y.test&ref=1", "title": "T"}),
            );
        }
        let sent = json!({
            "type": "track",
            "event": event,
            "messageId": message_id,
            "anonymousId": anonymous_id,
            "properties": props,
            "context": context,
        });
        let text = sent.to_string();
        let row = normalize_json(&text, &Defaults::default(), &ctx)
            .map_err(|r| TestCaseError::fail(format!("rejected: {r:?}")))?;
        prop_assert_eq!(row.message_id.as_ref(), message_id.as_str());
        prop_assert_eq!(row.anonymous_id.as_deref(), Some(anonymous_id.as_str()));
        prop_assert_eq!(row.event.as_deref(), Some(event.as_str()));
        let props_text = serde_json::to_string(&sent["properties"]).unwrap_or_default();
        prop_assert_eq!(row.properties.as_deref(), Some(props_text.as_str()));
        let stored_ctx = row.context.as_deref().unwrap_or("{}");
        if !with_ip && !with_page {
            let ctx_text = serde_json::to_string(&sent["context"]).unwrap_or_default();
            prop_assert_eq!(stored_ctx, ctx_text.as_str());
        } else {
            // Same members, same order, same text for each value.
            let mut expected = context.clone();
            expected.remove("ip");
            if with_page {
                expected.insert(
                    "page".into(),
                    json!({"url": "https://shop.test/p?ref=1", "title": "T"}),
                );
            }
            let expected_text = serde_json::to_string(&Value::Object(expected)).unwrap_or_default();
            prop_assert_eq!(stored_ctx, expected_text.as_str());
            prop_assert!(!stored_ctx.contains("203.0.113.5"));
            prop_assert_eq!(row.ip_hash.is_some(), with_ip);
        }
    }

    /// Arbitrary bytes as a WAL segment: read or refused, never a panic.
    #[test]
    fn wal_reader_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let dir = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
        let path = dir.path().join("1.sealed");
        std::fs::write(&path, &bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
        if let Ok(seg) = Segment::read(&path) {
            for (_, _, row) in seg.records() {
                let _ = crow_ingest::rowcodec::decode_rows(
                    &crow_schemas::RAW_WEB_EVENTS.schema(),
                    crow_schemas::RAW_WEB_EVENTS.version,
                    &[row],
                );
            }
        }
    }

    /// Arbitrary bytes as binary rows: decoded or refused, never a panic.
    #[test]
    fn row_decoder_never_panics(rows in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..160), 0..4)) {
        let refs: Vec<&[u8]> = rows.iter().map(Vec::as_slice).collect();
        let _ = crow_ingest::rowcodec::decode_rows(
            &crow_schemas::RAW_WEB_EVENTS.schema(),
            crow_schemas::RAW_WEB_EVENTS.version,
            &refs,
        );
    }
}

/// A sealed segment holding `rows` JSON records, written by the real WAL.
fn sealed_segment(dir: &std::path::Path, rows: &[Vec<u8>]) -> Vec<u8> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let wal = Wal::open(WalOptions {
            dir: dir.to_path_buf(),
            seal_interval: std::time::Duration::from_secs(3600),
            seal_rows: 1_000_000,
            seal_bytes: 1 << 30,
            max_pending_bytes: 1 << 30,
            queue: 16,
        })
        .expect("open wal");
        let mut batch = WalBatch::with_capacity(1024);
        for r in rows {
            batch.push_json(WalTable::RawWebEvents, r);
        }
        wal.append(batch).await.expect("append");
        wal.seal_now().await.expect("seal");
        let segs = wal.sealed_segments().expect("segments");
        assert_eq!(segs.len(), 1, "one sealed segment");
        std::fs::read(&segs[0].1).expect("read segment")
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(64)
    ))]

    /// A segment cut anywhere inside a record, or with any byte changed, is
    /// refused: a torn or corrupted write is never read as data.
    #[test]
    fn torn_or_altered_segments_are_detected(
        rows in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..64), 1..6),
        cut in any::<prop::sample::Index>(),
        flip in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let dir = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
        let data = sealed_segment(&dir.path().join("wal"), &rows);
        // Frame boundaries: a cut exactly there is a shorter, valid segment.
        let mut bounds = vec![0usize];
        let mut pos = 0usize;
        while pos + 8 <= data.len() {
            let len = u32::from_le_bytes([data[pos], data[pos + 1], data[pos + 2], data[pos + 3]]) as usize;
            pos += 8 + len;
            bounds.push(pos);
        }
        prop_assert_eq!(*bounds.last().unwrap_or(&0), data.len());
        let path = dir.path().join("probe.sealed");
        let at = cut.index(data.len());
        std::fs::write(&path, &data[..at]).map_err(|e| TestCaseError::fail(e.to_string()))?;
        match Segment::read(&path) {
            Ok(seg) => {
                prop_assert!(bounds.contains(&at), "a segment torn at byte {} was read as whole", at);
                let n = bounds.iter().position(|b| *b == at).unwrap_or(0);
                let got: Vec<Vec<u8>> = seg.records().map(|(_, f, r)| {
                    assert_eq!(f, RowFormat::Json);
                    r.to_vec()
                }).collect();
                prop_assert_eq!(&got[..], &rows[..n]);
            }
            Err(_) => prop_assert!(!bounds.contains(&at)),
        }
        let mut altered = data.clone();
        let i = flip.index(altered.len());
        altered[i] ^= 1 << bit;
        std::fs::write(&path, &altered).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(Segment::read(&path).is_err(), "a segment with byte {} altered was read", i);
    }
}
