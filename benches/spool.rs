//! Spool benchmark (issue 12): the same load — 20 concurrent pipelining
//! clients, 5,000 messages of 2 KiB in all — sent through postern in relay
//! mode to a local recording sink, then in spool mode (every 250 after the
//! content and envelope are fsynced; delivery to the same sink runs in the
//! background meanwhile). Prints both rates and the ratio spool / relay, the
//! time the spool took to drain, and the recovery time (open: scan, repair,
//! index) of a spool holding 100,000 messages.
//!
//! Run: `cargo bench --bench spool`. Loopback only; it stops by itself.
//! Knobs: POSTERN_BENCH_MESSAGES (default 5000), POSTERN_BENCH_CLIENTS (20),
//! POSTERN_BENCH_RECOVERY (100000; 0 skips it).

// Wall-clock measurements of a benchmark run, not postern's timeouts.
#![allow(clippy::disallowed_types)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use support::bench::{body, send_batch};
use support::postern::PosternBuilder;
use support::upstream::{FakeUpstream, UpstreamConfig};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Sends `clients` × `per_client` messages at once; returns the wall time.
async fn load(p: &support::postern::Postern, clients: usize, per_client: usize) -> Duration {
    let body = body(2 * 1024);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (addr, body) = (p.addr("bench"), body.clone());
        tasks.push(tokio::spawn(async move {
            send_batch(addr, "bench", "bench", &body, per_client).await
        }));
    }
    for t in tasks {
        t.await.expect("client");
    }
    started.elapsed()
}

fn config(port: u16, delivery: &str) -> String {
    let hash = postern::auth::hash_password("bench").expect("hash");
    format!(
        r#"
[[listener]]
name = "bench"
addr = "127.0.0.1:0"
[limits]
messages_per_minute = 100000000
recipients_per_hour = 100000000
max_connections_per_user = 1000
max_connections_per_ip = 1000
[spool]
dir = "{{dir}}/spool"
retry_initial = "1s"
retry_max = "5s"
[[upstream]]
name = "sink"
kind = "smtp"
addr = "127.0.0.1:{port}"
tls = "none"
username = "provider-user"
password = "provider-secret"
max_connections = 20
max_upstream_connections_per_user = 20
health_check_interval = "0s"
delivery = "{delivery}"
[[user]]
name = "bench"
password_hash = "{hash}"
allowed_senders = ["*"]
"#
    )
}

async fn mode(delivery: &str, clients: usize, per_client: usize) -> (f64, Option<Duration>) {
    let up = FakeUpstream::start(UpstreamConfig::default()).await;
    let p = PosternBuilder::new(&config(up.addr.port(), delivery))
        .start()
        .await;
    load(&p, 2, 5).await; // warm-up: 10 messages (spooled ones may still be on their way)
    let warm = 10;
    let total = clients * per_client;
    let took = load(&p, clients, per_client).await;
    let rate = total as f64 / took.as_secs_f64();
    println!(
        "{delivery:<6} {total} x 2 KiB from {clients} clients: {took:>8.2?}  {rate:>8.1} msg/s acknowledged"
    );
    let drained = if delivery == "spool" {
        let t = Instant::now();
        let got = up
            .wait_messages(warm + total, Duration::from_secs(600))
            .await;
        assert_eq!(got.len(), warm + total, "every spooled message delivered");
        let d = t.elapsed();
        println!(
            "spool  drained to the sink {d:.2?} after the last acknowledgement ({:.1} msg/s delivered overall)",
            total as f64 / (took + d).as_secs_f64()
        );
        Some(d)
    } else {
        assert_eq!(up.messages().len(), warm + total);
        None
    };
    p.stop().await;
    (rate, drained)
}

/// Writes `n` committed entries the way the spool lays them out, then times
/// `Spool::open` (recovery and index) on them.
fn recovery(n: usize) {
    use postern::spool::store::{Layout, Place, Rcpt, RcptStatus, Record};
    let dir = tempfile::tempdir().expect("tempdir");
    let layout = Layout::new(&dir.path().join("spool"));
    layout.create().expect("create");
    let content = body(2 * 1024);
    let made = Instant::now();
    for i in 0..n {
        let id = format!("1700000000-{i:06}-0000000000000000");
        let r = Record {
            id: id.clone(),
            upstream: "sink".into(),
            user: "bench".into(),
            mail_from: "bench@example.com".into(),
            client_mail_from: "bench@example.com".into(),
            received_at_ms: 1_700_000_000_000,
            size: content.len() as u64,
            crc32: crc32fast::hash(&content),
            smtputf8: false,
            body: "7bit".into(),
            attempts: 0,
            next_attempt_ms: 0,
            last_error: None,
            recipients: vec![Rcpt {
                address: "sink@example.net".into(),
                status: RcptStatus::Pending,
                reply: None,
                notify: None,
                orcpt: None,
            }],
            notice: false,
            ret: None,
            envid: None,
        };
        std::fs::write(layout.eml(Place::Queue, &id), &content).expect("eml");
        std::fs::write(
            layout.json(Place::Queue, &id),
            serde_json::to_vec(&r).expect("json"),
        )
        .expect("json");
    }
    println!("recovery: wrote {n} entries in {:.1?}", made.elapsed());
    // A daemon restarting finds its files on disk already; this run's are
    // still dirty in the page cache.
    let synced = Instant::now();
    let ok = std::process::Command::new("sync").status().expect("sync");
    assert!(ok.success());
    println!("recovery: synced them in {:.1?}", synced.elapsed());
    let settings = postern::config::SpoolSettings {
        dir: dir.path().join("spool"),
        max_size: u64::MAX,
        max_age: Duration::from_secs(86400),
        retry_initial: Duration::from_secs(60),
        retry_max: Duration::from_secs(3600),
        notify: None,
    };
    let registry = prometheus::Registry::new();
    let metrics = postern::spool::SpoolMetrics::register(&registry).expect("metrics");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let started = Instant::now();
        let spool = postern::spool::Spool::open(&settings, metrics).expect("open");
        let took = started.elapsed();
        assert_eq!(spool.queued(), n);
        println!(
            "recovery: open of a spool of {n} messages (scan, repair, index): {took:.2?} ({:.0} messages/s)",
            n as f64 / took.as_secs_f64()
        );
    });
}

fn main() {
    let total = env("POSTERN_BENCH_MESSAGES", 5000);
    let clients = env("POSTERN_BENCH_CLIENTS", 20).max(1);
    let per_client = (total / clients).max(1);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (relay, spool) = rt.block_on(async {
        let relay = mode("relay", clients, per_client).await;
        let spool = mode("spool", clients, per_client).await;
        (relay.0, spool.0)
    });
    println!("ratio spool / relay: {:.2}", spool / relay);
    drop(rt);
    let n = env("POSTERN_BENCH_RECOVERY", 100_000);
    if n > 0 {
        recovery(n);
    }
}
