//! Reading SQL text as each server's lexer does, just enough to find `:name` placeholders and
//! statement ends outside string literals, quoted identifiers, comments (and, for Postgres,
//! `::` casts and dollar-quoted bodies).
//!
//! - [`translate`] turns `:name` into the driver's placeholders: `$1, $2 …` for Postgres (a
//!   name used twice is one parameter), `?` for MySQL (one per occurrence).
//! - [`check_single_statement`] refuses text holding more than one statement, as Kestra's
//!   Query does (its Queries task runs several).

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    MySql,
}

/// What lexing found.
enum Token {
    /// A `:name` placeholder at `start..end` (byte offsets, `:` included).
    Param { start: usize, end: usize },
    /// A statement-ending `;` at this offset.
    Semicolon(usize),
}

fn is_ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_'
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'$'
}

/// The offset just past a quoted run starting at `i` (the opening quote), where `quote`
/// doubled is an escaped quote and, if `backslash`, `\` escapes the next byte.
fn skip_quoted(s: &[u8], i: usize, quote: u8, backslash: bool) -> usize {
    let mut j = i + 1;
    while j < s.len() {
        match s[j] {
            b'\\' if backslash => j += 2,
            c if c == quote => {
                if s.get(j + 1) == Some(&quote) {
                    j += 2;
                } else {
                    return j + 1;
                }
            }
            _ => j += 1,
        }
    }
    s.len()
}

fn skip_line(s: &[u8], i: usize) -> usize {
    s[i..]
        .iter()
        .position(|&c| c == b'\n')
        .map_or(s.len(), |p| i + p + 1)
}

/// Past a `/* … */` comment starting at `i`; Postgres nests them, MySQL does not.
fn skip_block_comment(s: &[u8], i: usize, nested: bool) -> usize {
    let mut depth = 0usize;
    let mut j = i;
    while j + 1 < s.len() {
        if s[j] == b'/' && s[j + 1] == b'*' && (nested || depth == 0) {
            depth += 1;
            j += 2;
        } else if s[j] == b'*' && s[j + 1] == b'/' {
            depth -= 1;
            j += 2;
            if depth == 0 {
                return j;
            }
        } else {
            j += 1;
        }
    }
    s.len()
}

/// A Postgres dollar quote's tag at `i` (`$$` or `$tag$`), if there is one.
fn dollar_tag(s: &[u8], i: usize) -> Option<&[u8]> {
    let mut j = i + 1;
    if j < s.len() && s[j] != b'$' {
        if !is_ident_start(s[j]) {
            return None;
        }
        while j < s.len() && s[j] != b'$' {
            if !(s[j].is_ascii_alphanumeric() || s[j] == b'_') {
                return None;
            }
            j += 1;
        }
    }
    (j < s.len()).then(|| &s[i..=j])
}

fn tokens(sql: &str, dialect: Dialect) -> Vec<Token> {
    let s = sql.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        let prev = if i > 0 { s[i - 1] } else { b' ' };
        let next = s.get(i + 1).copied().unwrap_or(0);
        i = match (dialect, c) {
            (Dialect::Postgres, b'\'') => {
                // E'…' strings take backslash escapes.
                let escaped = matches!(prev, b'e' | b'E') && (i < 2 || !is_ident(s[i - 2]));
                skip_quoted(s, i, b'\'', escaped)
            }
            (Dialect::MySql, b'\'' | b'"') => skip_quoted(s, i, c, true),
            (Dialect::Postgres, b'"') => skip_quoted(s, i, b'"', false),
            (Dialect::MySql, b'`') => skip_quoted(s, i, b'`', false),
            (_, b'-') if next == b'-' => skip_line(s, i),
            (Dialect::MySql, b'#') => skip_line(s, i),
            (_, b'/') if next == b'*' => skip_block_comment(s, i, dialect == Dialect::Postgres),
            (Dialect::Postgres, b'$') if !is_ident(prev) => match dollar_tag(s, i) {
                Some(tag) => {
                    let body = i + tag.len();
                    s[body..]
                        .windows(tag.len())
                        .position(|w| w == tag)
                        .map_or(s.len(), |p| body + p + tag.len())
                }
                None => i + 1,
            },
            (_, b':') if next == b':' => i + 2,
            (_, b':') if is_ident_start(next) && !is_ident(prev) => {
                let mut end = i + 2;
                while end < s.len() && (s[end].is_ascii_alphanumeric() || s[end] == b'_') {
                    end += 1;
                }
                out.push(Token::Param { start: i, end });
                end
            }
            (_, b';') => {
                out.push(Token::Semicolon(i));
                i + 1
            }
            _ => i + 1,
        };
    }
    out
}

/// Whether only blanks and comments follow offset `from`.
fn only_blank_after(sql: &str, from: usize, dialect: Dialect) -> bool {
    let s = sql.as_bytes();
    let mut i = from;
    while i < s.len() {
        let next = s.get(i + 1).copied().unwrap_or(0);
        i = match s[i] {
            c if c.is_ascii_whitespace() || c == b';' => i + 1,
            b'-' if next == b'-' => skip_line(s, i),
            b'#' if dialect == Dialect::MySql => skip_line(s, i),
            b'/' if next == b'*' => skip_block_comment(s, i, dialect == Dialect::Postgres),
            _ => return false,
        };
    }
    true
}

/// Refuses text holding more than one statement (a trailing `;` is fine).
pub fn check_single_statement(sql: &str, dialect: Dialect, property: &str) -> Result<(), String> {
    for token in tokens(sql, dialect) {
        if let Token::Semicolon(at) = token
            && !only_blank_after(sql, at + 1, dialect)
        {
            return Err(format!(
                "`{property}` holds more than one SQL statement; the Query task runs one (write one task per statement)"
            ));
        }
    }
    Ok(())
}

/// `sql` with its `:name` placeholders replaced, and the parameter names in placeholder
/// order (for Postgres each name once, in order of first use).
#[derive(Debug, PartialEq)]
pub struct Translated {
    pub sql: String,
    pub names: Vec<String>,
}

pub fn translate(sql: &str, dialect: Dialect) -> Translated {
    let mut out = String::with_capacity(sql.len());
    let mut names: Vec<String> = Vec::new();
    let mut copied = 0;
    for token in tokens(sql, dialect) {
        let Token::Param { start, end } = token else {
            continue;
        };
        out.push_str(&sql[copied..start]);
        let name = &sql[start + 1..end];
        match dialect {
            Dialect::MySql => {
                out.push('?');
                names.push(name.to_string());
            }
            Dialect::Postgres => {
                let index = match names.iter().position(|n| n == name) {
                    Some(p) => p + 1,
                    None => {
                        names.push(name.to_string());
                        names.len()
                    }
                };
                out.push('$');
                out.push_str(&index.to_string());
            }
        }
        copied = end;
    }
    out.push_str(&sql[copied..]);
    Translated { sql: out, names }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_placeholders_skip_literals_casts_comments_and_dollar_quotes() {
        let t = translate(
            "SELECT :a::int, ':no', E'\\':no', \"x:no\", $$ :no $$, $f$:no$f$ -- :no\n, :b, :a /* :no /* :no */ */ FROM t WHERE x[1:2] = :b",
            Dialect::Postgres,
        );
        assert_eq!(
            t.sql,
            "SELECT $1::int, ':no', E'\\':no', \"x:no\", $$ :no $$, $f$:no$f$ -- :no\n, $2, $1 /* :no /* :no */ */ FROM t WHERE x[1:2] = $2"
        );
        assert_eq!(t.names, ["a", "b"]);
    }

    #[test]
    fn mysql_placeholders_one_per_occurrence() {
        let t = translate(
            "SELECT :a, ':no', \"it\\\":no\", `c:no`, :a # :no\n, @v := :b",
            Dialect::MySql,
        );
        assert_eq!(
            t.sql,
            "SELECT ?, ':no', \"it\\\":no\", `c:no`, ? # :no\n, @v := ?"
        );
        assert_eq!(t.names, ["a", "a", "b"]);
    }

    #[test]
    fn one_statement_only() {
        let pg = Dialect::Postgres;
        assert!(check_single_statement("SELECT 1;  -- done\n", pg, "sql").is_ok());
        assert!(check_single_statement("SELECT ';'; ", pg, "sql").is_ok());
        assert!(check_single_statement("DO $$ BEGIN PERFORM 1; END $$;", pg, "sql").is_ok());
        let err = check_single_statement("SELECT 1; SELECT 2", pg, "sql").unwrap_err();
        assert!(err.contains("more than one"), "{err}");
        assert!(check_single_statement("SELECT 1; # x", Dialect::MySql, "sql").is_ok());
    }
}
