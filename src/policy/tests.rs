use super::*;

fn pattern(s: &str) -> HostPattern {
    HostPattern::parse(s).unwrap()
}

fn rule(name: &str, hosts: &[&str], ports: &[u16]) -> Rule {
    Rule {
        name: name.to_owned(),
        hosts: hosts.iter().map(|h| pattern(h)).collect(),
        ports: ports.to_vec(),
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

fn ask<'p>(policy: &'p Policy, client: &str, host: &str, port: u16) -> Verdict<'p> {
    let host = host::parse_host(host).unwrap();
    policy.decide(&Request {
        client: client.parse().unwrap(),
        host: &host,
        port,
        principal: None,
    })
}

fn sample() -> Policy {
    let mut internal = rule("app-only", &["internal.example.com"], &[443]);
    internal.clients = vec!["10.0.32.0/19".parse().unwrap()];
    let mut ips = rule("ips", &[], &[443]);
    ips.cidrs = vec!["203.0.113.0/24".parse().unwrap()];
    ips.tls = TlsRequirement::Any;
    Policy::new(
        Mode::Enforce,
        vec![
            rule("pypi", &["pypi.org", "files.pythonhosted.org"], &[443]),
            rule("wild", &["*.example.net"], &[443, 8443]),
            rule("glob", &["api-*.example.org"], &[443]),
            internal,
            ips,
        ],
    )
}

#[test]
fn denies_by_default() {
    let p = Policy::new(Mode::Enforce, Vec::new());
    let v = ask(&p, "10.0.0.1", "pypi.org", 443);
    assert!(!v.allowed && v.enforced);
    assert_eq!(v.reason, Reason::NoRule);
    assert!(v.rule.is_none());
}

#[test]
fn allows_exact_names_and_names_the_rule() {
    let p = sample();
    let v = ask(&p, "10.0.0.1", "PyPI.org.", 443);
    assert!(v.allowed);
    assert_eq!(v.rule_name(), Some("pypi"));
    assert_eq!(v.reason, Reason::Rule);
    assert!(!ask(&p, "10.0.0.1", "pypi.org.evil.com", 443).allowed);
    assert!(!ask(&p, "10.0.0.1", "evilpypi.org", 443).allowed);
    assert!(!ask(&p, "10.0.0.1", "x.pypi.org", 443).allowed);
}

#[test]
fn suffix_patterns_match_whole_labels_only() {
    let p = sample();
    assert!(ask(&p, "10.0.0.1", "a.example.net", 443).allowed);
    assert!(ask(&p, "10.0.0.1", "a.b.example.net", 8443).allowed);
    assert!(!ask(&p, "10.0.0.1", "example.net", 443).allowed);
    assert!(!ask(&p, "10.0.0.1", "badexample.net", 443).allowed);
    assert!(!ask(&p, "10.0.0.1", "a.example.net.evil.com", 443).allowed);
}

#[test]
fn in_label_globs_never_cross_a_dot() {
    let p = sample();
    assert!(ask(&p, "10.0.0.1", "api-eu.example.org", 443).allowed);
    assert!(!ask(&p, "10.0.0.1", "api-eu.evil.example.org", 443).allowed);
    assert!(!ask(&p, "10.0.0.1", "api.example.org", 443).allowed);
}

#[test]
fn names_the_port_when_only_the_port_is_wrong() {
    let p = sample();
    let v = ask(&p, "10.0.0.1", "pypi.org", 22);
    assert!(!v.allowed);
    assert_eq!(v.reason, Reason::Port);
}

#[test]
fn names_the_client_when_only_the_client_is_wrong() {
    let p = sample();
    assert!(ask(&p, "10.0.40.1", "internal.example.com", 443).allowed);
    let v = ask(&p, "10.0.64.1", "internal.example.com", 443);
    assert!(!v.allowed);
    assert_eq!(v.reason, Reason::Client);
    assert_eq!(
        ask(&p, "10.0.64.1", "internal.example.com", 80).reason,
        Reason::Port
    );
}

#[test]
fn ip_literals_pass_only_through_cidrs() {
    let p = sample();
    assert!(ask(&p, "10.0.0.1", "203.0.113.7", 443).allowed);
    assert!(
        ask(&p, "10.0.0.1", "[::ffff:203.0.113.7]", 443).allowed,
        "mapped form is the same address"
    );
    assert!(!ask(&p, "10.0.0.1", "198.51.100.7", 443).allowed);
    // An IP literal is never matched by a host pattern, whatever its spelling.
    let everything = Policy::new(
        Mode::Enforce,
        vec![rule("wide", &["*.example.com"], &[443])],
    );
    for spelling in [
        "2130706433",
        "0x7f.1",
        "127.1",
        "[::ffff:127.0.0.1]",
        "0177.0.0.1",
    ] {
        let v = ask(&everything, "10.0.0.1", spelling, 443);
        assert_eq!(v.reason, Reason::NoRule, "{spelling}");
    }
}

#[test]
fn first_matching_rule_in_config_order_wins() {
    let p = Policy::new(
        Mode::Enforce,
        vec![
            rule("first", &["*.example.com"], &[443]),
            rule("second", &["a.example.com"], &[443]),
        ],
    );
    assert_eq!(
        ask(&p, "10.0.0.1", "a.example.com", 443).rule_name(),
        Some("first")
    );
}

#[test]
fn report_mode_lets_denials_through_unenforced() {
    let p = Policy::new(Mode::Report, vec![rule("pypi", &["pypi.org"], &[443])]);
    let v = ask(&p, "10.0.0.1", "example.com", 443);
    assert!(!v.allowed && !v.enforced && v.lets_through());
    let mut strict = rule("strict", &["pypi.org"], &[443]);
    strict.mode = Some(Mode::Enforce);
    let p = Policy::new(Mode::Report, vec![strict]);
    let v = ask(&p, "10.0.0.1", "pypi.org", 80);
    assert!(v.enforced, "a rule's own mode decides its near misses");
}

#[test]
fn decision_cost_does_not_scan_exact_and_suffix_rules() {
    // 10,000 exact and 10,000 suffix rules: the index finds the one that matters.
    let mut rules: Vec<Rule> = (0..10_000)
        .map(|i| rule(&format!("r{i}"), &[&format!("host{i}.example.com")], &[443]))
        .collect();
    rules.extend((0..10_000).map(|i| {
        rule(
            &format!("s{i}"),
            &[&format!("*.zone{i}.example.org")],
            &[443],
        )
    }));
    let p = Policy::new(Mode::Enforce, rules);
    assert_eq!(
        p.candidates(&host::parse_host("host9999.example.com").unwrap()),
        vec![9_999]
    );
    assert_eq!(
        p.candidates(&host::parse_host("a.zone7.example.org").unwrap()),
        vec![10_007]
    );
    assert!(p
        .candidates(&host::parse_host("zone7.example.org").unwrap())
        .is_empty());
}

#[test]
fn client_rules_match_ipv4_clients_seen_on_a_dual_stack_listener() {
    let p = sample();
    assert!(ask(&p, "::ffff:10.0.40.1", "internal.example.com", 443).allowed);
    assert_eq!(
        ask(&p, "::ffff:10.0.64.1", "internal.example.com", 443).reason,
        Reason::Client
    );
}

fn ask_as<'p>(policy: &'p Policy, principal: Option<&str>, host: &str, port: u16) -> Verdict<'p> {
    let host = host::parse_host(host).unwrap();
    policy.decide(&Request {
        client: "10.0.0.1".parse().unwrap(),
        host: &host,
        port,
        principal,
    })
}

fn with_principals(name: &str, hosts: &[&str], principals: &[&str]) -> Rule {
    let mut r = rule(name, hosts, &[443]);
    r.principals = principals.iter().map(|p| p.to_string()).collect();
    r
}

#[test]
fn a_listed_principal_is_allowed() {
    let p = Policy::new(
        Mode::Enforce,
        vec![with_principals(
            "etl",
            &["s3.example.com"],
            &["glue-etl", "batch"],
        )],
    );
    let v = ask_as(&p, Some("glue-etl"), "s3.example.com", 443);
    assert!(v.allowed);
    assert_eq!(v.rule_name(), Some("etl"));
    assert!(ask_as(&p, Some("batch"), "s3.example.com", 443).allowed);
}

#[test]
fn an_unlisted_principal_is_a_client_denial_naming_the_rule() {
    let p = Policy::new(
        Mode::Enforce,
        vec![with_principals("etl", &["s3.example.com"], &["glue-etl"])],
    );
    for who in [
        Some("builder"),
        Some("Glue-etl"),
        Some("glue-etl "),
        Some(""),
    ] {
        let v = ask_as(&p, who, "s3.example.com", 443);
        assert!(!v.allowed, "{who:?}");
        assert_eq!(v.reason, Reason::Client, "{who:?}");
        assert_eq!(v.rule.map(|r| r.name.as_str()), Some("etl"));
    }
    // The port is still checked first: a wrong port stays a port denial.
    assert_eq!(
        ask_as(&p, Some("builder"), "s3.example.com", 80).reason,
        Reason::Port
    );
}

#[test]
fn a_principal_rule_never_matches_without_a_principal() {
    // Transparent listeners carry no credentials: `principal: None`.
    let p = Policy::new(
        Mode::Enforce,
        vec![with_principals("etl", &["s3.example.com"], &["glue-etl"])],
    );
    let v = ask_as(&p, None, "s3.example.com", 443);
    assert!(!v.allowed);
    assert_eq!(v.reason, Reason::Client);
}

#[test]
fn a_later_rule_without_principals_still_matches() {
    let p = Policy::new(
        Mode::Enforce,
        vec![
            with_principals("etl-only", &["s3.example.com"], &["glue-etl"]),
            rule("everyone", &["s3.example.com"], &[443]),
        ],
    );
    assert_eq!(
        ask_as(&p, Some("glue-etl"), "s3.example.com", 443).rule_name(),
        Some("etl-only")
    );
    for who in [None, Some("builder")] {
        let v = ask_as(&p, who, "s3.example.com", 443);
        assert!(v.allowed, "{who:?}");
        assert_eq!(v.rule_name(), Some("everyone"), "{who:?}");
    }
}

#[test]
fn rules_without_principals_match_any_workload() {
    let p = Policy::new(Mode::Enforce, vec![rule("any", &["a.example.com"], &[443])]);
    for who in [None, Some("glue-etl"), Some("unknown-name")] {
        assert!(ask_as(&p, who, "a.example.com", 443).allowed, "{who:?}");
    }
}

#[test]
fn principals_and_clients_must_both_match() {
    let mut r = with_principals("both", &["a.example.com"], &["glue-etl"]);
    r.clients = vec!["10.0.0.0/24".parse().unwrap()];
    let p = Policy::new(Mode::Enforce, vec![r]);
    assert!(ask_as(&p, Some("glue-etl"), "a.example.com", 443).allowed);
    let host = host::parse_host("a.example.com").unwrap();
    let outside = p.decide(&Request {
        client: "10.9.0.1".parse().unwrap(),
        host: &host,
        port: 443,
        principal: Some("glue-etl"),
    });
    assert_eq!(outside.reason, Reason::Client);
}
