//! The explicit listener's paths: `CONNECT host:port` (judge, resolve and check before the
//! `200`; the tunnel runs in its own task once hyper hands the socket over) and absolute-form
//! `GET http://host/...` (sent on by [`super::forward`]).

use std::sync::Arc;
use std::time::Instant;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::http::{bad_request, empty, refuse, Body, Conn, Refused};
use super::tunnel::{self, Connect, Tunnel, Upstream};
use super::{admit, dial, record_failure, upload_cap, upstream_targets, Failure, State};
use crate::log::{Listener, PendingLine};
use crate::policy::{host, Host, TlsRequirement};
use crate::reason::Reason;
use crate::wire::authority::split_authority;

/// `CONNECT host:port`: judge, resolve and check before answering; the tunnel itself runs in
/// its own task once hyper hands over the socket.
pub async fn connect(
    conn: &Arc<Conn>,
    state: Arc<State>,
    mut line: PendingLine,
    mut req: Request<Incoming>,
    started: Instant,
) -> Response<Body> {
    let plan = match plan_connect(conn, &state, &mut line, &req).await {
        Ok(plan) => plan,
        Err(refused) => return refuse(line, refused, &state),
    };
    let upgrade = hyper::upgrade::on(&mut req);
    let proxy = conn.proxy.clone();
    let slot = conn.slot.clone();
    line.step("waiting for the client's socket after 200");
    tokio::spawn(async move {
        let _slot = slot;
        let Some((client, early)) = take_socket(upgrade).await else {
            record_failure(
                &mut line,
                &Failure::new(
                    Reason::BadRequest,
                    "the client socket was not handed over after 200",
                ),
            );
            line.write();
            return;
        };
        let tunnel = Tunnel {
            proxy,
            state,
            client,
            first: early,
            line,
            started,
            cap: None, // moved in from the plan by tunnel::connect
        };
        tunnel::connect(tunnel, plan).await
    });
    Response::new(empty())
}

/// The checks before a CONNECT's `200`: target, policy, addresses, and (without an SNI
/// check to wait for) the dial.
async fn plan_connect(
    conn: &Conn,
    state: &State,
    line: &mut PendingLine,
    req: &Request<Incoming>,
) -> Result<Connect, Refused> {
    if conn.arrival.listener != Listener::Explicit {
        return Err(bad_request(
            "CONNECT is only served on the explicit listener",
        ));
    }
    let authority = req
        .uri()
        .authority()
        .filter(|_| req.uri().scheme().is_none() && req.uri().path_and_query().is_none())
        .ok_or_else(|| bad_request("CONNECT needs an authority-form target: host:port"))?;
    let (host_text, port) = split_authority(authority.as_str()).map_err(bad_request)?;
    let port = port.ok_or_else(|| bad_request("CONNECT target has no port"))?;
    line.port = Some(port);
    let host = host::parse_host(host_text)
        .map_err(|e| bad_request(format!("bad host '{host_text}': {e}")))?;
    line.host = Some(host.to_string());
    let with_host = |f: Failure| (f, Some(host.clone()));

    let admitted = admit(state, line, &host, port).map_err(with_host)?;
    let cap = upload_cap(&conn.proxy, line, &admitted).map_err(with_host)?;
    line.step("resolving the upstream");
    let targets = upstream_targets(state, &host, port)
        .await
        .map_err(with_host)?;
    // Without an SNI check the upstream is dialled before answering, so failures still get
    // a 502/504. With one, dialling waits until the ClientHello has passed.
    let upstream = match admitted.tls {
        TlsRequirement::Any => {
            line.step("connecting to the upstream");
            let (stream, addr) = dial(&targets, state.config.timeouts.upstream_connect)
                .await
                .map_err(with_host)?;
            Upstream::Dialled(stream, addr)
        }
        TlsRequirement::RequireSni => Upstream::AfterHello(targets),
    };
    Ok(Connect {
        host,
        upstream,
        enforce_sni: admitted.enforced,
        cap,
    })
}

/// The client socket back from hyper after the `200`, with any bytes it read ahead.
async fn take_socket(upgrade: hyper::upgrade::OnUpgrade) -> Option<(TcpStream, Vec<u8>)> {
    let upgraded = upgrade.await.ok()?;
    let parts = upgraded.downcast::<TokioIo<TcpStream>>().ok()?;
    Some((parts.io.into_inner(), parts.read_buf.to_vec()))
}

/// An absolute-form request's target: the explicit listener serves only those (and CONNECT).
pub fn target(from_uri: Option<(Host, u16)>) -> Result<(Host, u16), Refused> {
    from_uri.ok_or_else(|| {
        bad_request("not a proxy request: use an absolute URI (GET http://host/...) or CONNECT")
    })
}
