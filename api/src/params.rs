//! Query parameters: paging (`limit`, `offset`), and those that take one of a few words, as
//! types. serde reads them; an unknown word
//! is a 400 that says which words there are (`unknown variant "x", expected "a" or "b"`).
//! Each of those types lists its words (`WORDS`, in declaration order), and the OpenAPI
//! document ([`crate::openapi`]) builds its `enum`s from them.

use axum::extract::Query;
use axum::extract::rejection::QueryRejection;
use serde::Deserialize;

use crate::ApiError;

/// Enums of words: each variant with the word it is read from, and the variant given when the
/// parameter is absent. `WORDS` lists the words in declaration order, the same strings serde
/// reads (the OpenAPI document's `enum`s are built from it), and the tests check every list.
macro_rules! words {
    ($(
        $(#[$doc:meta])*
        $name:ident { $($variant:ident = $word:literal),+ $(,)? } default $default:ident;
    )+) => {
        $(
            $(#[$doc])*
            #[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
            pub enum $name {
                $(#[serde(rename = $word)] $variant),+
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
    Order { Asc = "asc", Desc = "desc" } default Desc;

    /// How children are sorted: by recursive bytes (directories) or size (the rest), allocated
    /// bytes, files below, newest mtime or atime in the tree, or name; ties by name.
    ChildSort {
        Bytes = "bytes",
        Allocated = "allocated",
        Files = "files",
        Mtime = "mtime",
        Atime = "atime",
        Name = "name",
    } default Bytes;

    /// What `top` lists: the largest files or the largest directories.
    TopWhat { Files = "files", Dirs = "dirs" } default Files;

    /// What usage is summed by.
    UsageBy { User = "user", Group = "group", Type = "type" } default User;

    /// Who growth per owner is summed by.
    OwnerBy { User = "user", Group = "group" } default User;

    /// Which histogram.
    HistogramOf { Size = "size", Mtime = "mtime", Atime = "atime" } default Size;

    /// How stale data answers.
    StaleFormat { Json = "json", Csv = "csv" } default Json;

    /// Which time makes a file stale: not accessed, or not modified.
    StaleBy { Atime = "atime", Mtime = "mtime" } default Atime;

    /// What a search pattern matches: the name or the whole path (the word is the column).
    SearchField { Name = "name", Path = "path" } default Name;

    /// How a search pattern (`q`) is read.
    MatchKind { Substring = "substring", Glob = "glob", Regex = "regex" } default Substring;

    /// What a treemap's areas are.
    AreaBy { Bytes = "bytes", Files = "files" } default Bytes;
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
}
