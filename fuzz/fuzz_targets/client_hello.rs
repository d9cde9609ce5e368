//! Fuzz `parse_client_hello`: never panics, and is consistent under incremental feeding: every
//! prefix is `Incomplete` until the final answer appears, then every longer prefix gives exactly
//! that answer; a hello is answered exactly at `consumed` bytes, within `MAX_HELLO_BYTES`.
#![no_main]

use egress_proxy::wire::client_hello::{parse_client_hello, HelloOutcome, MAX_HELLO_BYTES};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let full = parse_client_hello(data);
    let mut settled_at = None;
    for n in 0..data.len() {
        match parse_client_hello(&data[..n]) {
            Ok(HelloOutcome::Incomplete) => {
                assert!(settled_at.is_none(), "Incomplete at {n} after an answer");
            }
            r => {
                assert_eq!(r, full, "prefix of {n} bytes disagrees with the full input");
                settled_at.get_or_insert(n);
            }
        }
    }
    if let Ok(HelloOutcome::Hello(info)) = &full {
        assert!(info.consumed > 0 && info.consumed <= data.len());
        assert!(info.consumed <= MAX_HELLO_BYTES);
        assert_eq!(settled_at.unwrap_or(data.len()), info.consumed);
        if let Some(sni) = &info.sni {
            assert!(!sni.is_empty() && sni.bytes().all(|b| b != 0 && b.is_ascii()));
        }
    }
});
