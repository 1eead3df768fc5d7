//! The OpenAPI document against the API's real answers. Every route is called on scanned
//! trees, with parameters that bring out every optional field (names that are not UTF-8, a
//! symlink, an entry that could not be read, owners with and without names, folded treemap
//! tiles, two scans with different options, a scoped token, no token, ClickHouse down), and each
//! answer, 200 or error, is validated strictly against the schema the document gives for its
//! route, status and content type: every required field present, no field the schema does not
//! name, types, integer bounds, enums and nullable. The document's object schemas must be
//! closed (`additionalProperties: false`), and the run must have seen every route's 200 in each
//! content type, every optional field present and every nullable field both null and not.
//!
//! The validator is this file's own: it knows the keywords the document uses and refuses any
//! other, so a schema never passes by being misunderstood.

mod support;

use std::collections::BTreeSet;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine;
use serde_json::Value;

use storage_tracker_api::AppState;
use support::*;

const ADMIN: &str = "admin-token-0123456789abcdef";
const SCOPED: &str = "scoped-token-0123456789abcdef";

/// The schema keywords the validator understands; the document may use no other.
const KEYWORDS: &[&str] = &[
    "$ref",
    "type",
    "enum",
    "nullable",
    "items",
    "properties",
    "required",
    "additionalProperties",
    "description",
    "minimum",
    "maximum",
    "format",
    "pattern",
    "maxLength",
];

/// Validates answers against the document and records what they covered.
struct Checker {
    doc: Value,
    problems: Vec<String>,
    /// (route, status, content type) answered.
    answered: BTreeSet<(String, u16, String)>,
    /// (schema, field) seen present / absent, where the field is optional.
    present: BTreeSet<(String, String)>,
    absent: BTreeSet<(String, String)>,
    /// (schema, field) seen null / not null, where the field is nullable.
    null: BTreeSet<(String, String)>,
    not_null: BTreeSet<(String, String)>,
}

impl Checker {
    fn new(doc: Value) -> Self {
        Self {
            doc,
            problems: Vec::new(),
            answered: BTreeSet::new(),
            present: BTreeSet::new(),
            absent: BTreeSet::new(),
            null: BTreeSet::new(),
            not_null: BTreeSet::new(),
        }
    }

    /// The document's route template that `path` (no query) is an instance of.
    fn template(&self, path: &str) -> Option<String> {
        let parts: Vec<&str> = path.split('/').collect();
        self.doc["paths"]
            .as_object()
            .unwrap()
            .keys()
            .find(|t| {
                let ts: Vec<&str> = t.split('/').collect();
                ts.len() == parts.len()
                    && ts
                        .iter()
                        .zip(&parts)
                        .all(|(t, p)| t == p || (t.starts_with('{') && t.ends_with('}')))
            })
            .cloned()
    }

    /// Checks one answer to `uri`: its status and content type must be documented for the
    /// route, and a JSON body must match the schema given for them.
    fn answer(&mut self, uri: &str, status: u16, content_type: &str, body: &[u8]) {
        let path = uri.split('?').next().unwrap();
        let Some(route) = self.template(path) else {
            self.problems
                .push(format!("{uri}: no such route in the document"));
            return;
        };
        let response = &self.doc["paths"][&route]["get"]["responses"][status.to_string()];
        let media = response["content"][content_type].clone();
        if !media.is_object() {
            self.problems.push(format!(
                "{uri}: the document has no {status} answer of type {content_type:?} for {route}"
            ));
            return;
        }
        self.answered
            .insert((route.clone(), status, content_type.to_owned()));
        if content_type == "application/json" {
            match serde_json::from_slice::<Value>(body) {
                Ok(value) => {
                    self.validate(&media["schema"], &value, &format!("{uri} ({status})"), "");
                }
                Err(e) => self.problems.push(format!("{uri}: not JSON: {e}")),
            }
        }
    }

    fn component(&self, reference: &str) -> Option<(String, Value)> {
        let name = reference.strip_prefix("#/components/schemas/")?;
        let schema = self.doc["components"]["schemas"].get(name)?.clone();
        Some((name.to_owned(), schema))
    }

    /// `value` at `at` against `schema`, a part of the component schema `owner`.
    fn fail(&mut self, at: &str, problem: String) {
        self.problems.push(format!("{at}: {problem}"));
    }

    fn validate(&mut self, schema: &Value, value: &Value, at: &str, owner: &str) {
        let Some(s) = schema.as_object() else {
            return self.fail(at, format!("the schema is not an object: {schema}"));
        };
        if let Some(k) = s.keys().find(|k| !KEYWORDS.contains(&k.as_str())) {
            return self.fail(
                at,
                format!("the schema uses {k:?}, which this check does not know"),
            );
        }
        if let Some(r) = s.get("$ref") {
            let Some((name, target)) = self.component(r.as_str().unwrap_or("")) else {
                return self.fail(at, format!("no component {r}"));
            };
            return self.validate(&target, value, at, &name);
        }
        if value.is_null() {
            if s.get("nullable") != Some(&Value::Bool(true)) {
                self.fail(at, "null where the document does not allow it".into());
            }
            return;
        }
        if let Some(values) = s.get("enum").and_then(Value::as_array)
            && !values.contains(value)
        {
            return self.fail(at, format!("{value} is not one of {values:?}"));
        }
        let kind = s.get("type").and_then(Value::as_str).unwrap_or("");
        match kind {
            "object" => {
                let Some(object) = value.as_object() else {
                    return self.fail(at, format!("{value} is not an object"));
                };
                let properties = s.get("properties").and_then(Value::as_object);
                let required: Vec<&str> = s
                    .get("required")
                    .and_then(Value::as_array)
                    .map(|r| r.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                for name in &required {
                    if !object.contains_key(*name) {
                        self.fail(at, format!("the required field {name:?} is missing"));
                    }
                }
                for name in properties.into_iter().flat_map(|p| p.keys()) {
                    if !required.contains(&name.as_str()) && !object.contains_key(name) {
                        self.absent.insert((owner.to_owned(), name.clone()));
                    }
                }
                let closed = s.get("additionalProperties") == Some(&Value::Bool(false));
                for (name, field) in object {
                    let Some(field_schema) = properties.and_then(|p| p.get(name)) else {
                        if closed {
                            self.fail(at, format!("the field {name:?} is not in the document"));
                        }
                        continue;
                    };
                    let key = (owner.to_owned(), name.clone());
                    if !required.contains(&name.as_str()) {
                        self.present.insert(key.clone());
                    }
                    if field_schema.get("nullable") == Some(&Value::Bool(true)) {
                        if field.is_null() {
                            self.null.insert(key);
                        } else {
                            self.not_null.insert(key);
                        }
                    }
                    self.validate(&field_schema.clone(), field, &format!("{at}.{name}"), owner);
                }
            }
            "array" => {
                let Some(items) = value.as_array() else {
                    return self.fail(at, format!("{value} is not an array"));
                };
                let item_schema = s.get("items").cloned().unwrap_or(Value::Null);
                for (i, item) in items.iter().enumerate() {
                    self.validate(&item_schema, item, &format!("{at}[{i}]"), owner);
                }
            }
            "string" => {
                let Some(text) = value.as_str() else {
                    return self.fail(at, format!("{value} is not a string"));
                };
                if let Some(max) = s.get("maxLength").and_then(Value::as_u64)
                    && text.chars().count() as u64 > max
                {
                    self.fail(at, format!("{text:?} is longer than {max}"));
                }
                if s.contains_key("pattern") {
                    self.fail(
                        at,
                        "a pattern in a response schema is not checked here".into(),
                    );
                }
            }
            "integer" => {
                let (Some(n), true) = (value.as_number(), value.is_i64() || value.is_u64()) else {
                    return self.fail(at, format!("{value} is not an integer"));
                };
                let n: i128 = n.to_string().parse().unwrap();
                let bound = |k: &str| s.get(k).and_then(Value::as_i64).map(i128::from);
                let (low, high) = match s.get("format").and_then(Value::as_str) {
                    Some("int32") => (i128::from(i32::MIN), i128::from(i32::MAX)),
                    Some("int64") => (i128::from(i64::MIN), i128::from(i64::MAX)),
                    Some(other) => {
                        return self.fail(at, format!("unknown integer format {other:?}"));
                    }
                    None => (i128::MIN, i128::MAX),
                };
                let low = bound("minimum").unwrap_or(low).max(low);
                let high = bound("maximum").unwrap_or(high).min(high);
                if n < low || n > high {
                    self.fail(at, format!("{n} is outside [{low}, {high}]"));
                }
            }
            "number" => {
                if !value.is_number() {
                    self.fail(at, format!("{value} is not a number"));
                }
            }
            "boolean" => {
                if !value.is_boolean() {
                    self.fail(at, format!("{value} is not a boolean"));
                }
            }
            other => self.fail(at, format!("the schema has no type I know: {other:?}")),
        }
    }

    /// What the document has that the answers did not show.
    fn unseen(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (route, item) in self.doc["paths"].as_object().unwrap() {
            for content_type in item["get"]["responses"]["200"]["content"]
                .as_object()
                .unwrap()
                .keys()
            {
                if !self
                    .answered
                    .contains(&(route.clone(), 200, content_type.clone()))
                {
                    out.push(format!("no 200 of {content_type} from {route}"));
                }
            }
        }
        for status in [400, 401, 403, 404, 503] {
            if !self.answered.iter().any(|(_, s, _)| *s == status) {
                out.push(format!("no {status} answer"));
            }
        }
        for (name, schema) in self.doc["components"]["schemas"].as_object().unwrap() {
            let Some(properties) = schema["properties"].as_object() else {
                continue;
            };
            let required: Vec<&str> = schema["required"]
                .as_array()
                .map(|r| r.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            for (field, field_schema) in properties {
                let key = (name.clone(), field.clone());
                if !required.contains(&field.as_str()) {
                    if !self.present.contains(&key) {
                        out.push(format!("{name}.{field} (optional) was never present"));
                    }
                    if !self.absent.contains(&key) {
                        out.push(format!("{name}.{field} (optional) was always present"));
                    }
                }
                if field_schema["nullable"] == true {
                    if !self.null.contains(&key) {
                        out.push(format!("{name}.{field} (nullable) was never null"));
                    }
                    if !self.not_null.contains(&key) {
                        out.push(format!("{name}.{field} (nullable) was always null"));
                    }
                }
            }
        }
        out
    }
}

/// The document's own rules: closed objects whose required fields are properties, references
/// that resolve, and only keywords the validator knows.
fn strictness_problems(doc: &Value) -> Vec<String> {
    fn walk(doc: &Value, schema: &Value, at: &str, out: &mut Vec<String>) {
        let Some(s) = schema.as_object() else {
            return out.push(format!("{at}: not an object"));
        };
        for k in s.keys() {
            if !KEYWORDS.contains(&k.as_str()) {
                out.push(format!("{at}: unknown keyword {k:?}"));
            }
        }
        if let Some(r) = s.get("$ref").and_then(Value::as_str) {
            let name = r.strip_prefix("#/components/schemas/").unwrap_or("");
            if doc["components"]["schemas"].get(name).is_none() {
                out.push(format!("{at}: {r} does not resolve"));
            }
        }
        if let Some(properties) = s.get("properties").and_then(Value::as_object) {
            if s.get("additionalProperties") != Some(&Value::Bool(false)) {
                out.push(format!(
                    "{at}: an object without additionalProperties: false"
                ));
            }
            for r in s
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if !properties.contains_key(r.as_str().unwrap_or("")) {
                    out.push(format!("{at}: {r} is required but not a property"));
                }
            }
            for (name, p) in properties {
                walk(doc, p, &format!("{at}.{name}"), out);
            }
        }
        if let Some(items) = s.get("items") {
            walk(doc, items, &format!("{at}[]"), out);
        }
    }
    let mut out = Vec::new();
    for (name, schema) in doc["components"]["schemas"].as_object().unwrap() {
        walk(doc, schema, name, &mut out);
    }
    for (route, item) in doc["paths"].as_object().unwrap() {
        for (status, response) in item["get"]["responses"].as_object().unwrap() {
            for (content_type, media) in response["content"].as_object().into_iter().flatten() {
                let at = format!("{route} {status} {content_type}");
                walk(doc, &media["schema"], &at, &mut out);
                if content_type == "application/json" && media["schema"].get("$ref").is_none() {
                    out.push(format!(
                        "{at}: a JSON answer that is not a component schema"
                    ));
                }
            }
        }
    }
    out
}

/// An API (the router, in process) whose answers go through the checker.
struct Api<'a> {
    rt: &'a tokio::runtime::Runtime,
    app: axum::Router,
}

impl Api<'_> {
    /// GETs `uri` (with `token`), checks the answer, and returns its status and JSON body (null
    /// when not JSON).
    fn get(&self, checker: &mut Checker, uri: &str, token: Option<&str>) -> (u16, Value) {
        let (status, content_type, body) = api_get(self.rt, &self.app, uri, token);
        checker.answer(uri, status, &content_type, &body);
        let json = if content_type == "application/json" {
            serde_json::from_slice(&body).unwrap_or(Value::Null)
        } else {
            Value::Null
        };
        (status, json)
    }

    /// The same, requiring `status`.
    fn expect(&self, checker: &mut Checker, status: u16, uri: &str, token: Option<&str>) -> Value {
        let (got, body) = self.get(checker, uri, token);
        assert_eq!(got, status, "{uri}: {body}");
        body
    }
}

/// Percent-encodes every byte of `text` that is not unreserved.
fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A path from raw bytes.
fn raw(bytes: &[u8]) -> PathBuf {
    os(bytes).to_path_buf()
}

/// `path_b64=…` for a path, escaped for a query string.
fn b64_param(path: &Path) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(path.as_os_str().as_bytes());
    format!(
        "path_b64={}",
        b64.replace('+', "%2B")
            .replace('/', "%2F")
            .replace('=', "%3D")
    )
}

/// Scans `root` as one snapshot; `nobody` scans without root's rights. Committed (with or
/// without unreadable entries).
fn scan(aggregator: &Aggregator, base: &Path, root: &Path, nobody: bool, options: &[&str]) {
    let mut command = if nobody {
        as_nobody(scanner(), base)
    } else {
        let mut c = Command::new(scanner());
        c.env_remove("SLURM_PROCID");
        c
    };
    let o = command
        .args(["--aggregator", &aggregator.addr])
        .args(options)
        .arg(root)
        .output()
        .unwrap();
    assert!(
        matches!(o.status.code(), Some(0 | 3)),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn every_answer_of_every_route_is_what_the_document_says() {
    let doc = storage_tracker_api::openapi::document();
    let strict = strictness_problems(&doc);
    assert!(
        strict.is_empty(),
        "the document is not strict:\n{}",
        strict.join("\n")
    );
    let mut checker = Checker::new(doc.clone());

    // The trees. tree/ is scanned twice (by nobody, so that locked/ cannot be read; then by
    // root after changes, with other options); w\xfd/ is a snapshot whose root is not UTF-8.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = TestDatabase::new(&rt, "openapi");
    let aggregator = Aggregator::start(&rt, &db);
    let dir = tempfile::tempdir().unwrap();
    let base = std::fs::canonicalize(dir.path()).unwrap();
    std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o755)).unwrap();
    let tree = base.join("tree");
    let odd = raw(&[tree.as_os_str().as_bytes(), b"/dir\xfe"].concat());
    let write = |p: &Path, n: usize| {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, vec![b'x'; n]).unwrap();
    };
    write(&tree.join("a.txt"), 1000);
    let unnamed = raw(&[tree.as_os_str().as_bytes(), b"/b.\xff"].concat());
    write(&unnamed, 200);
    std::os::unix::fs::chown(&unnamed, Some(4242), Some(4242)).unwrap();
    for (name, n) in [
        ("c.dat", 3000),
        ("d.dat", 2000),
        ("e.dat", 1000),
        ("sub/f.dat", 10),
    ] {
        write(&odd.join(name), n);
    }
    std::os::unix::fs::symlink("a.txt", tree.join("link")).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        tree.join("fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
    write(&tree.join("locked/inside"), 5);
    std::fs::set_permissions(tree.join("locked"), std::fs::Permissions::from_mode(0o000)).unwrap();
    let old = tree.join("old.log");
    write(&old, 5000);
    let long_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(400 * 86_400);
    std::fs::File::options()
        .write(true)
        .open(&old)
        .unwrap()
        .set_times(
            std::fs::FileTimes::new()
                .set_modified(long_ago)
                .set_accessed(long_ago),
        )
        .unwrap();
    // Duplicates (at least 1 MiB): two pairs, one of a name that is not UTF-8, whose second
    // copy lies in a directory that is not UTF-8 and belongs to a uid without a name.
    let pair = |a: &Path, b: &Path, byte: u8| {
        for p in [a, b] {
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, vec![byte; 1 << 20]).unwrap();
        }
    };
    let odd_copy = raw(&[tree.as_os_str().as_bytes(), b"/dir\xfe/\xfd.bin"].concat());
    pair(
        &raw(&[tree.as_os_str().as_bytes(), b"/aaa/\xfd.bin"].concat()),
        &odd_copy,
        1,
    );
    std::os::unix::fs::chown(&odd_copy, Some(4242), Some(4242)).unwrap();
    // A third copy, root's, in a directory that is UTF-8.
    std::fs::create_dir_all(tree.join("ccc")).unwrap();
    std::fs::write(
        raw(&[tree.as_os_str().as_bytes(), b"/ccc/\xfd.bin"].concat()),
        vec![1u8; 1 << 20],
    )
    .unwrap();
    pair(&tree.join("aaa/same.bin"), &tree.join("bbb/same.bin"), 2);
    scan(&aggregator, &base, &tree, true, &[]);
    std::fs::remove_file(tree.join("a.txt")).unwrap();
    write(&odd.join("c.dat"), 6000);
    let added = raw(&[odd.as_os_str().as_bytes(), b"/new\xfc.dat"].concat());
    write(&added, 4000);
    scan(
        &aggregator,
        &base,
        &tree,
        false,
        &["--exclude", "nothing-matches"],
    );
    // Snapshot 2's candidates hashed (snapshot 1's are not), one of them rewritten first, so
    // that it cannot be.
    std::fs::write(tree.join("bbb/same.bin"), vec![3u8; 1 << 20]).unwrap();
    let hashed = Command::new(scanner())
        .env_remove("SLURM_PROCID")
        .args(["--hash-duplicates", "2", "--aggregator", &aggregator.addr])
        .output()
        .unwrap();
    assert_eq!(
        hashed.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&hashed.stderr)
    );
    let other_root = raw(&[base.as_os_str().as_bytes(), b"/w\xfd"].concat());
    write(&other_root.join("z"), 7);
    scan(&aggregator, &base, &other_root, false, &[]);
    std::fs::set_permissions(tree.join("locked"), std::fs::Permissions::from_mode(0o755)).unwrap();

    let api = Api {
        rt: &rt,
        app: storage_tracker_api::app(AppState::new(reader(&db))),
    };
    let c = &mut checker;
    let t = tree.to_str().unwrap();
    let odd_q = b64_param(&odd);
    let (s1, s2, s3) = (
        "/api/v1/snapshots/1",
        "/api/v1/snapshots/2",
        "/api/v1/snapshots/3",
    );

    // The service's own routes.
    let served = api.expect(c, 200, "/api/v1/openapi.json", None);
    assert_eq!(served, doc, "the served document is document()");
    api.expect(c, 200, "/health", None);
    let open = api.expect(c, 200, "/api/v1/access", None);
    assert_eq!(open["name"], Value::Null, "{open}");

    // Snapshots: the list (snapshot 3's root is not UTF-8), one, children.
    let list = api.expect(c, 200, "/api/v1/snapshots?limit=10&offset=0", None);
    assert_eq!(list["snapshots"].as_array().unwrap().len(), 3, "{list}");
    api.expect(c, 200, s3, None);
    api.expect(
        c,
        200,
        &format!("{s1}/children?path={t}&sort=name&order=asc"),
        None,
    );
    api.expect(
        c,
        200,
        &format!("{s2}/children?{odd_q}&limit=2&offset=1"),
        None,
    );

    // Entries: a symlink, one that could not be read, one whose name is not UTF-8.
    let link = api.expect(c, 200, &format!("{s1}/entry?path={t}/link"), None);
    assert_eq!(link["symlink_target"], "a.txt", "{link}");
    let locked = api.expect(c, 200, &format!("{s1}/entry?path={t}/locked"), None);
    assert_eq!(locked["error"]["op"], "open", "{locked}");
    api.expect(c, 200, &format!("{s1}/entry?{}", b64_param(&unnamed)), None);

    // Treemaps: folded tiles and children; a directory that is not UTF-8.
    api.expect(
        c,
        200,
        &format!("{s1}/treemap?path={t}&depth=2&max_children=2"),
        None,
    );
    api.expect(
        c,
        200,
        &format!("{s2}/treemap?{odd_q}&depth=3&max_children=500&size=files"),
        None,
    );

    // Reports.
    api.expect(c, 200, &format!("{s1}/top?what=files&{odd_q}"), None);
    api.expect(
        c,
        200,
        &format!("{s1}/top?what=dirs&path={t}&limit=3"),
        None,
    );
    // By category: "other" holds the type of b.\xff, which is not UTF-8.
    for by in ["user", "group", "type", "category"] {
        api.expect(c, 200, &format!("{s1}/usage?by={by}"), None);
    }
    api.expect(c, 200, "/api/v1/categories", None);
    // The usage gauges for Prometheus.
    api.expect(c, 200, "/api/v1/metrics/usage", None);

    // Duplicates: unverified groups (snapshot 1), confirmed ones by name, wasted bytes.
    let unverified = api.expect(c, 200, &format!("{s1}/duplicates?status=unverified"), None);
    assert_eq!(unverified["total"], 1, "{unverified}");
    let named = api.expect(
        c,
        200,
        &format!("{s2}/duplicates?same_name=true&min_size=1"),
        None,
    );
    assert_eq!(named["total"], 1, "{named}");
    let unreadable = api.expect(c, 200, &format!("{s2}/duplicates?status=unverified"), None);
    assert!(
        unreadable.to_string().contains("changed since the scan"),
        "{unreadable}"
    );
    api.expect(
        c,
        200,
        &format!("{s2}/duplicates?status=false_positive&limit=5&offset=0"),
        None,
    );
    // Every file of a group of one name, given as base64 (it is not UTF-8).
    let odd_group = named["groups"][0].clone();
    let group_copies = api.expect(
        c,
        200,
        &format!(
            "{s2}/duplicates/copies?size={}&hash={}&same_name=true&name_b64={}&limit=10",
            odd_group["size"],
            odd_group["hash"].as_str().unwrap(),
            urlencode(odd_group["name_b64"].as_str().unwrap_or("")),
        ),
        None,
    );
    assert_eq!(group_copies["total"], 3, "{group_copies} of {odd_group}");
    for by in ["dir", "user"] {
        api.expect(c, 200, &format!("{s2}/duplicates/wasted?by={by}"), None);
    }
    // The query console: a value that is not UTF-8 and one that is, each download, presets.
    let console = |sql: &str| format!("/api/v1/console?sql={}", urlencode(sql));
    let odd = api.expect(
        c,
        200,
        &console("SELECT name, NULL AS none FROM entries WHERE name LIKE 'b.%'"),
        None,
    );
    assert!(odd["binary"].is_array(), "{odd}");
    api.expect(c, 200, &format!("{}&limit=1", console("SELECT 1")), None);
    for format in ["csv", "tsv", "markdown"] {
        api.expect(
            c,
            200,
            &format!("{}&format={format}", console("SELECT name FROM entries")),
            None,
        );
    }
    api.expect(c, 200, &format!("{s1}/console/presets?days=10"), None);
    api.expect(
        c,
        200,
        &format!("{s1}/search?kind=file&type=dat,bin&sort=mtime&order=asc"),
        None,
    );
    for of in ["size", "mtime", "atime"] {
        api.expect(c, 200, &format!("{s1}/histograms?of={of}"), None);
    }
    api.expect(c, 200, &format!("{s1}/stale?days=30&path={t}"), None);
    api.expect(c, 200, &format!("{s1}/stale?days=0&by=mtime&{odd_q}"), None);
    api.expect(c, 200, &format!("{s1}/stale?days=30&format=csv"), None);
    api.expect(
        c,
        200,
        &format!("{s2}/search?q=*.dat&match=glob&field=name&ignore_case=true&{odd_q}&min_size=1&max_size=100000&user=root&group=0&type=dat&mtime_after=2000-01-01&mtime_before=2100-01-01&atime_after=2000-01-01&atime_before=2100-01-01&limit=10&offset=0"),
        None,
    );
    api.expect(c, 200, &format!("{s1}/search?q=b&match=substring"), None);
    api.expect(c, 200, &format!("{s2}/export/ncdu?{odd_q}"), None);

    // History and growth: different options (warnings), names that are not UTF-8, a root
    // that is not UTF-8.
    api.expect(c, 200, &format!("/api/v1/history?path={t}"), None);
    api.expect(
        c,
        200,
        &format!("/api/v1/history?{}&snapshot=3", b64_param(&other_root)),
        None,
    );
    api.expect(
        c,
        200,
        &format!("/api/v1/growth?from=1&to=2&path={t}"),
        None,
    );
    api.expect(
        c,
        200,
        &format!("/api/v1/growth?from=1&to=2&{odd_q}&limit=5&offset=0"),
        None,
    );
    api.expect(c, 200, "/api/v1/growth/owners?from=1&to=2&by=user", None);
    api.expect(c, 200, "/api/v1/growth/owners?from=1&to=2&by=group", None);

    // Errors.
    api.expect(c, 400, &format!("{s1}/children?sort=size"), None);
    api.expect(c, 400, "/api/v1/growth?from=1&to=3&path=/", None);
    api.expect(c, 404, "/api/v1/snapshots/99", None);
    api.expect(c, 404, &format!("{s1}/entry?path={t}/nothing"), None);

    // Tokens: an admin, a token scoped to tree/, none.
    let access = storage_tracker_api::access::Access::parse(&format!(
        "admin {ADMIN} *\nscoped {SCOPED} {t}\n"
    ))
    .unwrap();
    let guarded = Api {
        rt: &rt,
        app: storage_tracker_api::app(AppState::new(reader(&db)).with_access(access)),
    };
    guarded.expect(c, 200, "/api/v1/access", Some(ADMIN));
    guarded.expect(c, 200, "/api/v1/access", Some(SCOPED));
    guarded.expect(c, 200, "/api/v1/access", None);
    guarded.expect(c, 200, "/api/v1/snapshots", Some(SCOPED));
    guarded.expect(c, 401, "/api/v1/snapshots", None);
    guarded.expect(
        c,
        401,
        "/api/v1/snapshots",
        Some("not-a-token-0123456789abcdef"),
    );
    guarded.expect(c, 403, &format!("{s1}/usage"), Some(SCOPED));
    guarded.expect(c, 404, s3, Some(SCOPED));

    // ClickHouse down, and a database that is not there.
    let mut gone = reader(&db);
    gone.url = "http://127.0.0.1:9".into();
    let down = Api {
        rt: &rt,
        app: storage_tracker_api::app(AppState::new(gone)),
    };
    down.expect(c, 503, "/health", None);
    down.expect(c, 503, "/api/v1/snapshots", None);
    let mut missing = reader(&db);
    missing.database = "st_no_such_database".parse().unwrap();
    let missing = Api {
        rt: &rt,
        app: storage_tracker_api::app(AppState::new(missing)),
    };
    missing.expect(c, 503, "/health", None);
    missing.expect(c, 503, &format!("{s1}/usage"), None);

    let mut problems = std::mem::take(&mut checker.problems);
    problems.extend(checker.unseen());
    assert!(
        problems.is_empty(),
        "answers and the document disagree:\n{}",
        problems.join("\n")
    );
}
