//! HTML through a real parser: html5ever (the WHATWG parsing algorithm, as
//! browsers parse) behind `dom_query`'s selectors, and Mozilla
//! Readability's main-content extraction (`dom_smoothie`, a port that
//! follows readability.js closely).
//!
//! The product crawler reads a page's JSON-LD, meta tags, canonical link and
//! title here; the social collector's `web` sources and post bodies are
//! reduced to their text here. Entities, comments, `<script>`/`<style>`
//! contents, unquoted and odd-cased attributes are the parser's business,
//! not string searching.

use std::collections::HashMap;

use dom_query::Document;

/// A parsed HTML page.
pub struct Page {
    doc: Document,
}

impl Page {
    /// Parses `html` (never fails: HTML parsing recovers from any input,
    /// as a browser does).
    pub fn parse(html: &str) -> Page {
        Page {
            doc: Document::from(html),
        }
    }

    /// The contents of `<script type="application/ld+json">` blocks, in
    /// page order.
    pub fn json_ld(&self) -> Vec<String> {
        self.doc
            .select("script[type]")
            .iter()
            .filter(|s| {
                s.attr("type")
                    .is_some_and(|t| t.to_ascii_lowercase().contains("ld+json"))
            })
            .map(|s| s.text().to_string())
            .collect()
    }

    /// `<meta property|name=K content=V>` pairs, keys lower-cased; the
    /// first of a repeated key wins.
    pub fn meta(&self) -> HashMap<String, String> {
        let mut out = HashMap::new();
        for m in self.doc.select("meta").iter() {
            let key = m.attr("property").or_else(|| m.attr("name"));
            if let (Some(k), Some(v)) = (key, m.attr("content")) {
                out.entry(k.to_lowercase())
                    .or_insert_with(|| v.trim().to_string());
            }
        }
        out
    }

    /// The `<link rel="canonical">` target, as written.
    pub fn canonical(&self) -> Option<String> {
        self.doc
            .select("link[rel][href]")
            .iter()
            .find(|l| {
                l.attr("rel").is_some_and(|r| {
                    r.split_ascii_whitespace()
                        .any(|r| r.eq_ignore_ascii_case("canonical"))
                })
            })
            .and_then(|l| l.attr("href"))
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
    }

    /// Whether the page has scripts a browser would run (`<script>` without
    /// a type, or of a JavaScript or module type; JSON-LD and other data
    /// blocks do not count): only such a page can build content that its
    /// static HTML lacks.
    pub fn has_scripts(&self) -> bool {
        self.doc
            .select("script")
            .iter()
            .any(|s| match s.attr("type") {
                None => true,
                Some(t) => {
                    let t = t.trim().to_ascii_lowercase();
                    t.is_empty() || t.contains("javascript") || t == "module"
                }
            })
    }

    /// The first `<h1>`'s text, whitespace collapsed.
    pub fn first_h1(&self) -> Option<String> {
        let t = collapse(&self.doc.select("h1").first().text());
        (!t.is_empty()).then_some(t)
    }

    /// The `<title>`, whitespace collapsed.
    pub fn title(&self) -> Option<String> {
        let t = collapse(&self.doc.select("title").text());
        (!t.is_empty()).then_some(t)
    }
}

/// The text of an HTML fragment (a post body): tags dropped, entities
/// decoded, scripts and styles left out, whitespace collapsed.
pub fn text(html: &str) -> String {
    if !html.contains(['<', '&']) {
        return collapse(html);
    }
    let doc = Document::fragment(html);
    doc.select("script, style, noscript, template").remove();
    collapse(&doc.formatted_text())
}

/// The visible text of a whole page, at most `max_chars` characters:
/// scripts, styles, navigation, headers and footers left out, one line per
/// block, whitespace collapsed within lines. Unlike [`Page::article`] it
/// never fails: a short product page is text too.
pub fn visible_text(html: &str, max_chars: usize) -> String {
    let doc = Document::from(html);
    doc.select("script, style, noscript, template, svg, nav, header, footer, head")
        .remove();
    let text = doc.formatted_text();
    let mut out = String::new();
    for line in text.lines().map(collapse).filter(|l| !l.is_empty()) {
        if out.chars().count() + line.chars().count() + 1 > max_chars {
            break;
        }
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(&line);
    }
    out
}

/// HTML character references in `s` decoded (JSON-LD values often carry
/// them: `Caf&eacute;`).
pub fn decode_entities(s: &str) -> String {
    html_escape::decode_html_entities(s).into_owned()
}

/// Whitespace runs as one space, trimmed.
fn collapse(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A page's main content, as a reader view shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Article {
    /// The article's title (from its metadata or headings).
    pub title: String,
    /// Its author, when the page names one.
    pub byline: Option<String>,
    /// When it was published, as the page states it (usually RFC 3339).
    pub published: Option<String>,
    /// The site's name.
    pub site_name: Option<String>,
    /// The main text: navigation, ads, comments and boilerplate left out.
    pub text: String,
}

/// Elements beyond which a page is not parsed for its content (a runaway
/// page costs bounded work).
const MAX_ELEMENTS: usize = 20_000;

/// The main content of the page at `url` (Readability's algorithm), or why
/// there is none: a page with too little text, e.g. one that builds its
/// content with script, gives an error, not an empty article.
pub fn article(html: &str, url: &str) -> Result<Article, String> {
    Page::parse(html).article(url)
}

impl Page {
    /// [`article`] of this page, parsed once: read what else the page
    /// offers (its canonical link) first, since Readability takes the
    /// document apart.
    pub fn article(self, url: &str) -> Result<Article, String> {
        let cfg = dom_smoothie::Config {
            max_elements_to_parse: MAX_ELEMENTS,
            text_mode: dom_smoothie::TextMode::Formatted,
            ..Default::default()
        };
        let mut r = dom_smoothie::Readability::with_document(self.doc, Some(url), Some(cfg))
            .map_err(|e| format!("reading {url}: {e}"))?;
        let a = r
            .parse()
            .map_err(|e| format!("no main content at {url}: {e}"))?;
        let text = a
            .text_content
            .lines()
            .map(collapse)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("\n");
        if text.is_empty() {
            return Err(format!("no main content at {url}: the page has no text"));
        }
        let nonempty = |s: Option<String>| s.map(|s| collapse(&s)).filter(|s| !s.is_empty());
        Ok(Article {
            title: collapse(&a.title),
            byline: nonempty(a.byline),
            published: nonempty(a.published_time),
            site_name: nonempty(a.site_name),
            text,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parser_reads_what_string_search_missed() {
        let p = Page::parse(
            r#"<!doctype html><html><head>
            <!-- <meta property="og:title" content="commented out"> -->
            <TITLE>  Aria &amp; Co
              headphones </TITLE>
            <meta content='Aria &quot;Pro&quot;' property=og:title>
            <meta NAME="Description" content="Noise cancelling">
            <link rel="alternate canonical" href=" /p/aria ">
            <script type="application/ld+json; charset=utf-8">{"@type": "Product"}</script>
            <script>var x = "<meta property='og:type' content='product'>";</script>
            </head><body></body></html>"#,
        );
        assert_eq!(p.title().as_deref(), Some("Aria & Co headphones"));
        let meta = p.meta();
        assert_eq!(meta["og:title"], "Aria \"Pro\"");
        assert_eq!(meta["description"], "Noise cancelling");
        assert!(!meta.contains_key("og:type"), "{meta:?}");
        assert_eq!(p.canonical().as_deref(), Some("/p/aria"));
        assert_eq!(p.json_ld(), vec![r#"{"@type": "Product"}"#.to_string()]);
    }

    #[test]
    fn fragment_text_drops_tags_scripts_and_decodes_entities() {
        assert_eq!(
            text("<p>Love the <b>Aria</b>&nbsp;&mdash; 10/10</p><script>alert(1)</script><p>Buy&#x21;</p>"),
            "Love the Aria \u{2014} 10/10 Buy!"
        );
        assert_eq!(text("plain   words\n"), "plain words");
        assert_eq!(decode_entities("Caf&eacute; &amp; more"), "Café & more");
    }

    #[test]
    fn an_article_is_its_main_text_without_the_boilerplate() {
        let body = "The Aria headphones kept their charge for a whole week of commuting. \
                    Their noise cancelling made the underground quiet enough to read. ";
        let html = format!(
            r#"<html><head><title>Aria headphones, a month in | Sound Blog</title>
            <meta name="author" content="Sam Reviewer">
            <meta property="article:published_time" content="2026-11-20T09:30:00Z">
            <meta property="og:site_name" content="Sound Blog"></head>
            <body><nav><a href="/">Home</a> <a href="/about">About</a></nav>
            <article><h1>Aria headphones, a month in</h1><p>{}</p><p>{}</p></article>
            <footer>Copyright Sound Blog. Subscribe to our newsletter.</footer></body></html>"#,
            body.repeat(3),
            body.repeat(2)
        );
        let a = article(&html, "https://blog.example/aria").expect("article");
        // The site's name after the separator is not part of the title.
        assert_eq!(a.title, "Aria headphones, a month in");
        assert_eq!(a.byline.as_deref(), Some("Sam Reviewer"));
        assert_eq!(a.published.as_deref(), Some("2026-11-20T09:30:00Z"));
        assert_eq!(a.site_name.as_deref(), Some("Sound Blog"));
        assert!(
            a.text.contains("kept their charge for a whole week"),
            "{a:?}"
        );
        assert!(!a.text.contains("Subscribe"), "{a:?}");
        assert!(!a.text.contains("About"), "{a:?}");
        let empty = article(
            "<html><body><div id=app></div><script>render()</script></body></html>",
            "https://shop.example/app",
        );
        assert!(empty.is_err(), "{empty:?}");
    }
}
