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
//!
//! Namespaces are expensive, so there is one test; it runs the named steps below in order.
//! Nothing waits on the clock: every wait is for an event (a line printed, a process
//! exited) and its deadline only turns a hang into a failure. What must *not* have
//! happened is checked after the proxy and the origins have exited, when nothing can
//! arrive any more.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const CLIENT_IP: &str = "10.231.1.2";
const PROXY_CLIENT_SIDE: &str = "10.231.1.1";
const PROXY_ORIGIN_SIDE: &str = "10.231.2.1";
const ORIGIN_IP: &str = "10.231.2.2";
const ATTACKER_IP: &str = "10.231.2.3";

/// How long any single wait may take before it counts as a hang.
const DEADLINE: Duration = Duration::from_secs(30);

#[test]
fn redirected_client_traffic_is_judged_and_dialled_by_the_proxy() {
    let Some(lab) = Lab::setup() else { return };
    if let Err(why) = wire_hosts(&lab) {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let files = Files::write();
    let mut origins = start_origins(&lab, &files);
    let mut proxy = start_proxy(&lab);
    let client = Client::new(&lab, &files);

    allowed_https_reaches_the_origin_from_the_proxy(&client, &proxy, &origins);
    forbidden_sni_is_refused(&client, &proxy);
    allowed_sni_is_dialled_where_the_proxy_resolved_it(&client, &proxy);
    allowed_http_is_judged_on_host(&client, &proxy);
    allowed_http_host_is_dialled_where_the_proxy_resolved_it(&client, &proxy);
    forbidden_http_host_gets_403(&client, &proxy);
    unredirected_port_is_unreachable(&client);

    let unread = proxy.stop_and_collect();
    let printed = origins.stop();
    proxy_judged_nothing_else(&unread);
    origins_saw_only_the_proxy(&printed);
}

// --- Setup -------------------------------------------------------------------------------

impl Lab {
    /// Creates the three namespaces, or says SKIPPED and gives `None` if this machine can't.
    fn setup() -> Option<Lab> {
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIPPED: the netns test needs root (ip netns, veth, iptables)");
            return None;
        }
        for tool in ["ip", "iptables"] {
            if !have(tool) {
                assert!(
                    !in_ci(),
                    "`{tool}` is missing in CI: .ci/setup must install iproute2 and iptables"
                );
                eprintln!("SKIPPED: `{tool}` is not installed (apt-get install iproute2 iptables)");
                return None;
            }
        }
        assert!(have("python3"), "python3 runs the origins (.ci/setup)");
        assert!(have("curl"), "curl is the client (.ci/setup)");

        let mut lab = Lab::new();
        let (c, p, o) = (lab.client.clone(), lab.proxy.clone(), lab.origin.clone());
        if let Err(why) = lab.add(&c) {
            if why.contains("Operation not permitted") || why.contains("Permission denied") {
                eprintln!("SKIPPED: no privilege to create network namespaces: {why}");
                return None;
            }
            panic!("ip netns add {c}: {why}");
        }
        lab.add(&p).unwrap();
        lab.add(&o).unwrap();
        Some(lab)
    }
}

/// Joins client <-> proxy host <-> origin host, turns forwarding off on the proxy host and
/// redirects the client's 443/80 there to the proxy; `Err` (a reason to skip) if iptables
/// may not touch the nat table.
fn wire_hosts(lab: &Lab) -> Result<(), String> {
    let (c, p, o) = (&lab.client, &lab.proxy, &lab.origin);
    must(
        "ip",
        &[
            "-n", c, "link", "add", "c0", "type", "veth", "peer", "name", "p0", "netns", p,
        ],
    );
    must(
        "ip",
        &[
            "-n", p, "link", "add", "p1", "type", "veth", "peer", "name", "o0", "netns", o,
        ],
    );
    let client_cidr = format!("{CLIENT_IP}/24");
    must("ip", &["-n", c, "addr", "add", &client_cidr, "dev", "c0"]);
    must("ip", &["-n", c, "link", "set", "c0", "up"]);
    must(
        "ip",
        &["-n", c, "route", "add", "default", "via", PROXY_CLIENT_SIDE],
    );
    let proxy_client_cidr = format!("{PROXY_CLIENT_SIDE}/24");
    let proxy_origin_cidr = format!("{PROXY_ORIGIN_SIDE}/24");
    must(
        "ip",
        &["-n", p, "addr", "add", &proxy_client_cidr, "dev", "p0"],
    );
    must(
        "ip",
        &["-n", p, "addr", "add", &proxy_origin_cidr, "dev", "p1"],
    );
    must("ip", &["-n", p, "link", "set", "p0", "up"]);
    must("ip", &["-n", p, "link", "set", "p1", "up"]);
    for ip in [ORIGIN_IP, ATTACKER_IP] {
        let cidr = format!("{ip}/24");
        must("ip", &["-n", o, "addr", "add", &cidr, "dev", "o0"]);
    }
    must("ip", &["-n", o, "link", "set", "o0", "up"]);
    must(
        "ip",
        &["-n", o, "route", "add", "default", "via", PROXY_ORIGIN_SIDE],
    );
    // The proxy host routes nothing: only what REDIRECT hands to the proxy gets out.
    must(
        "ip",
        &[
            "netns",
            "exec",
            p,
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
                p,
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
                return Err(format!(
                    "iptables may not change the nat table: {}",
                    text(&out)
                ));
            }
            panic!("iptables REDIRECT {port} -> {to}: {}", text(&out));
        }
    }
    Ok(())
}

/// Starts the origins on the origin host and waits until they listen.
fn start_origins(lab: &Lab, files: &Files) -> Origins {
    let mut command = Lab::command(&lab.origin, "python3");
    command
        .arg(files.path("origins.py"))
        .arg(files.path("cert.pem"))
        .arg(files.path("key.pem"))
        .args([
            format!("tls:{ORIGIN_IP}:443"),
            format!("tls:{ATTACKER_IP}:443"),
            format!("http:{ORIGIN_IP}:80"),
            format!("http:{ATTACKER_IP}:80"),
            format!("tcp:{ORIGIN_IP}:22"),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let origins = Origins::spawn(command);
    origins.wait_for(
        |lines| lines.iter().any(|l| l == "READY"),
        "origins to start",
    );
    origins
}

/// Starts the real proxy on the proxy host and waits until its listeners are bound.
fn start_proxy(lab: &Lab) -> Proxy {
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
timeouts: {{ client_handshake: 30s, upstream_connect: 30s }}
"
    );
    let proxy_dir = tempfile::tempdir().unwrap();
    let config_path = proxy_dir.path().join("egress.yaml");
    std::fs::write(&config_path, config).unwrap();
    let mut command = Lab::command(&lab.proxy, BIN);
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
        DEADLINE,
    );
    proxy
}

// --- Behaviours --------------------------------------------------------------------------

/// An allowed name at its real address goes through the proxy, which dials the origin itself.
fn allowed_https_reaches_the_origin_from_the_proxy(
    client: &Client,
    proxy: &Proxy,
    origins: &Origins,
) {
    let out = client.curl(&[
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
    // The origin prints its accept line before it answers, so the line is on its way.
    let from_proxy = format!("tls {ORIGIN_IP}:443 from {PROXY_ORIGIN_SIDE}:");
    origins.wait_for(
        |lines| !accepts(lines, &from_proxy).is_empty(),
        "the origin to report the proxy's connection",
    );
    assert!(
        accepts(&origins.lines(), &from_proxy).len() == 1,
        "the origin saw the proxy's connection, not the client's: {:#?}",
        origins.lines()
    );
}

/// A forbidden SNI is cut and never dialled.
fn forbidden_sni_is_refused(client: &Client, proxy: &Proxy) {
    let out = client.curl(&[
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
}

/// An allowed SNI aimed at the attacker's address is dialled at the address the proxy resolved.
fn allowed_sni_is_dialled_where_the_proxy_resolved_it(client: &Client, proxy: &Proxy) {
    let out = client.curl(&[
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
}

/// Plain HTTP through the transparent HTTP listener is judged on Host and reaches the origin.
fn allowed_http_is_judged_on_host(client: &Client, proxy: &Proxy) {
    let out = client.curl(&[
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
}

/// An allowed Host aimed at the attacker's address is dialled at the address the proxy resolved.
fn allowed_http_host_is_dialled_where_the_proxy_resolved_it(client: &Client, proxy: &Proxy) {
    let out = client.curl(&[
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
}

/// A forbidden Host gets the proxy's 403 and is never dialled.
fn forbidden_http_host_gets_403(client: &Client, proxy: &Proxy) {
    let out = client.curl(&[
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
}

/// A port that is not redirected (22) is not reachable at all: nothing is forwarded.
fn unredirected_port_is_unreachable(client: &Client) {
    let probe = client.probe(ORIGIN_IP, 22);
    let said = String::from_utf8_lossy(&probe.stdout);
    assert!(said.starts_with("unreachable"), "port 22: {}", text(&probe));
}

/// With the proxy exited, every decision it logged was one a step above expected.
fn proxy_judged_nothing_else(unread: &[Value]) {
    let decisions: Vec<&Value> = unread.iter().filter(|v| v["event"] == "decision").collect();
    assert!(
        decisions.is_empty(),
        "the proxy judged connections no step made: {decisions:#?}"
    );
}

/// With the origins exited, they were only ever reached from the proxy host and only at the
/// resolved origin: never the attacker address, never port 22, never the client directly,
/// and the forbidden names were never dialled.
fn origins_saw_only_the_proxy(printed: &[String]) {
    assert!(
        accepts(printed, ATTACKER_IP).is_empty(),
        "the attacker address got connections: {printed:#?}"
    );
    assert!(accepts(printed, ":22 ").is_empty(), "{printed:#?}");
    assert!(
        accepts(printed, &format!("from {CLIENT_IP}:")).is_empty(),
        "the client reached an origin without the proxy: {printed:#?}"
    );
    // allowed https twice, allowed http twice: all from the proxy host, all to .2.
    assert_eq!(
        accepts(
            printed,
            &format!("tls {ORIGIN_IP}:443 from {PROXY_ORIGIN_SIDE}:")
        )
        .len(),
        2,
        "{printed:#?}"
    );
    assert_eq!(
        accepts(
            printed,
            &format!("http {ORIGIN_IP}:80 from {PROXY_ORIGIN_SIDE}:")
        )
        .len(),
        2,
        "{printed:#?}"
    );
    let errors: Vec<&String> = printed
        .iter()
        .filter(|l| !l.starts_with("accept ") && *l != "READY" && *l != "BYE")
        .collect();
    assert!(errors.is_empty(), "origin errors: {errors:#?}");
}

// --- The pieces --------------------------------------------------------------------------

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

fn addr(ip: &str, port: u16) -> SocketAddr {
    format!("{ip}:{port}").parse().unwrap()
}

/// Whether a decision line's client is the client host.
fn is_client(line: &Value) -> bool {
    line["client"]
        .as_str()
        .is_some_and(|c| c.starts_with(&format!("{CLIENT_IP}:")))
}

/// The namespaces; all deleted on drop, panic or not.
struct Lab {
    client: String,
    proxy: String,
    origin: String,
    created: Vec<String>,
}

impl Lab {
    fn new() -> Lab {
        let pid = std::process::id();
        Lab {
            client: format!("egp-c-{pid}"),
            proxy: format!("egp-p-{pid}"),
            origin: format!("egp-o-{pid}"),
            created: Vec::new(),
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
        for name in self.created.iter().rev() {
            let _ = Command::new("ip")
                .args(["netns", "del", name])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// The files the origins and the client share: the CA, the origins' certificate and key,
/// and the origins' script.
struct Files(tempfile::TempDir);

impl Files {
    fn write() -> Files {
        let dir = tempfile::tempdir().unwrap();
        let (ca_pem, cert_pem, key_pem) = certificates();
        std::fs::write(dir.path().join("ca.pem"), ca_pem).unwrap();
        std::fs::write(dir.path().join("cert.pem"), cert_pem).unwrap();
        std::fs::write(dir.path().join("key.pem"), key_pem).unwrap();
        std::fs::write(dir.path().join("origins.py"), ORIGINS_PY).unwrap();
        Files(dir)
    }

    fn path(&self, name: &str) -> String {
        self.0.path().join(name).to_str().unwrap().to_owned()
    }
}

/// The client host's programs: curl and a bare TCP connect.
struct Client {
    ns: String,
    ca: String,
}

impl Client {
    fn new(lab: &Lab, files: &Files) -> Client {
        Client {
            ns: lab.client.clone(),
            ca: files.path("ca.pem"),
        }
    }

    /// curl on the client host, trusting the test CA, with no proxy configured.
    fn curl(&self, extra: &[&str]) -> Output {
        Lab::command(&self.ns, "curl")
            .args([
                "-sS",
                "--max-time",
                "30",
                "--noproxy",
                "*",
                "--cacert",
                &self.ca,
            ])
            .args(extra)
            .output()
            .unwrap()
    }

    /// A TCP connection attempt from the client host: prints `connected` or `unreachable ...`.
    fn probe(&self, ip: &str, port: u16) -> Output {
        Lab::command(&self.ns, "python3")
            .args([
                "-c",
                &format!(
                    "import socket\ntry:\n    socket.create_connection(('{ip}', {port}), timeout=3)\n    print('connected')\nexcept OSError as e:\n    print('unreachable', e)"
                ),
            ])
            .output()
            .unwrap()
    }
}

/// The origin host's servers: TLS and plain HTTP on both the real origin address and the
/// attacker's, and an SSH-like port that should stay unreachable. Every accepted connection
/// is printed (`accept KIND IP:PORT from PEER`) before it is answered; replies name the
/// address that answered. When stdin closes the script accepts every connection still
/// queued, waits for every reply to finish, prints `BYE` and exits.
const ORIGINS_PY: &str = r#"
import os, selectors, socket, ssl, sys, threading
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

workers = []

def take(sock, kind, where):
    """Accepts every connection queued on sock now."""
    while True:
        try:
            conn, peer = sock.accept()
        except BlockingIOError:
            return
        conn.setblocking(True)
        say("accept %s %s from %s:%d" % (kind, where, peer[0], peer[1]))
        t = threading.Thread(target=respond, args=(conn, kind, where))
        t.start()
        workers.append(t)

sel = selectors.DefaultSelector()
listeners = []
for spec in specs:
    kind, ip, port = spec.split(":")
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((ip, int(port)))
    s.listen(64)
    s.setblocking(False)
    listeners.append((s, kind, "%s:%s" % (ip, port)))
    sel.register(s, selectors.EVENT_READ, listeners[-1])
sel.register(0, selectors.EVENT_READ, None)
say("READY")
stopping = False
while not stopping:
    for k, _ in sel.select():
        if k.data is not None:
            take(*k.data)
        elif os.read(0, 4096) == b"":
            stopping = True
for l in listeners:
    take(*l)
for t in workers:
    t.join()
say("BYE")
"#;

/// The origins' process and every line it printed (stdout and stderr). Killed on drop.
struct Origins {
    child: Child,
    stdin: Option<ChildStdin>,
    printed: Arc<(Mutex<Vec<String>>, Condvar)>,
    readers: Vec<JoinHandle<()>>,
}

impl Origins {
    fn spawn(mut command: Command) -> Origins {
        let mut child = command.spawn().expect("starting the origins");
        let stdin = child.stdin.take();
        let printed = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let readers = [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ]
        .into_iter()
        .map(|stream| {
            let sink = printed.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    sink.0.lock().unwrap().push(line);
                    sink.1.notify_all();
                }
            })
        })
        .collect();
        Origins {
            child,
            stdin,
            printed,
            readers,
        }
    }

    /// Every line printed so far.
    fn lines(&self) -> Vec<String> {
        self.printed.0.lock().unwrap().clone()
    }

    /// Waits (up to the deadline) until the lines printed so far satisfy `done`.
    fn wait_for(&self, done: impl Fn(&[String]) -> bool, what: &str) {
        let deadline = Instant::now() + DEADLINE;
        let (lock, changed) = &*self.printed;
        let mut lines = lock.lock().unwrap();
        while !done(&lines) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "waited {DEADLINE:?} for {what}: {lines:#?}"
            );
            lines = changed.wait_timeout(lines, left).unwrap().0;
        }
    }

    /// Closes the origins' stdin, waits for them to take what is queued, finish and exit,
    /// and returns everything they printed: after this no connection can still be counted.
    fn stop(&mut self) -> Vec<String> {
        drop(self.stdin.take());
        let deadline = Instant::now() + DEADLINE;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "the origins did not exit within {DEADLINE:?}: {:#?}",
                self.lines()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        // The readers end at EOF on the origins' stdout and stderr.
        for reader in self.readers.drain(..) {
            reader.join().unwrap();
        }
        let printed = self.lines();
        assert!(status.success(), "origins exited {status}: {printed:#?}");
        assert!(printed.iter().any(|l| l == "BYE"), "{printed:#?}");
        printed
    }
}

impl Drop for Origins {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `accept` lines among `lines` that contain `needle`.
fn accepts<'a>(lines: &'a [String], needle: &str) -> Vec<&'a String> {
    lines
        .iter()
        .filter(|l| l.starts_with("accept ") && l.contains(needle))
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
