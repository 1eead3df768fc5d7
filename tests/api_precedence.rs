//! The order in which the API refuses a request, on a real scanned tree: the route's
//! `{snapshot_id}` and its query parameters are checked before the snapshot is looked up, its
//! scope checked and its directory looked up, so a bad parameter is a 400 whatever the snapshot,
//! the directory, the token or the database; the admin-only reports refuse a scoped token
//! where they always have, before the parameters that follow; and an unknown word is refused
//! with its parameter's own message. Each route's order is pinned, parameter by parameter.

mod support;

use storage_tracker_api::AppState;
use storage_tracker_api::access::Access;
use support::*;

const ADMIN: &str = "admin-token-0123456789abcdef";
const LEAD: &str = "lead-token-0123456789abcdefgh";

/// In-process requests to the API's apps.
struct Requests {
    rt: tokio::runtime::Runtime,
}

impl Requests {
    /// The status and the error body's `error` and `message` of `uri` on `app`.
    fn refused(&self, app: &axum::Router, uri: &str, token: Option<&str>) -> (u16, String, String) {
        let (status, _, body) = api_get(&self.rt, app, uri, token);
        let json: serde_json::Value = serde_json::from_slice(&body)
            .unwrap_or_else(|e| panic!("{uri}: {e}: {}", String::from_utf8_lossy(&body)));
        let field = |name: &str| {
            json[name]
                .as_str()
                .unwrap_or_else(|| panic!("{uri}: no {name} in {json}"))
                .to_owned()
        };
        (status, field("error"), field("message"))
    }

    /// Asserts that `uri` on `app` is refused with `status` and exactly `message`.
    fn expect(
        &self,
        app: &axum::Router,
        uri: &str,
        token: Option<&str>,
        status: u16,
        message: &str,
    ) {
        let kind = match status {
            400 => "bad_request",
            401 => "unauthorized",
            403 => "forbidden",
            404 => "not_found",
            503 => "unavailable",
            other => panic!("no error kind for {other}"),
        };
        assert_eq!(
            self.refused(app, uri, token),
            (status, kind.to_owned(), message.to_owned()),
            "{uri} (token {token:?})"
        );
    }
}

const SORT: &str =
    r#"sort must be one of bytes, allocated, files, mtime, atime, name, got "bogus""#;
const LIMIT_0: &str = "limit must be between 1 and 1000, got 0";
const LIMIT_ABC: &str =
    "bad query string: Failed to deserialize query string: limit: invalid digit found in string";
const BAD_REGEX: &str =
    "q is not a valid regular expression: regex parse error:\n    (\n    ^\nerror: unclosed group";
const NO_99: &str = "no committed snapshot 99";

/// The bad parameters of the differential test, each with its route, and the 400 it is.
fn bad_parameters() -> Vec<(&'static str, String, String)> {
    let long = "a".repeat(1025);
    vec![
        ("children", "sort=bogus".into(), SORT.into()),
        (
            "histograms",
            "of=x".into(),
            r#"of must be size, mtime or atime, got "x""#.into(),
        ),
        (
            "stale",
            "format=x".into(),
            r#"format must be json or csv, got "x""#.into(),
        ),
        (
            "stale",
            "days=100000".into(),
            "days must be at most 36500, got 100000".into(),
        ),
        (
            "search",
            "q=x&match=x".into(),
            r#"match must be substring, glob or regex, got "x""#.into(),
        ),
        ("search", "q=(&match=regex".into(), BAD_REGEX.into()),
        (
            "search",
            "q=a%00".into(),
            "q contains a NUL byte, which no name can hold".into(),
        ),
        (
            "search",
            format!("q={long}"),
            "q is longer than 1024 bytes".into(),
        ),
        (
            "search",
            "q=a&mtime_before=2020-13-45".into(),
            r#"mtime_before must be a date as YYYY-MM-DD, got "2020-13-45""#.into(),
        ),
        (
            "treemap",
            "size=x".into(),
            r#"size must be bytes, allocated or files, got "x""#.into(),
        ),
        (
            "treemap",
            "depth=0".into(),
            "depth must be between 1 and 4, got 0".into(),
        ),
        ("children", "limit=0".into(), LIMIT_0.into()),
        ("children", "limit=abc".into(), LIMIT_ABC.into()),
        (
            "top",
            "what=files&offset=100000001".into(),
            "offset must be at most 100000000, got 100000001".into(),
        ),
    ]
}

#[test]
fn parameters_are_refused_before_the_snapshot_the_directory_and_the_token() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = TestDatabase::new(&rt, "precedence");
    let aggregator = Aggregator::start(&rt, &db);
    let tree = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(tree.path()).unwrap();
    for p in [
        "team/a.txt",
        "team/sub/b.txt",
        "other/secret.txt",
        "big.dat",
    ] {
        let path = root.join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, b"data").unwrap();
    }
    scan(&aggregator, &root);
    std::fs::write(root.join("team/c.txt"), b"more").unwrap();
    scan(&aggregator, &root);
    let r = root.to_str().unwrap();
    let access = Access::parse(&format!("admin {ADMIN} *\nlead {LEAD} {r}/team\n")).unwrap();
    let mut gone = reader(&db);
    gone.url = "http://127.0.0.1:9".into();
    let mut missing = reader(&db);
    missing.database = "st_no_such_database".parse().unwrap();
    let apps = Requests { rt };
    // No tokens: every request reads everything.
    let open = &storage_tracker_api::app(AppState::new(reader(&db)));
    // An admin token and one scoped to `{root}/team`.
    let tokens = &storage_tracker_api::app(AppState::new(reader(&db)).with_access(access));
    // ClickHouse on a closed port, and a database that is not there.
    let down = storage_tracker_api::app(AppState::new(gone));
    let missing = storage_tracker_api::app(AppState::new(missing));
    let s = "/api/v1/snapshots";

    // A bad parameter on a snapshot that is not there, and under a directory that is not there.
    for (route, query, message) in bad_parameters() {
        apps.expect(
            open,
            &format!("{s}/99/{route}?{query}"),
            None,
            400,
            &message,
        );
        // A route of the whole snapshot takes no directory: the path is the parameter refused.
        let message = match route {
            "histograms" => {
                "unknown parameter \"path\" for /api/v1/snapshots/{snapshot_id}/histograms: \
                 it takes of (see /api/v1/openapi.json)"
                    .to_owned()
            }
            _ => message,
        };
        apps.expect(
            open,
            &format!("{s}/1/{route}?path={r}/nope&{query}"),
            None,
            400,
            &message,
        );
    }
    // The same without the bad parameter: the snapshot, then the directory.
    apps.expect(open, &format!("{s}/99/children"), None, 404, NO_99);
    apps.expect(
        open,
        &format!("{s}/1/children?path={r}/nope"),
        None,
        404,
        &format!("no directory \"{r}/nope\" in snapshot 1"),
    );

    // A scoped token outside its prefix, or with no path at all (the root, outside it too).
    let outside = format!("{r}/other");
    for query in [String::new(), format!("path={outside}&")] {
        for (route, bad, message) in [
            ("children", "limit=0", LIMIT_0),
            ("children", "limit=abc", LIMIT_ABC),
            ("children", "sort=bogus", SORT),
            ("top", "limit=0", LIMIT_0),
            ("treemap", "depth=0", "depth must be between 1 and 4, got 0"),
            (
                "treemap",
                "size=x",
                r#"size must be bytes, allocated or files, got "x""#,
            ),
            (
                "stale",
                "format=x",
                r#"format must be json or csv, got "x""#,
            ),
            (
                "search",
                "match=x",
                r#"match must be substring, glob or regex, got "x""#,
            ),
            ("search", "q=(&match=regex", BAD_REGEX),
        ] {
            let uri = format!("{s}/1/{route}?{query}{bad}");
            apps.expect(tokens, &uri, Some(LEAD), 400, message);
        }
        let forbidden = apps.refused(tokens, &format!("{s}/1/children?{query}"), Some(LEAD));
        assert_eq!(forbidden.0, 403, "{forbidden:?}");
    }

    // The admin-only reports refuse a scoped token before their words.
    let needs_admin = |what: &str| {
        format!(
            "{what} covers the whole snapshot; it needs an admin token (this one may read only \
             below {r}/team)"
        )
    };
    apps.expect(
        tokens,
        &format!("{s}/1/usage?by=x"),
        Some(LEAD),
        403,
        &needs_admin("usage"),
    );
    apps.expect(
        tokens,
        "/api/v1/growth/owners?from=1&to=2&by=x",
        Some(LEAD),
        403,
        &needs_admin("growth per owner"),
    );
    // But usage's page comes before the requirement, and so does a histogram's word.
    apps.expect(
        tokens,
        &format!("{s}/1/usage?limit=0"),
        Some(LEAD),
        400,
        LIMIT_0,
    );
    apps.expect(
        tokens,
        &format!("{s}/1/histograms?of=x"),
        Some(LEAD),
        400,
        r#"of must be size, mtime or atime, got "x""#,
    );
    apps.expect(
        tokens,
        &format!("{s}/1/histograms"),
        Some(LEAD),
        403,
        &needs_admin("a histogram"),
    );
    // The admin token gets the words' own 400s.
    apps.expect(
        tokens,
        &format!("{s}/1/usage?by=x"),
        Some(ADMIN),
        400,
        r#"by must be one of user, group, type, category, got "x""#,
    );
    apps.expect(
        tokens,
        "/api/v1/growth/owners?from=1&to=2&by=x",
        Some(ADMIN),
        400,
        r#"by must be user or group, got "x""#,
    );

    // ClickHouse down, or the database missing: a bad parameter is still a 400.
    for app in [&down, &missing] {
        apps.expect(app, &format!("{s}/5/children?sort=bogus"), None, 400, SORT);
        apps.expect(
            app,
            &format!("{s}/5/treemap?depth=0"),
            None,
            400,
            "depth must be between 1 and 4, got 0",
        );
        apps.expect(
            app,
            &format!("{s}/5/children"),
            None,
            503,
            "the database is unavailable",
        );
    }

    // A relative path is checked after sort and order.
    apps.expect(
        open,
        &format!("{s}/1/children?path=rel&sort=bogus"),
        None,
        400,
        SORT,
    );
    apps.expect(
        open,
        &format!("{s}/1/children?path=rel&order=up"),
        None,
        400,
        r#"order must be asc or desc, got "up""#,
    );
    apps.expect(
        open,
        &format!("{s}/1/children?path=rel"),
        None,
        400,
        r#"path "rel" must be absolute (start with '/')"#,
    );

    // As they always were: top's word comes after the snapshot and the directory, usage's after
    // the snapshot, and a pattern RE2 refuses is refused by ClickHouse, after the lookup.
    apps.expect(open, &format!("{s}/99/top?what=x"), None, 404, NO_99);
    apps.expect(open, &format!("{s}/99/usage?by=x"), None, 404, NO_99);
    apps.expect(
        open,
        &format!("{s}/1/top?path={r}/nope&what=x"),
        None,
        404,
        &format!("no directory \"{r}/nope\" in snapshot 1"),
    );
    let re2 = "q=a{1001}&match=regex";
    apps.expect(open, &format!("{s}/99/search?{re2}"), None, 404, NO_99);
    let (status, _, message) = apps.refused(open, &format!("{s}/1/search?{re2}"), None);
    assert_eq!(status, 400, "{message}");
    assert!(
        message.contains("(RE2)") && message.contains("{1001}"),
        "{message}"
    );
    apps.expect(
        open,
        "/api/v1/growth?from=1&to=2&limit=0",
        None,
        400,
        LIMIT_0,
    );
    apps.expect(
        tokens,
        &format!("{s}/99/children?sort=bogus"),
        None,
        401,
        "send a token: Authorization: Bearer TOKEN",
    );
    apps.expect(
        tokens,
        &format!("{s}/99/children?sort=bogus"),
        Some("wrong-token-0123456789abcdef"),
        401,
        "the token is not valid",
    );
}

#[test]
fn unknown_words_are_refused_with_their_parameters_message() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = TestDatabase::new(&rt, "precedence_words");
    let aggregator = Aggregator::start(&rt, &db);
    let tree = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(tree.path()).unwrap();
    std::fs::create_dir_all(root.join("dir")).unwrap();
    std::fs::write(root.join("dir/a.txt"), b"data").unwrap();
    scan(&aggregator, &root);
    scan(&aggregator, &root);
    let apps = Requests { rt };
    let open = &storage_tracker_api::app(AppState::new(reader(&db)));
    let s = "/api/v1/snapshots/1";
    for (uri, message) in [
        (
            format!("{s}/children?sort=size"),
            r#"sort must be one of bytes, allocated, files, mtime, atime, name, got "size""#,
        ),
        (
            format!("{s}/children?order=up"),
            r#"order must be asc or desc, got "up""#,
        ),
        (
            format!("{s}/treemap?size=x"),
            r#"size must be bytes, allocated or files, got "x""#,
        ),
        (
            format!("{s}/top?what=x"),
            r#"what must be files or dirs, got "x""#,
        ),
        (
            format!("{s}/usage?by=x"),
            r#"by must be one of user, group, type, category, got "x""#,
        ),
        (
            format!("{s}/histograms?of=x"),
            r#"of must be size, mtime or atime, got "x""#,
        ),
        (
            format!("{s}/stale?by=x"),
            r#"by must be atime or mtime, got "x""#,
        ),
        (
            format!("{s}/stale?format=x"),
            r#"format must be json or csv, got "x""#,
        ),
        (
            format!("{s}/search?match=x"),
            r#"match must be substring, glob or regex, got "x""#,
        ),
        (
            format!("{s}/search?field=x"),
            r#"field must be name or path, got "x""#,
        ),
        (
            "/api/v1/growth/owners?from=1&to=2&by=x".to_owned(),
            r#"by must be user or group, got "x""#,
        ),
        // Text is shown as written, escaped as a string.
        (
            format!("{s}/children?order=%22Up%22"),
            r#"order must be asc or desc, got "\"Up\"""#,
        ),
    ] {
        apps.expect(open, &uri, None, 400, message);
    }
}

#[test]
fn each_route_checks_its_parameters_in_its_own_order() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = TestDatabase::new(&rt, "precedence_order");
    let aggregator = Aggregator::start(&rt, &db);
    let tree = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(tree.path()).unwrap();
    std::fs::write(root.join("a.txt"), b"data").unwrap();
    scan(&aggregator, &root);
    let apps = Requests { rt };
    let open = &storage_tracker_api::app(AppState::new(reader(&db)));
    let bad_id = r#"snapshot id must be a positive integer, got "abc""#;
    for (uri, message) in [
        // children: the snapshot id, the query string, the page, sort, order, then the path.
        ("abc/children?limit=abc", bad_id),
        ("1/children?sort=bogus&limit=abc", LIMIT_ABC),
        ("1/children?sort=bogus&limit=0", LIMIT_0),
        ("1/children?order=up&sort=bogus", SORT),
        // top: the query string and the page, then the snapshot id.
        ("abc/top?limit=0", LIMIT_0),
        ("abc/top?what=x", bad_id),
        // histograms: the query string, the snapshot id, then the word.
        ("abc/histograms?of=x", bad_id),
        // usage: the page, then the snapshot.
        ("abc/usage?limit=0", LIMIT_0),
        // stale: the format, the page, by, then days.
        (
            "1/stale?by=x&format=y",
            r#"format must be json or csv, got "y""#,
        ),
        ("1/stale?by=x&limit=0", LIMIT_0),
        (
            "1/stale?days=100000&by=x",
            r#"by must be atime or mtime, got "x""#,
        ),
        ("1/stale?format=csv&limit=0", "limit must be at least 1"),
        (
            "abc/stale?days=100000",
            "days must be at most 36500, got 100000",
        ),
        // search: the page, field, match, the pattern, NULs, dates, then the snapshot id.
        (
            "1/search?match=x&field=y",
            r#"field must be name or path, got "y""#,
        ),
        ("1/search?match=x&limit=0", LIMIT_0),
        ("1/search?q=(&match=regex&user=a%00", BAD_REGEX),
        (
            "1/search?atime_after=x&user=a%00",
            "user contains a NUL byte, which no name can hold",
        ),
        (
            "abc/search?atime_after=x",
            r#"atime_after must be a date as YYYY-MM-DD, got "x""#,
        ),
        // treemap: depth, max_children, size, then the snapshot id and the path.
        (
            "1/treemap?size=x&depth=0",
            "depth must be between 1 and 4, got 0",
        ),
        (
            "1/treemap?size=x&max_children=0",
            "max_children must be between 1 and 500, got 0",
        ),
        (
            "abc/treemap?size=x&path=rel",
            r#"size must be bytes, allocated or files, got "x""#,
        ),
        ("abc/treemap?path=rel", bad_id),
        // entry: a path is needed before the snapshot id is read.
        ("abc/entry", "give the entry as path= or path_b64="),
        ("99/entry", "give the entry as path= or path_b64="),
        ("abc/entry?path=rel", bad_id),
        // The query string is read first, then the snapshot id.
        (
            "abc/export/ncdu?path=/a&path=/b",
            r#"path is given 2 times ("/a", "/b"): give it once"#,
        ),
        (
            "abc/entry?path=/a&path=/b",
            r#"path is given 2 times ("/a", "/b"): give it once"#,
        ),
    ] {
        apps.expect(
            open,
            &format!("/api/v1/snapshots/{uri}"),
            None,
            400,
            message,
        );
    }
}
