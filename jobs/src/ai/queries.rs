//! Search queries for AI-driven discovery: the AI provider proposes web
//! search queries that find what people say about the organization's
//! products, from its context text and catalog. Every answer is validated
//! like any other ([`check_queries`]): a JSON object `{"queries": [..]}`,
//! each query non-blank and at most [`MAX_QUERY_CHARS`] characters,
//! deduplicated, at most the run's bound. The offline provider answers
//! deterministically from the product names ([`offline_queries`]).

use std::collections::HashSet;

use serde_json::{json, Value};

use super::{AiRequest, Check};

/// Longest query accepted, in characters.
pub const MAX_QUERY_CHARS: usize = 200;
/// Products named in the prompt at most.
pub const MAX_PROMPT_PRODUCTS: usize = 50;
/// The offline provider's task name.
pub const TASK: &str = "discover_queries";

const SYSTEM: &str = "You are CROW's social-listening researcher. Propose web search queries \
that find what people say in public about the organization's products: reviews, forum and \
community threads, comparisons, complaints and questions. Use the product names as people write \
them, quoted when they are several words; mix in the brand where a product name alone is \
ambiguous. Do not propose queries for the organization's own shop pages. Answer JSON \
{\"queries\": [..]}: distinct queries, each at most 200 characters.";

/// One catalog product as the prompt shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct ProductLine {
    /// Product name.
    pub name: String,
    /// Category path, when known.
    pub category: Option<String>,
}

/// The answer's JSON Schema for at most `max` queries (the bound is in
/// the description, and [`check_queries`] enforces it: `maxItems` is not
/// taken by every provider's structured output).
pub fn queries_schema(max: usize) -> Value {
    json!({
        "type": "object",
        "properties": {
            "queries": {
                "type": "array",
                "description": format!("At most {max} distinct web search queries, each at most {MAX_QUERY_CHARS} characters."),
                "items": {"type": "string"}
            }
        },
        "required": ["queries"],
        "additionalProperties": false
    })
}

/// The request for at most `max` queries about organization `org_name`
/// (its `context` text and `products`), on `hint` when it is a topic
/// rather than `auto`.
pub fn queries_request(
    org_name: &str,
    context: Option<&str>,
    products: &[ProductLine],
    hint: Option<&str>,
    max: usize,
) -> AiRequest {
    let mut prompt = format!("Organization: {org_name}\n");
    if let Some(c) = context.map(str::trim).filter(|c| !c.is_empty()) {
        prompt.push_str(&format!("About the organization:\n{c}\n"));
    }
    let shown = &products[..products.len().min(MAX_PROMPT_PRODUCTS)];
    if shown.is_empty() {
        prompt.push_str("The catalog is empty: search for the organization itself.\n");
    } else {
        prompt.push_str("Catalog products (name | category):\n");
        for p in shown {
            prompt.push_str(&format!(
                "{} | {}\n",
                p.name,
                p.category.as_deref().unwrap_or("")
            ));
        }
    }
    if let Some(h) = hint {
        prompt.push_str(&format!("Focus on this topic: {h}\n"));
    }
    prompt.push_str(&format!("\nPropose at most {max} search queries.\n"));
    let names: Vec<&str> = shown.iter().map(|p| p.name.as_str()).collect();
    AiRequest {
        system: SYSTEM.to_string(),
        prompt,
        schema: queries_schema(max),
        input: json!({"task": TASK, "org": org_name, "products": names, "hint": hint, "max": max}),
    }
}

/// Whitespace collapsed, for comparing queries.
fn squeeze(q: &str) -> String {
    q.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Check an answer: JSON `{"queries": [strings]}`. Blank queries and
/// repeats (ignoring case and spacing) are dropped as they are; an
/// over-long query, or more than `max`, makes the answer repairable (the
/// long ones dropped, the first `max` kept); no query left is invalid.
pub fn check_queries(text: &str, max: usize) -> Check<Vec<String>> {
    let v: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => return Check::Invalid(format!("not JSON: {e}")),
    };
    let Some(list) = v.get("queries").and_then(Value::as_array) else {
        return Check::Invalid("no `queries` array".into());
    };
    let mut out = Vec::new();
    let mut keys = HashSet::new();
    let mut problems = Vec::new();
    for q in list {
        let Some(q) = q.as_str() else {
            return Check::Invalid(format!("query {q} is not a string"));
        };
        let q = squeeze(q);
        if q.is_empty() || !keys.insert(q.to_lowercase()) {
            continue;
        }
        if q.chars().count() > MAX_QUERY_CHARS {
            problems.push(format!(
                "a query is longer than {MAX_QUERY_CHARS} characters"
            ));
            continue;
        }
        out.push(q);
    }
    if out.len() > max {
        problems.push(format!("{} queries, more than {max}", out.len()));
        out.truncate(max);
    }
    if out.is_empty() {
        let why = problems.first().cloned();
        return Check::Invalid(why.unwrap_or_else(|| "no query".into()));
    }
    match problems.is_empty() {
        true => Check::Valid(out),
        false => Check::Repairable {
            value: out,
            why: problems.join("; "),
        },
    }
}

/// The offline provider's answer: `"<product>" review` for each product
/// (by name, at most `max`), or `"<product>" <hint>` for a topic hint;
/// with no product, the same for the organization's name.
pub fn offline_queries(input: &Value) -> Value {
    let max = input.get("max").and_then(Value::as_u64).unwrap_or(5) as usize;
    let topic = input
        .get("hint")
        .and_then(Value::as_str)
        .map(squeeze)
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "review".into());
    let mut names: Vec<String> = input
        .get("products")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(squeeze).collect())
        .unwrap_or_default();
    names.sort_by_key(|n| n.to_lowercase());
    names.dedup_by_key(|n| n.to_lowercase());
    names.retain(|n| !n.is_empty());
    if names.is_empty() {
        let org = input.get("org").and_then(Value::as_str).map(squeeze);
        names.extend(org.filter(|o| !o.is_empty()));
    }
    let queries: Vec<String> = names
        .iter()
        .map(|n| format!("\"{}\" {topic}", n.replace('"', "")))
        .filter(|q| q.chars().count() <= MAX_QUERY_CHARS)
        .take(max)
        .collect();
    json!({ "queries": queries })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(v: Value, max: usize) -> Check<Vec<String>> {
        check_queries(&v.to_string(), max)
    }

    #[test]
    fn queries_are_trimmed_deduplicated_and_bounded() {
        assert_eq!(
            check(
                json!({"queries": ["  \"Aria\"  review ", "\"aria\" REVIEW", "", "   ", "nimbus"]}),
                5
            ),
            Check::Valid(vec!["\"Aria\" review".to_string(), "nimbus".to_string()])
        );
        // Too many: the first `max` are kept, and the answer is repairable.
        assert_eq!(
            check(json!({"queries": ["a", "b", "c", "d"]}), 2),
            Check::Repairable {
                value: vec!["a".to_string(), "b".to_string()],
                why: "4 queries, more than 2".into()
            }
        );
        // An over-long query is dropped.
        let long = "x".repeat(MAX_QUERY_CHARS + 1);
        assert_eq!(
            check(json!({"queries": [long.clone(), "ok"]}), 5),
            Check::Repairable {
                value: vec!["ok".to_string()],
                why: format!("a query is longer than {MAX_QUERY_CHARS} characters")
            }
        );
        // Nothing usable: invalid, with the reason.
        assert_eq!(
            check(json!({"queries": [long]}), 5),
            Check::Invalid(format!(
                "a query is longer than {MAX_QUERY_CHARS} characters"
            ))
        );
        assert_eq!(
            check(json!({"queries": ["", "  "]}), 5),
            Check::Invalid("no query".into())
        );
        assert_eq!(
            check(json!({"queries": "aria"}), 5),
            Check::Invalid("no `queries` array".into())
        );
        assert_eq!(
            check(json!({"queries": ["a", 3]}), 5),
            Check::Invalid("query 3 is not a string".into())
        );
        assert!(
            matches!(check_queries("{\"queries\": [", 5), Check::Invalid(w) if w.starts_with("not JSON"))
        );
    }

    #[test]
    fn offline_queries_come_from_product_names_in_order() {
        let products = vec![
            ProductLine {
                name: "Zenith Turntable".into(),
                category: Some("Audio".into()),
            },
            ProductLine {
                name: "Aria Headphones".into(),
                category: None,
            },
            ProductLine {
                name: "aria  headphones".into(),
                category: None,
            },
            ProductLine {
                name: "Nimbus Speaker".into(),
                category: None,
            },
        ];
        let req = queries_request("Northwind", Some("We sell audio gear."), &products, None, 2);
        assert!(req
            .prompt
            .contains("About the organization:\nWe sell audio gear."));
        assert!(req.prompt.contains("Zenith Turntable | Audio"));
        let a = offline_queries(&req.input);
        assert_eq!(
            a,
            json!({"queries": ["\"Aria Headphones\" review", "\"Nimbus Speaker\" review"]})
        );
        assert_eq!(
            check_queries(&a.to_string(), 2),
            Check::Valid(vec![
                "\"Aria Headphones\" review".to_string(),
                "\"Nimbus Speaker\" review".to_string()
            ])
        );
        let hinted = queries_request("Northwind", None, &products[..1], Some("battery life"), 5);
        assert_eq!(
            offline_queries(&hinted.input),
            json!({"queries": ["\"Zenith Turntable\" battery life"]})
        );
        let empty = queries_request("Northwind", None, &[], None, 5);
        assert_eq!(
            offline_queries(&empty.input),
            json!({"queries": ["\"Northwind\" review"]})
        );
    }
}
