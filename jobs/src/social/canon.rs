//! Canonical URLs and content hashes: what makes two captures the same.

use url::Url;

/// Query parameters that only track a click, never select content.
const TRACKING: &[&str] = &[
    "fbclid", "gclid", "dclid", "gbraid", "wbraid", "msclkid", "yclid", "twclid", "igshid",
    "mc_cid", "mc_eid", "_hsenc", "_hsmi", "mkt_tok", "ref", "ref_src", "ref_url", "spm",
    "share_id", "si", "feature",
];

/// Redirectors: (host, path, parameter holding the real URL).
const REDIRECTORS: &[(&str, &str, &str)] = &[
    ("l.facebook.com", "/l.php", "u"),
    ("lm.facebook.com", "/l.php", "u"),
    ("m.facebook.com", "/l.php", "u"),
    ("www.facebook.com", "/l.php", "u"),
    ("l.instagram.com", "/", "u"),
    ("www.google.com", "/url", "q"),
    ("google.com", "/url", "q"),
    ("out.reddit.com", "", "url"),
    ("www.youtube.com", "/redirect", "q"),
    ("href.li", "/", ""),
];

fn tracking(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n.starts_with("utm_") || TRACKING.contains(&n.as_str())
}

/// The redirect target of a known redirector URL, if it is one.
fn unwrap_redirect(u: &Url) -> Option<Url> {
    let host = u.host_str()?.to_ascii_lowercase();
    for (h, path, param) in REDIRECTORS {
        if host != *h || !u.path().starts_with(path) {
            continue;
        }
        if param.is_empty() {
            // href.li/?https://… : the whole query is the target.
            return u.query().and_then(|q| Url::parse(q).ok());
        }
        return u
            .query_pairs()
            .find(|(k, _)| k == param)
            .and_then(|(_, v)| Url::parse(&v).ok());
    }
    None
}

/// The canonical form of `raw`: lower-case scheme and host (and no default
/// port), known redirectors unwrapped, tracking parameters, the fragment
/// and a trailing slash dropped. Text that is no absolute URL comes back
/// trimmed.
pub fn canonical_url(raw: &str) -> String {
    let Ok(mut u) = Url::parse(raw.trim()) else {
        return raw.trim().to_string();
    };
    for _ in 0..3 {
        match unwrap_redirect(&u) {
            Some(next) => u = next,
            None => break,
        }
    }
    if !matches!(u.scheme(), "http" | "https") {
        return u.to_string();
    }
    let kept: Vec<(String, String)> = u
        .query_pairs()
        .filter(|(k, _)| !tracking(k))
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let mut out = format!("{}://{}", u.scheme(), u.host_str().unwrap_or_default());
    if let Some(p) = u.port() {
        out.push_str(&format!(":{p}"));
    }
    let path = u.path().trim_end_matches('/');
    out.push_str(path);
    if !kept.is_empty() {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in &kept {
            q.append_pair(k, v);
        }
        out.push('?');
        out.push_str(&q.finish());
    }
    out
}

/// SHA-256 (hex) of a capture's text, whitespace-normalised, so a
/// re-rendered but unchanged post hashes the same.
pub fn content_hash(text: &str) -> String {
    let norm = text.split_whitespace().collect::<Vec<_>>().join(" ");
    crow_lake::ids::sha256_hex(norm.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracking_case_fragments_and_slashes_go() {
        assert_eq!(
            canonical_url("HTTPS://Example.COM:443/Post/1/?utm_source=x&id=7&fbclid=abc&Ref=t#top"),
            "https://example.com/Post/1?id=7"
        );
        assert_eq!(canonical_url("http://example.com/"), "http://example.com");
        assert_eq!(
            canonical_url("http://example.com:8080/a/"),
            "http://example.com:8080/a"
        );
    }

    #[test]
    fn redirectors_are_unwrapped() {
        assert_eq!(
            canonical_url(
                "https://l.facebook.com/l.php?u=https%3A%2F%2Fshop.example%2Fp%2F1%3Futm_medium%3Dsocial&h=AT0"
            ),
            "https://shop.example/p/1"
        );
        assert_eq!(
            canonical_url("https://www.google.com/url?q=https://a.example/x/&sa=D"),
            "https://a.example/x"
        );
    }

    #[test]
    fn hashes_ignore_whitespace_only_changes() {
        assert_eq!(content_hash("a  b\nc"), content_hash(" a b c "));
        assert_ne!(content_hash("a b c"), content_hash("a b d"));
    }
}
