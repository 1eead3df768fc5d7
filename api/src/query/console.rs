//! The query console's SQL: the check that a statement is one SELECT ([`statement`]), and the
//! presets, statements for the questions admins ask most written for one snapshot
//! ([`presets`]; see [`crate::console`]). The presets name the snapshot tables without their
//! database: the console runs them in the API's.

use serde::Serialize;

use storage_tracker_proto::sql::quote_bytes;

/// Longest statement taken, in bytes: percent-encoded in the URL (up to three bytes each), it
/// stays below the 64 KiB the HTTP server takes for a request's URI.
pub const MAX_SQL_BYTES: usize = 16 << 10;

/// The statement `sql` holds, without a trailing `;`: refused unless it is exactly one
/// `SELECT` (or `WITH … SELECT`) without a `FORMAT` clause. Strings, quoted names and comments
/// are skipped as ClickHouse's lexer skips them.
pub fn statement(sql: &str) -> Result<&str, String> {
    if sql.len() > MAX_SQL_BYTES {
        return Err(format!(
            "sql is {} bytes; the console takes at most {MAX_SQL_BYTES}",
            sql.len()
        ));
    }
    if sql.contains('\0') {
        return Err("sql holds a NUL byte".into());
    }
    let bytes = sql.as_bytes();
    let mut words: Vec<&str> = Vec::new();
    let mut end = None;
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        match c {
            b'\'' | b'"' | b'`' => {
                let what = match c {
                    b'\'' => "a string",
                    _ => "a quoted name",
                };
                let mut j = i + 1;
                loop {
                    match bytes.get(j) {
                        None => return Err(format!("sql ends inside {what} (opened at byte {i})")),
                        Some(b'\\') => j += 2,
                        Some(&q) if q == c && bytes.get(j + 1) == Some(&c) => j += 2,
                        Some(&q) if q == c => break,
                        Some(_) => j += 1,
                    }
                }
                if end.is_some() {
                    return Err(one_statement());
                }
                i = j + 1;
                continue;
            }
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                i = bytes[i..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(bytes.len(), |n| i + n);
                continue;
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                let close = sql[i + 2..]
                    .find("*/")
                    .ok_or_else(|| format!("sql ends inside a comment (opened at byte {i})"))?;
                i += 2 + close + 2;
                continue;
            }
            b';' => {
                if end.is_some() {
                    return Err(one_statement());
                }
                end = Some(i);
            }
            c if c.is_ascii_whitespace() => {}
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let n = bytes[i..]
                    .iter()
                    .position(|b| !(b.is_ascii_alphanumeric() || *b == b'_'))
                    .unwrap_or(bytes.len() - i);
                if end.is_some() {
                    return Err(one_statement());
                }
                words.push(&sql[i..i + n]);
                i += n;
                continue;
            }
            _ if end.is_some() => return Err(one_statement()),
            _ => {}
        }
        i += 1;
    }
    let Some(first) = words.first() else {
        return Err(if sql.trim().is_empty() {
            "sql is empty: give one SELECT statement".into()
        } else {
            "sql holds no statement: give one SELECT statement".into()
        });
    };
    // A FORMAT clause ends a statement: `FORMAT name` (a column named format is no clause).
    if let [.., format, _] = words.as_slice()
        && format.eq_ignore_ascii_case("format")
    {
        return Err(
            "the console chooses the format of the answer: drop the FORMAT clause and \
                    ask for format=json, csv, tsv or markdown"
                .into(),
        );
    }
    if !(first.eq_ignore_ascii_case("select") || first.eq_ignore_ascii_case("with")) {
        return Err(format!(
            "the console runs SELECT statements only (and WITH … SELECT), got {:?}",
            first.to_ascii_uppercase()
        ));
    }
    Ok(sql[..end.unwrap_or(sql.len())].trim())
}

fn one_statement() -> String {
    "the console runs one statement at a time: remove everything after the first ';'".into()
}

/// A statement for a question admins ask.
#[derive(Debug, Serialize)]
pub struct Preset {
    pub id: &'static str,
    pub title: &'static str,
    pub sql: String,
}

/// The presets for snapshot `id` of the root `root`, "old" meaning `days`
/// before the scan (`cutoff`, in nanoseconds).
pub fn presets(id: u64, root: &[u8], days: u32, cutoff: i64) -> Vec<Preset> {
    let root = &quote_bytes(root);
    let owner = format!(
        "ANY LEFT JOIN (SELECT id AS uid, name AS owner FROM principals \
         WHERE snapshot_id = {id} AND kind = 'user') AS owners USING uid"
    );
    let file_columns = "path, size, allocated, uid, owner, toDateTime(intDiv(mtime_ns, 1000000000)) AS modified, \
         toDateTime(intDiv(atime_ns, 1000000000)) AS accessed";
    let preset = |id, title, sql: String| Preset { id, title, sql };
    let day_word = if days == 1 { "day" } else { "days" };
    // The largest files whose `column` is older than the cutoff.
    let untouched = |id_: &'static str, title, verb, column| {
        preset(
            id_,
            title,
            format!(
                "-- not {verb} in the {days} {day_word} before the scan\n\
                 SELECT {file_columns}\nFROM entries\n{owner}\n\
                 WHERE snapshot_id = {id} AND kind = 'file' AND {column} < {cutoff}\n\
                 ORDER BY size DESC, path\nLIMIT 100"
            ),
        )
    };
    vec![
        preset(
            "largest-files",
            "Largest files",
            format!(
                "SELECT {file_columns}\nFROM entries\n{owner}\nWHERE snapshot_id = {id} AND kind = 'file'\n\
                 ORDER BY size DESC, path\nLIMIT 100"
            ),
        ),
        untouched(
            "not-modified",
            "Largest files not modified for N days",
            "modified",
            "mtime_ns",
        ),
        untouched(
            "not-accessed",
            "Largest files not accessed for N days",
            "accessed",
            "atime_ns",
        ),
        preset(
            "by-type",
            "Breakdown by file type",
            format!(
                "SELECT extension, files, bytes, allocated\nFROM type_usage\n\
                 WHERE snapshot_id = {id}\nORDER BY bytes DESC, extension\nLIMIT 100"
            ),
        ),
        preset(
            "home-audit",
            "Home directory audit: what others own in each top-level directory",
            format!(
                "-- per directory below the root: bytes and files of its owner, and of everyone else\n\
                 SELECT `top` AS directory, dir_uid AS owner_uid,\n    \
                 sumIf(bytes, id = dir_uid) AS owner_bytes,\n    \
                 sumIf(bytes, id != dir_uid) AS others_bytes,\n    \
                 sumIf(files, id != dir_uid) AS others_files,\n    \
                 arraySort(groupUniqArrayIf(id, id != dir_uid)) AS other_uids\n\
                 FROM owner_usage\n\
                 ANY INNER JOIN (SELECT name AS top, uid AS dir_uid FROM dir_rollups \
                 WHERE snapshot_id = {id} AND parent_path = {root}) AS homes USING top\n\
                 WHERE snapshot_id = {id} AND principal = 'user'\n\
                 GROUP BY top, dir_uid\nORDER BY others_bytes DESC, top\nLIMIT 1000"
            ),
        ),
        preset(
            "top-level",
            "Sizes of the top-level directories",
            format!(
                "SELECT name, bytes, allocated, files, dirs, \
                 toDateTime(intDiv(max_mtime_ns, 1000000000)) AS newest_change\n\
                 FROM dir_rollups\nWHERE snapshot_id = {id} AND parent_path = {root}\n\
                 ORDER BY bytes DESC, name\nLIMIT 1000"
            ),
        ),
        preset(
            "empty-files",
            "Empty files",
            format!(
                "SELECT path, uid, owner, toDateTime(intDiv(mtime_ns, 1000000000)) AS modified\n\
                 FROM entries\n{owner}\nWHERE snapshot_id = {id} AND kind = 'file' AND size = 0\n\
                 ORDER BY path\nLIMIT 1000"
            ),
        ),
        preset(
            "logs-and-archives",
            "Largest logs and archives",
            format!(
                "SELECT {file_columns}\nFROM entries\n{owner}\n\
                 WHERE snapshot_id = {id} AND kind = 'file'\n    \
                 AND match(lower(name), '\\\\.(log|out|err|tar|gz|tgz|bz2|xz|zst|zip|7z|rar)$')\n\
                 ORDER BY size DESC, path\nLIMIT 100"
            ),
        ),
        preset(
            "most-files",
            "Directories with the most files in them",
            format!(
                "SELECT path, direct_files, direct_bytes, files AS files_below, bytes AS bytes_below\n\
                 FROM dir_rollups\nWHERE snapshot_id = {id}\n\
                 ORDER BY direct_files DESC, path\nLIMIT 100"
            ),
        ),
        preset(
            "same-name",
            "Same-name files in several places",
            format!(
                "SELECT name, count() AS copies, uniqExact(parent_path) AS places, sum(size) AS bytes\n\
                 FROM entries\nWHERE snapshot_id = {id} AND kind = 'file' AND size > 0\n\
                 GROUP BY name\nHAVING places > 1\nORDER BY bytes DESC, name\nLIMIT 100"
            ),
        ),
        preset(
            "tables",
            "The tables and their columns",
            "SELECT table, name, type\nFROM system.columns\nWHERE database = currentDatabase()\n\
             ORDER BY table, name"
                .to_owned(),
        ),
    ]
}
