//! A denial anyone can read: the reason is in the status line of every reply the proxy makes
//! itself (clients that hide a refused CONNECT's body still print that), in `Proxy-Status`,
//! with `deny_help`; a refused ClientHello gets a TLS alert. Proved with the real clients:
//! curl, Python's urllib, requests, pip and openssl s_client.

mod common;
#[path = "common/dns.rs"]
mod dns;

use std::process::{Command, Output};

use common::*;

const HELP: &str = "ask #platform-egress, https://wiki.example/egress";

fn config(port: u16) -> String {
    format!(
        "deny_help: \"{HELP}\"
allow:
  - {{ name: origin, hosts: [origin.test], ports: [{port}] }}
upstream: {{ allow_cidrs: [127.0.0.0/8] }}
resolver: {{ hosts: {{ origin.test: 127.0.0.1 }} }}
"
    )
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// What every refusal of `denied.test:443` must say, wherever a client shows it.
fn says_why(printed: &str) {
    assert!(
        printed.contains("403 Forbidden (no_rule: denied.test:443 is not on the allowlist"),
        "the reason is not in what the client printed:\n{printed}"
    );
    assert!(printed.contains(HELP), "deny_help missing:\n{printed}");
}

#[test]
fn a_refused_connect_says_why_in_its_status_line_and_proxy_status() {
    let proxy = Proxy::start(&config(443));
    let (_s, head) = connect(proxy.explicit, "denied.test:443");
    says_why(&head);
    let proxy_status = head
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("proxy-status:"))
        .unwrap_or_else(|| panic!("no Proxy-Status:\n{head}"));
    assert!(
        proxy_status.contains("egress-proxy; error=http_request_denied; details=\"no_rule: denied.test:443 is not on the allowlist"),
        "{proxy_status}"
    );
    assert_eq!(proxy.decision(|_| true)["reason"], "no_rule");

    // Each refusal names its RFC 9209 error type.
    for (target, error) in [
        ("origin.test:80", "http_request_denied"),
        ("127.0.0.1:443", "http_request_denied"),
    ] {
        let (_s, head) = connect(proxy.explicit, target);
        assert!(
            head.contains(&format!("error={error}")),
            "{target}:\n{head}"
        );
    }
    let (_, raw) = http_get(proxy.explicit, "GARBAGE\r\n\r\n");
    assert!(raw.starts_with("HTTP/1.1 400"), "{raw}");
}

#[test]
fn an_address_the_proxy_refuses_and_a_loop_into_itself_have_their_own_error_types() {
    let proxy = Proxy::start(
        "allow:
  - { name: meta, hosts: [meta.test] }
resolver: { hosts: { meta.test: [169.254.169.254], self.test: [127.0.0.1] } }
upstream: { allow_cidrs: [127.0.0.0/8] }
",
    );
    let (_s, head) = connect(proxy.explicit, "meta.test:443");
    assert!(
        head.starts_with("HTTP/1.1 502 Bad Gateway (upstream_denied_ip: 169.254.169.254"),
        "{head}"
    );
    assert!(head.contains("error=destination_ip_prohibited"), "{head}");
    // A rule naming the proxy's own admin port (known only once bound).
    let own = proxy.admin.port();
    proxy.rewrite_config(&format!(
        "allow:
  - {{ name: self, hosts: [self.test], ports: [{own}], tls: any }}
resolver: {{ hosts: {{ self.test: [127.0.0.1] }} }}
upstream: {{ allow_cidrs: [127.0.0.0/8] }}
"
    ));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (_s, head) = connect(proxy.explicit, &format!("self.test:{own}"));
        if !head.contains("no_rule") {
            assert!(head.contains("error=proxy_loop_detected"), "{head}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "reload never applied");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn curl_shows_the_reason() {
    let proxy = Proxy::start(&config(443));
    let out = Command::new("curl")
        .args(["-sSv", "--max-time", "30", "-x"])
        .arg(format!("http://{}", proxy.explicit))
        .arg("https://denied.test/")
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    says_why(&text(&out));
}

#[test]
fn python_urllib_and_requests_show_the_reason() {
    let proxy = Proxy::start(&config(443));
    let url = format!("http://{}", proxy.explicit);
    for script in [
        "import sys, urllib.request\n\
         h = urllib.request.ProxyHandler({'https': sys.argv[1]})\n\
         try:\n    urllib.request.build_opener(h).open('https://denied.test/', timeout=30)\n\
         except Exception as e:\n    print(e)\n",
        "import sys, requests\n\
         try:\n    requests.get('https://denied.test/', proxies={'https': sys.argv[1]}, timeout=30)\n\
         except Exception as e:\n    print(e)\n",
    ] {
        let out = Command::new("python3")
            .args(["-c", script, &url])
            .output()
            .unwrap();
        says_why(&text(&out));
    }
}

#[test]
fn pip_shows_the_reason() {
    let proxy = Proxy::start(&config(443));
    let (ok, printed) = pip_through(&format!("http://{}", proxy.explicit));
    assert!(!ok);
    says_why(&printed);
}

#[test]
fn openssl_prints_the_alert_for_a_refused_hello_on_the_transparent_listener() {
    let proxy = Proxy::start(&config(443));
    for (sni, alert) in [
        (Some("denied.test"), "alert access denied"),
        (None, "tlsv1 unrecognized name"),
    ] {
        let mut command = Command::new("openssl");
        command
            .args(["s_client", "-connect"])
            .arg(proxy.transparent_tls.to_string());
        match sni {
            Some(name) => command.args(["-servername", name]),
            None => command.arg("-noservername"),
        };
        let out = command.stdin(std::process::Stdio::null()).output().unwrap();
        let printed = text(&out);
        assert!(printed.contains(alert), "{sni:?}:\n{printed}");
        let line = proxy.decision(|v| v["listener"] == "transparent_tls");
        let reason = if sni.is_some() { "no_rule" } else { "no_sni" };
        assert_eq!(line["reason"], reason, "{line}");
    }
}

#[test]
fn a_name_that_does_not_resolve_reads_as_a_sentence_with_its_dns_error() {
    // A DNS server on loopback that says NXDOMAIN for the one name it is asked.
    let server = dns::DnsServer::start(&[("gone.test", dns::Answer::NxDomain(30))]);
    let proxy = Proxy::start(&format!(
        "allow:
  - {{ name: gone, hosts: [gone.test] }}
resolver: {{ nameservers: [\"{}\"] }}
",
        server.addr
    ));
    let (_s, head) = connect(proxy.explicit, "gone.test:443");
    assert!(
        head.starts_with(
            "HTTP/1.1 502 Bad Gateway (dns_failure: gone.test has no A/AAAA records (NXDOMAIN)"
        ),
        "{head}"
    );
    assert!(
        head.contains("error=dns_error; rcode=\"NXDOMAIN\"; details="),
        "{head}"
    );
    let line = proxy.decision(|v| v["host"] == "gone.test");
    assert_eq!(line["reason"], "dns_failure", "{line}");
    assert_eq!(
        line["message"], "gone.test has no A/AAAA records (NXDOMAIN)",
        "{line}"
    );
}
