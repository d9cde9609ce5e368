//! Config reload while serving: the source is re-read on SIGHUP, and when it changes (files
//! are checked every two seconds, `ssm:` parameters every `reload.poll_interval`). A new
//! config replaces the old one only if it is valid in full; open connections keep theirs.

use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};

use crate::config::source::Source;
use crate::config::{Config, Listeners};
use crate::conn::Proxy;
use crate::metrics;
use crate::serve::build_state;

const FILE_CHECK: Duration = Duration::from_secs(2);
const SETTLE: Duration = Duration::from_millis(200);

/// Runs for the life of the proxy.
pub async fn watch(proxy: Arc<Proxy>, source: Source, bound: Listeners) {
    let mut hangup = match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!("no SIGHUP reload: {e}");
            None
        }
    };
    let mut last_text = source.read().await.ok();
    loop {
        let every = match source {
            Source::File(_) => FILE_CHECK,
            Source::Ssm(_) => proxy.state().config.reload.poll_interval,
        };
        let forced = tokio::select! {
            _ = tokio::time::sleep(every) => false,
            Some(()) = async { match hangup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
        };
        let text = match source.read().await {
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
        apply(&proxy, &source, &text, &bound);
    }
}

fn apply(proxy: &Proxy, source: &Source, text: &str, bound: &Listeners) {
    match Config::from_yaml(text) {
        Ok(mut config) => {
            if config.listeners != *bound {
                tracing::warn!(
                    "config reload: listener addresses changed; they apply only after a restart (still serving on the old ones)"
                );
                // The addresses really bound stay the ones the self-loop check refuses.
                config.listeners = bound.clone();
            }
            let rules = config.policy.rules().len();
            proxy.replace_state(build_state(config));
            metrics::config_reloaded(true);
            tracing::info!("config reloaded from {source}: {rules} rules");
        }
        Err(problems) => fail(source, &problems.to_string().replace('\n', "; ")),
    }
}

fn fail(source: &Source, why: &str) {
    metrics::config_reloaded(false);
    tracing::error!("config reload failed: {source}: {why}; still serving the last good config");
}
