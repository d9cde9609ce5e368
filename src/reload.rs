//! Config reload while serving: the source is re-read on SIGHUP, and when it changes (files
//! are checked every two seconds, `ssm:` parameters every `reload.poll_interval`). A new
//! config replaces the old one only if it is valid in full; open connections keep theirs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::signal::unix::{signal, SignalKind};

use crate::config::source::{Loaded, Source};
use crate::config::Listeners;
use crate::conn::{build_state, Proxy};
use crate::metrics;

const FILE_CHECK: Duration = Duration::from_secs(2);
const SETTLE: Duration = Duration::from_millis(200);
/// A read slower than this is said on stderr: a stalled source (credentials chain, endpoint)
/// would otherwise look like a config that never changes.
const SLOW_READ: Duration = Duration::from_secs(5);

/// Where the running config came from, and the listeners it was served on.
pub struct Watched {
    pub source: Source,
    /// The text the running config was parsed from: a change is judged against it, so an
    /// edit made while the proxy was starting is not mistaken for the running config.
    pub text: String,
    /// The listener addresses as configured (port 0 included): a reload that changes them
    /// is told they apply only after a restart.
    pub configured: Listeners,
    /// The addresses really bound, which stay in the self-loop check.
    pub bound: Listeners,
}

/// Runs for the life of the proxy.
pub async fn watch(proxy: Arc<Proxy>, watched: Watched) {
    let Watched {
        source,
        text,
        configured,
        bound,
    } = watched;
    let mut hangup = match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!("no SIGHUP reload: {e}");
            None
        }
    };
    let mut last_text = Some(text);
    loop {
        let every = match source {
            Source::File(_) => FILE_CHECK,
            Source::Ssm(_) => proxy.state().config.reload.poll_interval,
        };
        let forced = tokio::select! {
            _ = tokio::time::sleep(every) => false,
            Some(()) = async { match hangup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
        };
        let text = match timed_read(&source).await {
            Ok(text) => text,
            Err(e) => {
                // An unreadable source is an error only when a reload was asked for or
                // when it used to be readable; the running config stays either way.
                if forced || last_text.is_some() {
                    fail(&source, &e);
                    last_text = None;
                }
                continue;
            }
        };
        if !forced && last_text.as_deref() == Some(text.as_str()) {
            continue;
        }
        // A file caught mid-write can still parse (cut at a line boundary, it just lacks
        // its last rules): apply only text that reads the same twice.
        if let Source::File(_) = source {
            tokio::time::sleep(SETTLE).await;
            if source.read().await.ok().as_deref() != Some(text.as_str()) {
                continue;
            }
        }
        last_text = Some(text.clone());
        match crate::config::source::parse(text).await {
            Ok(loaded) => apply(&proxy, &source, loaded, &configured, &bound),
            Err(e) => fail(&source, &e.to_string().replace('\n', "; ")),
        }
    }
}

/// Reads the source, saying on stderr when that took long.
async fn timed_read(source: &Source) -> Result<String, String> {
    let started = Instant::now();
    let text = source.read().await;
    let took = started.elapsed();
    if took > SLOW_READ {
        tracing::warn!(
            "config reload: reading {source} took {:.1}s",
            took.as_secs_f64()
        );
    }
    text
}

fn apply(
    proxy: &Proxy,
    source: &Source,
    loaded: Loaded,
    configured: &Listeners,
    bound: &Listeners,
) {
    let mut config = loaded.config;
    for warning in &config.warnings {
        tracing::warn!(
            "config reload: {source}: {}",
            warning.display_in(&source.to_string())
        );
    }
    if config.listeners != *configured {
        tracing::warn!(
            "config reload: listener addresses changed; they apply only after a restart (still serving on the old ones)"
        );
    }
    // The addresses really bound stay the ones the self-loop check refuses.
    config.listeners = bound.clone();
    let rules = config.policy.rules().len();
    metrics::config_in_force(config.policy.rules().iter().map(|r| r.name.as_str()));
    proxy.replace_state(build_state(config, Some(&proxy.state())));
    metrics::config_reloaded(true);
    tracing::info!("config reloaded from {source}: {rules} rules");
}

fn fail(source: &Source, why: &str) {
    metrics::config_reloaded(false);
    tracing::error!("config reload failed: {source}: {why}; still serving the last good config");
}
