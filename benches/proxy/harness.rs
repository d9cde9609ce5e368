//! The machinery around the measurements: CPU pinning, the fd limit, finding and starting
//! the release binary with a temp config, and reading its RSS and CPU time from /proc.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::bound::bound_address;

/// Where the proxy and the load generator run.
#[derive(Debug, Clone)]
pub struct Placement {
    pub cpus: usize,
    /// CPU for the proxy, CPU for this process (load generator and origins), when pinned.
    pub pinned: Option<(usize, usize)>,
    pub note: String,
}

fn cpu_set(cpu: usize) -> libc::cpu_set_t {
    // SAFETY: cpu_set_t is a plain bit array; CPU_ZERO/CPU_SET only touch it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(cpu, &mut set);
        set
    }
}

/// Pins this thread (and every thread it starts later) to `cpu`.
fn pin_current(cpu: usize) -> std::io::Result<()> {
    let set = cpu_set(cpu);
    // SAFETY: the set is a valid cpu_set_t of the size passed.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// With two or more CPUs: the proxy on CPU 0, this process on CPU 1. Call before any
/// thread is started, so they all inherit the mask.
pub fn place() -> Placement {
    // SAFETY: sysconf has no preconditions.
    let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1) as usize;
    if cpus < 2 {
        return Placement {
            cpus,
            pinned: None,
            note: format!("{cpus} CPU online: not pinned (proxy and load generator share it)"),
        };
    }
    match pin_current(1) {
        Ok(()) => Placement {
            cpus,
            pinned: Some((0, 1)),
            note: format!(
                "{cpus} CPUs online: proxy pinned to CPU 0, load generator + origins pinned to CPU 1 \
                 (sched_setaffinity; the proxy's tokio runtime therefore runs 1 worker thread)"
            ),
        },
        Err(e) => Placement {
            cpus,
            pinned: None,
            note: format!("{cpus} CPUs online: pinning failed ({e}); not pinned"),
        },
    }
}

/// Raises this process's soft RLIMIT_NOFILE to the hard limit; returns the new soft limit.
pub fn raise_nofile() -> u64 {
    // SAFETY: plain getrlimit/setrlimit on a local struct.
    unsafe {
        let mut limit: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 0;
        }
        if limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        limit.rlim_cur as u64
    }
}

/// The release binary: `EGRESS_PROXY_BIN`, else the one `cargo bench` built alongside this
/// bench (`CARGO_BIN_EXE_egress-proxy`, i.e. `target/release/egress-proxy`). Warns when a
/// source file is newer than the binary.
pub fn proxy_bin() -> Result<PathBuf, String> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let path = match std::env::var_os("EGRESS_PROXY_BIN") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_BIN_EXE_egress-proxy")),
    };
    if !path.is_file() {
        return Err(format!(
            "no proxy binary at {}.\nBuild it first:  cargo build --release --no-default-features   \
             (or plain `cargo build --release`),\nor point EGRESS_PROXY_BIN at one.",
            path.display()
        ));
    }
    if let Ok(built) = path.metadata().and_then(|m| m.modified()) {
        if let Some(newer) = newest_under(&manifest.join("src")).filter(|(t, _)| *t > built) {
            eprintln!(
                "warning: {} is newer than {}: the figures are for the old build \
                 (run `cargo build --release --no-default-features`)",
                newer.1.display(),
                path.display()
            );
        }
    }
    Ok(path)
}

fn newest_under(dir: &Path) -> Option<(SystemTime, PathBuf)> {
    let mut newest: Option<(SystemTime, PathBuf)> = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let found = if path.is_dir() {
            newest_under(&path)
        } else {
            entry.metadata().ok()?.modified().ok().map(|t| (t, path))
        };
        if let Some(found) = found {
            if newest.as_ref().is_none_or(|n| found.0 > n.0) {
                newest = Some(found);
            }
        }
    }
    newest
}

/// What the proxy's temp config needs to know.
pub struct ProxySpec<'a> {
    pub bin: &'a Path,
    pub tcp_origin_port: u16,
    pub tls_origin_port: u16,
    /// Start a transparent_tls listener; with `Some(port)`, written as
    /// `{ listen, default_port: port }` (when the origin could not bind 443).
    pub transparent: Option<Option<u16>>,
    pub cpu: Option<usize>,
}

/// A running proxy process; killed on drop.
pub struct ProxyProc {
    child: Child,
    pub pid: u32,
    pub explicit: SocketAddr,
    pub transparent: Option<SocketAddr>,
    stderr: Arc<Mutex<String>>,
    pub log_bytes: Arc<AtomicU64>,
    _dir: tempfile::TempDir,
}

impl ProxyProc {
    pub fn start(spec: &ProxySpec) -> Result<ProxyProc, String> {
        // Port 0: the kernel picks, the proxy reports what it bound on stderr.
        let mut yaml = "listeners:\n  explicit: 127.0.0.1:0\n".to_owned();
        match spec.transparent {
            Some(None) => yaml += "  transparent_tls: 127.0.0.1:0\n",
            Some(Some(port)) => {
                yaml +=
                    &format!("  transparent_tls: {{ listen: 127.0.0.1:0, default_port: {port} }}\n")
            }
            None => {}
        }
        yaml += &format!(
            "allow:\n  - name: bench-tcp\n    hosts: [origin.bench]\n    ports: [{}]\n    tls: any\n  \
             - name: bench-tls\n    hosts: [origin.bench]\n    ports: [{}]\n    tls: require_sni\n\
             upstream:\n  allow_cidrs: [127.0.0.0/8]\n\
             resolver:\n  hosts:\n    origin.bench: [127.0.0.1]\n\
             limits:\n  max_connections: 20000\n\
             timeouts:\n  idle: 600s\n",
            spec.tcp_origin_port, spec.tls_origin_port
        );
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let config = dir.path().join("bench.yaml");
        std::fs::write(&config, &yaml).map_err(|e| e.to_string())?;
        let mut cmd = Command::new(spec.bin);
        cmd.args(["run", "--config"])
            .arg(&config)
            // Quiet, but for the lines that say where the listeners are bound.
            .env("EGRESS_PROXY_LOG", "warn,egress_proxy::serve=info")
            .env_remove("EGRESS_PROXY_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(cpu) = spec.cpu {
            let set = cpu_set(cpu);
            // SAFETY: sched_setaffinity is async-signal-safe; `set` is a copied plain value.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("starting {}: {e}", spec.bin.display()))?;
        // The decision log: read and discarded (counted) so the pipe never blocks the proxy.
        let log_bytes = Arc::new(AtomicU64::new(0));
        let mut stdout = child.stdout.take().unwrap();
        let counter = log_bytes.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                counter.fetch_add(n as u64, Ordering::Relaxed);
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                let mut s = sink.lock().unwrap();
                if s.len() < 64 * 1024 {
                    s.push_str(&line);
                    s.push('\n');
                }
            }
        });
        let pid = child.id();
        let mut proxy = ProxyProc {
            child,
            pid,
            explicit: "127.0.0.1:0".parse().unwrap(),
            transparent: None,
            stderr,
            log_bytes,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = proxy.stderr();
            let explicit = bound_address(&text, "explicit");
            let transparent = bound_address(&text, "transparent_tls");
            if let Some(explicit) = explicit {
                if spec.transparent.is_none() || transparent.is_some() {
                    proxy.explicit = explicit;
                    proxy.transparent = transparent;
                    return Ok(proxy);
                }
            }
            if let Ok(Some(status)) = proxy.child.try_wait() {
                return Err(format!(
                    "proxy exited ({status}); config:\n{yaml}stderr:\n{text}"
                ));
            }
            if Instant::now() > deadline {
                return Err(format!("proxy did not say it listens; stderr:\n{text}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// VmRSS in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }

    /// utime + stime in seconds.
    pub fn cpu_secs(&self) -> f64 {
        cpu_secs_of(self.pid).unwrap_or(f64::NAN)
    }
}

impl Drop for ProxyProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// utime + stime of a process from /proc/PID/stat, in seconds.
pub fn cpu_secs_of(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at field 3 (state).
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?; // field 14
    let stime: f64 = fields.get(12)?.parse().ok()?; // field 15
                                                    // SAFETY: sysconf has no preconditions.
    let tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some((utime + stime) / tck)
}

/// The 1-minute load average.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// CPU model, kernel and rustc, for the record.
pub fn machine() -> (String, String, String) {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
            })
        })
        .unwrap_or_else(|| "unknown".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    let rustc = Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    (model, kernel, rustc)
}
