//! Fuzz the config pre-scan (`config::bounds::scan`) against the YAML parser it guards: on any
//! text serde_yaml_ng reads, aliases aside, the tree nests at most twice as deep as the scan
//! measures, plus one (an indentless `- ` sequence under a key, or a single-pair mapping in a
//! flow sequence, adds a level libyaml doesn't stack). So the scan's limit bounds the parser.
#![no_main]

use egress_proxy::config::bounds::scan;
use libfuzzer_sys::fuzz_target;
use serde_yaml_ng::Value;

fn tree_depth(value: &Value) -> usize {
    match value {
        Value::Sequence(items) => 1 + items.iter().map(tree_depth).max().unwrap_or(0),
        Value::Mapping(map) => {
            1 + map
                .iter()
                .map(|(k, v)| tree_depth(k).max(tree_depth(v)))
                .max()
                .unwrap_or(0)
        }
        Value::Tagged(tagged) => tree_depth(&tagged.value),
        _ => 0,
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if text.len() > 4096 || text.contains('*') {
        return;
    }
    let depth = (0..=130)
        .find(|&limit| scan(text, limit, usize::MAX).is_ok())
        .unwrap_or(131);
    if let Ok(value) = serde_yaml_ng::from_str::<Value>(text) {
        let tree = tree_depth(&value);
        assert!(tree <= 2 * depth + 1, "tree {tree}, scan {depth}: {text:?}");
    }
});
