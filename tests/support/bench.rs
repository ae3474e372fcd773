//! Benchmark clients shared by `benches/`: a pipelining SMTP sender and a
//! message body of a given size.

// Wall-clock measurements of a benchmark run, not postern's timeouts.
#![allow(clippy::disallowed_types)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use base64::Engine as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A pipelining client: one connection, AUTH PLAIN once, then `count` messages,
/// each as MAIL+RCPT+DATA in one write and the body in one write.
pub async fn send_batch(
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
pub struct Replies {
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

pub fn body(size: usize) -> Vec<u8> {
    let mut b =
        b"From: bench@example.com\r\nTo: sink@example.net\r\nSubject: bench\r\n\r\n".to_vec();
    let line = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/ABCDEFGHIJKL\r\n";
    while b.len() < size {
        b.extend_from_slice(line);
    }
    b
}
