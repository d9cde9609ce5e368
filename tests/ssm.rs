//! `--config ssm:/name` end to end: the real binary reads AWS SSM Parameter Store from a real
//! moto server (`python3 -m moto.server`) on a loopback port, with dummy credentials in the
//! child's environment only. Covers `validate`, `check`, and `run` with polling reload.
#![cfg(feature = "ssm")]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// A moto server on a free loopback port. Killed on drop.
struct Moto {
    child: Child,
    addr: SocketAddr,
    endpoint: String,
}

impl Moto {
    /// Starts moto's server on a port the kernel picks; it prints the port once it is
    /// serving, and exits when its stdin closes (the test dropped it or died).
    fn start() -> Moto {
        const SERVE: &str = "import sys
from moto.server import ThreadedMotoServer
server = ThreadedMotoServer(ip_address='127.0.0.1', port=0, verbose=False)
server.start()
print(server.get_host_and_port()[1], flush=True)
sys.stdin.read()
";
        let mut child = Command::new("python3")
            .args(["-c", SERVE])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting python3 with moto's server (install: python3 -m pip install 'moto[server]>=5,<6')");
        let mut port = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut port,
        )
        .unwrap();
        let Ok(port) = port.trim().parse::<u16>() else {
            let status = child.wait().unwrap();
            panic!("moto server did not start ({status}); is moto[server] installed?");
        };
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let moto = Moto {
            child,
            addr,
            endpoint: format!("http://{addr}"),
        };
        assert_eq!(
            moto.call("DescribeParameters", "{}").0,
            200,
            "moto server on {addr} does not answer SSM calls"
        );
        moto
    }

    /// Environment for a child that talks to this moto: dummy credentials, region,
    /// endpoint, and no IMDS probing.
    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", "testing".to_owned()),
            ("AWS_SECRET_ACCESS_KEY", "testing".to_owned()),
            ("AWS_REGION", "us-east-1".to_owned()),
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
            // Keep any profile on the machine out of it.
            ("AWS_CONFIG_FILE", "/dev/null".to_owned()),
            ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null".to_owned()),
        ]
    }

    /// One AWS JSON 1.1 call: (status, body). Moto checks no signature, but routes to SSM by
    /// the credential scope in the Authorization header.
    fn call(&self, action: &str, body: &str) -> (u16, String) {
        let Ok(mut s) = TcpStream::connect(self.addr) else {
            return (0, String::new());
        };
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let request = format!(
            "POST / HTTP/1.1\r\nHost: {}\r\nX-Amz-Target: AmazonSSM.{action}\r\n\
             Content-Type: application/x-amz-json-1.1\r\n\
             Authorization: AWS4-HMAC-SHA256 Credential=testing/20240101/us-east-1/ssm/aws4_request, SignedHeaders=host, Signature=0\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.addr,
            body.len()
        );
        if s.write_all(request.as_bytes()).is_err() {
            return (0, String::new());
        }
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        let text = String::from_utf8_lossy(&out).into_owned();
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        (status_of(&text), body)
    }

    /// Stores `value` as a SecureString parameter, overwriting.
    fn put(&self, name: &str, value: &str) {
        let body = serde_json::json!({
            "Name": name, "Value": value, "Type": "SecureString", "Overwrite": true
        });
        let (status, reply) = self.call("PutParameter", &body.to_string());
        assert_eq!(status, 200, "PutParameter {name} failed: {reply}");
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the binary to completion with moto's environment, within 60 s.
fn run_bin(moto: &Moto, args: &[&str]) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .envs(moto.env())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting egress-proxy");
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("egress-proxy {args:?} did not finish within 60s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `validate` and `check` bind nothing: the listener address is never used.
const POLICY: &str = "listeners:
  explicit: 127.0.0.1:3128
allow:
  - name: allowed
    hosts: [allowed.test]
";

#[test]
fn validate_reads_a_secure_string_parameter() {
    let moto = Moto::start();
    moto.put("/egress/valid", POLICY);
    let out = run_bin(&moto, &["validate", "--config", "ssm:/egress/valid"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {}\nstderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("ssm:/egress/valid: valid, 1 rules"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn validate_names_a_missing_parameter() {
    let moto = Moto::start();
    let out = run_bin(&moto, &["validate", "--config", "ssm:/egress/missing"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    // One line names the parameter and the AWS error kind.
    let line = stderr
        .lines()
        .find(|l| l.contains("ssm:/egress/missing"))
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(line.contains("ParameterNotFound"), "{stderr}");
}

#[test]
fn validate_reports_the_field_path_of_a_bad_value() {
    let moto = Moto::start();
    moto.put(
        "/egress/invalid",
        "allow:\n  - name: bad\n    hosts: [ok.test]\n    ports: [99999]\n",
    );
    let out = run_bin(&moto, &["validate", "--config", "ssm:/egress/invalid"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(stderr.contains("ssm:/egress/invalid"), "{stderr}");
    assert!(stderr.contains("allow[0].ports[0]"), "{stderr}");
}

#[test]
fn check_decides_from_the_parameter() {
    let moto = Moto::start();
    moto.put("/egress/check", POLICY);
    let out = run_bin(
        &moto,
        &[
            "check",
            "--config",
            "ssm:/egress/check",
            "--no-resolve",
            "allowed.test:443",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {}\nstderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("allowed"),
        "{}",
        text(&out.stdout)
    );
    let out = run_bin(
        &moto,
        &[
            "check",
            "--config",
            "ssm:/egress/check",
            "--no-resolve",
            "denied.test:443",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout: {}\nstderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// The config the `run` test stores: `newname.test` is allowed only when `with_new` is set.
fn run_config(listeners: &ListenerAddrs, with_new: bool) -> String {
    let new_rule = if with_new {
        "  - name: newrule\n    hosts: [newname.test]\n"
    } else {
        ""
    };
    format!(
        "{}allow:
  - name: allowed
    hosts: [allowed.test]
{new_rule}upstream:
  allow_cidrs: [127.0.0.0/8]
resolver:
  hosts:
    allowed.test: [127.0.0.1]
    newname.test: [127.0.0.1]
timeouts: {{ upstream_connect: 2s }}
reload: {{ poll_interval: 1s }}
",
        listeners.yaml()
    )
}

/// `egress_config_reloads_total{result="error"}` from the admin listener, or 0.
fn reload_errors(proxy: &Proxy) -> f64 {
    let (status, body) = proxy.admin_get("/metrics");
    assert_eq!(status, 200, "{body}");
    body.lines()
        .filter(|l| l.starts_with("egress_config_reloads_total") && l.contains("result=\"error\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// CONNECT newname.test:443 through the explicit listener: the status and its decision line.
fn connect_newname(proxy: &Proxy) -> (u16, serde_json::Value) {
    // The stream is closed before waiting, so no decision can be held back for a ClientHello.
    let status = status_of(&connect(proxy.explicit, "newname.test:443").1);
    let line = proxy.decision(|v| v["host"] == "newname.test");
    (status, line)
}

#[test]
fn run_polls_the_parameter_and_keeps_the_last_good_config() {
    let moto = Moto::start();
    let listeners = ListenerAddrs::any_port();
    moto.put("/egress/run", &run_config(&listeners, false));
    let env = moto.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut proxy = Proxy::start_with(&["run", "--config", "ssm:/egress/run"], &env);

    // Loaded from the parameter: the new name is not allowed yet.
    let (status, line) = connect_newname(&proxy);
    assert_eq!(status, 403, "{line}");
    assert_eq!(line["decision"], "deny", "{line}");
    assert_eq!(line["reason"], "no_rule", "{line}");

    // Allow it in the parameter; the 1 s poll picks it up.
    moto.put("/egress/run", &run_config(&listeners, true));
    let deadline = Instant::now() + Duration::from_secs(30);
    let line = loop {
        let (status, line) = connect_newname(&proxy);
        if status != 403 {
            // No origin listens on 127.0.0.1:443: a 502/504 (or a 200) proves the policy allowed it.
            assert!(matches!(status, 200 | 502 | 504), "status {status}: {line}");
            break line;
        }
        assert!(
            Instant::now() < deadline,
            "new policy not in force after 30s; stderr:\n{}",
            proxy.stderr()
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(line["rule"], "newrule", "{line}");
    assert_ne!(line["reason"], "no_rule", "{line}");
    // Written just after the new state is in force: wait for it, don't peek.
    proxy.wait_stderr(
        &["config reloaded from ssm:/egress/run"],
        Duration::from_secs(30),
    );
    assert_eq!(reload_errors(&proxy), 0.0);

    // An invalid value never replaces the running config.
    moto.put(
        "/egress/run",
        "allow:\n  - name: broken\n    hosts: [newname.test]\n    ports: [99999]\n",
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while reload_errors(&proxy) <= 0.0 {
        assert!(
            Instant::now() < deadline,
            "no failed reload counted after 30s; stderr:\n{}",
            proxy.stderr()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    // Counted just before it is said on stderr.
    proxy.wait_stderr(&["config reload failed"], Duration::from_secs(30));
    let (status, line) = connect_newname(&proxy);
    assert_ne!(status, 403, "{line}");
    assert_eq!(line["rule"], "newrule", "{line}");
}
