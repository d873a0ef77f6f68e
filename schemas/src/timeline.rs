//! A session's timeline, the one row shape the sessionizer writes and the
//! enrichment and patterns jobs read.
//!
//! `sessions.timeline` holds a JSON array of `[offset_s, kind, detail]`
//! triples (`[[0,"page","/"],[12,"track","Product Viewed Trail Shoe"]]`):
//! compact, readable in SQL (`json_get`), and the shape the AI providers
//! have been given since the first release, so it stays. This type is its
//! only reader and writer: a row that does not read is an error naming what
//! is wrong ([`InvalidTimeline`]), never an empty session.

use serde::de::{Deserializer, Error as _};
use serde::ser::{SerializeTuple, Serializer};
use serde::{Deserialize, Serialize};

/// One entry of a session's timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimelineEntry {
    /// Seconds since the session started.
    pub offset_s: i64,
    /// What happened: a web event's type (`page`, `screen`, `track`,
    /// `identify`, …), `segment` for a CCTV transcript segment, the
    /// platform of a social capture, or the sessionizer's own `truncated` /
    /// a prompt's `skipped` marker.
    pub kind: String,
    /// The page path, event name and product, transcript text or post.
    pub detail: String,
}

impl TimelineEntry {
    /// An entry.
    pub fn new(offset_s: i64, kind: impl Into<String>, detail: impl Into<String>) -> Self {
        TimelineEntry {
            offset_s,
            kind: kind.into(),
            detail: detail.into(),
        }
    }

    /// Whether the entry is a page or screen view.
    pub fn is_view(&self) -> bool {
        self.kind == "page" || self.kind == "screen"
    }
}

impl Serialize for TimelineEntry {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut t = s.serialize_tuple(3)?;
        t.serialize_element(&self.offset_s)?;
        t.serialize_element(&self.kind)?;
        t.serialize_element(&self.detail)?;
        t.end()
    }
}

impl<'de> Deserialize<'de> for TimelineEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (offset_s, kind, detail) = <(i64, String, String)>::deserialize(d)?;
        if offset_s < 0 {
            return Err(D::Error::custom(format!(
                "offset {offset_s} is before the session started"
            )));
        }
        Ok(TimelineEntry {
            offset_s,
            kind,
            detail,
        })
    }
}

/// A stored timeline that does not read as `[[offset_s, kind, detail], …]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidTimeline(String);

impl std::fmt::Display for InvalidTimeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the timeline is not a list of [offset_s, kind, detail]: {}",
            self.0
        )
    }
}

impl std::error::Error for InvalidTimeline {}

/// Read a stored timeline.
pub fn parse(text: &str) -> Result<Vec<TimelineEntry>, InvalidTimeline> {
    serde_json::from_str(text).map_err(|e| InvalidTimeline(e.to_string()))
}

/// Write a timeline as it is stored.
pub fn to_json(entries: &[TimelineEntry]) -> String {
    // Integers and strings only: serde_json cannot fail on them, and the
    // text is exactly what `serde_json::to_string` would write.
    let mut out = String::with_capacity(entries.len() * 32 + 2);
    out.push('[');
    for (i, e) in entries.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('[');
        out.push_str(&e.offset_s.to_string());
        out.push(',');
        push_json_string(&mut out, &e.kind);
        out.push(',');
        push_json_string(&mut out, &e.detail);
        out.push(']');
    }
    out.push(']');
    out
}

fn push_json_string(out: &mut String, s: &str) {
    // `Value::String`'s Display is serde_json's own escaping.
    out.push_str(&serde_json::Value::from(s).to_string());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stored_shape_is_kept_and_read_back() {
        let t = vec![
            TimelineEntry::new(0, "page", "/shoes"),
            TimelineEntry::new(12, "track", "Product Viewed \"Trail\" Shoe\n€"),
        ];
        let text = to_json(&t);
        assert_eq!(
            text,
            r#"[[0,"page","/shoes"],[12,"track","Product Viewed \"Trail\" Shoe\n€"]]"#
        );
        assert_eq!(
            serde_json::to_string(&t).ok().as_deref(),
            Some(text.as_str())
        );
        assert_eq!(parse(&text), Ok(t));
        assert_eq!(parse("[]"), Ok(vec![]));
    }

    #[test]
    fn a_malformed_timeline_is_an_error_not_an_empty_session() {
        for bad in [
            "",
            "null",
            "page /shoes",
            r#"[[0,"page"]]"#,
            r#"[["0","page","/"]]"#,
            r#"[[-5,"page","/"]]"#,
            r#"[{"offset":0}]"#,
            r#"[[0,"page","/"]"#,
        ] {
            let e = parse(bad).expect_err(bad);
            assert!(
                e.to_string()
                    .starts_with("the timeline is not a list of [offset_s, kind, detail]: "),
                "{bad}: {e}"
            );
        }
    }
}
