//! Bulk tunnel bytes through a kernel pipe with splice(2), so they never enter user space:
//! the fast path `splice` switches a direction to once it has moved enough to be bulk.
//! Linux only; [`Passed::Unsupported`] tells the caller to keep copying.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::Interest;
use tokio::net::TcpStream;

use super::UpLimit;
use crate::sys::{splice_fd, splice_unsupported, Pipe};

/// Bytes moved per splice call; also the pipe's capacity, so one call fills it at most.
const PIPE_SIZE: usize = 256 * 1024;

/// How a zero-copy pass ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Passed {
    /// End of stream, every byte delivered.
    Done,
    /// This kernel, socket or moment (no descriptors left for a pipe) can't splice; nothing
    /// is held in a pipe, so the caller can go on copying.
    Unsupported,
    /// The upload limit allows no more; nothing past it was read.
    Capped,
}

/// Moves `from` → `to` until end of stream or until `up` allows no more, counting bytes as
/// they are delivered.
pub async fn pass(
    from: &TcpStream,
    to: &TcpStream,
    moved: &AtomicU64,
    up: &UpLimit,
) -> io::Result<Passed> {
    let Ok(pipe) = Pipe::new(PIPE_SIZE) else {
        return Ok(Passed::Unsupported);
    };
    loop {
        from.readable().await?;
        let want = up.grant(moved.load(Ordering::Relaxed), PIPE_SIZE);
        if want == 0 {
            return Ok(Passed::Capped);
        }
        let filled = from.try_io(Interest::READABLE, || {
            splice_fd(from.as_raw_fd(), pipe.write.as_raw_fd(), want)
        });
        up.unused(want, *filled.as_ref().unwrap_or(&0));
        let mut left = match filled {
            Ok(0) => return Ok(Passed::Done),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            // The pipe is empty here, so falling back loses nothing.
            Err(e) if splice_unsupported(&e) => return Ok(Passed::Unsupported),
            Err(e) => return Err(e),
        };
        while left > 0 {
            let drained = to.try_io(Interest::WRITABLE, || {
                splice_fd(pipe.read.as_raw_fd(), to.as_raw_fd(), left)
            });
            match drained {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    left -= n;
                    moved.fetch_add(n as u64, Ordering::Relaxed);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => to.writable().await?,
                // Bytes are in the pipe: any other error ends the tunnel rather than lose them.
                Err(e) => return Err(e),
            }
        }
    }
}
