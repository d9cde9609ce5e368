//! The first and last step of every connection: bind the listeners, accept under the
//! connection cap, hand each socket to its listener's handler; on SIGTERM/SIGINT stop
//! accepting, let open connections finish within `timeouts.drain`, then close the rest.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::Semaphore;

use crate::admin;
use crate::config::source::{Loaded, Source};
use crate::config::Listeners;
use crate::conn::{build_state, http, record_failure, sni, Arrival, Failure, Phase, Proxy, Slot};
use crate::log::{Decision, DecisionLog, Listener};
use crate::reason::Reason;
use crate::reload;

/// The listening sockets, bound before serving: with port 0 the kernel picks the port, and
/// the addresses really bound are what the self-loop check refuses and what stderr reports.
pub struct Bound {
    explicit: Option<TcpListener>,
    transparent_tls: Option<TcpListener>,
    transparent_http: Option<TcpListener>,
    admin: Option<TcpListener>,
    /// The configured addresses (port 0 included), which a reload compares against.
    configured: Listeners,
}

impl Bound {
    /// Binds every configured listener, and says on stderr where each one listens.
    pub async fn bind(listeners: &Listeners) -> io::Result<Bound> {
        async fn one(name: &str, addr: Option<SocketAddr>) -> io::Result<Option<TcpListener>> {
            let Some(addr) = addr else { return Ok(None) };
            let socket = TcpListener::bind(addr).await.map_err(|e| {
                io::Error::new(e.kind(), format!("binding listeners.{name} {addr}: {e}"))
            })?;
            tracing::info!("listening: {name} on {}", socket.local_addr()?);
            Ok(Some(socket))
        }
        Ok(Bound {
            explicit: one("explicit", listeners.explicit).await?,
            transparent_tls: one("transparent_tls", listeners.transparent_tls).await?,
            transparent_http: one("transparent_http", listeners.transparent_http).await?,
            admin: one("admin", listeners.admin).await?,
            configured: listeners.clone(),
        })
    }

    /// The listeners as really bound (the kernel's port where the config said 0).
    pub fn addresses(&self) -> Listeners {
        let local = |s: &Option<TcpListener>| s.as_ref().and_then(|s| s.local_addr().ok());
        Listeners {
            explicit: local(&self.explicit),
            transparent_tls: local(&self.transparent_tls),
            transparent_http: local(&self.transparent_http),
            admin: local(&self.admin),
            ..self.configured.clone()
        }
    }
}

/// What a proxy serves with: its config as loaded from its source, its bound listeners, and
/// where its decision lines go (stdout in the binary; tests may pass their own sink).
pub struct Serving {
    pub source: Source,
    pub loaded: Loaded,
    pub bound: Bound,
    pub log: DecisionLog,
}

/// Serves until `shutdown` completes, then drains: no new connections, open ones get
/// `timeouts.drain` to finish, the rest are closed, every line reaches the log.
pub async fn run(
    serving: Serving,
    shutdown: impl std::future::Future<Output = ()>,
) -> io::Result<()> {
    crate::sys::raise_fd_limit();
    let Serving {
        source,
        loaded,
        bound,
        log,
    } = serving;
    let Loaded { text, mut config } = loaded;
    let addresses = bound.addresses();
    config.listeners = addresses.clone();
    let max_connections = config.limits.max_connections;
    crate::metrics::install();
    crate::metrics::keep_up_periodically();
    crate::metrics::config_in_force(config.policy.rules().iter().map(|r| r.name.as_str()));
    let proxy = Arc::new(Proxy::new(build_state(config, None), log));
    let slots = Arc::new(Semaphore::new(max_connections));
    crate::sys::release_free_memory_periodically();

    let mut accepting = Vec::new();
    for (listener, socket) in [
        (Listener::Explicit, bound.explicit),
        (Listener::TransparentTls, bound.transparent_tls),
        (Listener::TransparentHttp, bound.transparent_http),
    ] {
        let Some(socket) = socket else { continue };
        accepting.push(tokio::spawn(accept_loop(
            proxy.clone(),
            slots.clone(),
            socket,
            listener,
        )));
    }
    if let Some(socket) = bound.admin {
        tokio::spawn(admin::serve(proxy.clone(), socket));
    }
    tokio::spawn(reload::watch(
        proxy.clone(),
        reload::Watched {
            source,
            text,
            configured: bound.configured,
            bound: addresses,
        },
    ));

    shutdown.await;
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

/// Completes on SIGTERM or SIGINT.
pub async fn stop_signal() -> io::Result<impl std::future::Future<Output = ()>> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
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
        // New connections wait in the kernel's backlog while stdout is behind.
        proxy.log.room().await;
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
                _ => crate::sys::original_dst(&stream),
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
                    sni::serve(proxy, stream, arrival).await
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
    let failure = Failure::new(Reason::Limit, "at limits.max_connections: try again");
    let mut line = Decision::new(listener, peer);
    record_failure(&mut line, &failure);
    proxy.log.write(&line);
    if listener != Listener::TransparentTls {
        let state = proxy.state();
        let reply = failure
            .reply(None, state.config.deny_help.as_deref())
            .to_http1();
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            let _ = stream.writable().await;
            let _ = stream.try_write(reply.as_bytes());
        })
        .await;
    }
}
