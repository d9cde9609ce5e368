//! The decision log: one JSON object per line on stdout, the last step of every request or
//! connection. The [`Decision`] struct is the schema. Lines are handed to a writer thread so
//! that a slow stdout never makes a tunnel wait.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::calendar::civil_from_days;
use crate::reason::Reason;

/// Which listener a connection arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Listener {
    Explicit,
    TransparentTls,
    TransparentHttp,
}

impl Listener {
    pub fn as_str(self) -> &'static str {
        match self {
            Listener::Explicit => "explicit",
            Listener::TransparentTls => "transparent_tls",
            Listener::TransparentHttp => "transparent_http",
        }
    }
}

/// One decision line. Built up as a connection goes through its steps, written once when
/// the decision is final, and once more with `event: "close"` when an allowed tunnel or
/// forwarded request ends.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    pub ts: String,
    pub event: &'static str,
    pub decision: &'static str,
    /// False when a denial was only reported (report mode) and the traffic went through.
    pub enforced: bool,
    pub reason: Reason,
    pub rule: Option<String>,
    pub listener: Listener,
    pub client: SocketAddr,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub sni: Option<String>,
    pub upstream: Option<SocketAddr>,
    /// Where a redirected connection was originally headed (transparent listeners).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub original_dst: Option<SocketAddr>,
    /// The HTTP method for proxied plain-HTTP requests.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    pub bytes_up: Option<u64>,
    pub bytes_down: Option<u64>,
    pub duration_ms: Option<u64>,
    /// Human detail: which address range refused an upstream, what was malformed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl Decision {
    /// A line for `client` on `listener`, not yet decided (deny / bad_request until set).
    pub fn new(listener: Listener, client: SocketAddr) -> Decision {
        Decision {
            ts: String::new(),
            event: "decision",
            decision: "deny",
            enforced: true,
            reason: Reason::BadRequest,
            rule: None,
            listener,
            client,
            host: None,
            port: None,
            sni: None,
            upstream: None,
            original_dst: None,
            method: None,
            bytes_up: None,
            bytes_down: None,
            duration_ms: None,
            message: None,
        }
    }

    pub fn allowed(&self) -> bool {
        self.decision == "allow"
    }
}

/// Lines queued for stdout before new ones are dropped (and counted): a stalled log
/// shipper must not grow the proxy's memory without bound or stall its tunnels.
const QUEUE: usize = 65_536;

/// Hands decision lines to the stdout writer thread. Cheap to clone.
#[derive(Clone)]
pub struct DecisionLog {
    lines: mpsc::SyncSender<Item>,
}

enum Item {
    /// A line and when it was decided; stamped, counted and encoded by the writer, so a
    /// connection task only moves it into the queue.
    Line(Box<Decision>, SystemTime),
    /// Flush everything queued before it, then say so.
    Flush(mpsc::Sender<()>),
}

/// After writing a batch the writer rests this long before it waits again, so that under
/// load lines are written in batches and senders rarely have to wake it.
const BATCH_WINDOW: Duration = Duration::from_millis(1);

impl DecisionLog {
    /// Starts the writer thread. It flushes whenever it has nothing more queued, so lines
    /// reach stdout promptly without a write syscall per line under load.
    pub fn to_stdout() -> DecisionLog {
        let (lines, queue) = mpsc::sync_channel::<Item>(QUEUE);
        std::thread::Builder::new()
            .name("decision-log".into())
            .spawn(move || write_lines(&queue))
            .expect("spawning the decision log thread");
        DecisionLog { lines }
    }

    /// Queues a line. Never waits: when the queue is full the line is dropped and counted.
    pub fn write(&self, decision: &Decision) {
        self.send(decision.clone());
    }

    fn send(&self, decision: Decision) {
        let item = Item::Line(Box::new(decision), SystemTime::now());
        if let Err(mpsc::TrySendError::Full(_)) = self.lines.try_send(item) {
            crate::metrics::decision_line_dropped();
        }
    }

    /// Waits (up to `within`) until every line queued so far has reached stdout.
    pub fn flush(&self, within: Duration) {
        let deadline = std::time::Instant::now() + within;
        let (ack, done) = mpsc::channel();
        let mut item = Item::Flush(ack);
        // A stalled stdout can keep the queue full: never wait past the deadline to enqueue.
        loop {
            match self.lines.try_send(item) {
                Ok(()) => break,
                Err(mpsc::TrySendError::Full(back)) if std::time::Instant::now() < deadline => {
                    item = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(_) => return,
            }
        }
        let _ = done.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()));
    }

    /// The close line for an allowed connection that has ended.
    pub fn close(&self, decision: &Decision, up: u64, down: u64, took: Duration) {
        crate::metrics::bytes(up, down);
        let mut line = decision.clone();
        line.event = "close";
        line.bytes_up = Some(up);
        line.bytes_down = Some(down);
        line.duration_ms = Some(took.as_millis() as u64);
        self.send(line);
    }
}

/// The writer thread: drain what is queued, write it, flush, rest briefly, wait again.
fn write_lines(queue: &mpsc::Receiver<Item>) {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, stdout.lock());
    while let Ok(item) = queue.recv() {
        let mut acks = Vec::new();
        let mut next = Some(item);
        while let Some(item) = next {
            match item {
                Item::Line(mut line, at) => {
                    line.ts = rfc3339_millis(at);
                    if line.event == "decision" {
                        crate::metrics::decision(&line);
                    }
                    let _ = serde_json::to_writer(&mut out, &*line);
                    let _ = out.write_all(b"\n");
                }
                Item::Flush(ack) => acks.push(ack),
            }
            next = queue.try_recv().ok();
        }
        let _ = out.flush();
        for ack in acks {
            let _ = ack.send(());
        }
        std::thread::sleep(BATCH_WINDOW);
    }
}

/// `2026-11-23T16:35:39.123Z`.
pub fn rfc3339_millis(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339_with_millis_in_utc() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_451_739_123);
        assert_eq!(rfc3339_millis(t), "2026-11-23T16:35:39.123Z");
        assert_eq!(rfc3339_millis(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(&rfc3339_millis(leap)[..10], "2000-02-29");
    }

    #[test]
    fn a_line_carries_every_contract_field() {
        let mut d = Decision::new(Listener::Explicit, "127.0.0.1:5000".parse().unwrap());
        d.ts = rfc3339_millis(UNIX_EPOCH);
        let v: serde_json::Value = serde_json::to_value(&d).unwrap();
        for field in [
            "ts",
            "decision",
            "reason",
            "rule",
            "listener",
            "client",
            "host",
            "port",
            "sni",
            "upstream",
            "bytes_up",
            "bytes_down",
            "duration_ms",
        ] {
            assert!(v.get(field).is_some(), "missing {field}");
        }
        assert_eq!(v["listener"], "explicit");
        assert_eq!(v["reason"], "bad_request");
    }
}
