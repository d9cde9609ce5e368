//! Property tests for the policy's laws (issue 13): each law is checked on the matcher
//! (`HostPattern::matches`, `parse_host`, the deny table) and on `Policy::decide`, whose
//! indexes are what requests meet. Names are drawn from a small alphabet so that labels
//! collide often enough to test the boundaries.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use proptest::prelude::*;

use super::host::{parse_host, Host, HostName, HostPattern};
use super::ip::{builtin_deny, tests::embeddings, BUILTIN_DENY};
use super::{AddrFilter, Mode, Policy, Request, Rule, TlsRequirement};

fn rule(hosts: Vec<HostPattern>) -> Rule {
    Rule {
        name: "law".to_owned(),
        hosts,
        ports: vec![443],
        clients: Vec::new(),
        cidrs: Vec::new(),
        tls: TlsRequirement::RequireSni,
        mode: None,
        principals: Vec::new(),
        max_bytes_up: None,
        upload_budget: None,
        tenant_wildcard: false,
    }
}

fn policy_of(patterns: &[&str]) -> Policy {
    let hosts = patterns
        .iter()
        .map(|p| HostPattern::parse(p).unwrap_or_else(|e| panic!("{p:?}: {e}")))
        .collect();
    Policy::new(Mode::Enforce, vec![rule(hosts)])
}

fn allows(policy: &Policy, host: &Host) -> bool {
    policy
        .decide(&Request {
            client: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
            host,
            port: 443,
            principal: None,
        })
        .allowed
}

fn name(text: &str) -> HostName {
    match parse_host(text) {
        Ok(Host::Name(name)) => name,
        other => panic!("{text:?} is not a name: {other:?}"),
    }
}

/// A lowercase LDH label that can't be numeric (starts with a letter).
fn label() -> impl Strategy<Value = String> {
    "[a-c]([a-c0-9-]{0,3}[a-c0-9])?"
}

/// A name of `min..=max` labels.
fn labels(min: usize, max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(label(), min..=max).prop_map(|l| l.join("."))
}

/// `text` with each ASCII letter's case flipped by `flips`, and a trailing dot if `dot`.
fn spelled(text: &str, flips: &[bool], dot: bool) -> String {
    let mut out: String = text
        .chars()
        .zip(flips.iter().chain(std::iter::repeat(&false)))
        .map(|(c, &up)| if up { c.to_ascii_uppercase() } else { c })
        .collect();
    if dot {
        out.push('.');
    }
    out
}

/// Spellings a resolver (inet_aton) reads as this IPv4 address.
fn ipv4_spellings(ip: Ipv4Addr) -> Vec<String> {
    let [a, b, c, d] = ip.octets();
    let n = u32::from(ip);
    vec![
        ip.to_string(),
        format!("{ip}."),
        n.to_string(),
        format!("0x{n:x}"),
        format!("0X{n:X}"),
        format!("0{n:o}"),
        format!("{a}.{}", n & 0x00ff_ffff),
        format!("{a}.{b}.{}", n & 0xffff),
        format!("0x{a:x}.0x{b:x}.0x{c:x}.0x{d:x}"),
        format!("0{a:o}.0{b:o}.0{c:o}.0{d:o}"),
    ]
}

fn ipv6_spellings(ip: Ipv6Addr) -> Vec<String> {
    let full: Vec<String> = ip.segments().iter().map(|s| format!("{s:X}")).collect();
    vec![
        format!("[{ip}]"),
        ip.to_string(),
        format!("[{}]", full.join(":")),
    ]
}

/// An address inside one of the built-in IPv4 deny rows.
fn denied_ipv4() -> impl Strategy<Value = Ipv4Addr> {
    let rows: Vec<ipnet::Ipv4Net> = BUILTIN_DENY
        .iter()
        .filter_map(|row| match row.net {
            ipnet::IpNet::V4(net) => Some(net),
            ipnet::IpNet::V6(_) => None,
        })
        .collect();
    (prop::sample::select(rows), any::<u32>()).prop_map(|(net, bits)| {
        Ipv4Addr::from(u32::from(net.network()) | (bits & u32::from(net.hostmask())))
    })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// `*.S` matches one or more whole labels before `S`: never `S` itself, never a name
    /// whose label merely ends in `S`'s first label (`xfoo.com` for `*.foo.com`), never a
    /// name where an unrelated label stands in `S`'s place; and it does match `x.S`.
    #[test]
    fn star_dot_pattern_never_matches_its_apex_or_across_an_unrelated_label(
        suffix in labels(2, 3),
        glued in label(),
        other in label(),
        prefix in labels(1, 2),
    ) {
        let pattern = format!("*.{suffix}");
        let compiled = HostPattern::parse(&pattern).unwrap();
        let policy = policy_of(&[&pattern]);
        let (first, rest) = suffix.split_once('.').unwrap();
        let mut never = vec![suffix.clone(), format!("{glued}{suffix}"), format!("{prefix}.{glued}{suffix}")];
        if other != first {
            never.push(format!("{other}.{rest}"));
            never.push(format!("{prefix}.{other}.{rest}"));
        }
        for text in &never {
            let n = name(text);
            prop_assert!(!compiled.matches(&n), "{} matches {}", pattern, text);
            prop_assert!(!allows(&policy, &Host::Name(n)), "{} allows {}", pattern, text);
        }
        let below = name(&format!("{prefix}.{suffix}"));
        prop_assert!(compiled.matches(&below));
        prop_assert!(allows(&policy, &Host::Name(below)));
    }

    /// A `*` inside a label stays inside it: `api-*.S` never matches `api-x.y.S`, nor `S`.
    #[test]
    fn in_label_star_never_crosses_a_dot(
        suffix in labels(2, 3),
        head in "[a-c]{1,3}",
        inside in labels(2, 3),
    ) {
        let pattern = format!("{head}-*.{suffix}");
        let compiled = HostPattern::parse(&pattern).unwrap();
        let policy = policy_of(&[&pattern]);
        for text in [format!("{head}-{inside}.{suffix}"), suffix.clone()] {
            let n = name(&text);
            prop_assert!(!compiled.matches(&n), "{} matches {}", pattern, text);
            prop_assert!(!allows(&policy, &Host::Name(n)), "{} allows {}", pattern, text);
        }
        let one = name(&format!("{head}-{}.{suffix}", inside.replace('.', "")));
        prop_assert!(compiled.matches(&one));
        prop_assert!(allows(&policy, &Host::Name(one)));
    }

    /// Upper case and one trailing dot change neither the name nor the pattern, so they
    /// decide alike: the same verdict for every spelling of name and pattern.
    #[test]
    fn case_and_trailing_dot_variants_decide_alike(
        host in labels(1, 4),
        suffix in labels(2, 2),
        star in any::<bool>(),
        name_flips in prop::collection::vec(any::<bool>(), 0..24),
        pattern_flips in prop::collection::vec(any::<bool>(), 0..24),
        (name_dot, pattern_dot) in (any::<bool>(), any::<bool>()),
    ) {
        let host = format!("{host}.{suffix}");
        let pattern = if star { format!("*.{suffix}") } else { host.clone() };
        let plain = name(&host);
        let variant = spelled(&host, &name_flips, name_dot);
        prop_assert_eq!(parse_host(&variant), Ok(Host::Name(plain.clone())), "{}", variant);
        let loud_pattern = spelled(&pattern, &pattern_flips, pattern_dot);
        let compiled = HostPattern::parse(&pattern).unwrap();
        let loud = HostPattern::parse(&loud_pattern).unwrap();
        prop_assert_eq!(&loud, &compiled, "{}", loud_pattern);
        prop_assert!(compiled.matches(&plain));
        let variant_host = parse_host(&variant).unwrap();
        for p in [policy_of(&[&pattern]), policy_of(&[&loud_pattern])] {
            prop_assert!(allows(&p, &variant_host), "{} vs {}", loud_pattern, variant);
        }
        // And a name the pattern doesn't cover stays denied in every spelling.
        let apex = spelled(&suffix, &name_flips, name_dot);
        let apex_host = parse_host(&apex).unwrap();
        prop_assert!(!allows(&policy_of(&[&loud_pattern]), &apex_host), "{} allows {}", loud_pattern, apex);
    }

    /// Every spelling of an IP address parses as `Host::Ip`, is refused as a host pattern,
    /// and is never allowed by a rule that only has host patterns, however it is spelled.
    #[test]
    fn ip_literal_never_matches_a_host_pattern(
        v4 in any::<u32>().prop_map(Ipv4Addr::from),
        v6 in any::<u128>().prop_map(Ipv6Addr::from),
        suffix in labels(2, 2),
    ) {
        let policy = policy_of(&[
            &format!("*.{suffix}"),
            &format!("a*.{suffix}"),
            &format!("*.*.{suffix}"),
            "*.in-addr.arpa",
        ]);
        for (text, ip) in ipv4_spellings(v4)
            .into_iter()
            .map(|t| (t, IpAddr::V4(v4)))
            .chain(ipv6_spellings(v6).into_iter().map(|t| (t, IpAddr::V6(v6))))
        {
            prop_assert_eq!(parse_host(&text), Ok(Host::Ip(ip)), "{}", text);
            prop_assert!(HostPattern::parse(&text).is_err(), "{} parses as a pattern", text);
            prop_assert!(!allows(&policy, &Host::Ip(ip)), "{} allowed by a host pattern", text);
            // With a wildcard in front it is still an IP, never a name pattern.
            if ip.is_ipv4() {
                prop_assert!(HostPattern::parse(&format!("*.{text}")).is_err(), "*.{}", text);
            }
        }
    }

    /// Every IPv6 form that carries a denied IPv4 address (mapped, compatible, translated,
    /// NAT64, local-use NAT64, 6to4, Teredo client and server) is denied, by the table and by
    /// the check run before dialling, even with `allow_cidrs` opening an unrelated range.
    #[test]
    fn embedded_ipv4_forms_of_a_denied_address_are_denied(v4 in denied_ipv4()) {
        let filter = AddrFilter::new(Vec::new(), vec!["2600::/12".parse().unwrap()]);
        prop_assert!(builtin_deny(IpAddr::V4(v4)).is_some());
        for (form, v6) in embeddings(v4) {
            // Local-use NAT64 at /48-/64 can't tell 0.0.0.0/8 from padding (ip::embedded_ipv4s).
            if v4.octets()[0] == 0 && form.starts_with("nat64 local /") && form != "nat64 local /96" {
                continue;
            }
            prop_assert!(builtin_deny(IpAddr::V6(v6)).is_some(), "{} {} carries {}", form, v6, v4);
            prop_assert!(
                filter.check(SocketAddr::new(IpAddr::V6(v6), 443)).is_err(),
                "{} {} carries {}", form, v6, v4
            );
        }
    }
}
