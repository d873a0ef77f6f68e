//! Narratives: the request to an AI provider for a finding's title and
//! text, and the check that every number it writes is one of the facts'.

use super::*;

/// The request for a pattern's narrative: the facts, as text.
pub(super) fn narrative_request(r: &PatternRow) -> AiRequest {
    let system = "You write one finding of an analytics report for a brand: a short title and \
                  one or two plain sentences. Use only the facts given. Every number you write \
                  must appear in the facts exactly as written there; do not compute new numbers."
        .to_string();
    let prompt = format!(
        "Period: {} starting {}\nSegment: {}\nStatistical title: {}\nStatistical description: {}\nEvidence: {}\n",
        r.period_kind,
        date_of(r.period_start),
        r.segment.as_deref().unwrap_or("all traffic"),
        r.title,
        r.description,
        r.evidence
    );
    AiRequest {
        system,
        prompt,
        schema: json!({
            "type": "object",
            "properties": {
                "title": {"type": "string"},
                "description": {"type": "string"}
            },
            "required": ["title", "description"],
            "additionalProperties": false
        }),
        input: json!({"task": "pattern", "title": r.title, "description": r.description}),
    }
}

/// Numbers as written in a text (digits with inner `.`/`,`), normalised.
pub fn numbers(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let chars: Vec<char> = text.chars().collect();
    for (i, c) in chars.iter().enumerate() {
        let inner = (*c == '.' || *c == ',')
            && !cur.is_empty()
            && chars.get(i + 1).is_some_and(char::is_ascii_digit);
        if c.is_ascii_digit() || inner {
            cur.push(*c);
        } else if !cur.is_empty() {
            out.push(normalise_number(&cur));
            cur.clear();
        }
    }
    if !cur.is_empty() {
        out.push(normalise_number(&cur));
    }
    out
}

fn normalise_number(s: &str) -> String {
    let s = s.replace(',', "");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// The numbers a text may cite: every number written in `facts`.
pub fn allowed_numbers(facts: &str) -> BTreeSet<String> {
    numbers(facts).into_iter().collect()
}

/// Every number written in `text` is one of `allowed` (see [`numbers`]).
pub fn check_numbers(text: &str, allowed: &BTreeSet<String>) -> std::result::Result<(), String> {
    match numbers(text).into_iter().find(|x| !allowed.contains(x)) {
        Some(x) => Err(format!("the number {x} is not in the evidence")),
        None => Ok(()),
    }
}

/// A narrative is valid when it is the expected JSON and every number in it
/// is one of the facts' numbers.
pub fn validate_narrative(
    text: &str,
    allowed: &BTreeSet<String>,
) -> std::result::Result<(String, String), String> {
    #[derive(Deserialize)]
    struct N {
        title: String,
        description: String,
    }
    let n: N =
        serde_json::from_str(text.trim()).map_err(|e| format!("not the expected JSON: {e}"))?;
    if n.title.trim().is_empty() || n.description.trim().is_empty() {
        return Err("empty title or description".into());
    }
    check_numbers(&n.title, allowed)?;
    check_numbers(&n.description, allowed)?;
    Ok((n.title, n.description))
}
