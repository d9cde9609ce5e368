//! The `allow:` rules and the workloads they may name (`principals:`, `deny_help:`): the part
//! of [`super::parse`] that says who may reach what. Pure.

use std::collections::HashSet;

use serde_yaml_ng::Value;

use super::parse::{join, kind, show, Walk, RULE_KEYS, UPLOAD_BUDGET_KEYS};
use super::units::parse_size;
use crate::policy::principal::{parse_digest, valid_name, TokenDigest};
use crate::policy::suffix::open_suffix;
use crate::policy::{HostPattern, Principals, Rule, TlsRequirement, UploadBudget};

/// The longest `deny_help:` accepted: it goes into a status line and a header of every denial.
pub const MAX_DENY_HELP: usize = 300;

const DIGEST_HINT: &str = "expected sha256:<64 hex digits>: store the SHA-256 of the token, \
     never the token itself — e.g. `printf %s \"$TOKEN\" | sha256sum`";

impl Walk {
    pub(super) fn rules(&mut self, value: Option<&Value>, principals: &Principals) -> Vec<Rule> {
        let Some(value) = value else {
            return Vec::new();
        };
        let Some(items) = self.sequence(value, "allow") else {
            return Vec::new();
        };
        let mut names = HashSet::new();
        let mut rules = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let path = format!("allow[{i}]");
            let Some(map) = self.mapping(item, &path, RULE_KEYS) else {
                if item.is_null() {
                    self.problem(&path, "empty rule");
                }
                continue;
            };
            let name = match map.get("name").and_then(Value::as_str) {
                Some(name) if !name.trim().is_empty() => {
                    if !names.insert(name.to_owned()) {
                        self.problem(
                            &join(&path, "name"),
                            format!("duplicate rule name '{name}'"),
                        );
                    }
                    name.to_owned()
                }
                _ => {
                    self.problem(
                        &join(&path, "name"),
                        "missing: every rule needs a non-empty name",
                    );
                    String::new()
                }
            };
            let tenant_wildcard = match map.get("tenant_wildcard") {
                None => false,
                Some(v) => self
                    .boolean(v, &join(&path, "tenant_wildcard"))
                    .unwrap_or(false),
            };
            let hosts = self.list(map.get("hosts"), &join(&path, "hosts"), |walk, v, p| {
                walk.host_pattern(v, p, tenant_wildcard)
            });
            let cidrs = self.list(map.get("cidrs"), &join(&path, "cidrs"), Walk::cidr);
            if hosts.is_empty() && cidrs.is_empty() && !self.has_problem_under(&path) {
                self.problem(&path, "the rule allows nothing: give it hosts or cidrs");
            }
            let ports = match map.get("ports") {
                None => vec![443],
                Some(v) => {
                    let ports = self.list(Some(v), &join(&path, "ports"), Walk::port);
                    if ports.is_empty() && !self.has_problem_under(&join(&path, "ports")) {
                        self.problem(
                            &join(&path, "ports"),
                            "empty: omit it for the default [443]",
                        );
                    }
                    ports
                }
            };
            let clients = self.list(map.get("clients"), &join(&path, "clients"), Walk::cidr);
            let rule_principals = self.list(
                map.get("principals"),
                &join(&path, "principals"),
                |walk, v, p| walk.principal_ref(v, p, principals),
            );
            let tls = match map.get("tls").map(|v| v.as_str()) {
                None => TlsRequirement::RequireSni,
                Some(Some("require_sni")) => TlsRequirement::RequireSni,
                Some(Some("any")) => TlsRequirement::Any,
                Some(_) => {
                    self.problem(&join(&path, "tls"), "expected require_sni or any");
                    TlsRequirement::RequireSni
                }
            };
            if !cidrs.is_empty() && tls == TlsRequirement::RequireSni {
                self.problem(
                    &join(&path, "tls"),
                    "a rule with cidrs needs `tls: any`: clients send no SNI to an IP-literal destination",
                );
            }
            let mode = self.mode(map.get("mode"), &join(&path, "mode"));
            let max_bytes_up = map
                .get("max_bytes_up")
                .and_then(|v| self.size(v, &join(&path, "max_bytes_up")));
            let upload_budget = map
                .get("upload_budget")
                .and_then(|v| self.upload_budget(v, &join(&path, "upload_budget")));
            rules.push(Rule {
                name,
                hosts,
                ports,
                clients,
                cidrs,
                tls,
                mode,
                principals: rule_principals,
                max_bytes_up,
                upload_budget,
                tenant_wildcard,
            });
        }
        rules
    }

    /// A `hosts:` entry: a valid pattern that, unless the rule says `tenant_wildcard: true`,
    /// matches no name under a public suffix. One check for "too wide": the structural floor
    /// (`*.com`, `*-cdn.com`: fewer than two literal labels) is [`HostPattern::parse`]'s and
    /// no flag lifts it; the Public Suffix List check is here because the flag can.
    fn host_pattern(&mut self, value: &Value, path: &str, tenant: bool) -> Option<HostPattern> {
        let pattern = self.pattern(value, path)?;
        if tenant {
            return Some(pattern);
        }
        let Some(open) = open_suffix(&pattern) else {
            return Some(pattern);
        };
        let suffix = &open.suffix;
        let more = match open.more {
            0 => String::new(),
            n => format!(" (and {n} more)"),
        };
        let under = suffix.strip_prefix("*.").unwrap_or(suffix);
        let example = if under.split('.').any(|l| l.starts_with("s3")) {
            format!("my-bucket.{under}")
        } else {
            format!("my-name.{under}")
        };
        self.problem(
            path,
            format!(
                "`{pattern}` matches names under the public suffix `{suffix}`{more}, which anyone \
                 can register: list the exact host instead (e.g. `{example}`), or set \
                 `tenant_wildcard: true` on the rule and say why in a comment"
            ),
        );
        None
    }

    /// A rule's `principals:` entry: the name of a top-level principal.
    fn principal_ref(&mut self, value: &Value, path: &str, known: &Principals) -> Option<String> {
        let Some(name) = value.as_str() else {
            self.problem(
                path,
                format!("expected a principal name, found {}", kind(value)),
            );
            return None;
        };
        if !known.contains(name) {
            self.problem(
                path,
                format!("unknown principal '{name}'; define it under principals:"),
            );
            return None;
        }
        Some(name.to_owned())
    }

    /// `principals: { name: "sha256:..." }` or `{ name: ["sha256:...", "sha256:..."] }`.
    pub(super) fn principals(&mut self, value: Option<&Value>) -> Principals {
        let mut principals = Principals::default();
        let entries = match value {
            None | Some(Value::Null) => return principals,
            Some(Value::Mapping(entries)) => entries,
            Some(other) => {
                self.problem(
                    "principals",
                    format!(
                        "expected a mapping of workload name to sha256:<hex>, found {}",
                        kind(other)
                    ),
                );
                return principals;
            }
        };
        for (key, hashes) in entries {
            let Some(name) = key.as_str() else {
                self.problem(
                    "principals",
                    format!("principal names must be strings, found {}", show(key)),
                );
                continue;
            };
            let path = join("principals", name);
            if !valid_name(name) {
                self.problem(
                    &path,
                    "a principal name is 1-64 of A-Z a-z 0-9 . _ - (it is the user name in \
                     Proxy-Authorization, so never ':')",
                );
                continue;
            }
            let digests: Vec<TokenDigest> = match hashes {
                Value::Sequence(_) => self.list(Some(hashes), &path, Walk::digest),
                _ => self.digest(hashes, &path).into_iter().collect(),
            };
            if digests.is_empty() && !self.has_problem_under(&path) {
                self.problem(&path, format!("needs at least one hash; {DIGEST_HINT}"));
            }
            principals.insert(name, digests);
        }
        principals
    }

    fn digest(&mut self, value: &Value, path: &str) -> Option<TokenDigest> {
        let parsed = value.as_str().and_then(parse_digest);
        if parsed.is_none() {
            // Never echo the value: it may be the token itself, pasted by mistake.
            self.problem(path, DIGEST_HINT);
        }
        parsed
    }

    /// `deny_help:` one line of plain text, or `None` when empty.
    pub(super) fn deny_help(&mut self, value: &Value) -> Option<String> {
        let Some(text) = value.as_str() else {
            if !value.is_null() {
                self.problem(
                    "deny_help",
                    format!("expected one line of text, found {}", kind(value)),
                );
            }
            return None;
        };
        // Line and paragraph separators end a line for some readers too.
        if text
            .chars()
            .any(|c| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}'))
        {
            // It lands in a status line and a header: a newline there would split the reply.
            self.problem(
                "deny_help",
                "must be one line: no newlines, tabs or other control characters",
            );
            return None;
        }
        if text.chars().count() > MAX_DENY_HELP {
            self.problem(
                "deny_help",
                format!("longer than {MAX_DENY_HELP} characters: link to the details instead"),
            );
            return None;
        }
        let text = text.trim();
        (!text.is_empty()).then(|| text.to_owned())
    }

    pub(super) fn boolean(&mut self, value: &Value, path: &str) -> Option<bool> {
        let parsed = value.as_bool();
        if parsed.is_none() {
            self.problem(
                path,
                format!("expected true or false, found {}", show(value)),
            );
        }
        parsed
    }

    /// A byte count: `4194304`, `4MiB`, `4 MB`. Zero is refused: it would cut every upload.
    fn size(&mut self, value: &Value, path: &str) -> Option<u64> {
        let parsed = match value {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => parse_size(s),
            _ => None,
        };
        match parsed {
            Some(0) => self.problem(path, "must be greater than zero: omit the key for no cap"),
            Some(n) => return Some(n),
            None => self.problem(
                path,
                format!(
                    "expected a size like 4MiB, 500KB or a number of bytes, found {}",
                    show(value)
                ),
            ),
        }
        None
    }

    fn upload_budget(&mut self, value: &Value, path: &str) -> Option<UploadBudget> {
        let map = self.mapping(value, path, UPLOAD_BUDGET_KEYS)?;
        let field = |walk: &mut Walk, key: &str| {
            let at = join(path, key);
            if map.get(key).is_none() {
                walk.problem(
                    &at,
                    "missing: upload_budget needs bytes and per, e.g. { bytes: 64MiB, per: 1h }",
                );
            }
            (map.get(key), at)
        };
        let (bytes, bytes_at) = field(self, "bytes");
        let (per, per_at) = field(self, "per");
        let bytes = bytes.and_then(|v| self.size(v, &bytes_at));
        let per = per.and_then(|v| self.duration(v, &per_at));
        Some(UploadBudget {
            bytes: bytes?,
            per: per?,
        })
    }
}
