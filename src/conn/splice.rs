//! The last step of an allowed tunnel: move bytes both ways until both sides are done or the
//! tunnel has been idle for `timeouts.idle`. Byte-exact, with half-close passed on.
//!
//! A buffer is only held while a direction is moving data: an idle tunnel owns no buffer, so
//! thousands of open tunnels cost little memory. Bulk directions move to splice(2).

use std::io;
use std::net::Shutdown;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use tokio::net::TcpStream;

use super::zero_copy::Passed;
use super::UpLimit;

/// Bytes read at a time. Large enough that a bulk transfer needs few syscalls.
const CHUNK: usize = 64 * 1024;

/// What a finished splice moved, and why it ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Moved {
    /// Client → upstream.
    pub up: u64,
    /// Upstream → client.
    pub down: u64,
    pub idle_timeout: bool,
    /// The client reached the upload cap and the tunnel was cut there.
    pub capped: bool,
}

/// Copies `client` ⇄ `upstream` until both directions reach end of stream, an error ends
/// the tunnel, the tunnel is idle for `idle`, `stop` completes (drain deadline), or `up`
/// allows the client no more: not one byte past it is read.
pub async fn splice(
    client: &TcpStream,
    upstream: &TcpStream,
    idle: Duration,
    stop: impl std::future::Future<Output = ()>,
    up: &UpLimit,
) -> Moved {
    let sent = AtomicU64::new(0);
    let received = AtomicU64::new(0);
    let mut capped = false;
    let both = async {
        // An error in either direction ends the whole tunnel; a clean end of stream in one
        // direction leaves the other running (half-close). A cap ends both at once.
        let upload = async {
            match copy(client, upstream, &sent, up).await? {
                Ended::Capped => Err(io::Error::other("upload cap")),
                _ => Ok(()),
            }
        };
        let result = tokio::try_join!(upload, copy(upstream, client, &received, &UpLimit::NONE));
        capped = matches!(&result, Err(e) if e.to_string() == "upload cap");
    };
    let idle_timeout = tokio::select! {
        _ = both => false,
        _ = watch_idle(idle, &sent, &received) => true,
        _ = stop => false,
    };
    Moved {
        up: sent.load(Ordering::Relaxed),
        down: received.load(Ordering::Relaxed),
        idle_timeout,
        capped,
    }
}

/// A direction that has moved this much is bulk: it switches to splice(2) (Linux).
const ZERO_COPY_AFTER: u64 = 1 << 20;

/// One direction, until end of stream (passed on as a write shutdown so the other side sees
/// the half-close) or until `up` allows no more. Small and interactive traffic is copied
/// through a buffer held only while data flows; past `ZERO_COPY_AFTER` the direction moves
/// to a kernel pipe.
async fn copy(
    from: &TcpStream,
    to: &TcpStream,
    moved: &AtomicU64,
    up: &UpLimit,
) -> io::Result<Ended> {
    let result = async {
        match buffered(from, to, moved, ZERO_COPY_AFTER, up).await? {
            Ended::Bulk => {}
            ended => return Ok(ended),
        }
        match super::zero_copy::pass(from, to, moved, up).await? {
            Passed::Done => Ok(Ended::Eof),
            Passed::Capped => Ok(Ended::Capped),
            Passed::Unsupported => buffered(from, to, moved, u64::MAX, up).await,
        }
    }
    .await;
    if !matches!(result, Ok(Ended::Capped)) {
        let _ = socket2::SockRef::from(to).shutdown(Shutdown::Write);
    }
    result
}

#[derive(Debug, PartialEq, Eq)]
enum Ended {
    Eof,
    /// `switch_at` bytes were moved: the stream goes on, in bulk.
    Bulk,
    /// The upload limit allows no more.
    Capped,
}

/// Copies through a buffer until end of stream, until `switch_at` bytes have been moved, or
/// until `up` allows no more; it never reads past what `up` granted.
async fn buffered(
    from: &TcpStream,
    to: &TcpStream,
    moved: &AtomicU64,
    switch_at: u64,
    up: &UpLimit,
) -> io::Result<Ended> {
    let mut total = 0u64;
    loop {
        from.readable().await?;
        // Allocated (not zeroed) per burst and dropped when the socket runs dry.
        let mut buf = BytesMut::with_capacity(CHUNK);
        loop {
            buf.clear();
            let want = up.grant(moved.load(Ordering::Relaxed), CHUNK);
            if want == 0 {
                return Ok(Ended::Capped);
            }
            let read = from.try_read_buf(&mut (&mut buf).limit(want));
            up.unused(want, *read.as_ref().unwrap_or(&0));
            let n = match read {
                Ok(0) => return Ok(Ended::Eof),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            };
            write_all(to, &buf[..n]).await?;
            moved.fetch_add(n as u64, Ordering::Relaxed);
            total += n as u64;
            if total >= switch_at {
                return Ok(Ended::Bulk);
            }
        }
    }
}

/// Writes all of `data`, waiting for the socket to take it.
pub async fn write_all(to: &TcpStream, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        match to.try_write(data) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => to.writable().await?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Completes once neither counter has moved for `idle`, checked at a quarter of it so a
/// busy tunnel never touches a timer per read.
pub(super) async fn watch_idle(idle: Duration, up: &AtomicU64, down: &AtomicU64) {
    let tick = (idle / 4).max(Duration::from_millis(50));
    let mut last = (u64::MAX, u64::MAX);
    let mut quiet = Duration::ZERO;
    loop {
        tokio::time::sleep(tick).await;
        let now = (up.load(Ordering::Relaxed), down.load(Ordering::Relaxed));
        if now == last {
            quiet += tick;
            if quiet >= idle {
                return;
            }
        } else {
            quiet = Duration::ZERO;
            last = now;
        }
    }
}
