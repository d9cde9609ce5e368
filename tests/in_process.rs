//! The serving loop in-process: `serve::run` takes bound listeners, a decision-log sink and a
//! shutdown future, so a test can drive the whole pipeline without a child process.

use std::io::Write;
use std::sync::{Arc, Mutex};

use egress_proxy::config::source::Source;
use egress_proxy::log::DecisionLog;
use egress_proxy::serve::{self, Bound, Serving};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A decision-log sink the test can read back.
#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

async fn connect(addr: std::net::SocketAddr, target: &str) -> (tokio::net::TcpStream, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        if s.read(&mut byte).await.unwrap() == 0 {
            break;
        }
        head.push(byte[0]);
    }
    (s, String::from_utf8(head).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_serves_bound_listeners_until_its_shutdown_future_and_flushes_every_line() {
    // An echo origin on a kernel port.
    let origin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = origin.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = origin.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("egress.yaml");
    std::fs::write(
        &path,
        format!(
            "listeners: {{ explicit: 127.0.0.1:0 }}
allow:
  - {{ name: echo, hosts: [echo.test], ports: [{port}], tls: any }}
upstream: {{ allow_cidrs: [127.0.0.0/8] }}
resolver: {{ hosts: {{ echo.test: 127.0.0.1 }} }}
"
        ),
    )
    .unwrap();
    let source = Source::parse(path.to_str().unwrap());
    let loaded = source.load().await.unwrap();
    let bound = Bound::bind(&loaded.config.listeners).await.unwrap();
    let explicit = bound.addresses().explicit.unwrap();
    assert_ne!(explicit.port(), 0, "the kernel's port is reported");
    let sink = Sink::default();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = Serving {
        source,
        loaded,
        bound,
        log: DecisionLog::to_writer(sink.clone()),
    };
    let running = tokio::spawn(serve::run(serving, async {
        let _ = stopped.await;
    }));

    let (mut tunnel, head) = connect(explicit, &format!("echo.test:{port}")).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    tunnel.write_all(b"ping").await.unwrap();
    let mut back = [0u8; 4];
    tunnel.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"ping");
    let (_denied, head) = connect(explicit, &format!("elsewhere.test:{port}")).await;
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");

    // Shut down with the tunnel open: it finishes once the client ends it.
    stop.send(()).unwrap();
    tunnel.shutdown().await.unwrap();
    let mut rest = Vec::new();
    tunnel.read_to_end(&mut rest).await.unwrap();
    running.await.unwrap().unwrap();

    // Every line is in the sink once run has returned.
    let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let summary: Vec<(String, String, String)> = lines
        .iter()
        .map(|v| {
            (
                v["event"].as_str().unwrap().to_owned(),
                v["decision"].as_str().unwrap().to_owned(),
                v["host"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expect = |e: &str, d: &str, h: &str| (e.to_owned(), d.to_owned(), h.to_owned());
    assert_eq!(
        summary,
        [
            expect("decision", "allow", "echo.test"),
            expect("decision", "deny", "elsewhere.test"),
            expect("close", "allow", "echo.test"),
        ]
    );
    assert_eq!(lines[2]["bytes_up"], 4);
    assert_eq!(lines[2]["bytes_down"], 4);
}
