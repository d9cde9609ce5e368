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
use super::http::{refuse, request_target, Body, Conn, Refused};
use super::splice::watch_idle;
use super::{admit, denial, dial, upload_cap, upstream_targets, Failure, State, UploadCap};
use crate::log::{Decision, PendingLine};
use crate::policy::{Host, TlsRequirement};
use crate::reason::{ProxyError, Reason};

/// A plain-HTTP request: absolute-form on the explicit listener, origin-form with `Host` on
/// the transparent one. Forwarded on a fresh upstream connection of its own.
pub async fn forward(
    conn: &Arc<Conn>,
    state: Arc<State>,
    mut line: PendingLine,
    req: Request<Incoming>,
    started: Instant,
) -> Response<Body> {
    let Planned {
        host,
        port,
        mut sender,
        connection,
        moved,
        cap,
    } = match plan_forward(conn, &state, &mut line, &req).await {
        Ok(planned) => planned,
        Err(refused) => return refuse(line, refused, &state),
    };
    let proxy = conn.proxy.clone();
    let slot = conn.slot.clone();
    let idle = state.config.timeouts.idle;
    // The decision is known once the upstream has answered: the allowed line goes to the
    // task that drives the connection, which ends it with the close line.
    let (decided, allowed) = tokio::sync::oneshot::channel::<Decision>();
    let settle = cap.clone();
    let totals = moved.clone();
    tokio::spawn(async move {
        let _slot = slot;
        let (up, down) = moved.counters();
        let mut idled = false;
        // A stalled upstream body or client upload must not hold the slot forever.
        tokio::select! {
            _ = connection => {}
            _ = watch_idle(idle, up, down) => idled = true,
            _ = proxy.closing() => {}
        }
        let Ok(mut closing) = allowed.await else {
            return; // refused: its line is already written
        };
        if idled {
            closing.note(&format!("idle for {}s", idle.as_secs()));
        }
        let (up, down) = moved.totals();
        if let Some(cap) = &settle {
            cap.settle(&proxy, &mut closing, up, moved.capped());
        }
        proxy.log.close(&closing, up, down, started.elapsed());
    });
    line.step("waiting for the upstream's response");
    let outgoing = outgoing_request(req, &host, port);
    let failure = match tokio::time::timeout(idle, sender.send_request(outgoing)).await {
        Ok(Ok(response)) => {
            let _ = decided.send(line.write_keeping());
            let (mut parts, body) = response.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            return Response::from_parts(parts, Either::Right(body));
        }
        Err(_) => Failure::new(
            Reason::Timeout,
            format!("no response head within {}s", idle.as_secs()),
        )
        .with_error(ProxyError::HttpResponseTimeout),
        Ok(Err(_)) if totals.capped() => {
            // Cut while the request body was still going up: refused, and counted.
            let (up, _) = totals.totals();
            let what = cap.as_ref().map_or(String::new(), |c| c.what.clone());
            if let Some(cap) = &cap {
                cap.settle(&conn.proxy, &mut line, up, false);
                crate::metrics::upload_limit(&cap.rule);
            }
            Failure::new(
                Reason::UploadLimit,
                format!("the request body was cut at {what}"),
            )
        }
        Ok(Err(e)) => Failure::new(
            Reason::UpstreamUnreachable,
            format!("the upstream failed before answering: {e}"),
        )
        .with_error(ProxyError::HttpResponseIncomplete),
    };
    refuse(line, (failure, None), &state)
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
    let (counted, moved) = Counted::new(upstream, UploadCap::enforced_limit(cap.as_ref()));
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
    let authority = match (host, port) {
        (Host::Ip(std::net::IpAddr::V6(ip)), 80) => format!("[{ip}]"),
        (Host::Ip(std::net::IpAddr::V6(ip)), port) => format!("[{ip}]:{port}"),
        (host, 80) => host.to_string(),
        (host, port) => format!("{host}:{port}"),
    };
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
