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
fn glob_label(p: &[u8], s: &[u8]) -> bool {
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
mod tests {
    use super::*;
    use HostError::*;

    fn name(s: &str) -> HostName {
        match parse_host(s) {
            Ok(Host::Name(n)) => n,
            other => panic!("{s:?} should be a name, got {other:?}"),
        }
    }

    fn pat(s: &str) -> HostPattern {
        HostPattern::parse(s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    /// "a=b c=d" as pairs; keeps long test tables on few lines.
    fn pairs(table: &str) -> impl Iterator<Item = (&str, &str)> {
        table.split(' ').map(|p| p.split_once('=').unwrap())
    }

    #[test]
    fn every_ipv4_spelling_is_an_ip() {
        let loopback = "127.0.0.1 2130706433 0x7f000001 0X7F000001 0x7f.1 0x7F.1 0177.0.0.1 127.1 \
            127.0.1 127.0.0.1. 0x7f.0.0.0x1 017700000001 １２７.０.０.１ 127。0。0。1 127.0.0.1。";
        for s in loopback.split(' ') {
            assert_eq!(parse_host(s), Ok(Host::Ip([127, 0, 0, 1].into())), "{s}");
        }
        let table = "0=0.0.0.0 0x=0.0.0.0 0x.0x=0.0.0.0 4294967295=255.255.255.255 \
            169.254.43518=169.254.169.254 10.0x1.0377.1=10.1.255.1";
        for (s, ip) in pairs(table) {
            assert_eq!(parse_host(s), Ok(Host::Ip(ip.parse().unwrap())), "{s}");
        }
    }

    #[test]
    fn numeric_last_label_that_is_no_ipv4_is_an_error() {
        let bad = "foo.123 1.2.3.4.5 256.0.0.1 1.2.3.256 4294967296 0x100000000 09.1.1.1 1.2.3.08 \
            example.0x a..1 1..2 99999999999999999999999 foo.１２３ 1.2.0x10000 ０x7g.1";
        for s in bad.split(' ') {
            assert_eq!(parse_host(s), Err(BadIpv4), "{s}");
        }
        let message = "numeric last label is not a valid IPv4 address";
        assert_eq!(BadIpv4.to_string(), message);
    }

    #[test]
    fn ipv6_literals() {
        for s in "[::1] ::1 [::ffff:127.0.0.1] ::ffff:7f00:1 [2001:DB8::1]".split(' ') {
            assert!(matches!(parse_host(s), Ok(Host::Ip(IpAddr::V6(_)))), "{s}");
        }
        assert_eq!(parse_host("[fe80::1%eth0]"), Err(ZoneId));
        assert_eq!(parse_host("fe80::1%25eth0"), Err(ZoneId));
        for s in "[::1 [127.0.0.1] [] [example.com] 1:2:3 [::1]]".split(' ') {
            assert!(matches!(parse_host(s), Err(BadIpv6(_))), "{s}");
        }
        assert_eq!(parse_host("example.com:443"), Err(Char(':')));
        assert_eq!(parse_host("[::1]").unwrap().to_string(), "::1");
    }

    #[test]
    fn names_are_normalised() {
        let table = "Example.COM=example.com example.com.=example.com \
            bücher.example=xn--bcher-kva.example BÜCHER.Example.=xn--bcher-kva.example \
            XN--BCHER-KVA.example=xn--bcher-kva.example example。com=example.com \
            example．com．=example.com ｅｘａｍｐｌｅ.com=example.com localhost=localhost \
            123.example=123.example foo.0xg=foo.0xg 1.1.1.0xg0=1.1.1.0xg0 a-b.c0=a-b.c0 \
            rr5---sn-q4fl6n7s.googlevideo.com=rr5---sn-q4fl6n7s.googlevideo.com";
        for (s, want) in pairs(table) {
            assert_eq!(name(s).as_str(), want, "{s}");
            assert_eq!(parse_host(s).unwrap().to_string(), want);
        }
        let long = ["a", "b", "c"].map(|l| l.repeat(63)).join(".") + "." + &"d".repeat(61);
        assert_eq!(name(&long).as_str().len(), 253);
        assert_eq!(parse_host(&(long + "d")), Err(NameTooLong));
    }

    #[test]
    fn hostile_names_are_rejected_with_reasons() {
        let long_label = format!("{}.com", "a".repeat(64));
        let long_idn = format!("{}.com", "ü".repeat(60));
        #[rustfmt::skip]
        let cases = [
            ("", Empty), (".", Empty), ("a..b", EmptyLabel), (".a", EmptyLabel), ("a..", EmptyLabel),
            ("a.b。.", EmptyLabel), ("user@host.com", Char('@')), ("a%2e.com", Char('%')),
            ("a/b.com", Char('/')), ("a\\b.com", Char('\\')), ("a\0b.com", Char('\0')),
            ("a b.com", Char(' ')), ("a.com\n", Char('\n')), ("a\u{a0}b.com", Char('\u{a0}')),
            ("a\u{85}.com", Char('\u{85}')), ("*.a.com", Char('*')), ("a_b.com", Char('_')),
            ("a?.com", Char('?')), ("+1.2.3.4", Char('+')), ("a\u{200b}b.com", Char('\u{200b}')),
            ("ex\u{ad}ample.com", Char('\u{ad}')), ("a\u{202e}.com", Char('\u{202e}')),
            ("a\u{feff}.com", Char('\u{feff}')), ("-a.com", Hyphen("-a".into())),
            ("a-.com", Hyphen("a-".into())), ("xn--zz-.com", Hyphen("xn--zz-".into())),
            (&long_label, LabelTooLong), (&long_idn, LabelTooLong), ("xn--a.com", Idna),
            ("a＠b.com", Idna), ("a／b.com", Idna),
        ];
        for (s, want) in cases {
            assert_eq!(parse_host(s), Err(want), "{s:?}");
        }
        assert_eq!(
            Char('@').to_string(),
            "character '@' not allowed in a host name"
        );
        assert_eq!(LabelTooLong.to_string(), "label longer than 63 bytes");
        assert_eq!(EmptyLabel.to_string(), "empty label");
    }

    #[test]
    fn exact_and_suffix_patterns() {
        let exact = pat("Example.COM.");
        assert_eq!(exact.kind(), PatternKind::Exact(&name("example.com")));
        assert!(exact.matches(&name("EXAMPLE.com")));
        assert!(!exact.matches(&name("a.example.com")));

        let suffix = pat("*.EXAMPLE.com.");
        assert_eq!(suffix.to_string(), "*.example.com");
        assert_eq!(suffix.kind(), PatternKind::Suffix(&name("example.com")));
        for yes in ["a.example.com", "a.b.example.com", "A.Example.Com."] {
            assert!(suffix.matches(&name(yes)), "{yes}");
        }
        for no in [
            "example.com",
            "badexample.com",
            "example.com.evil",
            "a.example.co",
            "com",
        ] {
            assert!(!suffix.matches(&name(no)), "{no}");
        }
        let idn = pat("*.Bücher.example");
        assert_eq!(idn.to_string(), "*.xn--bcher-kva.example");
        assert!(idn.matches(&name("shop.bücher.example")));
        assert_eq!(
            pat("**.Example.com").kind(),
            PatternKind::Suffix(&name("example.com"))
        );
    }

    #[test]
    fn glob_patterns_stay_within_a_label() {
        // pattern, normalised, names that match, names that don't
        #[rustfmt::skip]
        let cases = [
            ("API-**.Example.com", "api-*.example.com", "api-1 api-eu-1", "api x.api-1 api-1.x"),
            ("*-cdn.example.com", "*-cdn.example.com", "eu-cdn a-b-cdn", "cdn x.eu-cdn eu-cdnx"),
            ("a*b.example.com", "a*b.example.com", "ab a-x-b abab", "a.b abc ba"),
            ("foo.*.example.com", "foo.*.example.com", "foo.x", "foo foo.x.y x.foo.y"),
            ("*.api-*.example.com", "*.api-*.example.com", "a.api-1 a.b.api-x", "api-1 a.api"),
            ("*.*.example.com", "*.*.example.com", "a.b a.b.c", "a"),
        ];
        for (input, text, yes, no) in cases {
            let p = pat(input);
            assert_eq!((p.kind(), p.as_str()), (PatternKind::Glob, text));
            for y in yes.split(' ') {
                assert!(
                    p.matches(&name(&format!("{y}.example.com"))),
                    "{input} ~ {y}"
                );
            }
            for n in no
                .split(' ')
                .map(|n| format!("{n}.example.com"))
                .chain(["example.com".into()])
            {
                assert!(!p.matches(&name(&n)), "{input} !~ {n}");
            }
        }
        assert!(!pat("api-*.example.com").matches(&name("api-1example.com")));
        let idn = pat("api-*.bücher.example");
        assert_eq!(idn.to_string(), "api-*.xn--bcher-kva.example");
        assert!(idn.matches(&name("api-2.bücher.example")));
        assert_eq!(pat("a*.example.com．").to_string(), "a*.example.com");
    }

    #[test]
    fn bad_patterns_are_rejected() {
        let broad = |s: &str| TooBroad(s.into());
        #[rustfmt::skip]
        let cases = [
            ("", Empty), ("*", MatchesEverything("*".into())), ("*.", MatchesEverything("*.".into())),
            ("**", MatchesEverything("**".into())), ("*.com", broad("*.com")), ("*.io.", broad("*.io.")),
            ("**.com", broad("**.com")), ("*-cdn.com", broad("*-cdn.com")), ("api.*", broad("api.*")),
            ("*.*.com", broad("*.*.com")), ("*.*", broad("*.*")), ("a*", broad("a*")),
            ("127.0.0.1", IpInPattern), ("0x7f.1", IpInPattern), ("１２７.０.０.１", IpInPattern),
            ("[::1]", IpInPattern), ("::1", IpInPattern), ("*.127.0.0.1", IpInPattern),
            ("*.0x7f.1", IpInPattern), ("10.0.*.*", IpInPattern), ("10.*", IpInPattern),
            ("*.foo.123", BadIpv4), ("a*.foo.123", BadIpv4), ("*..example.com", EmptyLabel),
            ("*.example.com..", EmptyLabel), ("a*..example.com", EmptyLabel), ("*..", EmptyLabel),
            ("a_*.example.com", Char('_')), ("*.exa mple.com", Char(' ')), ("a*@b.c.com", Char('@')),
            ("*.a_b.com", Char('_')), ("bü*.example.com", BadWildcard("bü*".into())),
            ("-*.example.com", Hyphen("-*".into())), ("*.-a.example.com", Hyphen("-a".into())),
            ("a*\u{200b}.example.com", Char('\u{200b}')),
        ];
        for (s, want) in cases {
            assert_eq!(HostPattern::parse(s), Err(want), "{s:?}");
        }
        assert!(broad("*.com").to_string().contains("too broad"));
        let ip = "IP literal not allowed in a host pattern; use cidrs";
        assert_eq!(IpInPattern.to_string(), ip);
    }

    #[test]
    fn glob_matcher_is_not_exponential() {
        let s = [b'a'; 63];
        assert!(!glob_label(b"a*a*a*a*a*a*a*a*a*a*a*a*b", &s));
        assert!(glob_label(b"a*a*a*a*a*a*a*a*a*a*a*a*", &s));
    }

    /// Reference semantics straight from the contract, by brute force.
    fn naive(pattern: &str, name: &str) -> bool {
        fn glob(p: &[u8], s: &[u8]) -> bool {
            match p.split_first() {
                None => s.is_empty(),
                Some((b'*', rest)) => {
                    glob(rest, s) || (s.first().is_some_and(|&c| c != b'.') && glob(p, &s[1..]))
                }
                Some((c, rest)) => s.first() == Some(c) && glob(rest, &s[1..]),
            }
        }
        match pattern.strip_prefix("*.") {
            Some(rest) => (name.match_indices('.'))
                .any(|(i, _)| i > 0 && glob(rest.as_bytes(), &name.as_bytes()[i + 1..])),
            None => glob(pattern.as_bytes(), name.as_bytes()),
        }
    }

    /// splitmix64: deterministic, so a failure reproduces.
    struct Rng(u64);
    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = (self.0 ^ (self.0 >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            ((z ^ (z >> 31)) % n as u64) as usize
        }
        fn text(&mut self, alphabet: &str, min: usize, max: usize) -> String {
            let chars: Vec<char> = alphabet.chars().collect();
            let len = min + self.below(max - min + 1);
            (0..len).map(|_| chars[self.below(chars.len())]).collect()
        }
    }

    #[test]
    fn matches_agrees_with_naive_reference() {
        let mut rng = Rng(0x5eed);
        let (mut checked, mut hits) = (0, 0);
        for _ in 0..40_000 {
            let labels = 1 + rng.below(4);
            let mut p: Vec<String> = (0..labels).map(|_| rng.text("ab-*", 1, 3)).collect();
            if rng.below(3) == 0 {
                p.insert(0, "*".into());
            }
            let input = p.join(".");
            let Ok(pattern) = HostPattern::parse(&input) else {
                continue;
            };
            // Random names, and names built from the pattern so that matches happen.
            let mut names = vec![(0..1 + rng.below(5))
                .map(|_| rng.text("ab-", 1, 3))
                .collect()];
            for _ in 0..3 {
                let mut built: Vec<String> =
                    (0..rng.below(3)).map(|_| rng.text("ab", 1, 2)).collect();
                let fill = |c: char, rng: &mut Rng| match c {
                    '*' => rng.text("ab-", 0, 2),
                    c => c.to_string(),
                };
                built.extend(
                    p.iter()
                        .map(|l| l.chars().map(|c| fill(c, &mut rng)).collect()),
                );
                names.push(built);
            }
            for n in names {
                let Ok(Host::Name(n)) = parse_host(&n.join(".")) else {
                    continue;
                };
                let got = pattern.matches(&n);
                let collapsed = collapse_stars(&input);
                assert_eq!(got, naive(&collapsed, n.as_str()), "{input} vs {n}");
                assert_eq!(got, naive(pattern.as_str(), n.as_str()), "{pattern} vs {n}");
                (checked, hits) = (checked + 1, hits + got as usize);
            }
        }
        assert!(checked > 10_000 && hits > 2_000, "{checked} {hits}");
    }

    #[test]
    fn garbage_never_panics_and_parsing_is_idempotent() {
        let mut rng = Rng(7);
        for _ in 0..20_000 {
            let s = rng.text("aB017x-.*:[]%ü．１_", 0, 12);
            if let Ok(Host::Name(n)) = parse_host(&s) {
                assert_eq!(validate_labels(n.as_str()), Ok(()), "{s:?}");
                assert_eq!(parse_host(n.as_str()), Ok(Host::Name(n.clone())), "{s:?}");
            }
            if let Ok(p) = HostPattern::parse(&s) {
                assert_eq!(HostPattern::parse(p.as_str()), Ok(p.clone()), "{s:?}");
            }
        }
    }
}
