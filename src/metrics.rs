//! Every metric name in one place, recorded through the `metrics` facade and rendered for
//! `GET /metrics` by the Prometheus exporter. The recorder is the one process global.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::reason::Reason;
use crate::request::Listener;

pub const DECISIONS: &str = "egress_decisions_total";
pub const ACTIVE: &str = "egress_active_connections";
pub const BYTES: &str = "egress_bytes_total";
pub const UPSTREAM_CONNECT: &str = "egress_upstream_connect_seconds";
pub const DNS: &str = "egress_dns_seconds";
pub const RELOADS: &str = "egress_config_reloads_total";
pub const LAST_RELOAD: &str = "egress_config_last_reload_success_timestamp_seconds";
/// Decision lines dropped: always 0, since new work waits for the log instead (kept because
/// dashboards and alarms watch it).
pub const LINES_DROPPED: &str = "egress_decision_lines_dropped_total";
/// Beyond the contract: how often a new request had to wait because stdout was not keeping up.
pub const LOG_WAITS: &str = "egress_decision_log_waits_total";
pub const UPLOAD_LIMIT: &str = "egress_upload_limit_total";
pub const BUILD_INFO: &str = "egress_build_info";
/// Beyond the contract: proxy credentials that were present but wrong.
pub const AUTH_FAILURES: &str = "egress_auth_failures_total";

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
            describe();
        }
        Ok(Err(e)) | Err(e) => tracing::warn!("metrics disabled: {e}"),
    }
}

/// `# HELP` for every metric, and every series known at start exported at 0, so that
/// dashboards and alarms see a zero rather than an absence.
fn describe() {
    describe_counter!(
        DECISIONS,
        "Decision lines written, by decision, reason, rule, listener and whether enforced"
    );
    describe_gauge!(ACTIVE, "Client connections open now, by listener");
    describe_counter!(
        BYTES,
        "Bytes moved through finished tunnels and forwards, up (client to upstream) and down"
    );
    describe_histogram!(
        UPSTREAM_CONNECT,
        "Seconds to connect to the upstream that answered"
    );
    describe_histogram!(DNS, "Seconds to resolve an upstream name");
    describe_counter!(RELOADS, "Config reloads, by result");
    describe_gauge!(
        LAST_RELOAD,
        "When a config was last loaded successfully (at start too)"
    );
    describe_counter!(
        UPLOAD_LIMIT,
        "Connections cut or refused by an upload cap, by rule"
    );
    describe_counter!(
        LINES_DROPPED,
        "Decision lines dropped (always 0: new work waits instead)"
    );
    describe_counter!(
        LOG_WAITS,
        "New requests that waited because stdout was not keeping up with the decision log"
    );
    describe_gauge!(
        BUILD_INFO,
        "1, labelled with the version and commit this binary was built from"
    );
    for listener in Listener::ALL {
        gauge!(ACTIVE, "listener" => listener.as_str()).set(0.0);
        counter!(
            DECISIONS,
            "decision" => "deny",
            "reason" => Reason::NoRule.as_str(),
            "rule" => "",
            "listener" => listener.as_str(),
            "enforced" => "true",
        )
        .absolute(0);
    }
    for result in ["success", "error"] {
        counter!(RELOADS, "result" => result).absolute(0);
    }
    for direction in ["up", "down"] {
        counter!(BYTES, "direction" => direction).absolute(0);
    }
    counter!(LINES_DROPPED).absolute(0);
    counter!(LOG_WAITS).absolute(0);
    describe_counter!(
        AUTH_FAILURES,
        "Proxy credentials presented but not valid (throttled per client)"
    );
    counter!(AUTH_FAILURES).absolute(0);
    gauge!(
        BUILD_INFO,
        "version" => env!("CARGO_PKG_VERSION"),
        "commit" => option_env!("EGRESS_PROXY_COMMIT").unwrap_or("unknown"),
    )
    .set(1.0);
}

/// How often histogram samples are folded into their buckets. The exporter keeps each
/// sample until then; without this, a proxy that nobody scrapes would keep a few bytes for
/// every connection it ever made.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Folds histogram samples into their buckets every [`UPKEEP_EVERY`], for as long as the
/// runtime runs (`install_recorder` leaves this to its caller).
pub fn keep_up_periodically() {
    let Some(handle) = HANDLE.get().cloned() else {
        return;
    };
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(UPKEEP_EVERY).await;
            handle.run_upkeep();
        }
    });
}

/// The Prometheus text exposition of every metric.
pub fn render() -> String {
    HANDLE
        .get()
        .map(PrometheusHandle::render)
        .unwrap_or_default()
}

/// Counts a decision line (not close lines).
pub fn decision(
    decision: &'static str,
    reason: Reason,
    rule: Option<&str>,
    listener: Listener,
    enforced: bool,
) {
    counter!(
        DECISIONS,
        "decision" => decision,
        "reason" => reason.as_str(),
        "rule" => rule.unwrap_or_default().to_owned(),
        "listener" => listener.as_str(),
        "enforced" => if enforced { "true" } else { "false" },
    )
    .increment(1);
}

/// Adds a finished connection's bytes.
pub fn bytes(up: u64, down: u64) {
    counter!(BYTES, "direction" => "up").increment(up);
    counter!(BYTES, "direction" => "down").increment(down);
}

/// A connection cut, or a request refused, by an upload cap or budget under `rule`.
pub fn upload_limit(rule: &str) {
    counter!(UPLOAD_LIMIT, "rule" => rule.to_owned()).increment(1);
}

/// Proxy credentials that were present but not valid.
pub fn auth_failed() {
    counter!(AUTH_FAILURES).increment(1);
}

pub fn decision_log_waited() {
    counter!(LOG_WAITS).increment(1);
}

pub fn upstream_connect(took: Duration) {
    histogram!(UPSTREAM_CONNECT).record(took.as_secs_f64());
}

pub fn dns(took: Duration) {
    histogram!(DNS).record(took.as_secs_f64());
}

pub fn config_reloaded(ok: bool) {
    counter!(RELOADS, "result" => if ok { "success" } else { "error" }).increment(1);
}

/// A config is in force (at start, or after a reload): stamp the time and export its rules'
/// series at 0.
pub fn config_in_force<'a>(rules: impl Iterator<Item = &'a str>) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    gauge!(LAST_RELOAD).set(now.as_secs_f64());
    for rule in rules {
        counter!(UPLOAD_LIMIT, "rule" => rule.to_owned()).absolute(0);
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
