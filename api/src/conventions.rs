//! What every route of the API does alike, whatever it answers: a query parameter the route
//! does not take is refused, and a method other than `GET` is answered in the error shape of
//! every other error.
//!
//! A route's parameters are those the OpenAPI document ([`crate::openapi`]) gives it, so the
//! document and the check cannot disagree: a parameter added to a route and not to the
//! document is refused, and the tests that call every route with its documented parameters
//! fail.

use std::collections::HashMap;
use std::sync::LazyLock;

use axum::extract::{MatchedPath, Query, Request};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::ApiError;

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

/// The parameters of `query` that `known` does not hold, decoded, each once, in order.
fn unknown_parameters(query: &str, known: &[String]) -> Vec<String> {
    let Ok(uri) = format!("/?{query}").parse() else {
        return Vec::new();
    };
    let Ok(Query(pairs)) = Query::<Vec<(String, String)>>::try_from_uri(&uri) else {
        return Vec::new();
    };
    let mut unknown: Vec<String> = Vec::new();
    for (name, _) in pairs {
        if !known.contains(&name) && !unknown.contains(&name) {
            unknown.push(name);
        }
    }
    unknown
}

/// Refuses a request to a documented route that carries a query parameter the route does not
/// take: a 400 naming it and the route's parameters (a misspelt `min_size` would otherwise be
/// ignored, and the answer would look right).
pub async fn refuse_unknown_parameters(request: Request, next: Next) -> Response {
    let known = request
        .extensions()
        .get::<MatchedPath>()
        .and_then(|route| Some((route.as_str().to_owned(), PARAMETERS.get(route.as_str())?)));
    if let (Some((route, known)), Some(query)) = (known, request.uri().query()) {
        let unknown = unknown_parameters(query, known);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_read_decoded_and_checked_by_name() {
        let known = ["path".to_owned(), "min_size".to_owned()];
        let none: Vec<String> = Vec::new();
        assert_eq!(unknown_parameters("path=%2Fa&min_size=1", &known), none);
        assert_eq!(
            unknown_parameters("path=/a&minsize=1&minsize=2&x=1", &known),
            ["minsize", "x"]
        );
        assert_eq!(unknown_parameters("min%5Fsize=1&x+y=2", &known), ["x y"]);
        assert_eq!(unknown_parameters("", &known), none);
        assert_eq!(unknown_parameters("path", &known), none);
    }

    #[test]
    fn every_documented_route_has_its_parameters() {
        assert!(PARAMETERS["/api/v1/snapshots/{snapshot_id}/search"].contains(&"q".to_owned()));
        assert!(PARAMETERS["/health"].is_empty());
    }
}
