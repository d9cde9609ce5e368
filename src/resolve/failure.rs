//! Why a name did not resolve, as a sentence for the log and a kind the caller maps to a
//! reply (RFC 9209 `dns_error` with its `rcode`, or `dns_timeout`). Pure: it reads hickory's
//! error values, it sends nothing.

use std::fmt;
use std::time::Duration;

use hickory_resolver::net::{DnsError, NetError, NoRecords};
use hickory_resolver::proto::op::ResponseCode;

/// What kind of failure a lookup met.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsFailure {
    /// The server answered, with no address: `rcode` is `"NXDOMAIN"` (no such name) or
    /// `"NOERROR"` (the name exists, with no A/AAAA records).
    NoRecords { rcode: &'static str },
    /// The server answered with an error code: `"SERVFAIL"`, `"REFUSED"`, `"FORMERR"`, ...
    ServerError { rcode: &'static str },
    /// No server answered within `resolver.timeout`, on any attempt.
    Timeout,
    /// No DNS to ask: no `resolver.nameservers` and no usable system resolv.conf.
    Unavailable,
    /// Anything else: a server that could not be reached, a malformed or truncated answer.
    Other,
}

impl DnsFailure {
    /// The DNS response code behind the failure, for Proxy-Status's `rcode` parameter.
    pub fn rcode(self) -> Option<&'static str> {
        match self {
            DnsFailure::NoRecords { rcode } | DnsFailure::ServerError { rcode } => Some(rcode),
            DnsFailure::Timeout | DnsFailure::Unavailable | DnsFailure::Other => None,
        }
    }
}

/// Why a name did not resolve: `.0` is the sentence for the log's `message` (also what
/// `Display` prints), `.1` the kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolveError(pub String, pub DnsFailure);

impl ResolveError {
    pub fn new(kind: DnsFailure, message: impl Into<String>) -> ResolveError {
        ResolveError(message.into(), kind)
    }

    pub fn kind(&self) -> DnsFailure {
        self.1
    }

    pub fn message(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ResolveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ResolveError {}

/// What a failure sentence says about the DNS that was asked.
#[derive(Debug, Clone)]
pub(super) struct Asked {
    /// `ip:port` of every server, in order.
    pub servers: Vec<String>,
    pub timeout: Duration,
    pub attempts: usize,
}

impl Asked {
    /// "DNS server 10.0.0.2:53" or "DNS servers 10.0.0.2:53, 10.0.0.3:53".
    fn servers(&self) -> String {
        match self.servers.as_slice() {
            [one] => format!("DNS server {one}"),
            [] => "the DNS server".to_owned(),
            many => format!("DNS servers {}", many.join(", ")),
        }
    }

    fn attempts(&self) -> String {
        match self.attempts {
            1 => "1 attempt".to_owned(),
            n => format!("{n} attempts"),
        }
    }
}

/// The sentence and kind for a lookup of `name` that failed with `error`.
pub(super) fn classify(name: &str, error: &NetError, asked: &Asked) -> ResolveError {
    match error {
        NetError::Dns(DnsError::NoRecordsFound(NoRecords { response_code, .. })) => {
            no_records(name, *response_code)
        }
        NetError::Dns(DnsError::ResponseCode(code)) => {
            let rcode = rcode_name(*code);
            let message = match code {
                ResponseCode::ServFail => format!("{name}: SERVFAIL from the DNS server"),
                ResponseCode::Refused => format!("{name}: DNS server refused the query (REFUSED)"),
                _ => format!("{name}: DNS server answered {rcode}"),
            };
            ResolveError::new(DnsFailure::ServerError { rcode }, message)
        }
        NetError::Timeout => ResolveError::new(
            DnsFailure::Timeout,
            format!(
                "{name}: {} did not answer within {} ({})",
                asked.servers(),
                show_duration(asked.timeout),
                asked.attempts()
            ),
        ),
        NetError::Io(e) => ResolveError::new(
            DnsFailure::Other,
            format!("{name}: {} could not be reached ({e})", asked.servers()),
        ),
        NetError::NoConnections => ResolveError::new(
            DnsFailure::Other,
            format!("{name}: {} could not be reached", asked.servers()),
        ),
        NetError::Truncated => ResolveError::new(
            DnsFailure::Other,
            format!(
                "{name}: the DNS answer was truncated and {} did not answer over TCP",
                asked.servers()
            ),
        ),
        other => ResolveError::new(
            DnsFailure::Other,
            format!("{name}: DNS lookup failed: {other}"),
        ),
    }
}

/// An answer without addresses: NXDOMAIN, or NOERROR with no A/AAAA records.
pub(super) fn no_records(name: &str, code: ResponseCode) -> ResolveError {
    let rcode = rcode_name(code);
    let message = match code {
        ResponseCode::NXDomain => format!("{name} has no A/AAAA records (NXDOMAIN)"),
        ResponseCode::NoError => {
            format!("{name} has no A/AAAA records (the name exists but has no addresses)")
        }
        _ => format!("{name} has no A/AAAA records ({rcode})"),
    };
    ResolveError::new(DnsFailure::NoRecords { rcode }, message)
}

/// The IANA mnemonic of a response code, as RFC 9209's `rcode` parameter wants it.
pub fn rcode_name(code: ResponseCode) -> &'static str {
    match code {
        ResponseCode::NoError => "NOERROR",
        ResponseCode::FormErr => "FORMERR",
        ResponseCode::ServFail => "SERVFAIL",
        ResponseCode::NXDomain => "NXDOMAIN",
        ResponseCode::NotImp => "NOTIMP",
        ResponseCode::Refused => "REFUSED",
        ResponseCode::YXDomain => "YXDOMAIN",
        ResponseCode::YXRRSet => "YXRRSET",
        ResponseCode::NXRRSet => "NXRRSET",
        ResponseCode::NotAuth => "NOTAUTH",
        ResponseCode::NotZone => "NOTZONE",
        ResponseCode::BADVERS => "BADVERS",
        ResponseCode::BADSIG => "BADSIG",
        ResponseCode::BADKEY => "BADKEY",
        ResponseCode::BADTIME => "BADTIME",
        ResponseCode::BADMODE => "BADMODE",
        ResponseCode::BADNAME => "BADNAME",
        ResponseCode::BADALG => "BADALG",
        ResponseCode::BADTRUNC => "BADTRUNC",
        ResponseCode::BADCOOKIE => "BADCOOKIE",
        ResponseCode::Unknown(_) => "UNKNOWN",
    }
}

/// `2s`, `1500ms`: how a config would have written it.
fn show_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_resolver::proto::op::Query;

    fn asked(servers: &[&str]) -> Asked {
        Asked {
            servers: servers.iter().map(|s| (*s).to_owned()).collect(),
            timeout: Duration::from_secs(2),
            attempts: 2,
        }
    }

    fn no_records_error(code: ResponseCode) -> NetError {
        NoRecords::new(Query::default(), code).into()
    }

    #[test]
    fn each_failure_reads_as_a_sentence_with_its_kind() {
        let one = asked(&["10.0.0.2:53"]);
        let cases = [
            (
                no_records_error(ResponseCode::NXDomain),
                "pypi.org has no A/AAAA records (NXDOMAIN)",
                DnsFailure::NoRecords { rcode: "NXDOMAIN" },
            ),
            (
                no_records_error(ResponseCode::NoError),
                "pypi.org has no A/AAAA records (the name exists but has no addresses)",
                DnsFailure::NoRecords { rcode: "NOERROR" },
            ),
            (
                DnsError::ResponseCode(ResponseCode::ServFail).into(),
                "pypi.org: SERVFAIL from the DNS server",
                DnsFailure::ServerError { rcode: "SERVFAIL" },
            ),
            (
                DnsError::ResponseCode(ResponseCode::Refused).into(),
                "pypi.org: DNS server refused the query (REFUSED)",
                DnsFailure::ServerError { rcode: "REFUSED" },
            ),
            (
                DnsError::ResponseCode(ResponseCode::NotImp).into(),
                "pypi.org: DNS server answered NOTIMP",
                DnsFailure::ServerError { rcode: "NOTIMP" },
            ),
            (
                NetError::Timeout,
                "pypi.org: DNS server 10.0.0.2:53 did not answer within 2s (2 attempts)",
                DnsFailure::Timeout,
            ),
            (
                NetError::Truncated,
                "pypi.org: the DNS answer was truncated and DNS server 10.0.0.2:53 did not answer over TCP",
                DnsFailure::Other,
            ),
        ];
        for (error, sentence, kind) in cases {
            let e = classify("pypi.org", &error, &one);
            assert_eq!(e.to_string(), sentence);
            assert_eq!(e.0, sentence);
            assert_eq!(e.kind(), kind, "{sentence}");
        }
    }

    #[test]
    fn a_timeout_names_every_server_and_the_budget() {
        let mut two = asked(&["10.0.0.2:53", "[fd00::2]:53"]);
        two.timeout = Duration::from_millis(1500);
        two.attempts = 1;
        let e = classify("pypi.org", &NetError::Timeout, &two);
        assert_eq!(
            e.0,
            "pypi.org: DNS servers 10.0.0.2:53, [fd00::2]:53 did not answer within 1500ms (1 attempt)"
        );
    }

    #[test]
    fn unreachable_servers_are_named_without_a_debug_dump() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let e = classify(
            "pypi.org",
            &NetError::from(refused),
            &asked(&["127.0.0.1:9"]),
        );
        assert!(
            e.0.starts_with("pypi.org: DNS server 127.0.0.1:9 could not be reached ("),
            "{}",
            e.0
        );
        assert!(!e.0.contains('{') && !e.0.contains("Some("), "{}", e.0);
        assert_eq!(e.kind(), DnsFailure::Other);
    }

    #[test]
    fn rcodes_are_iana_mnemonics() {
        assert_eq!(
            DnsFailure::ServerError { rcode: "SERVFAIL" }.rcode(),
            Some("SERVFAIL")
        );
        assert_eq!(DnsFailure::Timeout.rcode(), None);
        assert_eq!(rcode_name(ResponseCode::BADCOOKIE), "BADCOOKIE");
    }
}
