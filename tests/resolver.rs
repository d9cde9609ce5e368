//! The resolver against a real DNS server on loopback (`common/dns.rs`): `resolver.nameservers`
//! is where queries go, each failure reads as a sentence in `check`'s output, and answers are
//! cached for their TTL under the configured caps. Every query goes to 127.0.0.1 only.

#[path = "common/dns.rs"]
mod dns;

use std::net::IpAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use dns::{Answer, DnsServer};
use egress_proxy::config::{DnsCache, ResolverSettings};
use egress_proxy::policy::{host, Host, HostName};
use egress_proxy::resolve::{DnsFailure, Resolver};
use hickory_resolver::proto::rr::RecordType;

const BIN: &str = env!("CARGO_BIN_EXE_egress-proxy");

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn name(text: &str) -> HostName {
    match host::parse_host(text).unwrap() {
        Host::Name(n) => n,
        Host::Ip(_) => panic!("{text} is an address"),
    }
}

/// A resolver asking only `server`. The timeout is generous: only a silent name may meet it,
/// however busy the machine.
fn resolver(server: &DnsServer, cache: DnsCache) -> Resolver {
    Resolver::from_settings(&ResolverSettings {
        nameservers: vec![server.addr],
        timeout: Duration::from_secs(5),
        attempts: 2,
        cache,
        ..ResolverSettings::default()
    })
}

/// `egress-proxy check` with a config whose resolver asks `server` (generous timeout unless
/// `extra` sets one); exit code, stdout and stderr.
fn check(server: &DnsServer, extra: &str, target: &str) -> (Option<i32>, String) {
    let config = format!(
        "listeners: {{ explicit: 127.0.0.1:0 }}
allow:
  - name: dns
    hosts: [a.dns.test, hosts.dns.test, nx.dns.test, empty.dns.test, fail.dns.test,
            refused.dns.test, silent.dns.test, big.dns.test, imds.dns.test, unknown.dns.test]
upstream: {{ allow_cidrs: [127.0.0.0/8] }}
resolver:
  nameservers: [{}]
{extra}",
        server.addr
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("egress.yaml");
    std::fs::write(&path, config).unwrap();
    let out = Command::new(BIN)
        .args(["check", "--config", path.to_str().unwrap(), target])
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn zone() -> DnsServer {
    DnsServer::start(&[
        ("a.dns.test", Answer::Addresses(vec![ip("127.0.0.7")], 60)),
        (
            "hosts.dns.test",
            Answer::Addresses(vec![ip("127.0.0.8")], 60),
        ),
        ("nx.dns.test", Answer::NxDomain(60)),
        ("empty.dns.test", Answer::NoData(60)),
        ("fail.dns.test", Answer::ServFail),
        ("refused.dns.test", Answer::Refused),
        ("silent.dns.test", Answer::Silent),
        ("big.dns.test", Answer::TruncatedOverUdp(ip("127.0.0.9"))),
        (
            "imds.dns.test",
            Answer::Addresses(vec![ip("169.254.169.254")], 60),
        ),
    ])
}

#[test]
fn check_resolves_through_the_configured_nameserver() {
    let server = zone();
    let (code, out) = check(&server, "", "a.dns.test:443");
    assert_eq!(code, Some(0), "{out}");
    assert!(out.starts_with("allow reason=rule rule=dns"), "{out}");
    assert!(out.contains("upstream=[127.0.0.7:443]"), "{out}");
    assert!(server.queries("a.dns.test", RecordType::A) >= 1);
}

#[test]
fn resolver_hosts_win_over_dns() {
    let server = zone();
    let (code, out) = check(
        &server,
        "  hosts: { hosts.dns.test: 127.0.0.42 }\n",
        "hosts.dns.test:443",
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("upstream=[127.0.0.42:443]"), "{out}");
    assert_eq!(server.queries("hosts.dns.test", RecordType::A), 0);
}

#[test]
fn names_the_server_does_not_know_fail_there_and_nowhere_else() {
    let server = zone();
    let (code, out) = check(&server, "", "unknown.dns.test:443");
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("(unknown.dns.test has no A/AAAA records (NXDOMAIN))"),
        "{out}"
    );
    assert!(server.queries("unknown.dns.test", RecordType::A) >= 1);
}

#[test]
fn each_dns_failure_reads_as_a_sentence_in_check() {
    let server = zone();
    let at = server.addr;
    for (target, sentence) in [
        (
            "nx.dns.test",
            "nx.dns.test has no A/AAAA records (NXDOMAIN)".to_owned(),
        ),
        (
            "empty.dns.test",
            "empty.dns.test has no A/AAAA records (the name exists but has no addresses)"
                .to_owned(),
        ),
        (
            "fail.dns.test",
            "fail.dns.test: SERVFAIL from the DNS server".to_owned(),
        ),
        (
            "refused.dns.test",
            "refused.dns.test: DNS server refused the query (REFUSED)".to_owned(),
        ),
        (
            "silent.dns.test",
            format!("silent.dns.test: DNS server {at} did not answer within 300ms (2 attempts)"),
        ),
    ] {
        let extra = if target.starts_with("silent") {
            "  timeout: 300ms\n  attempts: 2\n"
        } else {
            "  timeout: 5s\n"
        };
        let (code, out) = check(&server, extra, &format!("{target}:443"));
        assert_eq!(code, Some(1), "{out}");
        assert!(out.starts_with("deny reason=dns_failure rule=dns"), "{out}");
        assert!(out.contains(&format!("({sentence})")), "{target}: {out}");
        assert!(!out.contains("Some(") && !out.contains(" {"), "{out}");
    }
}

#[test]
fn a_truncated_answer_is_asked_again_over_tcp() {
    let server = zone();
    let (code, out) = check(&server, "", "big.dns.test:443");
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("upstream=[127.0.0.9:443]"), "{out}");
    assert!(server.tcp_queries("big.dns.test") >= 1);
}

#[test]
fn an_answer_in_a_forbidden_range_is_refused_not_dialled() {
    let server = zone();
    let (code, out) = check(&server, "", "imds.dns.test:443");
    assert_eq!(code, Some(1), "{out}");
    assert!(out.starts_with("deny reason=upstream_denied_ip"), "{out}");
    assert!(out.contains("169.254.169.254"), "{out}");
}

#[tokio::test]
async fn an_answer_is_cached_for_its_ttl() {
    let server =
        DnsServer::start(&[("a.dns.test", Answer::Addresses(vec![ip("127.0.0.7")], 3600))]);
    let resolver = resolver(&server, DnsCache::default());
    let (first, _) = resolver.resolve(&name("a.dns.test")).await;
    assert_eq!(first.unwrap(), vec![ip("127.0.0.7")]);
    assert!(server.queries("a.dns.test", RecordType::A) >= 1);
    // A fresh query would now get .8: the old answer can only come from the cache.
    server.set("a.dns.test", Answer::Addresses(vec![ip("127.0.0.8")], 3600));
    let (second, _) = resolver.resolve(&name("a.dns.test")).await;
    assert_eq!(second.unwrap(), vec![ip("127.0.0.7")]);
}

/// Reloads rebuild the resolver from the new config: with the same DNS settings the cache
/// carries over (no query, the old answer); with other settings it starts empty.
#[tokio::test]
async fn a_reload_keeps_the_cache_only_when_the_dns_settings_are_unchanged() {
    let server =
        DnsServer::start(&[("a.dns.test", Answer::Addresses(vec![ip("127.0.0.7")], 3600))]);
    let settings = ResolverSettings {
        nameservers: vec![server.addr],
        timeout: Duration::from_secs(5),
        attempts: 2,
        ..ResolverSettings::default()
    };
    let first = Resolver::keeping(&settings, None);
    assert_eq!(
        first.resolve(&name("a.dns.test")).await.0.unwrap(),
        vec![ip("127.0.0.7")]
    );
    server.set("a.dns.test", Answer::Addresses(vec![ip("127.0.0.8")], 3600));

    // Same DNS settings, other static entries: the cached answer, static entries anew.
    let mut hosts_changed = settings.clone();
    hosts_changed
        .hosts
        .insert("pinned.dns.test".into(), vec![ip("127.0.0.9")]);
    let kept = Resolver::keeping(&hosts_changed, Some(&first));
    assert_eq!(
        kept.resolve(&name("a.dns.test")).await.0.unwrap(),
        vec![ip("127.0.0.7")]
    );
    assert_eq!(
        kept.resolve(&name("pinned.dns.test")).await.0.unwrap(),
        vec![ip("127.0.0.9")]
    );

    // Any DNS setting changed: a new resolver, which asks again.
    for changed in [
        ResolverSettings {
            attempts: 3,
            ..settings.clone()
        },
        ResolverSettings {
            cache: DnsCache {
                max_ttl: Duration::from_secs(60),
                ..DnsCache::default()
            },
            ..settings.clone()
        },
    ] {
        let fresh = Resolver::keeping(&changed, Some(&kept));
        assert_eq!(
            fresh.resolve(&name("a.dns.test")).await.0.unwrap(),
            vec![ip("127.0.0.8")]
        );
    }
}

#[tokio::test]
async fn a_long_ttl_is_cut_to_max_ttl() {
    let server =
        DnsServer::start(&[("a.dns.test", Answer::Addresses(vec![ip("127.0.0.7")], 3600))]);
    let cache = DnsCache {
        max_ttl: Duration::from_secs(1),
        ..DnsCache::default()
    };
    let resolver = resolver(&server, cache);
    let (first, _) = resolver.resolve(&name("a.dns.test")).await;
    // The answer was cached before resolve returned, so from here the cap runs out within 1s.
    let cached_by = Instant::now();
    assert_eq!(first.unwrap(), vec![ip("127.0.0.7")]);
    let asked = server.queries("a.dns.test", RecordType::A);
    server.set("a.dns.test", Answer::Addresses(vec![ip("127.0.0.8")], 3600));
    // Only ever "at least": past the cap a lookup asks again, however late it runs.
    tokio::time::sleep(Duration::from_millis(1200).saturating_sub(cached_by.elapsed())).await;
    let (later, _) = resolver.resolve(&name("a.dns.test")).await;
    assert_eq!(later.unwrap(), vec![ip("127.0.0.8")]);
    assert!(server.queries("a.dns.test", RecordType::A) > asked);
}

#[tokio::test]
async fn a_zero_ttl_is_never_lengthened() {
    let server = DnsServer::start(&[(
        "moving.dns.test",
        Answer::Addresses(vec![ip("127.0.0.7")], 0),
    )]);
    let resolver = resolver(&server, DnsCache::default());
    let (first, _) = resolver.resolve(&name("moving.dns.test")).await;
    assert_eq!(first.unwrap(), vec![ip("127.0.0.7")]);
    server.set(
        "moving.dns.test",
        Answer::Addresses(vec![ip("127.0.0.8")], 0),
    );
    let (second, _) = resolver.resolve(&name("moving.dns.test")).await;
    assert_eq!(second.unwrap(), vec![ip("127.0.0.8")]);
}

#[tokio::test]
async fn a_cache_of_size_zero_keeps_nothing() {
    let server =
        DnsServer::start(&[("a.dns.test", Answer::Addresses(vec![ip("127.0.0.7")], 3600))]);
    let cache = DnsCache {
        size: 0,
        ..DnsCache::default()
    };
    let resolver = resolver(&server, cache);
    resolver.resolve(&name("a.dns.test")).await.0.unwrap();
    server.set("a.dns.test", Answer::Addresses(vec![ip("127.0.0.8")], 3600));
    let (second, _) = resolver.resolve(&name("a.dns.test")).await;
    assert_eq!(second.unwrap(), vec![ip("127.0.0.8")]);
}

#[tokio::test]
async fn no_such_name_is_cached_only_up_to_negative_ttl() {
    let server = DnsServer::start(&[("nx.dns.test", Answer::NxDomain(3600))]);
    // A day's cap: the SOA's 3600s decides, so "still cached" cannot run out mid-test.
    let cached = resolver(
        &server,
        DnsCache {
            negative_ttl: Duration::from_secs(86_400),
            ..DnsCache::default()
        },
    );
    let uncached = resolver(
        &server,
        DnsCache {
            negative_ttl: Duration::ZERO,
            ..DnsCache::default()
        },
    );
    let first = cached.resolve(&name("nx.dns.test")).await.0.unwrap_err();
    assert_eq!(first.kind(), DnsFailure::NoRecords { rcode: "NXDOMAIN" });
    uncached.resolve(&name("nx.dns.test")).await.0.unwrap_err();
    server.set("nx.dns.test", Answer::Addresses(vec![ip("127.0.0.7")], 60));
    let again = cached.resolve(&name("nx.dns.test")).await.0.unwrap_err();
    assert_eq!(again, first);
    let (fresh, _) = uncached.resolve(&name("nx.dns.test")).await;
    assert_eq!(fresh.unwrap(), vec![ip("127.0.0.7")]);
}

#[tokio::test]
async fn failures_carry_their_kind() {
    let server = zone();
    let resolver = resolver(&server, DnsCache::default());
    for (target, kind) in [
        ("empty.dns.test", DnsFailure::NoRecords { rcode: "NOERROR" }),
        (
            "fail.dns.test",
            DnsFailure::ServerError { rcode: "SERVFAIL" },
        ),
        (
            "refused.dns.test",
            DnsFailure::ServerError { rcode: "REFUSED" },
        ),
    ] {
        let e = resolver.resolve(&name(target)).await.0.unwrap_err();
        assert_eq!(e.kind(), kind, "{target}: {e}");
        assert_eq!(e.to_string(), e.0);
    }
    let impatient = Resolver::from_settings(&ResolverSettings {
        nameservers: vec![server.addr],
        timeout: Duration::from_millis(200),
        attempts: 1,
        ..ResolverSettings::default()
    });
    let e = impatient
        .resolve(&name("silent.dns.test"))
        .await
        .0
        .unwrap_err();
    assert_eq!(e.kind(), DnsFailure::Timeout, "{e}");
    assert!(
        e.0.ends_with("did not answer within 200ms (1 attempt)"),
        "{e}"
    );
    let none = Resolver::static_only(Default::default());
    let e = none.resolve(&name("a.dns.test")).await.0.unwrap_err();
    assert_eq!(e.kind(), DnsFailure::Unavailable, "{e}");
}
