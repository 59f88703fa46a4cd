//! The handoff from the fast path to hyper's server: the connection, with
//! what was already read off it put back in front, and every byte hyper
//! reads shown to the guard (`guard.rs`) first.

use super::guard::{Guard, Verdict};
use bytes::{Buf as _, Bytes};
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A connection with bytes already read off it, which reads come from
/// first.
pub(crate) struct Rewind<S> {
    pre: Bytes,
    io: S,
    guard: Guard,
}

impl<S> Rewind<S> {
    /// `max_head`: the longest request head hyper is to accept.
    pub(super) fn new(pre: Bytes, io: S, max_head: usize) -> Rewind<S> {
        Rewind {
            pre,
            io,
            guard: Guard::new(max_head),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = out.filled().len();
        if !self.pre.is_empty() {
            let n = self.pre.len().min(out.remaining());
            out.put_slice(&self.pre[..n]);
            self.pre.advance(n);
        } else {
            ready!(Pin::new(&mut self.io).poll_read(cx, out))?;
        }
        match self.guard.scan(&out.filled()[before..]) {
            Verdict::Pass => {}
            Verdict::Cut(n) if n > 0 => {
                // The head's last byte becomes one no parser takes.
                out.set_filled(before + n);
                out.filled_mut()[before + n - 1] = 0;
            }
            Verdict::Cut(_) | Verdict::Stop => out.set_filled(before),
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    #[tokio::test]
    async fn reads_what_was_read_first_and_writes_through() {
        let (mut far, near) = tokio::io::duplex(1024);
        let mut io = Rewind::new(Bytes::from_static(b"GET / "), near, 8192);
        far.write_all(b"HTTP/1.1").await.unwrap();
        let mut small = [0u8; 4];
        io.read_exact(&mut small).await.unwrap();
        assert_eq!(&small, b"GET ");
        let mut rest = [0u8; 10];
        io.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"/ HTTP/1.1");
        io.write_all(b"ok").await.unwrap();
        let mut back = [0u8; 2];
        far.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"ok");
    }
}
