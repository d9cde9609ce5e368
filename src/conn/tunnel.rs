//! A tunnel once it is allowed: a CONNECT after its `200`, or a transparent TLS connection
//! after its hello. Reads the client's ClientHello (never terminating or altering TLS),
//! checks its SNI, dials, forwards the bytes it read first, splices, and logs the close.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::TcpStream;

use super::splice::{self, write_all};
use super::{denial, dial, record_failure, Failure, Proxy, State, UploadCap};
use crate::log::{Decision, PendingLine};
use crate::policy::{host, Host};
use crate::reason::Reason;
use crate::wire::client_hello::{
    next_record_end, parse_client_hello, ClientHelloInfo, HelloError, HelloOutcome,
};

/// Where a CONNECT's upstream stands when its `200` goes out.
pub enum Upstream {
    /// `tls: any` (and report mode) dial before the `200`, so failures still get a 502/504.
    Dialled(TcpStream, SocketAddr),
    /// `require_sni` dials these only once the ClientHello has passed.
    AfterHello(Vec<SocketAddr>),
}

/// A CONNECT the policy let through, with its upstream addresses resolved and checked.
pub struct Connect {
    pub host: Host,
    pub upstream: Upstream,
    /// Whether an SNI problem closes the tunnel (false in report mode: it is only logged).
    pub enforce_sni: bool,
    pub cap: Option<UploadCap>,
}

/// An allowed tunnel on its way: the client socket, the bytes read from it so far (the
/// ClientHello, forwarded first and unchanged), and the request's line.
pub struct Tunnel {
    pub proxy: Arc<Proxy>,
    pub state: Arc<State>,
    pub client: TcpStream,
    pub first: Vec<u8>,
    pub line: PendingLine,
    pub started: Instant,
    /// The upload cap the tunnel runs under, if its rule sets one.
    pub cap: Option<UploadCap>,
}

/// Runs an allowed CONNECT tunnel after its `200`; `tunnel.first` holds any bytes the client
/// sent after its request head. Whatever the rule's `tls`, a ClientHello that carries an SNI
/// must name the CONNECT host; `require_sni` also insists that there is one.
pub async fn connect(mut tunnel: Tunnel, mut plan: Connect) {
    tunnel.cap = plan.cap.take();
    let Tunnel {
        proxy,
        state,
        client,
        first,
        line,
        ..
    } = &mut tunnel;
    line.step("reading the tunnel's first bytes");
    let deadline = Instant::now() + state.config.timeouts.client_handshake;
    let checked = match &plan.upstream {
        Upstream::AfterHello(_) => read_hello(client, first, deadline).await.and_then(|hello| {
            line.sni = hello.sni.clone();
            note_ech(line, &hello);
            sni_names(hello.sni.as_deref(), &plan.host)
        }),
        Upstream::Dialled(upstream, addr) => {
            line.upstream = Some(*addr);
            let stop = proxy.closing();
            inspect_first(client, upstream, first, line, &plan.host, state, stop).await
        }
    };
    if let Err(failure) = checked {
        // A timeout leaves no hello to judge: nothing to let through even in report mode.
        let enforced = plan.enforce_sni || failure.reason == Reason::Timeout;
        if let Err(failure) = denial(line, enforced, failure) {
            tunnel.line.upstream = None;
            // A hello that was read is answered with an alert; anything else just closes.
            if matches!(failure.reason, Reason::SniMismatch | Reason::NoSni)
                && tunnel.first.first() == Some(&0x16)
            {
                return tunnel.refuse_hello(failure).await;
            }
            tunnel.line.write();
            return;
        }
    }
    match plan.upstream {
        // Boxed: a tunnel still waiting for its first bytes (most idle ones) doesn't carry the
        // splice's state inline, only once bytes flow.
        Upstream::Dialled(upstream, _) => Box::pin(tunnel.splice(upstream)).await,
        Upstream::AfterHello(targets) => Box::pin(tunnel.dial_and_splice(&targets)).await,
    }
}

/// For `tls: any`: if the client speaks first and its first bytes are a TLS handshake, read
/// the ClientHello and check any SNI it carries. A server that speaks first (SSH, SMTP) or a
/// client that sends plain bytes is not held up.
async fn inspect_first(
    client: &TcpStream,
    upstream: &TcpStream,
    first: &mut Vec<u8>,
    line: &mut Decision,
    host: &Host,
    state: &State,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), Failure> {
    tokio::pin!(stop);
    let idle = state.config.timeouts.idle;
    // Readiness can be stale (hyper read the request head without draining the socket), so
    // a wake-up counts only when a read or peek really finds bytes: otherwise a ClientHello
    // arriving just after would be forwarded unchecked.
    let wait_until = tokio::time::Instant::now() + idle;
    while first.is_empty() {
        tokio::select! {
            biased;
            ready = client.readable() => {
                if ready.is_err() {
                    return Ok(());
                }
                first.reserve(READ_CHUNK);
                match client.try_read_buf(first) {
                    Ok(0) => return Ok(()),
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                    // The splice that follows meets the same error and ends the tunnel.
                    Err(_) => return Ok(()),
                }
            }
            ready = upstream.readable() => {
                if ready.is_err() || server_spoke(upstream) {
                    return Ok(());
                }
            }
            // Nobody spoke for `idle`: the tunnel would be cut as idle anyway, and a hello
            // arriving later must not find the check already passed.
            _ = tokio::time::sleep_until(wait_until) => {
                return Err(Failure::new(Reason::Timeout, "neither side sent anything within timeouts.idle"));
            }
            _ = &mut stop => return Err(Failure::new(Reason::Timeout, "the proxy shut down before the tunnel started")),
        }
    }
    if first.first() != Some(&0x16) {
        return Ok(());
    }
    // The client has begun a handshake: it gets `client_handshake` to finish the hello.
    let deadline = Instant::now() + state.config.timeouts.client_handshake;
    let hello = read_hello(client, first, deadline).await?;
    line.sni = hello.sni.clone();
    note_ech(line, &hello);
    match hello.sni.as_deref() {
        Some(sni) => sni_names(Some(sni), host),
        None => Ok(()),
    }
}

/// Whether the upstream has sent something (or closed): a server that speaks first.
fn server_spoke(upstream: &TcpStream) -> bool {
    let mut byte = [std::mem::MaybeUninit::<u8>::uninit(); 1];
    let peeked = upstream.try_io(tokio::io::Interest::READABLE, || {
        socket2::SockRef::from(upstream).peek(&mut byte)
    });
    !matches!(peeked, Err(ref e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

impl Tunnel {
    /// Dials the first target that answers, then [`Tunnel::splice`]s; a dial that fails is
    /// the request's denial.
    pub async fn dial_and_splice(mut self, targets: &[SocketAddr]) {
        self.line.step("connecting to the upstream");
        let budget = self.state.config.timeouts.upstream_connect;
        match dial(targets, budget).await {
            Ok((upstream, addr)) => {
                self.line.upstream = Some(addr);
                self.splice(upstream).await
            }
            Err(failure) => self.refuse_hello(failure).await,
        }
    }

    /// Ends a tunnel whose ClientHello was read but is refused: the line is written, then the
    /// client gets a fatal TLS alert before the close, so OpenSSL-based clients print
    /// "alert access denied" (or "unrecognized name" without SNI) instead of a reset.
    /// Nothing was forwarded.
    pub async fn refuse_hello(mut self, failure: Failure) {
        record_failure(&mut self.line, &failure);
        self.line.write();
        let alert = [
            0x15,
            0x03,
            0x03,
            0x00,
            0x02,
            0x02,
            alert_for(failure.reason),
        ];
        let client = self.client;
        let _ = tokio::time::timeout(ALERT_WAIT, async {
            if write_all(&client, &alert).await.is_ok() {
                // Close gently: unread bytes at close would turn the FIN into a reset, which
                // can destroy the alert before the client reads it.
                let _ = socket2::SockRef::from(&client).shutdown(std::net::Shutdown::Write);
                // On the heap: only refused clients pay for it.
                let mut sink = vec![0u8; READ_CHUNK];
                loop {
                    if client.readable().await.is_err() {
                        break;
                    }
                    match client.try_read(&mut sink) {
                        Ok(0) => break,
                        Ok(_) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(_) => break,
                    }
                }
            }
        })
        .await;
    }

    /// Logs the decision for a connected tunnel, forwards the first bytes, splices until the
    /// tunnel ends and logs the close line.
    pub async fn splice(self, upstream: TcpStream) {
        let Tunnel {
            proxy,
            state,
            client,
            first,
            line,
            started,
            cap,
        } = self;
        let mut line = line.write_keeping();
        let _ = client.set_nodelay(true);
        let idle = state.config.timeouts.idle;
        let up_limit = UploadCap::up_limit(cap.as_ref());
        // The first bytes (the hello) count against the caps like any others.
        let first_len = first.len();
        let granted = up_limit.grant(0, first_len);
        let moved = if granted < first_len {
            up_limit.unused(granted, 0);
            splice::Moved {
                capped: true,
                ..splice::Moved::default()
            }
        } else {
            match write_all(&upstream, &first).await {
                Ok(()) => {
                    let rest = up_limit.after(first_len as u64);
                    splice::splice(&client, &upstream, idle, proxy.closing(), &rest).await
                }
                Err(_) => splice::Moved::default(),
            }
        };
        if moved.idle_timeout {
            line.note(&format!("idle for {}s", idle.as_secs()));
        }
        let up = if moved.capped && moved.up == 0 && granted < first_len {
            0
        } else {
            first_len as u64 + moved.up
        };
        if let Some(cap) = &cap {
            cap.settle(&mut line, up, moved.capped);
        }
        proxy.log.close(&line, up, moved.down, started.elapsed());
    }
}

/// How long a refused client gets to read the alert and close.
const ALERT_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// The fatal alert a refused hello is answered with (RFC 8446 §6.2).
fn alert_for(reason: Reason) -> u8 {
    const ILLEGAL_PARAMETER: u8 = 47;
    const ACCESS_DENIED: u8 = 49;
    const INTERNAL_ERROR: u8 = 80;
    const UNRECOGNIZED_NAME: u8 = 112;
    match reason {
        Reason::NoSni => UNRECOGNIZED_NAME,
        // An SNI that is an IP literal or no host name (RFC 6066 §3).
        Reason::BadRequest => ILLEGAL_PARAMETER,
        // The proxy could not reach an allowed upstream: not the client's fault.
        Reason::DnsFailure | Reason::UpstreamUnreachable | Reason::Timeout => INTERNAL_ERROR,
        _ => ACCESS_DENIED,
    }
}

/// Reads from `client` into `buf` until it holds a whole ClientHello, within `deadline`.
pub async fn read_hello(
    client: &TcpStream,
    buf: &mut Vec<u8>,
    deadline: Instant,
) -> Result<ClientHelloInfo, Failure> {
    let mut parse_at = 0;
    loop {
        if buf.len() >= parse_at {
            match parse_client_hello(buf) {
                Ok(HelloOutcome::Hello(info)) => return Ok(info),
                Ok(HelloOutcome::Incomplete) => parse_at = next_record_end(buf),
                Err(e) => return Err(hello_failure(&e)),
            }
        }
        let wait = deadline.saturating_duration_since(Instant::now());
        let read = tokio::time::timeout(wait, read_some(client, buf)).await;
        match read {
            Err(_) => {
                return Err(Failure::new(
                    Reason::Timeout,
                    "no complete ClientHello within timeouts.client_handshake",
                ))
            }
            Ok(Ok(0)) => {
                return Err(Failure::new(
                    Reason::BadRequest,
                    "client closed before a complete ClientHello",
                ))
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                return Err(Failure::new(
                    Reason::BadRequest,
                    format!("reading the ClientHello: {e}"),
                ))
            }
        }
    }
}

/// Reads what is there into `buf`. The bytes go straight into `buf`'s spare room: a buffer
/// on the stack here would sit in the state of every tunnel waiting for its hello.
async fn read_some(client: &TcpStream, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    loop {
        client.readable().await?;
        buf.reserve(READ_CHUNK);
        match client.try_read_buf(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Bytes asked for per read of a hello (a whole hello is rarely more).
const READ_CHUNK: usize = 4096;

fn hello_failure(error: &HelloError) -> Failure {
    let reason = match error {
        HelloError::NotTls | HelloError::SslV2 => Reason::NoSni,
        _ => Reason::BadRequest,
    };
    Failure::new(reason, format!("ClientHello: {error}"))
}

/// The tunnel's ClientHello must name the host that was asked for.
pub fn sni_names(sni: Option<&str>, asked: &Host) -> Result<(), Failure> {
    let Some(sni) = sni else {
        return Err(Failure::new(
            Reason::NoSni,
            "the ClientHello carries no server name",
        ));
    };
    match host::parse_host(sni) {
        Ok(named) if &named == asked => Ok(()),
        Ok(Host::Ip(_)) => Err(Failure::new(Reason::BadRequest, "the SNI is an IP literal")),
        Ok(named) => Err(Failure::new(
            Reason::SniMismatch,
            format!("CONNECT to {asked} but the ClientHello names {named}"),
        )),
        Err(e) => Err(Failure::new(
            Reason::BadRequest,
            format!("the SNI is not a valid host name: {e}"),
        )),
    }
}

pub fn note_ech(line: &mut Decision, hello: &ClientHelloInfo) {
    if hello.has_ech {
        line.message = Some("encrypted ClientHello: judged on the outer SNI".to_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn returned_size<A, B, F>(_: impl Fn(A, B) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// What an idle tunnel costs is mostly the size of its task's future: a tunnel waiting
    /// for its first bytes must not carry the splice's state inline (it is boxed once bytes
    /// flow). Guarded here, so a change that inlines it shows up as a failing test rather
    /// than as a bench figure someone has to notice.
    #[test]
    fn a_tunnel_waiting_for_its_first_bytes_holds_no_splice_state() {
        let waiting = returned_size(connect);
        let splicing = returned_size(Tunnel::splice);
        assert!(
            waiting < splicing,
            "tunnel::connect's future is {waiting} bytes, Tunnel::splice's {splicing}"
        );
    }
}
