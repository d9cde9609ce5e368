//! Fuzz `suggest`'s decision-line reader and what it feeds (`suggest::Lines`): any log text
//! gives a suggestion, never a panic; every non-blank line is counted; and the suggestion
//! validates as a config and allows every denied request it claims to cover (`suggest`
//! checks its own output and says `# WARNING` when it does not: that is a bug).
//!
//! Its first finding (a logged string holding a newline and YAML was echoed into the output,
//! adding a rule) is fixed: the reader keeps only plain words from a line; the reproducers
//! in fuzz/regressions/decision_lines/ are a unit test in src/suggest/tests.rs.
#![no_main]

use egress_proxy::suggest::Lines;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
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
