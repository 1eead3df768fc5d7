//! What every route of the API does alike, on a real scanned tree: a query parameter the
//! route does not take is a 400 naming it, a method other than GET a 405 in the error shape;
//! answers say how long they may be kept (a committed snapshot's for good, growing lists asked
//! again, errors never) and carry an ETag that makes a repeated request a 304; and browsers on
//! the allowed origins may call it (preflights answered, others refused).

mod support;

use storage_tracker_api::AppState;
use storage_tracker_api::access::Access;
use storage_tracker_api::cors::Origins;
use support::*;

const ADMIN: &str = "admin-token-0123456789abcdef";
const LEAD: &str = "lead-token-0123456789abcdefgh";

/// Status, headers and body of `method uri` with these request headers.
fn answer(
    rt: &tokio::runtime::Runtime,
    app: &axum::Router,
    (method, uri): (&str, &str),
    headers: &[(&str, &str)],
) -> (u16, axum::http::HeaderMap, Vec<u8>) {
    use tower::ServiceExt;
    let mut request = axum::http::Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = rt
        .block_on(
            app.clone()
                .oneshot(request.body(axum::body::Body::empty()).unwrap()),
        )
        .unwrap();
    let (status, headers) = (response.status().as_u16(), response.headers().clone());
    let body = rt
        .block_on(axum::body::to_bytes(response.into_body(), 64 << 20))
        .unwrap();
    (status, headers, body.to_vec())
}

/// A database holding one scan of a small tree with a `team` directory; its root.
fn scanned(rt: &tokio::runtime::Runtime, name: &str) -> (TestDatabase, tempfile::TempDir, String) {
    let db = TestDatabase::new(rt, name);
    let aggregator = Aggregator::start(rt, &db);
    let tree = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(tree.path()).unwrap();
    std::fs::create_dir(root.join("team")).unwrap();
    std::fs::write(root.join("team/a.txt"), b"data").unwrap();
    scan(&aggregator, &root);
    let r = root.to_str().unwrap().to_owned();
    (db, tree, r)
}

/// Every value of the header `name`, in order.
fn values(headers: &axum::http::HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

/// The error body's (`error`, `message`).
fn error_of(body: &[u8]) -> (String, String) {
    let json: serde_json::Value = serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(body)));
    (
        json["error"].as_str().unwrap().to_owned(),
        json["message"].as_str().unwrap().to_owned(),
    )
}

#[test]
fn every_route_refuses_a_parameter_it_does_not_take_and_a_method_other_than_get() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (db, _tree, _) = scanned(&rt, "strict");
    let app = storage_tracker_api::app(AppState::new(reader(&db)));
    let document = storage_tracker_api::openapi::document();
    let routes = document["paths"].as_object().unwrap();
    assert!(routes.len() > 10);
    for (route, item) in routes.iter().filter(|(r, _)| *r != "/health") {
        let uri = route.replace("{snapshot_id}", "1");
        let known: Vec<&str> = item["get"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["in"] == "query")
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        let takes = if known.is_empty() {
            "it takes no parameters".to_owned()
        } else {
            format!("it takes {}", known.join(", "))
        };
        // Misspelt, and whatever else comes with it, valid or not: each name the route does
        // not take is named once, in the order given.
        for query in [
            "min_sise=1",
            "limit=5&min_sise=1&min_sise=2",
            "min_sise=1&limit=abc",
        ] {
            let mut unknown: Vec<String> = Vec::new();
            for name in query.split('&').map(|p| p.split('=').next().unwrap()) {
                if !known.contains(&name) && !unknown.contains(&format!("\"{name}\"")) {
                    unknown.push(format!("\"{name}\""));
                }
            }
            let plural = if unknown.len() > 1 { "s" } else { "" };
            let (status, _, body) = answer(&rt, &app, ("GET", &format!("{uri}?{query}")), &[]);
            assert_eq!(
                (status, error_of(&body)),
                (
                    400,
                    (
                        "bad_request".to_owned(),
                        format!(
                            "unknown parameter{plural} {} for {route}: {takes} (see /api/v1/openapi.json)",
                            unknown.join(", ")
                        )
                    )
                ),
                "{uri}?{query}"
            );
        }
        // A parameter given twice, the route's own or not, once it takes them all.
        if let Some(name) = known.first() {
            let (status, headers, body) =
                answer(&rt, &app, ("GET", &format!("{uri}?{name}=1&{name}=2")), &[]);
            assert_eq!(
                (status, error_of(&body).1),
                (
                    400,
                    format!("{name} is given 2 times (\"1\", \"2\"): give it once")
                ),
                "{uri}"
            );
            assert_eq!(headers["cache-control"], "no-store", "{uri}");
        }
        for method in ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"] {
            let (status, headers, body) = answer(&rt, &app, (method, &uri), &[]);
            assert_eq!(status, 405, "{method} {uri}");
            assert_eq!(headers["allow"], "GET, HEAD", "{method} {uri}");
            assert_eq!(
                error_of(&body),
                (
                    "method_not_allowed".to_owned(),
                    format!("{method} is not served here: the API answers GET (and HEAD) only")
                )
            );
        }
    }
}

#[test]
fn health_takes_any_parameter_and_an_unknown_route_is_a_404_never_kept() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (db, _tree, _) = scanned(&rt, "probes");
    let app = storage_tracker_api::app(AppState::new(reader(&db)));
    // A probe may add what it likes (a cache-buster): health still answers.
    let (status, _, _) = answer(&rt, &app, ("GET", "/health?nocache=123"), &[]);
    assert_eq!(status, 200);
    for uri in [
        "/api/v1/nothing",
        "/api/v1/snapshots/",
        "/api/v1/snapshots/1/children/x",
    ] {
        let (status, headers, body) = answer(&rt, &app, ("GET", uri), &[]);
        assert_eq!(status, 404, "{uri}");
        assert_eq!(headers["cache-control"], "no-store", "{uri}");
        assert_eq!(
            error_of(&body),
            (
                "not_found".to_owned(),
                format!(
                    "no such route: {uri}; the API's routes are listed in /api/v1/openapi.json"
                )
            )
        );
    }
}

#[test]
fn a_snapshots_answers_are_kept_for_good_lists_are_asked_again_and_errors_never_kept() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (db, _tree, r) = scanned(&rt, "caching");
    let open = storage_tracker_api::app(AppState::new(reader(&db)));
    let access = Access::parse(&format!("admin {ADMIN} *\nlead {LEAD} {r}/team\n")).unwrap();
    let tokens = storage_tracker_api::app(AppState::new(reader(&db)).with_access(access));
    let control = |h: &axum::http::HeaderMap| h["cache-control"].to_str().unwrap().to_owned();
    let get = |app: &axum::Router, uri: &str, headers: &[(&str, &str)]| {
        answer(&rt, app, ("GET", uri), headers)
    };

    let children = format!("/api/v1/snapshots/1/children?path={r}/team");
    let (status, headers, body) = get(&open, &children, &[]);
    assert_eq!(status, 200);
    assert_eq!(control(&headers), "public, max-age=31536000, immutable");
    let vary = |h: &axum::http::HeaderMap| values(h, "vary");
    assert_eq!(vary(&headers), ["Accept-Encoding"]);
    let tag = headers["etag"].to_str().unwrap().to_owned();
    assert!(tag.starts_with('"') && tag.ends_with('"'), "{tag}");
    // Asked again with its tag: 304, no body, the same tag; with another: the whole answer.
    let (status, again, empty) = get(&open, &children, &[("if-none-match", &tag)]);
    assert_eq!((status, empty.len()), (304, 0));
    assert_eq!(again["etag"], tag.as_str());
    assert_eq!(control(&again), "public, max-age=31536000, immutable");
    let (status, _, same) = get(&open, &children, &[("if-none-match", "\"other\"")]);
    assert_eq!((status, same), (200, body));
    // The same request gives the same tag; another directory another.
    assert_eq!(get(&open, &children, &[]).1["etag"], tag.as_str());
    let root_children = format!("/api/v1/snapshots/1/children?path={r}");
    assert_ne!(get(&open, &root_children, &[]).1["etag"], tag.as_str());

    // Lists that grow as snapshots commit are asked again; health never kept.
    for uri in [
        "/api/v1/snapshots".to_owned(),
        format!("/api/v1/history?path={r}"),
    ] {
        let (status, headers, _) = get(&open, &uri, &[]);
        assert_eq!(
            (status, control(&headers).as_str()),
            (200, "public, no-cache"),
            "{uri}"
        );
        assert!(headers.contains_key("etag"), "{uri}");
    }
    // Growth compares two committed snapshots: kept for good too.
    let growth = format!("/api/v1/growth?from=1&to=1&path={r}");
    let (status, headers, _) = get(&open, &growth, &[]);
    assert_eq!(
        (status, control(&headers).as_str()),
        (200, "public, max-age=31536000, immutable")
    );
    let (_, health, _) = get(&open, "/health", &[]);
    assert_eq!(control(&health), "no-store");
    assert!(!health.contains_key("etag"));
    // A streamed download is kept, untagged.
    let csv = format!("/api/v1/snapshots/1/stale?days=0&format=csv&path={r}");
    let (status, headers, _) = get(&open, &csv, &[]);
    assert_eq!(status, 200);
    assert_eq!(control(&headers), "public, max-age=31536000, immutable");
    assert!(!headers.contains_key("etag"));
    // Whatever a cache holds of it is current (`*`); no tag can name it.
    let (status, headers, empty) = get(&open, &csv, &[("if-none-match", "*")]);
    assert_eq!((status, empty.len()), (304, 0));
    assert!(!headers.contains_key("content-disposition"));
    let (status, _, _) = get(&open, &csv, &[("if-none-match", "\"x\"")]);
    assert_eq!(status, 200);

    // Errors are never kept, nor tagged: a snapshot not committed yet may be tomorrow.
    for uri in [
        "/api/v1/snapshots/99/children".to_owned(),
        format!("/api/v1/snapshots/1/children?path={r}/nope"),
        "/api/v1/snapshots/1/children?limit=0".to_owned(),
    ] {
        let (status, headers, _) = get(&open, &uri, &[]);
        assert!(status >= 400, "{uri}");
        assert_eq!(control(&headers), "no-store", "{uri}");
        assert!(!headers.contains_key("etag"), "{uri}");
    }

    // With tokens each answer is the token's: private, and varying by Authorization.
    let bearer = format!("Bearer {LEAD}");
    let (status, headers, _) = get(&tokens, &children, &[("authorization", &bearer)]);
    assert_eq!(status, 200);
    assert_eq!(control(&headers), "private, max-age=31536000, immutable");
    assert_eq!(vary(&headers), ["Accept-Encoding", "Authorization"]);
    let (status, headers, _) = get(&tokens, &children, &[]);
    assert_eq!((status, control(&headers).as_str()), (401, "no-store"));
    let (_, access, _) = get(&tokens, "/api/v1/access", &[("authorization", &bearer)]);
    assert_eq!(control(&access), "no-store");
    // The API's document is everyone's, token or not.
    let (_, document, _) = get(&tokens, "/api/v1/openapi.json", &[]);
    assert_eq!(control(&document), "public, no-cache");
    assert_eq!(vary(&document), ["Accept-Encoding"]);
}

#[test]
fn browsers_on_the_allowed_origins_may_call_the_api_and_no_others() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (db, _tree, r) = scanned(&rt, "cors");
    let portal = "https://portal.example.org";
    let access = Access::parse(&format!("lead {LEAD} {r}/team\n")).unwrap();
    let app = storage_tracker_api::app(
        AppState::new(reader(&db))
            .with_access(access)
            .with_cors(Origins::parse(&format!("{portal}, http://127.0.0.1:3000")).unwrap()),
    );
    let children = format!("/api/v1/snapshots/1/children?path={r}/team");
    let bearer = format!("Bearer {LEAD}");

    // The preflight of a GET with a token: allowed, for a day, without a token of its own.
    let preflight = |origin: &str| {
        answer(
            &rt,
            &app,
            ("OPTIONS", &children),
            &[
                ("origin", origin),
                ("access-control-request-method", "GET"),
                ("access-control-request-headers", "authorization"),
            ],
        )
    };
    let (status, headers, body) = preflight(portal);
    assert_eq!((status, body.len()), (204, 0));
    assert_eq!(headers["access-control-allow-origin"], portal);
    assert_eq!(headers["access-control-allow-methods"], "GET, HEAD");
    assert_eq!(
        headers["access-control-allow-headers"],
        "Authorization, If-None-Match"
    );
    assert_eq!(headers["access-control-max-age"], "86400");
    assert!(!headers.contains_key("access-control-allow-credentials"));
    // The request itself: its answer names the origin, and lets the page read the ETag.
    let (status, headers, _) = answer(
        &rt,
        &app,
        ("GET", &children),
        &[("origin", portal), ("authorization", &bearer)],
    );
    assert_eq!(status, 200);
    assert_eq!(headers["access-control-allow-origin"], portal);
    assert_eq!(
        headers["access-control-expose-headers"],
        "ETag, Content-Disposition"
    );
    let vary = values(&headers, "vary");
    assert_eq!(vary, ["Accept-Encoding", "Authorization", "Origin"]);
    // An error to an allowed origin is readable too (the page can show its message).
    let (status, headers, _) = answer(&rt, &app, ("GET", &children), &[("origin", portal)]);
    assert_eq!(status, 401);
    assert_eq!(headers["access-control-allow-origin"], portal);

    // A preflight of another method is refused: the API answers GET and HEAD only.
    let (status, headers, body) = answer(
        &rt,
        &app,
        ("OPTIONS", &children),
        &[
            ("origin", portal),
            ("access-control-request-method", "POST"),
        ],
    );
    assert_eq!(status, 403);
    assert!(!headers.contains_key("access-control-allow-methods"));
    assert_eq!(
        error_of(&body).1,
        "POST is not served here: the API answers GET (and HEAD) only"
    );
    // Without an Origin the answer still varies by it, so that no cache hands a portal the
    // copy made without its header.
    let (status, headers, _) = answer(&rt, &app, ("GET", &children), &[("authorization", &bearer)]);
    assert_eq!(status, 200);
    assert!(!headers.contains_key("access-control-allow-origin"));
    let vary = values(&headers, "vary");
    assert_eq!(vary, ["Accept-Encoding", "Authorization", "Origin"]);

    // Another origin: no preflight, and no header that would let its page read an answer.
    let (status, headers, body) = preflight("https://evil.example.com");
    assert_eq!(status, 403);
    assert!(!headers.contains_key("access-control-allow-origin"));
    assert_eq!(
        error_of(&body),
        (
            "forbidden".to_owned(),
            "the origin https://evil.example.com may not call this API from a browser; the admin allows origins with --cors-origins".to_owned()
        )
    );
    let (status, headers, _) = answer(
        &rt,
        &app,
        ("GET", &children),
        &[
            ("origin", "https://evil.example.com"),
            ("authorization", &bearer),
        ],
    );
    assert_eq!(status, 200);
    assert!(!headers.contains_key("access-control-allow-origin"));
    assert_eq!(
        headers.get_all("vary").iter().next_back().unwrap(),
        "Origin"
    );

    // Without --cors-origins no cross-origin header is ever sent, and OPTIONS is a 405.
    let plain = storage_tracker_api::app(AppState::new(reader(&db)));
    let (status, headers, _) = answer(
        &rt,
        &plain,
        ("OPTIONS", &children),
        &[("origin", portal), ("access-control-request-method", "GET")],
    );
    assert_eq!(status, 405);
    assert!(!headers.contains_key("access-control-allow-origin"));
}

/// gzip's bytes, inflated.
fn gunzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .unwrap();
    out
}

#[test]
fn answers_are_gzip_for_a_client_that_accepts_it_and_tagged_as_such() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (db, tree, r) = scanned(&rt, "gzip");
    for i in 0..40 {
        std::fs::write(tree.path().join(format!("team/file-{i:03}.dat")), b"x").unwrap();
    }
    let aggregator = Aggregator::start(&rt, &db);
    scan(&aggregator, std::path::Path::new(&r));
    let app = storage_tracker_api::app(AppState::new(reader(&db)));
    let gzip = [("accept-encoding", "gzip, br")];

    // A JSON answer: the same document, compressed, with a tag of its own.
    let children = format!("/api/v1/snapshots/2/children?path={r}/team");
    let (status, plain_headers, plain) = answer(&rt, &app, ("GET", &children), &[]);
    assert_eq!(status, 200);
    assert!(plain.len() >= 1024, "{}", plain.len());
    assert!(!plain_headers.contains_key("content-encoding"));
    assert_eq!(values(&plain_headers, "vary"), ["Accept-Encoding"]);
    let (status, headers, zipped) = answer(&rt, &app, ("GET", &children), &gzip);
    assert_eq!(status, 200);
    assert_eq!(headers["content-encoding"], "gzip");
    assert_eq!(headers["content-type"], plain_headers["content-type"]);
    assert!(
        zipped.len() < plain.len() / 2,
        "{} of {}",
        zipped.len(),
        plain.len()
    );
    assert_eq!(gunzip(&zipped), plain);
    assert_ne!(headers["etag"], plain_headers["etag"]);
    let tag = headers["etag"].to_str().unwrap().to_owned();
    let (status, _, empty) = answer(
        &rt,
        &app,
        ("GET", &children),
        &[gzip[0], ("if-none-match", &tag)],
    );
    assert_eq!((status, empty.len()), (304, 0));

    // A small answer is sent as it is; a client that refuses gzip gets none.
    let (_, headers, _) = answer(&rt, &app, ("GET", "/api/v1/snapshots/1"), &gzip);
    assert!(!headers.contains_key("content-encoding"));
    for refused in ["gzip;q=0", "identity", "br"] {
        let (_, headers, body) = answer(
            &rt,
            &app,
            ("GET", &children),
            &[("accept-encoding", refused)],
        );
        assert!(!headers.contains_key("content-encoding"), "{refused}");
        assert_eq!(body, plain, "{refused}");
    }

    // A streamed download: the same rows, compressed as they stream.
    let csv = format!("/api/v1/snapshots/2/stale?days=0&format=csv&path={r}");
    let (status, _, plain_csv) = answer(&rt, &app, ("GET", &csv), &[]);
    assert_eq!(status, 200);
    let (status, headers, zipped_csv) = answer(&rt, &app, ("GET", &csv), &gzip);
    assert_eq!(status, 200);
    assert_eq!(headers["content-encoding"], "gzip");
    assert_eq!(gunzip(&zipped_csv), plain_csv);
    assert_eq!(String::from_utf8(plain_csv).unwrap().lines().count(), 42);
}

#[test]
fn every_nanosecond_time_comes_with_its_iso_string_to_the_nanosecond() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = TestDatabase::new(&rt, "iso_times");
    let aggregator = Aggregator::start(&rt, &db);
    let tree = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(tree.path()).unwrap();
    std::fs::create_dir(root.join("team")).unwrap();
    let file = root.join("team/old.dat");
    std::fs::write(&file, b"data").unwrap();
    // 2001-02-03T04:05:06.789012345Z, past what a double holds to the nanosecond.
    let when = std::time::UNIX_EPOCH + std::time::Duration::new(981_173_106, 789_012_345);
    std::fs::File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .set_times(
            std::fs::FileTimes::new()
                .set_modified(when)
                .set_accessed(when),
        )
        .unwrap();
    scan(&aggregator, &root);
    let app = storage_tracker_api::app(AppState::new(reader(&db)));
    let r = root.to_str().unwrap();
    let json = |uri: &str| -> serde_json::Value {
        let (status, _, body) = answer(&rt, &app, ("GET", uri), &[]);
        assert_eq!(status, 200, "{uri}");
        serde_json::from_slice(&body).unwrap()
    };
    let iso = |ns: &serde_json::Value| {
        storage_tracker_api::timestamp::Iso(ns.as_i64().unwrap()).to_string()
    };

    let children = json(&format!("/api/v1/snapshots/1/children?path={r}/team"));
    let old = &children["children"][0];
    assert_eq!(old["name"], "old.dat");
    assert_eq!(old["mtime_ns"], 981_173_106_789_012_345_i64);
    assert_eq!(old["mtime"], "2001-02-03T04:05:06.789012345Z");
    assert_eq!(old["atime"], "2001-02-03T04:05:06.789012345Z");
    assert_eq!(old["max_mtime"], "2001-02-03T04:05:06.789012345Z");
    let dir = &children["directory"];
    for (ns, text) in [("max_mtime_ns", "max_mtime"), ("max_atime_ns", "max_atime")] {
        assert_eq!(dir[text], iso(&dir[ns]), "{text}");
    }
    let history = json(&format!("/api/v1/history?path={r}/team"));
    let point = &history["points"][0];
    assert_eq!(point["max_mtime"], iso(&point["max_mtime_ns"]));
    let treemap = json(&format!("/api/v1/snapshots/1/treemap?path={r}/team"));
    let tile = &treemap["root"]["children"][0];
    assert_eq!(tile["mtime"], "2001-02-03T04:05:06.789012345Z");
    assert_eq!(treemap["root"]["mtime"], iso(&treemap["root"]["mtime_ns"]));
    // A download gives both too, each time as a column of its own.
    let uri = format!("/api/v1/snapshots/1/stale?days=0&format=csv&path={r}/team");
    let (status, _, csv) = answer(&rt, &app, ("GET", &uri), &[]);
    assert_eq!(status, 200);
    let csv = String::from_utf8(csv).unwrap();
    let mut lines = csv.lines();
    assert_eq!(
        lines.next().unwrap(),
        "path,size,allocated,user,group,uid,gid,mtime_ns,atime_ns,mtime,atime,path_b64"
    );
    let row: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(row[0], format!("\"{r}/team/old.dat\""));
    assert_eq!(
        row[7..=10],
        [
            "981173106789012345",
            "981173106789012345",
            "2001-02-03T04:05:06.789012345Z",
            "2001-02-03T04:05:06.789012345Z"
        ]
    );
}
