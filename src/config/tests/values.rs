//! Positive tests: sizes, durations, defaults, overrides, warnings, redaction, the shipped config.

use super::*;

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
