//! Per-client tables (credential strikes, upload budgets) drop their stale entries once a
//! period, not only when full: a stream of one-off clients (task replacement, NAT churn, a
//! scan) then costs about one period's worth of entries, not the table's cap.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// When a table was last swept.
#[derive(Default)]
pub struct Sweep {
    last: Option<Instant>,
}

impl Sweep {
    /// Drops the entries `stale` names when `every` has passed since the last sweep (or on
    /// the first call), or at once when `full`; then gives back the room the table no longer
    /// needs.
    pub fn run<K: Eq + Hash, V>(
        &mut self,
        now: Instant,
        every: Duration,
        full: bool,
        table: &mut HashMap<K, V>,
        mut stale: impl FnMut(&V) -> bool,
    ) {
        let due = self.last.is_none_or(|at| now.duration_since(at) >= every);
        if !(due || full) {
            return;
        }
        table.retain(|_, v| !stale(v));
        if table.capacity() > 4 * table.len().max(16) {
            table.shrink_to(2 * table.len());
        }
        self.last = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweeps_once_a_period_or_when_full_and_shrinks_the_table() {
        let every = Duration::from_secs(60);
        let start = Instant::now();
        let mut sweep = Sweep::default();
        let mut table: HashMap<u32, u32> = (0..1_000).map(|i| (i, i)).collect();
        let odd = |v: &u32| v % 2 == 1;
        sweep.run(start, every, false, &mut table, odd);
        assert_eq!(table.len(), 500, "the first call sweeps");
        table.insert(1, 1);
        sweep.run(start + every / 2, every, false, &mut table, odd);
        assert!(table.contains_key(&1), "not due: nothing dropped");
        sweep.run(start + every / 2, every, true, &mut table, odd);
        assert!(!table.contains_key(&1), "full: swept at once");
        table.insert(3, 3);
        sweep.run(start + every, every, false, &mut table, |_| true);
        assert!(
            table.contains_key(&3),
            "a period from the forced sweep, not the first"
        );
        sweep.run(start + every * 3 / 2, every, false, &mut table, |_| true);
        assert!(table.is_empty());
        assert!(table.capacity() < 64, "the room was given back");
    }
}
