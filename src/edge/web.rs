//! The web client, embedded in the binary (plain ES modules, no build step).

use super::endpoints::{self as ep, route_tail, route0, route1};
use rust_embed::RustEmbed;
use warp::http::{HeaderValue, Response, StatusCode, header};
use warp::{Filter, Rejection};

#[derive(RustEmbed)]
#[folder = "web/"]
struct Assets;

fn serve(path: &str) -> Result<warp::reply::Response, Rejection> {
    let Some(file) = Assets::get(path) else {
        return Err(warp::reject::not_found());
    };
    let mime = mime_guess::from_path(path).first_or_octet_stream();
    let mut resp = Response::new(warp::hyper::Body::from(file.data.into_owned()));
    let headers = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(mime.as_ref()) {
        headers.insert(header::CONTENT_TYPE, v);
    }
    // Small files, changed on every upgrade: revalidate each time.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    *resp.status_mut() = StatusCode::OK;
    Ok(resp)
}

/// A path under `web/assets/` as our files are named: relative, plain
/// segments of `[A-Za-z0-9._-]` that do not start with a dot. No `..`, no
/// percent-encoding (`%2e%2e`), no backslash, no absolute path: in debug
/// builds rust-embed reads the files from disk.
fn is_asset_path(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= 200
        && p.split('/').all(|seg| {
            !seg.is_empty()
                && !seg.starts_with('.')
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        })
}

/// `/`, `/r/{id}`, `/watch/{id}`, `/assets/*`.
pub fn routes() -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    let home = route0(&ep::HOME_PAGE).and_then(|| async { serve("index.html") });
    let room = route1(&ep::ROOM_PAGE).and_then(|_id: String| async { serve("room.html") });
    let watch = route1(&ep::WATCH_PAGE).and_then(|_id: String| async { serve("watch.html") });
    let assets = route_tail(&ep::ASSETS).and_then(|tail: warp::path::Tail| async move {
        let p = tail.as_str();
        if !is_asset_path(p) {
            tracing::debug!(path = p, "refused asset path");
            return Err(warp::reject::not_found());
        }
        serve(&format!("assets/{p}"))
    });
    home.or(room).unify().or(watch).unify().or(assets).unify()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asset_paths_stay_under_assets() {
        assert!(is_asset_path("home.js"));
        assert!(is_asset_path("vendor/hls.min.js"));
        for bad in [
            "",
            "../Cargo.toml",
            "a/../../b",
            "%2e%2e/Cargo.toml",
            "..%2fCargo.toml",
            "/etc/passwd",
            "a//b",
            "..\\Cargo.toml",
            ".hidden",
            "a/./b",
            "a\0b",
        ] {
            assert!(!is_asset_path(bad), "{bad:?}");
        }
    }
}
