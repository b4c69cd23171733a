//! Edge layer (warp): REST, WebSocket signaling, the web client. Parses and
//! validates input, checks credentials, maps errors; the work happens in
//! `control`.

pub mod endpoints;
pub mod errors;
pub mod files;
pub mod listener;
pub mod live;
pub mod openapi;
pub mod ratelimit;
pub mod rest;
pub mod web;
pub mod ws;

use crate::control::Control;
use errors::ApiError;
use serde::de::DeserializeOwned;
use std::sync::Arc;
use subtle_eq::constant_time_eq;
use warp::{Filter, Rejection, Reply};

/// Largest JSON body accepted on the REST API.
pub const MAX_BODY_BYTES: u64 = 16 * 1024;

/// Longest time a request body (JSON or SDP) may take to arrive once its
/// headers are in: a client trickling its body byte by byte gets 408.
pub const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// System facts for `/api/v1/system`.
#[derive(Debug, Clone, serde::Serialize, schemars::JsonSchema)]
pub struct SystemInfo {
    /// roomcast version.
    pub version: String,
    /// GStreamer version.
    pub gstreamer_version: String,
    /// Hardware family in use: `nvcodec`, `va`, `vaapi`, `qsv`, `v4l2` or `none`.
    pub hw_acceleration: String,
    /// Chosen encoder per codec.
    pub encoders: std::collections::BTreeMap<String, String>,
    /// Chosen decoder per codec.
    pub decoders: std::collections::BTreeMap<String, String>,
}

/// Shared state of every route.
pub struct App {
    /// Rooms.
    pub control: Control,
    /// Admin bearer token.
    pub admin_token: String,
    /// Token-less room creation allowed.
    pub public_create: bool,
    /// Per-address rate limits (public creation, signaling, WHEP/WHIP, calls without the admin token).
    pub limits: ratelimit::Limits,
    /// System facts.
    pub system: SystemInfo,
    /// HLS files served from memory.
    pub hls_cache: live::HlsCache,
}

mod subtle_eq {
    /// Compares without an early exit, so timing does not leak the token.
    pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
        if a.len() != b.len() {
            return false;
        }
        a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

/// Injects the app.
pub fn with_app(
    app: Arc<App>,
) -> impl Filter<Extract = (Arc<App>,), Error = std::convert::Infallible> + Clone {
    warp::any().map(move || app.clone())
}

/// Who is calling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// Valid admin token.
    Admin,
    /// No Authorization header.
    Anonymous,
}

fn check_bearer(app: &App, header: Option<String>) -> Result<Caller, Rejection> {
    let Some(h) = header else {
        return Ok(Caller::Anonymous);
    };
    let token = h.strip_prefix("Bearer ").ok_or_else(|| {
        warp::reject::custom(ApiError::unauthorized(
            "expected Authorization: Bearer <token>",
        ))
    })?;
    if constant_time_eq(token.trim().as_bytes(), app.admin_token.as_bytes()) {
        Ok(Caller::Admin)
    } else {
        Err(warp::reject::custom(ApiError::unauthorized(
            "invalid admin token",
        )))
    }
}

/// Whether an `Authorization` header carries the admin token.
pub fn is_admin(app: &App, header: Option<&str>) -> bool {
    header
        .and_then(|h| h.strip_prefix("Bearer "))
        .is_some_and(|t| constant_time_eq(t.trim().as_bytes(), app.admin_token.as_bytes()))
}

/// The whole body, within [`BODY_READ_TIMEOUT`] (408 after it). The
/// length is bounded by the `content_length_limit` in front of it.
pub fn body_bytes() -> impl Filter<Extract = (bytes::Bytes,), Error = Rejection> + Clone {
    warp::body::stream().and_then(read_body)
}

async fn read_body<S, B>(stream: S) -> Result<bytes::Bytes, Rejection>
where
    S: futures::Stream<Item = Result<B, warp::Error>>,
    B: warp::Buf,
{
    use futures::TryStreamExt;
    let read = stream.try_fold(Vec::new(), |mut all, mut chunk| async move {
        while chunk.has_remaining() {
            let part = chunk.chunk();
            all.extend_from_slice(part);
            let n = part.len();
            chunk.advance(n);
        }
        Ok(all)
    });
    match tokio::time::timeout(BODY_READ_TIMEOUT, read).await {
        Ok(Ok(all)) => Ok(bytes::Bytes::from(all)),
        Ok(Err(e)) => Err(warp::reject::custom(ApiError::bad_request(format!(
            "could not read the body: {e}"
        )))),
        Err(_) => {
            tracing::info!("request body not received within {BODY_READ_TIMEOUT:?}");
            Err(warp::reject::custom(ApiError::new(
                warp::http::StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                format!(
                    "the body did not arrive within {} s",
                    BODY_READ_TIMEOUT.as_secs()
                ),
            )))
        }
    }
}

/// Requires the admin token.
pub fn admin(app: Arc<App>) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    warp::header::optional::<String>("authorization")
        .and(with_app(app))
        .and_then(|h: Option<String>, app: Arc<App>| async move {
            match check_bearer(&app, h)? {
                Caller::Admin => Ok(()),
                Caller::Anonymous => Err(warp::reject::custom(ApiError::unauthorized(
                    "missing Authorization: Bearer <admin token>",
                ))),
            }
        })
        .untuple_one()
}

/// Admin or anonymous; a wrong token is still refused.
pub fn caller(app: Arc<App>) -> impl Filter<Extract = (Caller,), Error = Rejection> + Clone {
    warp::header::optional::<String>("authorization")
        .and(with_app(app))
        .and_then(|h: Option<String>, app: Arc<App>| async move { check_bearer(&app, h) })
}

/// Parses a JSON body: 415 for another content type, 400 for malformed
/// JSON, 422 for JSON of the wrong shape or values.
pub fn parse_json<T: DeserializeOwned>(
    content_type: Option<&str>,
    body: &[u8],
) -> Result<T, ApiError> {
    if let Some(ct) = content_type {
        let mime = ct.split(';').next().unwrap_or("").trim();
        if !mime.eq_ignore_ascii_case("application/json") {
            return Err(ApiError::new(
                warp::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "expected Content-Type: application/json",
            ));
        }
    }
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("malformed JSON: {e}")))?;
    if !value.is_object() {
        return Err(ApiError::unprocessable("expected a JSON object"));
    }
    // serde may quote a value of the body (`invalid type: string "…"`):
    // `ApiError` cuts messages short.
    serde_json::from_value(value).map_err(|e| ApiError::unprocessable(e.to_string()))
}

/// A size-limited JSON body.
pub fn json_body<T: DeserializeOwned + Send>()
-> impl Filter<Extract = (T,), Error = Rejection> + Clone {
    warp::body::content_length_limit(MAX_BODY_BYTES)
        .and(warp::header::optional::<String>("content-type"))
        .and(body_bytes())
        .and_then(|ct: Option<String>, body: bytes::Bytes| async move {
            parse_json::<T>(ct.as_deref(), &body).map_err(warp::reject::custom)
        })
}

/// Like [`json_body`], but no body (or an empty one) gives `T::default()`.
pub fn optional_json_body<T: DeserializeOwned + Default + Send>()
-> impl Filter<Extract = (T,), Error = Rejection> + Clone {
    // No Content-Length and no Transfer-Encoding: there is no body at all.
    let none = warp::header::optional::<u64>("content-length")
        .and(warp::header::optional::<String>("transfer-encoding"))
        .and_then(|len: Option<u64>, te: Option<String>| async move {
            if len.is_none() && te.is_none() {
                Ok(())
            } else {
                Err(warp::reject::not_found())
            }
        })
        .untuple_one()
        .map(T::default);
    let some = warp::body::content_length_limit(MAX_BODY_BYTES)
        .and(warp::header::optional::<String>("content-type"))
        .and(body_bytes())
        .and_then(|ct: Option<String>, body: bytes::Bytes| async move {
            if body.iter().all(u8::is_ascii_whitespace) {
                return Ok(T::default());
            }
            parse_json::<T>(ct.as_deref(), &body).map_err(warp::reject::custom)
        });
    none.or(some).unify()
}

/// Every route, with the JSON error recovery.
pub fn routes(
    app: Arc<App>,
) -> impl Filter<Extract = (impl Reply,), Error = std::convert::Infallible> + Clone {
    let log = warp::log::custom(|info| {
        // Paths never carry tokens (they travel in fragments, bodies and headers).
        tracing::debug!(
            target: "roomcast::http",
            method = %info.method(),
            path = info.path(),
            status = info.status().as_u16(),
            elapsed_ms = info.elapsed().as_millis() as u64,
            "request"
        );
    });
    // Per-address limits first; then HLS: its requests are the most numerous by far.
    ratelimit::guard(app.clone())
        .and(
            live::hls_routes(app.clone())
                .or(rest::routes(app.clone()))
                .or(openapi::route())
                .or(live::routes(app.clone()))
                .or(ws::route(app.clone()))
                .or(web::routes()),
        )
        .recover(errors::recover)
        .with(log)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    struct T {
        #[allow(dead_code)]
        n: u32,
    }

    #[test]
    fn json_errors_have_the_right_status() {
        let s = |r: Result<T, ApiError>| r.unwrap_err().status.as_u16();
        assert_eq!(s(parse_json(Some("text/plain"), b"{}")), 415);
        assert_eq!(s(parse_json(Some("application/json"), b"{")), 400);
        assert_eq!(s(parse_json(None, b"[1]")), 422);
        assert_eq!(s(parse_json(None, br#"{"n": "x"}"#)), 422);
        assert_eq!(s(parse_json(None, br#"{"n": -1}"#)), 422);
        assert!(parse_json::<T>(Some("application/json; charset=utf-8"), br#"{"n": 1}"#).is_ok());
        let quoted = format!(r#"{{"n": "{}"}}"#, "é".repeat(5000));
        let e = parse_json::<T>(None, quoted.as_bytes()).unwrap_err();
        assert!(e.message.len() <= errors::MAX_MESSAGE && e.message.ends_with('…'));
    }

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
