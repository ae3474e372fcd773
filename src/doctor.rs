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

/// The `send` step: one test message through `pool`, and the provider's reply.
async fn send_step(hostname: &str, pool: &crate::upstream::pool::Pool, test: &SendTest) -> Step {
    let from = test
        .from
        .clone()
        .or_else(|| {
            pool.dial()
                .username()
                .filter(|u| u.contains('@'))
                .map(str::to_owned)
        })
        .unwrap_or_else(|| test.to.clone());
    let message = test_message(hostname, &from, &test.to);
    match timeout(
        crate::upstream::client::DATA_END_TIMEOUT,
        send_message(pool, &from, &test.to, &message),
    )
    .await
    {
        Ok(Ok(reply)) => step(
            "send",
            reply.code == 250,
            format!("from {from} to {}: {reply}", test.to),
        ),
        Ok(Err(why)) => step("send", false, format!("from {from} to {}: {why}", test.to)),
        Err(_) => step(
            "send",
            false,
            format!("from {from} to {}: timed out", test.to),
        ),
    }
}

/// MAIL, RCPT and the body on a connection of `pool`; the reply that decides.
async fn send_message(
    pool: &crate::upstream::pool::Pool,
    from: &str,
    to: &str,
    message: &[u8],
) -> Result<crate::smtp::reply::Reply, String> {
    use crate::upstream::client::COMMAND_TIMEOUT;
    let mut c = pool.checkout().await.map_err(|e| e.to_string())?;
    let result = async {
        let e = |e: crate::upstream::UpstreamError| e.to_string();
        for (line, label) in [
            (format!("MAIL FROM:<{from}>"), "MAIL"),
            (format!("RCPT TO:<{to}>"), "RCPT"),
        ] {
            c.queue(&line);
            let sent = Instant::now();
            c.flush().await.map_err(e)?;
            let r = c
                .read_reply(label, sent, COMMAND_TIMEOUT)
                .await
                .map_err(e)?;
            if !r.is_positive() {
                return Ok((r, false));
            }
        }
        if c.caps().chunking {
            c.begin_chunks(Vec::new());
            c.write_body(message).await.map_err(e)?;
            let end = c.end_chunks().await.map_err(e)?;
            let r = end.verdict.ok_or_else(|| "no reply to BDAT".to_owned())?;
            return Ok((r, end.reusable));
        }
        c.queue("DATA");
        let sent = Instant::now();
        c.flush().await.map_err(e)?;
        let r = c
            .read_reply("DATA", sent, COMMAND_TIMEOUT)
            .await
            .map_err(e)?;
        if r.code != 354 {
            return Ok((r, false));
        }
        c.write_body(message).await.map_err(e)?;
        Ok((c.end_body().await.map_err(e)?, true))
    }
    .await;
    match result {
        Ok((reply, reusable)) => {
            if reusable && reply.code == 250 {
                pool.checkin(c);
            } else {
                c.quit().await;
            }
            Ok(reply)
        }
        Err(why) => Err(why),
    }
}

/// A small test message, lines unstuffed, CRLF-terminated.
fn test_message(hostname: &str, from: &str, to: &str) -> Vec<u8> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0));
    let id = crate::upstream::outbox::new_id();
    format!(
        "Date: {}\r\nFrom: <{from}>\r\nTo: <{to}>\r\nSubject: postern doctor test\r\n\
         Message-ID: <{id}@{hostname}>\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=us-ascii\r\n\r\n\
         This is a test message from `postern doctor --send-test` on {hostname}.\r\n\
         If it arrived, this upstream relays mail.\r\n",
        rfc5322_date(now)
    )
    .into_bytes()
}

/// `secs` since the epoch as an RFC 5322 date in UTC, e.g. "Wed, 02 Dec 2026 00:15:00 +0000".
fn rfc5322_date(secs: i64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let ymd = cert::utc_date(secs);
    let mut parts = ymd.split('-').map(|p| p.parse::<usize>().unwrap_or(1));
    let (y, m, d) = (
        parts.next().unwrap_or(1970),
        parts.next().unwrap_or(1),
        parts.next().unwrap_or(1),
    );
    let weekday = DAYS[usize::try_from(secs.div_euclid(86_400).rem_euclid(7)).unwrap_or(0)];
    let t = secs.rem_euclid(86_400);
    format!(
        "{weekday}, {d:02} {} {y:04} {:02}:{:02}:{:02} +0000",
        MONTHS[(m.clamp(1, 12)) - 1],
        t / 3600,
        (t % 3600) / 60,
        t % 60
    )
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

/// Keeps the certificate it is shown, then lets the real verifier decide.
#[derive(Debug)]
struct Capture {
    inner: Arc<dyn ServerCertVerifier>,
    seen: Mutex<Option<CertificateDer<'static>>>,
}

impl ServerCertVerifier for Capture {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(end_entity.clone().into_owned());
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(m, c, d)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(m, c, d)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

async fn tls_step(config: &Config, u: &UpstreamConfig, addr: &str) -> Step {
    let mode = u.tls_mode();
    if mode == TlsMode::None {
        return step("tls", true, "none (tls = \"none\"): clear text");
    }
    match timeout(STEP_TIMEOUT, tls_probe(config, u, addr, mode)).await {
        Ok(s) => s,
        Err(_) => step("tls", false, "timed out"),
    }
}

async fn tls_probe(config: &Config, u: &UpstreamConfig, addr: &str, mode: TlsMode) -> Step {
    let host = u.host().unwrap_or_default();
    let inner = match crate::tls::provider_verifier(
        u.ca_file.as_ref().map(|p| p.get_ref().as_path()),
        u.tls_verify.unwrap_or(true),
    ) {
        Ok(v) => v,
        Err(e) => return step("tls", false, e.to_string()),
    };
    let capture = Arc::new(Capture {
        inner,
        seen: Mutex::new(None),
    });
    let cfg = match crate::tls::client_config_with(capture.clone()) {
        Ok(c) => Arc::new(c),
        Err(e) => return step("tls", false, e.to_string()),
    };
    let mut tcp = match TcpStream::connect(addr).await {
        Ok(t) => t,
        Err(e) => return step("tls", false, e.to_string()),
    };
    if mode == TlsMode::Starttls {
        let helo = format!("EHLO {}\r\n", config.server.hostname);
        let ok = async {
            let greeting = read_reply(&mut tcp).await?;
            if !greeting.starts_with("220") {
                return Err(format!("greeting: {greeting}"));
            }
            tcp.write_all(helo.as_bytes()).await.map_err(|e| e.to_string())?;
            let ehlo = read_reply(&mut tcp).await?;
            if !ehlo.to_ascii_uppercase().contains("STARTTLS") {
                return Err("the provider does not offer STARTTLS (tls = \"starttls\"; is it \"implicit\", port 465?)".into());
            }
            tcp.write_all(b"STARTTLS\r\n").await.map_err(|e| e.to_string())?;
            let r = read_reply(&mut tcp).await?;
            if !r.starts_with("220") {
                return Err(format!("STARTTLS refused: {r}"));
            }
            Ok(())
        }
        .await;
        if let Err(e) = ok {
            return step("tls", false, e);
        }
    }
    let Ok(name) = ServerName::try_from(host.clone()) else {
        return step("tls", false, format!("{host:?} is not a TLS server name"));
    };
    let result = TlsConnector::from(cfg).connect(name, tcp).await;
    let seen = capture
        .seen
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let about = seen
        .as_ref()
        .and_then(|c| cert::inspect(c.as_ref()))
        .map(|i| {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0));
            format!(
                "certificate for {:?} issued by {:?}, expires {} ({} days)",
                i.subject,
                i.issuer,
                cert::utc_date(i.not_after),
                (i.not_after - now).div_euclid(86_400)
            )
        });
    let about = about.unwrap_or_else(|| "no certificate seen".to_owned());
    match result {
        Ok(stream) => {
            let version = stream
                .get_ref()
                .1
                .protocol_version()
                .map_or("TLS".to_owned(), |v| format!("{v:?}"));
            step(
                "tls",
                true,
                format!("{version} ({mode:?}); {about}; verified"),
            )
        }
        Err(e) => step(
            "tls",
            false,
            format!("{}; {about}", crate::tls::explain(&e, &host)),
        ),
    }
}

/// Reads one (possibly multi-line) SMTP reply in clear text, byte by byte so
/// nothing past it is taken from the stream the TLS handshake will use.
async fn read_reply(tcp: &mut TcpStream) -> Result<String, String> {
    let mut text = String::new();
    let mut line = Vec::new();
    loop {
        let mut b = [0u8; 1];
        let n = tcp.read(&mut b).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("the provider closed the connection".into());
        }
        line.push(b[0]);
        if line.len() > 1024 || text.len() > 16 * 1024 {
            return Err("reply too long".into());
        }
        if line.ends_with(b"\r\n") {
            let l = String::from_utf8_lossy(&line).trim_end().to_owned();
            text.push_str(&l);
            text.push('\n');
            line.clear();
            if l.len() < 4 || l.as_bytes()[3] == b' ' {
                return Ok(text.trim_end().to_owned());
            }
        }
    }
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
