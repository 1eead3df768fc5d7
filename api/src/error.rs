//! The API's one error type. A 4xx says exactly what was wrong with the request; a 5xx says
//! only what failed, and the details go to the log.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    /// A query stopped by the read-only user's limits.
    #[error("{0}")]
    Limited(String),
    /// The API could not answer for a reason of its own (not ClickHouse's).
    #[error("{0}")]
    Unavailable(String),
    #[error("the database is unavailable")]
    Database(#[source] clickhouse::error::Error),
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, kind) = match &self {
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Self::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            Self::Limited(_) => (StatusCode::SERVICE_UNAVAILABLE, "limited"),
            Self::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            Self::Database(e) => {
                tracing::error!(
                    "ClickHouse query failed: {}",
                    storage_tracker_proto::service::error_chain(e)
                );
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
            }
        };
        // An error is never kept: what is missing or refused now may be there tomorrow.
        (
            status,
            [(axum::http::header::CACHE_CONTROL, "no-store")],
            Json(ErrorBody {
                error: kind,
                message: self.to_string(),
            }),
        )
            .into_response()
    }
}

/// The read-only profile's limit that a ClickHouse error code says a query went over, if any:
/// TIMEOUT_EXCEEDED, TOO_MANY_ROWS and TOO_MANY_ROWS_OR_BYTES, MEMORY_LIMIT_EXCEEDED.
pub(crate) fn limit_of(code: u32) -> Option<&'static str> {
    match code {
        159 => Some("time (max_execution_time)"),
        241 => Some("memory (max_memory_usage)"),
        158 | 396 => Some("rows (max_result_rows, max_rows_to_read)"),
        _ => None,
    }
}

/// The error code of a ClickHouse exception ("Code: 427, e.displayText() = ..." on 18.16,
/// "Code: 427. DB::Exception: ..." on current releases).
pub(crate) fn exception_code(text: &str) -> Option<u32> {
    let rest = &text[text.find("Code: ")? + "Code: ".len()..];
    let digits = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..digits].parse().ok()
}

impl From<clickhouse::error::Error> for ApiError {
    /// A pattern that passed our own check but that ClickHouse's RE2 refuses is the request's
    /// fault, not the database's: a 400 with RE2's reason. A query stopped by the read-only
    /// user's limits says which limit, so the caller can narrow it.
    fn from(e: clickhouse::error::Error) -> Self {
        let clickhouse::error::Error::BadResponse(text) = &e else {
            return Self::Database(e);
        };
        match exception_code(text) {
            // CANNOT_COMPILE_REGEXP
            Some(427) => {
                let reason = text
                    .split_once("error: ")
                    .map(|(_, r)| r.split(". Look at").next().unwrap_or(r).trim())
                    .unwrap_or("refused by RE2");
                Self::BadRequest(format!(
                    "q is not a regular expression that ClickHouse's engine (RE2) accepts: {reason} \
                     (see https://github.com/google/re2/wiki/Syntax)"
                ))
            }
            Some(code) => match limit_of(code) {
                Some(limit) => {
                    tracing::warn!("a query hit the read-only user's limits: {text}");
                    Self::Limited(format!(
                        "the query went over the API's {limit} limit; narrow it (a deeper path=, \
                         more filters, a smaller page) or ask the admin to raise the read-only \
                         profile's limits"
                    ))
                }
                None => Self::Database(e),
            },
            None => Self::Database(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exception_codes_are_read_from_both_versions_messages() {
        assert_eq!(
            exception_code("Code: 427, e.displayText() = DB::Exception: x"),
            Some(427)
        );
        assert_eq!(
            exception_code("bad response: Code: 159. DB::Exception: Timeout"),
            Some(159)
        );
        assert_eq!(exception_code("no code here"), None);
        let e = ApiError::from(clickhouse::error::Error::BadResponse(
            "Code: 427, e.displayText() = DB::Exception: OptimizedRegularExpression: cannot compile re2: a{1001}, error: invalid repetition size: {1001}. Look at https://github.com/google/re2/wiki/Syntax for reference.".into(),
        ));
        assert!(
            matches!(&e, ApiError::BadRequest(m) if m.contains("invalid repetition size: {1001}")),
            "{e}"
        );
        let e = ApiError::from(clickhouse::error::Error::BadResponse(
            "Code: 159. DB::Exception: Timeout exceeded: elapsed 30.1 seconds".into(),
        ));
        assert!(
            matches!(&e, ApiError::Limited(m) if m.contains("max_execution_time")),
            "{e}"
        );
    }
}
