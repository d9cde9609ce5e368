//! Name → addresses, right after the policy allowed a name and before the addresses are
//! checked and dialled: `resolver.hosts` first, then DNS. The proxy only ever dials what this
//! returns, never an address the client supplied for a name.
//!
//! DNS goes to `resolver.nameservers` (UDP, and TCP when an answer comes back truncated), or
//! when none are listed to the servers in the system's resolv.conf — never to both. Names
//! are looked up as fully qualified names only: no search domains, no /etc/hosts. Answers are
//! cached for their TTL, cut to `resolver.cache`'s caps and never lengthened. A reload that
//! leaves the DNS settings (and the system's servers) as they were keeps the DNS half, cache
//! and all: reloads neither flush answers nor rebuild it.

mod failure;

pub use failure::{rcode_name, DnsFailure, ResolveError};

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig,
    ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::TokioResolver;

use crate::config::{DnsCache, ResolverSettings};
use crate::policy::HostName;
use failure::Asked;

pub struct Resolver {
    hosts: HashMap<String, Vec<IpAddr>>,
    dns: Option<Arc<Dns>>,
}

/// The DNS half: hickory's resolver (with its cache) and what failure sentences say about it.
struct Dns {
    resolver: TokioResolver,
    asked: Asked,
    /// What it was built from: a reload with the same keeps it.
    made_from: DnsSettings,
}

/// Everything the DNS half is built from.
struct DnsSettings {
    servers: Vec<NameServerConfig>,
    timeout: Duration,
    attempts: usize,
    cache: DnsCache,
}

impl Resolver {
    /// Static entries, then DNS: `settings.nameservers`, or when that is empty the system's
    /// resolv.conf (its servers only; timeouts, attempts and caching are ours). Without any
    /// server only the static entries resolve, and other names fail as
    /// [`DnsFailure::Unavailable`].
    pub fn from_settings(settings: &ResolverSettings) -> Resolver {
        Resolver::keeping(settings, None)
    }

    /// As [`Resolver::from_settings`], but keeping `previous`'s DNS half (its cache, its
    /// connections) when it was built from the same servers and settings.
    pub fn keeping(settings: &ResolverSettings, previous: Option<&Resolver>) -> Resolver {
        let hosts = settings.hosts.clone();
        let wanted = DnsSettings {
            servers: servers(settings),
            timeout: settings.timeout,
            attempts: settings.attempts,
            cache: settings.cache,
        };
        if wanted.servers.is_empty() {
            return Resolver::static_only(hosts);
        }
        let kept = previous
            .and_then(|p| p.dns.as_ref())
            .filter(|dns| dns.made_from == wanted);
        let dns = match kept {
            Some(dns) => Some(dns.clone()),
            None => Dns::build(wanted).map(Arc::new),
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
            return Err(ResolveError::new(
                DnsFailure::NoRecords { rcode: "NXDOMAIN" },
                format!("{name} is under .invalid (RFC 6761)"),
            ));
        }
        let Some(dns) = &self.dns else {
            return Err(ResolveError::new(
                DnsFailure::Unavailable,
                format!(
                    "{name} is not in resolver.hosts and no DNS server is configured \
                     (no resolver.nameservers and no usable resolv.conf)"
                ),
            ));
        };
        // The trailing dot makes the name absolute: no search-domain expansion.
        let lookup = dns
            .resolver
            .lookup_ip(format!("{name}."))
            .await
            .map_err(|e| failure::classify(name.as_str(), &e, &dns.asked))?;
        let addrs: Vec<IpAddr> = lookup.iter().collect();
        if addrs.is_empty() {
            return Err(failure::no_records(name.as_str(), ResponseCode::NoError));
        }
        Ok(addrs)
    }
}

/// `settings.nameservers`, or the system's when there are none; empty when neither gives any.
fn servers(settings: &ResolverSettings) -> Vec<NameServerConfig> {
    if !settings.nameservers.is_empty() {
        return settings
            .nameservers
            .iter()
            .map(|a| name_server(*a))
            .collect();
    }
    match hickory_resolver::system_conf::read_system_conf() {
        Ok((config, _)) => config.name_servers().to_vec(),
        Err(e) => {
            tracing::warn!("no system DNS configuration ({e}); only resolver.hosts will resolve");
            Vec::new()
        }
    }
}

impl PartialEq for DnsSettings {
    fn eq(&self, other: &DnsSettings) -> bool {
        // hickory's server config has no `PartialEq`; its `Debug` shows every field.
        format!("{:?}", self.servers) == format!("{:?}", other.servers)
            && (self.timeout, self.attempts, self.cache)
                == (other.timeout, other.attempts, other.cache)
    }
}

impl Dns {
    fn build(made_from: DnsSettings) -> Option<Dns> {
        let asked = Asked {
            servers: made_from.servers.iter().flat_map(addresses).collect(),
            timeout: made_from.timeout,
            attempts: made_from.attempts,
        };
        let mut builder = TokioResolver::builder_with_config(
            ResolverConfig::from_name_servers(made_from.servers.clone()),
            TokioRuntimeProvider::default(),
        );
        *builder.options_mut() = options(&made_from);
        match builder.build() {
            Ok(resolver) => Some(Dns {
                resolver,
                asked,
                made_from,
            }),
            Err(e) => {
                tracing::warn!("DNS resolver not built ({e}); only resolver.hosts will resolve");
                None
            }
        }
    }
}

/// One configured server: UDP first, TCP for truncated answers, both to its port.
fn name_server(addr: SocketAddr) -> NameServerConfig {
    let mut server = NameServerConfig::udp_and_tcp(addr.ip());
    for connection in &mut server.connections {
        connection.port = addr.port();
    }
    server
}

/// `ip:port` of each distinct port a server is asked on.
fn addresses(server: &NameServerConfig) -> Vec<String> {
    let mut ports: Vec<u16> = server
        .connections
        .iter()
        .map(|c: &ConnectionConfig| c.port)
        .collect();
    ports.dedup();
    ports
        .into_iter()
        .map(|port| SocketAddr::new(server.ip, port).to_string())
        .collect()
}

fn options(settings: &DnsSettings) -> ResolverOpts {
    let mut opts = ResolverOpts::default();
    opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    opts.timeout = settings.timeout;
    // hickory counts retries after the first try; `resolver.attempts` counts every try.
    opts.attempts = settings.attempts.saturating_sub(1);
    // The proxy resolves fully qualified names only; /etc/hosts is not policy.
    opts.ndots = 0;
    opts.use_hosts_file = ResolveHosts::Never;
    opts.cache_size = settings.cache.size;
    // TTLs are honoured down to 0 (never lengthened) and capped above.
    opts.positive_min_ttl = None;
    opts.negative_min_ttl = None;
    opts.positive_max_ttl = Some(settings.cache.max_ttl);
    opts.negative_max_ttl = Some(settings.cache.negative_ttl);
    opts
}
