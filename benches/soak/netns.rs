//! The forbidden-address witness: this process (and so the proxy it starts) moves into a
//! private network namespace with only `lo` and a veth to a second namespace that holds the
//! "forbidden" addresses 10.231.9.9 and 169.254.169.254. iptables rules count every TCP SYN
//! towards them: on the way out of the proxy's namespace (OUTPUT) and on the way into the far
//! one (INPUT). A positive control (one SYN sent by the harness itself) proves the counters
//! count. Needs root; without it the check is skipped and the report says so.

use std::process::Command;

pub const FORBIDDEN: &str = "10.231.9.9";
pub const IMDS: &str = "169.254.169.254";

pub struct Net {
    /// The far namespace's name, when the lab is up.
    far: Option<String>,
    pub note: String,
}

fn run(args: &[&str]) -> Result<String, String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Net {
    /// Must be called before any thread is started: the namespace is per task, and threads
    /// started later inherit it.
    pub fn enter() -> Net {
        // SAFETY: plain syscalls with no memory arguments.
        if unsafe { libc::geteuid() } != 0 {
            return Net::skipped(
                "not root: no private namespace, SYN count SKIPPED; traffic on the host's loopback",
            );
        }
        for tool in ["ip", "iptables"] {
            if run(&["sh", "-c", &format!("command -v {tool}")]).is_err() {
                return Net::skipped(&format!("`{tool}` missing: SYN count SKIPPED"));
            }
        }
        // SAFETY: unshare has no memory arguments; single-threaded here.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            return Net::skipped(&format!(
                "unshare(CLONE_NEWNET) failed ({}): SYN count SKIPPED",
                std::io::Error::last_os_error()
            ));
        }
        run(&["ip", "link", "set", "lo", "up"]).expect("lo up in the private namespace");
        let far = format!("soak-far-{}", std::process::id());
        let mut net = Net {
            far: None,
            note: String::new(),
        };
        let setup = (|| -> Result<(), String> {
            run(&["ip", "netns", "add", &far])?;
            net.far = Some(far.clone());
            run(&[
                "ip", "link", "add", "sk0", "type", "veth", "peer", "name", "sk1", "netns", &far,
            ])?;
            run(&["ip", "addr", "add", "10.231.9.1/24", "dev", "sk0"])?;
            run(&["ip", "link", "set", "sk0", "up"])?;
            run(&["ip", "route", "add", "169.254.0.0/16", "dev", "sk0"])?;
            for addr in ["10.231.9.9/24", "169.254.169.254/32"] {
                run(&["ip", "-n", &far, "addr", "add", addr, "dev", "sk1"])?;
            }
            run(&["ip", "-n", &far, "link", "set", "sk1", "up"])?;
            run(&["ip", "-n", &far, "link", "set", "lo", "up"])?;
            run(&["ip", "-n", &far, "route", "add", "default", "dev", "sk1"])?;
            for dst in ["10.231.9.0/24", "169.254.0.0/16"] {
                run(&[
                    "iptables", "-A", "OUTPUT", "-p", "tcp", "--syn", "-d", dst, "-j", "ACCEPT",
                ])?;
            }
            run(&[
                "ip", "netns", "exec", &far, "iptables", "-A", "INPUT", "-p", "tcp", "--syn", "-j",
                "ACCEPT",
            ])?;
            Ok(())
        })();
        match setup {
            Ok(()) => {
                net.note = format!(
                    "private netns; forbidden {FORBIDDEN} and {IMDS} behind a veth in netns {far}; \
                     SYNs counted by iptables (OUTPUT here, INPUT there)"
                );
                net
            }
            Err(e) => {
                net.note = format!("netns lab setup failed ({e}): SYN count SKIPPED");
                net.cleanup();
                net
            }
        }
    }

    fn skipped(why: &str) -> Net {
        Net {
            far: None,
            note: why.to_owned(),
        }
    }

    pub fn active(&self) -> bool {
        self.far.is_some()
    }

    /// SYNs towards the forbidden ranges: (leaving this namespace, arriving in the far one).
    pub fn syns(&self) -> Option<(u64, u64)> {
        let far = self.far.as_ref()?;
        let sum = |text: String| -> u64 {
            text.lines()
                .filter(|l| l.contains("ACCEPT"))
                .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
                .sum()
        };
        let out = run(&["iptables", "-L", "OUTPUT", "-n", "-v", "-x"]).ok()?;
        let inp = run(&[
            "ip", "netns", "exec", far, "iptables", "-L", "INPUT", "-n", "-v", "-x",
        ])
        .ok()?;
        Some((sum(out), sum(inp)))
    }

    /// One SYN to the forbidden address from the harness itself: the counters must move.
    pub fn positive_control(&self) -> Result<(u64, u64), String> {
        let before = self.syns().ok_or("no counters")?;
        let addr: std::net::SocketAddr = format!("{FORBIDDEN}:9").parse().unwrap();
        let _ = std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(2));
        let after = self.syns().ok_or("no counters")?;
        if after.0 > before.0 && after.1 > before.1 {
            Ok(after)
        } else {
            Err(format!(
                "positive control: counters did not move ({before:?} -> {after:?})"
            ))
        }
    }

    pub fn cleanup(&mut self) {
        if let Some(far) = self.far.take() {
            let _ = run(&["ip", "netns", "del", &far]);
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.cleanup();
    }
}
