//! One stream type for both sides: any byte stream, boxed. A session or an
//! upstream connection holds a `BoxIo`; STARTTLS wraps the box it has in TLS
//! and boxes the result, so the inside of a connection changes without its
//! type changing. Tests drive sessions over `tokio::io::duplex` this way, with
//! no socket.

use std::future::Future;
use std::io;
use std::pin::Pin;

use tokio::io::{AsyncRead, AsyncWrite};

/// A bidirectional byte stream a session or an upstream connection can run over.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// A boxed stream: plain TCP, TLS over it, or an in-memory pipe in tests.
pub type BoxIo = Box<dyn Io>;

/// A future that yields a new stream.
pub type Connecting<'a> = Pin<Box<dyn Future<Output = io::Result<BoxIo>> + Send + 'a>>;

/// Opens byte streams to an address (`host:port`). The server uses TCP; tests
/// may hand an upstream an in-memory connector instead.
pub trait Connector: Send + Sync + 'static {
    fn connect<'a>(&'a self, addr: &'a str) -> Connecting<'a>;
}

/// TCP with Nagle off: commands are small and pipelined by hand.
#[derive(Debug, Default, Clone, Copy)]
pub struct TcpConnector;

impl Connector for TcpConnector {
    fn connect<'a>(&'a self, addr: &'a str) -> Connecting<'a> {
        Box::pin(async move {
            let tcp = tokio::net::TcpStream::connect(addr).await?;
            let _ = tcp.set_nodelay(true);
            Ok(Box::new(tcp) as BoxIo)
        })
    }
}
