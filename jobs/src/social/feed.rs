//! RSS 0.9x/2.0, RSS 1.0 (RDF) and Atom feeds (YouTube's included) read
//! with an XML reader: each item or entry's link, title, text, author,
//! dates and, for YouTube, its media statistics.

use chrono::{DateTime, Utc};
use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

/// One item (RSS) or entry (Atom).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Entry {
    /// `guid` / `id`.
    pub id: String,
    /// Title.
    pub title: String,
    /// The item's link (Atom: the `alternate` one).
    pub link: Option<String>,
    /// `description` / `summary`.
    pub summary: String,
    /// `content:encoded` / `content`.
    pub content: String,
    /// `media:description` (YouTube).
    pub media_description: String,
    /// `author`, `dc:creator` or `author/name`.
    pub author: String,
    /// `pubDate`, `published` or `dc:date`.
    pub published: Option<DateTime<Utc>>,
    /// `updated`.
    pub updated: Option<DateTime<Utc>>,
    /// `media:statistics/@views`.
    pub views: Option<i64>,
    /// `media:starRating/@count`.
    pub likes: Option<i64>,
    published_raw: String,
    updated_raw: String,
}

#[derive(Clone, Copy)]
enum Field {
    Id,
    Title,
    Link,
    Summary,
    Content,
    Media,
    Author,
    Published,
    Updated,
}

fn name_of(e: &BytesStart<'_>) -> String {
    String::from_utf8_lossy(e.name().as_ref()).to_ascii_lowercase()
}

/// The field the text at the top of `stack` (names below the item) fills.
fn field_of(stack: &[String]) -> Option<Field> {
    let top = stack.last()?.as_str();
    let parent = stack.len().checked_sub(2).map(|i| stack[i].as_str());
    let direct = matches!(parent, Some("item" | "entry"));
    let f = match top {
        "title" if direct => Field::Title,
        "link" if direct => Field::Link,
        "guid" | "id" if direct => Field::Id,
        "description" if direct => Field::Summary,
        "summary" if direct => Field::Summary,
        "content:encoded" => Field::Content,
        "content" if direct => Field::Content,
        "media:description" => Field::Media,
        "author" | "dc:creator" if direct => Field::Author,
        "name" if parent == Some("author") => Field::Author,
        "pubdate" | "published" | "dc:date" if direct => Field::Published,
        "updated" if direct => Field::Updated,
        _ => {
            // XHTML inside an Atom summary or content.
            let below = stack.iter().rposition(|n| n == "item" || n == "entry")?;
            return stack[below..].iter().find_map(|n| match n.as_str() {
                "content" => Some(Field::Content),
                "summary" => Some(Field::Summary),
                _ => None,
            });
        }
    };
    Some(f)
}

fn push(entry: &mut Entry, field: Field, text: &str) {
    let s = match field {
        Field::Id => &mut entry.id,
        Field::Title => &mut entry.title,
        Field::Link => {
            let t = text.trim();
            if entry.link.is_none() && !t.is_empty() {
                entry.link = Some(t.to_string());
            } else if let Some(l) = entry.link.as_mut() {
                l.push_str(t);
            }
            return;
        }
        Field::Summary => &mut entry.summary,
        Field::Content => &mut entry.content,
        Field::Media => &mut entry.media_description,
        Field::Author => &mut entry.author,
        Field::Published => &mut entry.published_raw,
        Field::Updated => &mut entry.updated_raw,
    };
    s.push_str(text);
}

fn attr(e: &BytesStart<'_>, name: &str) -> Option<String> {
    e.try_get_attribute(name)
        .ok()
        .flatten()
        .and_then(|a| a.unescape_value().ok().map(|v| v.into_owned()))
}

/// Attributes that carry an entry's data: Atom links, YouTube statistics.
fn attributes(entry: &mut Entry, name: &str, e: &BytesStart<'_>, direct: bool) {
    match name {
        "link" if direct => {
            let rel = attr(e, "rel");
            if let (Some(href), true) = (
                attr(e, "href"),
                rel.as_deref().is_none_or(|r| r == "alternate"),
            ) {
                if entry.link.is_none() {
                    entry.link = Some(href);
                }
            }
        }
        "media:statistics" => entry.views = attr(e, "views").and_then(|v| v.parse().ok()),
        "media:starrating" => entry.likes = attr(e, "count").and_then(|v| v.parse().ok()),
        _ => {}
    }
}

fn time(raw: &str) -> Option<DateTime<Utc>> {
    let t = raw.trim();
    DateTime::parse_from_rfc3339(t)
        .or_else(|_| DateTime::parse_from_rfc2822(t))
        .ok()
        .map(|d| d.with_timezone(&Utc))
}

fn entity(name: &str) -> &'static str {
    match name {
        "amp" => "&",
        "lt" => "<",
        "gt" => ">",
        "quot" => "\"",
        "apos" => "'",
        "nbsp" => " ",
        _ => "",
    }
}

/// The entries of an RSS or Atom document, in document order.
pub fn parse(body: &[u8]) -> Result<Vec<Entry>, String> {
    let text = String::from_utf8_lossy(body);
    let mut r = Reader::from_str(&text);
    let mut stack: Vec<String> = Vec::new();
    let mut cur: Option<Entry> = None;
    let mut root: Option<String> = None;
    let mut out = Vec::new();
    loop {
        let ev = r
            .read_event()
            .map_err(|e| format!("not well-formed XML (byte {}): {e}", r.buffer_position()))?;
        let pushed: Option<String> = match ev {
            Event::Eof => break,
            Event::Start(ref e) | Event::Empty(ref e) => {
                let name = name_of(e);
                if root.is_none() {
                    if !matches!(name.as_str(), "rss" | "rdf:rdf" | "feed") {
                        return Err(format!("not an RSS or Atom feed (its root is <{name}>)"));
                    }
                    root = Some(name.clone());
                }
                let direct = matches!(stack.last().map(String::as_str), Some("item" | "entry"));
                if name == "item" || name == "entry" {
                    if matches!(ev, Event::Start(_)) {
                        cur = Some(Entry::default());
                    }
                } else if let Some(c) = cur.as_mut() {
                    attributes(c, &name, e, direct);
                }
                if matches!(ev, Event::Start(_)) {
                    stack.push(name);
                }
                None
            }
            Event::End(_) => {
                if let Some(name) = stack.pop() {
                    if name == "item" || name == "entry" {
                        if let Some(mut c) = cur.take() {
                            c.published = time(&c.published_raw);
                            c.updated = time(&c.updated_raw);
                            out.push(c);
                        }
                    }
                }
                None
            }
            Event::Text(t) => Some(t.decode().map_err(|e| e.to_string())?.into_owned()),
            Event::CData(t) => Some(t.decode().map_err(|e| e.to_string())?.into_owned()),
            Event::GeneralRef(g) => Some(match g.resolve_char_ref() {
                Ok(Some(c)) => c.to_string(),
                _ => entity(&g.decode().map_err(|e| e.to_string())?).to_string(),
            }),
            _ => None,
        };
        if let (Some(text), Some(c)) = (pushed, cur.as_mut()) {
            if let Some(f) = field_of(&stack) {
                push(c, f, &text);
            }
        }
    }
    if root.is_none() {
        return Err("empty document, not a feed".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rss_items_with_entities_and_cdata() {
        let x =
            br#"<?xml version="1.0"?><rss version="2.0" xmlns:dc="http://purl.org/dc/elements/1.1/"
            xmlns:content="http://purl.org/rss/1.0/modules/content/"><channel><title>Blog</title>
            <item><title>Tom &amp; Jerry</title><link>https://a.example/1</link>
            <description>&lt;p&gt;Hello &#8364;5&lt;/p&gt;</description><dc:creator>Ann</dc:creator>
            <content:encoded><![CDATA[<b>Full</b> text]]></content:encoded>
            <pubDate>Mon, 30 Nov 2026 10:00:00 GMT</pubDate></item>
            <item><title>No link</title></item></channel></rss>"#;
        let e = parse(x).unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].title, "Tom & Jerry");
        assert_eq!(e[0].link.as_deref(), Some("https://a.example/1"));
        assert_eq!(e[0].summary, "<p>Hello €5</p>");
        assert_eq!(e[0].content, "<b>Full</b> text");
        assert_eq!(e[0].author, "Ann");
        assert_eq!(
            e[0].published.map(|t| t.to_rfc3339()).as_deref(),
            Some("2026-11-30T10:00:00+00:00")
        );
        assert_eq!(e[1].link, None);
    }

    #[test]
    fn atom_and_youtube_entries() {
        let x = br#"<?xml version="1.0"?><feed xmlns="http://www.w3.org/2005/Atom"
            xmlns:media="http://search.yahoo.com/mrss/"><title>Chan</title>
            <link rel="self" href="https://yt.example/feed"/>
            <entry><id>yt:video:1</id><title>Unboxing</title>
            <link rel="alternate" href="https://www.youtube.com/watch?v=1"/>
            <author><name>Chan</name><uri>https://yt.example/c</uri></author>
            <published>2026-11-01T10:00:00+00:00</published><updated>2026-11-02T10:00:00+00:00</updated>
            <media:group><media:title>Unboxing</media:title><media:description>All about it</media:description>
            <media:community><media:starRating count="12" average="5.00"/><media:statistics views="345"/></media:community>
            </media:group></entry></feed>"#;
        let e = parse(x).unwrap();
        assert_eq!(e.len(), 1);
        assert_eq!(
            e[0].link.as_deref(),
            Some("https://www.youtube.com/watch?v=1")
        );
        assert_eq!(e[0].author, "Chan");
        assert_eq!(e[0].media_description, "All about it");
        assert_eq!((e[0].views, e[0].likes), (Some(345), Some(12)));
        assert!(e[0].published.is_some() && e[0].updated.is_some());
    }

    #[test]
    fn other_documents_are_refused() {
        assert!(parse(b"<html><body>hi</body></html>")
            .unwrap_err()
            .contains("not an RSS or Atom feed"));
        assert!(parse(b"<rss><channel><item><title>x</titl></item></channel></rss>").is_err());
        assert!(parse(b"").is_err());
    }
}
