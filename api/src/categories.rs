//! File categories: file types (extensions, as the type report counts them) grouped into
//! categories a person recognises (tabular, scientific data, images, ...), for the categories
//! report (`usage?by=category`) and the treemap's colour by category. A category is read from
//! a snapshot's type report when asked, not stored with the snapshot: an admin who changes the
//! categories sees every snapshot, old ones too, by the new ones.
//!
//! The configuration (`deploy/config/categories.conf`, built in; `--categories FILE` replaces
//! it), one category a line:
//!
//! ```text
//! # category   types
//! tabular      csv tsv parquet
//! scientific   h5 nc fits
//! ```
//!
//! Files of any other type, and files without one, are in [`OTHER`].

use std::collections::HashMap;

use storage_tracker_proto::reports::MAX_EXTENSION_BYTES;

/// The categories built in.
pub const DEFAULT: &str = include_str!("../../deploy/config/categories.conf");

/// The category of every type no category names, and of files without a type.
pub const OTHER: &str = "other";

/// Longest category name accepted.
const MAX_NAME_CHARS: usize = 32;

/// The categories, in the order the configuration gives them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Categories {
    categories: Vec<Category>,
    /// The index in `categories` of each type's category.
    of_type: HashMap<String, usize>,
}

/// One category and its types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Category {
    pub name: String,
    pub types: Vec<String>,
}

/// A line of the configuration that cannot be used, with its source and line number.
#[derive(Debug, thiserror::Error)]
#[error("{source_name}, line {line}: {problem}")]
pub struct ConfigError {
    source_name: String,
    line: usize,
    problem: String,
}

impl Default for Categories {
    fn default() -> Self {
        Self::parse(DEFAULT, "the built-in categories").expect("the built-in categories parse")
    }
}

impl Categories {
    /// The categories of `text`; errors name `source_name` and the line.
    pub fn parse(text: &str, source_name: &str) -> Result<Self, ConfigError> {
        let mut categories: Vec<Category> = Vec::new();
        let mut of_type: HashMap<String, usize> = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let fail = |problem: String| ConfigError {
                source_name: source_name.to_owned(),
                line: i + 1,
                problem,
            };
            let line = line.split('#').next().unwrap_or("").trim();
            let mut words = line.split_whitespace();
            let Some(name) = words.next() else { continue };
            if name.len() > MAX_NAME_CHARS
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(fail(format!(
                    "{name:?} is not a category name: give letters, digits, - and _ (at most \
                     {MAX_NAME_CHARS}), then the category's types"
                )));
            }
            if name == OTHER {
                return Err(fail(format!(
                    "{OTHER:?} is every type no category names: it takes no list of its own"
                )));
            }
            if categories.iter().any(|c| c.name == name) {
                return Err(fail(format!(
                    "the category {name:?} is given twice: give each once, with all its types"
                )));
            }
            let index = categories.len();
            let mut types = Vec::new();
            for t in words {
                let t = t.strip_prefix('.').unwrap_or(t);
                if t.is_empty()
                    || t.len() > MAX_EXTENSION_BYTES
                    || t.contains('.')
                    || t != t.to_lowercase()
                {
                    return Err(fail(format!(
                        "{t:?} is not a file type: give extensions in lower case, without dots, \
                         of at most {MAX_EXTENSION_BYTES} bytes (csv, h5, gz)"
                    )));
                }
                if let Some(&other) = of_type.get(t) {
                    let other = &categories.get(other).map_or(name, |c| c.name.as_str());
                    return Err(fail(format!(
                        "the type {t:?} is already in the category {other:?}: a type belongs \
                         to one category"
                    )));
                }
                of_type.insert(t.to_owned(), index);
                types.push(t.to_owned());
            }
            if types.is_empty() {
                return Err(fail(format!("the category {name:?} has no types")));
            }
            categories.push(Category {
                name: name.to_owned(),
                types,
            });
        }
        if categories.is_empty() {
            return Err(ConfigError {
                source_name: source_name.to_owned(),
                line: text.lines().count(),
                problem: "it holds no category: give lines NAME TYPE... (deploy/config/\
                          categories.conf has the built-in ones), or leave --categories out to \
                          use them"
                    .to_owned(),
            });
        }
        Ok(Self {
            categories,
            of_type,
        })
    }

    /// The categories, in the configuration's order ([`OTHER`] not among them).
    pub fn list(&self) -> &[Category] {
        &self.categories
    }

    /// The category of a file of type `extension` (lowercase, as the type report gives it).
    pub fn of(&self, extension: &[u8]) -> &str {
        std::str::from_utf8(extension)
            .ok()
            .and_then(|t| self.of_type.get(t))
            .map_or(OTHER, |&i| &self.categories[i].name)
    }

    /// Every type and its category, as two parallel lists (what SQL's `transform` takes).
    pub fn pairs(&self) -> (Vec<&str>, Vec<&str>) {
        self.categories
            .iter()
            .flat_map(|c| c.types.iter().map(|t| (t.as_str(), c.name.as_str())))
            .unzip()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_categories_hold_what_people_recognise() {
        let c = Categories::default();
        let names: Vec<&str> = c.list().iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "tabular",
                "scientific",
                "images",
                "documents",
                "code",
                "binaries",
                "archives",
                "configuration",
                "checkpoints",
                "logs"
            ]
        );
        for (t, want) in [
            ("csv", "tabular"),
            ("h5", "scientific"),
            ("nc", "scientific"),
            ("fits", "scientific"),
            ("fastq", "scientific"),
            ("png", "images"),
            ("pdf", "documents"),
            ("f90", "code"),
            ("so", "binaries"),
            ("gz", "archives"),
            ("yaml", "configuration"),
            ("ckpt", "checkpoints"),
            ("out", "logs"),
            ("", OTHER),
            ("xyz", OTHER),
        ] {
            assert_eq!(c.of(t.as_bytes()), want, "{t}");
        }
        assert_eq!(c.of(b"\xff"), OTHER);
        let (types, categories) = c.pairs();
        assert_eq!(types.len(), categories.len());
        assert_eq!(types[0], "csv");
    }

    #[test]
    fn mistakes_name_the_source_the_line_and_what_to_do() {
        let e = |text: &str| {
            Categories::parse(text, "categories file c.conf")
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            e("a x\n\n# b\nb x y"),
            "categories file c.conf, line 4: the type \"x\" is already in the category \"a\": \
             a type belongs to one category"
        );
        assert!(e("data CSV").contains("\"CSV\" is not a file type"));
        assert!(e("data tar.gz").contains("without dots"));
        assert!(e("data 0123456789abcdefg").contains("at most 16 bytes"));
        assert!(e("other x").contains("takes no list of its own"));
        assert!(e("a x\na y").contains("line 2: the category \"a\" is given twice"));
        assert!(e("lonely").contains("line 1: the category \"lonely\" has no types"));
        assert!(e("sci/data h5").contains("not a category name"));
        // A leading dot is forgiven; comments and blank lines are skipped.
        let c = Categories::parse("# mine\nsim .h5 nc # kept\n\n", "x").unwrap();
        assert_eq!(c.of(b"h5"), "sim");
        assert_eq!(c.of(b"csv"), OTHER);
        assert!(e("# nothing yet\n\n").contains("line 2: it holds no category"));
    }
}
