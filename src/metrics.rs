//! Every metric name in one place, recorded through the `metrics` facade and rendered for
//! `GET /metrics` by the Prometheus exporter. The recorder is the one process global.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::log::{Decision, Listener};

pub const DECISIONS: &str = "egress_decisions_total";
pub const ACTIVE: &str = "egress_active_connections";
pub const BYTES: &str = "egress_bytes_total";
pub const UPSTREAM_CONNECT: &str = "egress_upstream_connect_seconds";
pub const DNS: &str = "egress_dns_seconds";
pub const RELOADS: &str = "egress_config_reloads_total";
pub const LAST_RELOAD: &str = "egress_config_last_reload_success_timestamp_seconds";
/// Beyond the contract: decision lines dropped because stdout could not keep up.
pub const LINES_DROPPED: &str = "egress_decision_lines_dropped_total";

const SECONDS_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the recorder; later calls do nothing. Without it every recording is a no-op.
pub fn install() {
    if HANDLE.get().is_some() {
        return;
    }
    let built = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(UPSTREAM_CONNECT.into()), SECONDS_BUCKETS)
        .and_then(|b| b.set_buckets_for_metric(Matcher::Full(DNS.into()), SECONDS_BUCKETS))
        .map(|b| b.install_recorder());
    match built {
        Ok(Ok(handle)) => {
            let _ = HANDLE.set(handle);
            for listener in [
                Listener::Explicit,
                Listener::TransparentTls,
                Listener::TransparentHttp,
            ] {
                gauge!(ACTIVE, "listener" => listener.as_str()).set(0.0);
            }
            for result in ["success", "error"] {
                counter!(RELOADS, "result" => result).absolute(0);
            }
            counter!(LINES_DROPPED).absolute(0);
        }
        Ok(Err(e)) | Err(e) => tracing::warn!("metrics disabled: {e}"),
    }
}

/// The Prometheus text exposition of every metric.
pub fn render() -> String {
    HANDLE
        .get()
        .map(PrometheusHandle::render)
        .unwrap_or_default()
}

/// Counts a decision line (not close lines).
pub fn decision(line: &Decision) {
    counter!(
        DECISIONS,
        "decision" => line.decision,
        "reason" => line.reason.as_str(),
        "rule" => line.rule.clone().unwrap_or_default(),
        "listener" => line.listener.as_str(),
    )
    .increment(1);
}

/// Adds a finished connection's bytes.
pub fn bytes(up: u64, down: u64) {
    counter!(BYTES, "direction" => "up").increment(up);
    counter!(BYTES, "direction" => "down").increment(down);
}

pub fn decision_line_dropped() {
    counter!(LINES_DROPPED).increment(1);
}

pub fn upstream_connect(took: Duration) {
    histogram!(UPSTREAM_CONNECT).record(took.as_secs_f64());
}

pub fn dns(took: Duration) {
    histogram!(DNS).record(took.as_secs_f64());
}

pub fn config_reloaded(ok: bool) {
    counter!(RELOADS, "result" => if ok { "success" } else { "error" }).increment(1);
    if ok {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        gauge!(LAST_RELOAD).set(now.as_secs_f64());
    }
}

/// Counts an open connection on `listener` for as long as it lives.
pub struct Active(Listener);

impl Active {
    pub fn open(listener: Listener) -> Active {
        gauge!(ACTIVE, "listener" => listener.as_str()).increment(1.0);
        Active(listener)
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        gauge!(ACTIVE, "listener" => self.0.as_str()).decrement(1.0);
    }
}
