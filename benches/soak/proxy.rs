//! The proxy under soak: the release binary with a temp config on kernel-chosen loopback
//! ports, its decision lines parsed as they arrive (indexed by client address, which tags
//! every request the harness makes), its stderr kept (and scanned for panics), its metrics,
//! RSS and fd count read on demand.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::bound::bound_address;

/// What the log said about one client address.
#[derive(Default, Clone, Debug)]
pub struct Seen {
    /// (decision, reason) of each decision line.
    pub decisions: Vec<(String, String)>,
    /// reason of each close line.
    pub closes: Vec<String>,
    /// The first line, for the report.
    pub sample: String,
}

#[derive(Default)]
pub struct Log {
    pub by_ip: HashMap<Ipv4Addr, Seen>,
    pub decisions: u64,
    pub closes: u64,
    /// Decision lines by reason.
    pub reasons: BTreeMap<String, u64>,
    /// Lines whose client is not one of the harness's tagged addresses.
    pub foreign: Vec<String>,
    /// Lines whose `upstream` is in a forbidden range.
    pub forbidden_upstream: Vec<String>,
    pub unparsable: Vec<String>,
}

#[derive(Default)]
pub struct ErrText {
    pub lines: u64,
    pub panics: Vec<String>,
    pub errors: u64,
    pub warnings: u64,
    pub reload_ok: u64,
    pub reload_failed: u64,
    /// How long each memory release took (µs), when `SOAK_PROXY_LOG` shows them.
    pub releases_us: Vec<u64>,
    /// The first lines (listening addresses and early problems) and the most recent ones.
    pub head: String,
    pub tail: std::collections::VecDeque<String>,
}

pub struct Proxy {
    child: Child,
    pub pid: u32,
    pub explicit: SocketAddr,
    pub tls: SocketAddr,
    pub http: SocketAddr,
    pub admin: SocketAddr,
    pub config_path: PathBuf,
    pub log: Arc<Mutex<Log>>,
    pub err: Arc<Mutex<ErrText>>,
    reader: Option<JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

fn forbidden_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            (o[0] == 10) || (o[0] == 169 && o[1] == 254)
        }
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .is_some_and(|v4| forbidden_ip(IpAddr::V4(v4))),
    }
}

fn ingest(log: &mut Log, line: &str) {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
        if log.unparsable.len() < 20 {
            log.unparsable.push(line.chars().take(300).collect());
        }
        return;
    };
    let s = |k: &str| v[k].as_str().unwrap_or("").to_owned();
    let event = s("event");
    if let Some(up) = v["upstream"]
        .as_str()
        .and_then(|u| u.parse::<SocketAddr>().ok())
    {
        if forbidden_ip(up.ip()) && log.forbidden_upstream.len() < 50 {
            log.forbidden_upstream.push(line.to_owned());
        }
    }
    let is_close = event == "close";
    if is_close {
        log.closes += 1;
    } else {
        log.decisions += 1;
        *log.reasons.entry(s("reason")).or_default() += 1;
    }
    let client = v["client"]
        .as_str()
        .and_then(|c| c.parse::<SocketAddr>().ok())
        .and_then(|c| match c.ip() {
            IpAddr::V4(ip) => Some(ip),
            IpAddr::V6(ip) => ip.to_ipv4_mapped(),
        });
    let Some(ip) = client.filter(|ip| crate::load::is_tag(*ip)) else {
        if log.foreign.len() < 50 {
            log.foreign.push(line.to_owned());
        }
        return;
    };
    let seen = log.by_ip.entry(ip).or_default();
    if seen.sample.is_empty() {
        seen.sample = line.chars().take(600).collect();
    }
    if is_close {
        seen.closes.push(s("reason"));
    } else {
        seen.decisions.push((s("decision"), s("reason")));
    }
}

/// The proxy's stderr filter; `SOAK_PROXY_LOG` adds directives (`egress_proxy::sys=debug`
/// shows each memory release and how long it took).
fn proxy_log() -> String {
    let base = "warn,egress_proxy::serve=info,egress_proxy::reload=info";
    match std::env::var("SOAK_PROXY_LOG") {
        Ok(extra) if !extra.is_empty() => format!("{base},{extra}"),
        _ => base.to_owned(),
    }
}

impl Proxy {
    pub fn start(bin: &Path, yaml: &str) -> Result<Proxy, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let config_path = dir.path().join("soak.yaml");
        std::fs::write(&config_path, yaml).map_err(|e| e.to_string())?;
        let mut child = Command::new(bin)
            .args(["run", "--config"])
            .arg(&config_path)
            .env("EGRESS_PROXY_LOG", proxy_log())
            .env_remove("EGRESS_PROXY_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("starting {}: {e}", bin.display()))?;
        let log = Arc::new(Mutex::new(Log::default()));
        let stdout = child.stdout.take().unwrap();
        let sink = log.clone();
        let reader = std::thread::spawn(move || {
            let mut reader = BufReader::with_capacity(256 * 1024, stdout);
            let mut line = String::new();
            loop {
                line.clear();
                match reader.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => ingest(&mut sink.lock().unwrap(), line.trim_end()),
                }
            }
        });
        let err = Arc::new(Mutex::new(ErrText::default()));
        let esink = err.clone();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stderr);
            let mut raw = Vec::new();
            loop {
                raw.clear();
                match r.read_until(b'\n', &mut raw) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                let line = String::from_utf8_lossy(&raw).trim_end().to_owned();
                let mut e = esink.lock().unwrap();
                e.lines += 1;
                if line.contains("panicked") || line.contains("RUST_BACKTRACE") {
                    e.panics.push(line.clone());
                }
                if line.contains("ERROR") {
                    e.errors += 1;
                }
                if line.contains("WARN") {
                    e.warnings += 1;
                }
                if line.contains("config reloaded") {
                    e.reload_ok += 1;
                }
                if line.contains("config reload failed") {
                    e.reload_failed += 1;
                }
                if let Some(us) = line.split("micros=").nth(1) {
                    if let Ok(us) = us.trim().parse() {
                        e.releases_us.push(us);
                    }
                }
                if e.head.len() < 16 * 1024 {
                    e.head.push_str(&line);
                    e.head.push('\n');
                }
                e.tail.push_back(line);
                if e.tail.len() > 40 {
                    e.tail.pop_front();
                }
            }
        });
        let pid = child.id();
        let mut proxy = Proxy {
            child,
            pid,
            explicit: "0.0.0.0:0".parse().unwrap(),
            tls: "0.0.0.0:0".parse().unwrap(),
            http: "0.0.0.0:0".parse().unwrap(),
            admin: "0.0.0.0:0".parse().unwrap(),
            config_path,
            log,
            err,
            reader: Some(reader),
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let head = proxy.err.lock().unwrap().head.clone();
            let found = (
                bound_address(&head, "explicit"),
                bound_address(&head, "transparent_tls"),
                bound_address(&head, "transparent_http"),
                bound_address(&head, "admin"),
            );
            if let (Some(e), Some(t), Some(h), Some(a)) = found {
                (proxy.explicit, proxy.tls, proxy.http, proxy.admin) = (e, t, h, a);
                return Ok(proxy);
            }
            if let Ok(Some(status)) = proxy.child.try_wait() {
                return Err(format!(
                    "proxy exited ({status}); config:\n{yaml}\nstderr:\n{head}"
                ));
            }
            if Instant::now() > deadline {
                return Err(format!("proxy did not say it listens; stderr:\n{head}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill on our own child's pid.
        unsafe {
            libc::kill(self.pid as i32, sig);
        }
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Rewrites the config file atomically (the watcher must never see half a file).
    pub fn write_config(&self, yaml: &str) {
        let tmp = self.config_path.with_extension("tmp");
        if std::fs::write(&tmp, yaml).is_ok() {
            let _ = std::fs::rename(&tmp, &self.config_path);
        }
    }

    pub fn metrics(&self) -> Option<String> {
        let mut s = TcpStream::connect_timeout(&self.admin, Duration::from_secs(3)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n")
            .ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        let body = text.split_once("\r\n\r\n")?.1.to_owned();
        Some(body)
    }

    /// A `/proc/PID/status` field in KiB: `VmRSS`, or `RssAnon` (heap and stacks, where a
    /// leak would show; `RssFile`, the binary's code paged in, is the rest of VmRSS).
    pub fn status_kib(&self, field: &str) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }

    pub fn fds(&self) -> u64 {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid))
            .map(|d| d.count() as u64)
            .unwrap_or(0)
    }

    /// Of the open fds, the TCP sockets connected to `port` on loopback (the resolver's
    /// kept-open TCP connection to the harness's DNS server: state, not a leak).
    pub fn fds_to_port(&self, port: u16) -> u64 {
        let want = format!(":{port:04X}");
        let mut inodes = std::collections::HashSet::new();
        for table in ["tcp", "tcp6"] {
            let text = std::fs::read_to_string(format!("/proc/{}/net/{table}", self.pid))
                .unwrap_or_default();
            for l in text.lines().skip(1) {
                let f: Vec<&str> = l.split_whitespace().collect();
                if f.len() > 9 && f[2].ends_with(&want) {
                    inodes.insert(format!("socket:[{}]", f[9]));
                }
            }
        }
        std::fs::read_dir(format!("/proc/{}/fd", self.pid))
            .map(|d| {
                d.flatten()
                    .filter(|e| {
                        std::fs::read_link(e.path())
                            .is_ok_and(|t| inodes.contains(&t.to_string_lossy().into_owned()))
                    })
                    .count() as u64
            })
            .unwrap_or(0)
    }

    pub fn threads(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("Threads:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }

    /// SIGTERM, then wait for the exit (and for every line to be read).
    pub fn stop(&mut self, within: Duration) -> Option<ExitStatus> {
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + within;
        let status = loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                break Some(status);
            }
            if Instant::now() > deadline {
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        if status.is_some() {
            if let Some(r) = self.reader.take() {
                let _ = r.join();
            }
        }
        status
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sum of every series of `name` in a Prometheus text body.
pub fn metric_sum(text: &str, name: &str) -> f64 {
    metric_series(text, name).iter().map(|(_, v)| v).sum()
}

/// (labels, value) of every series of `name`.
pub fn metric_series(text: &str, name: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let (labels, value) = if let Some(r) = rest.strip_prefix('{') {
                let (labels, v) = r.split_once('}')?;
                (labels.to_owned(), v)
            } else if rest.starts_with(' ') {
                (String::new(), rest)
            } else {
                return None;
            };
            Some((labels, value.trim().parse::<f64>().ok()?))
        })
        .collect()
}

/// A label's value in a `a="x",b="y"` list.
pub fn label<'a>(labels: &'a str, key: &str) -> &'a str {
    let needle = format!("{key}=\"");
    labels
        .find(&needle)
        .map(|at| {
            let rest = &labels[at + needle.len()..];
            &rest[..rest.find('"').unwrap_or(rest.len())]
        })
        .unwrap_or("")
}
