//! Line and column for a problem's field path (`allow[2].hosts[0]`), so `validate` can say
//! `FILE:LINE:COL`. The YAML tree ([`serde_yaml_ng::Value`]) keeps no positions, but the
//! parser's errors do: each lookup re-reads the text with a visitor that walks down the path
//! and stops with an error at the node it names, whose location is the answer. Pure.
//!
//! One lookup costs at most one parse of the text, so lookups are rationed to
//! [`LOCATE_BUDGET`] bytes of parsing in all; problems past that keep only their path. A path
//! that names a missing key (`allow[2].name: missing`) is placed at the mapping that lacks it.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::Problem;

/// Bytes of YAML that lookups may parse in all: every problem of a 16 KB config (256), the
/// first four of a 1 MB one; tens of milliseconds at most, on every load and reload.
pub const LOCATE_BUDGET: usize = 4 * 1024 * 1024;

/// The message that marks "found it", distinct from any real parse error.
const FOUND: &str = "\u{0}egress-proxy: located";

/// Fills in `at` for each problem that has a path, within [`LOCATE_BUDGET`].
pub(super) fn locate_all(text: &str, problems: &mut [Problem]) {
    let mut budget = LOCATE_BUDGET;
    for problem in problems.iter_mut().filter(|p| p.at.is_none()) {
        if problem.path.is_empty() {
            continue;
        }
        let Some(left) = budget.checked_sub(text.len().max(1)) else {
            return;
        };
        budget = left;
        problem.at = locate(text, &problem.path);
    }
}

/// The 1-based (line, column) of the node at `path`, or of its nearest ancestor that exists.
pub fn locate(text: &str, path: &str) -> Option<(usize, usize)> {
    let error = serde_yaml_ng::Deserializer::from_str(text)
        .deserialize_any(Seek(path))
        .err()?;
    if !error.to_string().contains(FOUND) {
        return None;
    }
    error.location().map(|l| (l.line(), l.column()))
}

fn found<E: de::Error>() -> E {
    E::custom(FOUND)
}

/// Walks toward the node at the remaining path; at its end, stops with [`FOUND`].
struct Seek<'p>(&'p str);

impl<'de> DeserializeSeed<'de> for Seek<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Seek<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Err(found())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Err(found())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Err(found())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Err(found())
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Err(found())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Err(found())
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Err(found())
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        // `[3]` or `[3].rest` / `[3][1]`: anything else ends here, at the list.
        let Some((index, rest)) = self
            .0
            .strip_prefix('[')
            .and_then(|r| r.split_once(']'))
            .and_then(|(i, rest)| Some((i.parse::<usize>().ok()?, rest)))
        else {
            return Err(found());
        };
        let rest = rest.strip_prefix('.').unwrap_or(rest);
        let mut i = 0;
        while i < index {
            if seq.next_element::<IgnoredAny>()?.is_none() {
                return Err(found());
            }
            i += 1;
        }
        match seq.next_element_seed(Seek(rest))? {
            Some(()) => Ok(()),
            None => Err(found()),
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        if self.0.is_empty() {
            return Err(found());
        }
        while let Some(rest) = map.next_key_seed(Key(self.0))? {
            match rest {
                Some(rest) => return map.next_value_seed(Seek(rest)),
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        // No such key: the problem is about what this mapping lacks.
        Err(found())
    }
}

/// A mapping key, compared with the head of the path. A key that is the whole remaining path
/// is the node itself (an unknown or misspelt key is reported at the key); a key followed by
/// `.` or `[` is descended into. Keys may hold dots (`resolver.hosts.pypi.org`), so the key is
/// matched against the path, not the path split at dots.
struct Key<'p>(&'p str);

impl<'de, 'p> DeserializeSeed<'de> for Key<'p> {
    type Value = Option<&'p str>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de, 'p> Visitor<'de> for Key<'p> {
    type Value = Option<&'p str>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a mapping key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Self::Value, E> {
        let Some(rest) = self.0.strip_prefix(key) else {
            return Ok(None);
        };
        if rest.is_empty() {
            return Err(found());
        }
        if let Some(after) = rest.strip_prefix('.') {
            return Ok(Some(after));
        }
        Ok(rest.starts_with('[').then_some(rest))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
mode: enforce
listeners:
  explicit: 127.0.0.1:3128
allow:
  - name: a
    hosts: [a.example.com, 'b.example.com']
  - name: b
    hosts:
      - c.example.com
      - d.example.com
    color: blue
resolver:
  hosts:
    pypi.example: [127.0.0.1]
";

    #[test]
    fn finds_keys_items_and_nested_values() {
        assert_eq!(locate(TEXT, "mode"), Some((1, 1)));
        assert_eq!(locate(TEXT, "listeners.explicit"), Some((3, 3)));
        assert_eq!(locate(TEXT, "allow[0].hosts[1]"), Some((6, 28)));
        assert_eq!(locate(TEXT, "allow[1].hosts[1]"), Some((10, 9)));
        assert_eq!(locate(TEXT, "allow[1].color"), Some((11, 5)));
        assert_eq!(
            locate(TEXT, "resolver.hosts.pypi.example[0]"),
            Some((14, 20))
        );
    }

    #[test]
    fn a_missing_node_is_placed_at_what_lacks_it() {
        // allow[1] has no `ports`: the rule's mapping, which starts at its first key.
        assert_eq!(locate(TEXT, "allow[1].ports"), Some((7, 5)));
        assert_eq!(locate(TEXT, "allow[5]").map(|(l, _)| l), Some(5));
        assert_eq!(locate(TEXT, "timeouts").map(|(l, _)| l), Some(1));
    }

    #[test]
    fn unreadable_text_has_no_location() {
        // The lookup stops at the parse error before it reaches `b`.
        assert_eq!(locate("{a: 1\n", "b"), None);
        // What comes before a parse error can still be placed.
        assert_eq!(locate("a: 1\nb: [unclosed", "a"), Some((1, 1)));
    }
}
