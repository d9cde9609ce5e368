//! Upload caps, the step after admit for rules that set them: `max_bytes_up` per connection,
//! and `upload_budget` per client per window ([`super::budget`]). [`UpLimit`] is what the
//! byte-moving loops (copy, splice, forwards) ask before every read, so not one byte past a
//! cap is read; without caps it is a comparison with `u64::MAX`.

use std::sync::Arc;

use super::budget::{client_key, Window};
use super::{denial, Admitted, Failure, Proxy};
use crate::log::Decision;
use crate::reason::Reason;

/// The caps a connection runs under, where its rule sets any.
#[derive(Debug, Clone)]
pub struct UploadCap {
    /// `max_bytes_up`.
    pub per_connection: Option<u64>,
    /// The client's window under the rule's `upload_budget`.
    pub window: Option<Arc<Window>>,
    /// Whether reaching a cap cuts the connection (false under report mode: logged only).
    pub enforced: bool,
    pub rule: String,
    /// What the caps are, for messages: `max_bytes_up 4 MiB`, `upload_budget ... for who`.
    per_connection_text: String,
    budget_text: String,
}

/// What a connection may still send up, asked before every read. Reserves from the shared
/// budget window, so any number of connections of one client can't overdraw it together.
#[derive(Debug, Clone)]
pub struct UpLimit {
    per_connection: u64,
    window: Option<Arc<Window>>,
}

impl UpLimit {
    /// No cap at all.
    pub const NONE: UpLimit = UpLimit {
        per_connection: u64::MAX,
        window: None,
    };

    /// How much of `want` may be read now, with `sent` bytes already sent on this
    /// connection: 0 means a cap is reached. What is granted from a budget is reserved until
    /// [`UpLimit::unused`] gives back what was not read.
    pub fn grant(&self, sent: u64, want: usize) -> usize {
        let left = self.per_connection.saturating_sub(sent);
        let mut granted = (want as u64).min(left);
        if let Some(window) = &self.window {
            granted = window.reserve(granted);
        }
        granted as usize
    }

    /// The same limit for a stream that has already sent `sent` bytes elsewhere (the
    /// tunnel's first bytes, forwarded before the splice counts from zero).
    pub fn after(&self, sent: u64) -> UpLimit {
        UpLimit {
            per_connection: self.per_connection.saturating_sub(sent),
            window: self.window.clone(),
        }
    }

    /// Gives back the part of a grant that was not read.
    pub fn unused(&self, granted: usize, used: usize) {
        if let Some(window) = &self.window {
            window.give_back(granted.saturating_sub(used) as u64);
        }
    }
}

/// The caps for a request its rule allowed. A spent budget refuses it (`upload_limit`), or
/// under report mode logs a would-be denial and lets it go on.
pub fn upload_cap(
    proxy: &Proxy,
    line: &mut Decision,
    admitted: &Admitted,
) -> Result<Option<UploadCap>, Failure> {
    let Some(rule) = admitted.rule.filter(|_| line.allowed()) else {
        return Ok(None);
    };
    if rule.max_bytes_up.is_none() && rule.upload_budget.is_none() {
        return Ok(None);
    }
    let mut cap = UploadCap {
        per_connection: rule.max_bytes_up,
        window: None,
        enforced: admitted.enforced,
        rule: rule.name.clone(),
        per_connection_text: rule
            .max_bytes_up
            .map(|b| format!("max_bytes_up {}", bytes_text(b)))
            .unwrap_or_default(),
        budget_text: String::new(),
    };
    if let Some(budget) = rule.upload_budget {
        let who = client_key(line.principal.as_deref(), line.client.ip());
        cap.budget_text = format!(
            "upload_budget {} per {}s under rule {} for {who}",
            bytes_text(budget.bytes),
            budget.per.as_secs(),
            rule.name
        );
        let window = proxy.budgets.window(&rule.name, &who, &budget);
        let spent = match &window {
            Some(window) if window.left() == 0 => Some(format!(
                "{} is used up; it frees up in {}s",
                cap.budget_text,
                window.resets_in().as_secs().max(1)
            )),
            Some(_) => None,
            None => Some("too many clients' upload budgets are open to track another".into()),
        };
        if let Some(why) = spent {
            crate::metrics::upload_limit(&rule.name);
            denial(
                line,
                admitted.enforced,
                Failure::new(Reason::UploadLimit, why),
            )?;
        }
        cap.window = window;
    }
    Ok(Some(cap))
}

impl UploadCap {
    /// The limit the byte loops enforce: none for a cap only reported.
    pub fn up_limit(cap: Option<&UploadCap>) -> UpLimit {
        match cap {
            Some(cap) if cap.enforced => UpLimit {
                per_connection: cap.per_connection.unwrap_or(u64::MAX),
                window: cap.window.clone(),
            },
            _ => UpLimit::NONE,
        }
    }

    /// Ends a connection's part: under report mode its bytes are counted against the budget
    /// now (enforced ones were, as they went); a cut, or a cut report mode would have made,
    /// is said in the close line (`upload_limit`).
    pub fn settle(&self, line: &mut Decision, up: u64, cut: bool) {
        let over_connection = self.per_connection.is_some_and(|limit| up >= limit);
        let which = self.reached(over_connection);
        if cut {
            crate::metrics::upload_limit(&self.rule);
            line.reason = Reason::UploadLimit;
            line.note(&format!("cut at {which}"));
            return;
        }
        if self.enforced {
            return;
        }
        if let Some(window) = &self.window {
            window.charge(up);
        }
        let over_budget = self.window.as_ref().is_some_and(|w| w.left() == 0);
        if over_connection && self.per_connection.is_some_and(|limit| up > limit) || over_budget {
            line.note(&format!("report mode: would have been cut at {which}"));
        }
    }
}

impl UploadCap {
    /// What a cut names: the connection's cap if it was reached, else the budget.
    pub fn reached(&self, over_connection: bool) -> &str {
        if over_connection || self.window.is_none() {
            &self.per_connection_text
        } else {
            &self.budget_text
        }
    }
}

/// `4 MiB`, `512 KiB`, `17 B`.
pub fn bytes_text(bytes: u64) -> String {
    const UNITS: [(&str, u64); 3] = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    for (unit, size) in UNITS {
        if bytes >= size && bytes.is_multiple_of(size) {
            return format!("{} {unit}", bytes / size);
        }
    }
    format!("{bytes} B")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::budget::Budgets;
    use crate::policy::UploadBudget;

    #[test]
    fn grants_stop_at_the_connection_cap_and_at_the_shared_budget() {
        let budgets = Budgets::default();
        let budget = UploadBudget {
            bytes: 100,
            per: std::time::Duration::from_secs(60),
        };
        let window = budgets.window("r", "c", &budget);
        let a = UpLimit {
            per_connection: 80,
            window: window.clone(),
        };
        let b = UpLimit {
            per_connection: u64::MAX,
            window,
        };
        assert_eq!(a.grant(0, 64), 64);
        assert_eq!(a.grant(64, 64), 16, "the connection cap");
        assert_eq!(b.grant(0, 64), 20, "what is left of the budget");
        assert_eq!(b.grant(20, 64), 0);
        b.unused(20, 5);
        assert_eq!(a.grant(80, 64), 0, "a's own cap, whatever the budget");
        assert_eq!(b.grant(5, 64), 15);
        assert_eq!(UpLimit::NONE.grant(u64::MAX - 1, 64), 1);
    }
}
