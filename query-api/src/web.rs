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
use axum::routing::get;
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
}

impl Served {
    fn new(ctype: &'static str, body: Vec<u8>) -> Served {
        let hash = crow_lake::ids::sha256_hex(&body);
        let gzip = gzip(&body).filter(|g| g.len() + 64 < body.len());
        Served {
            ctype,
            etag: format!("\"{}\"", &hash[..16]),
            plain: Bytes::from(body),
            gzip: gzip.map(Bytes::from),
        }
    }
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
        .route(
            "/",
            get(|h: HeaderMap| async move { page("index.html", &h) }),
        )
        .route(
            "/login",
            get(|h: HeaderMap| async move { page("login.html", &h) }),
        )
        .route("/app", get(|| async { Redirect::permanent("/app/") }))
        .route(
            "/app/",
            get(|h: HeaderMap| async move { page("app.html", &h) }),
        )
        .route(
            "/app/{*rest}",
            get(|h: HeaderMap| async move { page("app.html", &h) }),
        )
        .route("/assets/{name}", get(asset))
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
