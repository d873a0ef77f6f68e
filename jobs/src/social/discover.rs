//! AI-driven discovery: the `discover` source kind.
//!
//! From the organization's context text and catalog, the AI provider
//! proposes web search queries ([`crate::ai::queries`]); a web-search
//! provider behind [`Search`] runs them (a SearXNG instance's JSON API, or
//! the Brave Search API; `[discovery]`); each result link not captured
//! before (its canonical URL in `social_seen`) and not already taken in
//! this run is fetched as robots.txt allows and read like any `web` page.
//! Each capture's `metrics` names the query that found it
//! (`discovery.query`, with the provider, the rank and the result link).
//!
//! A search provider that fails every query fails the source (recorded
//! like any source failure); a query or a page that fails while others
//! work is skipped with its reason and the rest land.

use std::collections::HashSet;

use async_trait::async_trait;
use crow_lake::batch::batches_to_rows;
use crow_lake::datafusion::prelude::{col, lit};
use crow_lake::Lake;
use crow_schemas::config::{AiConfig, Config, DiscoveryConfig, SearchProvider, SocialConfig};
use serde_json::{json, Value};
use url::form_urlencoded::byte_serialize;

use super::adapters::{Collected, Skipped};
use super::fetch::Fetcher;
use crate::ai::queries::{self, ProductLine};

/// The source kind.
pub const KIND: &str = "discover";
/// The platform of discovered captures: they are web pages.
pub const PLATFORM: &str = "web";
/// The Brave Search API's public endpoint (`discovery.url` unset).
pub const BRAVE_URL: &str = "https://api.search.brave.com";
/// Brave's largest `count`.
const BRAVE_MAX_COUNT: usize = 20;
/// Brave's largest `offset` (a page index).
const BRAVE_MAX_OFFSET: usize = 9;
/// Longest topic hint, in characters.
const MAX_HINT_CHARS: usize = 200;

/// What a run needs for `discover` sources besides `[social]`.
#[derive(Debug, Clone, Default)]
pub struct Discovery {
    /// `[discovery]`: the search provider and the bounds.
    pub search: DiscoveryConfig,
    /// `[ai]`: the provider that proposes the queries.
    pub ai: AiConfig,
}

impl Discovery {
    /// From the whole configuration.
    pub fn from_config(cfg: &Config) -> Discovery {
        Discovery {
            search: cfg.discovery.clone(),
            ai: cfg.ai.clone(),
        }
    }
}

/// Check a `discover` target: `auto`, or a topic hint the queries focus on.
pub fn check_target(target: &str) -> Result<(), String> {
    let t = target.trim();
    if t.is_empty() || t.chars().count() > MAX_HINT_CHARS {
        return Err(format!(
            "a discover target is `auto` or a topic hint of at most {MAX_HINT_CHARS} characters"
        ));
    }
    Ok(())
}

/// One search result.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    /// The result link.
    pub url: String,
    /// Its title.
    pub title: String,
    /// The provider's snippet.
    pub snippet: String,
}

/// What one query yielded: results in rank order, and the result items
/// that could not be read, each with why.
#[derive(Debug, Default)]
pub struct Hits {
    /// Usable results.
    pub hits: Vec<Hit>,
    /// Malformed results.
    pub skipped: Vec<Skipped>,
}

impl Hits {
    /// Read one result item whose snippet is under `snippet_key`.
    fn read(&mut self, item: &Value, snippet_key: &str) {
        let text = |k: &str| item.get(k).and_then(Value::as_str).unwrap_or("").trim();
        let link = text("url");
        let ok = url::Url::parse(link)
            .map(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .unwrap_or(false);
        if !ok {
            self.skipped.push(Skipped {
                reason: "a search result without an http(s) url".into(),
                payload: item.to_string().chars().take(4000).collect(),
            });
            return;
        }
        self.hits.push(Hit {
            url: link.to_string(),
            title: text("title").to_string(),
            snippet: text(snippet_key).to_string(),
        });
    }
}

/// A web-search provider.
#[async_trait]
pub trait Search: Send + Sync {
    /// Its name (`searxng`, `brave`), also its rate-limit platform.
    fn name(&self) -> &'static str;
    /// Up to `want` results of `query`, following the provider's paging
    /// up to `social.max_pages_per_source` pages.
    async fn search(
        &self,
        http: &Fetcher,
        cfg: &SocialConfig,
        query: &str,
        want: usize,
    ) -> Result<Hits, String>;
}

/// The provider `[discovery]` configures.
pub fn search_provider(cfg: &DiscoveryConfig) -> Result<Box<dyn Search>, String> {
    let url = cfg.url.trim().trim_end_matches('/').to_string();
    let key = cfg.api_key.expose().to_string();
    match cfg.provider {
        SearchProvider::Searxng if url.is_empty() => Err(
            "discovery.url is not set: name the SearXNG instance whose JSON API runs the queries"
                .into(),
        ),
        SearchProvider::Searxng => Ok(Box::new(Searxng { url, key })),
        SearchProvider::Brave if key.is_empty() => Err(
            "discovery.api_key is not set: the Brave Search API needs a subscription token".into(),
        ),
        SearchProvider::Brave => Ok(Box::new(Brave {
            url: if url.is_empty() {
                BRAVE_URL.into()
            } else {
                url
            },
            key,
        })),
    }
}

fn enc(s: &str) -> String {
    byte_serialize(s.as_bytes()).collect()
}

/// A SearXNG instance: `GET {url}/search?q=…&format=json&pageno=N`
/// (`results[].url/title/content`). The JSON format must be enabled in
/// the instance's `search.formats`.
struct Searxng {
    url: String,
    key: String,
}

/// Read a SearXNG JSON answer into `out`.
pub fn parse_searxng(page: &Value, url: &str, out: &mut Hits) -> Result<(), String> {
    let results = page
        .get("results")
        .and_then(Value::as_array)
        .ok_or_else(|| format!("GET {url}: not a SearXNG JSON answer (no `results` list)"))?;
    for r in results {
        out.read(r, "content");
    }
    Ok(())
}

#[async_trait]
impl Search for Searxng {
    fn name(&self) -> &'static str {
        "searxng"
    }

    async fn search(
        &self,
        http: &Fetcher,
        cfg: &SocialConfig,
        query: &str,
        want: usize,
    ) -> Result<Hits, String> {
        let mut out = Hits::default();
        let bearer = (!self.key.is_empty()).then_some(self.key.as_str());
        for pageno in 1..=cfg.max_pages_per_source.max(1) {
            let url = format!(
                "{}/search?q={}&format=json&pageno={pageno}",
                self.url,
                enc(query)
            );
            let page = http.get_json(self.name(), &url, bearer).await?;
            let before = out.hits.len() + out.skipped.len();
            parse_searxng(&page, &url, &mut out)?;
            if out.hits.len() + out.skipped.len() == before || out.hits.len() >= want {
                break;
            }
        }
        out.hits.truncate(want);
        Ok(out)
    }
}

/// The Brave Search API: `GET {url}/res/v1/web/search?q=…&count=…&offset=…`
/// with `X-Subscription-Token` (`web.results[].url/title/description`,
/// paged while `query.more_results_available`).
struct Brave {
    url: String,
    key: String,
}

/// Read a Brave web search answer into `out`; whether more pages exist.
pub fn parse_brave(page: &Value, url: &str, out: &mut Hits) -> Result<bool, String> {
    if page.get("type").and_then(Value::as_str) != Some("search") {
        return Err(format!(
            "GET {url}: not a Brave web search answer (no `\"type\": \"search\"`)"
        ));
    }
    let results = match page.pointer("/web/results") {
        None | Some(Value::Null) => &[][..],
        Some(Value::Array(a)) => a.as_slice(),
        Some(_) => return Err(format!("GET {url}: `web.results` is not a list")),
    };
    for r in results {
        out.read(r, "description");
    }
    Ok(page
        .pointer("/query/more_results_available")
        .and_then(Value::as_bool)
        .unwrap_or(false))
}

#[async_trait]
impl Search for Brave {
    fn name(&self) -> &'static str {
        "brave"
    }

    async fn search(
        &self,
        http: &Fetcher,
        cfg: &SocialConfig,
        query: &str,
        want: usize,
    ) -> Result<Hits, String> {
        let mut out = Hits::default();
        let count = want.clamp(1, BRAVE_MAX_COUNT);
        let headers = [
            ("X-Subscription-Token", self.key.as_str()),
            ("Accept", "application/json"),
        ];
        let last = cfg.max_pages_per_source.clamp(1, BRAVE_MAX_OFFSET + 1) - 1;
        for offset in 0..=last {
            let url = format!(
                "{}/res/v1/web/search?q={}&count={count}&offset={offset}",
                self.url,
                enc(query)
            );
            let body = http.get_with(self.name(), &url, None, &headers).await?;
            let page: Value =
                serde_json::from_slice(&body).map_err(|e| format!("GET {url}: not JSON: {e}"))?;
            let more = parse_brave(&page, &url, &mut out)?;
            if !more || out.hits.len() >= want {
                break;
            }
        }
        out.hits.truncate(want);
        Ok(out)
    }
}

/// The organization's catalog for the prompt, by name.
async fn catalog(lake: &Lake, org_id: &str) -> crate::Result<Vec<ProductLine>> {
    #[derive(serde::Deserialize)]
    struct P {
        name: String,
        category: Option<String>,
    }
    let batches = lake
        .dataframe(crow_schemas::PRODUCTS.name)
        .await?
        .filter(col("org_id").eq(lit(org_id)))?
        .select_columns(&["name", "category"])?
        .sort(vec![col("name").sort(true, false)])?
        .limit(0, Some(queries::MAX_PROMPT_PRODUCTS))?
        .collect()
        .await?;
    Ok(batches_to_rows::<P>(&batches)?
        .into_iter()
        .map(|p| ProductLine {
            name: p.name,
            category: p.category,
        })
        .collect())
}

/// The queries the AI provider proposes for the organization, validated.
pub async fn propose(
    lake: &Lake,
    d: &Discovery,
    org_id: &str,
    target: &str,
) -> Result<Vec<String>, String> {
    let org = crow_lake::orgs::get(lake, org_id)
        .await
        .map_err(|e| format!("reading the organization: {e}"))?
        .ok_or_else(|| format!("no organization {org_id}"))?;
    let products = catalog(lake, org_id)
        .await
        .map_err(|e| format!("reading the catalog: {e}"))?;
    let target = target.trim();
    let hint = (!target.eq_ignore_ascii_case("auto")).then_some(target);
    let max = d.search.max_queries;
    let req = queries::queries_request(&org.name, org.context.as_deref(), &products, hint, max);
    let provider = crate::ai::from_config(&d.ai).map_err(|e| e.to_string())?;
    let policy = crate::ai::RetryPolicy::new(d.ai.max_retries);
    let out = crate::ai::call_checked(provider.as_ref(), &req, policy, |t| {
        queries::check_queries(t, max)
    })
    .await;
    out.value
        .map_err(|(_, why)| format!("the AI provider proposed no usable search query: {why}"))
}

/// Read a `discover` source: propose queries, search, and read each new
/// result page like a `web` source. `known` says whether a canonical URL
/// was captured in an earlier run (such links are not fetched again).
pub async fn collect(
    lake: &Lake,
    http: &Fetcher,
    cfg: &SocialConfig,
    d: &Discovery,
    org_id: &str,
    target: &str,
    known: &(dyn Fn(&str) -> bool + Send + Sync),
) -> Result<Collected, String> {
    let search = search_provider(&d.search)?;
    let queries = propose(lake, d, org_id, target).await?;
    let mut out = Collected::default();
    let mut taken = HashSet::new();
    let mut failed = Vec::new();
    for q in &queries {
        let hits = match search
            .search(http, cfg, q, d.search.results_per_query)
            .await
        {
            Ok(h) => h,
            Err(e) => {
                failed.push(format!("search `{q}` failed: {e}"));
                continue;
            }
        };
        out.skipped.extend(hits.skipped);
        for (rank, hit) in hits.hits.into_iter().enumerate() {
            if out.items.len() >= cfg.max_items_per_source {
                break;
            }
            let canonical = super::canon::canonical_url(&hit.url);
            if known(&canonical) || !taken.insert(canonical) {
                continue;
            }
            let found = json!({"provider": search.name(), "query": q, "rank": rank + 1,
                               "result_url": hit.url, "result_title": hit.title});
            read_page(http, cfg, &hit, found, &mut out).await;
        }
    }
    if !failed.is_empty() && failed.len() == queries.len() {
        return Err(format!(
            "{} of {} search queries failed; first: {}",
            failed.len(),
            queries.len(),
            failed[0]
        ));
    }
    out.skipped.extend(failed.into_iter().map(|reason| Skipped {
        reason,
        payload: json!({"provider": search.name()}).to_string(),
    }));
    Ok(out)
}

/// Fetch and extract one result page as a `web` source does; the item
/// (with `found` in its metrics) or the reason it could not be read.
async fn read_page(
    http: &Fetcher,
    cfg: &SocialConfig,
    hit: &Hit,
    found: Value,
    out: &mut Collected,
) {
    let read = match super::adapters::adapter("web") {
        Ok(web) => web.collect(http, cfg, &hit.url).await,
        Err(e) => Err(e),
    };
    match read {
        Ok(c) => {
            for mut item in c.items {
                item.metrics.insert("discovery".into(), found.clone());
                out.items.push(item);
            }
        }
        Err(e) => out.skipped.push(Skipped {
            reason: format!("result {}: {e}", hit.url),
            payload: found.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn searxng_results_are_read_and_malformed_ones_skipped_with_their_reason() {
        let page = json!({
            "query": "\"Aria Headphones\" review",
            "number_of_results": 3,
            "results": [
                {"url": "https://blog.example/aria", "title": "Aria review", "content": "Great sound", "engine": "duckduckgo"},
                {"title": "no link"},
                {"url": "javascript:alert(1)", "title": "not http"},
                {"url": "http://forum.example/t/1", "title": "Thread"}
            ],
            "answers": [], "suggestions": []
        });
        let mut out = Hits::default();
        parse_searxng(&page, "u", &mut out).unwrap();
        assert_eq!(
            out.hits,
            vec![
                Hit {
                    url: "https://blog.example/aria".into(),
                    title: "Aria review".into(),
                    snippet: "Great sound".into()
                },
                Hit {
                    url: "http://forum.example/t/1".into(),
                    title: "Thread".into(),
                    snippet: String::new()
                }
            ]
        );
        let reasons: Vec<&str> = out.skipped.iter().map(|s| s.reason.as_str()).collect();
        assert_eq!(reasons, ["a search result without an http(s) url"; 2]);
        assert!(out.skipped[0].payload.contains("no link"));
        let e = parse_searxng(&json!({"error": "x"}), "https://s/search", &mut out).unwrap_err();
        assert_eq!(
            e,
            "GET https://s/search: not a SearXNG JSON answer (no `results` list)"
        );
    }

    #[test]
    fn brave_results_are_read_with_paging_and_malformed_ones_skipped() {
        let page = json!({
            "type": "search",
            "query": {"original": "aria", "more_results_available": true},
            "web": {"type": "search", "results": [
                {"type": "search_result", "url": "https://shop.example/aria", "title": "Aria", "description": "Buy"},
                {"type": "search_result", "title": "no url", "description": "?"}
            ]}
        });
        let mut out = Hits::default();
        assert!(parse_brave(&page, "u", &mut out).unwrap());
        assert_eq!(out.hits.len(), 1);
        assert_eq!(out.hits[0].snippet, "Buy");
        assert_eq!(out.skipped.len(), 1);
        // No web results at all: nothing, and no more pages.
        let none = json!({"type": "search", "query": {"original": "zzz"}});
        assert!(!parse_brave(&none, "u", &mut out).unwrap());
        assert_eq!(out.hits.len(), 1);
        let e = parse_brave(&json!({"type": "ErrorResponse"}), "u", &mut out).unwrap_err();
        assert!(e.contains("not a Brave web search answer"), "{e}");
        let e = parse_brave(
            &json!({"type": "search", "web": {"results": 3}}),
            "u",
            &mut out,
        )
        .unwrap_err();
        assert!(e.contains("not a list"), "{e}");
    }

    #[test]
    fn providers_need_their_url_or_key() {
        let mut cfg = DiscoveryConfig::default();
        let e = search_provider(&cfg).err().unwrap_or_default();
        assert!(e.starts_with("discovery.url is not set"), "{e}");
        cfg.url = "http://127.0.0.1:8888/".into();
        assert_eq!(search_provider(&cfg).map(|p| p.name()), Ok("searxng"));
        cfg.provider = SearchProvider::Brave;
        let e = search_provider(&cfg).err().unwrap_or_default();
        assert!(e.starts_with("discovery.api_key is not set"), "{e}");
        cfg.api_key = "token".into();
        assert_eq!(search_provider(&cfg).map(|p| p.name()), Ok("brave"));
        assert!(check_target("auto").is_ok());
        assert!(check_target("battery life").is_ok());
        assert!(check_target("  ").is_err());
        assert!(check_target(&"x".repeat(201)).is_err());
    }
}
