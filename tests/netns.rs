//! The NAT-replacement path for real: three network namespaces (a client host, the proxy
//! host, an origin host) joined by veth pairs, the client's default route pointing at the
//! proxy host, and iptables on the proxy host redirecting the client's TCP 443/80 to the
//! proxy's transparent listeners. The proxy host forwards nothing (`ip_forward=0`): the
//! only way out is through the proxy, which reads the original destination
//! (`SO_ORIGINAL_DST`), judges the SNI / Host header, and dials the address it resolved
//! itself. The 10.231.x addresses exist only inside these namespaces.
//!
//! Needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN), `ip`, `iptables` and `python3` (the origins).
//! Without the privileges, or without iptables outside CI, the test says SKIPPED and returns.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const CLIENT_IP: &str = "10.231.1.2";
const PROXY_CLIENT_SIDE: &str = "10.231.1.1";
const PROXY_ORIGIN_SIDE: &str = "10.231.2.1";
const ORIGIN_IP: &str = "10.231.2.2";
const ATTACKER_IP: &str = "10.231.2.3";

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

fn text(out: &Output) -> String {
    format!(
        "status {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {program} {args:?}: {e}"))
}

/// Runs a setup command; panics (cleanup follows from the guard) if it fails.
fn must(program: &str, args: &[&str]) {
    let out = run(program, args);
    assert!(
        out.status.success(),
        "{program} {}: {}",
        args.join(" "),
        text(&out)
    );
}

fn is_permission_error(out: &Output) -> bool {
    let err = String::from_utf8_lossy(&out.stderr);
    err.contains("Operation not permitted") || err.contains("Permission denied")
}

/// The namespaces and the processes running in them; all gone on drop, panic or not.
struct Lab {
    client: String,
    proxy: String,
    origin: String,
    created: Vec<String>,
    children: Vec<Child>,
}

impl Lab {
    fn new() -> Lab {
        let pid = std::process::id();
        Lab {
            client: format!("egp-c-{pid}"),
            proxy: format!("egp-p-{pid}"),
            origin: format!("egp-o-{pid}"),
            created: Vec::new(),
            children: Vec::new(),
        }
    }

    /// `ip netns add`; `Err` with the reason when the machine won't let us.
    fn add(&mut self, name: &str) -> Result<(), String> {
        let out = run("ip", &["netns", "add", name]);
        if !out.status.success() {
            return Err(text(&out));
        }
        self.created.push(name.to_owned());
        must("ip", &["-n", name, "link", "set", "lo", "up"]);
        Ok(())
    }

    /// A command run inside namespace `ns`.
    fn command(ns: &str, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", ns, program]);
        for var in [
            "http_proxy",
            "https_proxy",
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "ALL_PROXY",
            "all_proxy",
            "no_proxy",
            "NO_PROXY",
        ] {
            command.env_remove(var);
        }
        command.stdin(Stdio::null());
        command
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        for name in self.created.iter().rev() {
            let _ = Command::new("ip")
                .args(["netns", "del", name])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// The origin host's servers: TLS and plain HTTP on both the real origin address and the
/// attacker's, and an SSH-like port that should stay unreachable. Every accepted connection
/// is printed (`accept KIND IP:PORT from PEER`); replies name the address that answered.
const ORIGINS_PY: &str = r#"
import socket, ssl, sys, threading
cert, key, specs = sys.argv[1], sys.argv[2], sys.argv[3:]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
lock = threading.Lock()

def say(msg):
    with lock:
        print(msg, flush=True)

def respond(conn, kind, where):
    conn.settimeout(10)
    try:
        if kind == "tcp":
            return
        if kind == "tls":
            conn = ctx.wrap_socket(conn, server_side=True)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(4096)
            if not chunk:
                return
            data += chunk
        host = ""
        for line in data.split(b"\r\n")[1:]:
            if line.lower().startswith(b"host:"):
                host = line.split(b":", 1)[1].strip().decode()
        body = ("%s origin %s host=%s\n" % (kind, where, host)).encode()
        head = "HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
        conn.sendall(head.encode() + body)
    except Exception as e:
        say("error %s %s: %s" % (kind, where, e))
    finally:
        conn.close()

def serve(sock, kind, where):
    while True:
        conn, peer = sock.accept()
        say("accept %s %s from %s:%d" % (kind, where, peer[0], peer[1]))
        threading.Thread(target=respond, args=(conn, kind, where), daemon=True).start()

for spec in specs:
    kind, ip, port = spec.split(":")
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((ip, int(port)))
    s.listen(64)
    threading.Thread(target=serve, args=(s, kind, "%s:%s" % (ip, port)), daemon=True).start()
say("READY")
threading.Event().wait()
"#;

/// Lines the origins printed so far.
type Seen = Arc<Mutex<Vec<String>>>;

fn accepts(seen: &Seen, needle: &str) -> Vec<String> {
    seen.lock()
        .unwrap()
        .iter()
        .filter(|l| l.starts_with("accept ") && l.contains(needle))
        .cloned()
        .collect()
}

/// A certificate for allowed.test and forbidden.test signed by a CA made now: (ca, cert,
/// key) PEM.
fn certificates() -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "egress-proxy netns test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(vec!["allowed.test".to_owned(), "forbidden.test".to_owned()])
            .unwrap();
    let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);
    let cert = params.signed_by(&key, &issuer).unwrap();
    (ca.pem(), cert.pem(), key.serialize_pem())
}

fn addr(ip: &str, port: u16) -> SocketAddr {
    format!("{ip}:{port}").parse().unwrap()
}

#[test]
fn redirected_client_traffic_is_judged_and_dialled_by_the_proxy() {
    // --- Can this machine do it at all? ---
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: the netns test needs root (ip netns, veth, iptables)");
        return;
    }
    for tool in ["ip", "iptables"] {
        if !have(tool) {
            assert!(
                !in_ci(),
                "`{tool}` is missing in CI: .ci/setup must install iproute2 and iptables"
            );
            eprintln!("SKIPPED: `{tool}` is not installed (apt-get install iproute2 iptables)");
            return;
        }
    }
    assert!(have("python3"), "python3 runs the origins (.ci/setup)");
    assert!(have("curl"), "curl is the client (.ci/setup)");

    let mut lab = Lab::new();
    let (c, p, o) = (lab.client.clone(), lab.proxy.clone(), lab.origin.clone());
    if let Err(why) = lab.add(&c) {
        if why.contains("Operation not permitted") || why.contains("Permission denied") {
            eprintln!("SKIPPED: no privilege to create network namespaces: {why}");
            return;
        }
        panic!("ip netns add {c}: {why}");
    }
    lab.add(&p).unwrap();
    lab.add(&o).unwrap();

    // --- Wiring: client <-> proxy host <-> origin host. ---
    must(
        "ip",
        &[
            "-n", &c, "link", "add", "c0", "type", "veth", "peer", "name", "p0", "netns", &p,
        ],
    );
    must(
        "ip",
        &[
            "-n", &p, "link", "add", "p1", "type", "veth", "peer", "name", "o0", "netns", &o,
        ],
    );
    let client_cidr = format!("{CLIENT_IP}/24");
    must("ip", &["-n", &c, "addr", "add", &client_cidr, "dev", "c0"]);
    must("ip", &["-n", &c, "link", "set", "c0", "up"]);
    must(
        "ip",
        &[
            "-n",
            &c,
            "route",
            "add",
            "default",
            "via",
            PROXY_CLIENT_SIDE,
        ],
    );
    let proxy_client_cidr = format!("{PROXY_CLIENT_SIDE}/24");
    let proxy_origin_cidr = format!("{PROXY_ORIGIN_SIDE}/24");
    must(
        "ip",
        &["-n", &p, "addr", "add", &proxy_client_cidr, "dev", "p0"],
    );
    must(
        "ip",
        &["-n", &p, "addr", "add", &proxy_origin_cidr, "dev", "p1"],
    );
    must("ip", &["-n", &p, "link", "set", "p0", "up"]);
    must("ip", &["-n", &p, "link", "set", "p1", "up"]);
    for ip in [ORIGIN_IP, ATTACKER_IP] {
        let cidr = format!("{ip}/24");
        must("ip", &["-n", &o, "addr", "add", &cidr, "dev", "o0"]);
    }
    must("ip", &["-n", &o, "link", "set", "o0", "up"]);
    must(
        "ip",
        &[
            "-n",
            &o,
            "route",
            "add",
            "default",
            "via",
            PROXY_ORIGIN_SIDE,
        ],
    );
    // The proxy host routes nothing: only what REDIRECT hands to the proxy gets out.
    must(
        "ip",
        &[
            "netns",
            "exec",
            &p,
            "sh",
            "-c",
            "echo 0 > /proc/sys/net/ipv4/ip_forward && test \"$(cat /proc/sys/net/ipv4/ip_forward)\" = 0",
        ],
    );
    for (port, to) in [("443", "8443"), ("80", "8080")] {
        let out = run(
            "ip",
            &[
                "netns",
                "exec",
                &p,
                "iptables",
                "-t",
                "nat",
                "-A",
                "PREROUTING",
                "-i",
                "p0",
                "-p",
                "tcp",
                "--dport",
                port,
                "-j",
                "REDIRECT",
                "--to-ports",
                to,
            ],
        );
        if !out.status.success() {
            if is_permission_error(&out) && !in_ci() {
                eprintln!(
                    "SKIPPED: iptables may not change the nat table: {}",
                    text(&out)
                );
                return;
            }
            panic!("iptables REDIRECT {port} -> {to}: {}", text(&out));
        }
    }

    // --- Origins on the origin host. ---
    let dir = tempfile::tempdir().unwrap();
    let (ca_pem, cert_pem, key_pem) = certificates();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    std::fs::write(path("ca.pem"), &ca_pem).unwrap();
    std::fs::write(path("cert.pem"), &cert_pem).unwrap();
    std::fs::write(path("key.pem"), &key_pem).unwrap();
    std::fs::write(path("origins.py"), ORIGINS_PY).unwrap();
    let mut origins = Lab::command(&o, "python3");
    origins
        .arg(path("origins.py"))
        .arg(path("cert.pem"))
        .arg(path("key.pem"))
        .args([
            format!("tls:{ORIGIN_IP}:443"),
            format!("tls:{ATTACKER_IP}:443"),
            format!("http:{ORIGIN_IP}:80"),
            format!("http:{ATTACKER_IP}:80"),
            format!("tcp:{ORIGIN_IP}:22"),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = origins.spawn().expect("starting the origins");
    let seen: Seen = Arc::new(Mutex::new(Vec::new()));
    for stream in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let sink = seen.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });
    }
    lab.children.push(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !seen.lock().unwrap().iter().any(|l| l == "READY") {
        assert!(
            Instant::now() < deadline,
            "origins did not start: {:#?}",
            seen.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // --- The proxy on the proxy host. ---
    let config = format!(
        "listeners:
  explicit: 127.0.0.1:3128
  transparent_tls: 0.0.0.0:8443
  transparent_http: 0.0.0.0:8080
allow:
  - name: allowed
    hosts: [allowed.test]
    ports: [443, 80]
upstream:
  allow_cidrs: [10.231.2.0/24]
resolver:
  hosts:
    allowed.test: [{ORIGIN_IP}]
    forbidden.test: [{ORIGIN_IP}]
timeouts: {{ client_handshake: 5s, upstream_connect: 3s }}
"
    );
    let proxy_dir = tempfile::tempdir().unwrap();
    let config_path = proxy_dir.path().join("egress.yaml");
    std::fs::write(&config_path, config).unwrap();
    let mut command = Lab::command(&p, BIN);
    command.args(["run", "--config"]).arg(&config_path);
    let listeners = ListenerAddrs {
        explicit: "127.0.0.1:3128".parse().unwrap(),
        transparent_tls: "0.0.0.0:8443".parse().unwrap(),
        transparent_http: "0.0.0.0:8080".parse().unwrap(),
        admin: "127.0.0.1:9090".parse().unwrap(),
    };
    let mut proxy = Proxy::spawn_command(command, listeners, proxy_dir, config_path);
    proxy.wait_stderr(
        &[
            "listening: explicit on 127.0.0.1:3128",
            "listening: transparent_tls on 0.0.0.0:8443",
            "listening: transparent_http on 0.0.0.0:8080",
        ],
        Duration::from_secs(20),
    );

    // --- The client host. ---
    let ca = path("ca.pem");
    let curl = |extra: &[&str]| -> Output {
        Lab::command(&c, "curl")
            .args(["-sS", "--max-time", "10", "--noproxy", "*", "--cacert", &ca])
            .args(extra)
            .output()
            .unwrap()
    };
    let is_client = |line: &Value| {
        line["client"]
            .as_str()
            .is_some_and(|c| c.starts_with(&format!("{CLIENT_IP}:")))
    };

    // 1. An allowed name, at its real address: through the proxy, to the origin.
    let out = curl(&[
        "--resolve",
        &format!("allowed.test:443:{ORIGIN_IP}"),
        "https://allowed.test/",
    ]);
    assert!(out.status.success(), "allowed https: {}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("tls origin {ORIGIN_IP}:443 host=allowed.test\n")
    );
    let line = proxy.decision(|v| v["listener"] == "transparent_tls");
    assert!(is_client(&line), "{line}");
    assert_eq!(line["decision"], "allow", "{line}");
    assert_eq!(line["reason"], "rule");
    assert_eq!(line["rule"], "allowed");
    assert_eq!(line["sni"], "allowed.test");
    assert_eq!(line["host"], "allowed.test");
    assert_eq!(line["port"], 443, "the port from SO_ORIGINAL_DST");
    assert_eq!(line["original_dst"], addr(ORIGIN_IP, 443).to_string());
    assert_eq!(line["upstream"], addr(ORIGIN_IP, 443).to_string());
    assert!(
        accepts(
            &seen,
            &format!("tls {ORIGIN_IP}:443 from {PROXY_ORIGIN_SIDE}:")
        )
        .len()
            == 1,
        "the origin saw the proxy's connection, not the client's: {:#?}",
        seen.lock().unwrap()
    );

    // 2. A forbidden name: cut, never dialled.
    let out = curl(&[
        "--resolve",
        &format!("forbidden.test:443:{ORIGIN_IP}"),
        "https://forbidden.test/",
    ]);
    assert!(
        !out.status.success(),
        "forbidden https got through: {}",
        text(&out)
    );
    assert!(out.stdout.is_empty());
    let line = proxy.decision(|v| v["listener"] == "transparent_tls");
    assert!(is_client(&line), "{line}");
    assert_eq!(line["decision"], "deny", "{line}");
    assert_eq!(line["reason"], "no_rule");
    assert!(line["rule"].is_null());
    assert_eq!(line["sni"], "forbidden.test");
    assert_eq!(line["host"], "forbidden.test");
    assert_eq!(line["port"], 443);
    assert_eq!(line["original_dst"], addr(ORIGIN_IP, 443).to_string());
    assert!(line["upstream"].is_null());

    // 3. An allowed SNI aimed at another address: the proxy dials what it resolved.
    let out = curl(&[
        "--resolve",
        &format!("allowed.test:443:{ATTACKER_IP}"),
        "https://allowed.test/",
    ]);
    assert!(out.status.success(), "allowed https via .3: {}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("tls origin {ORIGIN_IP}:443 host=allowed.test\n"),
        "answered by the resolved origin, not the address the client chose"
    );
    let line = proxy.decision(|v| v["listener"] == "transparent_tls");
    assert_eq!(line["decision"], "allow", "{line}");
    assert_eq!(line["sni"], "allowed.test");
    assert_eq!(line["original_dst"], addr(ATTACKER_IP, 443).to_string());
    assert_eq!(line["upstream"], addr(ORIGIN_IP, 443).to_string());

    // 4. Plain HTTP through the transparent HTTP listener, judged on Host.
    let out = curl(&[
        "--resolve",
        &format!("allowed.test:80:{ORIGIN_IP}"),
        "http://allowed.test/",
    ]);
    assert!(out.status.success(), "allowed http: {}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("http origin {ORIGIN_IP}:80 host=allowed.test\n")
    );
    let line = proxy.decision(|v| v["listener"] == "transparent_http");
    assert!(is_client(&line), "{line}");
    assert_eq!(line["decision"], "allow", "{line}");
    assert_eq!(line["rule"], "allowed");
    assert_eq!(line["host"], "allowed.test");
    assert_eq!(line["port"], 80);
    assert_eq!(line["method"], "GET");
    assert_eq!(line["original_dst"], addr(ORIGIN_IP, 80).to_string());
    assert_eq!(line["upstream"], addr(ORIGIN_IP, 80).to_string());

    let out = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--resolve",
        &format!("allowed.test:80:{ATTACKER_IP}"),
        "http://allowed.test/",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "200",
        "{}",
        text(&out)
    );
    let line = proxy.decision(|v| v["listener"] == "transparent_http");
    assert_eq!(line["original_dst"], addr(ATTACKER_IP, 80).to_string());
    assert_eq!(line["upstream"], addr(ORIGIN_IP, 80).to_string());

    let out = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--resolve",
        &format!("forbidden.test:80:{ORIGIN_IP}"),
        "http://forbidden.test/",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "403",
        "{}",
        text(&out)
    );
    let line = proxy.decision(|v| v["listener"] == "transparent_http");
    assert_eq!(line["decision"], "deny");
    assert_eq!(line["reason"], "no_rule");
    assert_eq!(line["host"], "forbidden.test");
    assert_eq!(line["original_dst"], addr(ORIGIN_IP, 80).to_string());
    assert!(line["upstream"].is_null());

    // 5. A port that is not redirected is not reachable at all: nothing is forwarded.
    let probe = Lab::command(&c, "python3")
        .args([
            "-c",
            &format!(
                "import socket\ntry:\n    socket.create_connection(('{ORIGIN_IP}', 22), timeout=3)\n    print('connected')\nexcept OSError as e:\n    print('unreachable', e)"
            ),
        ])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&probe.stdout);
    assert!(said.starts_with("unreachable"), "port 22: {}", text(&probe));

    // Nothing else happened: no connection ever reached the attacker address or port 22,
    // the forbidden names were never dialled, and no client connection reached an origin
    // directly.
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        accepts(&seen, ATTACKER_IP).is_empty(),
        "the attacker address got connections: {:#?}",
        seen.lock().unwrap()
    );
    assert!(accepts(&seen, ":22 ").is_empty());
    assert!(
        accepts(&seen, &format!("from {CLIENT_IP}:")).is_empty(),
        "the client reached an origin without the proxy: {:#?}",
        seen.lock().unwrap()
    );
    // allowed https twice, allowed http twice: all from the proxy host, all to .2.
    assert_eq!(
        accepts(
            &seen,
            &format!("tls {ORIGIN_IP}:443 from {PROXY_ORIGIN_SIDE}:")
        )
        .len(),
        2
    );
    assert_eq!(
        accepts(
            &seen,
            &format!("http {ORIGIN_IP}:80 from {PROXY_ORIGIN_SIDE}:")
        )
        .len(),
        2
    );
    let errors: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|l| !l.starts_with("accept ") && *l != "READY")
        .cloned()
        .collect();
    assert!(errors.is_empty(), "origin errors: {errors:#?}");
    drop(proxy);
}
