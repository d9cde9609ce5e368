//! `egress-proxy suggest`: turns decision lines (typically from report mode) into the smallest
//! allowlist that would have let the same traffic through. Pure: lines in, YAML text out.
//!
//! It suggests exact names only. Where many names share a parent that tenants of a shared
//! service can register under (an S3 bucket, a CDN distribution), it says that only a broad
//! wildcard would cover them and leaves that choice to a person.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

/// Parents under which anyone can get a name: a wildcard there admits other tenants.
const SHARED_PARENTS: &[&str] = &[
    "amazonaws.com",
    "cloudfront.net",
    "azureedge.net",
    "blob.core.windows.net",
    "storage.googleapis.com",
    "appspot.com",
    "fastly.net",
    "akamaized.net",
    "herokuapp.com",
    "github.io",
    "githubusercontent.com",
    "r2.dev",
    "workers.dev",
    "vercel.app",
    "netlify.app",
];

/// How many distinct names under one parent make it worth a flag.
const MANY: usize = 5;

#[derive(Default)]
struct Seen {
    /// name → ports it was asked on.
    names: BTreeMap<String, BTreeSet<u16>>,
    /// IP-literal destinations → ports.
    ips: BTreeMap<String, BTreeSet<u16>>,
    lines: usize,
}

/// Reads decision lines and prints a suggested `allow:` section.
pub fn suggest<'a>(lines: impl IntoIterator<Item = &'a str>) -> String {
    let mut seen = Seen::default();
    for line in lines {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if !wanted(&v) {
            continue;
        }
        let (Some(host), Some(port)) = (v["host"].as_str(), v["port"].as_u64()) else {
            continue;
        };
        let Ok(port) = u16::try_from(port) else {
            continue;
        };
        seen.lines += 1;
        let map = if host.parse::<std::net::IpAddr>().is_ok() {
            &mut seen.ips
        } else {
            &mut seen.names
        };
        map.entry(host.to_owned()).or_default().insert(port);
    }
    render(&seen)
}

/// Decision lines for traffic that would need a rule: would-be denials in report mode and
/// denials for want of a rule; allowed lines are already covered.
fn wanted(v: &Value) -> bool {
    v["event"] == "decision"
        && v["decision"] == "deny"
        && matches!(v["reason"].as_str(), Some("no_rule" | "port" | "client"))
}

fn render(seen: &Seen) -> String {
    let mut out = format!(
        "# Suggested from {} decision line(s). Review before use: every name below was asked for,\n# which is not the same as needed.\nallow:\n",
        seen.lines
    );
    let mut by_parent: BTreeMap<String, Vec<(&String, &BTreeSet<u16>)>> = BTreeMap::new();
    for (name, ports) in &seen.names {
        by_parent
            .entry(parent(name))
            .or_default()
            .push((name, ports));
    }
    for (parent, names) in &by_parent {
        let ports: BTreeSet<u16> = names.iter().flat_map(|(_, p)| p.iter().copied()).collect();
        let shared = SHARED_PARENTS
            .iter()
            .any(|s| parent == s || parent.ends_with(&format!(".{s}")));
        if shared || names.len() >= MANY {
            out.push_str(&format!(
                "  # FLAG: {} name(s) under {parent}; only a wildcard like *.{parent} would cover them all,\n  # and {}. Prefer the exact names below{}.\n",
                names.len(),
                if shared { "anyone can register a name there (exfiltration path)" } else { "a wildcard admits names nobody reviewed" },
                if parent.ends_with("amazonaws.com") { " or a VPC endpoint" } else { "" },
            ));
        }
        out.push_str(&format!("  - name: {}\n    hosts:\n", rule_name(parent)));
        for (name, _) in names {
            out.push_str(&format!("      - {name}\n"));
        }
        out.push_str(&format!("    ports: [{}]\n", join(&ports)));
    }
    if !seen.ips.is_empty() {
        let ports: BTreeSet<u16> = seen.ips.values().flat_map(|p| p.iter().copied()).collect();
        out.push_str("  # FLAG: IP-literal destinations: clients that skip DNS. Check why before allowing.\n");
        out.push_str("  - name: ip-literals\n    cidrs:\n");
        for ip in seen.ips.keys() {
            let prefix = if ip.contains(':') { 128 } else { 32 };
            out.push_str(&format!("      - {ip}/{prefix}\n"));
        }
        out.push_str(&format!("    ports: [{}]\n    tls: any\n", join(&ports)));
    }
    if seen.names.is_empty() && seen.ips.is_empty() {
        out.push_str("  [] # nothing was denied: no rule to add\n");
    }
    out
}

/// The last two labels (`files.pythonhosted.org` → `pythonhosted.org`); under a shared
/// parent, everything but the first label (`b.s3.us-east-1.amazonaws.com` →
/// `s3.us-east-1.amazonaws.com`), since that first label is what tenants choose.
fn parent(name: &str) -> String {
    if SHARED_PARENTS
        .iter()
        .any(|s| name.ends_with(&format!(".{s}")))
    {
        if let Some((_, rest)) = name.split_once('.') {
            return rest.to_owned();
        }
    }
    let labels: Vec<&str> = name.rsplitn(3, '.').collect();
    match labels.as_slice() {
        [tld, domain, ..] => format!("{domain}.{tld}"),
        _ => name.to_owned(),
    }
}

fn rule_name(parent: &str) -> String {
    parent.replace('.', "-")
}

fn join(ports: &BTreeSet<u16>) -> String {
    ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(host: &str, port: u16, decision: &str, reason: &str) -> String {
        format!(
            r#"{{"event":"decision","decision":"{decision}","enforced":false,"reason":"{reason}","host":"{host}","port":{port}}}"#
        )
    }

    #[test]
    fn suggests_exact_names_grouped_by_parent_with_their_ports() {
        let lines = [
            line("pypi.org", 443, "deny", "no_rule"),
            line("files.pythonhosted.org", 443, "deny", "no_rule"),
            line("files.pythonhosted.org", 443, "deny", "no_rule"),
            line("mirror.example.org", 80, "deny", "port"),
            line("already.example.com", 443, "allow", "rule"),
            r#"{"event":"close","decision":"deny","reason":"no_rule","host":"x.example.net","port":443}"#.to_owned(),
            "not json".to_owned(),
        ];
        let out = suggest(lines.iter().map(String::as_str));
        assert!(out.contains("Suggested from 4 decision line(s)"), "{out}");
        assert!(out.contains("  - name: pythonhosted-org\n    hosts:\n      - files.pythonhosted.org\n    ports: [443]\n"), "{out}");
        assert!(
            out.contains("      - mirror.example.org\n    ports: [80]"),
            "{out}"
        );
        assert!(
            !out.contains("already.example.com"),
            "allowed traffic needs no new rule"
        );
        assert!(
            !out.contains("x.example.net"),
            "close lines are not decisions"
        );
        assert!(
            !out.contains('*'),
            "never suggests a wildcard itself: {out}"
        );
        let parsed: serde_json::Value =
            serde_json::to_value(serde_yaml_ng::from_str::<serde_yaml_ng::Value>(&out).unwrap())
                .unwrap();
        assert_eq!(parsed["allow"].as_array().unwrap().len(), 3);
    }

    #[test]
    fn flags_names_only_a_broad_wildcard_would_cover() {
        let lines: Vec<String> = (0..3)
            .map(|i| {
                line(
                    &format!("bucket{i}.s3.us-east-1.amazonaws.com"),
                    443,
                    "deny",
                    "no_rule",
                )
            })
            .chain((0..6).map(|i| line(&format!("n{i}.cdn.example"), 443, "deny", "no_rule")))
            .collect();
        let out = suggest(lines.iter().map(String::as_str));
        assert!(
            out.contains("FLAG: 3 name(s) under s3.us-east-1.amazonaws.com"),
            "{out}"
        );
        assert!(
            out.contains("exfiltration path") && out.contains("VPC endpoint"),
            "{out}"
        );
        assert!(out.contains("FLAG: 6 name(s) under cdn.example"), "{out}");
    }

    #[test]
    fn ip_literals_become_flagged_single_address_cidrs() {
        let lines = [
            line("203.0.113.9", 8443, "deny", "no_rule"),
            line("2001:db8::1", 443, "deny", "no_rule"),
        ];
        let out = suggest(lines.iter().map(String::as_str));
        assert!(
            out.contains("- 203.0.113.9/32")
                && out.contains("- 2001:db8::1/128")
                && out.contains("tls: any"),
            "{out}"
        );
        assert!(
            crate::config::Config::from_yaml(&format!(
                "listeners: {{ explicit: 127.0.0.1:3128 }}\n{out}"
            ))
            .is_ok(),
            "{out}"
        );
    }

    #[test]
    fn nothing_denied_means_nothing_to_add() {
        let out = suggest([line("pypi.org", 443, "allow", "rule").as_str()]);
        assert!(out.contains("nothing was denied"));
    }
}
