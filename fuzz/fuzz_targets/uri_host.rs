//! Fuzz absolute-form URI / `Host` consistency (`conn::http::request_target`): input is a
//! request-target, a newline, then a `Host` value. The check itself takes a `Conn`, so its
//! pure part is mirrored in [`consistent`] from the same pieces (`split_authority`,
//! `parse_host`, `http::Uri`). Asserted: a URI and a Host that both parse are accepted
//! together only if they name the same (host, port) also as the `http` crate reads the URI
//! and as their canonical text; a pair that names one target is never refused; and the
//! `Host` the proxy sends upstream for the decided target is accepted with the same URI and
//! names the same target, so the upstream is asked for what the policy judged.
#![no_main]

use std::net::IpAddr;

use egress_proxy::policy::host::{parse_host, Host};
use egress_proxy::wire::authority::split_authority;
use http::{HeaderValue, Uri};
use libfuzzer_sys::fuzz_target;

/// `conn::http::parse_target`.
fn parse_target(text: &str) -> Option<(Host, Option<u16>)> {
    let (host, port) = split_authority(text).ok()?;
    Some((parse_host(host).ok()?, port))
}

/// The target `request_target` settles on before the listener's own step, or `None` if it
/// refuses the request: same order and the same comparison as there.
fn consistent(uri: &Uri, host_header: Option<&str>) -> Option<Option<(Host, u16)>> {
    let from_header = match host_header {
        Some(text) => Some(parse_target(text)?),
        None => None,
    };
    let from_uri = match uri.authority() {
        Some(authority) => {
            if uri.scheme_str() != Some("http") {
                return None;
            }
            let (host, port) = parse_target(authority.as_str())?;
            Some((host, port.unwrap_or(80)))
        }
        None => None,
    };
    if let (Some((uri_host, uri_port)), Some((header_host, header_port))) =
        (&from_uri, &from_header)
    {
        if header_host != uri_host || header_port.unwrap_or(80) != *uri_port {
            return None;
        }
    }
    Some(from_uri.or(from_header.map(|(h, p)| (h, p.unwrap_or(80)))))
}

/// The upstream `Host` value `conn::forward::outgoing_request` writes.
fn outgoing_host(host: &Host, port: u16) -> String {
    match (host, port) {
        (Host::Ip(IpAddr::V6(ip)), 80) => format!("[{ip}]"),
        (Host::Ip(IpAddr::V6(ip)), port) => format!("[{ip}]:{port}"),
        (host, 80) => host.to_string(),
        (host, port) => format!("{host}:{port}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let (target, host) = match data.iter().position(|&b| b == b'\n') {
        Some(at) => (&data[..at], Some(&data[at + 1..])),
        None => (data, None),
    };
    let Ok(uri) = Uri::try_from(target) else {
        return;
    };
    // httparse trims the value's surrounding whitespace; hyper hands over a `HeaderValue`.
    let host = match host.map(|b| b.trim_ascii()).map(HeaderValue::from_bytes) {
        None => None,
        Some(Ok(value)) => match value.to_str() {
            Ok(text) => Some(text.to_owned()),
            Err(_) => return,
        },
        Some(Err(_)) => return,
    };
    let verdict = consistent(&uri, host.as_deref());
    let uri_side = uri
        .authority()
        .filter(|_| uri.scheme_str() == Some("http"))
        .and_then(|a| parse_target(a.as_str()))
        .map(|(h, p)| (h, p.unwrap_or(80)));
    let header_side = host
        .as_deref()
        .and_then(parse_target)
        .map(|(h, p)| (h, p.unwrap_or(80)));
    if let (Some(from_uri), Some(from_header)) = (&uri_side, &header_side) {
        let same =
            outgoing_host(&from_uri.0, from_uri.1) == outgoing_host(&from_header.0, from_header.1);
        assert_eq!(verdict.is_some(), same, "{uri} vs {host:?}");
        if same {
            // The http crate's own reading of the URI names the header's target too.
            let authority = uri.authority().expect("an absolute URI has an authority");
            assert_eq!(parse_host(authority.host()).as_ref(), Ok(&from_header.0));
            assert_eq!(authority.port_u16().unwrap_or(80), from_header.1);
        }
    }
    let Some(Some((decided, port))) = verdict else {
        return;
    };
    let upstream = outgoing_host(&decided, port);
    assert!(HeaderValue::from_str(&upstream).is_ok(), "{upstream}");
    assert_eq!(
        consistent(&uri, Some(&upstream)),
        Some(Some((decided.clone(), port))),
        "upstream Host {upstream} for {uri} vs {host:?}"
    );
});
