//! What a scan covered: the options that leave entries out (or, following symlinks, bring more
//! in), as one canonical text stored with its snapshot. Two snapshots of one filesystem describe
//! the same tree only when their texts agree; history and growth say so when they do not.

/// The options of a scan that change which entries it records.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ScanOptions {
    pub max_depth: Option<u32>,
    pub exclude: Vec<String>,
    pub one_file_system: bool,
    pub follow_symlinks: bool,
}

impl ScanOptions {
    /// The canonical text: "" for a scan of everything below the root, else the options as
    /// flags in a fixed order, excludes sorted, e.g. `--max-depth=2 --exclude=.snapshot -x`.
    pub fn canonical(&self) -> String {
        let mut flags = Vec::new();
        if let Some(depth) = self.max_depth {
            flags.push(format!("--max-depth={depth}"));
        }
        let mut exclude: Vec<&str> = self.exclude.iter().map(String::as_str).collect();
        exclude.sort_unstable();
        exclude.dedup();
        for glob in exclude {
            flags.push(format!("--exclude={}", shell_word(glob)));
        }
        if self.one_file_system {
            flags.push("--one-file-system".into());
        }
        if self.follow_symlinks {
            flags.push("--follow-symlinks".into());
        }
        flags.join(" ")
    }
}

/// How a stored options text reads to a person.
pub fn describe(canonical: &str) -> String {
    if canonical.is_empty() {
        "a full scan".into()
    } else {
        format!("a scan with {canonical}")
    }
}

/// A word as the shell would need it: as it is when plain, else in single quotes.
fn shell_word(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./*?[]!".contains(&b));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_scan_is_empty_and_flags_come_in_one_order() {
        assert_eq!(ScanOptions::default().canonical(), "");
        let options = ScanOptions {
            max_depth: Some(2),
            exclude: vec!["b c".into(), ".snapshot".into(), ".snapshot".into()],
            one_file_system: true,
            follow_symlinks: true,
        };
        assert_eq!(
            options.canonical(),
            "--max-depth=2 --exclude=.snapshot --exclude='b c' --one-file-system --follow-symlinks"
        );
        assert_eq!(describe(""), "a full scan");
        assert_eq!(describe("--max-depth=2"), "a scan with --max-depth=2");
    }
}
