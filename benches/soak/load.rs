//! The requests the soak makes. Every request is one client connection from its own loopback
//! source address (127.1.0.1 upwards, never reused), so the `client` field of its decision
//! line names it without doubt. Each kind knows the reason(s) its decision line must carry;
//! an allowed one must also get exactly one close line.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::origins::Ports;

const KIB: u32 = 1024;
const MIB: u32 = 1024 * 1024;
/// No request may take longer than this (then its client gives up and closes).
pub const REQUEST_CAP: Duration = Duration::from_secs(30);
const FIRST_TAG: u32 = 0x7f01_0001; // 127.1.0.1

pub fn is_tag(ip: Ipv4Addr) -> bool {
    u32::from(ip) >= FIRST_TAG && ip.octets()[0] == 127
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    // allowed
    Bulk,
    Short,
    SniTunnel,
    Forward,
    TransparentHttp,
    UploadLimit,
    // denials of every reason
    NoRule,
    Port,
    Client,
    SniMismatch,
    NoSniConnect,
    NoSniTransparent,
    NoSniForward,
    DeniedIp,
    DeniedImds,
    DeniedLiteral,
    DnsInvalid,
    Unreachable,
    ConnectTimeout,
    Auth,
    // upstream faults
    Reset,
    SilentTunnel,
    SilentForward,
    SlamTunnel,
    SlamForward,
    Toggle,
    // DNS faults (served by the harness's DNS server when the proxy takes resolver.nameservers)
    DnsOk,
    DnsServfail,
    DnsNx,
    DnsTimeout,
    DnsTrunc,
    DnsCut,
    DnsFlip,
    DnsForbid,
    DnsImds,
    DnsMixed,
    /// Without a DNS server of ours: a name no `resolver.hosts` entry has, left to the system
    /// resolver (which has no route in the private namespace).
    DnsSystem,
    // hostile input
    Garbage,
    GarbageTls,
    Slowloris,
    SlowlorisTls,
    Oversized,
    FragHelloTransparent,
    FragHelloConnect,
    TruncHello,
    LimitHeld,
    LimitRefused,
}

use Kind::*;

pub const MIX: &[Kind] = &[
    Bulk,
    Short,
    Short,
    Short,
    SniTunnel,
    SniTunnel,
    Forward,
    Forward,
    TransparentHttp,
    UploadLimit,
    NoRule,
    Port,
    Client,
    SniMismatch,
    NoSniConnect,
    NoSniTransparent,
    NoSniForward,
    DeniedIp,
    DeniedImds,
    DeniedLiteral,
    DnsInvalid,
    Unreachable,
    ConnectTimeout,
    Auth,
];
pub const FAULTS: &[Kind] = &[
    Reset,
    SilentTunnel,
    SilentForward,
    SlamTunnel,
    SlamForward,
    Toggle,
    Unreachable,
    ConnectTimeout,
];
pub const DNS_SERVED: &[Kind] = &[
    DnsOk,
    DnsServfail,
    DnsNx,
    DnsTimeout,
    DnsTrunc,
    DnsCut,
    DnsFlip,
    DnsForbid,
    DnsImds,
    DnsMixed,
];
pub const DNS_FALLBACK: &[Kind] = &[DnsInvalid, DnsSystem, DeniedIp, DeniedImds];
pub const HOSTILE: &[Kind] = &[
    Garbage,
    GarbageTls,
    Slowloris,
    SlowlorisTls,
    Oversized,
    FragHelloTransparent,
    FragHelloConnect,
    TruncHello,
];

/// The warm-up: every kind of every phase.
pub const WARM_SERVED: &[Kind] = &[
    Bulk,
    Short,
    SniTunnel,
    Forward,
    TransparentHttp,
    UploadLimit,
    NoRule,
    Port,
    Client,
    SniMismatch,
    NoSniConnect,
    NoSniTransparent,
    NoSniForward,
    DeniedIp,
    DeniedImds,
    DeniedLiteral,
    DnsInvalid,
    Unreachable,
    ConnectTimeout,
    Auth,
    Reset,
    SilentTunnel,
    SilentForward,
    SlamTunnel,
    SlamForward,
    Toggle,
    DnsOk,
    DnsServfail,
    DnsNx,
    DnsTimeout,
    DnsTrunc,
    DnsCut,
    DnsFlip,
    DnsForbid,
    DnsImds,
    DnsMixed,
    Garbage,
    GarbageTls,
    Slowloris,
    SlowlorisTls,
    Oversized,
    FragHelloTransparent,
    FragHelloConnect,
    TruncHello,
];
pub const WARM_FALLBACK: &[Kind] = &[
    Bulk,
    Short,
    SniTunnel,
    Forward,
    TransparentHttp,
    UploadLimit,
    NoRule,
    Port,
    Client,
    SniMismatch,
    NoSniConnect,
    NoSniTransparent,
    NoSniForward,
    DeniedIp,
    DeniedImds,
    DeniedLiteral,
    DnsInvalid,
    Unreachable,
    ConnectTimeout,
    Auth,
    Reset,
    SilentTunnel,
    SilentForward,
    SlamTunnel,
    SlamForward,
    Toggle,
    DnsSystem,
    Garbage,
    GarbageTls,
    Slowloris,
    SlowlorisTls,
    Oversized,
    FragHelloTransparent,
    FragHelloConnect,
    TruncHello,
];

impl Kind {
    /// Reasons its decision line may carry (`rule` means allowed).
    pub fn reasons(self) -> &'static [&'static str] {
        match self {
            Bulk | Short | SniTunnel | Forward | TransparentHttp | UploadLimit | Reset
            | SilentTunnel | SlamTunnel | DnsOk | DnsTrunc | DnsMixed | FragHelloTransparent
            | FragHelloConnect | LimitHeld => &["rule"],
            Toggle => &["rule", "upstream_unreachable"],
            DnsFlip => &["rule", "upstream_denied_ip"],
            NoRule => &["no_rule"],
            Port => &["port"],
            Client => &["client"],
            SniMismatch => &["sni_mismatch"],
            NoSniConnect | NoSniTransparent | NoSniForward | GarbageTls => &["no_sni"],
            DeniedIp | DeniedImds | DeniedLiteral | DnsForbid | DnsImds => &["upstream_denied_ip"],
            DnsInvalid | DnsServfail | DnsNx | DnsTimeout | DnsCut | DnsSystem => &["dns_failure"],
            Unreachable | SlamForward => &["upstream_unreachable"],
            ConnectTimeout | SilentForward | Slowloris | SlowlorisTls => &["timeout"],
            Auth => &["auth"],
            Garbage | Oversized | TruncHello => &["bad_request"],
            LimitRefused => &["limit"],
        }
    }

    /// Reasons its close line may carry, when allowed.
    pub fn close_reasons(self) -> &'static [&'static str] {
        match self {
            UploadLimit => &["upload_limit"],
            _ => &["rule"],
        }
    }
}

pub struct Addrs {
    pub explicit: SocketAddr,
    pub tls: SocketAddr,
    pub http: SocketAddr,
}

#[derive(Debug, Clone)]
pub struct Req {
    pub ip: Ipv4Addr,
    pub phase: usize,
    pub kind: Kind,
    /// Whether the proxy accepted the connection (else no line is owed).
    pub connected: bool,
    pub outcome: String,
}

pub struct Ctx {
    pub addrs: Addrs,
    pub ports: Ports,
    next: AtomicU32,
    pub reqs: Mutex<Vec<Req>>,
}

impl Ctx {
    pub fn new(addrs: Addrs, ports: Ports) -> Ctx {
        Ctx {
            addrs,
            ports,
            next: AtomicU32::new(FIRST_TAG),
            reqs: Mutex::new(Vec::new()),
        }
    }

    fn tag(&self) -> Ipv4Addr {
        loop {
            let n = self.next.fetch_add(1, Ordering::Relaxed);
            let last = n & 0xff;
            if last != 0 && last != 255 {
                return Ipv4Addr::from(n);
            }
        }
    }

    pub fn made(&self) -> u64 {
        (self.next.load(Ordering::Relaxed) - FIRST_TAG) as u64
    }
}

type Fail = (bool, String); // (connected, why)

async fn open(ip: Ipv4Addr, to: SocketAddr) -> Result<TcpStream, Fail> {
    let go = async {
        let sock = TcpSocket::new_v4()?;
        sock.bind(SocketAddr::new(IpAddr::V4(ip), 0))?;
        let s = sock.connect(to).await?;
        s.set_nodelay(true)?;
        Ok::<_, std::io::Error>(s)
    };
    go.await.map_err(|e| (false, format!("connect {to}: {e}")))
}

fn io(e: std::io::Error) -> Fail {
    (true, e.to_string())
}

async fn read_head(s: &mut TcpStream) -> Result<String, Fail> {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut b).await.map_err(io)? {
            0 => break,
            _ => head.push(b[0]),
        }
        if head.len() > 16 * 1024 {
            break;
        }
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

fn status(head: &str) -> u16 {
    head.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

async fn connect(
    ip: Ipv4Addr,
    proxy: SocketAddr,
    authority: &str,
    extra: &str,
) -> Result<(TcpStream, u16), Fail> {
    let mut s = open(ip, proxy).await?;
    let req = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n{extra}\r\n");
    s.write_all(req.as_bytes()).await.map_err(io)?;
    let head = read_head(&mut s).await?;
    Ok((s, status(&head)))
}

async fn drain(s: &mut TcpStream) -> u64 {
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0;
    while let Ok(n) = s.read(&mut buf).await {
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    total
}

async fn proto(s: &mut TcpStream, up: u32, down: u32) -> Result<u64, Fail> {
    let mut h = up.to_be_bytes().to_vec();
    h.extend_from_slice(&down.to_be_bytes());
    s.write_all(&h).await.map_err(io)?;
    let chunk = vec![0xa5u8; 64 * 1024];
    let mut left = up as usize;
    while left > 0 {
        let n = left.min(chunk.len());
        s.write_all(&chunk[..n]).await.map_err(io)?;
        left -= n;
    }
    Ok(drain(s).await)
}

/// A real rustls client's first flight: a ClientHello for `sni` (none for `None`).
pub fn hello(sni: Option<&str>) -> Vec<u8> {
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    let name = match sni {
        Some(sni) => rustls::pki_types::ServerName::try_from(sni.to_owned()).unwrap(),
        None => rustls::pki_types::ServerName::IpAddress(rustls::pki_types::IpAddr::from(
            std::net::Ipv4Addr::LOCALHOST,
        )),
    };
    let mut client = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut out = Vec::new();
    client.write_tls(&mut out).unwrap();
    out
}

async fn fragmented(s: &mut TcpStream, bytes: &[u8], seed: u32) -> Result<(), Fail> {
    let mut at = 0;
    let mut i = seed;
    while at < bytes.len() {
        i = i.wrapping_mul(1_103_515_245).wrapping_add(12345);
        let n = (1 + (i >> 16) as usize % 7).min(bytes.len() - at);
        s.write_all(&bytes[at..at + n]).await.map_err(io)?;
        at += n;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(())
}

fn need(status: u16, want: u16) -> Result<(), Fail> {
    if status == want {
        Ok(())
    } else {
        Err((true, format!("status {status}, wanted {want}")))
    }
}

const WRONG_CREDENTIALS: &str = "Proxy-Authorization: Basic c29hazp3cm9uZw==\r\n"; // soak:wrong

impl Ctx {
    /// Makes one request of `kind` from a fresh tag and records it.
    pub async fn run(self: &Arc<Self>, phase: usize, kind: Kind) {
        let ip = self.tag();
        let result = tokio::time::timeout(REQUEST_CAP, self.request(ip, kind)).await;
        let (connected, outcome) = match result {
            Ok(Ok(text)) => (true, text),
            Ok(Err((connected, why))) => (connected, why),
            Err(_) => (true, "client gave up after 30s".to_owned()),
        };
        self.reqs.lock().unwrap().push(Req {
            ip,
            phase,
            kind,
            connected,
            outcome,
        });
    }

    async fn request(&self, ip: Ipv4Addr, kind: Kind) -> Result<String, Fail> {
        let p = self.ports;
        let ex = self.addrs.explicit;
        let n = u32::from(ip) - FIRST_TAG;
        match kind {
            Bulk | Short | UploadLimit | Reset | Toggle | DnsOk | DnsTrunc | DnsMixed | DnsFlip => {
                let (authority, up, down) = match kind {
                    Bulk => (format!("ok.soak.test:{}", p.proto), MIB, MIB),
                    Short => (format!("ok.soak.test:{}", p.proto), 64, 64),
                    UploadLimit => (format!("cap.soak.test:{}", p.proto), MIB, 0),
                    Reset => (format!("fault.soak.test:{}", p.reset), 100, 256 * KIB),
                    Toggle => (format!("fault.soak.test:{}", p.toggle), 64, 64),
                    DnsOk => (format!("ok-{n}.dns.soak.test:{}", p.proto), 64, 64),
                    DnsTrunc => (format!("trunc-{n}.dns.soak.test:{}", p.proto), 64, 64),
                    DnsMixed => (format!("mixed-{n}.dns.soak.test:{}", p.proto), 64, 64),
                    _ => (format!("flip-{n}.dns.soak.test:{}", p.proto), 64, 64),
                };
                let (mut s, st) = connect(ip, ex, &authority, "").await?;
                if st != 200 {
                    return Ok(format!("status {st}"));
                }
                // An upload cut at the cap ends in a write error: expected.
                match proto(&mut s, up, down).await {
                    Ok(got) => Ok(format!("200 down={got}")),
                    Err((_, e)) => Ok(format!("200 then {e}")),
                }
            }
            SniTunnel | FragHelloTransparent | NoSniTransparent | TruncHello => {
                let mut s = open(ip, self.addrs.tls).await?;
                let bytes = hello(if kind == NoSniTransparent {
                    None
                } else {
                    Some("tls-ok.soak.test")
                });
                match kind {
                    FragHelloTransparent => fragmented(&mut s, &bytes, n).await?,
                    TruncHello => {
                        s.write_all(&bytes[..40]).await.map_err(io)?;
                        s.shutdown().await.map_err(io)?;
                    }
                    _ => s.write_all(&bytes).await.map_err(io)?,
                }
                Ok(format!("got {}", drain(&mut s).await))
            }
            FragHelloConnect | SniMismatch | NoSniConnect => {
                let (mut s, st) =
                    connect(ip, ex, &format!("tls-ok.soak.test:{}", p.hello), "").await?;
                need(st, 200)?;
                match kind {
                    FragHelloConnect => {
                        fragmented(&mut s, &hello(Some("tls-ok.soak.test")), n).await?
                    }
                    SniMismatch => s
                        .write_all(&hello(Some("other.soak.test")))
                        .await
                        .map_err(io)?,
                    _ => s.write_all(b"PLAIN TEXT, NOT TLS\r\n").await.map_err(io)?,
                }
                Ok(format!("200 got {}", drain(&mut s).await))
            }
            Forward | NoSniForward | SilentForward | SlamForward => {
                let authority = match kind {
                    Forward => format!("web.soak.test:{}", p.http),
                    NoSniForward => format!("tls-ok.soak.test:{}", p.hello),
                    SilentForward => format!("fault.soak.test:{}", p.silent),
                    _ => format!("fault.soak.test:{}", p.slam),
                };
                let mut s = open(ip, ex).await?;
                let req = format!(
                    "GET http://{authority}/soak HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
                );
                s.write_all(req.as_bytes()).await.map_err(io)?;
                let head = read_head(&mut s).await?;
                let body = drain(&mut s).await;
                Ok(format!("status {} body {body}", status(&head)))
            }
            TransparentHttp => {
                let mut s = open(ip, self.addrs.http).await?;
                s.write_all(
                    b"GET /soak HTTP/1.1\r\nHost: web.soak.test\r\nConnection: close\r\n\r\n",
                )
                .await
                .map_err(io)?;
                let head = read_head(&mut s).await?;
                let body = drain(&mut s).await;
                Ok(format!("status {} body {body}", status(&head)))
            }
            NoRule | Port | Client | DeniedIp | DeniedImds | DeniedLiteral | DnsInvalid
            | Unreachable | ConnectTimeout | Auth | DnsServfail | DnsNx | DnsTimeout | DnsCut
            | DnsForbid | DnsImds | DnsSystem | SilentTunnel | SlamTunnel => {
                let (authority, extra) = match kind {
                    NoRule => (format!("nope-{n}.soak.test:443"), ""),
                    Port => ("ok.soak.test:1".to_owned(), ""),
                    Client => (format!("client.soak.test:{}", p.proto), ""),
                    DeniedIp => ("forbidden.soak.test:443".to_owned(), ""),
                    DeniedImds => ("imds.soak.test:443".to_owned(), ""),
                    DeniedLiteral => (format!("{}:443", crate::netns::FORBIDDEN), ""),
                    DnsInvalid => (format!("x-{n}.soak.invalid:{}", p.proto), ""),
                    Unreachable => (format!("fault.soak.test:{}", p.closed), ""),
                    ConnectTimeout => (format!("fault.soak.test:{}", p.blackhole), ""),
                    Auth => (format!("ok.soak.test:{}", p.proto), WRONG_CREDENTIALS),
                    DnsServfail => (format!("servfail-{n}.dns.soak.test:{}", p.proto), ""),
                    DnsNx => (format!("nx-{n}.dns.soak.test:{}", p.proto), ""),
                    DnsTimeout => (format!("timeout-{n}.dns.soak.test:{}", p.proto), ""),
                    DnsCut => (format!("cut-{n}.dns.soak.test:{}", p.proto), ""),
                    DnsForbid => (format!("forbid-{n}.dns.soak.test:{}", p.proto), ""),
                    DnsImds => (format!("imds-{n}.dns.soak.test:{}", p.proto), ""),
                    DnsSystem => (format!("sys-{n}.dns.soak.test:{}", p.proto), ""),
                    SilentTunnel => (format!("fault.soak.test:{}", p.silent), ""),
                    _ => (format!("fault.soak.test:{}", p.slam), ""),
                };
                let (mut s, st) = connect(ip, ex, &authority, extra).await?;
                if st == 200 {
                    // Tunnels to faulty origins: say something, wait a little, go.
                    let _ = s.write_all(b"hello?").await;
                    let got = tokio::time::timeout(Duration::from_secs(1), drain(&mut s))
                        .await
                        .ok();
                    return Ok(format!("200 got {got:?}"));
                }
                Ok(format!("status {st}"))
            }
            Garbage => {
                let mut s = open(ip, ex).await?;
                s.write_all(b"\x16\x03\x01 garbage \xff\xfe\x00 HTTP/9\r\n\r\n")
                    .await
                    .map_err(io)?;
                let head = read_head(&mut s).await?;
                Ok(format!("status {}", status(&head)))
            }
            GarbageTls => {
                let mut s = open(ip, self.addrs.tls).await?;
                s.write_all(b"GET / HTTP/1.1\r\nHost: tls-ok.soak.test\r\n\r\n")
                    .await
                    .map_err(io)?;
                Ok(format!("got {}", drain(&mut s).await))
            }
            Slowloris => {
                let mut s = open(ip, ex).await?;
                s.write_all(format!("CONNECT ok.soak.test:{} HTTP/1.1\r\n", p.proto).as_bytes())
                    .await
                    .map_err(io)?;
                for i in 0..40 {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    if s.write_all(&[b'X' + (i % 2) as u8]).await.is_err() {
                        break;
                    }
                }
                Ok(format!("got {}", drain(&mut s).await))
            }
            SlowlorisTls => {
                let mut s = open(ip, self.addrs.tls).await?;
                let bytes = hello(Some("tls-ok.soak.test"));
                for b in bytes.iter().take(40) {
                    if s.write_all(&[*b]).await.is_err() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Ok(format!("got {}", drain(&mut s).await))
            }
            Oversized => {
                let mut s = open(ip, ex).await?;
                let authority = format!("web.soak.test:{}", p.http);
                let req = format!(
                    "GET http://{authority}/ HTTP/1.1\r\nHost: {authority}\r\nX-Big: {}\r\n\r\n",
                    "a".repeat(40_000)
                );
                let _ = s.write_all(req.as_bytes()).await;
                let head = read_head(&mut s).await.unwrap_or_default();
                Ok(format!("status {}", status(&head)))
            }
            LimitHeld | LimitRefused => unreachable!("see limit_burst"),
        }
    }

    /// Fills `limits.max_connections` with held tunnels, then makes `extra` more requests,
    /// which must be refused with `limit`; then lets the held tunnels finish.
    pub async fn limit_burst(self: &Arc<Self>, phase: usize, max: usize, extra: usize) {
        let mut held = Vec::new();
        let authority = format!("ok.soak.test:{}", self.ports.proto);
        for _ in 0..max {
            let ip = self.tag();
            match connect(ip, self.addrs.explicit, &authority, "").await {
                Ok((mut s, 200)) => {
                    // Tell the origin one byte is coming; it waits for it.
                    let mut h = 1u32.to_be_bytes().to_vec();
                    h.extend_from_slice(&16u32.to_be_bytes());
                    let ok = s.write_all(&h).await.is_ok();
                    held.push((ip, Some(s), format!("held, header sent {ok}")));
                }
                Ok((_, st)) => held.push((ip, None, format!("status {st}"))),
                Err((connected, e)) => {
                    self.reqs.lock().unwrap().push(Req {
                        ip,
                        phase,
                        kind: LimitHeld,
                        connected,
                        outcome: e,
                    });
                }
            }
        }
        for _ in 0..extra {
            let ip = self.tag();
            let result = tokio::time::timeout(
                Duration::from_secs(5),
                connect(ip, self.addrs.explicit, &authority, ""),
            )
            .await;
            let (connected, outcome) = match result {
                Ok(Ok((_, st))) => (true, format!("status {st}")),
                Ok(Err((c, e))) => (c, e),
                Err(_) => (true, "no answer in 5s".to_owned()),
            };
            self.reqs.lock().unwrap().push(Req {
                ip,
                phase,
                kind: LimitRefused,
                connected,
                outcome,
            });
        }
        for (ip, s, mut outcome) in held {
            if let Some(mut s) = s {
                let _ = s.write_all(b"!").await;
                let got = tokio::time::timeout(Duration::from_secs(5), drain(&mut s)).await;
                outcome = format!("{outcome}, got {got:?}");
            }
            self.reqs.lock().unwrap().push(Req {
                ip,
                phase,
                kind: LimitHeld,
                connected: true,
                outcome,
            });
        }
    }
}
