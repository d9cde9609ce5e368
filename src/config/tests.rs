use super::units::{parse_duration, parse_report_until};
use super::*;
use crate::policy::{Host, Mode, Request};

const MINIMAL: &str = "listeners: { explicit: 127.0.0.1:3128 }\n";

fn problems(yaml: &str) -> Vec<String> {
    match Config::from_yaml(yaml) {
        Ok(_) => Vec::new(),
        Err(p) => p.0.iter().map(ToString::to_string).collect(),
    }
}

fn has(problems: &[String], needle: &str) -> bool {
    problems.iter().any(|p| p.contains(needle))
}

#[test]
fn minimal_config_gets_the_contract_defaults() {
    let c = Config::from_yaml(MINIMAL).unwrap();
    assert_eq!(c.timeouts, Timeouts::default());
    assert_eq!(c.timeouts.client_handshake, Duration::from_secs(10));
    assert_eq!(c.limits.max_connections, 10_000);
    assert_eq!(c.limits.max_header_bytes, 16_384);
    assert_eq!(c.reload.poll_interval, Duration::from_secs(60));
    assert_eq!(c.policy.mode(), Mode::Enforce);
    assert!(
        c.policy.rules().is_empty(),
        "deny by default: no rules unless written"
    );
}

#[test]
fn rule_ports_default_to_443_and_tls_to_require_sni() {
    let c = Config::from_yaml(&format!(
        "{MINIMAL}allow:\n  - name: a\n    hosts: [a.example.com]\n"
    ))
    .unwrap();
    let rule = &c.policy.rules()[0];
    assert_eq!(rule.ports, vec![443]);
    assert_eq!(rule.tls, crate::policy::TlsRequirement::RequireSni);
}

#[test]
fn reports_every_problem_with_its_field_path() {
    let yaml = r#"
mode: permissive
listeners: { explicit: "127.0.0.1:99999", bogus: 1 }
allow:
  - name: dup
    hosts: ["*.com", "a@b.example", "ok.example.com"]
    ports: [0, 70000]
    clients: [10.0.0.0/33]
  - name: dup
    hosts: [b.example.com]
    color: blue
  - hosts: [c.example.com]
upstream: { deny_cidrs: [not-a-cidr], allow_cidrs: [10.0.0.1/8] }
resolver: { hosts: { "a..b": [127.0.0.1], good.example: [nope] } }
timeouts: { idle: forever, drain: 0s }
limits: { max_connections: 0 }
extra: true
"#;
    let p = problems(yaml);
    for (path, what) in [
        ("mode", "enforce or report"),
        ("listeners.explicit", "not an address"),
        ("listeners.bogus", "unknown field"),
        ("allow[0].hosts[0]", "too broad"),
        ("allow[0].hosts[1]", "@"),
        ("allow[0].ports[0]", "port 0"),
        ("allow[0].ports[1]", "1-65535"),
        ("allow[0].clients[0]", "CIDR"),
        ("allow[1].name", "duplicate rule name 'dup'"),
        ("allow[1].color", "unknown field"),
        ("allow[2].name", "missing"),
        ("upstream.deny_cidrs[0]", "CIDR"),
        ("upstream.allow_cidrs[0]", "host bits"),
        ("resolver.hosts.a..b", "bad host name"),
        ("resolver.hosts.good.example[0]", "IP address"),
        ("timeouts.idle", "duration"),
        ("timeouts.drain", "greater than zero"),
        ("limits.max_connections", "1-1000000"),
        ("extra", "unknown field"),
    ] {
        assert!(
            p.iter()
                .any(|line| line.starts_with(&format!("{path}: ")) && line.contains(what)),
            "expected `{path}: ...{what}...` among:\n{}",
            p.join("\n")
        );
    }
}

#[test]
fn rejects_empty_and_non_yaml_text() {
    assert!(has(&problems(""), "empty"));
    assert!(has(&problems("listeners: [unclosed"), "not valid YAML"));
    assert!(has(&problems("- just\n- a list\n"), "expected a mapping"));
}

#[test]
fn requires_a_proxy_listener() {
    assert!(has(
        &problems("listeners: { admin: 127.0.0.1:9090 }\n"),
        "no proxy listener"
    ));
    assert!(has(&problems("allow: []\n"), "listeners: missing"));
}

#[test]
fn rejects_the_same_address_on_two_listeners() {
    let p = problems("listeners: { explicit: 127.0.0.1:3128, admin: 127.0.0.1:3128 }\n");
    assert!(has(&p, "used by two listeners"), "{p:?}");
}

#[test]
fn a_rule_must_allow_something() {
    let p = problems(&format!("{MINIMAL}allow:\n  - name: empty\n"));
    assert!(has(&p, "allow[0]: the rule allows nothing"), "{p:?}");
    let p = problems(&format!(
        "{MINIMAL}allow:\n  - name: noports\n    hosts: [a.example.com]\n    ports: []\n"
    ));
    assert!(has(&p, "allow[0].ports: empty"), "{p:?}");
}

#[test]
fn ip_literal_rules_need_tls_any() {
    let p = problems(&format!(
        "{MINIMAL}allow:\n  - name: ips\n    cidrs: [203.0.113.0/24]\n"
    ));
    assert!(has(&p, "allow[0].tls"), "{p:?}");
    let ok = format!("{MINIMAL}allow:\n  - name: ips\n    cidrs: [203.0.113.0/24]\n    tls: any\n");
    assert!(problems(&ok).is_empty());
}

#[test]
fn resolver_hosts_are_normalised_and_accept_one_or_many_addresses() {
    let c = Config::from_yaml(&format!(
        "{MINIMAL}resolver:\n  hosts:\n    Pypi.Example.: 127.0.0.1\n    b.example: [127.0.0.2, '::1']\n"
    ))
    .unwrap();
    assert_eq!(
        c.resolver.hosts["pypi.example"],
        vec!["127.0.0.1".parse::<std::net::IpAddr>().unwrap()]
    );
    assert_eq!(c.resolver.hosts["b.example"].len(), 2);
}

#[test]
fn mapped_ipv6_cidrs_are_stored_as_ipv4() {
    let c = Config::from_yaml(&format!(
        "{MINIMAL}allow:\n  - name: m\n    cidrs: ['::ffff:127.0.0.0/104']\n    tls: any\n    ports: [80]\n"
    ))
    .unwrap();
    let host = Host::Ip("127.0.0.9".parse().unwrap());
    let v = c.policy.decide(&Request {
        client: "10.0.0.1".parse().unwrap(),
        host: &host,
        port: 80,
        principal: None,
    });
    assert!(v.allowed);
}

#[test]
fn mapped_upstream_cidrs_cover_the_ipv4_and_all_its_ipv6_forms() {
    let c = Config::from_yaml(&format!(
        "{MINIMAL}upstream:\n  deny_cidrs: ['::ffff:44.0.0.0/104']\n  allow_cidrs: ['::ffff:127.0.0.0/104']\n"
    ))
    .unwrap();
    let check = |a: &str| c.upstream.check(SocketAddr::new(a.parse().unwrap(), 443));
    for denied in [
        "44.0.0.1",
        "::ffff:44.0.0.1",
        "64:ff9b::2c00:1",
        "2002:2c00:1::1",
        "2001:0:4136:e378:8000:63bf:d3ff:fffe",
    ] {
        let err = check(denied).unwrap_err();
        assert!(err.contains("deny_cidrs 44.0.0.0/8"), "{denied}: {err}");
    }
    for allowed in [
        "127.0.0.1",
        "::ffff:127.0.0.1",
        "64:ff9b::7f00:1",
        "45.0.0.1",
    ] {
        assert_eq!(check(allowed), Ok(()), "{allowed}");
    }
}

#[test]
fn durations_take_units() {
    assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
    assert_eq!(parse_duration("10s"), Some(Duration::from_secs(10)));
    assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
    assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
    assert_eq!(parse_duration("30"), Some(Duration::from_secs(30)));
    for bad in [
        "",
        "s",
        "-1s",
        "1.5s",
        "10 s",
        "1d",
        "99999999999999999999h",
    ] {
        assert_eq!(parse_duration(bad), None, "{bad}");
    }
}

#[test]
fn the_shipped_config_is_valid_and_denies_by_default() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/egress.yaml"))
        .unwrap();
    let c = Config::from_yaml(&text).unwrap_or_else(|p| panic!("shipped config invalid:\n{p}"));
    assert_eq!(
        c.listeners.explicit.map(|a| a.ip().is_loopback()),
        Some(true),
        "quick start listens on loopback"
    );
    let client = "10.0.32.10".parse().unwrap();
    let ask = |name: &str, port| {
        let host = crate::policy::host::parse_host(name).unwrap();
        c.policy
            .decide(&Request {
                client,
                host: &host,
                port,
                principal: None,
            })
            .allowed
    };
    assert!(ask("pypi.org", 443));
    assert!(ask("files.pythonhosted.org", 443));
    assert!(ask("registry-1.docker.io", 443));
    assert!(!ask("pypi.org", 22));
    for outside in [
        "example.com",
        "evil-bucket.s3.amazonaws.com",
        "x.cloudfront.net",
        "169.254.169.254",
    ] {
        assert!(!ask(outside, 443), "{outside} must not be allowed");
    }
}

#[test]
fn report_until_takes_a_day_or_a_utc_time() {
    // Through the whole named day, UTC.
    assert_eq!(parse_report_until("2027-01-31"), Some(1_801_440_000));
    assert_eq!(
        parse_report_until("2027-01-31T12:00:00Z"),
        Some(1_801_396_800)
    );
    for bad in [
        "2027-02-30",
        "2027-13-01",
        "27-01-31",
        "2027-01-31T25:00:00Z",
        "2027-01-31T12:00:00",
        "soon",
    ] {
        assert_eq!(parse_report_until(bad), None, "{bad}");
    }
}
