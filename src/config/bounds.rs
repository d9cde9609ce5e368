//! Limits on config text, checked before and while the YAML parser reads it, so that a hostile
//! or broken config (a 100,000-level `[[[[...`, an alias bomb, a huge file) is refused in
//! milliseconds instead of costing seconds of CPU or gigabytes of memory. First step of
//! [`Config::from_yaml`](super::Config::from_yaml). Pure.
//!
//! Three bounds, each cheap:
//!
//! - **Size**: [`MAX_CONFIG_BYTES`]. A 10,000-rule config (two hosts, two client CIDRs, ports,
//!   `tls` and `mode` per rule) is about 2.2 MB; 16 MiB leaves room for seven times that, or
//!   for comments and long host lists, while capping what the parser can be asked to hold.
//! - **Nesting and tokens**: [`MAX_DEPTH`] and [`MAX_TOKENS`], measured by [`scan`], a linear
//!   pass that follows libyaml's own scanner rules (quotes, comments, block scalars, plain
//!   scalars, indentation) without building anything. libyaml's cost grows with the flow
//!   nesting (`[`/`{`) times the number of tokens, so a deep flow config is refused before
//!   libyaml sees it; so is one too large for serde_yaml_ng to hold its events.
//! - **Expansion**: [`MAX_VALUES`]. Aliases are replayed by serde_yaml_ng each time they
//!   are used, and its own repetition limit still lets a 24 KB "billion laughs" build a 1 GB
//!   tree, so the tree is built here, counting every value, and abandoned past the limit.

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, Visitor};
use serde_yaml_ng::value::{Tag, TaggedValue};
use serde_yaml_ng::{Mapping, Value};

use super::Problem;

mod scan;
pub use scan::{scan, Excess};

/// The largest config text accepted, in bytes (see the module comment for why).
pub const MAX_CONFIG_BYTES: usize = 16 * MIB;
/// The deepest nesting of collections accepted; a real config nests about five deep.
pub const MAX_DEPTH: usize = 64;
/// The most YAML tokens (scalars, indicators, brackets; a block collection counts as one) a
/// config may have; the 10,000-rule config above has about 330,000. serde_yaml_ng holds every
/// parser event before building the tree, so this bounds its memory (some 150 bytes an event):
/// 16 MiB of `[a,a,a,...` would otherwise cost 1.3 GB and seconds before any other check.
pub const MAX_TOKENS: usize = 2_000_000;
/// The most values (scalars and collections, aliases counted each time they are used) a
/// config may expand to; the 10,000-rule config above has 190,000.
pub const MAX_VALUES: usize = 1_000_000;

const MIB: usize = 1024 * 1024;

/// The YAML tree of `text`, or the one problem that stopped it from being read.
pub(super) fn read_yaml(text: &str) -> Result<Value, Problem> {
    let problem = |message: String| Problem::new("", message);
    if text.len() > MAX_CONFIG_BYTES {
        return Err(problem(format!(
            "config is {}; the limit is {}",
            mib(text.len()),
            mib(MAX_CONFIG_BYTES)
        )));
    }
    match scan(text, MAX_DEPTH, MAX_TOKENS) {
        Ok(()) => {}
        Err(Excess::Depth { line }) => {
            return Err(problem(format!(
                "config nests deeper than {MAX_DEPTH} levels at line {line}"
            )))
        }
        Err(Excess::Tokens { line }) => {
            return Err(problem(format!(
                "config has more than {MAX_TOKENS} YAML tokens (reached at line {line})"
            )))
        }
    }
    let budget = Budget {
        left: Cell::new(MAX_VALUES),
        exceeded: Cell::new(false),
    };
    serde_yaml_ng::Deserializer::from_str(text)
        .deserialize_any(Node(&budget))
        .map_err(|e| {
            if budget.exceeded.get() {
                return problem(format!(
                    "config expands to more than {MAX_VALUES} values \
                     (anchors count each time an alias uses them)"
                ));
            }
            let at = e.location().map(|l| (l.line(), l.column()));
            let hint = at
                .and_then(|(line, _)| super::hints::yaml(text, line))
                .map(|h| format!("; {h}"))
                .unwrap_or_default();
            Problem {
                at,
                ..problem(format!("not valid YAML: {e}{hint}"))
            }
        })
}

/// `bytes` in MiB, rounded up to a tenth so that just over the limit never reads as equal.
fn mib(bytes: usize) -> String {
    let tenths = bytes.saturating_mul(10).div_ceil(MIB);
    if tenths.is_multiple_of(10) {
        format!("{} MiB", tenths / 10)
    } else {
        format!("{}.{} MiB", tenths / 10, tenths % 10)
    }
}

/// Builds a [`Value`] like serde_yaml_ng's own `Deserialize` does, one unit of [`Budget`] per
/// value, so an alias bomb is abandoned after [`MAX_VALUES`] values instead of filling memory.
struct Node<'b>(&'b Budget);

struct Budget {
    left: Cell<usize>,
    exceeded: Cell<bool>,
}

impl Node<'_> {
    fn take<E: de::Error>(&self) -> Result<(), E> {
        match self.0.left.get().checked_sub(1) {
            Some(left) => {
                self.0.left.set(left);
                Ok(())
            }
            None => {
                self.0.exceeded.set(true);
                Err(E::custom("too many values"))
            }
        }
    }
}

impl<'de> DeserializeSeed<'de> for Node<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Node<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Value, E> {
        self.take()?;
        Ok(Value::Bool(b))
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Value, E> {
        self.take()?;
        Ok(Value::Number(n.into()))
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Value, E> {
        self.take()?;
        Ok(Value::Number(n.into()))
    }

    fn visit_f64<E: de::Error>(self, n: f64) -> Result<Value, E> {
        self.take()?;
        Ok(Value::Number(n.into()))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Value, E> {
        self.take()?;
        Ok(Value::String(s.to_owned()))
    }

    fn visit_string<E: de::Error>(self, s: String) -> Result<Value, E> {
        self.take()?;
        Ok(Value::String(s))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        self.take()?;
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        self.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.take()?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(Node(self.0))? {
            items.push(item);
        }
        Ok(Value::Sequence(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        self.take()?;
        let mut mapping = Mapping::new();
        while let Some(key) = map.next_key_seed(Node(self.0))? {
            let value = map.next_value_seed(Node(self.0))?;
            if mapping.contains_key(&key) {
                return Err(de::Error::custom(match key.as_str() {
                    Some(k) => format!("duplicate entry with key `{k}`"),
                    None => "duplicate entry".to_owned(),
                }));
            }
            mapping.insert(key, value);
        }
        Ok(Value::Mapping(mapping))
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Value, A::Error> {
        self.take()?;
        let (tag, contents) = data.variant::<String>()?;
        if tag.is_empty() {
            return Err(de::Error::custom("empty YAML tag is not allowed"));
        }
        let value = de::VariantAccess::newtype_variant_seed(contents, Node(self.0))?;
        Ok(Value::Tagged(Box::new(TaggedValue {
            tag: Tag::new(tag),
            value,
        })))
    }
}

#[cfg(test)]
mod tests;
