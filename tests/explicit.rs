//! The explicit listener, end to end: the real binary, real sockets, TLS origins made at
//! test time; every test checks the reply and the decision line.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::*;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Config with one rule for `origin.test` on the origin's port, mapped to loopback.
fn config_for(port: u16) -> String {
    format!(
        "allow:
  - name: origin
    hosts: [origin.test]
    ports: [{port}]
  - name: other
    hosts: [other.test]
    ports: [{port}]
upstream:
  allow_cidrs: [127.0.0.0/8]
resolver:
  hosts:
    origin.test: [127.0.0.1]
    other.test: [127.0.0.1]
    metadata.test: [169.254.169.254]
timeouts: {{ client_handshake: 2s, upstream_connect: 2s }}
"
    )
}

/// The same rules with `tls: any`, which plain-HTTP forwarding to a port other than 80 needs.
fn http_config_for(port: u16) -> String {
    config_for(port).replace(
        &format!("    ports: [{port}]\n"),
        &format!("    ports: [{port}]\n    tls: any\n"),
    )
}

/// CONNECT through the proxy, then TLS to `sni` with the origin's CA.
async fn tls_through(
    proxy: SocketAddr,
    target: &str,
    sni: &str,
    origin: &TlsOrigin,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let mut s = tokio::net::TcpStream::connect(proxy).await?;
    s.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
        .await?;
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        if s.read(&mut b).await? == 0 {
            break;
        }
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    assert_eq!(status_of(&head), 200, "CONNECT refused: {head}");
    let name = rustls::pki_types::ServerName::try_from(sni.to_owned()).unwrap();
    tokio_rustls::TlsConnector::from(origin.client_config())
        .connect(name, s)
        .await
}

fn payload(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_connect_moves_a_large_payload_intact_both_ways() {
    let origin = TlsOrigin::start(&["origin.test"]);
    let proxy = Proxy::start(&config_for(origin.addr.port()));
    let target = format!("origin.test:{}", origin.addr.port());
    let tls = tls_through(proxy.explicit, &target, "origin.test", &origin)
        .await
        .unwrap();
    let data = payload(8 << 20);
    let sent = Sha256::digest(&data);
    let (mut rd, mut wr) = tokio::io::split(tls);
    let writer = tokio::spawn(async move {
        wr.write_all(&data).await.unwrap();
        wr.flush().await.unwrap();
        wr
    });
    let mut echoed = vec![0u8; 8 << 20];
    rd.read_exact(&mut echoed).await.unwrap();
    let mut wr = writer.await.unwrap();
    assert_eq!(
        Sha256::digest(&echoed),
        sent,
        "echoed bytes differ from sent bytes"
    );
    wr.shutdown().await.unwrap();
    drop((rd, wr));

    let line = proxy.decision(|v| v["host"] == "origin.test");
    assert_eq!(line["decision"], "allow");
    assert_eq!(line["reason"], "rule");
    assert_eq!(line["rule"], "origin");
    assert_eq!(line["listener"], "explicit");
    assert_eq!(line["sni"], "origin.test");
    assert_eq!(line["upstream"], origin.addr.to_string());
    assert!(line["client"].as_str().unwrap().starts_with("127.0.0.1:"));
    let close = proxy.close_line(|v| v["host"] == "origin.test");
    assert!(close["bytes_up"].as_u64().unwrap() > 8 << 20, "{close}");
    assert!(close["bytes_down"].as_u64().unwrap() > 8 << 20, "{close}");
    assert!(close["duration_ms"].is_u64());
}

#[test]
fn denied_name_gets_403_and_the_upstream_is_never_contacted() {
    let origin = TlsOrigin::start(&["origin.test"]);
    let proxy = Proxy::start(&config_for(origin.addr.port()));
    let (_s, head) = connect(
        proxy.explicit,
        &format!("unlisted.test:{}", origin.addr.port()),
    );
    assert_eq!(status_of(&head), 403, "{head}");
    let line = proxy.decision(|v| v["host"] == "unlisted.test");
    assert_eq!(line["decision"], "deny");
    assert_eq!(line["reason"], "no_rule");
    assert!(line["rule"].is_null());
    assert!(line["upstream"].is_null());
    assert_eq!(origin.accepted(), 0);
}

#[test]
fn denied_port_and_denied_client_name_their_reason() {
    let origin = TlsOrigin::start(&["origin.test"]);
    let port = origin.addr.port();
    let proxy = Proxy::start(&format!(
        "allow:
  - name: origin
    hosts: [origin.test]
    ports: [{port}]
  - name: vpc-only
    hosts: [vpc.test]
    ports: [{port}]
    clients: [10.0.32.0/19]
upstream: {{ allow_cidrs: [127.0.0.0/8] }}
resolver: {{ hosts: {{ origin.test: 127.0.0.1, vpc.test: 127.0.0.1 }} }}
"
    ));
    let (_s, head) = connect(proxy.explicit, "origin.test:22");
    assert_eq!(status_of(&head), 403);
    assert!(head.contains("403"));
    assert_eq!(proxy.decision(|v| v["port"] == 22)["reason"], "port");
    let (mut s, head) = connect(proxy.explicit, &format!("vpc.test:{port}"));
    assert_eq!(status_of(&head), 403);
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    assert!(body.contains("not for this client"), "{body}");
    assert_eq!(
        proxy.decision(|v| v["host"] == "vpc.test")["reason"],
        "client"
    );
    assert_eq!(origin.accepted(), 0);
}

#[test]
fn hostile_spellings_are_bad_requests_and_never_reach_upstream() {
    let origin = TlsOrigin::start(&["origin.test"]);
    let port = origin.addr.port();
    let mut proxy = Proxy::start(&config_for(port));
    let long_label = "a".repeat(64);
    let hostile = [
        format!("origin.test@evil.test:{port}"),
        format!("evil.test%2forigin.test:{port}"),
        format!("origin..test:{port}"),
        format!(".origin.test:{port}"),
        format!("{long_label}.test:{port}"),
        format!("origin.test:{port}x"),
        "origin.test:0".to_owned(),
        "origin.test".to_owned(),
        format!("ori_gin.test:{port}"),
        format!("foo.123:{port}"),
    ];
    for target in &hostile {
        let (_s, head) = connect(proxy.explicit, target);
        assert_eq!(status_of(&head), 400, "CONNECT {target} → {head}");
    }
    // Raw bytes that no HTTP library would let us send: NUL and a space inside the host.
    for raw in [
        &b"CONNECT origin\0.test:443 HTTP/1.1\r\n\r\n"[..],
        b"CONNECT origin .test:443 HTTP/1.1\r\n\r\n",
    ] {
        let mut s = TcpStream::connect(proxy.explicit).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(raw).unwrap();
        assert_eq!(status_of(&read_head(&mut s)), 400);
    }
    let lines = proxy.stop_and_collect();
    let bad = lines
        .iter()
        .filter(|v| v["reason"] == "bad_request" && v["decision"] == "deny")
        .count();
    assert_eq!(
        bad,
        hostile.len() + 2,
        "one bad_request line per request: {lines:#?}"
    );
    assert_eq!(origin.accepted(), 0);
}

#[test]
fn ip_literals_in_any_spelling_are_ips_not_names() {
    let echo = EchoOrigin::start();
    let port = echo.addr.port();
    let proxy = Proxy::start(&format!(
        "allow:
  - name: names-only
    hosts: [origin.test]
    ports: [{port}]
upstream: {{ allow_cidrs: [127.0.0.0/8] }}
"
    ));
    for spelling in [
        "2130706433",
        "0x7f.1",
        "127.1",
        "0177.0.0.1",
        "[::ffff:127.0.0.1]",
        "127.0.0.1.",
    ] {
        let (_s, head) = connect(proxy.explicit, &format!("{spelling}:{port}"));
        assert_eq!(status_of(&head), 403, "{spelling}: {head}");
        let line = proxy.decision(|_| true);
        assert_eq!(line["reason"], "no_rule", "{spelling}");
        let logged = line["host"].as_str().unwrap();
        assert!(
            logged == "127.0.0.1" || logged == "::ffff:127.0.0.1",
            "{spelling} is logged as the address it means, not as a name: {logged}"
        );
    }
    assert_eq!(echo.accepted(), 0);
}

#[test]
fn ip_literal_allowed_by_cidrs_tunnels_plain_tcp_with_tls_any() {
    let echo = EchoOrigin::start();
    let port = echo.addr.port();
    let proxy = Proxy::start(&format!(
        "allow:
  - name: loopback-ips
    cidrs: [127.0.0.0/8]
    ports: [{port}]
    tls: any
upstream: {{ allow_cidrs: [127.0.0.0/8] }}
"
    ));
    let (mut s, head) = connect(proxy.explicit, &format!("0x7f.1:{port}"));
    assert_eq!(status_of(&head), 200, "{head}");
    s.write_all(b"ping").unwrap();
    let mut got = [0u8; 4];
    s.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"ping");
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    assert!(
        rest.is_empty(),
        "half-close is passed on and the tunnel ends cleanly"
    );
    let line = proxy.decision(|_| true);
    assert_eq!(line["decision"], "allow");
    assert_eq!(line["rule"], "loopback-ips");
    let close = proxy.close_line(|_| true);
    assert_eq!(close["bytes_up"], 4);
    assert_eq!(close["bytes_down"], 4);
}

#[test]
fn allowed_name_resolving_to_a_denied_address_is_refused_before_dialling() {
    let origin = TlsOrigin::start(&["origin.test"]);
    let port = origin.addr.port();
    // No allow_cidrs: loopback is on the built-in deny list.
    let proxy = Proxy::start(&format!(
        "allow:
  - name: origin
    hosts: [origin.test]
    ports: [{port}]
resolver: {{ hosts: {{ origin.test: [127.0.0.1] }} }}
"
    ));
    let (mut s, head) = connect(proxy.explicit, &format!("origin.test:{port}"));
    assert_eq!(status_of(&head), 502, "{head}");
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    assert!(
        body.contains("upstream_denied_ip") && body.contains("loopback"),
        "{body}"
    );
    let line = proxy.decision(|_| true);
    assert_eq!(line["decision"], "deny");
    assert_eq!(line["reason"], "upstream_denied_ip");
    assert!(line["upstream"].is_null());
    assert_eq!(origin.accepted(), 0, "the upstream is never contacted");
}

#[test]
fn check_refuses_metadata_and_private_addresses_after_resolving() {
    // `check` resolves and checks but never dials, so these addresses are safe to name here.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    std::fs::write(
        &path,
        "listeners: { explicit: 127.0.0.1:3128 }
allow:
  - name: pkgs
    hosts: [imds.test, data.test, ok.test]
resolver: { hosts: { imds.test: [169.254.169.254], data.test: [10.0.64.12, 'fd00:ec2::254'], ok.test: [93.184.215.14] } }
",
    )
    .unwrap();
    let check = |target: &str| {
        let out = std::process::Command::new(BIN)
            .args(["check", "--config"])
            .arg(&path)
            .arg(target)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, text) = check("imds.test");
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("reason=upstream_denied_ip") && text.contains("169.254.0.0/16"),
        "{text}"
    );
    let (code, text) = check("data.test:443");
    assert_eq!(code, Some(1));
    assert!(text.contains("upstream_denied_ip"), "{text}");
    let (code, text) = check("ok.test");
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.starts_with("allow reason=rule rule=pkgs") && text.contains("93.184.215.14:443"),
        "{text}"
    );
    let (code, text) = check("nope.test");
    assert_eq!(code, Some(1));
    assert!(text.contains("reason=no_rule"), "{text}");
}

#[test]
fn keep_alive_requests_are_each_judged_on_their_own() {
    let origin = HttpOrigin::start();
    let port = origin.addr.port();
    let proxy = Proxy::start(&http_config_for(port));
    let mut s = TcpStream::connect(proxy.explicit).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET http://origin.test:{port}/first HTTP/1.1\r\nHost: origin.test:{port}\r\nProxy-Authorization: Basic c2VjcmV0\r\nProxy-Connection: keep-alive\r\nConnection: x-hop\r\nX-Hop: 1\r\n\r\n").unwrap();
    let (status, body) = read_response(&mut s);
    assert_eq!(status, 200);
    assert!(
        body.starts_with("GET /first HTTP/1.1"),
        "origin-form upstream: {body}"
    );
    assert!(body.contains(&format!("host=origin.test:{port}")), "{body}");
    assert!(
        body.contains("leaked=[]"),
        "hop-by-hop and Proxy-* headers must not be forwarded: {body}"
    );
    write!(
        s,
        "GET http://unlisted.test:{port}/second HTTP/1.1\r\nHost: unlisted.test:{port}\r\n\r\n"
    )
    .unwrap();
    let (status, _) = read_response(&mut s);
    assert_eq!(
        status, 403,
        "the second request must not ride on the first one's decision"
    );
    write!(s, "POST http://other.test:{port}/third HTTP/1.1\r\nHost: other.test:{port}\r\nContent-Length: 5\r\n\r\nhello").unwrap();
    let (status, body) = read_response(&mut s);
    assert_eq!(status, 200);
    assert!(body.contains("body=hello"), "{body}");

    let first = proxy.decision(|v| v["host"] == "origin.test");
    assert_eq!(
        (first["decision"].as_str(), first["rule"].as_str()),
        (Some("allow"), Some("origin"))
    );
    assert_eq!(first["method"], "GET");
    let second = proxy.decision(|v| v["host"] == "unlisted.test");
    assert_eq!(
        (second["decision"].as_str(), second["reason"].as_str()),
        (Some("deny"), Some("no_rule"))
    );
    let third = proxy.decision(|v| v["host"] == "other.test");
    assert_eq!(third["rule"], "other");
    assert_eq!(
        origin.accepted(),
        2,
        "one upstream connection per allowed request, none for the denied one"
    );
}

#[test]
fn host_header_disagreeing_with_the_uri_is_a_bad_request() {
    let origin = HttpOrigin::start();
    let port = origin.addr.port();
    let proxy = Proxy::start(&http_config_for(port));
    let (status, _) = http_get(
        proxy.explicit,
        &format!("GET http://origin.test:{port}/ HTTP/1.1\r\nHost: unlisted.test\r\n\r\n"),
    );
    assert_eq!(status, 400);
    let line = proxy.decision(|_| true);
    assert_eq!(line["reason"], "bad_request");
    assert_eq!(origin.accepted(), 0);
}

#[test]
fn origin_form_and_https_uris_to_the_proxy_itself_are_bad_requests() {
    let proxy = Proxy::start(&config_for(443));
    for request in [
        "GET / HTTP/1.1\r\nHost: proxy\r\n\r\n",
        "GET https://origin.test/ HTTP/1.1\r\nHost: origin.test\r\n\r\n",
    ] {
        let (status, text) = http_get(proxy.explicit, request);
        assert_eq!(status, 400, "{text}");
        assert_eq!(proxy.decision(|_| true)["reason"], "bad_request");
    }
}

#[test]
fn oversized_request_head_is_refused_and_logged() {
    let proxy = Proxy::start(&format!(
        "{}limits: {{ max_header_bytes: 8192 }}\n",
        config_for(443)
    ));
    let big = "x".repeat(20_000);
    let (status, _) = http_get(
        proxy.explicit,
        &format!("CONNECT origin.test:443 HTTP/1.1\r\nX-Big: {big}\r\n\r\n"),
    );
    assert!(status == 431 || status == 400, "status {status}");
    let line = proxy.decision(|_| true);
    assert_eq!(line["reason"], "bad_request");
    assert!(line["message"]
        .as_str()
        .unwrap()
        .contains("max_header_bytes"));
}

#[test]
fn garbage_bytes_get_400_and_a_decision_line() {
    let proxy = Proxy::start(&config_for(443));
    let mut s = TcpStream::connect(proxy.explicit).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n")
        .unwrap();
    assert_eq!(status_of(&read_head(&mut s)), 400);
    let line = proxy.decision(|_| true);
    assert_eq!(
        (line["decision"].as_str(), line["reason"].as_str()),
        (Some("deny"), Some("bad_request"))
    );
}

#[test]
fn slowloris_client_is_cut_while_others_are_served() {
    let origin = HttpOrigin::start();
    let port = origin.addr.port();
    let proxy = Proxy::start(&http_config_for(port)); // client_handshake: 2s
    let mut slow = TcpStream::connect(proxy.explicit).unwrap();
    slow.write_all(b"CONNECT origin.test:443 HTTP/1.1\r\nX-Slow: ")
        .unwrap();
    let started = Instant::now();
    // Meanwhile a normal client is served.
    let (status, _) = http_get(
        proxy.explicit,
        &format!("GET http://origin.test:{port}/ HTTP/1.1\r\nHost: origin.test:{port}\r\nConnection: close\r\n\r\n"),
    );
    assert_eq!(status, 200);
    // Keep dribbling bytes; the proxy must still cut at the handshake deadline.
    slow.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 256];
    let cut = loop {
        let _ = slow.write_all(b"a");
        match slow.read(&mut buf) {
            Ok(0) => break true,
            Ok(_) => break true,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => break true,
        }
        if started.elapsed() > Duration::from_secs(8) {
            break false;
        }
    };
    assert!(cut, "the slow client was never cut");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1500),
        "cut too early: {took:?}"
    );
    let line = proxy.decision(|v| v["reason"] == "timeout");
    assert_eq!(line["decision"], "deny");
}

#[test]
fn connections_beyond_the_limit_are_refused_with_reason_limit() {
    let proxy = Proxy::start(&format!(
        "{}limits: {{ max_connections: 2 }}\n",
        config_for(443)
    ));
    proxy.wait_active(0.0);
    let _a = TcpStream::connect(proxy.explicit).unwrap();
    let _b = TcpStream::connect(proxy.explicit).unwrap();
    proxy.wait_active(2.0);
    let (status, text) = http_get(
        proxy.explicit,
        "GET http://origin.test/ HTTP/1.1\r\nHost: origin.test\r\n\r\n",
    );
    assert_eq!(status, 503, "{text}");
    assert_eq!(proxy.decision(|_| true)["reason"], "limit");
    drop((_a, _b));
    // Slots come back: a new connection is served again.
    proxy.wait_active(0.0);
    let (status, _) = http_get(proxy.explicit, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status, 400);
}

#[test]
fn denied_aws_service_names_are_told_to_use_a_vpc_endpoint() {
    let proxy = Proxy::start(&config_for(443));
    let (mut s, head) = connect(proxy.explicit, "sts.us-east-1.amazonaws.com:443");
    assert_eq!(status_of(&head), 403);
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    assert!(
        body.contains("VPC endpoint") && body.contains("NO_PROXY"),
        "{body}"
    );
    let (mut s, head) = connect(proxy.explicit, "169.254.169.254:80");
    assert_eq!(status_of(&head), 403);
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    assert!(body.contains("NO_PROXY"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_with_a_mismatched_sni_is_cut_before_dialling() {
    let origin = TlsOrigin::start(&["origin.test", "other.test"]);
    let proxy = Proxy::start(&config_for(origin.addr.port()));
    // Domain fronting: CONNECT to an allowed name, SNI of another (also allowed) name.
    let target = format!("origin.test:{}", origin.addr.port());
    let result = tls_through(proxy.explicit, &target, "other.test", &origin).await;
    assert!(result.is_err(), "the TLS handshake must not complete");
    let line = proxy.decision(|v| v["host"] == "origin.test");
    assert_eq!(line["decision"], "deny");
    assert_eq!(line["reason"], "sni_mismatch");
    assert_eq!(line["sni"], "other.test");
    assert_eq!(
        origin.accepted(),
        0,
        "the upstream is dialled only after the SNI check passes"
    );
}

#[test]
fn connect_with_non_tls_bytes_is_cut_as_no_sni() {
    let origin = TlsOrigin::start(&["origin.test"]);
    let proxy = Proxy::start(&config_for(origin.addr.port()));
    let (mut s, head) = connect(
        proxy.explicit,
        &format!("origin.test:{}", origin.addr.port()),
    );
    assert_eq!(status_of(&head), 200);
    s.write_all(b"SSH-2.0-OpenSSH_9.2\r\n").unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert!(rest.is_empty());
    assert_eq!(proxy.decision(|_| true)["reason"], "no_sni");
    assert_eq!(origin.accepted(), 0);
}

#[test]
fn curl_through_the_proxy_fetches_from_an_allowed_origin_only() {
    let origin = TlsOrigin::start(&["origin.test"]);
    let port = origin.addr.port();
    let proxy = Proxy::start(&config_for(port));
    let ca = proxy.dir.path().join("ca.pem");
    std::fs::write(&ca, &origin.ca_pem).unwrap();
    let curl = |url: &str| {
        std::process::Command::new("curl")
            .args(["-sS", "--max-time", "10", "--noproxy", "", "-x"])
            .arg(format!("http://{}", proxy.explicit))
            .arg("--cacert")
            .arg(&ca)
            .arg(url)
            .output()
            .expect("curl is installed (.ci/run installs it)")
    };
    let out = curl(&format!("https://origin.test:{port}/simple"));
    assert!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello from the TLS origin\n"
    );
    let line = proxy.decision(|v| v["host"] == "origin.test");
    assert_eq!(line["rule"], "origin");
    assert_eq!(line["sni"], "origin.test");

    let out = curl(&format!("https://unlisted.test:{port}/"));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("403"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        proxy.decision(|v| v["host"] == "unlisted.test")["reason"],
        "no_rule"
    );
}

#[test]
fn http_1_0_connect_is_served() {
    let echo = EchoOrigin::start();
    let port = echo.addr.port();
    let proxy = Proxy::start(&format!(
        "allow:\n  - {{ name: raw, hosts: [raw.test], ports: [{port}], tls: any }}\nupstream: {{ allow_cidrs: [127.0.0.0/8] }}\nresolver: {{ hosts: {{ raw.test: 127.0.0.1 }} }}\n"
    ));
    let mut s = TcpStream::connect(proxy.explicit).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "CONNECT raw.test:{port} HTTP/1.0\r\n\r\n").unwrap();
    assert_eq!(status_of(&read_head(&mut s)), 200);
    s.write_all(b"x").unwrap();
    let mut b = [0u8; 1];
    s.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"x");
}

#[test]
fn dns_failure_and_unreachable_upstreams_get_their_own_reasons() {
    let held = ClosedPort::new();
    let closed = held.port(); // nothing listens here
    let proxy = Proxy::start(&format!(
        "allow:
  - {{ name: gone, hosts: [gone.invalid], ports: [{closed}], tls: any }}
  - {{ name: down, hosts: [down.test], ports: [{closed}], tls: any }}
  - {{ name: down-tls, hosts: [downtls.test], ports: [{closed}] }}
upstream: {{ allow_cidrs: [127.0.0.0/8] }}
resolver: {{ hosts: {{ down.test: 127.0.0.1, downtls.test: 127.0.0.1 }} }}
"
    ));
    let (_s, head) = connect(proxy.explicit, &format!("gone.invalid:{closed}"));
    assert_eq!(status_of(&head), 502, "{head}");
    let line = proxy.decision(|v| v["host"] == "gone.invalid");
    assert_eq!(
        (line["decision"].as_str(), line["reason"].as_str()),
        (Some("deny"), Some("dns_failure"))
    );
    assert_eq!(
        line["rule"], "gone",
        "the rule that allowed the name is still named"
    );

    let (_s, head) = connect(proxy.explicit, &format!("down.test:{closed}"));
    assert_eq!(status_of(&head), 502, "{head}");
    let line = proxy.decision(|v| v["host"] == "down.test");
    assert_eq!(line["reason"], "upstream_unreachable");
    assert!(line["message"]
        .as_str()
        .unwrap()
        .contains(&format!("127.0.0.1:{closed}")));

    // With an SNI check the dial happens after the 200 and the ClientHello: the tunnel is
    // closed and the line says why.
    let hello = rustls_hello("downtls.test");
    let (mut s, head) = connect(proxy.explicit, &format!("downtls.test:{closed}"));
    assert_eq!(status_of(&head), 200);
    s.write_all(&hello).unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    let line = proxy.decision(|v| v["host"] == "downtls.test");
    assert_eq!(line["reason"], "upstream_unreachable");
    assert_eq!(line["sni"], "downtls.test");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_any_tunnels_still_refuse_a_client_hello_naming_another_host() {
    let origin = TlsOrigin::start(&["origin.test", "other.test"]);
    let port = origin.addr.port();
    let proxy = Proxy::start(&format!(
        "allow:\n  - {{ name: loose, hosts: [origin.test, other.test], ports: [{port}], tls: any }}\nupstream: {{ allow_cidrs: [127.0.0.0/8] }}\nresolver: {{ hosts: {{ origin.test: 127.0.0.1, other.test: 127.0.0.1 }} }}\n"
    ));
    let target = format!("origin.test:{port}");
    assert!(tls_through(proxy.explicit, &target, "other.test", &origin)
        .await
        .is_err());
    let line = proxy.decision(|v| v["host"] == "origin.test");
    assert_eq!(
        (line["reason"].as_str(), line["sni"].as_str()),
        (Some("sni_mismatch"), Some("other.test"))
    );
    // The matching name goes through, its SNI logged.
    let mut tls = tls_through(proxy.explicit, &target, "origin.test", &origin)
        .await
        .unwrap();
    tls.write_all(b"ping").await.unwrap();
    let mut got = [0u8; 4];
    tls.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"ping");
    let line = proxy.decision(|v| v["host"] == "origin.test");
    assert_eq!(
        (line["decision"].as_str(), line["sni"].as_str()),
        (Some("allow"), Some("origin.test"))
    );
}

#[test]
fn tls_any_tunnels_let_a_server_speak_first() {
    // A server-first protocol (SSH, SMTP): the banner must arrive without the client
    // sending anything.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = listener.accept() {
            let _ = s.write_all(b"SSH-2.0-test\r\n");
            std::thread::sleep(Duration::from_secs(2));
        }
    });
    let proxy = Proxy::start(&format!(
        "allow:\n  - {{ name: ssh, hosts: [git.test], ports: [{port}], tls: any }}\nupstream: {{ allow_cidrs: [127.0.0.0/8] }}\nresolver: {{ hosts: {{ git.test: 127.0.0.1 }} }}\n"
    ));
    let (mut s, head) = connect(proxy.explicit, &format!("git.test:{port}"));
    assert_eq!(status_of(&head), 200);
    let mut banner = [0u8; 14];
    s.read_exact(&mut banner).unwrap();
    assert_eq!(&banner, b"SSH-2.0-test\r\n");
    assert_eq!(proxy.decision(|_| true)["decision"], "allow");
}

#[test]
fn plain_http_to_a_port_whose_rule_requires_tls_is_refused() {
    let origin = HttpOrigin::start();
    let port = origin.addr.port();
    let proxy = Proxy::start(&config_for(port)); // tls: require_sni (the default)
    let (status, text) = http_get(
        proxy.explicit,
        &format!("GET http://origin.test:{port}/ HTTP/1.1\r\nHost: origin.test:{port}\r\nConnection: close\r\n\r\n"),
    );
    assert_eq!(status, 403, "{text}");
    let line = proxy.decision(|_| true);
    assert_eq!(
        (line["decision"].as_str(), line["reason"].as_str()),
        (Some("deny"), Some("no_sni"))
    );
    assert_eq!(origin.accepted(), 0);
}

#[test]
fn tls_any_checks_a_client_hello_that_comes_after_a_pause() {
    // The hello arrives well after the 200: a stale readiness wake-up from reading the
    // request head must not let it through unchecked.
    let origin = TlsOrigin::start(&["origin.test", "other.test"]);
    let port = origin.addr.port();
    let proxy = Proxy::start(&format!(
        "allow:\n  - {{ name: loose, hosts: [origin.test], ports: [{port}], tls: any }}\nupstream: {{ allow_cidrs: [127.0.0.0/8] }}\nresolver: {{ hosts: {{ origin.test: 127.0.0.1 }} }}\n"
    ));
    let (mut s, head) = connect(proxy.explicit, &format!("origin.test:{port}"));
    assert_eq!(status_of(&head), 200);
    std::thread::sleep(Duration::from_millis(300));
    s.write_all(&rustls_hello("other.test")).unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert_eq!(
        rest,
        tls_alert(ALERT_ACCESS_DENIED),
        "no server reply may come back through a fronted tunnel: only the proxy's alert"
    );
    let line = proxy.decision(|v| v["host"] == "origin.test");
    assert_eq!(
        (line["reason"].as_str(), line["sni"].as_str()),
        (Some("sni_mismatch"), Some("other.test"))
    );
}
