//! Loopback origins, each on its own kernel-chosen port, with the upstream faults the soak
//! needs. All run on the harness's tokio runtime and end with it.
//!
//! - `proto`: reads an 8-byte header (u32 up, u32 down, big-endian), reads `up` bytes, writes
//!   `down` bytes, closes.
//! - `reset`: like `proto`, but after half the download it resets the connection (SO_LINGER 0).
//! - `silent`: accepts, reads and discards, never answers.
//! - `slam`: accepts and closes at once, before any byte.
//! - `toggle`: a `proto` origin whose listener vanishes and comes back every 700 ms.
//! - `hello`: reads the first bytes (a ClientHello), answers 64 bytes, closes.
//! - `http`: reads a request head, answers `200` with a 5-byte body, `Connection: close`.
//! - `blackhole`: a listener whose backlog is full (a connect hangs until the dialler's timeout).
//! - `closed`: a port where nothing listens (the origin that vanished).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Clone, Copy, Debug)]
pub struct Ports {
    pub proto: u16,
    pub reset: u16,
    pub silent: u16,
    pub slam: u16,
    pub toggle: u16,
    pub hello: u16,
    pub http: u16,
    pub blackhole: u16,
    pub closed: u16,
}

pub struct Origins {
    pub ports: Ports,
    pub accepted: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    _blackhole: (socket2::Socket, std::net::TcpStream),
}

const LOCAL: &str = "127.0.0.1:0";
/// How long any origin connection may live.
const CONN_CAP: Duration = Duration::from_secs(60);

#[derive(Clone, Copy)]
enum Mode {
    Proto,
    Reset,
    Silent,
    Slam,
    Hello,
    Http,
}

async fn serve(mut s: TcpStream, mode: Mode) {
    let _ = s.set_nodelay(true);
    let work = async {
        match mode {
            Mode::Proto | Mode::Reset => {
                let mut h = [0u8; 8];
                s.read_exact(&mut h).await?;
                let up = u32::from_be_bytes(h[..4].try_into().unwrap()) as u64;
                let down = u32::from_be_bytes(h[4..].try_into().unwrap()) as usize;
                let mut left = up;
                let mut buf = vec![0u8; 64 * 1024];
                while left > 0 {
                    let n = s.read(&mut buf).await?;
                    if n == 0 {
                        return Ok(());
                    }
                    left = left.saturating_sub(n as u64);
                }
                let chunk = vec![0x5au8; 64 * 1024];
                let total = if matches!(mode, Mode::Reset) {
                    down / 2
                } else {
                    down
                };
                let mut sent = 0;
                while sent < total {
                    let n = (total - sent).min(chunk.len());
                    s.write_all(&chunk[..n]).await?;
                    sent += n;
                }
                if matches!(mode, Mode::Reset) {
                    let std = s.into_std()?;
                    let sock = socket2::Socket::from(std);
                    sock.set_linger(Some(Duration::ZERO))?;
                    drop(sock); // RST
                    return Ok(());
                }
                s.shutdown().await?;
                // Wait for the client's close.
                let _ = s.read(&mut buf).await;
            }
            Mode::Silent => {
                let mut buf = vec![0u8; 16 * 1024];
                while s.read(&mut buf).await? > 0 {}
            }
            Mode::Slam => {}
            Mode::Hello => {
                let mut buf = vec![0u8; 16 * 1024];
                if s.read(&mut buf).await? > 0 {
                    s.write_all(&[0x17u8; 64]).await?;
                    s.shutdown().await?;
                    while s.read(&mut buf).await? > 0 {}
                }
            }
            Mode::Http => {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 64 * 1024 {
                    let n = s.read(&mut buf).await?;
                    if n == 0 {
                        return Ok(());
                    }
                    head.extend_from_slice(&buf[..n]);
                }
                s.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
                )
                .await?;
                s.shutdown().await?;
                let _ = s.read(&mut buf).await;
            }
        }
        Ok::<(), std::io::Error>(())
    };
    let _ = tokio::time::timeout(CONN_CAP, work).await;
}

async fn listen(mode: Mode, accepted: Arc<AtomicU64>, stop: Arc<AtomicBool>) -> u16 {
    let l = TcpListener::bind(LOCAL).await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while !stop.load(Ordering::Relaxed) {
            let Ok(Ok((s, _))) = tokio::time::timeout(Duration::from_millis(500), l.accept()).await
            else {
                continue;
            };
            accepted.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(serve(s, mode));
        }
    });
    port
}

/// A `proto` origin that is there for 700 ms, gone for 700 ms, and so on.
async fn toggle(accepted: Arc<AtomicU64>, stop: Arc<AtomicBool>) -> u16 {
    let port = TcpListener::bind(LOCAL)
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    tokio::spawn(async move {
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        while !stop.load(Ordering::Relaxed) {
            let sock = tokio::net::TcpSocket::new_v4().unwrap();
            let _ = sock.set_reuseaddr(true);
            if sock.bind(addr).is_err() {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            let Ok(l) = sock.listen(128) else { continue };
            let until = tokio::time::Instant::now() + Duration::from_millis(700);
            while let Ok(Ok((s, _))) = tokio::time::timeout_at(until, l.accept()).await {
                accepted.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(serve(s, Mode::Proto));
            }
            drop(l);
            tokio::time::sleep(Duration::from_millis(700)).await;
        }
    });
    port
}

impl Origins {
    pub async fn start() -> Origins {
        let accepted = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let a = || accepted.clone();
        let s = || stop.clone();
        // Black hole: backlog 0 already taken by one connection nobody accepts.
        let bh = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        let any: SocketAddr = LOCAL.parse().unwrap();
        bh.bind(&any.into()).unwrap();
        bh.listen(0).unwrap();
        let bh_addr = bh.local_addr().unwrap().as_socket().unwrap();
        let filler = std::net::TcpStream::connect(bh_addr).unwrap();
        let closed = {
            let l = std::net::TcpListener::bind(LOCAL).unwrap();
            l.local_addr().unwrap().port()
        };
        let ports = Ports {
            proto: listen(Mode::Proto, a(), s()).await,
            reset: listen(Mode::Reset, a(), s()).await,
            silent: listen(Mode::Silent, a(), s()).await,
            slam: listen(Mode::Slam, a(), s()).await,
            toggle: toggle(a(), s()).await,
            hello: listen(Mode::Hello, a(), s()).await,
            http: listen(Mode::Http, a(), s()).await,
            blackhole: bh_addr.port(),
            closed,
        };
        Origins {
            ports,
            accepted,
            stop,
            _blackhole: (bh, filler),
        }
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
