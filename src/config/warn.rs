//! Warnings: a config that is valid but probably not what was meant (report mode that has
//! already ended, no rules, a rule that can never decide anything). They never stop a config
//! from loading; `run`, reload and `validate` print them. Pure (the time is passed in).

use std::collections::HashMap;

use ipnet::IpNet;

use super::parse::Walk;
use super::{Config, Problem};
use crate::policy::{HostPattern, PatternKind, Rule};

impl Walk {
    pub(super) fn warnings(&self, config: &Config) -> Vec<Problem> {
        let mut out = Vec::new();
        if let Some(until) = config.policy.report_until() {
            if until <= self.now {
                out.push(Problem::new(
                    "report_until",
                    "already past: report mode has ended and every rule is enforced; \
                     remove report_until or move it forward",
                ));
            }
        }
        let rules = config.policy.rules();
        if rules.is_empty() {
            out.push(Problem::new("allow", "no rules: every request is denied"));
        }
        if config.listeners.explicit.is_none() {
            for (i, rule) in rules.iter().enumerate() {
                if !rule.principals.is_empty() {
                    out.push(Problem::new(
                        &format!("allow[{i}].principals"),
                        "never matches: only the explicit listener carries credentials, and \
                         there is none",
                    ));
                }
            }
        }
        let index = Index::new(rules);
        for (j, later) in rules.iter().enumerate() {
            if let Some(i) = index.shadowed_by(rules, j, later) {
                out.push(Problem::new(
                    &format!("allow[{j}]"),
                    format!(
                        "never matches: rule '{}' (allow[{i}]) comes first and matches every \
                         host, port and client this rule does; merge them or move this one up",
                        rules[i].name
                    ),
                ));
            }
        }
        out
    }
}

/// Which rules name each pattern (by its normalised text) and each `*.suffix`, so that
/// finding the rules that might shadow another costs a few probes per host, not a scan of
/// every earlier rule: a 10,000-rule config is checked in linear time.
struct Index<'r> {
    by_text: HashMap<&'r str, Vec<usize>>,
    by_suffix: HashMap<&'r str, Vec<usize>>,
}

impl<'r> Index<'r> {
    fn new(rules: &'r [Rule]) -> Index<'r> {
        let mut index = Index {
            by_text: HashMap::new(),
            by_suffix: HashMap::new(),
        };
        for (i, rule) in rules.iter().enumerate() {
            for pattern in &rule.hosts {
                index.by_text.entry(pattern.as_str()).or_default().push(i);
                if let PatternKind::Suffix(suffix) = pattern.kind() {
                    index.by_suffix.entry(suffix.as_str()).or_default().push(i);
                }
            }
        }
        index
    }

    /// The first rule before `j` that already matches every request `later` could match, so
    /// that `later` never decides: only when one rule covers all of `later`'s hosts, ports,
    /// clients and principals (a sound, deliberately simple test: shadowing spread over
    /// several earlier rules is not reported). Rules with `cidrs` are left alone.
    fn shadowed_by(&self, rules: &[Rule], j: usize, later: &Rule) -> Option<usize> {
        if !later.cidrs.is_empty() {
            return None;
        }
        let first_host = later.hosts.first()?;
        // Any rule covering every host covers the first one: start from those.
        let mut candidates: Vec<usize> = self
            .by_text
            .get(first_host.as_str())
            .into_iter()
            .flatten()
            .copied()
            .collect();
        for parent in parents(first_host) {
            candidates.extend(self.by_suffix.get(parent).into_iter().flatten().copied());
        }
        candidates.sort_unstable();
        candidates.dedup();
        candidates
            .into_iter()
            .take_while(|&i| i < j)
            .find(|&i| covers(&rules[i], later))
    }
}

/// The names a `*.parent` pattern would have to end in to cover `pattern`: every proper
/// label suffix of an exact name, and of a `*.suffix` the suffix itself and its parents.
fn parents(pattern: &HostPattern) -> Vec<&str> {
    let name = match pattern.kind() {
        PatternKind::Exact(name) => name.as_str(),
        PatternKind::Suffix(suffix) => {
            let s = suffix.as_str();
            return std::iter::once(s)
                .chain(s.match_indices('.').map(|(at, _)| &s[at + 1..]))
                .collect();
        }
        PatternKind::Glob => return Vec::new(),
    };
    name.match_indices('.')
        .map(|(at, _)| &name[at + 1..])
        .collect()
}

/// Whether `first` matches every request `later` matches.
fn covers(first: &Rule, later: &Rule) -> bool {
    later.ports.iter().all(|p| first.ports.contains(p))
        && nets_cover(&first.clients, &later.clients)
        && (first.principals.is_empty()
            || (!later.principals.is_empty()
                && later
                    .principals
                    .iter()
                    .all(|p| first.principals.contains(p))))
        && later
            .hosts
            .iter()
            .all(|h| first.hosts.iter().any(|f| pattern_covers(f, h)))
}

/// Whether every client in `inner` is in `outer` (empty means every client).
fn nets_cover(outer: &[IpNet], inner: &[IpNet]) -> bool {
    outer.is_empty()
        || (!inner.is_empty() && inner.iter().all(|n| outer.iter().any(|o| o.contains(n))))
}

/// Whether `outer` matches every name `inner` matches: the same pattern, or a `*.suffix` over
/// an exact name or narrower `*.suffix`. In-label globs only cover themselves.
fn pattern_covers(outer: &HostPattern, inner: &HostPattern) -> bool {
    if outer.as_str() == inner.as_str() {
        return true;
    }
    let PatternKind::Suffix(suffix) = outer.kind() else {
        return false;
    };
    let under = |name: &str| {
        name.strip_suffix(suffix.as_str())
            .is_some_and(|head| head.ends_with('.'))
    };
    match inner.kind() {
        PatternKind::Exact(name) => under(name.as_str()),
        PatternKind::Suffix(name) => under(name.as_str()) || name == suffix,
        PatternKind::Glob => false,
    }
}
