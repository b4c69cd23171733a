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

/// `/`, `/r/{id}`, `/watch/{id}`, `/assets/*`.
pub fn routes() -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    let home = route0(&ep::HOME_PAGE).and_then(|| async { serve("index.html") });
    let room = route1(&ep::ROOM_PAGE).and_then(|_id: String| async { serve("room.html") });
    let watch = route1(&ep::WATCH_PAGE).and_then(|_id: String| async { serve("watch.html") });
    let assets = route_tail(&ep::ASSETS).and_then(|tail: warp::path::Tail| async move {
        let p = tail.as_str();
        if p.contains("..") {
            return Err(warp::reject::not_found());
        }
        serve(&format!("assets/{p}"))
    });
    home.or(room).unify().or(watch).unify().or(assets).unify()
}
