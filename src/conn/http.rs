//! The HTTP/1 connection the explicit and transparent HTTP listeners serve: every request on
//! a keep-alive connection is read, given its decision line, and handed to its listener's
//! path ([`super::explicit`], [`super::plain`]) with the state current when it arrives.
//! Malformed heads and refusals are answered here.

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

use super::auth::{self, Credentials};
use super::{explicit, forward, plain, record_failure, Arrival, Failure, Proxy, Slot, State};
use crate::log::{Listener, PendingLine};
use crate::policy::Host;
use crate::reason::Reason;
use crate::wire::target;

pub type Body = Either<Full<Bytes>, Incoming>;

/// One client connection's context, shared by its requests.
pub struct Conn {
    pub proxy: Arc<Proxy>,
    pub arrival: Arrival,
    /// Requests that got as far as the service; a parse error or timeout before any is the
    /// connection's only decision and must be logged.
    requests: AtomicU64,
    /// Held until the connection and every tunnel or forward it started are gone.
    pub slot: Arc<Slot>,
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
    let authenticated = match conn.arrival.listener {
        Listener::Explicit => authenticate(&conn, &state, &mut line, req.headers()),
        // Redirected traffic carries no proxy credentials: its rules use `clients:`.
        _ => Ok(()),
    };
    let mut response = match authenticated {
        Err(refused) => refuse(line, refused, &state),
        Ok(()) if is_connect => explicit::connect(&conn, state, line, req, started).await,
        Ok(()) => forward::forward(&conn, state, line, req, started).await,
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

/// The explicit listener's credentials: a valid principal goes into the line (and so into
/// the policy's decision); wrong credentials are refused with 407, and a client that keeps
/// failing cools down; missing ones are refused only where `require_principal` says so. Without `principals:` configured,
/// credentials are ignored.
fn authenticate(
    conn: &Conn,
    state: &State,
    line: &mut PendingLine,
    headers: &HeaderMap,
) -> Result<(), Refused> {
    let principals = &state.config.principals;
    if principals.is_empty() {
        return Ok(());
    }
    // A client cooling down after failures is refused before its credentials are read: a
    // guess made meanwhile learns nothing, and nothing waits while holding a slot. Only
    // clients that present credentials are held back.
    let presented = headers.contains_key(header::PROXY_AUTHORIZATION);
    if let Some(left) = presented
        .then(|| conn.proxy.auth_failures.cooling(conn.arrival.peer.ip()))
        .flatten()
    {
        // Knocking again while cooling down counts as one more failure: a loop that keeps
        // trying only lengthens its own wait.
        crate::metrics::auth_failed();
        let left = left.max(conn.proxy.auth_failures.failed(conn.arrival.peer.ip()));
        return Err((
            Failure::new(
                Reason::Auth,
                format!(
                    "too many failed credential checks from this client: try again in {}ms",
                    left.as_millis().max(1)
                ),
            ),
            None,
        ));
    }
    match auth::credentials(headers, principals) {
        Credentials::Valid(name) => {
            line.principal = Some(name);
            Ok(())
        }
        Credentials::Absent if !state.config.require_principal => Ok(()),
        Credentials::Absent => Err((
            Failure::new(
                Reason::Auth,
                "this proxy needs workload credentials: use the proxy URL http://NAME:TOKEN@HOST:PORT",
            ),
            None,
        )),
        Credentials::Invalid(why) => {
            crate::metrics::auth_failed();
            conn.proxy.auth_failures.failed(conn.arrival.peer.ip());
            Err((Failure::new(Reason::Auth, why), None))
        }
    }
}

/// Why a request is refused, and the host to name in the hint (if it was read).
pub type Refused = (Failure, Option<Host>);

pub fn bad_request(message: impl Into<String>) -> Refused {
    (Failure::new(Reason::BadRequest, message), None)
}

/// Records the refusal in the request's line, writes it, and makes the client's reply.
pub fn refuse(mut line: PendingLine, (failure, host): Refused, state: &State) -> Response<Body> {
    record_failure(&mut line, &failure);
    line.write();
    refusal(&failure, host.as_ref(), state)
}

/// The host and port a plain-HTTP request is for, after the consistency checks.
pub fn request_target(conn: &Conn, uri: &Uri, headers: &HeaderMap) -> Result<(Host, u16), Refused> {
    let named = target::named_target(uri, headers.get_all(header::HOST)).map_err(bad_request)?;
    match conn.arrival.listener {
        Listener::Explicit => explicit::target(named.uri),
        _ => plain::target(&conn.arrival, named.uri, named.header),
    }
}

/// The reply for a refused request: the one [`crate::reason::Reply`] every refusal gets,
/// its reason in the status line as well as the body.
pub fn refusal(failure: &Failure, host: Option<&Host>, state: &State) -> Response<Body> {
    let reply = failure.reply(host, state.config.deny_help.as_deref());
    let mut response = Response::new(Either::Left(Full::new(Bytes::from(reply.body))));
    *response.status_mut() = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::FORBIDDEN);
    if let Ok(phrase) = hyper::ext::ReasonPhrase::try_from(reply.phrase.into_bytes()) {
        response.extensions_mut().insert(phrase);
    }
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if let Ok(value) = HeaderValue::try_from(reply.proxy_status) {
        headers.insert(HeaderName::from_static("proxy-status"), value);
    }
    if let Some(challenge) = reply.authenticate {
        headers.insert(
            header::PROXY_AUTHENTICATE,
            HeaderValue::from_static(challenge),
        );
    }
    if reply.close {
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

pub fn empty() -> Body {
    Either::Left(Full::new(Bytes::new()))
}
