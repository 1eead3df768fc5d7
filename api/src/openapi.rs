//! The OpenAPI 3.0 document of the API, served at `/api/v1/openapi.json`. A test in
//! [`crate::routes`] checks that it names exactly the routes the routers serve.

use serde_json::{Value, json};

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

fn operation(summary: &str, parameters: Vec<Value>, content: &[&str]) -> Value {
    let error = json!({ "description": "An error with a message saying what was wrong", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } });
    let mut ok = serde_json::Map::new();
    for c in content {
        let schema = if *c == "application/json" {
            json!({ "type": "object" })
        } else {
            json!({ "type": "string" })
        };
        ok.insert((*c).to_owned(), json!({ "schema": schema }));
    }
    json!({
        "get": {
            "summary": summary,
            "parameters": parameters,
            "responses": {
                "200": { "description": "OK", "content": ok },
                "400": error,
                "401": error,
                "403": error,
                "404": error,
                "503": error,
            }
        }
    })
}

fn with(mut base: Vec<Value>, more: Vec<Value>) -> Vec<Value> {
    base.extend(more);
    base
}

/// The document.
pub fn document() -> Value {
    let json_type: &[&str] = &["application/json"];
    let s = || vec![snapshot_id()];
    let mut paths = serde_json::Map::new();
    let mut add = |path: &str, op: Value| {
        paths.insert(path.to_owned(), op);
    };
    add(
        "/health",
        operation("Liveness and the ClickHouse version", vec![], json_type),
    );
    add(
        "/api/v1/openapi.json",
        operation("This document", vec![], json_type),
    );
    add(
        "/api/v1/access",
        operation(
            "What the presented token may read: its name, whether it is an admin, its path prefixes",
            vec![],
            json_type,
        ),
    );
    add(
        "/api/v1/snapshots",
        operation("Committed snapshots, newest first", paging(), json_type),
    );
    add(
        "/api/v1/snapshots/{snapshot_id}",
        operation("One committed snapshot", s(), json_type),
    );
    add(
        "/api/v1/snapshots/{snapshot_id}/children",
        operation(
            "A directory's entries with their totals, sorted and paged",
            with(
                with(s(), path_params()),
                with(
                    vec![
                        query(
                            "sort",
                            "Sort key",
                            one_of(&["bytes", "allocated", "files", "mtime", "atime", "name"]),
                        ),
                        query(
                            "order",
                            "Direction (desc by default, asc for name)",
                            one_of(&["asc", "desc"]),
                        ),
                    ],
                    paging(),
                ),
            ),
            json_type,
        ),
    );
    add(
        "/api/v1/snapshots/{snapshot_id}/entry",
        operation("One entry's details", with(s(), path_params()), json_type),
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
                    query("size", "What the areas are", one_of(&["bytes", "files"])),
                ],
            ),
            json_type,
        ),
    );
    add(
        "/api/v1/snapshots/{snapshot_id}/export/ncdu",
        operation(
            "A directory and everything below it in ncdu's export format (for ncdu -f or gdu -f), at most 1,000,000 entries; names are written as ncdu writes them, raw bytes included, so it is not strict JSON",
            with(s(), path_params()),
            &[storage_tracker_proto::ncdu::CONTENT_TYPE],
        ),
    );
    add(
        "/api/v1/snapshots/{snapshot_id}/top",
        operation(
            "The largest files or directories under a directory",
            with(
                with(s(), path_params()),
                with(
                    vec![query("what", "files or dirs", one_of(&["files", "dirs"]))],
                    paging(),
                ),
            ),
            json_type,
        ),
    );
    add(
        "/api/v1/snapshots/{snapshot_id}/usage",
        operation(
            "Usage per user, group or file type",
            with(
                s(),
                with(
                    vec![query(
                        "by",
                        "The grouping",
                        one_of(&["user", "group", "type"]),
                    )],
                    paging(),
                ),
            ),
            json_type,
        ),
    );
    add(
        "/api/v1/snapshots/{snapshot_id}/histograms",
        operation(
            "Files by size, mtime age or atime age",
            with(
                s(),
                vec![query(
                    "of",
                    "The histogram",
                    one_of(&["size", "mtime", "atime"]),
                )],
            ),
            json_type,
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
                        query("by", "Which time", one_of(&["atime", "mtime"])),
                        query("format", "Response format", one_of(&["json", "csv"])),
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
            &["application/json", "text/csv; charset=utf-8"],
        ),
    );
    let date = json!({ "type": "string", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$" });
    add(
        "/api/v1/snapshots/{snapshot_id}/search",
        operation(
            "Entries matching every filter given, largest first",
            with(
                with(s(), path_params()),
                with(
                    vec![
                        query(
                            "q",
                            "Text to look for",
                            json!({ "type": "string", "maxLength": 1024 }),
                        ),
                        query(
                            "match",
                            "How q matches",
                            one_of(&["substring", "glob", "regex"]),
                        ),
                        query("field", "What q matches", one_of(&["name", "path"])),
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
                            "File extension, without the dot",
                            json!({ "type": "string" }),
                        ),
                        query("mtime_before", "YYYY-MM-DD (UTC)", date.clone()),
                        query("mtime_after", "YYYY-MM-DD (UTC)", date.clone()),
                        query("atime_before", "YYYY-MM-DD (UTC)", date.clone()),
                        query("atime_after", "YYYY-MM-DD (UTC)", date),
                    ],
                    paging(),
                ),
            ),
            json_type,
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
                vec![query(
                    "snapshot",
                    "A snapshot of the filesystem meant; required when snapshots of several filesystems hold the directory",
                    integer(1, u64::from(u32::MAX)),
                )],
            ),
            json_type,
        ),
    );
    add(
        "/api/v1/growth",
        operation(
            "What changed in a directory's children between two snapshots of the same filesystem",
            with(with(two(), required_path_params()), paging()),
            json_type,
        ),
    );
    add(
        "/api/v1/growth/owners",
        operation(
            "Bytes and files per owner in two snapshots",
            with(
                two(),
                vec![query("by", "Users or groups", one_of(&["user", "group"]))],
            ),
            json_type,
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
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error", "message"],
                    "properties": { "error": { "type": "string" }, "message": { "type": "string" } }
                }
            }
        },
        "security": [ { "bearer": [] }, {} ],
        "paths": paths,
    })
}
