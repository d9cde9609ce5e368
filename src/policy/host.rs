//! What a client named as its destination, and host patterns: checked right after the request
//! (CONNECT authority, Host header or SNI) is read, before anything is resolved or dialled. Pure.
//!
//! Every spelling a resolver would treat as an IP address comes back as `Host::Ip`, so an IP
//! can never slip through as a "name" that a host pattern matches.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use idna::uts46::{AsciiDenyList, DnsLength, Hyphens, Uts46};

const MAX_LABEL: usize = 63;
const MAX_NAME: usize = 253;

/// A destination as the client named it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    Name(HostName),
    Ip(IpAddr),
}

/// A normalised DNS name: lowercase ASCII (A-labels), no trailing dot, LDH labels of
/// 1..=63 bytes, at most 253 bytes, last label not numeric.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostName(String);

impl HostName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for HostName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(name) => name.fmt(f),
            Host::Ip(ip) => ip.fmt(f),
        }
    }
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum HostError {
    #[error("empty host name")]
    Empty,
    #[error("empty label")]
    EmptyLabel,
    #[error("label longer than 63 bytes")]
    LabelTooLong,
    #[error("name longer than 253 bytes")]
    NameTooLong,
    #[error("label '{0}' starts or ends with '-'")]
    Hyphen(String),
    #[error("character {0:?} not allowed in a host name")]
    Char(char),
    #[error("numeric last label is not a valid IPv4 address")]
    BadIpv4,
    #[error("'{0}' is not a valid IPv6 address")]
    BadIpv6(String),
    #[error("IPv6 zone ids ('%') are not allowed")]
    ZoneId,
    #[error("not a valid internationalised domain name (IDNA/UTS-46)")]
    Idna,
    #[error("IP literal not allowed in a host pattern; use cidrs")]
    IpInPattern,
    #[error("pattern '{0}' matches everything")]
    MatchesEverything(String),
    #[error("pattern '{0}' is too broad: a wildcard pattern must end in at least two labels without '*', like *.example.com")]
    TooBroad(String),
    #[error("wildcard label '{0}' may hold only ASCII a-z, 0-9, '-' and '*'")]
    BadWildcard(String),
}

use HostError as E;

/// Parses a destination host (already split from its port; IPv6 bracketed or bare).
pub fn parse_host(input: &str) -> Result<Host, HostError> {
    if input.is_empty() {
        return Err(E::Empty);
    }
    if let Some(rest) = input.strip_prefix('[') {
        let inner = rest
            .strip_suffix(']')
            .ok_or_else(|| E::BadIpv6(input.to_owned()))?;
        return parse_ipv6(inner).map(Host::Ip);
    }
    if input.contains(':') {
        // Only a string that could be IPv6 gets the IPv6 message; `host:443` gets the ':' one.
        let v6ish = input
            .chars()
            .all(|c| c.is_ascii_hexdigit() || matches!(c, ':' | '.' | '%'));
        return match parse_ipv6(input) {
            Err(E::BadIpv6(_)) if !v6ish => Err(E::Char(':')),
            other => other.map(Host::Ip),
        };
    }
    parse_body(input, false)
}

fn parse_ipv6(text: &str) -> Result<IpAddr, HostError> {
    if text.contains('%') {
        return Err(E::ZoneId);
    }
    text.parse::<Ipv6Addr>()
        .map(IpAddr::V6)
        .map_err(|_| E::BadIpv6(text.to_owned()))
}

/// A name or IPv4 literal. `dot_stripped`: the caller already removed the one allowed
/// trailing dot, so none may remain (not even one that IDNA maps from '。').
fn parse_body(input: &str, mut dot_stripped: bool) -> Result<Host, HostError> {
    check_chars(input, false)?;
    let mut body = input;
    if !dot_stripped {
        if let Some(b) = body.strip_suffix('.') {
            body = b;
            dot_stripped = true;
        }
    }
    if body.is_empty() {
        return Err(E::Empty);
    }
    let mapped = if body.is_ascii() {
        let lower = body.to_ascii_lowercase();
        if let Some(ip) = ipv4_if_numeric(&lower)? {
            return Ok(Host::Ip(ip));
        }
        validate_labels(&lower)?;
        // Only A-labels need IDNA here: it checks that their punycode decodes validly.
        if lower.contains("xn--") && idna_map(&lower)? != lower {
            return Err(E::Idna);
        }
        lower
    } else {
        idna_map(body)?
    };
    // IDNA may have produced a trailing dot or an IPv4 literal (fullwidth digits and dots).
    let mut name = mapped.as_str();
    if !dot_stripped {
        name = name.strip_suffix('.').unwrap_or(name);
    }
    if name.is_empty() {
        return Err(E::Empty);
    }
    if let Some(ip) = ipv4_if_numeric(name)? {
        return Ok(Host::Ip(ip));
    }
    validate_labels(name)?;
    Ok(Host::Name(HostName(name.to_owned())))
}

/// Rejects, with a message naming it, any ASCII character outside LDH and dots (and '*' when
/// `star`), and every Unicode whitespace or control character; IDNA judges the rest.
fn check_chars(input: &str, star: bool) -> Result<(), HostError> {
    for c in input.chars() {
        let ok = if c.is_ascii() {
            c.is_ascii_alphanumeric() || c == '.' || c == '-' || (star && c == '*')
        } else {
            !(c.is_whitespace() || c.is_control() || is_invisible(c))
        };
        if !ok {
            return Err(E::Char(c));
        }
    }
    Ok(())
}

/// Invisible characters that IDNA would silently drop (soft hyphen, zero-width space, bidi
/// overrides, BOM): a client sending one is up to something, so refuse rather than map.
fn is_invisible(c: char) -> bool {
    matches!(c, '\u{ad}' | '\u{34f}' | '\u{180b}'..='\u{180f}' | '\u{200b}' | '\u{200e}'..='\u{200f}'
        | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{206f}' | '\u{fe00}'..='\u{fe0f}' | '\u{feff}'
        | '\u{1bca0}'..='\u{1bca3}' | '\u{e0000}'..='\u{e0fff}')
}

fn idna_map(input: &str) -> Result<String, HostError> {
    Uts46::new()
        .to_ascii(
            input.as_bytes(),
            AsciiDenyList::STD3,
            // Hyphens in positions 3-4 occur in real names (CDN nodes); first/last never do.
            Hyphens::CheckFirstLast,
            DnsLength::Ignore, // checked below, with clearer messages
        )
        .map(|cow| cow.into_owned())
        .map_err(|_| E::Idna)
}

fn validate_labels(name: &str) -> Result<(), HostError> {
    for label in name.split('.') {
        validate_label(label)?;
    }
    if name.len() > MAX_NAME {
        return Err(E::NameTooLong);
    }
    Ok(())
}

fn validate_label(label: &str) -> Result<(), HostError> {
    if label.is_empty() {
        return Err(E::EmptyLabel);
    }
    if label.len() > MAX_LABEL {
        return Err(E::LabelTooLong);
    }
    let ldh = |c: &char| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-';
    if let Some(c) = label.chars().find(|c| !ldh(c)) {
        return Err(E::Char(c));
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Err(E::Hyphen(label.to_owned()));
    }
    Ok(())
}

/// WHATWG "ends in a number": if the last label is digits or 0x-hex, the whole text must be
/// an IPv4 literal (as inet_aton reads it), or it is an error, never a name.
fn ipv4_if_numeric(text: &str) -> Result<Option<IpAddr>, HostError> {
    if !is_numeric_label(text.rsplit('.').next().unwrap_or(text)) {
        return Ok(None);
    }
    let parts: Vec<&str> = text.split('.').collect();
    if parts.len() > 4 {
        return Err(E::BadIpv4);
    }
    let mut value: u64 = 0;
    for (i, part) in parts.iter().enumerate() {
        let n = parse_ipv4_number(part).ok_or(E::BadIpv4)?;
        // Each part but the last is one byte; the last fills the remaining bytes.
        let last = i + 1 == parts.len();
        let (bits, shift) = if last {
            (8 * (5 - parts.len()), 0)
        } else {
            (8, 8 * (3 - i))
        };
        if n >= 1 << bits {
            return Err(E::BadIpv4);
        }
        value |= n << shift;
    }
    Ok(Some(IpAddr::V4(Ipv4Addr::from(value as u32))))
}

fn is_numeric_label(label: &str) -> bool {
    !label.is_empty()
        && (label.bytes().all(|b| b.is_ascii_digit()) || parse_ipv4_number(label).is_some())
}

/// One WHATWG IPv4 part: decimal, 0-prefixed octal or 0x-hex ("0x" alone is zero).
fn parse_ipv4_number(part: &str) -> Option<u64> {
    let (digits, radix) = match part.strip_prefix("0x").or(part.strip_prefix("0X")) {
        Some(hex) => (hex, 16),
        None if part.len() > 1 && part.starts_with('0') => (&part[1..], 8),
        None => (part, 10),
    };
    match digits {
        "" if radix == 16 => Some(0),
        // from_str_radix alone would accept a leading '+'; overflow is an error too.
        _ if digits.chars().all(|c| c.is_digit(radix)) => u64::from_str_radix(digits, radix).ok(),
        _ => None,
    }
}

/// A normalised `hosts:` entry: an exact name, `*.suffix`, or a per-label glob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    text: String,
    kind: Kind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Exact(HostName),
    Suffix(HostName),
    /// `any_prefix`: a leading `*.` (one or more whole labels). `labels` match the name's last
    /// labels one to one; `*` in a label matches within that label only.
    Glob {
        any_prefix: bool,
        labels: Vec<String>,
    },
}

/// A wildcard pattern as `[*.] globs... . tail`: a matched name ends in `tail` (the longest run
/// of literal labels), preceded by one name label per glob label (right-aligned, `globs` may
/// hold literal labels left of the rightmost `*`), preceded, when `any_prefix`, by one or more
/// labels of anything. `*.example.com` is `any_prefix`, no globs, tail `example.com`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wildcard<'a> {
    pub any_prefix: bool,
    pub globs: &'a [String],
    pub tail: String,
}

/// How a pattern matches, for indexing: exact and suffix patterns can be looked up by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatternKind<'a> {
    Exact(&'a HostName),
    /// `*.suffix`: one or more whole labels before this name.
    Suffix(&'a HostName),
    /// Anything with a `*` inside a label or as a later label; only `matches` can tell.
    Glob,
}

impl HostPattern {
    pub fn parse(s: &str) -> Result<HostPattern, HostError> {
        if s.is_empty() {
            return Err(E::Empty);
        }
        let stripped = s.strip_suffix('.').unwrap_or(s);
        if !stripped.contains('*') {
            return match parse_host(s)? {
                Host::Ip(_) => Err(E::IpInPattern),
                Host::Name(name) => Ok(HostPattern::from_kind(Kind::Exact(name))),
            };
        }
        if stripped.bytes().all(|b| b == b'*') {
            return Err(E::MatchesEverything(s.to_owned()));
        }
        // `**` means `*`, so `**.example.com` is `*.example.com`, not a one-label glob.
        let body = &collapse_stars(stripped);
        if let Some(rest) = body.strip_prefix("*.").filter(|r| !r.contains('*')) {
            if rest.is_empty() {
                return Err(E::EmptyLabel);
            }
            return match parse_body(rest, true)? {
                Host::Ip(_) => Err(E::IpInPattern),
                Host::Name(name) if !name.0.contains('.') => Err(E::TooBroad(s.to_owned())),
                Host::Name(name) => Ok(HostPattern::from_kind(Kind::Suffix(name))),
            };
        }
        check_chars(body, true)?;
        let mut raw = body.split('.').peekable();
        let any_prefix = raw.next_if_eq(&"*").is_some();
        let mut labels = Vec::new();
        while let Some(label) = raw.next() {
            if label.contains('*') {
                labels.push(wildcard_label(label)?);
            } else if label.is_empty() {
                return Err(E::EmptyLabel);
            } else {
                // IDNA per label; a mapped dot ('．') may split it into several.
                let mut mapped = if label.is_ascii() {
                    label.to_ascii_lowercase()
                } else {
                    idna_map(label)?
                };
                // A mapped trailing '。' is the one allowed trailing dot, if none was stripped.
                if raw.peek().is_none() && stripped.len() == s.len() && mapped.ends_with('.') {
                    mapped.pop();
                }
                for part in mapped.split('.') {
                    validate_label(part)?;
                    if part.starts_with("xn--") && idna_map(part)? != part {
                        return Err(E::Idna);
                    }
                    labels.push(part.to_owned());
                }
            }
        }
        let literal_len: usize = labels.iter().map(|l| l.len() + 1).sum();
        if literal_len > MAX_NAME + 1 {
            return Err(E::NameTooLong);
        }
        // `10.0.*.*` and friends: IPs pass only through cidrs, never through a pattern.
        if labels.iter().any(|l| l.bytes().any(|b| b.is_ascii_digit()))
            && labels
                .iter()
                .all(|l| l.bytes().all(|b| b.is_ascii_digit() || b == b'*'))
        {
            return Err(E::IpInPattern);
        }
        if labels.last().is_some_and(|l| is_numeric_label(l)) {
            return Err(E::BadIpv4);
        }
        // At least a registrable-looking tail: `*-cdn.com` would let anyone register a match.
        if labels.iter().rev().take_while(|l| !l.contains('*')).count() < 2 {
            return Err(E::TooBroad(s.to_owned()));
        }
        Ok(HostPattern::from_kind(Kind::Glob { any_prefix, labels }))
    }

    fn from_kind(kind: Kind) -> HostPattern {
        let text = match &kind {
            Kind::Exact(name) => name.0.clone(),
            Kind::Suffix(name) => format!("*.{name}"),
            Kind::Glob { any_prefix, labels } => {
                let head = if *any_prefix { "*." } else { "" };
                format!("{head}{}", labels.join("."))
            }
        };
        HostPattern { text, kind }
    }

    pub fn kind(&self) -> PatternKind<'_> {
        match &self.kind {
            Kind::Exact(name) => PatternKind::Exact(name),
            Kind::Suffix(name) => PatternKind::Suffix(name),
            Kind::Glob { .. } => PatternKind::Glob,
        }
    }

    /// A wildcard pattern's shape, for the public-suffix check; `None` for an exact name.
    pub fn wildcard(&self) -> Option<Wildcard<'_>> {
        match &self.kind {
            Kind::Exact(_) => None,
            Kind::Suffix(name) => Some(Wildcard {
                any_prefix: true,
                globs: &[],
                tail: name.0.clone(),
            }),
            Kind::Glob { any_prefix, labels } => {
                let literal = labels.iter().rev().take_while(|l| !l.contains('*')).count();
                let (globs, tail) = labels.split_at(labels.len() - literal);
                Some(Wildcard {
                    any_prefix: *any_prefix,
                    globs,
                    tail: tail.join("."),
                })
            }
        }
    }

    /// The normalised pattern text.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn matches(&self, name: &HostName) -> bool {
        let name = name.as_str();
        match &self.kind {
            Kind::Exact(exact) => exact.0 == name,
            Kind::Suffix(suffix) => {
                let suffix = suffix.as_str();
                name.len() > suffix.len() + 1
                    && name.ends_with(suffix)
                    && name.as_bytes()[name.len() - suffix.len() - 1] == b'.'
            }
            Kind::Glob { any_prefix, labels } => {
                let count = name.bytes().filter(|&b| b == b'.').count() + 1;
                let fits = if *any_prefix {
                    count > labels.len()
                } else {
                    count == labels.len()
                };
                fits && name
                    .rsplit('.')
                    .zip(labels.iter().rev())
                    .all(|(l, p)| glob_label(p.as_bytes(), l.as_bytes()))
            }
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn collapse_stars(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if !(c == '*' && out.ends_with('*')) {
            out.push(c);
        }
    }
    out
}

/// Normalises a label holding `*`: ASCII LDH only, lowercased.
fn wildcard_label(label: &str) -> Result<String, HostError> {
    if !label
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '*')
    {
        return Err(E::BadWildcard(label.to_owned()));
    }
    let out = label.to_ascii_lowercase();
    if out.starts_with('-') || out.ends_with('-') {
        return Err(E::Hyphen(out));
    }
    if out.bytes().filter(|&b| b != b'*').count() > MAX_LABEL {
        return Err(E::LabelTooLong);
    }
    Ok(out)
}

/// `*` matches any run of bytes in one label. Two-pointer backtracking to the last star
/// only: O(len(p) * len(s)) worst case, never exponential.
pub(crate) fn glob_label(p: &[u8], s: &[u8]) -> bool {
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None; // (star position in p, s position it resumes at)
    while si < s.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, si));
            pi += 1;
        } else if pi < p.len() && p[pi] == s[si] {
            pi += 1;
            si += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&b| b == b'*')
}

#[cfg(test)]
mod tests;
