//! storage-tracker's HTTP API: committed snapshots and their directory trees as JSON, read
//! through a read-only ClickHouse user. Serves the web UI at `/`.
//!
//! Paths travel as text where they are UTF-8; a path that is not also comes as `path_b64`
//! (standard base64 of the raw bytes), and every endpoint that takes a path accepts either.
//!
//! A request passes through these modules in this order:
//! - [`routes`]: the whole router ([`routes::app`]), the resources' routers merged behind the
//!   [`access`] (tokens and their scopes) and [`metrics`] layers; health and the API's
//!   description ([`openapi`]). [`resource`] is the type each resource's routes come in.
//! - [`extract`]: the one way into a snapshot: a committed snapshot, directory or entry that
//!   the caller may read, already checked, after the route's query parameters
//!   ([`extract::Checked`]: a bad parameter is a 400 before the snapshot is looked up);
//!   [`params`] and [`paths`] read query parameters and paths; [`pattern`] checks a search
//!   pattern and folds its case.
//! - The resources: [`snapshots`] (the list, one, children), [`reports`] (an entry, top,
//!   usage, histograms, stale data), [`treemap`], [`search`], [`history`] (history and growth),
//!   [`export`] (ncdu) and [`duplicates`] (duplicate files and the bytes they waste). They ask
//!   [`query`] for their statements and write no SQL.
//! - [`query`]: every statement the API reads with, and their rows, one module per part:
//!   - [`query::snapshots`]: the committed-snapshot condition ([`query::snapshots::Committed`])
//!     and the statements on `snapshots`;
//!   - [`query::entries`]: which entries ([`query::entries::EntryFilter`]: text match, size,
//!     owner, group, type, times, under a directory, at given paths), a page of them, the pages
//!     of a download, the ncdu export;
//!   - [`query::tree`]: entries joined with their trees' totals (one join, for children, one
//!     entry and a treemap's levels), a directory's rollup, the largest directories;
//!   - [`query::reports`]: usage by owner and by type, histograms, owners' names;
//!   - [`query::duplicates`]: the duplicate files report: groups by status, their links, wasted
//!     bytes per directory and owner;
//!   - [`query::growth`]: a directory's history, growth per child and per owner;
//!   - [`query::treemap`]: a treemap's tiles and totals.
//! - [`listing`]: lists of entries as every list route answers them; [`stream`]: bodies
//!   streamed from a task, and why one is cut short; [`error`]: the one error type and how it
//!   answers.
//! - [`gauges`]: the latest snapshot of each filesystem as Prometheus gauges, for Grafana
//!   and alert rules.
//! - [`categories`]: file types grouped into categories (a configuration file, or the
//!   default), for the categories report and the treemap's colours.
//! - [`ui`]: the built web UI, served from memory.

pub mod access;
pub mod categories;
pub mod compression;
pub mod console;
pub mod conventions;
pub mod cors;
pub mod duplicates;
pub mod error;
pub mod export;
pub mod extract;
pub mod gauges;
pub mod history;
pub mod listing;
pub mod metrics;
pub mod openapi;
pub mod params;
pub mod paths;
pub mod pattern;
pub mod query;
pub mod reports;
pub mod resource;
pub mod routes;
pub mod search;
pub mod snapshots;
pub mod stream;
pub mod timestamp;
pub mod treemap;
pub mod ui;

use clickhouse::Client;
use storage_tracker_proto::ddl::Database;

pub use error::ApiError;
pub use routes::app;

/// Where and as whom the API reads. The user should be read-only (`readonly=1` profile).
#[derive(Debug, Clone)]
pub struct ReadConfig {
    pub url: String,
    pub user: String,
    pub password: String,
    pub database: Database,
}

/// Shared state of every request.
#[derive(Debug, Clone)]
pub struct AppState {
    pub client: Client,
    pub database: Database,
    pub access: std::sync::Arc<access::Access>,
    /// The built web UI served at `/` (empty: `/` says how to build it).
    pub ui: std::sync::Arc<ui::UiFiles>,
    /// Requests and their latency by route, served at `/metrics`.
    pub metrics: std::sync::Arc<storage_tracker_proto::metrics::Metrics>,
    /// The web origins that may call the API from a browser ([`cors`]).
    pub cors: std::sync::Arc<cors::Origins>,
    /// The file categories of the categories report and the treemap's colours.
    pub categories: std::sync::Arc<categories::Categories>,
    /// The usage gauges for Prometheus last computed ([`gauges`]).
    pub gauges: std::sync::Arc<gauges::Cache>,
    /// Series per family and filesystem of the usage gauges.
    pub metrics_series: usize,
    /// About how many entries a window of a download reads at most
    /// ([`query::windows::WINDOW_ENTRIES`]).
    pub window_entries: u64,
    /// Whether the snapshot tables are a cluster's `Distributed` tables, once known
    /// ([`AppState::distributed`]).
    distributed: std::sync::Arc<tokio::sync::OnceCell<bool>>,
}

impl AppState {
    pub fn new(config: ReadConfig) -> Self {
        let client = Client::default()
            .with_url(config.url)
            .with_user(config.user)
            .with_password(config.password)
            .with_validation(false);
        Self {
            client,
            database: config.database,
            access: std::sync::Arc::new(access::Access::open()),
            ui: std::sync::Arc::new(ui::UiFiles::none()),
            metrics: Default::default(),
            cors: Default::default(),
            categories: Default::default(),
            gauges: Default::default(),
            metrics_series: gauges::DEFAULT_SERIES,
            window_entries: query::windows::WINDOW_ENTRIES,
            distributed: Default::default(),
        }
    }

    /// Whether the snapshot tables are a cluster's `Distributed` tables: asked once, when the
    /// database has them (a database keeps its layout; a change of it is a restart of the API).
    pub(crate) async fn distributed(&self) -> Result<bool, ApiError> {
        if let Some(known) = self.distributed.get() {
            return Ok(*known);
        }
        let sql = query::entries_distributed(&self.database);
        let found: Option<u8> = self.client.query(&sql).fetch_optional().await?;
        Ok(match found {
            Some(distributed) => {
                *self
                    .distributed
                    .get_or_init(|| async { distributed == 1 })
                    .await
            }
            // No tables yet: a page of them is empty, and its total counted.
            None => true,
        })
    }

    /// Downloads read windows of about `entries` entries (tests cut small trees this way).
    pub fn with_window_entries(mut self, entries: u64) -> Self {
        self.window_entries = entries.max(1);
        self
    }

    /// Serving this built UI at `/`.
    pub fn with_ui(mut self, ui: ui::UiFiles) -> Self {
        self.ui = std::sync::Arc::new(ui);
        self
    }

    /// Allowing these origins to call the API from a browser.
    pub fn with_cors(mut self, origins: cors::Origins) -> Self {
        self.cors = std::sync::Arc::new(origins);
        self
    }

    /// At most `series` series per family and filesystem in the usage gauges.
    pub fn with_metrics_series(mut self, series: usize) -> Self {
        self.metrics_series = series.max(1);
        self
    }

    /// Grouping file types into these categories.
    pub fn with_categories(mut self, categories: categories::Categories) -> Self {
        self.categories = std::sync::Arc::new(categories);
        self
    }

    /// With these tokens required (see [`access`]).
    pub fn with_access(mut self, access: access::Access) -> Self {
        self.access = std::sync::Arc::new(access);
        self
    }
}
