//! The config reference (`docs/config.md`), its schema (`docs/config.schema.json`) and the
//! parser agree: the shipped config and every `yaml` example in the docs pass both the schema
//! and `Config::from_yaml`; every key the parser accepts is in the schema and the docs; the
//! schema has no key the parser refuses. Offline: no schema is fetched.

use std::path::Path;

use egress_proxy::config::parse::KEY_SETS;
use egress_proxy::config::Config;
use serde_json::Value as Json;

fn read(relative: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn schema() -> Json {
    serde_json::from_str(&read("docs/config.schema.json")).expect("schema is JSON")
}

fn validator() -> jsonschema::Validator {
    let schema = schema();
    jsonschema::meta::validate(&schema).expect("schema is valid draft 2020-12");
    jsonschema::draft202012::new(&schema).expect("schema compiles")
}

/// The ```yaml blocks of a Markdown text, with the line each starts on.
fn yaml_blocks(markdown: &str) -> Vec<(usize, String)> {
    let mut blocks = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (i, line) in markdown.lines().enumerate() {
        match (&mut current, line.trim_end()) {
            (None, "```yaml") => current = Some((i + 1, String::new())),
            (Some(_), "```") => blocks.extend(current.take()),
            (Some((_, text)), _) => {
                text.push_str(line);
                text.push('\n');
            }
            (None, _) => {}
        }
    }
    assert!(current.is_none(), "unclosed ```yaml block");
    blocks
}

/// Checks one YAML text against the schema and the parser, panicking with `what` and every
/// error.
fn check(validator: &jsonschema::Validator, what: &str, text: &str) {
    let instance: Json = serde_yaml_ng::from_str(text)
        .unwrap_or_else(|e| panic!("{what}: not YAML the schema can see: {e}"));
    let errors: Vec<String> = validator
        .iter_errors(&instance)
        .map(|e| format!("  {} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{what}: fails the schema:\n{}",
        errors.join("\n")
    );
    if let Err(problems) = Config::from_yaml(text) {
        panic!("{what}: refused by the parser:\n{problems}");
    }
}

#[test]
fn the_shipped_config_passes_the_schema_and_the_parser() {
    check(
        &validator(),
        "config/egress.yaml",
        &read("config/egress.yaml"),
    );
}

#[test]
fn every_yaml_example_in_the_docs_passes_the_schema_and_the_parser() {
    let validator = validator();
    let blocks = yaml_blocks(&read("docs/config.md"));
    assert!(
        blocks.len() >= 5,
        "found only {} yaml examples",
        blocks.len()
    );
    for (line, text) in blocks {
        check(&validator, &format!("docs/config.md:{line}"), &text);
    }
}

#[test]
fn the_schema_refuses_what_the_parser_refuses_in_shape() {
    let validator = validator();
    for bad in [
        "listeners: { explicit: 127.0.0.1:3128 }\nallow: [{ name: a, hosts: [a.example.com], prots: [443] }]\n",
        "listeners: { explicit: 127.0.0.1:3128 }\nallow: [{ name: a, hosts: [a.example.com], ports: ['443'] }]\n",
        "listeners: { explicit: 127.0.0.1:3128 }\nprincipals: { ci: my-plain-token }\n",
        "listeners: { explicit: 127.0.0.1:3128 }\nallow: [{ name: a, hosts: [a.example.com], max_bytes_up: 4 parsecs }]\n",
        "listeners: { explicit: 127.0.0.1:3128 }\ndeny_help: \"two\\nlines\"\n",
        "listeners: { explicit: 127.0.0.1:3128 }\nresolver: { nameservers: [10.0.0.2] }\n",
        "listeners: { explicit: 127.0.0.1:3128 }\nresolver: { attempts: 0 }\n",
        "listeners: { explicit: 127.0.0.1:3128 }\nresolver: { cache: { max_ttl: 300s, ttl: 1 } }\n",
        "listeners: { explicit: 127.0.0.1:3128 }\nallow: [{ name: a, hosts: [pypi.org:443] }]\n",
    ] {
        let instance: Json = serde_yaml_ng::from_str(bad).unwrap();
        assert!(!validator.is_valid(&instance), "schema accepted:\n{bad}");
        assert!(Config::from_yaml(bad).is_err(), "parser accepted:\n{bad}");
    }
}

/// Follows `$ref`s to `#/$defs/...` within the schema.
fn resolve<'s>(root: &'s Json, node: &'s Json) -> &'s Json {
    match node.get("$ref").and_then(Json::as_str) {
        Some(reference) => {
            let name = reference
                .strip_prefix("#/$defs/")
                .unwrap_or_else(|| panic!("unexpected $ref {reference}"));
            resolve(root, &root["$defs"][name])
        }
        None => node,
    }
}

/// The object schemas `node` may be: itself, or its `oneOf`/`anyOf` branches.
fn objects<'s>(root: &'s Json, node: &'s Json) -> Vec<&'s Json> {
    let node = resolve(root, node);
    let mut found = vec![node];
    for key in ["oneOf", "anyOf"] {
        for branch in node.get(key).and_then(Json::as_array).into_iter().flatten() {
            found.extend(objects(root, branch));
        }
    }
    found
        .into_iter()
        .filter(|n| n.get("properties").is_some())
        .collect()
}

/// The schema node for a `KEY_SETS` place such as `allow[].upload_budget`.
fn place<'s>(root: &'s Json, at: &str) -> &'s Json {
    let mut node = root;
    if at.is_empty() {
        return node;
    }
    for segment in at.split('.') {
        let (key, item) = match segment.strip_suffix("[]") {
            Some(key) => (key, true),
            None => (segment, false),
        };
        node = objects(root, node)
            .into_iter()
            .find_map(|o| o["properties"].get(key))
            .unwrap_or_else(|| panic!("schema has no `{key}` on the way to `{at}`"));
        if item {
            node = &resolve(root, node)["items"];
        }
    }
    node
}

#[test]
fn every_parser_key_is_in_the_schema_and_the_schema_has_no_other() {
    let root = schema();
    for (at, keys) in KEY_SETS {
        let objects = objects(&root, place(&root, at));
        assert!(!objects.is_empty(), "schema has no object at `{at}`");
        let mut in_schema: Vec<&str> = objects
            .iter()
            .flat_map(|o| o["properties"].as_object().into_iter().flatten())
            .map(|(k, _)| k.as_str())
            .collect();
        in_schema.sort_unstable();
        in_schema.dedup();
        let mut parser: Vec<&str> = keys.to_vec();
        parser.sort_unstable();
        assert_eq!(in_schema, parser, "keys at `{at}`: schema vs parser");
        for o in &objects {
            assert_eq!(
                o.get("additionalProperties"),
                Some(&Json::Bool(false)),
                "`{at}` must refuse unknown keys as the parser does"
            );
        }
    }
}

#[test]
fn every_parser_key_is_documented() {
    let docs = read("docs/config.md");
    for (at, keys) in KEY_SETS {
        for key in *keys {
            assert!(
                docs.contains(&format!("`{key}`")),
                "docs/config.md does not mention `{key}` (at `{at}`)"
            );
        }
    }
}

#[test]
fn yaml_blocks_are_found_with_their_lines() {
    let md = "x\n```yaml\na: 1\n```\n```text\nb\n```\n```yaml\nc: 2\n```\n";
    assert_eq!(
        yaml_blocks(md),
        vec![(2, "a: 1\n".to_owned()), (8, "c: 2\n".to_owned())]
    );
}
