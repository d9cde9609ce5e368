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
            let mut built: Vec<String> = (0..rng.below(3)).map(|_| rng.text("ab", 1, 2)).collect();
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
