//! Name patterns of a search: a substring, a shell glob or a regular expression, matched with
//! or without regard to case, checked and folded here so that their one SQL condition
//! ([`NamePattern::condition`], in [`crate::query::entries`]) means the same on ClickHouse 18.16
//! and on current releases.
//!
//! Without regard to case, both sides are lowercased (`lowerUTF8` on the column, the pattern's
//! literals in Rust) and a regex also gets RE2's `(?i)`. Lowercasing the literals is what makes
//! it work on 18.16, whose `match` first looks for the pattern's longest literal as a
//! case-sensitive substring even under `(?i)`: `(?i)RESULTS` found nothing there.

use regex_syntax::ast::{self, Ast, ClassSetItem, Visitor};

use crate::ApiError;
use crate::params::MatchKind;

/// Longest pattern accepted.
pub const MAX_PATTERN_BYTES: usize = 1024;

/// A checked pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamePattern {
    kind: MatchKind,
    text: String,
    ignore_case: bool,
}

/// Refuses a NUL byte in a request's text: no name holds one, and ClickHouse's functions would
/// read the text only up to it.
pub fn refuse_nul(parameter: &str, value: &str) -> Result<(), ApiError> {
    if value.contains('\0') {
        return Err(ApiError::BadRequest(format!(
            "{parameter} contains a NUL byte, which no name can hold"
        )));
    }
    Ok(())
}

impl NamePattern {
    /// `text` read as `kind`; a regex must parse (RE2's own refusals come back from ClickHouse
    /// as 400s too). A regex that sets `(?i)` itself is matched without regard to case.
    pub fn new(kind: MatchKind, text: &str, ignore_case: bool) -> Result<Self, ApiError> {
        if text.len() > MAX_PATTERN_BYTES {
            return Err(ApiError::BadRequest(format!(
                "q is longer than {MAX_PATTERN_BYTES} bytes"
            )));
        }
        refuse_nul("q", text)?;
        let mut ignore_case = ignore_case;
        if kind == MatchKind::Regex {
            regex_syntax::Parser::new().parse(text).map_err(|e| {
                ApiError::BadRequest(format!("q is not a valid regular expression: {e}"))
            })?;
            ignore_case |= sets_ignore_case(text);
        }
        if kind == MatchKind::Glob
            && let Some(regex) = glob_to_regex(text)
        {
            regex_syntax::Parser::new()
                .parse(&regex)
                .map_err(|e| ApiError::BadRequest(format!("q is not a valid glob: {e}")))?;
        }
        Ok(Self {
            kind,
            text: text.to_owned(),
            ignore_case,
        })
    }

    /// How it is matched: its kind, its text as matched (its literals lowercased when without
    /// regard to case) and whether the column is lowercased too. The condition it makes is
    /// [`NamePattern::condition`], with the other statements in [`crate::query::entries`].
    pub(crate) fn matched(&self) -> (MatchKind, String, bool) {
        let text = if self.ignore_case {
            self.folded()
        } else {
            self.text.clone()
        };
        (self.kind, text, self.ignore_case)
    }

    /// The pattern with its literal characters lowercased (a regex's escapes and classes by
    /// name stay as written).
    fn folded(&self) -> String {
        match self.kind {
            // Character by character, as ClickHouse's lowerUTF8 does: no final-sigma rule
            // (str::to_lowercase makes a word's last 'Σ' 'ς', lowerUTF8 'σ').
            MatchKind::Substring | MatchKind::Glob => {
                self.text.chars().flat_map(char::to_lowercase).collect()
            }
            MatchKind::Regex => lowercase_regex_literals(&self.text),
        }
    }
}

/// A shell glob with a bracket expression (`[abc]`, `[a-z]`, `[!0-9]`, `[[:digit:]]`) as an
/// anchored RE2 regex matching the whole name: `*` any run, `?` one character, a bracket
/// expression the same class (`!` or `^` first negates it; a `]` first is a member), anything
/// else literal. `None` for a glob without one, which stays a `LIKE` ([`glob_to_like`]), as a
/// `[` without its `]` is a literal.
pub fn glob_to_regex(glob: &str) -> Option<String> {
    let chars: Vec<char> = glob.chars().collect();
    let mut out = String::from("(?s)^");
    let mut classes = 0;
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '*' => out.push_str(".*"),
            '?' => out.push('.'),
            '[' => match bracket_end(&chars, i) {
                Some(end) => {
                    out.push('[');
                    let mut j = i + 1;
                    if matches!(chars[j], '!' | '^') {
                        out.push('^');
                        j += 1;
                    }
                    for k in j..end {
                        let c = chars[k];
                        // A backslash, and a `[` that does not open `[:name:]`, are members in
                        // a glob's bracket expression; RE2 would read them as an escape or a
                        // nested class.
                        let posix = c == '[' && chars.get(k + 1) == Some(&':');
                        if c == '\\' || (c == '[' && !posix) {
                            out.push('\\');
                        }
                        out.push(c);
                    }
                    out.push(']');
                    classes += 1;
                    i = end;
                }
                None => out.push_str(&regex_syntax::escape("[")),
            },
            c => out.push_str(&regex_syntax::escape(c.encode_utf8(&mut [0; 4]))),
        }
        i += 1;
    }
    out.push('$');
    (classes > 0).then_some(out)
}

/// The index of the `]` that closes the bracket expression opened at `open`: a `]` right after
/// `[` (or `[!`, `[^`) is a member, and `[:name:]` inside is a POSIX class.
fn bracket_end(chars: &[char], open: usize) -> Option<usize> {
    let mut j = open + 1;
    if chars.get(j).is_some_and(|c| matches!(c, '!' | '^')) {
        j += 1;
    }
    if chars.get(j) == Some(&']') {
        j += 1;
    }
    while j < chars.len() {
        if chars[j] == '[' && chars.get(j + 1) == Some(&':') {
            if let Some(k) = (j + 2..chars.len().saturating_sub(1))
                .find(|&k| chars[k] == ':' && chars[k + 1] == ']')
            {
                j = k + 2;
                continue;
            }
        }
        if chars[j] == ']' {
            return Some(j);
        }
        j += 1;
    }
    None
}

/// A shell glob as a `LIKE` pattern: `*` any run, `?` one byte, `%`, `_` and `\` literal.
pub fn glob_to_like(glob: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(glob.len() + 4);
    for &b in glob {
        match b {
            b'*' => out.push(b'%'),
            b'?' => out.push(b'_'),
            b'%' | b'_' | b'\\' => {
                out.push(b'\\');
                out.push(b);
            }
            _ => out.push(b),
        }
    }
    out
}

/// Whether the regex turns on case-insensitive matching anywhere (`(?i)`, `(?i:...)`).
fn sets_ignore_case(pattern: &str) -> bool {
    let Ok(ast) = ast::parse::Parser::new().parse(pattern) else {
        return false;
    };
    struct Flags(bool);
    impl Visitor for Flags {
        type Output = bool;
        type Err = ();
        fn finish(self) -> Result<bool, ()> {
            Ok(self.0)
        }
        fn visit_pre(&mut self, ast: &Ast) -> Result<(), ()> {
            let flags = match ast {
                Ast::Flags(set) => Some(&set.flags),
                Ast::Group(g) => match &g.kind {
                    ast::GroupKind::NonCapturing(flags) => Some(flags),
                    _ => None,
                },
                _ => None,
            };
            if let Some(flags) = flags {
                let mut negated = false;
                for item in &flags.items {
                    match item.kind {
                        ast::FlagsItemKind::Negation => negated = true,
                        ast::FlagsItemKind::Flag(ast::Flag::CaseInsensitive) if !negated => {
                            self.0 = true;
                        }
                        _ => {}
                    }
                }
            }
            Ok(())
        }
    }
    ast::visit(&ast, Flags(false)).unwrap_or(false)
}

/// The regex with every literal character that has a one-character lowercase form written
/// lowercase: verbatim where it was verbatim, else as `\x{..}`.
fn lowercase_regex_literals(pattern: &str) -> String {
    let Ok(ast) = ast::parse::Parser::new().parse(pattern) else {
        return pattern.to_owned();
    };
    #[derive(Default)]
    struct Literals(Vec<(usize, usize, String)>);
    impl Literals {
        fn add(&mut self, lit: &ast::Literal) {
            let mut lower = lit.c.to_lowercase();
            let (Some(c), None) = (lower.next(), lower.next()) else {
                return;
            };
            if c == lit.c {
                return;
            }
            let written = match lit.kind {
                ast::LiteralKind::Verbatim => c.to_string(),
                _ => format!("\\x{{{:x}}}", u32::from(c)),
            };
            self.0
                .push((lit.span.start.offset, lit.span.end.offset, written));
        }
    }
    impl Visitor for Literals {
        type Output = Vec<(usize, usize, String)>;
        type Err = ();
        fn finish(self) -> Result<Self::Output, ()> {
            Ok(self.0)
        }
        fn visit_pre(&mut self, ast: &Ast) -> Result<(), ()> {
            if let Ast::Literal(lit) = ast {
                self.add(lit);
            }
            Ok(())
        }
        fn visit_class_set_item_pre(&mut self, item: &ClassSetItem) -> Result<(), ()> {
            match item {
                ClassSetItem::Literal(lit) => self.add(lit),
                ClassSetItem::Range(range) => {
                    self.add(&range.start);
                    self.add(&range.end);
                }
                _ => {}
            }
            Ok(())
        }
    }
    let mut edits = ast::visit(&ast, Literals::default()).unwrap_or_default();
    edits.sort_by_key(|e| e.0);
    let mut out = String::with_capacity(pattern.len());
    let mut at = 0;
    for (start, end, written) in edits {
        if start < at {
            continue;
        }
        out.push_str(&pattern[at..start]);
        out.push_str(&written);
        at = end;
    }
    out.push_str(&pattern[at..]);
    out
}

#[cfg(test)]
mod tests {
    use storage_tracker_proto::sql::quote_bytes;

    use super::*;

    #[test]
    fn globs_with_bracket_expressions_become_anchored_regexes() {
        assert_eq!(glob_to_regex("*.tar.?z"), None, "no class: LIKE");
        assert_eq!(glob_to_regex("a[b"), None, "a [ without ] is literal");
        assert_eq!(
            glob_to_regex("f0000[1-3].log").as_deref(),
            Some(r"(?s)^f0000[1-3]\.log$")
        );
        assert_eq!(glob_to_regex("[!._]*").as_deref(), Some(r"(?s)^[^._].*$"));
        assert_eq!(
            glob_to_regex("[]a]?[\\x]").as_deref(),
            Some(r"(?s)^[]a].[\\x]$")
        );
        assert_eq!(
            glob_to_regex("run[[:digit:]][[]*").as_deref(),
            Some(r"(?s)^run[[:digit:]][\[].*$")
        );
        for glob in [
            "f0000[1-3].log",
            "[!._]*",
            "[]a]?[\\x]",
            "run[[:digit:]][[]*",
        ] {
            let re = regex_syntax::Parser::new().parse(&glob_to_regex(glob).unwrap());
            assert!(re.is_ok(), "{glob}: {re:?}");
        }
        let e = NamePattern::new(MatchKind::Glob, "f[z-a]", false).unwrap_err();
        assert!(e.to_string().contains("q is not a valid glob"), "{e}");
    }

    #[test]
    fn globs_become_like_patterns_with_literals_escaped() {
        assert_eq!(glob_to_like(b"*.tar.?z"), b"%.tar._z");
        assert_eq!(glob_to_like(b"100%_\\x"), b"100\\%\\_\\\\x");
    }

    #[test]
    fn case_insensitive_regex_lowercases_literals_but_not_escapes() {
        assert_eq!(lowercase_regex_literals(r"RESULTS\.TXT$"), r"results\.txt$");
        assert_eq!(
            lowercase_regex_literals(r"\D\W[A-Z]+\x41"),
            r"\D\W[a-z]+\x{61}"
        );
        assert_eq!(lowercase_regex_literals(r"(?i)ÄB"), r"(?i)äb");
        assert!(sets_ignore_case("(?i)RESULTS"));
        assert!(sets_ignore_case("a(?i:B)"));
        assert!(!sets_ignore_case("(?-i)a"));
        assert!(!sets_ignore_case("RESULTS"));
    }

    #[test]
    fn case_insensitive_search_of_uppercase_regex_finds_lowercase_names() {
        let p = NamePattern::new(MatchKind::Regex, "(?i)RESULTS", false).unwrap();
        assert_eq!(
            p.condition("name"),
            format!(
                "match(lowerUTF8(name), {})",
                quote_bytes(b"(?i)(?i)results")
            )
        );
        let p = NamePattern::new(MatchKind::Substring, "ReSuLt", true).unwrap();
        assert_eq!(
            p.condition("name"),
            "position(lowerUTF8(name), 'result') > 0"
        );
        let p = NamePattern::new(MatchKind::Glob, "*.TXT", true).unwrap();
        assert_eq!(p.condition("path"), "lowerUTF8(path) LIKE '%.txt'");
        let p = NamePattern::new(MatchKind::Glob, "*.TXT", false).unwrap();
        assert_eq!(p.condition("path"), "path LIKE '%.TXT'");
    }

    #[test]
    fn ignore_case_lowercases_a_final_sigma_as_lower_utf8_does() {
        let p = NamePattern::new(MatchKind::Substring, "ΟΣ", true).unwrap();
        assert_eq!(
            p.condition("name"),
            format!(
                "position(lowerUTF8(name), {}) > 0",
                quote_bytes("οσ".as_bytes())
            )
        );
    }

    #[test]
    fn nul_byte_in_pattern_is_refused() {
        for kind in [MatchKind::Substring, MatchKind::Glob, MatchKind::Regex] {
            let e = NamePattern::new(kind, "f1\0x", false).unwrap_err();
            assert!(e.to_string().contains("NUL"), "{e}");
        }
    }
}
