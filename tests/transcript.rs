//! Session transcripts over an in-memory stream: no socket on the client side,
//! and none toward the provider either (`MemoryUpstream`). Timeouts, the pool
//! wait, the AUTH lockout and pool staleness run in paused time.

mod support;

use std::sync::OnceLock;
use std::time::Duration;

use base64::Engine as _;
use support::memory_upstream::MemoryUpstream;
use support::transcript::{Server, Transcript};
use tokio::time::Instant;

const PASSWORD: &str = "device-password";

fn hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| postern::auth::hash_password(PASSWORD).expect("hash_password"))
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn plain(user: &str, pass: &str) -> String {
    b64(&format!("\0{user}\0{pass}"))
}

/// One loopback listener (`listener` keys added), `[limits]` (`limits` added),
/// the `upstream` block, and user "dev" who may send as `*@example.com`.
fn config(listener: &str, limits: &str, upstream: &str) -> String {
    format!(
        r#"
[server]
hostname = "relay.test"

[[listener]]
name = "smtp"
addr = "127.0.0.1:2525"
{listener}

[tls]
cert = "{{cert}}"
key = "{{key}}"

[limits]
{limits}

{upstream}

[[user]]
name = "dev"
password_hash = "{hash}"
allowed_senders = ["*@example.com"]
"#,
        hash = hash()
    )
}

fn outbox() -> String {
    "[[upstream]]\nname = \"outbox\"\nkind = \"outbox\"\ndir = \"{dir}/outbox\"\n".to_owned()
}

fn outbox_server(listener: &str, limits: &str) -> Server {
    Server::build(
        &config(listener, limits, &outbox()),
        MemoryUpstream::default().connector(),
    )
}

fn provider_server(up: &MemoryUpstream, upstream_keys: &str, limits: &str) -> Server {
    Server::build(
        &config("", limits, &MemoryUpstream::postern_toml(upstream_keys)),
        up.connector(),
    )
}

/// Greeting, EHLO and AUTH PLAIN as "dev".
async fn logged_in(server: &Server) -> Transcript {
    let mut t = server.connect();
    t.expect("220 ").await;
    t.cmd("EHLO printer.lan", "250").await;
    t.cmd(
        &format!("AUTH PLAIN {}", plain("dev", PASSWORD)),
        "235 2.7.0",
    )
    .await;
    t
}

async fn send_message(t: &mut Transcript, to: &str, final_reply: &str) -> String {
    t.cmd("MAIL FROM:<dev@example.com>", "250").await;
    t.cmd(&format!("RCPT TO:<{to}>"), "250").await;
    t.cmd("DATA", "354").await;
    t.send(b"Subject: scan\r\n\r\npage 1\r\n.\r\n").await;
    t.expect(final_reply).await
}

// --- greeting, EHLO, HELO -------------------------------------------------------

#[tokio::test]
async fn greeting_names_the_host() {
    let s = outbox_server("", "");
    let mut t = s.connect();
    t.expect("220 relay.test ESMTP").await;
}

#[tokio::test]
async fn ehlo_lists_the_extensions_of_this_connection() {
    let s = outbox_server("", "max_message_size = \"1MiB\"");
    let mut t = s.connect();
    t.expect("220").await;
    let r = t
        .cmd("EHLO printer.lan", "250-relay.test greets printer.lan")
        .await;
    for ext in [
        "PIPELINING",
        "SIZE 1048576",
        "ENHANCEDSTATUSCODES",
        "AUTH PLAIN LOGIN",
    ] {
        assert!(r.contains(ext), "{ext} missing in {r:?}");
    }
    assert!(
        !r.contains("STARTTLS"),
        "no STARTTLS on a plain listener: {r:?}"
    );
}

#[tokio::test]
async fn helo_only_clients_can_send() {
    let s = outbox_server("", "");
    let mut t = s.connect();
    t.expect("220").await;
    t.cmd("HELO old-scanner", "250 relay.test greets old-scanner")
        .await;
    t.cmd(&format!("AUTH PLAIN {}", plain("dev", PASSWORD)), "235")
        .await;
    send_message(&mut t, "you@example.net", "250 2.0.0 Queued in outbox").await;
}

#[tokio::test]
async fn mail_before_helo_is_out_of_sequence() {
    let s = outbox_server("", "");
    let mut t = s.connect();
    t.expect("220").await;
    t.cmd("MAIL FROM:<dev@example.com>", "503 5.5.1").await;
    t.cmd("AUTH PLAIN", "503 5.5.1").await;
}

#[tokio::test]
async fn unknown_commands_and_bad_syntax_are_refused() {
    let s = outbox_server("", "");
    let mut t = s.connect();
    t.expect("220").await;
    t.cmd("FROB", "500").await;
    t.cmd("EHLO", "501").await;
    t.cmd("NOOP", "250 2.0.0").await;
}

// --- STARTTLS ---------------------------------------------------------------------

#[tokio::test]
async fn starttls_discards_pipelined_input_and_resets_the_session() {
    let s = outbox_server("tls = \"starttls\"", "");
    let mut t = s.connect();
    t.expect("220").await;
    let r = t.cmd("EHLO printer.lan", "250").await;
    assert!(r.contains("STARTTLS"), "{r:?}");
    // A command smuggled behind STARTTLS must never be executed.
    t.send(b"STARTTLS\r\nMAIL FROM:<dev@example.com>\r\n").await;
    t.expect("220 2.0.0").await;
    t.start_tls(&s.cert).await;
    // The session starts over: no EHLO yet, and no reply for the smuggled MAIL.
    t.cmd("MAIL FROM:<dev@example.com>", "503 5.5.1").await;
    let r = t.cmd("EHLO printer.lan", "250").await;
    assert!(
        !r.contains("STARTTLS"),
        "STARTTLS offered inside TLS: {r:?}"
    );
    t.cmd("STARTTLS", "503 5.5.1").await;
    t.cmd(&format!("AUTH PLAIN {}", plain("dev", PASSWORD)), "235")
        .await;
    send_message(&mut t, "you@example.net", "250 2.0.0").await;
    assert_eq!(
        s.metric("postern_tls_handshakes_total{listener=\"smtp\",result=\"ok\"}"),
        1.0
    );
}

#[tokio::test]
async fn starttls_on_a_plain_listener_is_unavailable() {
    let s = outbox_server("", "");
    let mut t = s.connect();
    t.expect("220").await;
    t.cmd("EHLO x", "250").await;
    t.cmd("STARTTLS", "454 4.7.0").await;
}

// --- AUTH ---------------------------------------------------------------------------

#[tokio::test]
async fn auth_plain_with_an_initial_response() {
    let s = outbox_server("", "");
    let _t = logged_in(&s).await;
    assert_eq!(
        s.metric("postern_auth_attempts_total{mechanism=\"plain\",result=\"ok\"}"),
        1.0
    );
}

#[tokio::test]
async fn auth_plain_in_the_challenge_form() {
    let s = outbox_server("", "");
    let mut t = s.connect();
    t.expect("220").await;
    t.cmd("EHLO x", "250").await;
    t.cmd("AUTH PLAIN", "334").await;
    t.cmd(&plain("dev", PASSWORD), "235 2.7.0").await;
}

#[tokio::test]
async fn auth_login_asks_for_user_then_password() {
    let s = outbox_server("", "");
    let mut t = s.connect();
    t.expect("220").await;
    t.cmd("EHLO x", "250").await;
    t.cmd("AUTH LOGIN", "334 VXNlcm5hbWU6").await;
    t.cmd(&b64("dev"), "334 UGFzc3dvcmQ6").await;
    t.cmd(&b64(PASSWORD), "235 2.7.0").await;
    t.cmd("AUTH LOGIN", "503 5.5.1").await;
}

#[tokio::test]
async fn a_star_cancels_the_exchange() {
    let s = outbox_server("", "");
    let mut t = s.connect();
    t.expect("220").await;
    t.cmd("EHLO x", "250").await;
    t.cmd("AUTH LOGIN", "334").await;
    t.cmd("*", "501 5.7.0").await;
    // Back to commands: the next line is a command again.
    t.cmd("NOOP", "250").await;
    t.cmd(&format!("AUTH PLAIN {}", plain("dev", PASSWORD)), "235")
        .await;
}

#[tokio::test]
async fn bad_credentials_and_the_third_failure_closes() {
    let s = outbox_server("", "auth_failures_per_ip_per_minute = 100");
    let mut t = s.connect();
    t.expect("220").await;
    t.cmd("EHLO x", "250").await;
    t.cmd(
        &format!("AUTH PLAIN {}", plain("dev", "wrong")),
        "535 5.7.8",
    )
    .await;
    t.cmd(&format!("AUTH PLAIN {}", plain("nobody", "x")), "535 5.7.8")
        .await;
    t.cmd("AUTH PLAIN", "334").await;
    t.cmd("!!!notbase64", "501 5.5.2").await;
    t.expect("421 4.7.0").await;
    assert!(t.closed().await);
}

#[tokio::test(start_paused = true)]
async fn the_auth_lockout_lifts_after_its_minute() {
    let s = outbox_server("", "auth_failures_per_ip_per_minute = 2");
    let mut t = s.connect();
    t.expect("220").await;
    t.cmd("EHLO x", "250").await;
    for _ in 0..2 {
        t.cmd(&format!("AUTH PLAIN {}", plain("dev", "wrong")), "535")
            .await;
    }
    t.cmd(&format!("AUTH PLAIN {}", plain("dev", "wrong")), "535")
        .await;
    t.expect("421 4.7.0").await;
    // The address is locked out now, even with the right password.
    let mut t = s.connect();
    t.expect("220").await;
    t.cmd("EHLO x", "250").await;
    t.cmd(
        &format!("AUTH PLAIN {}", plain("dev", PASSWORD)),
        "454 4.7.0",
    )
    .await;
    tokio::time::sleep(Duration::from_secs(61)).await;
    t.cmd(&format!("AUTH PLAIN {}", plain("dev", PASSWORD)), "235")
        .await;
}

#[tokio::test]
async fn a_reloaded_auth_failure_limit_takes_effect() {
    let s = outbox_server("", "auth_failures_per_ip_per_minute = 100");
    let tight = support::transcript::load(
        &config("", "auth_failures_per_ip_per_minute = 1", &outbox()),
        s.dir.path(),
        &s.cert,
    );
    s.reloader().reload(tight).expect("reload");
    let mut t = s.connect();
    t.expect("220").await;
    t.cmd("EHLO x", "250").await;
    t.cmd(&format!("AUTH PLAIN {}", plain("dev", "wrong")), "535")
        .await;
    t.cmd(&format!("AUTH PLAIN {}", plain("dev", "wrong")), "535")
        .await;
    // With the old limit of 100 this would be a third 535; with 1 it is locked.
    t.cmd(
        &format!("AUTH PLAIN {}", plain("dev", PASSWORD)),
        "454 4.7.0",
    )
    .await;
}

// --- the verified-credential cache ----------------------------------------------------

fn cache_hits(s: &Server) -> (f64, f64) {
    (
        s.metric("postern_auth_cache_total{result=\"hit\"}"),
        s.metric("postern_auth_cache_total{result=\"miss\"}"),
    )
}

/// A new session from "dev" that AUTHs with `password` and expects `want`.
async fn auth_session(s: &Server, password: &str, want: &str) {
    let mut t = s.connect();
    t.expect("220 ").await;
    t.cmd("EHLO printer.lan", "250").await;
    t.cmd(&format!("AUTH PLAIN {}", plain("dev", password)), want)
        .await;
}

#[tokio::test]
async fn a_returning_device_is_answered_from_the_auth_cache() {
    let s = outbox_server("", "");
    auth_session(&s, PASSWORD, "235 2.7.0").await;
    assert_eq!(cache_hits(&s), (0.0, 1.0), "the first AUTH runs argon2");
    let mut t = logged_in(&s).await;
    assert_eq!(cache_hits(&s), (1.0, 1.0), "the second is remembered");
    // The cached success is a full login: the session sends.
    send_message(&mut t, "you@example.net", "250 2.0.0").await;
    assert_eq!(
        s.metric("postern_auth_attempts_total{mechanism=\"plain\",result=\"ok\"}"),
        2.0
    );
}

#[tokio::test]
async fn a_wrong_password_after_a_cached_right_one_is_refused() {
    let s = outbox_server("", "");
    auth_session(&s, PASSWORD, "235").await;
    auth_session(&s, PASSWORD, "235").await;
    assert_eq!(cache_hits(&s), (1.0, 1.0));
    for wrong in ["wrong", "device-password ", "device-passwor", ""] {
        auth_session(&s, wrong, "535 5.7.8").await;
    }
    // Each wrong one was checked by the hash (a miss), and counted as a
    // failure; the empty one is refused by the SASL decoder before any check.
    assert_eq!(cache_hits(&s), (1.0, 4.0));
    assert_eq!(
        s.metric("postern_auth_attempts_total{mechanism=\"plain\",result=\"fail\"}"),
        4.0
    );
    // Failures do not evict the right password, nor are they remembered.
    auth_session(&s, PASSWORD, "235").await;
    auth_session(&s, "wrong", "535").await;
    assert_eq!(cache_hits(&s), (2.0, 5.0));
}

#[tokio::test]
async fn the_throttle_refuses_even_a_cached_password() {
    let s = outbox_server("", "auth_failures_per_ip_per_minute = 2");
    auth_session(&s, PASSWORD, "235").await;
    for _ in 0..3 {
        auth_session(&s, "wrong", "535").await;
    }
    // The third failure went over the limit: the address is locked out.
    auth_session(&s, PASSWORD, "454 4.7.0").await;
    assert_eq!(
        cache_hits(&s),
        (0.0, 4.0),
        "a locked address is not looked up"
    );
}

#[tokio::test]
async fn a_changed_hash_on_reload_refuses_the_old_password() {
    let s = outbox_server("", "");
    auth_session(&s, PASSWORD, "235").await;
    auth_session(&s, PASSWORD, "235").await;
    assert_eq!(cache_hits(&s), (1.0, 1.0));
    // The same config again keeps what the cache knows.
    let same = support::transcript::load(&config("", "", &outbox()), s.dir.path(), &s.cert);
    s.reloader().reload(same).expect("reload");
    auth_session(&s, PASSWORD, "235").await;
    assert_eq!(cache_hits(&s), (2.0, 1.0), "unchanged user: still cached");
    // A new hash for "dev": the old password no longer works, cached or not.
    let new_hash = postern::auth::hash_password("new-password").expect("hash");
    let changed = config("", "", &outbox()).replace(hash(), &new_hash);
    let changed = support::transcript::load(&changed, s.dir.path(), &s.cert);
    s.reloader().reload(changed).expect("reload");
    auth_session(&s, PASSWORD, "535 5.7.8").await;
    assert_eq!(cache_hits(&s), (2.0, 2.0));
    auth_session(&s, "new-password", "235").await;
    auth_session(&s, "new-password", "235").await;
    assert_eq!(cache_hits(&s), (3.0, 3.0));
}

#[tokio::test]
async fn a_removed_user_is_refused_after_reload() {
    let s = outbox_server("", "");
    auth_session(&s, PASSWORD, "235").await;
    let without = config("", "", &outbox()).replace("name = \"dev\"", "name = \"other\"");
    let without = support::transcript::load(&without, s.dir.path(), &s.cert);
    s.reloader().reload(without).expect("reload");
    auth_session(&s, PASSWORD, "535 5.7.8").await;
    assert_eq!(cache_hits(&s), (0.0, 2.0));
    assert_eq!(
        s.state.shared.policy().users.cached(),
        0,
        "dev's entry is gone"
    );
}

#[tokio::test(start_paused = true)]
async fn a_cached_success_expires_after_auth_cache_ttl() {
    let toml = config("", "", &outbox()).replace(
        "hostname = \"relay.test\"",
        "hostname = \"relay.test\"\nauth_cache_ttl = \"2m\"",
    );
    let s = Server::build(&toml, MemoryUpstream::default().connector());
    auth_session(&s, PASSWORD, "235").await;
    tokio::time::sleep(Duration::from_secs(119)).await;
    auth_session(&s, PASSWORD, "235").await;
    assert_eq!(cache_hits(&s), (1.0, 1.0), "within the TTL");
    tokio::time::sleep(Duration::from_secs(2)).await;
    auth_session(&s, PASSWORD, "235").await;
    assert_eq!(cache_hits(&s), (1.0, 2.0), "past the TTL: argon2 again");
    auth_session(&s, PASSWORD, "235").await;
    assert_eq!(cache_hits(&s), (2.0, 2.0), "and remembered anew");
}

#[tokio::test]
async fn auth_cache_ttl_zero_checks_every_time() {
    let toml = config("", "", &outbox()).replace(
        "hostname = \"relay.test\"",
        "hostname = \"relay.test\"\nauth_cache_ttl = 0",
    );
    let s = Server::build(&toml, MemoryUpstream::default().connector());
    auth_session(&s, PASSWORD, "235").await;
    auth_session(&s, PASSWORD, "235").await;
    assert_eq!(
        cache_hits(&s),
        (0.0, 0.0),
        "nothing counted with the cache off"
    );
    assert_eq!(s.state.shared.policy().users.cached(), 0);
    assert_eq!(
        s.metric("postern_auth_attempts_total{mechanism=\"plain\",result=\"ok\"}"),
        2.0
    );
}

// --- MAIL, RCPT, DATA ------------------------------------------------------------

#[tokio::test]
async fn mail_needs_an_identity() {
    let s = outbox_server("", "");
    let mut t = s.connect();
    t.expect("220").await;
    t.cmd("EHLO x", "250").await;
    t.cmd("MAIL FROM:<dev@example.com>", "530 5.7.0").await;
}

#[tokio::test]
async fn a_sender_outside_allowed_senders_is_refused() {
    let s = outbox_server("", "");
    let mut t = logged_in(&s).await;
    t.cmd("MAIL FROM:<ceo@elsewhere.test>", "550 5.7.1").await;
    t.cmd("MAIL FROM:<dev@example.com>", "250 2.1.0").await;
}

#[tokio::test]
async fn a_whole_transaction_into_the_outbox() {
    let s = outbox_server("", "");
    let mut t = logged_in(&s).await;
    let r = send_message(&mut t, "you@example.net", "250 2.0.0 Queued in outbox as ").await;
    let id = r.rsplit(' ').next().expect("id");
    let eml = s.dir.path().join("outbox").join(format!("{id}.eml"));
    let body = std::fs::read(&eml).expect("message file");
    assert_eq!(body, b"Subject: scan\r\n\r\npage 1\r\n");
    t.cmd("QUIT", "221 2.0.0").await;
    assert!(t.closed().await);
}

#[tokio::test]
async fn rset_abandons_the_transaction() {
    let s = outbox_server("", "");
    let mut t = logged_in(&s).await;
    t.cmd("MAIL FROM:<dev@example.com>", "250").await;
    t.cmd("RCPT TO:<you@example.net>", "250").await;
    t.cmd("RSET", "250 2.0.0").await;
    t.cmd("RCPT TO:<you@example.net>", "503 5.5.1").await;
    t.cmd("DATA", "503 5.5.1").await;
}

#[tokio::test]
async fn data_needs_a_recipient() {
    let s = outbox_server("", "");
    let mut t = logged_in(&s).await;
    t.cmd("MAIL FROM:<dev@example.com>", "250").await;
    t.cmd("DATA", "503 5.5.1 Need RCPT").await;
    t.cmd("MAIL FROM:<dev@example.com>", "503 5.5.1 Nested")
        .await;
}

#[tokio::test]
async fn help_vrfy_and_noop() {
    let s = outbox_server("", "");
    let mut t = s.connect();
    t.expect("220").await;
    t.cmd("HELP", "214 2.0.0").await;
    t.cmd("VRFY someone", "252 2.5.2").await;
    t.cmd("NOOP", "250 2.0.0").await;
}

#[tokio::test]
async fn a_pipelined_batch_is_answered_in_order() {
    let s = outbox_server("", "");
    let mut t = s.connect();
    t.expect("220").await;
    t.send(
        format!(
            "EHLO x\r\nAUTH PLAIN {}\r\nMAIL FROM:<dev@example.com>\r\nRCPT TO:<a@example.net>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n",
            plain("dev", PASSWORD)
        )
        .as_bytes(),
    )
    .await;
    for want in ["250-", "235", "250 2.1.0", "250 2.1.5", "250 2.1.5", "354"] {
        t.expect(want).await;
    }
    t.send(b"hi\r\n.\r\nQUIT\r\n").await;
    t.expect("250 2.0.0 Queued").await;
    t.expect("221").await;
}

#[tokio::test]
async fn the_recipient_limit_answers_452() {
    let s = outbox_server("", "max_recipients = 2");
    let mut t = logged_in(&s).await;
    t.cmd("MAIL FROM:<dev@example.com>", "250").await;
    t.cmd("RCPT TO:<a@example.net>", "250").await;
    t.cmd("RCPT TO:<b@example.net>", "250").await;
    t.cmd("RCPT TO:<c@example.net>", "452 4.5.3").await;
    assert_eq!(
        s.metric("postern_limit_hits_total{limit=\"max_recipients\",upstream=\"-\",user=\"dev\"}"),
        1.0
    );
}

#[tokio::test]
async fn a_declared_size_over_the_limit_is_refused_at_mail() {
    let s = outbox_server("", "max_message_size = \"64KiB\"");
    let mut t = logged_in(&s).await;
    t.cmd("MAIL FROM:<dev@example.com> SIZE=70000", "552 5.3.4")
        .await;
}

#[tokio::test]
async fn an_oversize_body_is_read_to_its_end_then_refused() {
    let s = outbox_server("", "max_message_size = \"64KiB\"");
    let mut t = logged_in(&s).await;
    t.cmd("MAIL FROM:<dev@example.com>", "250").await;
    t.cmd("RCPT TO:<you@example.net>", "250").await;
    t.cmd("DATA", "354").await;
    let line = format!("{}\r\n", "x".repeat(900));
    for _ in 0..80 {
        t.send(line.as_bytes()).await;
    }
    t.send(b".\r\n").await;
    t.expect("552 5.3.4").await;
    // Nothing was kept, and the session goes on.
    t.cmd("NOOP", "250").await;
    let kept = std::fs::read_dir(s.dir.path().join("outbox"))
        .expect("outbox dir")
        .count();
    assert_eq!(kept, 0);
}

#[tokio::test]
async fn a_bare_lf_in_the_body_refuses_the_message() {
    let s = outbox_server("", "");
    let mut t = logged_in(&s).await;
    t.cmd("MAIL FROM:<dev@example.com>", "250").await;
    t.cmd("RCPT TO:<you@example.net>", "250").await;
    t.cmd("DATA", "354").await;
    t.send(b"line\n.\nMAIL FROM:<evil@example.com>\r\n\r\n.\r\n")
        .await;
    t.expect("554 5.6.0").await;
}

#[tokio::test]
async fn a_bare_lf_command_and_an_overlong_line_are_refused() {
    let s = outbox_server("", "");
    let mut t = s.connect();
    t.expect("220").await;
    t.send(b"NOOP\n").await;
    t.expect("500 5.5.2").await;
    t.send(format!("NOOP {}\r\n", "x".repeat(600)).as_bytes())
        .await;
    t.expect("500 5.5.2 Line too long").await;
    t.cmd("NOOP", "250").await;
}

// --- time and shutdown ----------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn an_idle_client_is_cut_after_idle_timeout() {
    let s = outbox_server("", "idle_timeout = \"30s\"");
    let mut t = s.connect();
    t.expect("220").await;
    let started = Instant::now();
    t.expect("421 4.4.2").await;
    assert!(
        started.elapsed() >= Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    assert!(t.closed().await);
}

#[tokio::test]
async fn shutdown_closes_an_idle_session_with_421() {
    let s = outbox_server("", "");
    let mut t = logged_in(&s).await;
    s.shut_down();
    t.expect("421 4.3.0").await;
    assert!(t.closed().await);
}

#[tokio::test]
async fn shutdown_lets_a_message_in_data_finish() {
    let s = outbox_server("", "");
    let mut t = logged_in(&s).await;
    t.cmd("MAIL FROM:<dev@example.com>", "250").await;
    t.cmd("RCPT TO:<you@example.net>", "250").await;
    t.cmd("DATA", "354").await;
    t.send(b"Subject: half\r\n").await;
    s.shut_down();
    tokio::task::yield_now().await;
    t.send(b"\r\nrest\r\n.\r\n").await;
    t.expect("250 2.0.0 Queued").await;
    // Then the session is told the server is going away.
    t.expect("421 4.3.0").await;
}

// --- toward a provider ------------------------------------------------------------

#[tokio::test]
async fn relay_through_the_provider_with_its_verdicts() {
    let up = MemoryUpstream::default();
    let s = provider_server(&up, "", "");
    let mut t = logged_in(&s).await;
    t.cmd("MAIL FROM:<dev@example.com>", "250 2.1.0").await;
    t.cmd(
        "RCPT TO:<reject-me@example.net>",
        "550 5.1.1 upstream mem: no such user",
    )
    .await;
    t.cmd("RCPT TO:<busy@example.net>", "451 4.3.0 upstream mem:")
        .await;
    t.cmd("RCPT TO:<you@example.net>", "250 2.1.5").await;
    t.cmd("DATA", "354").await;
    // "..dotted" is the stuffed form of ".dotted": unstuffed, then stuffed again upstream.
    t.send(b"Subject: scan\r\n\r\n..dotted line\r\n.\r\n").await;
    t.expect("250 2.0.0 upstream mem: queued as M1").await;
    let m = up.messages();
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].to, vec!["you@example.net".to_owned()]);
    assert_eq!(m[0].data, b"Subject: scan\r\n\r\n..dotted line\r\n");
    let auth = up
        .commands()
        .into_iter()
        .find(|c| c.starts_with("AUTH PLAIN "))
        .expect("postern authenticated upstream");
    assert_eq!(
        auth,
        format!("AUTH PLAIN {}", plain("provider-user", "provider-secret"))
    );
}

#[tokio::test]
async fn pipelined_commands_reach_the_provider_together() {
    let up = MemoryUpstream::default();
    let s = provider_server(&up, "", "");
    let mut t = logged_in(&s).await;
    t.send(b"MAIL FROM:<dev@example.com>\r\nRCPT TO:<a@example.net>\r\nRCPT TO:<reject@example.net>\r\nDATA\r\n")
        .await;
    for want in ["250 2.1.0", "250 2.1.5", "550 5.1.1", "354"] {
        t.expect(want).await;
    }
    t.send(b"hi\r\n.\r\n").await;
    t.expect("250 2.0.0").await;
    assert_eq!(up.messages()[0].to, vec!["a@example.net".to_owned()]);
}

#[tokio::test(start_paused = true)]
async fn pool_wait_ends_with_451_when_every_connection_is_busy() {
    let up = MemoryUpstream::default();
    let s = provider_server(&up, "max_connections = 1\npool_wait = \"10s\"", "");
    let mut first = logged_in(&s).await;
    first.cmd("MAIL FROM:<dev@example.com>", "250").await;
    let mut second = logged_in(&s).await;
    let started = Instant::now();
    second.cmd("MAIL FROM:<dev@example.com>", "451 4.4.5").await;
    assert!(
        started.elapsed() >= Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        s.metric(
            "postern_limit_hits_total{limit=\"upstream_connections\",upstream=\"mem\",user=\"dev\"}"
        ),
        1.0,
        "counted once"
    );
    // Once the first transaction ends, its connection serves the second session.
    first.cmd("RSET", "250").await;
    second.cmd("MAIL FROM:<dev@example.com>", "250").await;
    assert_eq!(up.connections(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_kept_connection_is_reused_until_it_goes_stale() {
    let up = MemoryUpstream::default();
    let s = provider_server(&up, "idle_timeout = \"25s\"", "");
    let mut t = logged_in(&s).await;
    send_message(&mut t, "a@example.net", "250 2.0.0").await;
    t.cmd("NOOP", "250").await;
    send_message(&mut t, "b@example.net", "250 2.0.0").await;
    assert_eq!(up.connections(), 1, "reused while fresh");
    tokio::time::sleep(Duration::from_secs(30)).await;
    send_message(&mut t, "c@example.net", "250 2.0.0").await;
    assert_eq!(
        up.connections(),
        2,
        "a stale connection is replaced, not reused"
    );
    assert_eq!(up.messages().len(), 3);
}

#[tokio::test]
async fn a_provider_that_hangs_up_loses_only_that_transaction() {
    let up = MemoryUpstream::default();
    let s = provider_server(&up, "", "");
    let mut t = logged_in(&s).await;
    t.cmd("MAIL FROM:<dev@example.com>", "250").await;
    t.cmd(
        "RCPT TO:<drop@example.net>",
        "451 4.4.2 Upstream connection lost",
    )
    .await;
    // The transaction is gone with the connection; the next one gets a new connection.
    t.cmd("RCPT TO:<you@example.net>", "503 5.5.1").await;
    send_message(&mut t, "you@example.net", "250 2.0.0").await;
    assert_eq!(up.connections(), 2);
}
