//! Query parameters: paging (`limit`, `offset`), and those that take one of a few words, as
//! types. An unknown word is a 400 that names the parameter and its words (`order must be asc
//! or desc, got "up"`). Each of those types lists its words (`WORDS`, in declaration order),
//! and the OpenAPI document ([`crate::openapi`]) builds its `enum`s from them.
//!
//! A route's parameters are read as one struct (a query string that does not read is a 400
//! first), and a word is kept as read ([`Word`]) so that the route checks it where it always
//! has, among its other checks (see [`crate::extract::Check`]).

use axum::extract::Query;
use axum::extract::rejection::QueryRejection;
use serde::{Deserialize, Deserializer};

use crate::ApiError;

/// An enum of words, each read from the one parameter that takes it.
pub trait Words: Copy + Default + 'static {
    /// The parameter the words are given in.
    const PARAMETER: &'static str;
    /// Every word, in declaration order.
    const WORDS: &'static [&'static str];

    /// The variant `word` names, or the 400's message for a word that is none of them.
    fn read(word: &str) -> Result<Self, String>;
}

/// The message for `got` given as `parameter`, which takes `words`: "a or b", "a, b or c", and
/// "one of a, b, c, d" for longer lists.
fn unknown_word(parameter: &str, words: &[&str], got: &str) -> String {
    let list = match words {
        [first @ .., last] if words.len() <= 3 => format!("{} or {last}", first.join(", ")),
        _ => format!("one of {}", words.join(", ")),
    };
    format!("{parameter} must be {list}, got {got:?}")
}

/// A word parameter as read: its variant, or, for a word that is none of them, the 400 it makes
/// when the route checks it ([`Word::checked`]). Absent, it is the default variant.
#[derive(Debug, Clone)]
pub struct Word<T>(Result<T, String>);

impl<T: Words> Word<T> {
    /// The variant, or the 400 of a word that is none.
    pub fn checked(&self) -> Result<T, ApiError> {
        self.0.clone().map_err(ApiError::BadRequest)
    }
}

impl<T: Words> Default for Word<T> {
    fn default() -> Self {
        Self(Ok(T::default()))
    }
}

impl<'de, T: Words> Deserialize<'de> for Word<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Self(T::read(&String::deserialize(d)?)))
    }
}

/// Enums of words: each variant with the word it is read from, the parameter that takes them,
/// and the variant given when the parameter is absent. `WORDS` lists the words in declaration
/// order, the same strings serde reads (the OpenAPI document's `enum`s are built from it), and
/// the tests check every list. An unknown word is refused with the parameter's message.
macro_rules! words {
    ($(
        $(#[$doc:meta])*
        $name:ident ($parameter:literal) { $($variant:ident = $word:literal),+ $(,)? } default $default:ident;
    )+) => {
        $(
            $(#[$doc])*
            #[derive(Debug, Clone, Copy, PartialEq, Eq)]
            pub enum $name {
                $($variant),+
            }

            impl $name {
                /// Every word, in declaration order: exactly the words serde reads.
                pub const WORDS: &'static [&'static str] = &[$($word),+];

                /// The word, as requests and responses spell it.
                pub fn word(self) -> &'static str {
                    match self {
                        $(Self::$variant => $word),+
                    }
                }
            }

            impl Words for $name {
                const PARAMETER: &'static str = $parameter;
                const WORDS: &'static [&'static str] = $name::WORDS;

                fn read(word: &str) -> Result<Self, String> {
                    match word {
                        $($word => Ok(Self::$variant),)+
                        other => Err(unknown_word($parameter, Self::WORDS, other)),
                    }
                }
            }

            impl<'de> Deserialize<'de> for $name {
                fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                    <Self as Words>::read(&String::deserialize(d)?).map_err(serde::de::Error::custom)
                }
            }

            impl Default for $name {
                fn default() -> Self {
                    Self::$default
                }
            }
        )+

        /// Every enum of words: its name, its `WORDS`, and a word read from a query string as
        /// the enum (and given back as the variant's word).
        #[cfg(test)]
        const EVERY_LIST: &[(&str, &[&str], fn(&str) -> Result<&'static str, String>)] = &[
            $((stringify!($name), $name::WORDS, |w| tests::read_word::<$name>(w).map($name::word))),+
        ];
    };
}

words! {
    /// The direction of a sort.
    Order ("order") { Asc = "asc", Desc = "desc" } default Desc;

    /// How children are sorted: by recursive bytes (directories) or size (the rest), allocated
    /// bytes, files below, newest mtime or atime in the tree, or name; ties by name.
    ChildSort ("sort") {
        Bytes = "bytes",
        Allocated = "allocated",
        Files = "files",
        Mtime = "mtime",
        Atime = "atime",
        Name = "name",
    } default Bytes;

    /// What `top` lists: the largest files or the largest directories.
    TopWhat ("what") { Files = "files", Dirs = "dirs" } default Files;

    /// What usage is summed by: owner, group, file type, or file category (types grouped by
    /// [`crate::categories`]).
    UsageBy ("by") {
        User = "user",
        Group = "group",
        Type = "type",
        Category = "category",
    } default User;

    /// Which files of the duplicates report: confirmed copies, candidates not verified yet, or
    /// candidates that proved different.
    DuplicateStatus ("status") {
        Confirmed = "confirmed",
        Unverified = "unverified",
        FalsePositive = "false_positive",
    } default Confirmed;

    /// What wasted bytes are summed by: the directory holding a copy, or its owner.
    WastedBy ("by") { Dir = "dir", User = "user" } default Dir;

    /// Who growth per owner is summed by.
    OwnerBy ("by") { User = "user", Group = "group" } default User;

    /// Which histogram.
    HistogramOf ("of") { Size = "size", Mtime = "mtime", Atime = "atime" } default Size;

    /// How stale data answers.
    StaleFormat ("format") { Json = "json", Csv = "csv" } default Json;

    /// Which time makes a file stale: not accessed, or not modified.
    StaleBy ("by") { Atime = "atime", Mtime = "mtime" } default Atime;

    /// What a search pattern matches: the name or the whole path (the word is the column).
    SearchField ("field") { Name = "name", Path = "path" } default Name;

    /// How a search pattern (`q`) is read.
    MatchKind ("match") { Substring = "substring", Glob = "glob", Regex = "regex" } default Substring;

    /// What kind of entries a search selects: any, regular files, directories or symbolic
    /// links.
    SearchKind ("kind") { Any = "any", File = "file", Dir = "dir", Symlink = "symlink" } default Any;

    /// How search results are sorted: by size, bytes on disk, name, path, or modification or
    /// access time; ties by path.
    SearchSort ("sort") {
        Size = "size",
        Allocated = "allocated",
        Name = "name",
        Path = "path",
        Mtime = "mtime",
        Atime = "atime",
    } default Size;

    /// What the query console answers: a JSON page of rows, or every row as CSV, TSV or a
    /// Markdown table (streamed).
    ConsoleFormat ("format") { Json = "json", Csv = "csv", Tsv = "tsv", Markdown = "markdown" } default Json;

    /// What a treemap's areas are: apparent bytes, bytes on disk (allocated: a sparse file of a
    /// terabyte that uses nothing has no area), or files.
    AreaBy ("size") { Bytes = "bytes", Allocated = "allocated", Files = "files" } default Bytes;
}

/// Most items in one page.
pub const MAX_PAGE: u64 = 1000;
const DEFAULT_PAGE: u64 = 100;
const MAX_OFFSET: u64 = 100_000_000;

#[derive(Debug, Deserialize)]
pub struct Page {
    pub limit: Option<u64>,
    pub offset: Option<u64>,
}

impl Page {
    pub fn checked(&self) -> Result<(u64, u64), ApiError> {
        let limit = self.limit.unwrap_or(DEFAULT_PAGE);
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(ApiError::BadRequest(format!(
                "limit must be between 1 and {MAX_PAGE}, got {limit}"
            )));
        }
        let offset = self.offset.unwrap_or(0);
        if offset > MAX_OFFSET {
            return Err(ApiError::BadRequest(format!(
                "offset must be at most {MAX_OFFSET}, got {offset}"
            )));
        }
        Ok((limit, offset))
    }
}

/// `limit` and `offset` checked.
pub(crate) fn page(limit: Option<u64>, offset: Option<u64>) -> Result<(u64, u64), ApiError> {
    Page { limit, offset }.checked()
}

pub(crate) fn query_params<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(t)| t)
        .map_err(|e| ApiError::BadRequest(format!("bad query string: {}", e.body_text())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Q {
        #[serde(default)]
        by: UsageBy,
    }

    fn read(query: &str) -> Result<Q, String> {
        let uri: axum::http::Uri = format!("/x?{query}").parse().unwrap();
        axum::extract::Query::<Q>::try_from_uri(&uri)
            .map(|q| q.0)
            .map_err(|e| e.body_text())
    }

    #[test]
    fn words_read_as_their_variants_and_unknown_words_say_which_there_are() {
        assert_eq!(read("by=type").unwrap().by, UsageBy::Type);
        assert_eq!(read("").unwrap().by, UsageBy::User);
        let e = read("by=planet").unwrap_err();
        assert!(e.contains("planet") && e.contains("group"), "{e}");
        assert_eq!(UsageBy::Group.word(), "group");
    }

    /// A query string's `w=WORD`.
    #[derive(Debug, Deserialize)]
    struct One<T> {
        w: T,
    }

    /// `word` read from a query string as a `T`, as a route reads it; the error's text if not.
    pub(super) fn read_word<T: serde::de::DeserializeOwned>(word: &str) -> Result<T, String> {
        let uri: axum::http::Uri = format!("/x?w={}", word.replace(' ', "%20"))
            .parse()
            .unwrap();
        axum::extract::Query::<One<T>>::try_from_uri(&uri)
            .map(|q| q.0.w)
            .map_err(|e| e.body_text())
    }

    #[test]
    fn every_list_is_exactly_the_words_serde_reads() {
        for (name, words, read) in EVERY_LIST {
            let mut distinct = words.to_vec();
            distinct.sort_unstable();
            distinct.dedup();
            assert_eq!(distinct.len(), words.len(), "{name}: {words:?}");
            for word in *words {
                assert_eq!(read(word).as_deref(), Ok(*word), "{name}");
            }
            let mut others = vec![String::new(), "unknown".to_owned()];
            for word in *words {
                others.push(word.to_uppercase());
                others.push(format!("{word} "));
                others.push(format!(" {word}"));
                others.push(format!("{word}s"));
                others.push(word[..word.len() - 1].to_owned());
            }
            for other in others.iter().filter(|o| !words.contains(&o.as_str())) {
                let e = read(other).unwrap_err();
                for word in *words {
                    assert!(e.contains(word), "{name}: {other:?} refused with {e}");
                }
            }
        }
        assert_eq!(
            ChildSort::WORDS,
            ["bytes", "allocated", "files", "mtime", "atime", "name"]
        );
        assert_eq!(Order::default().word(), "desc");
    }

    #[test]
    fn unknown_words_are_refused_with_their_parameters_message() {
        let refused =
            |e: Result<&str, String>| e.unwrap_err().rsplit(": ").next().unwrap().to_owned();
        assert_eq!(
            refused(read_word::<ChildSort>("size").map(ChildSort::word)),
            r#"sort must be one of bytes, allocated, files, mtime, atime, name, got "size""#
        );
        for (message, expected) in [
            (
                <Order as Words>::read("up").unwrap_err(),
                r#"order must be asc or desc, got "up""#,
            ),
            (
                TopWhat::read("x").unwrap_err(),
                r#"what must be files or dirs, got "x""#,
            ),
            (
                UsageBy::read("x").unwrap_err(),
                r#"by must be one of user, group, type, category, got "x""#,
            ),
            (
                OwnerBy::read("x").unwrap_err(),
                r#"by must be user or group, got "x""#,
            ),
            (
                HistogramOf::read("x").unwrap_err(),
                r#"of must be size, mtime or atime, got "x""#,
            ),
            (
                StaleFormat::read("x").unwrap_err(),
                r#"format must be json or csv, got "x""#,
            ),
            (
                StaleBy::read("x").unwrap_err(),
                r#"by must be atime or mtime, got "x""#,
            ),
            (
                SearchField::read("x").unwrap_err(),
                r#"field must be name or path, got "x""#,
            ),
            (
                MatchKind::read("x").unwrap_err(),
                r#"match must be substring, glob or regex, got "x""#,
            ),
            (
                AreaBy::read("x").unwrap_err(),
                r#"size must be bytes, allocated or files, got "x""#,
            ),
        ] {
            assert_eq!(message, expected);
        }
        // As a parameter of a route: read as given, refused when checked.
        let word: Word<Order> = read_word("up").unwrap();
        assert_eq!(
            word.checked().unwrap_err().to_string(),
            r#"order must be asc or desc, got "up""#
        );
        assert_eq!(
            read_word::<Word<Order>>("asc").unwrap().checked().unwrap(),
            Order::Asc
        );
        assert_eq!(Word::<Order>::default().checked().unwrap(), Order::Desc);
    }
}
