//! `GET /api/v1/snapshots/{id}/export/ncdu?path=…`: a directory of a snapshot in ncdu's JSON
//! format (see [`storage_tracker_proto::ncdu`]), streamed as ClickHouse returns the rows, for
//! `ncdu -f FILE` or `gdu -f FILE`. Names that are not UTF-8 are written as their bytes, as
//! ncdu writes them, so the download is `application/octet-stream` (named `.json`), not
//! `application/json`.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use storage_tracker_proto::ncdu::{CONTENT_TYPE, NcduEntry, NcduError, NcduWriter};

use crate::extract::{AtDirectory, Checked};
use crate::paths::PathParam;
use crate::query;
use crate::{ApiError, AppState};

/// The routes of this resource.
pub fn routes() -> crate::resource::Routes {
    crate::resource::Routes::default().get("/api/v1/snapshots/{snapshot_id}/export/ncdu", ncdu)
}

/// Most entries one export through the API holds (the read-only profile's `max_result_rows`
/// bounds it too); `storage-aggregator export-ncdu` exports trees of any size.
pub const MAX_EXPORT_ENTRIES: u64 = 1_000_000;

/// Bytes gathered before they are sent on.
const SEND_BYTES: usize = 256 << 10;

pub(crate) async fn ncdu(
    State(state): State<AppState>,
    _: Checked<PathParam>,
    AtDirectory {
        snapshot,
        dir,
        rollup,
        ..
    }: AtDirectory,
) -> Result<Response, ApiError> {
    let snapshot_id = snapshot.snapshot_id;
    let db = &state.database;
    // The directory and everything below it.
    let count = rollup.entries + 1;
    if count > MAX_EXPORT_ENTRIES {
        return Err(ApiError::BadRequest(format!(
            "{} holds {count} entries; the API exports at most {MAX_EXPORT_ENTRIES}: export a \
             subdirectory, or the whole tree with `storage-aggregator export-ncdu`",
            String::from_utf8_lossy(&dir)
        )));
    }
    let mut rows = state
        .client
        .query(&query::entries::ncdu_export(db, snapshot_id, &dir))
        .fetch::<NcduEntry>()?;
    let name = format!(
        "ncdu-{}-{snapshot_id}.json",
        snapshot
            .filesystem_label
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect::<String>()
    );
    let body = crate::stream::spawned_body(move |tx| async move {
        let mut writer = match NcduWriter::new(
            Vec::with_capacity(SEND_BYTES * 2),
            &dir,
            env!("CARGO_PKG_VERSION"),
            u64::from(snapshot.started_at),
        ) {
            Ok(w) => w,
            Err(e) => {
                let _ = tx.send(Err(NcduError::from(e).into())).await;
                return;
            }
        };
        loop {
            let row = match rows.next().await {
                Ok(Some(row)) => row,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(snapshot_id = snapshot_id.get(), "ncdu export failed: {e}");
                    let _ = tx.send(Err(e.into())).await;
                    return;
                }
            };
            if let Err(e) = writer.push(&row) {
                let _ = tx.send(Err(e.into())).await;
                return;
            }
            if writer.output().len() >= SEND_BYTES {
                let chunk = std::mem::take(writer.output());
                if tx.send(Ok(chunk.into())).await.is_err() {
                    return; // The client went away.
                }
            }
        }
        match writer.finish() {
            Ok((rest, _)) => {
                let _ = tx.send(Ok(rest.into())).await;
            }
            Err(e) => {
                let _ = tx.send(Err(e.into())).await;
            }
        }
    });
    Ok((
        [
            (header::CONTENT_TYPE, CONTENT_TYPE.to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        body,
    )
        .into_response())
}
