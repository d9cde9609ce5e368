//! Upload budgets (`upload_budget: { bytes, per }`): client→upstream bytes one client may send
//! under a rule per window, where the client is its principal if it has one, else its address.
//! Held by the proxy, so a reload doesn't hand out fresh budgets. A connection's cap is what
//! was left when it started; its bytes are spent when it ends.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::policy::UploadBudget;

/// Budget windows kept at once; beyond this, expired ones are forgotten first.
const TRACKED: usize = 65_536;

#[derive(Default)]
pub struct Budgets {
    windows: Mutex<HashMap<(String, String), Window>>,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    used: u64,
}

/// What is left of a budget now, and when its window frees up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Left {
    pub bytes: u64,
    pub resets_in: Duration,
}

impl Budgets {
    /// What `who` may still send under `rule` in the current window.
    pub fn left(&self, rule: &str, who: &str, budget: &UploadBudget) -> Left {
        let now = Instant::now();
        let windows = self.lock();
        match windows.get(&(rule.to_owned(), who.to_owned())) {
            Some(w) if now.duration_since(w.started) < budget.per => Left {
                bytes: budget.bytes.saturating_sub(w.used),
                resets_in: budget.per - now.duration_since(w.started),
            },
            _ => Left {
                bytes: budget.bytes,
                resets_in: budget.per,
            },
        }
    }

    /// Counts `bytes` sent by `who` under `rule`.
    pub fn spend(&self, rule: &str, who: &str, budget: &UploadBudget, bytes: u64) {
        let now = Instant::now();
        let mut windows = self.lock();
        if windows.len() >= TRACKED {
            windows.retain(|_, w| now.duration_since(w.started) < budget.per);
        }
        let window = windows
            .entry((rule.to_owned(), who.to_owned()))
            .or_insert(Window {
                started: now,
                used: 0,
            });
        if now.duration_since(window.started) >= budget.per {
            *window = Window {
                started: now,
                used: 0,
            };
        }
        window.used = window.used.saturating_add(bytes);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Window>> {
        self.windows
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_is_spent_per_rule_and_client_and_frees_up_with_its_window() {
        let b = Budgets::default();
        let budget = UploadBudget {
            bytes: 1000,
            per: Duration::from_secs(3600),
        };
        assert_eq!(b.left("pypi", "10.0.32.7", &budget).bytes, 1000);
        b.spend("pypi", "10.0.32.7", &budget, 600);
        b.spend("pypi", "10.0.32.7", &budget, 600);
        assert_eq!(b.left("pypi", "10.0.32.7", &budget).bytes, 0);
        // Other clients and other rules have their own.
        assert_eq!(b.left("pypi", "glue-etl", &budget).bytes, 1000);
        assert_eq!(b.left("docker", "10.0.32.7", &budget).bytes, 1000);
        // A window that has passed starts afresh.
        let short = UploadBudget {
            bytes: 10,
            per: Duration::ZERO,
        };
        b.spend("al", "x", &short, 10);
        assert_eq!(b.left("al", "x", &short).bytes, 10);
    }
}
