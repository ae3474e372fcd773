//! A private `redis-server` (Debian's `redis-server` package) on a free
//! loopback port, with a temporary directory and no persistence, stopped by
//! its PID when dropped. `Redis::start` returns `None` — after saying so
//! loudly on stderr — only when the binary is not installed and the run is
//! not CI; under CI (`CI` set) a missing binary fails the test instead.
//! `Redis::start_tls` serves TLS only (a fresh rcgen certificate for
//! 127.0.0.1, no client certificates) and asks for a password (`requirepass`).

// Wall-clock deadlines of a test run, not postern's timeouts.
#![allow(clippy::disallowed_types)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Redis {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
    /// `start_tls`: the certificate to trust (PEM file) and the password.
    tls: Option<(std::path::PathBuf, String)>,
}

fn installed() -> bool {
    Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn free_port() -> u16 {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a free port");
    l.local_addr().expect("local addr").port()
}

impl Redis {
    /// Starts one, waiting until it answers PING.
    pub fn start() -> Option<Redis> {
        Redis::start_with(None)
    }

    /// Starts one that speaks only TLS (`rediss://`) and wants `password`.
    pub fn start_tls(password: &str) -> Option<Redis> {
        Redis::start_with(Some(password))
    }

    fn start_with(password: Option<&str>) -> Option<Redis> {
        if !installed() {
            assert!(
                std::env::var_os("CI").is_none(),
                "redis-server is not installed; CI must install the redis-server package"
            );
            eprintln!(
                "SKIPPED: redis-server is not installed (apt-get install redis-server); \
                 the [cluster] tests did not run"
            );
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let tls = password.map(|p| {
            let (cert, _key) = super::certs::test_cert().write_to(dir.path());
            (cert, p.to_owned())
        });
        let mut r = Redis {
            child: None,
            port: free_port(),
            dir,
            tls,
        };
        r.spawn();
        Some(r)
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new("redis-server");
        match &self.tls {
            None => {
                cmd.args(["--port", &self.port.to_string()]);
            }
            Some((cert, password)) => {
                let key = self.dir.path().join("key.pem");
                cmd.args(["--port", "0", "--tls-port", &self.port.to_string()])
                    .arg("--tls-cert-file")
                    .arg(cert)
                    .arg("--tls-key-file")
                    .arg(&key)
                    .arg("--tls-ca-cert-file")
                    .arg(cert)
                    .args(["--tls-auth-clients", "no"])
                    .args(["--requirepass", password]);
            }
        }
        let child = cmd
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.pings() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer PING"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn pings(&self) -> bool {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
            return false;
        };
        if self.tls.is_some() {
            // Listening is all a plain-text probe can see of a TLS port.
            return true;
        }
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        if s.write_all(b"PING\r\n").is_err() {
            return false;
        }
        let mut buf = [0u8; 7];
        s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}/0", self.port)
    }

    /// `start_tls`: the PEM file to trust (`[cluster] ca_file`).
    pub fn ca_file(&self) -> &std::path::Path {
        &self.tls.as_ref().expect("a TLS Redis").0
    }

    /// Kills it (SIGKILL, by PID) and waits for it to go.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops it with SIGSTOP: it keeps its sockets but answers nothing (a slow Redis).
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let ok = Command::new("kill").args([sig, &pid]).status();
        assert!(ok.is_ok_and(|s| s.success()), "kill {sig} {pid}");
    }

    /// Forgets every key (`FLUSHALL`).
    pub fn flush_all(&self) {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let mut s = TcpStream::connect(addr).expect("connect redis");
        s.set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        s.write_all(b"FLUSHALL\r\n").expect("write");
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).expect("read");
        assert_eq!(&buf, b"+OK\r\n");
    }

    /// Starts it again on the same port, empty.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(c) = &self.child {
            // A frozen server must be thawed to die cleanly.
            let _ = Command::new("kill")
                .args(["-CONT", &c.id().to_string()])
                .status();
        }
        self.kill();
    }
}
