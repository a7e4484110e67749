//! A `serde::Deserializer` over the position tree of [`yaml`](super::yaml),
//! so that a section's keys are a `#[derive(Deserialize)]` struct.
//!
//! The raw section types hold [`Field`]s: a value of any shape with its
//! dotted key and its place. Typing (numbers, durations, flags) is left to
//! the reader's validation stage, for two reasons: serde stops at its first
//! error, and the reader reports every problem at once; and a scalar keeps
//! its exact text (`1.0`, `012`, `yes` stay what was written — passwords and
//! defaults depend on it).
//!
//! Unknown keys are found here, not with `serde_ignored`: a struct's
//! `deserialize_struct` call names its fields, and this deserializer holds
//! the key's position and dotted path, which `serde_ignored`'s path lacks.
//! Each one becomes a [`Problem`] with the nearest valid key as a hint.

use std::cell::RefCell;
use std::fmt;

use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use crate::manifest::error::{nearest, Problem};
use crate::manifest::yaml::{Node, Value};

/// A value of any shape, where it was written, and its dotted key
/// (`services.web.restart`, `persist.paths[0]`).
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    /// The dotted key, for messages.
    pub key: String,
    /// The value and its position.
    pub node: Node,
}

/// Read `node` (whose dotted key is `path`) into `T`. The problems found on
/// the way (unknown keys, a mapping that is not one) are appended to
/// `problems`; `None` when `T` could not be made (the reason is among them).
pub fn from_node<T: for<'de> Deserialize<'de>>(
    node: &Node,
    path: &str,
    problems: &mut Vec<Problem>,
) -> Option<T> {
    let sink = RefCell::new(std::mem::take(problems));
    let out = T::deserialize(NodeDe {
        node,
        path: path.to_string(),
        sink: &sink,
    });
    *problems = sink.into_inner();
    out.ok()
}

// `Field` cannot travel through serde's data model (it is a whole subtree
// with positions), so the deserializer hands it over beside it: it is
// asked for a struct of this name, leaves the field here and visits a unit.
const FIELD: &str = "$stackctl::manifest::Field";

thread_local! {
    static HANDOFF: RefCell<Option<Field>> = const { RefCell::new(None) };
}

impl<'de> Deserialize<'de> for Field {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Field, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Field;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a manifest node")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Field, E> {
                HANDOFF
                    .with(|h| h.borrow_mut().take())
                    .ok_or_else(|| E::custom("a Field reads only from a manifest node"))
            }
        }
        d.deserialize_struct(FIELD, &[], V)
    }
}

/// The reason is always already in the problem list; this only stops serde.
#[derive(Debug)]
pub struct Stop(String);

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Stop {}

impl de::Error for Stop {
    fn custom<T: fmt::Display>(msg: T) -> Stop {
        Stop(msg.to_string())
    }
}

struct NodeDe<'a> {
    node: &'a Node,
    path: String,
    sink: &'a RefCell<Vec<Problem>>,
}

impl<'a> NodeDe<'a> {
    fn child(&self, node: &'a Node, path: String) -> NodeDe<'a> {
        NodeDe {
            node,
            path,
            sink: self.sink,
        }
    }

    fn problem(
        &self,
        pos: crate::manifest::yaml::Pos,
        key: String,
        message: String,
        hint: Option<String>,
    ) {
        self.sink.borrow_mut().push(Problem {
            pos,
            key,
            message,
            hint,
        });
    }
}

fn dotted(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

impl<'de, 'a> de::Deserializer<'de> for NodeDe<'a> {
    type Error = Stop;

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Stop> {
        match &self.node.value {
            Value::Null => v.visit_unit(),
            Value::Scalar { text, .. } => v.visit_str(text),
            Value::Seq(items) => v.visit_seq(Items {
                de: &self,
                items: items.iter().enumerate(),
            }),
            Value::Map(entries) => v.visit_map(Entries {
                de: &self,
                entries: entries.iter(),
                value: None,
            }),
        }
    }

    // A key written with an empty value is there: the reader tells it from
    // a missing one (`Some` of a null node).
    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Stop> {
        v.visit_some(self)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, Stop> {
        if name == FIELD {
            let field = Field {
                key: self.path.clone(),
                node: self.node.clone(),
            };
            HANDOFF.with(|h| *h.borrow_mut() = Some(field));
            return v.visit_unit();
        }
        match &self.node.value {
            Value::Map(entries) => {
                for (k, _) in entries {
                    if !fields.contains(&k.name.as_str()) {
                        let hint = match nearest(&k.name, fields) {
                            Some(n) => format!("did you mean `{n}`?"),
                            None => format!("valid keys: {}", fields.join(", ")),
                        };
                        let key = dotted(&self.path, &k.name);
                        self.problem(k.pos, key, "unknown key".into(), Some(hint));
                    }
                }
                self.deserialize_any(v)
            }
            // An empty section is an empty mapping.
            Value::Null => v.visit_map(Entries {
                de: &self,
                entries: [].iter(),
                value: None,
            }),
            _ => {
                let message = format!("expected a mapping, found {}", self.node.kind());
                self.problem(self.node.pos, self.path.clone(), message.clone(), None);
                Err(Stop(message))
            }
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Stop> {
        v.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct newtype_struct seq tuple
        tuple_struct map enum identifier
    }
}

struct Items<'b, 'a, I> {
    de: &'b NodeDe<'a>,
    items: I,
}

impl<'de, 'a, I: Iterator<Item = (usize, &'a Node)>> SeqAccess<'de> for Items<'_, 'a, I> {
    type Error = Stop;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Stop> {
        match self.items.next() {
            Some((i, n)) => {
                let path = format!("{}[{i}]", self.de.path);
                seed.deserialize(self.de.child(n, path)).map(Some)
            }
            None => Ok(None),
        }
    }
}

struct Entries<'b, 'a, I> {
    de: &'b NodeDe<'a>,
    entries: I,
    value: Option<(String, &'a Node)>,
}

impl<'de, 'a, I: Iterator<Item = &'a (crate::manifest::yaml::Key, Node)>> MapAccess<'de>
    for Entries<'_, 'a, I>
{
    type Error = Stop;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Stop> {
        match self.entries.next() {
            Some((k, n)) => {
                self.value = Some((dotted(&self.de.path, &k.name), n));
                let key: de::value::StrDeserializer<Stop> = k.name.as_str().into_deserializer();
                seed.deserialize(key).map(Some)
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, Stop> {
        let (path, node) = self
            .value
            .take()
            .ok_or_else(|| Stop("a value without its key".into()))?;
        seed.deserialize(self.de.child(node, path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::yaml::{parse, Pos};

    #[derive(Deserialize, Debug)]
    struct Section {
        alpha: Option<Field>,
        beta: Option<Field>,
    }

    fn read(text: &str) -> (Option<Section>, Vec<Problem>) {
        let mut problems = Vec::new();
        let s = from_node(&parse(text).unwrap(), "sec", &mut problems);
        (s, problems)
    }

    #[test]
    fn fields_keep_text_key_and_position() {
        let (s, p) = read("alpha: 012\nbeta:\n");
        let s = s.unwrap();
        assert!(p.is_empty());
        let a = s.alpha.unwrap();
        assert_eq!(a.key, "sec.alpha");
        assert_eq!(a.node.pos, Pos { line: 1, col: 8 });
        assert!(matches!(&a.node.value, Value::Scalar { text, .. } if text == "012"));
        // Written but empty is present, as a null node.
        assert_eq!(s.beta.unwrap().node.value, Value::Null);
    }

    #[test]
    fn unknown_keys_are_all_reported_with_hints() {
        let (s, p) = read("alpah: 1\nzzz: 2\nbeta: [1, {x: 2}]\n");
        assert!(s.unwrap().alpha.is_none());
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].key, "sec.alpah");
        assert_eq!(p[0].pos, Pos { line: 1, col: 1 });
        assert_eq!(p[0].hint.as_deref(), Some("did you mean `alpha`?"));
        assert_eq!(p[1].hint.as_deref(), Some("valid keys: alpha, beta"));
    }

    #[test]
    fn a_section_that_is_not_a_mapping_is_one_problem() {
        let (s, p) = read("[1, 2]");
        assert!(s.is_none());
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].message, "expected a mapping, found a list");
        assert_eq!(p[0].key, "sec");
        let (s, p) = read("");
        assert!(s.unwrap().alpha.is_none() && p.is_empty());
    }

    #[test]
    fn nested_paths_are_dotted() {
        #[derive(Deserialize)]
        struct Outer {
            list: Vec<Section>,
        }
        let mut problems = Vec::new();
        let root = parse("list: [{alpha: 1}, {gamma: 2}]").unwrap();
        let o: Outer = from_node(&root, "", &mut problems).unwrap();
        assert_eq!(o.list[0].alpha.as_ref().unwrap().key, "list[0].alpha");
        assert_eq!(problems[0].key, "list[1].gamma");
    }

    #[test]
    fn a_field_comes_only_from_a_manifest_node() {
        assert!(serde_json::from_str::<Field>("null").is_err());
        assert!(serde_json::from_str::<Field>("{}").is_err());
    }

    proptest::proptest! {
        // Whatever YAML-ish text a user writes, reading it never panics.
        #[test]
        fn never_panics(text in "[a-z:{}\\[\\], \n\\-'\"#&*!|>0-9.~]{0,80}") {
            if let Ok(root) = parse(&text) {
                let mut problems = Vec::new();
                let _ = from_node::<Section>(&root, "", &mut problems);
                let _ = from_node::<Field>(&root, "", &mut problems);
                let _ = from_node::<Vec<String>>(&root, "", &mut problems);
            }
        }

        // The same for the whole reader, with the manifest's own key names
        // in the mix so that sections are reached.
        #[test]
        fn the_reader_never_panics(
            lines in proptest::collection::vec(
                ("[ ]{0,4}", "(services|web|command|persist|paths|gateway|routes|env|match|readiness|http|logs|backoff|large_files|history|[a-z]{1,3})", "(:|: |:\\n  )", "[a-z0-9\\[\\]{}:,. /${}-]{0,12}"),
                0..12,
            )
        ) {
            let text: String = lines
                .iter()
                .map(|(indent, key, sep, value)| format!("{indent}{key}{sep}{value}\n"))
                .collect();
            let file = std::path::Path::new("/x/stack.yaml");
            let _ = crate::manifest::load_str(&text, file, &Default::default());
        }
    }
}
