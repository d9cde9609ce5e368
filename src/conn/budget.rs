//! Upload budgets (`upload_budget: { bytes, per }`): client→upstream bytes one client may send
//! under a rule per window, where the client is its principal if it has one, else its address
//! (an IPv6 client by its /64, so rotating addresses within a subnet buys no new budget).
//! Held by the proxy, so a reload doesn't hand out fresh budgets.
//!
//! Every open connection of a client charges the same window as its bytes go up, reserving
//! before it reads: once the window is spent, new connections are refused and open ones are
//! cut, however many run at once.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::sweep::Sweep;
use crate::policy::UploadBudget;

/// Budget windows kept at once. When that many are open, a new client's request is refused
/// rather than forgetting another's spending.
const TRACKED: usize = 65_536;
/// How often windows that have passed are dropped (a client back later starts a fresh one
/// either way).
const SWEEP_EVERY: Duration = Duration::from_secs(60);

#[derive(Default)]
pub struct Budgets {
    windows: Mutex<Windows>,
}

#[derive(Default)]
struct Windows {
    open: HashMap<(String, String), Arc<Window>>,
    sweep: Sweep,
}

/// One client's window under one rule: what it may send, and what it has sent or reserved.
#[derive(Debug)]
pub struct Window {
    started: Instant,
    per: Duration,
    bytes: u64,
    used: AtomicU64,
}

impl Window {
    /// Reserves up to `want` bytes; returns how many were granted (0: the budget is spent).
    pub fn reserve(&self, want: u64) -> u64 {
        let mut granted = 0;
        let _ = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                granted = want.min(self.bytes.saturating_sub(used));
                Some(used + granted)
            });
        granted
    }

    /// Hands back what was reserved but not sent.
    pub fn give_back(&self, unused: u64) {
        if unused > 0 {
            self.used.fetch_sub(unused, Ordering::AcqRel);
        }
    }

    /// Counts bytes sent without a reservation (report mode: counted, never refused).
    pub fn charge(&self, bytes: u64) {
        self.used.fetch_add(bytes, Ordering::AcqRel);
    }

    pub fn left(&self) -> u64 {
        self.bytes.saturating_sub(self.used.load(Ordering::Acquire))
    }

    pub fn resets_in(&self) -> Duration {
        self.per.saturating_sub(self.started.elapsed())
    }

    fn expired(&self, now: Instant) -> bool {
        now.duration_since(self.started) >= self.per
    }
}

/// The key a client's budget (and credential throttle) is kept under: its principal if it
/// has one; else its address, an IPv6 one by its /64.
pub fn client_key(principal: Option<&str>, ip: IpAddr) -> String {
    if let Some(principal) = principal {
        return principal.to_owned();
    }
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        v4 => v4.to_string(),
    }
}

impl Budgets {
    /// The window `who` is in under `rule` now (a fresh one once the last has passed), or
    /// `None` when too many windows are open to track another.
    pub fn window(&self, rule: &str, who: &str, budget: &UploadBudget) -> Option<Arc<Window>> {
        self.window_at(rule, who, budget, Instant::now())
    }

    fn window_at(
        &self,
        rule: &str,
        who: &str,
        budget: &UploadBudget,
        now: Instant,
    ) -> Option<Arc<Window>> {
        let mut windows = self
            .windows
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let Windows { open, sweep } = &mut *windows;
        let key = (rule.to_owned(), who.to_owned());
        if let Some(window) = open.get(&key).filter(|w| !w.expired(now)) {
            return Some(window.clone());
        }
        // Each window by its own length: a short rule never resets a long one.
        let full = open.len() >= TRACKED;
        sweep.run(now, SWEEP_EVERY, full, open, |w| w.expired(now));
        if open.len() >= TRACKED {
            return None;
        }
        let window = Arc::new(Window {
            started: now,
            per: budget.per,
            bytes: budget.bytes,
            used: AtomicU64::new(0),
        });
        open.insert(key, window.clone());
        Some(window)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: UploadBudget = UploadBudget {
        bytes: 1000,
        per: Duration::from_secs(3600),
    };

    #[test]
    fn connections_of_one_client_share_one_window_and_cannot_overdraw_it() {
        let b = Budgets::default();
        let one = b.window("pypi", "10.0.32.7", &HOUR).unwrap();
        let two = b.window("pypi", "10.0.32.7", &HOUR).unwrap();
        assert_eq!(one.reserve(600), 600);
        assert_eq!(two.reserve(600), 400, "only what is left");
        assert_eq!(one.reserve(1), 0);
        two.give_back(100);
        assert_eq!(one.left(), 100);
        // Other clients and other rules have their own.
        assert_eq!(b.window("pypi", "glue-etl", &HOUR).unwrap().left(), 1000);
        assert_eq!(b.window("docker", "10.0.32.7", &HOUR).unwrap().left(), 1000);
    }

    #[test]
    fn a_passed_window_starts_afresh() {
        let b = Budgets::default();
        let short = UploadBudget {
            bytes: 10,
            per: Duration::ZERO,
        };
        b.window("al", "x", &short).unwrap().charge(10);
        assert_eq!(b.window("al", "x", &short).unwrap().left(), 10);
    }

    #[test]
    fn passed_windows_are_dropped_once_a_minute_not_only_when_the_table_is_full() {
        let b = Budgets::default();
        let minute = UploadBudget {
            bytes: 10,
            per: Duration::from_secs(60),
        };
        let start = Instant::now();
        for i in 0..1_000 {
            b.window_at(
                "al",
                &format!("10.0.{}.{}", i / 256, i % 256),
                &minute,
                start,
            );
        }
        let held = |b: &Budgets| b.windows.lock().unwrap().open.len();
        assert_eq!(held(&b), 1_000);
        // Within the minute nothing is dropped; an hour's window is not dropped after it.
        b.window_at("pypi", "glue-etl", &HOUR, start + SWEEP_EVERY / 2);
        assert_eq!(held(&b), 1_001);
        let later = start + SWEEP_EVERY * 2;
        b.window_at("al", "10.9.9.9", &minute, later);
        assert_eq!(
            held(&b),
            2,
            "the passed minute windows are gone, the hour's and the new stay"
        );
        assert!(b.windows.lock().unwrap().open.capacity() < 1_000);
        // A kept window is the same one: its spending stays.
        let hour = b.window_at("pypi", "glue-etl", &HOUR, later).unwrap();
        assert_eq!(hour.reserve(1), 1);
        assert_eq!(
            b.window_at("pypi", "glue-etl", &HOUR, later)
                .unwrap()
                .left(),
            999
        );
    }

    #[test]
    fn ipv6_clients_share_their_64() {
        let a = client_key(None, "2001:db8:1:2:aaaa::1".parse().unwrap());
        let b = client_key(None, "2001:db8:1:2:bbbb::9".parse().unwrap());
        assert_eq!(a, b);
        assert_ne!(a, client_key(None, "2001:db8:1:3::1".parse().unwrap()));
        assert_eq!(
            client_key(None, "::ffff:10.0.0.1".parse().unwrap()),
            "10.0.0.1"
        );
        assert_eq!(
            client_key(Some("glue-etl"), "10.0.0.1".parse().unwrap()),
            "glue-etl"
        );
    }
}
