//! The configuration: where it comes from (`source`), how its text becomes a checked
//! [`Config`] (`parse`), and how a running proxy swaps in a new one (`reload`).
//! `run`, `check`, `validate` and reload all go through [`Config::from_yaml`].

pub mod bounds;
mod parse;
pub mod source;
#[cfg(feature = "ssm")]
pub mod ssm;
mod units;

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::policy::{AddrFilter, Policy};

/// A fully checked configuration, ready to serve.
#[derive(Debug, Clone)]
pub struct Config {
    pub policy: Policy,
    pub listeners: Listeners,
    pub upstream: AddrFilter,
    /// `resolver.hosts`, keyed by the normalised host name.
    pub resolver_hosts: HashMap<String, Vec<IpAddr>>,
    pub timeouts: Timeouts,
    pub reload: ReloadSettings,
    pub limits: Limits,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listeners {
    pub explicit: Option<SocketAddr>,
    pub transparent_tls: Option<SocketAddr>,
    pub transparent_http: Option<SocketAddr>,
    pub admin: Option<SocketAddr>,
    /// The upstream port for transparent connections whose original destination is unknown
    /// (not redirected by iptables/nftables): `{ listen: ..., default_port: ... }`.
    pub transparent_tls_port: u16,
    pub transparent_http_port: u16,
}

impl Default for Listeners {
    fn default() -> Self {
        Listeners {
            explicit: None,
            transparent_tls: None,
            transparent_http: None,
            admin: None,
            transparent_tls_port: 443,
            transparent_http_port: 80,
        }
    }
}

impl Listeners {
    /// Every proxy address, for the self-loop check.
    pub fn all(&self) -> Vec<SocketAddr> {
        [
            self.explicit,
            self.transparent_tls,
            self.transparent_http,
            self.admin,
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// How long a client has to send its request head or ClientHello.
    pub client_handshake: Duration,
    /// Total budget for connecting upstream, across every address tried.
    pub upstream_connect: Duration,
    /// A tunnel, or a forwarded request, with no bytes either way for this long is closed.
    /// (Between keep-alive requests the client has `client_handshake` to start the next.)
    pub idle: Duration,
    /// How long open connections may keep going after SIGTERM.
    pub drain: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            client_handshake: Duration::from_secs(10),
            upstream_connect: Duration::from_secs(5),
            idle: Duration::from_secs(300),
            drain: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReloadSettings {
    pub poll_interval: Duration,
}

impl Default for ReloadSettings {
    fn default() -> Self {
        ReloadSettings {
            poll_interval: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_connections: usize,
    pub max_header_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 10_000,
            max_header_bytes: 16_384,
        }
    }
}

/// One thing wrong with a config, at a field path such as `allow[2].hosts[0]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every problem found in a config, not just the first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

impl Config {
    /// Parses and checks YAML text. Either a whole valid config or every problem in it.
    /// Text over the limits in [`bounds`] (size, nesting, tokens, alias expansion) is refused
    /// with that one problem, in milliseconds, before it is parsed.
    pub fn from_yaml(text: &str) -> Result<Config, Problems> {
        parse::parse(text)
    }
}

#[cfg(test)]
mod tests;
