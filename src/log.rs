//! The decision log: one JSON object per line on stdout, the last step of every request or
//! connection. The [`Decision`] struct is the schema. Lines are handed to a writer thread so
//! that a slow stdout never makes a tunnel wait.

use std::collections::VecDeque;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::calendar::civil_from_days;
use crate::reason::Reason;
pub use crate::request::Listener;

/// The `decision` field: what happened to the request (report mode logs a would-be denial
/// as `Deny` with `enforced: false`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Allow,
    Deny,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Deny => "deny",
        }
    }
}

/// The `event` field: the decision, or the end of an allowed tunnel or forwarded request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    Decision,
    Close,
}

/// One decision line. Built up as a connection goes through its steps, written once when
/// the decision is final, and once more with `event: "close"` when an allowed tunnel or
/// forwarded request ends.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    pub ts: String,
    pub event: Event,
    pub decision: Action,
    /// False when a denial was only reported (report mode) and the traffic went through.
    pub enforced: bool,
    pub reason: Reason,
    pub rule: Option<String>,
    /// The workload named by valid proxy credentials; never the token.
    pub principal: Option<String>,
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
            event: Event::Decision,
            decision: Action::Deny,
            enforced: true,
            reason: Reason::BadRequest,
            rule: None,
            principal: None,
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
        self.decision == Action::Allow
    }

    /// Adds to `message`, after what an earlier step said (an ECH note, a would-be denial).
    pub fn note(&mut self, text: &str) {
        self.message = Some(match self.message.take() {
            Some(before) if !before.is_empty() => format!("{before}; {text}"),
            _ => text.to_owned(),
        });
    }
}

/// Lines queued for stdout before new requests wait for the writer. Nothing is ever dropped:
/// a line that must be written (a request already under way) always joins the queue, and
/// new work is held back at the door instead, so the queue stays near this size.
const ROOM: usize = 65_536;

/// Hands decision lines to the stdout writer thread. Cheap to clone.
#[derive(Clone)]
pub struct DecisionLog {
    queue: Arc<Queue>,
}

struct Queue {
    items: Mutex<Pending>,
    /// Wakes the writer when it sleeps on an empty queue.
    ready: Condvar,
    /// Lines queued and not yet written.
    queued: AtomicUsize,
    /// Set while new work waits for room; the writer wakes those waiters as it catches up.
    stalled: AtomicBool,
    room: tokio::sync::Notify,
}

#[derive(Default)]
struct Pending {
    items: VecDeque<Item>,
    writer_asleep: bool,
}

enum Item {
    /// A line and when it was decided; stamped, counted and encoded by the writer, so a
    /// connection task only moves it into the queue.
    Line(Box<Decision>, SystemTime),
    /// Flush everything queued before it, then say so.
    Flush(mpsc::Sender<()>),
}

/// After writing a batch the writer rests this long before it looks again, so that under
/// load lines are written in batches and senders rarely have to wake it.
const BATCH_WINDOW: Duration = Duration::from_millis(1);

impl DecisionLog {
    /// Starts the writer thread. It flushes whenever it has nothing more queued, so lines
    /// reach stdout promptly without a write syscall per line under load.
    pub fn to_stdout() -> DecisionLog {
        DecisionLog::to_writer(std::io::stdout())
    }

    /// The same, to any writer (tests use a pipe they can stall).
    pub fn to_writer(out: impl Write + Send + 'static) -> DecisionLog {
        let queue = Arc::new(Queue {
            items: Mutex::new(Pending::default()),
            ready: Condvar::new(),
            queued: AtomicUsize::new(0),
            stalled: AtomicBool::new(false),
            room: tokio::sync::Notify::new(),
        });
        let writer = queue.clone();
        std::thread::Builder::new()
            .name("decision-log".into())
            .spawn(move || write_lines(&writer, out))
            .expect("spawning the decision log thread");
        DecisionLog { queue }
    }

    /// Queues a line. Never waits and never drops: callers wait for [`DecisionLog::room`]
    /// before they take on new work.
    pub fn write(&self, decision: &Decision) {
        self.send(decision.clone());
    }

    fn send(&self, decision: Decision) {
        self.queue.queued.fetch_add(1, Ordering::Relaxed);
        self.push(Item::Line(Box::new(decision), SystemTime::now()));
    }

    fn push(&self, item: Item) {
        let mut pending = lock(&self.queue.items);
        pending.items.push_back(item);
        if std::mem::take(&mut pending.writer_asleep) {
            self.queue.ready.notify_one();
        }
    }

    /// Completes when the log has room for a new request's lines. While stdout can't keep
    /// up this waits (the accept loop stops accepting, keep-alive requests are not read), so
    /// the audit trail slows the proxy down rather than losing a line.
    pub async fn room(&self) {
        let queue = &self.queue;
        if queue.queued.load(Ordering::Relaxed) < ROOM {
            return;
        }
        if !queue.stalled.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "decision log: stdout is not keeping up ({ROOM} lines queued): new requests wait until it does"
            );
        }
        crate::metrics::decision_log_waited();
        loop {
            let notified = queue.room.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if queue.queued.load(Ordering::Relaxed) < ROOM {
                return;
            }
            notified.await;
        }
    }

    /// Waits (up to `within`) until every line queued so far has reached stdout.
    pub fn flush(&self, within: Duration) {
        let (ack, done) = mpsc::channel();
        self.push(Item::Flush(ack));
        let _ = done.recv_timeout(within);
    }

    /// The close line for an allowed connection that has ended.
    pub fn close(&self, decision: &Decision, up: u64, down: u64, took: Duration) {
        crate::metrics::bytes(up, down);
        let mut line = decision.clone();
        line.event = Event::Close;
        line.bytes_up = Some(up);
        line.bytes_down = Some(down);
        line.duration_ms = Some(took.as_millis() as u64);
        self.send(line);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The writer thread: take what is queued, write it, flush, rest briefly, look again.
fn write_lines(queue: &Queue, out: impl Write) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
    let mut batch = VecDeque::new();
    loop {
        {
            let mut pending = lock(&queue.items);
            while pending.items.is_empty() {
                pending.writer_asleep = true;
                pending = queue
                    .ready
                    .wait(pending)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
            }
            std::mem::swap(&mut batch, &mut pending.items);
        }
        let mut acks = Vec::new();
        let mut written = 0;
        for item in batch.drain(..) {
            match item {
                Item::Line(mut line, at) => {
                    line.ts = rfc3339_millis(at);
                    if line.event == Event::Decision {
                        crate::metrics::decision(
                            line.decision.as_str(),
                            line.reason,
                            line.rule.as_deref(),
                            line.listener,
                            line.enforced,
                        );
                    }
                    let _ = serde_json::to_writer(&mut out, &*line);
                    let _ = out.write_all(b"\n");
                    written += 1;
                }
                Item::Flush(ack) => acks.push(ack),
            }
        }
        let _ = out.flush();
        let left = queue.queued.fetch_sub(written, Ordering::Relaxed) - written;
        if left < ROOM && queue.stalled.swap(false, Ordering::Relaxed) {
            tracing::warn!("decision log: caught up; new requests go on");
            queue.room.notify_waiters();
        }
        for ack in acks {
            let _ = ack.send(());
        }
        std::thread::sleep(BATCH_WINDOW);
    }
}

/// A request's decision line from the moment the request has been read until it is written.
/// Whatever ends the request writes it exactly once: [`PendingLine::write`] on the paths that
/// decide, `Drop` on every other (the client went away, shutdown, a panic), with what was
/// known by then and a message naming the step it stopped in.
pub struct PendingLine {
    line: Box<Decision>,
    log: DecisionLog,
    written: bool,
    /// The step under way, for the message if the request ends without a decision.
    step: &'static str,
}

impl PendingLine {
    pub fn new(log: &DecisionLog, line: Decision) -> PendingLine {
        PendingLine {
            line: Box::new(line),
            log: log.clone(),
            written: false,
            step: "reading the request",
        }
    }

    /// Names the step the request is in now.
    pub fn step(&mut self, step: &'static str) {
        self.step = step;
    }

    /// Ends the request without a line: only for a connection that sent nothing at all,
    /// which asked for nothing (a load balancer's TCP health check, a port scan).
    pub fn discard(mut self) {
        self.written = true;
    }

    /// Writes the line now.
    pub fn write(mut self) {
        self.written = true;
        let blank = Decision::new(self.line.listener, self.line.client);
        self.log.send(std::mem::replace(&mut *self.line, blank));
    }

    /// Writes the line now and keeps a copy, which the close line starts from.
    pub fn write_keeping(self) -> Decision {
        let kept = (*self.line).clone();
        self.write();
        kept
    }
}

impl std::ops::Deref for PendingLine {
    type Target = Decision;
    fn deref(&self) -> &Decision {
        &self.line
    }
}

impl std::ops::DerefMut for PendingLine {
    fn deref_mut(&mut self) -> &mut Decision {
        &mut self.line
    }
}

impl Drop for PendingLine {
    fn drop(&mut self) {
        if self.written {
            return;
        }
        let ended = format!(
            "the request ended while {} (client gone, shutdown or internal error)",
            self.step
        );
        let blank = Decision::new(self.line.listener, self.line.client);
        let mut line = std::mem::replace(&mut *self.line, blank);
        line.note(&ended);
        self.log.send(line);
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

    /// Stands for a stdout nobody is reading: every write blocks until the gate opens.
    #[derive(Clone, Default)]
    struct Gated {
        open: Arc<(Mutex<bool>, Condvar)>,
        sink: Arc<Mutex<Vec<u8>>>,
    }

    impl Gated {
        fn open(&self) {
            *self.open.0.lock().unwrap() = true;
            self.open.1.notify_all();
        }
    }

    impl Write for Gated {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let mut open = self.open.0.lock().unwrap();
            while !*open {
                open = self.open.1.wait(open).unwrap();
            }
            self.sink.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_stalled_stdout_holds_new_work_back_and_loses_no_line() {
        let out = Gated::default();
        let log = DecisionLog::to_writer(out.clone());
        let client = "127.0.0.1:5000".parse().unwrap();
        let total = ROOM + 1_000;
        for port in 0..total {
            let mut line = Decision::new(Listener::Explicit, client);
            line.port = Some(port as u16);
            log.write(&line);
        }
        // Beyond the room, new work waits for the writer instead of any line being dropped.
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let mut room = std::pin::pin!(log.room());
        assert!(std::future::Future::poll(room.as_mut(), &mut cx).is_pending());
        out.open();
        room.await;
        log.flush(Duration::from_secs(60));
        let text = String::from_utf8(out.sink.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), total);
        assert!(lines
            .iter()
            .enumerate()
            .all(|(i, v)| v["port"] == (i as u16) && v["event"] == "decision"));
    }

    #[test]
    fn a_pending_line_is_written_once_whichever_way_the_request_ends() {
        let out = Gated::default();
        out.open();
        let log = DecisionLog::to_writer(out.clone());
        let client = "127.0.0.1:5000".parse().unwrap();
        // Written on purpose: once.
        let mut written = PendingLine::new(&log, Decision::new(Listener::Explicit, client));
        written.host = Some("written.test".into());
        let copy = written.write_keeping();
        assert_eq!(copy.host.as_deref(), Some("written.test"));
        // Dropped mid-way: once, saying where it stopped.
        let mut dropped = PendingLine::new(&log, Decision::new(Listener::Explicit, client));
        dropped.host = Some("dropped.test".into());
        dropped.step("resolving the upstream");
        drop(dropped);
        // Unwound by a panic: once.
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut line = PendingLine::new(&log, Decision::new(Listener::Explicit, client));
            line.host = Some("panicked.test".into());
            panic!("a bug in a task");
        }));
        assert!(panicked.is_err());
        // A connection that sent nothing: no line.
        PendingLine::new(&log, Decision::new(Listener::TransparentTls, client)).discard();
        log.flush(Duration::from_secs(60));
        let text = String::from_utf8(out.sink.lock().unwrap().clone()).unwrap();
        let hosts: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .collect();
        let names: Vec<&str> = hosts.iter().map(|v| v["host"].as_str().unwrap()).collect();
        assert_eq!(names, ["written.test", "dropped.test", "panicked.test"]);
        assert!(hosts[1]["message"]
            .as_str()
            .unwrap()
            .contains("ended while resolving the upstream"));
        assert!(hosts[0]["message"].is_null());
    }

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
