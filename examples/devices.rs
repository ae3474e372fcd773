//! Returning devices, for `scripts/bench.sh`: `--clients` devices, each
//! sending its share of `--messages` one session per message, as a printer
//! does: connect, EHLO, STARTTLS (with `--starttls`), EHLO, AUTH PLAIN, MAIL,
//! RCPT, DATA, QUIT, one command and its reply at a time (as smtplib, which
//! `scripts/bench/sessions.py` drives, does).
//!
//! Why not smtplib or lettre: on the two-core bench machine smtplib takes about
//! 3 ms of CPU per session, more than the server under test, so it measures
//! itself; lettre writes the end of the body in a second small segment without
//! `TCP_NODELAY`, and Nagle's algorithm against the server's delayed ACK makes
//! every session wait 40 ms. The TLS client here is rustls, with one
//! `ClientConfig` shared by every device: its session store keeps the tickets
//! the server sent, and each STARTTLS after a device's first resumes with one,
//! as a device's TLS library does. `resumed` counts the handshakes rustls
//! reports as resumed.
//!
//! It runs on one thread (`current_thread`), so the load takes at most one of
//! the two cores. Prints one JSON object, the shape of `sessions.py`'s:
//! `{"ok": N, "failed": N, "resumed": N, "seconds": S, "error": "...",
//! "latency_ms": {"median": M, "mean": M, "p90": M}}`, a latency being one
//! session's, from before the connect until QUIT is answered.
//!
//! ```text
//! cargo run --release --example devices -- --port 2525 --clients 10 \
//!     --messages 2000 --size 2048 --starttls --user demo --password secret
//! ```

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::{self, ClientConfig};

/// A whole session must end within this.
const SESSION_TIMEOUT: Duration = Duration::from_secs(60);

struct Args {
    host: String,
    port: u16,
    clients: usize,
    messages: usize,
    size: usize,
    starttls: bool,
    user: Option<String>,
    password: String,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        host: "127.0.0.1".into(),
        port: 0,
        clients: 10,
        messages: 100,
        size: 2048,
        starttls: false,
        user: None,
        password: String::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} wants a value"));
        let number = |v: String| v.parse::<usize>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--host" => a.host = value()?,
            "--port" => a.port = value()?.parse().map_err(|e| format!("--port: {e}"))?,
            "--clients" => a.clients = number(value()?)?.max(1),
            "--messages" => a.messages = number(value()?)?,
            "--size" => a.size = number(value()?)?,
            "--starttls" => a.starttls = true,
            "--user" => a.user = Some(value()?),
            "--password" => a.password = value()?,
            _ => return Err(format!("unknown argument {flag}")),
        }
    }
    if a.port == 0 {
        return Err("--port is required".into());
    }
    Ok(a)
}

/// A message of about `size` bytes, dot-terminated: headers, then
/// 76-character lines.
fn message(size: usize) -> Vec<u8> {
    let mut m = b"From: bench@example.com\r\nTo: sink@example.net\r\nSubject: bench\r\n\
Message-ID: <bench@devices.example>\r\n\r\n"
        .to_vec();
    while m.len() < size {
        m.extend_from_slice(&[b'x'; 76]);
        m.extend_from_slice(b"\r\n");
    }
    m.extend_from_slice(b".\r\n");
    m
}

/// One device's connection: the stream and what was read past the last reply.
struct Dialogue<S> {
    io: S,
    buf: Vec<u8>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Dialogue<S> {
    /// Reads one reply (every line of it) and checks its first digit.
    async fn reply(&mut self, want: u8, after: &str) -> Result<(), String> {
        loop {
            // A complete reply: lines up to one whose fourth octet is a space.
            let mut start = 0;
            while let Some(end) = self.buf[start..].windows(2).position(|w| w == b"\r\n") {
                let line = &self.buf[start..start + end];
                start += end + 2;
                if line.len() < 4 || line[3] == b' ' {
                    let ok = line.first() == Some(&want);
                    let text = String::from_utf8_lossy(line).into_owned();
                    self.buf.drain(..start);
                    return if ok {
                        Ok(())
                    } else {
                        Err(format!("{after}: {text}"))
                    };
                }
            }
            let mut chunk = [0u8; 1024];
            let n = self
                .io
                .read(&mut chunk)
                .await
                .map_err(|e| format!("{after}: {e}"))?;
            if n == 0 {
                return Err(format!("{after}: the server closed the connection"));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.io.write_all(bytes).await.map_err(|e| e.to_string())
    }

    async fn command(&mut self, line: &str, want: u8) -> Result<(), String> {
        self.send(format!("{line}\r\n").as_bytes()).await?;
        self.reply(want, line.split(' ').next().unwrap_or(line))
            .await
    }
}

struct Device {
    addr: String,
    tls: Option<TlsConnector>,
    auth: Option<String>,
    body: Arc<Vec<u8>>,
}

impl Device {
    /// One session, one message. Returns whether TLS was resumed.
    async fn session(&self) -> Result<bool, String> {
        let tcp = TcpStream::connect(&self.addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        tcp.set_nodelay(true).map_err(|e| e.to_string())?;
        let mut d = Dialogue {
            io: tcp,
            buf: Vec::new(),
        };
        d.reply(b'2', "greeting").await?;
        d.command("EHLO bench.client", b'2').await?;
        let Some(tls) = &self.tls else {
            self.transaction(&mut d).await?;
            return Ok(false);
        };
        d.command("STARTTLS", b'2').await?;
        if !d.buf.is_empty() {
            return Err("STARTTLS: the server sent more after its 220".into());
        }
        let name = rustls::pki_types::ServerName::try_from("bench.localhost")
            .map_err(|e| e.to_string())?;
        let stream = tls
            .connect(name, d.io)
            .await
            .map_err(|e| format!("TLS handshake: {e}"))?;
        let resumed = stream.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
        let mut d = Dialogue {
            io: stream,
            buf: Vec::new(),
        };
        d.command("EHLO bench.client", b'2').await?;
        self.transaction(&mut d).await?;
        Ok(resumed)
    }

    /// AUTH (if a user is set), the message, QUIT.
    async fn transaction<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        d: &mut Dialogue<S>,
    ) -> Result<(), String> {
        if let Some(auth) = &self.auth {
            // Any 2xx: smtp-sink (the direct baseline) answers AUTH with 250.
            d.command(auth, b'2').await?;
        }
        d.command("MAIL FROM:<bench@example.com>", b'2').await?;
        d.command("RCPT TO:<sink@example.net>", b'2').await?;
        d.command("DATA", b'3').await?;
        d.send(&self.body).await?;
        d.reply(b'2', "end of data").await?;
        d.command("QUIT", b'2').await
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let a = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("devices: {e}");
            std::process::exit(2);
        }
    };
    let tls = if a.starttls {
        // The bench's certificate is self-signed, made for the run: no
        // certificate check (loopback only), the handshake signatures still.
        let config: Arc<ClientConfig> = postern::tls::client_config(None, false)
            .unwrap_or_else(|e| panic!("TLS client config: {e}"));
        Some(TlsConnector::from(config))
    } else {
        None
    };
    let auth = a.user.as_ref().map(|user| {
        let token =
            base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{}", a.password));
        format!("AUTH PLAIN {token}")
    });
    let device = Arc::new(Device {
        addr: format!("{}:{}", a.host, a.port),
        tls,
        auth,
        body: Arc::new(message(a.size)),
    });
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..a.clients {
        let share = a.messages / a.clients + usize::from(i < a.messages % a.clients);
        let device = device.clone();
        tasks.spawn(async move {
            let mut latencies = Vec::with_capacity(share);
            let (mut failed, mut resumed, mut error) = (0usize, 0usize, None::<String>);
            for _ in 0..share {
                let s = Instant::now();
                match timeout(SESSION_TIMEOUT, device.session()).await {
                    Ok(Ok(r)) => {
                        latencies.push(s.elapsed().as_secs_f64() * 1e3);
                        resumed += usize::from(r);
                    }
                    Ok(Err(e)) => {
                        failed += 1;
                        error = Some(e);
                    }
                    Err(_) => {
                        failed += 1;
                        error = Some("session timed out".into());
                    }
                }
            }
            (latencies, failed, resumed, error)
        });
    }
    let (mut latencies, mut failed, mut resumed, mut error) = (Vec::new(), 0, 0, String::new());
    while let Some(r) = tasks.join_next().await {
        let (l, f, n, e) = r.expect("device task");
        latencies.extend(l);
        failed += f;
        resumed += n;
        if let Some(e) = e {
            error = e;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    let mean = if latencies.is_empty() {
        0.0
    } else {
        latencies.iter().sum::<f64>() / latencies.len() as f64
    };
    println!(
        "{{\"ok\": {}, \"failed\": {}, \"resumed\": {}, \"seconds\": {:.3}, \"error\": {}, \"latency_ms\": {{\"median\": {:.2}, \"mean\": {:.2}, \"p90\": {:.2}}}}}",
        latencies.len(),
        failed,
        resumed,
        seconds,
        json_string(&error),
        percentile(&latencies, 0.5),
        mean,
        percentile(&latencies, 0.9),
    );
}
