use std::net::IpAddr;

use super::*;
use crate::policy::host::parse_host;
use crate::policy::Request;
use crate::reason::Reason;

fn line(host: &str, port: u16, reason: &str, rule: Option<&str>, client: &str) -> String {
    let decision = if reason == "rule" { "allow" } else { "deny" };
    let rule = rule.map_or("null".to_owned(), |r| format!("\"{r}\""));
    format!(
        r#"{{"event":"decision","decision":"{decision}","enforced":false,"reason":"{reason}","rule":{rule},"principal":null,"client":"{client}:40000","host":"{host}","port":{port}}}"#
    )
}

fn no_rule(host: &str, port: u16) -> String {
    line(host, port, "no_rule", None, "10.0.0.5")
}

const CONFIG: &str = "\
mode: enforce
listeners:
  explicit: 127.0.0.1:3128
allow:
  - name: pypi
    hosts: [pypi.org, files.pythonhosted.org]
  - name: build
    hosts: [registry.example.com]
    ports: [443]
    clients: [10.0.32.0/24]
  - name: cdn
    hosts: [\"*.cdn.example.net\"]
    tls: any
upstream:
  deny_cidrs: [93.184.0.0/16]
";

/// The suggestion merged into CONFIG; it must carry no warning from its own check.
fn merged(lines: &[String]) -> (String, Config) {
    let config = Config::from_yaml(CONFIG).unwrap();
    let base = Base {
        source: "c.yaml",
        text: CONFIG,
        config: &config,
    };
    let out = suggest(lines.iter().map(String::as_str), Some(&base));
    assert!(!out.contains("WARNING"), "{out}");
    let merged = Config::from_yaml(&out).unwrap_or_else(|e| panic!("{e}\n{out}"));
    (out, merged)
}

fn standalone(lines: &[String]) -> String {
    let out = suggest(lines.iter().map(String::as_str), None);
    assert!(!out.contains("WARNING"), "{out}");
    out
}

/// The merged policy's verdict: allowed, and the reason.
fn decide(config: &Config, client: &str, host: &str, port: u16) -> (bool, Reason) {
    let host = parse_host(host).unwrap();
    let verdict = config.policy.decide(&Request {
        client: client.parse::<IpAddr>().unwrap(),
        host: &host,
        port,
        principal: None,
    });
    (verdict.allowed, verdict.reason)
}

/// The `allow:` entries of a standalone suggestion.
fn rules_of(out: &str) -> Vec<serde_json::Value> {
    let parsed: serde_json::Value =
        serde_json::to_value(serde_yaml_ng::from_str::<serde_yaml_ng::Value>(out).unwrap())
            .unwrap();
    parsed["allow"].as_array().cloned().unwrap_or_default()
}

#[test]
fn client_denial_extends_the_rules_client_limit_and_keeps_it() {
    let lines = [line(
        "registry.example.com",
        443,
        "client",
        Some("build"),
        "10.0.99.7",
    )];
    let (out, config) = merged(&lines);
    assert!(
        out.contains(
            "      - 10.0.32.0/24\n      - 10.0.99.7/32  # suggested: client denial, 1 line(s)"
        ),
        "{out}"
    );
    assert_eq!(config.policy.rules().len(), 3, "no new rule: {out}");
    assert_eq!(
        decide(&config, "10.0.99.7", "registry.example.com", 443),
        (true, Reason::Rule)
    );
    assert_eq!(
        decide(&config, "10.0.32.9", "registry.example.com", 443),
        (true, Reason::Rule)
    );
    assert_eq!(
        decide(&config, "10.0.99.8", "registry.example.com", 443),
        (false, Reason::Client),
        "the limit still holds for everyone else"
    );
}

#[test]
fn port_denial_adds_the_port_to_the_rule_instead_of_a_duplicate_rule() {
    let lines = [
        line("pypi.org", 8443, "port", Some("pypi"), "10.0.0.5"),
        line("pypi.org", 8443, "port", Some("pypi"), "10.0.0.6"),
    ];
    let (out, config) = merged(&lines);
    assert!(
        out.contains("    ports: [443, 8443]  # suggested: +8443 (port denial, 2 line(s))"),
        "{out}"
    );
    assert!(
        out.contains("rule pypi: ports [443] -> [443, 8443]"),
        "{out}"
    );
    assert_eq!(config.policy.rules().len(), 3, "no duplicate rule: {out}");
    assert_eq!(
        decide(&config, "10.0.0.5", "pypi.org", 8443),
        (true, Reason::Rule)
    );
    assert_eq!(
        decide(&config, "10.0.0.5", "pypi.org", 8080),
        (false, Reason::Port)
    );
}

#[test]
fn port_and_client_denial_on_a_limited_rule_adds_both_and_drops_neither() {
    let lines = [line(
        "registry.example.com",
        5000,
        "port",
        Some("build"),
        "10.0.99.7",
    )];
    let (out, config) = merged(&lines);
    assert_eq!(config.policy.rules().len(), 3, "{out}");
    assert_eq!(
        decide(&config, "10.0.99.7", "registry.example.com", 5000),
        (true, Reason::Rule)
    );
    assert_eq!(
        decide(&config, "192.0.2.1", "registry.example.com", 5000),
        (false, Reason::Client)
    );
}

#[test]
fn the_rule_needing_fewest_additions_is_edited() {
    let config_text = "\
listeners: { explicit: 127.0.0.1:3128 }
allow:
  - name: other-team
    hosts: [api.example.com]
    ports: [8443]
    clients: [10.3.0.0/16]
  - name: our-team
    hosts: [api.example.com]
    ports: [8443]
    clients: [10.1.0.0/16]
";
    let config = Config::from_yaml(config_text).unwrap();
    let base = Base {
        source: "c.yaml",
        text: config_text,
        config: &config,
    };
    // `other-team` would need the port and the client; `our-team` only the port.
    let lines = [line(
        "api.example.com",
        443,
        "port",
        Some("other-team"),
        "10.1.0.9",
    )];
    let out = suggest(lines.iter().map(String::as_str), Some(&base));
    assert!(
        out.contains("  - name: our-team\n    hosts:\n      - api.example.com\n    ports: [8443, 443]  # suggested: +443"),
        "{out}"
    );
    assert!(
        !out.contains("10.1.0.9/32"),
        "no client added where a port suffices: {out}"
    );
    assert_eq!(out.matches("# suggested: +443").count(), 1, "{out}");
}

#[test]
fn denied_addresses_never_become_cidrs() {
    let refused = [
        "169.254.169.254",
        "::1",
        "10.0.0.1",
        "127.0.0.1",
        "fd00:ec2::254",
        "64:ff9b::a9fe:a9fe",
        "::ffff:169.254.169.254",
        "2002:a9fe:a9fe::1",
        "203.0.113.9",
    ];
    let lines: Vec<String> = refused.iter().map(|ip| no_rule(ip, 80)).collect();
    for out in [standalone(&lines), merged(&lines).0] {
        assert!(!out.contains("    cidrs:"), "{out}");
        assert!(!out.contains("ip-literals"), "{out}");
        for ip in refused {
            let shown = if ip.contains(':') {
                let canonical = ip.parse::<IpAddr>().unwrap().to_canonical();
                match canonical {
                    IpAddr::V4(v4) => format!("{v4}:80"),
                    v6 => format!("[{v6}]:80"),
                }
            } else {
                format!("{ip}:80")
            };
            assert!(
                out.contains(&format!("#   {shown}: the built-in deny list refuses it")),
                "{shown}: {out}"
            );
        }
    }
}

#[test]
fn an_address_the_configs_upstream_denies_is_not_suggested_either() {
    let (out, _) = merged(&[no_rule("93.184.216.34", 443)]);
    assert!(!out.contains("    cidrs:"), "{out}");
    assert!(
        out.contains("93.184.216.34:443: upstream refuses it"),
        "{out}"
    );
}

#[test]
fn public_ip_literals_become_flagged_single_address_cidrs() {
    let lines = [
        no_rule("1.1.1.1", 8443),
        no_rule("2606:4700:4700::1111", 8443),
    ];
    let out = standalone(&lines);
    assert!(
        out.contains("    cidrs:\n      - 1.1.1.1/32\n      - 2606:4700:4700::1111/128\n    ports: [8443]\n    tls: any\n"),
        "{out}"
    );
    assert!(out.contains("IP literal: prefer the name"), "{out}");
}

#[test]
fn without_a_config_port_and_client_denials_are_edits_to_name_not_rules() {
    let lines = [
        line("pypi.org", 8443, "port", Some("pypi"), "10.0.0.5"),
        line(
            "registry.example.com",
            443,
            "client",
            Some("build"),
            "10.0.99.7",
        ),
        no_rule("mirror.example.org", 80),
    ];
    let out = standalone(&lines);
    assert!(
        out.contains("#   rule pypi: add 8443 to its ports (1 line(s))"),
        "{out}"
    );
    assert!(
        out.contains("#   rule build: add 10.0.99.7/32 to its clients, keeping the rest of the limit (1 line(s))"),
        "{out}"
    );
    let rules = rules_of(&out);
    assert_eq!(rules.len(), 1, "only the no_rule name is a rule: {out}");
    assert_eq!(rules[0]["hosts"][0], "mirror.example.org");
    assert!(
        !out.contains("- pypi.org") && !out.contains("- registry.example.com"),
        "{out}"
    );
}

#[test]
fn suggests_exact_names_grouped_by_parent_and_ports() {
    let lines = [
        no_rule("pypi.io", 443),
        no_rule("a.pythonhosted.org", 443),
        no_rule("b.pythonhosted.org", 443),
        no_rule("b.pythonhosted.org", 443),
        no_rule("c.pythonhosted.org", 80),
        line("already.example.com", 443, "rule", Some("x"), "10.0.0.5"),
        r#"{"event":"close","decision":"deny","reason":"no_rule","host":"x.example.net","port":443}"#.to_owned(),
        "not json".to_owned(),
    ];
    let out = standalone(&lines);
    assert!(
        out.contains("8 line(s) read, 5 denied by policy (no_rule 5)"),
        "{out}"
    );
    assert!(
        out.contains("  - name: pythonhosted-org-443\n    hosts:\n      - a.pythonhosted.org\n      - b.pythonhosted.org\n    ports: [443]\n"),
        "{out}"
    );
    assert!(
        out.contains("  - name: pythonhosted-org-80\n    hosts:\n      - c.pythonhosted.org\n    ports: [80]\n"),
        "a name asked on 80 only does not widen the 443 names to 80: {out}"
    );
    assert!(!out.contains("already.example.com"), "{out}");
    assert!(
        !out.contains("x.example.net"),
        "close lines are not decisions: {out}"
    );
    assert!(
        out.contains(
            "# Ignored (no rule change answers these): 1 allowed, 1 close line(s), 1 not JSON"
        ),
        "{out}"
    );
    assert!(
        !out.contains('*'),
        "never suggests a wildcard itself: {out}"
    );
    assert_eq!(rules_of(&out).len(), 3, "{out}");
}

#[test]
fn a_name_joins_a_rule_holding_a_sibling_with_the_same_ports_and_limits() {
    let lines = [
        no_rule("test.pypi.org", 443),
        // Asked on 80: pypi allows only 443, so this name gets its own rule.
        no_rule("upload.pypi.org", 80),
        // registry.example.com's rule limits clients; from 10.0.32.4 the name may join it.
        line("cache.example.com", 443, "no_rule", None, "10.0.32.4"),
    ];
    let (out, config) = merged(&lines);
    assert!(
        out.contains(
            "      - test.pypi.org  # suggested: no rule named it; beside pypi.org, 1 line(s)"
        ),
        "{out}"
    );
    assert!(
        out.contains(
            "      - cache.example.com  # suggested: no rule named it; beside registry.example.com"
        ),
        "{out}"
    );
    assert!(
        out.contains("  - name: pypi-org\n    hosts:\n      - upload.pypi.org\n    ports: [80]\n"),
        "{out}"
    );
    assert_eq!(
        decide(&config, "10.0.0.5", "test.pypi.org", 443),
        (true, Reason::Rule)
    );
    assert_eq!(
        decide(&config, "10.0.99.1", "cache.example.com", 443),
        (false, Reason::Client),
        "a name that joined a limited rule is limited too"
    );
    assert_eq!(
        decide(&config, "10.0.0.5", "upload.pypi.org", 443),
        (false, Reason::Port)
    );
}

#[test]
fn a_name_does_not_join_a_sibling_rule_with_more_ports_than_it_was_asked_on() {
    let config_text = "\
listeners: { explicit: 127.0.0.1:3128 }
allow:
  - name: pypi
    hosts: [pypi.org]
    ports: [443, 8443]
";
    let config = Config::from_yaml(config_text).unwrap();
    let base = Base {
        source: "c.yaml",
        text: config_text,
        config: &config,
    };
    let out = suggest([no_rule("test.pypi.org", 443).as_str()], Some(&base));
    assert!(
        out.contains("  - name: pypi-org\n    hosts:\n      - test.pypi.org\n    ports: [443]\n"),
        "{out}"
    );
    let merged = Config::from_yaml(&out).unwrap();
    assert_eq!(
        decide(&merged, "10.0.0.5", "test.pypi.org", 8443),
        (false, Reason::Port)
    );
}

#[test]
fn flags_names_only_a_broad_wildcard_would_cover() {
    let lines: Vec<String> = (0..3)
        .map(|i| no_rule(&format!("bucket{i}.s3.us-east-1.amazonaws.com"), 443))
        .chain((0..6).map(|i| no_rule(&format!("n{i}.cdn.example"), 443)))
        .collect();
    let out = standalone(&lines);
    assert!(
        out.contains("FLAG: 3 name(s) under s3.us-east-1.amazonaws.com"),
        "{out}"
    );
    assert!(
        out.contains("exfiltration path") && out.contains("VPC endpoint"),
        "{out}"
    );
    assert!(out.contains("FLAG: 6 name(s) under cdn.example"), "{out}");
    assert!(!out.contains("- \"*"), "{out}");
}

#[test]
fn sni_mismatch_is_never_suggested_and_other_denials_are_counted() {
    let lines = [
        line("pypi.org", 443, "sni_mismatch", Some("pypi"), "10.0.0.5"),
        line("evil.example", 443, "dns_failure", None, "10.0.0.5"),
        line("evil.example", 443, "upstream_denied_ip", None, "10.0.0.5"),
        line("evil.example", 443, "auth", None, "10.0.0.5"),
    ];
    let (out, config) = merged(&lines);
    assert!(out.contains("1 sni_mismatch line(s)"), "{out}");
    assert!(
        out.contains(
            "Ignored (no rule change answers these): auth 1, dns_failure 1, upstream_denied_ip 1"
        ),
        "{out}"
    );
    assert!(
        out.contains("#   none: nothing denied needs a rule change"),
        "{out}"
    );
    assert!(!out.contains("evil.example\n"), "{out}");
    assert_eq!(config.policy.rules().len(), 3);
}

#[test]
fn requests_the_config_already_allows_are_counted_not_suggested() {
    let (out, _) = merged(&[no_rule("files.pythonhosted.org", 443)]);
    assert!(
        out.contains("1 already allowed by c.yaml as it is now"),
        "{out}"
    );
    assert!(!out.contains("# suggested:"), "{out}");
}

#[test]
fn a_limited_rule_is_not_extended_for_a_line_without_a_client() {
    let lines = [r#"{"event":"decision","decision":"deny","reason":"client","rule":"build","host":"registry.example.com","port":443}"#.to_owned()];
    let (out, config) = merged(&lines);
    assert!(out.contains("carry no client address to add"), "{out}");
    assert!(!out.contains("0.0.0.0"), "{out}");
    assert_eq!(config.policy.rules()[1].clients.len(), 1);
}

#[test]
fn the_merged_config_keeps_every_other_section() {
    let (out, config) = merged(&[no_rule("mirror.example.org", 80)]);
    assert!(
        out.contains("      - \"*.cdn.example.net\"\n    tls: any\n"),
        "{out}"
    );
    assert!(
        out.contains("upstream:\n  deny_cidrs:\n  - 93.184.0.0/16\n"),
        "{out}"
    );
    assert_eq!(
        config.listeners.explicit,
        Some("127.0.0.1:3128".parse().unwrap())
    );
    assert_eq!(config.policy.rules().len(), 4);
}

#[test]
fn nothing_denied_means_nothing_to_add() {
    let out = standalone(&[line("pypi.org", 443, "rule", Some("pypi"), "10.0.0.5")]);
    assert!(out.contains("[]  # no rule to add"), "{out}");
    assert!(rules_of(&out).is_empty());
}

#[test]
fn a_config_with_every_section_anchors_and_quoted_patterns_merges_to_the_same_config() {
    let config_text = "\
mode: report
report_until: 2027-01-31
report_clients: [10.0.64.0/19]
listeners:
  explicit: 127.0.0.1:3128
  transparent_tls: { listen: 127.0.0.1:8443, default_port: 443 }
  admin: \"127.0.0.1:9090\"
allow:
  - &first
    name: pypi
    hosts: [pypi.org, \"Bücher.example\", \"*.cdn.example.net\", \"api-*.example.com\"]
    mode: enforce
  - name: ips
    cidrs: [1.1.1.1/32, \"2606:4700::/32\"]
    tls: any
resolver: { hosts: { pypi.org: [1.2.3.4] } }
timeouts: { client_handshake: 10s, upstream_connect: 5s, idle: 300s, drain: 30s }
limits: { max_connections: 10000, max_header_bytes: 16384 }
";
    let config = Config::from_yaml(config_text).unwrap();
    let base = Base {
        source: "c.yaml",
        text: config_text,
        config: &config,
    };
    let lines = [line(
        "2606:4700::1111",
        853,
        "port",
        Some("ips"),
        "10.0.0.1",
    )];
    let out = suggest(lines.iter().map(String::as_str), Some(&base));
    assert!(!out.contains("WARNING"), "{out}");
    let merged = Config::from_yaml(&out).unwrap_or_else(|e| panic!("{e}\n{out}"));
    assert_eq!(merged.policy.report_until(), config.policy.report_until());
    assert_eq!(merged.listeners, config.listeners);
    assert_eq!(merged.resolver, config.resolver);
    assert_eq!(merged.timeouts, config.timeouts);
    let (before, after) = (config.policy.rules(), merged.policy.rules());
    assert_eq!(before.len(), after.len(), "{out}");
    for (b, a) in before.iter().zip(after) {
        let patterns = |r: &crate::policy::Rule| -> Vec<String> {
            r.hosts.iter().map(|p| p.as_str().to_owned()).collect()
        };
        assert_eq!(
            (&b.name, patterns(b), &b.clients, &b.cidrs),
            (&a.name, patterns(a), &a.clients, &a.cidrs)
        );
        assert_eq!((b.tls, b.mode), (a.tls, a.mode));
    }
    assert_eq!(after[1].ports, vec![443, 853], "{out}");
    assert_eq!(
        decide(&merged, "10.0.0.1", "2606:4700::1111", 853),
        (true, Reason::Rule)
    );
}

/// Found by the `decision_lines` fuzz target: text from a line (a reason, rule or principal)
/// carrying a newline and YAML must never reach the output, where it would add a rule.
#[test]
fn text_from_a_forged_line_never_becomes_yaml() {
    let forged = [
        include_str!("../../fuzz/regressions/decision_lines/reason-newline-injects-rule.jsonl"),
        include_str!("../../fuzz/regressions/decision_lines/reason-control-char-breaks-yaml.jsonl"),
        r#"{"event":"decision","decision":"deny","reason":"client","rule":"pypi\n  - name: evil\n    hosts: ['*.evil.com']","principal":"x\ny: 1","host":"pypi.org","port":443,"client":"10.0.0.9:1"}"#,
    ];
    for text in forged {
        let (out, merged) = merged(&text.lines().map(str::to_owned).collect::<Vec<_>>());
        assert!(!out.contains("evil"), "{out}");
        assert!(
            merged.policy.rules().iter().all(|r| r.name != "evil"),
            "{out}"
        );
    }
}
