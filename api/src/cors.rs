//! Cross-origin requests: which web origins (a portal's pages) may call the API from a
//! browser. None by default: the API's own UI is served from the same origin and needs none.
//!
//! An allowed origin's requests are answered with `Access-Control-Allow-Origin` naming it (and
//! `Vary: Origin`), and its JavaScript may read the `ETag` and `Content-Disposition` headers. A
//! preflight (`OPTIONS` with `Access-Control-Request-Method`) from it is answered 204 for
//! `GET` and `HEAD` with the `Authorization` and `If-None-Match` headers, kept a day; a
//! preflight from another origin is a 403 in the error shape. Tokens travel in the
//! `Authorization` header, never in cookies, so no origin is given credentials.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::{ApiError, AppState};

/// The origins allowed to call the API from a browser.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Origins {
    /// None (the default): no cross-origin headers are sent.
    #[default]
    None,
    /// Any origin (`*`).
    Any,
    /// These, exactly as a browser sends them (`https://portal.example.org:8443`).
    Listed(Vec<String>),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OriginError {
    #[error(
        "{0:?} is not an origin: give scheme://host[:port] with no path (e.g. https://portal.example.org), or * for any"
    )]
    Malformed(String),
    #[error("* allows every origin: give it alone, not with {0:?}")]
    AnyWithOthers(String),
}

impl Origins {
    /// Reads a list of origins, comma- or space-separated (`--cors-origins`).
    pub fn parse(list: &str) -> Result<Self, OriginError> {
        let given: Vec<&str> = list
            .split([',', ' '])
            .map(str::trim)
            .filter(|o| !o.is_empty())
            .collect();
        if given.is_empty() {
            return Ok(Self::None);
        }
        if given.contains(&"*") {
            return match given.iter().find(|o| **o != "*") {
                Some(other) => Err(OriginError::AnyWithOthers((*other).to_owned())),
                None => Ok(Self::Any),
            };
        }
        let mut origins = Vec::new();
        for origin in given {
            if !is_origin(origin) {
                return Err(OriginError::Malformed(origin.to_owned()));
            }
            // Browsers send the scheme and host in lowercase.
            origins.push(origin.to_ascii_lowercase());
        }
        Ok(Self::Listed(origins))
    }

    /// The `Access-Control-Allow-Origin` for a request from `origin`, if it is allowed.
    fn allow(&self, origin: &str) -> Option<HeaderValue> {
        match self {
            Self::None => None,
            Self::Any => Some(HeaderValue::from_static("*")),
            Self::Listed(origins) => origins
                .iter()
                .any(|o| o.eq_ignore_ascii_case(origin))
                .then(|| HeaderValue::from_str(origin).ok())
                .flatten(),
        }
    }
}

/// `http(s)://host[:port]`: what a browser sends as `Origin`.
fn is_origin(origin: &str) -> bool {
    let Some((scheme, rest)) = origin.split_once("://") else {
        return false;
    };
    let (host, port) = match rest.rsplit_once(':') {
        // An IPv6 literal holds colons inside its brackets.
        Some((host, port)) if !port.contains(']') => (host, Some(port)),
        _ => (rest, None),
    };
    matches!(scheme, "http" | "https")
        && !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-[]:".contains(&b))
        && port.is_none_or(|p| !p.is_empty() && p.parse::<u16>().is_ok())
}

/// Every answer varies by `Origin` once origins are allowed: what a cache keeps of one must not
/// serve an origin that would have had other headers.
fn varies(headers: &mut HeaderMap) {
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
}

/// The headers of an answer to an allowed origin.
fn allowed(headers: &mut HeaderMap, allow: HeaderValue) {
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow);
    varies(headers);
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("ETag, Content-Disposition"),
    );
}

/// Answers preflights and marks the answers of allowed origins (the layer around every route).
pub async fn cross_origin(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let origins: &Origins = &state.cors;
    let origin = request
        .headers()
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .map(str::to_owned);
    if *origins == Origins::None {
        return next.run(request).await;
    }
    let Some(origin) = origin else {
        let mut response = next.run(request).await;
        varies(response.headers_mut());
        return response;
    };
    let allow = origins.allow(&origin);
    let preflight = request.method() == Method::OPTIONS
        && request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    if preflight {
        let method = request
            .headers()
            .get(header::ACCESS_CONTROL_REQUEST_METHOD)
            .and_then(|m| m.to_str().ok())
            .unwrap_or_default();
        let refused = match allow {
            None => Some(format!(
                "the origin {origin} may not call this API from a browser; the admin allows origins with --cors-origins"
            )),
            Some(_) if !matches!(method, "GET" | "HEAD") => Some(format!(
                "{method} is not served here: the API answers GET (and HEAD) only"
            )),
            Some(_) => None,
        };
        let Some(allow) = allow.filter(|_| refused.is_none()) else {
            let mut response = ApiError::Forbidden(refused.unwrap_or_default()).into_response();
            varies(response.headers_mut());
            return response;
        };
        let mut response = StatusCode::NO_CONTENT.into_response();
        let headers = response.headers_mut();
        allowed(headers, allow);
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, HEAD"),
        );
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("Authorization, If-None-Match"),
        );
        headers.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("86400"),
        );
        return response;
    }
    let mut response = next.run(request).await;
    match allow {
        Some(allow) => allowed(response.headers_mut(), allow),
        None => varies(response.headers_mut()),
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_read_checked_and_matched() {
        assert_eq!(Origins::parse(""), Ok(Origins::None));
        assert_eq!(Origins::parse(" * "), Ok(Origins::Any));
        assert_eq!(
            Origins::parse("https://Portal.example.org, http://127.0.0.1:3000 http://[::1]:8080"),
            Ok(Origins::Listed(vec![
                "https://portal.example.org".into(),
                "http://127.0.0.1:3000".into(),
                "http://[::1]:8080".into()
            ]))
        );
        for bad in [
            "portal.example.org",
            "https://portal.example.org/",
            "https://portal.example.org/app",
            "ftp://x",
            "https://",
            "https://x:99999",
            "https://x:",
        ] {
            assert_eq!(
                Origins::parse(bad),
                Err(OriginError::Malformed(bad.into())),
                "{bad}"
            );
        }
        assert_eq!(
            Origins::parse("*,https://a.org"),
            Err(OriginError::AnyWithOthers("https://a.org".into()))
        );
        let listed = Origins::parse("https://a.org").unwrap();
        assert_eq!(
            listed.allow("https://A.org"),
            Some(HeaderValue::from_static("https://A.org"))
        );
        assert_eq!(listed.allow("https://b.org"), None);
        assert_eq!(Origins::None.allow("https://a.org"), None);
        assert_eq!(
            Origins::Any.allow("https://b.org"),
            Some(HeaderValue::from_static("*"))
        );
    }
}
