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

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use base64::Engine as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::postern::PosternBuilder;
use support::upstream::{FakeUpstream, UpstreamConfig};

/// A pipelining client: one connection, AUTH PLAIN once, then `count` messages,
/// each as MAIL+RCPT+DATA in one write and the body in one write.
async fn send_batch(
    addr: SocketAddr,
    user: &str,
    pass: &str,
    body: &[u8],
    count: usize,
) -> Duration {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.set_nodelay(true).expect("nodelay");
    let mut r = Replies::default();
    r.expect(&mut s, 1).await; // greeting
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{pass}"));
    s.write_all(format!("EHLO bench\r\nAUTH PLAIN {auth}\r\n").as_bytes())
        .await
        .expect("write");
    r.expect(&mut s, 2).await;
    let started = Instant::now();
    for _ in 0..count {
        s.write_all(b"MAIL FROM:<bench@example.com>\r\nRCPT TO:<sink@example.net>\r\nDATA\r\n")
            .await
            .expect("write");
        let go = r.expect(&mut s, 3).await;
        assert!(go.starts_with("354"), "DATA refused: {go}");
        s.write_all(body).await.expect("write body");
        s.write_all(b".\r\n").await.expect("write dot");
        let last = r.expect(&mut s, 1).await;
        assert!(last.starts_with("250"), "message refused: {last}");
    }
    let took = started.elapsed();
    s.write_all(b"QUIT\r\n").await.ok();
    took
}

#[derive(Default)]
struct Replies {
    buf: Vec<u8>,
}

impl Replies {
    /// Reads `n` final reply lines; returns the last.
    async fn expect(&mut self, s: &mut TcpStream, n: usize) -> String {
        let mut last = String::new();
        let mut got = 0;
        while got < n {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..i]).into_owned();
                self.buf.drain(..i + 2);
                if line.as_bytes().get(3) != Some(&b'-') {
                    got += 1;
                    last = line;
                }
                continue;
            }
            let mut chunk = [0u8; 8192];
            let k = tokio::time::timeout(Duration::from_secs(60), s.read(&mut chunk))
                .await
                .expect("reply timeout")
                .expect("read");
            assert!(k > 0, "connection closed");
            self.buf.extend_from_slice(&chunk[..k]);
        }
        last
    }
}

fn body(size: usize) -> Vec<u8> {
    let mut b =
        b"From: bench@example.com\r\nTo: sink@example.net\r\nSubject: bench\r\n\r\n".to_vec();
    let line = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/ABCDEFGHIJKL\r\n";
    while b.len() < size {
        b.extend_from_slice(line);
    }
    b
}

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
