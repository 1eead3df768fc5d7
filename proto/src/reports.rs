//! The per-snapshot reports computed at commit: how files are bucketed by size and by age, and
//! what a file's type (its name's extension) is. Each rule is written once in Rust, which tests
//! and clients use, and once as SQL for ClickHouse; tests check the two agree.

/// The histograms of a snapshot; codes match [`crate::ddl::HISTOGRAM_ENUM`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Histogram {
    Size = 1,
    Mtime = 2,
    Atime = 3,
}

/// Bucket 0 holds empty files; bucket `b >= 1` holds sizes in `[2^(b-1), 2^b)`.
pub fn size_bucket(size: u64) -> u8 {
    (u64::BITS - size.leading_zeros()) as u8
}

/// [`size_bucket`] in SQL, exact for every `UInt64` (no floating point, no bit functions
/// ClickHouse 18.16 lacks): the count of powers of two not above the size.
pub fn size_bucket_sql(size: &str) -> String {
    let terms: Vec<String> = (0..64)
        .map(|i| format!("({size} >= {})", 1u64 << i))
        .collect();
    format!("toUInt8({})", terms.join(" + "))
}

/// Upper bounds (exclusive) of the age buckets, in days. Bucket 0 holds times in the future;
/// bucket `i + 1` holds ages below `AGE_BOUNDS_DAYS[i]` and at least the bound before it; the
/// last bucket holds everything older than the last bound.
pub const AGE_BOUNDS_DAYS: [i64; 9] = [1, 7, 30, 90, 180, 365, 730, 1095, 1825];

const NS_PER_DAY: i64 = 86_400 * 1_000_000_000;

/// The age bucket of a timestamp, seen from `now_ns` (the snapshot's start).
pub fn age_bucket(time_ns: i64, now_ns: i64) -> u8 {
    let age = i128::from(now_ns) - i128::from(time_ns);
    if age < 0 {
        return 0;
    }
    let below = AGE_BOUNDS_DAYS
        .iter()
        .take_while(|&&days| age >= i128::from(days) * i128::from(NS_PER_DAY))
        .count();
    below as u8 + 1
}

/// [`age_bucket`] in SQL for the Int64 nanosecond column `time_ns`.
pub fn age_bucket_sql(time_ns: &str, now_ns: i64) -> String {
    let mut arms = format!("{time_ns} > {now_ns}, 0");
    for (i, days) in AGE_BOUNDS_DAYS.iter().enumerate() {
        let earliest = i128::from(now_ns) - i128::from(*days) * i128::from(NS_PER_DAY);
        arms.push_str(&format!(", {time_ns} > {earliest}, {}", i + 1));
    }
    format!("toUInt8(multiIf({arms}, {}))", AGE_BOUNDS_DAYS.len() + 1)
}

/// Longest extension kept; a longer one is not a type (e.g. `backup.2024-01-01T00-00-00`).
pub const MAX_EXTENSION_BYTES: usize = 16;

/// The smallest file that is a duplicate candidate: smaller ones waste little, and are many.
pub const DUPLICATE_MIN_SIZE: u64 = 1 << 20;

/// A file name's type: the bytes after its last dot, lowercased (ASCII); empty when there is no
/// dot after the first byte (`.bashrc` has no extension), or it is longer than
/// [`MAX_EXTENSION_BYTES`]. A versioned shared library (`libfoo.so.1.2.3`) has the type `so`.
pub fn extension(name: &[u8]) -> Vec<u8> {
    if is_versioned_library(name) {
        return b"so".to_vec();
    }
    match name.iter().rposition(|&b| b == b'.') {
        Some(dot) if dot > 0 && name.len() - dot - 1 <= MAX_EXTENSION_BYTES => {
            name[dot + 1..].to_ascii_lowercase()
        }
        _ => Vec::new(),
    }
}

/// Whether `name` is a versioned shared library: `.so` (in any case, not at its first byte)
/// followed by one or more `.` and digits (`libfoo.so.1`, `libfoo.so.1.2.3`).
fn is_versioned_library(name: &[u8]) -> bool {
    let (mut end, mut versions) = (name.len(), 0);
    loop {
        let digits = name[..end]
            .iter()
            .rev()
            .take_while(|b| b.is_ascii_digit())
            .count();
        if digits == 0 || end < digits + 1 || name[end - digits - 1] != b'.' {
            break;
        }
        end -= digits + 1;
        versions += 1;
    }
    versions > 0 && end > 3 && name[end - 3..end].eq_ignore_ascii_case(b".so")
}

/// [`is_versioned_library`] in SQL for the String column `name`. The regular expression is
/// matched on the lowercased name from its second byte: its literal `.so` lets ClickHouse skip
/// the names without it before running RE2, and it needs no `.` wildcard, which would not cross
/// a byte that is not UTF-8.
fn is_versioned_library_sql(name: &str) -> String {
    format!("match(lower(substring({name}, 2)), '\\\\.so(\\\\.[0-9]+)+$')")
}

/// [`extension`] in SQL for the String column `name`.
pub fn extension_sql(name: &str) -> String {
    let last = format!("arrayElement(splitByChar('.', {name}), -1)");
    format!(
        "if({}, 'so', if(position(substring({name}, 2), '.') = 0 OR length({last}) > {MAX_EXTENSION_BYTES}, '', lower({last})))",
        is_versioned_library_sql(name)
    )
}

/// Whether the String column `name` has the type `extension` ([`extension_sql`] equal to it),
/// in SQL that makes no array per name (a third of the time over 10^8 names). A name has the
/// type `ext` (lowercase, no dot, at most [`MAX_EXTENSION_BYTES`]) when it ends with a dot
/// and `ext` in any case, that dot being its last and not its first byte, and it is not a
/// versioned shared library; those have the type `so`.
pub fn extension_is_sql(name: &str, extension: &[u8]) -> String {
    if extension.is_empty() {
        return format!("{} = ''", extension_sql(name));
    }
    if extension.contains(&b'.')
        || extension.len() > MAX_EXTENSION_BYTES
        || extension.to_ascii_lowercase() != extension
    {
        // No name has it: the extension of a name is lowercase and holds no dot.
        return "0".to_owned();
    }
    let suffix = [b".", extension].concat();
    let ends = format!(
        "length({name}) >= {} AND endsWith(lower({name}), {})",
        extension.len() + 2,
        crate::sql::quote_bytes(&suffix)
    );
    if extension == b"so" {
        format!("({ends} OR {})", is_versioned_library_sql(name))
    } else if extension.iter().all(u8::is_ascii_digit) {
        // The last number of a versioned library's name is not its type.
        format!("{ends} AND NOT {}", is_versioned_library_sql(name))
    } else {
        ends
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_buckets_are_powers_of_two() {
        assert_eq!(size_bucket(0), 0);
        assert_eq!(size_bucket(1), 1);
        assert_eq!(size_bucket(2), 2);
        assert_eq!(size_bucket(3), 2);
        assert_eq!(size_bucket(4096), 13);
        assert_eq!(size_bucket(4095), 12);
        assert_eq!(size_bucket(u64::MAX), 64);
    }

    #[test]
    fn age_buckets_follow_the_bounds() {
        let now = 1_000 * NS_PER_DAY;
        assert_eq!(age_bucket(now + 1, now), 0);
        assert_eq!(age_bucket(now, now), 1);
        assert_eq!(age_bucket(now - NS_PER_DAY + 1, now), 1);
        assert_eq!(age_bucket(now - NS_PER_DAY, now), 2);
        assert_eq!(age_bucket(now - 6 * NS_PER_DAY, now), 2);
        assert_eq!(age_bucket(now - 7 * NS_PER_DAY, now), 3);
        assert_eq!(age_bucket(i64::MIN, now), 10);
    }

    #[test]
    fn extensions_ignore_leading_dots_and_long_tails() {
        assert_eq!(extension(b"a.TXT"), b"txt");
        assert_eq!(extension(b"archive.tar.gz"), b"gz");
        assert_eq!(extension(b".bashrc"), b"");
        assert_eq!(extension(b"..x"), b"x");
        assert_eq!(extension(b"noext"), b"");
        assert_eq!(extension(b"trailing."), b"");
        assert_eq!(extension(b"x.0123456789abcdefg"), b"");
        assert_eq!(extension(b"x.\xff"), b"\xff");
    }

    #[test]
    fn versioned_shared_libraries_are_of_type_so() {
        for so in [
            &b"libfoo.so.1"[..],
            b"libfoo.so.1.2.3",
            b"libFOO.SO.10",
            b"x.so.1.so.2",
            b"a.so.01",
            b"\xff.so.1",
        ] {
            assert_eq!(extension(so), b"so", "{}", String::from_utf8_lossy(so));
        }
        for (name, ext) in [
            (&b"libfoo.so"[..], &b"so"[..]),
            (b".so.1", b"1"),
            (b"a.so.", b""),
            (b"a.so.1a", b"1a"),
            (b"a.so1.2", b"2"),
            (b"a.so..1", b"1"),
            (b"data.1", b"1"),
        ] {
            assert_eq!(extension(name), ext, "{}", String::from_utf8_lossy(name));
        }
        assert_eq!(
            is_versioned_library_sql("name"),
            "match(lower(substring(name, 2)), '\\\\.so(\\\\.[0-9]+)+$')"
        );
    }

    #[test]
    fn a_type_is_a_suffix_after_the_first_byte() {
        assert_eq!(
            extension_is_sql("name", b"nc"),
            "length(name) >= 4 AND endsWith(lower(name), '.nc')"
        );
        let library = is_versioned_library_sql("name");
        assert_eq!(
            extension_is_sql("name", b"so"),
            format!("(length(name) >= 4 AND endsWith(lower(name), '.so') OR {library})")
        );
        assert_eq!(
            extension_is_sql("name", b"3"),
            format!("length(name) >= 3 AND endsWith(lower(name), '.3') AND NOT {library}")
        );
        assert_eq!(
            extension_is_sql("n", b""),
            format!("{} = ''", extension_sql("n"))
        );
        for never in [&b"tar.gz"[..], b"TXT", b"0123456789abcdefg"] {
            assert_eq!(extension_is_sql("name", never), "0");
        }
    }
}
