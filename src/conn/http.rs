//! HTTP/1 connections on the explicit listener (CONNECT and absolute-form requests) and the
//! transparent HTTP listener (origin-form, judged on `Host`). Every request on a keep-alive
//! connection is judged on its own, with the state current when it arrives.

use std::convert::Infallible;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpStream;

use super::counted::Counted;
use super::splice::watch_idle;
use super::tunnel::{self, Connect};
use super::{
    admit, denial, dial, record_failure, refusal_hint, upstream_targets, Arrival, Failure, Proxy,
    Slot, State,
};
use crate::log::{Decision, Listener, PendingLine};
use crate::policy::{host, Host, TlsRequirement};
use crate::reason::Reason;
use crate::wire::authority::split_authority;

type Body = Either<Full<Bytes>, Incoming>;

/// One client connection's context, shared by its requests.
struct Conn {
    proxy: Arc<Proxy>,
    arrival: Arrival,
    /// Requests that got as far as the service; a parse error or timeout before any is the
    /// connection's only decision and must be logged.
    requests: AtomicU64,
    /// Held until the connection and every tunnel or forward it started are gone.
    slot: Arc<Slot>,
}

/// Serves one HTTP/1 client connection until it closes, times out, or the proxy drains.
pub async fn serve(proxy: Arc<Proxy>, stream: TcpStream, arrival: Arrival, slot: Slot) {
    let state = proxy.state();
    let _ = stream.set_nodelay(true);
    let conn = Arc::new(Conn {
        proxy: proxy.clone(),
        arrival,
        requests: AtomicU64::new(0),
        slot: Arc::new(slot),
    });
    let service = {
        let conn = conn.clone();
        service_fn(move |req| handle(conn.clone(), req))
    };
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        // Applies to the first request head and to the wait for each next one (keep-alive).
        .header_read_timeout(state.config.timeouts.client_handshake)
        .max_buf_size(state.config.limits.max_header_bytes)
        .keep_alive(true);
    let mut serving = pin!(builder
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades());
    let result = tokio::select! {
        result = serving.as_mut() => result,
        _ = proxy.draining() => {
            serving.as_mut().graceful_shutdown();
            tokio::select! {
                result = serving.as_mut() => result,
                _ = proxy.closing() => Ok(()),
            }
        }
    };
    if let Err(error) = result {
        log_connection_error(&conn, &error);
    }
}

/// A request head that could not be read is a decision too: log it once.
fn log_connection_error(conn: &Conn, error: &hyper::Error) {
    let first = conn.requests.load(Ordering::Relaxed) == 0;
    let (reason, message) = if error.is_parse_too_large() {
        (
            Reason::BadRequest,
            "request head larger than limits.max_header_bytes".to_owned(),
        )
    } else if error.is_parse() {
        (Reason::BadRequest, format!("malformed request: {error}"))
    } else if error.is_timeout() && first {
        (
            Reason::Timeout,
            "no complete request head within timeouts.client_handshake".to_owned(),
        )
    } else if error.is_incomplete_message() && first {
        (
            Reason::BadRequest,
            "client closed in the middle of a request".to_owned(),
        )
    } else {
        return;
    };
    let mut line = conn.arrival.line();
    record_failure(&mut line, &Failure::new(reason, message));
    conn.proxy.log.write(&line);
}

async fn handle(conn: Arc<Conn>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    conn.requests.fetch_add(1, Ordering::Relaxed);
    // New work waits while stdout is behind: the log never drops a line.
    conn.proxy.log.room().await;
    let started = Instant::now();
    let state = conn.proxy.state();
    // From here on this request has its one line, whatever ends it.
    let mut line = PendingLine::new(&conn.proxy.log, conn.arrival.line());
    line.method = Some(req.method().as_str().to_owned());
    let is_connect = req.method() == Method::CONNECT;
    let mut response = if is_connect {
        connect(&conn, state, line, req, started).await
    } else {
        forward(&conn, state, line, req, started).await
    };
    if is_connect && response.status() != StatusCode::OK {
        // A refused CONNECT is usually followed by the TLS bytes the client meant for the
        // tunnel: close instead of parsing them as the next request.
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    Ok(response)
}

/// Why a request is refused, and the host to name in the hint (if it was read).
type Refused = (Failure, Option<Host>);

fn bad_request(message: impl Into<String>) -> Refused {
    (Failure::new(Reason::BadRequest, message), None)
}

/// Records the refusal in the request's line, writes it, and makes the client's reply.
fn refuse(mut line: PendingLine, (failure, host): Refused) -> Response<Body> {
    record_failure(&mut line, &failure);
    line.write();
    refusal(&failure, host.as_ref())
}

/// `CONNECT host:port`: judge, resolve and check before answering; the tunnel itself runs in
/// its own task once hyper hands over the socket.
async fn connect(
    conn: &Arc<Conn>,
    state: Arc<State>,
    mut line: PendingLine,
    mut req: Request<Incoming>,
    started: Instant,
) -> Response<Body> {
    let plan = match plan_connect(conn, &state, &mut line, &req).await {
        Ok(plan) => plan,
        Err(refused) => return refuse(line, refused),
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
        tunnel::connect(proxy, state, client, early, line, plan, started).await
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
    line.step("resolving the upstream");
    let targets = upstream_targets(state, &host, port)
        .await
        .map_err(with_host)?;
    // Without an SNI check the upstream is dialled before answering, so failures still get
    // a 502/504. With one, dialling waits until the ClientHello has passed.
    let dialled = match admitted.tls {
        TlsRequirement::Any => {
            line.step("connecting to the upstream");
            Some(
                dial(&targets, state.config.timeouts.upstream_connect)
                    .await
                    .map_err(with_host)?,
            )
        }
        TlsRequirement::RequireSni => None,
    };
    Ok(Connect {
        host,
        targets,
        dialled,
        enforce_sni: admitted.enforced,
    })
}

/// The client socket back from hyper after the `200`, with any bytes it read ahead.
async fn take_socket(upgrade: hyper::upgrade::OnUpgrade) -> Option<(TcpStream, Vec<u8>)> {
    let upgraded = upgrade.await.ok()?;
    let parts = upgraded.downcast::<TokioIo<TcpStream>>().ok()?;
    Some((parts.io.into_inner(), parts.read_buf.to_vec()))
}

/// A plain-HTTP request: absolute-form on the explicit listener, origin-form with `Host` on
/// the transparent one. Forwarded on a fresh upstream connection of its own.
async fn forward(
    conn: &Arc<Conn>,
    state: Arc<State>,
    mut line: PendingLine,
    req: Request<Incoming>,
    started: Instant,
) -> Response<Body> {
    let (host, port, mut sender, (connection, moved)) =
        match plan_forward(conn, &state, &mut line, &req).await {
            Ok(planned) => planned,
            Err(refused) => return refuse(line, refused),
        };
    let proxy = conn.proxy.clone();
    let slot = conn.slot.clone();
    let idle = state.config.timeouts.idle;
    // The decision is known once the upstream has answered: the allowed line goes to the
    // task that drives the connection, which ends it with the close line.
    let (decided, allowed) = tokio::sync::oneshot::channel::<Decision>();
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
            closing.message = Some(format!("idle for {}s", idle.as_secs()));
        }
        let (up, down) = moved.totals();
        proxy.log.close(&closing, up, down, started.elapsed());
    });
    line.step("waiting for the upstream's response");
    let outgoing = outgoing_request(req, &host, port);
    let failure = match tokio::time::timeout(idle, sender.send_request(outgoing)).await {
        Ok(Ok(response)) => {
            let _ = decided.send(line.write());
            let (mut parts, body) = response.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            return Response::from_parts(parts, Either::Right(body));
        }
        Err(_) => Failure::new(
            Reason::Timeout,
            format!("no response head within {}s", idle.as_secs()),
        ),
        Ok(Err(e)) => Failure::new(Reason::UpstreamUnreachable, format!("upstream failed: {e}")),
    };
    refuse(line, (failure, None))
}

type Forwarding = (
    Host,
    u16,
    hyper::client::conn::http1::SendRequest<Incoming>,
    (
        hyper::client::conn::http1::Connection<TokioIo<Counted<TcpStream>>, Incoming>,
        Arc<super::counted::Totals>,
    ),
);

/// The checks before a plain-HTTP request is sent on: target, policy, cleartext, addresses,
/// the dial and the upstream HTTP handshake. The decision line is written only after all of
/// them, so an upstream that fails its handshake is a denial, not an `allow` with no end.
async fn plan_forward(
    conn: &Conn,
    state: &State,
    line: &mut PendingLine,
    req: &Request<Incoming>,
) -> Result<Forwarding, Refused> {
    let (host, port) = request_target(conn, req.uri(), req.headers())?;
    line.host = Some(host.to_string());
    line.port = Some(port);
    let with_host = |f: Failure| (f, Some(host.clone()));
    let admitted = admit(state, line, &host, port).map_err(with_host)?;
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
    let (counted, moved) = Counted::new(upstream);
    let (sender, connection) = hyper::client::conn::http1::Builder::new()
        .handshake(TokioIo::new(counted))
        .await
        .map_err(|e| {
            with_host(Failure::new(
                Reason::UpstreamUnreachable,
                format!("HTTP handshake with {addr} failed: {e}"),
            ))
        })?;
    Ok((host, port, sender, (connection, moved)))
}

/// The host and port a plain-HTTP request is for, after the consistency checks.
fn request_target(conn: &Conn, uri: &Uri, headers: &HeaderMap) -> Result<(Host, u16), Refused> {
    let host_header = match headers.get_all(header::HOST).iter().collect::<Vec<_>>()[..] {
        [] => None,
        [one] => Some(
            one.to_str()
                .map_err(|_| bad_request("Host header is not ASCII"))?,
        ),
        _ => return Err(bad_request("more than one Host header")),
    };
    let from_header = host_header.map(parse_target).transpose()?;
    // An absolute-form URI names the target on either listener; `Host` must agree with it.
    let from_uri = match uri.authority() {
        Some(authority) => {
            if uri.scheme_str() != Some("http") {
                return Err(bad_request(
                    "only http:// URIs are proxied; use CONNECT for https",
                ));
            }
            let (host, port) = parse_target(authority.as_str())?;
            Some((host, port.unwrap_or(80)))
        }
        None => None,
    };
    if let (Some((uri_host, uri_port)), Some((header_host, header_port))) =
        (&from_uri, &from_header)
    {
        if header_host != uri_host || header_port.unwrap_or(80) != *uri_port {
            return Err(bad_request(
                "the Host header names another host than the URI",
            ));
        }
    }
    match conn.arrival.listener {
        Listener::Explicit => from_uri.ok_or_else(|| {
            bad_request("not a proxy request: use an absolute URI (GET http://host/...) or CONNECT")
        }),
        _ => {
            let port = conn.arrival.port();
            let (host, named_port) = match (from_uri, from_header) {
                (Some((host, uri_port)), _) => (host, Some(uri_port)),
                (None, Some((host, header_port))) => (host, header_port),
                (None, None) => return Err(bad_request("no Host header")),
            };
            if named_port.is_some_and(|p| p != port) {
                return Err(bad_request(format!(
                    "the request names another port than the connection's {port}"
                )));
            }
            Ok((host, port))
        }
    }
}

fn parse_target(text: &str) -> Result<(Host, Option<u16>), Refused> {
    let (host_text, port) = split_authority(text).map_err(bad_request)?;
    let host = host::parse_host(host_text)
        .map_err(|e| bad_request(format!("bad host '{host_text}': {e}")))?;
    Ok((host, port))
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

/// The reply for a refused request, as [`Reason::reply`] makes every reply.
fn refusal(failure: &Failure, host: Option<&Host>) -> Response<Body> {
    let reply = failure.reason.reply(&failure.message, refusal_hint(host));
    let mut response = Response::new(Either::Left(Full::new(Bytes::from(reply.body))));
    *response.status_mut() = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::FORBIDDEN);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if reply.close {
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

fn empty() -> Body {
    Either::Left(Full::new(Bytes::new()))
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
