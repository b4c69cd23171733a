//! The one place where every failure becomes `{"error": {"code", "message"}}`
//! with its HTTP status.

use crate::control::ControlError;
use serde::Serialize;
use std::convert::Infallible;
use warp::http::StatusCode;
use warp::reject::Reject;
use warp::{Rejection, Reply};

/// An API error on its way to the client.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// snake_case code.
    pub code: &'static str,
    /// Human text (never contains tokens).
    pub message: String,
    /// `Retry-After` of a 429: when the client may try again.
    pub retry_after: Option<std::time::Duration>,
}

impl Reject for ApiError {}

/// Longest error message: a message may quote what the client sent (an
/// unknown value, a wrong type), which is not sent back or logged whole.
pub const MAX_MESSAGE: usize = 300;

/// `text` cut to at most [`MAX_MESSAGE`] bytes, `…` marking the cut.
fn clip(mut text: String) -> String {
    if text.len() > MAX_MESSAGE {
        let end = text.floor_char_boundary(MAX_MESSAGE - '…'.len_utf8());
        text.truncate(end);
        text.push('…');
    }
    text
}

impl ApiError {
    /// Builds an error.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: clip(message.into()),
            retry_after: None,
        }
    }

    /// 400.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 401.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 404.
    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }

    /// 422.
    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", message)
    }

    /// 429, with the wait before the next request is allowed (`Retry-After`).
    pub fn rate_limited(retry_after: std::time::Duration) -> Self {
        Self {
            retry_after: Some(retry_after),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many requests from this address, slow down",
            )
        }
    }
}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> Self {
        let status = match &e {
            ControlError::NotFound(_) => StatusCode::NOT_FOUND,
            ControlError::RoomClosed
            | ControlError::RoomLocked
            | ControlError::RoomFull
            | ControlError::AlreadyRecording
            | ControlError::Conflict(..) => StatusCode::CONFLICT,
            ControlError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ControlError::Forbidden(_) | ControlError::Banned => StatusCode::FORBIDDEN,
            ControlError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            ControlError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ControlError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ControlError::Store(_) | ControlError::Media(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status.is_server_error() {
            tracing::error!("request failed: {e}");
        }
        let message = if status.is_server_error() {
            "internal error".to_owned()
        } else {
            e.to_string()
        };
        let mut api = ApiError::new(status, e.code(), message);
        if matches!(e, ControlError::RateLimited(_)) {
            // A cap on open rooms: one frees when a room closes.
            api.retry_after = Some(std::time::Duration::from_secs(60));
        }
        api
    }
}

impl From<ControlError> for Rejection {
    fn from(e: ControlError) -> Self {
        warp::reject::custom(ApiError::from(e))
    }
}

/// Message of the 404 for a method and path that no route serves (an
/// unknown id answers `"<what> not found"` instead).
pub const UNKNOWN_ROUTE: &str = "no such endpoint (see /api/openapi.json)";

/// The body of every error answer; also the `Error` schema of the OpenAPI document.
#[derive(Serialize, schemars::JsonSchema)]
#[schemars(rename = "Error")]
pub(super) struct Body<'a> {
    error: Inner<'a>,
}

/// What went wrong.
#[derive(Serialize, schemars::JsonSchema)]
#[schemars(rename = "ErrorDetail")]
struct Inner<'a> {
    /// Stable snake_case code (`not_found`, `room_locked`, `invalid_request`, …).
    code: &'a str,
    /// Human text; never contains a token.
    message: &'a str,
}

/// The JSON error reply.
pub fn reply(e: &ApiError) -> warp::reply::Response {
    let body = Body {
        error: Inner {
            code: e.code,
            message: &e.message,
        },
    };
    let mut resp = warp::reply::with_status(warp::reply::json(&body), e.status).into_response();
    if let Some(after) = e.retry_after {
        // Whole seconds, rounded up: `Retry-After: 0` would invite an instant retry.
        let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
        resp.headers_mut().insert(
            warp::http::header::RETRY_AFTER,
            warp::http::HeaderValue::from(secs.max(1)),
        );
    }
    resp
}

/// Turns every rejection into the JSON error shape.
pub async fn recover(r: Rejection) -> Result<warp::reply::Response, Infallible> {
    // `find` looks through every route's rejection, so test the most specific
    // reasons first and the catch-alls (405, 404) last.
    let e = if let Some(e) = r.find::<ApiError>() {
        e.clone()
    } else if r.find::<warp::reject::PayloadTooLarge>().is_some() {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "request body too large",
        )
    } else if r.find::<warp::reject::LengthRequired>().is_some() {
        ApiError::new(
            StatusCode::LENGTH_REQUIRED,
            "length_required",
            "Content-Length required",
        )
    } else if r.find::<warp::reject::UnsupportedMediaType>().is_some() {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "unsupported content type",
        )
    } else if let Some(h) = r.find::<warp::reject::MissingHeader>() {
        ApiError::bad_request(format!("missing header {}", h.name()))
    } else if let Some(h) = r.find::<warp::reject::InvalidHeader>() {
        ApiError::bad_request(format!("invalid header {}", h.name()))
    } else if r.find::<warp::reject::InvalidQuery>().is_some() {
        ApiError::bad_request("invalid query string")
    } else if r
        .find::<warp::filters::ws::MissingConnectionUpgrade>()
        .is_some()
    {
        ApiError::bad_request("WebSocket upgrade expected")
    } else if r.find::<warp::reject::MethodNotAllowed>().is_some() {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "method not allowed",
        )
    } else if r.is_not_found() {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", UNKNOWN_ROUTE)
    } else {
        tracing::warn!("unhandled rejection: {r:?}");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error",
        )
    };
    if e.status.is_client_error() {
        tracing::debug!(
            status = e.status.as_u16(),
            code = e.code,
            "request refused: {}",
            e.message
        );
    }
    Ok(reply(&e))
}
