//! Which host and port a plain-HTTP request names: its absolute-form URI and its `Host`
//! header, read and checked against each other; and the `Host` written upstream for the
//! target that was decided. Pure, so the fuzz target `uri_host` runs this very code.

use std::net::IpAddr;

use http::{HeaderValue, Uri};

use super::authority::split_authority;
use crate::policy::host::{parse_host, Host};

/// What a request names, before the listener's own step decides between them (an explicit
/// proxy needs the URI; a transparent listener takes either and checks the port).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Named {
    /// The absolute-form URI's host and port (80 if it gave none).
    pub uri: Option<(Host, u16)>,
    /// The `Host` header's host, and its port if it gave one.
    pub header: Option<(Host, Option<u16>)>,
}

/// Reads the URI and every `Host` header of a request. Refused (with the sentence the client
/// gets): more than one `Host`, a non-ASCII or unparsable one, a URI whose scheme is not
/// `http`, and a `Host` that names another host or port than the URI.
pub fn named_target<'a>(
    uri: &Uri,
    host_headers: impl IntoIterator<Item = &'a HeaderValue>,
) -> Result<Named, String> {
    let mut host_headers = host_headers.into_iter();
    let host_header = match (host_headers.next(), host_headers.next()) {
        (None, _) => None,
        (Some(one), None) => Some(
            one.to_str()
                .map_err(|_| "Host header is not ASCII".to_owned())?,
        ),
        (Some(_), Some(_)) => return Err("more than one Host header".into()),
    };
    let header = host_header.map(parse_target).transpose()?;
    let uri = match uri.authority() {
        Some(authority) => {
            if uri.scheme_str() != Some("http") {
                return Err("only http:// URIs are proxied; use CONNECT for https".into());
            }
            let (host, port) = parse_target(authority.as_str())?;
            Some((host, port.unwrap_or(80)))
        }
        None => None,
    };
    if let (Some((uri_host, uri_port)), Some((header_host, header_port))) = (&uri, &header) {
        if header_host != uri_host || header_port.unwrap_or(80) != *uri_port {
            return Err("the Host header names another host than the URI".into());
        }
    }
    Ok(Named { uri, header })
}

/// `host[:port]` → the parsed host, and the port if one was given.
pub fn parse_target(text: &str) -> Result<(Host, Option<u16>), String> {
    let (host_text, port) = split_authority(text)?;
    let host = parse_host(host_text).map_err(|e| format!("bad host '{host_text}': {e}"))?;
    Ok((host, port))
}

/// The `Host` value sent upstream for a decided target: port 80 left out, IPv6 in brackets.
pub fn host_header(host: &Host, port: u16) -> String {
    match (host, port) {
        (Host::Ip(IpAddr::V6(ip)), 80) => format!("[{ip}]"),
        (Host::Ip(IpAddr::V6(ip)), port) => format!("[{ip}]:{port}"),
        (host, 80) => host.to_string(),
        (host, port) => format!("{host}:{port}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(uri: &str, hosts: &[&str]) -> Result<Named, String> {
        let values: Vec<HeaderValue> = hosts
            .iter()
            .map(|h| HeaderValue::from_str(h).unwrap())
            .collect();
        named_target(&Uri::try_from(uri).unwrap(), &values)
    }

    fn host(text: &str) -> Host {
        parse_host(text).unwrap()
    }

    #[test]
    fn uri_and_host_that_agree_name_one_target() {
        let both = named("http://Example.com./x", &["example.com:80"]).unwrap();
        assert_eq!(both.uri, Some((host("example.com"), 80)));
        assert_eq!(both.header, Some((host("example.com"), Some(80))));
        let origin_form = named("/x", &["example.com:8080"]).unwrap();
        assert_eq!(origin_form.uri, None);
        assert_eq!(origin_form.header, Some((host("example.com"), Some(8080))));
        assert_eq!(
            named("/x", &[]).unwrap(),
            Named {
                uri: None,
                header: None
            }
        );
    }

    #[test]
    fn refuses_what_could_name_two_targets() {
        for (uri, hosts) in [
            ("http://a.example/", &["b.example"][..]),
            ("http://a.example/", &["a.example:8080"]),
            ("http://a.example:8080/", &["a.example"]),
            ("http://a.example/", &["a.example", "a.example"]),
            ("/", &["a.example", "b.example"]),
            ("https://a.example/", &[]),
            ("http://user@a.example/", &[]),
            ("/", &["a.example:0"]),
            ("/", &["a.example@b.example"]),
        ] {
            assert!(
                named(uri, hosts).is_err(),
                "{uri} {hosts:?} must be refused"
            );
        }
        let non_ascii = HeaderValue::from_bytes(b"caf\xc3\xa9.example").unwrap();
        assert!(named_target(&Uri::from_static("/"), [&non_ascii]).is_err());
    }

    #[test]
    fn the_upstream_host_names_the_decided_target() {
        assert_eq!(host_header(&host("example.com"), 80), "example.com");
        assert_eq!(host_header(&host("example.com"), 8080), "example.com:8080");
        assert_eq!(host_header(&host("[::1]"), 80), "[::1]");
        assert_eq!(host_header(&host("[::1]"), 8080), "[::1]:8080");
        for (h, port) in [
            ("example.com", 8080),
            ("[2001:db8::1]", 80),
            ("10.0.0.1", 81),
        ] {
            let written = host_header(&host(h), port);
            let read = named("/", &[&written]).unwrap().header.unwrap();
            assert_eq!((read.0, read.1.unwrap_or(80)), (host(h), port));
        }
    }
}
