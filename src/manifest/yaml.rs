//! A YAML document as a tree of nodes that remember where they were written.
//!
//! serde-based YAML loaders lose positions once a value is deserialised, so a
//! semantic error ("unknown service `db`") could not name its line. This
//! small tree keeps a [`Pos`] on every node; the reader in `read/` turns it
//! into the typed model and reports every error with its place.

use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// A 1-based line and column in the manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub col: usize,
}

impl Pos {
    fn from_marker(m: &Marker) -> Pos {
        // yaml-rust2 counts lines from 1 and columns from 0.
        Pos {
            line: m.line(),
            col: m.col() + 1,
        }
    }
}

/// One node of the document.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Where the node starts.
    pub pos: Pos,
    /// What it holds.
    pub value: Value,
}

/// The three shapes YAML has, plus null.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `~`, `null` or an empty value.
    Null,
    /// Any scalar; `quoted` tells `"1"` (a string) from `1`.
    Scalar { text: String, quoted: bool },
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping; keys are scalars (others are rejected while loading).
    Map(Vec<(Key, Node)>),
}

/// A mapping key and where it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    /// The key's text.
    pub name: String,
    /// Where the key is.
    pub pos: Pos,
}

impl Node {
    /// A short name of the node's shape, for error messages.
    pub fn kind(&self) -> &'static str {
        match &self.value {
            Value::Null => "null",
            Value::Scalar { .. } => "a scalar",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

/// A syntax error, with its place.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntaxError {
    /// Where the parser stopped.
    pub pos: Pos,
    /// What it said.
    pub message: String,
}

/// Parse one YAML document. An empty document is a `Null` node.
pub fn parse(text: &str) -> Result<Node, SyntaxError> {
    let mut loader = Loader {
        parser: Parser::new_from_str(text),
        anchors: Vec::new(),
    };
    loader.document()
}

struct Loader<'a> {
    parser: Parser<std::str::Chars<'a>>,
    // Anchors are rare in manifests but legal YAML; keep them working.
    anchors: Vec<(usize, Node)>,
}

impl Loader<'_> {
    fn next(&mut self) -> Result<(Event, Pos), SyntaxError> {
        match self.parser.next_token() {
            Ok((ev, mark)) => Ok((ev, Pos::from_marker(&mark))),
            Err(e) => Err(SyntaxError {
                pos: Pos::from_marker(e.marker()),
                message: e.info().to_string(),
            }),
        }
    }

    fn document(&mut self) -> Result<Node, SyntaxError> {
        let mut root = None;
        loop {
            let (ev, pos) = self.next()?;
            match ev {
                Event::StreamStart | Event::DocumentEnd => {}
                Event::DocumentStart => {
                    if root.is_some() {
                        return Err(SyntaxError {
                            pos,
                            message: "a manifest holds one YAML document; found a second `---`"
                                .into(),
                        });
                    }
                    root = Some(self.node()?);
                }
                Event::StreamEnd => break,
                _ => {
                    return Err(SyntaxError {
                        pos,
                        message: "unexpected YAML event".into(),
                    })
                }
            }
        }
        Ok(root.unwrap_or(Node {
            pos: Pos { line: 1, col: 1 },
            value: Value::Null,
        }))
    }

    fn node(&mut self) -> Result<Node, SyntaxError> {
        let (ev, pos) = self.next()?;
        self.node_from(ev, pos)
    }

    fn node_from(&mut self, ev: Event, pos: Pos) -> Result<Node, SyntaxError> {
        let (node, anchor) = match ev {
            Event::Scalar(text, style, anchor, _tag) => {
                let quoted = !matches!(style, TScalarStyle::Plain);
                let value =
                    if !quoted && matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL") {
                        Value::Null
                    } else {
                        Value::Scalar { text, quoted }
                    };
                (Node { pos, value }, anchor)
            }
            Event::SequenceStart(anchor, _) => {
                let mut items = Vec::new();
                loop {
                    let (ev, p) = self.next()?;
                    if ev == Event::SequenceEnd {
                        break;
                    }
                    items.push(self.node_from(ev, p)?);
                }
                (
                    Node {
                        pos,
                        value: Value::Seq(items),
                    },
                    anchor,
                )
            }
            Event::MappingStart(anchor, _) => {
                let mut entries: Vec<(Key, Node)> = Vec::new();
                loop {
                    let (ev, kpos) = self.next()?;
                    if ev == Event::MappingEnd {
                        break;
                    }
                    let key = self.node_from(ev, kpos)?;
                    let name = match key.value {
                        Value::Scalar { text, .. } => text,
                        Value::Null => String::new(),
                        _ => {
                            return Err(SyntaxError {
                                pos: kpos,
                                message: "mapping keys must be plain strings".into(),
                            })
                        }
                    };
                    let value = self.node()?;
                    if entries.iter().any(|(k, _)| k.name == name) {
                        return Err(SyntaxError {
                            pos: kpos,
                            message: format!("duplicate key `{name}`"),
                        });
                    }
                    entries.push((Key { name, pos: kpos }, value));
                }
                (
                    Node {
                        pos,
                        value: Value::Map(entries),
                    },
                    anchor,
                )
            }
            Event::Alias(id) => {
                let found = self.anchors.iter().rev().find(|(a, _)| *a == id);
                match found {
                    Some((_, n)) => {
                        let mut n = n.clone();
                        n.pos = pos;
                        return Ok(n);
                    }
                    None => {
                        return Err(SyntaxError {
                            pos,
                            message: "alias to an unknown anchor".into(),
                        })
                    }
                }
            }
            other => {
                return Err(SyntaxError {
                    pos,
                    message: format!("unexpected YAML event {other:?}"),
                })
            }
        };
        if anchor > 0 {
            self.anchors.push((anchor, node.clone()));
        }
        Ok(node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based() {
        let n = parse("a: 1\nb:\n  c: x\n").unwrap();
        let Value::Map(entries) = n.value else {
            panic!()
        };
        assert_eq!(entries[0].0.pos, Pos { line: 1, col: 1 });
        let Value::Map(inner) = &entries[1].1.value else {
            panic!()
        };
        assert_eq!(inner[0].0.pos, Pos { line: 3, col: 3 });
        assert_eq!(inner[0].1.pos, Pos { line: 3, col: 6 });
    }

    #[test]
    fn quoted_scalars_are_not_null() {
        let n = parse("a: ''\nb: ~\nc: \"~\"").unwrap();
        let Value::Map(e) = n.value else { panic!() };
        assert!(matches!(e[0].1.value, Value::Scalar { .. }));
        assert_eq!(e[1].1.value, Value::Null);
        assert!(matches!(e[2].1.value, Value::Scalar { .. }));
    }

    #[test]
    fn duplicate_keys_are_errors() {
        let e = parse("a: 1\na: 2\n").unwrap_err();
        assert_eq!(e.pos.line, 2);
        assert!(e.message.contains("duplicate key `a`"));
    }

    #[test]
    fn empty_document_is_null() {
        assert_eq!(parse("").unwrap().value, Value::Null);
    }

    #[test]
    fn anchors_and_aliases_resolve() {
        let n = parse("a: &x {k: 1}\nb: *x\n").unwrap();
        let Value::Map(e) = n.value else { panic!() };
        assert_eq!(e[0].1.value, e[1].1.value);
    }
}
