//! The config rules that catch an operator's mistakes: one test per rule,
//! each checking the key, the line of the key and the words of the message,
//! and a file with several mistakes reporting all of them in one run.

use postern::config::{Config, ConfigError};

const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$HhmSndMIFnC36bhx5rvSWg$TMuz1DbDMcPtAQI96m13A463eNnAPsdTV9Vrt1TMUsY";

/// One loopback listener, one outbox, one user: valid as it is.
fn base() -> String {
    format!(
        r#"[server]
hostname = "relay.example.lan"

[[listener]]
name = "local"
addr = "127.0.0.1:2525"

[[upstream]]
name = "outbox"
kind = "outbox"
dir = "var/outbox"

[[user]]
name = "demo"
password_hash = "{HASH}"
allowed_senders = ["*@example.com"]
"#
    )
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml_str(text, "rules.toml")
}

#[track_caller]
fn ok(text: &str) -> Config {
    parse(text).unwrap_or_else(|e| panic!("expected a valid config, got:\n{e}\n---\n{text}"))
}

/// 1-based line of the first line containing `needle`.
#[track_caller]
fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .map(|i| i + 1)
        .unwrap_or_else(|| panic!("{needle:?} not in:\n{text}"))
}

/// The (line, key, message) of every problem.
#[track_caller]
fn problems(text: &str) -> Vec<(usize, String, String)> {
    match parse(text) {
        Ok(_) => panic!("expected errors, the config was accepted:\n{text}"),
        Err(e) => e
            .problems()
            .into_iter()
            .map(|p| match p {
                ConfigError::Invalid {
                    line, key, message, ..
                } => (*line, key.clone(), message.clone()),
                other => panic!("expected Invalid problems, got {other}"),
            })
            .collect(),
    }
}

/// Asserts exactly one problem, on `key` at `line`, whose message contains every one of `words`.
#[track_caller]
fn assert_one(text: &str, key: &str, line: usize, words: &[&str]) -> String {
    let all = problems(text);
    assert_eq!(
        all.len(),
        1,
        "expected one problem, got {all:#?}\n---\n{text}"
    );
    let (l, k, m) = &all[0];
    assert_eq!((k.as_str(), *l), (key, line), "message: {m}");
    for w in words {
        assert!(m.contains(w), "{m:?} should contain {w:?}");
    }
    m.clone()
}

fn with_user_line(extra: &str) -> String {
    base().replace(
        "allowed_senders = [\"*@example.com\"]\n",
        &format!("allowed_senders = [\"*@example.com\"]\n{extra}\n"),
    )
}

// ------------------------------------------------------------------ networks

#[test]
fn networks_with_host_bits_set_propose_both_readings() {
    let text = with_user_line("networks = [\"192.168.10.23/24\"]");
    assert_one(
        &text,
        "user.networks",
        line_of(&text, "networks ="),
        &["host bits", "\"192.168.10.23/32\"", "\"192.168.10.0/24\""],
    );
}

#[test]
fn networks_accept_a_bare_address_as_one_host() {
    let text = with_user_line("networks = [\"192.168.10.23\", \"fd00::17\", \"10.1.0.0/16\"]");
    let c = ok(&text);
    let nets: Vec<String> = c.users[0]
        .networks
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(nets, ["192.168.10.23/32", "fd00::17/128", "10.1.0.0/16"]);
}

#[test]
fn networks_with_a_bad_entry_say_what_is_expected() {
    let text = with_user_line("networks = [\"192.168.10.300\"]");
    assert_one(
        &text,
        "user.networks",
        line_of(&text, "networks ="),
        &["192.168.10.300", "not an address or a network"],
    );
}

#[test]
fn proxy_from_follows_the_same_rule() {
    let text = base().replace(
        "addr = \"127.0.0.1:2525\"\n",
        "addr = \"127.0.0.1:2525\"\nproxy_protocol = true\nproxy_from = [\"10.1.2.3/8\"]\n",
    );
    assert_one(
        &text,
        "listener.proxy_from",
        line_of(&text, "proxy_from"),
        &["\"10.1.2.3/32\"", "\"10.0.0.0/8\""],
    );
}

// ------------------------------------------------------------------ reachability

#[test]
fn networks_only_user_without_an_optional_listener_is_warned_about() {
    let text = base().replace(
        &format!("password_hash = \"{HASH}\"\n"),
        "networks = [\"192.168.10.23\"]\n",
    );
    let c = ok(&text);
    let w = c
        .warnings
        .iter()
        .find(|w| w.contains("demo") && w.contains("optional"))
        .unwrap_or_else(|| panic!("no warning in {:?}", c.warnings));
    assert!(w.contains("never send"), "{w}");
    assert!(
        w.starts_with(&format!("line {}:", line_of(&text, "networks ="))),
        "{w}"
    );
    // With an optional listener the same user is fine and nothing is said.
    let text = text.replace(
        "addr = \"127.0.0.1:2525\"\n",
        "addr = \"127.0.0.1:2525\"\nauth = \"optional\"\n",
    );
    let c = ok(&text);
    assert!(
        !c.warnings.iter().any(|w| w.contains("optional")),
        "{:?}",
        c.warnings
    );
}

#[test]
fn a_listener_nobody_can_use_is_an_error() {
    let text = base().replace("127.0.0.1:2525", "0.0.0.0:2525");
    assert_one(
        &text,
        "listener.tls",
        line_of(&text, "addr = \"0.0.0.0:2525\""),
        &[
            "cannot be used by anyone",
            "starttls",
            "auth = \"optional\"",
        ],
    );
    // allow_plaintext_auth = true makes it usable (on a trusted segment).
    ok(&text.replace(
        "addr = \"0.0.0.0:2525\"\n",
        "addr = \"0.0.0.0:2525\"\nallow_plaintext_auth = true\n",
    ));
}

#[test]
fn an_empty_hostname_is_an_error() {
    let text = base().replace("hostname = \"relay.example.lan\"", "hostname = \"\"");
    assert_one(
        &text,
        "server.hostname",
        line_of(&text, "hostname"),
        &["must not be empty", "greeting"],
    );
    let text = base().replace(
        "hostname = \"relay.example.lan\"",
        "hostname = \"my relay\"",
    );
    assert_one(
        &text,
        "server.hostname",
        line_of(&text, "hostname"),
        &["space"],
    );
}

#[test]
fn no_user_at_all_is_warned_about() {
    let text = base();
    let text = &text[..text.find("[[user]]").unwrap()];
    let c = ok(text);
    assert!(
        c.warnings.iter().any(|w| w.contains("no [[user]]")),
        "{:?}",
        c.warnings
    );
}

// ------------------------------------------------------------------ effective limits

#[test]
fn effective_limits_are_the_upstreams_caps_when_smaller() {
    let text = base()
        + "\n[[upstream]]\nname = \"small\"\nkind = \"outbox\"\ndir = \"var/small\"\n\
           max_message_size = \"1MiB\"\nmax_recipients = 5\n";
    let text = text.replace(
        "allowed_senders = [\"*@example.com\"]\n",
        "allowed_senders = [\"*@example.com\"]\nupstream = \"small\"\n[user.limits]\n\
         max_message_size = \"20MiB\"\nmax_recipients = 100\n",
    );
    let c = ok(&text);
    let e = c.effective_limits(&c.users[0]);
    assert_eq!((e.max_message_size, e.max_recipients), (1 << 20, 5));
    // Where the user's own limit is the smaller one, it stays.
    let text = text
        .replace(
            "max_message_size = \"20MiB\"",
            "max_message_size = \"512KiB\"",
        )
        .replace("max_recipients = 100", "max_recipients = 3");
    let c = ok(&text);
    let e = c.effective_limits(&c.users[0]);
    assert_eq!((e.max_message_size, e.max_recipients), (512 << 10, 3));
    assert!(c.summary().contains("max_message_size=524288 (512 KiB)"));
}

// ------------------------------------------------------------------ types in words

#[test]
fn a_single_user_table_says_use_double_brackets() {
    let text = base().replace("[[user]]", "[user]");
    assert_one(
        &text,
        "user",
        line_of(&text, "[user]"),
        &["use [[user]]", "one block per user"],
    );
}

#[test]
fn a_repeated_server_table_says_use_single_brackets() {
    let text = base().replace("[server]", "[[server]]");
    assert_one(&text, "server", 1, &["use [server]"]);
}

#[test]
fn tls_true_lists_the_values() {
    let text = base().replace(
        "addr = \"127.0.0.1:2525\"\n",
        "addr = \"127.0.0.1:2525\"\ntls = true\n",
    );
    assert_one(
        &text,
        "listener.tls",
        line_of(&text, "tls = true"),
        &["\"none\", \"starttls\", \"implicit\"", "got true"],
    );
}

#[test]
fn an_address_without_a_port_gives_an_example() {
    let text = base().replace("\"127.0.0.1:2525\"", "\"0.0.0.0\"");
    assert_one(
        &text,
        "listener.addr",
        line_of(&text, "addr = \"0.0.0.0\""),
        &["expected IP:port, e.g. \"0.0.0.0:587\""],
    );
}

#[test]
fn a_host_name_where_an_ip_is_needed() {
    let text = base().replace("\"127.0.0.1:2525\"", "\"localhost:2525\"");
    assert_one(
        &text,
        "listener.addr",
        line_of(&text, "localhost"),
        &["host name is not accepted", "\"127.0.0.1:2525\""],
    );
}

#[test]
fn a_fraction_gets_the_whole_spelling() {
    let text = base() + "\n[limits]\nidle_timeout = \"1.5m\"\nmax_message_size = \"1.5MiB\"\n";
    let all = problems(&text);
    assert_eq!(all.len(), 2, "{all:#?}");
    assert_eq!(all[0].0, line_of(&text, "idle_timeout"));
    assert!(all[0].2.contains("\"90s\""), "{}", all[0].2);
    assert_eq!(all[1].0, line_of(&text, "max_message_size"));
    assert!(all[1].2.contains("\"1536KiB\""), "{}", all[1].2);
}

#[test]
fn counts_are_whole_numbers_that_fit() {
    let rows = [
        ("5000000000", "too large: at most 4294967295"),
        ("-1", "must not be negative"),
        ("\"10\"", "without quotes: 10"),
        ("2.5", "whole number"),
    ];
    for (value, words) in rows {
        let text = base() + &format!("\n[limits]\nmax_recipients = {value}\n");
        assert_one(
            &text,
            "limits.max_recipients",
            line_of(&text, "max_recipients"),
            &[words],
        );
    }
}

#[test]
fn a_misspelt_key_gets_did_you_mean() {
    let text = base().replace("password_hash", "pasword_hash");
    assert_one(
        &text,
        "user.pasword_hash",
        line_of(&text, "pasword_hash"),
        &["did you mean \"password_hash\""],
    );
    let text = base().replace("hostname", "hostnme");
    assert_one(&text, "server.hostnme", 2, &["did you mean \"hostname\""]);
}

#[test]
fn trailing_whitespace_in_a_pasted_hash() {
    let text = base().replace(HASH, &format!("{HASH} "));
    assert_one(
        &text,
        "user.password_hash",
        line_of(&text, "password_hash"),
        &["pasted", "remove"],
    );
}

#[test]
fn a_limit_in_user_belongs_in_user_limits() {
    let text = with_user_line("messages_per_minute = 10");
    assert_one(
        &text,
        "user.messages_per_minute",
        line_of(&text, "messages_per_minute"),
        &["belongs in [user.limits]"],
    );
}

#[test]
fn a_server_key_at_the_top_level_belongs_in_server() {
    let text = format!(
        "hostname = \"x.example\"\n{}",
        base().replace("[server]\nhostname = \"relay.example.lan\"\n", "")
    );
    assert_one(&text, "hostname", 1, &["belongs in [server]"]);
}

#[test]
fn the_line_is_the_keys_not_the_tables() {
    let text = base().replace(
        "dir = \"var/outbox\"\n",
        "dir = \"var/outbox\"\n# a comment\n\nmax_recipients = 0\n",
    );
    assert_one(
        &text,
        "upstream.max_recipients",
        line_of(&text, "max_recipients"),
        &["at least 1"],
    );
    let text = with_user_line("[user.limits]\n\nmessages_per_minute = 0");
    assert_one(
        &text,
        "user.limits.messages_per_minute",
        line_of(&text, "messages_per_minute"),
        &["at least 1"],
    );
}

// ------------------------------------------------------------------ all at once

#[test]
fn five_mistakes_are_all_reported_in_one_run() {
    let text = format!(
        r#"[server]
hostname = ""

[[listener]]
name = "local"
addr = "127.0.0.1:2525"
tls = true

[[upstream]]
name = "outbox"
kind = "outbox"
dir = "var/outbox"

[[user]]
name = "demo"
pasword_hash = "{HASH}"
networks = ["192.168.10.23/24"]
allowed_senders = ["*@example.com"]
upstream = "nowhere"
"#
    );
    let all = problems(&text);
    let got: Vec<(usize, &str)> = all.iter().map(|(l, k, _)| (*l, k.as_str())).collect();
    assert_eq!(
        got,
        vec![
            (2, "server.hostname"),
            (7, "listener.tls"),
            (16, "user.pasword_hash"),
            (17, "user.networks"),
            (19, "user.upstream"),
        ],
        "{all:#?}"
    );
}

#[test]
fn checks_limits_are_the_ones_the_running_upstreams_compute() {
    // The same numbers from the running side: the upstreams built from this config.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let text = base().replace("dir = \"var/outbox\"", &format!("dir = \"{d}/a\""))
        + &format!(
            "\n[[upstream]]\nname = \"capped\"\nkind = \"outbox\"\ndir = \"{d}/b\"\n\
             max_message_size = \"1MiB\"\nmax_recipients = 5\n\
             \n[[upstream]]\nname = \"loose\"\nkind = \"outbox\"\ndir = \"{d}/c\"\nmax_recipients = 500\n"
        );
    let mut text = text.replace(
        "allowed_senders = [\"*@example.com\"]\n",
        "allowed_senders = [\"*@example.com\"]\nupstream = \"outbox\"\n",
    );
    for (name, up, size, rcpts) in [
        ("big", "capped", "20MiB", 100),
        ("small", "capped", "256KiB", 3),
        ("other", "loose", "2MiB", 50),
    ] {
        text.push_str(&format!(
            "\n[[user]]\nname = \"{name}\"\npassword_hash = \"{HASH}\"\nallowed_senders = [\"*\"]\n\
             upstream = \"{up}\"\n[user.limits]\nmax_message_size = \"{size}\"\nmax_recipients = {rcpts}\n"
        ));
    }
    let c = ok(&text);
    let (_registry, metrics) = postern::metrics::Metrics::new_registry().unwrap();
    let connector: std::sync::Arc<dyn postern::net::Connector> =
        std::sync::Arc::new(postern::net::TcpConnector);
    let ups = postern::upstream::Upstream::all_from_config(&c, &metrics, &connector).unwrap();
    for u in &c.users {
        let limits = c.user_limits(u);
        let name = c.user_upstream(u).unwrap().name();
        let up = ups.iter().find(|x| &*x.name == name).unwrap();
        let e = c.effective_limits(u);
        assert_eq!(
            e.max_message_size,
            up.effective_max_size(limits.max_message_size),
            "user {}",
            u.name()
        );
        assert_eq!(
            e.max_recipients,
            up.effective_max_recipients(limits.max_recipients),
            "user {}",
            u.name()
        );
    }
    let big = c.users.iter().find(|u| u.name() == "big").unwrap();
    assert_eq!(
        (
            c.effective_limits(big).max_message_size,
            c.effective_limits(big).max_recipients
        ),
        (1 << 20, 5)
    );
}

#[test]
fn surrounding_spaces_in_other_strings_are_refused_too() {
    let text = base().replace("name = \"demo\"", "name = \"demo \"");
    assert_one(
        &text,
        "user.name",
        line_of(&text, "\"demo \""),
        &["space", "remove it"],
    );
    let text = base()
        + "\n[[upstream]]\nname = \"p\"\nkind = \"smtp\"\naddr = \"smtp.example.com:465\"\n\
        username = \" u@example.com\"\npassword = \" inline passwords may start with a space \"\n";
    let text = text.replace(
        "allowed_senders = [\"*@example.com\"]\n",
        "allowed_senders = [\"*@example.com\"]\nupstream = \"outbox\"\n",
    );
    assert_one(
        &text,
        "upstream.username",
        line_of(&text, "username"),
        &["space"],
    );
}

#[test]
fn a_missing_required_key_is_named_at_its_block() {
    let text = base().replace("name = \"demo\"\n", "");
    assert_one(
        &text,
        "user.name",
        line_of(&text, "[[user]]"),
        &["has no name", "required"],
    );
    let text = base().replace("addr = \"127.0.0.1:2525\"\n", "");
    assert_one(
        &text,
        "listener.addr",
        line_of(&text, "[[listener]]"),
        &["has no addr", "e.g. addr = \"0.0.0.0:587\""],
    );
}
