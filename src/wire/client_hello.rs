//! Incremental TLS ClientHello reader: the first bytes from the client on a transparent TLS listener connection or inside a CONNECT tunnel, read before the proxy decides and dials; extracts the SNI without terminating TLS.
//!
//! Pure and allocation-bounded (fuzzed by `fuzz/fuzz_targets/client_hello.rs`). The caller
//! re-calls [`parse_client_hello`] with everything received so far. Contract: every strict
//! prefix of a valid hello yields [`HelloOutcome::Incomplete`]; and for any byte stream, once
//! some prefix yields a final answer (a hello or an error), every longer prefix yields that same
//! answer. This holds because checks run in stream order and each one only looks at bytes that
//! are already present: a record-layer error in record k is reported only after the handshake
//! bytes before it have been checked, and a read past a *declared* length is `Malformed` while a
//! read past the *received* bytes is `Incomplete`.
#![deny(clippy::indexing_slicing)]

/// Largest ClientHello handshake message accepted (4-byte header + body). Real hellos are far
/// smaller: rustls/Chrome/Firefox send ~0.5–2 KB, including an X25519MLKEM768 key share
/// (1216 bytes) and ECH; 16 KiB leaves ~8x headroom for big PSK tickets or many extensions while
/// keeping per-connection buffering small. It is also one maximal TLS record.
pub const MAX_HANDSHAKE_LEN: usize = 16 * 1024;

/// Hard bound on how many bytes we buffer looking for a full ClientHello: a maximal message plus
/// four record headers, so even the largest allowed hello may be fragmented over up to four
/// records (smaller hellos may use more). A hello whose records end beyond this is `TooLarge`.
pub const MAX_HELLO_BYTES: usize = MAX_HANDSHAKE_LEN + RECORD_HEADER_LEN * 4;

const RECORD_HEADER_LEN: usize = 5;
const MAX_RECORD_LEN: usize = 16 * 1024;
const CONTENT_HANDSHAKE: u8 = 0x16;
const HS_CLIENT_HELLO: u8 = 1;
const EXT_SERVER_NAME: u16 = 0;
const EXT_ECH: u16 = 0xfe0d;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HelloOutcome {
    /// Need more bytes: feed the buffer again after reading more.
    Incomplete,
    /// A complete ClientHello was read.
    Hello(ClientHelloInfo),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientHelloInfo {
    /// The single `host_name` from the server_name extension, as sent: non-empty ASCII without
    /// NUL (other control bytes possible). Not normalised or validated as a hostname: the caller
    /// must do that. With ECH this is the *outer* (public) name, not the real destination.
    pub sni: Option<String>,
    /// The hello carries an `encrypted_client_hello` (0xfe0d) extension.
    pub has_ech: bool,
    /// Bytes of the buffer made up by the records containing the hello (up to the end of the
    /// last record used); anything after it belongs to the rest of the stream.
    pub consumed: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HelloError {
    /// The first byte is not a TLS handshake record (e.g. plaintext HTTP or garbage).
    #[error("not a TLS handshake")]
    NotTls,
    /// SSLv2-compatible ClientHello (first byte has the high bit set, message type 1).
    #[error("SSLv2-compatible ClientHello")]
    SslV2,
    /// The first handshake message is not a ClientHello.
    #[error("first handshake message is not a ClientHello")]
    NotClientHello,
    /// The hello (or the records carrying it) would exceed `MAX_HELLO_BYTES`.
    #[error("ClientHello larger than {MAX_HELLO_BYTES} bytes")]
    TooLarge,
    #[error("malformed ClientHello: {0}")]
    Malformed(&'static str),
    /// More than one `host_name` entry in the server_name extension.
    #[error("more than one host_name in server_name")]
    MultipleServerNames,
    /// Record version major != 3 or minor > 4, or ClientHello legacy_version major != 3.
    #[error("unsupported TLS version")]
    UnsupportedVersion,
}

/// Why a parsing step stopped early.
enum Stop {
    Incomplete,
    Fail(HelloError),
}

impl From<HelloError> for Stop {
    fn from(e: HelloError) -> Self {
        Stop::Fail(e)
    }
}

fn bad(what: &'static str) -> Stop {
    Stop::Fail(HelloError::Malformed(what))
}

/// Parse the client's first bytes. See the module docs for the incremental contract. A record
/// that runs past the end of the hello is reported (`Malformed`) once the hello is complete.
pub fn parse_client_hello(buf: &[u8]) -> Result<HelloOutcome, HelloError> {
    match buf.first() {
        None => return Ok(HelloOutcome::Incomplete),
        Some(&CONTENT_HANDSHAKE) => {}
        Some(&b) if b & 0x80 != 0 => {
            return match buf.get(2) {
                None => Ok(HelloOutcome::Incomplete),
                Some(&HS_CLIENT_HELLO) => Err(HelloError::SslV2),
                Some(_) => Err(HelloError::NotTls),
            }
        }
        Some(_) => return Err(HelloError::NotTls),
    }
    let r = reassemble(buf);
    match parse_hello(&r.hs) {
        Ok((sni, has_ech)) if r.msg_end == r.rec_end => Ok(HelloOutcome::Hello(ClientHelloInfo {
            sni,
            has_ech,
            consumed: r.rec_end,
        })),
        Ok(_) => Err(HelloError::Malformed("record continues past ClientHello")),
        Err(Stop::Fail(e)) => Err(e),
        Err(Stop::Incomplete) => r.pending.map_or(Ok(HelloOutcome::Incomplete), Err),
    }
}

/// Handshake bytes gathered from the leading handshake records.
#[derive(Default)]
struct Reassembly {
    /// Handshake stream, truncated to the ClientHello message once its length is known.
    hs: Vec<u8>,
    /// Record-layer error found right after the bytes in `hs`; it wins only if `hs` parses
    /// cleanly but incompletely (a handshake error earlier in the stream is reported first).
    pending: Option<HelloError>,
    /// Buffer offset just past the last handshake byte kept in `hs`.
    msg_end: usize,
    /// Declared end (buffer offset) of the record that supplied that byte.
    rec_end: usize,
}

/// Big-endian integer (callers pass at most 3 bytes).
fn be(b: &[u8]) -> usize {
    b.iter().fold(0, |acc, &x| acc << 8 | usize::from(x))
}

/// `4 + length` of the handshake message, once its header is present.
fn hs_total_len(hs: &[u8]) -> Option<usize> {
    hs.get(1..4).map(|l| 4 + be(l))
}

fn reassemble(buf: &[u8]) -> Reassembly {
    let mut out = Reassembly::default();
    let mut pos = 0usize;
    loop {
        if let Some(total) = hs_total_len(&out.hs) {
            // Complete, or hopeless (parse_hello reports TooLarge): stop reading records.
            if out.hs.len() >= total || total > MAX_HANDSHAKE_LEN {
                break;
            }
        }
        if out.hs.first().is_some_and(|&t| t != HS_CLIENT_HELLO) {
            break; // parse_hello reports NotClientHello
        }
        let header = buf.get(pos..).unwrap_or_default();
        let len = match record_header(header) {
            Ok(Some(len)) => len,
            Ok(None) => break,
            Err(e) => {
                out.pending = Some(e);
                break;
            }
        };
        let body_start = pos.saturating_add(RECORD_HEADER_LEN);
        let rec_end = body_start.saturating_add(len);
        if rec_end > MAX_HELLO_BYTES {
            out.pending = Some(HelloError::TooLarge);
            break;
        }
        let avail_end = rec_end.min(buf.len());
        out.hs
            .extend_from_slice(buf.get(body_start..avail_end).unwrap_or_default());
        out.rec_end = rec_end;
        out.msg_end = avail_end;
        if let Some(total) = hs_total_len(&out.hs) {
            if let Some(excess) = out.hs.len().checked_sub(total) {
                out.msg_end = avail_end.saturating_sub(excess);
                out.hs.truncate(total);
            }
        }
        if avail_end < rec_end {
            break;
        }
        pos = rec_end;
    }
    out
}

/// Checks a (possibly partial) record header in byte order; `Ok(None)` = header incomplete.
/// (The first record's type byte was already checked, so a bad type here is mid-hello.)
fn record_header(h: &[u8]) -> Result<Option<usize>, HelloError> {
    if h.first().is_some_and(|&t| t != CONTENT_HANDSHAKE) {
        return Err(HelloError::Malformed(
            "non-handshake record inside ClientHello",
        ));
    }
    if h.get(1).is_some_and(|&major| major != 3) || h.get(2).is_some_and(|&minor| minor > 4) {
        return Err(HelloError::UnsupportedVersion);
    }
    match h.get(3..5).map(be) {
        None => Ok(None),
        Some(0) => Err(HelloError::Malformed("empty handshake record")),
        Some(n) if n > MAX_RECORD_LEN => Err(HelloError::Malformed("record longer than 2^14")),
        Some(n) => Ok(Some(n)),
    }
}

/// Sequential reader over the received bytes `d`. Every read names the end of its declared
/// container: crossing it is `Malformed`; crossing only the received bytes is `Incomplete`.
struct Reader<'a> {
    d: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, end: usize, what: &'static str) -> Result<&'a [u8], Stop> {
        let new = self.pos + n; // pos <= MAX_HANDSHAKE_LEN and n < 2^24: cannot overflow
        if new > end {
            return Err(bad(what));
        }
        let s = self.d.get(self.pos..new).ok_or(Stop::Incomplete)?;
        self.pos = new;
        Ok(s)
    }
    /// Big-endian integer of `n` (1..=3) bytes.
    fn int(&mut self, n: usize, end: usize, what: &'static str) -> Result<usize, Stop> {
        self.take(n, end, what).map(be)
    }
    /// Vector with an `n`-byte length prefix.
    fn vec(&mut self, n: usize, end: usize, what: &'static str) -> Result<&'a [u8], Stop> {
        let len = self.int(n, end, what)?;
        self.take(len, end, what)
    }
}

/// Parses the (possibly partial) handshake stream `hs`: returns (sni, has_ech).
fn parse_hello(hs: &[u8]) -> Result<(Option<String>, bool), Stop> {
    let mut r = Reader { d: hs, pos: 0 };
    if r.int(1, 4, "handshake header")? != usize::from(HS_CLIENT_HELLO) {
        return Err(HelloError::NotClientHello.into());
    }
    let end = 4 + r.int(3, 4, "handshake header")?;
    if end > MAX_HANDSHAKE_LEN {
        return Err(HelloError::TooLarge.into());
    }
    if r.int(1, end, "truncated legacy_version")? != 3 {
        return Err(HelloError::UnsupportedVersion.into());
    }
    r.take(1 + 32, end, "truncated random")?;
    if r.vec(1, end, "truncated session_id")?.len() > 32 {
        return Err(bad("session_id longer than 32 bytes"));
    }
    let suites = r.vec(2, end, "truncated cipher_suites")?;
    if suites.is_empty() || suites.len() % 2 != 0 {
        return Err(bad("bad cipher_suites length"));
    }
    if r.vec(1, end, "truncated compression_methods")?.is_empty() {
        return Err(bad("no compression methods"));
    }
    if r.pos == end {
        return Ok((None, false)); // no extensions (e.g. an old TLS 1.0 client)
    }
    let ext_len = r.int(2, end, "truncated extensions length")?;
    if r.pos + ext_len != end {
        return Err(bad("extensions length disagrees with ClientHello length"));
    }
    let mut seen = [0u64; 1024]; // one bit per extension type
    let (mut sni, mut has_ech) = (None, false);
    while r.pos < end {
        let ty = r.int(2, end, "truncated extension header")?;
        let len = r.int(2, end, "truncated extension header")?;
        let (word, bit) = (ty / 64, 1u64 << (ty % 64));
        match seen.get_mut(word) {
            Some(w) if *w & bit == 0 => *w |= bit,
            _ => return Err(bad("duplicate extension")),
        }
        let body = r.take(len, end, "extension longer than extensions block")?;
        match u16::try_from(ty) {
            Ok(EXT_SERVER_NAME) => sni = parse_server_name(body)?,
            Ok(EXT_ECH) => has_ech = true,
            _ => {} // includes GREASE (0x?a?a)
        }
    }
    Ok((sni, has_ech))
}

/// RFC 6066 ServerNameList. `body` is complete, so no read here can be `Incomplete`.
fn parse_server_name(body: &[u8]) -> Result<Option<String>, Stop> {
    let mut r = Reader { d: body, pos: 0 };
    let end = body.len();
    let list = r.vec(2, end, "truncated server_name list")?;
    if list.is_empty() || r.pos != end {
        return Err(bad("bad server_name list length"));
    }
    let mut r = Reader { d: list, pos: 0 };
    let mut host: Option<&[u8]> = None;
    while r.pos < list.len() {
        let name_type = r.int(1, list.len(), "truncated server_name entry")?;
        // host_name(0) is opaque<1..2^16-1>; RFC 6066 requires future types to start with a
        // 16-bit length too, so unknown types are skipped the same way.
        let name = r.vec(2, list.len(), "truncated server_name entry")?;
        if name_type == 0 {
            if host.is_some() {
                return Err(HelloError::MultipleServerNames.into());
            }
            if name.is_empty() {
                return Err(bad("empty host_name"));
            }
            if !name.iter().all(|&b| b != 0 && b.is_ascii()) {
                return Err(bad("host_name is not NUL-free ASCII"));
            }
            host = Some(name);
        }
    }
    Ok(host.map(|h| h.iter().copied().map(char::from).collect()))
}

/// The buffer length at which [`parse_client_hello`] can next say more than `Incomplete`:
/// the end of the first TLS record not yet complete (or of its 5-byte header). A reader
/// re-parses only when it has that much, so a hello fed a byte at a time costs linear work.
pub fn next_record_end(buf: &[u8]) -> usize {
    let mut pos = 0usize;
    loop {
        let (Some(&hi), Some(&lo)) = (buf.get(pos + 3), buf.get(pos + 4)) else {
            return pos + RECORD_HEADER_LEN;
        };
        let end = pos + RECORD_HEADER_LEN + usize::from(u16::from_be_bytes([hi, lo]));
        if buf.len() < end {
            return end;
        }
        pos = end;
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
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
}
