//! Every call into libc in one place, each behind a safe function: the socket options and
//! interface list the listeners need, the file-descriptor limit, splice(2) with its pipe, and
//! handing the allocator's free memory back to the kernel.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use tokio::net::TcpStream;

/// A non-blocking pipe, closed on drop.
pub struct Pipe {
    pub read: OwnedFd,
    pub write: OwnedFd,
}

impl Pipe {
    pub fn new(size: usize) -> io::Result<Pipe> {
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
                size as libc::c_int,
            )
        };
        Ok(pipe)
    }
}

pub fn splice_fd(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
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

/// Whether an error means "this kernel or socket can't splice".
pub fn splice_unsupported(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP)
    )
}

/// Where a connection redirected by iptables/nftables was headed (`SO_ORIGINAL_DST`), or
/// `None` when it was not redirected.
pub fn original_dst(stream: &TcpStream) -> Option<SocketAddr> {
    use std::os::fd::AsRawFd;
    let local = stream.local_addr().ok()?;
    let fd = stream.as_raw_fd();
    // SAFETY: getsockopt writes at most `len` bytes into a properly sized sockaddr_storage.
    let dst = unsafe {
        let mut addr: libc::sockaddr_storage = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        // A v4-mapped local address on a dual-stack [::] listener is an IPv4 connection.
        let (level, name) = match local.ip().to_canonical() {
            IpAddr::V4(_) => (libc::SOL_IP, libc::SO_ORIGINAL_DST),
            IpAddr::V6(_) => (libc::SOL_IPV6, libc::IP6T_SO_ORIGINAL_DST),
        };
        if libc::getsockopt(
            fd,
            level,
            name,
            (&mut addr as *mut libc::sockaddr_storage).cast(),
            &mut len,
        ) != 0
        {
            return None;
        }
        sockaddr_to_std(&addr)?
    };
    (dst.ip().to_canonical() != local.ip().to_canonical() || dst.port() != local.port())
        .then_some(dst)
}

fn sockaddr_to_std(addr: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(addr.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says this storage holds a sockaddr_in.
            let v4 =
                unsafe { &*(addr as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = std::net::Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr));
            Some(SocketAddr::new(IpAddr::V4(ip), u16::from_be(v4.sin_port)))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this storage holds a sockaddr_in6.
            let v6 =
                unsafe { &*(addr as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = std::net::Ipv6Addr::from(v6.sin6_addr.s6_addr);
            Some(SocketAddr::new(IpAddr::V6(ip), u16::from_be(v6.sin6_port)))
        }
        _ => None,
    }
}

/// This host's interface addresses, so that a listener on 0.0.0.0 is recognised when an
/// upstream resolves to one of them.
pub fn local_addresses() -> Vec<IpAddr> {
    let mut found = Vec::new();
    // SAFETY: getifaddrs hands us a linked list we walk read-only and free once.
    unsafe {
        let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
        if libc::getifaddrs(&mut list) != 0 {
            return found;
        }
        let mut cursor = list;
        while !cursor.is_null() {
            let entry = &*cursor;
            if !entry.ifa_addr.is_null() {
                let mut storage: libc::sockaddr_storage = std::mem::zeroed();
                let len = match i32::from((*entry.ifa_addr).sa_family) {
                    libc::AF_INET => std::mem::size_of::<libc::sockaddr_in>(),
                    libc::AF_INET6 => std::mem::size_of::<libc::sockaddr_in6>(),
                    _ => 0,
                };
                if len > 0 {
                    std::ptr::copy_nonoverlapping(
                        entry.ifa_addr.cast::<u8>(),
                        (&mut storage as *mut libc::sockaddr_storage).cast::<u8>(),
                        len,
                    );
                    if let Some(addr) = sockaddr_to_std(&storage) {
                        found.push(addr.ip());
                    }
                }
            }
            cursor = entry.ifa_next;
        }
        libc::freeifaddrs(list);
    }
    found
}

/// Tunnels hold two descriptors each: raise the soft limit to the hard one.
pub fn raise_fd_limit() {
    // SAFETY: plain getrlimit/setrlimit on a local struct.
    unsafe {
        let mut limit: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// How often [`release_free_memory`] runs: RSS comes back within this long after a burst.
pub const RELEASE_MEMORY_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Starts a thread that hands the allocator's free memory back to the kernel every
/// [`RELEASE_MEMORY_EVERY`]. glibc keeps what a burst freed for reuse (in every thread's
/// arena), so without this RSS stays at the burst's level for good (a trim handed back
/// 1.5 MiB of 12.5 after the soak's hostile phase). It runs on its own thread: the walk
/// (median 1-3 ms, longest 13 ms over two 20-minute soaks on a loaded 2-core machine) holds each
/// arena's lock in turn, so an allocation may wait that long, but no runtime worker is
/// stalled by the walk itself. A no-op where the allocator is not glibc's.
pub fn release_free_memory_periodically() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static STARTED: std::sync::Once = std::sync::Once::new();
        STARTED.call_once(|| {
            let started = std::thread::Builder::new()
                .name("memory-release".into())
                .spawn(|| loop {
                    std::thread::sleep(RELEASE_MEMORY_EVERY);
                    let took = std::time::Instant::now();
                    // SAFETY: malloc_trim only walks and madvises the allocator's own free
                    // chunks; 0 keeps no extra padding at the top of the heap.
                    unsafe { libc::malloc_trim(0) };
                    tracing::debug!(
                        micros = took.elapsed().as_micros() as u64,
                        "free memory handed back"
                    );
                });
            if let Err(e) = started {
                tracing::warn!("cannot start the memory-release thread: {e}");
            }
        });
    }
}
