//! One negative test per config rule (each checks the key and the line the
//! error names), and positive tests for sizes, durations, defaults, overrides
//! and secret redaction.

use super::*;
use std::net::SocketAddr;

/// A minimal valid config: one loopback listener, one outbox, one user.
/// Tests append to it or replace a piece of it.
const BASE: &str = r#"[[listener]]
name = "local"
addr = "127.0.0.1:2525"

[[upstream]]
name = "outbox"
kind = "outbox"
dir = "var/outbox"

[[user]]
name = "demo"
password_hash = "$argon2id$v=19$m=19456,t=2,p=1$HhmSndMIFnC36bhx5rvSWg$TMuz1DbDMcPtAQI96m13A463eNnAPsdTV9Vrt1TMUsY"
allowed_senders = ["*@example.com"]
"#;

const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$HhmSndMIFnC36bhx5rvSWg$TMuz1DbDMcPtAQI96m13A463eNnAPsdTV9Vrt1TMUsY";

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml_str(text, "test.toml")
}

fn ok(text: &str) -> Config {
    match parse(text) {
        Ok(c) => c,
        Err(e) => panic!("expected a valid config, got: {e}\n--- config ---\n{text}"),
    }
}

/// 1-based line of the first occurrence of `needle` in `text`.
fn line_of(text: &str, needle: &str) -> usize {
    let at = text
        .find(needle)
        .unwrap_or_else(|| panic!("{needle:?} is not in the config:\n{text}"));
    text[..at].matches('\n').count() + 1
}

/// 1-based line of the `nth` (0-based) occurrence of `needle`.
fn line_of_nth(text: &str, needle: &str, nth: usize) -> usize {
    let (at, _) = text
        .match_indices(needle)
        .nth(nth)
        .unwrap_or_else(|| panic!("{needle:?} occurs fewer than {} times", nth + 1));
    text[..at].matches('\n').count() + 1
}

/// Asserts a rule failed on `key` at `line` (among whatever else the file has wrong).
#[track_caller]
fn assert_invalid(text: &str, key: &str, line: usize) {
    match parse(text) {
        Err(e) => {
            let hit = e.problems().into_iter().any(|p| {
                matches!(p, ConfigError::Invalid { line: l, key: k, message, .. }
                    if k == key && *l == line && !message.is_empty())
            });
            assert!(
                hit,
                "expected Invalid {{ key: {key}, line: {line} }}, got:\n{e}\n--- config ---\n{text}"
            );
        }
        Ok(_) => {
            panic!("expected Invalid {{ key: {key}, line: {line} }}, config was accepted:\n{text}")
        }
    }
}

/// Asserts a first-pass error (unknown key, bad value) whose key ends with `key`, at `line`;
/// returns its message.
#[track_caller]
fn assert_parse_error(text: &str, key: &str, line: usize) -> String {
    match parse(text) {
        Err(e) => {
            let found = e.problems().into_iter().find_map(|p| match p {
                ConfigError::Invalid {
                    line: l,
                    key: k,
                    message,
                    ..
                } if *l == line && (k == key || k.ends_with(&format!(".{key}"))) => {
                    Some(message.clone())
                }
                _ => None,
            });
            found.unwrap_or_else(|| {
                panic!("expected an error naming {key} at line {line}, got: {e}")
            })
        }
        Ok(_) => panic!("expected an error naming {key} at line {line}, config was accepted"),
    }
}

/// BASE with `[limits]` (or anything) appended.
fn base_with(extra: &str) -> String {
    format!("{BASE}{extra}")
}

/// BASE plus an smtp upstream whose body is `body`; the user keeps using "outbox".
fn with_smtp_upstream(body: &str) -> String {
    base_with(&format!(
        "\n[[upstream]]\nname = \"provider\"\nkind = \"smtp\"\n{body}"
    ))
    .replace(
        "allowed_senders = [\"*@example.com\"]\n",
        "allowed_senders = [\"*@example.com\"]\nupstream = \"outbox\"\n",
    )
}

mod accounts;
mod cluster;
mod listeners;
mod syntax;
mod upstreams;
mod users;
mod values;
