//! Runs postern in-process on loopback port 0, from a TOML text.
//!
//! Placeholders in the TOML: `{dir}` (a fresh temporary directory), `{cert}` and
//! `{key}` (a test certificate for localhost written there), `{upstream_ca}` (set
//! with `with_file`). Listeners should use `127.0.0.1:0`; `Postern::addr(name)`
//! gives the port that was bound.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::certs::{TestCert, test_cert};

/// A running postern.
pub struct Postern {
    addrs: HashMap<String, SocketAddr>,
    pub metrics: Option<SocketAddr>,
    pub dir: tempfile::TempDir,
    /// The certificate postern's TLS listeners present (trust this in clients).
    pub cert: TestCert,
    /// Reloads users, limits and upstreams, as SIGHUP does.
    pub reloader: postern::server::Reloader,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

/// Builds and starts a postern.
pub struct PosternBuilder {
    toml: String,
    files: Vec<(String, String)>,
}

/// A postern `[[upstream]]` table named "outbox" writing to `{dir}/outbox`.
pub fn outbox_toml() -> String {
    "[[upstream]]\nname = \"outbox\"\nkind = \"outbox\"\ndir = \"{dir}/outbox\"\n".to_owned()
}

/// Starts postern from `toml` (placeholders as described above).
pub async fn spawn_postern(toml: &str) -> Postern {
    PosternBuilder::new(toml).start().await
}

impl PosternBuilder {
    pub fn new(toml: &str) -> PosternBuilder {
        PosternBuilder {
            toml: toml.to_owned(),
            files: Vec::new(),
        }
    }

    /// Writes `contents` to `{dir}/<name>` and replaces `{<placeholder>}` with its path.
    pub fn with_file(mut self, placeholder: &str, name: &str, contents: &str) -> PosternBuilder {
        self.files
            .push((format!("{placeholder}|{name}"), contents.to_owned()));
        self
    }

    pub async fn start(self) -> Postern {
        let dir = tempfile::tempdir().expect("tempdir");
        let cert = test_cert();
        let (cert_path, key_path) = cert.write_to(dir.path());
        let mut toml = self
            .toml
            .replace("{dir}", &dir.path().display().to_string())
            .replace("{cert}", &cert_path.display().to_string())
            .replace("{key}", &key_path.display().to_string());
        for (spec, contents) in &self.files {
            let (placeholder, name) = spec.split_once('|').expect("spec");
            let path: PathBuf = dir.path().join(name);
            std::fs::write(&path, contents).expect("write file");
            toml = toml.replace(&format!("{{{placeholder}}}"), &path.display().to_string());
        }
        let config = postern::Config::from_toml_str(&toml, "test.toml")
            .unwrap_or_else(|e| panic!("test config rejected: {e}\n{toml}"));
        let names: Vec<String> = config
            .listeners
            .iter()
            .map(|l| l.name.get_ref().clone())
            .collect();
        let server = postern::Server::bind(config).await.expect("bind");
        let addrs = names
            .iter()
            .filter_map(|n| server.listener_addr(n).map(|a| (n.clone(), a)))
            .collect();
        let metrics = server.metrics_addr();
        let reloader = server.reloader();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = server
                .run(async {
                    let _ = stopped.await;
                })
                .await;
        });
        Postern {
            addrs,
            metrics,
            dir,
            cert,
            reloader,
            stop: Some(stop),
            task: Some(task),
        }
    }
}

impl Postern {
    /// The bound address of listener `name`.
    pub fn addr(&self, name: &str) -> SocketAddr {
        *self
            .addrs
            .get(name)
            .unwrap_or_else(|| panic!("no listener named {name}"))
    }

    /// GETs a path from the metrics endpoint; returns (status code, body).
    pub async fn http_get(&self, path: &str) -> (u16, String) {
        let addr = self.metrics.expect("no [metrics] in this config");
        let mut s = TcpStream::connect(addr).await.expect("connect metrics");
        let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.expect("write");
        let mut buf = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
            .await
            .expect("metrics timeout")
            .expect("read");
        let text = String::from_utf8_lossy(&buf).into_owned();
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        (status, body)
    }

    /// The `/metrics` text.
    pub async fn metrics_text(&self) -> String {
        self.http_get("/metrics").await.1
    }

    /// The value of one sample line, e.g. `postern_messages_total{result="accepted",user="demo"}`
    /// (labels in the order Prometheus prints them: alphabetical). 0 when absent.
    pub async fn metric(&self, sample: &str) -> f64 {
        let text = self.metrics_text().await;
        text.lines()
            .find_map(|l| l.strip_prefix(sample).and_then(|v| v.trim().parse().ok()))
            .unwrap_or(0.0)
    }

    /// Files in `{dir}/<sub>` with the given extension, sorted.
    pub fn files(&self, sub: &str, ext: &str) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(self.dir.path().join(sub))
            .map(|rd| {
                rd.filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == ext))
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    /// Asks postern to stop and waits for it (with a timeout).
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(40), t).await;
        }
    }
}

impl Drop for Postern {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// A minimal raw SMTP client for malformed-input tests: writes bytes, reads replies.
pub struct Raw {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    pub async fn connect(addr: SocketAddr) -> Raw {
        let stream = TcpStream::connect(addr).await.expect("connect postern");
        Raw {
            stream,
            buf: Vec::new(),
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// Reads one whole reply (multi-line joined with '\n'); panics after 10 s.
    pub async fn reply(&mut self) -> String {
        let mut lines = Vec::new();
        loop {
            let line = self.line().await;
            let last = line.as_bytes().get(3) != Some(&b'-');
            lines.push(line);
            if last {
                return lines.join("\n");
            }
        }
    }

    /// The code of the next reply.
    pub async fn code(&mut self) -> u16 {
        let r = self.reply().await;
        r.get(..3)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("bad reply {r:?}"))
    }

    /// Sends a line (CRLF added) and returns the reply.
    pub async fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes()).await;
        self.reply().await
    }

    async fn line(&mut self) -> String {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..i]).into_owned();
                self.buf.drain(..i + 2);
                return line;
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(Duration::from_secs(10), self.stream.read(&mut chunk))
                .await
                .expect("timed out waiting for a reply")
                .expect("read");
            if n == 0 {
                panic!(
                    "connection closed; unread: {:?}",
                    String::from_utf8_lossy(&self.buf)
                );
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// True once the server has closed the connection (reads to EOF, 10 s limit).
    pub async fn closed(&mut self) -> bool {
        let mut chunk = [0u8; 4096];
        loop {
            match tokio::time::timeout(Duration::from_secs(10), self.stream.read(&mut chunk)).await
            {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
                Err(_) => return false,
            }
        }
    }
}
