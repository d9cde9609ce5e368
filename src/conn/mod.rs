//! The steps every connection shares, whichever listener it came in on: judge what the
//! client asked for, resolve and check the upstream addresses, dial, splice, log.
//! `http` (explicit and transparent HTTP), `tunnel` (CONNECT tunnels and transparent TLS)
//! call these in order.

mod counted;
pub mod http;
mod splice;
pub mod tunnel;
mod zero_copy;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::config::Config;
use crate::log::{Action, Decision, DecisionLog};
use crate::policy::{ip, Host, Request, TlsRequirement};
use crate::reason::Reason;
use crate::resolve::Resolver;

/// A config and what was built from it. Connections take a snapshot when they start, so a
/// reload never changes the decision an open connection already got.
pub struct State {
    pub config: Config,
    pub resolver: Resolver,
    /// Set once the end of report mode has been announced on stderr.
    pub report_end_announced: AtomicBool,
}

impl State {
    pub fn new(config: Config, resolver: Resolver) -> State {
        State {
            config,
            resolver,
            report_end_announced: AtomicBool::new(false),
        }
    }

    /// Whether `report_until` has passed: report mode then enforces by itself.
    pub fn report_ended(&self) -> bool {
        let Some(until) = self.config.policy.report_until() else {
            return false;
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let ended = now > until;
        if ended && !self.report_end_announced.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "report mode ended at {} (report_until): enforcing every rule now",
                crate::log::rfc3339_millis(UNIX_EPOCH + Duration::from_secs(until))
            );
        }
        ended
    }

    /// Whether a denial for this client (near this rule) is carried out.
    pub fn enforces(&self, rule: Option<&crate::policy::Rule>, client: IpAddr) -> bool {
        self.config.policy.enforces(rule, client) || self.report_ended()
    }
}

/// Builds the per-config state: the config plus its resolver. The one place the self-loop
/// check learns the proxy's own listeners and this host's interface addresses.
pub fn build_state(mut config: Config) -> State {
    config.upstream = std::mem::take(&mut config.upstream)
        .with_own_addresses(config.listeners.all(), crate::sys::local_addresses());
    let resolver = Resolver::new(
        config.resolver_hosts.clone(),
        config.timeouts.upstream_connect,
    );
    State::new(config, resolver)
}

/// Where the proxy is in its life: serving, draining (no new connections, open ones may
/// finish), or closing (the drain deadline passed: every connection ends now).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    Serving,
    Draining,
    Closing,
}

/// What every connection task shares: the current state, the decision log and the phase.
pub struct Proxy {
    state: RwLock<Arc<State>>,
    pub log: DecisionLog,
    phase: watch::Sender<Phase>,
}

impl Proxy {
    pub fn new(state: State, log: DecisionLog) -> Proxy {
        Proxy {
            state: RwLock::new(Arc::new(state)),
            log,
            phase: watch::Sender::new(Phase::Serving),
        }
    }

    pub fn phase(&self) -> Phase {
        *self.phase.borrow()
    }

    pub fn set_phase(&self, phase: Phase) {
        self.phase.send_if_modified(|now| {
            let later = phase > *now;
            if later {
                *now = phase;
            }
            later
        });
    }

    /// Completes once the proxy has started draining.
    pub async fn draining(&self) {
        self.reached(Phase::Draining).await
    }

    /// Completes once the drain deadline has passed.
    pub async fn closing(&self) {
        self.reached(Phase::Closing).await
    }

    async fn reached(&self, phase: Phase) {
        let mut rx = self.phase.subscribe();
        let _ = rx.wait_for(|now| *now >= phase).await;
    }

    /// The state new connections and requests use now.
    pub fn state(&self) -> Arc<State> {
        match self.state.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Swaps in a new state for connections and requests that start from now on.
    pub fn replace_state(&self, state: State) {
        let state = Arc::new(state);
        match self.state.write() {
            Ok(mut guard) => *guard = state,
            Err(poisoned) => *poisoned.into_inner() = state,
        }
    }
}

/// How a connection arrived: on which listener, from whom, and for redirected traffic where
/// it was headed (`SO_ORIGINAL_DST`), with the port to assume when that is unknown.
#[derive(Debug, Clone, Copy)]
pub struct Arrival {
    pub listener: crate::log::Listener,
    pub peer: SocketAddr,
    pub original_dst: Option<SocketAddr>,
    pub default_port: u16,
}

impl Arrival {
    /// The destination port: the original one when redirected, else the configured default.
    pub fn port(&self) -> u16 {
        self.original_dst
            .map_or(self.default_port, |dst| dst.port())
    }

    /// A decision line for this connection, not yet decided.
    pub fn line(&self) -> Decision {
        let mut line = Decision::new(self.listener, self.peer);
        line.original_dst = self.original_dst;
        line
    }
}

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
}

impl Failure {
    pub fn new(reason: Reason, message: impl Into<String>) -> Failure {
        Failure {
            reason,
            message: message.into(),
        }
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
        line.note(&failure.message);
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
            result.map_err(|e| Failure::new(Reason::DnsFailure, e.0))?
        }
    };
    let mut permitted = Vec::with_capacity(addrs.len());
    let mut refused = None;
    for ip in addrs {
        let addr = SocketAddr::new(ip, port);
        match state.config.upstream.check(addr) {
            Ok(()) => permitted.push(addr),
            Err(why) => {
                refused.get_or_insert(why);
            }
        }
    }
    if permitted.is_empty() {
        let why = refused.unwrap_or_else(|| "no addresses".to_owned());
        return Err(Failure::new(Reason::UpstreamDeniedIp, why));
    }
    Ok(permitted)
}

/// Connects to the first target that answers, trying each in turn within `budget` in all.
pub async fn dial(
    targets: &[SocketAddr],
    budget: Duration,
) -> Result<(TcpStream, SocketAddr), Failure> {
    let deadline = Instant::now() + budget;
    let mut last_error = String::from("no addresses");
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
            Ok(Err(e)) => last_error = format!("{addr}: {e}"),
            Err(_) => last_error = format!("{addr}: no answer within {}ms", share.as_millis()),
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
    Err(Failure::new(Reason::UpstreamUnreachable, last_error))
}
