//! Shared by the observability tests: a postern with user "dev" over the
//! in-memory provider, a logged-in session, and a log capture in postern's
//! real formats.

use std::sync::{Arc, Mutex, OnceLock};

use base64::Engine as _;

use super::memory_upstream::MemoryUpstream;
use super::transcript::{Server, Transcript};

pub const PASSWORD: &str = "device-password";

pub fn hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| postern::auth::hash_password(PASSWORD).expect("hash_password"))
}

pub fn auth_plain() -> String {
    let token = base64::engine::general_purpose::STANDARD.encode(format!("\0dev\0{PASSWORD}"));
    format!("AUTH PLAIN {token}")
}

/// A STARTTLS listener "smtp", `[limits]` (`limits` added), `upstream`, and user
/// "dev" (may send as `*@example.com`) on the first upstream.
pub fn config(limits: &str, upstream: &str) -> String {
    format!(
        r#"
[server]
hostname = "relay.test"

[[listener]]
name = "smtp"
addr = "127.0.0.1:2525"
tls = "starttls"

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

pub fn provider(up: &MemoryUpstream, keys: &str, limits: &str) -> Server {
    Server::build(
        &config(limits, &MemoryUpstream::postern_toml(keys)),
        up.connector(),
    )
}

pub async fn logged_in(s: &Server) -> Transcript {
    let mut t = s.connect();
    t.expect("220 ").await;
    t.cmd("EHLO printer.lan", "250").await;
    t.cmd(&auth_plain(), "235").await;
    t
}

pub async fn send(t: &mut Transcript, from: &str, body: &str, final_reply: &str) {
    t.cmd(&format!("MAIL FROM:<{from}>"), "250").await;
    t.cmd("RCPT TO:<you@example.net>", "250").await;
    t.cmd("DATA", "354").await;
    t.send(body.as_bytes()).await;
    t.expect(final_reply).await;
}

/// Collects what postern logs, in one of its real formats.
#[derive(Clone, Default)]
pub struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Capture {
        self.clone()
    }
}

impl Capture {
    /// Logs at `trace` into this buffer for the current thread (the test's
    /// runtime is single-threaded, so every session task logs here).
    pub fn install(&self, format: postern::config::LogFormat) -> tracing::subscriber::DefaultGuard {
        let filter = tracing_subscriber::EnvFilter::new("trace");
        tracing::subscriber::set_default(postern::logging::subscriber(
            format,
            filter,
            self.clone(),
            false,
        ))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }

    /// Every line, each parsed as one JSON object.
    pub fn json(&self) -> Vec<serde_json::Value> {
        self.text()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    }

    /// The one `transaction` line with `result`.
    pub fn transaction(&self, result: &str) -> serde_json::Value {
        let lines: Vec<_> = self
            .json()
            .into_iter()
            .filter(|v| v["message"] == "transaction" && v["result"] == result)
            .collect();
        assert_eq!(lines.len(), 1, "{result}: {}", self.text());
        lines.into_iter().next().unwrap_or_default()
    }
}
