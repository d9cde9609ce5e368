//! Name → addresses, right after the policy allowed a name and before the addresses are
//! checked and dialled: `resolver.hosts` first, then DNS. The proxy only ever dials what this
//! returns, never an address the client supplied for a name.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use hickory_resolver::config::{LookupIpStrategy, ResolveHosts};
use hickory_resolver::TokioResolver;

use crate::policy::HostName;

pub struct Resolver {
    hosts: HashMap<String, Vec<IpAddr>>,
    dns: Option<TokioResolver>,
}

/// Why a name did not resolve; the text goes into the log's `message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolveError(pub String);

impl Resolver {
    /// Static entries plus the system's DNS configuration (`/etc/resolv.conf`). Without a
    /// usable system configuration only the static entries resolve.
    pub fn new(hosts: HashMap<String, Vec<IpAddr>>, timeout: Duration) -> Resolver {
        let dns = match TokioResolver::builder_tokio() {
            Ok(mut builder) => {
                let opts = builder.options_mut();
                opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
                opts.timeout = timeout;
                opts.attempts = 2;
                // The proxy resolves fully qualified names only; /etc/hosts is not policy.
                opts.ndots = 0;
                opts.use_hosts_file = ResolveHosts::Never;
                builder.build().ok()
            }
            Err(e) => {
                tracing::warn!(
                    "no system DNS configuration ({e}); only resolver.hosts will resolve"
                );
                None
            }
        };
        Resolver { hosts, dns }
    }

    /// A resolver with the static entries only, never sending a DNS query.
    pub fn static_only(hosts: HashMap<String, Vec<IpAddr>>) -> Resolver {
        Resolver { hosts, dns: None }
    }

    /// The addresses for `name`, and how long the lookup took.
    pub async fn resolve(&self, name: &HostName) -> (Result<Vec<IpAddr>, ResolveError>, Duration) {
        let started = Instant::now();
        let result = self.lookup(name).await;
        (result, started.elapsed())
    }

    async fn lookup(&self, name: &HostName) -> Result<Vec<IpAddr>, ResolveError> {
        if let Some(addrs) = self.hosts.get(name.as_str()) {
            return Ok(addrs.clone());
        }
        // RFC 6761: .invalid never resolves; answering here keeps such lookups off the wire.
        if name.as_str() == "invalid" || name.as_str().ends_with(".invalid") {
            return Err(ResolveError(format!("{name} is under .invalid (RFC 6761)")));
        }
        let Some(dns) = &self.dns else {
            return Err(ResolveError(format!(
                "{name} is not in resolver.hosts and DNS is unavailable"
            )));
        };
        // The trailing dot makes the name absolute: no search-domain expansion.
        let lookup = dns
            .lookup_ip(format!("{name}."))
            .await
            .map_err(|e| ResolveError(format!("{name}: {e}")))?;
        let addrs: Vec<IpAddr> = lookup.iter().collect();
        if addrs.is_empty() {
            return Err(ResolveError(format!("{name}: no addresses")));
        }
        Ok(addrs)
    }
}
