//! YAML with positions: a small tree ([`Node`]) where every map, key, list and scalar knows its
//! line and column, so that validation can say where each problem is. Scalars follow YAML 1.2's
//! core schema (plain `true`, `12`, `1.5`, `null`, `~` are typed; quoted ones are strings).
//!
//! Anchors and aliases are resolved (an alias is a copy of the anchored node), merge keys
//! (`<<: *base`) are applied, duplicate keys are refused, and the input must hold exactly one
//! document.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, ScanError, Span, StrInput, Tag};
use serde_json::Value;

use crate::validate::Diagnostic;

/// A YAML value with the position (1-based line and column) where it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub line: usize,
    pub column: usize,
    pub value: NodeValue,
}

#[derive(Debug, Clone, PartialEq)]
pub enum NodeValue {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    String(String),
    Seq(Vec<Node>),
    /// Entries in document order; the key is a node too (for its position).
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// The node as JSON (map keys as text).
    pub fn to_json(&self) -> Value {
        match &self.value {
            NodeValue::Null => Value::Null,
            NodeValue::Bool(b) => Value::Bool(*b),
            NodeValue::Int(i) => Value::from(*i),
            NodeValue::Float(f) => serde_json::Number::from_f64(*f)
                .map(Value::Number)
                .unwrap_or(Value::Null),
            NodeValue::String(s) => Value::String(s.clone()),
            NodeValue::Seq(items) => Value::Array(items.iter().map(Node::to_json).collect()),
            NodeValue::Map(entries) => Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.key_text(), v.to_json()))
                    .collect(),
            ),
        }
    }

    /// The node as a map key: strings as they are, other scalars as their text (`12`, `true`,
    /// `null`), lists and maps as compact JSON.
    pub fn key_text(&self) -> String {
        match &self.value {
            NodeValue::String(s) => s.clone(),
            NodeValue::Null => "null".to_string(),
            NodeValue::Bool(b) => b.to_string(),
            NodeValue::Int(i) => i.to_string(),
            NodeValue::Float(f) => {
                if f.is_nan() {
                    ".nan".to_string()
                } else if f.is_infinite() {
                    if *f > 0.0 { ".inf" } else { "-.inf" }.to_string()
                } else {
                    format!("{f:?}")
                }
            }
            NodeValue::Seq(_) | NodeValue::Map(_) => self.to_json().to_string(),
        }
    }

    /// The string, if this is a string node.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            NodeValue::String(s) => Some(s),
            _ => None,
        }
    }

    /// The entries, if this is a map.
    pub fn as_map(&self) -> Option<&[(Node, Node)]> {
        match &self.value {
            NodeValue::Map(entries) => Some(entries),
            _ => None,
        }
    }

    /// The items, if this is a list.
    pub fn as_seq(&self) -> Option<&[Node]> {
        match &self.value {
            NodeValue::Seq(items) => Some(items),
            _ => None,
        }
    }

    /// The value of the entry whose key is `key`, if this is a map holding one.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.as_map()?
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v)
    }
}

/// How deeply maps and lists may nest (deeper documents are refused rather than risking the
/// stack in the recursive walks over the tree).
const MAX_DEPTH: usize = 256;
/// How many nodes a document may expand to once aliases are copied (a guard against
/// "billion laughs" documents).
const MAX_NODES: usize = 250_000;

/// Parses one YAML document. A syntax error is returned with its position.
pub fn parse(source: &str) -> Result<Node, Diagnostic> {
    let mut loader = Loader {
        parser: Parser::new_from_str(source),
        anchors: HashMap::new(),
        nodes: 0,
    };
    loader.document()
}

fn diagnostic(span: Span, message: impl Into<String>) -> Diagnostic {
    Diagnostic {
        line: span.start.line(),
        column: span.start.col() + 1,
        message: message.into(),
    }
}

fn scan_error(e: &ScanError) -> Diagnostic {
    Diagnostic {
        line: e.marker().line(),
        column: e.marker().col() + 1,
        message: format!("invalid YAML: {}", e.info()),
    }
}

struct Loader<'a> {
    parser: Parser<'a, StrInput<'a>>,
    /// Anchored nodes by anchor id, with their size in nodes.
    anchors: HashMap<usize, (Node, usize)>,
    /// Nodes produced so far (aliases count for the nodes they copy).
    nodes: usize,
}

impl<'a> Loader<'a> {
    fn next(&mut self) -> Result<(Event<'a>, Span), Diagnostic> {
        match self.parser.next_event() {
            Some(Ok(ev)) => Ok(ev),
            Some(Err(e)) => Err(scan_error(&e)),
            None => Err(Diagnostic {
                line: 1,
                column: 1,
                message: "invalid YAML: unexpected end of input".into(),
            }),
        }
    }

    fn document(&mut self) -> Result<Node, Diagnostic> {
        let empty = || Diagnostic {
            line: 1,
            column: 1,
            message: "the flow is empty".into(),
        };
        // StreamStart, then DocumentStart (or StreamEnd when there is no document at all).
        let (mut ev, mut span) = self.next()?;
        if matches!(ev, Event::StreamStart) {
            (ev, span) = self.next()?;
        }
        match ev {
            Event::DocumentStart(_) => {}
            Event::StreamEnd => return Err(empty()),
            other => {
                return Err(diagnostic(
                    span,
                    format!("invalid YAML: unexpected {other:?}"),
                ));
            }
        }
        let (ev, span) = self.next()?;
        let empty_document =
            matches!(&ev, Event::Scalar(text, ScalarStyle::Plain, 0, None) if text.is_empty());
        let root = self.node(ev, span, 0)?;
        // DocumentEnd, then StreamEnd; a second DocumentStart means several documents.
        loop {
            let (ev, span) = self.next()?;
            match ev {
                Event::DocumentEnd => {}
                Event::StreamEnd => break,
                Event::DocumentStart(_) => {
                    return Err(diagnostic(
                        span,
                        "expected one YAML document, found several (remove the `---` separating them)",
                    ));
                }
                other => {
                    return Err(diagnostic(
                        span,
                        format!("invalid YAML: unexpected {other:?}"),
                    ));
                }
            }
        }
        if empty_document {
            return Err(empty());
        }
        Ok(root)
    }

    fn count(&mut self, n: usize, span: Span) -> Result<(), Diagnostic> {
        self.nodes += n;
        if self.nodes > MAX_NODES {
            return Err(diagnostic(
                span,
                format!(
                    "the document is too large (more than {MAX_NODES} values once aliases are expanded)"
                ),
            ));
        }
        Ok(())
    }

    fn node(&mut self, ev: Event<'a>, span: Span, depth: usize) -> Result<Node, Diagnostic> {
        let line = span.start.line();
        let column = span.start.col() + 1;
        let start = self.nodes;
        let (node, anchor) = match ev {
            Event::Scalar(text, style, anchor, tag) => {
                self.count(1, span)?;
                let value = scalar_value(&text, style, tag.as_deref());
                (
                    Node {
                        line,
                        column,
                        value,
                    },
                    anchor,
                )
            }
            Event::Alias(id) => {
                let Some((anchored, size)) = self.anchors.get(&id) else {
                    return Err(diagnostic(span, "invalid YAML: unknown alias"));
                };
                let mut node = anchored.clone();
                let size = *size;
                self.count(size, span)?;
                node.line = line;
                node.column = column;
                return Ok(node);
            }
            Event::SequenceStart(anchor, _) => {
                self.count(1, span)?;
                if depth >= MAX_DEPTH {
                    return Err(diagnostic(
                        span,
                        format!("the document nests deeper than {MAX_DEPTH} levels"),
                    ));
                }
                let mut items = Vec::new();
                loop {
                    let (ev, span) = self.next()?;
                    if matches!(ev, Event::SequenceEnd) {
                        break;
                    }
                    items.push(self.node(ev, span, depth + 1)?);
                }
                let value = NodeValue::Seq(items);
                (
                    Node {
                        line,
                        column,
                        value,
                    },
                    anchor,
                )
            }
            Event::MappingStart(anchor, _) => {
                self.count(1, span)?;
                if depth >= MAX_DEPTH {
                    return Err(diagnostic(
                        span,
                        format!("the document nests deeper than {MAX_DEPTH} levels"),
                    ));
                }
                let value = NodeValue::Map(self.mapping(depth)?);
                (
                    Node {
                        line,
                        column,
                        value,
                    },
                    anchor,
                )
            }
            other => {
                return Err(diagnostic(
                    span,
                    format!("invalid YAML: unexpected {other:?}"),
                ));
            }
        };
        if anchor != 0 {
            let size = self.nodes - start;
            self.anchors.insert(anchor, (node.clone(), size));
        }
        Ok(node)
    }

    /// The entries of a mapping whose `MappingStart` was just read.
    fn mapping(&mut self, depth: usize) -> Result<Vec<(Node, Node)>, Diagnostic> {
        let mut entries: Vec<(Node, Node)> = Vec::new();
        // Where each key was first seen, by its text.
        let mut seen: HashMap<String, usize> = HashMap::new();
        // Entries from merge keys (`<<: *base`), applied once the explicit ones are known.
        let mut merged: Vec<(Node, Node)> = Vec::new();
        loop {
            let (ev, span) = self.next()?;
            if matches!(ev, Event::MappingEnd) {
                break;
            }
            let is_merge =
                matches!(&ev, Event::Scalar(text, ScalarStyle::Plain, _, None) if text == "<<");
            let key = self.node(ev, span, depth + 1)?;
            let (ev, span) = self.next()?;
            let value = self.node(ev, span, depth + 1)?;
            if is_merge {
                match &value.value {
                    NodeValue::Map(m) => merged.extend(m.iter().cloned()),
                    NodeValue::Seq(items) if items.iter().all(|i| i.as_map().is_some()) => {
                        for item in items {
                            merged.extend(item.as_map().unwrap_or_default().iter().cloned());
                        }
                    }
                    _ => {
                        return Err(Diagnostic {
                            line: value.line,
                            column: value.column,
                            message: "a merge key `<<` takes a map or a list of maps (such as `<<: *base`)".into(),
                        });
                    }
                }
                continue;
            }
            let text = key.key_text();
            if let Some(first) = seen.get(&text) {
                return Err(Diagnostic {
                    line: key.line,
                    column: key.column,
                    message: format!("duplicate key `{text}` (first at line {first})"),
                });
            }
            seen.insert(text, key.line);
            entries.push((key, value));
        }
        // Explicit keys win over merged ones; among merged maps, the first one listed wins.
        for (k, v) in merged {
            if let std::collections::hash_map::Entry::Vacant(slot) = seen.entry(k.key_text()) {
                slot.insert(k.line);
                entries.push((k, v));
            }
        }
        Ok(entries)
    }
}

/// Types a scalar: quoted and block scalars are strings, plain ones follow the core schema.
fn scalar_value(text: &str, style: ScalarStyle, tag: Option<&Tag>) -> NodeValue {
    if let Some(tag) = tag
        && tag.is_yaml_core_schema()
    {
        let typed = match tag.suffix.as_str() {
            "str" => Some(NodeValue::String(text.to_string())),
            "null" => Some(NodeValue::Null),
            "bool" => parse_bool(text).map(NodeValue::Bool),
            "int" => parse_int(text).map(NodeValue::Int),
            "float" => parse_float(text)
                .or_else(|| parse_int(text).map(|i| i as f64))
                .map(NodeValue::Float),
            _ => None,
        };
        if let Some(typed) = typed {
            return typed;
        }
    }
    if style != ScalarStyle::Plain {
        return NodeValue::String(text.to_string());
    }
    plain_scalar(text)
}

/// A plain scalar under YAML 1.2's core schema.
pub(crate) fn plain_scalar(text: &str) -> NodeValue {
    if matches!(text, "" | "~" | "null" | "Null" | "NULL") {
        return NodeValue::Null;
    }
    if let Some(b) = parse_bool(text) {
        return NodeValue::Bool(b);
    }
    if let Some(i) = parse_int(text) {
        return NodeValue::Int(i);
    }
    if let Some(f) = parse_float(text) {
        return NodeValue::Float(f);
    }
    // A decimal integer too large for 64 bits is still a number.
    if is_decimal_int(text)
        && let Ok(f) = text.parse::<f64>()
    {
        return NodeValue::Float(f);
    }
    NodeValue::String(text.to_string())
}

fn parse_bool(text: &str) -> Option<bool> {
    match text {
        "true" | "True" | "TRUE" => Some(true),
        "false" | "False" | "FALSE" => Some(false),
        _ => None,
    }
}

fn is_decimal_int(text: &str) -> bool {
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

fn parse_int(text: &str) -> Option<i64> {
    if let Some(hex) = text.strip_prefix("0x") {
        if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        return i64::from_str_radix(hex, 16).ok();
    }
    if let Some(oct) = text.strip_prefix("0o") {
        if oct.is_empty() || !oct.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
            return None;
        }
        return i64::from_str_radix(oct, 8).ok();
    }
    if !is_decimal_int(text) {
        return None;
    }
    text.parse().ok()
}

fn parse_float(text: &str) -> Option<f64> {
    let (negative, rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if matches!(rest, ".inf" | ".Inf" | ".INF") {
        return Some(if negative {
            f64::NEG_INFINITY
        } else {
            f64::INFINITY
        });
    }
    if matches!(text, ".nan" | ".NaN" | ".NAN") {
        return Some(f64::NAN);
    }
    // [-+]? ( \. [0-9]+ | [0-9]+ ( \. [0-9]* )? ) ( [eE] [-+]? [0-9]+ )?
    let (mantissa, exponent) = match rest.find(['e', 'E']) {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    };
    let (int_part, frac_part) = match mantissa.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (mantissa, None),
    };
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok = match frac_part {
        None => !int_part.is_empty() && all_digits(int_part),
        Some(frac) if int_part.is_empty() => !frac.is_empty() && all_digits(frac),
        Some(frac) => all_digits(int_part) && all_digits(frac),
    };
    if !mantissa_ok {
        return None;
    }
    if let Some(exp) = exponent {
        let digits = exp.strip_prefix(['-', '+']).unwrap_or(exp);
        if digits.is_empty() || !all_digits(digits) {
            return None;
        }
    } else if frac_part.is_none() {
        // Plain digits are integers, not floats.
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn scalar(text: &str) -> NodeValue {
        let node = parse(&format!("k: {text}\n")).unwrap();
        node.get("k").unwrap().value.clone()
    }

    #[test]
    fn plain_scalars_follow_the_core_schema() {
        assert_eq!(scalar("12"), NodeValue::Int(12));
        assert_eq!(scalar("-7"), NodeValue::Int(-7));
        assert_eq!(scalar("0x1F"), NodeValue::Int(31));
        assert_eq!(scalar("0o17"), NodeValue::Int(15));
        assert_eq!(scalar("1.5"), NodeValue::Float(1.5));
        assert_eq!(scalar("1e3"), NodeValue::Float(1000.0));
        assert_eq!(scalar(".5"), NodeValue::Float(0.5));
        assert_eq!(scalar("-.inf"), NodeValue::Float(f64::NEG_INFINITY));
        assert!(matches!(scalar(".NaN"), NodeValue::Float(f) if f.is_nan()));
        assert_eq!(scalar("true"), NodeValue::Bool(true));
        assert_eq!(scalar("FALSE"), NodeValue::Bool(false));
        assert_eq!(scalar("~"), NodeValue::Null);
        assert_eq!(scalar("Null"), NodeValue::Null);
        assert_eq!(scalar(""), NodeValue::Null);
        // YAML 1.1's booleans and sexagesimals are plain text in 1.2.
        assert_eq!(scalar("yes"), NodeValue::String("yes".into()));
        assert_eq!(scalar("1:30"), NodeValue::String("1:30".into()));
        assert_eq!(scalar("1_000"), NodeValue::String("1_000".into()));
        assert_eq!(scalar("0x"), NodeValue::String("0x".into()));
        assert_eq!(scalar("1.2.3"), NodeValue::String("1.2.3".into()));
        assert_eq!(scalar("PT5S"), NodeValue::String("PT5S".into()));
    }

    #[test]
    fn quoted_block_and_tagged_scalars_are_strings() {
        assert_eq!(scalar("\"12\""), NodeValue::String("12".into()));
        assert_eq!(scalar("'true'"), NodeValue::String("true".into()));
        assert_eq!(scalar("''"), NodeValue::String(String::new()));
        assert_eq!(scalar("!!str 12"), NodeValue::String("12".into()));
        assert_eq!(scalar("!!float 3"), NodeValue::Float(3.0));
        let node = parse("k: |\n  12\n  line\nm: >\n  null\n").unwrap();
        assert_eq!(
            node.get("k").unwrap().value,
            NodeValue::String("12\nline\n".into())
        );
        assert_eq!(
            node.get("m").unwrap().value,
            NodeValue::String("null\n".into())
        );
    }

    #[test]
    fn positions_are_one_based_for_keys_values_and_items() {
        let source = "id: hello\ntasks:\n  - id: a\n    type: x\n    nested: {k: [1, 'two']}\n";
        let root = parse(source).unwrap();
        assert_eq!((root.line, root.column), (1, 1));
        let entries = root.as_map().unwrap();
        let (k, v) = &entries[0];
        assert_eq!((k.line, k.column), (1, 1));
        assert_eq!((v.line, v.column), (1, 5));
        let tasks = root.get("tasks").unwrap();
        let task = &tasks.as_seq().unwrap()[0];
        assert_eq!((task.line, task.column), (3, 5));
        let (type_key, type_value) = &task.as_map().unwrap()[1];
        assert_eq!((type_key.line, type_key.column), (4, 5));
        assert_eq!((type_value.line, type_value.column), (4, 11));
        let nested = task.get("nested").unwrap();
        assert_eq!((nested.line, nested.column), (5, 13));
        let list = nested.get("k").unwrap().as_seq().unwrap();
        assert_eq!((list[1].line, list[1].column), (5, 21));
        assert_eq!(list[1].value, NodeValue::String("two".into()));
    }

    #[test]
    fn duplicate_keys_are_refused_at_the_second() {
        let err = parse("id: a\nnamespace: b\nid: c\n").unwrap_err();
        assert_eq!((err.line, err.column), (3, 1));
        assert_eq!(err.message, "duplicate key `id` (first at line 1)");
        // Same key in different maps is fine.
        assert!(parse("a: {id: 1}\nb: {id: 2}\n").is_ok());
    }

    #[test]
    fn syntax_errors_carry_their_position() {
        let err = parse("id: a\ntasks:\n  - id: b\n   type: c\n").unwrap_err();
        assert!(err.message.starts_with("invalid YAML: "), "{err:?}");
        assert_eq!(err.line, 4);
        let err = parse("a: [1, 2\n").unwrap_err();
        assert!(err.message.starts_with("invalid YAML: "), "{err:?}");
        let err = parse("a: b: c\n").unwrap_err();
        assert_eq!(err.line, 1);
    }

    #[test]
    fn empty_and_multiple_documents_are_refused() {
        for empty in ["", "   \n", "# only a comment\n", "---\n"] {
            assert_eq!(
                parse(empty).unwrap_err().message,
                "the flow is empty",
                "{empty:?}"
            );
        }
        let err = parse("a: 1\n---\nb: 2\n").unwrap_err();
        assert!(
            err.message
                .starts_with("expected one YAML document, found several")
        );
        assert_eq!(err.line, 2);
        // An explicit start and end marker around one document is fine.
        assert_eq!(
            parse("---\na: 1\n...\n").unwrap().to_json(),
            parse("a: 1").unwrap().to_json()
        );
    }

    #[test]
    fn aliases_copy_the_anchored_node_and_merge_keys_apply() {
        let root =
            parse("base: &b {type: x, level: INFO}\none: *b\ntwo:\n  <<: *b\n  level: WARN\n")
                .unwrap();
        assert_eq!(
            root.to_json(),
            json!({
                "base": {"type": "x", "level": "INFO"},
                "one": {"type": "x", "level": "INFO"},
                "two": {"level": "WARN", "type": "x"},
            })
        );
        let one = root.get("one").unwrap();
        assert_eq!((one.line, one.column), (2, 6));
        assert!(parse("a: *nope\n").is_err());
    }

    #[test]
    fn alias_bombs_are_refused() {
        let mut source = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..8 {
            let prev = i - 1;
            source.push_str(&format!(
                "a{i}: &a{i} [*a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}]\n"
            ));
        }
        let err = parse(&source).unwrap_err();
        assert!(err.message.contains("too large"), "{err:?}");
        // Block lists nest without indentation lines: `- - - 1`.
        let deep = format!("{}1\n", "- ".repeat(300));
        assert!(parse(&deep).unwrap_err().message.contains("nests deeper"));
        assert!(parse(&format!("{}1\n", "- ".repeat(100))).is_ok());
        let deep = format!("{}1{}", "[".repeat(300), "]".repeat(300));
        assert!(parse(&deep).is_err());
    }

    #[test]
    fn to_json_keeps_order_and_types() {
        let root =
            parse("z: 1\na: 1.5\nn: ~\nb: [true, \"x\"]\n12: int key\n.nan: nan\ninf: .inf\n")
                .unwrap();
        let json = root.to_json();
        assert_eq!(
            json,
            json!({"z": 1, "a": 1.5, "n": null, "b": [true, "x"], "12": "int key", ".nan": "nan", "inf": null})
        );
        let keys: Vec<&String> = json.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["z", "a", "n", "b", "12", ".nan", "inf"]);
        assert!(json["z"].is_i64());
        assert!(json["a"].is_f64());
    }
}
