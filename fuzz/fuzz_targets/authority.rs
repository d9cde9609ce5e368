//! Fuzz the CONNECT target as `conn::explicit` reads it: hyper's `Uri` (authority-form only),
//! then `split_authority` and `parse_host`. Never panics; `split_authority` only ever cuts the
//! text it was given; an accepted target reads the same to the `http` crate (host and port);
//! and the target written back as the proxy writes it (`wire::target::host_header`) reads
//! back as the same target, so what is logged and dialled is what was judged.
#![no_main]

use std::net::IpAddr;

use egress_proxy::policy::host::{parse_host, Host};
use egress_proxy::wire::authority::split_authority;
use egress_proxy::wire::target::{host_header, parse_target};
use http::Uri;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // On any text: the host is the text's own prefix, the rest is `:` and the port's digits.
    if let Ok((host, port)) = split_authority(text) {
        assert!(!host.is_empty() && !host.contains('@'), "{text:?}");
        assert!(text.starts_with(host));
        let rest = &text[host.len()..];
        match port {
            None => assert!(rest.is_empty(), "{text:?}"),
            Some(port) => {
                assert_ne!(port, 0);
                let digits = rest.strip_prefix(':').expect("port after ':'");
                assert_eq!(digits.trim_start_matches('0'), port.to_string(), "{text:?}");
            }
        }
    }
    // As the CONNECT path reads it.
    let Ok(uri) = Uri::try_from(data) else { return };
    let Some(authority) = uri
        .authority()
        .filter(|_| uri.scheme().is_none() && uri.path_and_query().is_none())
    else {
        return;
    };
    let Ok((host_text, Some(port))) = split_authority(authority.as_str()) else {
        return;
    };
    let Ok(host) = parse_host(host_text) else {
        return;
    };
    assert_eq!(authority.port_u16(), Some(port), "{text:?}");
    assert_eq!(parse_host(authority.host()).as_ref(), Ok(&host), "{text:?}");
    if let Host::Name(name) = &host {
        let name = name.as_str();
        assert!(name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'));
        assert!(name.parse::<IpAddr>().is_err());
    }
    // Written back as the proxy writes a decided target (`wire::target::host_header`).
    let again = host_header(&host, port);
    let (host_again, port_again) = parse_target(&again).expect("a written target parses");
    assert_eq!(port_again.unwrap_or(80), port, "{again}");
    assert_eq!(host_again, host, "{again}");
});
