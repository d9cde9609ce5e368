//! The policy decision, in-process: a config with N rules (half exact names, half
//! `*.suffix` patterns) built with `Config::from_yaml`, then `policy.decide` in a loop.

use std::hint::black_box;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use egress_proxy::config::Config;
use egress_proxy::policy::{host::parse_host, Host, Request};

pub struct DecideResult {
    pub rules: usize,
    pub build_ms: f64,
    pub hit_ns: f64,
    pub miss_ns: f64,
}

fn yaml(rules: usize) -> String {
    let mut y = String::from("listeners:\n  explicit: 127.0.0.1:3128\nallow:\n");
    for i in 0..rules {
        if i % 2 == 0 {
            y += &format!(
                "  - name: r{i}\n    hosts: [h{i}.exact.bench-rules.example]\n    ports: [443]\n"
            );
        } else {
            y += &format!("  - name: r{i}\n    hosts: ['*.s{i}.suffix.bench-rules.example']\n    ports: [443]\n");
        }
    }
    y
}

/// 1,024 distinct names whatever the rule count (so the query set's cache footprint is the
/// same), spread over the rules: each matches one rule (`hit`) or none.
fn names(rules: usize, hit: bool) -> Vec<Host> {
    const DISTINCT: usize = 1024;
    (0..DISTINCT)
        .map(|k| {
            let i = if rules >= DISTINCT {
                k * rules / DISTINCT
            } else {
                k % rules
            };
            let name = match (hit, i % 2 == 0) {
                (true, true) => format!("h{i}.exact.bench-rules.example"),
                (true, false) => format!("a{k}.v2.s{i}.suffix.bench-rules.example"),
                (false, true) => format!("h{i}x{k}.exact.bench-other.example"),
                (false, false) => format!("a{k}.v2.s{i}.suffix.bench-other.example"),
            };
            parse_host(&name).expect("bench host name")
        })
        .collect()
}

/// ns per decision over up to `count` lookups or `limit`, whichever comes first.
fn time_decisions(
    config: &Config,
    hosts: &[Host],
    want_allowed: bool,
    count: usize,
    limit: Duration,
) -> f64 {
    let client: IpAddr = "10.0.0.1".parse().unwrap();
    // Check once that the names do what they are meant to.
    for host in hosts {
        let v = config.policy.decide(&Request {
            client,
            host,
            port: 443,
            principal: None,
        });
        assert_eq!(
            v.allowed, want_allowed,
            "bench name {host} decided unexpectedly"
        );
    }
    let deadline = Instant::now() + limit;
    let start = Instant::now();
    let mut done = 0usize;
    'outer: while done < count {
        for _ in 0..4096 {
            let host = &hosts[done % hosts.len()];
            let v = config.policy.decide(black_box(&Request {
                client,
                host,
                port: 443,
                principal: None,
            }));
            black_box(v);
            done += 1;
            if done >= count {
                break 'outer;
            }
        }
        if Instant::now() > deadline {
            break;
        }
    }
    start.elapsed().as_nanos() as f64 / done as f64
}

/// A policy under test: rule count, build time (ms), the config, names that hit, names that miss.
type Built = (usize, f64, Config, Vec<Host>, Vec<Host>);

/// Every rule count in `counts`, `reps` times, the counts interleaved within each repetition
/// so that drift (other load on the machine) lands on all of them alike.
pub fn run(counts: &[usize], count: usize, reps: usize) -> Vec<DecideResult> {
    let limit = Duration::from_secs(5);
    let built: Vec<Built> = counts
        .iter()
        .map(|&rules| {
            let text = yaml(rules);
            let t = Instant::now();
            let config = Config::from_yaml(&text)
                .unwrap_or_else(|e| panic!("bench config with {rules} rules: {e}"));
            let build_ms = t.elapsed().as_secs_f64() * 1e3;
            (
                rules,
                build_ms,
                config,
                names(rules, true),
                names(rules, false),
            )
        })
        .collect();
    let mut hit = vec![Vec::new(); built.len()];
    let mut miss = vec![Vec::new(); built.len()];
    for _ in 0..reps {
        for (k, (_, _, config, hits, misses)) in built.iter().enumerate() {
            hit[k].push(time_decisions(config, hits, true, count, limit));
            miss[k].push(time_decisions(config, misses, false, count, limit));
        }
    }
    built
        .iter()
        .enumerate()
        .map(|(k, (rules, build_ms, ..))| DecideResult {
            rules: *rules,
            build_ms: *build_ms,
            hit_ns: crate::report::median(&hit[k]),
            miss_ns: crate::report::median(&miss[k]),
        })
        .collect()
}
