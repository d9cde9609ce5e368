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
mod tests;
