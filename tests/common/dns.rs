//! A tiny authoritative DNS server on loopback for resolver tests: UDP and TCP on the same
//! `127.0.0.1` port (the kernel picks it), one canned behaviour per name, and a log of every
//! query it saw. It never forwards anything anywhere.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_resolver::proto::op::{Message, ResponseCode};
use hickory_resolver::proto::rr::rdata::{A, AAAA, SOA};
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};

/// What the server does with queries for one name.
#[derive(Debug, Clone)]
pub enum Answer {
    /// These addresses (A for IPv4, AAAA for IPv6), with this TTL; the other type is NOERROR
    /// with no records (and an SOA whose minimum is the same TTL).
    Addresses(Vec<IpAddr>, u32),
    /// NXDOMAIN, with an SOA whose minimum (the negative TTL) is this.
    NxDomain(u32),
    /// NOERROR and no records, with an SOA whose minimum is this.
    NoData(u32),
    ServFail,
    Refused,
    /// No reply at all.
    Silent,
    /// Over UDP: an empty reply with the TC bit. Over TCP: this address, TTL 0.
    TruncatedOverUdp(IpAddr),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub name: String,
    pub record_type: RecordType,
    pub tcp: bool,
}

pub struct DnsServer {
    pub addr: SocketAddr,
    zone: Zone,
    seen: Arc<Mutex<Vec<Seen>>>,
}

type Zone = Arc<Mutex<HashMap<String, Answer>>>;

impl DnsServer {
    /// Starts serving `zone` (names without the trailing dot, lower case). Names not in the
    /// zone get NXDOMAIN without an SOA.
    pub fn start(zone: &[(&str, Answer)]) -> DnsServer {
        let zone: Zone = Arc::new(Mutex::new(
            zone.iter()
                .map(|(name, answer)| (name.to_ascii_lowercase(), answer.clone()))
                .collect(),
        ));
        let seen = Arc::new(Mutex::new(Vec::new()));
        // UDP and TCP must share the port number: the resolver asks one IP:PORT over both.
        let (udp, tcp) = (0..50)
            .find_map(|_| {
                let udp = UdpSocket::bind("127.0.0.1:0").ok()?;
                let tcp = TcpListener::bind(udp.local_addr().ok()?).ok()?;
                Some((udp, tcp))
            })
            .expect("a loopback port free for both UDP and TCP");
        let addr = udp.local_addr().unwrap();
        {
            let (zone, seen) = (zone.clone(), seen.clone());
            std::thread::spawn(move || serve_udp(udp, zone, seen));
        }
        {
            let (zone, seen) = (zone.clone(), seen.clone());
            std::thread::spawn(move || {
                for stream in tcp.incoming().flatten() {
                    let (zone, seen) = (zone.clone(), seen.clone());
                    std::thread::spawn(move || serve_tcp(stream, zone, seen));
                }
            });
        }
        DnsServer { addr, zone, seen }
    }

    /// From now on, answers `name` with `answer`: how a test tells a cached answer (the old
    /// one) from a fresh one without timing anything.
    pub fn set(&self, name: &str, answer: Answer) {
        self.zone
            .lock()
            .unwrap()
            .insert(name.to_ascii_lowercase(), answer);
    }

    /// Every query seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// How many queries for `name` of `record_type` arrived (over either transport).
    pub fn queries(&self, name: &str, record_type: RecordType) -> usize {
        self.seen()
            .iter()
            .filter(|s| s.name == name && s.record_type == record_type)
            .count()
    }

    pub fn tcp_queries(&self, name: &str) -> usize {
        self.seen()
            .iter()
            .filter(|s| s.name == name && s.tcp)
            .count()
    }

    /// Waits (up to 10 s) until at least `n` queries for `name` of `record_type` arrived.
    pub fn wait_for(&self, name: &str, record_type: RecordType, n: usize) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.queries(name, record_type) >= n {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }
}

fn serve_udp(socket: UdpSocket, zone: Zone, seen: Arc<Mutex<Vec<Seen>>>) {
    let mut buf = [0u8; 4096];
    loop {
        let Ok((n, peer)) = socket.recv_from(&mut buf) else {
            continue;
        };
        if let Some(reply) = reply(&buf[..n], false, &zone, &seen) {
            let _ = socket.send_to(&reply, peer);
        }
    }
}

fn serve_tcp(mut stream: TcpStream, zone: Zone, seen: Arc<Mutex<Vec<Seen>>>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    loop {
        let mut len = [0u8; 2];
        if stream.read_exact(&mut len).is_err() {
            return;
        }
        let mut query = vec![0u8; usize::from(u16::from_be_bytes(len))];
        if stream.read_exact(&mut query).is_err() {
            return;
        }
        if let Some(reply) = reply(&query, true, &zone, &seen) {
            let mut framed = (reply.len() as u16).to_be_bytes().to_vec();
            framed.extend_from_slice(&reply);
            if stream.write_all(&framed).is_err() {
                return;
            }
        }
    }
}

/// The reply to one query, or `None` to stay silent.
fn reply(query: &[u8], tcp: bool, zone: &Zone, seen: &Mutex<Vec<Seen>>) -> Option<Vec<u8>> {
    let request = Message::from_vec(query).ok()?;
    let question = request.queries.first()?.clone();
    let name = question.name().to_ascii().to_ascii_lowercase();
    let name = name.trim_end_matches('.').to_owned();
    let record_type = question.query_type();
    seen.lock().unwrap().push(Seen {
        name: name.clone(),
        record_type,
        tcp,
    });
    let answer = zone.lock().unwrap().get(&name).cloned();
    let mut response = Message::response(request.metadata.id, request.metadata.op_code);
    response.metadata.authoritative = true;
    response.metadata.recursion_desired = request.metadata.recursion_desired;
    response.metadata.recursion_available = true;
    response.queries = request.queries.clone();
    let owner = question.name().clone();
    let soa = |minimum: u32| {
        let zone = Name::from_ascii("test.").unwrap();
        let soa = SOA::new(
            Name::from_ascii("ns.test.").unwrap(),
            Name::from_ascii("hostmaster.test.").unwrap(),
            1,
            3600,
            600,
            86400,
            minimum,
        );
        Record::from_rdata(zone, minimum, RData::SOA(soa))
    };
    let address = |ip: IpAddr, ttl: u32| match ip {
        IpAddr::V4(v4) => Record::from_rdata(owner.clone(), ttl, RData::A(A(v4))),
        IpAddr::V6(v6) => Record::from_rdata(owner.clone(), ttl, RData::AAAA(AAAA(v6))),
    };
    let wanted = |ip: &IpAddr| match record_type {
        RecordType::A => ip.is_ipv4(),
        RecordType::AAAA => ip.is_ipv6(),
        _ => false,
    };
    match &answer {
        None => response.metadata.response_code = ResponseCode::NXDomain,
        Some(Answer::Addresses(addrs, ttl)) => {
            let matching: Vec<Record> = addrs
                .iter()
                .filter(|ip| wanted(ip))
                .map(|ip| address(*ip, *ttl))
                .collect();
            if matching.is_empty() {
                response.authorities.push(soa(*ttl));
            }
            response.answers = matching;
        }
        Some(Answer::NxDomain(ttl)) => {
            response.metadata.response_code = ResponseCode::NXDomain;
            response.authorities.push(soa(*ttl));
        }
        Some(Answer::NoData(ttl)) => response.authorities.push(soa(*ttl)),
        Some(Answer::ServFail) => response.metadata.response_code = ResponseCode::ServFail,
        Some(Answer::Refused) => response.metadata.response_code = ResponseCode::Refused,
        Some(Answer::Silent) => return None,
        Some(Answer::TruncatedOverUdp(ip)) => {
            if !tcp {
                response.metadata.truncation = true;
            } else if wanted(ip) {
                response.answers.push(address(*ip, 0));
            } else {
                response.authorities.push(soa(0));
            }
        }
    }
    response.to_vec().ok()
}
