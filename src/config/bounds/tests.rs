use proptest::prelude::*;

use super::*;
use crate::config::Config;

/// The smallest limit `scan` accepts `text` under: the depth it measures.
fn depth(text: &str) -> usize {
    (0..=200)
        .find(|&limit| scan(text, limit, usize::MAX).is_ok())
        .expect("depth above 200")
}

/// How deep the tree serde_yaml_ng builds is, in collections.
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

fn problems(yaml: &str) -> Vec<String> {
    match Config::from_yaml(yaml) {
        Ok(_) => Vec::new(),
        Err(p) => p.0.iter().map(ToString::to_string).collect(),
    }
}

const LISTENER: &str = "listeners: { explicit: 127.0.0.1:3128 }\n";

/// `n` rules shaped like a real allowlist.
fn rules(n: usize) -> String {
    let mut text = format!("{LISTENER}allow:\n");
    for i in 0..n {
        text += &format!(
            "  - name: rule-{i:05}-some-service\n    \
             hosts: [api-{i}.service-{}.example.com, \"*.cdn-{i}.example-content.net\"]\n    \
             ports: [443, 8443]\n    \
             clients: [10.{}.0.0/16, 10.200.{}.0/24]\n    \
             tls: require_sni\n    mode: enforce\n",
            i % 97,
            i % 256,
            i % 256
        );
    }
    text
}

#[test]
fn measures_block_and_flow_nesting() {
    for (text, want) in [
        ("", 0),
        ("a", 0),
        ("a: b", 1),
        ("a:\n  b:\n    c: d\n", 3),
        ("a:\n  b: c\nd: e\n", 2),
        ("- - - a", 3),
        ("a: [b, {c: [d]}]", 4),
        ("[[[[]]]]", 4),
        ("- a: [b]\n  c: d\n", 3),
        ("? [a]\n: b\n", 2),
    ] {
        assert_eq!(depth(text), want, "{text:?}");
    }
}

#[test]
fn brackets_in_quotes_comments_and_plain_text_are_not_nesting() {
    for text in [
        "a: \"[[[[{{{{\"",
        "a: '[[[[{{{{'",
        "a: 'it''s [[[['",
        "a: \"\\\"[[[[\"",
        "a: x [[[[ {{{{",
        "a: x\n  '[[[[\n",
        "# [[[[{{{{\na: b",
        "a: b # [[[[",
        "a: |\n  [[[[\n  {{{{\n",
        "a: >-\n  [[[[\n\n  {{{{\n",
        "a: \"multi\n  line [[[[\"\n",
    ] {
        assert_eq!(depth(text), 1, "{text:?}");
    }
}

#[test]
fn closing_brackets_in_quotes_do_not_hide_nesting() {
    // The parser sees five nested sequences, each holding the string "]".
    assert_eq!(depth("[ \"]\", [ ']', [ \"]\", [ ']', [ \"]\" ]]]]]"), 5);
}

#[test]
fn a_quote_inside_a_flow_plain_scalar_is_text() {
    // `x '` is a plain scalar; the `[` after it opens a sequence.
    assert_eq!(depth("[x '[[[ ]]]]"), 4);
    assert_eq!(depth("{a: b\"[[ ]]}"), 3);
}

#[test]
fn a_block_scalar_ends_where_its_indentation_does() {
    assert_eq!(depth("a: |\n  text\nb: [[[[ ]]]]\n"), 5);
    // With an explicit indentation of 4, a line indented 2 is not content.
    assert_eq!(depth("a: |4\n  [[[[ ]]]]\n"), 5);
    // Indented more than the first content line: still content.
    assert_eq!(depth("a: |\n  x\n    [[[[\n"), 1);
}

#[test]
fn document_markers_end_block_collections_only_outside_flow() {
    assert_eq!(depth("a:\n  b: c\n---\n[[x]]\n"), 2);
    // libyaml stops with an error at a marker inside a flow collection; the scan keeps the
    // block levels, never counting less than libyaml saw.
    assert_eq!(depth("a:\n  b: [\n---\n[[x]]]\n"), 5);
}

#[test]
fn every_yaml_line_break_ends_a_comment() {
    for brk in ["\n", "\r", "\r\n", "\u{85}", "\u{2028}", "\u{2029}"] {
        assert_eq!(depth(&format!("# c{brk}[[[[ ]]]]")), 4, "{brk:?}");
    }
}

#[test]
fn reports_the_line_where_the_limit_is_passed() {
    let text = format!("a: 1\nb: 2\nc: {}\n", "[".repeat(70));
    assert_eq!(scan(&text, 64, usize::MAX), Err(Excess::Depth { line: 3 }));
    assert_eq!(scan("a: [[1]]", 64, usize::MAX), Ok(()));
}

/// A plain, single- or double-quoted scalar, the quoted ones full of brackets and quotes.
fn scalar() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z][a-z0-9.'\"-]{0,4}",
        "[a-z \\[\\]{}'\"#,:]{0,6}".prop_map(|s| format!("'{}'", s.replace('\'', "''"))),
        "[a-z \\[\\]{}'#,:]{0,6}".prop_map(|s| format!("\"{s}\"")),
        "[a-z \\[\\]{}'#,:]{0,6}".prop_map(|s| format!("\"\\\"{s}\\\"\"")),
    ]
}

/// Flow collections nested up to 8 deep, with scalars (and collections) as keys and items.
fn flow() -> impl Strategy<Value = String> {
    scalar().prop_recursive(8, 64, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4)
                .prop_map(|items| format!("[{}]", items.join(", "))),
            proptest::collection::vec((inner.clone(), inner), 0..3).prop_map(|pairs| {
                let pairs: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}: {v}")).collect();
                format!("{{{}}}", pairs.join(", "))
            }),
        ]
    })
}

/// One top-level entry: a flow value (maybe with a comment), a block scalar of junk, or an
/// indented block sequence of flow values.
fn entry() -> impl Strategy<Value = String> {
    let junk = "[a-z \\[\\]{}'\"#,:|>-]{0,12}";
    prop_oneof![
        (flow(), proptest::option::of(junk)).prop_map(|(v, c)| match c {
            Some(c) => format!("{v} # {c}\n"),
            None => format!("{v}\n"),
        }),
        ("[|>][-+]?", proptest::collection::vec(junk, 1..4)).prop_map(|(h, lines)| {
            let body: Vec<String> = lines.iter().map(|l| format!("  x{l}\n")).collect();
            format!("{h}\n{}", body.concat())
        }),
        proptest::collection::vec(flow(), 1..3).prop_map(|items| {
            let body: Vec<String> = items.iter().map(|i| format!("  - {i}\n")).collect();
            format!("\n{}", body.concat())
        }),
    ]
}

proptest! {
    // Nothing written beside the crate: a failure prints its minimal input.
    #![proptest_config(ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// On YAML that libyaml reads, the scan measures exactly the tree's depth: brackets in
    /// quotes, comments and block scalars neither count nor hide real nesting.
    #[test]
    fn scan_matches_the_tree_depth_of_generated_yaml(
        entries in proptest::collection::vec(entry(), 1..4)
    ) {
        let text: String = entries
            .iter()
            .enumerate()
            .map(|(i, e)| format!("k{i}: {e}"))
            .collect();
        let value: Value = match serde_yaml_ng::from_str(&text) {
            Ok(value) => value,
            // Generated keys may repeat; anything else means the generator is wrong.
            Err(e) if e.to_string().contains("duplicate entry") => return Ok(()),
            Err(e) => return Err(TestCaseError::fail(format!("{e}: {text:?}"))),
        };
        prop_assert_eq!(depth(&text), tree_depth(&value), "{:?}", text);
    }

    /// The scan never measures less than the tree serde_yaml_ng builds, for texts without
    /// mappings or aliases (where the two count the same things).
    #[test]
    fn scan_is_at_least_the_tree_depth(
        text in proptest::collection::vec(prop::sample::select(vec![
            "[", "]", "{", "}", ",", " ", " ", "\n", "\n", "  ", "- ", "-", "'", "\"", "#",
            "|", ">", "|2", "&a ", "!t ", "a", "b1", "\t", "\\", "\u{2028}", "\u{85}", "\r",
            "---\n", "...\n", "%Y\n",
        ]), 0..30).prop_map(|parts| parts.concat())
    ) {
        if let Ok(value) = serde_yaml_ng::from_str::<Value>(&text) {
            prop_assert!(depth(&text) >= tree_depth(&value), "{:?}", text);
        }
    }

    /// With mappings, the tree may nest one level deeper per level the scan counts: an
    /// indentless `- ` sequence under a key, a single-pair mapping in a flow sequence.
    #[test]
    fn tree_is_at_most_twice_the_scan_depth(
        text in proptest::collection::vec(prop::sample::select(vec![
            "[", "]", "{", "}", ",", " ", "\n", "\n", "  ", "- ", "'", "\"", "#", "|", "a",
            ": ", ":", "? ", "b", "&a ", "\t",
        ]), 0..30).prop_map(|parts| parts.concat())
    ) {
        if let Ok(value) = serde_yaml_ng::from_str::<Value>(&text) {
            prop_assert!(2 * depth(&text) + 1 >= tree_depth(&value), "{:?}", text);
        }
    }
}

#[test]
fn implicit_levels_at_most_double_the_tree_depth() {
    // An indentless sequence under a key, and a single-pair mapping in a flow sequence, are
    // collections libyaml doesn't stack: the tree is twice as deep as the scan measures.
    for text in ["a:\n- b:\n  - c:\n    - d\n", "[a: [b: [c: d]]]"] {
        let tree = tree_depth(&serde_yaml_ng::from_str(text).unwrap());
        assert_eq!((depth(text), tree), (3, 6), "{text:?}");
    }
}

#[test]
fn refuses_100k_deep_flow_nesting_before_parsing() {
    let n = 100_000;
    let text = format!("{LISTENER}allow: {}{}\n", "[".repeat(n), "]".repeat(n));
    let p = problems(&text);
    assert_eq!(p, ["config nests deeper than 64 levels at line 2"]);
}

#[test]
fn refuses_deep_block_nesting() {
    let mut text = format!("{LISTENER}upstream:\n");
    for i in 1..100 {
        text += &format!("{}k{i}:\n", " ".repeat(i));
    }
    assert_eq!(
        problems(&text),
        // upstream (line 2) is level 1, so k64 (line 66) is level 65.
        ["config nests deeper than 64 levels at line 66"]
    );
    let dashes = format!("{LISTENER}allow: {}x\n", "- ".repeat(100));
    assert!(problems(&dashes)[0].contains("nests deeper than 64 levels"));
}

#[test]
fn refuses_an_alias_bomb() {
    // 10,000 values, each list used 1,000 times: 10 million values from 24 KB.
    let wide = format!(
        "{LISTENER}a: &a [{}]\nb: [{}]\n",
        vec!["x"; 10_000].join(","),
        vec!["*a"; 1_000].join(",")
    );
    assert_eq!(
        problems(&wide),
        ["config expands to more than 1000000 values (anchors count each time an alias uses them)"]
    );
    // The classic: nine levels of nine aliases; serde_yaml_ng's own limit or ours stops it.
    let mut laughs = format!("{LISTENER}l0: &l0 [lol,lol,lol,lol,lol,lol,lol,lol,lol]\n");
    for i in 1..10 {
        laughs += &format!(
            "l{i}: &l{i} [{}]\n",
            vec![format!("*l{}", i - 1); 9].join(",")
        );
    }
    let p = problems(&laughs);
    assert!(
        p.len() == 1 && (p[0].contains("repetition limit") || p[0].contains("expands to more")),
        "{p:?}"
    );
}

#[test]
fn refuses_too_many_tokens_before_parsing() {
    // 2.2 MB of one-letter items: six times the tokens of a 10,000-rule config.
    let text = format!("{LISTENER}a: [{}]\n", vec!["a"; 1_100_000].join(","));
    assert_eq!(
        problems(&text),
        ["config has more than 2000000 YAML tokens (reached at line 2)"]
    );
}

#[test]
fn aliases_within_the_budget_still_work() {
    let text = format!(
        "{LISTENER}allow:\n  - name: a\n    hosts: [a.example.com]\n    clients: &corp [10.0.0.0/8, 192.168.0.0/16]\n  - name: b\n    hosts: [b.example.com]\n    clients: *corp\n"
    );
    let config = Config::from_yaml(&text).unwrap();
    assert_eq!(config.policy.rules()[1].clients.len(), 2);
}

#[test]
fn refuses_oversized_text_by_its_size() {
    let text = format!("{LISTENER}#{}\n", "x".repeat(17 * MIB));
    assert_eq!(problems(&text), ["config is 17.1 MiB; the limit is 16 MiB"]);
    assert_eq!(mib(16 * MIB), "16 MiB");
    assert_eq!(mib(16 * MIB + 1), "16.1 MiB");
}

#[test]
fn a_10k_rule_config_is_well_inside_every_limit() {
    let text = rules(10_000);
    assert!(text.len() * 4 < MAX_CONFIG_BYTES, "{} bytes", text.len());
    assert!(depth(&text) * 10 < MAX_DEPTH, "depth {}", depth(&text));
    assert!(scan(&text, MAX_DEPTH, MAX_TOKENS / 5).is_ok(), "tokens");
    let budget = Budget {
        left: Cell::new(MAX_VALUES),
        exceeded: Cell::new(false),
    };
    serde_yaml_ng::Deserializer::from_str(&text)
        .deserialize_any(Node(&budget))
        .unwrap();
    let values = MAX_VALUES - budget.left.get();
    assert!(values * 4 < MAX_VALUES, "{values} values");
    assert_eq!(
        Config::from_yaml(&text).unwrap().policy.rules().len(),
        10_000
    );
}

#[test]
fn builds_the_same_tree_as_serde_yaml_ng() {
    let text = "a: [1, -2, 3.5, true, ~, 'x', !t y, !u [z]]\nb: {c: d}\n? [k]\n: v\n";
    let ours = read_yaml(text).unwrap();
    let theirs: Value = serde_yaml_ng::from_str(text).unwrap();
    assert_eq!(ours, theirs);
    let dup = read_yaml("a: 1\na: 2\n").unwrap_err();
    assert!(
        dup.message.contains("duplicate entry with key `a`"),
        "{dup}"
    );
}
