//! A socket wrapper that counts the bytes read and written, for the `bytes_up` and
//! `bytes_down` of forwarded plain-HTTP requests (tunnels count in `splice`), and stops
//! writing at an upload cap.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::UpLimit;

/// Bytes written to (up) and read from (down) the wrapped upstream socket.
#[derive(Debug, Default)]
pub struct Totals {
    up: AtomicU64,
    down: AtomicU64,
    /// Set when a write was refused at the upload cap.
    capped: AtomicBool,
}

impl Totals {
    /// The live counters, for an idle watch.
    pub fn counters(&self) -> (&AtomicU64, &AtomicU64) {
        (&self.up, &self.down)
    }

    /// Whether the upload cap cut the connection.
    pub fn capped(&self) -> bool {
        self.capped.load(Ordering::Relaxed)
    }

    pub fn totals(&self) -> (u64, u64) {
        (
            self.up.load(Ordering::Relaxed),
            self.down.load(Ordering::Relaxed),
        )
    }
}

pub struct Counted<T> {
    inner: T,
    totals: Arc<Totals>,
    /// What may still be written upstream.
    up_limit: UpLimit,
}

impl<T> Counted<T> {
    pub fn new(inner: T, up_limit: UpLimit) -> (Counted<T>, Arc<Totals>) {
        let totals = Arc::new(Totals::default());
        (
            Counted {
                inner,
                totals: totals.clone(),
                up_limit,
            },
            totals,
        )
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = (buf.filled().len() - before) as u64;
        self.totals.down.fetch_add(read, Ordering::Relaxed);
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        // Not one byte past a cap: what is granted is written, then writes fail.
        let granted = self
            .up_limit
            .grant(self.totals.up.load(Ordering::Relaxed), buf.len());
        if granted == 0 && !buf.is_empty() {
            self.totals.capped.store(true, Ordering::Relaxed);
            return Poll::Ready(Err(io::Error::other("upload cap reached")));
        }
        let polled = Pin::new(&mut self.inner).poll_write(cx, &buf[..granted]);
        let written = match polled {
            Poll::Ready(Ok(n)) => n,
            _ => 0,
        };
        self.up_limit.unused(granted, written);
        self.totals.up.fetch_add(written as u64, Ordering::Relaxed);
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
