//! `egress-proxy suggest` with the real binary: the change it proposes is merged into the
//! config, passes `validate`, and makes `check` allow exactly what was denied (and nothing
//! the config denied before beyond that).

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::*;

const CONFIG: &str = "\
mode: enforce
listeners:
  explicit: 127.0.0.1:3128
allow:
  - name: pypi
    hosts: [pypi.org, files.pythonhosted.org]
  - name: build
    hosts: [registry.example.com]
    ports: [443]
    clients: [10.0.32.0/24]
";

fn line(reason: &str, rule: Option<&str>, client: &str, host: &str, port: u16) -> String {
    let rule = rule.map_or("null".to_owned(), |r| format!("\"{r}\""));
    format!(
        r#"{{"ts":"2026-11-23T16:51:53.436Z","event":"decision","decision":"deny","enforced":true,"reason":"{reason}","rule":{rule},"principal":null,"listener":"explicit","client":"{client}:49078","host":"{host}","port":{port},"sni":null,"upstream":null,"bytes_up":null,"bytes_down":null,"duration_ms":null}}"#
    )
}

/// Runs the binary with `args`, feeding `stdin`, with no config from the environment.
fn run(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .env_remove("EGRESS_PROXY_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `check`'s exit code for CLIENT asking for TARGET under the config at `config`.
fn check(config: &Path, client: &str, target: &str) -> i32 {
    let config = config.to_str().unwrap();
    let out = run(
        &[
            "check",
            "--config",
            config,
            "--client",
            client,
            "--no-resolve",
            target,
        ],
        "",
    );
    out.status.code().unwrap()
}

fn validate(config: &Path) -> String {
    let out = run(&["validate", "--config", config.to_str().unwrap()], "");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    text(&out)
}

#[test]
fn the_merged_config_validates_and_allows_exactly_what_was_denied() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("egress.yaml");
    std::fs::write(&source, CONFIG).unwrap();
    let denied = [
        // A client limit refused it: the limit must grow by one address, not go away.
        (
            "client",
            Some("build"),
            "10.0.99.7",
            "registry.example.com",
            443,
        ),
        // A port refused it: the rule gets the port, no duplicate rule.
        ("port", Some("pypi"), "10.0.0.5", "pypi.org", 8443),
        ("no_rule", None, "10.0.0.5", "mirror.example.org", 80),
        ("no_rule", None, "10.0.0.5", "1.1.1.1", 443),
    ];
    let refused = [
        ("169.254.169.254", "169.254.169.254:80"),
        ("::1", "[::1]:443"),
        ("10.0.0.1", "10.0.0.1:443"),
    ];
    let mut log: Vec<String> = denied
        .iter()
        .map(|(reason, rule, client, host, port)| line(reason, *rule, client, host, *port))
        .collect();
    for (host, target) in refused {
        let port = target.rsplit(':').next().unwrap().parse().unwrap();
        log.push(line("no_rule", None, "10.0.0.5", host, port));
    }
    let log_path = dir.path().join("decisions.jsonl");
    std::fs::write(&log_path, log.join("\n")).unwrap();

    let out = run(
        &[
            "suggest",
            "--config",
            source.to_str().unwrap(),
            log_path.to_str().unwrap(),
        ],
        "",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let suggested = String::from_utf8(out.stdout).unwrap();
    assert!(!suggested.contains("WARNING"), "{suggested}");
    let merged = dir.path().join("merged.yaml");
    std::fs::write(&merged, &suggested).unwrap();
    assert!(
        validate(&merged).contains("valid, 4 rules"),
        "two edited rules, one name rule, one IP-literal rule:\n{suggested}"
    );

    for (_, _, client, host, port) in denied {
        let target = format!("{host}:{port}");
        assert_eq!(
            check(&source, client, &target),
            1,
            "denied before: {target}"
        );
        assert_eq!(
            check(&merged, client, &target),
            0,
            "allowed now: {target}\n{suggested}"
        );
    }
    // Nothing else: the client limit still refuses other clients, the port was added to
    // one rule only, and the new rules are exact.
    for (client, target) in [
        ("10.0.99.8", "registry.example.com:443"),
        ("10.0.0.5", "registry.example.com:8443"),
        ("10.0.0.5", "pypi.org:8080"),
        ("10.0.0.5", "other.example.org:80"),
        ("10.0.0.5", "mirror.example.org:443"),
        ("10.0.0.5", "1.1.1.2:443"),
    ] {
        assert_eq!(
            check(&merged, client, target),
            1,
            "still denied: {target}\n{suggested}"
        );
    }
    for (address, target) in refused {
        assert_eq!(
            check(&merged, "10.0.0.5", target),
            1,
            "{target}\n{suggested}"
        );
        let yaml: Vec<&str> = suggested
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .collect();
        assert!(
            !yaml.iter().any(|l| l.contains(address)),
            "{address} is in the config:\n{suggested}"
        );
        assert!(
            suggested.contains(&format!("#   {target}: the built-in deny list refuses it")),
            "{target} is not named as refused:\n{suggested}"
        );
    }
}

#[test]
fn a_real_report_mode_client_denial_extends_the_limit_of_its_rule() {
    let echo = EchoOrigin::start();
    let port = echo.addr.port();
    let proxy = Proxy::start(&format!(
        "mode: report
allow:
  - name: build
    hosts: [pkgs.test]
    ports: [{port}]
    clients: [10.9.0.0/16]
    tls: any
upstream: {{ allow_cidrs: [127.0.0.0/8] }}
resolver: {{ hosts: {{ pkgs.test: 127.0.0.1 }} }}
"
    ));
    let (mut tunnel, head) = connect(proxy.explicit, &format!("pkgs.test:{port}"));
    assert_eq!(status_of(&head), 200, "{head}");
    // The line is written once the tunnel's first bytes have been judged.
    tunnel.write_all(b"hi").unwrap();
    let mut echoed = [0u8; 2];
    std::io::Read::read_exact(&mut tunnel, &mut echoed).unwrap();
    let decision = proxy.decision(|v| v["host"] == "pkgs.test");
    assert_eq!(decision["reason"], "client", "{decision}");

    let out = run(
        &[
            "suggest",
            "--config",
            proxy.config_path.to_str().unwrap(),
            "-",
        ],
        &format!("{decision}\n"),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let suggested = String::from_utf8(out.stdout).unwrap();
    let merged = proxy.dir.path().join("merged.yaml");
    std::fs::write(&merged, &suggested).unwrap();
    assert!(validate(&merged).contains("valid, 1 rules"), "{suggested}");
    assert!(
        suggested.contains("      - 10.9.0.0/16\n      - 127.0.0.1/32  # suggested"),
        "{suggested}"
    );
    let target = format!("pkgs.test:{port}");
    assert_eq!(check(&proxy.config_path, "127.0.0.1", &target), 1);
    assert_eq!(check(&merged, "127.0.0.1", &target), 0, "{suggested}");
    assert_eq!(check(&merged, "127.0.0.2", &target), 1, "{suggested}");
    assert_eq!(check(&merged, "10.9.1.1", &target), 0, "{suggested}");
}

#[test]
fn without_a_config_it_reads_every_file_and_stdin_and_adds_no_rule_for_a_port_or_client() {
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("a.jsonl");
    let second = dir.path().join("b.jsonl");
    std::fs::write(
        &first,
        line("no_rule", None, "10.0.0.5", "a.example.org", 443),
    )
    .unwrap();
    std::fs::write(
        &second,
        format!(
            "{}\nnot json\n{}\n",
            line("port", Some("pypi"), "10.0.0.5", "pypi.org", 8443),
            line(
                "client",
                Some("build"),
                "10.0.99.7",
                "registry.example.com",
                443
            )
        ),
    )
    .unwrap();
    let out = run(
        &[
            "suggest",
            first.to_str().unwrap(),
            "-",
            second.to_str().unwrap(),
        ],
        &line("no_rule", None, "10.0.0.5", "::ffff:169.254.169.254", 80),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let suggested = String::from_utf8(out.stdout).unwrap();
    assert!(
        suggested.contains("5 line(s) read, 4 denied by policy"),
        "{suggested}"
    );
    assert!(suggested.contains("1 not JSON"), "{suggested}");
    assert!(
        suggested.contains("#   rule pypi: add 8443 to its ports"),
        "{suggested}"
    );
    assert!(
        suggested.contains(
            "#   rule build: add 10.0.99.7/32 to its clients, keeping the rest of the limit"
        ),
        "{suggested}"
    );
    assert!(
        suggested.contains("#   169.254.169.254:80: the built-in deny list refuses it"),
        "{suggested}"
    );
    let config = dir.path().join("standalone.yaml");
    std::fs::write(
        &config,
        format!("listeners: {{ explicit: 127.0.0.1:3128 }}\n{suggested}"),
    )
    .unwrap();
    assert!(validate(&config).contains("valid, 1 rules"), "{suggested}");
    assert_eq!(check(&config, "10.0.0.5", "a.example.org:443"), 0);
    assert_eq!(
        check(&config, "10.0.0.5", "pypi.org:8443"),
        1,
        "{suggested}"
    );
    assert_eq!(
        check(&config, "10.0.99.7", "registry.example.com:443"),
        1,
        "{suggested}"
    );
}

#[test]
fn an_invalid_config_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("bad.yaml");
    std::fs::write(&source, "allow: 3\n").unwrap();
    let out = run(&["suggest", "--config", source.to_str().unwrap()], "");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}
