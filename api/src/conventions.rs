//! What every route of the API does alike, whatever it answers: a query parameter the route
//! does not take is refused, a method other than `GET` is answered in the error shape of every
//! other error, and every answer says how long it may be kept ([`cache_headers`]).
//!
//! A route's parameters are those the OpenAPI document ([`crate::openapi`]) gives it, so the
//! document and the check cannot disagree: a parameter added to a route and not to the
//! document is refused, and the tests that call every route with its documented parameters
//! fail.

use std::collections::HashMap;
use std::sync::LazyLock;

use axum::body::Body;
use axum::extract::{MatchedPath, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::{ApiError, AppState};

/// Each documented route's query parameters, by route template.
static PARAMETERS: LazyLock<HashMap<String, Vec<String>>> = LazyLock::new(|| {
    let document = crate::openapi::document();
    let Some(paths) = document["paths"].as_object() else {
        return HashMap::new();
    };
    paths
        .iter()
        .map(|(route, item)| {
            let names = item["get"]["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["in"] == "query")
                .filter_map(|p| p["name"].as_str().map(str::to_owned))
                .collect();
            (route.clone(), names)
        })
        .collect()
});

/// The parameters of `query`, decoded, in order.
fn parameters(query: &str) -> Vec<(String, String)> {
    let Ok(uri) = format!("/?{query}").parse() else {
        return Vec::new();
    };
    Query::<Vec<(String, String)>>::try_from_uri(&uri)
        .map(|Query(pairs)| pairs)
        .unwrap_or_default()
}

/// The parameters among `pairs` that `known` does not hold, each once, in order.
fn unknown_parameters(pairs: &[(String, String)], known: &[String]) -> Vec<String> {
    let mut unknown: Vec<String> = Vec::new();
    for (name, _) in pairs {
        if !known.contains(name) && !unknown.contains(name) {
            unknown.push(name.clone());
        }
    }
    unknown
}

/// The first parameter among `pairs` given more than once, with its values.
fn repeated_parameter(pairs: &[(String, String)]) -> Option<(String, Vec<String>)> {
    let (name, _) = pairs
        .iter()
        .enumerate()
        .find(|(i, (name, _))| pairs[..*i].iter().any(|(n, _)| n == name))
        .map(|(_, pair)| pair)?;
    let values = pairs
        .iter()
        .filter(|(n, _)| n == name)
        .map(|(_, v)| v.clone())
        .collect();
    Some((name.clone(), values))
}

/// Refuses a request to a documented route that carries a query parameter the route does not
/// take: a 400 naming it and the route's parameters (a misspelt `min_size` would otherwise be
/// ignored, and the answer would look right); and one that gives a parameter twice. `/health`,
/// which load balancers and probes call, takes any.
pub async fn refuse_unknown_parameters(request: Request, next: Next) -> Response {
    let known = request
        .extensions()
        .get::<MatchedPath>()
        .filter(|route| route.as_str() != "/health")
        .and_then(|route| Some((route.as_str().to_owned(), PARAMETERS.get(route.as_str())?)));
    if let (Some((route, known)), Some(query)) = (known, request.uri().query()) {
        let pairs = parameters(query);
        let unknown = unknown_parameters(&pairs, known);
        if !unknown.is_empty() {
            let names: Vec<String> = unknown.iter().map(|n| format!("{n:?}")).collect();
            let plural = if unknown.len() > 1 { "s" } else { "" };
            let takes = if known.is_empty() {
                "it takes no parameters".to_owned()
            } else {
                format!("it takes {}", known.join(", "))
            };
            return ApiError::BadRequest(format!(
                "unknown parameter{plural} {} for {route}: {takes} (see /api/v1/openapi.json)",
                names.join(", ")
            ))
            .into_response();
        }
        if let Some((name, values)) = repeated_parameter(&pairs) {
            let values: Vec<String> = values.iter().map(|v| format!("{v:?}")).collect();
            return ApiError::BadRequest(format!(
                "{name} is given {} times ({}): give it once",
                values.len(),
                values.join(", ")
            ))
            .into_response();
        }
    }
    next.run(request).await
}

/// The answer to a method a route does not serve: 405 with `Allow`, in the error shape.
pub async fn method_not_allowed(method: Method) -> Response {
    let mut response = ApiError::MethodNotAllowed(format!(
        "{method} is not served here: the API answers GET (and HEAD) only"
    ))
    .into_response();
    response
        .headers_mut()
        .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
    response
}

/// How long an answer may be kept by the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Freshness {
    /// For good: what a committed snapshot holds never changes.
    Forever,
    /// Kept, but asked again each time (`If-None-Match` makes the answer a 304 when it is the
    /// same): lists that grow as snapshots commit, and the API's document.
    Revalidate,
    /// Never kept: health, and what a token may read.
    Never,
}

fn freshness(route: &str) -> Option<Freshness> {
    match route {
        // An admin's statement may read anything the read-only user can, the system tables
        // too: its answer is not kept.
        "/health" | "/api/v1/access" | "/api/v1/console" => Some(Freshness::Never),
        // What a committed snapshot's answers hold beside its rows: the duplicates report
        // changes as its candidates are hashed, and usage and treemaps name each type's
        // category, which the API's configuration sets; the console's presets come with the
        // release.
        "/api/v1/snapshots/{snapshot_id}/console/presets"
        | "/api/v1/snapshots/{snapshot_id}/duplicates"
        | "/api/v1/snapshots/{snapshot_id}/duplicates/wasted"
        | "/api/v1/snapshots/{snapshot_id}/usage"
        | "/api/v1/snapshots/{snapshot_id}/treemap" => Some(Freshness::Revalidate),
        // Growth compares two committed snapshots: it never changes either.
        r if r.starts_with("/api/v1/snapshots/{snapshot_id}")
            || r.starts_with("/api/v1/growth") =>
        {
            Some(Freshness::Forever)
        }
        r if r.starts_with("/api/") => Some(Freshness::Revalidate),
        // The UI's files and /metrics keep their own headers.
        _ => None,
    }
}

/// All of an answer's body, which a layer reads to `why` it (tag, compress); an answer that
/// cannot be read becomes a 503.
pub(crate) async fn whole(body: Body, why: &str) -> Result<axum::body::Bytes, Response> {
    axum::body::to_bytes(body, usize::MAX).await.map_err(|e| {
        tracing::error!("an answer could not be read to {why} it: {e}");
        ApiError::Unavailable("the answer could not be read; ask again".into()).into_response()
    })
}

/// The entity tag of a body: a 64-bit FNV-1a hash of its bytes, quoted.
fn entity_tag(body: &[u8]) -> String {
    let hash = body.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("\"{hash:016x}\"")
}

/// Whether `If-None-Match` names `tag` (or `*`, any tag: `tag` of `None`, an answer that has
/// none, matches nothing else), weakly compared as RFC 9110 asks.
fn none_match(request: &HeaderMap, tag: Option<&str>) -> bool {
    request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|t| t == "*" || Some(t.strip_prefix("W/").unwrap_or(t)) == tag)
}

/// An answer of 304 with no body, in place of `parts`' own.
fn not_modified(mut parts: axum::http::response::Parts) -> Response {
    parts.status = StatusCode::NOT_MODIFIED;
    parts.headers.remove(header::CONTENT_TYPE);
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.remove(header::CONTENT_ENCODING);
    parts.headers.remove(header::CONTENT_DISPOSITION);
    Response::from_parts(parts, Body::empty())
}

/// Says how long each answer of the API may be kept. A 200 about one committed snapshot
/// (everything under `/api/v1/snapshots/{snapshot_id}`) or two (growth) is kept for good
/// (`max-age` of a year, `immutable`); the lists that grow, and the API's document, are kept
/// and asked again (`no-cache`); errors, health and the caller's access are never kept
/// (`no-store`). With tokens the answers depend on the token, so they are `private` (no shared
/// cache keeps them) and vary by `Authorization`; the document is everyone's.
/// A JSON answer carries an `ETag`, and a request whose `If-None-Match` names it is answered
/// 304 with no body; streamed downloads (CSV, ncdu) carry none, since their bytes are not
/// known before they are sent (`If-None-Match: *`, whatever is there, makes them a 304 too).
pub async fn cache_headers(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let fresh = request
        .extensions()
        .get::<MatchedPath>()
        .and_then(|route| freshness(route.as_str()));
    let Some(fresh) = fresh else {
        return next.run(request).await;
    };
    let asked = request.headers().clone();
    // The document of the API is the same for every caller, token or not.
    let public = state.access.is_open() || request.uri().path() == "/api/v1/openapi.json";
    let mut response = next.run(request).await;
    let control = match fresh {
        _ if response.status() != StatusCode::OK => "no-store",
        Freshness::Never => "no-store",
        Freshness::Forever if public => "public, max-age=31536000, immutable",
        Freshness::Forever => "private, max-age=31536000, immutable",
        Freshness::Revalidate if public => "public, no-cache",
        Freshness::Revalidate => "private, no-cache",
    };
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(control));
    if !public {
        headers.append(header::VARY, HeaderValue::from_static("Authorization"));
    }
    let json = headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|t| t.as_bytes().starts_with(b"application/json"));
    if control == "no-store" {
        return response;
    }
    if !json {
        return if none_match(&asked, None) {
            not_modified(response.into_parts().0)
        } else {
            response
        };
    }
    let (mut parts, body) = response.into_parts();
    let bytes = match whole(body, "tag").await {
        Ok(bytes) => bytes,
        Err(refused) => return refused,
    };
    let tag = entity_tag(&bytes);
    parts.headers.insert(
        header::ETAG,
        HeaderValue::from_str(&tag).expect("hex digits in quotes"),
    );
    if none_match(&asked, Some(&tag)) {
        return not_modified(parts);
    }
    Response::from_parts(parts, Body::from(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_read_decoded_and_checked_by_name() {
        let known = ["path".to_owned(), "min_size".to_owned()];
        let none: Vec<String> = Vec::new();
        assert_eq!(
            unknown_parameters(&parameters("path=%2Fa&min_size=1"), &known),
            none
        );
        assert_eq!(
            unknown_parameters(&parameters("path=/a&minsize=1&minsize=2&x=1"), &known),
            ["minsize", "x"]
        );
        assert_eq!(
            unknown_parameters(&parameters("min%5Fsize=1&x+y=2"), &known),
            ["x y"]
        );
        assert_eq!(unknown_parameters(&parameters(""), &known), none);
        assert_eq!(unknown_parameters(&parameters("path"), &known), none);
        assert_eq!(repeated_parameter(&parameters("path=/a&min_size=1")), None);
        assert_eq!(
            repeated_parameter(&parameters("days=1&x=2&d%61ys=3")),
            Some(("days".into(), vec!["1".into(), "3".into()]))
        );
    }

    #[test]
    fn tags_are_quoted_hashes_matched_weakly_or_by_star() {
        let tag = entity_tag(b"{}");
        assert_eq!(tag.len(), 18);
        assert_ne!(tag, entity_tag(b"{ }"));
        let asked = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::IF_NONE_MATCH, HeaderValue::from_str(v).unwrap());
            h
        };
        let (weak, strong) = (format!("\"x\", W/{tag}"), asked(&tag));
        let tag = Some(tag.as_str());
        assert!(none_match(&strong, tag));
        assert!(none_match(&asked(&weak), tag));
        assert!(none_match(&asked("*"), tag));
        assert!(!none_match(&asked("\"x\""), tag));
        assert!(!none_match(&HeaderMap::new(), tag));
        // An answer without a tag (a download) matches `*` alone.
        assert!(none_match(&asked("*"), None));
        assert!(!none_match(&asked("\"x\", W/\"\""), None));
    }

    #[test]
    fn a_snapshot_is_kept_for_good_and_lists_are_asked_again() {
        assert_eq!(
            freshness("/api/v1/snapshots/{snapshot_id}/children"),
            Some(Freshness::Forever)
        );
        assert_eq!(freshness("/api/v1/snapshots"), Some(Freshness::Revalidate));
        assert_eq!(freshness("/api/v1/console"), Some(Freshness::Never));
        for changing in [
            "duplicates",
            "duplicates/wasted",
            "usage",
            "treemap",
            "console/presets",
        ] {
            assert_eq!(
                freshness(&format!("/api/v1/snapshots/{{snapshot_id}}/{changing}")),
                Some(Freshness::Revalidate),
                "{changing}"
            );
        }
        assert_eq!(freshness("/api/v1/history"), Some(Freshness::Revalidate));
        assert_eq!(freshness("/api/v1/growth/owners"), Some(Freshness::Forever));
        assert_eq!(freshness("/health"), Some(Freshness::Never));
        assert_eq!(freshness("/api/v1/access"), Some(Freshness::Never));
        assert_eq!(freshness("/assets/{*file}"), None);
    }

    #[test]
    fn every_documented_route_has_its_parameters() {
        assert!(PARAMETERS["/api/v1/snapshots/{snapshot_id}/search"].contains(&"q".to_owned()));
        assert!(PARAMETERS["/health"].is_empty());
    }
}
