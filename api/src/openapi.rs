//! The OpenAPI 3.0 document of the API, served at `/api/v1/openapi.json`: every route's
//! parameters, and every answer's fields as component schemas (types, which fields are always
//! there, enums, nullable, nested objects), each object closed (`additionalProperties: false`);
//! the 200 of each route and the error body of its 4xx and 5xx refer to them.
//!
//! The schemas are written here, beside the Rust types they describe (the response structs of
//! the resource modules), and kept in step with them by tests, not by hand:
//! - a test in [`crate::routes`] checks that the document names exactly the routes the
//!   routers serve;
//! - `tests/openapi.rs` calls every route on scanned trees, with parameters that bring out each
//!   optional field, and validates every answer strictly against this document (no field it
//!   does not name, every required one, types, enums, nullable), and fails when an optional
//!   field was never seen present and absent;
//! - `tests/api_fuzz.rs` sends schemathesis's generated requests (valid and invalid) to a real
//!   `storage-api` and checks every answer against this document: no 5xx, a status the route
//!   documents, a content type documented for it, and a body its schema allows;
//! - the UI's types (`ui/src/api.gen.ts`) are generated from the served document by
//!   `ui/scripts/api-types.mjs`, and a browser-stack test (`ui/tests/ui.test.mjs`) fails when
//!   the committed file is not what the served document generates; `tsc` then checks every
//!   use in the UI.
//!
//! So a field added, renamed or removed in a response struct fails `tests/openapi.rs` until
//! the schema here says the same, and then the UI's test until its types are regenerated.
//!
//! The `enum`s are not written here where the Rust has the list: entry kinds and failed
//! operations come from [`EntryKind::ALL`] and [`ErrorOp::ALL`], and every query parameter that
//! takes a word (`sort`, `order`, `what`, `by`, `of`, `format`, `field`, `match`, `size`), with
//! the answers' fields that echo one (usage's `by`, a histogram's `of`, a treemap's `size`,
//! growth per owner's `by`), from the `WORDS` of its enum in [`crate::params`], which a test
//! there checks are exactly the words serde reads. Four lists are written here, because the
//! Rust answers them as strings chosen in a `match`, not as a type with a list: the error
//! body's `error` ([`crate::ApiError`]'s answer and the 401 of [`crate::access`]), health's
//! `status` ([`crate::routes`]), and a growth change's and an owner change's `status`
//! ([`crate::history`]); `tests/openapi.rs` and the fuzz test refuse an answer outside them.

use serde_json::{Map, Value, json};
use storage_tracker_proto::{EntryKind, ErrorOp};

use crate::params::{
    AreaBy, ChildSort, ConsoleFormat, DuplicateStatus, HistogramOf, MatchKind, Order, OwnerBy,
    SearchField, SearchKind, SearchSort, StaleBy, StaleFormat, TopWhat, UsageBy, WastedBy,
};

fn integer(min: u64, max: u64) -> Value {
    json!({ "type": "integer", "minimum": min, "maximum": max })
}

fn one_of(values: &[&str]) -> Value {
    json!({ "type": "string", "enum": values })
}

fn query(name: &str, description: &str, schema: Value) -> Value {
    json!({ "name": name, "in": "query", "required": false, "description": description, "schema": schema })
}

fn path_params() -> Vec<Value> {
    vec![
        query(
            "path",
            "A directory (absolute, as text); the snapshot's root when absent",
            json!({ "type": "string", "pattern": "^/" }),
        ),
        query(
            "path_b64",
            "The same, as base64 of the raw bytes (for names that are not UTF-8)",
            json!({ "type": "string" }),
        ),
    ]
}

/// `path`, required; `path_b64` may be sent in its place (OpenAPI 3.0 cannot say "one of two
/// parameters", so the description does).
fn required_path_params() -> Vec<Value> {
    vec![
        required(query(
            "path",
            "A directory (absolute, as text); required (path_b64 may stand in its place)",
            json!({ "type": "string", "pattern": "^/" }),
        )),
        query(
            "path_b64",
            "The same, as base64 of the raw bytes (for names that are not UTF-8), instead of path",
            json!({ "type": "string" }),
        ),
    ]
}

fn paging() -> Vec<Value> {
    vec![
        query("limit", "Items per page", integer(1, 1000)),
        query("offset", "Items to skip", integer(0, 100_000_000)),
    ]
}

fn snapshot_id() -> Value {
    json!({ "name": "snapshot_id", "in": "path", "required": true, "description": "A committed snapshot", "schema": integer(1, u64::from(u32::MAX)) })
}

fn required(mut parameter: Value) -> Value {
    parameter["required"] = json!(true);
    parameter
}

/// The error body of a 4xx or 5xx.
fn error_response() -> Value {
    json!({ "description": "An error with a message saying what was wrong", "content": { "application/json": { "schema": reference("Error") } } })
}

/// The headers that say how long an answer may be kept ([`crate::conventions::cache_headers`]).
fn cache_headers() -> Value {
    json!({
        "Cache-Control": {
            "description": "`public, max-age=31536000, immutable` (`private` with tokens) for what one committed snapshot holds and growth between two; `no-cache` for lists that grow (snapshots, history) and this document; `no-store` for health, access and every error",
            "schema": { "type": "string" }
        },
        "ETag": {
            "description": "A tag of the JSON answer, for If-None-Match; streamed downloads (CSV, ncdu) carry none",
            "schema": { "type": "string" }
        }
    })
}

/// A `GET` whose 200 answers with `content` (content type, schema).
fn operation(summary: &str, parameters: Vec<Value>, content: &[(&str, Value)]) -> Value {
    let mut ok = serde_json::Map::new();
    for (c, schema) in content {
        ok.insert((*c).to_owned(), json!({ "schema": schema }));
    }
    json!({
        "get": {
            "summary": summary,
            "parameters": parameters,
            "responses": {
                "200": { "description": "OK", "headers": cache_headers(), "content": ok },
                "304": { "description": "Not modified: the ETag If-None-Match named is still the answer's (JSON answers only)", "headers": cache_headers() },
                "400": error_response(),
                "401": error_response(),
                "403": error_response(),
                "404": error_response(),
                "503": error_response(),
            }
        }
    })
}

/// A 200 of JSON described by the component schema `name`.
fn json_body(name: &str) -> [(&'static str, Value); 1] {
    [("application/json", reference(name))]
}

fn with(mut base: Vec<Value>, more: Vec<Value>) -> Vec<Value> {
    base.extend(more);
    base
}

/// A reference to the component schema `name`.
fn reference(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn string() -> Value {
    json!({ "type": "string" })
}

fn boolean() -> Value {
    json!({ "type": "boolean" })
}

/// A count or a size (a `u64`).
fn count() -> Value {
    json!({ "type": "integer", "minimum": 0 })
}

/// A `u32`: an id, a mode, seconds since the epoch.
fn u32_integer() -> Value {
    integer(0, u64::from(u32::MAX))
}

/// Nanoseconds since the epoch, signed (an `i64`).
fn nanoseconds() -> Value {
    json!({ "type": "integer", "format": "int64" })
}

/// The ISO 8601 string beside a `_ns` field (see [`crate::timestamp`]).
fn iso(of: &str) -> Value {
    json!({ "type": "string", "format": "date-time", "description": format!("{of}, as an ISO 8601 string in UTC to the nanosecond, for clients that cannot hold the nanoseconds (JavaScript)") })
}

fn array(items: Value) -> Value {
    json!({ "type": "array", "items": items })
}

fn nullable(mut schema: Value) -> Value {
    schema["nullable"] = json!(true);
    schema
}

fn described(mut schema: Value, description: &str) -> Value {
    schema["description"] = json!(description);
    schema
}

/// The base64 beside a text field (`name_b64` beside `name`).
fn b64(of: &str) -> Value {
    described(
        string(),
        &format!(
            "Base64 of the raw bytes of {of}; only when they are not UTF-8 ({of} then holds them with U+FFFD in place of the bytes that are not)"
        ),
    )
}

/// An object with exactly these fields: a name ending in `?` may be absent, the others are
/// always there, and no other field ever is (`additionalProperties: false`).
fn object(description: &str, fields: Vec<(&str, Value)>) -> Value {
    let mut properties = Map::new();
    let mut required = Vec::new();
    for (name, schema) in fields {
        match name.strip_suffix('?') {
            Some(optional) => {
                properties.insert(optional.to_owned(), schema);
            }
            None => {
                required.push(name);
                properties.insert(name.to_owned(), schema);
            }
        }
    }
    json!({
        "type": "object",
        "description": description,
        "required": required,
        "properties": properties,
        "additionalProperties": false,
    })
}

/// The fields of a directory's tree totals.
fn totals_fields() -> Vec<(&'static str, Value)> {
    vec![
        ("bytes", count()),
        ("allocated", count()),
        ("entries", count()),
        ("files", count()),
        ("dirs", count()),
        ("max_mtime_ns", nanoseconds()),
        ("max_atime_ns", nanoseconds()),
        ("max_mtime", iso("max_mtime_ns")),
        ("max_atime", iso("max_atime_ns")),
    ]
}

/// The fields of a directory named by a response (`path`, `path_b64`).
fn at_path() -> Vec<(&'static str, Value)> {
    vec![("path", string()), ("path_b64?", b64("path"))]
}

fn fields(parts: Vec<Vec<(&'static str, Value)>>) -> Vec<(&'static str, Value)> {
    parts.into_iter().flatten().collect()
}

/// The component schemas: every response body.
fn schemas() -> Value {
    let kinds: Vec<&str> = EntryKind::ALL.iter().map(|k| k.name()).collect();
    let mut tile_kinds = kinds.clone();
    tile_kinds.push("other");
    let ops: Vec<&str> = ErrorOp::ALL
        .iter()
        .filter(|op| **op != ErrorOp::None)
        .map(|op| op.name())
        .collect();
    let warnings = || {
        described(
            array(string()),
            "Why the numbers should not be compared as they are (e.g. scans with different options, which did not cover the same tree)",
        )
    };
    let mut s = Map::new();
    let mut add = |name: &str, schema: Value| {
        s.insert(name.to_owned(), schema);
    };
    add(
        "Error",
        object(
            "What went wrong",
            vec![
                (
                    "error",
                    one_of(&[
                        "bad_request",
                        "unauthorized",
                        "forbidden",
                        "not_found",
                        "method_not_allowed",
                        "limited",
                        "unavailable",
                    ]),
                ),
                (
                    "message",
                    described(string(), "A sentence saying what was wrong"),
                ),
            ],
        ),
    );
    add(
        "Health",
        object(
            "Whether the API can answer",
            vec![
                ("status", one_of(&["ok", "unavailable"])),
                (
                    "clickhouse",
                    described(string(), "ClickHouse's version, or \"unreachable\""),
                ),
                (
                    "problem?",
                    described(string(), "What is wrong, when unavailable"),
                ),
            ],
        ),
    );
    add(
        "OpenApi",
        object(
            "An OpenAPI 3.0 document",
            vec![
                ("openapi", string()),
                ("info", json!({ "type": "object" })),
                ("components", json!({ "type": "object" })),
                ("security", array(json!({ "type": "object" }))),
                ("paths", json!({ "type": "object" })),
            ],
        ),
    );
    add(
        "Access",
        object(
            "What the presented token may read",
            vec![
                (
                    "name",
                    described(
                        nullable(string()),
                        "The token's name in the configuration; null when no token was presented or none is needed",
                    ),
                ),
                (
                    "admin",
                    described(
                        boolean(),
                        "Whether it reads everything, snapshot-wide reports included",
                    ),
                ),
                (
                    "prefixes",
                    described(
                        array(string()),
                        "The directories it may read, with everything below them (\"/\" for everything); empty without a token",
                    ),
                ),
                (
                    "token_required",
                    described(boolean(), "Whether the API needs a token"),
                ),
            ],
        ),
    );
    add(
        "Snapshot",
        object(
            "A committed snapshot",
            vec![
                ("snapshot_id", count()),
                ("filesystem_label", string()),
                ("root_path", string()),
                ("root_path_b64?", b64("root_path")),
                ("hosts", array(string())),
                ("ranks", u32_integer()),
                ("scanner_version", string()),
                (
                    "started_at",
                    described(u32_integer(), "Seconds since the epoch"),
                ),
                (
                    "started_at_ns",
                    described(nanoseconds(), "The same instant in nanoseconds"),
                ),
                (
                    "finished_at",
                    described(u32_integer(), "Seconds since the epoch"),
                ),
                (
                    "scan_options",
                    described(
                        string(),
                        "What the scan left out: \"\" for a full scan, else its options (e.g. \"--max-depth=2\")",
                    ),
                ),
                (
                    "entries",
                    described(
                        count(),
                        "Entries of what the caller may read (for a scoped token, within its prefixes only)",
                    ),
                ),
                (
                    "errors?",
                    described(
                        count(),
                        "Entries that could not be read; for admin tokens only",
                    ),
                ),
                (
                    "apparent_bytes",
                    described(
                        count(),
                        "Apparent bytes of what the caller may read (hard links once)",
                    ),
                ),
            ],
        ),
    );
    add(
        "SnapshotList",
        object(
            "A page of committed snapshots, newest first",
            vec![
                ("total", count()),
                ("limit", count()),
                ("offset", count()),
                ("snapshots", array(reference("Snapshot"))),
            ],
        ),
    );
    add(
        "EntryKind",
        described(one_of(&kinds), "What an entry is, as lstat saw it"),
    );
    add(
        "TileKind",
        described(
            one_of(&tile_kinds),
            "An entry's kind, or \"other\": the smaller children folded into one tile",
        ),
    );
    add(
        "ErrorOp",
        described(one_of(&ops), "The operation on an entry that failed"),
    );
    add(
        "EntryError",
        object(
            "What could not be read",
            vec![
                ("op", reference("ErrorOp")),
                ("errno", json!({ "type": "integer", "format": "int32" })),
            ],
        ),
    );
    add(
        "Totals",
        object("A directory's recursive totals", totals_fields()),
    );
    add(
        "Entry",
        object(
            "One entry: a directory carries its tree's totals, anything else its own size and times",
            fields(vec![
                vec![
                    ("name", string()),
                    ("name_b64?", b64("name")),
                    ("path", string()),
                    ("path_b64?", b64("path")),
                    ("kind", reference("EntryKind")),
                ],
                totals_fields(),
                vec![
                    ("size", count()),
                    ("uid", u32_integer()),
                    ("gid", u32_integer()),
                    ("mode", u32_integer()),
                    ("nlink", count()),
                    ("mtime_ns", nanoseconds()),
                    ("atime_ns", nanoseconds()),
                    ("mtime", iso("mtime_ns")),
                    ("atime", iso("atime_ns")),
                    (
                        "user?",
                        described(
                            string(),
                            "The owner's name, where the scan could resolve it",
                        ),
                    ),
                    (
                        "group?",
                        described(
                            string(),
                            "The group's name, where the scan could resolve it",
                        ),
                    ),
                    (
                        "symlink_target?",
                        described(string(), "A symlink's target, as text"),
                    ),
                    ("error?", reference("EntryError")),
                ],
            ]),
        ),
    );
    add(
        "Children",
        object(
            "A page of a directory's entries, with the directory's totals",
            fields(vec![
                vec![("snapshot_id", count())],
                at_path(),
                vec![
                    ("directory", reference("Totals")),
                    ("total", count()),
                    ("limit", count()),
                    ("offset", count()),
                    ("children", array(reference("Entry"))),
                ],
            ]),
        ),
    );
    add(
        "Listing",
        object(
            "A page of entries under a directory",
            fields(vec![
                vec![("snapshot_id", count())],
                at_path(),
                vec![
                    (
                        "total",
                        described(
                            count(),
                            "How many entries the list holds in all, every page together",
                        ),
                    ),
                    ("limit", count()),
                    ("offset", count()),
                    ("entries", array(reference("Entry"))),
                ],
            ]),
        ),
    );
    add(
        "Tile",
        object(
            "One tile of a treemap",
            vec![
                ("name", string()),
                ("name_b64?", b64("name")),
                ("kind", reference("TileKind")),
                ("bytes", count()),
                (
                    "allocated",
                    described(count(), "Bytes on disk (of the tree, for a directory)"),
                ),
                ("files", count()),
                (
                    "uid?",
                    described(u32_integer(), "The owner (not on the root or \"other\")"),
                ),
                (
                    "user?",
                    described(string(), "The owner's name, where the scan resolved it"),
                ),
                (
                    "type?",
                    described(string(), "A file's type (see usage?by=type)"),
                ),
                (
                    "category?",
                    described(
                        string(),
                        "A file's category (see /api/v1/categories; \"other\" for every type no category names)",
                    ),
                ),
                (
                    "mtime_ns?",
                    described(
                        nanoseconds(),
                        "Newest mtime: the file's own, or the newest in a directory's tree (not on \"other\")",
                    ),
                ),
                ("mtime?", iso("mtime_ns")),
                (
                    "count?",
                    described(count(), "For \"other\": how many children it stands for"),
                ),
                (
                    "children?",
                    described(
                        array(reference("Tile")),
                        "A directory's tiles, when it has any",
                    ),
                ),
            ],
        ),
    );
    add(
        "Treemap",
        object(
            "A directory's tree a few levels deep",
            fields(vec![
                vec![("snapshot_id", count())],
                at_path(),
                vec![
                    ("depth", integer(1, 4)),
                    ("max_children", integer(1, 500)),
                    ("size", one_of(AreaBy::WORDS)),
                    ("root", reference("Tile")),
                ],
            ]),
        ),
    );
    add(
        "UsageItem",
        object(
            "The usage of one user, group, file type or file category",
            vec![
                (
                    "id?",
                    described(
                        u32_integer(),
                        "The uid or gid (absent for file types and categories)",
                    ),
                ),
                (
                    "name",
                    described(
                        string(),
                        "The user or group name, the extension (\"\" for files without one), or the category",
                    ),
                ),
                ("name_b64?", b64("name")),
                (
                    "category?",
                    described(string(), "A file type's category (by=type)"),
                ),
                (
                    "types?",
                    described(
                        array(reference("TypeShare")),
                        "A category's largest types, largest first, at most ten (by=category)",
                    ),
                ),
                ("entries", count()),
                ("files", count()),
                ("bytes", count()),
                ("allocated", count()),
            ],
        ),
    );
    add(
        "TypeShare",
        object(
            "One file type of a category, and its bytes",
            vec![
                (
                    "name",
                    described(string(), "The extension (\"\" for files without one)"),
                ),
                ("name_b64?", b64("name")),
                ("bytes", count()),
            ],
        ),
    );
    add(
        "Usage",
        object(
            "Usage per user, group, file type or file category, largest first",
            vec![
                ("snapshot_id", count()),
                ("by", one_of(UsageBy::WORDS)),
                (
                    "total",
                    described(
                        count(),
                        "How many users, groups, types or categories there are",
                    ),
                ),
                ("limit", count()),
                ("offset", count()),
                ("items", array(reference("UsageItem"))),
            ],
        ),
    );
    add(
        "LinkPath",
        object(
            "One link of a file",
            vec![("path", string()), ("path_b64?", b64("path"))],
        ),
    );
    add(
        "DuplicateCopy",
        object(
            "One file of a group of duplicates (hard links of one inode are one file)",
            vec![
                (
                    "links",
                    described(
                        array(reference("LinkPath")),
                        "Every link of the file, by path",
                    ),
                ),
                ("uid", u32_integer()),
                (
                    "user?",
                    described(string(), "The owner's name, where the scan resolved it"),
                ),
                ("allocated", count()),
                ("mtime_ns", nanoseconds()),
                ("mtime", iso("mtime_ns")),
                (
                    "problem?",
                    described(
                        string(),
                        "Why the file could not be hashed, when its latest read failed",
                    ),
                ),
            ],
        ),
    );
    add(
        "DuplicateGroup",
        object(
            "Files of one size (and content, when confirmed; and name, with same_name)",
            vec![
                ("size", count()),
                (
                    "name?",
                    described(string(), "The name the files share (same_name=true)"),
                ),
                ("name_b64?", b64("name")),
                (
                    "hash?",
                    described(
                        string(),
                        "BLAKE3 of the content: 64 hex digits (confirmed groups)",
                    ),
                ),
                ("files", count()),
                ("links", count()),
                ("allocated", count()),
                (
                    "wasted",
                    described(
                        count(),
                        "Allocated bytes of every file but the first: what removing the copies frees (0 but in a confirmed group)",
                    ),
                ),
                (
                    "copies",
                    described(
                        array(reference("DuplicateCopy")),
                        "The group's first files by path (at most 50), the first copy first",
                    ),
                ),
            ],
        ),
    );
    add(
        "DuplicateCopies",
        object(
            "A page of the files of one group of duplicates",
            vec![
                ("snapshot_id", count()),
                ("status", one_of(DuplicateStatus::WORDS)),
                ("size", count()),
                ("total", described(count(), "How many files the group has")),
                ("limit", count()),
                ("offset", count()),
                ("copies", array(reference("DuplicateCopy"))),
            ],
        ),
    );
    add(
        "DuplicateSummary",
        object(
            "The candidates of one status",
            vec![
                ("status", one_of(DuplicateStatus::WORDS)),
                ("groups", count()),
                ("files", count()),
                ("links", count()),
                ("allocated", count()),
                ("wasted", count()),
            ],
        ),
    );
    add(
        "Duplicates",
        object(
            "Groups of duplicate candidates of one status, most wasted bytes first",
            vec![
                ("snapshot_id", count()),
                ("status", one_of(DuplicateStatus::WORDS)),
                ("min_size", count()),
                ("same_name", boolean()),
                (
                    "summary",
                    described(
                        array(reference("DuplicateSummary")),
                        "Every status, in the order confirmed, unverified, false_positive",
                    ),
                ),
                (
                    "total",
                    described(count(), "How many groups of this status there are"),
                ),
                ("limit", count()),
                ("offset", count()),
                ("groups", array(reference("DuplicateGroup"))),
            ],
        ),
    );
    add(
        "WastedItem",
        object(
            "The bytes confirmed copies waste in one directory or of one owner",
            vec![
                (
                    "path?",
                    described(string(), "The directory holding the copies (by=dir)"),
                ),
                ("path_b64?", b64("path")),
                (
                    "uid?",
                    described(u32_integer(), "The copies' owner (by=user)"),
                ),
                (
                    "user?",
                    described(string(), "The owner's name, where the scan resolved it"),
                ),
                (
                    "copies",
                    described(count(), "Copies beyond their group's first"),
                ),
                ("wasted", described(count(), "Their allocated bytes")),
            ],
        ),
    );
    add(
        "Wasted",
        object(
            "Bytes wasted by confirmed duplicates per directory or per owner, most first",
            vec![
                ("snapshot_id", count()),
                ("by", one_of(WastedBy::WORDS)),
                ("min_size", count()),
                ("same_name", boolean()),
                (
                    "total",
                    described(count(), "How many directories or owners hold copies"),
                ),
                ("limit", count()),
                ("offset", count()),
                ("items", array(reference("WastedItem"))),
            ],
        ),
    );
    add(
        "ConsoleColumn",
        object(
            "A column of a console answer",
            vec![
                ("name", string()),
                ("type", described(string(), "Its ClickHouse type")),
            ],
        ),
    );
    add(
        "ConsoleBinary",
        object(
            "A value of a console answer whose bytes are not UTF-8 (its cell holds them with U+FFFD in place of those that are not)",
            vec![
                ("row", described(count(), "Its row, from 0")),
                ("column", described(count(), "Its column, from 0")),
                ("b64", described(string(), "Base64 of its bytes")),
            ],
        ),
    );
    add(
        "ConsoleAnswer",
        object(
            "What a console statement gave: its columns and its first rows",
            vec![
                ("columns", array(reference("ConsoleColumn"))),
                (
                    "rows",
                    described(
                        array(array(nullable(string()))),
                        "Each value as ClickHouse writes it as text (numbers too, so that none loses precision); null for NULL",
                    ),
                ),
                ("binary?", array(reference("ConsoleBinary"))),
                (
                    "total_rows",
                    described(count(), "Rows the statement gave, however many rows shows"),
                ),
                (
                    "truncated",
                    described(
                        boolean(),
                        "Whether rows holds fewer than total_rows (a download has them all)",
                    ),
                ),
                ("elapsed_seconds", json!({ "type": "number", "minimum": 0 })),
            ],
        ),
    );
    add(
        "ConsolePreset",
        object(
            "A statement of the query console for a question admins ask, written for one snapshot",
            vec![("id", string()), ("title", string()), ("sql", string())],
        ),
    );
    add(
        "ConsolePresets",
        object(
            "The query console's presets for one snapshot",
            vec![
                ("snapshot_id", count()),
                (
                    "days",
                    described(count(), "N of the presets about old files"),
                ),
                ("presets", array(reference("ConsolePreset"))),
            ],
        ),
    );
    add(
        "Category",
        object(
            "A file category and the types it holds",
            vec![
                ("name", string()),
                (
                    "types",
                    described(
                        array(string()),
                        "File types (extensions, lower case, without the dot)",
                    ),
                ),
            ],
        ),
    );
    add(
        "Categories",
        object(
            "The file categories of the categories report and the treemap",
            vec![
                ("categories", array(reference("Category"))),
                (
                    "other",
                    described(
                        string(),
                        "The category of every type no category names, and of files without a type",
                    ),
                ),
            ],
        ),
    );
    add(
        "Bucket",
        object(
            "One bucket of a histogram",
            vec![
                ("bucket", integer(0, 255)),
                (
                    "label",
                    described(
                        string(),
                        "What it holds, e.g. \"[4 KiB, 8 KiB)\" or \"1-7 days\"",
                    ),
                ),
                ("files", count()),
                ("bytes", count()),
                ("allocated", count()),
            ],
        ),
    );
    add(
        "Histogram",
        object(
            "Files per size or age bucket",
            vec![
                ("snapshot_id", count()),
                ("of", one_of(HistogramOf::WORDS)),
                ("buckets", array(reference("Bucket"))),
            ],
        ),
    );
    add(
        "HistoryPoint",
        object(
            "A directory's totals in one snapshot",
            vec![
                ("snapshot_id", count()),
                ("started_at", u32_integer()),
                (
                    "started_at_ns",
                    described(nanoseconds(), "The scan's start to the nanosecond"),
                ),
                ("bytes", count()),
                ("allocated", count()),
                ("entries", count()),
                ("files", count()),
                ("dirs", count()),
                ("max_mtime_ns", nanoseconds()),
                ("max_mtime", iso("max_mtime_ns")),
                (
                    "scan_options",
                    described(string(), "What the scan left out (\"\" for a full scan)"),
                ),
            ],
        ),
    );
    add(
        "History",
        object(
            "A directory's totals in every committed snapshot of one filesystem, oldest first",
            fields(vec![
                at_path(),
                vec![
                    ("filesystem_label", string()),
                    ("root_path", string()),
                    ("root_path_b64?", b64("root_path")),
                    ("points", array(reference("HistoryPoint"))),
                    ("warnings", warnings()),
                ],
            ]),
        ),
    );
    add(
        "ChangeSummary",
        object(
            "What changed among a directory's children",
            vec![
                ("changed", described(count(), "Children changed in place")),
                ("added", count()),
                ("added_bytes", count()),
                ("added_files", count()),
                ("removed", count()),
                ("removed_bytes", count()),
                ("removed_files", count()),
            ],
        ),
    );
    add(
        "Change",
        object(
            "One child of the directory that changed",
            vec![
                ("name", string()),
                ("name_b64?", b64("name")),
                ("status", one_of(&["added", "removed", "changed"])),
                ("kind", reference("EntryKind")),
                ("bytes_from", count()),
                ("bytes_to", count()),
                ("files_from", count()),
                ("files_to", count()),
            ],
        ),
    );
    add(
        "Growth",
        object(
            "What changed in a directory's children between two snapshots, largest change first",
            fields(vec![
                vec![("from", count()), ("to", count())],
                at_path(),
                vec![
                    ("warnings", warnings()),
                    ("summary", reference("ChangeSummary")),
                    (
                        "total",
                        described(
                            count(),
                            "How many children changed in all (added, removed, changed in place)",
                        ),
                    ),
                    ("limit", count()),
                    ("offset", count()),
                    ("changes", array(reference("Change"))),
                ],
            ]),
        ),
    );
    add(
        "OwnerChange",
        object(
            "One owner's bytes and files in both snapshots",
            vec![
                ("id", u32_integer()),
                ("name", string()),
                (
                    "status",
                    one_of(&["added", "removed", "changed", "unchanged"]),
                ),
                ("bytes_from", count()),
                ("bytes_to", count()),
                ("files_from", count()),
                ("files_to", count()),
            ],
        ),
    );
    add(
        "OwnerGrowth",
        object(
            "Bytes and files per owner in two snapshots",
            vec![
                ("from", count()),
                ("to", count()),
                ("by", one_of(OwnerBy::WORDS)),
                ("warnings", warnings()),
                ("owners", array(reference("OwnerChange"))),
            ],
        ),
    );
    Value::Object(s)
}

/// The document.
pub fn document() -> Value {
    let s = || vec![snapshot_id()];
    let mut paths = serde_json::Map::new();
    let mut add = |path: &str, op: Value| {
        paths.insert(path.to_owned(), op);
    };
    let mut health = operation(
        "Liveness and the ClickHouse version",
        vec![],
        &json_body("Health"),
    );
    // Unavailable is an answer of the same shape, with the problem.
    health["get"]["responses"]["503"] = json!({
        "description": "ClickHouse is unreachable or the database cannot be read",
        "content": { "application/json": { "schema": reference("Health") } }
    });
    add("/health", health);
    add(
        "/api/v1/openapi.json",
        operation("This document", vec![], &json_body("OpenApi")),
    );
    add(
        "/api/v1/access",
        operation(
            "What the presented token may read: its name, whether it is an admin, its path prefixes",
            vec![],
            &json_body("Access"),
        ),
    );
    add(
        "/api/v1/metrics/usage",
        operation(
            "The latest committed snapshot of each filesystem as Prometheus gauges (admin tokens): size, entries, errors, start; bytes, bytes on disk, files and growth per top-level directory and per user",
            vec![],
            &[(
                "text/plain; version=0.0.4; charset=utf-8",
                json!({ "type": "string" }),
            )],
        ),
    );
    add(
        "/api/v1/console",
        operation(
            "One SELECT over the snapshot tables (admin tokens), run as the read-only ClickHouse user under its limits: a JSON page of its rows, or every row as CSV, TSV or Markdown",
            vec![
                required(query(
                    "sql",
                    "One SELECT (or WITH … SELECT) statement, without FORMAT; the snapshot tables need no database name",
                    json!({ "type": "string", "maxLength": crate::query::console::MAX_SQL_BYTES }),
                )),
                query(
                    "format",
                    "The answer's format",
                    one_of(ConsoleFormat::WORDS),
                ),
                query(
                    "limit",
                    "Rows of a JSON answer (default 1000); not for downloads, which have every row",
                    integer(1, crate::console::MAX_JSON_ROWS),
                ),
            ],
            &[
                ("application/json", reference("ConsoleAnswer")),
                ("text/csv", json!({ "type": "string" })),
                ("text/tab-separated-values", json!({ "type": "string" })),
                ("text/markdown; charset=utf-8", json!({ "type": "string" })),
            ],
        ),
    );
    add(
        "/api/v1/snapshots/{snapshot_id}/console/presets",
        operation(
            "The query console's presets (admin tokens), written for this snapshot: largest files, not modified or not accessed for N days, by type, a home directory audit, top-level sizes, empty files, logs and archives, directories with the most files, same-name files, the tables",
            vec![
                snapshot_id(),
                query(
                    "days",
                    "N days before the scan, for the presets about old files (default 365)",
                    integer(0, 36_500),
                ),
            ],
            &json_body("ConsolePresets"),
        ),
    );
    add(
        "/api/v1/categories",
        operation(
            "The file categories: each with its types, in the configuration's order",
            vec![],
            &json_body("Categories"),
        ),
    );
    add(
        "/api/v1/snapshots",
        operation(
            "Committed snapshots, newest first",
            with(
                paging(),
                vec![query(
                    "label",
                    "Only the snapshots of this filesystem label",
                    json!({ "type": "string" }),
                )],
            ),
            &json_body("SnapshotList"),
        ),
    );
    add(
        "/api/v1/snapshots/{snapshot_id}",
        operation("One committed snapshot", s(), &json_body("Snapshot")),
    );
    add(
        "/api/v1/snapshots/{snapshot_id}/children",
        operation(
            "A directory's entries with their totals, sorted and paged",
            with(
                with(s(), path_params()),
                with(
                    vec![
                        query("sort", "Sort key", one_of(ChildSort::WORDS)),
                        query(
                            "order",
                            "Direction (desc by default, asc for name)",
                            one_of(Order::WORDS),
                        ),
                    ],
                    paging(),
                ),
            ),
            &json_body("Children"),
        ),
    );
    add(
        "/api/v1/snapshots/{snapshot_id}/entry",
        operation(
            "One entry's details",
            with(
                s(),
                vec![
                    query(
                        "path",
                        "The entry (absolute, as text); needed, unless path_b64 is given",
                        json!({ "type": "string", "pattern": "^/" }),
                    ),
                    query(
                        "path_b64",
                        "The same, as base64 of the raw bytes (for names that are not UTF-8), instead of path",
                        json!({ "type": "string" }),
                    ),
                ],
            ),
            &json_body("Entry"),
        ),
    );
    add(
        "/api/v1/snapshots/{snapshot_id}/treemap",
        operation(
            "A directory's tree a few levels deep, for a treemap",
            with(
                with(s(), path_params()),
                vec![
                    query("depth", "Levels below the directory", integer(1, 4)),
                    query(
                        "max_children",
                        "Children kept per directory; the rest are folded",
                        integer(1, 500),
                    ),
                    query("size", "What the areas are", one_of(AreaBy::WORDS)),
                ],
            ),
            &json_body("Treemap"),
        ),
    );
    add(
        "/api/v1/snapshots/{snapshot_id}/export/ncdu",
        operation(
            "A directory and everything below it in ncdu's export format (for ncdu -f or gdu -f), at most 1,000,000 entries; names are written as ncdu writes them, raw bytes included, so it is not strict JSON",
            with(s(), path_params()),
            &[(
                storage_tracker_proto::ncdu::CONTENT_TYPE,
                json!({ "type": "string", "format": "binary" }),
            )],
        ),
    );
    add(
        "/api/v1/snapshots/{snapshot_id}/top",
        operation(
            "The largest files or directories under a directory",
            with(
                with(s(), path_params()),
                with(
                    vec![query("what", "files or dirs", one_of(TopWhat::WORDS))],
                    paging(),
                ),
            ),
            &json_body("Listing"),
        ),
    );
    add(
        "/api/v1/snapshots/{snapshot_id}/usage",
        operation(
            "Usage per user, group, file type or file category",
            with(
                s(),
                with(
                    vec![query("by", "The grouping", one_of(UsageBy::WORDS))],
                    paging(),
                ),
            ),
            &json_body("Usage"),
        ),
    );
    let candidates = || {
        vec![
            query(
                "min_size",
                "Only files at least this large, bytes (candidates are at least 1 MiB)",
                integer(0, u64::from(u32::MAX) << 16),
            ),
            query(
                "same_name",
                "Group by name as well as by size and content",
                json!({ "type": "boolean" }),
            ),
        ]
    };
    add(
        "/api/v1/snapshots/{snapshot_id}/duplicates",
        operation(
            "Groups of duplicate files: confirmed copies, candidates not verified yet, or candidates that proved different",
            with(
                s(),
                with(
                    with(
                        vec![query(
                            "status",
                            "Which groups",
                            one_of(DuplicateStatus::WORDS),
                        )],
                        candidates(),
                    ),
                    paging(),
                ),
            ),
            &json_body("Duplicates"),
        ),
    );
    add(
        "/api/v1/snapshots/{snapshot_id}/duplicates/copies",
        operation(
            "Every file of one group of the duplicates report, paged, by their first link's path",
            with(
                s(),
                with(
                    with(
                        vec![
                            query(
                                "status",
                                "The group's status",
                                one_of(DuplicateStatus::WORDS),
                            ),
                            required(query(
                                "size",
                                "The group's size",
                                integer(0, u64::from(u32::MAX) << 16),
                            )),
                            query(
                                "hash",
                                "The group's hash, 64 hex digits (required for a confirmed group)",
                                json!({ "type": "string" }),
                            ),
                            query(
                                "name",
                                "The group's name (with same_name=true)",
                                json!({ "type": "string" }),
                            ),
                            query(
                                "name_b64",
                                "The same, as base64 of the raw bytes",
                                json!({ "type": "string" }),
                            ),
                        ],
                        candidates(),
                    ),
                    paging(),
                ),
            ),
            &json_body("DuplicateCopies"),
        ),
    );
    add(
        "/api/v1/snapshots/{snapshot_id}/duplicates/wasted",
        operation(
            "Bytes wasted by confirmed duplicates per directory holding copies, or per owner",
            with(
                s(),
                with(
                    with(
                        vec![query("by", "The grouping", one_of(WastedBy::WORDS))],
                        candidates(),
                    ),
                    paging(),
                ),
            ),
            &json_body("Wasted"),
        ),
    );
    add(
        "/api/v1/snapshots/{snapshot_id}/histograms",
        operation(
            "Files by size, mtime age or atime age",
            with(
                s(),
                vec![query("of", "The histogram", one_of(HistogramOf::WORDS))],
            ),
            &json_body("Histogram"),
        ),
    );
    add(
        "/api/v1/snapshots/{snapshot_id}/stale",
        operation(
            "Files not accessed (or modified) for some days: JSON pages, largest first, or every one as CSV in path order (streamed; a broken transfer means an incomplete file)",
            with(
                with(s(), path_params()),
                with(
                    vec![
                        query("days", "Days before the scan", integer(0, 36_500)),
                        query(
                            "min_size",
                            "Smallest size, bytes",
                            integer(0, u64::from(u32::MAX) << 16),
                        ),
                        query("by", "Which time", one_of(StaleBy::WORDS)),
                        query("format", "Response format", one_of(StaleFormat::WORDS)),
                    ],
                    vec![
                        query(
                            "limit",
                            "Items: up to 1000 per JSON page (default 100); for CSV, a cap on the rows (default: all)",
                            json!({ "type": "integer", "minimum": 1 }),
                        ),
                        query("offset", "Items to skip", integer(0, 100_000_000)),
                    ],
                ),
            ),
            &[
                ("application/json", reference("Listing")),
                ("text/csv; charset=utf-8", json!({ "type": "string" })),
            ],
        ),
    );
    let date = json!({ "type": "string", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$" });
    add(
        "/api/v1/snapshots/{snapshot_id}/search",
        operation(
            "Entries matching every filter given (q is optional: the filters alone select), largest first or in the order asked, with their total",
            with(
                with(s(), path_params()),
                with(
                    vec![
                        query(
                            "q",
                            "Text to look for",
                            json!({ "type": "string", "maxLength": 1024 }),
                        ),
                        query("match", "How q matches", one_of(MatchKind::WORDS)),
                        query("field", "What q matches", one_of(SearchField::WORDS)),
                        query(
                            "ignore_case",
                            "Match q without regard to case (any match)",
                            json!({ "type": "boolean" }),
                        ),
                        query(
                            "min_size",
                            "Smallest size, bytes",
                            integer(0, u64::from(u32::MAX) << 16),
                        ),
                        query(
                            "max_size",
                            "Largest size, bytes",
                            integer(0, u64::from(u32::MAX) << 16),
                        ),
                        query("user", "Owner, by name or uid", json!({ "type": "string" })),
                        query(
                            "group",
                            "Group, by name or gid",
                            json!({ "type": "string" }),
                        ),
                        query(
                            "type",
                            "File types: extensions without the dot, separated by commas (files of any of them)",
                            json!({ "type": "string" }),
                        ),
                        query("kind", "What kind of entries", one_of(SearchKind::WORDS)),
                        query(
                            "sort",
                            "What the results are sorted by (ties by path)",
                            one_of(SearchSort::WORDS),
                        ),
                        query(
                            "order",
                            "The direction of the sort (default: ascending for name and path, descending for the rest)",
                            one_of(Order::WORDS),
                        ),
                        query("mtime_before", "YYYY-MM-DD (UTC)", date.clone()),
                        query("mtime_after", "YYYY-MM-DD (UTC)", date.clone()),
                        query("atime_before", "YYYY-MM-DD (UTC)", date.clone()),
                        query("atime_after", "YYYY-MM-DD (UTC)", date),
                    ],
                    paging(),
                ),
            ),
            &json_body("Listing"),
        ),
    );
    let two = || {
        vec![
            required(query(
                "from",
                "The earlier snapshot",
                integer(1, u64::from(u32::MAX)),
            )),
            required(query(
                "to",
                "The later snapshot",
                integer(1, u64::from(u32::MAX)),
            )),
        ]
    };
    add(
        "/api/v1/history",
        operation(
            "A directory's totals in every committed snapshot of one filesystem (label and root), with warnings where scans covered different trees",
            with(
                required_path_params(),
                vec![
                    query(
                        "snapshot",
                        "A snapshot of the filesystem meant; required when snapshots of several filesystems hold the directory (or label=)",
                        integer(1, u64::from(u32::MAX)),
                    ),
                    query(
                        "label",
                        "The label of the filesystem meant: another way to pick it",
                        json!({ "type": "string" }),
                    ),
                ],
            ),
            &json_body("History"),
        ),
    );
    add(
        "/api/v1/growth",
        operation(
            "What changed in a directory's children between two snapshots of the same filesystem",
            with(with(two(), required_path_params()), paging()),
            &json_body("Growth"),
        ),
    );
    add(
        "/api/v1/growth/owners",
        operation(
            "Bytes and files per owner in two snapshots",
            with(
                two(),
                vec![query("by", "Users or groups", one_of(OwnerBy::WORDS))],
            ),
            &json_body("OwnerGrowth"),
        ),
    );
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "storage-tracker API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Committed filesystem snapshots: directory trees, reports, search, history and growth. Paths travel as text, or as base64 (`*_b64`) when not UTF-8. Send `Authorization: Bearer TOKEN` when the server has tokens configured."
        },
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "schemas": schemas(),
        },
        "security": [ { "bearer": [] }, {} ],
        "paths": paths,
    })
}
