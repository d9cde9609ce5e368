//! Fuzz host parsing and pattern matching: never panics; a parsed name is already normal
//! (parsing its text again gives the same name); a name never parses as an IP literal's
//! spelling; an exact pattern matches exactly its own name; case and one trailing dot change
//! nothing (the name's upper-case and dotted spellings parse to it, and a pattern decides
//! for them alike).
#![no_main]

use egress_proxy::policy::host::{parse_host, Host, HostPattern};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (left, right) = text.split_once('\n').unwrap_or((text, text));
    if let Ok(Host::Name(name)) = parse_host(left) {
        assert_eq!(parse_host(name.as_str()), Ok(Host::Name(name.clone())), "not idempotent");
        assert!(name.as_str().parse::<std::net::IpAddr>().is_err());
        let upper = name.as_str().to_ascii_uppercase();
        for variant in [format!("{name}."), upper.clone(), format!("{upper}.")] {
            assert_eq!(parse_host(&variant), Ok(Host::Name(name.clone())), "{variant:?}");
        }
        if !left.ends_with('.') && left.is_ascii() {
            let loud = left.to_ascii_uppercase() + ".";
            assert_eq!(parse_host(&loud), Ok(Host::Name(name.clone())), "{loud:?}");
        }
        if let Ok(pattern) = HostPattern::parse(name.as_str()) {
            assert!(pattern.matches(&name));
        }
        if let Ok(pattern) = HostPattern::parse(right) {
            let verdict = pattern.matches(&name);
            for variant in [right.to_ascii_uppercase(), format!("{right}.")] {
                if let Ok(other) = HostPattern::parse(&variant) {
                    assert_eq!(other.matches(&name), verdict, "{variant:?} vs {right:?}");
                }
            }
        }
    }
});
