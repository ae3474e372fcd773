//! Relay benchmark: the same SMTP client workload sent (a) straight to a
//! recording upstream — the baseline, measured in the same run — and (b)
//! through postern to that upstream. Prints messages per second and MiB per
//! second for each, and the ratio relay / baseline (1.00 = postern costs
//! nothing; 0.50 = half the baseline's rate).
//!
//! Run: `cargo bench --bench relay` (optimised). Loopback only; it stops by itself.
//! Knobs: POSTERN_BENCH_MESSAGES (default 2000 small, 200 medium, 10 large).

// Wall-clock measurements and deadlines of a test run, not postern's timeouts.
#![allow(clippy::disallowed_types)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::Duration;

use support::bench::{body, send_batch};
use support::postern::PosternBuilder;
use support::upstream::{FakeUpstream, UpstreamConfig};

async fn case(name: &str, size: usize, count: usize) {
    let up = FakeUpstream::start(UpstreamConfig::default()).await;
    let hash = postern::auth::hash_password("bench").expect("hash");
    let config = format!(
        r#"
[[listener]]
name = "bench"
addr = "127.0.0.1:0"
[limits]
max_message_size = "64MiB"
# The benchmark measures throughput, not the rate limits.
messages_per_minute = 100000000
recipients_per_hour = 100000000
[[upstream]]
name = "fake"
kind = "smtp"
addr = "127.0.0.1:{port}"
tls = "none"
username = "provider-user"
password = "provider-secret"
max_message_size = "64MiB"
[[user]]
name = "bench"
password_hash = "{hash}"
allowed_senders = ["*"]
"#,
        port = up.addr.port()
    );
    let p = PosternBuilder::new(&config).start().await;
    let body = body(size);
    // Warm-up, then measure: baseline first, relay second, twice each, best of two.
    send_batch(up.addr, "provider-user", "provider-secret", &body, 3).await;
    send_batch(p.addr("bench"), "bench", "bench", &body, 3).await;
    let mut base = Duration::MAX;
    let mut relay = Duration::MAX;
    for _ in 0..2 {
        base =
            base.min(send_batch(up.addr, "provider-user", "provider-secret", &body, count).await);
        relay = relay.min(send_batch(p.addr("bench"), "bench", "bench", &body, count).await);
    }
    let rate = |d: Duration| count as f64 / d.as_secs_f64();
    let mib = |d: Duration| (count * body.len()) as f64 / d.as_secs_f64() / (1024.0 * 1024.0);
    println!(
        "{name:<14} size {:>9} B  x{count:<5} baseline {:>8.1} msg/s {:>7.1} MiB/s | relay {:>8.1} msg/s {:>7.1} MiB/s | ratio {:.2}",
        body.len(),
        rate(base),
        mib(base),
        rate(relay),
        mib(relay),
        rate(relay) / rate(base)
    );
    p.stop().await;
}

fn main() {
    let n: Option<usize> = std::env::var("POSTERN_BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok());
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        case("small (2 KiB)", 2 * 1024, n.unwrap_or(2000)).await;
        case("medium (256 KiB)", 256 * 1024, n.unwrap_or(200)).await;
        case("large (7 MiB)", 7 * 1024 * 1024, n.unwrap_or(10)).await;
    });
}
