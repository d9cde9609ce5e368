//! Know which workload asked, and bound what an allowed host can carry out: principals from
//! `Proxy-Authorization` (curl, requests), 407 where credentials are missing or wrong, upload
//! caps cut exactly at the cap, budgets refuse once spent, report mode only logs.

mod common;

use std::io::{Read, Write};
use std::process::Command;

use common::*;
use sha2::Digest;

const TOKEN: &str = "tok-3f9a61c2e7";

fn digest(token: &str) -> String {
    let hash = sha2::Sha256::digest(token.as_bytes());
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

fn basic(name: &str, token: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("{name}:{token}"))
}

/// CONNECT with optional credentials; the response head.
fn connect_as(
    proxy: &Proxy,
    target: &str,
    credentials: Option<(&str, &str)>,
) -> (std::net::TcpStream, String) {
    let mut s = std::net::TcpStream::connect(proxy.explicit).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let auth = credentials
        .map(|(n, t)| format!("Proxy-Authorization: Basic {}\r\n", basic(n, t)))
        .unwrap_or_default();
    write!(
        s,
        "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n{auth}\r\n"
    )
    .unwrap();
    let head = read_head(&mut s);
    (s, head)
}

fn principals_config(port: u16, require: bool) -> String {
    format!(
        "principals:
  glue-etl: \"{}\"
  ecs-api: \"{}\"
require_principal: {require}
allow:
  - {{ name: etl-only, hosts: [origin.test], ports: [{port}], principals: [glue-etl], tls: any }}
upstream: {{ allow_cidrs: [127.0.0.0/8] }}
resolver: {{ hosts: {{ origin.test: 127.0.0.1 }} }}
",
        digest(TOKEN),
        digest("another-token")
    )
}

#[test]
fn a_principal_is_known_by_its_token_and_a_wrong_or_missing_one_gets_407() {
    let echo = EchoOrigin::start();
    let port = echo.addr.port();
    let mut proxy = Proxy::start(&principals_config(port, true));
    let target = format!("origin.test:{port}");

    let (mut s, head) = connect_as(&proxy, &target, Some(("glue-etl", TOKEN)));
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    s.write_all(b"hi").unwrap();
    let mut back = [0u8; 2];
    s.read_exact(&mut back).unwrap();
    drop(s);
    let line = proxy.decision(|v| v["principal"] == "glue-etl");
    assert_eq!(line["decision"], "allow", "{line}");

    // A token that is not the principal's, or no credentials at all: 407 with a challenge.
    for credentials in [Some(("glue-etl", "guess")), Some(("nobody", TOKEN)), None] {
        let (_s, head) = connect_as(&proxy, &target, credentials);
        assert!(
            head.starts_with("HTTP/1.1 407 Proxy Authentication Required (auth: "),
            "{credentials:?}: {head}"
        );
        assert!(
            head.contains("Proxy-Authenticate: Basic realm=\"egress-proxy\"")
                || head.contains("proxy-authenticate: Basic realm=\"egress-proxy\""),
            "{head}"
        );
        assert!(!head.contains(TOKEN) && !head.contains("guess"), "{head}");
        let line = proxy.decision(|v| v["reason"] == "auth");
        assert!(line["principal"].is_null(), "{line}");
    }
    // A valid principal the rule doesn't list is a client denial naming the rule.
    let (_s, head) = connect_as(&proxy, &target, Some(("ecs-api", "another-token")));
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    let line = proxy.decision(|v| v["principal"] == "ecs-api");
    assert_eq!(
        (line["reason"].as_str(), line["rule"].as_str()),
        (Some("client"), Some("etl-only"))
    );

    // Nothing the proxy wrote holds a token.
    let rest = proxy.stop_and_collect();
    let everything = format!("{rest:?}{}", proxy.stderr());
    assert!(!everything.contains(TOKEN) && !everything.contains("guess"));
}

#[test]
fn a_guessing_client_cools_down_and_a_right_guess_then_learns_nothing() {
    let echo = EchoOrigin::start();
    let port = echo.addr.port();
    let proxy = Proxy::start(&principals_config(port, true));
    let target = format!("origin.test:{port}");
    let cooling = |head: &str| -> Option<u64> {
        let at = head.find("try again in ")? + "try again in ".len();
        head[at..].split("ms").next()?.parse().ok()
    };
    // Wrong guesses: after a few, each one lengthens the cool-down (up to 10 s), during which
    // guesses are refused unchecked. Go on until a long cool-down is in force.
    let mut refusals = 0;
    let mut long_enough = false;
    for _ in 0..200 {
        let (_s, head) = connect_as(&proxy, &target, Some(("glue-etl", "guess")));
        assert!(head.starts_with("HTTP/1.1 407"), "{head}");
        refusals += 1;
        if cooling(&head).is_some_and(|ms| ms >= 5_000) {
            long_enough = true;
            break;
        }
    }
    assert!(long_enough, "no cool-down after {refusals} failures");
    // The right token now gets the same 407: the client can't tell a right guess.
    let (_s, head) = connect_as(&proxy, &target, Some(("glue-etl", TOKEN)));
    assert!(cooling(&head).is_some(), "{head}");
    refusals += 1;
    assert_eq!(
        proxy.metric_sum("egress_auth_failures_total"),
        refusals as f64
    );
    // Every attempt has its line, with reason auth, never the token.
    for _ in 0..refusals {
        let line = proxy.decision(|v| v["reason"] == "auth");
        assert!(!line.to_string().contains(TOKEN), "{line}");
    }
}

#[test]
fn curl_and_requests_send_credentials_from_the_proxy_url() {
    let origin = TlsOrigin::start(&["origin.test"]);
    let port = origin.addr.port();
    let proxy = Proxy::start(&format!(
        "principals: {{ glue-etl: \"{}\" }}
require_principal: true
allow:
  - {{ name: etl-only, hosts: [origin.test], ports: [{port}], principals: [glue-etl] }}
upstream: {{ allow_cidrs: [127.0.0.0/8] }}
resolver: {{ hosts: {{ origin.test: 127.0.0.1 }} }}
",
        digest(TOKEN)
    ));
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &origin.ca_pem).unwrap();
    let proxy_url = format!("http://glue-etl:{TOKEN}@{}", proxy.explicit);
    let url = format!("https://origin.test:{port}/");
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "30", "--cacert"])
        .arg(&ca)
        .args(["-x", &proxy_url, &url])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello from the TLS origin\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let script = "import sys, requests\n\
                  r = requests.get(sys.argv[1], proxies={'https': sys.argv[2]}, verify=sys.argv[3], timeout=30)\n\
                  print(r.status_code, r.text.strip())\n";
    let out = Command::new("python3")
        .args(["-c", script, &url, &proxy_url])
        .arg(&ca)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "200 hello from the TLS origin",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for _ in 0..2 {
        let line = proxy.decision(|v| v["decision"] == "allow");
        assert_eq!(line["principal"], "glue-etl", "{line}");
    }
}

fn cap_config(port: u16, extra: &str) -> String {
    format!(
        "allow:
  - {{ name: pkgs, hosts: [origin.test], ports: [{port}], tls: any, {extra} }}
upstream: {{ allow_cidrs: [127.0.0.0/8] }}
resolver: {{ hosts: {{ origin.test: 127.0.0.1 }} }}
"
    )
}

/// Sends `len` bytes up through a tunnel while reading what comes back, until the proxy
/// ends the tunnel; returns how much came back.
fn push(proxy: &Proxy, target: &str, len: usize) -> usize {
    let (s, head) = connect(proxy.explicit, target);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut reader = s.try_clone().unwrap();
    let back = std::thread::spawn(move || {
        let mut got = Vec::new();
        let _ = reader.read_to_end(&mut got);
        got.len()
    });
    let mut writer = s;
    let chunk = vec![b'x'; 16 * 1024];
    let mut sent = 0;
    while sent < len {
        if writer.write_all(&chunk).is_err() {
            break; // cut
        }
        sent += chunk.len();
    }
    let _ = writer.shutdown(std::net::Shutdown::Write);
    back.join().unwrap()
}

#[test]
fn an_upload_past_max_bytes_up_is_cut_at_the_cap() {
    let echo = EchoOrigin::start();
    let port = echo.addr.port();
    let proxy = Proxy::start(&cap_config(port, "max_bytes_up: 64KiB"));
    let echoed = push(&proxy, &format!("origin.test:{port}"), 4 << 20);
    let line = proxy.close_line(|v| v["host"] == "origin.test");
    assert_eq!(line["reason"], "upload_limit", "{line}");
    assert_eq!(line["bytes_up"], 65536, "not one byte past the cap: {line}");
    assert!(
        echoed <= 65536,
        "the origin got more than the cap: {echoed}"
    );
    assert!(
        line["message"]
            .as_str()
            .unwrap()
            .contains("max_bytes_up 64 KiB"),
        "{line}"
    );
    assert_eq!(
        proxy.metric_sum(r#"egress_upload_limit_total{rule="pkgs"}"#),
        1.0
    );
    // A download-sized exchange under the cap is untouched.
    let echoed = push(&proxy, &format!("origin.test:{port}"), 32 * 1024);
    assert_eq!(echoed, 32 * 1024);
    let line = proxy.close_line(|v| v["host"] == "origin.test");
    assert_eq!(line["reason"], "rule", "{line}");
}

#[test]
fn a_spent_upload_budget_refuses_new_connections_until_its_window_frees() {
    let echo = EchoOrigin::start();
    let port = echo.addr.port();
    let proxy = Proxy::start(&cap_config(
        port,
        "upload_budget: { bytes: 100KiB, per: 1h }",
    ));
    let target = format!("origin.test:{port}");
    push(&proxy, &target, 1 << 20);
    let line = proxy.close_line(|v| v["host"] == "origin.test");
    assert_eq!(line["reason"], "upload_limit", "{line}");
    assert_eq!(line["bytes_up"], 100 * 1024, "{line}");
    let (_s, head) = connect(proxy.explicit, &target);
    assert!(
        head.starts_with(
            "HTTP/1.1 403 Forbidden (upload_limit: upload_budget 100 KiB per 3600s under rule pkgs"
        ),
        "{head}"
    );
    let line = proxy.decision(|v| v["reason"] == "upload_limit");
    assert_eq!(line["decision"], "deny", "{line}");
}

#[test]
fn report_mode_logs_a_cap_it_would_have_cut_and_lets_the_upload_through() {
    let echo = EchoOrigin::start();
    let port = echo.addr.port();
    let proxy = Proxy::start(&format!(
        "mode: report\n{}",
        cap_config(port, "max_bytes_up: 64KiB")
    ));
    let echoed = push(&proxy, &format!("origin.test:{port}"), 256 * 1024);
    assert_eq!(echoed, 256 * 1024);
    let line = proxy.close_line(|v| v["host"] == "origin.test");
    assert_eq!(line["bytes_up"], 256 * 1024, "{line}");
    assert!(
        line["message"]
            .as_str()
            .unwrap()
            .contains("report mode: would have been cut at max_bytes_up 64 KiB"),
        "{line}"
    );
}

#[test]
fn a_forwarded_request_body_past_the_cap_is_cut_and_refused() {
    let origin = HttpOrigin::start();
    let port = origin.addr.port();
    let proxy = Proxy::start(&cap_config(port, "max_bytes_up: 4KiB"));
    // Small enough to sit in the socket buffers whole: the client never blocks writing it.
    let body = "y".repeat(16 * 1024);
    let (status, text) = http_get(
        proxy.explicit,
        &format!(
            "POST http://origin.test:{port}/upload HTTP/1.1\r\nHost: origin.test:{port}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    );
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("upload_limit"), "{text}");
    let line = proxy.decision(|v| v["host"] == "origin.test");
    assert_eq!(line["reason"], "upload_limit", "{line}");
    assert_eq!(
        proxy.metric_sum(r#"egress_upload_limit_total{rule="pkgs"}"#),
        1.0
    );
}

#[test]
fn parallel_connections_share_one_budget_and_are_cut_together() {
    let echo = EchoOrigin::start();
    let port = echo.addr.port();
    let proxy = Proxy::start(&cap_config(
        port,
        "upload_budget: { bytes: 100KiB, per: 1h }",
    ));
    let target = format!("origin.test:{port}");
    // All tunnels open before any byte goes up: each would see the whole budget left.
    let tunnels: Vec<_> = (0..5)
        .map(|_| {
            let (s, head) = connect(proxy.explicit, &target);
            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
            s
        })
        .collect();
    let pushers: Vec<_> = tunnels
        .into_iter()
        .map(|s| {
            std::thread::spawn(move || {
                let mut reader = s.try_clone().unwrap();
                let drain = std::thread::spawn(move || {
                    let mut sink = Vec::new();
                    let _ = reader.read_to_end(&mut sink);
                });
                let mut writer = s;
                let chunk = vec![b'z'; 8 * 1024];
                for _ in 0..13 {
                    // 104 KiB each: together five times the budget.
                    if writer.write_all(&chunk).is_err() {
                        break;
                    }
                }
                let _ = writer.shutdown(std::net::Shutdown::Write);
                drain.join().unwrap();
            })
        })
        .collect();
    for p in pushers {
        p.join().unwrap();
    }
    let mut total = 0u64;
    let mut cut = 0;
    for _ in 0..5 {
        let line = proxy.close_line(|v| v["host"] == "origin.test");
        total += line["bytes_up"].as_u64().unwrap();
        cut += usize::from(line["reason"] == "upload_limit");
    }
    assert!(
        total <= 100 * 1024,
        "{total} bytes went up against a 100 KiB budget"
    );
    assert!(cut >= 4, "only {cut} of the tunnels were cut");
}

#[test]
fn a_forward_that_gets_no_answer_still_spends_the_budget_and_logs_its_bytes() {
    // Takes the whole request, then closes without a response.
    let origin = Origin::start(|mut s| {
        let mut sink = [0u8; 64 * 1024];
        s.set_read_timeout(Some(std::time::Duration::from_millis(500)))
            .unwrap();
        while let Ok(n) = s.read(&mut sink) {
            if n == 0 {
                break;
            }
        }
    });
    let port = origin.addr.port();
    let proxy = Proxy::start(&cap_config(
        port,
        "upload_budget: { bytes: 24KiB, per: 1h }",
    ));
    let body = "q".repeat(16 * 1024);
    let post = format!(
        "POST http://origin.test:{port}/ HTTP/1.1\r\nHost: origin.test:{port}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let (status, text) = http_get(proxy.explicit, &post);
    assert_eq!(status, 502, "{text}");
    let line = proxy.decision(|v| v["host"] == "origin.test");
    assert_eq!(line["reason"], "upstream_unreachable", "{line}");
    let up = line["bytes_up"]
        .as_u64()
        .expect("the refused line carries its bytes");
    assert!(up >= 16 * 1024, "{line}");
    // The second upload finds the budget short: cut at what was left.
    let (status, text) = http_get(proxy.explicit, &post);
    assert!(matches!(status, 403 | 0), "{text}");
    let line = proxy.decision(|v| v["host"] == "origin.test");
    assert_eq!(line["reason"], "upload_limit", "{line}");
    // And now nothing is left: refused before anything is sent.
    let (_s, head) = connect(proxy.explicit, &format!("origin.test:{port}"));
    assert!(
        head.starts_with("HTTP/1.1 403 Forbidden (upload_limit"),
        "{head}"
    );
}

/// pip and skopeo with credentials in the proxy URL: the proxy knows them (a wrong token gets
/// 407, the right one gets as far as the policy: 403 for a name no rule allows), and the
/// reason is in what each prints.
#[test]
fn pip_and_skopeo_send_credentials_from_the_proxy_url() {
    let echo = EchoOrigin::start();
    let proxy = Proxy::start(&principals_config(echo.addr.port(), true));
    let as_url = |token: &str| format!("http://glue-etl:{token}@{}", proxy.explicit);
    let pip = |token: &str| pip_through(&as_url(token)).1;
    // Right tokens first: wrong ones put this client (all on 127.0.0.1) in a cool-down.
    let printed = pip(TOKEN);
    assert!(
        printed.contains("403 Forbidden (no_rule: denied.test:443 is not on the allowlist"),
        "{printed}"
    );
    let printed = pip("wrong-token");
    assert!(
        printed.contains("407 Proxy Authentication Required (auth:"),
        "{printed}"
    );
    let line = proxy.decision(|v| v["host"] == "denied.test" && v["reason"] == "no_rule");
    assert_eq!(line["principal"], "glue-etl", "{line}");

    if Command::new("skopeo").arg("--version").output().is_err() {
        assert!(
            std::env::var("CI").is_err(),
            "skopeo is missing in CI: .ci/setup installs it"
        );
        eprintln!("SKIPPED: skopeo is not installed");
        return;
    }
    for (token, expected) in [
        // Go prints the status text without its code. The right token first: pip's wrong
        // ones above may have this client cooling down, which is a 407 too.
        (
            TOKEN,
            "Forbidden (no_rule: denied.test:443 is not on the allowlist",
        ),
        ("wrong-token", "Proxy Authentication Required (auth:"),
    ] {
        let out = Command::new("skopeo")
            .args([
                "inspect",
                "--retry-times",
                "0",
                "docker://denied.test/library/x:1",
            ])
            .env("HTTPS_PROXY", as_url(token))
            .env_remove("NO_PROXY")
            .output()
            .unwrap();
        let printed = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(printed.contains(expected), "{token}: {printed}");
    }
    let line = proxy.decision(|v| {
        v["host"] == "denied.test" && v["principal"] == "glue-etl" && v["reason"] == "no_rule"
    });
    assert_eq!(line["listener"], "explicit");
}
