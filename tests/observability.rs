//! Monitoring an operator can trust: every series exists from the start,
//! every transaction outcome is counted once under its own word and logged
//! once with every field, health follows the provider, and `relay_ms` starts
//! at end-of-data. Sessions over in-memory pipes, in paused time.

mod support;

use std::sync::Arc;
use std::time::Duration;

use postern::net::{Connecting, Connector};
use support::memory_upstream::MemoryUpstream;
use support::observe::{config, logged_in, provider, send};
use support::transcript::Server;

/// Connects to nothing: every dial fails as an unreachable provider does.
struct Unreachable;

impl Connector for Unreachable {
    fn connect<'a>(&'a self, _addr: &'a str) -> Connecting<'a> {
        Box::pin(async {
            Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionRefused,
                "connection refused",
            ))
        })
    }
}

/// Every sample of `family` whose labels contain `label`, summed.
fn sum(s: &Server, family: &str, label: &str) -> f64 {
    s.metrics()
        .lines()
        .filter(|l| l.starts_with(&format!("{family}{{")) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}

fn messages(s: &Server, result: &str) -> f64 {
    s.metric(&format!(
        "postern_messages_total{{result=\"{result}\",user=\"dev\"}}"
    ))
}

fn recipients(s: &Server, result: &str) -> f64 {
    s.metric(&format!(
        "postern_recipients_total{{result=\"{result}\",user=\"dev\"}}"
    ))
}

// --- every series from the start -------------------------------------------

#[tokio::test]
async fn every_known_series_exists_at_zero_from_the_start() {
    let up = MemoryUpstream::default();
    let s = provider(&up, "", "");
    let text = s.metrics();
    let has = |sample: &str| {
        text.lines()
            .any(|l| l.strip_prefix(sample).is_some_and(|v| v.starts_with(' ')))
    };
    let mut want = Vec::new();
    for r in postern::refusal::MESSAGE_RESULTS {
        want.push(format!(
            "postern_messages_total{{result=\"{r}\",user=\"dev\"}} 0"
        ));
    }
    want.push("postern_messages_total{result=\"rejected_auth_required\",user=\"-\"} 0".into());
    for r in postern::refusal::RECIPIENT_RESULTS {
        want.push(format!(
            "postern_recipients_total{{result=\"{r}\",user=\"dev\"}} 0"
        ));
    }
    for l in postern::metrics::USER_LIMITS {
        want.push(format!(
            "postern_limit_hits_total{{limit=\"{l}\",upstream=\"-\",user=\"dev\"}} 0"
        ));
    }
    for l in postern::metrics::SERVER_LIMITS {
        want.push(format!(
            "postern_limit_hits_total{{limit=\"{l}\",upstream=\"-\",user=\"-\"}} 0"
        ));
    }
    want.push(
        "postern_limit_hits_total{limit=\"upstream_connections\",upstream=\"mem\",user=\"dev\"} 0"
            .into(),
    );
    for stage in postern::upstream::UpstreamError::CONNECT_STAGES {
        want.push(format!(
            "postern_upstream_connections_failed_total{{stage=\"{stage}\",upstream=\"mem\"}} 0"
        ));
        want.push(format!(
            "postern_upstream_health_checks_total{{result=\"{stage}\",upstream=\"mem\"}} 0"
        ));
    }
    for m in postern::metrics::AUTH_MECHANISMS {
        for r in postern::metrics::AUTH_RESULTS {
            want.push(format!(
                "postern_auth_attempts_total{{mechanism=\"{m}\",result=\"{r}\"}} 0"
            ));
        }
    }
    for r in postern::metrics::TLS_RESULTS {
        want.push(format!(
            "postern_tls_handshakes_total{{listener=\"smtp\",result=\"{r}\"}} 0"
        ));
    }
    for r in ["max_connections", "connections_per_ip"] {
        want.push(format!(
            "postern_connections_rejected_total{{listener=\"smtp\",reason=\"{r}\"}} 0"
        ));
    }
    want.extend(
        [
            "postern_config_reloads_total{result=\"ok\"} 0",
            "postern_config_reloads_total{result=\"error\"} 0",
            "postern_connections_opened_total{listener=\"smtp\"} 0",
            "postern_message_bytes_total{user=\"dev\"} 0",
            "postern_upstream_replies_total{class=\"5xx\",command=\"DATA_END\",upstream=\"mem\"} 0",
            "postern_upstream_connections_opened_total{upstream=\"mem\"} 0",
            "postern_upstream_up{upstream=\"mem\"} 0",
            "postern_upstream_pool_max_connections{upstream=\"mem\"} 10",
            "postern_upstream_pool_waiters{upstream=\"mem\"} 0",
            "postern_upstream_pool_connections_in_use{upstream=\"mem\"} 0",
            "postern_message_relay_duration_seconds_count{upstream=\"mem\"} 0",
            "postern_message_relay_duration_seconds_bucket{upstream=\"mem\",le=\"600\"} 0",
            "postern_upstream_command_duration_seconds_bucket{command=\"MAIL\",upstream=\"mem\",le=\"300\"} 0",
            "postern_config_last_reload_success 1",
        ]
        .map(String::from),
    );
    // The test certificate carries rcgen's default notAfter.
    want.push(format!(
        "postern_tls_certificate_expiry_timestamp_seconds{{listener=\"smtp\"}} {}",
        rcgen::CertificateParams::default()
            .not_after
            .unix_timestamp()
    ));
    want.push(format!(
        "postern_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    ));
    let missing: Vec<_> = want
        .iter()
        .filter(|w| !text.lines().any(|l| l == w.as_str()))
        .collect();
    assert!(missing.is_empty(), "missing at start: {missing:#?}\n{text}");
    assert!(has("postern_config_last_reload_success_timestamp_seconds"));
    assert!(has("postern_process_resident_memory_bytes"), "{text}");
}

// --- every outcome once ------------------------------------------------------

/// After `run`, `postern_messages_total{user="dev"}` is 1 under `result` and 0
/// under every other word.
async fn counted_once(s: &Server, result: &str) {
    assert_eq!(messages(s, result), 1.0, "{result}\n{}", s.metrics());
    assert_eq!(
        sum(s, "postern_messages_total", "user=\"dev\""),
        1.0,
        "{result}: counted more than once\n{}",
        s.metrics()
    );
}

#[tokio::test(start_paused = true)]
async fn an_accepted_message_is_counted_with_its_bytes() {
    let up = MemoryUpstream::default();
    let s = provider(&up, "", "");
    let mut t = logged_in(&s).await;
    let body = "Subject: x\r\n\r\nhello\r\n.\r\n";
    send(&mut t, "dev@example.com", body, "250 2.0.0").await;
    counted_once(&s, "accepted").await;
    assert_eq!(recipients(&s, "accepted"), 1.0);
    assert!(s.metric("postern_message_bytes_total{user=\"dev\"}") > 0.0);
    assert_eq!(
        s.metric("postern_message_relay_duration_seconds_count{upstream=\"mem\"}"),
        1.0
    );
}

#[tokio::test(start_paused = true)]
async fn refusals_at_mail_are_counted_under_their_word() {
    // The provider's refusals of MAIL come with the first RCPT (MAIL ahead).
    let rows: [(&str, &str, &str, Option<&str>, &str); 4] = [
        (
            "",
            "MAIL FROM:<x@elsewhere.org>",
            "550 5.7.1",
            None,
            "rejected_sender",
        ),
        (
            "",
            "MAIL FROM:<dev@example.com> SIZE=99999999",
            "552 5.3.4",
            None,
            "rejected_too_big",
        ),
        (
            "",
            "MAIL FROM:<reject@example.com>",
            "250",
            Some("553 5.7.1"),
            "upstream_rejected",
        ),
        (
            "",
            "MAIL FROM:<tempfail@example.com>",
            "250",
            Some("451 4.3.2"),
            "upstream_tempfail",
        ),
    ];
    for (limits, line, reply, at_rcpt, result) in rows {
        let up = MemoryUpstream::default();
        let s = provider(&up, "", limits);
        let mut t = logged_in(&s).await;
        t.cmd(line, reply).await;
        if let Some(r) = at_rcpt {
            t.cmd("RCPT TO:<someone@example.net>", r).await;
        }
        t.cmd("QUIT", "221").await;
        t.finished().await;
        counted_once(&s, result).await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_rate_limited_mail_counts_the_limit_with_its_user() {
    let up = MemoryUpstream::default();
    let s = provider(&up, "", "messages_per_minute = 1");
    let mut t = logged_in(&s).await;
    send(&mut t, "dev@example.com", "Subject: 1\r\n\r\n.\r\n", "250").await;
    t.cmd("MAIL FROM:<dev@example.com>", "450 4.7.1").await;
    assert_eq!(messages(&s, "accepted"), 1.0);
    assert_eq!(messages(&s, "rejected_rate"), 1.0);
    assert_eq!(sum(&s, "postern_messages_total", "user=\"dev\""), 2.0);
    assert_eq!(
        s.metric(
            "postern_limit_hits_total{limit=\"messages_per_minute\",upstream=\"-\",user=\"dev\"}"
        ),
        1.0
    );
}

#[tokio::test(start_paused = true)]
async fn provider_verdicts_at_end_of_data_are_counted() {
    for (header, reply, result) in [
        ("X-Verdict: tempfail", "451 4.3.0", "upstream_tempfail"),
        ("X-Verdict: reject", "554 5.6.0", "upstream_rejected"),
    ] {
        let up = MemoryUpstream::default();
        let s = provider(&up, "", "");
        let mut t = logged_in(&s).await;
        let body = format!("{header}\r\nSubject: x\r\n\r\nhi\r\n.\r\n");
        send(&mut t, "dev@example.com", &body, reply).await;
        counted_once(&s, result).await;
        assert_eq!(s.metric("postern_message_bytes_total{user=\"dev\"}"), 0.0);
    }
}

#[tokio::test(start_paused = true)]
async fn a_message_refused_by_the_framer_is_counted() {
    let up = MemoryUpstream::default();
    let s = provider(&up, "", "");
    let mut t = logged_in(&s).await;
    send(
        &mut t,
        "dev@example.com",
        "Subject: x\r\n\r\nbare\nLF\r\n.\r\n",
        "554 5.6.0",
    )
    .await;
    counted_once(&s, "rejected_bare_line_ending").await;
}

#[tokio::test(start_paused = true)]
async fn recipients_refused_by_the_provider_and_then_reset() {
    let up = MemoryUpstream::default();
    let s = provider(&up, "", "");
    let mut t = logged_in(&s).await;
    t.cmd("MAIL FROM:<dev@example.com>", "250").await;
    t.cmd("RCPT TO:<reject@example.net>", "550 5.1.1").await;
    t.cmd("RCPT TO:<busy@example.net>", "451 4.3.0").await;
    t.cmd("RSET", "250").await;
    counted_once(&s, "rejected_no_recipients").await;
    assert_eq!(recipients(&s, "upstream_rejected"), 1.0);
    assert_eq!(recipients(&s, "upstream_tempfail"), 1.0);
}

#[tokio::test(start_paused = true)]
async fn local_recipient_refusals_are_counted() {
    let up = MemoryUpstream::default();
    let s = provider(&up, "", "max_recipients = 1");
    let mut t = logged_in(&s).await;
    t.cmd("MAIL FROM:<dev@example.com>", "250").await;
    t.cmd("RCPT TO:<a@example.net>", "250").await;
    t.cmd("RCPT TO:<b@example.net>", "452 4.5.3").await;
    t.cmd("QUIT", "221").await;
    t.finished().await;
    assert_eq!(recipients(&s, "accepted"), 1.0);
    assert_eq!(recipients(&s, "rejected_too_many"), 1.0);
    counted_once(&s, "abandoned").await;
}

#[tokio::test(start_paused = true)]
async fn mail_without_auth_is_counted_under_no_user() {
    let up = MemoryUpstream::default();
    let s = provider(&up, "", "");
    let mut t = s.connect();
    t.expect("220").await;
    t.cmd("EHLO printer.lan", "250").await;
    t.cmd("MAIL FROM:<dev@example.com>", "530 5.7.0").await;
    assert_eq!(
        s.metric("postern_messages_total{result=\"rejected_auth_required\",user=\"-\"}"),
        1.0
    );
    assert_eq!(sum(&s, "postern_messages_total", "user=\"dev\""), 0.0);
}

#[tokio::test(start_paused = true)]
async fn provider_credentials_refused_is_its_own_outcome() {
    let up = MemoryUpstream::default();
    up.refuse_auth(true);
    let s = provider(&up, "", "");
    let mut t = logged_in(&s).await;
    t.cmd("MAIL FROM:<dev@example.com>", "451 4.3.0").await;
    counted_once(&s, "upstream_auth_failed").await;
    assert_eq!(
        s.metric("postern_upstream_connections_failed_total{stage=\"auth\",upstream=\"mem\"}"),
        1.0
    );
    assert_eq!(s.metric("postern_upstream_up{upstream=\"mem\"}"), 0.0);
}

#[tokio::test(start_paused = true)]
async fn an_unreachable_provider_is_counted_and_makes_the_user_unready() {
    let s = Server::build(
        &config("", &MemoryUpstream::postern_toml("")),
        Arc::new(Unreachable),
    );
    assert!(
        s.state.shared.policy().readiness().is_ok(),
        "unknown is not down"
    );
    let mut t = logged_in(&s).await;
    t.cmd("MAIL FROM:<dev@example.com>", "451 4.4.1").await;
    counted_once(&s, "upstream_unavailable").await;
    let why = s.state.shared.policy().readiness().unwrap_err();
    assert!(
        why.contains("user dev: upstream mem down") && why.contains("connect"),
        "{why}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_pool_timeout_names_the_user_and_the_upstream() {
    let up = MemoryUpstream::default();
    let s = provider(&up, "max_connections = 1\npool_wait = \"2s\"", "");
    let mut a = logged_in(&s).await;
    a.cmd("MAIL FROM:<dev@example.com>", "250").await;
    let mut b = logged_in(&s).await;
    assert_eq!(
        s.metric("postern_upstream_pool_connections_in_use{upstream=\"mem\"}"),
        1.0
    );
    b.cmd("MAIL FROM:<dev@example.com>", "451 4.4.5").await;
    assert_eq!(
        s.metric(
            "postern_limit_hits_total{limit=\"upstream_connections\",upstream=\"mem\",user=\"dev\"}"
        ),
        1.0,
        "counted once, with user and upstream"
    );
    assert_eq!(messages(&s, "pool_timeout"), 1.0);
    assert_eq!(
        s.metric("postern_upstream_pool_wait_seconds_count{upstream=\"mem\"}"),
        2.0
    );
    assert_eq!(
        s.metric("postern_upstream_pool_waiters{upstream=\"mem\"}"),
        0.0
    );
}

// --- logs ------------------------------------------------------------------------

// --- health ---------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn readiness_follows_the_provider_credentials() {
    let up = MemoryUpstream::default();
    let s = provider(&up, "health_check_interval = \"1s\"", "");
    s.state.shared.policy().start_upstreams();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(s.state.shared.policy().readiness().is_ok());
    assert_eq!(s.metric("postern_upstream_up{upstream=\"mem\"}"), 1.0);
    assert!(
        s.metric("postern_upstream_last_auth_success_timestamp_seconds{upstream=\"mem\"}") > 0.0
    );

    // The pool's upkeep ticks every 5 s (a quarter of the 25 s idle timeout).
    up.refuse_auth(true);
    tokio::time::sleep(Duration::from_secs(6)).await;
    let why = s.state.shared.policy().readiness().unwrap_err();
    assert!(
        why.contains("upstream mem down") && why.contains("auth refused"),
        "{why}"
    );
    assert_eq!(s.metric("postern_upstream_up{upstream=\"mem\"}"), 0.0);
    assert!(
        s.metric("postern_upstream_health_checks_total{result=\"auth\",upstream=\"mem\"}") >= 1.0
    );
    // Probes are not traffic.
    assert_eq!(
        s.metric("postern_upstream_connections_failed_total{stage=\"auth\",upstream=\"mem\"}"),
        0.0
    );
    assert_eq!(
        sum(&s, "postern_upstream_replies_total", "upstream=\"mem\""),
        0.0
    );

    up.refuse_auth(false);
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(s.state.shared.policy().readiness().is_ok());
    assert_eq!(s.metric("postern_upstream_up{upstream=\"mem\"}"), 1.0);
}

#[tokio::test(start_paused = true)]
async fn the_health_probe_never_takes_the_upstream_over_its_cap() {
    let up = MemoryUpstream::default();
    let s = provider(
        &up,
        "max_connections = 1\nhealth_check_interval = \"1s\"",
        "",
    );
    s.state.shared.policy().start_upstreams();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let probes = || {
        sum(
            &s,
            "postern_upstream_health_checks_total",
            "upstream=\"mem\"",
        )
    };
    assert_eq!(probes(), 1.0, "the start-up probe");
    let mut t = logged_in(&s).await;
    t.cmd("MAIL FROM:<dev@example.com>", "250").await;
    // The session holds the only slot: no probe for 10 s.
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(probes(), 1.0);
    assert_eq!(
        up.connections(),
        2,
        "the probe's and the session's, one after the other"
    );
    t.cmd("RSET", "250").await;
    t.cmd("QUIT", "221").await;
    t.finished().await;
    // The session's connection is idle in the pool now; a probe closes it
    // to make room rather than open a second one.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(probes() >= 2.0, "probes resume once a slot is free");
    assert_eq!(up.max_open(), 1, "never two connections at once");
}
