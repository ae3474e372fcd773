//! Drives one postern session over an in-memory pipe, with no socket: client
//! lines in, server replies out, asserted like an SMTP transcript.
//!
//! ```ignore
//! let mut t = Transcript::start(&toml).await;
//! t.expect("220");
//! t.cmd("EHLO printer", "250").await;
//! ```
//! Works in paused time (`#[tokio::test(start_paused = true)]`): every clock
//! postern uses is tokio's.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;

use postern::net::{BoxIo, Connector};
use postern::session::Session;
use postern::state::{ListenerInfo, Reloader, State};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;
use tokio_rustls::rustls;

use super::certs::{TestCert, test_cert};

/// How long a transcript waits for a reply; longer than every postern timer a
/// test relies on, so in paused time postern's own timers fire first.
const REPLY_WAIT: Duration = Duration::from_secs(3600);

/// A postern config from `toml`, with `{dir}` replaced by `dir` and `{cert}`,
/// `{key}` by the test certificate's files there.
pub fn load(toml: &str, dir: &std::path::Path, cert: &TestCert) -> postern::Config {
    let (cert_path, key_path) = cert.write_to(dir);
    let toml = toml
        .replace("{dir}", &dir.display().to_string())
        .replace("{cert}", &cert_path.display().to_string())
        .replace("{key}", &key_path.display().to_string());
    postern::Config::from_toml_str(&toml, "transcript.toml")
        .unwrap_or_else(|e| panic!("test config rejected: {e}\n{toml}"))
}

/// The server side of transcripts: built state, no sockets.
pub struct Server {
    pub state: State,
    pub dir: tempfile::TempDir,
    /// The certificate a TLS listener presents.
    pub cert: TestCert,
    listener: ListenerInfo,
}

impl Server {
    /// Builds postern from `toml` (`{dir}` is a fresh temporary directory);
    /// upstream connections go through `connector`.
    pub fn build(toml: &str, connector: Arc<dyn Connector>) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let cert = test_cert();
        let config = load(toml, dir.path(), &cert);
        let listener = ListenerInfo::from_config(&config.listeners[0]);
        let state = State::build_with(config, connector).expect("state");
        Server {
            state,
            dir,
            cert,
            listener,
        }
    }

    /// Opens a session from `peer`.
    pub fn connect_from(&self, peer: &str) -> Transcript {
        let (client, server) = tokio::io::duplex(256 * 1024);
        let peer: SocketAddr = peer.parse().expect("peer address");
        let task = tokio::spawn(Session::serve(
            self.state.shared.clone(),
            self.listener.clone(),
            Box::new(server),
            peer,
        ));
        Transcript {
            client: Box::new(client),
            buf: Vec::new(),
            task,
        }
    }

    /// Opens a session from 127.0.0.1.
    pub fn connect(&self) -> Transcript {
        self.connect_from("127.0.0.1:40000")
    }

    pub fn reloader(&self) -> Reloader {
        Reloader::new(self.state.shared.clone())
    }

    /// Starts the server's shutdown (what SIGTERM does to open sessions).
    pub fn shut_down(&self) {
        let _ = self.state.shutdown.send(true);
    }

    /// The rendered metrics.
    pub fn metrics(&self) -> String {
        postern::metrics::render(&self.state.registry)
    }

    /// The value of one metric sample line (e.g. `postern_x_total{a="b"}`), 0 when absent.
    pub fn metric(&self, sample: &str) -> f64 {
        self.metrics()
            .lines()
            .find_map(|l| l.strip_prefix(sample).and_then(|v| v.trim().parse().ok()))
            .unwrap_or(0.0)
    }
}

/// One client's view of a session.
pub struct Transcript {
    client: BoxIo,
    buf: Vec<u8>,
    task: JoinHandle<()>,
}

impl Transcript {
    pub async fn send(&mut self, bytes: &[u8]) {
        self.client.write_all(bytes).await.expect("write");
    }

    /// Sends `line` with CRLF, without waiting.
    pub async fn line(&mut self, line: &str) {
        self.send(format!("{line}\r\n").as_bytes()).await;
    }

    /// Reads one whole reply (multi-line joined with '\n').
    pub async fn reply(&mut self) -> String {
        let mut lines = Vec::new();
        loop {
            let line = self.read_line().await;
            let last = line.as_bytes().get(3) != Some(&b'-');
            lines.push(line);
            if last {
                return lines.join("\n");
            }
        }
    }

    /// The next reply must start with `want` (e.g. "250", "550 5.7.1").
    pub async fn expect(&mut self, want: &str) -> String {
        let r = self.reply().await;
        assert!(r.starts_with(want), "expected {want:?}, got {r:?}");
        r
    }

    /// Sends `line` and checks its reply.
    pub async fn cmd(&mut self, line: &str, want: &str) -> String {
        self.line(line).await;
        let r = self.reply().await;
        assert!(
            r.starts_with(want),
            "{line:?}: expected {want:?}, got {r:?}"
        );
        r
    }

    async fn read_line(&mut self) -> String {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..i]).into_owned();
                self.buf.drain(..i + 2);
                return line;
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(REPLY_WAIT, self.client.read(&mut chunk))
                .await
                .expect("timed out waiting for a reply")
                .expect("read");
            assert!(
                n > 0,
                "session closed; unread: {:?}",
                String::from_utf8_lossy(&self.buf)
            );
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// True once the session has closed its side, with nothing more to read.
    pub async fn closed(&mut self) -> bool {
        let mut chunk = [0u8; 4096];
        loop {
            match tokio::time::timeout(REPLY_WAIT, self.client.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return self.buf.is_empty(),
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
                Err(_) => return false,
            }
        }
    }

    /// Runs the client side of a TLS handshake (after `220` to STARTTLS),
    /// trusting `cert` for "localhost". Bytes buffered before are dropped.
    pub async fn start_tls(&mut self, cert: &TestCert) {
        let mut roots = rustls::RootCertStore::empty();
        let der = rustls_pki_types::CertificateDer::from_pem_slice(cert.cert_pem.as_bytes())
            .expect("test cert PEM");
        roots.add(der).expect("trust the test cert");
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
        let plain = std::mem::replace(&mut self.client, Box::new(tokio::io::empty()));
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, plain)
            .await
            .expect("TLS handshake with postern");
        self.buf.clear();
        self.client = Box::new(tls);
    }

    /// Waits for the session task to end.
    pub async fn finished(self) {
        let _ = tokio::time::timeout(REPLY_WAIT, self.task).await;
    }
}
