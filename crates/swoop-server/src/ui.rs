//! The web UI's files: a single-page app built from `ui/` (see `ui/package.json`) into
//! `ui/dist/`, which is committed and embedded in the binary, so the UI works offline and the
//! build needs no npm. Each file is served gzip-compressed to a browser that accepts it
//! (compressed once, on first use) with an ETag, so a reload costs a 304.
//!
//! `SWOOP_UI_DIR=<folder>` serves the files from that folder instead, read on every request:
//! for working on the UI without rebuilding the binary.

use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

const ASSETS: &[Asset] = &[
    Asset {
        name: "index.html",
        content_type: "text/html; charset=utf-8",
        bytes: include_bytes!("../ui/dist/index.html"),
    },
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../ui/dist/app.js"),
    },
    Asset {
        name: "app.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("../ui/dist/app.css"),
    },
];

/// An asset as served: its bytes gzip-compressed and its ETag.
struct Prepared {
    gzip: Vec<u8>,
    etag: String,
}

fn prepared(index: usize) -> &'static Prepared {
    static PREPARED: OnceLock<Vec<Prepared>> = OnceLock::new();
    &PREPARED.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| Prepared {
                gzip: gzip(a.bytes),
                etag: format!("\"{:016x}\"", fnv1a(a.bytes)),
            })
            .collect()
    })[index]
}

/// The gzip-compressed size of every embedded file, in bytes: what a first load costs.
pub fn first_load_compressed_bytes() -> usize {
    (0..ASSETS.len()).map(|i| prepared(i).gzip.len()).sum()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    // Writing into a Vec cannot fail.
    let _ = encoder.write_all(bytes);
    encoder.finish().unwrap_or_default()
}

/// A stable content hash for the ETag (FNV-1a, 64 bits).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// `GET /`: the app's page.
pub async fn index(headers: HeaderMap) -> Response {
    serve("index.html", &headers)
}

/// `GET /ui/{file}`: the app's script and style sheet.
pub async fn asset(Path(file): Path<String>, headers: HeaderMap) -> Response {
    serve(&file, &headers)
}

fn serve(name: &str, headers: &HeaderMap) -> Response {
    let Some(index) = ASSETS.iter().position(|a| a.name == name) else {
        return (StatusCode::NOT_FOUND, "no such UI file").into_response();
    };
    let asset = &ASSETS[index];
    if let Some(dir) = std::env::var_os("SWOOP_UI_DIR") {
        return match std::fs::read(std::path::Path::new(&dir).join(name)) {
            Ok(bytes) => ([(header::CONTENT_TYPE, asset.content_type)], bytes).into_response(),
            Err(e) => (
                StatusCode::NOT_FOUND,
                format!("SWOOP_UI_DIR: cannot read {name}: {e}"),
            )
                .into_response(),
        };
    }
    let prepared = prepared(index);
    let not_modified = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|tag| tag.trim() == prepared.etag));
    let etag = HeaderValue::from_str(&prepared.etag).unwrap_or(HeaderValue::from_static("\"\""));
    let common = [
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        ),
        (header::ETAG, etag),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (header::VARY, HeaderValue::from_static("accept-encoding")),
    ];
    if not_modified {
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
    let accepts_gzip = headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|e| e.trim().starts_with("gzip")));
    if accepts_gzip {
        (
            common,
            [(header::CONTENT_ENCODING, "gzip")],
            prepared.gzip.clone(),
        )
            .into_response()
    } else {
        (common, asset.bytes).into_response()
    }
}
