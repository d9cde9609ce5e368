//! One pipeline for every request: every request that was read gets exactly one decision
//! line whichever way it ends, `check` decides as the proxy does, and bad input never costs
//! more than a clear error. Real binary, real sockets.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};

use common::*;

/// Names that resolve to a black hole, with a connect budget far beyond any test's wait.
fn black_hole_config(hole: &BlackHole) -> String {
    let port = hole.addr.port();
    format!(
        "allow:
  - {{ name: hole, hosts: [hole.test], ports: [{port}], tls: any }}
upstream: {{ allow_cidrs: [127.0.0.0/8] }}
resolver: {{ hosts: {{ hole.test: 127.0.0.1 }} }}
timeouts: {{ upstream_connect: 300s }}
"
    )
}

#[test]
fn a_client_that_leaves_while_the_proxy_dials_still_gets_its_one_line() {
    let hole = BlackHole::new();
    let port = hole.addr.port();
    // Not redirected, the transparent listener dials the black hole's port too.
    let mut proxy = Proxy::start_with_listeners(
        |l| l.yaml_with_default_ports(443, port),
        &black_hole_config(&hole),
    );
    let requests = [
        (
            proxy.explicit,
            "CONNECT",
            "explicit",
            format!("CONNECT hole.test:{port} HTTP/1.1\r\nHost: hole.test:{port}\r\n\r\n"),
        ),
        (
            proxy.explicit,
            "GET",
            "explicit",
            format!("GET http://hole.test:{port}/a HTTP/1.1\r\nHost: hole.test:{port}\r\n\r\n"),
        ),
        (
            proxy.transparent_http,
            "GET",
            "transparent_http",
            format!("GET /t HTTP/1.1\r\nHost: hole.test:{port}\r\n\r\n"),
        ),
    ];
    for (addr, method, listener, request) in requests {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        // The dial can't finish: once it is under way, the client leaves.
        hole.wait_dialling(1);
        drop(s);
        let line = proxy.decision(|v| v["method"] == method && v["listener"] == listener);
        assert_eq!(line["host"], "hole.test", "{line}");
        assert_eq!(line["rule"], "hole", "{line}");
        assert!(line["upstream"].is_null(), "nothing was connected: {line}");
        let message = line["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("ended while connecting to the upstream"),
            "{line}"
        );
        // The proxy gave up the dial with the request.
        hole.wait_dialling_ends();
    }
    // Exactly one line each, and nothing else, once the proxy has drained.
    let rest = proxy.stop_and_collect();
    assert!(rest.is_empty(), "more lines than requests: {rest:#?}");
}

#[test]
fn report_mode_check_agrees_with_the_tunnel_and_exits_as_the_verdict_says() {
    let origin = TlsOrigin::start(&["origin.test", "other.test"]);
    let port = origin.addr.port();
    let config = format!(
        "mode: report
listeners: {{ explicit: 127.0.0.1:0 }}
allow:
  - {{ name: origin, hosts: [origin.test], ports: [{port}] }}
upstream: {{ allow_cidrs: [127.0.0.0/8] }}
resolver: {{ hosts: {{ origin.test: 127.0.0.1 }} }}
"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("egress.yaml");
    std::fs::write(&path, &config).unwrap();
    let check = |args: &[&str]| {
        let out = Command::new(BIN)
            .args(["check", "--config", path.to_str().unwrap()])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    // A would-be denial is a denial to `check`: exit 1, marked unenforced.
    let (code, out) = check(&["--no-resolve", "nowhere.test:443"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.starts_with("deny reason=no_rule"), "{out}");
    assert!(out.contains("enforced=false"), "{out}");
    // An SNI mismatch is what the tunnel makes of it: a would-be denial, not an enforced one.
    let target = format!("origin.test:{port}");
    let (code, out) = check(&["--sni", "other.test", &target]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.starts_with("deny reason=sni_mismatch"), "{out}");
    assert!(out.contains("enforced=false"), "{out}");
    assert!(
        out.contains(&format!("upstream=[127.0.0.1:{port}]")),
        "{out}"
    );
    let (code, out) = check(&["--sni", "origin.test", &target]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.starts_with("allow reason=rule rule=origin"), "{out}");
}

#[test]
fn report_mode_tunnel_logs_the_sni_mismatch_check_predicts() {
    let origin = TlsOrigin::start(&["origin.test", "other.test"]);
    let port = origin.addr.port();
    let proxy = Proxy::start(&format!(
        "mode: report
allow:
  - {{ name: origin, hosts: [origin.test], ports: [{port}] }}
upstream: {{ allow_cidrs: [127.0.0.0/8] }}
resolver: {{ hosts: {{ origin.test: 127.0.0.1 }} }}
"
    ));
    let (mut s, head) = connect(proxy.explicit, &format!("origin.test:{port}"));
    assert_eq!(status_of(&head), 200);
    s.write_all(&rustls_hello("other.test")).unwrap();
    let line = proxy.decision(|v| v["host"] == "origin.test");
    assert_eq!(line["reason"], "sni_mismatch", "{line}");
    assert_eq!(line["decision"], "deny", "{line}");
    assert_eq!(line["enforced"], false, "{line}");
}

#[test]
fn a_forward_whose_upstream_fails_before_answering_is_a_denial_with_no_close_line() {
    // Accepts, reads the request, and closes without a response.
    let origin = Origin::start(|mut s| {
        let mut buf = [0u8; 1024];
        let _ = s.read(&mut buf);
    });
    let port = origin.addr.port();
    let mut proxy = Proxy::start(&format!(
        "allow:
  - {{ name: web, hosts: [mute.test], ports: [{port}], tls: any }}
upstream: {{ allow_cidrs: [127.0.0.0/8] }}
resolver: {{ hosts: {{ mute.test: 127.0.0.1 }} }}
"
    ));
    let (status, text) = http_get(
        proxy.explicit,
        &format!("GET http://mute.test:{port}/ HTTP/1.1\r\nHost: mute.test:{port}\r\nConnection: close\r\n\r\n"),
    );
    assert_eq!(status, 502, "{text}");
    let lines = proxy.stop_and_collect();
    let mine: Vec<_> = lines.iter().filter(|v| v["host"] == "mute.test").collect();
    assert_eq!(mine.len(), 1, "one line, no close line: {mine:#?}");
    assert_eq!(mine[0]["event"], "decision");
    assert_eq!(mine[0]["decision"], "deny", "{}", mine[0]);
    assert_eq!(mine[0]["reason"], "upstream_unreachable", "{}", mine[0]);
    assert_eq!(mine[0]["upstream"], format!("127.0.0.1:{port}"));
    assert_eq!(origin.accepted(), 1);
}

#[test]
fn transparent_http_refuses_an_absolute_uri_that_disagrees_with_host() {
    let origin = HttpOrigin::start();
    let port = origin.addr.port();
    let proxy = Proxy::start_with_listeners(
        |l| l.yaml_with_default_ports(443, port),
        &format!(
            "allow:
  - {{ name: web, hosts: [origin.test], ports: [{port}], tls: any }}
upstream: {{ allow_cidrs: [127.0.0.0/8] }}
resolver: {{ hosts: {{ origin.test: 127.0.0.1, other.test: 127.0.0.1 }} }}
"
        ),
    );
    let (status, text) = http_get(
        proxy.transparent_http,
        &format!("GET http://other.test:{port}/ HTTP/1.1\r\nHost: origin.test:{port}\r\nConnection: close\r\n\r\n"),
    );
    assert_eq!(status, 400, "{text}");
    let line = proxy.decision(|v| v["listener"] == "transparent_http");
    assert_eq!(line["reason"], "bad_request", "{line}");
    assert!(
        line["message"].as_str().unwrap().contains("another host"),
        "{line}"
    );
    // The same request with agreeing names goes through, judged on them.
    let (status, text) = http_get(
        proxy.transparent_http,
        &format!("GET http://origin.test:{port}/x HTTP/1.1\r\nHost: origin.test:{port}\r\nConnection: close\r\n\r\n"),
    );
    assert_eq!(status, 200, "{text}");
    assert_eq!(origin.accepted(), 1);
}

#[test]
fn commands_exit_as_their_outcome_says_when_stderr_is_a_closed_pipe() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "allow: [\n").unwrap();
    for command in ["validate", "run", "check"] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader); // every write to stderr now fails with EPIPE
        let mut args = vec![command, "--config", bad.to_str().unwrap()];
        if command == "check" {
            args.push("example.test");
        }
        let status = Command::new(BIN)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(writer)
            .status()
            .unwrap();
        assert_eq!(status.code(), Some(2), "{command}");
    }
}

#[test]
fn deny_cidrs_refuse_every_ipv6_form_that_carries_a_denied_ipv4() {
    // `check` runs the proxy's own resolve-and-check step and never dials: even if the
    // filter failed, nothing would be sent to these addresses.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    std::fs::write(
        &path,
        "listeners: { explicit: 127.0.0.1:0 }
allow:
  - { name: pkgs, hosts: [nat64.test, nat64local.test, sixtofour.test, teredo.test, dns64.test, public.test] }
upstream: { deny_cidrs: [44.0.0.0/8] }
resolver:
  hosts:
    nat64.test: ['64:ff9b::2c00:1']
    nat64local.test: ['64:ff9b:1:2c00:1::']
    sixtofour.test: ['2002:2c00:1::1']
    teredo.test: ['2001:0:4136:e378:8000:63bf:d3ff:fffe']
    dns64.test: [44.0.0.1, '64:ff9b::2c00:1']
    public.test: ['64:ff9b::2d00:1']
",
    )
    .unwrap();
    let check = |target: &str| {
        let out = Command::new(BIN)
            .args(["check", "--config", path.to_str().unwrap(), target])
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    for name in [
        "nat64.test",
        "nat64local.test",
        "sixtofour.test",
        "teredo.test",
        "dns64.test",
    ] {
        let (code, text) = check(name);
        assert_eq!(code, Some(1), "{name}: {text}");
        assert!(text.contains("reason=upstream_denied_ip"), "{name}: {text}");
        assert!(text.contains("44.0.0.0/8"), "{name}: {text}");
    }
    // 45.0.0.1 is outside the operator's range: its NAT64 form passes.
    let (code, text) = check("public.test");
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("[64:ff9b::2d00:1]:443"), "{text}");
}
