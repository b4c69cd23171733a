//! Media plane: the only layer that touches GStreamer.
//!
//! A room is one `gst::Pipeline` ([`RoomMedia`]). Each participant has two
//! `webrtcbin`s (publish: the client offers; subscribe: the server offers);
//! every published track ends in a `tee`, and a [`forwarder`] (`queue
//! leaky=downstream` → subscriber `webrtcbin` sink pad) carries it to each
//! subscriber without decoding.

pub mod audio_level;
pub mod broadcast;
pub mod codecs;
pub mod egress;
pub mod forwarder;
pub mod gst_log;
pub mod heap;
pub mod hls;
pub mod ice;
pub mod layout;
pub mod mixer;
pub mod peer;
pub mod recorder;
pub mod room;
pub mod rtmp;
pub mod rtp;
pub mod sdp;
pub mod stats;
pub mod whep;

pub use room::{
    BroadcastInput, BuiltBroadcast, MediaEvent, PeerState, RoomMedia, SubscribeOffer, TrackKind,
};

/// A media-plane failure.
#[derive(Debug, Clone, thiserror::Error)]
pub enum MediaError {
    /// A GStreamer element is missing: the installation is incomplete.
    #[error("GStreamer element {0:?} is not available (install the GStreamer plugins; see README)")]
    MissingElement(String),
    /// Building or linking the pipeline failed.
    #[error("pipeline error: {0}")]
    Pipeline(String),
    /// The client's SDP was refused.
    #[error("invalid SDP: {0}")]
    BadSdp(String),
    /// Offer/answer failed.
    #[error("negotiation failed: {0}")]
    Negotiation(String),
    /// The participant has no media session (left meanwhile).
    #[error("no media session for this participant")]
    NoPeer,
}

impl From<sdp::SdpError> for MediaError {
    fn from(e: sdp::SdpError) -> Self {
        MediaError::BadSdp(e.to_string())
    }
}

/// Elements the SFU cannot run without.
pub const REQUIRED_ELEMENTS: &[&str] = &[
    "webrtcbin",
    "nicesrc",
    "nicesink",
    "dtlssrtpenc",
    "srtpenc",
    "rtpbin",
    "tee",
    "queue",
    "fakesink",
];

/// Initialises GStreamer and checks that every required element is installed,
/// so a missing plugin is a clear start-up error instead of a hang later.
pub fn init() -> Result<String, MediaError> {
    gst::init().map_err(|e| MediaError::Pipeline(format!("gst::init: {e}")))?;
    for name in REQUIRED_ELEMENTS {
        if gst::ElementFactory::find(name).is_none() {
            return Err(MediaError::MissingElement((*name).to_owned()));
        }
    }
    Ok(gst::version_string().to_string())
}

/// Makes an element or says which one is missing.
pub fn make(factory: &str, name: Option<&str>) -> Result<gst::Element, MediaError> {
    let mut b = gst::ElementFactory::make(factory);
    if let Some(n) = name {
        b = b.name(n);
    }
    b.build()
        .map_err(|_| MediaError::MissingElement(factory.to_owned()))
}

/// Stops `elements` and takes them out of `pipeline` on a thread of their
/// own (named `what`), after `delay`: never on a room task, which holds the
/// room's lock a streaming thread of these elements may be waiting for.
/// Their memory then goes back to the system ([`heap::released`]).
pub fn tear_down_later(
    pipeline: &gst::Pipeline,
    elements: Vec<gst::Element>,
    delay: std::time::Duration,
    what: &str,
) {
    if elements.is_empty() {
        return;
    }
    let pipeline = pipeline.clone();
    let spawned = std::thread::Builder::new()
        .name(what.to_owned())
        .spawn(move || {
            if !delay.is_zero() {
                std::thread::sleep(delay);
            }
            for e in &elements {
                stop_and_remove(&pipeline, e);
            }
            drop(elements);
            heap::released();
        });
    if let Err(e) = spawned {
        tracing::error!("cannot start a teardown thread ({what}): {e}");
    }
}

/// Stops `element` and takes it out of `pipeline`. Its state is locked
/// first: a state change of the whole pipeline running at the same time
/// (the room closing while a participant leaves) would otherwise bring the
/// stopped element back to PAUSED before it is removed, and it would be
/// disposed running.
pub fn stop_and_remove(pipeline: &gst::Pipeline, element: &gst::Element) {
    use gst::prelude::*;
    element.set_locked_state(true);
    let _ = element.set_state(gst::State::Null);
    let _ = pipeline.remove(element);
}

/// Gives `bin` a sink ghost pad `name` (onto the bin's unlinked sink pad
/// `name`) that never hands a flow error back upstream: whatever goes wrong
/// inside the bin — formats that do not match, a sink that cannot write, a
/// branch shutting down — the `tee` feeding it sees `Ok` and goes on feeding
/// everyone else. Without it one output's `not-negotiated` or `error`
/// reaches the tee and stops its source: the publisher's stream or the
/// room's mixer, for every output at once. A caps event the bin refuses is
/// acknowledged too (a refused sticky event fails the next push the same
/// way). The bin's own elements still post their errors on the bus, where
/// the room ends that output. Returns the new pad.
pub fn isolating_sink(bin: &gst::Bin, name: &str) -> Result<gst::Pad, MediaError> {
    use gst::prelude::*;
    let fail = |what: &str| MediaError::Pipeline(format!("{}: {what}", bin.name()));
    let target = match bin
        .static_pad(name)
        .and_then(|p| p.downcast::<gst::GhostPad>().ok())
    {
        // `parse::bin_from_description(…, true)` ghosted it already.
        Some(old) => {
            let target = old
                .target()
                .ok_or_else(|| fail("ghost pad without target"))?;
            old.set_target(None::<&gst::Pad>)
                .map_err(|_| fail("cannot retarget the sink pad"))?;
            bin.remove_pad(&old)
                .map_err(|_| fail("cannot remove the sink pad"))?;
            target
        }
        None => bin
            .find_unlinked_pad(gst::PadDirection::Sink)
            .ok_or_else(|| fail("no unlinked sink pad"))?,
    };
    isolating_ghost(bin, name, &target)
}

/// Adds to `bin` a sink ghost pad `name` onto `target` that keeps flow
/// errors from going upstream (see [`isolating_sink`]).
pub fn isolating_ghost(
    bin: &gst::Bin,
    name: &str,
    target: &gst::Pad,
) -> Result<gst::Pad, MediaError> {
    use gst::prelude::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let fail = |what: &str| MediaError::Pipeline(format!("{}: {what}", bin.name()));
    let reported = Arc::new(AtomicBool::new(false));
    let label = bin.name().to_string();
    let absorb = move |r: Result<gst::FlowSuccess, gst::FlowError>| match r {
        Ok(s) => Ok(s),
        Err(gst::FlowError::Flushing | gst::FlowError::Eos) => Ok(gst::FlowSuccess::Ok),
        Err(e) => {
            if !reported.swap(true, Ordering::Relaxed) {
                tracing::warn!(branch = %label, "output branch failed ({e:?}); its input is dropped from now on");
            }
            Ok(gst::FlowSuccess::Ok)
        }
    };
    let absorb_list = absorb.clone();
    let ghost = gst::GhostPad::builder_with_target(target)
        .map_err(|_| fail("cannot ghost the sink pad"))?
        .name(name)
        .chain_function(move |pad, parent, buffer| {
            absorb(gst::ProxyPad::chain_default(pad, parent, buffer))
        })
        .chain_list_function(move |pad, parent, list| {
            absorb_list(gst::ProxyPad::chain_list_default(pad, parent, list))
        })
        .event_function(|pad, parent, event| {
            let caps = event.type_() == gst::EventType::Caps;
            gst::Pad::event_default(pad, parent, event) || caps
        })
        .build();
    bin.add_pad(&ghost)
        .map_err(|_| fail("cannot add the sink pad"))?;
    Ok(ghost.upcast())
}
