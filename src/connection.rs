//! The client connection under a session: the stream (boxed, so plain TCP, TLS
//! and in-memory pipes are one type), the read and write buffers, and the
//! timeouts. The session (`session`) is the state machine it feeds: it reads
//! what `read_more` buffered in `rbuf`, and `send`s its replies, which go out
//! in one write at `flush`.
//!
//! Every clock here is tokio's, so tests run idle timeouts in paused time.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadBuf};
use tokio::sync::watch;
use tokio::time::{Instant, Sleep, timeout};
use tokio_rustls::TlsAcceptor;

use crate::net::BoxIo;
use crate::smtp::reply::Reply;

/// TLS handshakes (STARTTLS and implicit) must finish within this.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a close postern decided on may take to write its last reply.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// How much the client may send beyond what postern has read before it stops reading.
const READ_CHUNK: usize = 64 * 1024;
/// The read buffer allocated when a read comes in with nothing unread: enough
/// for a pipelined command batch. A session that then streams a body gets
/// `READ_CHUNK` from its next read on.
const IDLE_READ: usize = 1024;
/// The most a read by an idle session takes at once (into a stack buffer;
/// more stays in the socket, or in rustls, for the next read).
const STAGE_READ: usize = 4096;

/// What waiting for input ended with.
#[derive(Debug, PartialEq, Eq)]
pub enum Input {
    /// More bytes are in `rbuf`.
    More,
    /// The client closed its side.
    Eof,
    /// Nothing came for `idle_timeout`.
    IdleTimeout,
    /// The server began to stop while the session was idle.
    Shutdown,
}

/// How a TLS handshake ended.
#[derive(Debug)]
pub enum Handshake {
    Done,
    Failed(io::Error),
    TimedOut,
    /// No stream to upgrade, or it is TLS already.
    NotPossible,
}

/// What a read says about the input.
fn read_result(r: io::Result<usize>) -> io::Result<Input> {
    match r {
        Ok(0) => Ok(Input::Eof),
        Ok(_) => Ok(Input::More),
        Err(e) => Err(e),
    }
}

/// Completes once `deadline` has passed, on the connection's one timer: a
/// `timeout` around every read put a timer into tokio's wheel and took it out
/// again at every command (and an insert earlier than every other timer
/// wakes the runtime's driver with an `eventfd` write). The timer keeps
/// the deadline it was set to; when it fires before the wait's own deadline
/// (the client has spoken since), it is set again, so it is moved at most
/// once per `idle_timeout` of a busy connection.
async fn idle_until(timer: &mut Option<Pin<Box<Sleep>>>, deadline: Instant) {
    let sleep = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
    if sleep.deadline() > deadline {
        sleep.as_mut().reset(deadline);
    }
    loop {
        sleep.as_mut().await;
        if Instant::now() >= deadline {
            return;
        }
        sleep.as_mut().reset(deadline);
    }
}

/// One client connection's stream and buffers.
pub struct Connection {
    stream: Option<BoxIo>,
    /// The negotiated TLS version once TLS is on.
    tls: Option<&'static str>,
    /// Bytes read and not consumed yet; the session consumes from the front.
    pub rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    idle_timeout: Duration,
    /// The one timer a read waits on (see `idle_until`); made at the first wait.
    idle: Option<Pin<Box<Sleep>>>,
    shutdown: watch::Receiver<bool>,
}

impl Connection {
    pub fn new(stream: BoxIo, idle_timeout: Duration, shutdown: watch::Receiver<bool>) -> Self {
        Connection {
            stream: Some(stream),
            tls: None,
            // Allocated when there is something to hold (see `read_more`, `send`).
            rbuf: Vec::new(),
            wbuf: Vec::new(),
            idle_timeout,
            idle: None,
            shutdown,
        }
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// "TLSv1.3", "TLSv1.2", or `None` before TLS.
    pub fn tls_version(&self) -> Option<&'static str> {
        self.tls
    }

    /// Whether the server is stopping.
    pub fn shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Reads more input into `rbuf`. The wait ends at `idle_timeout`, and at a
    /// server shutdown when `interruptible` (a transaction in progress is not:
    /// it may finish, bounded by the server's grace deadline). `bulk`: a
    /// message body is coming (DATA, BDAT), so the read takes up to
    /// `READ_CHUNK` at once.
    ///
    /// # Errors
    /// I/O errors from the stream.
    pub async fn read_more(&mut self, interruptible: bool, bulk: bool) -> io::Result<Input> {
        let mut shutdown = self.shutdown.clone();
        let Some(stream) = self.stream.as_mut() else {
            return Ok(Input::Eof);
        };
        let deadline = Instant::now() + self.idle_timeout;
        if interruptible && self.rbuf.is_empty() {
            // Between transactions with everything read consumed: the client
            // may stay silent for minutes. Hold no buffers while it does (an
            // idle connection then costs its task and session, a few KiB;
            // `scripts/bench.sh` measures it): the read lands on the stack
            // and is copied into a buffer allocated for what came.
            self.rbuf = Vec::new();
            if self.wbuf.is_empty() {
                self.wbuf = Vec::new();
            }
            let rbuf = &mut self.rbuf;
            let read = std::future::poll_fn(|cx| {
                // Not zeroed: `ReadBuf` tracks what the read filled.
                let mut stage = [MaybeUninit::<u8>::uninit(); STAGE_READ];
                let mut got = ReadBuf::uninit(&mut stage);
                ready!(Pin::new(&mut **stream).poll_read(cx, &mut got))?;
                let got = got.filled();
                rbuf.reserve_exact(got.len().max(IDLE_READ));
                rbuf.extend_from_slice(got);
                Poll::Ready(Ok::<usize, io::Error>(got.len()))
            });
            // In this order: what came is read even when the timer or the
            // stop is due too, as the `timeout` around the read did.
            return tokio::select! {
                biased;
                r = read => read_result(r),
                () = idle_until(&mut self.idle, deadline) => Ok(Input::IdleTimeout),
                _ = shutdown.wait_for(|s| *s) => Ok(Input::Shutdown),
            };
        }
        if self.rbuf.is_empty() && bulk {
            // A body: one read for what a 2 KB message is, not two.
            if self.rbuf.capacity() < READ_CHUNK {
                self.rbuf = Vec::with_capacity(READ_CHUNK);
            }
        } else if self.rbuf.is_empty() {
            // Commands inside a transaction: give a big buffer back.
            if self.rbuf.capacity() > IDLE_READ {
                self.rbuf = Vec::new();
            }
            self.rbuf.reserve_exact(IDLE_READ);
        } else if self.rbuf.capacity() - self.rbuf.len() < READ_CHUNK / 4 {
            self.rbuf.reserve(READ_CHUNK);
        }
        let stopping = async {
            if !interruptible {
                std::future::pending::<()>().await;
            }
            let _ = shutdown.wait_for(|s| *s).await;
        };
        tokio::select! {
            biased;
            r = stream.read_buf(&mut self.rbuf) => read_result(r),
            () = idle_until(&mut self.idle, deadline) => Ok(Input::IdleTimeout),
            () = stopping => Ok(Input::Shutdown),
        }
    }

    /// Queues a reply; it goes out at the next `flush`.
    pub fn send(&mut self, reply: &Reply) {
        reply.encode(&mut self.wbuf);
    }

    /// Writes what is queued, in one write. A client that does not read for
    /// `idle_timeout` is an error.
    ///
    /// # Errors
    /// I/O errors, or `TimedOut`.
    pub async fn flush(&mut self) -> io::Result<()> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        let Some(stream) = self.stream.as_mut() else {
            self.wbuf.clear();
            return Ok(());
        };
        let r = timeout(self.idle_timeout, async {
            stream.write_all(&self.wbuf).await?;
            stream.flush().await
        })
        .await;
        self.wbuf.clear();
        match r {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "client not reading",
            )),
        }
    }

    /// Writes what is queued, best effort and briefly: for a close postern decided on.
    pub async fn flush_briefly(&mut self) {
        let _ = timeout(CLOSE_TIMEOUT, self.flush()).await;
    }

    /// Ends the stream: TLS says close_notify and shuts down; plain TCP is
    /// closed as it is dropped, which sends the FIN (a `shutdown` first was a
    /// system call more a session, and failed with ENOTCONN whenever the
    /// client had gone already).
    pub async fn close(&mut self) {
        if let Some(mut s) = self.stream.take()
            && self.tls.is_some()
        {
            let _ = timeout(CLOSE_TIMEOUT, s.shutdown()).await;
        }
    }

    /// Runs a server-side TLS handshake over the stream, replacing it with the TLS one.
    /// On failure the stream is gone: the connection is over.
    pub async fn start_tls(&mut self, acceptor: &TlsAcceptor) -> Handshake {
        if self.tls.is_some() {
            return Handshake::NotPossible;
        }
        let Some(plain) = self.stream.take() else {
            return Handshake::NotPossible;
        };
        match timeout(HANDSHAKE_TIMEOUT, acceptor.accept(plain)).await {
            Ok(Ok(tls)) => {
                self.tls = Some(match tls.get_ref().1.protocol_version() {
                    Some(tokio_rustls::rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
                    Some(tokio_rustls::rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
                    _ => "TLS",
                });
                self.stream = Some(Box::new(tls));
                Handshake::Done
            }
            Ok(Err(e)) => Handshake::Failed(e),
            Err(_) => Handshake::TimedOut,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncWriteExt, DuplexStream};

    /// Waits for input while the client writes `line` after `after`.
    async fn spoken_after(
        conn: &mut Connection,
        client: &mut DuplexStream,
        after: Duration,
        line: &[u8],
        interruptible: bool,
    ) -> Input {
        let writer = async {
            tokio::time::sleep(after).await;
            client.write_all(line).await.unwrap();
        };
        let (input, ()) = tokio::join!(conn.read_more(interruptible, false), writer);
        conn.rbuf.clear();
        input.unwrap()
    }

    /// The one kept timer: a client that speaks more often than
    /// `idle_timeout` is never cut, though the timer set at its first wait
    /// fires while it is still busy; a silent one is cut `idle_timeout` after
    /// its last word, not after the first wait's deadline.
    #[tokio::test(start_paused = true)]
    async fn the_idle_cut_counts_from_the_last_read() {
        let (ours, mut client) = tokio::io::duplex(1024);
        let (_stop, stopped) = watch::channel(false);
        let idle = Duration::from_secs(10);
        let mut conn = Connection::new(Box::new(ours), idle, stopped);
        let start = Instant::now();
        for _ in 0..5 {
            let input = spoken_after(
                &mut conn,
                &mut client,
                Duration::from_secs(6),
                b"NOOP\r\n",
                true,
            )
            .await;
            assert_eq!(input, Input::More);
        }
        assert_eq!(start.elapsed(), Duration::from_secs(30));
        let input = conn.read_more(true, false).await.unwrap();
        assert_eq!(input, Input::IdleTimeout);
        // Cut 10 s after the last line (at 30 s), not at a deadline set earlier.
        assert_eq!(start.elapsed(), Duration::from_secs(40));
        // Inside a transaction (not interruptible) the same holds.
        let input = spoken_after(
            &mut conn,
            &mut client,
            Duration::from_secs(9),
            b"DATA\r\n",
            false,
        )
        .await;
        assert_eq!(input, Input::More);
        let input = conn.read_more(false, false).await.unwrap();
        assert_eq!(input, Input::IdleTimeout);
        assert_eq!(start.elapsed(), Duration::from_secs(59));
    }
}
