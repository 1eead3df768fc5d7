//! The query console: one SELECT of an admin's over the snapshot tables, run as the API's
//! read-only ClickHouse user, so under its profile's limits (time, result rows, memory; with
//! `readonly=1` neither writes, settings nor table functions). Admin tokens only.
//!
//! `GET /api/v1/console?sql=…` answers a JSON page of the result (the first `limit` rows, and
//! how many there are); `format=csv|tsv|markdown` streams every row as a download. Presets
//! (`GET /api/v1/snapshots/{id}/console/presets`) are the statements for the questions admins
//! ask most, written for one snapshot.
//!
//! The statement is checked first ([`crate::query::console::statement`]: one statement, a
//! `SELECT` or `WITH`, no `FORMAT`), so that a mistake gets a message that says what to do;
//! ClickHouse's read-only mode is what enforces it.

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::extract::{Check, Checked, InSnapshot, Route};
use crate::params::{ConsoleFormat, Word};
use crate::query;
use crate::query::console::{Preset, statement};
use crate::reports::NS_PER_DAY;
use crate::stream::CutShort;
use crate::{ApiError, AppState};

/// The routes of this resource.
pub fn routes() -> crate::resource::Routes {
    crate::resource::Routes::default()
        .get("/api/v1/console", console)
        .get("/api/v1/snapshots/{snapshot_id}/console/presets", presets)
}

/// Most rows of a JSON answer (a download has them all).
pub const MAX_JSON_ROWS: u64 = 10_000;
const DEFAULT_JSON_ROWS: u64 = 1_000;
/// Bytes gathered before a download sends them on.
const SEND_BYTES: usize = 256 << 10;

#[derive(Debug, Deserialize)]
pub(crate) struct ConsoleParams {
    sql: Option<String>,
    #[serde(default)]
    format: Word<ConsoleFormat>,
    limit: Option<u64>,
}

/// A statement to run, and how to answer it.
#[derive(Debug)]
pub(crate) struct Console {
    sql: String,
    format: ConsoleFormat,
    limit: u64,
}

impl Check for ConsoleParams {
    type Checked = Console;

    fn check(self, route: &Route) -> Result<Console, ApiError> {
        route.needs_admin("the query console")?;
        let format = self.format.checked()?;
        let sql = self.sql.unwrap_or_default();
        let sql = statement(&sql).map_err(ApiError::BadRequest)?.to_owned();
        let limit = match (format, self.limit) {
            (ConsoleFormat::Json, None) => DEFAULT_JSON_ROWS,
            (ConsoleFormat::Json, Some(n)) if (1..=MAX_JSON_ROWS).contains(&n) => n,
            (ConsoleFormat::Json, Some(n)) => {
                return Err(ApiError::BadRequest(format!(
                    "limit must be between 1 and {MAX_JSON_ROWS}, got {n}; a download \
                     (format=csv, tsv or markdown) has every row"
                )));
            }
            (_, Some(_)) => {
                return Err(ApiError::BadRequest(
                    "limit pages the JSON answer; a download has every row (write LIMIT in the \
                     statement for fewer)"
                        .into(),
                ));
            }
            (_, None) => u64::MAX,
        };
        Ok(Console { sql, format, limit })
    }
}

/// A column of an answer: its name and ClickHouse type.
#[derive(Debug, Serialize)]
pub(crate) struct Column {
    name: String,
    #[serde(rename = "type")]
    ty: String,
}

/// A value whose bytes are not UTF-8: where it is, and its bytes (its cell holds them with
/// U+FFFD in place of those that are not).
#[derive(Debug, Serialize)]
pub(crate) struct Binary {
    row: usize,
    column: usize,
    b64: String,
}

/// `GET /api/v1/console` as JSON: the columns, the first rows, and how many there are.
#[derive(Debug, Serialize)]
pub(crate) struct Answer {
    columns: Vec<Column>,
    /// Each value as ClickHouse writes it as text; `null` for NULL.
    rows: Vec<Vec<Option<String>>>,
    /// The values of `rows` that are not UTF-8.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    binary: Vec<Binary>,
    /// Rows the statement gave, all of them, however many `rows` shows.
    total_rows: u64,
    /// Whether `rows` holds fewer than `total_rows`.
    truncated: bool,
    /// Seconds from sending the statement to its last row, as the API saw them.
    elapsed_seconds: f64,
}

/// The console's reading of ClickHouse's answer to a user's statement: its mistakes are the
/// request's (a 400 with ClickHouse's reason); its limits say which; the rest is ClickHouse's.
fn refused(e: clickhouse::error::Error) -> ApiError {
    let clickhouse::error::Error::BadResponse(text) = &e else {
        return ApiError::Database(e);
    };
    let reason = exception_text(text);
    let code = crate::error::exception_code(text);
    if let Some(limit) = code.and_then(crate::error::limit_of) {
        return ApiError::Limited(format!(
            "the statement needed more {limit} than the read-only user may ({reason}); narrow \
             it: a LIMIT, a WHERE, an aggregate"
        ));
    }
    match code {
        // The database, not the statement: a server or shard unreachable, too busy, stopped.
        Some(202 | 209 | 210 | 279 | 394) | None => ApiError::Database(e),
        Some(code) => ApiError::BadRequest(format!(
            "ClickHouse refused the statement (code {code}): {reason}"
        )),
    }
}

/// The message of a ClickHouse exception, without its wrapping ("Code: 47, e.displayText() =
/// DB::Exception: …, e.what() = DB::Exception" on 18.16, "… (version …)" on current releases).
fn exception_text(text: &str) -> &str {
    let text = text.trim();
    let start = text
        .find("DB::Exception: ")
        .map_or(0, |n| n + "DB::Exception: ".len());
    let rest = &text[start..];
    let end = [", e.what() = ", " (version "]
        .iter()
        .filter_map(|tail| rest.find(tail))
        .min()
        .unwrap_or(rest.len());
    rest[..end].trim()
}

/// `GET /api/v1/console?sql=…&format=json|csv|tsv|markdown&limit=…`.
pub(crate) async fn console(
    State(state): State<AppState>,
    Checked(Console { sql, format, limit }): Checked<ConsoleParams>,
) -> Result<Response, ApiError> {
    // Unqualified names are the snapshot tables; ClickHouse answers once the statement is
    // done, so that an error is an error status, never a body cut short.
    let client = state.client.clone().with_database(state.database.as_str());
    let started = std::time::Instant::now();
    // On a line of its own: after a trailing `-- comment`, the FORMAT the client adds still counts.
    let mut cursor = client
        .query_raw(&format!("{sql}\n"))
        .with_setting("wait_end_of_query", "1")
        .fetch_bytes("TabSeparatedWithNamesAndTypes")
        .map_err(refused)?;
    let mut lines = Lines::default();
    // The names and the types: once they are read, the statement ran.
    let (names, types) = loop {
        if let Some((names, types)) = lines.first_two() {
            break (fields(&names), fields(&types));
        }
        match cursor.next().await.map_err(refused)? {
            Some(chunk) => lines.push(&chunk),
            None => {
                return Err(ApiError::Database(clickhouse::error::Error::BadResponse(
                    "the answer ended before its column names and types".into(),
                )));
            }
        }
    };
    let columns: Vec<Column> = names
        .into_iter()
        .zip(types)
        .map(|(name, ty)| Column {
            name: String::from_utf8_lossy(&name.unwrap_or_default()).into_owned(),
            ty: String::from_utf8_lossy(&ty.unwrap_or_default()).into_owned(),
        })
        .collect();
    if format == ConsoleFormat::Json {
        let (mut rows, mut binary) = (Vec::new(), Vec::new());
        let mut total = 0u64;
        loop {
            while let Some(line) = lines.next_line() {
                total += 1;
                if total > limit {
                    continue;
                }
                let row = fields(line).into_iter().enumerate().map(|(column, value)| {
                    value.map(|bytes| match String::from_utf8(bytes) {
                        Ok(text) => text,
                        Err(e) => {
                            let b64 =
                                base64::engine::general_purpose::STANDARD.encode(e.as_bytes());
                            binary.push(Binary {
                                row: rows.len(),
                                column,
                                b64,
                            });
                            String::from_utf8_lossy(e.as_bytes()).into_owned()
                        }
                    })
                });
                let row = row.collect();
                rows.push(row);
            }
            match cursor.next().await.map_err(refused)? {
                Some(chunk) => lines.push(&chunk),
                None => break,
            }
        }
        lines.finish_check().map_err(ApiError::Database)?;
        return Ok(Json(Answer {
            columns,
            truncated: total > rows.len() as u64,
            total_rows: total,
            rows,
            binary,
            elapsed_seconds: started.elapsed().as_secs_f64(),
        })
        .into_response());
    }
    let (content_type, extension) = match format {
        ConsoleFormat::Csv => ("text/csv", "csv"),
        ConsoleFormat::Tsv => ("text/tab-separated-values", "tsv"),
        ConsoleFormat::Markdown => ("text/markdown; charset=utf-8", "md"),
        ConsoleFormat::Json => unreachable!("answered above"),
    };
    let writer = Writer { format, columns };
    let body = crate::stream::spawned_body(move |tx| async move {
        let mut out = Vec::with_capacity(SEND_BYTES * 2);
        writer.header(&mut out);
        loop {
            while let Some(line) = lines.next_line() {
                writer.row(line, &mut out);
            }
            if out.len() >= SEND_BYTES
                && tx.send(Ok(std::mem::take(&mut out).into())).await.is_err()
            {
                return; // The client went away.
            }
            match cursor.next().await {
                Ok(Some(chunk)) => lines.push(&chunk),
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!("a console download failed: {e}");
                    let _ = tx.send(Err(CutShort::from(e))).await;
                    return;
                }
            }
        }
        if let Err(e) = lines.finish_check() {
            let _ = tx.send(Err(CutShort::from(e))).await;
            return;
        }
        let _ = tx.send(Ok(out.into())).await;
    });
    Ok((
        [
            (header::CONTENT_TYPE, content_type.to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"console.{extension}\""),
            ),
        ],
        body,
    )
        .into_response())
}

/// The lines of a TabSeparated answer as it arrives, each without its newline.
#[derive(Debug, Default)]
struct Lines {
    buffer: Vec<u8>,
    start: usize,
}

impl Lines {
    fn push(&mut self, chunk: &[u8]) {
        self.buffer.drain(..self.start);
        self.start = 0;
        self.buffer.extend_from_slice(chunk);
    }

    /// The next whole line, read in place (a row past a JSON page is counted, never copied).
    fn next_line(&mut self) -> Option<&[u8]> {
        let start = self.start;
        let n = self.buffer[start..].iter().position(|&b| b == b'\n')?;
        self.start += n + 1;
        Some(&self.buffer[start..start + n])
    }

    /// The next two lines, once both have arrived.
    fn first_two(&mut self) -> Option<(Vec<u8>, Vec<u8>)> {
        let rest = &self.buffer[self.start..];
        let lines = rest.iter().filter(|&&b| b == b'\n').take(2).count();
        if lines < 2 {
            return None;
        }
        let names = self.next_line()?.to_vec();
        Some((names, self.next_line()?.to_vec()))
    }

    /// An error unless every line ended (ClickHouse ends each row with a newline).
    fn finish_check(&self) -> Result<(), clickhouse::error::Error> {
        if self.start == self.buffer.len() {
            Ok(())
        } else {
            Err(clickhouse::error::Error::BadResponse(
                "the answer ended inside a row".into(),
            ))
        }
    }
}

/// The fields of a TabSeparated line, unescaped: `None` for `\N` (NULL).
fn fields(line: &[u8]) -> Vec<Option<Vec<u8>>> {
    line.split(|&b| b == b'\t')
        .map(|field| {
            if field == b"\\N" {
                return None;
            }
            let mut out = Vec::with_capacity(field.len());
            let mut bytes = field.iter();
            while let Some(&b) = bytes.next() {
                if b != b'\\' {
                    out.push(b);
                    continue;
                }
                match bytes.next() {
                    Some(b'n') => out.push(b'\n'),
                    Some(b't') => out.push(b'\t'),
                    Some(b'r') => out.push(b'\r'),
                    Some(b'b') => out.push(0x08),
                    Some(b'f') => out.push(0x0c),
                    Some(b'0') => out.push(0),
                    Some(&other) => out.push(other),
                    None => out.push(b'\\'),
                }
            }
            Some(out)
        })
        .collect()
}

/// Writes a download: its header, then each row.
struct Writer {
    format: ConsoleFormat,
    columns: Vec<Column>,
}

impl Writer {
    fn header(&self, out: &mut Vec<u8>) {
        let names: Vec<Option<Vec<u8>>> = self
            .columns
            .iter()
            .map(|c| Some(c.name.clone().into_bytes()))
            .collect();
        match self.format {
            ConsoleFormat::Csv => csv_line(&names, out),
            ConsoleFormat::Tsv => {
                let escaped: Vec<String> =
                    self.columns.iter().map(|c| tsv_escape(&c.name)).collect();
                out.extend_from_slice(escaped.join("\t").as_bytes());
                out.push(b'\n');
            }
            ConsoleFormat::Markdown => {
                markdown_line(&names, out);
                let rule: Vec<&str> = self
                    .columns
                    .iter()
                    .map(|c| if numeric(&c.ty) { "---:" } else { "---" })
                    .collect();
                out.extend_from_slice(format!("| {} |\n", rule.join(" | ")).as_bytes());
            }
            ConsoleFormat::Json => {}
        }
    }

    /// One row, from its line as ClickHouse wrote it.
    fn row(&self, line: &[u8], out: &mut Vec<u8>) {
        match self.format {
            // ClickHouse's TabSeparated is the download's: the bytes as they are.
            ConsoleFormat::Tsv => {
                out.extend_from_slice(line);
                out.push(b'\n');
            }
            ConsoleFormat::Csv => csv_line(&fields(line), out),
            ConsoleFormat::Markdown => markdown_line(&fields(line), out),
            ConsoleFormat::Json => {}
        }
    }
}

/// Whether a column of this type holds numbers (right-aligned in Markdown).
fn numeric(ty: &str) -> bool {
    let ty = ty.strip_prefix("Nullable(").unwrap_or(ty);
    ["Int", "UInt", "Float", "Decimal"]
        .iter()
        .any(|p| ty.starts_with(p))
}

fn tsv_escape(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('\t', "\\t")
        .replace('\n', "\\n")
}

/// A CSV line (RFC 4180): a field quoted when it holds a comma, a quote, a line break or
/// leading or trailing spaces; NULL empty. Bytes that are not UTF-8 are written as they are.
fn csv_line(fields: &[Option<Vec<u8>>], out: &mut Vec<u8>) {
    for (n, field) in fields.iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        let Some(bytes) = field else { continue };
        let quoted = bytes
            .iter()
            .any(|b| matches!(b, b',' | b'"' | b'\n' | b'\r'))
            || bytes.first().is_some_and(u8::is_ascii_whitespace)
            || bytes.last().is_some_and(u8::is_ascii_whitespace);
        if !quoted {
            out.extend_from_slice(bytes);
            continue;
        }
        out.push(b'"');
        for &b in bytes {
            if b == b'"' {
                out.push(b'"');
            }
            out.push(b);
        }
        out.push(b'"');
    }
    out.extend_from_slice(b"\r\n");
}

/// A Markdown table row: each cell's text with Markdown's and HTML's characters escaped, line
/// breaks as `<br>`, other control characters and bytes that are not UTF-8 as `\xNN`, NULL as
/// `NULL` in italics.
fn markdown_line(fields: &[Option<Vec<u8>>], out: &mut Vec<u8>) {
    out.extend_from_slice(b"|");
    for field in fields {
        out.push(b' ');
        match field {
            None => out.extend_from_slice(b"*NULL*"),
            Some(bytes) => markdown_text(bytes, out),
        }
        out.extend_from_slice(b" |");
    }
    out.push(b'\n');
}

fn markdown_text(mut bytes: &[u8], out: &mut Vec<u8>) {
    while !bytes.is_empty() {
        let (text, bad) = match std::str::from_utf8(bytes) {
            Ok(text) => (text, None),
            Err(e) => {
                let valid = e.valid_up_to();
                let bad = e.error_len().unwrap_or(bytes.len() - valid);
                (
                    std::str::from_utf8(&bytes[..valid]).unwrap_or_default(),
                    Some((valid, bad)),
                )
            }
        };
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\n' => out.extend_from_slice(b"<br>"),
                // A line break as CR LF, or a lone CR.
                '\r' if chars.peek() == Some(&'\n') => {}
                '\r' => out.extend_from_slice(b"<br>"),
                c if c.is_ascii_control() => {
                    out.extend_from_slice(format!("\\x{:02X}", c as u8).as_bytes());
                }
                '\\' | '|' | '*' | '_' | '`' | '[' | ']' | '<' | '>' | '~' | '&' | '#' => {
                    out.push(b'\\');
                    out.push(c as u8);
                }
                c => {
                    let mut buf = [0; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
            }
        }
        match bad {
            None => break,
            Some((valid, bad)) => {
                for b in &bytes[valid..valid + bad] {
                    out.extend_from_slice(format!("\\x{b:02X}").as_bytes());
                }
                bytes = &bytes[valid + bad..];
            }
        }
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct PresetParams {
    days: Option<u32>,
}

impl Check for PresetParams {
    type Checked = u32;
    const SNAPSHOT_ID_FIRST: bool = true;

    fn check(self, route: &Route) -> Result<u32, ApiError> {
        route.needs_admin("the query console")?;
        let days = self.days.unwrap_or(365);
        if days > 36_500 {
            return Err(ApiError::BadRequest(format!(
                "days must be at most 36500, got {days}"
            )));
        }
        Ok(days)
    }
}

/// The presets for one snapshot.
#[derive(Debug, Serialize)]
pub(crate) struct Presets {
    snapshot_id: u64,
    days: u32,
    presets: Vec<Preset>,
}

/// `GET /api/v1/snapshots/{id}/console/presets?days=365`: the presets, for this snapshot.
pub(crate) async fn presets(
    Checked(days): Checked<PresetParams>,
    InSnapshot { snapshot, .. }: InSnapshot,
) -> Json<Presets> {
    let cutoff = snapshot.started_at_ns - i64::from(days) * NS_PER_DAY;
    let snapshot_id = snapshot.snapshot_id.get();
    Json(Presets {
        snapshot_id,
        days,
        presets: query::console::presets(snapshot_id, &snapshot.root_path, days, cutoff),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::console::MAX_SQL_BYTES;

    #[test]
    fn one_select_is_taken_and_the_rest_refused() {
        assert_eq!(statement("SELECT 1").unwrap(), "SELECT 1");
        assert_eq!(statement("  select 1 ;  -- done\n").unwrap(), "select 1");
        assert_eq!(
            statement("WITH 2 AS x SELECT x /* ; */ -- ;\n").unwrap(),
            "WITH 2 AS x SELECT x /* ; */ -- ;"
        );
        assert_eq!(
            statement("SELECT 'a;b', \"c;d\", `e;f`, 'it''s', 'x\\';'").unwrap(),
            "SELECT 'a;b', \"c;d\", `e;f`, 'it''s', 'x\\';'"
        );
        for ok in [
            "SELECT format('{}', 1)",
            "SELECT 1 AS format",
            "SELECT format FROM t",
            "SELECT 1 -- FORMAT CSV",
        ] {
            assert_eq!(statement(ok).unwrap(), ok);
        }
        for (sql, says) in [
            ("", "empty"),
            ("  -- nothing\n", "no statement"),
            ("SELECT 1; SELECT 2", "one statement"),
            ("SELECT 1; DROP TABLE entries", "one statement"),
            ("SELECT 1;;", "one statement"),
            ("DROP TABLE entries", "SELECT statements only"),
            ("insert into t values (1)", "\"INSERT\""),
            ("SELECT 1 FORMAT JSON", "FORMAT"),
            ("SELECT 1 format TSV;", "FORMAT"),
            ("\u{fffd}", "no statement"),
            ("SELECT 'open", "inside a string"),
            ("SELECT 1 /* open", "inside a comment"),
            ("SELECT \"open", "inside a quoted name"),
            ("SELECT '\0'", "NUL"),
        ] {
            let e = statement(sql).unwrap_err();
            assert!(e.contains(says), "{sql:?}: {e}");
        }
        assert!(statement(&format!("SELECT '{}'", "x".repeat(MAX_SQL_BYTES))).is_err());
    }

    #[test]
    fn tab_separated_fields_are_unescaped_and_null_is_none() {
        assert_eq!(
            fields(b"a\\tb\t\\N\tx\\ny\t\\\\\t\xff"),
            vec![
                Some(b"a\tb".to_vec()),
                None,
                Some(b"x\ny".to_vec()),
                Some(b"\\".to_vec()),
                Some(b"\xff".to_vec()),
            ]
        );
        let mut lines = Lines::default();
        lines.push(b"a\tb\nc");
        assert_eq!(lines.next_line().unwrap(), b"a\tb");
        assert!(lines.next_line().is_none());
        assert!(lines.finish_check().is_err());
        lines.push(b"d\n");
        assert_eq!(lines.next_line().unwrap(), b"cd");
        assert!(lines.finish_check().is_ok());
    }

    #[test]
    fn downloads_keep_every_byte_and_escape_what_their_format_needs() {
        let row = vec![
            Some(b"plain".to_vec()),
            Some(b"a,\"b\"\nc".to_vec()),
            None,
            Some(b" x".to_vec()),
            Some(b"bad\xffname".to_vec()),
        ];
        let mut csv = Vec::new();
        csv_line(&row, &mut csv);
        assert_eq!(csv, b"plain,\"a,\"\"b\"\"\nc\",,\" x\",bad\xffname\r\n");
        let mut md = Vec::new();
        markdown_line(&row, &mut md);
        assert_eq!(
            String::from_utf8(md).unwrap(),
            "| plain | a,\"b\"<br>c | *NULL* |  x | bad\\xFFname |\n"
        );
        let mut md = Vec::new();
        markdown_line(&[Some(b"a|b_c*<i>".to_vec())], &mut md);
        assert_eq!(String::from_utf8(md).unwrap(), "| a\\|b\\_c\\*\\<i\\> |\n");
        let mut md = Vec::new();
        markdown_line(&[Some(b"a\r\nb\rc\x01\0".to_vec())], &mut md);
        assert_eq!(
            String::from_utf8(md).unwrap(),
            "| a<br>b<br>c\\x01\\x00 |\n"
        );
        assert!(numeric("UInt64") && numeric("Nullable(Float64)") && !numeric("String"));
    }

    #[test]
    fn exception_texts_lose_their_wrapping() {
        assert_eq!(
            exception_text(
                "Code: 47, e.displayText() = DB::Exception: Missing columns: 'x', e.what() = DB::Exception\n"
            ),
            "Missing columns: 'x'"
        );
        assert_eq!(
            exception_text(
                "Code: 47. DB::Exception: Unknown identifier x. (UNKNOWN_IDENTIFIER) (version 24.8)"
            ),
            "Unknown identifier x. (UNKNOWN_IDENTIFIER)"
        );
    }

    #[test]
    fn every_preset_is_one_select_the_console_takes() {
        let presets = query::console::presets(7, b"/data", 30, 123);
        assert_eq!(presets.len(), 11);
        for p in &presets {
            statement(&p.sql).unwrap_or_else(|e| panic!("{}: {e}", p.id));
        }
        assert!(presets[1].sql.contains("mtime_ns < 123"));
        assert!(presets[4].sql.contains("parent_path = '/data'"));
    }
}
