//! The first and last step of every connection: bind the listeners, accept under the
//! connection cap, hand each socket to its listener's handler; on SIGTERM/SIGINT stop
//! accepting, let open connections finish within `timeouts.drain`, then close the rest.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::Semaphore;

use crate::admin;
use crate::config::source::Source;
use crate::config::Config;
use crate::conn::{http, record_failure, tunnel, Arrival, Failure, Phase, Proxy, Slot, State};
use crate::log::{Decision, DecisionLog, Listener};
use crate::reason::Reason;
use crate::reload;
use crate::resolve::Resolver;

/// Builds the per-config state: the config plus its resolver. The one place the self-loop
/// check learns the proxy's own listeners and this host's interface addresses.
pub fn build_state(mut config: Config) -> State {
    config.upstream = std::mem::take(&mut config.upstream)
        .with_own_addresses(config.listeners.all(), local_addresses());
    let resolver = Resolver::new(
        config.resolver_hosts.clone(),
        config.timeouts.upstream_connect,
    );
    State::new(config, resolver)
}

/// Runs the proxy until a signal ends it and the drain is done.
pub async fn run(source: Source, config: Config) -> io::Result<()> {
    raise_fd_limit();
    let listeners = config.listeners.clone();
    let max_connections = config.limits.max_connections;
    crate::metrics::install();
    let proxy = Arc::new(Proxy::new(build_state(config), DecisionLog::to_stdout()));
    let slots = Arc::new(Semaphore::new(max_connections));

    let mut accepting = Vec::new();
    for (listener, addr) in [
        (Listener::Explicit, listeners.explicit),
        (Listener::TransparentTls, listeners.transparent_tls),
        (Listener::TransparentHttp, listeners.transparent_http),
    ] {
        let Some(addr) = addr else { continue };
        let socket = TcpListener::bind(addr).await.map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("binding listeners.{} {addr}: {e}", listener.as_str()),
            )
        })?;
        tracing::info!("listening: {} on {addr}", listener.as_str());
        accepting.push(tokio::spawn(accept_loop(
            proxy.clone(),
            slots.clone(),
            socket,
            listener,
        )));
    }
    if let Some(addr) = listeners.admin {
        let socket = TcpListener::bind(addr).await.map_err(|e| {
            io::Error::new(e.kind(), format!("binding listeners.admin {addr}: {e}"))
        })?;
        tracing::info!("listening: admin on {addr}");
        tokio::spawn(admin::serve(proxy.clone(), socket));
    }
    tokio::spawn(reload::watch(proxy.clone(), source, listeners));

    wait_for_stop().await?;
    let drain = proxy.state().config.timeouts.drain;
    tracing::info!(
        "draining: no new connections; open ones have {}s",
        drain.as_secs()
    );
    // Close the listening sockets first, so that once /readyz says 503 a new connection is
    // refused rather than accepted into a proxy that is going away.
    for task in &accepting {
        task.abort();
    }
    for task in accepting {
        let _ = task.await;
    }
    proxy.set_phase(Phase::Draining);
    let all = max_connections as u32;
    if tokio::time::timeout(drain, slots.acquire_many(all))
        .await
        .is_err()
    {
        tracing::info!(
            "drain deadline passed: closing {} open connections",
            max_connections - slots.available_permits()
        );
        proxy.set_phase(Phase::Closing);
        // Closed connections log their close lines on the way out.
        let _ = tokio::time::timeout(Duration::from_secs(2), slots.acquire_many(all)).await;
    }
    // Every decision and close line reaches stdout before the process ends.
    let log = proxy.log.clone();
    let _ = tokio::task::spawn_blocking(move || log.flush(Duration::from_secs(5))).await;
    tracing::info!("drained; exiting");
    Ok(())
}

async fn wait_for_stop() -> io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

async fn accept_loop(
    proxy: Arc<Proxy>,
    slots: Arc<Semaphore>,
    socket: TcpListener,
    listener: Listener,
) {
    let ports = &proxy.state().config.listeners;
    let default_port = match listener {
        Listener::TransparentTls => ports.transparent_tls_port,
        _ => ports.transparent_http_port,
    };
    loop {
        let (stream, peer) = match socket.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!("accept on {}: {e}", listener.as_str());
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tokio::spawn(refuse_at_limit(proxy.clone(), stream, peer, listener));
            continue;
        };
        let proxy = proxy.clone();
        tokio::spawn(async move {
            let slot = Slot::new(permit, listener);
            let original_dst = match listener {
                Listener::Explicit => None,
                _ => original_dst(&stream),
            };
            let arrival = Arrival {
                listener,
                peer,
                original_dst,
                default_port,
            };
            match listener {
                Listener::TransparentTls => {
                    let _slot = slot;
                    tunnel::transparent(proxy, stream, arrival).await
                }
                _ => http::serve(proxy, stream, arrival, slot).await,
            }
        });
    }
}

/// Beyond `limits.max_connections`: a 503 for HTTP listeners, a close for TLS, a decision
/// line either way.
async fn refuse_at_limit(
    proxy: Arc<Proxy>,
    stream: TcpStream,
    peer: SocketAddr,
    listener: Listener,
) {
    let mut line = Decision::new(listener, peer);
    record_failure(
        &mut line,
        &Failure::new(Reason::Limit, "at limits.max_connections"),
    );
    proxy.log.write(&line);
    if listener != Listener::TransparentTls {
        let body = "egress-proxy: limit: too many connections, try again\n";
        let reply = format!(
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            let _ = stream.writable().await;
            let _ = stream.try_write(reply.as_bytes());
        })
        .await;
    }
}

/// Where a connection redirected by iptables/nftables was headed (`SO_ORIGINAL_DST`), or
/// `None` when it was not redirected.
fn original_dst(stream: &TcpStream) -> Option<SocketAddr> {
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
fn local_addresses() -> Vec<IpAddr> {
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
fn raise_fd_limit() {
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
