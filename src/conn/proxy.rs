//! What every connection task shares: the state built from the running config (swapped
//! whole on reload), the decision log, and the proxy's phase (serving, draining, closing).

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

use crate::config::Config;
use crate::log::DecisionLog;
use crate::resolve::Resolver;

/// A config and what was built from it. Connections take a snapshot when they start, so a
/// reload never changes the decision an open connection already got.
pub struct State {
    pub config: Config,
    pub resolver: Resolver,
    /// Set once the end of report mode has been announced on stderr.
    pub report_end_announced: AtomicBool,
}

impl State {
    pub fn new(config: Config, resolver: Resolver) -> State {
        State {
            config,
            resolver,
            report_end_announced: AtomicBool::new(false),
        }
    }

    /// Whether `report_until` has passed: report mode then enforces by itself.
    pub fn report_ended(&self) -> bool {
        let Some(until) = self.config.policy.report_until() else {
            return false;
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let ended = now > until;
        if ended && !self.report_end_announced.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "report mode ended at {} (report_until): enforcing every rule now",
                crate::log::rfc3339_millis(UNIX_EPOCH + Duration::from_secs(until))
            );
        }
        ended
    }

    /// Whether a denial for this client (near this rule) is carried out.
    pub fn enforces(&self, rule: Option<&crate::policy::Rule>, client: IpAddr) -> bool {
        self.config.policy.enforces(rule, client) || self.report_ended()
    }
}

/// Builds the per-config state: the config plus its resolver, which keeps `previous`'s DNS
/// cache when the DNS settings are unchanged. The one place the self-loop check learns the
/// proxy's own listeners and this host's interface addresses.
pub fn build_state(mut config: Config, previous: Option<&State>) -> State {
    config.upstream = std::mem::take(&mut config.upstream)
        .with_own_addresses(config.listeners.all(), crate::sys::local_addresses());
    let resolver = Resolver::keeping(&config.resolver, previous.map(|p| &p.resolver));
    State::new(config, resolver)
}

/// Where the proxy is in its life: serving, draining (no new connections, open ones may
/// finish), or closing (the drain deadline passed: every connection ends now).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    Serving,
    Draining,
    Closing,
}

/// What every connection task shares: the current state, the decision log and the phase.
pub struct Proxy {
    state: RwLock<Arc<State>>,
    pub log: DecisionLog,
    phase: watch::Sender<Phase>,
    /// Credential failures per client, across reloads.
    pub auth_failures: super::auth::Throttle,
    /// Upload budgets in use, across reloads.
    pub budgets: super::budget::Budgets,
}

impl Proxy {
    pub fn new(state: State, log: DecisionLog) -> Proxy {
        Proxy {
            state: RwLock::new(Arc::new(state)),
            log,
            phase: watch::Sender::new(Phase::Serving),
            auth_failures: Default::default(),
            budgets: Default::default(),
        }
    }

    pub fn phase(&self) -> Phase {
        *self.phase.borrow()
    }

    pub fn set_phase(&self, phase: Phase) {
        self.phase.send_if_modified(|now| {
            let later = phase > *now;
            if later {
                *now = phase;
            }
            later
        });
    }

    /// Completes once the proxy has started draining.
    pub async fn draining(&self) {
        self.reached(Phase::Draining).await
    }

    /// Completes once the drain deadline has passed.
    pub async fn closing(&self) {
        self.reached(Phase::Closing).await
    }

    async fn reached(&self, phase: Phase) {
        let mut rx = self.phase.subscribe();
        let _ = rx.wait_for(|now| *now >= phase).await;
    }

    /// The state new connections and requests use now.
    pub fn state(&self) -> Arc<State> {
        match self.state.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Swaps in a new state for connections and requests that start from now on.
    pub fn replace_state(&self, state: State) {
        let state = Arc::new(state);
        match self.state.write() {
            Ok(mut guard) => *guard = state,
            Err(poisoned) => *poisoned.into_inner() = state,
        }
    }
}
