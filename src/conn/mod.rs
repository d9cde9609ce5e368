//! The steps every request shares, whichever listener it came in on: admit (judge, and
//! decide what report mode lets go on), resolve and check the upstream addresses, dial.
//! Each listener's path reads top-down in its own file and calls these in order:
//!
//! - [`explicit`]: `CONNECT host:port` and absolute-form `http://` requests;
//! - [`plain`]: transparent HTTP, judged on `Host`;
//! - [`sni`]: transparent TLS, judged on the ClientHello's SNI;
//!
//! over [`http`] (the HTTP/1 connection both HTTP listeners serve), [`forward`] (a plain-HTTP
//! request sent on), and [`tunnel`] (a tunnel's first bytes, then splice to the end).

pub mod auth;
pub mod budget;
mod counted;
pub mod explicit;
pub mod forward;
pub mod http;
pub mod plain;
mod proxy;
pub mod sni;
mod splice;
mod sweep;
pub mod tunnel;
pub mod upload;
mod zero_copy;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

pub use crate::request::Arrival;
pub use proxy::{build_state, Phase, Proxy, State};
pub use upload::{upload_cap, UpLimit, UploadCap};

use crate::log::{Action, Decision};
use crate::policy::{ip, Host, Request, TlsRequirement};
use crate::reason::{ProxyError, Reason, Reply};
use crate::resolve::DnsFailure;

/// A connection's place under `limits.max_connections`, and its count in
/// `egress_active_connections`: held until the connection and any tunnel it became are gone.
pub struct Slot {
    _permit: tokio::sync::OwnedSemaphorePermit,
    _active: crate::metrics::Active,
}

impl Slot {
    pub fn new(permit: tokio::sync::OwnedSemaphorePermit, listener: crate::log::Listener) -> Slot {
        Slot {
            _permit: permit,
            _active: crate::metrics::Active::open(listener),
        }
    }
}

/// Why a connection could not go on, and what to tell the client and the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub reason: Reason,
    pub message: String,
    /// What `Proxy-Status` names: the reason's own type unless the step knew better.
    pub error: ProxyError,
}

impl Failure {
    pub fn new(reason: Reason, message: impl Into<String>) -> Failure {
        Failure {
            reason,
            message: message.into(),
            error: reason.proxy_error(),
        }
    }

    /// The same failure, with a more precise `Proxy-Status` error type.
    pub fn with_error(mut self, error: ProxyError) -> Failure {
        self.error = error;
        self
    }

    /// The reply a client gets for this failure.
    pub fn reply(&self, host: Option<&Host>, help: Option<&str>) -> Reply {
        Reply::new(
            self.reason,
            self.error,
            &self.message,
            refusal_hint(host),
            help,
        )
    }
}

/// What the policy let through, or what report mode lets go on.
pub struct Admitted<'s> {
    pub rule: Option<&'s crate::policy::Rule>,
    /// Whether a later check's failure (the tunnel's SNI, cleartext where TLS is expected)
    /// is a denial, or only a would-be denial under report mode.
    pub enforced: bool,
    /// The rule's TLS requirement; `Any` when report mode observes instead of holding.
    pub tls: TlsRequirement,
}

/// Judges a request and records the verdict in its line. A denial is refused, or where
/// report mode covers the request (top-level or rule `mode`, `report_clients`, until
/// `report_until`), logged as a would-be denial and let go on. The only place enforcement is
/// computed.
pub fn admit<'s>(
    state: &'s State,
    line: &mut Decision,
    host: &Host,
    port: u16,
) -> Result<Admitted<'s>, Failure> {
    let verdict = state.config.policy.decide(&Request {
        client: line.client.ip(),
        host,
        port,
        principal: line.principal.as_deref(),
    });
    let mut enforced = verdict.enforced;
    let mut ended = "";
    if !enforced && state.report_ended() {
        enforced = true;
        ended = "; report mode has ended (report_until): enforced";
    }
    line.rule = verdict.rule_name().map(str::to_owned);
    if verdict.allowed {
        line.decision = Action::Allow;
        line.enforced = true;
        line.reason = Reason::Rule;
    } else {
        let detail = denial_detail(verdict.reason, host, port);
        denial(
            line,
            enforced,
            Failure::new(verdict.reason, format!("{detail}{ended}")),
        )?;
    }
    // A tunnel that report mode lets through, or whose SNI problems would only be reported,
    // is observed (dialled first, any ClientHello checked) rather than held for a hello.
    let tls = if verdict.allowed && enforced {
        verdict.tls()
    } else {
        TlsRequirement::Any
    };
    Ok(Admitted {
        rule: verdict.rule,
        enforced,
        tls,
    })
}

/// The one place a failure becomes a denial or, where the request is only reported, a
/// would-be denial that goes on (`Ok`). Failures that leave nothing to go on (no address,
/// nothing answered) are passed with `enforced` true.
pub fn denial(line: &mut Decision, enforced: bool, failure: Failure) -> Result<(), Failure> {
    line.decision = Action::Deny;
    line.reason = failure.reason;
    line.enforced = enforced;
    if enforced {
        // `refuse` records what `admit` already recorded: say it once.
        if !line
            .message
            .as_deref()
            .is_some_and(|m| m.ends_with(failure.message.as_str()))
        {
            line.note(&failure.message);
        }
        return Err(failure);
    }
    line.note(&format!("report mode: would deny: {}", failure.message));
    Ok(())
}

/// Records a failure that ends the request (after the policy step, or a malformed request).
pub fn record_failure(line: &mut Decision, failure: &Failure) {
    let _ = denial(line, true, failure.clone());
}

/// The detail a policy denial gives the client and the log.
pub fn denial_detail(reason: Reason, host: &Host, port: u16) -> String {
    match reason {
        Reason::Port => format!("{host} is allowed, but not on port {port}"),
        Reason::Client => format!("{host}:{port} is allowed, but not for this client"),
        _ => format!("{host}:{port} is not on the allowlist"),
    }
}

/// For AWS service names and metadata addresses, the hint that such traffic belongs on a
/// VPC endpoint, added to the refusal.
pub fn refusal_hint(host: Option<&Host>) -> Option<&'static str> {
    host.is_some_and(is_aws_service).then_some(
        "AWS service and metadata traffic belongs on a VPC endpoint or the metadata \
         endpoint directly: add it to NO_PROXY",
    )
}

fn is_aws_service(host: &Host) -> bool {
    match host {
        Host::Name(name) => {
            let name = name.as_str();
            name == "amazonaws.com"
                || name.ends_with(".amazonaws.com")
                || name.ends_with(".amazonaws.com.cn")
        }
        Host::Ip(ip) => ip::is_aws_metadata(*ip),
    }
}

/// Resolves the host (an IP literal stands for itself) and keeps the addresses the upstream
/// filter permits. Nothing is dialled here.
pub async fn upstream_targets(
    state: &State,
    host: &Host,
    port: u16,
) -> Result<Vec<SocketAddr>, Failure> {
    let addrs: Vec<IpAddr> = match host {
        Host::Ip(ip) => vec![*ip],
        Host::Name(name) => {
            let (result, took) = state.resolver.resolve(name).await;
            crate::metrics::dns(took);
            result.map_err(dns_failure)?
        }
    };
    let mut permitted = Vec::with_capacity(addrs.len());
    let mut refused = None;
    for ip in addrs {
        let addr = SocketAddr::new(ip, port);
        match state.config.upstream.check(addr) {
            Ok(()) => permitted.push(addr),
            Err(why) => {
                refused.get_or_insert((addr, why));
            }
        }
    }
    if permitted.is_empty() {
        let Some((addr, why)) = refused else {
            return Err(Failure::new(Reason::UpstreamDeniedIp, "no addresses"));
        };
        let failure = Failure::new(Reason::UpstreamDeniedIp, why);
        if state.config.upstream.loops_into_proxy(addr) {
            return Err(failure.with_error(ProxyError::ProxyLoopDetected));
        }
        return Err(failure);
    }
    Ok(permitted)
}

/// A name that did not resolve: the resolver's sentence, and for `Proxy-Status` the DNS
/// response code or the timeout.
fn dns_failure(error: crate::resolve::ResolveError) -> Failure {
    let error_type = match error.kind() {
        DnsFailure::Timeout => ProxyError::DnsTimeout,
        kind => ProxyError::DnsError(kind.rcode()),
    };
    Failure::new(Reason::DnsFailure, error.message()).with_error(error_type)
}

/// Connects to the first target that answers, trying each in turn within `budget` in all.
pub async fn dial(
    targets: &[SocketAddr],
    budget: Duration,
) -> Result<(TcpStream, SocketAddr), Failure> {
    let deadline = Instant::now() + budget;
    let mut last_error = String::from("no addresses");
    let mut refused = false;
    for (i, &addr) in targets.iter().enumerate() {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            break;
        }
        // Share what is left fairly, so one black-holed address can't use up the budget.
        let share = remaining / (targets.len() - i) as u32;
        let attempt = Instant::now();
        match tokio::time::timeout(share, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                crate::metrics::upstream_connect(attempt.elapsed());
                let _ = stream.set_nodelay(true);
                return Ok((stream, addr));
            }
            Ok(Err(e)) => {
                refused = e.kind() == std::io::ErrorKind::ConnectionRefused;
                last_error = format!("{addr}: {e}");
            }
            Err(_) => {
                refused = false;
                last_error = format!("{addr}: no answer within {}ms", share.as_millis());
            }
        }
    }
    if Instant::now() >= deadline {
        return Err(Failure::new(
            Reason::Timeout,
            format!(
                "upstream connect took over {}ms; last: {last_error}",
                budget.as_millis()
            ),
        ));
    }
    let failure = Failure::new(Reason::UpstreamUnreachable, last_error);
    Err(if refused {
        failure.with_error(ProxyError::ConnectionRefused)
    } else {
        failure
    })
}
