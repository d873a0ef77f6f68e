//! The README walkthrough: every shell command of README.md's ```sh blocks,
//! in order, on a fresh machine's view — an empty working folder (so the
//! default lake `./crow-data`), the real `crow` binary, `crow serve` as a
//! server, and `curl` for the HTTP examples — so the document cannot drift
//! from the binary. Placeholders a reader fills in are filled the same way:
//! `wk_…` with the write key the last `orgs create` printed, `$KEY` with the
//! secret the last `keys create` printed, `$NEXT` with the last answer's
//! `next_cursor`, `cht_…` with the last chat id answered, and the default
//! address with the server's.
//!
//! Left out, by design: `scripts/test.sh` (this is it) and the R2 block
//! (it needs an R2 account).

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::support::{crow_bin, Backend, Server};

/// The commands of the README's ```sh blocks: comments dropped, lines
/// continued by `\` or by an open quote joined.
fn readme_commands(readme: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_block = false;
    let mut pending = String::new();
    // A quoted newline stays one; a `\`-continued line joins with a space.
    let mut joiner = "\n";
    for line in readme.lines() {
        if line.starts_with("```") {
            in_block = line == "```sh";
            continue;
        }
        if !in_block {
            continue;
        }
        let line = strip_comment(line);
        if pending.is_empty() && line.trim().is_empty() {
            continue;
        }
        if !pending.is_empty() {
            pending.push_str(joiner);
        }
        pending.push_str(if joiner == " " {
            line.trim()
        } else {
            line.trim_end()
        });
        joiner = "\n";
        let open_quote = quotes_open(&pending);
        if let Some(p) = pending.strip_suffix('\\') {
            pending = p.trim_end().to_string();
            joiner = " ";
            continue;
        }
        if open_quote {
            continue;
        }
        out.push(std::mem::take(&mut pending));
    }
    out
}

/// `line` without a trailing `# comment` (a `#` outside quotes, after a
/// space or at the start).
fn strip_comment(line: &str) -> &str {
    let (mut single, mut double) = (false, false);
    let bytes = line.as_bytes();
    for (i, &c) in bytes.iter().enumerate() {
        match c {
            b'\'' if !double => single = !single,
            b'"' if !single => double = !double,
            b'#' if !single && !double && (i == 0 || bytes[i - 1] == b' ') => return &line[..i],
            _ => {}
        }
    }
    line
}

fn quotes_open(text: &str) -> bool {
    let (mut single, mut double) = (false, false);
    for c in text.chars() {
        match c {
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            _ => {}
        }
    }
    single || double
}

#[test]
fn readme_commands_parse_as_a_reader_would_type_them() {
    let cmds = readme_commands(
        "text\n```sh\ncrow a   # note\ncurl -d '{\n  \"x\": 1\n}'\ncurl b \\\n  -H c\n```\n```toml\nx = 1\n```\n",
    );
    assert_eq!(
        cmds,
        ["crow a", "curl -d '{\n  \"x\": 1\n}'", "curl b -H c"]
    );
}

#[test]
fn readme_walkthrough() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .expect("README.md");
    let cmds = readme_commands(&readme);
    assert!(cmds.len() >= 12, "the README's commands: {cmds:#?}");

    let home = tempfile::tempdir().expect("tmp");
    let bin_dir = crow_bin()
        .parent()
        .expect("the binary's folder")
        .to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let lake = home.path().join("crow-data");
    let wal = home.path().join("crow-data/_wal");
    let mut server: Option<Server> = None;
    let (mut write_key, mut key, mut next) = (String::new(), String::new(), String::new());
    let mut invitation = String::new();
    let mut chat = String::new();
    let mut ran = 0;
    for cmd in &cmds {
        if cmd.starts_with("scripts/test.sh")
            || cmd.starts_with("export AWS_")
            || cmd.contains("deploy/crow.r2.toml")
        {
            continue;
        }
        let mut line = cmd.replace("cargo run -p crow-cli -- ", "crow ");
        if line.starts_with("crow serve") {
            if server.is_none() {
                server = Some(Server::start(&Backend::at(&lake), &wal, &[]));
            }
            continue;
        }
        if let Some(s) = &server {
            line = line
                .replace("http://127.0.0.1:8080", &format!("http://{}", s.addr))
                .replace("localhost:8080", &s.addr);
        }
        assert!(
            !line.contains("wk_…") || !write_key.is_empty(),
            "`{line}` needs a write key no earlier command printed"
        );
        line = line.replace("wk_…", &write_key);
        assert!(
            !line.contains("inv_…") || !invitation.is_empty(),
            "`{line}` needs an invitation token no earlier command printed"
        );
        line = line.replace("inv_…", &invitation);
        assert!(
            !line.contains("cht_…") || !chat.is_empty(),
            "`{line}` needs a chat id no earlier command printed"
        );
        line = line.replace("cht_…", &chat);
        let out = Command::new("sh")
            .arg("-c")
            .arg(&line)
            .current_dir(home.path())
            .env("PATH", &path)
            .env("KEY", &key)
            .env("NEXT", &next)
            .env_remove("CROW_CONFIG")
            .env_remove("CROW_LAKE")
            .output()
            .expect("sh");
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(
            out.status.success(),
            "README command failed: {line}\n{stderr}\n{stdout}"
        );
        ran += 1;
        let json: Option<Value> = serde_json::from_str(&stdout).ok();
        if let Some(v) = &json {
            if let Some(k) = v["write_key"].as_str() {
                write_key = k.to_string();
            }
            if let Some(k) = v["secret"].as_str() {
                key = k.to_string();
            }
            if let Some(t) = v["invitation_token"].as_str() {
                invitation = t.to_string();
            }
            if let Some(c) = v["chat"]["id"].as_str() {
                chat = c.to_string();
            }
            if v.get("next_cursor").is_some() {
                next = v["next_cursor"].as_str().unwrap_or("").to_string();
            }
        }
        // What each step promises, checked where the README says it.
        if line == "crow demo" {
            assert!(
                stdout.contains("Top stories of the week")
                    && stdout.contains("Top findings of the week")
                    && stdout.contains("Mobile only: Payment")
                    && stdout.contains("The invoice of"),
                "{stdout}"
            );
        }
        if line.starts_with("curl") {
            let v = json
                .as_ref()
                .unwrap_or_else(|| panic!("`{line}` answers JSON: {stdout}"));
            assert!(
                v.get("error").is_none() && v.get("code").is_none(),
                "`{line}`: {stdout}"
            );
            if line.contains("/v1/track") {
                assert_eq!(v["success"], true, "{stdout}");
                // The README: raw rows in about 2 s.
                let q = "select count(*) as n from raw_web_events where anonymous_id = 'visitor-1'";
                let start = std::time::Instant::now();
                loop {
                    let o = Command::new(crow_bin())
                        .args([
                            "--lake",
                            &lake.display().to_string(),
                            "sql",
                            "--format",
                            "json",
                            q,
                        ])
                        .output()
                        .expect("crow sql");
                    let n: Value = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
                    if n[0]["n"] == 1 {
                        break;
                    }
                    assert!(
                        start.elapsed().as_secs() < 20,
                        "the event never landed: {n}"
                    );
                    std::thread::sleep(std::time::Duration::from_millis(250));
                }
            }
            if line.contains("/api/v1/usage") {
                assert!(
                    v["data"].as_array().is_some_and(|d| !d.is_empty()),
                    "{stdout}"
                );
            }
        }
        if line.contains("/messages") && line.contains("and on mobile?") {
            let v = json.as_ref().unwrap_or_else(|| panic!("{stdout}"));
            let sql = v["messages"][1]["sql"].as_str().unwrap_or("");
            assert!(
                sql.contains("device_type = 'mobile'"),
                "the follow-up uses the chat's first question: {stdout}"
            );
        }
        if line.contains("-X DELETE") && line.contains("/api/v1/chats/") {
            assert_eq!(stdout.trim(), "204", "{line}");
        }
        if line.contains("/api/v1/auth/me") {
            let v = json.as_ref().unwrap_or_else(|| panic!("{stdout}"));
            assert_eq!(
                v["user"]["email"], "ann@example.com",
                "signed in by cookie: {stdout}"
            );
        }
        if line.contains("anonymous_id = 'visitor-1'") {
            assert!(
                stdout.contains("mobile")
                    && stdout.contains("newsletter")
                    && stdout.contains("nw-1001"),
                "the first event, as the README describes it: {stdout}"
            );
        }
    }
    assert!(ran >= 10, "ran {ran} commands");
    assert!(server.is_some(), "the README starts `crow serve`");
}
