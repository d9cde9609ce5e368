//! The policy: compiled rules and `decide`, the step right after a request (or ClientHello)
//! has been read and before anything is resolved or dialled. Pure: no sockets, no clocks.
//!
//! Exact names and `*.suffix` patterns are kept in hash indexes keyed by name, so a lookup
//! costs one probe per label of the asked-for name, whatever the number of rules. Only
//! in-label globs (`api-*.example.com`) are scanned; keep those few.

pub mod addr;
pub mod host;
pub mod ip;
pub mod principal;
pub mod suffix;

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;

pub use addr::AddrFilter;
pub use host::{Host, HostName, HostPattern, PatternKind};
pub use principal::Principals;

use crate::reason::Reason;

/// Enforce denials, or only report them (`report` lets would-be-denied traffic through and
/// logs it as `deny` with `enforced: false`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    #[default]
    Enforce,
    Report,
}

/// What a tunnel must start with before it is connected upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsRequirement {
    /// A ClientHello whose SNI names the host that was asked for.
    #[default]
    RequireSni,
    /// Anything: plain TCP, a server that speaks first, or TLS without SNI. A ClientHello
    /// that does carry an SNI must still name the asked-for host.
    Any,
}

/// One `allow:` entry, compiled.
#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub hosts: Vec<HostPattern>,
    pub ports: Vec<u16>,
    /// Source CIDRs the rule applies to; empty means any client.
    pub clients: Vec<IpNet>,
    /// IP-literal destinations the rule allows.
    pub cidrs: Vec<IpNet>,
    pub tls: TlsRequirement,
    pub mode: Option<Mode>,
    /// Workloads (names from top-level `principals:`) the rule applies to; empty means any
    /// workload, authenticated or not. A non-empty list never matches a request without a
    /// principal, so transparent listeners (which carry no credentials) never match it.
    pub principals: Vec<String>,
    /// Client->upstream bytes one connection may send under this rule (`max_bytes_up:`).
    pub max_bytes_up: Option<u64>,
    /// Client->upstream bytes one client may send under this rule per window (`upload_budget:`).
    pub upload_budget: Option<UploadBudget>,
    /// The operator accepted a wildcard over a public suffix (`tenant_wildcard: true`). Only
    /// the config check reads it; matching is the same either way.
    pub tenant_wildcard: bool,
}

/// `upload_budget: { bytes, per }`: at most `bytes` sent upstream by one client (its principal,
/// else its IP) under one rule in any window of `per`. Counting and cutting is the runtime's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadBudget {
    pub bytes: u64,
    pub per: Duration,
}

impl Rule {
    fn covers_client(&self, client: IpAddr) -> bool {
        let client = client.to_canonical();
        self.clients.is_empty() || self.clients.iter().any(|net| net.contains(&client))
    }

    /// Whether the rule applies to this workload: any when it lists none, else only a listed
    /// one, and never an unauthenticated request.
    fn covers_principal(&self, principal: Option<&str>) -> bool {
        self.principals.is_empty()
            || principal.is_some_and(|p| self.principals.iter().any(|listed| listed == p))
    }
}

/// What is asked: by whom, for which host and port.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub client: IpAddr,
    pub host: &'a Host,
    pub port: u16,
    /// The workload named by valid `Proxy-Authorization` credentials, if any. The caller
    /// verifies them ([`Principals::verify`]) before deciding; `decide` trusts this.
    pub principal: Option<&'a str>,
}

/// The policy's answer before it is acted on: `allowed` is the rules' verdict; `enforced`
/// says whether a denial is to be carried out (false in report mode).
#[derive(Debug, Clone, Copy)]
pub struct Verdict<'p> {
    pub allowed: bool,
    pub reason: Reason,
    /// The rule that allowed, or for `port`/`client` denials the nearest rule that named
    /// the host.
    pub rule: Option<&'p Rule>,
    pub enforced: bool,
}

impl Verdict<'_> {
    /// Whether the connection goes ahead: allowed, or denied in report mode.
    pub fn lets_through(&self) -> bool {
        self.allowed || !self.enforced
    }

    /// The rule's name for the log, only when that rule decided to allow.
    pub fn rule_name(&self) -> Option<&str> {
        self.rule.map(|r| r.name.as_str())
    }

    /// The TLS requirement for the tunnel (the strict default when no rule allowed it).
    pub fn tls(&self) -> TlsRequirement {
        self.rule.map(|r| r.tls).unwrap_or_default()
    }
}

/// Where report mode applies beyond the top-level `mode`, and when it ends.
#[derive(Debug, Clone, Default)]
pub struct Reporting {
    /// Clients whose would-be denials are only reported (`report_clients:`).
    pub clients: Vec<IpNet>,
    /// Unix time (seconds) after which report mode enforces by itself (`report_until:`).
    pub until: Option<u64>,
}

/// Compiled rules with their indexes.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    rules: Vec<Rule>,
    mode: Mode,
    reporting: Reporting,
    exact: HashMap<String, Vec<u32>>,
    suffix: HashMap<String, Vec<u32>>,
    globs: Vec<(HostPattern, u32)>,
    ip_rules: Vec<u32>,
}

impl Policy {
    pub fn new(mode: Mode, rules: Vec<Rule>) -> Policy {
        let mut policy = Policy {
            mode,
            ..Policy::default()
        };
        for (index, rule) in rules.iter().enumerate() {
            let index = index as u32;
            for pattern in &rule.hosts {
                match pattern.kind() {
                    PatternKind::Exact(name) => push_unique(
                        policy.exact.entry(name.as_str().to_owned()).or_default(),
                        index,
                    ),
                    PatternKind::Suffix(name) => push_unique(
                        policy.suffix.entry(name.as_str().to_owned()).or_default(),
                        index,
                    ),
                    PatternKind::Glob => policy.globs.push((pattern.clone(), index)),
                }
            }
            if !rule.cidrs.is_empty() {
                policy.ip_rules.push(index);
            }
        }
        policy.rules = rules;
        policy
    }

    pub fn with_reporting(mut self, reporting: Reporting) -> Policy {
        self.reporting = reporting;
        self
    }

    /// Unix time after which report mode ends, if it has an end.
    pub fn report_until(&self) -> Option<u64> {
        self.reporting.until
    }

    /// Whether a denial is carried out for this client, given the nearest rule: the rule's
    /// own mode, else report for `report_clients`, else the top-level mode. Report mode's
    /// expiry is the caller's to apply (it needs the clock).
    pub fn enforces(&self, rule: Option<&Rule>, client: IpAddr) -> bool {
        let mode = rule.and_then(|r| r.mode).unwrap_or_else(|| {
            let client = client.to_canonical();
            if self
                .reporting
                .clients
                .iter()
                .any(|net| net.contains(&client))
            {
                Mode::Report
            } else {
                self.mode
            }
        });
        mode == Mode::Enforce
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Decide a request. The first rule (in config order) that matches host, port, client and
    /// principal allows it; otherwise the most specific miss names the reason. A principal miss
    /// is a `client` denial: it is the same question (who is asking), answered by credentials
    /// instead of a source address.
    pub fn decide(&self, request: &Request<'_>) -> Verdict<'_> {
        let candidates = self.candidates(request.host);
        let mut nearest: Option<(Reason, u32)> = None;
        for &index in &candidates {
            let rule = &self.rules[index as usize];
            if !rule.ports.contains(&request.port) {
                nearest.get_or_insert((Reason::Port, index));
                continue;
            }
            if !rule.covers_client(request.client) || !rule.covers_principal(request.principal) {
                // A client miss is nearer than a port miss: host and port were right.
                if !matches!(nearest, Some((Reason::Client, _))) {
                    nearest = Some((Reason::Client, index));
                }
                continue;
            }
            let rule = &self.rules[index as usize];
            return Verdict {
                allowed: true,
                reason: Reason::Rule,
                rule: Some(rule),
                // What the tunnel's later checks (SNI) do if they fail.
                enforced: self.enforces(Some(rule), request.client),
            };
        }
        let (reason, rule) = match nearest {
            Some((reason, index)) => (reason, Some(&self.rules[index as usize])),
            None => (Reason::NoRule, None),
        };
        Verdict {
            allowed: false,
            reason,
            rule,
            enforced: self.enforces(rule, request.client),
        }
    }

    /// Indexes of the rules whose hosts (or cidrs) could match, in config order, deduplicated.
    fn candidates(&self, host: &Host) -> Vec<u32> {
        let mut found = Vec::new();
        match host {
            Host::Ip(ip) => {
                let ip = ip.to_canonical();
                for &index in &self.ip_rules {
                    if self.rules[index as usize]
                        .cidrs
                        .iter()
                        .any(|n| n.contains(&ip))
                    {
                        found.push(index);
                    }
                }
            }
            Host::Name(name) => {
                let text = name.as_str();
                if let Some(hits) = self.exact.get(text) {
                    found.extend_from_slice(hits);
                }
                // Every proper suffix that starts at a label boundary: "b.c" and "c" for "a.b.c".
                for (at, _) in text.match_indices('.') {
                    if let Some(hits) = self.suffix.get(&text[at + 1..]) {
                        found.extend_from_slice(hits);
                    }
                }
                for (pattern, index) in &self.globs {
                    if pattern.matches(name) {
                        found.push(*index);
                    }
                }
            }
        }
        found.sort_unstable();
        found.dedup();
        found
    }
}

fn push_unique(list: &mut Vec<u32>, index: u32) {
    if list.last() != Some(&index) {
        list.push(index);
    }
}

#[cfg(test)]
mod laws;
#[cfg(test)]
mod tests;
