//! The shipped upload caps against real clients: every rule of `config/egress.yaml` carries
//! `max_bytes_up`, a real `pip install` of a large requirements set, a real `skopeo` image pull
//! and a dnf-like repository fetch (curl over keep-alive) all pass under those exact values,
//! and an upload of a few MiB through a name each rule allows is cut (`upload_limit`).
//!
//! Nothing leaves loopback: `tests/fixtures/pkg_origin.py` stands in for PyPI, Docker Hub and
//! the Amazon Linux repositories on kernel-chosen ports of 127.0.0.1, with a certificate for
//! the real hostnames from a CA made here; the test config is the shipped rules with their
//! ports pointed at the fixture and `resolver.hosts` mapping every name to 127.0.0.1.
//!
//! The same tests are the measurement behind the caps (config/SOURCES.md, "Upload caps"):
//! run with `-- --nocapture` they print `bytes_up` per connection, and the sizes can be
//! raised with `SHIPPED_CAPS_PACKAGES`, `SHIPPED_CAPS_LAYERS` and `SHIPPED_CAPS_RPMS`.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use serde_json::Value;
use serde_yaml_ng::{Mapping, Value as Yaml};
use sha2::Digest;

/// Every bounded wait in this file.
const WAIT: Duration = Duration::from_secs(30);

/// How long a client may run: `WAIT`, or longer for a measurement run with larger sizes
/// (`SHIPPED_CAPS_CLIENT_SECS`).
fn client_wait() -> Duration {
    Duration::from_secs(env_count("SHIPPED_CAPS_CLIENT_SECS", WAIT.as_secs() as usize) as u64)
}
/// The upload that must be cut: a few MiB, larger than any cap shipped.
const UPLOAD: usize = 8 << 20;

fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn shipped() -> Mapping {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/egress.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    serde_yaml_ng::from_str(&text).expect("config/egress.yaml is YAML")
}

fn rules(config: &Mapping) -> Vec<Mapping> {
    config["allow"]
        .as_sequence()
        .expect("allow: is a list")
        .iter()
        .map(|r| r.as_mapping().expect("a rule is a mapping").clone())
        .collect()
}

fn hosts(rule: &Mapping) -> Vec<String> {
    rule["hosts"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|h| h.as_str().unwrap().to_owned())
        .collect()
}

fn name(rule: &Mapping) -> String {
    rule["name"].as_str().unwrap().to_owned()
}

/// A rule whose only port is 80: plain HTTP (absolute-form requests).
fn plain_http(rule: &Mapping) -> bool {
    rule.get("ports")
        .and_then(Yaml::as_sequence)
        .is_some_and(|p| p.iter().all(|p| p.as_u64() == Some(80)))
}

/// `4MiB`, `512KiB`, `1GiB` or a plain number of bytes.
fn size(value: &Yaml) -> u64 {
    if let Some(n) = value.as_u64() {
        return n;
    }
    let text = value.as_str().expect("a size");
    let digits = text.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let n: u64 = digits.trim().parse().unwrap();
    n * match &text[digits.len()..] {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        unit => panic!("unit {unit} in {text}: teach this test"),
    }
}

/// The rule's `max_bytes_up` in bytes.
fn cap(rule: &Mapping) -> u64 {
    size(
        rule.get("max_bytes_up")
            .unwrap_or_else(|| panic!("rule {} ships without max_bytes_up", name(rule))),
    )
}

/// The fixture origin (`tests/fixtures/pkg_origin.py`): HTTPS and plain-HTTP ports.
struct Fixture {
    child: Child,
    https: u16,
    http: u16,
    dir: tempfile::TempDir,
}

impl Fixture {
    fn start(names: &[String], packages: usize, layers: usize, rpms: usize) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(
            rcgen::DnType::CommonName,
            "egress-proxy shipped-caps test CA",
        );
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(names.to_vec())
            .unwrap()
            .signed_by(&key, &rcgen::Issuer::from_params(&ca_params, &ca_key))
            .unwrap();
        std::fs::write(dir.path().join("leaf.pem"), cert.pem()).unwrap();
        std::fs::write(dir.path().join("leaf.key"), key.serialize_pem()).unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        // skopeo's --src-cert-dir takes CA certificates named *.crt.
        std::fs::create_dir(dir.path().join("certs.d")).unwrap();
        std::fs::write(dir.path().join("certs.d/ca.crt"), ca.pem()).unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pkg_origin.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg("--cert")
            .arg(dir.path().join("leaf.pem"))
            .arg("--key")
            .arg(dir.path().join("leaf.key"))
            .args(["--packages", &packages.to_string()])
            .args(["--layers", &layers.to_string()])
            .args(["--rpms", &rpms.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 runs the fixture origin");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(WAIT)
            .expect("the fixture origin reports its ports");
        let ports: Vec<u16> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|p| p.parse().ok())
            .collect();
        assert_eq!(ports.len(), 2, "fixture said {line:?}");
        Fixture {
            child,
            https: ports[0],
            http: ports[1],
            dir,
        }
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The shipped config with each rule's ports pointed at the fixture (HTTPS, or plain HTTP for
/// a port-80 rule, which then needs `tls: any` to be forwarded to a port other than 80) and
/// every other key, the caps included, exactly as shipped.
fn test_config(config: &Mapping, fixture: &Fixture) -> String {
    let mut allow = Vec::new();
    let mut resolver = Mapping::new();
    for rule in rules(config) {
        let mut rule = rule.clone();
        let port = if plain_http(&rule) {
            rule.insert("tls".into(), "any".into());
            fixture.http
        } else {
            fixture.https
        };
        rule.insert("ports".into(), Yaml::Sequence(vec![port.into()]));
        for host in hosts(&rule) {
            resolver.insert(host.into(), Yaml::Sequence(vec!["127.0.0.1".into()]));
        }
        allow.push(Yaml::Mapping(rule));
    }
    let mut out = Mapping::new();
    if let Some(mode) = config.get("mode") {
        out.insert("mode".into(), mode.clone());
    }
    out.insert("allow".into(), Yaml::Sequence(allow));
    let mut upstream = Mapping::new();
    upstream.insert(
        "allow_cidrs".into(),
        Yaml::Sequence(vec!["127.0.0.0/8".into()]),
    );
    out.insert("upstream".into(), Yaml::Mapping(upstream));
    let mut res = Mapping::new();
    res.insert("hosts".into(), Yaml::Mapping(resolver));
    out.insert("resolver".into(), Yaml::Mapping(res));
    serde_yaml_ng::to_string(&out).unwrap()
}

/// Runs a client to its end, or kills it after `WAIT` (and fails). Proxy settings from the
/// environment are dropped; `proxy_env` (e.g. `HTTPS_PROXY`) is set after that.
fn run(mut command: Command, what: &str, proxy_env: &[(&str, String)]) -> Output {
    for var in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "NO_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "no_proxy",
    ] {
        command.env_remove(var);
    }
    for (var, value) in proxy_env {
        command.env(var, value);
    }
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {what}: {e}"));
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let wait = client_wait();
    match rx.recv_timeout(wait) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("{what} did not finish within {wait:?}");
        }
    }
}

fn text(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Stops the proxy (the client has exited, so every connection is over), checks that nothing
/// was denied, and returns the close lines; prints `bytes_up` per connection, the measurement
/// SOURCES.md records.
fn close_lines(proxy: &mut Proxy, what: &str) -> Vec<Value> {
    let lines = proxy.stop_and_collect();
    for line in &lines {
        assert_ne!(line["decision"], "deny", "{what}: {line}");
    }
    let closes: Vec<Value> = lines
        .into_iter()
        .filter(|v| v["event"] == "close")
        .collect();
    for line in &closes {
        eprintln!(
            "measured {what}: rule={} host={} bytes_up={} bytes_down={} reason={}",
            line["rule"], line["host"], line["bytes_up"], line["bytes_down"], line["reason"]
        );
    }
    closes
}

/// No connection was refused or cut, and each stayed under its rule's shipped cap.
fn assert_under_caps(closes: &[Value], config: &Mapping) {
    assert!(!closes.is_empty());
    for line in closes {
        assert_eq!(line["decision"], "allow", "{line}");
        assert_ne!(line["reason"], "upload_limit", "{line}");
        let rule = rules(config)
            .into_iter()
            .find(|r| line["rule"] == name(r).as_str())
            .unwrap_or_else(|| panic!("no shipped rule for {line}"));
        assert!(line["bytes_up"].as_u64().unwrap() < cap(&rule), "{line}");
    }
}

#[test]
fn every_shipped_rule_has_an_upload_cap_smaller_than_a_few_mib() {
    for rule in rules(&shipped()) {
        let cap = cap(&rule);
        assert!(
            cap < UPLOAD as u64,
            "rule {}: max_bytes_up {cap} would let an {UPLOAD}-byte upload through",
            name(&rule)
        );
    }
}

#[test]
fn a_real_pip_install_of_a_large_requirements_set_passes_under_the_shipped_caps() {
    let config = shipped();
    let all: Vec<String> = rules(&config).iter().flat_map(hosts).collect();
    let packages = env_count("SHIPPED_CAPS_PACKAGES", 100);
    let fixture = Fixture::start(&all, packages, 1, 1);
    let mut proxy = Proxy::start(&test_config(&config, &fixture));
    let work = tempfile::tempdir().unwrap();
    let reqs = work.path().join("requirements.txt");
    let wanted: String = (0..packages)
        .map(|i| format!("fixture-pkg-{i:03}==1.0.0\n"))
        .collect();
    std::fs::write(&reqs, wanted).unwrap();
    let target = work.path().join("site");
    let mut pip = Command::new("python3");
    pip.args(["-m", "pip", "install", "--no-cache-dir"])
        .args([
            "--disable-pip-version-check",
            "--no-input",
            "--only-binary",
            ":all:",
        ])
        .args(["--retries", "0", "--timeout", "20"])
        .arg("--index-url")
        .arg(format!("https://pypi.org:{}/simple/", fixture.https))
        .arg("--cert")
        .arg(fixture.ca())
        .args(["--proxy", &format!("http://{}", proxy.explicit)])
        .arg("-r")
        .arg(&reqs)
        .arg("--target")
        .arg(&target);
    // This machine's PIP_* (find-links, index, cert) and CA-bundle variables would override
    // the fixture's index and CA (requests prefers REQUESTS_CA_BUNDLE to --cert).
    for (var, _) in std::env::vars() {
        if var.starts_with("PIP_") || var == "REQUESTS_CA_BUNDLE" || var == "CURL_CA_BUNDLE" {
            pip.env_remove(var);
        }
    }
    pip.env("PIP_CONFIG_FILE", "/dev/null");
    let out = run(pip, "pip install", &[]);
    assert!(out.status.success(), "{}", text(&out));
    let installed = std::fs::read_dir(&target)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            n.starts_with("fixture_pkg_") && !n.ends_with(".dist-info")
        })
        .count();
    assert_eq!(installed, packages, "{}", text(&out));
    let closes = close_lines(&mut proxy, &format!("pip {packages} packages"));
    assert_under_caps(&closes, &config);
    // Keep-alive: one connection per host, each carrying every package's request.
    for host in ["pypi.org", "files.pythonhosted.org"] {
        assert!(closes.iter().any(|l| l["host"] == host), "{closes:#?}");
    }
}

fn skopeo_installed() -> bool {
    let found = Command::new("skopeo")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "skopeo must be installed in CI (.ci/setup installs it)"
        );
        eprintln!("SKIPPED: skopeo is not installed (apt-get install skopeo)");
    }
    found
}

#[test]
fn a_real_skopeo_image_pull_passes_under_the_shipped_caps() {
    if !skopeo_installed() {
        return;
    }
    let config = shipped();
    let all: Vec<String> = rules(&config).iter().flat_map(hosts).collect();
    let layers = env_count("SHIPPED_CAPS_LAYERS", 6);
    let fixture = Fixture::start(&all, 1, layers, 1);
    let mut proxy = Proxy::start(&test_config(&config, &fixture));
    let work = tempfile::tempdir().unwrap();
    let dest = work.path().join("image");
    let mut skopeo = Command::new("skopeo");
    skopeo
        .args(["--insecure-policy", "--override-os", "linux"])
        .args(["--override-arch", "amd64", "copy", "--retry-times", "0"])
        .arg("--src-cert-dir")
        .arg(fixture.dir.path().join("certs.d"))
        .arg(format!(
            "docker://registry-1.docker.io:{}/library/fixture:latest",
            fixture.https
        ))
        .arg(format!("dir:{}", dest.display()))
        .env("HOME", work.path())
        .env("REGISTRY_AUTH_FILE", work.path().join("auth.json"));
    let proxy_url = format!("http://{}", proxy.explicit);
    let out = run(skopeo, "skopeo copy", &[("HTTPS_PROXY", proxy_url)]);
    assert!(out.status.success(), "{}", text(&out));
    // manifest.json, version, the config blob and every layer.
    let files = std::fs::read_dir(&dest).unwrap().count();
    assert_eq!(files, layers + 3, "{}", text(&out));
    let closes = close_lines(&mut proxy, &format!("skopeo {layers} layers"));
    assert_under_caps(&closes, &config);
    for host in [
        "registry-1.docker.io",
        "auth.docker.io",
        "production.cloudfront.docker.com",
    ] {
        assert!(closes.iter().any(|l| l["host"] == host), "{closes:#?}");
    }
}

#[test]
fn a_dnf_like_repository_fetch_over_keep_alive_passes_under_the_shipped_caps() {
    let config = shipped();
    let all: Vec<String> = rules(&config).iter().flat_map(hosts).collect();
    let rpms = env_count("SHIPPED_CAPS_RPMS", 50);
    let fixture = Fixture::start(&all, 1, 1, rpms);
    let mut proxy = Proxy::start(&test_config(&config, &fixture));
    let guid = "f3b1c6ad0c9e4f7e8a2b5d6c7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f";
    let metadata: Vec<String> = ["primary", "filelists", "other"]
        .iter()
        .map(|kind| {
            let digest: String = sha2::Sha256::digest(kind.as_bytes())
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            format!("repodata/{digest}-{kind}.xml.gz")
        })
        .collect();
    // What dnf (libcurl) asks one repository host for, in order, over one connection: the
    // mirror list, repomd.xml, the metadata it names, then the packages of a transaction.
    let dnf = |base: String, mirror: Option<String>| {
        let mut urls: Vec<String> = mirror.into_iter().collect();
        urls.push(format!("{base}/repodata/repomd.xml"));
        urls.extend(metadata.iter().map(|m| format!("{base}/{m}")));
        urls.extend(
            (0..rpms)
                .map(|i| format!("{base}/Packages/fixture-rpm-{i:03}-1.0-1.amzn2023.x86_64.rpm")),
        );
        let mut curl = Command::new("curl");
        curl.args(["-sS", "--fail", "--max-time", "25"])
            .args(["-A", "libdnf (Amazon Linux 2023; generic; Linux.x86_64)"])
            .arg("--cacert")
            .arg(fixture.ca())
            .args(["-x", &format!("http://{}", proxy.explicit)])
            .args(["-w", "%{http_code}\n"]);
        for url in &urls {
            curl.args(["-o", "/dev/null", url]);
        }
        let out = run(curl, "curl (dnf-like)", &[]);
        assert!(out.status.success(), "{}", text(&out));
        let codes = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(codes.lines().filter(|c| *c == "200").count(), urls.len());
    };
    for rule in rules(&config) {
        if plain_http(&rule) {
            // AL2 containers: the mirror list over plain HTTP, the repository on the CDN.
            for host in hosts(&rule) {
                let url = format!(
                    "http://{host}:{}/2/core/latest/x86_64/mirror.list",
                    fixture.http
                );
                let mut curl = Command::new("curl");
                curl.args(["-sS", "--fail", "--max-time", "25"]).args([
                    "-x",
                    &format!("http://{}", proxy.explicit),
                    &url,
                ]);
                let out = run(curl, "curl (mirror list over HTTP)", &[]);
                assert!(out.status.success(), "{}", text(&out));
                let base = String::from_utf8_lossy(&out.stdout).trim().to_owned();
                assert!(base.starts_with("https://cdn.amazonlinux.com:"), "{base}");
                dnf(base.trim_end_matches('/').to_owned(), None);
            }
            continue;
        }
        if !name(&rule).starts_with("amazonlinux") {
            continue;
        }
        // AL2023 and AL2 hosts: mirror list and repository on the same host.
        for host in hosts(&rule) {
            let origin = format!("https://{host}:{}", fixture.https);
            dnf(
                format!("{origin}/al2023/core/guids/{guid}/x86_64"),
                Some(format!(
                    "{origin}/al2023/core/mirrors/latest/x86_64/mirror.list"
                )),
            );
        }
    }
    let closes = close_lines(&mut proxy, &format!("dnf-like {rpms} packages"));
    assert_under_caps(&closes, &config);
}

#[test]
fn an_upload_of_a_few_mib_to_any_allowed_name_is_cut_at_its_rules_shipped_cap() {
    let config = shipped();
    let all: Vec<String> = rules(&config).iter().flat_map(hosts).collect();
    let fixture = Fixture::start(&all, 1, 1, 1);
    let mut proxy = Proxy::start(&test_config(&config, &fixture));
    let work = tempfile::tempdir().unwrap();
    let payload = work.path().join("payload.bin");
    std::fs::write(&payload, vec![b'x'; UPLOAD]).unwrap();
    let mut expected = Vec::new();
    for rule in rules(&config) {
        for host in hosts(&rule) {
            let url = if plain_http(&rule) {
                format!("http://{host}:{}/upload", fixture.http)
            } else {
                format!("https://{host}:{}/upload", fixture.https)
            };
            let mut curl = Command::new("curl");
            curl.args(["-sS", "--max-time", "25", "--cacert"])
                .arg(fixture.ca())
                .args(["-x", &format!("http://{}", proxy.explicit)])
                .args(["-H", "Content-Type: application/octet-stream"])
                .arg("--data-binary")
                .arg(format!("@{}", payload.display()))
                .arg(&url);
            let out = run(curl, "curl upload", &[]);
            // The origin acknowledges a whole body with "stored": it must never get one.
            assert!(
                !String::from_utf8_lossy(&out.stdout).contains("stored"),
                "{url}: the upload got through\n{}",
                text(&out)
            );
            expected.push((name(&rule), host, cap(&rule), plain_http(&rule)));
        }
    }
    let lines = proxy.stop_and_collect();
    for (rule, host, cap, plain) in expected {
        let cut: Vec<&Value> = lines
            .iter()
            .filter(|l| l["host"] == host.as_str() && l["reason"] == "upload_limit")
            .collect();
        assert!(!cut.is_empty(), "{rule}: no upload_limit line: {lines:#?}");
        for line in cut {
            assert_eq!(line["rule"], rule.as_str(), "{line}");
            eprintln!("cut {rule}: {line}");
            if !plain {
                // A tunnel is cut exactly at the cap: not one byte more went up.
                assert_eq!(line["bytes_up"], cap, "{line}");
            } else if let Some(up) = line["bytes_up"].as_u64() {
                assert!(up <= cap, "{line}");
            }
        }
    }
}
