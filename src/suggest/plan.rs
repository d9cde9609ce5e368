//! What to change: each denied request is judged against the rules as they are, and gets the
//! smallest addition that lets it through: a port or a client address on the rule that
//! already names the host, a name on a rule that holds a sibling with the same ports and
//! limits, or a new exact-name rule. Nothing is ever removed, so no limit is ever dropped.
//! Pure.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use ipnet::IpNet;

use super::read::{Asked, Observed, Said};
use super::{join, parent, rule_name, shared_parent, MANY};
use crate::config::Config;
use crate::policy::TlsRequirement;
use crate::policy::{ip, Host, HostPattern, Mode, PatternKind, Policy, Request, Rule};

/// Additions to one existing rule, each with the number of lines that asked for it.
#[derive(Debug, Default)]
pub(super) struct Edit {
    pub ports: BTreeMap<u16, usize>,
    pub clients: BTreeMap<IpNet, usize>,
    /// Names added to `hosts`, with the sibling name the rule already held.
    pub hosts: BTreeMap<String, (usize, String)>,
}

/// A rule to add.
#[derive(Debug)]
pub(super) struct NewRule {
    pub name: String,
    /// Exact names (a name rule) or single addresses (an IP-literal rule).
    pub hosts: Vec<String>,
    pub cidrs: Vec<IpNet>,
    pub ports: BTreeSet<u16>,
    pub lines: usize,
    /// The clients that asked: a hint for adding `clients:` by hand.
    pub seen_from: BTreeSet<IpAddr>,
    /// Why only a wildcard would cover these names, and why that is not suggested.
    pub flag: Option<String>,
}

#[derive(Debug, Default)]
pub(super) struct Plan {
    /// By index into the base config's rules.
    pub edits: BTreeMap<usize, Edit>,
    pub new_rules: Vec<NewRule>,
    /// Wildcard flags for names that went onto existing rules.
    pub flags: Vec<String>,
    /// Requests no rule may allow: refused addresses, unknown clients.
    pub refused: Vec<String>,
    /// Without a base config: port and client denials, as edits a person makes to a named rule.
    pub by_hand: BTreeMap<String, usize>,
    /// Lines the base config allows as it is now.
    pub already: usize,
    /// Every request the plan lets through, for checking the merged config.
    pub covered: Vec<(Asked, Host)>,
}

/// Names (or addresses) with their requests.
type Named = Vec<(String, Group)>;

/// Requests for one name or address that no rule names.
#[derive(Default)]
struct Group {
    ports: BTreeSet<u16>,
    clients: BTreeSet<Option<IpAddr>>,
    lines: usize,
    asked: Vec<(Asked, Host)>,
}

impl Group {
    fn add(&mut self, asked: &Asked, said: &Said) {
        self.ports.insert(asked.port);
        self.clients.insert(asked.client);
        self.lines += said.lines;
        self.asked.push((asked.clone(), said.host.clone()));
    }
}

pub(super) fn plan(seen: &Observed, base: Option<&Config>) -> Plan {
    let original: Vec<Rule> = base.map(|c| c.policy.rules().to_vec()).unwrap_or_default();
    let before = Policy::new(Mode::Enforce, original.clone());
    let mut work = original.clone();
    let mut plan = Plan::default();
    let mut names: BTreeMap<String, Group> = BTreeMap::new();
    let mut ips: BTreeMap<IpAddr, Group> = BTreeMap::new();
    for (asked, said) in &seen.denied {
        if base.is_some() && allows(&before, asked, &said.host) {
            plan.already += said.lines;
            continue;
        }
        if let Host::Ip(addr) = said.host {
            if let Some(why) = refused(addr, asked.port, base) {
                plan.refused.push(format!(
                    "{}: {why}; no rule can reach it, so none is suggested ({} line(s))",
                    authority(asked),
                    said.lines
                ));
                continue;
            }
        }
        if base.is_none() && by_hand(&mut plan, asked, said) {
            continue;
        }
        let matching = matching(&work, &said.host);
        if !matching.is_empty() {
            extend(&mut plan, &original, &mut work, &matching, asked, said);
            continue;
        }
        let group = match &said.host {
            Host::Name(name) => names.entry(name.as_str().to_owned()).or_default(),
            Host::Ip(addr) => ips.entry(*addr).or_default(),
        };
        group.add(asked, said);
    }
    let mut taken: BTreeSet<String> = original.iter().map(|r| r.name.clone()).collect();
    name_rules(&mut plan, &original, &mut work, &mut taken, names);
    ip_rules(&mut plan, &mut taken, ips);
    plan
}

/// Names no rule covers: onto a sibling's rule where that adds nothing else, otherwise new
/// exact-name rules, one per parent and set of ports asked on (so no name gets a port it
/// wasn't asked on), flagged where only a wildcard would cover them.
fn name_rules(
    plan: &mut Plan,
    original: &[Rule],
    work: &mut [Rule],
    taken: &mut BTreeSet<String>,
    names: BTreeMap<String, Group>,
) {
    let mut fresh: BTreeMap<(String, Vec<u16>), Named> = BTreeMap::new();
    let mut under_parent: BTreeMap<String, usize> = BTreeMap::new();
    for (name, group) in names {
        *under_parent.entry(parent(&name)).or_default() += 1;
        if !onto_sibling(plan, original, work, &name, &group) {
            let ports = group.ports.iter().copied().collect();
            fresh
                .entry((parent(&name), ports))
                .or_default()
                .push((name, group));
        }
    }
    let mut flagged = BTreeSet::new();
    let port_sets = |p: &str| fresh.keys().filter(|(q, _)| q == p).count();
    for ((parent, ports), members) in &fresh {
        let stem = if port_sets(parent) > 1 {
            format!("{}-{}", rule_name(parent), join(ports, "-"))
        } else {
            rule_name(parent)
        };
        let flag = flagged
            .insert(parent.clone())
            .then(|| flag(parent, under_parent[parent]))
            .flatten();
        let name = unique(taken, &stem);
        plan.new_rules.push(new_rule(name, members, flag, false));
    }
    for (parent, count) in &under_parent {
        if !flagged.contains(parent) {
            plan.flags.extend(flag(parent, *count));
        }
    }
    for (_, group) in fresh.into_values().flatten() {
        plan.covered.extend(group.asked);
    }
}

/// IP literals no rule covers (and no deny list refuses): single-address `cidrs:` rules,
/// one per set of ports asked on.
fn ip_rules(plan: &mut Plan, taken: &mut BTreeSet<String>, ips: BTreeMap<IpAddr, Group>) {
    let mut by_ports: BTreeMap<Vec<u16>, Vec<(IpAddr, Group)>> = BTreeMap::new();
    for (addr, group) in ips {
        by_ports
            .entry(group.ports.iter().copied().collect())
            .or_default()
            .push((addr, group));
    }
    let several = by_ports.len() > 1;
    for (ports, members) in &by_ports {
        let stem = if several {
            format!("ip-literals-{}", join(ports, "-"))
        } else {
            "ip-literals".to_owned()
        };
        let name = unique(taken, &stem);
        plan.new_rules.push(new_rule(name, members, None, true));
    }
    for (_, group) in by_ports.into_values().flatten() {
        plan.covered.extend(group.asked);
    }
}

fn new_rule<T: ToString>(
    name: String,
    members: &[(T, Group)],
    flag: Option<String>,
    ip_literal: bool,
) -> NewRule {
    let mut rule = NewRule {
        name,
        hosts: Vec::new(),
        cidrs: Vec::new(),
        ports: BTreeSet::new(),
        lines: 0,
        seen_from: BTreeSet::new(),
        flag,
    };
    for (host, group) in members {
        let text = host.to_string();
        match text.parse::<IpAddr>() {
            Ok(addr) if ip_literal => rule.cidrs.push(IpNet::from(addr)),
            _ => rule.hosts.push(text),
        }
        rule.ports.extend(&group.ports);
        rule.lines += group.lines;
        rule.seen_from.extend(group.clients.iter().flatten());
    }
    rule
}

/// Whether the policy allows the request (an unknown client is asked as 0.0.0.0, which no
/// `clients:` limit covers in practice).
pub(super) fn allows(policy: &Policy, asked: &Asked, host: &Host) -> bool {
    let client = asked.client.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    policy
        .decide(&Request {
            client,
            host,
            port: asked.port,
            principal: None,
        })
        .allowed
}

/// Why an IP-literal destination must never be suggested: the built-in deny table refuses
/// it (in any IPv6 embedding too), or the config's `upstream` does.
fn refused(addr: IpAddr, port: u16, base: Option<&Config>) -> Option<String> {
    if let Some(row) = ip::builtin_deny(addr) {
        return Some(format!("the built-in deny list refuses it ({})", row.what));
    }
    let config = base?;
    config
        .upstream
        .check(SocketAddr::new(addr, port))
        .err()
        .map(|e| format!("upstream refuses it ({e})"))
}

/// Without a config, a port or client denial names the rule to edit; it is shown as that
/// edit, never turned into a new rule (which would drop the rule's limits).
fn by_hand(plan: &mut Plan, asked: &Asked, said: &Said) -> bool {
    let mut any = false;
    for ((reason, rule), lines) in &said.logged {
        let Some(rule) = rule else { continue };
        let edit = match (reason.as_str(), asked.client) {
            ("port", _) => format!("rule {rule}: add {} to its ports", asked.port),
            ("client", Some(client)) => format!(
                "rule {rule}: add {} to its clients, keeping the rest of the limit",
                IpNet::from(client)
            ),
            ("client", None) => {
                format!("rule {rule}: a client limit refused a line without a client address")
            }
            _ => continue,
        };
        let who = match said.principals.iter().next() {
            Some(p) => format!(" (principal {p})"),
            None => String::new(),
        };
        *plan.by_hand.entry(format!("{edit}{who}")).or_default() += lines;
        any = true;
    }
    any
}

/// Indexes of the rules whose hosts (or cidrs) match, in config order.
fn matching(rules: &[Rule], host: &Host) -> Vec<usize> {
    (0..rules.len())
        .filter(|&i| match host {
            Host::Name(name) => rules[i].hosts.iter().any(|p| p.matches(name)),
            Host::Ip(addr) => rules[i].cidrs.iter().any(|n| n.contains(addr)),
        })
        .collect()
}

fn covers(rule: &Rule, client: Option<IpAddr>) -> Option<bool> {
    match client {
        _ if rule.clients.is_empty() => Some(true),
        Some(c) => Some(rule.clients.iter().any(|n| n.contains(&c))),
        None => None,
    }
}

/// A host some rule names, denied for its port or client: the rule needing the fewest
/// additions (as edited so far) gets them: the port, and the client as a single address.
fn extend(
    plan: &mut Plan,
    original: &[Rule],
    work: &mut [Rule],
    matching: &[usize],
    asked: &Asked,
    said: &Said,
) {
    let mut best: Option<(usize, u8)> = None;
    for &i in matching {
        let Some(covered) = covers(&work[i], asked.client) else {
            continue;
        };
        let cost = u8::from(!work[i].ports.contains(&asked.port)) + u8::from(!covered);
        if best.is_none_or(|(_, b)| cost < b) {
            best = Some((i, cost));
        }
    }
    let Some((i, _)) = best else {
        plan.refused.push(format!(
            "{}: every rule naming it limits clients, and the line(s) carry no client address to add ({} line(s))",
            authority(asked),
            said.lines
        ));
        return;
    };
    let edit = plan.edits.entry(i).or_default();
    if !original[i].ports.contains(&asked.port) {
        *edit.ports.entry(asked.port).or_default() += said.lines;
        if !work[i].ports.contains(&asked.port) {
            work[i].ports.push(asked.port);
        }
    }
    if let (Some(client), Some(false)) = (asked.client, covers(&original[i], asked.client)) {
        let net = IpNet::from(client);
        *edit.clients.entry(net).or_default() += said.lines;
        if covers(&work[i], asked.client) == Some(false) {
            work[i].clients.push(net);
        }
    }
    plan.covered.push((asked.clone(), said.host.clone()));
}

/// A name no rule covers goes onto an existing rule that holds a sibling (same parent) when
/// that rule's ports are exactly those the name was asked on, its clients cover every client
/// that asked, and it requires SNI: the name then gets no port it wasn't asked on, and the
/// rule's client limit besides.
fn onto_sibling(
    plan: &mut Plan,
    original: &[Rule],
    work: &mut [Rule],
    name: &str,
    group: &Group,
) -> bool {
    let family = parent(name);
    let fits = |rule: &Rule| {
        rule.tls == TlsRequirement::RequireSni
            && rule.ports.iter().copied().collect::<BTreeSet<u16>>() == group.ports
            && group.clients.iter().all(|c| covers(rule, *c) == Some(true))
    };
    for (i, rule) in work.iter_mut().enumerate().take(original.len()) {
        if !fits(rule) {
            continue;
        }
        let sibling = rule.hosts.iter().find_map(|p| match p.kind() {
            PatternKind::Exact(h) if h.as_str() != name && parent(h.as_str()) == family => {
                Some(h.as_str().to_owned())
            }
            _ => None,
        });
        let (Some(sibling), Ok(pattern)) = (sibling, HostPattern::parse(name)) else {
            continue;
        };
        rule.hosts.push(pattern);
        let edit = plan.edits.entry(i).or_default();
        edit.hosts.insert(name.to_owned(), (group.lines, sibling));
        plan.covered.extend(group.asked.iter().cloned());
        return true;
    }
    false
}

/// The flag for names under one parent that only a wildcard would cover, if worth one.
fn flag(parent: &str, count: usize) -> Option<String> {
    let shared = shared_parent(parent);
    (shared || count >= MANY).then(|| {
        format!(
            "FLAG: {count} name(s) under {parent}; only a wildcard like *.{parent} would cover them all, and {}. Prefer the exact names{}.",
            if shared {
                "anyone can register a name there (exfiltration path)"
            } else {
                "a wildcard admits names nobody reviewed"
            },
            if parent.ends_with("amazonaws.com") {
                " or a VPC endpoint"
            } else {
                ""
            },
        )
    })
}

fn unique(taken: &mut BTreeSet<String>, stem: &str) -> String {
    let mut name = stem.to_owned();
    let mut n = 2;
    while taken.contains(&name) {
        name = format!("{stem}-{n}");
        n += 1;
    }
    taken.insert(name.clone());
    name
}

/// `host:port`, with brackets for IPv6.
pub(super) fn authority(asked: &Asked) -> String {
    if asked.host.contains(':') {
        format!("[{}]:{}", asked.host, asked.port)
    } else {
        format!("{}:{}", asked.host, asked.port)
    }
}
