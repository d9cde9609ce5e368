//! Fuzz host parsing and pattern matching: never panics; a parsed name is already normal
//! (parsing its text again gives the same name); a name never parses as an IP literal's
//! spelling; an exact pattern matches exactly its own name.
#![no_main]

use egress_proxy::policy::host::{parse_host, Host, HostPattern};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (left, right) = text.split_once('\n').unwrap_or((text, text));
    if let Ok(Host::Name(name)) = parse_host(left) {
        assert_eq!(parse_host(name.as_str()), Ok(Host::Name(name.clone())), "not idempotent");
        assert!(name.as_str().parse::<std::net::IpAddr>().is_err());
        if let Ok(pattern) = HostPattern::parse(name.as_str()) {
            assert!(pattern.matches(&name));
        }
        if let Ok(pattern) = HostPattern::parse(right) {
            let _ = pattern.matches(&name);
        }
    }
});
