//! A scripted SMTP provider in memory: postern's upstream connections reach it
//! through a `Connector` that hands out `tokio::io::duplex` pipes, so a
//! transcript test needs no socket at all and runs in paused time.
//!
//! It offers PIPELINING, SIZE and AUTH PLAIN; accepts AUTH, MAIL, RSET, NOOP;
//! refuses RCPT to addresses starting with `reject` (550 5.1.1) and answers
//! RCPT to addresses starting with `busy` with 451 4.3.0; hangs up at RCPT to
//! addresses starting with `drop`; answers MAIL from senders starting with
//! `tempfail` 451 and `reject` 553; takes DATA and records each message,
//! except that a message with a `X-Verdict: tempfail` (or `reject`) line is
//! answered 451 (554) after its dot. `refuse_auth(true)` makes AUTH fail
//! with 535, as when the provider password changed.
//!
//! Faults on demand: `set_down` refuses connections, `set_mail_reply` and
//! `set_data_reply` answer MAIL or the final dot with the given reply line.

use std::sync::{Arc, Mutex};

use postern::net::{BoxIo, Connecting, Connector};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

/// One recorded message.
#[derive(Debug, Clone)]
pub struct Delivered {
    pub from: String,
    pub to: Vec<String>,
    pub data: Vec<u8>,
}

#[derive(Default)]
struct Record {
    refuse_auth: bool,
    connections: usize,
    open: usize,
    max_open: usize,
    commands: Vec<String>,
    messages: Vec<Delivered>,
    down: bool,
    mail_reply: Option<String>,
    data_reply: Option<String>,
    /// Quiet this long, a connection gets `421` and is closed.
    idle_cut: Option<std::time::Duration>,
}

/// The in-memory provider and its connector.
#[derive(Clone, Default)]
pub struct MemoryUpstream {
    record: Arc<Mutex<Record>>,
}

impl MemoryUpstream {
    pub fn connector(&self) -> Arc<dyn Connector> {
        Arc::new(self.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Record> {
        self.record.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// From now on AUTH gets 535 (true) or 235 (false).
    pub fn refuse_auth(&self, refuse: bool) {
        self.lock().refuse_auth = refuse;
    }

    /// The most connections that were open at the same time.
    pub fn max_open(&self) -> usize {
        self.lock().max_open
    }

    pub fn connections(&self) -> usize {
        self.lock().connections
    }

    pub fn commands(&self) -> Vec<String> {
        self.lock().commands.clone()
    }

    pub fn messages(&self) -> Vec<Delivered> {
        self.lock().messages.clone()
    }

    /// While `down`, connecting fails (connection refused).
    pub fn set_down(&self, down: bool) {
        self.lock().down = down;
    }

    /// Answer every MAIL with `reply` (e.g. "451 4.3.0 try later"); `None`: 250.
    pub fn set_mail_reply(&self, reply: Option<&str>) {
        self.lock().mail_reply = reply.map(|r| format!("{r}\r\n"));
    }

    /// Answer the final dot with `reply`; `None`: 250 (and the message is recorded).
    pub fn set_data_reply(&self, reply: Option<&str>) {
        self.lock().data_reply = reply.map(|r| format!("{r}\r\n"));
    }

    /// Like a Postfix-based provider: a connection quiet for `cut` gets
    /// `421 4.4.2` and is closed.
    pub fn set_idle_cut(&self, cut: Option<std::time::Duration>) {
        self.lock().idle_cut = cut;
    }

    /// The most connections that were open at once.
    pub fn peak_connections(&self) -> usize {
        self.lock().max_open
    }

    /// MAIL commands received.
    pub fn transactions(&self) -> usize {
        self.lock()
            .commands
            .iter()
            .filter(|c| c.to_ascii_uppercase().starts_with("MAIL FROM:"))
            .count()
    }

    /// A postern `[[upstream]]` table named "mem" for this provider.
    pub fn postern_toml(extra: &str) -> String {
        format!(
            "[[upstream]]\nname = \"mem\"\nkind = \"smtp\"\naddr = \"provider.test:25\"\ntls = \"none\"\n\
             username = \"provider-user\"\npassword = \"provider-secret\"\n{extra}\n"
        )
    }
}

impl Connector for MemoryUpstream {
    fn connect<'a>(&'a self, _addr: &'a str) -> Connecting<'a> {
        if self.lock().down {
            return Box::pin(async {
                Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionRefused,
                    "provider down",
                ))
            });
        }
        let (ours, theirs) = tokio::io::duplex(64 * 1024);
        {
            let mut r = self.lock();
            r.connections += 1;
            r.open += 1;
            r.max_open = r.max_open.max(r.open);
        }
        let me = self.clone();
        tokio::spawn(async move {
            let _ = me.serve(ours).await;
            me.lock().open -= 1;
        });
        Box::pin(async move { Ok(Box::new(theirs) as BoxIo) })
    }
}

impl MemoryUpstream {
    async fn serve(&self, mut io: DuplexStream) -> std::io::Result<()> {
        io.write_all(b"220 provider.test ESMTP\r\n").await?;
        let mut buf = Vec::new();
        let mut from = String::new();
        let mut to = Vec::new();
        loop {
            let cut = self.lock().idle_cut;
            let next = match cut {
                Some(d) => match tokio::time::timeout(d, read_line(&mut io, &mut buf)).await {
                    Ok(r) => r?,
                    Err(_) => {
                        io.write_all(b"421 4.4.2 provider.test idle timeout\r\n")
                            .await?;
                        return Ok(());
                    }
                },
                None => read_line(&mut io, &mut buf).await?,
            };
            let line = match next {
                Some(l) => l,
                None => return Ok(()),
            };
            self.lock().commands.push(line.clone());
            let upper = line.to_ascii_uppercase();
            let mail_reply = self.lock().mail_reply.clone();
            let reply: &[u8] = if upper.starts_with("EHLO") {
                b"250-provider.test\r\n250-PIPELINING\r\n250-SIZE 10000000\r\n250 AUTH PLAIN\r\n"
            } else if upper.starts_with("AUTH") {
                if self.lock().refuse_auth {
                    b"535 5.7.8 authentication failed\r\n"
                } else {
                    b"235 2.7.0 ok\r\n"
                }
            } else if upper.starts_with("MAIL FROM:") {
                if let Some(r) = mail_reply {
                    io.write_all(r.as_bytes()).await?;
                    continue;
                }
                let path = &line[10..];
                from = path[..path.find('>').map_or(path.len(), |i| i + 1)]
                    .trim_matches(['<', '>'])
                    .to_owned();
                to.clear();
                if from.starts_with("tempfail") {
                    b"451 4.3.2 try later\r\n"
                } else if from.starts_with("reject") {
                    b"553 5.7.1 sender refused\r\n"
                } else {
                    b"250 2.1.0 ok\r\n"
                }
            } else if upper.starts_with("RCPT TO:") {
                let addr = line[8..].trim_matches(['<', '>']).to_owned();
                if addr.starts_with("drop") {
                    return Ok(());
                }
                if addr.starts_with("reject") {
                    b"550 5.1.1 no such user\r\n"
                } else if addr.starts_with("busy") {
                    b"451 4.3.0 mailbox busy\r\n"
                } else {
                    to.push(addr);
                    b"250 2.1.5 ok\r\n"
                }
            } else if upper == "DATA" {
                io.write_all(b"354 go ahead\r\n").await?;
                let mut data = Vec::new();
                loop {
                    match read_line(&mut io, &mut buf).await? {
                        Some(l) if l == "." => break,
                        Some(l) => {
                            data.extend_from_slice(l.as_bytes());
                            data.extend_from_slice(b"\r\n");
                        }
                        None => return Ok(()),
                    }
                }
                let data_reply = self.lock().data_reply.clone();
                if let Some(r) = data_reply {
                    to.clear();
                    io.write_all(r.as_bytes()).await?;
                    continue;
                }
                let text = String::from_utf8_lossy(&data).into_owned();
                if text.contains("X-Verdict: tempfail") {
                    b"451 4.3.0 queue full\r\n"
                } else if text.contains("X-Verdict: reject") {
                    b"554 5.6.0 content refused\r\n"
                } else {
                    self.lock().messages.push(Delivered {
                        from: from.clone(),
                        to: std::mem::take(&mut to),
                        data,
                    });
                    b"250 2.0.0 queued as M1\r\n"
                }
            } else if upper == "QUIT" {
                io.write_all(b"221 2.0.0 bye\r\n").await?;
                return Ok(());
            } else {
                b"250 2.0.0 ok\r\n"
            };
            io.write_all(reply).await?;
        }
    }
}

/// One CRLF line without its CRLF; `None` at EOF.
async fn read_line(io: &mut DuplexStream, buf: &mut Vec<u8>) -> std::io::Result<Option<String>> {
    loop {
        if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
            let line = String::from_utf8_lossy(&buf[..i]).into_owned();
            buf.drain(..i + 2);
            return Ok(Some(line));
        }
        let mut chunk = [0u8; 4096];
        let n = io.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Several in-memory providers told apart by the address postern dials
/// (`host:port` of each `[[upstream]]`), for failover between upstreams.
#[derive(Clone, Default)]
pub struct ByAddr {
    routes: Vec<(String, MemoryUpstream)>,
}

impl ByAddr {
    /// `addr` (as written in the upstream's `addr`) reaches `up`.
    pub fn with(mut self, addr: &str, up: &MemoryUpstream) -> ByAddr {
        self.routes.push((addr.to_owned(), up.clone()));
        self
    }

    pub fn connector(&self) -> Arc<dyn Connector> {
        Arc::new(self.clone())
    }
}

impl Connector for ByAddr {
    fn connect<'a>(&'a self, addr: &'a str) -> Connecting<'a> {
        match self.routes.iter().find(|(a, _)| a == addr) {
            Some((_, up)) => up.connect(addr),
            None => Box::pin(async move {
                Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionRefused,
                    format!("no provider at {addr}"),
                ))
            }),
        }
    }
}
