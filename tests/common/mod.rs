//! Test harness: starts the real `egress-proxy` binary with a temp config whose listeners
//! ask the kernel for a port (`127.0.0.1:0`; the proxy reports what it bound on stderr, so
//! two tests can never be handed the same port), reads its decision lines, and runs origins (TLS made at test time with rcgen,
//! and plain HTTP) that count every connection they accept.
#![allow(dead_code)]

mod bound;
pub use bound::bound_address;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_egress-proxy");

/// A loopback port where nothing listens, held for as long as the value lives: the socket
/// is bound but never listening, so a connection there is refused and no other test can
/// take the port meanwhile.
pub struct ClosedPort(socket2::Socket);

impl ClosedPort {
    pub fn new() -> ClosedPort {
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        socket.bind(&addr.into()).unwrap();
        ClosedPort(socket)
    }

    pub fn port(&self) -> u16 {
        self.0.local_addr().unwrap().as_socket().unwrap().port()
    }
}

/// A loopback address where a connection attempt hangs: its listener's backlog (0) is
/// already taken by one connection nobody accepts, so further SYNs are dropped. Lets a test
/// hold the proxy in its dial for as long as it likes, with no clock involved.
pub struct BlackHole {
    pub addr: SocketAddr,
    _listener: socket2::Socket,
    _filler: TcpStream,
}

impl BlackHole {
    pub fn new() -> BlackHole {
        let listener =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        listener.bind(&any.into()).unwrap();
        listener.listen(0).unwrap();
        let addr = listener.local_addr().unwrap().as_socket().unwrap();
        let filler = TcpStream::connect(addr).unwrap();
        BlackHole {
            addr,
            _listener: listener,
            _filler: filler,
        }
    }

    /// Connection attempts to the black hole under way now (sockets in SYN-SENT towards it,
    /// from /proc/net/tcp): how a test sees that the proxy is dialling.
    pub fn dialling(&self) -> usize {
        let remote = format!("0100007F:{:04X}", self.addr.port());
        std::fs::read_to_string("/proc/net/tcp")
            .unwrap()
            .lines()
            .skip(1)
            .filter(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.get(2) == Some(&remote.as_str()) && f.get(3) == Some(&"02")
            })
            .count()
    }

    /// Waits (up to 30 s) until no connection attempt to the black hole is under way.
    pub fn wait_dialling_ends(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.dialling() > 0 {
            assert!(
                Instant::now() < deadline,
                "a dial to {} never ended",
                self.addr
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits (up to 30 s) until `n` connection attempts to the black hole are under way.
    pub fn wait_dialling(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.dialling() < n {
            assert!(
                Instant::now() < deadline,
                "{n} dials did not reach the black hole {}; /proc/net/tcp:\n{}",
                self.addr,
                std::fs::read_to_string("/proc/net/tcp").unwrap()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// A running proxy. Killed on drop.
pub struct Proxy {
    pub child: Child,
    pub explicit: SocketAddr,
    pub transparent_tls: SocketAddr,
    pub transparent_http: SocketAddr,
    pub admin: SocketAddr,
    pub dir: tempfile::TempDir,
    pub config_path: std::path::PathBuf,
    /// The `listeners:` block the config was written with, kept for rewrites.
    listeners_yaml: String,
    lines: Mutex<mpsc::Receiver<Value>>,
    seen: Mutex<Vec<Value>>,
    pub stderr: Arc<Mutex<String>>,
}

impl Proxy {
    /// Starts the proxy with every listener on a free loopback port and `rest` (YAML for
    /// allow/upstream/resolver/timeouts/limits/mode) appended to the config.
    pub fn start(rest: &str) -> Proxy {
        Proxy::start_with_listeners(ListenerAddrs::yaml, rest)
    }

    /// Waits until the proxy says where each of its four listeners is bound, and records
    /// those addresses.
    fn wait_listening(&mut self) {
        let names = ["explicit", "transparent_tls", "transparent_http", "admin"];
        let needles: Vec<String> = names
            .iter()
            .map(|n| format!("listening: {n} on "))
            .collect();
        let needles: Vec<&str> = needles.iter().map(String::as_str).collect();
        self.wait_stderr(&needles, Duration::from_secs(20));
        let text = self.stderr();
        let bound = |name| bound_address(&text, name).expect("an address after 'listening:'");
        self.explicit = bound("explicit");
        self.transparent_tls = bound("transparent_tls");
        self.transparent_http = bound("transparent_http");
        self.admin = bound("admin");
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// The next decision line (not `close`) matching `pred`, waiting up to 30 s.
    pub fn decision(&self, pred: impl Fn(&Value) -> bool) -> Value {
        self.line(|v| v["event"] == "decision" && pred(v))
    }

    /// The next close line matching `pred`.
    pub fn close_line(&self, pred: impl Fn(&Value) -> bool) -> Value {
        self.line(|v| v["event"] == "close" && pred(v))
    }

    /// The first line (seen or arriving within 30 s) matching `pred`; it is consumed. The
    /// bound only turns a hang into a failure: on a busy machine a line can take seconds.
    pub fn line(&self, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            {
                let mut seen = self.seen.lock().unwrap();
                if let Some(i) = seen.iter().position(&pred) {
                    return seen.remove(i);
                }
            }
            let wait = deadline.saturating_duration_since(Instant::now());
            match self.lines.lock().unwrap().recv_timeout(wait) {
                Ok(v) => self.seen.lock().unwrap().push(v),
                Err(_) => panic!(
                    "no matching decision line within 30s; seen: {:#?}\nstderr:\n{}",
                    self.seen.lock().unwrap(),
                    self.stderr()
                ),
            }
        }
    }

    /// Stops the proxy with SIGTERM, expects it to drain and exit 0, and returns every line
    /// not consumed yet. Once stdout is closed no line can come later, so a test can assert
    /// that something was *not* logged without waiting on a clock.
    pub fn stop_and_collect(&mut self) -> Vec<Value> {
        self.signal("TERM");
        assert_eq!(
            self.wait_exit(Duration::from_secs(60)),
            Some(0),
            "stderr:\n{}",
            self.stderr()
        );
        let rx = self.lines.lock().unwrap();
        let mut seen = std::mem::take(&mut *self.seen.lock().unwrap());
        // The reader thread ends at EOF on stdout, which closes the channel.
        while let Ok(v) = rx.recv_timeout(Duration::from_secs(60)) {
            seen.push(v);
        }
        seen
    }

    /// The exit code once the process has exited, waiting up to `within`.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "proxy did not exit within {within:?}; stderr:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args(["-s", sig, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Replaces the config file (atomically) with the same listeners and `rest`.
    pub fn rewrite_config(&self, rest: &str) {
        let config = format!("{}{rest}", self.listeners_yaml);
        let tmp = self.dir.path().join("egress.yaml.new");
        std::fs::write(&tmp, config).unwrap();
        std::fs::rename(tmp, &self.config_path).unwrap();
    }

    /// The sum of a metric's samples (all label sets) from `/metrics`.
    pub fn metric_sum(&self, name: &str) -> f64 {
        let (_, text) = self.admin_get("/metrics");
        text.lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Waits (up to 30 s) until `egress_active_connections` sums to `n`.
    pub fn wait_active(&self, n: f64) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let now = self.metric_sum("egress_active_connections");
            if now == n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "active connections stuck at {now}, expected {n}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// GET on the admin listener: (status, body).
    pub fn admin_get(&self, path: &str) -> (u16, String) {
        http_get(
            self.admin,
            &format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n"),
        )
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Addresses for a proxy's four listeners.
#[derive(Debug, Clone, Copy)]
pub struct ListenerAddrs {
    pub explicit: SocketAddr,
    pub transparent_tls: SocketAddr,
    pub transparent_http: SocketAddr,
    pub admin: SocketAddr,
}

impl ListenerAddrs {
    /// Every listener on loopback port 0: the kernel picks, the proxy reports.
    pub fn any_port() -> ListenerAddrs {
        let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        ListenerAddrs {
            explicit: addr,
            transparent_tls: addr,
            transparent_http: addr,
            admin: addr,
        }
    }

    /// The `listeners:` block of a config, ending in a newline.
    pub fn yaml(&self) -> String {
        format!(
            "listeners:\n  explicit: {}\n  transparent_tls: {}\n  transparent_http: {}\n  admin: {}\n",
            self.explicit, self.transparent_tls, self.transparent_http, self.admin
        )
    }
}

impl Proxy {
    /// Starts the binary with `args` (e.g. `run --config ssm:/name`) and `env` added to the
    /// child's environment only, then waits until it reports its four listeners bound. For
    /// configs that are not a temp file (`config_path` then names no file).
    pub fn start_with(args: &[&str], env: &[(&str, &str)]) -> Proxy {
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("egress.yaml");
        let mut command = Command::new(BIN);
        command.args(args).envs(env.iter().copied());
        let mut proxy = Proxy::spawn_command(command, ListenerAddrs::any_port(), dir, config_path);
        proxy.wait_listening();
        proxy
    }
}

/// Sends raw request bytes, reads to EOF: (status, whole response text).
pub fn http_get(addr: SocketAddr, raw: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(raw.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    (status_of(&text), text)
}

/// The status code of an HTTP response text, or 0.
pub fn status_of(text: &str) -> u16 {
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Reads one HTTP response head (up to the blank line) from a blocking stream.
pub fn read_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// Sends `CONNECT target` and returns the stream and the response head.
pub fn connect(proxy: SocketAddr, target: &str) -> (TcpStream, String) {
    let mut s = TcpStream::connect(proxy).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").unwrap();
    let head = read_head(&mut s);
    (s, head)
}

/// A TLS origin on 127.0.0.1 with a certificate for `names`, signed by a CA made now.
/// It answers `GET`/`HEAD` with a short HTTP response and echoes anything else.
pub struct TlsOrigin {
    pub addr: SocketAddr,
    pub ca_pem: String,
    pub ca_der: rustls::pki_types::CertificateDer<'static>,
    pub accepted: Arc<AtomicUsize>,
}

impl TlsOrigin {
    pub fn start(names: &[&str]) -> TlsOrigin {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "egress-proxy test CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    count.fetch_add(1, Ordering::SeqCst);
                    let acceptor = acceptor.clone();
                    tokio::spawn(async move {
                        let Ok(tls) = acceptor.accept(stream).await else {
                            return;
                        };
                        serve_tls(tls).await;
                    });
                }
            });
        });
        TlsOrigin {
            addr,
            ca_pem: ca.pem(),
            ca_der: ca.der().clone(),
            accepted,
        }
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// A rustls client config trusting this origin's CA.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der.clone()).unwrap();
        Arc::new(
            rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
        )
    }
}

async fn serve_tls(mut tls: tokio_rustls::server::TlsStream<tokio::net::TcpStream>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 64 * 1024];
    let Ok(n) = tls.read(&mut buf).await else {
        return;
    };
    if n == 0 {
        return;
    }
    if buf.starts_with(b"GET ") || buf.starts_with(b"HEAD ") {
        let body = "hello from the TLS origin\n";
        let reply = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = tls.write_all(reply.as_bytes()).await;
        let _ = tls.shutdown().await;
        return;
    }
    if tls.write_all(&buf[..n]).await.is_err() {
        return;
    }
    loop {
        match tls.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if tls.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
    let _ = tls.shutdown().await;
}

/// A plain TCP origin on 127.0.0.1 that counts the connections it accepts and serves each
/// on a thread of its own.
pub struct Origin {
    pub addr: SocketAddr,
    pub accepted: Arc<AtomicUsize>,
}

impl Origin {
    pub fn start(serve: fn(TcpStream)) -> Origin {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                count.fetch_add(1, Ordering::SeqCst);
                std::thread::spawn(move || serve(stream));
            }
        });
        Origin { addr, accepted }
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// An origin that echoes and passes end of stream on.
pub struct EchoOrigin;

impl EchoOrigin {
    pub fn start() -> Origin {
        Origin::start(|mut stream| {
            let mut reader = stream.try_clone().unwrap();
            let _ = std::io::copy(&mut reader, &mut stream);
            let _ = stream.shutdown(std::net::Shutdown::Write);
        })
    }
}

/// A plain HTTP/1.1 origin (keep-alive) whose body reports what it received: the request
/// line, the Host header, and the names of any proxy/hop-by-hop headers that reached it.
pub struct HttpOrigin;

impl HttpOrigin {
    pub fn start() -> Origin {
        Origin::start(serve_http)
    }
}

fn serve_http(stream: TcpStream) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut out = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut host = String::new();
        let mut leaked = Vec::new();
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').unwrap_or((line, ""));
            let name = name.to_ascii_lowercase();
            match name.as_str() {
                "host" => host = value.trim().to_owned(),
                "content-length" => length = value.trim().parse().unwrap_or(0),
                n if n.starts_with("proxy-")
                    || n == "connection"
                    || n == "keep-alive"
                    || n == "x-hop" =>
                {
                    leaked.push(n.to_owned())
                }
                _ => {}
            }
        }
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let text = format!(
            "{} host={host} leaked=[{}] body={}\n",
            request_line.trim_end(),
            leaked.join(","),
            String::from_utf8_lossy(&body)
        );
        let reply = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{text}",
            text.len()
        );
        if out.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

/// Reads one HTTP/1.1 response with Content-Length from a blocking stream: (status, body).
pub fn read_response(s: &mut TcpStream) -> (u16, String) {
    let head = read_head(s);
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    let _ = s.read_exact(&mut body);
    (
        status_of(&head),
        String::from_utf8_lossy(&body).into_owned(),
    )
}

impl ListenerAddrs {
    /// The `listeners:` block with the transparent listeners in their long form, so that a
    /// connection that was not redirected goes to `tls_port` / `http_port` upstream.
    pub fn yaml_with_default_ports(&self, tls_port: u16, http_port: u16) -> String {
        format!(
            "listeners:\n  explicit: {}\n  transparent_tls: {{ listen: {}, default_port: {tls_port} }}\n  transparent_http: {{ listen: {}, default_port: {http_port} }}\n  admin: {}\n",
            self.explicit, self.transparent_tls, self.transparent_http, self.admin
        )
    }
}

impl Proxy {
    /// Starts the proxy on loopback port 0 with a `listeners:` block of the test's own
    /// making (`listeners` gets the addresses, returns the block) and `rest` appended.
    pub fn start_with_listeners(
        listeners: impl FnOnce(&ListenerAddrs) -> String,
        rest: &str,
    ) -> Proxy {
        let listeners_yaml = listeners(&ListenerAddrs::any_port());
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("egress.yaml");
        std::fs::write(&config_path, format!("{listeners_yaml}{rest}")).unwrap();
        let path = config_path.to_str().unwrap().to_owned();
        let mut proxy = Proxy::start_with(&["run", "--config", &path], &[]);
        proxy.dir = dir;
        proxy.config_path = config_path;
        proxy.listeners_yaml = listeners_yaml;
        proxy
    }

    /// Runs `command` (which must end up exec'ing the proxy binary, e.g. through
    /// `ip netns exec`) with stdout/stderr captured like [`Proxy::start`], without probing
    /// its listeners: `listeners` is recorded as given. Wait with [`Proxy::wait_stderr`].
    pub fn spawn_command(
        mut command: Command,
        listeners: ListenerAddrs,
        dir: tempfile::TempDir,
        config_path: std::path::PathBuf,
    ) -> Proxy {
        let mut child = command
            .env("EGRESS_PROXY_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting egress-proxy");
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let value: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {line}"));
                if tx.send(value).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push_str(&(line + "\n"));
            }
        });
        Proxy {
            child,
            explicit: listeners.explicit,
            transparent_tls: listeners.transparent_tls,
            transparent_http: listeners.transparent_http,
            admin: listeners.admin,
            dir,
            config_path,
            listeners_yaml: listeners.yaml(),
            lines: Mutex::new(rx),
            seen: Mutex::new(Vec::new()),
            stderr,
        }
    }

    /// Waits (up to `within`) until the proxy's stderr contains every one of `needles`;
    /// panics with the stderr if it does not, or if the process exits first.
    pub fn wait_stderr(&mut self, needles: &[&str], within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let text = self.stderr();
            if needles.iter().all(|n| text.contains(n)) {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("egress-proxy exited ({status}) before {needles:?}; stderr:\n{text}");
            }
            assert!(
                Instant::now() < deadline,
                "egress-proxy did not log {needles:?} within {within:?}; stderr:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The first flight of a real rustls client for `sni`: a ClientHello as clients send it.
pub fn rustls_hello(sni: &str) -> Vec<u8> {
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(sni.to_owned()).unwrap();
    let mut client = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut out = Vec::new();
    client.write_tls(&mut out).unwrap();
    out
}

/// A fatal TLS alert record as the proxy answers a refused ClientHello with: the only bytes a
/// refused client may get back (never anything from an upstream).
pub fn tls_alert(description: u8) -> Vec<u8> {
    vec![0x15, 0x03, 0x03, 0x00, 0x02, 0x02, description]
}

pub const ALERT_ACCESS_DENIED: u8 = 49;
pub const ALERT_ILLEGAL_PARAMETER: u8 = 47;
pub const ALERT_UNRECOGNIZED_NAME: u8 = 112;

/// `pip download` of one package from `https://denied.test/simple/` through `proxy_url`:
/// only the proxy (on loopback) is contacted. Returns whether pip succeeded and what it
/// printed; pip prints the proxy's answer when it retries, hence one retry.
pub fn pip_through(proxy_url: &str) -> (bool, String) {
    let dest = tempfile::tempdir().unwrap();
    let out = Command::new("python3")
        .args([
            "-m",
            "pip",
            "download",
            "--no-cache-dir",
            "--disable-pip-version-check",
        ])
        .args(["--retries", "1", "--timeout", "30", "--dest"])
        .arg(dest.path())
        .args([
            "--index-url",
            "https://denied.test/simple/",
            "--proxy",
            proxy_url,
        ])
        .arg("some-package")
        .env("PIP_CONFIG_FILE", "/dev/null")
        .env_remove("PIP_INDEX_URL")
        .env_remove("PIP_EXTRA_INDEX_URL")
        .env_remove("PIP_FIND_LINKS")
        .output()
        .unwrap();
    let printed =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), printed)
}
