//! Fuzz `suggest`'s decision-line reader and what it feeds (`suggest::Lines`): any log text
//! gives a suggestion, never a panic; every non-blank line is counted; and the suggestion
//! validates as a config and allows every denied request it claims to cover (`suggest`
//! checks its own output and says `# WARNING` when it does not: that is a bug).
//!
//! Known finding, skipped here so the rest stays fuzzed: a logged string (`reason`, `rule`,
//! ...) holding a line break or control character is echoed raw into the output's comments,
//! which breaks the YAML or, with a newline and indentation, adds YAML of the line's choosing
//! (see fuzz/README.md). Drop [`echo_safe`] once the renderer escapes what it echoes.
#![no_main]

use egress_proxy::suggest::Lines;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

/// No string field of the line holds a character YAML would read as a line break or reject.
fn echo_safe(line: &str) -> bool {
    let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(line) else {
        return true;
    };
    fields.values().filter_map(Value::as_str).all(|s| {
        !s.chars().any(|c| {
            c.is_control()
                || matches!(
                    c,
                    '\u{2028}' | '\u{2029}' | '\u{feff}' | '\u{fffe}' | '\u{ffff}'
                )
        })
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if !text.lines().all(echo_safe) {
        return;
    }
    let mut lines = Lines::default();
    for line in text.lines() {
        lines.read(line);
    }
    let out = lines.suggest(None);
    let read = text.lines().filter(|l| !l.trim().is_empty()).count();
    let head = format!("# egress-proxy suggest: {read} line(s) read");
    assert!(out.starts_with(&head), "{out}");
    assert!(!out.contains("# WARNING"), "{out}\n--- from ---\n{text}");
});
