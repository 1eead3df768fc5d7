//! The routes of one resource, and the paths they serve: each resource module gives its own,
//! [`crate::routes::app`] merges them, and the OpenAPI document is checked against the paths,
//! so it follows the routers.

use axum::Router;
use axum::handler::Handler;
use axum::routing::get;

use crate::AppState;

/// A resource's routes, and the paths they serve.
#[derive(Debug, Default)]
pub struct Routes {
    pub router: Router<AppState>,
    pub paths: Vec<&'static str>,
}

impl Routes {
    /// `GET path` answered by `handler`.
    pub fn get<H, T>(mut self, path: &'static str, handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        self.router = self.router.route(path, get(handler));
        self.paths.push(path);
        self
    }

    pub fn merge(mut self, other: Routes) -> Self {
        self.router = self.router.merge(other.router);
        self.paths.extend(other.paths);
        self
    }
}
