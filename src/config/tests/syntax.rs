//! Unknown keys and value syntax: each error names its key and line.

use super::*;

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
