//! The plan as text: a summary in comments, then the merged config (or a standalone
//! `allow:` section) with every changed line marked `# suggested: why`, then what was not
//! suggested and why. Everything but the comments is YAML that `validate` reads. Pure.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde_yaml_ng::{Mapping, Value};

use super::plan::{Edit, NewRule, Plan};
use super::read::Observed;
use super::{flow, join, Base};

const ITEM: &str = "      - ";

pub(super) fn render(seen: &Observed, plan: &Plan, base: Option<&Base<'_>>) -> String {
    let mut out = String::new();
    header(&mut out, seen, plan, base);
    match base {
        Some(base) => merged(&mut out, plan, base),
        None => {
            out.push_str("allow:\n");
            new_rules(&mut out, plan);
            if plan.new_rules.is_empty() {
                out.push_str("  []  # no rule to add\n");
            }
        }
    }
    trailer(&mut out, seen, plan);
    out
}

fn header(out: &mut String, seen: &Observed, plan: &Plan, base: Option<&Base<'_>>) {
    let mut by_reason: BTreeMap<&str, usize> = BTreeMap::new();
    for said in seen.denied.values() {
        for ((reason, _), n) in &said.logged {
            *by_reason.entry(reason).or_default() += n;
        }
    }
    let reasons: Vec<String> = by_reason.iter().map(|(r, n)| format!("{r} {n}")).collect();
    let _ = write!(
        out,
        "# egress-proxy suggest{}: {} line(s) read, {} denied by policy{}",
        base.map(|b| format!(" --config {}", b.source))
            .unwrap_or_default(),
        seen.lines,
        seen.policy_denials(),
        if reasons.is_empty() {
            String::new()
        } else {
            format!(" ({})", reasons.join(", "))
        },
    );
    match base {
        Some(b) if plan.already > 0 => {
            let _ = writeln!(
                out,
                "; {} already allowed by {} as it is now.",
                plan.already, b.source
            );
        }
        _ => out.push_str(".\n"),
    }
    out.push_str(
        "# Review before use: asked for is not the same as needed. Nothing is removed, so every\n# limit a rule has (ports, clients) stays.\n",
    );
    match base {
        Some(base) => {
            out.push_str("# Changes (each changed line below is marked `# suggested`):\n");
            let rules = base.config.policy.rules();
            let mut any = false;
            for (i, edit) in &plan.edits {
                let Some(rule) = rules.get(*i) else { continue };
                for line in summary(&rule.name, &rule.ports, rule.hosts.len(), edit) {
                    let _ = writeln!(out, "#   {line}");
                    any = true;
                }
            }
            for rule in &plan.new_rules {
                let _ = writeln!(out, "#   new rule {}: {}", rule.name, new_summary(rule));
                any = true;
            }
            if !any {
                out.push_str("#   none: nothing denied needs a rule change\n");
            }
            let _ = writeln!(
                out,
                "# {}'s comments are not carried over: copy the marked lines into it, or replace it with this.",
                base.source
            );
        }
        None => {
            if !plan.by_hand.is_empty() {
                out.push_str("# Edits to existing rules (never a new rule, which would drop the rule's limits);\n# rerun with --config SRC to have them merged:\n");
                for (edit, n) in &plan.by_hand {
                    let _ = writeln!(out, "#   {edit} ({n} line(s))");
                }
            }
        }
    }
    for flag in &plan.flags {
        let _ = writeln!(out, "# {flag}");
    }
}

/// One line per kind of addition to an existing rule.
fn summary(name: &str, ports: &[u16], hosts: usize, edit: &Edit) -> Vec<String> {
    let mut lines = Vec::new();
    if !edit.ports.is_empty() {
        let before: Vec<u16> = ports.to_vec();
        let after: Vec<u16> = before.iter().chain(edit.ports.keys()).copied().collect();
        let n: usize = edit.ports.values().sum();
        let mut line = format!(
            "rule {name}: ports [{}] -> [{}] (port denial, {n} line(s))",
            join(&before, ", "),
            join(&after, ", ")
        );
        if hosts > 1 {
            line.push_str("; every host of the rule gets the added port(s)");
        }
        lines.push(line);
    }
    for (net, n) in &edit.clients {
        lines.push(format!(
            "rule {name}: clients + {net} (client denial, {n} line(s)); the rest of the limit stays"
        ));
    }
    for (host, (n, sibling)) in &edit.hosts {
        lines.push(format!(
            "rule {name}: hosts + {host} (no rule, {n} line(s)); beside {sibling}, same ports and clients"
        ));
    }
    lines
}

fn new_summary(rule: &NewRule) -> String {
    let what: Vec<String> = rule
        .hosts
        .iter()
        .cloned()
        .chain(rule.cidrs.iter().map(ToString::to_string))
        .collect();
    format!(
        "{} on {} ({} line(s))",
        what.join(", "),
        flow(&rule.ports),
        rule.lines
    )
}

/// The base config with the plan applied. Sections other than `allow:` are written back as
/// they parsed; rules keep their fields and order, additions are appended and marked.
fn merged(out: &mut String, plan: &Plan, base: &Base<'_>) {
    let root: Value = serde_yaml_ng::from_str(base.text).unwrap_or(Value::Null);
    let empty = Mapping::new();
    let top = root.as_mapping().unwrap_or(&empty);
    let mut wrote_allow = false;
    for (key, value) in top {
        if key.as_str() == Some("allow") {
            allow(out, value, plan);
            wrote_allow = true;
            continue;
        }
        let mut one = Mapping::new();
        one.insert(key.clone(), value.clone());
        out.push_str(&serde_yaml_ng::to_string(&one).unwrap_or_default());
    }
    if !wrote_allow {
        allow(out, &Value::Null, plan);
    }
}

fn allow(out: &mut String, rules: &Value, plan: &Plan) {
    out.push_str("allow:\n");
    let rules: &[Value] = rules.as_sequence().map_or(&[], |s| s.as_slice());
    for (i, rule) in rules.iter().enumerate() {
        match rule.as_mapping() {
            Some(map) => existing(out, map, plan.edits.get(&i)),
            None => {
                let _ = writeln!(out, "  - {}", scalar(rule));
            }
        }
    }
    new_rules(out, plan);
    if rules.is_empty() && plan.new_rules.is_empty() {
        out.push_str("  []\n");
    }
}

/// One existing rule, field by field, with the edit's additions appended to their lists.
fn existing(out: &mut String, map: &Mapping, edit: Option<&Edit>) {
    let none = Edit::default();
    let edit = edit.unwrap_or(&none);
    let hosts: Vec<(String, String)> = edit
        .hosts
        .iter()
        .map(|(h, (n, sibling))| {
            (
                h.clone(),
                format!("no rule named it; beside {sibling}, {n} line(s)"),
            )
        })
        .collect();
    let clients: Vec<(String, String)> = edit
        .clients
        .iter()
        .map(|(net, n)| (net.to_string(), format!("client denial, {n} line(s)")))
        .collect();
    let mut lines = Vec::new();
    let mut seen_keys = BTreeSet::new();
    for (key, value) in map {
        let key = scalar(key);
        seen_keys.insert(key.clone());
        let items = value.as_sequence().map(|s| s.as_slice());
        match (key.as_str(), items) {
            ("ports", Some(items)) => lines.push(ports(items, edit)),
            ("hosts", Some(items)) => lines.extend(block("hosts", items, &hosts)),
            ("clients", Some(items)) => lines.extend(block("clients", items, &clients)),
            (_, Some(items)) => lines.extend(block(&key, items, &[])),
            _ => lines.push(format!("{key}: {}", scalar(value))),
        }
    }
    if !seen_keys.contains("ports") && !edit.ports.is_empty() {
        // The default is [443].
        lines.push(ports(&[Value::from(443)], edit));
    }
    if !seen_keys.contains("hosts") && !hosts.is_empty() {
        lines.extend(block("hosts", &[], &hosts));
    }
    if !seen_keys.contains("clients") && !clients.is_empty() {
        lines.extend(block("clients", &[], &clients));
    }
    for (i, line) in lines.iter().enumerate() {
        let lead = if i == 0 { "  - " } else { "    " };
        let _ = writeln!(out, "{lead}{line}");
    }
}

/// `ports: [...]`, with added ports appended and the line marked.
fn ports(items: &[Value], edit: &Edit) -> String {
    let mut all: Vec<String> = items.iter().map(scalar).collect();
    let mut why = Vec::new();
    for (port, n) in &edit.ports {
        if !items.iter().any(|v| v.as_u64() == Some(u64::from(*port))) {
            all.push(port.to_string());
            why.push(format!("+{port} (port denial, {n} line(s))"));
        }
    }
    let mut line = format!("ports: [{}]", all.join(", "));
    if !why.is_empty() {
        let _ = write!(line, "  # suggested: {}", why.join(", "));
    }
    line
}

/// A list in block style, one item a line, additions marked. Nested items stay in flow style.
fn block(key: &str, items: &[Value], added: &[(String, String)]) -> Vec<String> {
    if items.is_empty() && added.is_empty() {
        return vec![format!("{key}: []")];
    }
    let mut lines = vec![format!("{key}:")];
    lines.extend(items.iter().map(|v| format!("  - {}", scalar(v))));
    for (item, why) in added {
        lines.push(format!("  - {}  # suggested: {why}", text(item)));
    }
    lines
}

fn new_rules(out: &mut String, plan: &Plan) {
    for rule in &plan.new_rules {
        let mut note = format!("  # suggested: new rule, {} line(s)", rule.lines);
        if !rule.cidrs.is_empty() {
            note.push_str(
                "; IP literal: prefer the name (clients that skip DNS skip the name check too)",
            );
        }
        if !rule.seen_from.is_empty() {
            let from: Vec<String> = rule
                .seen_from
                .iter()
                .take(5)
                .map(ToString::to_string)
                .collect();
            let more = rule.seen_from.len().saturating_sub(5);
            let _ = write!(
                note,
                "; asked from {}{} (add `clients:` to narrow it)",
                from.join(", "),
                if more > 0 {
                    format!(" and {more} more")
                } else {
                    String::new()
                }
            );
        }
        let _ = writeln!(out, "{note}");
        if let Some(flag) = &rule.flag {
            let _ = writeln!(out, "  # {flag}");
        }
        let _ = writeln!(out, "  - name: {}", text(&rule.name));
        if !rule.hosts.is_empty() {
            out.push_str("    hosts:\n");
            for host in &rule.hosts {
                let _ = writeln!(out, "{ITEM}{}", text(host));
            }
        }
        if !rule.cidrs.is_empty() {
            out.push_str("    cidrs:\n");
            for net in &rule.cidrs {
                let _ = writeln!(out, "{ITEM}{}", text(&net.to_string()));
            }
        }
        let _ = writeln!(out, "    ports: {}", flow(&rule.ports));
        if !rule.cidrs.is_empty() {
            out.push_str("    tls: any\n");
        }
    }
}

fn trailer(out: &mut String, seen: &Observed, plan: &Plan) {
    if !plan.refused.is_empty() || seen.sni_mismatch > 0 {
        out.push_str("# Not suggested:\n");
    }
    for note in &plan.refused {
        let _ = writeln!(out, "#   {note}");
    }
    if seen.sni_mismatch > 0 {
        let _ = writeln!(
            out,
            "#   {} sni_mismatch line(s): the TLS SNI named another host than the one asked for, which is what domain fronting looks like; no rule change should allow it",
            seen.sni_mismatch
        );
    }
    let mut ignored: Vec<String> = seen
        .ignored
        .iter()
        .map(|(r, n)| format!("{r} {n}"))
        .collect();
    for (n, what) in [
        (seen.allowed, "allowed"),
        (seen.not_decision, "close line(s)"),
        (seen.not_json, "not JSON"),
        (seen.incomplete, "without host or port"),
    ] {
        if n > 0 {
            ignored.push(format!("{n} {what}"));
        }
    }
    if !ignored.is_empty() {
        let _ = writeln!(
            out,
            "# Ignored (no rule change answers these): {}",
            ignored.join(", ")
        );
    }
}

/// A YAML scalar or flow collection for `value`, quoting strings that would read back as
/// something else.
fn scalar(value: &Value) -> String {
    match value {
        Value::String(s) => text(s),
        Value::Sequence(items) => {
            format!(
                "[{}]",
                items.iter().map(scalar).collect::<Vec<_>>().join(", ")
            )
        }
        Value::Mapping(map) => {
            let pairs: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{}: {}", scalar(k), scalar(v)))
                .collect();
            format!("{{{}}}", pairs.join(", "))
        }
        Value::Tagged(_) => serde_json::to_string(&value).unwrap_or_default(),
        _ => serde_yaml_ng::to_string(value)
            .unwrap_or_default()
            .trim_end()
            .to_owned(),
    }
}

/// A string as a plain scalar when it reads back as the same string, else double-quoted.
fn text(s: &str) -> String {
    let safe = s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-/:@+".contains(c))
        && serde_yaml_ng::from_str::<Value>(s).ok() == Some(Value::String(s.to_owned()));
    if safe {
        s.to_owned()
    } else {
        serde_json::to_string(s).unwrap_or_default()
    }
}
