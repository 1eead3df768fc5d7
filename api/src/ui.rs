//! The web UI's static files (`ui/dist`, built by `npm run build` in `ui/`), read into memory
//! once at start: a few hundred KiB, served without touching the disk again, and no request
//! path ever reaches the filesystem.
//!
//! Every response carries a Content Security Policy that allows only the UI's own scripts,
//! styles and workers, so a file name that looks like HTML can never run as code even if a
//! rendering bug let it into the page.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, bail};
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

use crate::AppState;

/// Files larger than this are not part of a built UI.
const MAX_FILE_BYTES: u64 = 16 << 20;
/// Nor are more files than this.
const MAX_FILES: usize = 256;

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; worker-src 'self'; font-src 'self'; manifest-src 'self'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

#[derive(Debug, Clone)]
struct File {
    body: Bytes,
    content_type: &'static str,
}

/// The built UI, by URL path (`/index.html`, `/assets/index-3f2a.js`, ...).
#[derive(Debug, Default)]
pub struct UiFiles {
    files: HashMap<String, File>,
}

impl UiFiles {
    /// No UI: `/` explains how to build and install it.
    pub fn none() -> Self {
        Self::default()
    }

    /// Reads a built UI directory; it must hold `index.html`.
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        let mut files = HashMap::new();
        let mut pending = vec![(dir.to_path_buf(), String::new())];
        while let Some((on_disk, url)) = pending.pop() {
            let listing = std::fs::read_dir(&on_disk)
                .with_context(|| format!("reading the UI directory {}", on_disk.display()))?;
            for entry in listing {
                let entry = entry.with_context(|| format!("listing {}", on_disk.display()))?;
                let name = entry.file_name();
                let Some(name) = name.to_str() else {
                    bail!(
                        "{}: a UI file name that is not UTF-8",
                        entry.path().display()
                    );
                };
                let url = format!("{url}/{name}");
                let kind = entry.file_type()?;
                if kind.is_dir() {
                    pending.push((entry.path(), url));
                    continue;
                }
                let meta = std::fs::metadata(entry.path())?;
                if meta.len() > MAX_FILE_BYTES || files.len() >= MAX_FILES {
                    bail!(
                        "{} does not look like a built UI (a file over {} MiB, or more than {MAX_FILES} files); \
                         pass the `dist` directory that `npm run build` makes in ui/",
                        dir.display(),
                        MAX_FILE_BYTES >> 20
                    );
                }
                let body = std::fs::read(entry.path())
                    .with_context(|| format!("reading {}", entry.path().display()))?;
                files.insert(
                    url,
                    File {
                        body: body.into(),
                        content_type: content_type(name),
                    },
                );
            }
        }
        if !files.contains_key("/index.html") {
            bail!(
                "{} has no index.html: build the UI first (cd ui && npm ci && npm run build) and pass ui/dist",
                dir.display()
            );
        }
        Ok(Self { files })
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }
}

fn content_type(name: &str) -> &'static str {
    match name.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json" | "map") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("woff2") => "font/woff2",
        Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

fn secured(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

/// `GET /` and `GET /assets/…`: the UI. Its state lives in the query string, so `/` is the
/// only page.
pub async fn serve(State(state): State<AppState>, uri: Uri) -> Response {
    let ui = &state.ui;
    if ui.is_empty() {
        return secured(
            (
                StatusCode::NOT_FOUND,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                "The web UI is not installed here. Build it (cd ui && npm ci && npm run build) and \
                 start storage-api with --ui-dir ui/dist. The API itself is under /api/v1 \
                 (described at /api/v1/openapi.json).\n",
            )
                .into_response(),
        );
    }
    let path = match uri.path() {
        "/" => "/index.html",
        other => other,
    };
    let Some(file) = ui.files.get(path) else {
        return crate::ApiError::NotFound(format!(
            "no UI file {path}; the UI starts at / and the API lives under /api/v1"
        ))
        .into_response();
    };
    // Built assets carry a content hash in their names; the page itself must be revalidated.
    let cache = if path.starts_with("/assets/") {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    secured(
        (
            [
                (header::CONTENT_TYPE, file.content_type),
                (header::CACHE_CONTROL, cache),
            ],
            Body::from(file.body.clone()),
        )
            .into_response(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_without_index_html_is_refused_with_what_to_do() {
        let dir = std::env::temp_dir().join(format!("st-ui-empty-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let err = UiFiles::load(&dir).unwrap_err().to_string();
        assert!(err.contains("npm run build"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn files_are_keyed_by_url_path() {
        let dir = std::env::temp_dir().join(format!("st-ui-ok-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("assets")).unwrap();
        std::fs::write(dir.join("index.html"), "<!doctype html>").unwrap();
        std::fs::write(dir.join("assets/app-1a2b.js"), "export {}").unwrap();
        let ui = UiFiles::load(&dir).unwrap();
        assert_eq!(ui.len(), 2);
        assert_eq!(
            ui.files["/assets/app-1a2b.js"].content_type,
            "text/javascript; charset=utf-8"
        );
        assert!(ui.files.contains_key("/index.html"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
