//! A DNS server on loopback (UDP and TCP on the same port) with a fault per name: the first
//! label's prefix picks it (`servfail-17.dns.soak.test`). Hand-rolled wire format: one
//! question in, a header, the question and A records out, TTL 0 so nothing is cached.
//!
//! | prefix   | A answer                                                          |
//! |----------|-------------------------------------------------------------------|
//! | ok       | 127.0.0.1                                                         |
//! | servfail | rcode SERVFAIL                                                    |
//! | nx       | rcode NXDOMAIN                                                    |
//! | timeout  | no answer at all (UDP dropped; on TCP that query is skipped)      |
//! | trunc    | UDP: TC bit, no records; TCP: 127.0.0.1                           |
//! | cut      | the answer cut short in the middle of its record (UDP and TCP)    |
//! | flip     | 127.0.0.1 and 10.231.9.9 in turn, per name and query              |
//! | forbid   | 10.231.9.9                                                        |
//! | imds     | 169.254.169.254                                                   |
//! | mixed    | 10.231.9.9 and 127.0.0.1                                          |
//!
//! AAAA questions get NOERROR with no records (the same rcode for servfail/nx, the same
//! silence for timeout).

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};

const FORBIDDEN: Ipv4Addr = Ipv4Addr::new(10, 231, 9, 9);
const IMDS: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);
const LOOP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);

#[derive(Default)]
pub struct Stats {
    /// queries by "proto prefix qtype"
    pub queries: BTreeMap<String, u64>,
    flips: HashMap<String, u64>,
}

pub struct Dns {
    pub addr: SocketAddr,
    pub stats: Arc<Mutex<Stats>>,
}

struct Question {
    end: usize,
    name: String,
    qtype: u16,
}

fn question(q: &[u8]) -> Option<Question> {
    if q.len() < 12 {
        return None;
    }
    let mut at = 12;
    let mut labels = Vec::new();
    loop {
        let len = *q.get(at)? as usize;
        at += 1;
        if len == 0 {
            break;
        }
        if len > 63 {
            return None;
        }
        labels.push(String::from_utf8_lossy(q.get(at..at + len)?).to_ascii_lowercase());
        at += len;
    }
    let qtype = u16::from_be_bytes([*q.get(at)?, *q.get(at + 1)?]);
    Some(Question {
        end: at + 4,
        name: labels.join("."),
        qtype,
    })
}

enum Reply {
    Silent,
    Bytes(Vec<u8>),
}

fn build(q: &[u8], qn: &Question, rcode: u8, ips: &[Ipv4Addr], tc: bool) -> Vec<u8> {
    let ips: &[Ipv4Addr] = if qn.qtype == 1 { ips } else { &[] };
    let mut r = Vec::with_capacity(qn.end + 16 * ips.len());
    r.extend_from_slice(&q[..2]);
    r.push(0x80 | (q[2] & 0x01) | if tc { 0x02 } else { 0 });
    r.push(0x80 | rcode);
    r.extend_from_slice(&[0, 1]);
    r.extend_from_slice(&(ips.len() as u16).to_be_bytes());
    r.extend_from_slice(&[0, 0, 0, 0]);
    r.extend_from_slice(&q[12..qn.end]);
    for ip in ips {
        r.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4]);
        r.extend_from_slice(&ip.octets());
    }
    r
}

fn answer(stats: &Mutex<Stats>, q: &[u8], tcp: bool) -> Reply {
    let Some(qn) = question(q) else {
        return Reply::Silent;
    };
    let first = qn.name.split('.').next().unwrap_or("");
    let prefix = first.split('-').next().unwrap_or("").to_owned();
    let mut st = stats.lock().unwrap();
    let key = format!(
        "{} {prefix} {}",
        if tcp { "tcp" } else { "udp" },
        match qn.qtype {
            1 => "A",
            28 => "AAAA",
            _ => "other",
        }
    );
    *st.queries.entry(key).or_default() += 1;
    let ok = |ips: &[Ipv4Addr]| Reply::Bytes(build(q, &qn, 0, ips, false));
    match prefix.as_str() {
        "servfail" => Reply::Bytes(build(q, &qn, 2, &[], false)),
        "nx" => Reply::Bytes(build(q, &qn, 3, &[], false)),
        "timeout" => Reply::Silent,
        "trunc" if !tcp => Reply::Bytes(build(q, &qn, 0, &[], true)),
        "trunc" => ok(&[LOOP]),
        "cut" => {
            let mut r = build(q, &qn, 0, &[LOOP], false);
            if qn.qtype == 1 {
                r.truncate(r.len() - 7);
            }
            Reply::Bytes(r)
        }
        "flip" => {
            if qn.qtype != 1 {
                return ok(&[]);
            }
            let n = st.flips.entry(qn.name.clone()).or_default();
            *n += 1;
            ok(&[if *n % 2 == 1 { LOOP } else { FORBIDDEN }])
        }
        "forbid" => ok(&[FORBIDDEN]),
        "imds" => ok(&[IMDS]),
        "mixed" => ok(&[FORBIDDEN, LOOP]),
        _ => ok(&[LOOP]),
    }
}

impl Dns {
    pub async fn start() -> Dns {
        // UDP and TCP on the same port.
        let (udp, tcp) = loop {
            let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let port = udp.local_addr().unwrap().port();
            if let Ok(tcp) = TcpListener::bind(("127.0.0.1", port)).await {
                break (udp, tcp);
            }
        };
        let addr = udp.local_addr().unwrap();
        let stats = Arc::new(Mutex::new(Stats::default()));
        let st = stats.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, from)) = udp.recv_from(&mut buf).await else {
                    continue;
                };
                if let Reply::Bytes(r) = answer(&st, &buf[..n], false) {
                    let _ = udp.send_to(&r, from).await;
                }
            }
        });
        let st = stats.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = tcp.accept().await else {
                    continue;
                };
                let st = st.clone();
                tokio::spawn(async move {
                    let work = async {
                        loop {
                            let mut len = [0u8; 2];
                            s.read_exact(&mut len).await?;
                            let mut q = vec![0u8; u16::from_be_bytes(len) as usize];
                            s.read_exact(&mut q).await?;
                            match answer(&st, &q, true) {
                                Reply::Bytes(r) => {
                                    s.write_all(&(r.len() as u16).to_be_bytes()).await?;
                                    s.write_all(&r).await?;
                                }
                                // No answer to this query; a client may pipeline
                                // others on the same connection, which still get theirs.
                                Reply::Silent => {}
                            }
                        }
                        #[allow(unreachable_code)]
                        Ok::<(), std::io::Error>(())
                    };
                    let _ = tokio::time::timeout(Duration::from_secs(20), work).await;
                });
            }
        });
        Dns { addr, stats }
    }
}
