#![allow(clippy::indexing_slicing)]

use super::*;

#[test]
fn next_record_end_points_past_the_first_incomplete_record() {
    assert_eq!(next_record_end(&[]), 5);
    assert_eq!(next_record_end(&[0x16, 3, 1]), 5);
    assert_eq!(next_record_end(&[0x16, 3, 1, 0, 10]), 15);
    let mut two = vec![0x16, 3, 1, 0, 2, 1, 2, 0x16, 3, 1, 0, 4];
    assert_eq!(next_record_end(&two), 16);
    two.extend_from_slice(&[9, 9, 9, 9]);
    assert_eq!(next_record_end(&two), 21, "both complete: the next header");
}
use rustls::pki_types::ServerName;
use std::sync::Arc;

use HelloError::{Malformed, MultipleServerNames, NotTls, TooLarge, UnsupportedVersion};

type Res = Result<HelloOutcome, HelloError>;
const INCOMPLETE: Res = Ok(HelloOutcome::Incomplete);
type Exts = Vec<(u16, Vec<u8>)>;

/// A real ClientHello (one record) from rustls.
fn rustls_hello(name: ServerName<'static>, enable_sni: bool) -> Vec<u8> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    cfg.enable_sni = enable_sni;
    let mut conn = rustls::ClientConnection::new(Arc::new(cfg), name).unwrap();
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).unwrap();
    }
    out
}

fn real() -> Vec<u8> {
    rustls_hello(ServerName::try_from("example.com").unwrap(), true)
}

/// The handshake message of `real()`.
fn real_hs() -> Vec<u8> {
    let r = real();
    assert_eq!(r.len(), 5 + be(&r[3..5]));
    r[5..].to_vec()
}

fn v16(b: &[u8]) -> Vec<u8> {
    [&(b.len() as u16).to_be_bytes()[..], b].concat()
}

/// Set the 24-bit handshake length to match the message.
fn fix_len(hs: &mut [u8]) {
    let n = hs.len() - 4;
    hs[1..4].copy_from_slice(&[(n >> 16) as u8, (n >> 8) as u8, n as u8]);
}

/// Wrap a handshake payload into records of the given sizes (the last takes the rest).
fn wrap(hs: &[u8], sizes: &[usize]) -> Vec<u8> {
    let (mut out, mut rest, mut i) = (Vec::new(), hs, 0);
    while !rest.is_empty() {
        let n = sizes.get(i).map_or(rest.len(), |&n| n.min(rest.len()));
        let (chunk, tail) = rest.split_at(n);
        out.extend([&[0x16, 3, 1][..], &v16(chunk)].concat());
        (rest, i) = (tail, i + 1);
    }
    out
}

/// Split a handshake message into (fixed fields, extensions).
fn split(hs: &[u8]) -> (Vec<u8>, Exts) {
    let mut p = 4 + 2 + 32;
    p += 1 + be(&hs[p..p + 1]);
    p += 2 + be(&hs[p..p + 2]);
    p += 1 + be(&hs[p..p + 1]);
    let (fixed, mut e) = (hs[4..p].to_vec(), &hs[p + 2..]);
    let mut exts = Vec::new();
    while !e.is_empty() {
        let len = be(&e[2..4]);
        exts.push((be(&e[..2]) as u16, e[4..4 + len].to_vec()));
        e = &e[4 + len..];
    }
    (fixed, exts)
}

/// `real_hs()` with its extensions edited and every length fixed.
fn edit(f: impl FnOnce(&mut Exts)) -> Vec<u8> {
    let (fixed, mut exts) = split(&real_hs());
    f(&mut exts);
    let e: Vec<u8> = exts
        .iter()
        .flat_map(|(t, b)| [&t.to_be_bytes()[..], &v16(b)].concat())
        .collect();
    [&[1, 0][..], &v16(&[&fixed[..], &v16(&e)].concat())].concat()
}

/// One-record hello whose server_name extension holds `names`.
fn with_names(names: &[(u8, &[u8])]) -> Vec<u8> {
    let list: Vec<u8> = names
        .iter()
        .flat_map(|(t, n)| [&[*t][..], &v16(n)].concat())
        .collect();
    let hs = edit(|e| e.iter_mut().find(|x| x.0 == 0).unwrap().1 = v16(&list));
    wrap(&hs, &[])
}

fn parse(b: &[u8]) -> Res {
    parse_client_hello(b)
}

fn info(sni: Option<&str>, has_ech: bool, consumed: usize) -> Res {
    let sni = sni.map(str::to_owned);
    Ok(HelloOutcome::Hello(ClientHelloInfo {
        sni,
        has_ech,
        consumed,
    }))
}

fn malformed(r: Res) -> bool {
    matches!(r, Err(Malformed(_)))
}

fn plain(b: &[u8]) -> Res {
    info(Some("example.com"), false, b.len())
}

/// The fuzz target's invariant: prefixes are Incomplete until the final answer appears, then
/// stay it; a hello's answer appears exactly at `consumed`.
fn check_prefixes(b: &[u8]) -> Res {
    let full = parse(b);
    let mut settled = false;
    for n in 0..b.len() {
        match parse(&b[..n]) {
            INCOMPLETE => assert!(!settled, "Incomplete after answer at {n}"),
            r => (assert_eq!(r, full, "prefix {n}"), settled = true).1,
        }
    }
    if let Ok(HelloOutcome::Hello(i)) = &full {
        assert!(i.consumed <= b.len());
        assert_eq!(parse(&b[..i.consumed]), full);
        assert_eq!(parse(&b[..i.consumed - 1]), INCOMPLETE);
    }
    full
}

#[test]
fn real_hello_one_buffer() {
    let b = real();
    assert_eq!(parse(&b), plain(&b));
}

#[test]
fn byte_at_a_time() {
    let b = real();
    for n in 0..b.len() {
        assert_eq!(parse(&b[..n]), INCOMPLETE, "prefix {n}");
    }
    assert_eq!(check_prefixes(&b), plain(&b));
}

#[test]
fn split_across_records() {
    let hs = real_hs();
    let last = [hs.len() - 1];
    for sizes in [&[2][..], &[100], &last, &[1, 3, 7, 50, 9], &[1; 400]] {
        let b = wrap(&hs, sizes);
        assert!(b.len() > hs.len() + 5);
        assert_eq!(check_prefixes(&b), plain(&b));
    }
}

#[test]
fn trailing_bytes_do_not_change_consumed() {
    for mut b in [real(), wrap(&real_hs(), &[40])] {
        let want = plain(&b);
        b.extend_from_slice(&[0x17, 3, 3, 0, 2, 0xde, 0xad, 0x16, 0xff]);
        assert_eq!(check_prefixes(&b), want);
    }
}

#[test]
fn no_sni() {
    let ip = ServerName::IpAddress(std::net::IpAddr::from([192, 0, 2, 1]).into());
    let off = rustls_hello(ServerName::try_from("a.test").unwrap(), false);
    for b in [rustls_hello(ip, true), off] {
        assert_eq!(parse(&b), info(None, false, b.len()));
    }
}

#[test]
fn server_name_list_rules() {
    let two = with_names(&[(0, b"a.test"), (0, b"b.test")]);
    assert_eq!(check_prefixes(&two), Err(MultipleServerNames));
    let b = with_names(&[(7, b"xx"), (0, b"a.test")]);
    assert_eq!(parse(&b), info(Some("a.test"), false, b.len()));
    let b = with_names(&[(7, b"xx")]);
    assert_eq!(parse(&b), info(None, false, b.len()));
    let m = |b: &[u8]| malformed(parse(b));
    assert!(m(&with_names(&[(0, b"")])));
    assert!(m(&with_names(&[(0, b"a\0b")])));
    assert!(m(&with_names(&[(0, "\u{e9}.test".as_bytes())])));
    assert!(m(&with_names(&[])));
    let b = edit(|e| e.iter_mut().find(|x| x.0 == 0).unwrap().1.push(0));
    assert!(m(&wrap(&b, &[])));
}

#[test]
fn ech_and_grease() {
    let ech = vec![0, 0, 1, 0, 1, 7, 0, 0, 0, 0];
    let b = wrap(&edit(|e| e.insert(2, (0xfe0d, ech))), &[]);
    assert_eq!(check_prefixes(&b), info(Some("example.com"), true, b.len()));
    let grease = |e: &mut Exts| {
        e.insert(0, (0x0a0a, vec![]));
        e.push((0xfafa, vec![0]));
    };
    let b = wrap(&edit(grease), &[9]);
    assert_eq!(check_prefixes(&b), plain(&b));
    let dup = wrap(&edit(|e| e.push(e[0].clone())), &[]);
    assert_eq!(parse(&dup), Err(Malformed("duplicate extension")));
}

#[test]
fn not_tls_and_sslv2() {
    assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Err(NotTls));
    assert_eq!(parse(b"G"), Err(NotTls));
    assert_eq!(parse(b""), INCOMPLETE);
    let v2 = [0x80, 0x2e, 0x01, 0x03, 0x01, 0x00, 0x15];
    assert_eq!(parse(&v2[..2]), INCOMPLETE);
    assert_eq!(check_prefixes(&v2), Err(HelloError::SslV2));
    assert_eq!(parse(&[0x80, 0x2e, 0x04]), Err(NotTls));
    assert_eq!(parse(&[0x16, 2]), Err(UnsupportedVersion));
    assert_eq!(parse(&[0x16, 3, 9]), Err(UnsupportedVersion));
    let not_ch = Err(HelloError::NotClientHello);
    assert_eq!(parse(&[0x16, 3, 1, 0, 5, 2]), not_ch);
}

#[test]
fn too_large_early() {
    // 9 bytes: record header + handshake header declaring 64 KiB.
    let b = [0x16, 3, 1, 0x40, 0, 1, 0x01, 0, 0];
    assert_eq!(check_prefixes(&b), Err(TooLarge));
    // Within MAX_HANDSHAKE_LEN, but fragmented so the records overrun MAX_HELLO_BYTES.
    let b = wrap(&edit(|e| e.push((21, vec![0; 7600]))), &[1; 4000]);
    assert_eq!(parse(&b[..MAX_HELLO_BYTES]), INCOMPLETE);
    assert_eq!(parse(&b[..MAX_HELLO_BYTES + 5]), Err(TooLarge));
    assert_eq!(parse(&b), Err(TooLarge));
}

#[test]
fn truncated_inside_extension_is_malformed() {
    let full = edit(|e| e.push((0x4469, vec![7; 8])));
    let mut hs = full[..full.len() - 3].to_vec();
    fix_len(&mut hs);
    assert!(malformed(check_prefixes(&wrap(&hs, &[]))));
    // Same, with the extensions block length also fixed: the last extension overruns.
    let p = 4 + split(&full).0.len();
    let ext_len = (hs.len() - p - 2) as u16;
    hs[p..p + 2].copy_from_slice(&ext_len.to_be_bytes());
    let e = Err(Malformed("extension longer than extensions block"));
    assert_eq!(check_prefixes(&wrap(&hs, &[17])), e);
}

#[test]
fn record_layer_errors() {
    let m = |b: &[u8]| malformed(check_prefixes(b));
    let mut b = wrap(&real_hs(), &[30]);
    b[35] = 0x17; // second record is application data
    assert!(m(&b));
    let mut b = real();
    let len = u16::from_be_bytes([b[3], b[4]]) + 1; // record longer than the hello
    b[3..5].copy_from_slice(&len.to_be_bytes());
    b.push(0);
    let past = Err(Malformed("record continues past ClientHello"));
    assert_eq!(check_prefixes(&b), past);
    assert!(m(&[0x16, 3, 1, 0, 0]) && m(&[0x16, 3, 1, 0x40, 1]));
    let mut b = real();
    b[6..9].copy_from_slice(&[0, 0, 1]); // handshake length 1 inside a bigger record
    assert!(m(&b));
}

#[test]
fn hello_without_extensions() {
    let mut hs = [&[1, 0, 0, 0][..], &split(&real_hs()).0].concat();
    fix_len(&mut hs);
    let b = wrap(&hs, &[10]);
    assert_eq!(check_prefixes(&b), info(None, false, b.len()));
}

/// xorshift64*: deterministic, no extra dev-dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n.max(1)
    }
}

fn mutate(rng: &mut Rng, v: &mut Vec<u8>) {
    for _ in 0..1 + rng.next(4) {
        let i = rng.next(v.len());
        match rng.next(5) {
            0 => v[i] ^= 1 << rng.next(8),
            1 => v[i] = rng.next(256) as u8,
            2 => v.insert(i, rng.next(256) as u8),
            3 if v.len() > 1 => drop(v.remove(i)),
            _ => v.truncate(i.max(1)),
        }
    }
}

#[test]
fn random_mutations() {
    let base = real_hs();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for round in 0..3000 {
        // Arbitrary damage anywhere (record headers included): no panic, prefixes agree.
        let mut raw = wrap(&base, &[1 + rng.next(300)]);
        mutate(&mut rng, &mut raw);
        let check = |b: &[u8]| {
            if round % 4 == 0 {
                check_prefixes(b)
            } else {
                parse(b)
            }
        };
        let _ = check(&raw);
        // Damage inside the handshake message, with a consistent length and complete
        // records: always a final answer, never Incomplete.
        let mut hs = base.clone();
        mutate(&mut rng, &mut hs);
        hs.resize(hs.len().max(4), 0);
        fix_len(&mut hs);
        let b = wrap(&hs, &[1 + rng.next(hs.len()), 1 + rng.next(64)]);
        let r = check(&b);
        assert_ne!(r, INCOMPLETE, "round {round}");
        if let Ok(HelloOutcome::Hello(i)) = r {
            assert_eq!(i.consumed, b.len());
        }
    }
}
