//! The collector's HTTP: one client, a rate limit per platform, bounded
//! `Retry-After` on 429/503, robots.txt for feeds and pages.

use std::collections::HashMap;
use std::time::Duration;

use crow_schemas::config::SocialConfig;
use tokio::sync::Mutex;
use tokio::time::Instant;
use url::Url;

use crate::catalog::Robots;

/// The collector's user agent.
pub const USER_AGENT: &str = concat!(
    "CROW-social-collector/",
    env!("CARGO_PKG_VERSION"),
    " (+https://github.com/crow-analytics/crow)"
);
/// Token matched against robots.txt `User-agent` lines.
const ROBOTS_TOKEN: &str = "crow";
/// Bodies larger than this are refused.
const MAX_BODY: usize = 20 << 20;
/// Attempts of one request that keeps answering 429/503.
const ATTEMPTS: usize = 3;

/// Shared by every source of a run.
pub struct Fetcher {
    client: reqwest::Client,
    interval: Duration,
    max_retry_after: Duration,
    /// Next request slot per platform.
    slots: Mutex<HashMap<String, Instant>>,
    /// robots.txt per origin.
    robots: Mutex<HashMap<String, Robots>>,
    /// Renders `web` pages whose static HTML has no main text.
    browser: crate::browser::Browser,
}

impl Fetcher {
    /// A fetcher with `cfg`'s timeout, rate limit and Retry-After bound.
    pub fn new(cfg: &SocialConfig) -> Result<Fetcher, String> {
        let client = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .timeout(Duration::from_secs(cfg.timeout_seconds.max(1)))
            .redirect(reqwest::redirect::Policy::limited(5))
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        Ok(Fetcher {
            client,
            interval: Duration::from_millis(cfg.min_interval_ms),
            max_retry_after: Duration::from_secs(cfg.max_retry_after_seconds),
            slots: Mutex::new(HashMap::new()),
            robots: Mutex::new(HashMap::new()),
            browser: crate::browser::Browser::off(),
        })
    }

    /// This fetcher, rendering script-built pages with `browser`.
    pub fn with_browser(mut self, browser: crate::browser::Browser) -> Fetcher {
        self.browser = browser;
        self
    }

    /// The renderer of script-built pages.
    pub fn browser(&self) -> &crate::browser::Browser {
        &self.browser
    }

    /// Render `url` in headless Chromium as `platform`, paced like any of
    /// its requests (robots.txt is the caller's to check first).
    pub async fn render(
        &self,
        platform: &str,
        url: &str,
    ) -> Result<String, crate::browser::RenderError> {
        self.pace(platform).await;
        self.browser.render(url, USER_AGENT).await
    }

    /// Wait for `platform`'s next request slot.
    async fn pace(&self, platform: &str) {
        let slot = {
            let mut slots = self.slots.lock().await;
            let now = Instant::now();
            let slot = slots.get(platform).copied().unwrap_or(now).max(now);
            slots.insert(platform.to_string(), slot + self.interval);
            slot
        };
        tokio::time::sleep_until(slot).await;
    }

    /// GET `url` as `platform`: paced, and retried after the server's
    /// `Retry-After` on 429/503 (when it is within the bound).
    pub async fn get(
        &self,
        platform: &str,
        url: &str,
        bearer: Option<&str>,
    ) -> Result<Vec<u8>, String> {
        self.get_with(platform, url, bearer, &[]).await
    }

    /// [`Fetcher::get`] with extra request headers (an API key header).
    pub async fn get_with(
        &self,
        platform: &str,
        url: &str,
        bearer: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Result<Vec<u8>, String> {
        for attempt in 1..=ATTEMPTS {
            self.pace(platform).await;
            let mut req = self.client.get(url);
            if let Some(t) = bearer {
                req = req.bearer_auth(t);
            }
            for (name, value) in headers {
                req = req.header(*name, *value);
            }
            let resp = req.send().await.map_err(|e| format!("GET {url}: {e}"))?;
            let status = resp.status();
            if status.as_u16() == 429 || status.as_u16() == 503 {
                let wait = retry_after(resp.headers()).unwrap_or(Duration::from_secs(1));
                if wait > self.max_retry_after {
                    return Err(format!(
                        "GET {url}: HTTP {status} with Retry-After {} s, over social.max_retry_after_seconds",
                        wait.as_secs()
                    ));
                }
                if attempt == ATTEMPTS {
                    return Err(format!(
                        "GET {url}: HTTP {status} after {ATTEMPTS} attempts"
                    ));
                }
                tracing::info!(url, %status, wait_s = wait.as_secs_f64(), "social: rate limited, waiting");
                tokio::time::sleep(wait).await;
                continue;
            }
            if !status.is_success() {
                return Err(format!("GET {url}: HTTP {status}"));
            }
            let body = resp.bytes().await.map_err(|e| format!("GET {url}: {e}"))?;
            if body.len() > MAX_BODY {
                return Err(format!("GET {url}: larger than {} MB", MAX_BODY >> 20));
            }
            return Ok(body.to_vec());
        }
        Err(format!("GET {url}: no answer"))
    }

    /// GET `url` and parse it as JSON.
    pub async fn get_json(
        &self,
        platform: &str,
        url: &str,
        bearer: Option<&str>,
    ) -> Result<serde_json::Value, String> {
        let body = self.get(platform, url, bearer).await?;
        serde_json::from_slice(&body).map_err(|e| format!("GET {url}: not JSON: {e}"))
    }

    /// POST a JSON body to `url` as `platform` (paced, one attempt) and
    /// parse the JSON answer.
    pub async fn post_json(
        &self,
        platform: &str,
        url: &str,
        body: &serde_json::Value,
    ) -> Result<serde_json::Value, String> {
        self.pace(platform).await;
        let resp = self
            .client
            .post(url)
            .json(body)
            .send()
            .await
            .map_err(|e| format!("POST {url}: {e}"))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(format!("POST {url}: HTTP {status}"));
        }
        resp.json()
            .await
            .map_err(|e| format!("POST {url}: not JSON: {e}"))
    }

    /// Whether robots.txt of `url`'s origin lets us fetch it (no robots.txt,
    /// or one that cannot be read: allowed).
    pub async fn allowed(&self, platform: &str, url: &str) -> Result<bool, String> {
        let u = Url::parse(url).map_err(|e| format!("`{url}` is not a URL: {e}"))?;
        let origin = u.origin().ascii_serialization();
        let mut path = u.path().to_string();
        if let Some(q) = u.query() {
            path.push('?');
            path.push_str(q);
        }
        let cached = self.robots.lock().await.get(&origin).cloned();
        let robots = match cached {
            Some(r) => r,
            None => {
                let r = match self
                    .get(platform, &format!("{origin}/robots.txt"), None)
                    .await
                {
                    Ok(body) => Robots::parse(&String::from_utf8_lossy(&body), ROBOTS_TOKEN),
                    Err(_) => Robots::default(),
                };
                self.robots.lock().await.insert(origin, r.clone());
                r
            }
        };
        Ok(robots.allowed(&path))
    }
}

/// `Retry-After` as seconds or an HTTP date.
fn retry_after(h: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = h.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(s) = v.parse::<u64>() {
        return Some(Duration::from_secs(s));
    }
    let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let secs = (at.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_milliseconds();
    Some(Duration::from_millis(secs.max(0) as u64))
}
