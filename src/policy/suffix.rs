//! Public suffixes: which wildcard host patterns reach names that strangers can register.
//! Used by the config check, before any rule is compiled; never on a connection's path. Pure.
//!
//! `*.s3.amazonaws.com` looks like "Amazon S3", but every bucket in the world is a name under
//! it, so it allows anyone's bucket. The Public Suffix List (ICANN and private sections) lists
//! such shared parents; [`open_suffix`] refuses a pattern whose matches include a name under
//! one. That is not only a pattern *over* a suffix (`*.github.io`) but also one *above* a
//! suffix (`*.amazonaws.com` covers `s3.amazonaws.com`), which a lookup ("what is the suffix
//! of this name?") cannot see: it needs every suffix under a name. No crate on crates.io
//! exposes that (`psl`, `psl2` and `publicsuffix` answer lookups only), so the list is
//! vendored verbatim as `public_suffix_list.dat` and indexed here at first use.
//!
//! Updating: replace `public_suffix_list.dat` with the current
//! <https://publicsuffix.org/list/public_suffix_list.dat> and run the tests.

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use super::host::{glob_label, HostPattern};

/// The Public Suffix List (MPL 2.0), unmodified. Snapshot of publicsuffix/list commit
/// e8c9a2b2b2856b6449999dd0ec0d118f364ed0cd (2026-08-19).
const LIST: &str = include_str!("public_suffix_list.dat");

/// Shared parents that are not on the list but hand out names to anyone, one row each with
/// who hands them out. Wildcards over these are refused like those over listed suffixes.
const EXTRA: &[(&str, &str)] = &[
    (
        "r2.cloudflarestorage.com",
        "Cloudflare R2: <account-id>.r2.cloudflarestorage.com for every account",
    ),
    (
        "storage.googleapis.com",
        "Google Cloud Storage: <bucket>.storage.googleapis.com for every bucket",
    ),
    (
        "s3-accelerate.amazonaws.com",
        "S3 Transfer Acceleration: <bucket>.s3-accelerate.amazonaws.com for every bucket",
    ),
    (
        "s3-accelerate.dualstack.amazonaws.com",
        "S3 Transfer Acceleration, dual stack: every bucket",
    ),
];

/// A public suffix that a wildcard pattern reaches under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenSuffix {
    /// The suffix, as the list spells it in ASCII (`*.compute.amazonaws.com` for a wildcard
    /// rule): the nearest one to the pattern's literal tail.
    pub suffix: String,
    /// How many other suffixes the pattern also reaches under.
    pub more: usize,
}

struct Index {
    /// Normal and extra rules.
    exact: HashSet<String>,
    /// Bases of wildcard rules: `compute.amazonaws.com` for `*.compute.amazonaws.com`.
    wildcard: HashSet<String>,
    /// Exception rules (`!www.ck`), which make a name registrable again.
    exception: HashSet<String>,
    /// Every proper ancestor name → the suffixes strictly under it (wildcards as `*.base`).
    beneath: HashMap<String, Vec<String>>,
}

static INDEX: LazyLock<Index> = LazyLock::new(|| {
    let mut index = Index {
        exact: HashSet::new(),
        wildcard: HashSet::new(),
        exception: HashSet::new(),
        beneath: HashMap::new(),
    };
    let rules = LIST
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|rule| !rule.starts_with("//"))
        .chain(EXTRA.iter().map(|(suffix, _)| *suffix));
    for rule in rules {
        if let Some(name) = rule.strip_prefix('!') {
            index.exception.insert(ascii(name));
            continue;
        }
        let (suffix, is_wildcard) = match rule.strip_prefix("*.") {
            Some(base) => (ascii(base), true),
            None => (ascii(rule), false),
        };
        let shown = if is_wildcard {
            index.wildcard.insert(suffix.clone());
            format!("*.{suffix}")
        } else {
            index.exact.insert(suffix.clone());
            suffix.clone()
        };
        // A wildcard rule's suffixes are under its base, so the base is an ancestor too.
        let mut ancestor = if is_wildcard { Some(&suffix[..]) } else { None };
        let mut rest = &suffix[..];
        while let Some((_, parent)) = rest.split_once('.') {
            if let Some(a) = ancestor.take() {
                index
                    .beneath
                    .entry(a.to_owned())
                    .or_default()
                    .push(shown.clone());
            }
            ancestor = Some(parent);
            rest = parent;
        }
        if let Some(a) = ancestor {
            index
                .beneath
                .entry(a.to_owned())
                .or_default()
                .push(shown.clone());
        }
    }
    index
});

/// The list's (Unicode) spelling in the A-labels that host names are normalised to.
fn ascii(rule: &str) -> String {
    if rule.is_ascii() {
        rule.to_ascii_lowercase()
    } else {
        idna::domain_to_ascii(rule).unwrap_or_else(|_| rule.to_owned())
    }
}

/// Whether `name` (normalised) is itself a public suffix: a listed rule, a child of a
/// wildcard rule that no exception rescues, or a top-level label (the list's implicit `*`).
pub fn is_public_suffix(name: &str) -> bool {
    let index = &*INDEX;
    if index.exact.contains(name) || !name.contains('.') {
        return true;
    }
    let parent = name.split_once('.').map_or("", |(_, p)| p);
    index.wildcard.contains(parent) && !index.exception.contains(name)
}

/// The public suffix under which `pattern` matches names anyone can register, if any: the
/// pattern's literal tail itself, or a suffix beneath the tail whose labels the pattern's
/// globs can take. `None` for exact names (an exact name is one tenant) and for wildcards
/// whose every match belongs to the owner of the tail (`*.example.com`).
pub fn open_suffix(pattern: &HostPattern) -> Option<OpenSuffix> {
    let wildcard = pattern.wildcard()?;
    let tail = wildcard.tail.as_str();
    if is_public_suffix(tail) {
        return Some(OpenSuffix {
            suffix: tail.to_owned(),
            more: 0,
        });
    }
    let mut reached: Vec<&String> = INDEX
        .beneath
        .get(tail)
        .into_iter()
        .flatten()
        .filter(|suffix| reaches_under(wildcard.any_prefix, wildcard.globs, suffix, tail))
        .collect();
    // The nearest, shortest suffix is the one a reader will recognise (`s3.amazonaws.com`).
    // The nearest, shortest suffix is the one a reader will recognise (`s3.amazonaws.com`).
    reached.sort_by_key(|s| (s.matches('.').count(), s.len(), s.as_str()));
    let (first, rest) = reached.split_first()?;
    Some(OpenSuffix {
        suffix: (*first).clone(),
        more: rest.len(),
    })
}

/// Whether a name matched by `[*.] globs . tail` can lie strictly under `suffix` (a name
/// under `tail`; a leading `*` label stands for any label). Both are aligned on the right:
/// the suffix's labels left of the tail must each be taken by a glob label, and at least one
/// more label must be left for the registrant, from a glob label or from `*.`.
fn reaches_under(any_prefix: bool, globs: &[String], suffix: &str, tail: &str) -> bool {
    let Some(head) = suffix.strip_suffix(tail).and_then(|h| h.strip_suffix('.')) else {
        return false;
    };
    let labels: Vec<&str> = head.split('.').collect();
    let (m, k) = (labels.len(), globs.len());
    if m >= k && !any_prefix {
        return false;
    }
    // Right-aligned pairs; the suffix's labels beyond the globs fall to `*.`.
    globs
        .iter()
        .rev()
        .zip(labels.iter().rev())
        .all(|(glob, label)| *label == "*" || glob_label(glob.as_bytes(), label.as_bytes()))
}

#[cfg(test)]
mod tests;
