//! A plain-HTTP request sent on, for both HTTP listeners: after the checks, a fresh upstream
//! connection of its own, the request in origin-form with hop-by-hop and `Proxy-*` headers
//! removed, the response streamed back. Decided when the upstream answers.

use std::sync::Arc;
use std::time::Instant;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, Uri};
use http_body_util::Either;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::counted::Counted;
use super::http::{refusal, refuse, request_target, Body, Conn, Refused};
use super::splice::watch_idle;
use super::{
    admit, denial, dial, record_failure, upload_cap, upstream_targets, Failure, Proxy, State,
    UploadCap,
};
use crate::log::PendingLine;
use crate::policy::{Host, TlsRequirement};
use crate::reason::{ProxyError, Reason};

/// A plain-HTTP request: absolute-form on the explicit listener, origin-form with `Host` on
/// the transparent one. Forwarded on a fresh upstream connection of its own, whose task owns
/// the request's line: decided when the upstream answers, and whatever happens to the
/// request (no answer, the client gone mid-upload), written with the bytes that went up.
pub async fn forward(
    conn: &Arc<Conn>,
    state: Arc<State>,
    mut line: PendingLine,
    req: Request<Incoming>,
    started: Instant,
) -> Response<Body> {
    let planned = match plan_forward(conn, &state, &mut line, &req).await {
        Ok(planned) => planned,
        Err(refused) => return refuse(line, refused, &state),
    };
    let Planned {
        host,
        port,
        mut sender,
        connection,
        moved,
        cap,
    } = planned;
    let idle = state.config.timeouts.idle;
    line.step("waiting for the upstream's response");
    // What the request came to, for the task that writes its line.
    let (tell, told) = tokio::sync::oneshot::channel::<Result<(), Failure>>();
    tokio::spawn(drive(
        conn.proxy.clone(),
        conn.slot.clone(),
        Driven {
            line,
            connection,
            moved: moved.clone(),
            cap,
            idle,
            started,
        },
        told,
    ));
    let outgoing = outgoing_request(req, &host, port);
    let failure = match tokio::time::timeout(idle, sender.send_request(outgoing)).await {
        Ok(Ok(response)) => {
            let _ = tell.send(Ok(()));
            let (mut parts, body) = response.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            return Response::from_parts(parts, Either::Right(body));
        }
        Err(_) => Failure::new(
            Reason::Timeout,
            format!("no response head within {}s", idle.as_secs()),
        )
        .with_error(ProxyError::HttpResponseTimeout),
        // Cut while the request body was still going up.
        Ok(Err(_)) if moved.capped() => Failure::new(
            Reason::UploadLimit,
            "the request body reached the upload cap",
        ),
        Ok(Err(e)) => Failure::new(
            Reason::UpstreamUnreachable,
            format!("the upstream failed before answering: {e}"),
        )
        .with_error(ProxyError::HttpResponseIncomplete),
    };
    let reply = refusal(&failure, None, &state);
    let _ = tell.send(Err(failure));
    reply
}

/// What the task driving a forwarded request's upstream connection holds.
struct Driven {
    line: PendingLine,
    connection: hyper::client::conn::http1::Connection<TokioIo<Counted<TcpStream>>, Incoming>,
    moved: Arc<super::counted::Totals>,
    cap: Option<UploadCap>,
    idle: std::time::Duration,
    started: Instant,
}

/// Drives the upstream connection and writes the request's line: the decision as soon as
/// the request's outcome is told (or the client is gone), the close line once the connection
/// ends. A stalled body or upload can't hold the slot past `idle`.
async fn drive(
    proxy: Arc<Proxy>,
    slot: Arc<super::Slot>,
    driven: Driven,
    told: tokio::sync::oneshot::Receiver<Result<(), Failure>>,
) {
    let _slot = slot;
    let Driven {
        line,
        connection,
        moved,
        cap,
        idle,
        started,
    } = driven;
    let (up, down) = moved.counters();
    let mut connection = std::pin::pin!(connection);
    let mut told = std::pin::pin!(told);
    let mut ended = false;
    let mut idled = false;
    // Until the outcome is known, the connection must be driven for the request to go out.
    let outcome = loop {
        tokio::select! {
            outcome = &mut told => break outcome,
            _ = &mut connection, if !ended => ended = true,
            _ = watch_idle(idle, up, down), if !idled => idled = true,
        }
    };
    let (mut decided, mut refused) = match outcome {
        Ok(Ok(())) => (Some(line.write_keeping()), None),
        outcome => (None, Some((line, outcome.ok().and_then(Result::err)))),
    };
    if !ended {
        tokio::select! {
            _ = &mut connection => {}
            _ = watch_idle(idle, up, down) => idled = true,
            _ = proxy.closing() => {}
        }
    }
    let (up, down) = moved.totals();
    if let Some(closing) = decided.as_mut() {
        if idled {
            closing.note(&format!("idle for {}s", idle.as_secs()));
        }
        if let Some(cap) = &cap {
            cap.settle(closing, up, moved.capped());
        }
        proxy.log.close(closing, up, down, started.elapsed());
    }
    if let Some((mut line, failure)) = refused.take() {
        // Refused after bytes may have gone up, or the client left: the one line carries
        // them, and the caps count them.
        match failure {
            Some(failure) => record_failure(&mut line, &failure),
            None => line.note("the client went away before the upstream answered"),
        }
        if let Some(cap) = &cap {
            cap.settle(&mut line, up, moved.capped());
        }
        crate::metrics::bytes(up, down);
        line.bytes_up = Some(up);
        line.bytes_down = Some(down);
        line.duration_ms = Some(started.elapsed().as_millis() as u64);
        line.write();
    }
}

/// A plain-HTTP request that passed its checks: its upstream connection is open and
/// handshaken, not yet sent on.
struct Planned {
    host: Host,
    port: u16,
    sender: hyper::client::conn::http1::SendRequest<Incoming>,
    connection: hyper::client::conn::http1::Connection<TokioIo<Counted<TcpStream>>, Incoming>,
    moved: Arc<super::counted::Totals>,
    cap: Option<UploadCap>,
}

/// The checks before a plain-HTTP request is sent on: target, policy, cleartext, addresses,
/// the dial and the upstream HTTP handshake. The decision line is written only after all of
/// them, so an upstream that fails its handshake is a denial, not an `allow` with no end.
async fn plan_forward(
    conn: &Conn,
    state: &State,
    line: &mut PendingLine,
    req: &Request<Incoming>,
) -> Result<Planned, Refused> {
    let (host, port) = request_target(conn, req.uri(), req.headers())?;
    line.host = Some(host.to_string());
    line.port = Some(port);
    let with_host = |f: Failure| (f, Some(host.clone()));
    let admitted = admit(state, line, &host, port).map_err(with_host)?;
    let cap = upload_cap(&conn.proxy, line, &admitted).map_err(with_host)?;
    // Plain HTTP to a port whose rule expects TLS would carry cleartext a client chose to a
    // service that expects a handshake: only port 80, or rules with `tls: any`.
    let rule_tls = admitted.rule.map(|r| r.tls).unwrap_or_default();
    if line.allowed() && port != 80 && rule_tls == TlsRequirement::RequireSni {
        denial(
            line,
            admitted.enforced,
            Failure::new(
                Reason::NoSni,
                format!(
                    "plain HTTP to {host}:{port}: the rule requires TLS there (tls: any allows it)"
                ),
            ),
        )
        .map_err(with_host)?;
    }
    line.step("resolving the upstream");
    let targets = upstream_targets(state, &host, port)
        .await
        .map_err(with_host)?;
    line.step("connecting to the upstream");
    let (upstream, addr) = dial(&targets, state.config.timeouts.upstream_connect)
        .await
        .map_err(with_host)?;
    line.upstream = Some(addr);
    let (counted, moved) = Counted::new(upstream, UploadCap::up_limit(cap.as_ref()));
    let (sender, connection) = hyper::client::conn::http1::Builder::new()
        .handshake(TokioIo::new(counted))
        .await
        .map_err(|e| {
            with_host(Failure::new(
                Reason::UpstreamUnreachable,
                format!("HTTP handshake with {addr} failed: {e}"),
            ))
        })?;
    Ok(Planned {
        host,
        port,
        sender,
        connection,
        moved,
        cap,
    })
}

/// The request as the upstream gets it: origin-form, `Host` set, hop-by-hop and `Proxy-*`
/// headers removed.
fn outgoing_request(req: Request<Incoming>, host: &Host, port: u16) -> Request<Incoming> {
    let (mut parts, body) = req.into_parts();
    // Both framings at once (RFC 9112 §6.3): the length is not to be trusted.
    if parts.headers.contains_key(header::TRANSFER_ENCODING) {
        parts.headers.remove(header::CONTENT_LENGTH);
    }
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    parts.uri = Uri::try_from(path).unwrap_or_else(|_| Uri::from_static("/"));
    parts.version = http::Version::HTTP_11;
    strip_hop_by_hop(&mut parts.headers);
    let authority = crate::wire::target::host_header(host, port);
    if let Ok(value) = HeaderValue::from_str(&authority) {
        parts.headers.insert(header::HOST, value);
    }
    Request::from_parts(parts, body)
}

/// Removes the headers that belong to one hop (RFC 9110 §7.6.1), those the `Connection`
/// header names, and every `Proxy-*` header.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::try_from(name.trim()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        HeaderName::from_static("keep-alive"),
    ] {
        headers.remove(name);
    }
    let proxy_headers: Vec<HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().starts_with("proxy-"))
        .cloned()
        .collect();
    for name in proxy_headers {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_hop_by_hop_connection_named_and_proxy_headers() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("connection", "close, x-secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-authorization", "Basic Zm9vOmJhcg=="),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers"),
            ("upgrade", "websocket"),
            ("accept", "*/*"),
            ("content-length", "3"),
        ] {
            h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        strip_hop_by_hop(&mut h);
        let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["accept", "content-length"]);
    }
}
