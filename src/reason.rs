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
        }
    }
}

/// A reply the proxy makes itself, whether through hyper or written raw on a socket: every one
/// is made by [`Reason::reply`], so status, text and framing can't drift between paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    /// Whether the connection closes after this reply.
    pub close: bool,
    /// One line: `egress-proxy: <reason>: <detail>`, then any hint.
    pub body: String,
}

impl Reason {
    /// Whether a reply for this outcome ends the connection: after a malformed request the
    /// framing can't be trusted; at the connection limit the slot is not ours to keep.
    pub fn closes(self) -> bool {
        matches!(self, Reason::BadRequest | Reason::Limit)
    }

    /// The reply for this outcome, with `detail` and an optional `hint` on the same line.
    pub fn reply(self, detail: &str, hint: Option<&str>) -> Reply {
        let mut body = format!("egress-proxy: {self}: {detail}");
        if let Some(hint) = hint {
            body.push_str("; ");
            body.push_str(hint);
        }
        body.push('\n');
        Reply {
            status: self.status(),
            close: self.closes(),
            body,
        }
    }
}

impl Reply {
    /// The whole HTTP/1.1 response, for paths that write to a raw socket.
    pub fn to_http1(&self) -> String {
        let phrase = http::StatusCode::from_u16(self.status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("Error");
        let connection = if self.close { "close" } else { "keep-alive" };
        format!(
            "HTTP/1.1 {} {phrase}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: {connection}\r\n\r\n{}",
            self.status,
            self.body.len(),
            self.body
        )
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Reason; 12] = [
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
    ];

    /// Every reason's reply is a real HTTP status with the reason word and detail in one
    /// line, framed correctly for a raw socket.
    #[test]
    fn every_reason_has_a_well_formed_reply() {
        for reason in ALL {
            let reply = reason.reply("the detail", Some("a hint"));
            assert!(http::StatusCode::from_u16(reply.status).is_ok(), "{reason}");
            assert_eq!(
                reply.body,
                format!("egress-proxy: {}: the detail; a hint\n", reason.as_str())
            );
            let raw = reply.to_http1();
            let (head, body) = raw.split_once("\r\n\r\n").unwrap();
            assert!(
                head.starts_with(&format!("HTTP/1.1 {} ", reply.status)),
                "{raw}"
            );
            assert!(
                head.contains(&format!("Content-Length: {}", body.len())),
                "{raw}"
            );
            assert_eq!(head.contains("Connection: close"), reply.close, "{raw}");
            // The machine word is stable and distinct.
            assert_eq!(
                ALL.iter().filter(|r| r.as_str() == reason.as_str()).count(),
                1
            );
        }
        assert_eq!(Reason::Rule.reply("x", None).status, 200);
        assert!(Reason::BadRequest.reply("x", None).close);
        assert!(!Reason::NoRule.reply("x", None).close);
    }
}
