//! Errors as people and scripts read them: one line, each cause once, in
//! CROW's terms.
//!
//! An error reaching `main` is a chain: anyhow contexts ("preparing the
//! lake"), CROW's error enums, and often a DataFusion error at the bottom.
//! Printing the chain as it is (`{e:#}`) repeats causes, because many errors
//! embed their source in their own message (`delta table `x`: <source>`,
//! DataFusion's `Diagnostic` and `SQL` variants, CROW's transparent
//! wrappers) and then report the source again. And DataFusion speaks its
//! own language: `Error during planning: table 'datafusion.public.x' not
//! found`.
//!
//! [`one_line`] walks the chain once: each link contributes only the text
//! that is its own (its message minus the message of its source), a link
//! already said is skipped, and the first DataFusion error ends the walk
//! with a sentence in the user's terms ([`query_error`]): an unknown table
//! with the tables there are, a syntax error with its line and column, an
//! unknown column with the columns there are. The whole chain, as it is,
//! is logged at debug level (`CROW_LOG=debug`) by `main`.

use std::error::Error as StdError;
use std::sync::Arc;

use crow_lake::datafusion::common::SchemaError;
use crow_lake::datafusion::error::DataFusionError;
use crow_lake::datafusion::sql::sqlparser::parser::ParserError;

/// The exit status of a failure that running the same command again,
/// later, can fix (storage unreachable or throttled, a commit race, a lost
/// job lease): `EX_TEMPFAIL` of sysexits(3), which cron wrappers and
/// orchestrators read as "retry".
pub const TEMPFAIL_EXIT: u8 = 75;

/// Whether `err` is a failure worth retrying unchanged: the first CROW
/// error in its chain (a job's or the lake's) says so by its kind. Anything
/// else (bad input, a missing table, corrupt data, a bug) is not.
pub fn is_retryable(err: &anyhow::Error) -> bool {
    for cause in err.chain() {
        if let Some(e) = cause.downcast_ref::<crow_jobs::Error>() {
            return e.is_retryable();
        }
        if let Some(e) = cause.downcast_ref::<crow_lake::Error>() {
            return matches!(
                e.kind(),
                crow_lake::ErrorKind::Conflict | crow_lake::ErrorKind::Unavailable
            );
        }
    }
    false
}

/// Columns listed in an unknown-column message before "…".
const MAX_LISTED: usize = 40;

/// `err` as one line (no `error:` prefix, no newline).
pub fn one_line(err: &anyhow::Error) -> String {
    let chain: Vec<&(dyn StdError + 'static)> = err.chain().collect();
    let mut parts: Vec<String> = Vec::new();
    for (i, cause) in chain.iter().enumerate() {
        if let Some(df) = datafusion_error(*cause) {
            parts.push(query_error(df));
            break;
        }
        let mut own = cause.to_string();
        if let Some(next) = chain.get(i + 1) {
            let next = next.to_string();
            if !next.is_empty() && own.contains(&next) {
                own = own.replace(&next, "");
            }
        }
        let own = own
            .trim()
            .trim_end_matches(|c: char| c == ':' || c.is_whitespace())
            .to_string();
        if own.is_empty() || parts.iter().any(|p| p.contains(&own)) {
            continue;
        }
        parts.push(own);
    }
    if parts.is_empty() {
        parts.push(err.to_string());
    }
    tidy(&s3_answer(&parts.join(": ")))
}

/// An S3 server's error answer is an XML document, which the object store
/// puts whole into its error: keep its code and message, and say what to
/// do about the one a new lake meets first (a bucket that does not exist).
fn s3_answer(text: &str) -> String {
    let Some(at) = text.find("<?xml").or_else(|| text.find("<Error>")) else {
        return text.to_string();
    };
    let field = |name: &str| {
        let open = format!("<{name}>");
        let start = text[at..].find(&open)? + at + open.len();
        let len = text[start..].find(&format!("</{name}>"))?;
        Some(&text[start..start + len])
    };
    let head = text[..at].trim_end();
    let Some(code) = field("Code") else {
        return text.to_string();
    };
    let mut out = format!("{head} {code}");
    if let Some(message) = field("Message") {
        out.push_str(&format!(" ({message})"));
    }
    if code == "NoSuchBucket" {
        let bucket = field("BucketName").map_or(String::new(), |b| format!(" `{b}`"));
        out.push_str(&format!(
            ": create the bucket{bucket} first, or check the lake URI (`--lake`, `lake.uri`)"
        ));
    }
    out
}

/// A wrong command line (clap's error) as one line: the message, the
/// possible values or tip clap adds, and which `--help` to read — not the
/// usage block. `command` is the command as typed so far (`crow sql`).
pub fn argument_error(e: &clap::Error, command: &str) -> String {
    if e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        return format!("`{command}` needs a command (see `{command} --help`)");
    }
    let mut out = String::new();
    let mut in_usage = false;
    for line in e.to_string().lines() {
        let line = line.trim();
        if line.is_empty() {
            in_usage = false;
            continue;
        }
        if line.starts_with("Usage:") {
            in_usage = true;
        }
        if in_usage || line.starts_with("For more information, try ") {
            continue;
        }
        let line = line.strip_prefix("error: ").unwrap_or(line);
        // `the following required arguments were not provided:` + `<QUERY>`,
        // `invalid value 'x' for '--format'` + `[possible values: …]`.
        let sep = if out.is_empty() {
            ""
        } else if out.ends_with(':') || line.starts_with('[') {
            " "
        } else {
            "; "
        };
        out.push_str(sep);
        out.push_str(line);
    }
    format!("{out} (see `{command} --help`)")
}

/// The (sub)command named on a command line: `crow jobs run` from `crow
/// --lake x jobs run sessionize --from …`.
pub fn command_path(root: &clap::Command, args: impl IntoIterator<Item = String>) -> String {
    let mut path = vec![root.get_name().to_string()];
    let mut cmd = root;
    for arg in args.into_iter().skip(1) {
        if arg.starts_with('-') {
            continue;
        }
        match cmd.find_subcommand(&arg) {
            Some(sub) => {
                path.push(sub.get_name().to_string());
                cmd = sub;
            }
            // An option's value (`--lake x`) or a positional argument.
            None if cmd.has_subcommands() => continue,
            None => break,
        }
    }
    path.join(" ")
}

/// Whether `err` comes from writing to a pipe whose reader has gone (`crow
/// … | head`): not a failure of the command, so nothing to report.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        let kind = cause
            .downcast_ref::<std::io::Error>()
            .map(std::io::Error::kind)
            .or_else(|| {
                cause
                    .downcast_ref::<serde_json::Error>()
                    .and_then(serde_json::Error::io_error_kind)
            });
        kind == Some(std::io::ErrorKind::BrokenPipe)
    })
}

/// The DataFusion error a link of the chain is, or wraps transparently.
fn datafusion_error<'a>(cause: &'a (dyn StdError + 'static)) -> Option<&'a DataFusionError> {
    if let Some(e) = cause.downcast_ref::<DataFusionError>() {
        return Some(e);
    }
    if let Some(e) = cause.downcast_ref::<Arc<DataFusionError>>() {
        return Some(e.as_ref());
    }
    match cause.downcast_ref::<crow_lake::Error>() {
        Some(crow_lake::Error::DataFusion(e)) => Some(e.as_ref()),
        _ => None,
    }
}

/// A query's failure in the user's terms: what was wrong with the query,
/// not which DataFusion stage noticed it.
pub fn query_error(e: &DataFusionError) -> String {
    let root = e.find_root();
    match root {
        DataFusionError::SQL(parse, _) => syntax_error(parse),
        DataFusionError::SchemaError(schema, _) => match schema.as_ref() {
            SchemaError::FieldNotFound {
                field,
                valid_fields,
            } => unknown_column(field, valid_fields),
            other => other.to_string(),
        },
        DataFusionError::Plan(msg) => {
            if let Some(table) = msg
                .strip_prefix("table '")
                .and_then(|m| m.strip_suffix("' not found"))
            {
                unknown_table(table)
            } else if [
                "DDL not supported",
                "DML not supported",
                "Statement not supported",
            ]
            .iter()
            .any(|p| msg.starts_with(p))
            {
                format!("only read-only queries can run here ({msg})")
            } else {
                msg.clone()
            }
        }
        DataFusionError::NotImplemented(msg) => format!("not supported: {msg}"),
        DataFusionError::ResourcesExhausted(msg) => {
            format!("the query needs more memory than it may use ({msg})")
        }
        other => other.message().into_owned(),
    }
}

/// `datafusion.public."Foo"` → `Foo`: the name as the user wrote it.
fn unknown_table(reference: &str) -> String {
    let name = reference
        .rsplit('.')
        .next()
        .unwrap_or(reference)
        .trim_matches('"');
    let tables: Vec<&str> = crow_schemas::ALL_TABLES.iter().map(|d| d.name).collect();
    format!("no table named {name} (tables: {})", tables.join(", "))
}

fn unknown_column(
    field: &crow_lake::datafusion::common::Column,
    valid: &[crow_lake::datafusion::common::Column],
) -> String {
    let name = match &field.relation {
        Some(r) => format!("{}.{}", r.table(), field.name),
        None => field.name.clone(),
    };
    let mut tables: Vec<&str> = valid
        .iter()
        .filter_map(|c| c.relation.as_ref().map(|r| r.table()))
        .collect();
    tables.dedup();
    let one_table = tables.len() == 1 && valid.iter().all(|c| c.relation.is_some());
    let mut names: Vec<String> = valid
        .iter()
        .map(|c| match &c.relation {
            Some(r) if !one_table => format!("{}.{}", r.table(), c.name),
            _ => c.name.clone(),
        })
        .collect();
    if names.len() > MAX_LISTED {
        let more = names.len() - MAX_LISTED;
        names.truncate(MAX_LISTED);
        names.push(format!("… {more} more"));
    }
    let place = if one_table {
        format!(" in {}", tables[0])
    } else {
        String::new()
    };
    if names.is_empty() {
        format!("no column named {name}{place}")
    } else {
        format!(
            "no column named {name}{place} (columns: {})",
            names.join(", ")
        )
    }
}

/// sqlparser's `Expected: an SQL statement, found: selec at Line: 1,
/// Column: 1` → `SQL syntax: expected a statement at line 1, column 1, found
/// "selec"`.
fn syntax_error(e: &ParserError) -> String {
    let text = match e {
        ParserError::ParserError(s) | ParserError::TokenizerError(s) => s.as_str(),
        ParserError::RecursionLimitExceeded => {
            return "SQL syntax: the query nests too deeply".into()
        }
    };
    let (what, at) = match text.rsplit_once(" at Line: ") {
        Some((what, pos)) => match pos.split_once(", Column: ") {
            Some((line, col)) => (what, Some(format!("at line {line}, column {col}"))),
            None => (text, None),
        },
        None => (text, None),
    };
    let at = at.map(|a| format!(" {a}")).unwrap_or_default();
    if let Some((expected, found)) = what
        .strip_prefix("Expected: ")
        .and_then(|w| w.split_once(", found: "))
    {
        let expected = match expected {
            "an SQL statement" => "a statement".to_string(),
            // A token: `)` → `")"`.
            e if !e.contains(' ') && !e.chars().any(char::is_alphanumeric) => format!("\"{e}\""),
            e => e.to_string(),
        };
        let found = match found {
            "EOF" => "the end of the query".to_string(),
            f => format!("\"{f}\""),
        };
        return format!("SQL syntax: expected {expected}{at}, found {found}");
    }
    let mut chars = what.chars();
    let what = match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => String::new(),
    };
    format!("SQL syntax: {what}{at}")
}

/// One line: no newlines or runs of spaces; no DataFusion catalog prefix.
fn tidy(s: &str) -> String {
    s.replace("datafusion.public.", "")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_error(sql: &str) -> anyhow::Error {
        let dialect = crow_lake::datafusion::sql::sqlparser::dialect::GenericDialect {};
        match crow_lake::datafusion::sql::sqlparser::parser::Parser::parse_sql(&dialect, sql) {
            Ok(_) => panic!("{sql} parses"),
            Err(e) => anyhow::Error::from(crow_lake::Error::from(DataFusionError::SQL(
                Box::new(e),
                None,
            ))),
        }
    }

    #[test]
    fn syntax_errors_name_the_place_once() {
        assert_eq!(
            one_line(&parse_error("selec 1")),
            "SQL syntax: expected a statement at line 1, column 1, found \"selec\""
        );
        assert_eq!(
            one_line(&parse_error("select 1 from")),
            "SQL syntax: expected identifier, found the end of the query"
        );
        assert_eq!(
            one_line(&parse_error("select (1 from t")),
            "SQL syntax: expected \")\" at line 1, column 11, found \"from\""
        );
    }

    #[test]
    fn unknown_tables_are_named_as_written() {
        let e = DataFusionError::Plan("table 'datafusion.public.nope' not found".into());
        let e = e.with_diagnostic(crow_lake::datafusion::common::Diagnostic::new_error(
            "table 'datafusion.public.nope' not found",
            None,
        ));
        let line = one_line(&anyhow::Error::from(crow_lake::Error::from(e)).context("running"));
        assert!(
            line.starts_with("running: no table named nope (tables: "),
            "{line}"
        );
        assert!(
            !line.contains("datafusion") && !line.contains("planning"),
            "{line}"
        );
    }

    #[test]
    fn a_message_that_embeds_its_source_is_said_once() {
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl std::fmt::Display for Outer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "reading x: {}", self.0)
            }
        }
        impl StdError for Outer {
            fn source(&self) -> Option<&(dyn StdError + 'static)> {
                Some(&self.0)
            }
        }
        let e =
            anyhow::Error::from(Outer(std::io::Error::other("disk on fire"))).context("loading");
        assert_eq!(one_line(&e), "loading: reading x: disk on fire");
    }

    #[test]
    fn an_s3_error_document_is_said_in_words() {
        let store = "Generic S3 error: Error performing list request: Error performing GET \
            http://127.0.0.1:9000/nobucket?list-type=2 in 10ms - Server returned non-2xx \
            status code: 404 Not Found: <?xml version=\"1.0\" encoding=\"utf-8\"?>\n\
            <Error><Code>NoSuchBucket</Code><Message>The specified bucket does not \
            exist</Message><BucketName>nobucket</BucketName><RequestId>X1</RequestId></Error>";
        let line = one_line(&anyhow::anyhow!("{store}"));
        assert_eq!(
            line,
            "Generic S3 error: Error performing list request: Error performing GET \
             http://127.0.0.1:9000/nobucket?list-type=2 in 10ms - Server returned non-2xx \
             status code: 404 Not Found: NoSuchBucket (The specified bucket does not exist): \
             create the bucket `nobucket` first, or check the lake URI (`--lake`, `lake.uri`)"
        );
        let denied = "403 Forbidden: <Error><Code>AccessDenied</Code><Message>Access \
            Denied</Message></Error>";
        assert_eq!(
            one_line(&anyhow::anyhow!("{denied}")),
            "403 Forbidden: AccessDenied (Access Denied)"
        );
        assert_eq!(one_line(&anyhow::anyhow!("a < b")), "a < b");
    }

    #[test]
    fn broken_pipes_are_recognised_through_serde() {
        let io = std::io::Error::from(std::io::ErrorKind::BrokenPipe);
        assert!(is_broken_pipe(&anyhow::Error::from(serde_json::Error::io(
            io
        ))));
        let other = std::io::Error::from(std::io::ErrorKind::NotFound);
        assert!(!is_broken_pipe(&anyhow::Error::from(other)));
    }

    #[test]
    fn retryable_failures_are_told_apart_from_ones_to_fix() {
        let outage = || {
            crow_lake::Error::from(crow_lake::object_store::Error::Generic {
                store: "S3",
                source: "503 Slow Down".into(),
            })
        };
        // A storage outage, however deep in the chain, and through a
        // backfill step that stopped on it: retry.
        let e = anyhow::Error::from(outage()).context("preparing the lake");
        assert!(is_retryable(&e));
        let step = crow_jobs::Error::BackfillStopped {
            step: "enrich".into(),
            source: Box::new(outage().into()),
        };
        assert!(is_retryable(
            &anyhow::Error::from(step).context("backfilling")
        ));
        assert!(is_retryable(&anyhow::Error::from(
            crow_jobs::Error::LeaseLost {
                job: "patterns".into()
            }
        )));
        // Input to fix, a missing table, a bug: do not retry unchanged.
        let bad = crow_jobs::Error::BackfillStopped {
            step: "billing".into(),
            source: Box::new(crow_jobs::Error::Invalid("month `x`".into())),
        };
        assert!(!is_retryable(&anyhow::Error::from(bad)));
        assert!(!is_retryable(&anyhow::Error::from(
            crow_lake::Error::UnknownTable("nope".into())
        )));
        assert!(!is_retryable(&anyhow::anyhow!("--from is after --to")));
    }
}
