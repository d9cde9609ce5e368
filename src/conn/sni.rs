//! The transparent TLS listener's path: the ClientHello's SNI is the request. Judged, resolved
//! and dialled like a CONNECT; the hello read is forwarded first, unchanged, then spliced.

use std::sync::Arc;
use std::time::Instant;

use tokio::net::TcpStream;

use super::tunnel::{note_ech, read_hello, Tunnel};
use super::{admit, record_failure, upload_cap, upstream_targets, Arrival, Failure, Proxy};
use crate::log::PendingLine;
use crate::policy::{host, Host};
use crate::reason::Reason;

/// Runs a connection redirected to the transparent TLS listener: the SNI is the request.
pub async fn serve(proxy: Arc<Proxy>, client: TcpStream, arrival: Arrival) {
    let started = Instant::now();
    let state = proxy.state();
    let mut line = PendingLine::new(&proxy.log, arrival.line());
    let port = arrival.port();
    line.port = Some(port);
    line.step("reading the ClientHello");
    let mut first = Vec::new();
    let deadline = Instant::now() + state.config.timeouts.client_handshake;
    let hello = match read_hello(&client, &mut first, deadline).await {
        Ok(hello) => hello,
        // A connection that closes without sending a byte (a load balancer's TCP health
        // check, a port scan) asked for nothing: no decision to log.
        Err(failure) if first.is_empty() && failure.reason != Reason::Timeout => {
            return line.discard()
        }
        // No hello to answer: just close.
        Err(failure) => {
            record_failure(&mut line, &failure);
            return line.write();
        }
    };
    line.sni = hello.sni.clone();
    note_ech(&mut line, &hello);
    let mut tunnel = Tunnel {
        proxy,
        state,
        client,
        first,
        line,
        started,
        cap: None,
    };
    let host = match sni_host(hello.sni.as_deref()) {
        Ok(host) => host,
        Err(failure) => return tunnel.refuse_hello(failure).await,
    };
    tunnel.line.host = Some(host.to_string());
    let state = tunnel.state.clone();
    let admitted = match admit(&state, &mut tunnel.line, &host, port) {
        Ok(admitted) => admitted,
        Err(failure) => return tunnel.refuse_hello(failure).await,
    };
    match upload_cap(&tunnel.proxy, &mut tunnel.line, &admitted) {
        Ok(cap) => tunnel.cap = cap,
        Err(failure) => return tunnel.refuse_hello(failure).await,
    }
    tunnel.line.step("resolving the upstream");
    match upstream_targets(&tunnel.state, &host, port).await {
        // Boxed, as in `tunnel::connect`: a hello still being read holds no splice state.
        Ok(targets) => Box::pin(tunnel.dial_and_splice(&targets)).await,
        Err(failure) => tunnel.refuse_hello(failure).await,
    }
}

/// The host a transparent hello asks for: its SNI, which must be a host name.
fn sni_host(sni: Option<&str>) -> Result<Host, Failure> {
    let sni =
        sni.ok_or_else(|| Failure::new(Reason::NoSni, "the ClientHello carries no server name"))?;
    match host::parse_host(sni) {
        Ok(Host::Name(name)) => Ok(Host::Name(name)),
        Ok(Host::Ip(_)) => Err(Failure::new(Reason::BadRequest, "the SNI is an IP literal")),
        Err(e) => Err(Failure::new(
            Reason::BadRequest,
            format!("the SNI is not a valid host name: {e}"),
        )),
    }
}
