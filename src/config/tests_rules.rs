//! Tests for principals, upload caps, the public-suffix check, warnings, positions and hints.

use super::units::parse_size;
use super::*;
use crate::policy::Request;
use crate::reason::Reason;

const MINIMAL: &str = "listeners: { explicit: 127.0.0.1:3128 }\n";
/// SHA-256 of "test".
const TEST_HASH: &str = "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
/// Some other digest, in uppercase hex (accepted like lowercase).
const NEXT_HASH: &str = "sha256:9F7C4A5B0C1A4B3CE6CF9A9A8F87B5A2E2B6E9DC7D8C3E5E4C8F2A3B1D0E9F8A";

fn problems(yaml: &str) -> Vec<Problem> {
    match Config::from_yaml(yaml) {
        Ok(_) => Vec::new(),
        Err(p) => p.0,
    }
}

/// The problem at `path`, failing the test with every problem if there is none.
fn problem_at(yaml: &str, path: &str) -> Problem {
    let all = problems(yaml);
    all.iter()
        .find(|p| p.path == path)
        .cloned()
        .unwrap_or_else(|| panic!("no problem at {path} among {all:#?}"))
}

fn rule_with(hosts: &str, extra: &str) -> String {
    format!("{MINIMAL}allow:\n  - name: r\n    hosts: [{hosts}]\n{extra}")
}

fn ask(c: &Config, principal: Option<&str>, host: &str) -> (bool, Reason) {
    let host = crate::policy::host::parse_host(host).unwrap();
    let v = c.policy.decide(&Request {
        client: "10.0.0.1".parse().unwrap(),
        host: &host,
        port: 443,
        principal,
    });
    (v.allowed, v.reason)
}

#[test]
fn principals_take_one_hash_or_a_rotation_list() {
    let c = Config::from_yaml(&format!(
        "{MINIMAL}principals:\n  glue-etl: {TEST_HASH}\n  builder: [{TEST_HASH}, \"{NEXT_HASH}\"]\n\
         require_principal: true\n\
         allow:\n  - name: etl\n    hosts: [s3.example.com]\n    principals: [glue-etl]\n"
    ))
    .unwrap();
    assert!(c.require_principal);
    assert!(c.principals.verify("glue-etl", b"test"));
    assert!(c.principals.verify("builder", b"test"));
    assert!(!c.principals.verify("glue-etl", b"other"));
    assert_eq!(
        c.principals.names().collect::<Vec<_>>(),
        ["builder", "glue-etl"]
    );
    assert_eq!(c.policy.rules()[0].principals, ["glue-etl"]);
    assert_eq!(
        ask(&c, Some("glue-etl"), "s3.example.com"),
        (true, Reason::Rule)
    );
    assert_eq!(
        ask(&c, Some("builder"), "s3.example.com"),
        (false, Reason::Client)
    );
    assert_eq!(ask(&c, None, "s3.example.com"), (false, Reason::Client));
}

#[test]
fn principal_defaults_are_off() {
    let c = Config::from_yaml(MINIMAL).unwrap();
    assert!(!c.require_principal && c.principals.is_empty() && c.deny_help.is_none());
}

#[test]
fn a_principal_value_must_be_a_sha256_hash_and_is_never_echoed() {
    for bad in [
        "my-secret-token",
        "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        "sha256:9f86d0",
        "md5:098f6bcd4621d373cade4e832627b4f6",
    ] {
        let p = problem_at(
            &format!("{MINIMAL}principals:\n  ci: \"{bad}\"\n"),
            "principals.ci",
        );
        assert!(p.message.contains("expected sha256:<64 hex digits>"), "{p}");
        assert!(p.message.contains("sha256sum"), "{p}");
        assert!(!p.message.contains(bad), "the value may be a token: {p}");
    }
    let p = problem_at(
        &format!("{MINIMAL}principals:\n  ci: [{TEST_HASH}, 42]\n"),
        "principals.ci[1]",
    );
    assert!(p.message.contains("sha256:"), "{p}");
    let p = problem_at(
        &format!("{MINIMAL}principals:\n  ci: []\n"),
        "principals.ci",
    );
    assert!(p.message.contains("at least one"), "{p}");
}

#[test]
fn principal_names_are_plain_identifiers() {
    for bad in ["\"a:b\"", "\"has space\"", &"x".repeat(65)] {
        let yaml = format!("{MINIMAL}principals:\n  {bad}: {TEST_HASH}\n");
        assert!(
            problems(&yaml)
                .iter()
                .any(|p| p.message.contains("1-64 of")),
            "{bad}"
        );
    }
}

#[test]
fn rules_may_name_only_defined_principals() {
    let p = problem_at(
        &rule_with(
            "a.example.com",
            &format!("    principals: [ghost]\nprincipals: {{ real: {TEST_HASH} }}\n"),
        ),
        "allow[0].principals[0]",
    );
    assert_eq!(
        p.message,
        "unknown principal 'ghost'; define it under principals:"
    );
}

#[test]
fn require_principal_needs_principals() {
    let p = problem_at(
        &format!("{MINIMAL}require_principal: true\n"),
        "require_principal",
    );
    assert!(p.message.contains("no principals are defined"), "{p}");
    let p = problem_at(
        &format!("{MINIMAL}require_principal: yes-please\n"),
        "require_principal",
    );
    assert!(p.message.contains("true or false"), "{p}");
}

#[test]
fn deny_help_is_one_short_line() {
    let c = Config::from_yaml(&format!(
        "{MINIMAL}deny_help: \"ask #platform, https://wiki.example/egress\"\n"
    ))
    .unwrap();
    assert_eq!(
        c.deny_help.as_deref(),
        Some("ask #platform, https://wiki.example/egress")
    );
    assert!(Config::from_yaml(&format!("{MINIMAL}deny_help: \"\"\n"))
        .unwrap()
        .deny_help
        .is_none());
    for bad in [
        "\"a\\nb\"",
        "\"a\\rHTTP/1.1 200 OK\"",
        "\"tab\\there\"",
        "\"a\\u2028b\"",
        "|\n  two\n  lines",
    ] {
        let p = problem_at(&format!("{MINIMAL}deny_help: {bad}\n"), "deny_help");
        assert!(p.message.contains("one line"), "{bad}: {p}");
    }
    let long = "x".repeat(MAX_DENY_HELP + 1);
    let p = problem_at(&format!("{MINIMAL}deny_help: {long}\n"), "deny_help");
    assert!(p.message.contains("longer than 300"), "{p}");
    assert!(Config::from_yaml(&format!(
        "{MINIMAL}deny_help: {}\n",
        "é".repeat(MAX_DENY_HELP)
    ))
    .is_ok());
}

#[test]
fn upload_caps_take_sizes_and_durations() {
    let c = Config::from_yaml(&rule_with(
        "a.example.com",
        "    max_bytes_up: 4MiB\n    upload_budget: { bytes: 64MiB, per: 1h }\n",
    ))
    .unwrap();
    let rule = &c.policy.rules()[0];
    assert_eq!(rule.max_bytes_up, Some(4 * 1024 * 1024));
    assert_eq!(
        rule.upload_budget,
        Some(crate::policy::UploadBudget {
            bytes: 64 * 1024 * 1024,
            per: Duration::from_secs(3600),
        })
    );
    let plain = Config::from_yaml(&rule_with("a.example.com", "    max_bytes_up: 1000\n")).unwrap();
    assert_eq!(plain.policy.rules()[0].max_bytes_up, Some(1000));
    let none = Config::from_yaml(&rule_with("a.example.com", "")).unwrap();
    assert_eq!(none.policy.rules()[0].max_bytes_up, None);
    assert_eq!(none.policy.rules()[0].upload_budget, None);
}

#[test]
fn upload_caps_refuse_zero_and_nonsense() {
    let p = problem_at(
        &rule_with("a.example.com", "    max_bytes_up: 0\n"),
        "allow[0].max_bytes_up",
    );
    assert!(p.message.contains("omit the key for no cap"), "{p}");
    let p = problem_at(
        &rule_with("a.example.com", "    max_bytes_up: 0MiB\n"),
        "allow[0].max_bytes_up",
    );
    assert!(p.message.contains("omit the key for no cap"), "{p}");
    let p = problem_at(
        &rule_with("a.example.com", "    max_bytes_up: 4 parsecs\n"),
        "allow[0].max_bytes_up",
    );
    assert!(p.message.contains("expected a size"), "{p}");
    let p = problem_at(
        &rule_with("a.example.com", "    max_bytes_up: -1\n"),
        "allow[0].max_bytes_up",
    );
    assert!(p.message.contains("expected a size"), "{p}");
    let yaml = rule_with(
        "a.example.com",
        "    upload_budget: { bytes: 0, per: 0s, extra: 1 }\n",
    );
    assert!(problem_at(&yaml, "allow[0].upload_budget.bytes")
        .message
        .contains("omit the key"));
    assert!(problem_at(&yaml, "allow[0].upload_budget.per")
        .message
        .contains("greater than zero"));
    assert!(problem_at(&yaml, "allow[0].upload_budget.extra")
        .message
        .contains("unknown field"));
    let p = problem_at(
        &rule_with("a.example.com", "    upload_budget: { bytes: 1GiB }\n"),
        "allow[0].upload_budget.per",
    );
    assert!(p.message.contains("missing"), "{p}");
}

#[test]
fn sizes_take_binary_and_decimal_units() {
    assert_eq!(parse_size("0"), Some(0));
    assert_eq!(parse_size("512"), Some(512));
    assert_eq!(parse_size("512B"), Some(512));
    assert_eq!(parse_size("4KiB"), Some(4096));
    assert_eq!(parse_size("4MiB"), Some(4 << 20));
    assert_eq!(parse_size("4 MiB"), Some(4 << 20));
    assert_eq!(parse_size("2GiB"), Some(2 << 30));
    assert_eq!(parse_size("1TiB"), Some(1 << 40));
    assert_eq!(parse_size("4KB"), Some(4_000));
    assert_eq!(parse_size("4MB"), Some(4_000_000));
    assert_eq!(parse_size("4GB"), Some(4_000_000_000));
    for bad in [
        "",
        "MiB",
        "4mib",
        "4  MiB",
        "1.5MiB",
        "-4MiB",
        "4MiBs",
        "99999999999TiB",
    ] {
        assert_eq!(parse_size(bad), None, "{bad:?}");
    }
}

#[test]
fn wildcards_over_public_suffixes_are_refused_naming_the_suffix() {
    for (pattern, suffix) in [
        ("*.amazonaws.com", ".amazonaws.com`"),
        (
            "*.s3.dualstack.us-east-1.amazonaws.com",
            "`s3.dualstack.us-east-1.amazonaws.com`",
        ),
        ("*.cloudfront.net", "`cloudfront.net`"),
        ("*.r2.cloudflarestorage.com", "`r2.cloudflarestorage.com`"),
        ("*.github.io", "`github.io`"),
        ("*.co.uk", "`co.uk`"),
        ("bucket-*.s3.amazonaws.com", "`s3.amazonaws.com`"),
    ] {
        let p = problem_at(&rule_with(&format!("'{pattern}'"), ""), "allow[0].hosts[0]");
        assert!(
            p.message.contains("public suffix") && p.message.contains(suffix),
            "{pattern}: {p}"
        );
        assert!(p.message.contains("tenant_wildcard: true"), "{p}");
        // The same pattern with the operator's explicit acceptance loads.
        let ok = rule_with(&format!("'{pattern}'"), "    tenant_wildcard: true\n");
        let c = Config::from_yaml(&ok).unwrap_or_else(|p| panic!("{pattern}: {p}"));
        assert!(c.policy.rules()[0].tenant_wildcard);
    }
    // `*.com` stays refused: no flag lifts the two-label floor.
    let p = problem_at(
        &rule_with("'*.com'", "    tenant_wildcard: true\n"),
        "allow[0].hosts[0]",
    );
    assert!(p.message.contains("too broad"), "{p}");
}

#[test]
fn the_s3_message_shows_the_fix() {
    let p = problem_at(&rule_with("'*.s3.amazonaws.com'", ""), "allow[0].hosts[0]");
    assert_eq!(
        p.message,
        "`*.s3.amazonaws.com` matches names under the public suffix `s3.amazonaws.com`, which \
         anyone can register: list the exact host instead (e.g. `my-bucket.s3.amazonaws.com`), \
         or set `tenant_wildcard: true` on the rule and say why in a comment"
    );
}

#[test]
fn owned_wildcards_and_exact_tenant_names_are_accepted() {
    for hosts in [
        "'*.example.com'",
        "'*.pythonhosted.org'",
        "my-bucket.s3.amazonaws.com",
        "docker-images-prod.s3.dualstack.us-east-1.amazonaws.com",
        "'*.my-bucket.s3.amazonaws.com'",
    ] {
        let yaml = rule_with(hosts, "");
        assert!(
            Config::from_yaml(&yaml).is_ok(),
            "{hosts}: {:?}",
            problems(&yaml)
        );
    }
}

#[test]
fn a_tenant_wildcard_still_matches_only_its_pattern() {
    let c = Config::from_yaml(&rule_with(
        "'*.s3.amazonaws.com'",
        "    tenant_wildcard: true\n",
    ))
    .unwrap();
    assert!(ask(&c, None, "any-bucket.s3.amazonaws.com").0);
    assert!(!ask(&c, None, "s3.amazonaws.com").0);
    assert!(!ask(&c, None, "x.s3.amazonaws.com.evil.com").0);
}

#[test]
fn warns_about_past_report_until_no_rules_and_shadowed_rules() {
    let jan_2030 = 1_893_456_000;
    let c = Config::from_yaml_at(
        &format!("{MINIMAL}mode: report\nreport_until: 2027-01-31\n"),
        jan_2030,
    )
    .unwrap();
    let paths: Vec<&str> = c.warnings.iter().map(|w| w.path.as_str()).collect();
    assert_eq!(paths, ["report_until", "allow"]);
    assert!(c.warnings[0].message.contains("already past"));
    assert!(c.warnings[1].message.contains("no rules"));
    let before = Config::from_yaml_at(
        &format!(
            "{MINIMAL}report_until: 2027-01-31\nallow: [{{ name: a, hosts: [a.example.com] }}]\n"
        ),
        jan_2030 - 5 * 365 * 86_400,
    )
    .unwrap();
    assert!(before.warnings.is_empty(), "{:?}", before.warnings);
}

#[test]
fn warns_about_a_rule_an_earlier_rule_always_wins() {
    let yaml = format!(
        "{MINIMAL}allow:\n\
         \x20 - name: wide\n    hosts: ['*.example.com', pypi.org]\n    ports: [443, 8443]\n\
         \x20 - name: same\n    hosts: [pypi.org]\n\
         \x20 - name: under\n    hosts: [a.example.com, '*.b.example.com']\n    ports: [8443]\n\
         \x20 - name: other-port\n    hosts: [pypi.org]\n    ports: [80]\n\
         \x20 - name: partly-new\n    hosts: [pypi.org, files.example.org]\n\
         \x20 - name: limited\n    hosts: [only.example.org]\n    clients: [10.0.0.0/8]\n\
         \x20 - name: narrower-clients\n    hosts: [only.example.org]\n    clients: [10.1.0.0/16]\n\
         \x20 - name: any-client\n    hosts: [only.example.org]\n"
    );
    let c = Config::from_yaml(&yaml).unwrap();
    let flagged: Vec<&str> = c.warnings.iter().map(|w| w.path.as_str()).collect();
    assert_eq!(
        flagged,
        ["allow[1]", "allow[2]", "allow[6]"],
        "{:#?}",
        c.warnings
    );
    assert!(c.warnings[0].message.contains("rule 'wide' (allow[0])"));
    assert!(c.warnings[2].message.contains("rule 'limited' (allow[5])"));
    assert_eq!(c.warnings[0].at, Some((6, 5)), "placed at the rule");
}

#[test]
fn principal_limits_count_in_shadowing() {
    let yaml = format!(
        "{MINIMAL}principals: {{ a: {TEST_HASH}, b: {TEST_HASH} }}\nallow:\n\
         \x20 - name: only-a\n    hosts: [x.example.com]\n    principals: [a]\n\
         \x20 - name: everyone\n    hosts: [x.example.com]\n\
         \x20 - name: a-again\n    hosts: [x.example.com]\n    principals: [a]\n"
    );
    let c = Config::from_yaml(&yaml).unwrap();
    let flagged: Vec<&str> = c.warnings.iter().map(|w| w.path.as_str()).collect();
    assert_eq!(flagged, ["allow[2]"], "{:#?}", c.warnings);
}

#[test]
fn warns_when_principal_rules_have_no_explicit_listener() {
    let c = Config::from_yaml(&format!(
        "listeners: {{ transparent_tls: 127.0.0.1:8443 }}\nprincipals: {{ a: {TEST_HASH} }}\n\
         allow: [{{ name: r, hosts: [x.example.com], principals: [a] }}]\n"
    ))
    .unwrap();
    assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
    assert_eq!(c.warnings[0].path, "allow[0].principals");
}

#[test]
fn problems_carry_line_and_column() {
    let yaml = "listeners:\n  explicit: 127.0.0.1:3128\nallow:\n  - name: a\n    hosts:\n      - ok.example.com\n      - 'bad host'\n    prots: [443]\n";
    let p = problem_at(yaml, "allow[0].hosts[1]");
    assert_eq!(p.at, Some((7, 9)));
    assert_eq!(
        p.display_in("egress.yaml").to_string(),
        format!("egress.yaml:7:9: allow[0].hosts[1]: {}", p.message)
    );
    let typo = problem_at(yaml, "allow[0].prots");
    assert_eq!(typo.at, Some((8, 5)));
    assert!(typo.message.contains("did you mean `ports`?"), "{typo}");
    let all = Config::from_yaml(yaml).unwrap_err();
    let lines = all.display_in("egress.yaml").to_string();
    assert_eq!(lines.lines().count(), all.0.len());
    assert!(
        lines
            .lines()
            .any(|l| l.starts_with("egress.yaml:8:5: allow[0].prots: ")),
        "{lines}"
    );
    let unplaced = Problem::new("", "the config is empty");
    assert_eq!(
        unplaced.display_in("f.yaml").to_string(),
        "f.yaml: the config is empty"
    );
}

#[test]
fn yaml_errors_carry_their_position_and_the_star_hint() {
    let p = problems(&format!(
        "{MINIMAL}allow:\n  - name: a\n    hosts: [*.example.com]\n"
    ));
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].message.contains("not valid YAML"), "{}", p[0]);
    assert!(
        p[0].message.contains("quote patterns that start with `*`"),
        "{}",
        p[0]
    );
    assert_eq!(p[0].at.map(|(line, _)| line), Some(4));
}

#[test]
fn hints_for_ports_in_hosts_and_quoted_ports() {
    let p = problem_at(&rule_with("pypi.org:443", ""), "allow[0].hosts[0]");
    assert!(
        p.message
            .contains("put the port in `ports:`, not in the host"),
        "{p}"
    );
    let p = problem_at(
        &rule_with("pypi.org", "    ports: [\"443\"]\n"),
        "allow[0].ports[0]",
    );
    assert!(p.message.contains("ports are numbers: write 443"), "{p}");
    let p = problem_at(
        &rule_with("pypi.org", "    ports: [https]\n"),
        "allow[0].ports[0]",
    );
    assert!(p.message.contains("ports are numbers"), "{p}");
    let p = problem_at(
        &format!("{MINIMAL}resolver: {{ nameservers: [10.0.0.2] }}\n"),
        "resolver.nameservers[0]",
    );
    assert!(p.message.contains("write 10.0.0.2:53"), "{p}");
    let p = problem_at(&format!("{MINIMAL}alow: []\n"), "alow");
    assert!(p.message.contains("did you mean `allow`?"), "{p}");
}

#[test]
fn a_digest_verifies_through_the_parsed_config_only_for_its_token() {
    let c = Config::from_yaml(&format!("{MINIMAL}principals: {{ ci: {TEST_HASH} }}\n")).unwrap();
    assert!(c.principals.verify("ci", b"test"));
    assert!(!c.principals.verify("ci", TEST_HASH.as_bytes()));
    assert!(!c.principals.verify("other", b"test"));
}

#[test]
fn shadowing_is_found_at_scale_and_positions_are_rationed() {
    let n = 5_000;
    let mut yaml = format!("{MINIMAL}allow:\n");
    for i in 0..n {
        yaml += &format!("  - name: r{i}\n    hosts: [h{i}.example.com]\n");
    }
    for i in 0..n {
        yaml += &format!("  - name: again{i}\n    hosts: [h{i}.example.com]\n");
    }
    let c = Config::from_yaml(&yaml).unwrap();
    assert_eq!(c.warnings.len(), n);
    assert_eq!(c.warnings[0].path, format!("allow[{n}]"));
    assert!(c.warnings[0].message.contains("rule 'r0' (allow[0])"));
    // Placing a problem costs a parse: the first ones get positions, the rest keep paths.
    assert_eq!(c.warnings[0].at, Some((2 * n + 3, 5)));
    assert_eq!(c.warnings[n - 1].at, None);
    assert!(
        yaml.len() * 2 < locate::LOCATE_BUDGET,
        "the budget places at least two"
    );
}
