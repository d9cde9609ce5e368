//! Bulk tunnel bytes through a kernel pipe with splice(2), so they never enter user space:
//! the fast path `splice` switches a direction to once it has moved enough to be bulk.
//! Linux only; [`Passed::Unsupported`] tells the caller to keep copying.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::Interest;
use tokio::net::TcpStream;

/// Bytes moved per splice call; also the pipe's capacity, so one call fills it at most.
const PIPE_SIZE: usize = 256 * 1024;

/// A non-blocking pipe, closed on drop.
struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
}

impl Pipe {
    fn new() -> io::Result<Pipe> {
        let mut fds = [0 as RawFd; 2];
        // SAFETY: pipe2 writes two descriptors into the array we own.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both descriptors were just created and are owned by nobody else.
        let pipe = unsafe {
            Pipe {
                read: OwnedFd::from_raw_fd(fds[0]),
                write: OwnedFd::from_raw_fd(fds[1]),
            }
        };
        // A larger pipe means fewer calls per megabyte; the default (64 KiB) still works.
        // SAFETY: F_SETPIPE_SZ on a pipe we own.
        unsafe {
            libc::fcntl(
                pipe.write.as_raw_fd(),
                libc::F_SETPIPE_SZ,
                PIPE_SIZE as libc::c_int,
            )
        };
        Ok(pipe)
    }
}

fn splice_fd(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    // SAFETY: plain splice(2) between descriptors we hold; null offsets (sockets and pipes).
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// How a zero-copy pass ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Passed {
    /// End of stream, every byte delivered.
    Done,
    /// This kernel, socket or moment (no descriptors left for a pipe) can't splice; nothing
    /// is held in a pipe, so the caller can go on copying.
    Unsupported,
}

/// Whether an error means "this kernel or socket can't splice".
fn unsupported(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP)
    )
}

/// Moves `from` → `to` until end of stream, counting bytes as they are delivered.
pub async fn pass(from: &TcpStream, to: &TcpStream, moved: &AtomicU64) -> io::Result<Passed> {
    let Ok(pipe) = Pipe::new() else {
        return Ok(Passed::Unsupported);
    };
    loop {
        from.readable().await?;
        let filled = from.try_io(Interest::READABLE, || {
            splice_fd(from.as_raw_fd(), pipe.write.as_raw_fd(), PIPE_SIZE)
        });
        let mut left = match filled {
            Ok(0) => return Ok(Passed::Done),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            // The pipe is empty here, so falling back loses nothing.
            Err(e) if unsupported(&e) => return Ok(Passed::Unsupported),
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
