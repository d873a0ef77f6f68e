//! Properties of the catalog crawler's robots.txt parser, on generated
//! files: it never panics on any text or path; our agent's rules are the
//! rules of every group naming it (RFC 9309 §2.2.1: several matching groups
//! are combined), else of the `*` groups; a path under one of our
//! Disallows is refused; and the longest matching rule decides, Allow on a
//! tie (§2.2.2), `*` and a final `$` understood — checked against a matcher
//! written here, independently of the parser.
//!
//! Bounded in time: `PROPTEST_CASES` (default 256 per property) sets the
//! number of cases.

use crow_jobs::catalog::Robots;
use proptest::prelude::*;

/// The token the crawler matches `User-agent` lines against.
const TOKEN: &str = "crow";

#[derive(Debug, Clone)]
struct Group {
    agents: Vec<String>,
    /// (allow, pattern)
    rules: Vec<(bool, String)>,
}

/// Whether `pat` (with `*` for any run of characters and a final `$`
/// anchoring the end) matches the start of `path`: backtracking, by bytes.
fn matches(pat: &[u8], path: &[u8]) -> bool {
    match pat.split_first() {
        None => true,
        Some((b'$', [])) => path.is_empty(),
        Some((b'*', rest)) => (0..=path.len()).any(|i| matches(rest, &path[i..])),
        Some((c, rest)) => path.first() == Some(c) && matches(rest, &path[1..]),
    }
}

/// RFC 9309's decision for `path` under `rules`: the longest matching
/// pattern wins, Allow on a tie; no match allows.
fn expected(rules: &[(bool, String)], path: &str) -> bool {
    let mut best: Option<(usize, bool)> = None;
    for (allow, pat) in rules {
        if matches(pat.as_bytes(), path.as_bytes()) {
            best = match best {
                Some((l, a)) if l > pat.len() || (l == pat.len() && a) => Some((l, a)),
                _ => Some((pat.len(), *allow)),
            };
        }
    }
    best.is_none_or(|(_, allow)| allow)
}

/// The groups as RFC 9309 reads the file: `User-agent` lines with no rule
/// between them (a group without rules, then the next) name one group.
fn as_read(groups: &[Group]) -> Vec<Group> {
    let mut out: Vec<Group> = Vec::new();
    for g in groups {
        match out.last_mut() {
            Some(last) if last.rules.is_empty() => {
                last.agents.extend(g.agents.iter().cloned());
                last.rules.clone_from(&g.rules);
            }
            _ => out.push(g.clone()),
        }
    }
    out
}

/// The rules that apply to us: every group naming our token, else every
/// `*` group.
fn our_rules(groups: &[Group]) -> Vec<(bool, String)> {
    let groups = &as_read(groups)[..];
    let named = |want: &dyn Fn(&str) -> bool| -> Vec<(bool, String)> {
        groups
            .iter()
            .filter(|g| g.agents.iter().any(|a| want(&a.to_lowercase())))
            .flat_map(|g| g.rules.clone())
            .collect()
    };
    let ours = |a: &str| a == TOKEN;
    if groups
        .iter()
        .any(|g| g.agents.iter().any(|a| ours(&a.to_lowercase())))
    {
        named(&ours)
    } else {
        named(&|a| a == "*")
    }
}

/// A short pattern over a small alphabet, so that patterns overlap.
fn pattern() -> impl Strategy<Value = String> {
    ("/[ab/]{0,4}", prop::option::of("[ab/]{0,2}"), any::<bool>()).prop_map(
        |(head, star, anchored)| {
            let mut p = head;
            if let Some(tail) = star {
                p.push('*');
                p.push_str(&tail);
            }
            if anchored {
                p.push('$');
            }
            p
        },
    )
}

fn path() -> impl Strategy<Value = String> {
    "/[ab/]{0,7}"
}

fn group() -> impl Strategy<Value = Group> {
    let agent = prop_oneof![
        Just("crow".to_string()),
        Just("CROW".to_string()),
        Just("*".to_string()),
        Just("googlebot".to_string()),
        Just("Bingbot".to_string()),
    ];
    (
        prop::collection::vec(agent, 1..=2),
        prop::collection::vec((any::<bool>(), pattern()), 0..5),
    )
        .prop_map(|(agents, rules)| Group { agents, rules })
}

/// The file: keys in any case, spaces around the colon, comments, blank
/// lines between groups, `\n` or `\r\n`.
fn render(groups: &[Group], crlf: bool, shout: bool) -> String {
    let key = |k: &str| {
        if shout {
            k.to_uppercase()
        } else {
            k.to_string()
        }
    };
    let mut lines = vec![
        "# robots.txt".to_string(),
        "Sitemap: https://shop.example/s.xml".into(),
    ];
    for g in groups {
        for a in &g.agents {
            lines.push(format!("{}: {a}", key("User-agent")));
        }
        for (allow, p) in &g.rules {
            let k = if *allow { "Allow" } else { "Disallow" };
            lines.push(format!("{} :{p}  # a rule", key(k)));
        }
        lines.push(String::new());
    }
    lines.join(if crlf { "\r\n" } else { "\n" })
}

proptest! {
    #[test]
    fn parse_and_allowed_never_panic(text in "\\PC{0,200}", lines in prop::collection::vec("(?i:(user-agent|allow|disallow|crawl-delay|sitemap)) ?: ?[^\n]{0,20}", 0..12), p in "\\PC{0,30}") {
        for text in [text, lines.join("\n")] {
            let r = Robots::parse(&text, TOKEN);
            let _ = r.allowed(&p);
            let _ = r.allowed("/");
        }
    }

    #[test]
    fn the_longest_matching_rule_of_our_groups_decides(
        groups in prop::collection::vec(group(), 0..4),
        paths in prop::collection::vec(path(), 1..16),
        crlf in any::<bool>(),
        shout in any::<bool>(),
    ) {
        let text = render(&groups, crlf, shout);
        let r = Robots::parse(&text, TOKEN);
        let rules = our_rules(&groups);
        // Every rule's own literal text is a path too (with `*` and `$`
        // dropped), so that each rule matches at least one path asked about.
        let literal = rules.iter().map(|(_, p)| p.replace(['*', '$'], ""));
        for p in paths.into_iter().chain(literal) {
            prop_assert_eq!(r.allowed(&p), expected(&rules, &p), "{} under\n{}", p, text);
        }
    }

    #[test]
    fn a_path_under_our_disallow_is_refused(
        prefixes in prop::collection::vec("/[ab/]{0,4}", 1..4),
        suffix in "[ab/?=]{0,6}",
        split in any::<bool>(),
        which in any::<prop::sample::Index>(),
    ) {
        // Everyone else may crawl everything; our Disallows are plain
        // prefixes, given in one group or spread over two.
        let mut groups = vec![Group { agents: vec!["*".into()], rules: vec![(true, "/".into())] }];
        let rules: Vec<(bool, String)> = prefixes.iter().map(|p| (false, p.clone())).collect();
        if split && rules.len() > 1 {
            let (a, b) = rules.split_at(1);
            groups.push(Group { agents: vec!["crow".into()], rules: a.to_vec() });
            groups.push(Group { agents: vec!["googlebot".into()], rules: vec![(false, "/".into())] });
            groups.push(Group { agents: vec!["crow".into()], rules: b.to_vec() });
        } else {
            groups.push(Group { agents: vec!["crow".into()], rules });
        }
        let text = render(&groups, false, false);
        let r = Robots::parse(&text, TOKEN);
        let path = format!("{}{suffix}", which.get(&prefixes));
        prop_assert!(!r.allowed(&path), "{} is under a Disallow for us:\n{}", path, text);
    }
}
