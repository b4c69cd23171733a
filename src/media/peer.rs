//! One `webrtcbin` and the offer/answer calls made on it.
//!
//! All calls go through GStreamer promises awaited on tokio; nothing here
//! blocks a streaming thread. Signal handlers live in `room.rs` and only
//! forward typed events.

use super::MediaError;
use gst::prelude::*;
use gst_webrtc::{WebRTCSDPType, WebRTCSessionDescription};

/// Longest wait for a webrtcbin promise.
const PROMISE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Emits a promise-taking action signal and waits for its reply.
async fn call(
    webrtcbin: &gst::Element,
    signal: &str,
    arg: Option<&WebRTCSessionDescription>,
) -> Result<Option<gst::Structure>, MediaError> {
    let (promise, fut) = gst::Promise::new_future();
    match arg {
        Some(desc) => webrtcbin.emit_by_name::<()>(signal, &[desc, &promise]),
        None => webrtcbin.emit_by_name::<()>(signal, &[&None::<gst::Structure>, &promise]),
    }
    // webrtcbin answers within milliseconds; a promise that never resolves
    // must not hang the room task that awaits it.
    let reply = tokio::time::timeout(PROMISE_TIMEOUT, fut)
        .await
        .map_err(|_| {
            MediaError::Negotiation(format!("{signal}: no reply within {PROMISE_TIMEOUT:?}"))
        })?
        .map_err(|e| MediaError::Negotiation(format!("{signal}: {e:?}")))?;
    let Some(reply) = reply else {
        return Ok(None);
    };
    if let Ok(err) = reply.get::<gst::glib::Error>("error") {
        return Err(MediaError::Negotiation(format!(
            "{signal}: {}",
            err.message()
        )));
    }
    Ok(Some(reply.to_owned()))
}

/// Parses SDP text into a session description of `kind`.
pub fn parse_description(
    kind: WebRTCSDPType,
    sdp: &str,
) -> Result<WebRTCSessionDescription, MediaError> {
    // GStreamer asserts on an empty buffer (a GLib critical, fatal under
    // G_DEBUG=fatal-criticals): refuse it here.
    if sdp.trim().is_empty() {
        return Err(MediaError::BadSdp("empty SDP".into()));
    }
    let msg = gst_sdp::SDPMessage::parse_buffer(sdp.as_bytes())
        .map_err(|_| MediaError::BadSdp("unparsable SDP".into()))?;
    if msg.medias_len() == 0 {
        return Err(MediaError::BadSdp("SDP has no media section".into()));
    }
    Ok(WebRTCSessionDescription::new(kind, msg))
}

/// Applies a remote description.
pub async fn set_remote(
    webrtcbin: &gst::Element,
    desc: &WebRTCSessionDescription,
) -> Result<(), MediaError> {
    call(webrtcbin, "set-remote-description", Some(desc))
        .await
        .map(|_| ())
}

/// Applies a local description.
pub async fn set_local(
    webrtcbin: &gst::Element,
    desc: &WebRTCSessionDescription,
) -> Result<(), MediaError> {
    call(webrtcbin, "set-local-description", Some(desc))
        .await
        .map(|_| ())
}

/// Creates an offer (`field` = "offer") or answer (`field` = "answer") and sets it locally.
pub async fn create_and_set_local(
    webrtcbin: &gst::Element,
    field: &str,
) -> Result<String, MediaError> {
    create_and_set_local_with(webrtcbin, field, |sdp| sdp).await
}

/// Like [`create_and_set_local`], letting `edit` change the SDP text before
/// it is set (for what webrtcbin 1.22 cannot express itself).
pub async fn create_and_set_local_with(
    webrtcbin: &gst::Element,
    field: &str,
    edit: impl FnOnce(String) -> String,
) -> Result<String, MediaError> {
    let signal = if field == "offer" {
        "create-offer"
    } else {
        "create-answer"
    };
    let reply = call(webrtcbin, signal, None)
        .await?
        .ok_or_else(|| MediaError::Negotiation(format!("{signal}: empty reply")))?;
    let desc = reply
        .get::<WebRTCSessionDescription>(field)
        .map_err(|_| MediaError::Negotiation(format!("{signal}: no {field} in reply")))?;
    let text = desc
        .sdp()
        .as_text()
        .map_err(|e| MediaError::Negotiation(format!("{signal}: {e}")))?;
    let edited = edit(text.clone());
    if edited == text {
        set_local(webrtcbin, &desc).await?;
    } else {
        set_local(webrtcbin, &parse_description(desc.type_(), &edited)?).await?;
    }
    Ok(edited)
}

/// Adds a remote trickled candidate; an empty candidate marks the end.
pub fn add_candidate(webrtcbin: &gst::Element, mline: u32, candidate: &str) {
    let candidate = candidate.strip_prefix("a=").unwrap_or(candidate);
    if candidate.is_empty() {
        return;
    }
    webrtcbin.emit_by_name::<()>("add-ice-candidate", &[&mline, &candidate]);
}

/// Whether a client-sent candidate looks like one (webrtcbin logs and drops junk,
/// but we answer the client with an error instead).
pub fn candidate_is_plausible(candidate: &str) -> bool {
    let c = candidate.strip_prefix("a=").unwrap_or(candidate);
    c.is_empty()
        || (c.starts_with("candidate:")
            && c.len() <= 1024
            && c.split_whitespace().count() >= 8
            && !c.contains(['\r', '\n', '\0']))
}
