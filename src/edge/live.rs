//! Live broadcast routes: the broadcast API, HLS files (CDN-friendly
//! headers), WHEP viewers and WHIP ingest (draft-ietf-wish-whep / -whip).

use super::endpoints::{self as ep, route0, route1, route2, route3};
use super::errors::ApiError;
use super::{App, admin, with_app};
use crate::control::Actor;
use crate::control::broadcast::{BroadcastView, StartBroadcast};
use crate::ids::{BroadcastId, ParticipantId, RoomId, ViewerId};
use crate::media::hls;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;
use warp::http::{HeaderValue, Response, StatusCode, header};
use warp::{Filter, Rejection, Reply};

type Resp = Result<warp::reply::Response, Rejection>;
type Route = warp::filters::BoxedFilter<(warp::reply::Response,)>;

/// Largest SDP offer accepted (browsers send 3–10 KiB).
pub(super) const MAX_SDP_BYTES: u64 = 64 * 1024;

fn broadcast_id(s: &str) -> Result<BroadcastId, Rejection> {
    BroadcastId::parse(s).ok_or_else(|| warp::reject::custom(ApiError::not_found("broadcast")))
}

fn room_id(s: &str) -> Result<RoomId, Rejection> {
    RoomId::parse(s).ok_or_else(|| warp::reject::custom(ApiError::not_found("room")))
}

fn json_status<T: serde::Serialize>(body: &T, status: StatusCode) -> warp::reply::Response {
    warp::reply::with_status(warp::reply::json(body), status).into_response()
}

fn bearer(h: Option<String>) -> Option<String> {
    h.and_then(|h| h.strip_prefix("Bearer ").map(|t| t.trim().to_owned()))
}

/// CORS for players and WHIP/WHEP clients on other origins.
fn cors(resp: &mut warp::reply::Response) {
    let h = resp.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("Location, Content-Length, Content-Range"),
    );
}

/// 204 for a CORS preflight of a WHIP/WHEP endpoint.
fn preflight() -> warp::reply::Response {
    let mut resp = StatusCode::NO_CONTENT.into_response();
    cors(&mut resp);
    let h = resp.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST, DELETE, PATCH, OPTIONS"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Authorization, Content-Type, If-Match"),
    );
    h.insert("accept-post", HeaderValue::from_static("application/sdp"));
    resp
}

/// An SDP body: 415 for another content type, 400 when it is not text.
fn sdp_body() -> impl Filter<Extract = (String,), Error = Rejection> + Clone {
    warp::body::content_length_limit(MAX_SDP_BYTES)
        .and(warp::header::optional::<String>("content-type"))
        .and(super::body_bytes())
        .and_then(|ct: Option<String>, body: bytes::Bytes| async move {
            let mime = ct.as_deref().unwrap_or("").split(';').next().unwrap_or("");
            if !mime.trim().eq_ignore_ascii_case("application/sdp") {
                return Err(warp::reject::custom(ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    "expected Content-Type: application/sdp",
                )));
            }
            let text = String::from_utf8(body.to_vec())
                .map_err(|_| warp::reject::custom(ApiError::bad_request("SDP is not UTF-8")))?;
            if !text.starts_with("v=0") {
                return Err(warp::reject::custom(ApiError::bad_request(
                    "not an SDP offer",
                )));
            }
            Ok(text)
        })
}

/// 201 with the SDP answer and the resource's `Location`.
fn created_sdp(location: String, answer: String) -> warp::reply::Response {
    let mut resp = Response::new(warp::hyper::Body::from(answer));
    *resp.status_mut() = StatusCode::CREATED;
    cors(&mut resp);
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/sdp"),
    );
    if let Ok(v) = HeaderValue::from_str(&location) {
        h.insert(header::LOCATION, v);
    }
    resp
}

fn ok_cors() -> warp::reply::Response {
    let mut resp = StatusCode::OK.into_response();
    cors(&mut resp);
    resp
}

/// HLS playlists and segments (`/hls/{broadcast}/…`), public.
pub fn hls_routes(app: Arc<App>) -> Route {
    let hls_master = route1(&ep::HLS_MASTER)
        .and(warp::header::optional::<String>("if-none-match"))
        .and(with_app(app.clone()))
        .and_then(
            |id: String, inm: Option<String>, app: Arc<App>| async move {
                let id = broadcast_id(&id)?;
                let root = app.control.hls_dir();
                let path = root.join(id.as_str()).join("index.m3u8");
                hls_file(&app.hls_cache, &root, &path, HlsKind::Master, inm)
            },
        );

    let hls_file_route = route3(&ep::HLS_FILE)
        .and(warp::query::<std::collections::HashMap<String, String>>())
        .and(warp::header::optional::<String>("if-none-match"))
        .and(super::listener::remote())
        .and(warp::header::optional::<String>("user-agent"))
        .and(with_app(app.clone()))
        .and_then(
            |id: String,
             rendition: String,
             file: String,
             query: std::collections::HashMap<String, String>,
             inm: Option<String>,
             addr: Option<SocketAddr>,
             agent: Option<String>,
             app: Arc<App>| async move {
                let id = broadcast_id(&id)?;
                let known = rendition == "source"
                    || crate::media::broadcast::rendition(&rendition).is_some();
                let name = hls::parse_name(&file);
                let mut kind = if file == "index.m3u8" {
                    HlsKind::Playlist
                } else if name.is_some() {
                    HlsKind::Segment
                } else {
                    return Err(warp::reject::custom(ApiError::not_found("file")));
                };
                if !known {
                    return Err(warp::reject::custom(ApiError::not_found("rendition")));
                }
                let position = app.control.hls_position(&id, &rendition);
                if kind == HlsKind::Playlist {
                    let mut h = std::collections::hash_map::DefaultHasher::new();
                    addr.map(|a| a.ip()).hash(&mut h);
                    agent.hash(&mut h);
                    app.control.hls_seen(&id, h.finish());
                    if let Some(want) = blocking_reload(&query)? {
                        kind = HlsKind::BlockingPlaylist;
                        if let Some(rx) = position {
                            wait_for_listing(rx, want).await?;
                        }
                    }
                } else if let (Some((msn, Some(part))), Some(rx)) = (name, position) {
                    wait_for_hinted_part(rx, msn, part).await;
                }
                let root = app.control.hls_dir();
                let path = root.join(id.as_str()).join(&rendition).join(&file);
                hls_file(&app.hls_cache, &root, &path, kind, inm)
            },
        );

    hls_master.or(hls_file_route).unify().boxed()
}

/// The broadcast API, WHEP and WHIP.
pub fn routes(app: Arc<App>) -> Route {
    let start = route1(&ep::START_BROADCAST)
        .and(admin(app.clone()))
        .and(super::optional_json_body::<StartBroadcast>())
        .and(with_app(app.clone()))
        .and_then(
            |id: String, body: StartBroadcast, app: Arc<App>| async move {
                let b = app
                    .control
                    .start_broadcast(&room_id(&id)?, body, Actor::Admin)
                    .await?;
                Resp::Ok(json_status(&b, StatusCode::CREATED))
            },
        );

    let list = route0(&ep::LIST_BROADCASTS)
        .and(admin(app.clone()))
        .and(warp::query::<std::collections::HashMap<String, String>>())
        .and(with_app(app.clone()))
        .and_then(
            |q: std::collections::HashMap<String, String>, app: Arc<App>| async move {
                let room = match q.get("room_id") {
                    Some(r) => Some(room_id(r)?),
                    None => None,
                };
                let broadcasts = app.control.broadcasts(room.as_ref());
                Resp::Ok(json_status(&BroadcastList { broadcasts }, StatusCode::OK))
            },
        );

    let get = route1(&ep::GET_BROADCAST)
        .and(admin(app.clone()))
        .and(with_app(app.clone()))
        .and_then(|id: String, app: Arc<App>| async move {
            let b = app.control.broadcast(&broadcast_id(&id)?)?;
            Resp::Ok(json_status(&b, StatusCode::OK))
        });

    let stop = route1(&ep::STOP_BROADCAST)
        .and(admin(app.clone()))
        .and(with_app(app.clone()))
        .and_then(|id: String, app: Arc<App>| async move {
            app.control.stop_broadcast(&broadcast_id(&id)?).await?;
            Resp::Ok(StatusCode::NO_CONTENT.into_response())
        });

    let public = route1(&ep::PUBLIC_BROADCAST)
        .and(with_app(app.clone()))
        .and_then(|id: String, app: Arc<App>| async move {
            let b = app.control.public_broadcast(&broadcast_id(&id)?)?;
            let mut resp = json_status(&b, StatusCode::OK);
            cors(&mut resp);
            Resp::Ok(resp)
        });

    let ingest = route1(&ep::CREATE_INGEST)
        .and(admin(app.clone()))
        .and(with_app(app.clone()))
        .and_then(|id: String, app: Arc<App>| async move {
            let body = app.control.create_ingest(&room_id(&id)?)?;
            Resp::Ok(json_status(&body, StatusCode::CREATED))
        });

    // CORS preflights of every WHEP/WHIP endpoint and resource.
    let preflights = route1(&ep::WHEP_PREFLIGHT)
        .or(route1(&ep::WHIP_PREFLIGHT))
        .unify()
        .map(|_: String| preflight())
        .or(route2(&ep::WHEP_SESSION_PREFLIGHT)
            .or(route2(&ep::WHIP_SESSION_PREFLIGHT))
            .unify()
            .map(|_: String, _: String| preflight()))
        .unify();

    let whep = route1(&ep::WHEP_OFFER)
        .and(warp::header::optional::<String>("authorization"))
        .and(sdp_body())
        .and(with_app(app.clone()))
        .and_then(
            |id: String, auth: Option<String>, sdp: String, app: Arc<App>| async move {
                let bid = broadcast_id(&id)?;
                let (viewer, answer) = app
                    .control
                    .whep_offer(&bid, bearer(auth).as_deref(), sdp)
                    .await?;
                Resp::Ok(created_sdp(format!("/whep/{bid}/{viewer}"), answer))
            },
        );

    let whep_delete = route2(&ep::WHEP_DELETE)
        .and(warp::header::optional::<String>("authorization"))
        .and(with_app(app.clone()))
        .and_then(
            |id: String, viewer: String, auth: Option<String>, app: Arc<App>| async move {
                let bid = broadcast_id(&id)?;
                let viewer = ViewerId::parse(&viewer)
                    .ok_or_else(|| warp::reject::custom(ApiError::not_found("viewer")))?;
                app.control
                    .whep_delete(&bid, &viewer, bearer(auth).as_deref())
                    .await?;
                Resp::Ok(ok_cors())
            },
        );

    // Trickle ICE and ICE restarts are not supported (the answer carries
    // every candidate): 405, as the drafts say.
    let not_supported = route2(&ep::WHEP_PATCH)
        .map(|_: String, _: String| "whep")
        .or(route2(&ep::WHIP_PATCH).map(|_: String, _: String| "whip"))
        .unify()
        .and_then(|_kind: &'static str| async move {
            let mut resp = super::errors::reply(&ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "trickle ICE is not supported: the answer carries every candidate",
            ));
            cors(&mut resp);
            Resp::Ok(resp)
        });

    let whip = route1(&ep::WHIP_OFFER)
        .and(warp::header::optional::<String>("authorization"))
        .and(sdp_body())
        .and(with_app(app.clone()))
        .and_then(
            |id: String, auth: Option<String>, sdp: String, app: Arc<App>| async move {
                let room = room_id(&id)?;
                let (pid, answer) = app
                    .control
                    .whip_offer(&room, bearer(auth).as_deref(), sdp)
                    .await?;
                Resp::Ok(created_sdp(format!("/whip/{room}/{pid}"), answer))
            },
        );

    let whip_delete = route2(&ep::WHIP_DELETE)
        .and(warp::header::optional::<String>("authorization"))
        .and(with_app(app.clone()))
        .and_then(
            |id: String, pid: String, auth: Option<String>, app: Arc<App>| async move {
                let room = room_id(&id)?;
                let pid = ParticipantId::parse(&pid)
                    .ok_or_else(|| warp::reject::custom(ApiError::not_found("ingest")))?;
                app.control
                    .whip_delete(&room, &pid, bearer(auth).as_deref())
                    .await?;
                Resp::Ok(ok_cors())
            },
        );

    let routes: Vec<Route> = vec![
        list.boxed(),
        get.boxed(),
        stop.boxed(),
        public.boxed(),
        ingest.boxed(),
        preflights.boxed(),
        whep.boxed(),
        whep_delete.boxed(),
        not_supported.boxed(),
        whip.boxed(),
        whip_delete.boxed(),
    ];
    routes
        .into_iter()
        .fold(start.boxed(), |all, r| all.or(r).unify().boxed())
}

/// `GET /api/v1/broadcasts`.
#[derive(Debug, serde::Serialize, schemars::JsonSchema)]
pub struct BroadcastList {
    /// Broadcasts.
    pub broadcasts: Vec<BroadcastView>,
}

/// `POST /api/v1/rooms/{id}/ingests`: the shape of what the control layer
/// answers; `tests/openapi.rs` checks a live answer against it (no other
/// field allowed).
#[derive(Debug, schemars::JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Ingest {
    /// Where the WHIP client posts its offer.
    pub whip_url: String,
    /// Its bearer token (role `ingest`).
    pub token: String,
    /// The room.
    pub room_id: RoomId,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HlsKind {
    Master,
    Playlist,
    /// A playlist asked for with `_HLS_msn`: its URL names one state.
    BlockingPlaylist,
    Segment,
}

/// The LL-HLS blocking reload a playlist request asks for: `_HLS_msn`
/// (and `_HLS_part`), or nothing. A part without a segment, or values that
/// are not numbers, are a 400 (as the HLS spec says).
fn blocking_reload(
    query: &std::collections::HashMap<String, String>,
) -> Result<Option<(u64, Option<u32>)>, Rejection> {
    fn number<T: std::str::FromStr>(
        query: &std::collections::HashMap<String, String>,
        key: &str,
    ) -> Result<Option<T>, Rejection> {
        query
            .get(key)
            .map(|v| {
                v.parse::<T>().map_err(|_| {
                    warp::reject::custom(ApiError::bad_request(format!("{key} must be a number")))
                })
            })
            .transpose()
    }
    let msn = number::<u64>(query, "_HLS_msn")?;
    let part = number::<u32>(query, "_HLS_part")?;
    match (msn, part) {
        (None, Some(_)) => Err(warp::reject::custom(ApiError::bad_request(
            "_HLS_part needs _HLS_msn",
        ))),
        (None, None) => Ok(None),
        (Some(m), p) => Ok(Some((m, p))),
    }
}

/// Holds a blocking playlist request until the playlist lists `want`, at
/// most 3 target durations (503 after). A segment more than 2 beyond the
/// one being written is a 400 at once.
async fn wait_for_listing(
    mut rx: tokio::sync::watch::Receiver<hls::Position>,
    (msn, part): (u64, Option<u32>),
) -> Result<(), Rejection> {
    if msn > rx.borrow().msn + 2 {
        return Err(warp::reject::custom(ApiError::bad_request(
            "_HLS_msn is more than 2 segments ahead of the playlist",
        )));
    }
    let within = hls::SEGMENT_TARGET * 3;
    match tokio::time::timeout(within, rx.wait_for(|p| p.ended || p.has(msn, part))).await {
        // Listed, or the writer is gone (the playlist is as it ends).
        Ok(_) => Ok(()),
        Err(_) => Err(warp::reject::custom(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_yet",
            "the playlist did not reach _HLS_msn/_HLS_part in time",
        ))),
    }
}

/// A request for the part the playlist hints (`EXT-X-PRELOAD-HINT`, or
/// the first of the next segment) waits until it is written, at most a
/// target duration; any other part is answered as it is now.
async fn wait_for_hinted_part(
    mut rx: tokio::sync::watch::Receiver<hls::Position>,
    msn: u64,
    part: u32,
) {
    let now = *rx.borrow();
    let hinted = (msn == now.msn && part == now.parts) || (msn == now.msn + 1 && part == 0);
    if hinted && !now.ended {
        let _ = tokio::time::timeout(
            hls::SEGMENT_TARGET,
            rx.wait_for(|p| p.ended || p.has(msn, Some(part))),
        )
        .await;
    }
}

/// HLS files in memory: every viewer asks for the same few files, so
/// they are read once, not once per request. An entry is used only while
/// the file on disk has the same size and modification time (a deleted
/// segment is a 404 at once); the cache holds at most [`HLS_CACHE_BYTES`].
#[derive(Debug, Default)]
pub struct HlsCache {
    inner: std::sync::Mutex<CacheInner>,
}

/// Bytes of HLS files kept in memory.
pub const HLS_CACHE_BYTES: usize = 64 * 1024 * 1024;

#[derive(Debug, Default)]
struct CacheInner {
    files: std::collections::HashMap<std::path::PathBuf, Cached>,
    order: std::collections::VecDeque<std::path::PathBuf>,
    bytes: usize,
}

#[derive(Debug, Clone)]
struct Cached {
    data: bytes::Bytes,
    modified: Option<std::time::SystemTime>,
    etag: String,
}

impl HlsCache {
    /// The file's bytes, validators and modification time; `None` when it
    /// is gone, or is not a file inside `root` (a link out of it is not
    /// followed; checked when the file is read, not on every cache hit).
    fn get(&self, root: &std::path::Path, path: &std::path::Path) -> Option<Cached> {
        // A stat of a file in the page cache: microseconds, no thread hop.
        let meta = std::fs::metadata(path).ok()?;
        let modified = meta.modified().ok();
        let etag = format!(
            "\"{:x}-{:x}\"",
            meta.len(),
            modified
                .and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos())
        );
        let c = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(hit) = c.files.get(path)
            && hit.etag == etag
        {
            return Some(hit.clone());
        }
        drop(c);
        if !crate::control::recording::resolves_inside(root, path) {
            if path.exists() {
                tracing::warn!(path = %path.display(), "HLS file outside the HLS directory, not served");
            }
            return None;
        }
        let data = bytes::Bytes::from(std::fs::read(path).ok()?);
        let mut c = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let entry = Cached {
            data,
            modified,
            etag,
        };
        if let Some(old) = c.files.insert(path.to_owned(), entry.clone()) {
            c.bytes -= old.data.len();
        } else {
            c.order.push_back(path.to_owned());
        }
        c.bytes += entry.data.len();
        while c.bytes > HLS_CACHE_BYTES {
            let Some(oldest) = c.order.pop_front() else {
                break;
            };
            if let Some(old) = c.files.remove(&oldest) {
                c.bytes -= old.data.len();
            }
        }
        Some(entry)
    }
}

/// Serves an HLS file with the headers a CDN needs: segments never change
/// (cached for a year), playlists change every segment (1–2 s); `ETag` and
/// `Last-Modified` let caches revalidate (`If-None-Match` → 304).
fn hls_file(
    cache: &HlsCache,
    root: &std::path::Path,
    path: &std::path::Path,
    kind: HlsKind,
    if_none_match: Option<String>,
) -> Resp {
    let file = cache
        .get(root, path)
        .ok_or_else(|| warp::reject::custom(ApiError::not_found("file")))?;
    let (mime, cache_control) = match kind {
        HlsKind::Master => ("application/vnd.apple.mpegurl", "public, max-age=2"),
        HlsKind::Playlist => ("application/vnd.apple.mpegurl", "public, max-age=1"),
        // Its URL names a state of the playlist that no longer changes.
        HlsKind::BlockingPlaylist => ("application/vnd.apple.mpegurl", "public, max-age=6"),
        HlsKind::Segment => ("video/mp2t", "public, max-age=31536000, immutable"),
    };
    let fresh = if_none_match.is_some_and(|v| v.split(',').any(|t| t.trim() == file.etag));
    let mut resp = if fresh {
        let mut r = Response::new(warp::hyper::Body::empty());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        Response::new(warp::hyper::Body::from(file.data))
    };
    cors(&mut resp);
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(mime));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(cache_control),
    );
    if let Ok(v) = HeaderValue::from_str(&file.etag) {
        h.insert(header::ETAG, v);
    }
    if let Some(m) = file.modified
        && let Ok(v) = HeaderValue::from_str(&httpdate(m))
    {
        h.insert(header::LAST_MODIFIED, v);
    }
    Ok(resp)
}

/// An HTTP date (RFC 7231 IMF-fixdate).
fn httpdate(t: std::time::SystemTime) -> String {
    const FORMAT: &[time::format_description::FormatItem<'static>] = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    time::OffsetDateTime::from(t)
        .format(FORMAT)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_follows_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seg00001.ts");
        let cache = HlsCache::default();
        let root = dir.path();
        assert!(cache.get(root, &path).is_none());
        std::fs::write(&path, b"one").unwrap();
        assert_eq!(&cache.get(root, &path).unwrap().data[..], b"one");
        std::fs::write(&path, b"second").unwrap();
        assert_eq!(&cache.get(root, &path).unwrap().data[..], b"second");
        std::fs::remove_file(&path).unwrap();
        assert!(
            cache.get(root, &path).is_none(),
            "a deleted file is gone at once"
        );
        #[cfg(unix)]
        {
            let outside = tempfile::tempdir().unwrap();
            std::fs::write(outside.path().join("secret"), b"s").unwrap();
            std::os::unix::fs::symlink(outside.path().join("secret"), &path).unwrap();
            assert!(
                cache.get(root, &path).is_none(),
                "a link out is not followed"
            );
        }
    }

    #[test]
    fn http_dates() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(784_111_777);
        assert_eq!(httpdate(t), "Sun, 06 Nov 1994 08:49:37 GMT");
    }

    #[test]
    fn blocking_reload_queries() {
        let q = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<std::collections::HashMap<_, _>>()
        };
        assert_eq!(blocking_reload(&q(&[])).unwrap(), None);
        assert_eq!(
            blocking_reload(&q(&[("_HLS_msn", "12")])).unwrap(),
            Some((12, None))
        );
        assert_eq!(
            blocking_reload(&q(&[("_HLS_msn", "12"), ("_HLS_part", "3")])).unwrap(),
            Some((12, Some(3)))
        );
        assert!(blocking_reload(&q(&[("_HLS_part", "3")])).is_err());
        assert!(blocking_reload(&q(&[("_HLS_msn", "x")])).is_err());
        assert!(blocking_reload(&q(&[("_HLS_msn", "1"), ("_HLS_part", "-1")])).is_err());
    }
}
