//! `[spool]` and the delivery keys: one negative test per rule (the key the
//! error names), the defaults, and what `postern queue` says without a spool.

use postern::Config;
use postern::config::{ConfigError, Delivery};

const BASE: &str = r#"[[listener]]
name = "local"
addr = "127.0.0.1:2525"

[[user]]
name = "demo"
password_hash = "$argon2id$v=19$m=19456,t=2,p=1$HhmSndMIFnC36bhx5rvSWg$TMuz1DbDMcPtAQI96m13A463eNnAPsdTV9Vrt1TMUsY"
allowed_senders = ["*@example.com"]
upstream = "up"
"#;

fn upstream(name: &str, extra: &str) -> String {
    format!(
        "[[upstream]]\nname = \"{name}\"\nkind = \"smtp\"\naddr = \"smtp.example.net:587\"\ntls = \"starttls\"\n{extra}\n"
    )
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml_str(text, "test.toml")
}

#[track_caller]
fn invalid(text: &str, key: &str) {
    match parse(text) {
        Err(ConfigError::Invalid { key: k, .. }) => assert_eq!(k, key, "{text}"),
        Err(e) => panic!("expected a rule on {key}, got {e}"),
        Ok(_) => panic!("expected {key} to be refused:\n{text}"),
    }
}

#[test]
fn defaults_and_a_spooling_upstream() {
    let text = format!(
        "{BASE}[spool]\ndir = \"var/spool\"\n{}",
        upstream("up", "delivery = \"spool\"")
    );
    let c = parse(&text).unwrap();
    let s = c.spool.as_ref().unwrap().settings();
    assert_eq!(s.max_size, 1 << 30);
    assert_eq!(s.max_age.as_secs(), 5 * 24 * 3600);
    assert_eq!(s.retry_initial.as_secs(), 60);
    assert_eq!(s.retry_max.as_secs(), 3600);
    assert_eq!(c.upstreams[0].delivery_mode(), Delivery::Spool);
    // The fair share: half of max_connections (default 10), at least 1.
    assert_eq!(postern::config::spool::fair_share(&c.upstreams[0]), 5);
    let no_delivery = format!("{BASE}{}", upstream("up", ""));
    assert_eq!(
        parse(&no_delivery).unwrap().upstreams[0].delivery_mode(),
        Delivery::Relay
    );
}

#[test]
fn spooling_needs_a_spool_section() {
    invalid(
        &format!("{BASE}{}", upstream("up", "delivery = \"fallback\"")),
        "upstream.delivery",
    );
}

#[test]
fn an_outbox_does_not_spool() {
    let text = format!(
        "{BASE}[spool]\ndir = \"s\"\n[[upstream]]\nname = \"up\"\nkind = \"outbox\"\ndir = \"o\"\ndelivery = \"spool\"\n"
    );
    invalid(&text, "upstream.delivery");
}

#[test]
fn unknown_delivery_words_and_spool_keys_are_refused() {
    assert!(parse(&format!("{BASE}{}", upstream("up", "delivery = \"queue\""))).is_err());
    let text = format!(
        "{BASE}[spool]\ndir = \"s\"\nmax_sise = \"1GiB\"\n{}",
        upstream("up", "")
    );
    let e = parse(&text).unwrap_err().to_string();
    assert!(e.contains("max_sise"), "{e}");
}

#[test]
fn spool_durations_sizes_and_notify() {
    let with = |keys: &str| format!("{BASE}[spool]\ndir = \"s\"\n{keys}\n{}", upstream("up", ""));
    invalid(&with("retry_initial = \"0s\""), "spool.retry_initial");
    invalid(&with("max_age = 0"), "spool.max_age");
    invalid(
        &with("retry_initial = \"2h\"\nretry_max = \"1h\""),
        "spool.retry_max",
    );
    invalid(&with("max_size = 0"), "spool.max_size");
    invalid(&with("notify = \"postmaster\""), "spool.notify");
    invalid(
        &format!("{BASE}[spool]\ndir = \"\"\n{}", upstream("up", "")),
        "spool.dir",
    );
    parse(&with(
        "notify = \"postmaster@example.lan\"\nmax_size = \"10MiB\"",
    ))
    .unwrap();
    // The contract writes max_age = "5d": days are a duration unit.
    let c = parse(&with("max_age = \"5d\"")).unwrap();
    assert_eq!(c.spool.unwrap().settings().max_age.as_secs(), 5 * 86400);
}

#[test]
fn fallbacks_must_be_other_smtp_upstreams() {
    invalid(
        &format!("{BASE}{}", upstream("up", "fallback = [\"nowhere\"]")),
        "upstream.fallback",
    );
    invalid(
        &format!("{BASE}{}", upstream("up", "fallback = [\"up\"]")),
        "upstream.fallback",
    );
    let ok = format!(
        "{BASE}{}{}",
        upstream("up", "fallback = [\"backup\"]"),
        upstream("backup", "")
    );
    let c = parse(&ok).unwrap();
    assert_eq!(*c.upstreams[0].fallback[0].get_ref(), "backup");
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}

#[test]
fn quotas_are_read_without_a_warning() {
    let c = parse(&format!(
        "{BASE}{}",
        upstream("up", "messages_per_day = 100\nrecipients_per_day = 500")
    ))
    .unwrap();
    assert_eq!(c.upstreams[0].messages_per_day, Some(100));
    assert_eq!(c.upstreams[0].recipients_per_day, Some(500));
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}

#[test]
fn the_fair_share_is_at_least_one() {
    invalid(
        &format!(
            "{BASE}{}",
            upstream("up", "max_upstream_connections_per_user = 0")
        ),
        "upstream.max_upstream_connections_per_user",
    );
    let one = parse(&format!("{BASE}{}", upstream("up", "max_connections = 1"))).unwrap();
    assert_eq!(postern::config::spool::fair_share(&one.upstreams[0]), 1);
}

#[test]
fn queue_commands_need_a_spool() {
    let c = parse(&format!("{BASE}{}", upstream("up", ""))).unwrap();
    let mut out = Vec::new();
    let e = postern::spool::cli::for_config(
        &c,
        postern::spool::cli::QueueCmd::List { json: false },
        &mut out,
    )
    .unwrap_err();
    assert!(e.contains("no [spool]"), "{e}");
}
