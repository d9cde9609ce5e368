//! Fuzz absolute-form URI / `Host` consistency: `wire::target::named_target`, the code
//! `conn::http::request_target` runs before the listener's own step. Input: a request-target,
//! then one `Host` header value per following line. Asserted: a request with more than one
//! `Host` is refused; a URI and a `Host` that both parse are accepted together exactly when
//! they name the same (host, port), also as the `http` crate reads the URI; and the `Host`
//! the proxy writes upstream for the decided target is accepted with the same URI and names
//! the same target, so the upstream is asked for what the policy judged.
#![no_main]

use egress_proxy::policy::host::parse_host;
use egress_proxy::wire::target::{host_header, named_target, parse_target};
use http::{HeaderValue, Uri};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut lines = data.split(|&b| b == b'\n');
    let Ok(uri) = Uri::try_from(lines.next().unwrap_or_default()) else {
        return;
    };
    // httparse trims the value's surrounding whitespace; hyper hands over a `HeaderValue`.
    let Ok(hosts) = lines
        .map(|line| HeaderValue::from_bytes(line.trim_ascii()))
        .collect::<Result<Vec<_>, _>>()
    else {
        return;
    };
    let verdict = named_target(&uri, &hosts);
    if hosts.len() > 1 {
        assert!(verdict.is_err(), "{uri} with {} Host headers", hosts.len());
        return;
    }
    let host = hosts.first().map(|h| h.to_str());
    let uri_side = uri
        .authority()
        .filter(|_| uri.scheme_str() == Some("http"))
        .and_then(|a| parse_target(a.as_str()).ok())
        .map(|(h, p)| (h, p.unwrap_or(80)));
    let header_side = match host {
        Some(Ok(text)) => parse_target(text).ok().map(|(h, p)| (h, p.unwrap_or(80))),
        _ => None,
    };
    if let (Some(from_uri), Some(from_header)) = (&uri_side, &header_side) {
        let same =
            host_header(&from_uri.0, from_uri.1) == host_header(&from_header.0, from_header.1);
        assert_eq!(verdict.is_ok(), same, "{uri} vs {host:?}");
        if same {
            // The http crate's own reading of the URI names the header's target too.
            let authority = uri.authority().expect("an absolute URI has an authority");
            assert_eq!(parse_host(authority.host()).as_ref(), Ok(&from_header.0));
            assert_eq!(authority.port_u16().unwrap_or(80), from_header.1);
        }
    }
    let Ok(named) = verdict else {
        return;
    };
    // What the explicit listener decides: the URI's target; a transparent one: either.
    let Some((decided, port)) = named
        .uri
        .clone()
        .or(named.header.clone().map(|(h, p)| (h, p.unwrap_or(80))))
    else {
        return;
    };
    let upstream = host_header(&decided, port);
    let upstream_value = HeaderValue::from_str(&upstream).expect("a valid header value");
    let again = named_target(&uri, [&upstream_value])
        .unwrap_or_else(|e| panic!("upstream Host {upstream} for {uri} vs {host:?}: {e}"));
    let (host_again, port_again) = again.header.expect("the Host just written");
    assert_eq!((host_again, port_again.unwrap_or(80)), (decided, port));
});
