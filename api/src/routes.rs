//! The router of the whole API: one router per resource, merged in [`app`], behind the access
//! and metrics layers; and the service's own routes (health, this API's description, access).
//! Every list is paged with `limit` (1..=1000, default 100) and `offset`.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use crate::query;
use crate::query::snapshots::Committed;
use crate::resource::Routes;
use crate::{ApiError, AppState};
use storage_tracker_proto::ddl::{DATABASE_VERSION, schema_version_sql};

/// Every route of the API, resource by resource.
pub fn api() -> Routes {
    Routes::default()
        .get("/health", health)
        .get("/api/v1/openapi.json", openapi)
        .get("/api/v1/access", crate::access::describe)
        .merge(crate::snapshots::routes())
        .merge(crate::reports::routes())
        .merge(crate::treemap::routes())
        .merge(crate::search::routes())
        .merge(crate::export::routes())
        .merge(crate::history::routes())
        .merge(crate::duplicates::routes())
        .merge(crate::gauges::routes())
        .merge(crate::console::routes())
}

/// The router of the whole API and the UI.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/", get(crate::ui::serve))
        .route("/assets/{*file}", get(crate::ui::serve))
        .route("/metrics", get(crate::metrics::metrics))
        .merge(api().router)
        .fallback(|uri: axum::http::Uri| async move {
            ApiError::NotFound(format!(
                "no such route: {}; the API's routes are listed in /api/v1/openapi.json",
                uri.path()
            ))
        })
        .method_not_allowed_fallback(crate::conventions::method_not_allowed)
        // Route layers see the matched route; the later one runs first, so refusals by
        // `authorize` are counted too, and a parameter is checked once the caller is known.
        // The fallback (404) needs none.
        .route_layer(axum::middleware::from_fn(
            crate::conventions::refuse_unknown_parameters,
        ))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::access::authorize,
        ))
        // Outside the token check: its refusals are compressed, and never kept.
        .route_layer(axum::middleware::from_fn(crate::compression::compress))
        // Outside the compression (a gzip answer's tag is its own) and inside the metrics
        // (which count a 304 as one).
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::conventions::cache_headers,
        ))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::metrics::record,
        ))
        // Around everything, routes or not: a preflight is answered before any route sees it.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::cors::cross_origin,
        ))
        .with_state(state)
}

async fn openapi() -> Json<serde_json::Value> {
    Json(crate::openapi::document())
}

#[derive(Debug, Serialize)]
struct Health {
    status: &'static str,
    clickhouse: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    problem: Option<String>,
}

/// Ok only when the routes can answer: ClickHouse answers, and the database and its tables
/// are there for the API's user.
async fn health(State(state): State<AppState>) -> (axum::http::StatusCode, Json<Health>) {
    let version = state
        .client
        .query(query::version())
        .fetch_one::<String>()
        .await;
    let tables = match &version {
        Ok(_) => state
            .client
            .query(&query::snapshots::count(
                &state.database,
                Committed::All,
                None,
            ))
            .fetch_one::<u64>()
            .await
            .map(|_| ()),
        Err(_) => Ok(()),
    };
    // A database an older aggregator made lacks tables this API reads.
    let layout = match (&version, &tables) {
        (Ok(_), Ok(())) => state
            .client
            .query(&schema_version_sql(&state.database))
            .fetch_one::<u32>()
            .await
            .ok(),
        _ => None,
    };
    let misread = layout.is_some()
        && state
            .client
            .query(&query::cluster_misread(&state.database))
            .fetch_one::<u8>()
            .await
            .is_ok_and(|misread| misread == 1);
    if let (Ok(version), true) = (&version, misread) {
        return unavailable(
            version.clone(),
            format!(
                "the database {} is on a ClickHouse cluster, and the profile of the API's \
                     user does not set distributed_product_mode to 'global' (deploy/README.md, \
                     \"A ClickHouse cluster\")",
                state.database
            ),
        );
    }
    if let (Ok(version), Some(at)) = (&version, layout)
        && at < DATABASE_VERSION
    {
        return unavailable(
            version.clone(),
            format!(
                "the database {} is at version {at} and this API reads version \
                     {DATABASE_VERSION}: start the storage-aggregator of this release once, \
                     which upgrades it",
                state.database
            ),
        );
    }
    match (version, tables) {
        (Ok(version), Err(e)) => {
            tracing::warn!(
                "health check: the database {} cannot be read: {e}",
                state.database
            );
            // On a cluster, the server asked answers but one of its shards does not.
            let problem = if e.to_string().contains("DB::NetException") {
                format!(
                    "ClickHouse answers, but a server of the cluster the database {} lives on \
                     does not: {}",
                    state.database,
                    first_line(&e.to_string())
                )
            } else {
                format!(
                    "the database {} or its tables cannot be read by the API's user; \
                     has the aggregator created it (storage-aggregator serve)?",
                    state.database
                )
            };
            unavailable(version, problem)
        }
        (Ok(version), Ok(())) => (
            axum::http::StatusCode::OK,
            Json(Health {
                status: "ok",
                clickhouse: version,
                problem: None,
            }),
        ),
        (Err(e), _) => {
            tracing::warn!("health check: ClickHouse unreachable: {e}");
            unavailable("unreachable", "ClickHouse does not answer")
        }
    }
}

/// A health check's 503: what ClickHouse is (its version, or "unreachable") and what is wrong.
fn unavailable(
    clickhouse: impl Into<String>,
    problem: impl Into<String>,
) -> (axum::http::StatusCode, Json<Health>) {
    (
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        Json(Health {
            status: "unavailable",
            clickhouse: clickhouse.into(),
            problem: Some(problem.into()),
        }),
    )
}

/// The first line of a ClickHouse error, without the log of every attempt that follows it.
fn first_line(error: &str) -> &str {
    error
        .lines()
        .next()
        .unwrap_or_default()
        .trim_end_matches(" Log: ")
        .trim_end()
}

#[cfg(test)]
mod tests {
    use super::api;

    /// The paths the API's routers serve.
    fn routed() -> std::collections::BTreeSet<String> {
        api().paths.into_iter().map(str::to_owned).collect()
    }

    #[test]
    fn the_document_names_exactly_the_routes_served() {
        let doc = crate::openapi::document();
        let documented: std::collections::BTreeSet<String> =
            doc["paths"].as_object().unwrap().keys().cloned().collect();
        assert_eq!(documented, routed());
        // Every JSON answer, 200 or error, is one of the document's component schemas (which
        // tests/openapi.rs checks against the real answers).
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (status, response) in item["get"]["responses"].as_object().unwrap() {
                let schema = &response["content"]["application/json"]["schema"];
                if schema.is_null() {
                    continue;
                }
                let name = schema["$ref"]
                    .as_str()
                    .and_then(|r| r.strip_prefix("#/components/schemas/"));
                assert!(
                    name.is_some_and(|n| doc["components"]["schemas"].get(n).is_some()),
                    "{path} {status}: {schema}"
                );
            }
        }
    }
}
