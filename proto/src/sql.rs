//! SQL literals for ClickHouse, built so that no input can leave the literal.
//!
//! Paths are arbitrary bytes, so every value is written byte by byte: printable ASCII as is
//! (quote and backslash escaped), everything else as `\xHH`. Both ClickHouse 18.16 and current
//! releases read these escapes, and the result is plain ASCII whatever the input was. `?` is
//! written as `\x3F` too: the `clickhouse` client reads a bare `?` in a query as a placeholder
//! for a bound value.

use std::fmt::Write;

/// A single-quoted ClickHouse string literal holding exactly `value`.
pub fn quote_bytes(value: &[u8]) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for &b in value {
        match b {
            b'\'' | b'\\' => {
                out.push('\\');
                out.push(b as char);
            }
            b'?' => out.push_str("\\x3F"),
            0x20..=0x7e => out.push(b as char),
            _ => write!(out, "\\x{b:02X}").expect("writing to a String"),
        }
    }
    out.push('\'');
    out
}

/// A string literal for UTF-8 text.
pub fn quote_str(value: &str) -> String {
    quote_bytes(value.as_bytes())
}

/// The literal that `startsWith(path, ...)` needs to select everything strictly below `dir`.
pub fn below_prefix(dir: &[u8]) -> Vec<u8> {
    let mut prefix = dir.to_vec();
    if prefix.last() != Some(&b'/') {
        prefix.push(b'/');
    }
    prefix
}

/// Entries whose parent is `dir` or below it, as key ranges on `parent_path` (the tables' sort
/// key after the snapshot), so ClickHouse reads only that part of the table.
pub fn parent_within(dir: &[u8]) -> String {
    let below = below_prefix(dir);
    // Everything that starts with "…/" sorts before the same prefix ending in '0' ('/' + 1).
    let mut after = below.clone();
    *after.last_mut().expect("ends with '/'") = b'0';
    format!(
        "(parent_path = {} OR (parent_path >= {} AND parent_path < {}))",
        quote_bytes(dir),
        quote_bytes(&below),
        quote_bytes(&after)
    )
}

/// `dir` itself and everything below it: `dir` by its parent and name, the rest by
/// [`parent_within`], so that every part is a range of the sort key. (`path = dir` would read
/// every row: `path` is computed, and one condition off the key leaves the whole OR off it.)
pub fn subtree(dir: &[u8]) -> String {
    let (parent, name) = crate::entry::split_path(dir);
    format!(
        "((parent_path = {} AND name = {}) OR {})",
        quote_bytes(parent),
        quote_bytes(name),
        parent_within(dir)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subtrees_are_key_ranges_on_the_parent() {
        assert_eq!(
            parent_within(b"/a/b"),
            r"(parent_path = '/a/b' OR (parent_path >= '/a/b/' AND parent_path < '/a/b0'))"
        );
        assert_eq!(
            parent_within(b"/"),
            r"(parent_path = '/' OR (parent_path >= '/' AND parent_path < '0'))"
        );
    }

    #[test]
    fn a_subtree_is_its_root_by_parent_and_name_and_the_ranges_below() {
        assert_eq!(
            subtree(b"/a/b"),
            r"((parent_path = '/a' AND name = 'b') OR (parent_path = '/a/b' OR (parent_path >= '/a/b/' AND parent_path < '/a/b0')))"
        );
        assert!(subtree(b"/").starts_with(r"((parent_path = '/' AND name = '') OR "));
    }

    #[test]
    fn quotes_and_backslashes_cannot_escape() {
        assert_eq!(quote_str("a'b"), r"'a\'b'");
        assert_eq!(
            quote_str(r"a\'); DROP TABLE x; --"),
            r"'a\\\'); DROP TABLE x; --'"
        );
        assert_eq!(quote_bytes(b"\n\x00\xff"), r"'\x0A\x00\xFF'");
    }

    #[test]
    fn every_byte_value_stays_inside_the_literal() {
        let all: Vec<u8> = (0..=255).collect();
        let q = quote_bytes(&all);
        assert!(q.is_ascii());
        // Between the outer quotes, a quote only ever appears escaped.
        let inner = &q[1..q.len() - 1];
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => assert!(chars.next().is_some()),
                '\'' => panic!("unescaped quote in {q}"),
                _ => {}
            }
        }
    }

    #[test]
    fn question_marks_are_not_left_for_the_client_to_bind() {
        assert_eq!(quote_str("/a?b"), r"'/a\x3Fb'");
        assert!(!quote_bytes(&(0..=255).collect::<Vec<u8>>()).contains('?'));
    }

    #[test]
    fn below_prefix_of_root_is_slash() {
        assert_eq!(below_prefix(b"/"), b"/");
        assert_eq!(below_prefix(b"/a/b"), b"/a/b/");
    }
}
