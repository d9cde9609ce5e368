//! Operating the proxy: reload, drain, metrics, health, report mode, `suggest` — with the
//! real binary and real sockets.

mod common;
#[path = "common/dns.rs"]
mod dns;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

fn rules(names: &[&str], port: u16) -> String {
    let hosts = names.join(", ");
    let resolver: Vec<String> = names.iter().map(|n| format!("{n}: 127.0.0.1")).collect();
    format!(
        "allow:
  - name: raw
    hosts: [{hosts}]
    ports: [{port}]
    tls: any
upstream: {{ allow_cidrs: [127.0.0.0/8] }}
resolver: {{ hosts: {{ {} }} }}
timeouts: {{ drain: 3s }}
",
        resolver.join(", ")
    )
}

/// CONNECT to `target` and check the echo works: an open, working tunnel.
fn open_tunnel(proxy: &Proxy, target: &str) -> TcpStream {
    let (mut s, head) = connect(proxy.explicit, target);
    assert_eq!(status_of(&head), 200, "{head}");
    s.write_all(b"hi").unwrap();
    let mut b = [0u8; 2];
    s.read_exact(&mut b).unwrap();
    s
}

#[test]
fn health_endpoints_answer_on_the_admin_listener_only() {
    let proxy = Proxy::start(&rules(&["a.test"], 443));
    assert_eq!(proxy.admin_get("/healthz").0, 200);
    assert_eq!(proxy.admin_get("/readyz").0, 200);
    assert_eq!(proxy.admin_get("/nope").0, 404);
    // The proxy listener does not serve admin paths, and can't be pointed at the admin port.
    let (status, _) = http_get(proxy.explicit, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status, 400);
    // A rule can't open the way to the proxy's own listeners: they are on the deny list even
    // when upstream.allow_cidrs covers their address.
    let admin = proxy.admin.port();
    proxy.rewrite_config(&rules(&["self.test"], admin));
    let deadline = Instant::now() + Duration::from_secs(10);
    let line = loop {
        let (_s, head) = connect(proxy.explicit, &format!("self.test:{admin}"));
        if status_of(&head) != 403 {
            assert_eq!(status_of(&head), 502, "{head}");
            break proxy.decision(|v| {
                v["host"] == "self.test" && v["decision"] == "deny" && v["reason"] != "no_rule"
            });
        }
        assert!(Instant::now() < deadline, "reload never applied");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(line["reason"], "upstream_denied_ip");
    assert!(
        line["message"].as_str().unwrap().contains("own listeners"),
        "{line}"
    );
}

#[test]
fn drain_lets_an_open_tunnel_finish_refuses_new_connections_and_exits_zero() {
    let echo = EchoOrigin::start();
    let port = echo.addr.port();
    let mut proxy = Proxy::start(&rules(&["a.test"], port));
    let mut tunnel = open_tunnel(&proxy, &format!("a.test:{port}"));
    proxy.signal("TERM");
    // Readiness turns 503 so the load balancer stops sending new connections.
    let deadline = Instant::now() + Duration::from_secs(5);
    while proxy.admin_get("/readyz").0 != 503 {
        assert!(Instant::now() < deadline, "/readyz never turned 503");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        TcpStream::connect(proxy.explicit).is_err(),
        "new connections are refused while draining"
    );
    // The open tunnel still moves data, then finishes on its own.
    tunnel.write_all(b"still here").unwrap();
    let mut b = [0u8; 10];
    tunnel.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"still here");
    tunnel.shutdown(std::net::Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    tunnel.read_to_end(&mut rest).unwrap();
    assert_eq!(proxy.wait_exit(Duration::from_secs(30)), Some(0));
    let close = proxy.close_line(|_| true);
    assert_eq!(close["bytes_up"], 12);
    assert_eq!(close["bytes_down"], 12);
}

#[test]
fn drain_deadline_closes_lingering_tunnels_with_a_close_line() {
    let echo = EchoOrigin::start();
    let port = echo.addr.port();
    let mut proxy = Proxy::start(&rules(&["a.test"], port)); // drain: 3s
    let mut tunnel = open_tunnel(&proxy, &format!("a.test:{port}"));
    let started = Instant::now();
    proxy.signal("TERM");
    let mut rest = Vec::new();
    tunnel
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let _ = tunnel.read_to_end(&mut rest);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(2500),
        "closed before the drain deadline: {waited:?}"
    );
    assert_eq!(proxy.wait_exit(Duration::from_secs(30)), Some(0));
    let close = proxy.close_line(|_| true);
    assert_eq!(close["bytes_up"], 2);
}

#[test]
fn file_reload_applies_a_good_config_and_keeps_the_last_good_one_on_error() {
    let echo = EchoOrigin::start();
    let port = echo.addr.port();
    let mut proxy = Proxy::start(&rules(&["a.test"], port));
    let (_s, head) = connect(proxy.explicit, &format!("b.test:{port}"));
    assert_eq!(status_of(&head), 403);
    let errors_before = proxy.metric_sum("egress_config_reloads_total{result=\"error\"}");

    proxy.rewrite_config(&rules(&["a.test", "b.test"], port));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_s, head) = connect(proxy.explicit, &format!("b.test:{port}"));
        if status_of(&head) == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "new config never took effect");
        std::thread::sleep(Duration::from_millis(200));
    }
    // The line is written just after the new state is in force: wait for it, don't peek.
    proxy.wait_stderr(&["config reloaded"], Duration::from_secs(30));

    // A broken config: named field in the error, old policy stays, error counter rises.
    let broken = rules(&["a.test", "b.test"], port).replace(
        "upstream:",
        "  - name: broken\n    hosts: ['bad host']\nupstream:",
    );
    proxy.rewrite_config(&broken);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !proxy.stderr().contains("config reload failed") {
        assert!(
            Instant::now() < deadline,
            "reload error never logged; stderr:\n{}",
            proxy.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        proxy.stderr().contains("allow[1].hosts[0]"),
        "{}",
        proxy.stderr()
    );
    let (_s, head) = connect(proxy.explicit, &format!("b.test:{port}"));
    assert_eq!(status_of(&head), 200, "the last good config keeps serving");
    assert!(proxy.metric_sum("egress_config_reloads_total{result=\"error\"}") > errors_before);
    // SIGHUP re-reads even an unchanged file.
    reload_to(&proxy, &rules(&["a.test"], port));
    assert!(proxy.metric_sum("egress_config_last_reload_success_timestamp_seconds") > 1.7e9);
}

/// Rewrites the config, sends SIGHUP and waits until the new config is in force.
fn reload_to(proxy: &Proxy, config: &str) {
    let successes = proxy.metric_sum("egress_config_reloads_total{result=\"success\"}");
    proxy.rewrite_config(config);
    proxy.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(30);
    while proxy.metric_sum("egress_config_reloads_total{result=\"success\"}") <= successes {
        assert!(Instant::now() < deadline, "reload never applied");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_reload_keeps_dns_answers_unless_the_dns_settings_change() {
    use hickory_resolver::proto::rr::RecordType;
    let echo = EchoOrigin::start();
    let port = echo.addr.port();
    let server = dns::DnsServer::start(&[(
        "cached.test",
        dns::Answer::Addresses(vec![echo.addr.ip()], 3600),
    )]);
    let config = |help: &str, attempts: u32| {
        format!(
            "allow:
  - {{ name: cached, hosts: [cached.test], ports: [{port}], tls: any }}
upstream: {{ allow_cidrs: [127.0.0.0/8] }}
resolver: {{ nameservers: [\"{}\"], timeout: 5s, attempts: {attempts} }}
deny_help: \"{help}\"
",
            server.addr
        )
    };
    let proxy = Proxy::start(&config("first", 2));
    let target = format!("cached.test:{port}");
    drop(open_tunnel(&proxy, &target));
    let asked = server.queries("cached.test", RecordType::A);
    assert!(asked >= 1);

    // Only deny_help changed: the answer comes from the cache, no query.
    reload_to(&proxy, &config("second", 2));
    drop(open_tunnel(&proxy, &target));
    assert_eq!(server.queries("cached.test", RecordType::A), asked);

    // The DNS settings changed: a new resolver, which asks.
    reload_to(&proxy, &config("third", 3));
    drop(open_tunnel(&proxy, &target));
    assert!(server.queries("cached.test", RecordType::A) > asked);
}

#[test]
fn reload_under_load_drops_no_tunnel() {
    let echo = EchoOrigin::start();
    let port = echo.addr.port();
    let proxy = Proxy::start(&rules(&["a.test"], port));
    let target = format!("a.test:{port}");
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let mut tunnel = open_tunnel(&proxy, &target);
            let stop = stop.clone();
            std::thread::spawn(move || {
                // Keep moving data for as long as the reloads go on.
                tunnel
                    .set_read_timeout(Some(Duration::from_secs(30)))
                    .unwrap();
                let chunk = vec![7u8; 16 * 1024];
                let mut back = vec![0u8; chunk.len()];
                let mut moved = 0usize;
                while !stop.load(Ordering::SeqCst) {
                    tunnel.write_all(&chunk).unwrap();
                    tunnel
                        .read_exact(&mut back)
                        .expect("tunnel dropped during reload");
                    moved += chunk.len();
                }
                moved
            })
        })
        .collect();
    for i in 0..20 {
        let names: Vec<String> = (0..=i)
            .map(|j| format!("n{j}.test"))
            .chain(["a.test".to_owned()])
            .collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let before = proxy.metric_sum("egress_config_reloads_total{result=\"success\"}");
        proxy.rewrite_config(&rules(&refs, port));
        proxy.signal("HUP");
        // Each reload is waited for: signals sent faster than they are handled coalesce.
        let deadline = Instant::now() + Duration::from_secs(30);
        while proxy.metric_sum("egress_config_reloads_total{result=\"success\"}") <= before {
            assert!(Instant::now() < deadline, "reload {i} never applied");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        assert!(w.join().expect("a tunnel broke during reloads") > 0);
    }
    assert!(proxy.metric_sum("egress_config_reloads_total{result=\"success\"}") >= 20.0);
    assert_eq!(
        proxy.metric_sum("egress_config_reloads_total{result=\"error\"}"),
        0.0
    );
}

#[test]
fn metrics_count_the_decisions_that_were_logged() {
    let echo = EchoOrigin::start();
    let port = echo.addr.port();
    let proxy = Proxy::start(&rules(&["a.test"], port));
    for _ in 0..3 {
        let t = open_tunnel(&proxy, &format!("a.test:{port}"));
        drop(t);
    }
    for _ in 0..2 {
        let (_s, head) = connect(proxy.explicit, &format!("x.test:{port}"));
        assert_eq!(status_of(&head), 403);
    }
    let (status, _) = http_get(proxy.explicit, "GARBAGE\r\n\r\n");
    assert_eq!(status, 400);
    // The writer counts a line before it writes it: once every line has been read, every
    // count is in. (Reading the metrics before that raced the writer.)
    for _ in 0..3 {
        proxy.decision(|v| v["decision"] == "allow");
        proxy.close_line(|_| true);
    }
    for _ in 0..2 {
        proxy.decision(|v| v["reason"] == "no_rule");
    }
    proxy.decision(|v| v["reason"] == "bad_request");
    let allow = proxy.metric_sum(
        r#"egress_decisions_total{decision="allow",reason="rule",rule="raw",listener="explicit",enforced="true"}"#,
    );
    let deny = proxy.metric_sum(
        r#"egress_decisions_total{decision="deny",reason="no_rule",rule="",listener="explicit",enforced="true"}"#,
    );
    let bad = proxy.metric_sum(r#"egress_decisions_total{decision="deny",reason="bad_request",rule="",listener="explicit",enforced="true"}"#);
    assert_eq!(
        (allow, deny, bad),
        (3.0, 2.0, 1.0),
        "metrics:\n{}",
        proxy.admin_get("/metrics").1
    );
    assert_eq!(
        proxy.metric_sum(r#"egress_bytes_total{direction="up"}"#),
        6.0
    );
    assert_eq!(
        proxy.metric_sum(r#"egress_bytes_total{direction="down"}"#),
        6.0
    );
    assert_eq!(
        proxy.metric_sum("egress_upstream_connect_seconds_count"),
        3.0
    );
    let text = proxy.admin_get("/metrics").1;
    for name in [
        "egress_active_connections",
        "egress_dns_seconds",
        "egress_config_reloads_total",
    ] {
        assert!(text.contains(name), "{name} missing from /metrics:\n{text}");
    }
    // Every contract metric is there from the start, with its help text, so that dashboards
    // and alarms see 0 rather than nothing.
    for name in [
        "egress_decisions_total",
        "egress_active_connections",
        "egress_bytes_total",
        "egress_config_reloads_total",
        "egress_config_last_reload_success_timestamp_seconds",
        "egress_upload_limit_total",
        "egress_decision_lines_dropped_total",
        "egress_build_info",
    ] {
        assert!(
            text.contains(&format!("# HELP {name} ")),
            "no help for {name}:\n{text}"
        );
    }
    assert!(
        text.contains(r#"egress_upload_limit_total{rule="raw"} 0"#),
        "{text}"
    );
    assert!(
        text.contains("egress_decision_lines_dropped_total 0"),
        "{text}"
    );
}

#[test]
fn report_mode_lets_would_be_denials_through_and_logs_them_unenforced() {
    let echo = EchoOrigin::start();
    let port = echo.addr.port();
    let proxy = Proxy::start(&format!(
        "mode: report\nreport_until: 2999-12-31\n{}",
        rules(&["a.test", "b.test"], port).replace("hosts: [a.test, b.test]", "hosts: [a.test]")
    ));
    let _t = open_tunnel(&proxy, &format!("b.test:{port}"));
    let line = proxy.decision(|v| v["host"] == "b.test");
    assert_eq!(line["decision"], "deny");
    assert_eq!(line["reason"], "no_rule");
    assert_eq!(line["enforced"], false);
    assert_eq!(line["upstream"], echo.addr.to_string());
}

#[test]
fn report_mode_past_its_expiry_enforces_and_says_so() {
    let echo = EchoOrigin::start();
    let port = echo.addr.port();
    let mut proxy = Proxy::start(&format!(
        "mode: report\nreport_until: 2020-01-31\n{}",
        rules(&["a.test", "b.test"], port).replace("hosts: [a.test, b.test]", "hosts: [a.test]")
    ));
    let (_s, head) = connect(proxy.explicit, &format!("b.test:{port}"));
    assert_eq!(status_of(&head), 403);
    let line = proxy.decision(|v| v["host"] == "b.test");
    assert_eq!(line["enforced"], true);
    assert!(line["message"]
        .as_str()
        .unwrap()
        .contains("report mode has ended"));
    // Said on stderr when the first request finds it ended: a pipe apart from the line's.
    proxy.wait_stderr(&["report mode ended"], Duration::from_secs(30));
    assert_eq!(echo.accepted(), 0);
}

#[test]
fn report_clients_only_report_for_their_cidr() {
    let echo = EchoOrigin::start();
    let port = echo.addr.port();
    let base =
        rules(&["a.test", "b.test"], port).replace("hosts: [a.test, b.test]", "hosts: [a.test]");
    let proxy = Proxy::start(&format!("report_clients: [127.0.0.0/8]\n{base}"));
    let _t = open_tunnel(&proxy, &format!("b.test:{port}"));
    assert_eq!(proxy.decision(|v| v["host"] == "b.test")["enforced"], false);
    let other = Proxy::start(&format!("report_clients: [10.0.64.0/19]\n{base}"));
    let (_s, head) = connect(other.explicit, &format!("b.test:{port}"));
    assert_eq!(status_of(&head), 403);
}

#[test]
fn suggest_turns_a_report_mode_log_into_an_allowlist() {
    let echo = EchoOrigin::start();
    let port = echo.addr.port();
    let proxy = Proxy::start(&format!(
        "mode: report\n{}",
        rules(&["pkgs.example.org", "x.test"], port)
            .replace("hosts: [pkgs.example.org, x.test]", "hosts: [x.test]")
    ));
    let _t = open_tunnel(&proxy, &format!("pkgs.example.org:{port}"));
    let line = proxy.decision(|v| v["host"] == "pkgs.example.org");
    let log = proxy.dir.path().join("decisions.jsonl");
    std::fs::write(&log, format!("{line}\n")).unwrap();
    let out = std::process::Command::new(BIN)
        .arg("suggest")
        .arg(&log)
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("- pkgs.example.org") && text.contains(&format!("ports: [{port}]")),
        "{text}"
    );
}

#[test]
fn a_stalled_upstream_body_is_cut_at_the_idle_timeout() {
    // Sends the response head and one byte of a longer body, then goes quiet.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = listener.accept() {
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nx");
            std::thread::sleep(Duration::from_secs(20));
        }
    });
    let proxy = Proxy::start(&rules(&["slow.test"], port).replace(
        "timeouts: { drain: 3s }",
        "timeouts: { drain: 3s, idle: 1s }",
    ));
    let mut s = TcpStream::connect(proxy.explicit).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET http://slow.test:{port}/ HTTP/1.1\r\nHost: slow.test:{port}\r\n\r\n"
    )
    .unwrap();
    let started = Instant::now();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "the stalled response was never cut"
    );
    let close = proxy.close_line(|v| v["host"] == "slow.test");
    assert!(
        close["message"]
            .as_str()
            .unwrap_or_default()
            .contains("idle"),
        "{close}"
    );
    proxy.wait_active(0.0);
}

#[test]
fn run_with_no_good_config_exits_2_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        "listeners: { explicit: 127.0.0.1:3128 }\nallow:\n  - name: x\n    hosts: ['*']\n",
    )
    .unwrap();
    let out = std::process::Command::new(BIN)
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("allow[0].hosts[0]") && stderr.contains("matches everything"),
        "{stderr}"
    );
    assert!(
        out.stdout.is_empty(),
        "no decision lines from a proxy that never started"
    );
    let out = std::process::Command::new(BIN)
        .args(["run", "--config", "/nonexistent/egress.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/egress.yaml"));
}

#[test]
fn a_report_mode_rule_lets_a_server_speak_first() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = listener.accept() {
            let _ = s.write_all(b"SSH-2.0-test\r\n");
            std::thread::sleep(Duration::from_secs(3));
        }
    });
    // require_sni (the default) but only reported: observed, not held for a ClientHello.
    let proxy = Proxy::start(&format!(
        "allow:\n  - {{ name: trial, hosts: [git.test], ports: [{port}], mode: report }}\nupstream: {{ allow_cidrs: [127.0.0.0/8] }}\nresolver: {{ hosts: {{ git.test: 127.0.0.1 }} }}\n"
    ));
    let (mut s, head) = connect(proxy.explicit, &format!("git.test:{port}"));
    assert_eq!(status_of(&head), 200);
    let mut banner = [0u8; 14];
    s.read_exact(&mut banner).unwrap();
    assert_eq!(&banner, b"SSH-2.0-test\r\n");
}

#[test]
fn a_silent_tls_any_tunnel_is_cut_at_the_idle_timeout_with_one_line() {
    let echo = EchoOrigin::start();
    let port = echo.addr.port();
    let mut proxy = Proxy::start(&rules(&["quiet.test"], port).replace(
        "timeouts: { drain: 3s }",
        "timeouts: { drain: 3s, idle: 1s }",
    ));
    let (mut s, head) = connect(proxy.explicit, &format!("quiet.test:{port}"));
    assert_eq!(status_of(&head), 200);
    // Cut by the proxy (end of stream), not by the test's 10 s read timeout.
    let mut rest = Vec::new();
    s.read_to_end(&mut rest)
        .expect("the proxy closes a silent tunnel at timeouts.idle");
    let line = proxy.decision(|v| v["host"] == "quiet.test");
    assert_eq!(
        (line["decision"].as_str(), line["reason"].as_str()),
        (Some("deny"), Some("timeout"))
    );
    let later = proxy.stop_and_collect();
    assert!(
        !later.iter().any(|v| v["host"] == "quiet.test"),
        "exactly one line for the cut tunnel: {later:?}"
    );
}
