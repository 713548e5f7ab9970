//! Amazon Ion text, as Kestra's row files (`.ion`) hold it: one top-level value per row, each
//! followed by a newline. This module owns the conversion between Ion text and swoop's JSON
//! value model, and the streaming row writer and reader every task that outputs or reads rows
//! uses.
//!
//! Why not the `ion-rs` crate: its 1.0 API was still moving between release candidates, it is a
//! large build for what rows need, and rows are JSON values on both sides here. This module
//! reads the whole Ion 1.0 text grammar (comments, annotations, symbols, long strings, decimals,
//! floats, hex/binary integers, timestamps, blobs, clobs, s-expressions) and maps it onto JSON:
//! timestamps and symbols become strings, annotations are dropped (Kestra's
//! `ZonedDateTime::"…"` reads as the string), blobs become base64 text, decimals and floats
//! become numbers. It writes what a JSON value needs: null, bools, integers, floats (`1.5e0`),
//! strings, lists and structs. The tests check both directions, including Kestra-written files.

use std::fmt::Write as _;

use base64::Engine as _;
use serde_json::{Map, Number, Value};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt};

/// Appends the Ion text of `value` to `out`.
pub fn write_value(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                let _ = write!(out, "{i}");
            } else if let Some(u) = n.as_u64() {
                let _ = write!(out, "{u}");
            } else if let Some(f) = n.as_f64() {
                write_float(out, f);
            }
        }
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (k, v)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(out, k);
                out.push(':');
                write_value(out, v);
            }
            out.push('}');
        }
    }
}

/// The Ion text of `value` (one line, no newline).
pub fn to_text(value: &Value) -> String {
    let mut out = String::new();
    write_value(&mut out, value);
    out
}

fn write_float(out: &mut String, f: f64) {
    if f.is_nan() {
        out.push_str("nan");
    } else if f.is_infinite() {
        out.push_str(if f > 0.0 { "+inf" } else { "-inf" });
    } else {
        // `{:e}` is Ion's float syntax: 1.5e0, 1e300, -2.5e-7.
        let _ = write!(out, "{f:e}");
    }
}

fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Why Ion text could not be read.
#[derive(Debug, Clone, PartialEq)]
pub enum IonError {
    /// The text ends inside a value (more input may complete it).
    Incomplete,
    Syntax {
        offset: usize,
        message: String,
    },
}

impl std::fmt::Display for IonError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IonError::Incomplete => f.write_str("the Ion text ends inside a value"),
            IonError::Syntax { offset, message } => {
                write!(f, "invalid Ion at byte {offset}: {message}")
            }
        }
    }
}

impl std::error::Error for IonError {}

/// Every top-level value of `text`.
pub fn from_text(text: &str) -> Result<Vec<Value>, IonError> {
    let mut parser = Parser::new(text);
    let mut values = Vec::new();
    while let Some(v) = parser.next_top_level()? {
        values.push(v);
    }
    Ok(values)
}

/// Writes rows as Ion text, one per line, through a buffer.
pub struct IonWriter<W> {
    inner: W,
    buffer: String,
    rows: u64,
    bytes: u64,
}

const FLUSH_AT: usize = 64 * 1024;

impl<W: AsyncWrite + Unpin> IonWriter<W> {
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            buffer: String::with_capacity(FLUSH_AT + 1024),
            rows: 0,
            bytes: 0,
        }
    }

    pub async fn write_row(&mut self, row: &Value) -> std::io::Result<()> {
        write_value(&mut self.buffer, row);
        self.buffer.push('\n');
        self.rows += 1;
        if self.buffer.len() >= FLUSH_AT {
            self.flush_buffer().await?;
        }
        Ok(())
    }

    async fn flush_buffer(&mut self) -> std::io::Result<()> {
        self.inner.write_all(self.buffer.as_bytes()).await?;
        self.bytes += self.buffer.len() as u64;
        self.buffer.clear();
        Ok(())
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Writes what is buffered and shuts the writer down (which completes a storage file).
    /// Returns the number of rows and bytes.
    pub async fn finish(mut self) -> std::io::Result<(u64, u64)> {
        self.flush_buffer().await?;
        self.inner.shutdown().await?;
        Ok((self.rows, self.bytes))
    }
}

/// Reads top-level values one at a time from a stream, holding only the current value in
/// memory.
pub struct IonReader<R> {
    inner: R,
    buffer: String,
    /// Bytes of `buffer` already parsed.
    consumed: usize,
    eof: bool,
}

impl<R: AsyncBufRead + Unpin> IonReader<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            buffer: String::new(),
            consumed: 0,
            eof: false,
        }
    }

    /// The next row, `None` at the end.
    pub async fn next(&mut self) -> std::io::Result<Option<Value>> {
        loop {
            let rest = &self.buffer[self.consumed..];
            let mut parser = Parser::new(rest);
            // A value is complete once a line ends after it (values never split inside a token
            // across lines, except strings, which report Incomplete), or at the end of input.
            match parser.next_top_level() {
                Ok(Some(v)) if self.eof || parser.pos < rest.len() => {
                    self.consumed += parser.pos;
                    return Ok(Some(v));
                }
                Ok(None) if self.eof => return Ok(None),
                Err(IonError::Syntax { offset, message }) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        IonError::Syntax {
                            offset: offset + self.consumed,
                            message,
                        },
                    ));
                }
                Err(IonError::Incomplete) if self.eof => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        IonError::Incomplete,
                    ));
                }
                _ => {}
            }
            // Need more input: drop what was parsed, read a line.
            if self.consumed > 0 {
                self.buffer.drain(..self.consumed);
                self.consumed = 0;
            }
            let n = self.inner.read_line(&mut self.buffer).await?;
            if n == 0 {
                self.eof = true;
            }
        }
    }
}

struct Parser<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
}

fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b == b'$'
}

fn is_ident(b: u8) -> bool {
    is_ident_start(b) || b.is_ascii_digit()
}

/// Characters that end a number, symbol or keyword.
fn is_stop(b: u8) -> bool {
    b.is_ascii_whitespace()
        || matches!(
            b,
            b',' | b']' | b'}' | b')' | b'{' | b'[' | b'(' | b'"' | b'\'' | b':' | b'/'
        )
}

impl<'a> Parser<'a> {
    fn new(text: &'a str) -> Self {
        Self {
            text,
            bytes: text.as_bytes(),
            pos: 0,
        }
    }

    fn error<T>(&self, message: impl Into<String>) -> Result<T, IonError> {
        Err(IonError::Syntax {
            offset: self.pos,
            message: message.into(),
        })
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn skip_ws(&mut self) -> Result<(), IonError> {
        loop {
            match self.peek() {
                Some(b) if b.is_ascii_whitespace() => self.pos += 1,
                Some(b'/') if self.bytes.get(self.pos + 1) == Some(&b'/') => {
                    match self.text[self.pos..].find('\n') {
                        Some(i) => self.pos += i + 1,
                        None => self.pos = self.bytes.len(),
                    }
                }
                Some(b'/') if self.bytes.get(self.pos + 1) == Some(&b'*') => {
                    match self.text[self.pos + 2..].find("*/") {
                        Some(i) => self.pos += i + 4,
                        None => return Err(IonError::Incomplete),
                    }
                }
                _ => return Ok(()),
            }
        }
    }

    fn next_top_level(&mut self) -> Result<Option<Value>, IonError> {
        self.skip_ws()?;
        if self.pos >= self.bytes.len() {
            return Ok(None);
        }
        self.value().map(Some)
    }

    /// A value, with any annotations before it.
    fn value(&mut self) -> Result<Value, IonError> {
        loop {
            self.skip_ws()?;
            let start = self.pos;
            let v = self.atom()?;
            // `name::` is an annotation: drop it and read the value it annotates.
            let save = self.pos;
            self.skip_ws()?;
            if self.text[self.pos..].starts_with("::") && self.is_annotation_token(start) {
                self.pos += 2;
                continue;
            }
            self.pos = save;
            return Ok(v);
        }
    }

    fn is_annotation_token(&self, start: usize) -> bool {
        matches!(self.bytes.get(start), Some(b) if is_ident_start(*b) || *b == b'\'')
    }

    fn atom(&mut self) -> Result<Value, IonError> {
        let Some(b) = self.peek() else {
            return Err(IonError::Incomplete);
        };
        match b {
            b'"' => self.short_string().map(Value::String),
            b'\'' if self.text[self.pos..].starts_with("'''") => {
                self.long_strings().map(Value::String)
            }
            b'\'' => self.quoted_symbol().map(Value::String),
            b'[' => self.sequence(b']').map(Value::Array),
            b'(' => self.sequence(b')').map(Value::Array),
            b'{' if self.bytes.get(self.pos + 1) == Some(&b'{') => self.lob(),
            b'{' => self.structure(),
            b if b.is_ascii_digit() || b == b'-' || b == b'+' => self.number_or_timestamp(),
            b if is_ident_start(b) => self.keyword_or_symbol(),
            _ => self.error(format!("unexpected `{}`", b as char)),
        }
    }

    /// A `"string"` or a `'quoted symbol'`: the text up to the closing `quote`, unescaped.
    fn quoted(&mut self, quote: u8) -> Result<String, IonError> {
        self.pos += 1;
        let mut out = String::new();
        loop {
            let Some(b) = self.peek() else {
                return Err(IonError::Incomplete);
            };
            match b {
                b if b == quote => {
                    self.pos += 1;
                    return Ok(out);
                }
                b'\\' => self.escape(&mut out)?,
                b'\n' if quote == b'"' => return self.error("a newline inside a \"string\""),
                _ => self.push_next_char(&mut out),
            }
        }
    }

    fn short_string(&mut self) -> Result<String, IonError> {
        self.quoted(b'"')
    }

    fn quoted_symbol(&mut self) -> Result<String, IonError> {
        self.quoted(b'\'')
    }

    /// Copies the character at the cursor and moves past it.
    fn push_next_char(&mut self, out: &mut String) {
        let c = self.text[self.pos..].chars().next().unwrap_or('\u{fffd}');
        out.push(c);
        self.pos += c.len_utf8();
    }

    /// `'''a''' '''b'''`: adjacent long strings concatenate.
    fn long_strings(&mut self) -> Result<String, IonError> {
        let mut out = String::new();
        loop {
            self.pos += 3;
            loop {
                if self.text[self.pos..].starts_with("'''") {
                    self.pos += 3;
                    break;
                }
                let Some(b) = self.peek() else {
                    return Err(IonError::Incomplete);
                };
                if b == b'\\' {
                    self.escape(&mut out)?;
                } else {
                    self.push_next_char(&mut out);
                }
            }
            let save = self.pos;
            self.skip_ws()?;
            if !self.text[self.pos..].starts_with("'''") {
                self.pos = save;
                return Ok(out);
            }
        }
    }

    fn escape(&mut self, out: &mut String) -> Result<(), IonError> {
        let Some(&c) = self.bytes.get(self.pos + 1) else {
            return Err(IonError::Incomplete);
        };
        self.pos += 2;
        let simple = match c {
            b'n' => Some('\n'),
            b'r' => Some('\r'),
            b't' => Some('\t'),
            b'0' => Some('\0'),
            b'a' => Some('\u{7}'),
            b'b' => Some('\u{8}'),
            b'f' => Some('\u{c}'),
            b'v' => Some('\u{b}'),
            b'"' => Some('"'),
            b'\'' => Some('\''),
            b'\\' => Some('\\'),
            b'/' => Some('/'),
            b'?' => Some('?'),
            b'\n' => return Ok(()),
            _ => None,
        };
        if let Some(s) = simple {
            out.push(s);
            return Ok(());
        }
        let digits = match c {
            b'x' => 2,
            b'u' => 4,
            b'U' => 8,
            _ => return self.error(format!("unknown escape `\\{}`", c as char)),
        };
        let Some(hex) = self.text.get(self.pos..self.pos + digits) else {
            return Err(IonError::Incomplete);
        };
        let code = u32::from_str_radix(hex, 16).or_else(|_| self.error("bad hex escape"))?;
        self.pos += digits;
        match char::from_u32(code) {
            Some(ch) => out.push(ch),
            None => return self.error(format!("escape U+{code:X} is not a character")),
        }
        Ok(())
    }

    fn sequence(&mut self, close: u8) -> Result<Vec<Value>, IonError> {
        self.pos += 1;
        let mut items = Vec::new();
        loop {
            self.skip_ws()?;
            match self.peek() {
                None => return Err(IonError::Incomplete),
                Some(b) if b == close => {
                    self.pos += 1;
                    return Ok(items);
                }
                Some(b',') if close == b']' => {
                    self.pos += 1;
                }
                Some(_) if close == b')' && self.is_operator() => {
                    let start = self.pos;
                    while self
                        .peek()
                        .is_some_and(|b| b"!#%&*+-./;<=>?@^`|~".contains(&b))
                    {
                        self.pos += 1;
                    }
                    items.push(Value::String(self.text[start..self.pos].to_owned()));
                }
                Some(_) => items.push(self.value()?),
            }
        }
    }

    fn is_operator(&self) -> bool {
        match self.peek() {
            Some(b'+' | b'-') => !self
                .bytes
                .get(self.pos + 1)
                .is_some_and(|b| b.is_ascii_digit() || *b == b'i'),
            Some(b) => b"!#%&*./;<=>?@^`|~".contains(&b),
            None => false,
        }
    }

    fn structure(&mut self) -> Result<Value, IonError> {
        self.pos += 1;
        let mut map = Map::new();
        loop {
            self.skip_ws()?;
            match self.peek() {
                None => return Err(IonError::Incomplete),
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(Value::Object(map));
                }
                Some(b',') => self.pos += 1,
                Some(b'"') => {
                    let key = self.short_string()?;
                    self.field(&mut map, key)?;
                }
                Some(b'\'') if self.text[self.pos..].starts_with("'''") => {
                    let key = self.long_strings()?;
                    self.field(&mut map, key)?;
                }
                Some(b'\'') => {
                    let key = self.quoted_symbol()?;
                    self.field(&mut map, key)?;
                }
                Some(b) if is_ident_start(b) => {
                    let start = self.pos;
                    while self.peek().is_some_and(is_ident) {
                        self.pos += 1;
                    }
                    let key = self.text[start..self.pos].to_owned();
                    self.field(&mut map, key)?;
                }
                Some(b) => return self.error(format!("unexpected `{}` in a struct", b as char)),
            }
        }
    }

    fn field(&mut self, map: &mut Map<String, Value>, key: String) -> Result<(), IonError> {
        self.skip_ws()?;
        match self.peek() {
            None => return Err(IonError::Incomplete),
            Some(b':') => self.pos += 1,
            Some(_) => return self.error(format!("expected `:` after the field name `{key}`")),
        }
        let value = self.value()?;
        map.insert(key, value);
        Ok(())
    }

    /// `{{ base64 }}` (blob, kept as base64 text) or `{{ "text" }}` (clob).
    fn lob(&mut self) -> Result<Value, IonError> {
        self.pos += 2;
        self.skip_ws()?;
        let value = match self.peek() {
            Some(b'"') => Value::String(self.short_string()?),
            Some(b'\'') if self.text[self.pos..].starts_with("'''") => {
                Value::String(self.long_strings()?)
            }
            _ => {
                let Some(end) = self.text[self.pos..].find("}}") else {
                    return Err(IonError::Incomplete);
                };
                let b64: String = self.text[self.pos..self.pos + end]
                    .chars()
                    .filter(|c| !c.is_whitespace())
                    .collect();
                if base64::engine::general_purpose::STANDARD
                    .decode(&b64)
                    .is_err()
                {
                    return self.error("a blob that is not base64");
                }
                self.pos += end;
                Value::String(b64)
            }
        };
        self.skip_ws()?;
        if !self.text[self.pos..].starts_with("}}") {
            return if self.pos + 2 > self.bytes.len() {
                Err(IonError::Incomplete)
            } else {
                self.error("expected `}}` to close a lob")
            };
        }
        self.pos += 2;
        Ok(value)
    }

    fn token_end(&self) -> usize {
        let mut end = self.pos;
        while end < self.bytes.len() && !is_stop(self.bytes[end]) {
            end += 1;
        }
        end
    }

    fn keyword_or_symbol(&mut self) -> Result<Value, IonError> {
        let start = self.pos;
        while self.peek().is_some_and(is_ident) {
            self.pos += 1;
        }
        let word = &self.text[start..self.pos];
        Ok(match word {
            "null" => {
                // `null.string`, `null.int` …
                if self.peek() == Some(b'.') {
                    self.pos += 1;
                    while self.peek().is_some_and(is_ident) {
                        self.pos += 1;
                    }
                }
                Value::Null
            }
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            "nan" => Value::Null,
            _ => Value::String(word.to_owned()),
        })
    }

    fn number_or_timestamp(&mut self) -> Result<Value, IonError> {
        let rest = &self.bytes[self.pos..];
        let is_timestamp = rest.len() >= 5
            && rest[..4].iter().all(u8::is_ascii_digit)
            && (rest[4] == b'-' || rest[4] == b'T');
        if is_timestamp {
            // Timestamps hold `:` (a stop character elsewhere): 2024-01-01T10:00:00.000Z.
            let len = rest
                .iter()
                .take_while(|b| {
                    b.is_ascii_digit()
                        || matches!(b, b'-' | b'T' | b':' | b'.' | b'+' | b'Z' | b'z')
                })
                .count();
            let token = &self.text[self.pos..self.pos + len];
            self.pos += len;
            return Ok(Value::String(token.to_owned()));
        }
        let end = self.token_end();
        let token = &self.text[self.pos..end];
        if token == "+inf" || token == "-inf" {
            self.pos = end;
            return Ok(Value::Null);
        }
        let clean: String = token.chars().filter(|c| *c != '_').collect();
        let (negative, digits) = match clean.strip_prefix('-') {
            Some(d) => (true, d),
            None => (false, clean.strip_prefix('+').unwrap_or(&clean)),
        };
        let radix = if digits.starts_with("0x") || digits.starts_with("0X") {
            Some(16)
        } else if digits.starts_with("0b") || digits.starts_with("0B") {
            Some(2)
        } else {
            None
        };
        let value = if let Some(radix) = radix {
            i64::from_str_radix(&digits[2..], radix)
                .ok()
                .map(|i| Value::from(if negative { -i } else { i }))
        } else if digits.bytes().all(|b| b.is_ascii_digit()) && !digits.is_empty() {
            clean
                .trim_start_matches('+')
                .parse::<i64>()
                .map(Value::from)
                .or_else(|_| {
                    clean
                        .trim_start_matches('+')
                        .parse::<u64>()
                        .map(Value::from)
                })
                .ok()
                .or_else(|| {
                    clean
                        .parse::<f64>()
                        .ok()
                        .and_then(Number::from_f64)
                        .map(Value::Number)
                })
        } else {
            // Decimal (`1.5`, `1.5d-3`) or float (`1.5e0`).
            let float = clean.replace(['d', 'D'], "e");
            float.trim_start_matches('+').parse::<f64>().ok().map(|f| {
                if f.fract() == 0.0 && f.abs() < 9.0e15 && !clean.contains(['e', 'E']) {
                    Value::from(f as i64)
                } else {
                    Number::from_f64(f)
                        .map(Value::Number)
                        .unwrap_or(Value::Null)
                }
            })
        };
        match value {
            Some(v) => {
                self.pos = end;
                Ok(v)
            }
            None => self.error(format!("`{token}` is not a number")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn writes_and_reads_back_json_values() {
        let row = json!({
            "id": 1, "big": u64::MAX, "neg": -5, "price": 166.89, "name": "Kelly \"K\" Olsen\n",
            "ok": true, "none": null, "tags": ["a", "b"], "nested": {"x": [1, {"y": 2.5e-7}]},
            "unicode": "café ✓", "ctl": "\u{1}"
        });
        let text = to_text(&row);
        assert!(text.contains("\"price\":1.6689e2"), "{text}");
        let back = from_text(&text).unwrap();
        assert_eq!(back, vec![row]);
    }

    #[test]
    fn reads_what_kestra_writes() {
        let text = "{order_id:\"1\",price:166.89,quantity:1,created:2024-01-01T10:00:00.000Z,\
                    zoned:ZonedDateTime::\"2024-01-01T10:00:00+01:00[Europe/Paris]\",day:2024-01-01,\
                    blob:{{aGVsbG8=}},amount:1.5d2,f:1.0e0,n:null.string,s:sym,'quoted sym':'a b'}\n\
                    // a comment\n{a:1} /* block */ {a:2}\n[1, 0x1F, 0b101, -1_000] (+ 1 2)\n\
                    '''long ''' '''string'''";
        let rows = from_text(text).unwrap();
        assert_eq!(rows.len(), 6);
        assert_eq!(
            rows[0],
            json!({"order_id": "1", "price": 166.89, "quantity": 1,
                   "created": "2024-01-01T10:00:00.000Z",
                   "zoned": "2024-01-01T10:00:00+01:00[Europe/Paris]", "day": "2024-01-01",
                   "blob": "aGVsbG8=", "amount": 150, "f": 1.0, "n": null, "s": "sym",
                   "quoted sym": "a b"})
        );
        assert_eq!(rows[3], json!([1, 31, 5, -1000]));
        assert_eq!(rows[4], json!(["+", 1, 2]));
        assert_eq!(rows[5], json!("long string"));
    }

    #[test]
    fn reports_incomplete_and_syntax_errors() {
        assert_eq!(from_text("{a:1"), Err(IonError::Incomplete));
        assert!(matches!(from_text("{a 1}"), Err(IonError::Syntax { .. })));
        assert!(matches!(from_text("12abc"), Err(IonError::Syntax { .. })));
    }

    #[tokio::test]
    async fn streams_rows_through_writer_and_reader() {
        let mut buf = Vec::new();
        let mut writer = IonWriter::new(&mut buf);
        for i in 0..10_000 {
            writer
                .write_row(&json!({"i": i, "text": format!("row {i}")}))
                .await
                .unwrap();
        }
        let (rows, bytes) = writer.finish().await.unwrap();
        assert_eq!(rows, 10_000);
        assert_eq!(bytes as usize, buf.len());
        let mut reader = IonReader::new(&buf[..]);
        let mut n = 0;
        while let Some(row) = reader.next().await.unwrap() {
            assert_eq!(row["i"], json!(n));
            n += 1;
        }
        assert_eq!(n, 10_000);
        // A value spread over several lines.
        let mut reader = IonReader::new(&b"{a:\n1,\nb:'''x\ny'''}\n7"[..]);
        assert_eq!(
            reader.next().await.unwrap(),
            Some(json!({"a": 1, "b": "x\ny"}))
        );
        assert_eq!(reader.next().await.unwrap(), Some(json!(7)));
        assert_eq!(reader.next().await.unwrap(), None);
    }
}
