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

// ---------------------------------------------------------------- unknown keys

#[test]
fn unknown_top_level_key() {
    let text = base_with("colour = \"blue\"\n");
    // Top-level keys after a table belong to that table ([[user]] here), so put it first.
    let text2 = format!("colour = \"blue\"\n{BASE}");
    assert_parse_error(&text2, "colour", 1);
    assert!(parse(&text).is_err());
}

#[test]
fn unknown_top_level_table() {
    let text = base_with("[smtpd]\nport = 25\n");
    assert_parse_error(&text, "smtpd", line_of(&text, "[smtpd]"));
}

#[test]
fn unknown_server_key() {
    let text = format!("[server]\nhostname = \"x\"\nbanner = \"hi\"\n\n{BASE}");
    assert_parse_error(&text, "banner", 3);
}

#[test]
fn unknown_listener_key() {
    let text = BASE.replace(
        "addr = \"127.0.0.1:2525\"\n",
        "addr = \"127.0.0.1:2525\"\nstarttls = true\n",
    );
    assert_parse_error(&text, "starttls", line_of(&text, "starttls"));
}

#[test]
fn unknown_user_key() {
    let text = base_with("pasword_hash = \"x\"\n");
    assert_parse_error(&text, "pasword_hash", line_of(&text, "pasword_hash"));
}

#[test]
fn unknown_user_limits_key() {
    let text = base_with("[user.limits]\nmessages_per_minute = 10\nmessages_per_day = 100\n");
    assert_parse_error(
        &text,
        "messages_per_day",
        line_of(&text, "messages_per_day"),
    );
}

#[test]
fn unknown_limits_key() {
    let text = base_with("[limits]\nmax_size = \"8MiB\"\n");
    assert_parse_error(&text, "max_size", line_of(&text, "max_size"));
}

#[test]
fn unknown_upstream_key() {
    let text = BASE.replace(
        "dir = \"var/outbox\"\n",
        "dir = \"var/outbox\"\nfsync = true\n",
    );
    assert_parse_error(&text, "fsync", line_of(&text, "fsync"));
}

#[test]
fn unknown_tls_and_metrics_keys() {
    let text = base_with("[metrics]\naddr = \"127.0.0.1:9465\"\npath = \"/m\"\n");
    assert_parse_error(&text, "path", line_of(&text, "path ="));
    let text = base_with("[tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\nchain = \"x.pem\"\n");
    assert_parse_error(&text, "chain", line_of(&text, "chain"));
}

// ---------------------------------------------------------------- value syntax

#[test]
fn bad_size_unit() {
    let text = base_with("[limits]\nmax_message_size = \"8XB\"\n");
    let msg = assert_parse_error(&text, "max_message_size", line_of(&text, "8XB"));
    assert!(msg.contains("8XB"), "{msg}");
}

#[test]
fn negative_size() {
    let text = base_with("[limits]\nmax_message_size = -1\n");
    let msg = assert_parse_error(&text, "max_message_size", line_of(&text, "= -1"));
    assert!(msg.contains("negative"), "{msg}");
}

#[test]
fn bad_duration_unit() {
    let text = base_with("[limits]\nidle_timeout = \"5 fortnights\"\n");
    let msg = assert_parse_error(&text, "idle_timeout", line_of(&text, "fortnights"));
    assert!(msg.contains("fortnights"), "{msg}");
}

#[test]
fn negative_duration() {
    let text = format!("[server]\nshutdown_grace = -5\n{BASE}");
    assert_parse_error(&text, "shutdown_grace", 2);
}

#[test]
fn bad_log_format() {
    let text = format!("[server]\nlog_format = \"xml\"\n{BASE}");
    assert_parse_error(&text, "log_format", 2);
}

#[test]
fn bad_listener_tls_mode() {
    let text = BASE.replace(
        "addr = \"127.0.0.1:2525\"\n",
        "addr = \"127.0.0.1:2525\"\ntls = \"tls13\"\n",
    );
    assert_parse_error(&text, "tls", line_of(&text, "tls13"));
}

#[test]
fn bad_upstream_tls_mode() {
    let text = base_with(
        "\n[[upstream]]\nname = \"p\"\nkind = \"smtp\"\naddr = \"smtp.example.com:465\"\ntls = \"ssl\"\n",
    );
    assert_parse_error(&text, "tls", line_of(&text, "\"ssl\""));
}

#[test]
fn bad_listener_addr() {
    let text = BASE.replace("127.0.0.1:2525", "localhost");
    assert_parse_error(&text, "addr", line_of(&text, "localhost"));
}

#[test]
fn bad_auth_mode() {
    let text = BASE.replace(
        "addr = \"127.0.0.1:2525\"\n",
        "addr = \"127.0.0.1:2525\"\nauth = \"sometimes\"\n",
    );
    assert_parse_error(&text, "auth", line_of(&text, "sometimes"));
}

#[test]
fn bad_network() {
    let text = BASE.replace(
        "allowed_senders",
        "networks = [\"192.168.10.300/32\"]\nallowed_senders",
    );
    assert_parse_error(&text, "networks", line_of(&text, "networks"));
}

// ---------------------------------------------------------------- listeners

#[test]
fn no_listener() {
    let text = BASE.replace(
        "[[listener]]\nname = \"local\"\naddr = \"127.0.0.1:2525\"\n",
        "",
    );
    assert_invalid(&text, "listener", 1);
}

#[test]
fn duplicate_listener_name() {
    let text = format!("[[listener]]\nname = \"local\"\naddr = \"127.0.0.1:2526\"\n{BASE}");
    assert_invalid(
        &text,
        "listener.name",
        line_of_nth(&text, "name = \"local\"", 1),
    );
}

#[test]
fn duplicate_listener_addr() {
    let text = format!("[[listener]]\nname = \"other\"\naddr = \"127.0.0.1:2525\"\n{BASE}");
    assert_invalid(
        &text,
        "listener.addr",
        line_of_nth(&text, "addr = \"127.0.0.1:2525\"", 1),
    );
}

#[test]
fn port_zero_listeners_may_share_an_addr() {
    // Tests bind several listeners on 127.0.0.1:0; that is not a duplicate.
    let text = BASE.replace("127.0.0.1:2525", "127.0.0.1:0");
    let text = format!("[[listener]]\nname = \"other\"\naddr = \"127.0.0.1:0\"\n{text}");
    assert_eq!(ok(&text).listeners.len(), 2);
}

#[test]
fn tls_listener_without_tls_section() {
    for mode in ["starttls", "implicit"] {
        let text = BASE.replace(
            "addr = \"127.0.0.1:2525\"\n",
            &format!("addr = \"127.0.0.1:2525\"\ntls = \"{mode}\"\n"),
        );
        assert_invalid(&text, "listener.tls", line_of(&text, mode));
    }
}

#[test]
fn tls_section_with_missing_cert() {
    let dir = tempfile::tempdir().unwrap();
    let text = base_with(&format!(
        "[tls]\ncert = \"{0}/nope-cert.pem\"\nkey = \"{0}/nope-key.pem\"\n",
        dir.path().display()
    ));
    assert_invalid(&text, "tls.cert", line_of(&text, "nope-cert.pem"));
    match parse(&text) {
        Err(e) => assert!(e.to_string().contains("nope-cert.pem"), "{e}"),
        Ok(_) => unreachable!(),
    }
}

#[test]
fn tls_section_with_missing_key() {
    // The certificate is fine, the key file is missing: the error should point at `key`.
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert_path = dir.path().join("cert.pem");
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    let text = base_with(&format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}/nope-key.pem\"\n",
        cert_path.display(),
        dir.path().display()
    ));
    assert_invalid(&text, "tls.key", line_of(&text, "nope-key.pem"));
}

#[test]
fn tls_listener_with_real_cert_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (c, k) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&c, cert.cert.pem()).unwrap();
    std::fs::write(&k, cert.signing_key.serialize_pem()).unwrap();
    let text = BASE.replace(
        "addr = \"127.0.0.1:2525\"\n",
        "addr = \"127.0.0.1:2525\"\ntls = \"starttls\"\n",
    );
    let text = format!(
        "{text}[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
        c.display(),
        k.display()
    );
    let config = ok(&text);
    assert_eq!(*config.listeners[0].tls.get_ref(), TlsMode::Starttls);
}

#[test]
fn proxy_protocol_without_proxy_from() {
    let text = BASE.replace(
        "addr = \"127.0.0.1:2525\"\n",
        "addr = \"127.0.0.1:2525\"\nproxy_protocol = true\n",
    );
    assert_invalid(
        &text,
        "listener.proxy_from",
        line_of(&text, "proxy_protocol"),
    );
}

#[test]
fn proxy_protocol_with_proxy_from_is_accepted() {
    let text = BASE.replace(
        "addr = \"127.0.0.1:2525\"\n",
        "addr = \"127.0.0.1:2525\"\nproxy_protocol = true\nproxy_from = [\"10.0.0.0/8\"]\n",
    );
    let c = ok(&text);
    assert_eq!(
        c.listeners[0].proxy_from,
        vec!["10.0.0.0/8".parse::<ipnet::IpNet>().unwrap()]
    );
}

#[test]
fn proxy_protocol_false_is_fine() {
    let text = BASE.replace(
        "addr = \"127.0.0.1:2525\"\n",
        "addr = \"127.0.0.1:2525\"\nproxy_protocol = false\n",
    );
    ok(&text);
}

// ---------------------------------------------------------------- upstreams

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

#[test]
fn no_upstream() {
    let text = BASE.replace(
        "[[upstream]]\nname = \"outbox\"\nkind = \"outbox\"\ndir = \"var/outbox\"\n",
        "",
    );
    assert_invalid(&text, "upstream", 1);
}

#[test]
fn duplicate_upstream_name() {
    let text =
        base_with("\n[[upstream]]\nname = \"outbox\"\nkind = \"outbox\"\ndir = \"var/other\"\n");
    assert_invalid(
        &text,
        "upstream.name",
        line_of_nth(&text, "name = \"outbox\"", 1),
    );
}

#[test]
fn smtp_upstream_without_addr() {
    let text = with_smtp_upstream("username = \"u@example.com\"\npassword_env = \"P\"\n");
    assert_invalid(&text, "upstream.addr", line_of(&text, "kind = \"smtp\""));
}

#[test]
fn smtp_upstream_addr_without_port() {
    let text = with_smtp_upstream("addr = \"nohostport\"\n");
    assert_invalid(&text, "upstream.addr", line_of(&text, "nohostport"));
}

#[test]
fn smtp_upstream_addr_port_zero_or_no_host() {
    for bad in ["smtp.example.com:0", ":587", "smtp.example.com:99999"] {
        let text = with_smtp_upstream(&format!("addr = \"{bad}\"\n"));
        assert_invalid(&text, "upstream.addr", line_of(&text, bad));
    }
}

#[test]
fn smtp_upstream_with_dir() {
    let text = with_smtp_upstream("addr = \"smtp.example.com:587\"\ndir = \"var/x\"\n");
    assert_invalid(&text, "upstream.dir", line_of(&text, "dir = \"var/x"));
}

#[test]
fn outbox_without_dir() {
    let text = BASE.replace("dir = \"var/outbox\"\n", "");
    assert_invalid(&text, "upstream.dir", line_of(&text, "kind = \"outbox\""));
}

#[test]
fn outbox_with_smtp_only_key() {
    let text = BASE.replace(
        "dir = \"var/outbox\"\n",
        "dir = \"var/outbox\"\nusername = \"u@example.com\"\n",
    );
    assert_invalid(&text, "upstream.username", line_of(&text, "username ="));
    let text = BASE.replace(
        "dir = \"var/outbox\"\n",
        "dir = \"var/outbox\"\naddr = \"smtp.example.com:25\"\n",
    );
    assert_invalid(&text, "upstream.addr", line_of(&text, "addr = \"smtp"));
}

#[test]
fn two_password_sources() {
    let text = with_smtp_upstream(
        "addr = \"smtp.example.com:465\"\nusername = \"u@example.com\"\npassword_env = \"P\"\npassword_file = \"/run/secrets/p\"\n",
    );
    assert_invalid(&text, "upstream.password", line_of(&text, "password_file"));
    let text = with_smtp_upstream(
        "addr = \"smtp.example.com:465\"\nusername = \"u@example.com\"\npassword = \"x\"\npassword_env = \"P\"\n",
    );
    assert_invalid(&text, "upstream.password", line_of(&text, "password_env"));
}

#[test]
fn username_without_password() {
    let text =
        with_smtp_upstream("addr = \"smtp.example.com:465\"\nusername = \"u@example.com\"\n");
    assert_invalid(&text, "upstream.password_env", line_of(&text, "username ="));
}

#[test]
fn password_without_username() {
    let text = with_smtp_upstream("addr = \"smtp.example.com:465\"\npassword_env = \"P\"\n");
    assert_invalid(&text, "upstream.username", line_of(&text, "password_env ="));
}

#[test]
fn upstream_max_connections_zero() {
    let text = with_smtp_upstream("addr = \"smtp.example.com:465\"\nmax_connections = 0\n");
    assert_invalid(
        &text,
        "upstream.max_connections",
        line_of(&text, "max_connections ="),
    );
}

#[test]
fn upstream_missing_ca_file() {
    let text = with_smtp_upstream(
        "addr = \"smtp.example.com:465\"\nca_file = \"/nonexistent/postern-ca.pem\"\n",
    );
    assert_invalid(&text, "upstream.ca_file", line_of(&text, "ca_file"));
}

#[test]
fn smtp_upstream_without_credentials_is_fine() {
    // An internal relay that needs no AUTH.
    let c = ok(&with_smtp_upstream(
        "addr = \"10.0.0.5:25\"\ntls = \"none\"\n",
    ));
    let up = c.upstream("provider").unwrap();
    assert_eq!(up.secret(), None);
    assert_eq!(up.host().as_deref(), Some("10.0.0.5"));
}

#[test]
fn smtp_upstream_tls_defaults_by_port() {
    for (addr, want) in [
        ("smtp.example.com:465", TlsMode::Implicit),
        ("smtp.example.com:587", TlsMode::Starttls),
        ("smtp.example.com:25", TlsMode::Starttls),
        ("[2001:db8::1]:465", TlsMode::Implicit),
        ("[2001:db8::1]:2525", TlsMode::Starttls),
    ] {
        let c = ok(&with_smtp_upstream(&format!("addr = \"{addr}\"\n")));
        assert_eq!(c.upstream("provider").unwrap().tls_mode(), want, "{addr}");
    }
    let c = ok(&with_smtp_upstream(
        "addr = \"smtp.example.com:465\"\ntls = \"starttls\"\n",
    ));
    assert_eq!(
        c.upstream("provider").unwrap().tls_mode(),
        TlsMode::Starttls,
        "a written tls wins over the port"
    );
}

#[test]
fn password_env_is_not_needed_to_parse() {
    let var = "POSTERN_TEST_SURELY_UNSET_VARIABLE_4711";
    assert!(std::env::var_os(var).is_none());
    let c = ok(&with_smtp_upstream(&format!(
        "addr = \"smtp.example.com:465\"\nusername = \"u@example.com\"\npassword_env = \"{var}\"\n"
    )));
    let secret = c.upstream("provider").unwrap().secret().unwrap();
    assert_eq!(secret, Secret::Env(var.to_owned()));
    // Only resolving it (what `run` does) needs the variable, and the error names it.
    let err = secret.resolve().unwrap_err();
    assert!(err.contains(var), "{err}");
}

#[test]
fn password_file_is_not_read_while_parsing() {
    let c = ok(&with_smtp_upstream(
        "addr = \"smtp.example.com:465\"\nusername = \"u@example.com\"\npassword_file = \"/nonexistent/postern-secret\"\n",
    ));
    assert!(matches!(
        c.upstream("provider").unwrap().secret(),
        Some(Secret::File(_))
    ));
}

// ---------------------------------------------------------------- users

#[test]
fn user_names_missing_upstream() {
    let text = BASE.replace("allowed_senders", "upstream = \"aliyun\"\nallowed_senders");
    assert_invalid(&text, "user.upstream", line_of(&text, "\"aliyun\""));
}

#[test]
fn user_without_upstream_when_several_exist() {
    let text =
        base_with("\n[[upstream]]\nname = \"second\"\nkind = \"outbox\"\ndir = \"var/second\"\n");
    assert_invalid(&text, "user.upstream", line_of(&text, "name = \"demo\""));
}

#[test]
fn user_without_upstream_when_one_exists_uses_it() {
    let c = ok(BASE);
    let u = &c.users[0];
    assert_eq!(c.user_upstream(u).map(UpstreamConfig::name), Some("outbox"));
}

#[test]
fn duplicate_user_name() {
    let text = base_with(&format!(
        "\n[[user]]\nname = \"demo\"\npassword_hash = \"{HASH}\"\nallowed_senders = [\"*\"]\n"
    ));
    assert_invalid(&text, "user.name", line_of_nth(&text, "name = \"demo\"", 1));
}

#[test]
fn bad_password_hash() {
    let text = BASE.replace(HASH, "hunter2");
    assert_invalid(&text, "user.password_hash", line_of(&text, "hunter2"));
    let text = BASE.replace(HASH, "$argon2id$v=19$garbage");
    assert_invalid(&text, "user.password_hash", line_of(&text, "garbage"));
    let text = BASE.replace(HASH, "$2b$12$short");
    assert_invalid(&text, "user.password_hash", line_of(&text, "short"));
}

#[test]
fn bcrypt_hash_is_accepted() {
    let bcrypt = "$2b$04$abcdefghijklmnopqrstuu5xvkmJk1N1N4jTqBZ7i0NymYbVmLu2a";
    assert_eq!(bcrypt.len(), 60);
    ok(&BASE.replace(HASH, bcrypt));
}

#[test]
fn user_with_neither_password_hash_nor_networks() {
    let text = BASE.replace(&format!("password_hash = \"{HASH}\"\n"), "");
    assert_invalid(
        &text,
        "user.password_hash",
        line_of(&text, "name = \"demo\""),
    );
}

#[test]
fn user_with_networks_only_is_fine() {
    let text = BASE.replace(
        &format!("password_hash = \"{HASH}\"\n"),
        "networks = [\"192.168.10.23/32\", \"10.1.0.0/16\"]\n",
    );
    let c = ok(&text);
    assert_eq!(c.users[0].networks.len(), 2);
    assert!(c.users[0].password_hash.is_none());
}

#[test]
fn bad_allowed_senders_pattern() {
    for bad in ["not-an-address", "*@", "a@b@c", "*.example.com", "foo@*"] {
        let text = BASE.replace(
            "\"*@example.com\"",
            &format!("\"ok@example.com\", \"{bad}\""),
        );
        assert_invalid(
            &text,
            "user.allowed_senders",
            line_of(&text, "allowed_senders"),
        );
    }
}

#[test]
fn bad_allowed_senders_pattern_on_a_later_line() {
    let text = BASE.replace(
        "allowed_senders = [\"*@example.com\"]",
        "allowed_senders = [\n  \"ok@example.com\",\n  \"bogus\",\n]",
    );
    assert_invalid(&text, "user.allowed_senders", line_of(&text, "\"bogus\""));
}

#[test]
fn bad_rewrite_sender() {
    let text = BASE.replace(
        "allowed_senders",
        "rewrite_sender = \"noreply at example.com\"\nallowed_senders",
    );
    assert_invalid(
        &text,
        "user.rewrite_sender",
        line_of(&text, "rewrite_sender"),
    );
    let text = BASE.replace(
        "allowed_senders",
        "rewrite_sender = \"<noreply@example.com>\"\nallowed_senders",
    );
    assert_invalid(
        &text,
        "user.rewrite_sender",
        line_of(&text, "rewrite_sender"),
    );
    let text = BASE.replace(
        "allowed_senders",
        "rewrite_sender = \"noreply@\"\nallowed_senders",
    );
    assert_invalid(
        &text,
        "user.rewrite_sender",
        line_of(&text, "rewrite_sender"),
    );
}

#[test]
fn rewrite_header_from_without_rewrite_sender() {
    let text = base_with("rewrite_header_from = true\n");
    assert_invalid(
        &text,
        "user.rewrite_header_from",
        line_of(&text, "rewrite_header_from ="),
    );
}

#[test]
fn rewrite_header_from_with_rewrite_sender_is_fine() {
    let c = ok(&base_with(
        "rewrite_sender = \"noreply@example.com\"\nrewrite_header_from = true\n",
    ));
    assert!(c.users[0].rewrite_header_from);
}

#[test]
fn user_with_no_senders_gets_a_warning() {
    let c = ok(&BASE.replace("allowed_senders = [\"*@example.com\"]\n", ""));
    assert!(
        c.warnings
            .iter()
            .any(|w| w.contains("demo") && w.contains("allowed_senders")),
        "{:?}",
        c.warnings
    );
}

// ---------------------------------------------------------------- limits

#[test]
fn max_recipients_zero() {
    let text = base_with("[limits]\nmax_recipients = 0\n");
    assert_invalid(
        &text,
        "limits.max_recipients",
        line_of(&text, "max_recipients ="),
    );
}

#[test]
fn every_count_limit_zero() {
    for key in [
        "max_recipients",
        "messages_per_minute",
        "recipients_per_hour",
        "max_connections_per_user",
        "max_connections_per_ip",
        "max_connections",
        "auth_failures_per_ip_per_minute",
    ] {
        let text = format!("[limits]\n{key} = 0\n\n{BASE}");
        assert_invalid(&text, &format!("limits.{key}"), 2);
    }
}

#[test]
fn max_message_size_below_64kib() {
    let text = base_with("[limits]\nmax_message_size = \"63KiB\"\n");
    assert_invalid(
        &text,
        "limits.max_message_size",
        line_of(&text, "max_message_size ="),
    );
    // Exactly 64 KiB is the floor and is accepted.
    ok(&base_with("[limits]\nmax_message_size = \"64KiB\"\n"));
}

#[test]
fn idle_timeout_zero() {
    let text = base_with("[limits]\nidle_timeout = \"0s\"\n");
    assert_invalid(
        &text,
        "limits.idle_timeout",
        line_of(&text, "idle_timeout ="),
    );
}

#[test]
fn user_limits_zero() {
    let text = base_with("[user.limits]\nmax_recipients = 0\n");
    assert_invalid(
        &text,
        "user.limits.max_recipients",
        line_of(&text, "max_recipients ="),
    );
    let text = base_with("[user.limits]\nmax_message_size = 1000\n");
    assert_invalid(
        &text,
        "user.limits.max_message_size",
        line_of(&text, "max_message_size ="),
    );
    let text = base_with("[user.limits]\nidle_timeout = 0\n");
    assert_invalid(
        &text,
        "user.limits.idle_timeout",
        line_of(&text, "idle_timeout ="),
    );
}

// ---------------------------------------------------------------- positive

fn size(text: &str) -> u64 {
    ok(&base_with(&format!(
        "[limits]\nmax_message_size = {text}\n"
    )))
    .limits
    .max_message_size
}

fn idle(text: &str) -> Duration {
    ok(&base_with(&format!("[limits]\nidle_timeout = {text}\n")))
        .limits
        .idle_timeout
}

#[test]
fn sizes() {
    assert_eq!(size("\"8MiB\""), 8 * 1024 * 1024);
    assert_eq!(size("\"512KiB\""), 512 * 1024);
    assert_eq!(size("\"10MB\""), 10_000_000);
    assert_eq!(size("\"1GiB\""), 1 << 30);
    assert_eq!(size("\"8mib\""), 8 * 1024 * 1024);
    assert_eq!(size("1048576"), 1_048_576);
    assert_eq!(ByteSize::parse("100kb"), Ok(ByteSize(100_000)));
    assert!(ByteSize::parse("8XB").is_err());
    assert!(ByteSize::parse("MiB").is_err());
    assert!(ByteSize::parse("1.5MiB").is_err());
    assert!(ByteSize::parse("99999999999999999999GiB").is_err());
}

#[test]
fn durations() {
    assert_eq!(idle("\"30s\""), Duration::from_secs(30));
    assert_eq!(idle("\"5m\""), Duration::from_secs(300));
    assert_eq!(idle("\"1h\""), Duration::from_secs(3600));
    assert_eq!(idle("\"250ms\""), Duration::from_millis(250));
    assert_eq!(idle("90"), Duration::from_secs(90));
    assert!(Seconds::parse("5 fortnights").is_err());
    assert!(Seconds::parse("s").is_err());
    assert!(Seconds::parse("-5s").is_err());
}

#[test]
fn defaults() {
    let c = ok(BASE);
    assert_eq!(c.limits, Limits::default());
    assert_eq!(c.limits.max_message_size, DEFAULT_MAX_MESSAGE_SIZE);
    assert_eq!(c.server.hostname, DEFAULT_HOSTNAME);
    assert_eq!(c.server.shutdown_grace.0, DEFAULT_SHUTDOWN_GRACE);
    assert_eq!(c.server.log_format, LogFormat::Text);
    let l = &c.listeners[0];
    assert_eq!(*l.tls.get_ref(), TlsMode::None);
    assert_eq!(l.auth, AuthMode::Required);
    assert!(c.metrics.is_none());
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}

#[test]
fn per_user_limits_override() {
    let text = base_with(
        "[user.limits]\nmessages_per_minute = 10\nmax_message_size = \"2MiB\"\n\n[limits]\nmax_recipients = 50\nmessages_per_minute = 30\n",
    );
    let c = ok(&text);
    let l = c.user_limits(&c.users[0]);
    assert_eq!(l.messages_per_minute, 10, "user override wins");
    assert_eq!(l.max_message_size, 2 * 1024 * 1024, "user override wins");
    assert_eq!(l.max_recipients, 50, "[limits] fills the rest");
    assert_eq!(
        l.recipients_per_hour, DEFAULT_RECIPIENTS_PER_HOUR,
        "default fills the rest"
    );
    assert_eq!(c.limits.messages_per_minute, 30, "global limits unchanged");
}

#[test]
fn allow_plaintext_auth_defaults() {
    let loopback = ok(BASE);
    assert!(loopback.listeners[0].plaintext_auth_allowed());
    let v6 = ok(&BASE.replace("127.0.0.1:2525", "[::1]:2525"));
    assert!(v6.listeners[0].plaintext_auth_allowed());
    // Off loopback it is off; such a listener needs TLS to be usable at all.
    let any = ok(&BASE
        .replace(
            "addr = \"127.0.0.1:2525\"\n",
            "addr = \"0.0.0.0:2525\"\nauth = \"optional\"\n",
        )
        .replace(
            "password_hash",
            "networks = [\"192.168.1.0/24\"]\npassword_hash",
        ));
    assert!(!any.listeners[0].plaintext_auth_allowed());
    let explicit = ok(&BASE.replace(
        "addr = \"127.0.0.1:2525\"\n",
        "addr = \"0.0.0.0:2525\"\nallow_plaintext_auth = true\n",
    ));
    assert!(explicit.listeners[0].plaintext_auth_allowed());
    // Turned off on a plain listener, nobody could ever AUTH there: an error.
    let off = BASE.replace(
        "addr = \"127.0.0.1:2525\"\n",
        "addr = \"127.0.0.1:2525\"\nallow_plaintext_auth = false\n",
    );
    assert_invalid(&off, "listener.tls", line_of(&off, "addr ="));
}

#[test]
fn inline_password_warns() {
    let c = ok(&with_smtp_upstream(
        "addr = \"smtp.example.com:465\"\nusername = \"u@example.com\"\npassword = \"hunter2-inline\"\n",
    ));
    let line = line_of(
        &with_smtp_upstream(
            "addr = \"smtp.example.com:465\"\nusername = \"u@example.com\"\npassword = \"hunter2-inline\"\n",
        ),
        "hunter2-inline",
    );
    let w = c
        .warnings
        .iter()
        .find(|w| w.contains("inline password"))
        .unwrap_or_else(|| panic!("no inline-password warning in {:?}", c.warnings));
    assert!(w.contains(&format!("line {line}")), "{w}");
    assert!(
        !w.contains("hunter2-inline"),
        "the warning must not repeat the password: {w}"
    );
    assert!(c.warnings.iter().all(|w| !w.contains("hunter2-inline")));
}

#[test]
fn tls_verify_false_and_plaintext_upstream_warn() {
    let c = ok(&with_smtp_upstream(
        "addr = \"smtp.example.com:587\"\ntls = \"starttls\"\ntls_verify = false\n",
    ));
    assert!(
        c.warnings.iter().any(|w| w.contains("tls_verify")),
        "{:?}",
        c.warnings
    );
    let c = ok(&with_smtp_upstream(
        "addr = \"smtp.example.com:25\"\ntls = \"none\"\nusername = \"u@example.com\"\npassword_env = \"P\"\n",
    ));
    assert!(
        c.warnings.iter().any(|w| w.contains("clear text")),
        "{:?}",
        c.warnings
    );
}

#[test]
fn secret_debug_never_shows_an_inline_password() {
    let s = Secret::Inline("hunter2-inline".to_owned());
    assert!(!format!("{s:?}").contains("hunter2"));
    assert!(!format!("{s:#?}").contains("hunter2"));
    assert!(!format!("{s}").contains("hunter2"));
    assert_eq!(s.resolve().unwrap().expose(), "hunter2-inline");
    assert_eq!(format!("{:?}", Secret::Env("VAR".into())), "Env(VAR)");
}

#[test]
fn config_debug_never_shows_an_inline_password() {
    // Credentials are always redacted (STYLE.md principle 8): a `{:?}` of the whole
    // config, as a `tracing::debug!(?config)` would print, must not leak the password.
    let c = ok(&with_smtp_upstream(
        "addr = \"smtp.example.com:465\"\nusername = \"u@example.com\"\npassword = \"hunter2-inline\"\n",
    ));
    let dump = format!("{c:?}");
    assert!(
        !dump.contains("hunter2-inline"),
        "Debug of Config leaks the inline password"
    );
}

#[test]
fn shipped_config_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(DEFAULT_CONFIG_PATH);
    let c = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        *c.listeners[0].addr.get_ref(),
        "127.0.0.1:2525".parse::<SocketAddr>().unwrap()
    );
    assert!(c.users.iter().any(|u| u.name() == "demo"));
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}

#[test]
fn missing_file_is_a_read_error() {
    let err = Config::load(Path::new("/nonexistent/postern.toml")).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }));
    assert!(err.to_string().contains("/nonexistent/postern.toml"));
}

#[test]
fn error_display_names_path_line_and_key() {
    let text = base_with("[limits]\nmax_recipients = 0\n");
    let err = parse(&text).unwrap_err();
    let line = line_of(&text, "max_recipients =");
    assert_eq!(
        err.to_string().split(": must").next().unwrap(),
        format!("test.toml: line {line}: limits.max_recipients")
    );
}

const OAUTH_UPSTREAM: &str = "addr = \"smtp.office365.com:587\"\nauth = \"xoauth2\"\nusername = \"scanner@contoso.com\"\n\
[upstream.oauth2]\ntoken_url = \"https://login.microsoftonline.com/t/oauth2/v2.0/token\"\n\
grant = \"client_credentials\"\nclient_id = \"app\"\nclient_secret_env = \"M365_SECRET\"\n";

#[test]
fn oauth2_upstream_is_fine() {
    let c = ok(&with_smtp_upstream(OAUTH_UPSTREAM));
    let up = c.upstream("provider").unwrap();
    assert_eq!(up.auth_mode(), UpstreamAuth::Xoauth2);
    assert_eq!(up.tls_mode(), TlsMode::Starttls);
    let o = up.oauth2.as_ref().unwrap();
    assert_eq!(*o.grant.get_ref(), Grant::ClientCredentials);
    assert_eq!(o.client_secret(), Some(Secret::Env("M365_SECRET".into())));
}

#[test]
fn oauth2_rules() {
    let rows: &[(&str, &str, &str, &str)] = &[
        // (replace, with, key, line of)
        (
            "[upstream.oauth2]\ntoken_url = \"https://login.microsoftonline.com/t/oauth2/v2.0/token\"\ngrant = \"client_credentials\"\nclient_id = \"app\"\nclient_secret_env = \"M365_SECRET\"\n",
            "",
            "upstream.oauth2",
            "auth = ",
        ),
        ("auth = \"xoauth2\"\n", "", "upstream.auth", "token_url"),
        (
            "https://login.microsoftonline.com",
            "http://login.microsoftonline.com",
            "upstream.oauth2.token_url",
            "token_url",
        ),
        (
            "client_secret_env = \"M365_SECRET\"\n",
            "",
            "upstream.oauth2.client_secret_env",
            "grant = ",
        ),
        (
            "grant = \"client_credentials\"\n",
            "grant = \"refresh_token\"\n",
            "upstream.oauth2.refresh_token_file",
            "grant = ",
        ),
        (
            "username = \"scanner@contoso.com\"\n",
            "username = \"scanner@contoso.com\"\npassword_env = \"X\"\n",
            "upstream.password",
            "password_env",
        ),
        (
            "client_secret_env = \"M365_SECRET\"\n",
            "client_secret_env = \"M365_SECRET\"\nclient_secret_file = \"s\"\n",
            "upstream.oauth2.client_secret_file",
            "client_secret_file",
        ),
    ];
    for (from, to, key, at) in rows {
        let text = with_smtp_upstream(&OAUTH_UPSTREAM.replace(from, to));
        assert_invalid(&text, key, line_of(&text, at));
    }
}

#[test]
fn token_urls() {
    for good in [
        "https://x.example/t",
        "http://127.0.0.1:8080/t",
        "http://localhost/t",
        "http://[::1]:9/t",
    ] {
        assert!(check_token_url(good).is_ok(), "{good}");
    }
    for bad in [
        "http://10.0.0.1/t",
        "ftp://x/t",
        "https:///t",
        "https://user@x/t",
        "x.example/t",
    ] {
        assert!(check_token_url(bad).is_err(), "{bad}");
    }
}

const ACCOUNTS: &str = "addr = \"smtpdm.aliyun.com:465\"\n\
[[upstream.account]]\nusername = \"alerts@mail.example.com\"\npassword_env = \"DM_ALERTS\"\n\
[[upstream.account]]\nusername = \"scans@mail.example.com\"\npassword_env = \"DM_SCANS\"\n";

#[test]
fn upstream_accounts_are_fine() {
    let c = ok(&with_smtp_upstream(ACCOUNTS));
    let up = c.upstream("provider").unwrap();
    assert_eq!(up.account.len(), 2);
    assert_eq!(up.account[1].secret(), Some(Secret::Env("DM_SCANS".into())));
}

#[test]
fn upstream_account_rules() {
    let rows: &[(&str, &str, &str, &str)] = &[
        (
            "addr = \"smtpdm.aliyun.com:465\"\n",
            "addr = \"smtpdm.aliyun.com:465\"\nusername = \"x@y.z\"\n",
            "upstream.account",
            "username = \"x@y.z\"",
        ),
        (
            "scans@mail.example.com",
            "ALERTS@mail.example.com",
            "upstream.account.username",
            "ALERTS@",
        ),
        (
            "scans@mail.example.com",
            "scans",
            "upstream.account.username",
            "\"scans\"",
        ),
        (
            "password_env = \"DM_SCANS\"\n",
            "",
            "upstream.account.password_env",
            "scans@",
        ),
        (
            "password_env = \"DM_SCANS\"\n",
            "password_env = \"DM_SCANS\"\npassword = \"p\"\n",
            "upstream.account.password",
            "password_env = \"DM_SCANS\"",
        ),
    ];
    for (from, to, key, at) in rows {
        let text = with_smtp_upstream(&ACCOUNTS.replace(from, to));
        assert_invalid(&text, key, line_of(&text, at));
    }
}

/// `ACCOUNTS` with scans@ on OAuth2 of its own.
const OAUTH_ACCOUNT: &str = "auth = \"oauthbearer\"\n[upstream.account.oauth2]\n\
token_url = \"https://oauth2.googleapis.com/token\"\ngrant = \"refresh_token\"\n\
client_id = \"app\"\nrefresh_token_file = \"/var/lib/postern/scans.refresh\"\n";

#[test]
fn an_account_may_have_oauth2_of_its_own() {
    let text =
        with_smtp_upstream(&ACCOUNTS.replace("password_env = \"DM_SCANS\"\n", OAUTH_ACCOUNT));
    let c = ok(&text);
    let up = c.upstream("provider").unwrap();
    assert_eq!(up.account[1].auth_mode(), UpstreamAuth::Oauthbearer);
    assert!(up.account[1].oauth2.is_some());
    assert_eq!(up.account[1].secret(), None);
    assert_eq!(up.account[0].auth_mode(), UpstreamAuth::Auto);
}

#[test]
fn account_oauth2_rules() {
    let base = ACCOUNTS.replace("password_env = \"DM_SCANS\"\n", OAUTH_ACCOUNT);
    let rows: &[(&str, &str, &str, &str)] = &[
        // OAuth2 without its section.
        (
            "[upstream.account.oauth2]\ntoken_url = \"https://oauth2.googleapis.com/token\"\ngrant = \"refresh_token\"\nclient_id = \"app\"\nrefresh_token_file = \"/var/lib/postern/scans.refresh\"\n",
            "",
            "upstream.account.oauth2",
            "auth = \"oauthbearer\"",
        ),
        // A section without an OAuth2 mechanism.
        (
            "auth = \"oauthbearer\"\n",
            "password_env = \"DM_SCANS\"\n",
            "upstream.account.auth",
            "token_url",
        ),
        // A password besides the token.
        (
            "auth = \"oauthbearer\"\n",
            "auth = \"oauthbearer\"\npassword_env = \"DM_SCANS\"\n",
            "upstream.account.password",
            "password_env = \"DM_SCANS\"",
        ),
        // The section's own rules, under the account's path.
        (
            "refresh_token_file = \"/var/lib/postern/scans.refresh\"\n",
            "",
            "upstream.account.oauth2.refresh_token_file",
            "grant = \"refresh_token\"",
        ),
        (
            "https://oauth2.googleapis.com/token",
            "http://10.0.0.1/token",
            "upstream.account.oauth2.token_url",
            "http://10.0.0.1",
        ),
    ];
    for (from, to, key, at) in rows {
        let text = with_smtp_upstream(&base.replace(from, to));
        assert_invalid(&text, key, line_of(&text, at));
    }
}

// ---------------------------------------------------------------- [cluster]

fn with_cluster(keys: &str) -> String {
    base_with(&format!("[cluster]\n{keys}"))
}

#[test]
fn cluster_is_optional_and_fills_its_defaults() {
    assert!(parse(BASE).unwrap().cluster.is_none());
    let c = parse(&with_cluster("redis = \"redis://127.0.0.1:6379/0\"\n"))
        .unwrap()
        .cluster
        .unwrap();
    assert_eq!(c.on_redis_error, OnRedisError::Local);
    assert_eq!(c.replicas(), 1);
    assert_eq!(c.timeout(), DEFAULT_CLUSTER_TIMEOUT);
    assert_eq!(c.lease_ttl(), DEFAULT_LEASE_TTL);
    assert_eq!(c.key_prefix(), DEFAULT_KEY_PREFIX);
    assert_eq!(c.secret(), None);
    let c = parse(&with_cluster(
        "redis = \"rediss://r.example:6380/2\"\npassword_env = \"RP\"\non_redis_error = \"refuse\"\nreplicas = 3\ntimeout = \"100ms\"\n",
    ))
    .unwrap()
    .cluster
    .unwrap();
    assert_eq!(c.on_redis_error, OnRedisError::Refuse);
    assert_eq!(c.replicas(), 3);
    assert_eq!(c.secret(), Some(Secret::Env("RP".into())));
}

#[test]
fn cluster_url_needs_the_scheme_and_no_password() {
    for url in ["http://127.0.0.1:6379", "127.0.0.1:6379", "redis://"] {
        let text = with_cluster(&format!("redis = \"{url}\"\n"));
        assert_invalid(&text, "cluster.redis", line_of(&text, "redis ="));
    }
    let text = with_cluster("redis = \"redis://:hunter2@127.0.0.1:6379\"\n");
    assert_invalid(&text, "cluster.redis", line_of(&text, "redis ="));
    let err = parse(&text).unwrap_err().to_string();
    assert!(
        !err.contains("hunter2"),
        "the password is not repeated: {err}"
    );
}

#[test]
fn cluster_rules_across_keys() {
    let text = with_cluster(
        "redis = \"redis://127.0.0.1:6379\"\npassword_env = \"P\"\npassword_file = \"/run/p\"\n",
    );
    assert_invalid(&text, "cluster.password", line_of(&text, "password_file"));
    let text = with_cluster("redis = \"redis://127.0.0.1:6379\"\nreplicas = 0\n");
    assert_invalid(&text, "cluster.replicas", line_of(&text, "replicas"));
    let text = with_cluster("redis = \"redis://127.0.0.1:6379\"\nlease_ttl = \"1s\"\n");
    assert_invalid(&text, "cluster.lease_ttl", line_of(&text, "lease_ttl"));
    let text = with_cluster("redis = \"redis://127.0.0.1:6379\"\nca_file = \"ca.pem\"\n");
    assert_invalid(&text, "cluster.ca_file", line_of(&text, "ca_file"));
    let text = with_cluster("redis = \"redis://127.0.0.1:6379\"\non_redis_error = \"ignore\"\n");
    assert!(parse(&text).is_err());
}
