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
/// the tunnel, the tunnel is idle for `idle`, `stop` completes (drain deadline), or the client
/// would send more than `up_limit` bytes (`u64::MAX`: no cap): not one byte past it is
/// forwarded.
pub async fn splice(
    client: &TcpStream,
    upstream: &TcpStream,
    idle: Duration,
    stop: impl std::future::Future<Output = ()>,
    up_limit: u64,
) -> Moved {
    let up = AtomicU64::new(0);
    let down = AtomicU64::new(0);
    let mut capped = false;
    let both = async {
        // An error in either direction ends the whole tunnel; a clean end of stream in one
        // direction leaves the other running (half-close). The cap ends both at once.
        let upload = async {
            match copy(client, upstream, &up, up_limit).await? {
                Ended::Limit => Err(io::Error::other("upload cap")),
                Ended::Eof => Ok(()),
            }
        };
        let result = tokio::try_join!(upload, copy(upstream, client, &down, u64::MAX));
        capped = result.is_err() && up_limit != u64::MAX && up.load(Ordering::Relaxed) >= up_limit;
    };
    let idle_timeout = tokio::select! {
        _ = both => false,
        _ = watch_idle(idle, &up, &down) => true,
        _ = stop => false,
    };
    Moved {
        up: up.load(Ordering::Relaxed),
        down: down.load(Ordering::Relaxed),
        idle_timeout,
        capped,
    }
}

/// A direction that has moved this much is bulk: it switches to splice(2) (Linux).
const ZERO_COPY_AFTER: u64 = 1 << 20;

/// One direction, until end of stream (passed on as a write shutdown so the other side sees
/// the half-close) or until `limit` bytes have been moved (`Ended::Limit`; nothing past it is
/// read). Small and interactive traffic is copied through a buffer held only while data
/// flows; past `ZERO_COPY_AFTER` the direction moves to a kernel pipe.
async fn copy(
    from: &TcpStream,
    to: &TcpStream,
    moved: &AtomicU64,
    limit: u64,
) -> io::Result<Ended> {
    let result = async {
        let bulk_at = ZERO_COPY_AFTER.min(limit);
        if buffered(from, to, moved, bulk_at).await? == Ended::Eof {
            return Ok(Ended::Eof);
        }
        if bulk_at == limit {
            return Ok(Ended::Limit);
        }
        let left = limit - bulk_at;
        match super::zero_copy::pass(from, to, moved, left).await? {
            Passed::Done => Ok(Ended::Eof),
            Passed::Limit => Ok(Ended::Limit),
            Passed::Unsupported => {
                let sent = moved.load(Ordering::Relaxed);
                buffered(from, to, moved, limit.saturating_sub(sent)).await
            }
        }
    }
    .await;
    if !matches!(result, Ok(Ended::Limit)) {
        let _ = socket2::SockRef::from(to).shutdown(Shutdown::Write);
    }
    result
}

#[derive(Debug, PartialEq, Eq)]
enum Ended {
    Eof,
    /// `limit` bytes were moved; the stream goes on.
    Limit,
}

/// Copies through a buffer until end of stream or until `limit` bytes have been moved; it
/// never reads past `limit`.
async fn buffered(
    from: &TcpStream,
    to: &TcpStream,
    moved: &AtomicU64,
    limit: u64,
) -> io::Result<Ended> {
    let mut total = 0u64;
    if limit == 0 {
        return Ok(Ended::Limit);
    }
    loop {
        from.readable().await?;
        // Allocated (not zeroed) per burst and dropped when the socket runs dry.
        let mut buf = BytesMut::with_capacity(CHUNK);
        loop {
            buf.clear();
            let want = (limit - total).min(CHUNK as u64) as usize;
            let n = match from.try_read_buf(&mut (&mut buf).limit(want)) {
                Ok(0) => return Ok(Ended::Eof),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            };
            write_all(to, &buf[..n]).await?;
            moved.fetch_add(n as u64, Ordering::Relaxed);
            total += n as u64;
            if total >= limit {
                return Ok(Ended::Limit);
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
