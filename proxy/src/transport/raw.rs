//! A plain upstream connection as the lean HTTP/1 client uses it and the
//! pool keeps it: the socket, its read buffer, and what the pool needs to
//! know to reuse it.

use crate::resilience::limits::Permit;
use bytes::BytesMut;
use std::future::Future;
use std::io;
use std::task::{Context, Poll};
use std::time::Instant;
use tokio::io::AsyncReadExt as _;
use tokio::net::TcpStream;

/// Room made in the read buffer before a read.
const READ_SPACE: usize = 16 * 1024;

/// An upstream connection and its read buffer.
pub(crate) struct RawConn {
    pub(crate) io: TcpStream,
    pub(crate) buf: BytesMut,
    /// It has carried an exchange before (so a close may be a stale one).
    pub(crate) reused: bool,
    /// When it last went idle.
    pub(crate) since: Instant,
    /// The backend's connection slot, held for the connection's life.
    _permit: Option<Permit>,
}

impl RawConn {
    pub(crate) fn new(io: TcpStream, permit: Option<Permit>, now: Instant) -> RawConn {
        RawConn {
            io,
            buf: BytesMut::new(),
            reused: false,
            since: now,
            _permit: permit,
        }
    }

    /// An idle connection can carry a request: the server has neither closed
    /// it nor sent anything unasked. No system call unless the socket has
    /// signalled readiness since it went idle.
    pub(crate) fn usable(&self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.io.try_read(&mut b), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// Reads what the socket has into the buffer; `Ok(0)` is end of stream.
    pub(crate) fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < READ_SPACE / 4 {
            self.buf.reserve(READ_SPACE);
        }
        // Through `AsyncRead` rather than `try_read_buf`: a short read then
        // clears the socket's readiness, so the next `usable` check answers
        // from the reactor's state instead of a system call.
        std::pin::pin!(self.io.read_buf(&mut self.buf)).poll(cx)
    }

    pub(crate) async fn fill(&mut self) -> io::Result<usize> {
        std::future::poll_fn(|cx| self.poll_fill(cx)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt as _;

    #[tokio::test]
    async fn usable_until_the_server_speaks_or_closes() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        let mut conn = RawConn::new(client, None, Instant::now());
        assert!(conn.usable());
        server.write_all(b"unasked").await.unwrap();
        assert_eq!(conn.fill().await.unwrap(), 7);
        assert_eq!(&conn.buf[..], b"unasked");
        assert!(conn.buf.capacity() >= READ_SPACE);
        drop(server);
        assert_eq!(conn.fill().await.unwrap(), 0, "end of stream");
        assert!(!conn.usable());
    }
}
