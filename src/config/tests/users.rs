//! User and limit rules.

use super::*;

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
