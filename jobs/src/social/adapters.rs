//! Platform adapters behind one trait: each turns a source's target into
//! items, following the platform's cursor up to the configured bounds.
//!
//! Every base URL comes from `social.*`; the response formats are the
//! platforms' published public APIs.

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use crow_schemas::config::SocialConfig;
use serde_json::{Map, Value};
use url::form_urlencoded::byte_serialize;

use super::fetch::Fetcher;

/// One post or page as read from a platform.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// Where it lives.
    pub url: String,
    /// Author handle or name.
    pub author: Option<String>,
    /// When it was published.
    pub published_at: Option<DateTime<Utc>>,
    /// Its text (title and body).
    pub text: String,
    /// Engagement the platform reports: likes, replies, reposts, score, views.
    pub metrics: Map<String, Value>,
}

/// An item that could not be read, with why and what it was.
#[derive(Debug, Clone)]
pub struct Skipped {
    /// Why it was skipped.
    pub reason: String,
    /// The item as received.
    pub payload: String,
}

/// What one source yielded.
#[derive(Debug, Default)]
pub struct Collected {
    /// Items read.
    pub items: Vec<Item>,
    /// Items skipped (malformed).
    pub skipped: Vec<Skipped>,
}

impl Collected {
    fn skip(&mut self, reason: impl Into<String>, payload: &Value) {
        self.skipped.push(Skipped {
            reason: reason.into(),
            payload: payload.to_string().chars().take(4000).collect(),
        });
    }

    fn full(&self, cfg: &SocialConfig) -> bool {
        self.items.len() >= cfg.max_items_per_source
    }

    /// Add the items `item` reads from `entries` (an entry it cannot read
    /// is skipped, `why`) until the source is full; false once it is.
    fn fill(
        &mut self,
        cfg: &SocialConfig,
        entries: &[Value],
        why: &str,
        mut item: impl FnMut(&Value) -> Option<Item>,
    ) -> bool {
        for e in entries {
            if self.full(cfg) {
                return false;
            }
            match item(e) {
                Some(i) => self.items.push(i),
                None => self.skip(why, e),
            }
        }
        true
    }
}

/// Follow a platform's listing from `first`, up to
/// `social.max_pages_per_source` pages: `read` adds a page's items and
/// says where the next page is (`None`: this was the last one, or the
/// source is full).
async fn pages(
    http: &Fetcher,
    cfg: &SocialConfig,
    platform: &str,
    bearer: Option<&str>,
    first: &str,
    mut read: impl FnMut(&str, &Value, &mut Collected) -> Result<Option<String>, String> + Send,
) -> Result<Collected, String> {
    let mut out = Collected::default();
    let mut url = first.to_string();
    for _ in 0..cfg.max_pages_per_source {
        let page = http.get_json(platform, &url, bearer).await?;
        match read(&url, &page, &mut out)? {
            Some(next) => url = next,
            None => break,
        }
    }
    Ok(out)
}

/// Check that a target is not blank.
fn not_blank(target: &str, what: &str) -> Result<(), String> {
    if target.trim().is_empty() {
        return Err(what.into());
    }
    Ok(())
}

/// A platform.
#[async_trait]
pub trait Adapter: Send + Sync {
    /// The platform's name in `raw_social_captures.platform`.
    fn platform(&self) -> &'static str;
    /// Check a target when a source is added.
    fn check(&self, target: &str) -> Result<(), String>;
    /// Read `target`'s recent items.
    async fn collect(
        &self,
        http: &Fetcher,
        cfg: &SocialConfig,
        target: &str,
    ) -> Result<Collected, String>;
}

/// Source kinds, for help texts and errors.
pub const KINDS: &[&str] = &[
    "rss",
    "youtube",
    "mastodon",
    "reddit",
    "hackernews",
    "bluesky",
    "web",
    "discover",
];

/// The adapter of `kind`.
pub fn adapter(kind: &str) -> Result<Box<dyn Adapter>, String> {
    Ok(match kind {
        "rss" => Box::new(Feed { youtube: false }),
        "youtube" => Box::new(Feed { youtube: true }),
        "mastodon" => Box::new(Mastodon),
        "reddit" => Box::new(Reddit),
        "hackernews" => Box::new(HackerNews),
        "bluesky" => Box::new(Bluesky),
        "web" => Box::new(WebPage),
        "discover" => Box::new(Discover),
        other => {
            return Err(format!(
                "unknown source kind `{other}` (one of {})",
                KINDS.join(", ")
            ))
        }
    })
}

fn enc(s: &str) -> String {
    byte_serialize(s.as_bytes()).collect()
}

fn base(u: &str) -> &str {
    u.trim_end_matches('/')
}

/// Text of an HTML fragment (a post body), through the HTML parser.
fn html_text(html: &str) -> String {
    crate::html::text(html)
}

fn metric(m: &mut Map<String, Value>, name: &str, v: Option<&Value>) {
    if let Some(n) = v.and_then(Value::as_i64) {
        m.insert(name.into(), Value::from(n));
    }
}

fn time_of(v: Option<&Value>) -> Option<DateTime<Utc>> {
    match v? {
        Value::String(s) => DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|t| t.with_timezone(&Utc)),
        Value::Number(n) => n
            .as_f64()
            .and_then(|f| Utc.timestamp_opt(f as i64, 0).single()),
        _ => None,
    }
}

// ---- RSS / Atom (and YouTube's feeds) ----

struct Feed {
    youtube: bool,
}

#[async_trait]
impl Adapter for Feed {
    fn platform(&self) -> &'static str {
        if self.youtube {
            "youtube"
        } else {
            "rss"
        }
    }

    fn check(&self, target: &str) -> Result<(), String> {
        if self.youtube {
            let id = target.split_once(':').map_or(target, |(_, id)| id);
            if id.is_empty()
                || !id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err("a YouTube target is a channel id (UC…) or a playlist id (PL…), optionally `channel:` / `playlist:` first".into());
            }
            return Ok(());
        }
        match url::Url::parse(target) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => Ok(()),
            _ => Err(format!("`{target}` is not an http(s) feed URL")),
        }
    }

    async fn collect(
        &self,
        http: &Fetcher,
        cfg: &SocialConfig,
        target: &str,
    ) -> Result<Collected, String> {
        let url = if self.youtube {
            let (field, id) = match target.split_once(':') {
                Some(("playlist", id)) => ("playlist_id", id),
                Some((_, id)) => ("channel_id", id),
                None if target.starts_with("PL") => ("playlist_id", target),
                None => ("channel_id", target),
            };
            format!(
                "{}/feeds/videos.xml?{field}={}",
                base(&cfg.youtube_url),
                enc(id)
            )
        } else {
            target.to_string()
        };
        if !http.allowed(self.platform(), &url).await? {
            return Err(format!("robots.txt disallows {url}"));
        }
        let body = http.get(self.platform(), &url, None).await?;
        let entries = super::feed::parse(&body).map_err(|e| format!("{url} is not a feed: {e}"))?;
        let mut out = Collected::default();
        for e in entries {
            if out.full(cfg) {
                break;
            }
            let Some(link) = e.link.clone() else {
                out.skip(
                    "a feed entry without a link",
                    &serde_json::json!({"id": e.id.trim(), "title": e.title.trim()}),
                );
                continue;
            };
            let body = if e.summary.trim().is_empty() {
                &e.content
            } else {
                &e.summary
            };
            let text = [&e.title, body, &e.media_description]
                .into_iter()
                .map(|t| html_text(t))
                .filter(|t| !t.is_empty())
                .collect::<Vec<_>>()
                .join("\n");
            let mut metrics = Map::new();
            if let Some(v) = e.views {
                metrics.insert("views".into(), Value::from(v));
            }
            if let Some(v) = e.likes {
                metrics.insert("likes".into(), Value::from(v));
            }
            let author = e.author.trim();
            out.items.push(Item {
                url: link,
                author: (!author.is_empty()).then(|| author.to_string()),
                published_at: e.published.or(e.updated),
                text,
                metrics,
            });
        }
        Ok(out)
    }
}

// ---- Mastodon ----

struct Mastodon;

#[async_trait]
impl Adapter for Mastodon {
    fn platform(&self) -> &'static str {
        "mastodon"
    }

    fn check(&self, target: &str) -> Result<(), String> {
        match target.chars().next() {
            Some('#') | Some('@') if target.len() > 1 => Ok(()),
            _ => {
                Err("a Mastodon target is `#hashtag` or `@account` (or `@account@instance`)".into())
            }
        }
    }

    async fn collect(
        &self,
        http: &Fetcher,
        cfg: &SocialConfig,
        target: &str,
    ) -> Result<Collected, String> {
        let root = base(&cfg.mastodon_url);
        let first = if let Some(tag) = target.strip_prefix('#') {
            format!("{root}/api/v1/timelines/tag/{}?limit=40", enc(tag))
        } else {
            let acct = target.trim_start_matches('@');
            let who = http
                .get_json(
                    "mastodon",
                    &format!("{root}/api/v1/accounts/lookup?acct={}", enc(acct)),
                    None,
                )
                .await?;
            let id = who
                .get("id")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("no Mastodon account `{acct}`"))?;
            format!("{root}/api/v1/accounts/{}/statuses?limit=40", enc(id))
        };
        let mut max_id: Option<String> = None;
        pages(http, cfg, "mastodon", None, &first, |url, page, out| {
            let statuses = page
                .as_array()
                .ok_or_else(|| format!("GET {url}: not a list of statuses"))?;
            if statuses.is_empty() {
                return Ok(None);
            }
            let more = out.fill(cfg, statuses, "a status without an id or a url", |s| {
                let (id, item) = mastodon_item(s)?;
                max_id = Some(id.to_string());
                Some(item)
            });
            Ok(more.then(|| match &max_id {
                Some(m) => format!("{first}&max_id={}", enc(m)),
                None => first.clone(),
            }))
        })
        .await
    }
}

/// A Mastodon status as an item, with its id (the listing's cursor).
fn mastodon_item(s: &Value) -> Option<(&str, Item)> {
    let id = s.get("id").and_then(Value::as_str)?;
    let link = s
        .get("url")
        .and_then(Value::as_str)
        .or_else(|| s.get("uri").and_then(Value::as_str))?;
    let mut metrics = Map::new();
    metric(&mut metrics, "likes", s.get("favourites_count"));
    metric(&mut metrics, "replies", s.get("replies_count"));
    metric(&mut metrics, "reposts", s.get("reblogs_count"));
    let item = Item {
        url: link.to_string(),
        author: s
            .pointer("/account/acct")
            .and_then(Value::as_str)
            .map(str::to_string),
        published_at: time_of(s.get("created_at")),
        text: html_text(s.get("content").and_then(Value::as_str).unwrap_or("")),
        metrics,
    };
    Some((id, item))
}

// ---- Reddit ----

struct Reddit;

#[async_trait]
impl Adapter for Reddit {
    fn platform(&self) -> &'static str {
        "reddit"
    }

    fn check(&self, target: &str) -> Result<(), String> {
        not_blank(target, "a Reddit target is `r/subreddit` or a search query")
    }

    async fn collect(
        &self,
        http: &Fetcher,
        cfg: &SocialConfig,
        target: &str,
    ) -> Result<Collected, String> {
        let root = base(&cfg.reddit_url);
        let first = match target
            .strip_prefix("r/")
            .or_else(|| target.strip_prefix("/r/"))
        {
            Some(sub) => format!("{root}/r/{}/new.json?limit=100&raw_json=1", enc(sub)),
            None => format!(
                "{root}/search.json?q={}&sort=new&limit=100&raw_json=1",
                enc(target)
            ),
        };
        pages(http, cfg, "reddit", None, &first, |url, page, out| {
            let children = page
                .pointer("/data/children")
                .and_then(Value::as_array)
                .ok_or_else(|| format!("GET {url}: not a Reddit listing"))?;
            if !out.fill(cfg, children, "a post without a permalink", |c| {
                reddit_item(root, c.get("data").unwrap_or(c))
            }) {
                return Ok(None);
            }
            let after = page.pointer("/data/after").and_then(Value::as_str);
            Ok(after.map(|a| format!("{first}&after={}", enc(a))))
        })
        .await
    }
}

/// A Reddit post (a listing child's `data`) as an item.
fn reddit_item(root: &str, d: &Value) -> Option<Item> {
    let permalink = d.get("permalink").and_then(Value::as_str)?;
    let title = d.get("title").and_then(Value::as_str).unwrap_or("");
    let body = d.get("selftext").and_then(Value::as_str).unwrap_or("");
    let mut metrics = Map::new();
    metric(&mut metrics, "score", d.get("score"));
    metric(&mut metrics, "likes", d.get("ups"));
    metric(&mut metrics, "replies", d.get("num_comments"));
    Some(Item {
        url: format!("{root}{permalink}"),
        author: d.get("author").and_then(Value::as_str).map(str::to_string),
        published_at: time_of(d.get("created_utc")),
        text: [title, body]
            .iter()
            .filter(|s| !s.is_empty())
            .cloned()
            .collect::<Vec<_>>()
            .join("\n"),
        metrics,
    })
}

// ---- Hacker News (Algolia search) ----

struct HackerNews;

#[async_trait]
impl Adapter for HackerNews {
    fn platform(&self) -> &'static str {
        "hackernews"
    }

    fn check(&self, target: &str) -> Result<(), String> {
        not_blank(target, "a Hacker News target is a search query")
    }

    async fn collect(
        &self,
        http: &Fetcher,
        cfg: &SocialConfig,
        target: &str,
    ) -> Result<Collected, String> {
        let root = base(&cfg.hackernews_url);
        let url_of = |page_no: usize| {
            format!(
                "{root}/api/v1/search_by_date?query={}&tags=(story,comment)&hitsPerPage=100&page={page_no}",
                enc(target)
            )
        };
        let (first, mut page_no) = (url_of(0), 0);
        pages(http, cfg, "hackernews", None, &first, |url, page, out| {
            let hits = page
                .get("hits")
                .and_then(Value::as_array)
                .ok_or_else(|| format!("GET {url}: not an Algolia search answer"))?;
            if !out.fill(cfg, hits, "a hit without an objectID", hn_item) {
                return Ok(None);
            }
            let nb_pages = page.get("nbPages").and_then(Value::as_u64).unwrap_or(0);
            if page_no as u64 + 1 >= nb_pages {
                return Ok(None);
            }
            page_no += 1;
            Ok(Some(url_of(page_no)))
        })
        .await
    }
}

/// An Algolia search hit (a story or a comment) as an item.
fn hn_item(h: &Value) -> Option<Item> {
    let id = h.get("objectID").and_then(Value::as_str)?;
    let text = ["title", "story_text", "comment_text"]
        .iter()
        .filter_map(|k| h.get(*k).and_then(Value::as_str))
        .map(html_text)
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("\n");
    let mut metrics = Map::new();
    metric(&mut metrics, "likes", h.get("points"));
    metric(&mut metrics, "replies", h.get("num_comments"));
    Some(Item {
        url: format!("https://news.ycombinator.com/item?id={id}"),
        author: h.get("author").and_then(Value::as_str).map(str::to_string),
        published_at: time_of(h.get("created_at")).or_else(|| time_of(h.get("created_at_i"))),
        text,
        metrics,
    })
}

// ---- Bluesky: author feeds (public AppView), post search (a session) ----

struct Bluesky;

/// A Bluesky post view (`app.bsky.feed.defs#postView`) as an item.
fn bluesky_item(p: &Value) -> Option<Item> {
    let uri = p.get("uri").and_then(Value::as_str)?;
    let handle = p.pointer("/author/handle").and_then(Value::as_str)?;
    let rkey = uri.rsplit('/').next().unwrap_or(uri);
    let mut metrics = Map::new();
    metric(&mut metrics, "likes", p.get("likeCount"));
    metric(&mut metrics, "replies", p.get("replyCount"));
    metric(&mut metrics, "reposts", p.get("repostCount"));
    Some(Item {
        url: format!("https://bsky.app/profile/{handle}/post/{rkey}"),
        author: Some(handle.to_string()),
        published_at: time_of(p.pointer("/record/createdAt")),
        text: p
            .pointer("/record/text")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        metrics,
    })
}

/// Sign in with the configured app password; the access token.
async fn bluesky_session(http: &Fetcher, cfg: &SocialConfig) -> Result<String, String> {
    if cfg.bluesky_identifier.is_empty() || cfg.bluesky_app_password.is_empty() {
        return Err("Bluesky post search needs an app-password session: set social.bluesky_identifier and social.bluesky_app_password".into());
    }
    let url = format!(
        "{}/xrpc/com.atproto.server.createSession",
        base(&cfg.bluesky_pds_url)
    );
    let body = serde_json::json!({
        "identifier": cfg.bluesky_identifier,
        "password": cfg.bluesky_app_password.expose(),
    });
    let s = http.post_json("bluesky", &url, &body).await?;
    s.get("accessJwt")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| format!("POST {url}: no accessJwt in the answer"))
}

#[async_trait]
impl Adapter for Bluesky {
    fn platform(&self) -> &'static str {
        "bluesky"
    }

    fn check(&self, target: &str) -> Result<(), String> {
        if target.trim().trim_start_matches('@').is_empty() {
            return Err("a Bluesky target is `@handle` (an author feed) or a search query (needs social.bluesky_identifier and an app password)".into());
        }
        Ok(())
    }

    async fn collect(
        &self,
        http: &Fetcher,
        cfg: &SocialConfig,
        target: &str,
    ) -> Result<Collected, String> {
        let (first, list_key, token) = match target.strip_prefix('@') {
            Some(actor) => (
                format!(
                    "{}/xrpc/app.bsky.feed.getAuthorFeed?actor={}&limit=100",
                    base(&cfg.bluesky_url),
                    enc(actor)
                ),
                "feed",
                None,
            ),
            None => (
                format!(
                    "{}/xrpc/app.bsky.feed.searchPosts?q={}&sort=latest&limit=100",
                    base(&cfg.bluesky_pds_url),
                    enc(target)
                ),
                "posts",
                Some(bluesky_session(http, cfg).await?),
            ),
        };
        let bearer = token.as_deref();
        pages(http, cfg, "bluesky", bearer, &first, |url, page, out| {
            let posts = page
                .get(list_key)
                .and_then(Value::as_array)
                .ok_or_else(|| format!("GET {url}: not a Bluesky `{list_key}` list"))?;
            if !out.fill(cfg, posts, "a post without a uri or an author", |f| {
                bluesky_item(f.get("post").unwrap_or(f))
            }) {
                return Ok(None);
            }
            let cursor = page.get("cursor").and_then(Value::as_str);
            Ok(cursor
                .filter(|_| !posts.is_empty())
                .map(|c| format!("{first}&cursor={}", enc(c))))
        })
        .await
    }
}

// ---- Any web page ----

/// One page (an article, a review, a forum thread): fetched as robots.txt
/// allows and reduced to its main text, title, author and date by
/// Readability's algorithm ([`crate::html::article`]). A page whose static
/// HTML has no main text but has scripts is rendered in headless Chromium
/// (`browser.render`, [`crate::browser`]) and read from its rendered DOM.
/// Each run reads the page again; the collector's content hash captures it
/// again only when its text changed (as a new version).
struct WebPage;

#[async_trait]
impl Adapter for WebPage {
    fn platform(&self) -> &'static str {
        "web"
    }

    fn check(&self, target: &str) -> Result<(), String> {
        match url::Url::parse(target) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(()),
            _ => Err(format!("`{target}` is not an http(s) page URL")),
        }
    }

    async fn collect(
        &self,
        http: &Fetcher,
        _cfg: &SocialConfig,
        target: &str,
    ) -> Result<Collected, String> {
        if !http.allowed(self.platform(), target).await? {
            return Err(format!("robots.txt disallows {target}"));
        }
        let body = http.get(self.platform(), target, None).await?;
        let html = String::from_utf8_lossy(&body).into_owned();
        let read = web_item(&html, target);
        let has_scripts = crate::html::Page::parse(&html).has_scripts();
        let browser = http.browser();
        let item = if browser.should_render(target, read.is_ok(), has_scripts) {
            match http.render(self.platform(), target).await {
                Ok(dom) => match (web_item(&dom, target), read) {
                    (Ok(i), _) => Ok(i),
                    (Err(_), Ok(i)) => Ok(i),
                    (Err(e), Err(_)) => Err(format!("{e} (rendered in headless Chromium too)")),
                },
                Err(e) => read.map_err(|s| format!("{s}; rendering it failed: {e}")),
            }
        } else {
            read
        };
        let mut out = Collected::default();
        out.items.push(item?);
        Ok(out)
    }
}

// ---- AI-driven discovery ----

/// `discover`: AI-proposed web searches (see [`super::discover`]). Its
/// reading needs the organization's catalog and `[discovery]`, so the
/// collector runs it through [`super::discover::collect`]; this adapter
/// checks targets.
struct Discover;

#[async_trait]
impl Adapter for Discover {
    fn platform(&self) -> &'static str {
        super::discover::PLATFORM
    }

    fn check(&self, target: &str) -> Result<(), String> {
        super::discover::check_target(target)
    }

    async fn collect(
        &self,
        _http: &Fetcher,
        _cfg: &SocialConfig,
        _target: &str,
    ) -> Result<Collected, String> {
        Err("a discover source is read by the collector's run (it needs the organization's catalog and [discovery])".into())
    }
}

/// The item of a `web` page's HTML (static or rendered): its canonical URL,
/// main text (title first), author and date; or why it has no main text.
fn web_item(html: &str, target: &str) -> Result<Item, String> {
    let page = crate::html::Page::parse(html);
    let canonical = page
        .canonical()
        .and_then(|c| url::Url::parse(target).ok()?.join(&c).ok())
        .map_or_else(|| target.to_string(), |u| u.to_string());
    let a = page.article(target)?;
    let text = if a.title.is_empty() || a.text.starts_with(&a.title) {
        a.text
    } else {
        format!("{}\n{}", a.title, a.text)
    };
    Ok(Item {
        url: canonical,
        author: a.byline,
        published_at: a
            .published
            .as_deref()
            .and_then(|p| DateTime::parse_from_rfc3339(p).ok())
            .map(|t| t.with_timezone(&Utc)),
        text,
        metrics: Map::new(),
    })
}
