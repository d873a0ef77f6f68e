//! The dashboard, served by `crow serve` beside the API (issue 16):
//!
//! - `GET /`: the public landing page (what CROW is, social-card meta tags);
//! - `GET /login`: sign-in, and setting a password with an invitation or
//!   reset token (`/login?token=…`);
//! - `GET /app/…`: the app (one page; it routes itself);
//! - `GET /assets/{name}`: the scripts, styles and vendored libraries.
//!
//! Every file is embedded in the binary (`include_bytes!`): a user needs no
//! Node, npm or CDN. Assets are served under content-hashed names
//! (`app.3f2a9c1b.js`, the first 8 hex digits of their SHA-256, computed on
//! first use) with a one-year immutable cache; pages are `no-cache` and
//! refer to the hashed names, so a new build is picked up on the next load.
//! Both are gzip-compressed once, on first use, when the client accepts it.

use std::collections::HashMap;
use std::io::Write;
use std::sync::OnceLock;

use axum::body::Bytes;
use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, MethodRouter};
use axum::Router;

/// A file as written in `query-api/web/`.
struct Source {
    name: &'static str,
    ctype: &'static str,
    body: &'static [u8],
}

macro_rules! source {
    ($name:literal, $ctype:expr) => {
        Source {
            name: $name,
            ctype: $ctype,
            body: include_bytes!(concat!("../web/", $name)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";
const HTML: &str = "text/html; charset=utf-8";

/// Assets, served under hashed names.
const ASSETS: &[Source] = &[
    source!("app.js", JS),
    source!("login.js", JS),
    source!("style.css", "text/css; charset=utf-8"),
    source!("favicon.svg", "image/svg+xml"),
    source!("vendor/preact.module.js", JS),
    source!("vendor/preact-hooks.module.js", JS),
    source!("vendor/htm.module.js", JS),
    source!("vendor/uPlot.esm.js", JS),
    source!("vendor/uPlot.min.css", "text/css; charset=utf-8"),
];

/// Pages: `{{name}}` in them becomes the asset's hashed URL.
const PAGES: &[Source] = &[
    source!("index.html", HTML),
    source!("login.html", HTML),
    source!("app.html", HTML),
];

/// One response body, ready to send.
struct Served {
    ctype: &'static str,
    plain: Bytes,
    gzip: Option<Bytes>,
    etag: String,
    /// A page's Content-Security-Policy (assets have none).
    csp: Option<HeaderValue>,
}

impl Served {
    fn new(ctype: &'static str, body: Vec<u8>) -> Served {
        let hash = crow_lake::ids::sha256_hex(&body);
        let gzip = gzip(&body).filter(|g| g.len() + 64 < body.len());
        Served {
            ctype,
            etag: format!("\"{}\"", &hash[..16]),
            csp: (ctype == HTML)
                .then(|| HeaderValue::from_str(&csp(&String::from_utf8_lossy(&body))).ok())
                .flatten(),
            plain: Bytes::from(body),
            gzip: gzip.map(Bytes::from),
        }
    }
}

/// The Content-Security-Policy of a page: scripts, styles, images and
/// requests only from this server, no frames, no plugins, no `<base>`, forms
/// posting only here. The page's inline scripts (the import map) are allowed
/// by their SHA-256, so an injected inline script never runs.
fn csp(page: &str) -> String {
    use base64::Engine as _;
    use sha2::Digest as _;
    let mut script_src = String::from("'self'");
    for inline in inline_scripts(page) {
        let digest = sha2::Sha256::digest(inline.as_bytes());
        let b64 = base64::engine::general_purpose::STANDARD.encode(digest);
        script_src.push_str(&format!(" 'sha256-{b64}'"));
    }
    format!(
        "default-src 'self'; script-src {script_src}; style-src 'self'; img-src 'self' data:; \
         connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
         frame-ancestors 'none'"
    )
}

/// The text of each `<script>` without a `src` in a page.
fn inline_scripts(page: &str) -> Vec<&str> {
    let mut found = Vec::new();
    let mut rest = page;
    while let Some(at) = rest.find("<script") {
        let after = &rest[at..];
        let Some(tag_end) = after.find('>') else {
            break;
        };
        let tag = &after[..tag_end];
        let body = &after[tag_end + 1..];
        let Some(close) = body.find("</script>") else {
            break;
        };
        if !tag.contains(" src=") {
            found.push(&body[..close]);
        }
        rest = &body[close..];
    }
    found
}

fn gzip(body: &[u8]) -> Option<Vec<u8>> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(body).ok()?;
    enc.finish().ok()
}

struct Built {
    /// Hashed file name (no folder) → asset.
    assets: HashMap<String, Served>,
    /// Page file name → page.
    pages: HashMap<&'static str, Served>,
}

/// `vendor/uPlot.min.css` with hash `3f2a9c1b` → `uPlot.min.3f2a9c1b.css`.
fn hashed_name(name: &str, body: &[u8]) -> String {
    let base = name.rsplit('/').next().unwrap_or(name);
    let hash = crow_lake::ids::sha256_hex(body);
    let short = &hash[..8];
    match base.rsplit_once('.') {
        Some((stem, ext)) => format!("{stem}.{short}.{ext}"),
        None => format!("{base}.{short}"),
    }
}

fn built() -> &'static Built {
    static BUILT: OnceLock<Built> = OnceLock::new();
    BUILT.get_or_init(|| {
        let mut assets = HashMap::new();
        let mut urls = Vec::new();
        for a in ASSETS {
            let hashed = hashed_name(a.name, a.body);
            urls.push((format!("{{{{{}}}}}", a.name), format!("/assets/{hashed}")));
            assets.insert(hashed, Served::new(a.ctype, a.body.to_vec()));
        }
        let pages = PAGES
            .iter()
            .map(|p| {
                let mut text = String::from_utf8_lossy(p.body).into_owned();
                for (from, to) in &urls {
                    text = text.replace(from, to);
                }
                (p.name, Served::new(p.ctype, text.into_bytes()))
            })
            .collect();
        Built { assets, pages }
    })
}

/// The hashed URL of an embedded asset (`app.js` → `/assets/app.3f2a9c1b.js`).
pub fn asset_url(name: &str) -> Option<String> {
    ASSETS
        .iter()
        .find(|a| a.name == name)
        .map(|a| format!("/assets/{}", hashed_name(a.name, a.body)))
}

fn send(s: &Served, headers: &HeaderMap, cache: &'static str) -> Response {
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == s.etag));
    let gzip_ok = headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(accepts_gzip);
    let mut resp = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        match (&s.gzip, gzip_ok) {
            (Some(g), true) => {
                let mut r = g.clone().into_response();
                r.headers_mut()
                    .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
                r
            }
            _ => s.plain.clone().into_response(),
        }
    };
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(s.ctype));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if let Ok(v) = HeaderValue::from_str(&s.etag) {
        h.insert(header::ETAG, v);
    }
    if let Some(csp) = &s.csp {
        h.insert(header::CONTENT_SECURITY_POLICY, csp.clone());
    }
    if s.ctype == HTML {
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        h.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("same-origin"),
        );
    }
    resp
}

/// Whether an `Accept-Encoding` value admits gzip (`gzip`, `gzip;q=0.5`;
/// not `gzip;q=0`).
fn accepts_gzip(value: &str) -> bool {
    value.split(',').any(|e| {
        let mut parts = e.split(';').map(str::trim);
        let coding = parts.next().unwrap_or("");
        let q = parts
            .find_map(|p| p.strip_prefix("q="))
            .map_or(1.0, |q| q.parse::<f32>().unwrap_or(0.0));
        coding.eq_ignore_ascii_case("gzip") && q > 0.0
    })
}

fn page(name: &'static str, headers: &HeaderMap) -> Response {
    match built().pages.get(name) {
        Some(s) => send(s, headers, "no-cache"),
        None => (StatusCode::NOT_FOUND, "not found").into_response(),
    }
}

async fn asset(Path(name): Path<String>, headers: HeaderMap) -> Response {
    match built().assets.get(&name) {
        Some(s) => send(s, &headers, "public, max-age=31536000, immutable"),
        None => (
            StatusCode::NOT_FOUND,
            [(header::CACHE_CONTROL, "no-store")],
            "no such asset (the dashboard was updated: reload the page)",
        )
            .into_response(),
    }
}

/// The dashboard's routes (pages and assets), with the API's state type.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", page_route("index.html"))
        .route("/login", page_route("login.html"))
        .route("/app", get(|| async { Redirect::permanent("/app/") }))
        .route("/app/", page_route("app.html"))
        .route("/app/{*rest}", page_route("app.html"))
        .route("/assets/{name}", get(asset))
}

/// `GET` of the page `file`.
fn page_route<S: Clone + Send + Sync + 'static>(file: &'static str) -> MethodRouter<S> {
    get(move |h: HeaderMap| async move { page(file, &h) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_refer_only_to_hashed_assets_that_exist() {
        let b = built();
        for (name, p) in &b.pages {
            let text = String::from_utf8_lossy(&p.plain);
            assert!(!text.contains("{{"), "{name} has an unknown placeholder");
            for part in text.split("/assets/").skip(1) {
                let file: String = part
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
                    .collect();
                assert!(b.assets.contains_key(&file), "{name} refers to {file}");
            }
        }
        assert_eq!(
            hashed_name("vendor/uPlot.min.css", b"x").len(),
            "uPlot.min..css".len() + 8
        );
        assert!(asset_url("app.js").is_some_and(|u| u.starts_with("/assets/app.")));
    }

    #[test]
    fn pages_allow_exactly_their_own_inline_scripts() {
        use base64::Engine as _;
        use sha2::Digest as _;
        let page = "<script type=\"importmap\">{\"a\": 1}</script>\n\
                    <script type=\"module\" src=\"/assets/app.js\"></script><script>x()</script>";
        assert_eq!(inline_scripts(page), vec!["{\"a\": 1}", "x()"]);
        let b = built();
        let app = &b.pages["app.html"];
        let csp = app.csp.as_ref().and_then(|v| v.to_str().ok()).unwrap_or("");
        let text = String::from_utf8_lossy(&app.plain);
        let map = inline_scripts(&text);
        assert_eq!(
            map.len(),
            1,
            "the app page has one inline script, its import map"
        );
        let want = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(map[0]));
        assert!(
            csp.contains(&format!("script-src 'self' 'sha256-{want}';")),
            "{csp}"
        );
        assert!(csp.contains("frame-ancestors 'none'") && csp.contains("object-src 'none'"));
        assert!(!csp.contains("unsafe"), "{csp}");
        for (name, p) in &b.pages {
            assert!(p.csp.is_some(), "{name} has a CSP");
        }
        assert!(b.assets.values().all(|a| a.csp.is_none()));
    }

    #[test]
    fn gzip_is_sent_only_when_accepted() {
        for (v, want) in [
            ("gzip", true),
            ("gzip, deflate, br", true),
            ("br;q=1.0, gzip;q=0.5", true),
            ("GZIP", true),
            ("gzip;q=0", false),
            ("gzip;q=0.0", false),
            ("deflate, br", false),
            ("x-gzip", false),
            ("", false),
        ] {
            assert_eq!(accepts_gzip(v), want, "{v}");
        }
    }
}
