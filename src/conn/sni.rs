//! The transparent TLS listener's path: the ClientHello's SNI is the request. Judged, resolved
//! and dialled like a CONNECT; the hello read is forwarded first, unchanged, then spliced.

use std::sync::Arc;
use std::time::Instant;

use tokio::net::TcpStream;

use super::tunnel::{note_ech, read_hello, Tunnel};
use super::{admit, record_failure, upstream_targets, Arrival, Failure, Proxy};
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
    let host = read_hello(&client, &mut first, deadline)
        .await
        .and_then(|hello| {
            line.sni = hello.sni.clone();
            note_ech(&mut line, &hello);
            let sni = hello.sni.as_deref().ok_or_else(|| {
                Failure::new(Reason::NoSni, "the ClientHello carries no server name")
            })?;
            match host::parse_host(sni) {
                Ok(Host::Name(name)) => Ok(Host::Name(name)),
                Ok(Host::Ip(_)) => {
                    Err(Failure::new(Reason::BadRequest, "the SNI is an IP literal"))
                }
                Err(e) => Err(Failure::new(
                    Reason::BadRequest,
                    format!("the SNI is not a valid host name: {e}"),
                )),
            }
        });
    let host = match host {
        Ok(host) => host,
        // A connection that closes without sending a byte (a load balancer's TCP health
        // check, a port scan) asked for nothing: no decision to log.
        Err(failure) if first.is_empty() && failure.reason != Reason::Timeout => {
            return line.discard()
        }
        Err(failure) => {
            record_failure(&mut line, &failure);
            line.write();
            return;
        }
    };
    line.host = Some(host.to_string());
    if admit(&state, &mut line, &host, port).is_err() {
        line.write();
        return;
    }
    line.step("resolving the upstream");
    let targets = match upstream_targets(&state, &host, port).await {
        Ok(targets) => targets,
        Err(failure) => {
            record_failure(&mut line, &failure);
            line.write();
            return;
        }
    };
    let tunnel = Tunnel {
        proxy,
        state,
        client,
        first,
        line,
        started,
    };
    tunnel.dial_and_splice(&targets).await;
}
