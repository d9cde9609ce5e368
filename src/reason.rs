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

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
