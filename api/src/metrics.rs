//! `GET /metrics`: Prometheus metrics of the API: requests and their latency by route, method
//! and status. Routes are the router's templates (`/api/v1/snapshots/{snapshot_id}/children`),
//! never request paths, so the number of series stays bounded and no path is exposed.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use storage_tracker_proto::metrics::{CONTENT_TYPE, SECONDS_BUCKETS};

use crate::AppState;

/// Counts and times every request.
pub async fn record(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    let labels = [
        ("route", route.as_str()),
        ("method", method.as_str()),
        ("status", status.as_str()),
    ];
    let m = &state.metrics;
    m.inc(
        "storage_tracker_http_requests_total",
        "HTTP requests answered, by route, method and status.",
        &labels,
        1.0,
    );
    m.observe(
        "storage_tracker_http_request_duration_seconds",
        "Time to answer an HTTP request (to its first byte), by route.",
        &[("route", route.as_str())],
        SECONDS_BUCKETS,
        started.elapsed().as_secs_f64(),
    );
    response
}

/// `GET /metrics`.
pub async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        state.metrics.render(),
    )
        .into_response()
}
