//! Origins and clients. Both speak one tiny protocol: the client sends a 13-byte header
//! (mode, length u64 LE, time limit ms u32 LE) and then
//! - `U` upload: the client sends `length` bytes, the origin answers the count (u64 LE);
//! - `D` download: the origin sends `length` bytes (or what it can within the limit);
//! - `T` first byte: the origin sends one byte, then waits for the client to close;
//! - `E` echo: the origin echoes until the client closes.
//!
//! Everything connects to 127.0.0.1 only, and every transfer is bounded by time.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

pub const CHUNK: usize = 256 * 1024;
static ZEROS: [u8; CHUNK] = [0; CHUNK];

pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
pub type Stream = Box<dyn Io>;

fn header(mode: u8, len: u64, limit: Duration) -> [u8; 13] {
    let mut h = [0u8; 13];
    h[0] = mode;
    h[1..9].copy_from_slice(&len.to_le_bytes());
    h[9..13].copy_from_slice(&(limit.as_millis().min(u32::MAX as u128) as u32).to_le_bytes());
    h
}

// ---------------------------------------------------------------------------------------
// Origins

async fn serve(mut s: Stream) -> io::Result<()> {
    let mut h = [0u8; 13];
    s.read_exact(&mut h).await?;
    let len = u64::from_le_bytes(h[1..9].try_into().unwrap());
    let deadline = Instant::now()
        + Duration::from_millis(u32::from_le_bytes(h[9..13].try_into().unwrap()) as u64);
    match h[0] {
        b'U' => {
            let mut buf = vec![0u8; CHUNK];
            let mut got = 0u64;
            while got < len {
                let n = s.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                got += n as u64;
            }
            s.write_all(&got.to_le_bytes()).await?;
            s.flush().await?;
        }
        b'D' => {
            let mut sent = 0u64;
            while sent < len && Instant::now() < deadline {
                let n = (len - sent).min(CHUNK as u64) as usize;
                s.write_all(&ZEROS[..n]).await?;
                sent += n as u64;
            }
            s.flush().await?;
        }
        b'T' => {
            s.write_all(b"!").await?;
            s.flush().await?;
            let mut buf = [0u8; 256];
            while s.read(&mut buf).await? > 0 {}
        }
        b'E' => {
            let mut buf = vec![0u8; 2048];
            loop {
                let n = s.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                s.write_all(&buf[..n]).await?;
                s.flush().await?;
            }
        }
        _ => return Err(io::Error::other("bad mode")),
    }
    s.shutdown().await
}

/// Serves the protocol over plain TCP on a free loopback port.
pub async fn start_tcp_origin() -> io::Result<(SocketAddr, Arc<AtomicUsize>)> {
    let listener = listen("127.0.0.1:0".parse().unwrap())?;
    let addr = listener.local_addr()?;
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            count.fetch_add(1, Ordering::Relaxed);
            let _ = s.set_nodelay(true);
            tokio::spawn(async move {
                let _ = serve(Box::new(s)).await;
            });
        }
    });
    Ok((addr, accepted))
}

fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

/// A TLS origin for `origin.bench` (certificate from a CA made now) and a client config
/// that trusts it: full handshakes only (no resumption), so every round costs the same.
pub struct TlsOrigin {
    pub addr: SocketAddr,
    pub connector: TlsConnector,
}

pub async fn start_tls_origin(addr: SocketAddr) -> io::Result<TlsOrigin> {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "egress-proxy bench CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["origin.bench".to_string()]).unwrap();
    let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);
    let cert = params.signed_by(&key, &issuer).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().clone()).unwrap();
    let mut client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.resumption = rustls::client::Resumption::disabled();

    let listener = listen(addr)?;
    let addr = listener.local_addr()?;
    let acceptor = TlsAcceptor::from(Arc::new(server));
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let _ = s.set_nodelay(true);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(Ok(tls)) =
                    tokio::time::timeout(Duration::from_secs(10), acceptor.accept(s)).await
                {
                    let _ = serve(Box::new(tls)).await;
                }
            });
        }
    });
    Ok(TlsOrigin {
        addr,
        connector: TlsConnector::from(Arc::new(client)),
    })
}

// ---------------------------------------------------------------------------------------
// Clients

/// How a client reaches the origin.
#[derive(Clone, Debug)]
pub enum Route {
    /// Straight to the origin.
    Direct(SocketAddr),
    /// `CONNECT authority` on the explicit listener.
    Connect {
        proxy: SocketAddr,
        authority: String,
    },
    /// Straight to the transparent TLS listener (the SNI decides).
    Transparent(SocketAddr),
}

impl Route {
    pub fn is_direct(&self) -> bool {
        matches!(self, Route::Direct(_))
    }
}

/// A TCP stream to the origin: connected, and for CONNECT past the `200`.
pub async fn open_tcp(route: &Route) -> io::Result<TcpStream> {
    let addr = match route {
        Route::Direct(a) | Route::Transparent(a) => *a,
        Route::Connect { proxy, .. } => *proxy,
    };
    let mut s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    if let Route::Connect { authority, .. } = route {
        let req = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n");
        s.write_all(req.as_bytes()).await?;
        // Nothing follows the response head until the client speaks, so a plain read is
        // safe: it cannot swallow tunnel bytes.
        let mut head = Vec::with_capacity(256);
        let mut buf = [0u8; 512];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut buf).await?;
            if n == 0 || head.len() > 8192 {
                return Err(io::Error::other(format!(
                    "CONNECT: bad response {:?}",
                    String::from_utf8_lossy(&head)
                )));
            }
            head.extend_from_slice(&buf[..n]);
        }
        if !head.starts_with(b"HTTP/1.1 200") || !head.ends_with(b"\r\n\r\n") {
            return Err(io::Error::other(format!(
                "CONNECT refused: {}",
                String::from_utf8_lossy(&head).lines().next().unwrap_or("")
            )));
        }
    }
    Ok(s)
}

/// A stream over `route`, with TLS (SNI origin.bench) when `tls` is given.
pub async fn open(route: &Route, tls: Option<&TlsConnector>) -> io::Result<Stream> {
    let s = open_tcp(route).await?;
    match tls {
        None => Ok(Box::new(s)),
        Some(connector) => {
            let name = rustls::pki_types::ServerName::try_from("origin.bench").unwrap();
            Ok(Box::new(connector.connect(name, s).await?))
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    Upload,
    Download,
}

impl Dir {
    pub fn name(self) -> &'static str {
        match self {
            Dir::Upload => "upload",
            Dir::Download => "download",
        }
    }
}

/// One direction of bulk data over an open stream; returns the bytes that arrived.
async fn transfer(mut s: Stream, dir: Dir, len: u64, limit: Duration) -> io::Result<u64> {
    let deadline = Instant::now() + limit;
    match dir {
        Dir::Upload => {
            s.write_all(&header(b'U', len, limit)).await?;
            let mut sent = 0u64;
            while sent < len && Instant::now() < deadline {
                let n = (len - sent).min(CHUNK as u64) as usize;
                s.write_all(&ZEROS[..n]).await?;
                sent += n as u64;
            }
            s.flush().await?;
            if sent < len {
                // Out of time: the origin waits for more; report what was sent.
                return Ok(sent);
            }
            let mut ack = [0u8; 8];
            tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut ack))
                .await
                .map_err(|_| io::Error::other("no upload ack"))??;
            Ok(u64::from_le_bytes(ack))
        }
        Dir::Download => {
            s.write_all(&header(b'D', len, limit)).await?;
            s.flush().await?;
            let mut buf = vec![0u8; CHUNK];
            let mut got = 0u64;
            let grace = deadline + Duration::from_secs(2);
            while got < len {
                let wait = grace.saturating_duration_since(Instant::now());
                let n = match tokio::time::timeout(wait, s.read(&mut buf)).await {
                    Ok(r) => r?,
                    Err(_) => break,
                };
                if n == 0 {
                    break;
                }
                got += n as u64;
            }
            Ok(got)
        }
    }
}

pub struct Bulk {
    pub bytes: u64,
    pub secs: f64,
}

/// `tunnels` streams opened first, then `each` bytes through every one at once; timed from
/// the first byte to the last stream done.
pub async fn bulk(
    route: &Route,
    tls: Option<&TlsConnector>,
    tunnels: usize,
    each: u64,
    dir: Dir,
    limit: Duration,
) -> io::Result<Bulk> {
    let mut streams = Vec::with_capacity(tunnels);
    for _ in 0..tunnels {
        streams.push(
            tokio::time::timeout(Duration::from_secs(10), open(route, tls))
                .await
                .map_err(|_| io::Error::other("open timed out"))??,
        );
    }
    let start = Instant::now();
    let tasks: Vec<_> = streams
        .into_iter()
        .map(|s| tokio::spawn(transfer(s, dir, each, limit)))
        .collect();
    let mut bytes = 0;
    for t in tasks {
        bytes += t.await.map_err(io::Error::other)??;
    }
    Ok(Bulk {
        bytes,
        secs: start.elapsed().as_secs_f64(),
    })
}

pub struct Setup {
    /// Time to first byte of every completed tunnel, in µs.
    pub ttfb_us: Vec<f64>,
    pub failed: usize,
    pub secs: f64,
    pub first_error: Option<String>,
}

/// connect → [CONNECT] → TLS handshake → request → first byte → close, by `clients`
/// workers, until `count` are done or `limit` has passed.
pub async fn setup_round(
    route: &Route,
    tls: &TlsConnector,
    clients: usize,
    count: usize,
    limit: Duration,
) -> Setup {
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let deadline = start + limit;
    let workers: Vec<_> = (0..clients)
        .map(|_| {
            let next = next.clone();
            let route = route.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                let mut ttfb = Vec::new();
                let mut failed = 0;
                let mut first_error = None;
                while next.fetch_add(1, Ordering::Relaxed) < count && Instant::now() < deadline {
                    let t0 = Instant::now();
                    let one = async {
                        let mut s = open(&route, Some(&tls)).await?;
                        s.write_all(&header(b'T', 0, Duration::from_secs(5)))
                            .await?;
                        s.flush().await?;
                        let mut b = [0u8; 1];
                        s.read_exact(&mut b).await?;
                        Ok::<_, io::Error>(t0.elapsed())
                        // `s` is dropped here: the close.
                    };
                    match tokio::time::timeout(Duration::from_secs(5), one).await {
                        Ok(Ok(took)) => ttfb.push(took.as_secs_f64() * 1e6),
                        Ok(Err(e)) => {
                            failed += 1;
                            first_error.get_or_insert(e.to_string());
                        }
                        Err(_) => {
                            failed += 1;
                            first_error.get_or_insert("timed out".to_owned());
                        }
                    }
                }
                (ttfb, failed, first_error)
            })
        })
        .collect();
    let mut out = Setup {
        ttfb_us: Vec::new(),
        failed: 0,
        secs: 0.0,
        first_error: None,
    };
    for w in workers {
        if let Ok((ttfb, failed, err)) = w.await {
            out.ttfb_us.extend(ttfb);
            out.failed += failed;
            if out.first_error.is_none() {
                out.first_error = err;
            }
        }
    }
    out.secs = start.elapsed().as_secs_f64();
    out
}

/// Opens `n` tunnels over `route` (plain TCP to the echo origin), each after one byte each
/// way, `concurrency` at a time, within `limit`. Returns the open streams.
pub async fn open_idle(
    route: &Route,
    n: usize,
    concurrency: usize,
    limit: Duration,
) -> io::Result<Vec<TcpStream>> {
    let next = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + limit;
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let next = next.clone();
            let route = route.clone();
            tokio::spawn(async move {
                let mut open = Vec::new();
                while next.fetch_add(1, Ordering::Relaxed) < n {
                    if Instant::now() > deadline {
                        return Err(io::Error::other("opening idle tunnels took too long"));
                    }
                    let one = async {
                        let mut s = open_tcp(&route).await?;
                        let mut msg = header(b'E', 0, Duration::ZERO).to_vec();
                        msg.push(b'x');
                        s.write_all(&msg).await?;
                        let mut b = [0u8; 1];
                        s.read_exact(&mut b).await?;
                        Ok::<_, io::Error>(s)
                    };
                    let s = tokio::time::timeout(Duration::from_secs(10), one)
                        .await
                        .map_err(|_| io::Error::other("idle tunnel open timed out"))??;
                    open.push(s);
                }
                Ok(open)
            })
        })
        .collect();
    let mut all = Vec::with_capacity(n);
    for w in workers {
        all.extend(w.await.map_err(io::Error::other)??);
    }
    Ok(all)
}
