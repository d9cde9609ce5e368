//! The transparent listeners, end to end without redirection: clients connect straight to
//! the transparent TLS / HTTP listeners, so the upstream port is the configured
//! `default_port`. Real TLS stacks (rustls, openssl, curl) make the ClientHellos; every test
//! checks what the client got and the decision line. The iptables-redirected path is in
//! `tests/netns.rs`.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use rustls::pki_types::ServerName;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Rules: `origin.test` on `port` (the TLS origin's port, also the transparent TLS
/// listener's default port); `other.test` resolves but no rule names it.
fn config_for(port: u16, handshake: &str) -> String {
    format!(
        "allow:
  - name: origin
    hosts: [origin.test]
    ports: [{port}]
upstream:
  allow_cidrs: [127.0.0.0/8]
resolver:
  hosts:
    origin.test: [127.0.0.1]
    other.test: [127.0.0.1]
timeouts: {{ client_handshake: {handshake}, upstream_connect: 2s }}
"
    )
}

/// A proxy whose transparent TLS listener sends unredirected connections to `tls_port`
/// and whose transparent HTTP listener sends them to `http_port`.
fn start(tls_port: u16, http_port: u16, rest: &str) -> Proxy {
    Proxy::start_with_listeners(|l| l.yaml_with_default_ports(tls_port, http_port), rest)
}

fn tls_proxy(origin: &TlsOrigin) -> Proxy {
    let port = origin.addr.port();
    start(port, 80, &config_for(port, "5s"))
}

/// The checks every transparent TLS decision line gets: the listener, the client, and no
/// `original_dst` (these connections were not redirected).
fn assert_transparent_tls(line: &Value, port: u16) {
    assert_eq!(line["listener"], "transparent_tls", "{line}");
    assert_eq!(line["port"], port, "{line}");
    assert!(
        line["client"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{line}"
    );
    assert!(
        line.get("original_dst").is_none_or(Value::is_null),
        "not redirected, yet original_dst is set: {line}"
    );
}

/// A denial: nothing dialled, and no rule named (except a `port` or `client` denial, which
/// names the rule that matched the host).
fn assert_denied(line: &Value, reason: &str) {
    assert_eq!(line["decision"], "deny", "{line}");
    assert_eq!(line["reason"], reason, "{line}");
    if !matches!(reason, "port" | "client") {
        assert!(line["rule"].is_null(), "{line}");
    }
    assert!(line["upstream"].is_null(), "{line}");
}

/// Reads until EOF or error (bounded by a 10 s read timeout): what the proxy sent back.
fn read_until_closed(s: &mut TcpStream) -> Vec<u8> {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return out,
            Err(e) => panic!("the proxy neither answered nor closed: {e}"),
        }
    }
}

/// TLS straight to the transparent listener (no CONNECT): the SNI is the only request.
async fn tls_direct(
    listener: SocketAddr,
    name: ServerName<'static>,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let s = tokio::net::TcpStream::connect(listener).await?;
    let connecting = tokio_rustls::TlsConnector::from(config).connect(name, s);
    tokio::time::timeout(Duration::from_secs(10), connecting)
        .await
        .map_err(|_| std::io::Error::other("TLS handshake hung"))?
}

fn dns(name: &str) -> ServerName<'static> {
    ServerName::try_from(name.to_owned()).unwrap()
}

/// A rustls client connection whose ClientHello has been taken out (nothing sent yet): the
/// test sends those bytes its own way, then finishes the handshake with [`finish_and_echo`].
fn captured_hello(
    config: Arc<rustls::ClientConfig>,
    name: ServerName<'static>,
) -> (rustls::ClientConnection, Vec<u8>) {
    let mut conn = rustls::ClientConnection::new(config, name).unwrap();
    let mut hello = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut hello).unwrap();
    }
    assert_eq!(hello[0], 0x16, "a TLS handshake record");
    (conn, hello)
}

/// Drives the rest of `conn`'s handshake over `sock`, then round-trips a message through
/// the TLS origin's echo. Succeeds only if the origin saw exactly the ClientHello `conn`
/// made (the Finished messages cover the whole transcript) and presented a certificate
/// `conn` trusts for its name.
fn finish_and_echo(conn: rustls::ClientConnection, sock: TcpStream) -> std::io::Result<Vec<u8>> {
    sock.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut tls = rustls::StreamOwned::new(conn, sock);
    tls.write_all(b"ping through the transparent listener")?;
    tls.flush()?;
    let mut echoed = vec![0u8; b"ping through the transparent listener".len()];
    tls.read_exact(&mut echoed)?;
    Ok(echoed)
}

/// Offsets in a single-record ClientHello: where the extensions block's length is, after
/// the record header (5), handshake header (4), version (2), random (32), session id,
/// cipher suites and compression methods.
fn extensions_len_offset(hello: &[u8]) -> usize {
    let mut at = 5 + 4 + 2 + 32;
    at += 1 + hello[at] as usize;
    at += 2 + u16::from_be_bytes([hello[at], hello[at + 1]]) as usize;
    at += 1 + hello[at] as usize;
    at
}

fn add_to_be16(bytes: &mut [u8], at: usize, delta: isize) {
    let v = u16::from_be_bytes([bytes[at], bytes[at + 1]]) as isize + delta;
    bytes[at..at + 2].copy_from_slice(&(v as u16).to_be_bytes());
}

fn add_to_be24(bytes: &mut [u8], at: usize, delta: isize) {
    let v = ((bytes[at] as isize) << 16 | (bytes[at + 1] as isize) << 8 | bytes[at + 2] as isize)
        + delta;
    bytes[at..at + 3].copy_from_slice(&(v as u32).to_be_bytes()[1..]);
}

/// Fixes the record, handshake and extensions lengths after `delta` bytes were added to
/// (or removed from) the extensions of a single-record hello.
fn fix_lengths(hello: &mut [u8], delta: isize) {
    add_to_be16(hello, 3, delta);
    add_to_be24(hello, 6, delta);
    let ext = extensions_len_offset(hello);
    add_to_be16(hello, ext, delta);
}

/// A real ClientHello whose server_name `from` is replaced by the bytes of `to` (any
/// length), with every enclosing length fixed.
fn with_sni(hello: &[u8], from: &str, to: &[u8]) -> Vec<u8> {
    let at = hello
        .windows(from.len())
        .position(|w| w == from.as_bytes())
        .expect("the SNI is in the hello");
    // host_name: u16 length right before the name; name_type (0) before that; the
    // server_name_list length; the extension's length.
    assert_eq!(
        u16::from_be_bytes([hello[at - 2], hello[at - 1]]) as usize,
        from.len()
    );
    assert_eq!(hello[at - 3], 0, "name_type host_name");
    let delta = to.len() as isize - from.len() as isize;
    let mut out = hello[..at].to_vec();
    out.extend_from_slice(to);
    out.extend_from_slice(&hello[at + from.len()..]);
    add_to_be16(&mut out, at - 2, delta);
    add_to_be16(&mut out, at - 5, delta);
    add_to_be16(&mut out, at - 7, delta);
    fix_lengths(&mut out, delta);
    out
}

/// A real ClientHello with one more extension (`ext_type`, `data`) put first.
fn with_extension(hello: &[u8], ext_type: u16, data: &[u8]) -> Vec<u8> {
    let ext = extensions_len_offset(hello);
    let mut added = ext_type.to_be_bytes().to_vec();
    added.extend_from_slice(&(data.len() as u16).to_be_bytes());
    added.extend_from_slice(data);
    let mut out = hello[..ext + 2].to_vec();
    out.extend_from_slice(&added);
    out.extend_from_slice(&hello[ext + 2..]);
    fix_lengths(&mut out, added.len() as isize);
    out
}

/// The same handshake bytes in two records, the first carrying `split` of them.
fn in_two_records(hello: &[u8], split: usize) -> (Vec<u8>, Vec<u8>) {
    let body = &hello[5..];
    assert_eq!(
        u16::from_be_bytes([hello[3], hello[4]]) as usize,
        body.len(),
        "one record"
    );
    let record = |part: &[u8]| {
        let mut r = vec![0x16, hello[1], hello[2]];
        r.extend_from_slice(&(part.len() as u16).to_be_bytes());
        r.extend_from_slice(part);
        r
    };
    (record(&body[..split]), record(&body[split..]))
}

/// Sends `bytes` to the transparent listener and returns what came back before the close.
fn send_and_read(listener: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(listener).unwrap();
    s.write_all(bytes).unwrap();
    read_until_closed(&mut s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_sni_reaches_the_origin_whose_certificate_the_client_verifies() {
    let origin = TlsOrigin::start(&["origin.test"]);
    let port = origin.addr.port();
    let proxy = tls_proxy(&origin);
    let mut tls = tls_direct(
        proxy.transparent_tls,
        dns("origin.test"),
        origin.client_config(),
    )
    .await
    .expect("the handshake with the origin completes through the listener");
    // The proxy never terminates TLS: the certificate the client verified (against the
    // origin's own CA, for origin.test) is the origin's.
    let (_, session) = tls.get_ref();
    assert_eq!(session.peer_certificates().map(<[_]>::len), Some(1));
    tls.write_all(b"hello, origin").await.unwrap();
    let mut echoed = [0u8; 13];
    tls.read_exact(&mut echoed).await.unwrap();
    assert_eq!(&echoed, b"hello, origin");
    tls.shutdown().await.unwrap();
    drop(tls);

    let line = proxy.decision(|v| v["listener"] == "transparent_tls");
    assert_transparent_tls(&line, port);
    assert_eq!(line["decision"], "allow");
    assert_eq!(line["reason"], "rule");
    assert_eq!(line["rule"], "origin");
    assert_eq!(line["sni"], "origin.test");
    assert_eq!(line["host"], "origin.test");
    // The address the proxy resolved origin.test to (resolver.hosts), at the default port.
    assert_eq!(line["upstream"], origin.addr.to_string());
    assert!(line.get("message").is_none_or(Value::is_null), "{line}");
    let close = proxy.close_line(|v| v["listener"] == "transparent_tls");
    assert!(close["bytes_up"].as_u64().unwrap() > 13, "{close}");
    assert!(close["bytes_down"].as_u64().unwrap() > 13, "{close}");
    assert_eq!(origin.accepted(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_sni_is_closed_and_the_origin_never_contacted() {
    let origin = TlsOrigin::start(&["origin.test", "other.test"]);
    let port = origin.addr.port();
    let proxy = tls_proxy(&origin);
    let result = tls_direct(
        proxy.transparent_tls,
        dns("other.test"),
        origin.client_config(),
    )
    .await;
    assert!(result.is_err(), "the handshake must not complete");
    let line = proxy.decision(|v| v["listener"] == "transparent_tls");
    assert_transparent_tls(&line, port);
    assert_denied(&line, "no_rule");
    assert_eq!(line["sni"], "other.test");
    assert_eq!(line["host"], "other.test");
    assert_eq!(origin.accepted(), 0, "a denied name is never dialled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_port_is_the_port_judged() {
    let origin = TlsOrigin::start(&["origin.test"]);
    let port = origin.addr.port();
    // origin.test is allowed on the origin's port only; this listener defaults to another.
    // Nothing listens on that port: the origin must not be reached through a default.
    let held = ClosedPort::new();
    let elsewhere = held.port();
    let proxy = start(elsewhere, 80, &config_for(port, "5s"));
    let result = tls_direct(
        proxy.transparent_tls,
        dns("origin.test"),
        origin.client_config(),
    )
    .await;
    assert!(result.is_err());
    let line = proxy.decision(|v| v["listener"] == "transparent_tls");
    assert_transparent_tls(&line, elsewhere);
    assert_denied(&line, "port");
    assert_eq!(
        line["rule"], "origin",
        "the rule that allows the name elsewhere"
    );
    assert_eq!(line["host"], "origin.test");
    assert_eq!(origin.accepted(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_without_sni_is_cut_as_no_sni() {
    let origin = TlsOrigin::start(&["origin.test", "127.0.0.1"]);
    let port = origin.addr.port();
    let proxy = tls_proxy(&origin);
    // rustls sends no server_name extension for an IP address.
    let ip = ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
    let result = tls_direct(proxy.transparent_tls, ip, origin.client_config()).await;
    assert!(result.is_err(), "the handshake must not complete");
    let line = proxy.decision(|v| v["listener"] == "transparent_tls");
    assert_transparent_tls(&line, port);
    assert_denied(&line, "no_sni");
    assert!(line["sni"].is_null(), "{line}");
    assert!(line["host"].is_null(), "{line}");
    assert_eq!(origin.accepted(), 0);
}

#[test]
fn sni_that_is_an_ip_literal_or_no_host_name_is_a_bad_request() {
    let origin = TlsOrigin::start(&["origin.test"]);
    let port = origin.addr.port();
    let proxy = tls_proxy(&origin);
    let (_, hello) = captured_hello(origin.client_config(), dns("sni-patch.test"));
    for (sni, why) in [
        ("127.0.0.1", "IP literal"),
        ("2130706433", "IP literal"),
        ("origin test", "not a valid host name"),
        ("origin..test", "not a valid host name"),
        ("origin.test:443", "not a valid host name"),
    ] {
        let patched = with_sni(&hello, "sni-patch.test", sni.as_bytes());
        let back = send_and_read(proxy.transparent_tls, &patched);
        // Only the proxy's own alert comes back: the hello's parameter is illegal.
        assert_eq!(
            back,
            tls_alert(ALERT_ILLEGAL_PARAMETER),
            "{sni}: the proxy sent {back:?}"
        );
        let line = proxy.decision(|v| v["listener"] == "transparent_tls");
        assert_transparent_tls(&line, port);
        assert_denied(&line, "bad_request");
        assert_eq!(line["sni"], sni, "{line}");
        assert!(line["host"].is_null(), "{line}");
        let message = line["message"].as_str().unwrap_or_default();
        assert!(message.contains(why), "{sni}: {line}");
    }
    assert_eq!(origin.accepted(), 0);
}

#[test]
fn sni_spelled_with_upper_case_or_a_trailing_dot_is_the_same_name() {
    let origin = TlsOrigin::start(&["origin.test"]);
    let port = origin.addr.port();
    let proxy = tls_proxy(&origin);
    let (_, hello) = captured_hello(origin.client_config(), dns("sni-patch.test"));
    for (n, sni) in ["ORIGIN.Test", "origin.test."].into_iter().enumerate() {
        let patched = with_sni(&hello, "sni-patch.test", sni.as_bytes());
        let mut s = TcpStream::connect(proxy.transparent_tls).unwrap();
        s.write_all(&patched).unwrap();
        let line = proxy.decision(|v| v["listener"] == "transparent_tls");
        assert_transparent_tls(&line, port);
        assert_eq!(line["decision"], "allow", "{sni}: {line}");
        assert_eq!(line["rule"], "origin");
        assert_eq!(line["sni"], sni, "the SNI as sent");
        assert_eq!(line["host"], "origin.test", "the name as judged");
        assert_eq!(line["upstream"], origin.addr.to_string());
        let deadline = Instant::now() + Duration::from_secs(10);
        while origin.accepted() < n + 1 {
            assert!(
                Instant::now() < deadline,
                "{sni}: the origin was not dialled"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

#[test]
fn hello_fed_one_byte_at_a_time_reaches_the_origin_unchanged() {
    let origin = TlsOrigin::start(&["origin.test"]);
    let port = origin.addr.port();
    let proxy = tls_proxy(&origin);
    let (conn, hello) = captured_hello(origin.client_config(), dns("origin.test"));
    assert!(hello.len() < 4096, "{} bytes", hello.len());
    let mut sock = TcpStream::connect(proxy.transparent_tls).unwrap();
    sock.set_nodelay(true).unwrap();
    let started = Instant::now();
    for byte in &hello {
        sock.write_all(std::slice::from_ref(byte)).unwrap();
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the test itself was too slow"
    );
    let echoed = finish_and_echo(conn, sock).expect("handshake over the forwarded hello");
    assert_eq!(echoed, b"ping through the transparent listener");
    let line = proxy.decision(|v| v["listener"] == "transparent_tls");
    assert_transparent_tls(&line, port);
    assert_eq!(line["decision"], "allow");
    assert_eq!(line["reason"], "rule");
    assert_eq!(line["sni"], "origin.test");
    assert_eq!(line["upstream"], origin.addr.to_string());
}

#[test]
fn hello_split_across_two_records_is_judged_and_forwarded() {
    let origin = TlsOrigin::start(&["origin.test"]);
    let port = origin.addr.port();
    let proxy = tls_proxy(&origin);
    // Split inside the handshake header, and in the middle of the message.
    for split in [2, 0] {
        let (conn, hello) = captured_hello(origin.client_config(), dns("origin.test"));
        let split = if split == 0 {
            (hello.len() - 5) / 2
        } else {
            split
        };
        let (first, second) = in_two_records(&hello, split);
        let mut sock = TcpStream::connect(proxy.transparent_tls).unwrap();
        sock.set_nodelay(true).unwrap();
        sock.write_all(&first).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        sock.write_all(&second).unwrap();
        let echoed = finish_and_echo(conn, sock)
            .unwrap_or_else(|e| panic!("split at {split}: handshake failed: {e}"));
        assert_eq!(echoed, b"ping through the transparent listener");
        let line = proxy.decision(|v| v["listener"] == "transparent_tls");
        assert_transparent_tls(&line, port);
        assert_eq!(line["decision"], "allow", "split at {split}: {line}");
        assert_eq!(line["rule"], "origin");
        assert_eq!(line["sni"], "origin.test");
        assert_eq!(line["host"], "origin.test");
        assert_eq!(line["upstream"], origin.addr.to_string());
    }
    assert_eq!(origin.accepted(), 2);
}

/// HPKE for GREASE ECH only: rustls's ring provider ships no HPKE, and a GREASE extension
/// needs just an encapsulated key of the right shape (its payload is random anyway).
mod grease_hpke {
    use rustls::crypto::hpke::{
        EncapsulatedSecret, Hpke, HpkeOpener, HpkePrivateKey, HpkePublicKey, HpkeSealer, HpkeSuite,
    };
    use rustls::internal::msgs::enums::{HpkeAead, HpkeKdf, HpkeKem};
    use rustls::internal::msgs::handshake::HpkeSymmetricCipherSuite;
    use rustls::Error;

    #[derive(Debug)]
    pub struct GreaseOnly;

    #[derive(Debug)]
    struct NoSealer;

    impl HpkeSealer for NoSealer {
        fn seal(&mut self, _aad: &[u8], _plaintext: &[u8]) -> Result<Vec<u8>, Error> {
            Err(Error::General("GREASE only".into()))
        }
    }

    impl Hpke for GreaseOnly {
        fn seal(
            &self,
            _info: &[u8],
            _aad: &[u8],
            _plaintext: &[u8],
            _pub_key: &HpkePublicKey,
        ) -> Result<(EncapsulatedSecret, Vec<u8>), Error> {
            Err(Error::General("GREASE only".into()))
        }

        fn setup_sealer(
            &self,
            _info: &[u8],
            _pub_key: &HpkePublicKey,
        ) -> Result<(EncapsulatedSecret, Box<dyn HpkeSealer + 'static>), Error> {
            // An X25519 encapsulated key is 32 bytes.
            let enc = (0..32u8).map(|i| i.wrapping_mul(37) ^ 0x5a).collect();
            Ok((EncapsulatedSecret(enc), Box::new(NoSealer)))
        }

        fn open(
            &self,
            _enc: &EncapsulatedSecret,
            _info: &[u8],
            _aad: &[u8],
            _ciphertext: &[u8],
            _secret_key: &HpkePrivateKey,
        ) -> Result<Vec<u8>, Error> {
            Err(Error::General("GREASE only".into()))
        }

        fn setup_opener(
            &self,
            _enc: &EncapsulatedSecret,
            _info: &[u8],
            _secret_key: &HpkePrivateKey,
        ) -> Result<Box<dyn HpkeOpener + 'static>, Error> {
            Err(Error::General("GREASE only".into()))
        }

        fn generate_key_pair(&self) -> Result<(HpkePublicKey, HpkePrivateKey), Error> {
            Err(Error::General("GREASE only".into()))
        }

        fn suite(&self) -> HpkeSuite {
            HpkeSuite {
                kem: HpkeKem::DHKEM_X25519_HKDF_SHA256,
                sym: HpkeSymmetricCipherSuite {
                    kdf_id: HpkeKdf::HKDF_SHA256,
                    aead_id: HpkeAead::AES_128_GCM,
                },
            }
        }
    }
}

static GREASE_HPKE: grease_hpke::GreaseOnly = grease_hpke::GreaseOnly;

/// A rustls client offering GREASE ECH (an `encrypted_client_hello` extension, outer SNI
/// the real name), trusting `origin`'s CA.
fn ech_grease_config(origin: &TlsOrigin) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(origin.ca_der.clone()).unwrap();
    let grease = rustls::client::EchGreaseConfig::new(
        &GREASE_HPKE,
        rustls::crypto::hpke::HpkePublicKey(vec![0x42; 32]),
    );
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_ech(rustls::client::EchMode::Grease(grease))
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ech_hello_is_judged_on_its_outer_sni_and_says_so() {
    let origin = TlsOrigin::start(&["origin.test", "other.test"]);
    let port = origin.addr.port();
    let proxy = tls_proxy(&origin);

    // Allowed outer name: the handshake (ECH GREASE, ignored by the origin) completes.
    let (_, hello) = captured_hello(ech_grease_config(&origin), dns("origin.test"));
    let ext_at = extensions_len_offset(&hello);
    assert!(
        hello[ext_at..].windows(2).any(|w| w == [0xfe, 0x0d]),
        "rustls put an encrypted_client_hello extension in the hello"
    );
    let mut tls = tls_direct(
        proxy.transparent_tls,
        dns("origin.test"),
        ech_grease_config(&origin),
    )
    .await
    .expect("handshake with ECH GREASE through the listener");
    tls.write_all(b"ech").await.unwrap();
    let mut echoed = [0u8; 3];
    tls.read_exact(&mut echoed).await.unwrap();
    assert_eq!(&echoed, b"ech");
    drop(tls);
    let line = proxy.decision(|v| v["listener"] == "transparent_tls");
    assert_transparent_tls(&line, port);
    assert_eq!(line["decision"], "allow");
    assert_eq!(line["rule"], "origin");
    assert_eq!(line["sni"], "origin.test");
    assert_eq!(line["upstream"], origin.addr.to_string());
    let message = line["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("encrypted ClientHello") && message.contains("outer SNI"),
        "{line}"
    );

    // Denied outer name: cut, and the line still says the hello was encrypted.
    let result = tls_direct(
        proxy.transparent_tls,
        dns("other.test"),
        ech_grease_config(&origin),
    )
    .await;
    assert!(result.is_err());
    let line = proxy.decision(|v| v["listener"] == "transparent_tls");
    assert_denied(&line, "no_rule");
    assert_eq!(line["sni"], "other.test");
    assert!(
        line["message"]
            .as_str()
            .unwrap_or_default()
            .contains("encrypted ClientHello"),
        "{line}"
    );
    assert_eq!(origin.accepted(), 1);
}

#[test]
fn grease_values_in_a_hello_do_not_disturb_the_sni() {
    let origin = TlsOrigin::start(&["origin.test"]);
    let port = origin.addr.port();
    let proxy = tls_proxy(&origin);
    let (_, hello) = captured_hello(origin.client_config(), dns("origin.test"));
    // RFC 8701 GREASE extensions (as Chrome sends them), one empty, one with a byte.
    let greased = with_extension(&hello, 0x0a0a, &[]);
    let greased = with_extension(&greased, 0xdada, &[0]);
    let mut s = TcpStream::connect(proxy.transparent_tls).unwrap();
    s.write_all(&greased).unwrap();
    let line = proxy.decision(|v| v["listener"] == "transparent_tls");
    assert_transparent_tls(&line, port);
    assert_eq!(line["decision"], "allow", "{line}");
    assert_eq!(line["sni"], "origin.test");
    assert_eq!(line["upstream"], origin.addr.to_string());
    // The origin got the hello (and answers it: the client's transcript differs, which is
    // the test's doing, not the proxy's).
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut back = [0u8; 1];
    s.read_exact(&mut back)
        .expect("the origin's ServerHello comes back");
    assert_eq!(back[0], 0x16, "a handshake record");
    assert_eq!(origin.accepted(), 1);
}

#[test]
fn silent_client_is_cut_at_the_handshake_timeout() {
    let origin = TlsOrigin::start(&["origin.test"]);
    let port = origin.addr.port();
    let proxy = start(port, 80, &config_for(port, "1s"));

    // Nothing at all.
    let mut s = TcpStream::connect(proxy.transparent_tls).unwrap();
    let started = Instant::now();
    let back = read_until_closed(&mut s);
    let took = started.elapsed();
    assert!(back.is_empty());
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "cut after {took:?}"
    );
    let line = proxy.decision(|v| v["listener"] == "transparent_tls");
    assert_transparent_tls(&line, port);
    assert_denied(&line, "timeout");
    assert!(line["sni"].is_null());

    // Half a ClientHello, then nothing.
    let (_, hello) = captured_hello(origin.client_config(), dns("origin.test"));
    let mut s = TcpStream::connect(proxy.transparent_tls).unwrap();
    s.write_all(&hello[..hello.len() / 2]).unwrap();
    let started = Instant::now();
    assert!(read_until_closed(&mut s).is_empty());
    assert!(started.elapsed() < Duration::from_secs(5));
    let line = proxy.decision(|v| v["listener"] == "transparent_tls");
    assert_denied(&line, "timeout");
    assert_eq!(origin.accepted(), 0);
}

#[test]
fn client_that_closes_without_a_byte_logs_nothing() {
    let origin = TlsOrigin::start(&["origin.test"]);
    let mut proxy = start(
        origin.addr.port(),
        80,
        &config_for(origin.addr.port(), "1s"),
    );
    // A load balancer's TCP health check: connect, close.
    for _ in 0..3 {
        drop(TcpStream::connect(proxy.transparent_tls).unwrap());
    }
    let mut s = TcpStream::connect(proxy.transparent_tls).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    // The proxy closes its side once it has seen the end of stream.
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert_eq!(s.read(&mut [0u8; 1]).unwrap(), 0);
    drop(s);
    // The proxy is alive and logs the next real connection.
    let back = send_and_read(proxy.transparent_tls, b"\x16\x03\x01\x00\x01\x02");
    assert!(back.is_empty());
    // Everything the proxy will ever log is in once it has drained and exited.
    let lines = proxy.stop_and_collect();
    assert_eq!(lines.len(), 1, "health checks were logged: {lines:#?}");
    assert_eq!(lines[0]["listener"], "transparent_tls");
    assert_eq!(lines[0]["reason"], "bad_request");
    assert_eq!(origin.accepted(), 0);
}

#[test]
fn non_tls_bytes_are_cut_as_no_sni() {
    let origin = TlsOrigin::start(&["origin.test"]);
    let port = origin.addr.port();
    let proxy = tls_proxy(&origin);
    let back = send_and_read(
        proxy.transparent_tls,
        b"GET / HTTP/1.1\r\nHost: origin.test\r\n\r\n",
    );
    assert!(back.is_empty(), "the proxy answered: {back:?}");
    let line = proxy.decision(|v| v["listener"] == "transparent_tls");
    assert_transparent_tls(&line, port);
    assert_denied(&line, "no_sni");
    assert!(line["host"].is_null());
    assert_eq!(origin.accepted(), 0);
}

fn run_bounded(command: &mut std::process::Command) -> std::process::Output {
    command
        .env_remove("http_proxy")
        .env_remove("https_proxy")
        .env_remove("HTTPS_PROXY")
        .env_remove("ALL_PROXY")
        .env_remove("all_proxy")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("the tool is installed (.ci/setup installs curl and openssl)")
}

#[test]
fn openssl_s_client_verifies_the_origin_through_the_transparent_listener() {
    let origin = TlsOrigin::start(&["origin.test"]);
    let port = origin.addr.port();
    let proxy = tls_proxy(&origin);
    let ca = proxy.dir.path().join("ca.pem");
    std::fs::write(&ca, &origin.ca_pem).unwrap();
    let out = run_bounded(
        std::process::Command::new("timeout")
            .args(["15", "openssl", "s_client", "-connect"])
            .arg(proxy.transparent_tls.to_string())
            .args(["-servername", "origin.test"])
            .args(["-verify_hostname", "origin.test", "-verify_return_error"])
            .arg("-CAfile")
            .arg(&ca),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("Server certificate") && stdout.contains("Verify return code: 0 (ok)"),
        "openssl s_client: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = proxy.decision(|v| v["listener"] == "transparent_tls");
    assert_transparent_tls(&line, port);
    assert_eq!(line["decision"], "allow");
    assert_eq!(line["sni"], "origin.test");
    assert_eq!(line["upstream"], origin.addr.to_string());

    // The same client naming a forbidden server gets no handshake.
    let out = run_bounded(
        std::process::Command::new("timeout")
            .args(["15", "openssl", "s_client", "-connect"])
            .arg(proxy.transparent_tls.to_string())
            .args(["-servername", "other.test", "-verify_return_error"])
            .arg("-CAfile")
            .arg(&ca),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("no peer certificate available") && !stdout.contains("Server certificate"),
        "openssl s_client got a certificate for a forbidden name: {stdout}"
    );
    let line = proxy.decision(|v| v["listener"] == "transparent_tls");
    assert_denied(&line, "no_rule");
    assert_eq!(line["sni"], "other.test");
}

#[test]
fn curl_connect_to_the_transparent_listener_fetches_from_the_origin() {
    let origin = TlsOrigin::start(&["origin.test", "other.test"]);
    let port = origin.addr.port();
    let proxy = tls_proxy(&origin);
    let ca = proxy.dir.path().join("ca.pem");
    std::fs::write(&ca, &origin.ca_pem).unwrap();
    let curl = |name: &str| {
        run_bounded(
            std::process::Command::new("curl")
                .args(["-sS", "--max-time", "10", "--noproxy", "*", "--connect-to"])
                .arg(format!(
                    "{name}:{port}:{}:{}",
                    proxy.transparent_tls.ip(),
                    proxy.transparent_tls.port()
                ))
                .arg("--cacert")
                .arg(&ca)
                .arg(format!("https://{name}:{port}/")),
        )
    };
    let out = curl("origin.test");
    assert!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello from the TLS origin\n"
    );
    let line = proxy.decision(|v| v["listener"] == "transparent_tls");
    assert_transparent_tls(&line, port);
    assert_eq!(line["decision"], "allow");
    assert_eq!(line["sni"], "origin.test");
    assert_eq!(line["upstream"], origin.addr.to_string());

    let out = curl("other.test");
    assert!(
        !out.status.success(),
        "a forbidden name must not be fetched"
    );
    assert!(out.stdout.is_empty());
    let line = proxy.decision(|v| v["listener"] == "transparent_tls");
    assert_denied(&line, "no_rule");
    assert_eq!(line["sni"], "other.test");
    assert_eq!(origin.accepted(), 1);
}

/// Rules for the transparent HTTP tests: `origin.test` on the HTTP origin's port.
fn http_config(port: u16) -> String {
    format!(
        "allow:
  - name: web
    hosts: [origin.test]
    ports: [{port}]
    tls: any # plain HTTP on a port other than 80
upstream:
  allow_cidrs: [127.0.0.0/8]
resolver:
  hosts:
    origin.test: [127.0.0.1]
    other.test: [127.0.0.1]
timeouts: {{ client_handshake: 5s, upstream_connect: 2s }}
"
    )
}

#[test]
fn transparent_http_judges_each_keep_alive_request_on_its_host() {
    let origin = HttpOrigin::start();
    let port = origin.addr.port();
    let proxy = start(443, port, &http_config(port));
    let mut s = TcpStream::connect(proxy.transparent_http).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();

    s.write_all(b"GET /first HTTP/1.1\r\nHost: origin.test\r\n\r\n")
        .unwrap();
    let (status, body) = read_response(&mut s);
    assert_eq!(status, 200, "{body}");
    assert!(
        body.starts_with("GET /first HTTP/1.1 host=origin.test"),
        "{body}"
    );
    let line = proxy.decision(|v| v["listener"] == "transparent_http");
    assert_eq!(line["decision"], "allow");
    assert_eq!(line["reason"], "rule");
    assert_eq!(line["rule"], "web");
    assert_eq!(line["host"], "origin.test");
    assert_eq!(
        line["port"], port,
        "the port is the listener's default_port"
    );
    assert_eq!(line["method"], "GET");
    assert!(line["sni"].is_null());
    assert_eq!(line["upstream"], origin.addr.to_string());

    // Same connection, another Host: judged on its own.
    s.write_all(b"GET /second HTTP/1.1\r\nHost: other.test\r\n\r\n")
        .unwrap();
    let (status, body) = read_response(&mut s);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("no_rule"), "{body}");
    let line = proxy.decision(|v| v["listener"] == "transparent_http");
    assert_denied(&line, "no_rule");
    assert_eq!(line["host"], "other.test");
    assert_eq!(line["port"], port);

    // And back: the connection is still usable after a denial.
    s.write_all(b"GET /third HTTP/1.1\r\nHost: origin.test\r\n\r\n")
        .unwrap();
    let (status, body) = read_response(&mut s);
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("GET /third"), "{body}");
    assert_eq!(
        proxy.decision(|v| v["listener"] == "transparent_http")["decision"],
        "allow"
    );
}

#[test]
fn transparent_http_request_without_host_is_a_bad_request() {
    let origin = HttpOrigin::start();
    let port = origin.addr.port();
    let proxy = start(443, port, &http_config(port));
    for request in [
        "GET / HTTP/1.1\r\nConnection: close\r\n\r\n",
        "GET / HTTP/1.0\r\n\r\n",
    ] {
        let (status, text) = http_get(proxy.transparent_http, request);
        assert_eq!(status, 400, "{request:?}: {text}");
        let line = proxy.decision(|v| v["listener"] == "transparent_http");
        assert_denied(&line, "bad_request");
        assert!(line["host"].is_null(), "{line}");
        assert!(
            line["message"]
                .as_str()
                .unwrap_or_default()
                .contains("Host"),
            "{line}"
        );
    }
    assert_eq!(origin.accepted(), 0);
}

#[test]
fn transparent_http_line_has_no_original_dst_when_not_redirected() {
    let origin = HttpOrigin::start();
    let port = origin.addr.port();
    let proxy = start(443, port, &http_config(port));
    let (status, _) = http_get(
        proxy.transparent_http,
        "GET / HTTP/1.1\r\nHost: origin.test\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 200);
    let line = proxy.decision(|v| v["listener"] == "transparent_http");
    assert_eq!(line["port"], port);
    // The client connected to the listener itself; no redirect happened, so there is no
    // original destination to report (and certainly not listener-ip:default_port, an
    // address nobody connected to).
    assert!(
        line.get("original_dst").is_none_or(Value::is_null),
        "not redirected, yet original_dst is set: {line}"
    );
}
