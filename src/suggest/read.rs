//! Decision lines → the requests that policy denied, deduplicated, and a count of every
//! other line so that nothing is dropped silently. Pure.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use serde_json::Value;

use crate::policy::host::{parse_host, Host};

/// Denial reasons a rule change can answer: no rule named the host, or one did but not for
/// this port or client.
const POLICY: &[&str] = &["no_rule", "port", "client"];

/// One denied request: what was asked, by whom. Ordered for a stable output.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Asked {
    /// The normalised host as text (a name, or an IP in canonical form).
    pub host: String,
    pub port: u16,
    /// `None` when the line had no readable `client`.
    pub client: Option<IpAddr>,
}

/// What the lines said about one [`Asked`].
#[derive(Debug, Clone)]
pub(super) struct Said {
    pub host: Host,
    pub lines: usize,
    /// (reason, rule) as logged, with their line counts: what the proxy thought at the time.
    pub logged: BTreeMap<(String, Option<String>), usize>,
    pub principals: BTreeSet<String>,
}

/// Everything read from the lines.
#[derive(Debug, Default)]
pub(super) struct Observed {
    pub denied: BTreeMap<Asked, Said>,
    /// Lines read in all (non-empty).
    pub lines: usize,
    pub not_json: usize,
    /// `event` other than `decision` (close lines carry byte counts, not verdicts).
    pub not_decision: usize,
    pub allowed: usize,
    /// Policy denials without a usable host or port.
    pub incomplete: usize,
    /// `sni_mismatch` denials: the SNI named another host than the one asked for.
    pub sni_mismatch: usize,
    /// Denials for reasons a rule change can't or mustn't answer, by reason.
    pub ignored: BTreeMap<String, usize>,
}

impl Observed {
    pub fn policy_denials(&self) -> usize {
        self.denied.values().map(|s| s.lines).sum()
    }
}

impl Observed {
    /// Takes in one line; blank lines are not counted.
    pub fn add(&mut self, line: &str) {
        if line.trim().is_empty() {
            return;
        }
        self.lines += 1;
        let v = match serde_json::from_str::<Value>(line) {
            Ok(v) if v.is_object() => v,
            _ => {
                self.not_json += 1;
                return;
            }
        };
        if v["event"] != "decision" {
            self.not_decision += 1;
        } else if v["decision"] != "deny" {
            self.allowed += 1;
        } else {
            match v["reason"].as_str() {
                Some(reason) if POLICY.contains(&reason) => denial(self, &v, reason),
                Some("sni_mismatch") => self.sni_mismatch += 1,
                // Only the proxy's own reason words are repeated in the output: anything else
                // (a newline and YAML, from a log mixed with other sources) is counted unnamed.
                Some(word) if is_word(word) => {
                    *self.ignored.entry(word.to_owned()).or_default() += 1
                }
                Some(_) => {
                    *self
                        .ignored
                        .entry("(not a reason word)".into())
                        .or_default() += 1
                }
                None => *self.ignored.entry("(no reason)".into()).or_default() += 1,
            }
        }
    }
}

fn denial(seen: &mut Observed, v: &Value, reason: &str) {
    let host = v["host"].as_str().and_then(|h| parse_host(h).ok());
    let port = v["port"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0);
    let (Some(host), Some(port)) = (host, port) else {
        seen.incomplete += 1;
        return;
    };
    let host = match host {
        Host::Ip(ip) => Host::Ip(ip.to_canonical()),
        name => name,
    };
    let client = v["client"].as_str().and_then(|c| {
        c.parse::<SocketAddr>()
            .map(|a| a.ip())
            .or_else(|_| c.parse::<IpAddr>())
            .ok()
            .map(|ip| ip.to_canonical())
    });
    let asked = Asked {
        host: host.to_string(),
        port,
        client,
    };
    let said = seen.denied.entry(asked).or_insert_with(|| Said {
        host,
        lines: 0,
        logged: BTreeMap::new(),
        principals: BTreeSet::new(),
    });
    said.lines += 1;
    // Text from a line reaches the output only if it is a plain word: a rule name or
    // principal from a forged line can't carry a newline and YAML of its own choosing.
    let rule = v["rule"].as_str().filter(|r| is_word(r)).map(str::to_owned);
    *said.logged.entry((reason.to_owned(), rule)).or_default() += 1;
    if let Some(principal) = v["principal"].as_str().filter(|p| is_word(p)) {
        said.principals.insert(principal.to_owned());
    }
}

/// A reason word, rule name or principal as the proxy writes them: letters, digits, `._-`.
fn is_word(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 128
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}
