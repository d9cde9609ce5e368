//! YAML text → checked [`Config`]. The text is first read as a generic YAML tree (within the
//! limits of [`super::bounds`]), then walked field by field so that every problem is reported
//! with its path, not just the first one serde would stop at. Pure.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;
use serde_yaml_ng::{Mapping, Value};

use super::units::{parse_duration, parse_report_until};
use super::{bounds, hints, locate};
use super::{Config, Limits, Listeners, Problem, Problems, ReloadSettings, Timeouts};
use crate::policy::{AddrFilter, HostPattern, Mode, Policy, Reporting};

/// Top-level keys. These lists are the parser's whole vocabulary: `tests/config_docs.rs`
/// checks that each key is in `docs/config.md` and `docs/config.schema.json`.
pub const TOP_KEYS: &[&str] = &[
    "mode",
    "report_until",
    "report_clients",
    "deny_help",
    "principals",
    "require_principal",
    "listeners",
    "allow",
    "upstream",
    "resolver",
    "timeouts",
    "reload",
    "limits",
];
pub const LISTENER_KEYS: &[&str] = &["explicit", "transparent_tls", "transparent_http", "admin"];
/// The long form of a transparent listener: `{ listen, default_port }`.
pub const TRANSPARENT_KEYS: &[&str] = &["listen", "default_port"];
pub const RULE_KEYS: &[&str] = &[
    "name",
    "hosts",
    "ports",
    "clients",
    "principals",
    "cidrs",
    "tls",
    "mode",
    "tenant_wildcard",
    "max_bytes_up",
    "upload_budget",
];
pub const UPLOAD_BUDGET_KEYS: &[&str] = &["bytes", "per"];
pub const UPSTREAM_KEYS: &[&str] = &["deny_cidrs", "allow_cidrs"];
pub const RESOLVER_KEYS: &[&str] = &["hosts", "nameservers", "timeout", "attempts", "cache"];
pub const RESOLVER_CACHE_KEYS: &[&str] = &["size", "max_ttl", "negative_ttl"];
pub const TIMEOUT_KEYS: &[&str] = &["client_handshake", "upstream_connect", "idle", "drain"];
pub const RELOAD_KEYS: &[&str] = &["poll_interval"];
pub const LIMIT_KEYS: &[&str] = &["max_connections", "max_header_bytes"];

/// Every mapping the parser reads with a fixed set of keys, by where it sits (`[]` for "each
/// item of the list"): for tests and docs that must cover every key.
pub const KEY_SETS: &[(&str, &[&str])] = &[
    ("", TOP_KEYS),
    ("listeners", LISTENER_KEYS),
    ("listeners.transparent_tls", TRANSPARENT_KEYS),
    ("listeners.transparent_http", TRANSPARENT_KEYS),
    ("allow[]", RULE_KEYS),
    ("allow[].upload_budget", UPLOAD_BUDGET_KEYS),
    ("upstream", UPSTREAM_KEYS),
    ("resolver", RESOLVER_KEYS),
    ("resolver.cache", RESOLVER_CACHE_KEYS),
    ("timeouts", TIMEOUT_KEYS),
    ("reload", RELOAD_KEYS),
    ("limits", LIMIT_KEYS),
];

/// `text` as a checked config, or every problem in it; `now` (Unix seconds) only decides
/// warnings such as a `report_until` already past. Problems and warnings carry the
/// line:column of the node they are about.
pub(super) fn parse(text: &str, now: u64) -> Result<Config, Problems> {
    let root = bounds::read_yaml(text).map_err(|problem| Problems(vec![problem]))?;
    let mut walk = Walk {
        now,
        ..Walk::default()
    };
    let mut config = walk.config(&root);
    if walk.problems.is_empty() {
        config.warnings = walk.warnings(&config);
        locate::locate_all(text, &mut config.warnings);
        Ok(config)
    } else {
        locate::locate_all(text, &mut walk.problems);
        Err(Problems(walk.problems))
    }
}

#[derive(Default)]
pub(super) struct Walk {
    pub(super) problems: Vec<Problem>,
    pub(super) now: u64,
}

impl Walk {
    pub(super) fn problem(&mut self, path: &str, message: impl Into<String>) {
        self.problems.push(Problem::new(path, message));
    }

    /// The mapping at `path` with unknown keys reported; `None` (and a problem) if it isn't one.
    pub(super) fn mapping<'v>(
        &mut self,
        value: &'v Value,
        path: &str,
        known: &[&str],
    ) -> Option<&'v Mapping> {
        let Value::Mapping(map) = value else {
            if !value.is_null() {
                self.problem(path, format!("expected a mapping, found {}", kind(value)));
            }
            return None;
        };
        for key in map.keys() {
            match key.as_str() {
                Some(k) if known.contains(&k) => {}
                Some(k) => {
                    let guess = hints::nearest(k, known)
                        .map(|g| format!("did you mean `{g}`? "))
                        .unwrap_or_default();
                    self.problem(
                        &join(path, k),
                        format!(
                            "unknown field; {guess}expected one of: {}",
                            known.join(", ")
                        ),
                    )
                }
                None => self.problem(
                    path,
                    format!("field names must be strings, found {}", kind(key)),
                ),
            }
        }
        Some(map)
    }

    fn config(&mut self, root: &Value) -> Config {
        let empty = Mapping::new();
        let top = match root {
            Value::Null => {
                self.problem("", "the config is empty");
                &empty
            }
            _ => self.mapping(root, "", TOP_KEYS).unwrap_or(&empty),
        };
        let mode = self.mode(top.get("mode"), "mode").unwrap_or_default();
        let reporting = Reporting {
            clients: self.list(top.get("report_clients"), "report_clients", Walk::cidr),
            until: top.get("report_until").and_then(|v| self.report_until(v)),
        };
        let deny_help = top.get("deny_help").and_then(|v| self.deny_help(v));
        let principals = self.principals(top.get("principals"));
        let require_principal = match top.get("require_principal") {
            None => false,
            Some(v) => self.boolean(v, "require_principal").unwrap_or(false),
        };
        if require_principal && principals.is_empty() && !self.has_problem_under("principals") {
            self.problem(
                "require_principal",
                "no principals are defined: define them under principals:, or drop require_principal",
            );
        }
        let listeners = self.listeners(top.get("listeners"));
        let rules = self.rules(top.get("allow"), &principals);
        let upstream = self.upstream(top.get("upstream"));
        let resolver = self.resolver(top.get("resolver"));
        let timeouts = self.timeouts(top.get("timeouts"));
        let reload = self.reload(top.get("reload"));
        let limits = self.limits(top.get("limits"));
        Config {
            policy: Policy::new(mode, rules).with_reporting(reporting),
            upstream,
            listeners,
            resolver,
            timeouts,
            reload,
            limits,
            deny_help,
            principals,
            require_principal,
            warnings: Vec::new(),
        }
    }

    pub(super) fn mode(&mut self, value: Option<&Value>, path: &str) -> Option<Mode> {
        match value?.as_str() {
            Some("enforce") => Some(Mode::Enforce),
            Some("report") => Some(Mode::Report),
            _ => {
                self.problem(path, "expected enforce or report");
                None
            }
        }
    }

    /// `2027-01-31` (report through that day, UTC) or `2027-01-31T12:00:00Z`.
    fn report_until(&mut self, value: &Value) -> Option<u64> {
        let parsed = value.as_str().and_then(parse_report_until);
        if parsed.is_none() {
            self.problem(
                "report_until",
                format!("expected a date like 2027-01-31, found {}", show(value)),
            );
        }
        parsed
    }

    fn listeners(&mut self, value: Option<&Value>) -> Listeners {
        let mut listeners = Listeners::default();
        let Some(map) = value.and_then(|v| self.mapping(v, "listeners", LISTENER_KEYS)) else {
            self.problem(
                "listeners",
                "missing: at least listeners.explicit or a transparent listener is needed",
            );
            return listeners;
        };
        let get = |walk: &mut Walk, key: &str| {
            let path = join("listeners", key);
            map.get(key).and_then(|v| walk.socket_addr(v, &path))
        };
        listeners.explicit = get(self, "explicit");
        listeners.admin = get(self, "admin");
        (listeners.transparent_tls, listeners.transparent_tls_port) =
            self.transparent(map.get("transparent_tls"), "transparent_tls", 443);
        (listeners.transparent_http, listeners.transparent_http_port) =
            self.transparent(map.get("transparent_http"), "transparent_http", 80);
        let proxies = [
            listeners.explicit,
            listeners.transparent_tls,
            listeners.transparent_http,
        ];
        if proxies.iter().all(Option::is_none) && !self.has_problem_under("listeners") {
            self.problem(
                "listeners",
                "no proxy listener: set explicit, transparent_tls or transparent_http",
            );
        }
        let all = listeners.all();
        for (i, a) in all.iter().enumerate() {
            // Port 0 asks the kernel for a free port: several listeners may say so.
            if a.port() != 0 && all[..i].contains(a) {
                self.problem("listeners", format!("{a} is used by two listeners"));
            }
        }
        listeners
    }

    /// A transparent listener: an address, or `{ listen: ADDR, default_port: PORT }` where
    /// the port is used when the original destination can't be read from the socket.
    fn transparent(
        &mut self,
        value: Option<&Value>,
        key: &str,
        default_port: u16,
    ) -> (Option<SocketAddr>, u16) {
        let path = join("listeners", key);
        match value {
            None | Some(Value::Null) => (None, default_port),
            Some(Value::Mapping(_)) => {
                let Some(map) =
                    self.mapping(value.unwrap_or(&Value::Null), &path, TRANSPARENT_KEYS)
                else {
                    return (None, default_port);
                };
                let addr = match map.get("listen") {
                    Some(v) => self.socket_addr(v, &join(&path, "listen")),
                    None => {
                        self.problem(&join(&path, "listen"), "missing: the address to listen on");
                        None
                    }
                };
                let port = map
                    .get("default_port")
                    .and_then(|v| self.port(v, &join(&path, "default_port")))
                    .unwrap_or(default_port);
                (addr, port)
            }
            Some(v) => (self.socket_addr(v, &path), default_port),
        }
    }

    pub(super) fn has_problem_under(&self, prefix: &str) -> bool {
        self.problems.iter().any(|p| p.path.starts_with(prefix))
    }

    fn socket_addr(&mut self, value: &Value, path: &str) -> Option<SocketAddr> {
        let Some(text) = value.as_str() else {
            self.problem(path, "expected an address like 0.0.0.0:3128");
            return None;
        };
        // Port 0 lets the kernel pick a free port; the proxy says on stderr which it bound
        // (`listening: explicit on 127.0.0.1:41234`). Tests rely on it to never collide.
        match text.parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                self.problem(
                    path,
                    format!("'{text}' is not an address like 0.0.0.0:3128 or [::]:3128"),
                );
                None
            }
        }
    }

    pub(super) fn sequence<'v>(&mut self, value: &'v Value, path: &str) -> Option<&'v Vec<Value>> {
        match value {
            Value::Sequence(items) => Some(items),
            Value::Null => None,
            other => {
                self.problem(path, format!("expected a list, found {}", kind(other)));
                None
            }
        }
    }

    /// Each item of the list at `path` through `item`, which reports its own problems.
    pub(super) fn list<T>(
        &mut self,
        value: Option<&Value>,
        path: &str,
        mut item: impl FnMut(&mut Walk, &Value, &str) -> Option<T>,
    ) -> Vec<T> {
        let Some(items) = value.and_then(|v| self.sequence(v, path)) else {
            return Vec::new();
        };
        items
            .iter()
            .enumerate()
            .filter_map(|(i, v)| item(self, v, &format!("{path}[{i}]")))
            .collect()
    }

    pub(super) fn pattern(&mut self, value: &Value, path: &str) -> Option<HostPattern> {
        let Some(text) = value.as_str() else {
            self.problem(
                path,
                format!("expected a host name or pattern, found {}", kind(value)),
            );
            return None;
        };
        HostPattern::parse(text)
            .map_err(|e| {
                let hint = hints::host(text);
                self.problem(path, format!("bad host pattern '{text}': {e}{hint}"))
            })
            .ok()
    }

    pub(super) fn cidr(&mut self, value: &Value, path: &str) -> Option<IpNet> {
        let Some(text) = value.as_str() else {
            self.problem(
                path,
                format!("expected a CIDR like 10.0.0.0/8, found {}", kind(value)),
            );
            return None;
        };
        // A bare address is a one-address network.
        let parsed = text
            .parse::<IpNet>()
            .or_else(|_| text.parse::<IpAddr>().map(IpNet::from));
        match parsed {
            Ok(net) if net.trunc() != net => {
                self.problem(
                    path,
                    format!("'{text}' has host bits set; did you mean {}?", net.trunc()),
                );
                None
            }
            Ok(net) => Some(match net.addr().to_canonical() {
                // ::ffff:a.b.c.d/120 would never match: every check sees mapped addresses as IPv4.
                IpAddr::V4(v4) if net.addr().is_ipv6() => {
                    IpNet::new(IpAddr::V4(v4), net.prefix_len().saturating_sub(96)).unwrap_or(net)
                }
                _ => net,
            }),
            Err(_) => {
                self.problem(
                    path,
                    format!("'{text}' is not a CIDR like 10.0.0.0/8 or 2001:db8::/32"),
                );
                None
            }
        }
    }

    pub(super) fn port(&mut self, value: &Value, path: &str) -> Option<u16> {
        match value.as_u64() {
            Some(0) => self.problem(path, "port 0 is not allowed"),
            Some(p) if p <= 65535 => return Some(p as u16),
            None if value.is_string() => {
                let text = value.as_str().unwrap_or_default();
                let fix = match text.trim().parse::<u16>() {
                    Ok(n) => format!("write {n}, not '{text}'"),
                    Err(_) => format!("expected 1-65535, found '{text}'"),
                };
                self.problem(path, format!("ports are numbers: {fix}"))
            }
            _ => self.problem(
                path,
                format!("expected a port 1-65535, found {}", show(value)),
            ),
        }
        None
    }

    fn upstream(&mut self, value: Option<&Value>) -> AddrFilter {
        let Some(map) = value.and_then(|v| self.mapping(v, "upstream", UPSTREAM_KEYS)) else {
            return AddrFilter::default();
        };
        let deny = self.list(map.get("deny_cidrs"), "upstream.deny_cidrs", Walk::cidr);
        let allow = self.list(map.get("allow_cidrs"), "upstream.allow_cidrs", Walk::cidr);
        AddrFilter::new(deny, allow)
    }

    pub(super) fn ip(&mut self, value: &Value, path: &str) -> Option<IpAddr> {
        match value.as_str().map(str::parse::<IpAddr>) {
            Some(Ok(ip)) => Some(ip),
            _ => {
                self.problem(
                    path,
                    format!("expected an IP address, found {}", show(value)),
                );
                None
            }
        }
    }

    fn timeouts(&mut self, value: Option<&Value>) -> Timeouts {
        let mut t = Timeouts::default();
        let Some(map) = value.and_then(|v| self.mapping(v, "timeouts", TIMEOUT_KEYS)) else {
            return t;
        };
        for (key, slot) in [
            ("client_handshake", &mut t.client_handshake),
            ("upstream_connect", &mut t.upstream_connect),
            ("idle", &mut t.idle),
            ("drain", &mut t.drain),
        ] {
            if let Some(v) = map.get(key) {
                if let Some(d) = self.duration(v, &join("timeouts", key)) {
                    *slot = d;
                }
            }
        }
        t
    }

    fn reload(&mut self, value: Option<&Value>) -> ReloadSettings {
        let mut r = ReloadSettings::default();
        let Some(map) = value.and_then(|v| self.mapping(v, "reload", RELOAD_KEYS)) else {
            return r;
        };
        if let Some(d) = map
            .get("poll_interval")
            .and_then(|v| self.duration(v, "reload.poll_interval"))
        {
            r.poll_interval = d;
        }
        r
    }

    pub(super) fn duration(&mut self, value: &Value, path: &str) -> Option<Duration> {
        let parsed = match value {
            Value::Number(n) => n.as_u64().map(Duration::from_secs),
            Value::String(s) => parse_duration(s),
            _ => None,
        };
        match parsed {
            Some(d) if d.is_zero() => self.problem(path, "must be greater than zero"),
            Some(d) => return Some(d),
            None => self.problem(
                path,
                format!(
                    "expected a duration like 500ms, 10s, 5m or 1h, found {}",
                    show(value)
                ),
            ),
        }
        None
    }

    fn limits(&mut self, value: Option<&Value>) -> Limits {
        let mut l = Limits::default();
        let Some(map) = value.and_then(|v| self.mapping(v, "limits", LIMIT_KEYS)) else {
            return l;
        };
        if let Some(v) = map.get("max_connections") {
            match v.as_u64() {
                Some(n) if (1..=1_000_000).contains(&n) => l.max_connections = n as usize,
                _ => self.problem(
                    "limits.max_connections",
                    format!("expected 1-1000000, found {}", show(v)),
                ),
            }
        }
        if let Some(v) = map.get("max_header_bytes") {
            match v.as_u64() {
                // hyper's read buffer cannot be smaller than 8 KiB.
                Some(n) if (8192..=1_048_576).contains(&n) => l.max_header_bytes = n as usize,
                _ => self.problem(
                    "limits.max_header_bytes",
                    format!("expected 8192-1048576, found {}", show(v)),
                ),
            }
        }
        l
    }
}

pub(super) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

pub(super) fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

pub(super) fn show(value: &Value) -> String {
    match value {
        Value::String(s) => format!("'{s}'"),
        Value::Number(n) => n.to_string(),
        other => kind(other).to_owned(),
    }
}
