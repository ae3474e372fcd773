//! One connection of the fake upstream, below the dialogue: TLS, the stream,
//! line and DATA reading with the faults it injects.

use super::*;

pub(super) fn tls_acceptor(cert: &TestCert) -> TlsAcceptor {
    let certs = CertificateDer::pem_slice_iter(cert.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("FakeUpstream: parsing test certificate PEM");
    let key = PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes())
        .expect("FakeUpstream: parsing test key PEM");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("FakeUpstream: rustls protocol versions")
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .expect("FakeUpstream: rustls server config");
    TlsAcceptor::from(Arc::new(config))
}

// ---------------------------------------------------------------------------------------
// Connection plumbing

pub(super) enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// Only while the STARTTLS handshake runs.
    Gone,
}

pub(super) fn gone() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "stream taken for TLS handshake",
    )
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::Gone => Poll::Ready(Err(gone())),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::Gone => Poll::Ready(Err(gone())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::Gone => Poll::Ready(Err(gone())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::Gone => Poll::Ready(Err(gone())),
        }
    }
}

pub(super) enum LineRead {
    /// A command line without its LF / CRLF.
    Line(Vec<u8>),
    TooLong,
    Eof,
}

pub(super) enum DataRead {
    /// (raw_data, data)
    Done(Vec<u8>, Vec<u8>),
    /// `drop_after_data_bytes` reached.
    Dropped,
    TooLong,
    Eof,
}

pub(super) enum ChunkRead {
    Done(Vec<u8>),
    /// `drop_after_data_bytes` reached.
    Dropped,
    Eof,
}

pub(super) struct Conn {
    /// This connection's number, from 1.
    pub(super) id: usize,
    pub(super) stream: Stream,
    /// Received bytes; `buf[start..]` is not consumed yet.
    pub(super) buf: Vec<u8>,
    pub(super) start: usize,
    /// Replies not written yet.
    pub(super) out: Vec<u8>,
    pub(super) shared: Arc<Shared>,
}

impl Conn {
    pub(super) fn pending(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    pub(super) fn reply(&mut self, reply: &str) {
        for line in reply.split('\n') {
            let line = line.strip_suffix('\r').unwrap_or(line);
            if !line.is_empty() {
                self.out.extend_from_slice(line.as_bytes());
                self.out.extend_from_slice(b"\r\n");
            }
        }
    }

    pub(super) async fn flush(&mut self) -> io::Result<()> {
        if !self.out.is_empty() {
            self.stream.write_all(&self.out).await?;
            self.stream.flush().await?;
            self.out.clear();
        }
        Ok(())
    }

    /// Flushes pending replies, then reads more input. Returns false on EOF.
    pub(super) async fn fill(&mut self) -> io::Result<bool> {
        self.flush().await?;
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.reserve(16 * 1024);
        let old = self.buf.len();
        if self.stream.read_buf(&mut self.buf).await? == 0 {
            return Ok(false);
        }
        let new = &self.buf[old..];
        let id = self.id;
        self.shared.update(|r| {
            r.raw.extend_from_slice(new);
            r.reads.push((id, new.to_vec()));
        });
        Ok(true)
    }

    /// Sends pending replies and a FIN, then discards input until the client closes (at
    /// most 1 s / 4 MiB), so the client reads the last reply instead of a connection reset.
    pub(super) async fn close_gracefully(&mut self) -> io::Result<()> {
        self.flush().await?;
        self.stream.shutdown().await?;
        let drain = async {
            let mut sink = [0u8; 4096];
            let mut total = 0;
            while total < 4 << 20 {
                match self.stream.read(&mut sink).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => total += n,
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
        Ok(())
    }

    /// Drops any input received but not consumed yet (plaintext pipelined after STARTTLS).
    pub(super) fn discard_input(&mut self) {
        self.buf.clear();
        self.start = 0;
    }

    pub(super) async fn read_line(&mut self) -> io::Result<LineRead> {
        loop {
            if let Some(i) = self.pending().iter().position(|&b| b == b'\n') {
                if i + 1 > MAX_LINE {
                    return Ok(LineRead::TooLong);
                }
                let line = &self.pending()[..i];
                let line = line.strip_suffix(b"\r").unwrap_or(line).to_vec();
                self.start += i + 1;
                return Ok(LineRead::Line(line));
            }
            if self.pending().len() > MAX_LINE {
                return Ok(LineRead::TooLong);
            }
            if !self.fill().await? {
                return Ok(LineRead::Eof);
            }
        }
    }

    /// Reads the `n` bytes of a BDAT chunk, the message having `before` bytes
    /// already; drops the connection once `drop_after` bytes of it came.
    pub(super) async fn read_chunk(
        &mut self,
        n: usize,
        before: usize,
        drop_after: Option<usize>,
    ) -> io::Result<ChunkRead> {
        loop {
            let have = self.pending().len().min(n);
            if drop_after.is_some_and(|d| before + have >= d) {
                return Ok(ChunkRead::Dropped);
            }
            if have == n {
                let chunk = self.pending()[..n].to_vec();
                self.start += n;
                return Ok(ChunkRead::Done(chunk));
            }
            if !self.fill().await? {
                return Ok(ChunkRead::Eof);
            }
        }
    }

    /// Reads DATA content up to a line that is exactly ".\r\n".
    pub(super) async fn read_data(&mut self, drop_after: Option<usize>) -> io::Result<DataRead> {
        let mut raw = Vec::new();
        let mut data = Vec::new();
        loop {
            while let Some(i) = find_crlf(self.pending()) {
                let end = self.start + i + 2;
                let line = &self.buf[self.start..end];
                if line.len() > MAX_LINE {
                    return Ok(DataRead::TooLong);
                }
                self.start = end;
                if line == b".\r\n" {
                    return Ok(DataRead::Done(raw, data));
                }
                raw.extend_from_slice(line);
                data.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
                if drop_after.is_some_and(|n| raw.len() >= n) {
                    return Ok(DataRead::Dropped);
                }
            }
            // An incomplete line is pending; count it as DATA unless it may be the final ".".
            let partial = self.pending();
            let partial_len = match partial {
                b"." | b".\r" => 0,
                p => p.len(),
            };
            if drop_after.is_some_and(|n| raw.len() + partial_len >= n) {
                return Ok(DataRead::Dropped);
            }
            if partial.len() > MAX_LINE {
                return Ok(DataRead::TooLong);
            }
            if !self.fill().await? {
                return Ok(DataRead::Eof);
            }
        }
    }
}

pub(super) fn find_crlf(b: &[u8]) -> Option<usize> {
    b.windows(2).position(|w| w == b"\r\n")
}

// ---------------------------------------------------------------------------------------
// The SMTP session
