//! `postern doctor`: every SMTP upstream (and each of its accounts) checked
//! step by step, so an administrator learns a wrong provider setting before
//! the first scan is lost: DNS, TCP connect (with its time), TLS (version,
//! the certificate's subject, issuer and days to expiry, and whether it
//! verifies, in the words of `tls::explain`), EHLO capabilities, AUTH (or the
//! token fetch). One line per step with its verdict; exit 0 when all pass.
//!
//! With `--send-test ADDRESS`, every row that passed gets one more step,
//! `send`: one small test message to ADDRESS through that upstream's (or
//! account's) pool, the way `run` relays (BDAT where the provider offers
//! CHUNKING, else DATA), and the provider's own reply to it (its queue id).
//! The sender is `--from`, else the account's user name when it is an
//! address, else ADDRESS itself.
//!
//! The TLS step makes its own connection with the upstream's real verifier
//! wrapped to keep the certificate it was shown, so a refused certificate can
//! still be described. The EHLO and AUTH step is the pool's own probe (EHLO,
//! AUTH, QUIT): the path `run` takes.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::{self, DigitallySignedStruct, SignatureScheme};

use crate::config::{Config, TlsMode, UpstreamConfig, UpstreamKind};
use crate::metrics::Metrics;
use crate::net::{Connector, TcpConnector};
use crate::tls::cert;
use crate::upstream::{Capabilities, Upstream};

/// Each network step gets this long.
const STEP_TIMEOUT: Duration = Duration::from_secs(15);

/// One step and its verdict.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Step {
    pub step: &'static str,
    pub ok: bool,
    pub detail: String,
}

/// One upstream, or one account of it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Row {
    pub upstream: String,
    pub account: Option<String>,
    pub ok: bool,
    pub steps: Vec<Step>,
}

fn step(step: &'static str, ok: bool, detail: impl Into<String>) -> Step {
    Step {
        step,
        ok,
        detail: detail.into(),
    }
}

/// What `--send-test` asks for: the recipient, and the sender when given.
#[derive(Debug, Clone, Default)]
pub struct SendTest {
    pub to: String,
    pub from: Option<String>,
}

/// Checks every SMTP upstream of `config`.
pub async fn diagnose(config: &Config) -> Vec<Row> {
    diagnose_with(config, None).await
}

/// Checks every SMTP upstream of `config`, then sends the test message through
/// each upstream and account that passed, when `send` asks for it.
pub async fn diagnose_with(config: &Config, send: Option<&SendTest>) -> Vec<Row> {
    let (_registry, metrics) = match Metrics::new_registry() {
        Ok(m) => m,
        Err(_) => return Vec::new(),
    };
    let connector: Arc<dyn Connector> = Arc::new(TcpConnector);
    let mut rows = Vec::new();
    for u in &config.upstreams {
        if *u.kind.get_ref() != UpstreamKind::Smtp {
            continue;
        }
        rows.extend(diagnose_one(config, u, &metrics, &connector, send).await);
    }
    rows
}

async fn diagnose_one(
    config: &Config,
    u: &UpstreamConfig,
    metrics: &Metrics,
    connector: &Arc<dyn Connector>,
    send: Option<&SendTest>,
) -> Vec<Row> {
    let name = u.name().to_owned();
    let addr = u
        .addr
        .as_ref()
        .map(|a| a.get_ref().clone())
        .unwrap_or_default();
    let mut network = Vec::new();
    let resolved = match timeout(STEP_TIMEOUT, tokio::net::lookup_host(addr.as_str())).await {
        Ok(Ok(addrs)) => {
            let addrs: Vec<_> = addrs.collect();
            match addrs.first() {
                Some(first) => {
                    network.push(step(
                        "resolve",
                        true,
                        format!("{addr} → {first} ({} address(es))", addrs.len()),
                    ));
                    true
                }
                None => {
                    network.push(step("resolve", false, format!("{addr}: no address")));
                    false
                }
            }
        }
        Ok(Err(e)) => {
            network.push(step("resolve", false, format!("{addr}: {e}")));
            false
        }
        Err(_) => {
            network.push(step("resolve", false, format!("{addr}: timed out")));
            false
        }
    };
    let mut reachable = false;
    if resolved {
        let start = Instant::now();
        match timeout(STEP_TIMEOUT, TcpStream::connect(addr.as_str())).await {
            Ok(Ok(_)) => {
                reachable = true;
                network.push(step(
                    "connect",
                    true,
                    format!("{} ms", start.elapsed().as_millis()),
                ));
            }
            Ok(Err(e)) => network.push(step("connect", false, format!("{addr}: {e}"))),
            Err(_) => network.push(step("connect", false, format!("{addr}: timed out"))),
        }
    }
    if reachable {
        let tls = tls_step(config, u, &addr).await;
        // Past a failed TLS step, EHLO and AUTH would only fail the same way.
        reachable = tls.ok;
        network.push(tls);
    }
    let upstream = match Upstream::from_config(config, u, metrics, connector) {
        Ok(up) => up,
        Err(e) => {
            let mut steps = network;
            steps.push(step("credentials", false, e));
            return vec![row(name, None, steps)];
        }
    };
    let mut rows = Vec::new();
    for pool in upstream.pools() {
        let mut steps = network.clone();
        if reachable {
            let r = pool.probe().await;
            let caps = pool.capabilities();
            match r {
                Ok(false) => steps.push(step(
                    "ehlo",
                    false,
                    "every connection slot of the pool is busy; not checked",
                )),
                Ok(true) => {
                    steps.push(step(
                        "ehlo",
                        true,
                        caps.as_ref().map_or_else(String::new, keywords),
                    ));
                    steps.push(step(
                        "auth",
                        true,
                        match pool.dial().username() {
                            Some(user) => format!("{:?} as {user} accepted", pool.dial().auth),
                            None => "no credentials configured".to_owned(),
                        },
                    ));
                }
                Err(e) => {
                    let st = if e.stage() == "auth" || e.stage() == "token" {
                        "auth"
                    } else {
                        "ehlo"
                    };
                    steps.push(step(st, false, e.to_string()));
                }
            }
        }
        if let Some(test) = send
            && reachable
            && steps.iter().all(|s| s.ok)
        {
            steps.push(send_step(&config.server.hostname, pool, test).await);
        }
        rows.push(row(
            name.clone(),
            pool.dial().username().map(str::to_owned),
            steps,
        ));
    }
    rows
}

fn row(upstream: String, account: Option<String>, steps: Vec<Step>) -> Row {
    Row {
        ok: steps.iter().all(|s| s.ok),
        upstream,
        account,
        steps,
    }
}

fn keywords(c: &Capabilities) -> String {
    let mut k = Vec::new();
    for (on, word) in [
        (c.pipelining, "PIPELINING"),
        (c.chunking, "CHUNKING"),
        (c.eightbitmime, "8BITMIME"),
        (c.smtputf8, "SMTPUTF8"),
        (c.dsn, "DSN"),
        (c.enhanced_status_codes, "ENHANCEDSTATUSCODES"),
        (c.auth_plain, "AUTH PLAIN"),
        (c.auth_login, "AUTH LOGIN"),
        (c.auth_xoauth2, "AUTH XOAUTH2"),
        (c.auth_oauthbearer, "AUTH OAUTHBEARER"),
    ] {
        if on {
            k.push(word.to_owned());
        }
    }
    if let Some(n) = c.size {
        k.push(format!("SIZE {n}"));
    }
    k.join(", ")
}

/// The rows as text: a verdict line per row, a line per step.
pub fn render(rows: &[Row]) -> String {
    let mut out = String::new();
    for r in rows {
        let who = match &r.account {
            Some(a) => format!("upstream {} account {a}", r.upstream),
            None => format!("upstream {}", r.upstream),
        };
        out.push_str(&format!("{who}: {}\n", if r.ok { "OK" } else { "FAILED" }));
        for s in &r.steps {
            out.push_str(&format!(
                "  {:<8} {:<4} {}\n",
                s.step,
                if s.ok { "ok" } else { "FAIL" },
                s.detail
            ));
        }
    }
    if rows.is_empty() {
        out.push_str("no SMTP upstream to check\n");
    }
    out
}

mod send;
mod tls;

use send::send_step;
use tls::tls_step;
