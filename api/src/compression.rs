//! gzip: answers are compressed for a client that accepts it (`Accept-Encoding: gzip`). A JSON
//! answer of 1 KiB or more is compressed whole; a streamed download (CSV, ncdu) is compressed
//! as it streams, each piece flushed as it is written, so its first rows still come at once;
//! a download that breaks off mid-way still breaks off (its gzip stream has no end), so an
//! incomplete file is never taken for a whole one.
//!
//! The layer sits inside the one that tags answers ([`crate::conventions::cache_headers`]), so
//! a compressed answer's `ETag` is that of its compressed bytes, not the same as the plain
//! one's; every answer it may compress says `Vary: Accept-Encoding`.

use std::io::Write;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use flate2::Compression;
use flate2::write::GzEncoder;
use futures_util::StreamExt;

/// Smaller JSON answers are sent as they are: gzip's header and trailer would outweigh it.
const MIN_BYTES: usize = 1024;

/// Whether `Accept-Encoding` accepts gzip (by name or `*`, with a q-value above 0).
fn accepts_gzip(request: &HeaderMap) -> bool {
    let mut gzip = None;
    let mut any = None;
    for item in request
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
    {
        let mut parts = item.split(';').map(str::trim);
        let coding = parts.next().unwrap_or_default().to_ascii_lowercase();
        let q = parts
            .find_map(|p| p.strip_prefix("q=").or_else(|| p.strip_prefix("Q=")))
            .map_or(1.0, |q| q.parse::<f32>().unwrap_or(0.0));
        match coding.as_str() {
            "gzip" | "x-gzip" => gzip = Some(q > 0.0),
            "*" => any = Some(q > 0.0),
            _ => {}
        }
    }
    gzip.or(any).unwrap_or(false)
}

/// What an answer is, as far as compressing it goes.
enum Kind {
    /// Compressed whole.
    Json,
    /// Compressed as it streams.
    Download,
    /// Sent as it is.
    Other,
}

fn kind(response: &HeaderMap) -> Kind {
    if response.contains_key(header::CONTENT_ENCODING) {
        return Kind::Other;
    }
    match response
        .get(header::CONTENT_TYPE)
        .map(HeaderValue::as_bytes)
    {
        Some(t) if t.starts_with(b"application/json") => Kind::Json,
        Some(t)
            if [
                &b"text/csv"[..],
                b"text/tab-separated-values",
                b"text/markdown",
                b"application/octet-stream",
            ]
            .iter()
            .any(|download| t.starts_with(download)) =>
        {
            Kind::Download
        }
        _ => Kind::Other,
    }
}

/// gzip of `bytes`, whole.
fn gzip(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut encoder = GzEncoder::new(Vec::with_capacity(bytes.len() / 4), Compression::default());
    encoder.write_all(bytes)?;
    encoder.finish()
}

/// `body` compressed as it streams: each piece written and flushed (a sync flush, so that what
/// came so far can be read), the gzip trailer after the last. An error of the body ends the
/// stream with that error, and no trailer.
fn gzip_stream(body: Body) -> Body {
    let encoder = GzEncoder::new(Vec::new(), Compression::fast());
    let stream = futures_util::stream::unfold(
        Some((body.into_data_stream(), encoder)),
        |state| async move {
            let (mut data, mut encoder) = state?;
            loop {
                match data.next().await {
                    Some(Ok(piece)) => {
                        let written = encoder.write_all(&piece).and_then(|()| encoder.flush());
                        if let Err(e) = written {
                            return Some((Err(axum::Error::new(e)), None));
                        }
                        let out = std::mem::take(encoder.get_mut());
                        if !out.is_empty() {
                            return Some((Ok(Bytes::from(out)), Some((data, encoder))));
                        }
                    }
                    Some(Err(e)) => return Some((Err(e), None)),
                    None => {
                        return Some((
                            encoder.finish().map(Bytes::from).map_err(axum::Error::new),
                            None,
                        ));
                    }
                }
            }
        },
    );
    Body::from_stream(stream)
}

/// Compresses what the client accepts compressed.
pub async fn compress(request: Request, next: Next) -> Response {
    let wanted = request.method() != Method::HEAD && accepts_gzip(request.headers());
    let response = next.run(request).await;
    let kind = kind(response.headers());
    if matches!(kind, Kind::Other) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    parts
        .headers
        .append(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    if !wanted {
        return Response::from_parts(parts, body);
    }
    let body = match kind {
        Kind::Json => {
            let bytes = match crate::conventions::whole(body, "compress").await {
                Ok(bytes) => bytes,
                Err(refused) => return refused,
            };
            if bytes.len() < MIN_BYTES {
                return Response::from_parts(parts, Body::from(bytes));
            }
            match gzip(&bytes) {
                Ok(zipped) => Body::from(zipped),
                Err(e) => {
                    tracing::error!("compressing an answer failed: {e}");
                    return Response::from_parts(parts, Body::from(bytes));
                }
            }
        }
        Kind::Download => gzip_stream(body),
        Kind::Other => unreachable!("returned above"),
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    parts
        .headers
        .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    Response::from_parts(parts, body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn asked(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_str(value).unwrap(),
        );
        h
    }

    #[test]
    fn gzip_is_accepted_by_name_or_star_unless_its_q_is_zero() {
        assert!(accepts_gzip(&asked("gzip")));
        assert!(accepts_gzip(&asked("br, GZIP;q=0.5")));
        assert!(accepts_gzip(&asked("*")));
        assert!(!accepts_gzip(&asked("gzip;q=0, *")));
        assert!(!accepts_gzip(&asked("br, deflate")));
        assert!(!accepts_gzip(&asked("*;q=0")));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }

    #[tokio::test]
    async fn a_stream_is_gzip_piece_by_piece_and_an_error_ends_it_without_a_trailer() {
        let pieces: Vec<Result<Bytes, std::io::Error>> =
            vec![Ok(Bytes::from("a,b\n")), Ok(Bytes::from("c,d\n"))];
        let body = gzip_stream(Body::from_stream(futures_util::stream::iter(pieces)));
        let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        let mut text = String::new();
        flate2::read::GzDecoder::new(&bytes[..])
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "a,b\nc,d\n");

        let broken: Vec<Result<Bytes, std::io::Error>> = vec![
            Ok(Bytes::from("a,b\n")),
            Err(std::io::Error::other("cut short")),
        ];
        let body = gzip_stream(Body::from_stream(futures_util::stream::iter(broken)));
        assert!(axum::body::to_bytes(body, usize::MAX).await.is_err());
    }
}
