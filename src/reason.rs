//! Every outcome a connection can have, as one machine word and one HTTP status: the single
//! table that the decision log, the metrics and the error replies all read from.

use serde::Serialize;

/// Why a request was allowed or denied. The `as_str` words are the `reason` field of the
/// decision line and the `reason` label of `egress_decisions_total`; they are part of the
/// contract and never change spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// A rule matched host, port and client.
    Rule,
    /// No rule names this host (or IP literal).
    NoRule,
    /// A rule names the host, but not on this port.
    Port,
    /// A rule names host and port, but not for this client address.
    Client,
    /// The tunnel's ClientHello names another host than the one asked for.
    SniMismatch,
    /// The rule requires TLS with SNI and the client sent none (or not TLS at all).
    NoSni,
    /// The request could not be parsed or names no valid host.
    BadRequest,
    /// Every address the name resolved to is on the deny list.
    UpstreamDeniedIp,
    /// The name did not resolve.
    DnsFailure,
    /// No permitted address accepted the connection.
    UpstreamUnreachable,
    /// The client or the upstream took too long.
    Timeout,
    /// The proxy is at `limits.max_connections`.
    Limit,
    /// Proxy credentials missing where required, or wrong (407).
    Auth,
    /// An upload cap (`max_bytes_up`) or budget (`upload_budget`) was reached.
    UploadLimit,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Rule => "rule",
            Reason::NoRule => "no_rule",
            Reason::Port => "port",
            Reason::Client => "client",
            Reason::SniMismatch => "sni_mismatch",
            Reason::NoSni => "no_sni",
            Reason::BadRequest => "bad_request",
            Reason::UpstreamDeniedIp => "upstream_denied_ip",
            Reason::DnsFailure => "dns_failure",
            Reason::UpstreamUnreachable => "upstream_unreachable",
            Reason::Timeout => "timeout",
            Reason::Limit => "limit",
            Reason::Auth => "auth",
            Reason::UploadLimit => "upload_limit",
        }
    }

    /// The status an HTTP client gets for this outcome, where it still can get one.
    pub fn status(self) -> u16 {
        match self {
            Reason::Rule => 200,
            Reason::NoRule | Reason::Port | Reason::Client => 403,
            Reason::SniMismatch | Reason::NoSni => 403,
            Reason::BadRequest => 400,
            Reason::UpstreamDeniedIp | Reason::DnsFailure | Reason::UpstreamUnreachable => 502,
            Reason::Timeout => 504,
            Reason::Limit => 503,
            Reason::Auth => 407,
            Reason::UploadLimit => 403,
        }
    }
}

/// The RFC 9209 error type a `Proxy-Status` header names: the reason word says why in the
/// proxy's terms, this says it in the terms clients and intermediaries share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyError {
    HttpRequestDenied,
    HttpRequestError,
    DestinationIpProhibited,
    ProxyLoopDetected,
    /// With the DNS response code (`NXDOMAIN`, `SERVFAIL`, ...) where one came back.
    DnsError(Option<&'static str>),
    DnsTimeout,
    DestinationUnavailable,
    ConnectionRefused,
    ConnectionTimeout,
    HttpResponseTimeout,
    HttpResponseIncomplete,
    ConnectionLimitReached,
}

impl ProxyError {
    pub fn as_str(self) -> &'static str {
        match self {
            ProxyError::HttpRequestDenied => "http_request_denied",
            ProxyError::HttpRequestError => "http_request_error",
            ProxyError::DestinationIpProhibited => "destination_ip_prohibited",
            ProxyError::ProxyLoopDetected => "proxy_loop_detected",
            ProxyError::DnsError(_) => "dns_error",
            ProxyError::DnsTimeout => "dns_timeout",
            ProxyError::DestinationUnavailable => "destination_unavailable",
            ProxyError::ConnectionRefused => "connection_refused",
            ProxyError::ConnectionTimeout => "connection_timeout",
            ProxyError::HttpResponseTimeout => "http_response_timeout",
            ProxyError::HttpResponseIncomplete => "http_response_incomplete",
            ProxyError::ConnectionLimitReached => "connection_limit_reached",
        }
    }
}

impl Reason {
    /// The error type a `Proxy-Status` header names for this outcome, unless the step that
    /// failed knows better (a DNS response code, a loop into the proxy itself).
    pub fn proxy_error(self) -> ProxyError {
        match self {
            Reason::Rule
            | Reason::NoRule
            | Reason::Port
            | Reason::Client
            | Reason::SniMismatch
            | Reason::NoSni
            | Reason::Auth
            | Reason::UploadLimit => ProxyError::HttpRequestDenied,
            Reason::BadRequest => ProxyError::HttpRequestError,
            Reason::UpstreamDeniedIp => ProxyError::DestinationIpProhibited,
            Reason::DnsFailure => ProxyError::DnsError(None),
            Reason::UpstreamUnreachable => ProxyError::DestinationUnavailable,
            Reason::Timeout => ProxyError::ConnectionTimeout,
            Reason::Limit => ProxyError::ConnectionLimitReached,
        }
    }

    /// Whether a reply for this outcome ends the connection: after a malformed request the
    /// framing can't be trusted; at the connection limit the slot is not ours to keep.
    pub fn closes(self) -> bool {
        matches!(self, Reason::BadRequest | Reason::Limit)
    }
}

/// A reply the proxy makes itself, whether through hyper or written raw on a socket: every one
/// is made by [`Reply::new`], so status, text, headers and framing can't drift between paths.
/// Clients that show no body of a refused CONNECT (pip, curl) still print the status line,
/// so the reason is in it too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    /// The status line's text: the standard phrase, then the reason in brackets.
    pub phrase: String,
    /// Whether the connection closes after this reply.
    pub close: bool,
    /// `Proxy-Status` (RFC 9209).
    pub proxy_status: String,
    /// `Proxy-Authenticate`, for 407.
    pub authenticate: Option<&'static str>,
    /// One line: `egress-proxy: <reason>: <detail>`, then any hint and `deny_help`.
    pub body: String,
}

/// The longest reason text put in a status line; the body carries all of it.
const MAX_PHRASE: usize = 300;

impl Reply {
    /// The reply for `reason` with `detail`; `hint` (a fix for this request) and `help`
    /// (`deny_help`: whom to ask) follow on the same line.
    pub fn new(
        reason: Reason,
        error: ProxyError,
        detail: &str,
        hint: Option<&str>,
        help: Option<&str>,
    ) -> Reply {
        let mut line = format!("{reason}: {detail}");
        for extra in [hint, help].into_iter().flatten() {
            line.push_str("; ");
            line.push_str(extra);
        }
        let status = reason.status();
        let standard = http::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("Error");
        let mut phrase = format!("{standard} ({})", status_line_text(&line));
        if phrase.len() > MAX_PHRASE {
            phrase.truncate(MAX_PHRASE - 4);
            phrase.push_str("...)");
        }
        let mut proxy_status = format!("egress-proxy; error={}", error.as_str());
        if let ProxyError::DnsError(Some(rcode)) = error {
            proxy_status.push_str(&format!("; rcode=\"{rcode}\""));
        }
        proxy_status.push_str(&format!("; details={}", sf_string(&line)));
        Reply {
            status,
            phrase,
            close: reason.closes(),
            proxy_status,
            authenticate: (reason == Reason::Auth).then_some("Basic realm=\"egress-proxy\""),
            body: format!("egress-proxy: {line}\n"),
        }
    }

    /// The whole HTTP/1.1 response, for paths that write to a raw socket.
    pub fn to_http1(&self) -> String {
        let connection = if self.close { "close" } else { "keep-alive" };
        let mut head = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: {connection}\r\nProxy-Status: {}\r\n",
            self.status,
            self.phrase,
            self.body.len(),
            self.proxy_status,
        );
        if let Some(challenge) = self.authenticate {
            head.push_str(&format!("Proxy-Authenticate: {challenge}\r\n"));
        }
        head + "\r\n" + &self.body
    }
}

/// Text safe in a status line (RFC 9112: tab, space, visible ASCII): anything else becomes `?`.
fn status_line_text(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c == ' ' || c.is_ascii_graphic() {
                c
            } else {
                '?'
            }
        })
        .collect()
}

/// An RFC 8941 sf-string: quoted, `"` and `\` escaped, only printable ASCII.
fn sf_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in status_line_text(text).chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Reason; 14] = [
        Reason::Rule,
        Reason::NoRule,
        Reason::Port,
        Reason::Client,
        Reason::SniMismatch,
        Reason::NoSni,
        Reason::BadRequest,
        Reason::UpstreamDeniedIp,
        Reason::DnsFailure,
        Reason::UpstreamUnreachable,
        Reason::Timeout,
        Reason::Limit,
        Reason::Auth,
        Reason::UploadLimit,
    ];

    /// Every reason's reply is a real HTTP status with the reason word and detail in the
    /// status line, the body and `Proxy-Status`, framed correctly for a raw socket.
    #[test]
    fn every_reason_has_a_well_formed_reply() {
        for reason in ALL {
            // Exhaustive: a new reason must be added to ALL (and so to this test).
            match reason {
                Reason::Rule
                | Reason::NoRule
                | Reason::Port
                | Reason::Client
                | Reason::SniMismatch
                | Reason::NoSni
                | Reason::BadRequest
                | Reason::UpstreamDeniedIp
                | Reason::DnsFailure
                | Reason::UpstreamUnreachable
                | Reason::Timeout
                | Reason::Limit
                | Reason::Auth
                | Reason::UploadLimit => {}
            }
            let reply = Reply::new(
                reason,
                reason.proxy_error(),
                "the \"detail\"",
                Some("a hint"),
                Some("ask #platform"),
            );
            assert!(http::StatusCode::from_u16(reply.status).is_ok(), "{reason}");
            let line = format!("{}: the \"detail\"; a hint; ask #platform", reason.as_str());
            assert_eq!(reply.body, format!("egress-proxy: {line}\n"));
            assert!(
                reply.phrase.ends_with(&format!(" ({line})")),
                "{}",
                reply.phrase
            );
            assert!(
                reply.proxy_status.starts_with(&format!(
                    "egress-proxy; error={}",
                    reason.proxy_error().as_str()
                )),
                "{}",
                reply.proxy_status
            );
            assert!(reply.proxy_status.ends_with(&format!(
                "; details=\"{}: the \\\"detail\\\"; a hint; ask #platform\"",
                reason.as_str()
            )));
            let raw = reply.to_http1();
            let (head, body) = raw.split_once("\r\n\r\n").unwrap();
            assert!(
                head.starts_with(&format!("HTTP/1.1 {} {}\r\n", reply.status, reply.phrase)),
                "{raw}"
            );
            assert!(
                head.contains(&format!("Content-Length: {}", body.len())),
                "{raw}"
            );
            assert_eq!(head.contains("Connection: close"), reply.close, "{raw}");
            assert_eq!(
                head.contains("Proxy-Authenticate: Basic"),
                reason == Reason::Auth
            );
            assert_eq!(
                ALL.iter().filter(|r| r.as_str() == reason.as_str()).count(),
                1
            );
        }
        assert_eq!(Reason::Rule.status(), 200);
        assert_eq!(Reason::Auth.status(), 407);
        assert!(Reason::BadRequest.closes() && Reason::Limit.closes());
        assert!(!Reason::NoRule.closes());
    }

    #[test]
    fn status_line_and_details_hold_only_safe_text() {
        let reply = Reply::new(
            Reason::NoRule,
            ProxyError::HttpRequestDenied,
            "b\u{fc}cher.example\r\nX-Injected: 1",
            None,
            None,
        );
        assert!(!reply.phrase.contains('\r') && !reply.phrase.contains('\n'));
        assert!(reply.phrase.is_ascii());
        assert!(!reply.proxy_status.contains('\n'));
        let long = Reply::new(
            Reason::NoRule,
            ProxyError::HttpRequestDenied,
            &"x".repeat(1000),
            None,
            None,
        );
        assert!(long.phrase.len() <= MAX_PHRASE && long.phrase.ends_with("...)"));
        let dns = Reply::new(
            Reason::DnsFailure,
            ProxyError::DnsError(Some("NXDOMAIN")),
            "x",
            None,
            None,
        );
        assert!(dns
            .proxy_status
            .starts_with("egress-proxy; error=dns_error; rcode=\"NXDOMAIN\"; details="));
    }
}
