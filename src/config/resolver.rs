//! The `resolver:` section: static overrides, which DNS servers to ask, how long to wait for
//! them, and how long their answers are kept. Pure: the resolver itself is `crate::resolve`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde_yaml_ng::Value;

use super::parse::{join, kind, show, Walk, RESOLVER_CACHE_KEYS, RESOLVER_KEYS};
use super::units::parse_duration;
use crate::policy::{host, Host};

/// Attempts allowed per query; more only stretches the wait when a server is down.
const MAX_ATTEMPTS: u64 = 10;
/// A longer per-query wait than this is a server that is not coming back.
const MAX_TIMEOUT: Duration = Duration::from_secs(60);
/// Cached answers are never kept longer than a day, whatever their TTL.
const MAX_CACHE_TTL: Duration = Duration::from_secs(86_400);
const MAX_CACHE_SIZE: u64 = 1_000_000;

/// The whole `resolver:` section, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolverSettings {
    /// `hosts:` normalised name -> addresses, answered before (and instead of) DNS.
    pub hosts: HashMap<String, Vec<IpAddr>>,
    /// `nameservers:` the DNS servers to ask, over UDP (and TCP for truncated answers), in
    /// this order of preference. Empty: the servers in the system's resolv.conf.
    pub nameservers: Vec<SocketAddr>,
    /// `timeout:` how long one attempt at a query may take, across every server.
    pub timeout: Duration,
    /// `attempts:` how many times a query is sent before the lookup fails (at least 1).
    pub attempts: usize,
    pub cache: DnsCache,
}

/// `resolver.cache:` answers are kept for their TTL, cut to these caps; a short TTL is never
/// lengthened (a TTL of 0 is not cached at all).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DnsCache {
    /// How many answers (one per name and record type) are kept; 0 turns caching off.
    pub size: u64,
    /// The longest an address answer is kept, whatever its TTL.
    pub max_ttl: Duration,
    /// The longest a "no such name" or "no addresses" answer is kept (its TTL is the SOA
    /// minimum the server sent; without an SOA it is not kept at all).
    pub negative_ttl: Duration,
}

impl Default for ResolverSettings {
    fn default() -> Self {
        ResolverSettings {
            hosts: HashMap::new(),
            nameservers: Vec::new(),
            timeout: Duration::from_secs(2),
            attempts: 2,
            cache: DnsCache::default(),
        }
    }
}

impl Default for DnsCache {
    fn default() -> Self {
        DnsCache {
            size: 4096,
            max_ttl: Duration::from_secs(300),
            negative_ttl: Duration::from_secs(30),
        }
    }
}

impl Walk {
    pub(super) fn resolver(&mut self, value: Option<&Value>) -> ResolverSettings {
        let mut settings = ResolverSettings::default();
        let Some(map) = value.and_then(|v| self.mapping(v, "resolver", RESOLVER_KEYS)) else {
            return settings;
        };
        settings.hosts = self.resolver_hosts(map.get("hosts"));
        let mut listed = Vec::new();
        settings.nameservers = self.list(
            map.get("nameservers"),
            "resolver.nameservers",
            |walk, value, path| {
                let addr = walk.nameserver(value, path)?;
                if listed.contains(&addr) {
                    walk.problem(path, format!("{addr} is listed twice"));
                    return None;
                }
                listed.push(addr);
                Some(addr)
            },
        );
        if let Some(d) = map
            .get("timeout")
            .and_then(|v| self.duration(v, "resolver.timeout"))
        {
            if d > MAX_TIMEOUT {
                self.problem("resolver.timeout", "must be at most 60s");
            }
            settings.timeout = d;
        }
        if let Some(v) = map.get("attempts") {
            match v.as_u64() {
                Some(n) if (1..=MAX_ATTEMPTS).contains(&n) => settings.attempts = n as usize,
                _ => self.problem(
                    "resolver.attempts",
                    format!("expected 1-{MAX_ATTEMPTS}, found {}", show(v)),
                ),
            }
        }
        settings.cache = self.dns_cache(map.get("cache"));
        settings
    }

    fn resolver_hosts(&mut self, value: Option<&Value>) -> HashMap<String, Vec<IpAddr>> {
        let mut hosts = HashMap::new();
        let entries = match value {
            None | Some(Value::Null) => return hosts,
            Some(Value::Mapping(entries)) => entries,
            Some(other) => {
                self.problem(
                    "resolver.hosts",
                    format!(
                        "expected a mapping of name to addresses, found {}",
                        kind(other)
                    ),
                );
                return hosts;
            }
        };
        for (key, addrs) in entries {
            let name = key.as_str().unwrap_or_default();
            let path = join("resolver.hosts", name);
            let normalised = match host::parse_host(name) {
                Ok(Host::Name(n)) => n.as_str().to_owned(),
                Ok(Host::Ip(_)) => {
                    self.problem(&path, "an IP literal needs no resolver entry");
                    continue;
                }
                Err(e) => {
                    self.problem(&path, format!("bad host name: {e}"));
                    continue;
                }
            };
            let list: Vec<IpAddr> = match addrs {
                Value::String(_) => self.ip(addrs, &path).into_iter().collect(),
                _ => self.list(Some(addrs), &path, Walk::ip),
            };
            if list.is_empty() && !self.has_problem_under(&path) {
                self.problem(&path, "needs at least one address");
            }
            hosts.insert(normalised, list);
        }
        hosts
    }

    /// One `IP:PORT` (`[v6]:PORT` for IPv6): a server to send queries to.
    fn nameserver(&mut self, value: &Value, path: &str) -> Option<SocketAddr> {
        let text = value.as_str().unwrap_or_default();
        if let Ok(ip) = text.parse::<IpAddr>() {
            let fix = match ip {
                IpAddr::V4(_) => format!("{ip}:53"),
                IpAddr::V6(_) => format!("[{ip}]:53"),
            };
            self.problem(
                path,
                format!("'{text}' has no port: write {fix} for the usual DNS port"),
            );
            return None;
        }
        let Ok(addr) = text.parse::<SocketAddr>() else {
            self.problem(
                path,
                format!(
                    "expected a DNS server as IP:PORT like 10.0.0.2:53 or [fd00::2]:53, found {}",
                    show(value)
                ),
            );
            return None;
        };
        if addr.port() == 0 {
            self.problem(path, format!("'{text}': port 0 is not allowed"));
            None
        } else if addr.ip().is_unspecified() || addr.ip().is_multicast() {
            self.problem(path, format!("'{text}' is not a server's address"));
            None
        } else {
            Some(addr)
        }
    }

    fn dns_cache(&mut self, value: Option<&Value>) -> DnsCache {
        let mut cache = DnsCache::default();
        let Some(map) = value.and_then(|v| self.mapping(v, "resolver.cache", RESOLVER_CACHE_KEYS))
        else {
            return cache;
        };
        if let Some(v) = map.get("size") {
            match v.as_u64() {
                Some(n) if n <= MAX_CACHE_SIZE => cache.size = n,
                _ => self.problem(
                    "resolver.cache.size",
                    format!(
                        "expected 0-{MAX_CACHE_SIZE} (0: no caching), found {}",
                        show(v)
                    ),
                ),
            }
        }
        for (key, slot) in [
            ("max_ttl", &mut cache.max_ttl),
            ("negative_ttl", &mut cache.negative_ttl),
        ] {
            if let Some(d) = map
                .get(key)
                .and_then(|v| self.ttl(v, &join("resolver.cache", key)))
            {
                *slot = d;
            }
        }
        cache
    }

    /// A TTL cap: a duration like `300s`, where 0 is allowed (never keep such answers).
    fn ttl(&mut self, value: &Value, path: &str) -> Option<Duration> {
        let parsed = match value {
            Value::Number(n) => n.as_u64().map(Duration::from_secs),
            Value::String(s) => parse_duration(s),
            _ => None,
        };
        match parsed {
            Some(d) if d > MAX_CACHE_TTL => self.problem(path, "must be at most 1 day (86400s)"),
            Some(d) => return Some(d),
            None => self.problem(
                path,
                format!(
                    "expected a duration like 30s, 5m or 0 (never cache), found {}",
                    show(value)
                ),
            ),
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Problem};

    const MINIMAL: &str = "listeners: { explicit: 127.0.0.1:3128 }\n";

    fn problems(resolver: &str) -> Vec<Problem> {
        Config::from_yaml(&format!("{MINIMAL}resolver: {resolver}\n"))
            .expect_err("refused")
            .0
    }

    #[test]
    fn defaults_ask_the_system_with_a_capped_cache() {
        let c = Config::from_yaml(MINIMAL).unwrap();
        assert_eq!(c.resolver, ResolverSettings::default());
        assert!(c.resolver.nameservers.is_empty());
        assert_eq!(c.resolver.timeout, Duration::from_secs(2));
        assert_eq!(c.resolver.attempts, 2);
        assert_eq!(c.resolver.cache.size, 4096);
        assert_eq!(c.resolver.cache.max_ttl, Duration::from_secs(300));
        assert_eq!(c.resolver.cache.negative_ttl, Duration::from_secs(30));
    }

    #[test]
    fn every_key_is_read() {
        let c = Config::from_yaml(&format!(
            "{MINIMAL}resolver:
  nameservers: [10.0.0.2:53, '[fd00::2]:5353']
  timeout: 500ms
  attempts: 3
  cache: {{ size: 0, max_ttl: 60s, negative_ttl: 0 }}
"
        ))
        .unwrap();
        let r = &c.resolver;
        assert_eq!(
            r.nameservers,
            vec![
                "10.0.0.2:53".parse::<SocketAddr>().unwrap(),
                "[fd00::2]:5353".parse().unwrap()
            ]
        );
        assert_eq!(r.timeout, Duration::from_millis(500));
        assert_eq!(r.attempts, 3);
        assert_eq!(
            r.cache,
            DnsCache {
                size: 0,
                max_ttl: Duration::from_secs(60),
                negative_ttl: Duration::ZERO
            }
        );
    }

    #[test]
    fn every_bad_value_is_reported_at_its_path() {
        let found = problems(
            "{ nameservers: [10.0.0.2, '10.0.0.3:0', dns.example:53, '0.0.0.0:53', 7, \
             '10.0.0.4:53', '10.0.0.4:53'], timeout: 0s, attempts: 0, \
             cache: { size: -1, max_ttl: 2d, negative_ttl: 25h, ttl: 1 } }",
        );
        let paths: Vec<(&str, &str)> = found
            .iter()
            .map(|p| (p.path.as_str(), p.message.as_str()))
            .collect();
        for (path, says) in [
            ("resolver.nameservers[0]", "write 10.0.0.2:53"),
            ("resolver.nameservers[1]", "port 0"),
            ("resolver.nameservers[2]", "IP:PORT"),
            ("resolver.nameservers[3]", "not a server's address"),
            ("resolver.nameservers[4]", "IP:PORT"),
            ("resolver.nameservers[6]", "listed twice"),
            ("resolver.timeout", "greater than zero"),
            ("resolver.attempts", "expected 1-10"),
            ("resolver.cache.size", "0-1000000"),
            ("resolver.cache.max_ttl", "expected a duration"),
            ("resolver.cache.negative_ttl", "at most 1 day"),
            ("resolver.cache.ttl", "unknown field"),
        ] {
            assert!(
                paths.iter().any(|(p, m)| *p == path && m.contains(says)),
                "no `{says}` at {path} in {paths:?}"
            );
        }
        assert_eq!(found.len(), 12, "{paths:?}");
    }

    #[test]
    fn a_bare_ipv6_server_gets_the_bracketed_fix() {
        let found = problems("{ nameservers: ['fd00::2'] }");
        assert!(
            found[0].message.contains("write [fd00::2]:53"),
            "{}",
            found[0]
        );
    }

    #[test]
    fn timeouts_and_attempts_have_upper_bounds() {
        let found = problems("{ timeout: 2m, attempts: 11 }");
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(found[0].path, "resolver.timeout");
        assert_eq!(found[1].path, "resolver.attempts");
    }
}
