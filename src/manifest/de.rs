//! A `serde::Deserializer` over the position tree of [`yaml`](super::yaml),
//! so that a section's keys are a `#[derive(Deserialize)]` struct.
//!
//! The raw section types hold typed [`Leaf`]s and [`Many`]s where a key is a
//! scalar (or a list of them), and [`Field`]s (a value of any shape with its
//! dotted key and place) where the section's validation reads the shape
//! itself. A leaf is interpolated (`${VAR}`) and typed by [`FromText`] here,
//! while the section is read; one that fails keeps its problem, which the
//! reader reports when it takes the value. So serde never stops at a bad
//! value, and each problem is reported where the validation reaches it (a
//! probe with two checks says so, not what is wrong inside each). Typing
//! starts from the exact text written (`1.0`, `012`, `yes` stay what was
//! written — passwords and defaults depend on it).
//!
//! Unknown keys are found here, not with `serde_ignored`: a struct's
//! `deserialize_struct` call names its fields, and this deserializer holds
//! the key's position and dotted path, which `serde_ignored`'s path lacks.
//! Each one becomes a [`Problem`] with the nearest valid key as a hint.

use std::cell::RefCell;
use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use crate::manifest::error::{nearest, Problem};
use crate::manifest::interp::interpolate;
use crate::manifest::yaml::{Node, Pos, Value};

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
    from_node_in(node, path, &|_| None, problems)
}

/// [`from_node`], with the variables `${NAME}` reads in leaves.
pub fn from_node_in<T: for<'de> Deserialize<'de>>(
    node: &Node,
    path: &str,
    lookup: Lookup<'_>,
    problems: &mut Vec<Problem>,
) -> Option<T> {
    let sink = RefCell::new(std::mem::take(problems));
    let out = T::deserialize(NodeDe {
        node,
        path: path.to_string(),
        sink: &sink,
        lookup,
    });
    *problems = sink.into_inner();
    out.ok()
}

/// A variable's value, for `${NAME}` in leaves.
pub type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// A scalar, interpolated and typed, with its dotted key and place. `value`
/// is `None` when it was written empty or failed (then `problem` says why).
#[derive(Debug, Clone, PartialEq)]
pub struct Leaf<T> {
    /// The dotted key, for messages.
    pub key: String,
    /// Where the value is.
    pub pos: Pos,
    /// The variables the value was made of.
    pub used: Vec<String>,
    /// The variables written bare (`${NAME}`) that were unset, so blank;
    /// the reader warns about them when it takes the value.
    pub unset: Vec<String>,
    /// The typed value.
    pub value: Option<T>,
    /// Why there is no value, ending with the variables it came from.
    pub problem: Option<String>,
}

/// A scalar or a list of them (`env_file: a.env` or `[a.env, b.env]`); a
/// single scalar keeps the key without an index.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Many<T>(pub Vec<Leaf<T>>);

/// A leaf's type: made from the leaf's text, or a message saying what to
/// write instead (the reader adds where, and the variables it came from).
pub trait FromText: Sized {
    /// What to write, for a list or mapping where a scalar of this type
    /// belongs ("expected a whole number, found a list").
    const WHAT: &'static str = "a string";

    /// Parse `text` (already interpolated).
    fn from_text(text: &str) -> Result<Self, String>;
}

impl FromText for String {
    fn from_text(text: &str) -> Result<String, String> {
        Ok(text.to_string())
    }
}

impl FromText for Duration {
    const WHAT: &'static str = "a duration like `10s`";

    fn from_text(text: &str) -> Result<Duration, String> {
        crate::manifest::units::parse_duration(text)
    }
}

impl FromText for bool {
    const WHAT: &'static str = "true or false";

    fn from_text(t: &str) -> Result<bool, String> {
        match t.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" | "1" => Ok(true),
            "false" | "no" | "off" | "0" => Ok(false),
            _ => Err(format!("expected true or false, found `{t}`")),
        }
    }
}

macro_rules! whole_numbers {
    ($($t:ty)*) => {$(
        impl FromText for $t {
            const WHAT: &'static str = "a whole number";

            fn from_text(t: &str) -> Result<$t, String> {
                t.trim()
                    .parse()
                    .map_err(|_| format!("expected a whole number, found `{t}`"))
            }
        }
    )*};
}
whole_numbers!(u16 u32 i64 usize);

/// Enums read from a fixed set of words: `(words, value)` rows, and the
/// message for anything else (`{}` is the text).
pub fn one_of<T: Copy>(t: &str, table: &[(&[&str], T)], other: &str) -> Result<T, String> {
    table
        .iter()
        .find(|(words, _)| words.contains(&t))
        .map(|(_, v)| *v)
        .ok_or_else(|| other.replace("{}", t))
}

/// Where a key that may be absent is written, or `or`.
pub fn pos_or<T>(l: &Option<Leaf<T>>, or: Pos) -> Pos {
    l.as_ref().map_or(or, |l| l.pos)
}

impl<'de, T: FromText> Deserialize<'de> for Leaf<T> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Leaf<T>, D::Error> {
        let (Field { key, node }, text) = handoff(d)?;
        // A list or mapping is named against what the key takes, not as a
        // string: `priority: [1]` wants a number.
        let text = match &node.value {
            Value::Seq(_) | Value::Map(_) => {
                Err(format!("expected {}, found {}", T::WHAT, node.kind()))
            }
            _ => text,
        };
        let (Interpolated { used, unset, .. }, parsed) = match text {
            // A value made from a variable names it: the fix is in the
            // container's environment, not in the YAML line.
            Ok(Some(i)) => {
                let parsed =
                    T::from_text(&i.text).map_err(|e| format!("{e}{}", from_vars(&i.used)));
                (i, parsed.map(Some))
            }
            Ok(None) => (Interpolated::default(), Ok(None)),
            Err(e) => (Interpolated::default(), Err(e)),
        };
        let (value, problem) = match parsed {
            Ok(v) => (v, None),
            Err(e) => (None, Some(e)),
        };
        Ok(Leaf {
            key,
            pos: node.pos,
            used,
            unset,
            value,
            problem,
        })
    }
}

// A list of leaves, or one: asked for a newtype of this name, the
// deserializer visits a sequence either way.
const MANY: &str = "$stackctl::manifest::Many";

impl<'de, T: FromText> Deserialize<'de> for Many<T> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Many<T>, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: FromText> Visitor<'de> for V<T> {
            type Value = Many<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a manifest scalar or list")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Many<T>, A::Error> {
                let mut out = Vec::new();
                while let Some(l) = s.next_element()? {
                    out.push(l);
                }
                Ok(Many(out))
            }
        }
        d.deserialize_newtype_struct(MANY, V(PhantomData))
    }
}

// `Field` cannot travel through serde's data model (it is a whole subtree
// with positions), so the deserializer hands it over beside it: it is
// asked for a struct of this name, leaves the field here with its text
// interpolated (for a `Leaf`) and visits a unit.
const FIELD: &str = "$stackctl::manifest::Field";

/// A scalar's text, interpolated; `Ok(None)` for null; `Err` says why
/// there is none.
type Text = Result<Option<Interpolated>, String>;

/// What [`interpolate`] made of a scalar.
#[derive(Default)]
struct Interpolated {
    text: String,
    /// Every variable read.
    used: Vec<String>,
    /// The bare `${NAME}`s that were unset.
    unset: Vec<String>,
}

thread_local! {
    static HANDOFF: RefCell<Option<(Field, Text)>> = const { RefCell::new(None) };
}

fn handoff<'de, D: de::Deserializer<'de>>(d: D) -> Result<(Field, Text), D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = (Field, Text);
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a manifest node")
        }
        fn visit_unit<E: de::Error>(self) -> Result<(Field, Text), E> {
            HANDOFF
                .with(|h| h.borrow_mut().take())
                .ok_or_else(|| E::custom("a Field reads only from a manifest node"))
        }
    }
    d.deserialize_struct(FIELD, &[], V)
}

impl<'de> Deserialize<'de> for Field {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Field, D::Error> {
        handoff(d).map(|(f, _)| f)
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
    lookup: Lookup<'a>,
}

impl<'a> NodeDe<'a> {
    fn child(&self, node: &'a Node, path: String) -> NodeDe<'a> {
        NodeDe {
            node,
            path,
            sink: self.sink,
            lookup: self.lookup,
        }
    }

    fn problem(&self, pos: Pos, key: String, message: String, hint: Option<String>) {
        self.sink.borrow_mut().push(Problem {
            pos,
            key,
            message,
            hint,
        });
    }

    fn text(&self) -> Text {
        match &self.node.value {
            Value::Null => Ok(None),
            Value::Scalar { text, .. } => {
                let (mut used, mut unset) = (Vec::new(), Vec::new());
                let text = interpolate(text, self.lookup, &mut used, &mut unset)?;
                Ok(Some(Interpolated { text, used, unset }))
            }
            _ => Err(format!("expected a string, found {}", self.node.kind())),
        }
    }
}

/// " (from `A`)" for the variables a value was made of, or nothing.
pub fn from_vars(used: &[String]) -> String {
    if used.is_empty() {
        String::new()
    } else {
        let names: Vec<String> = used.iter().map(|n| format!("`{n}`")).collect();
        format!(" (from {})", names.join(", "))
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
                items: (items.iter().enumerate()).map(|(i, n)| (format!("{}[{i}]", self.path), n)),
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
            HANDOFF.with(|h| *h.borrow_mut() = Some((field, self.text())));
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

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        v: V,
    ) -> Result<V::Value, Stop> {
        match (name, &self.node.value) {
            (MANY, Value::Seq(_)) => self.deserialize_any(v),
            (MANY, Value::Null) => v.visit_seq(Items {
                de: &self,
                items: std::iter::empty(),
            }),
            // One scalar (or a wrong shape, which its leaf reports) under
            // the key itself, not `key[0]`.
            (MANY, _) => v.visit_seq(Items {
                de: &self,
                items: std::iter::once((self.path.clone(), self.node)),
            }),
            _ => v.visit_newtype_struct(self),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Stop> {
        v.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple
        tuple_struct map enum identifier
    }
}

struct Items<'b, 'a, I> {
    de: &'b NodeDe<'a>,
    items: I,
}

impl<'de, 'a, I: Iterator<Item = (String, &'a Node)>> SeqAccess<'de> for Items<'_, 'a, I> {
    type Error = Stop;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Stop> {
        match self.items.next() {
            Some((path, n)) => seed.deserialize(self.de.child(n, path)).map(Some),
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

    #[test]
    fn leaves_are_typed_and_keep_their_problem_for_later() {
        #[derive(Deserialize)]
        struct Typed {
            wait: Option<Leaf<Duration>>,
            on: Option<Leaf<bool>>,
            list: Option<Leaf<String>>,
            files: Many<String>,
            one: Many<String>,
        }
        let root =
            parse("wait: ${W}\non:\nlist: [1]\nfiles: [a, \"${Z:?set Z}\"]\none: b\n").unwrap();
        let lookup = |n: &str| (n == "W").then(|| "5 parsecs".to_string());
        let mut problems = Vec::new();
        let t: Typed = from_node_in(&root, "sec", &lookup, &mut problems).unwrap();
        // Nothing is reported while reading: the reader reports a leaf's
        // problem when it takes the value.
        assert!(problems.is_empty());
        let wait = t.wait.unwrap();
        assert_eq!(
            (wait.key.as_str(), wait.pos),
            ("sec.wait", Pos { line: 1, col: 7 })
        );
        assert_eq!(wait.value, None);
        assert_eq!(
            wait.problem.as_deref(),
            Some("`5 parsecs`: unknown unit `parsecs` (use ms, s, m, h or d) (from `W`)")
        );
        // Written empty: present, no value, no problem.
        let on = t.on.unwrap();
        assert_eq!((on.value, on.problem), (None, None));
        assert_eq!(
            t.list.unwrap().problem.as_deref(),
            Some("expected a string, found a list")
        );
        assert_eq!(t.files.0[0].key, "sec.files[0]");
        assert_eq!(t.files.0[0].value.as_deref(), Some("a"));
        assert!(t.files.0[1].problem.as_deref().unwrap().contains("set Z"));
        // One scalar keeps the key itself.
        assert_eq!(t.one.0.len(), 1);
        assert_eq!(t.one.0[0].key, "sec.one");
    }

    #[test]
    fn a_list_or_mapping_is_named_against_the_type_the_key_takes() {
        #[derive(Deserialize)]
        struct Typed {
            wait: Leaf<Duration>,
            count: Leaf<u32>,
            on: Leaf<bool>,
            name: Leaf<String>,
        }
        let root = parse("wait: [1s]\ncount: {a: 1}\non: [yes]\nname: [x]\n").unwrap();
        let t: Typed = from_node(&root, "sec", &mut Vec::new()).unwrap();
        let p = |l: Option<String>| l.unwrap_or_default();
        assert_eq!(
            p(t.wait.problem),
            "expected a duration like `10s`, found a list"
        );
        assert_eq!(
            p(t.count.problem),
            "expected a whole number, found a mapping"
        );
        assert_eq!(p(t.on.problem), "expected true or false, found a list");
        assert_eq!(p(t.name.problem), "expected a string, found a list");
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
