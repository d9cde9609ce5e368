//! The configuration: where it comes from (`source`), how its text becomes a checked
//! [`Config`] (`parse`), and how a running proxy swaps in a new one (`reload`).
//! `run`, `check`, `validate` and reload all go through [`Config::from_yaml`].

pub mod bounds;
mod hints;
pub mod locate;
pub mod parse;
mod resolver;
mod rules;
pub mod source;
#[cfg(feature = "ssm")]
pub mod ssm;
mod units;
mod warn;
pub mod worker;

pub use resolver::{DnsCache, ResolverSettings};
pub use rules::MAX_DENY_HELP;
pub use units::parse_size;

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use crate::policy::{AddrFilter, Policy, Principals};

/// A fully checked configuration, ready to serve.
#[derive(Debug, Clone)]
pub struct Config {
    pub policy: Policy,
    pub listeners: Listeners,
    pub upstream: AddrFilter,
    /// The whole `resolver:` section: `hosts` (keyed by the normalised host name),
    /// `nameservers`, `timeout`, `attempts`, `cache`.
    pub resolver: ResolverSettings,
    pub timeouts: Timeouts,
    pub reload: ReloadSettings,
    pub limits: Limits,
    /// `deny_help:` one line (no control characters, at most [`MAX_DENY_HELP`] characters)
    /// added to every denial a client sees; `None` when unset or empty.
    pub deny_help: Option<String>,
    /// `principals:` workload name -> accepted token digests. Verify credentials with
    /// [`Principals::verify`], then pass the name in [`crate::policy::Request::principal`].
    pub principals: Principals,
    /// `require_principal:` explicit-listener requests without valid credentials get 407.
    /// Never true without principals (that config is refused).
    pub require_principal: bool,
    /// Things that are valid but probably not meant (report mode already over, no rules, a
    /// rule that can never match), with paths and positions like problems. Print them; they
    /// never stop a config from loading.
    pub warnings: Vec<Problem>,
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
    /// Where in the text: 1-based (line, column) of the node the path names (or of the
    /// mapping that lacks it), when the text could be read and the lookup budget allowed.
    pub at: Option<(usize, usize)>,
}

impl Problem {
    pub fn new(path: &str, message: impl Into<String>) -> Problem {
        Problem {
            path: path.to_owned(),
            message: message.into(),
            at: None,
        }
    }

    /// `FILE:LINE:COL: path: message` (or `FILE: path: message` without a position), the
    /// form editors and CI annotators jump to.
    pub fn display_in<'a>(&'a self, file: &'a str) -> impl fmt::Display + 'a {
        InFile(self, file)
    }
}

struct InFile<'a>(&'a Problem, &'a str);

impl fmt::Display for InFile<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.at {
            Some((line, column)) => write!(f, "{}:{line}:{column}: {}", self.1, self.0),
            None => write!(f, "{}: {}", self.1, self.0),
        }
    }
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

impl Problems {
    /// Every problem as `FILE:LINE:COL: path: message`, one a line (see [`Problem::display_in`]).
    pub fn display_in<'a>(&'a self, file: &'a str) -> impl fmt::Display + 'a {
        AllInFile(&self.0, file)
    }
}

struct AllInFile<'a>(&'a [Problem], &'a str);

impl fmt::Display for AllInFile<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}", problem.display_in(self.1))?;
        }
        Ok(())
    }
}

impl Config {
    /// Parses and checks YAML text. Either a whole valid config or every problem in it.
    /// Text over the limits in [`bounds`] (size, nesting, tokens, alias expansion) is refused
    /// with that one problem, in milliseconds, before it is parsed.
    /// Warnings that depend on the date (`report_until` already past) use the system clock.
    pub fn from_yaml(text: &str) -> Result<Config, Problems> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        parse::parse(text, now)
    }

    /// [`Config::from_yaml`] as of `now` (Unix seconds), for tests and reproducible checks.
    pub fn from_yaml_at(text: &str, now: u64) -> Result<Config, Problems> {
        parse::parse(text, now)
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_rules;
