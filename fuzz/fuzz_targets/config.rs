//! Fuzz the config walker: any text gives a config or a list of problems, never a panic.
#![no_main]

use egress_proxy::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Err(problems) = Config::from_yaml(text) {
            assert!(!problems.0.is_empty());
        }
    }
});
