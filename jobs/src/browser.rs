//! Rendering script-built pages in headless Chromium.
//!
//! Some shops and posts send an empty shell and build their content with
//! script. When a static fetch yields no usable content (no main text for a
//! social `web` source, no product for `crow products crawl`) and the page
//! has scripts, [`Browser`] renders the page in Debian's `chromium` and the
//! extractors read the rendered DOM instead (`browser.render = "auto"`).
//!
//! **How.** Chromium's own headless mode, as a child process:
//! `chromium --headless --dump-dom --virtual-time-budget=MS URL` prints the
//! DOM after the page's scripts and timers had `browser.script_budget_ms`
//! of virtual time. Each render gets a fresh `--user-data-dir` (a temporary
//! folder, removed after), no first-run or extensions, our user agent, and
//! `--no-sandbox` only when running as root (Chromium refuses to start as
//! root with its sandbox). Bounds: `browser.timeout_seconds` for the whole
//! render (the process is killed at the deadline — `kill_on_drop` too, so
//! a cancelled crawl leaves no browser behind; Chromium's helper processes
//! exit with it), `browser.max_concurrent` renders at once (a semaphore),
//! and `browser.max_bytes` of DOM read (a larger one is refused, the
//! process killed). Only `http(s)` URLs are rendered; robots.txt is checked
//! by the callers before the page is fetched at all.
//!
//! **Why not a DevTools-protocol crate.** The crates that drive Chrome over
//! CDP (chromiumoxide, headless_chrome) bring a WebSocket stack and
//! thousands of generated protocol types: minutes of cold build for what
//! one documented command line does. What this costs: no interaction
//! (clicks, scrolling, "load more" buttons), no cookies or logins carried
//! between pages or runs (each render is a fresh profile), no waiting on a
//! selector (the virtual-time budget is the only "page is ready" signal),
//! and the page's own requests (scripts, XHR) go out without a robots.txt
//! check of their own.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use crow_schemas::config::{BrowserConfig, BrowserRender};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::Semaphore;

/// Names looked up on `PATH` when `browser.chromium` is empty.
const CANDIDATES: [&str; 4] = [
    "chromium",
    "chromium-browser",
    "google-chrome",
    "google-chrome-stable",
];

/// Why a page could not be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// No Chromium to run (names the setting to change).
    #[error("{0}")]
    Unavailable(String),
    /// Only http(s) pages are rendered.
    #[error("only http(s) pages are rendered, not `{0}`")]
    NotHttp(String),
    /// The render did not finish within `browser.timeout_seconds`.
    #[error("rendering {url} did not finish within {seconds} s (browser.timeout_seconds); the browser was stopped")]
    Timeout {
        /// The page.
        url: String,
        /// The bound.
        seconds: u64,
    },
    /// The rendered DOM is larger than `browser.max_bytes`.
    #[error("the rendered DOM of {url} is larger than {max} bytes (browser.max_bytes)")]
    TooLarge {
        /// The page.
        url: String,
        /// The bound.
        max: u64,
    },
    /// Chromium ran but gave no DOM.
    #[error("Chromium could not render {url}: {why}")]
    Failed {
        /// The page.
        url: String,
        /// Exit status and the end of Chromium's error output.
        why: String,
    },
}

/// The renderer of one crawl or collector run: the mode, and Chromium
/// (or why there is none).
#[derive(Debug, Clone)]
pub struct Browser {
    mode: BrowserRender,
    chromium: Result<Arc<Renderer>, String>,
}

/// A located Chromium with its bounds.
#[derive(Debug)]
pub struct Renderer {
    chromium: PathBuf,
    timeout: Duration,
    budget_ms: u64,
    max_bytes: u64,
    permits: Semaphore,
    no_sandbox: bool,
}

impl Browser {
    /// The browser `cfg` describes. A Chromium that cannot be found is not
    /// an error here: the static result of each page is kept, and a page
    /// that needed rendering says why it could not be (naming
    /// `browser.chromium`).
    pub fn from_config(cfg: &BrowserConfig) -> Browser {
        let chromium = if cfg.render == BrowserRender::Never {
            Err("browser.render is `never`".to_string())
        } else {
            locate(&cfg.chromium).map(|path| {
                Arc::new(Renderer {
                    chromium: path,
                    timeout: Duration::from_secs(cfg.timeout_seconds.max(1)),
                    budget_ms: cfg.script_budget_ms,
                    max_bytes: cfg.max_bytes,
                    permits: Semaphore::new(cfg.max_concurrent.max(1)),
                    no_sandbox: running_as_root(),
                })
            })
        };
        Browser {
            mode: cfg.render,
            chromium,
        }
    }

    /// A browser that never renders.
    pub fn off() -> Browser {
        Browser {
            mode: BrowserRender::Never,
            chromium: Err("rendering is off".into()),
        }
    }

    /// Whether `url` should be rendered, given whether its static HTML
    /// gave usable content and whether that HTML has scripts.
    pub fn should_render(&self, url: &str, static_usable: bool, has_scripts: bool) -> bool {
        let http = url::Url::parse(url).is_ok_and(|u| matches!(u.scheme(), "http" | "https"));
        match self.mode {
            BrowserRender::Never => false,
            BrowserRender::Always => http,
            BrowserRender::Auto => http && !static_usable && has_scripts,
        }
    }

    /// Whether every page is rendered (`browser.render = "always"`).
    pub fn always(&self) -> bool {
        self.mode == BrowserRender::Always
    }

    /// The DOM of `url` after its scripts ran, fetched with `user_agent`.
    pub async fn render(&self, url: &str, user_agent: &str) -> Result<String, RenderError> {
        let u = url::Url::parse(url).map_err(|_| RenderError::NotHttp(url.to_string()))?;
        if !matches!(u.scheme(), "http" | "https") {
            return Err(RenderError::NotHttp(url.to_string()));
        }
        match &self.chromium {
            Ok(r) => r.render(u.as_str(), user_agent).await,
            Err(why) => Err(RenderError::Unavailable(why.clone())),
        }
    }
}

impl Renderer {
    /// One render, within the concurrency and time bounds.
    async fn render(&self, url: &str, user_agent: &str) -> Result<String, RenderError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|e| RenderError::Unavailable(e.to_string()))?;
        let profile = Profile::new().map_err(|e| RenderError::Failed {
            url: url.to_string(),
            why: format!("no temporary profile folder: {e}"),
        })?;
        let mut cmd = tokio::process::Command::new(&self.chromium);
        cmd.args(["--headless", "--disable-gpu", "--no-first-run"])
            .args(["--disable-extensions", "--disable-sync", "--mute-audio"])
            .args(["--hide-scrollbars", "--disable-dev-shm-usage"])
            .arg(format!("--user-data-dir={}", profile.0.display()))
            .arg(format!("--user-agent={user_agent}"))
            .arg(format!("--virtual-time-budget={}", self.budget_ms))
            .arg("--dump-dom");
        if self.no_sandbox {
            cmd.arg("--no-sandbox");
        }
        cmd.arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|e| {
            RenderError::Unavailable(format!(
                "browser.chromium `{}` cannot be started: {e}",
                self.chromium.display()
            ))
        })?;
        let (Some(out), Some(err)) = (child.stdout.take(), child.stderr.take()) else {
            return Err(RenderError::Failed {
                url: url.to_string(),
                why: "no output pipes".into(),
            });
        };
        let run = async {
            let (dom, tail) = tokio::join!(read_bounded(out, self.max_bytes), tail_of(err, 600));
            if dom.is_none() {
                let _ = child.start_kill();
            }
            (dom, tail, child.wait().await)
        };
        let timed = tokio::time::timeout(self.timeout, run).await;
        let Ok((dom, tail, status)) = timed else {
            let _ = child.kill().await;
            return Err(RenderError::Timeout {
                url: url.to_string(),
                seconds: self.timeout.as_secs(),
            });
        };
        let Some(dom) = dom else {
            return Err(RenderError::TooLarge {
                url: url.to_string(),
                max: self.max_bytes,
            });
        };
        let dom = String::from_utf8_lossy(&dom).into_owned();
        if dom.trim().is_empty() {
            let status = status.map_or_else(|e| e.to_string(), |s| s.to_string());
            return Err(RenderError::Failed {
                url: url.to_string(),
                why: format!("{status}, no DOM: {}", tail.trim()),
            });
        }
        Ok(dom)
    }
}

/// Up to `max` bytes of `r` (None when it has more; reading stops there).
async fn read_bounded(r: impl AsyncRead + Unpin, max: u64) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let mut limited = r.take(max.saturating_add(1));
    if limited.read_to_end(&mut buf).await.is_err() {
        return Some(buf);
    }
    (buf.len() as u64 <= max).then_some(buf)
}

/// The last `keep` bytes of `r`, read to its end (Chromium's error output
/// is drained so it never blocks on a full pipe).
async fn tail_of(mut r: impl AsyncRead + Unpin, keep: usize) -> String {
    let mut tail: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 4096];
    while let Ok(n) = r.read(&mut chunk).await {
        if n == 0 {
            break;
        }
        tail.extend_from_slice(&chunk[..n]);
        if tail.len() > keep {
            tail.drain(..tail.len() - keep);
        }
    }
    String::from_utf8_lossy(&tail).into_owned()
}

/// A fresh Chromium profile folder, removed when dropped.
struct Profile(PathBuf);

impl Profile {
    fn new() -> std::io::Result<Profile> {
        let dir = std::env::temp_dir().join(crow_lake::ids::new_id("crow-chromium"));
        std::fs::create_dir_all(&dir)?;
        Ok(Profile(dir))
    }
}

impl Drop for Profile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The Chromium `setting` names (a path, or a name on `PATH`), else the
/// first of [`CANDIDATES`] on `PATH`; the error names `browser.chromium`.
fn locate(setting: &str) -> Result<PathBuf, String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let on_path = |name: &str| {
        std::env::split_paths(&path)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    };
    if !setting.is_empty() {
        let p = Path::new(setting);
        let found = if p.components().count() > 1 {
            p.is_file().then(|| p.to_path_buf())
        } else {
            on_path(setting)
        };
        return found.ok_or_else(|| {
            format!("browser.chromium `{setting}` is not an executable file (install Debian's `chromium` package, fix browser.chromium, or set browser.render = \"never\")")
        });
    }
    CANDIDATES.iter().find_map(|n| on_path(n)).ok_or_else(|| {
        format!(
            "no Chromium found on PATH ({}): install Debian's `chromium` package, set browser.chromium to its path, or set browser.render = \"never\"",
            CANDIDATES.join(", ")
        )
    })
}

/// Whether this process runs as root (Chromium's sandbox refuses root),
/// read from `/proc/self/status` (false where that is not readable).
fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .is_some_and(|ids| ids.split_whitespace().nth(1) == Some("0"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_renders_only_script_pages_without_content_and_only_http() {
        let b = Browser::from_config(&BrowserConfig::default());
        assert!(b.should_render("http://x/p", false, true));
        assert!(!b.should_render("http://x/p", true, true));
        assert!(!b.should_render("http://x/p", false, false));
        assert!(!b.should_render("file:///etc/passwd", false, true));
        let never = Browser::from_config(&BrowserConfig {
            render: BrowserRender::Never,
            ..BrowserConfig::default()
        });
        assert!(!never.should_render("http://x/p", false, true));
        let always = Browser::from_config(&BrowserConfig {
            render: BrowserRender::Always,
            ..BrowserConfig::default()
        });
        assert!(always.should_render("https://x/p", true, false));
    }

    #[test]
    fn a_missing_chromium_names_the_setting() {
        let b = Browser::from_config(&BrowserConfig {
            chromium: "/nonexistent/chromium".into(),
            ..BrowserConfig::default()
        });
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let e = rt
            .block_on(b.render("http://127.0.0.1:9/", "t"))
            .unwrap_err();
        assert!(
            matches!(&e, RenderError::Unavailable(m) if m.contains("browser.chromium `/nonexistent/chromium`")),
            "{e}"
        );
        let e = rt.block_on(b.render("ftp://x/y", "t")).unwrap_err();
        assert_eq!(e, RenderError::NotHttp("ftp://x/y".into()));
    }
}
