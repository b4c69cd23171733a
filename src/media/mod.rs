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
pub mod forwarder;
pub mod ice;
pub mod layout;
pub mod mixer;
pub mod peer;
pub mod recorder;
pub mod room;
pub mod rtmp;
pub mod rtp;
pub mod sdp;
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
