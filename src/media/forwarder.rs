//! A forwarder carries one track to one subscriber:
//! `tee` src pad → `queue leaky=downstream` → subscriber `webrtcbin` sink pad.
//!
//! The queue is bounded and leaky so that a subscriber that is slow, not yet
//! negotiated or gone can never stall the `tee` and with it everyone else.

use super::{MediaError, make};
use gst::prelude::*;
use gst_webrtc::{WebRTCRTPTransceiver, WebRTCRTPTransceiverDirection};

/// At most this much media waits for a subscriber (older packets are dropped).
const QUEUE_TIME_NS: u64 = 300_000_000;

/// One branch of a track's `tee`.
#[derive(Debug)]
pub struct Forwarder {
    queue: gst::Element,
    tee_pad: gst::Pad,
    sink_pad: gst::Pad,
    /// The subscriber-side transceiver (its `mid` maps the m-line to the track).
    pub transceiver: WebRTCRTPTransceiver,
}

impl Forwarder {
    /// Links `tee` to a new send-only m-line of `subscriber` offering `caps`.
    pub fn link(
        pipeline: &gst::Pipeline,
        tee: &gst::Element,
        subscriber: &gst::Element,
        caps: &gst::Caps,
    ) -> Result<Self, MediaError> {
        let queue = make("queue", None)?;
        queue.set_property_from_str("leaky", "downstream");
        queue.set_property("max-size-buffers", 0u32);
        queue.set_property("max-size-bytes", 0u32);
        queue.set_property("max-size-time", QUEUE_TIME_NS);
        queue.set_property("silent", true);
        pipeline
            .add(&queue)
            .map_err(|e| MediaError::Pipeline(format!("add queue: {e}")))?;

        let fail = |what: &str, queue: &gst::Element| {
            let _ = queue.set_state(gst::State::Null);
            let _ = pipeline.remove(queue);
            MediaError::Pipeline(what.to_owned())
        };
        let Some(templ) = subscriber.pad_template("sink_%u") else {
            return Err(fail("webrtcbin has no sink_%u template", &queue));
        };
        let Some(sink_pad) = subscriber.request_pad(&templ, None, Some(caps)) else {
            return Err(fail("webrtcbin refused a sink pad", &queue));
        };
        let transceiver = sink_pad.property::<WebRTCRTPTransceiver>("transceiver");
        transceiver.set_direction(WebRTCRTPTransceiverDirection::Sendonly);
        transceiver.set_codec_preferences(Some(caps));

        let Some(queue_src) = queue.static_pad("src") else {
            subscriber.release_request_pad(&sink_pad);
            return Err(fail("queue has no src pad", &queue));
        };
        if queue_src.link(&sink_pad).is_err() {
            subscriber.release_request_pad(&sink_pad);
            return Err(fail("cannot link queue to webrtcbin", &queue));
        }
        let _ = queue.sync_state_with_parent();
        let Some(tee_pad) = tee.request_pad_simple("src_%u") else {
            subscriber.release_request_pad(&sink_pad);
            return Err(fail("tee refused a src pad", &queue));
        };
        let linked = queue
            .static_pad("sink")
            .map(|qs| tee_pad.link(&qs).is_ok())
            .unwrap_or(false);
        if !linked {
            tee.release_request_pad(&tee_pad);
            subscriber.release_request_pad(&sink_pad);
            return Err(fail("cannot link tee to queue", &queue));
        }
        Ok(Self {
            queue,
            tee_pad,
            sink_pad,
            transceiver,
        })
    }

    /// Takes the branch down without touching the rest of the room:
    /// the tee stops feeding it first, the m-line becomes inactive, then the
    /// webrtcbin pad is released (which also frees a queue thread blocked on
    /// a not-yet-negotiated pad) and the queue goes away.
    pub fn unlink(self, pipeline: &gst::Pipeline, tee: &gst::Element, subscriber: &gst::Element) {
        tee.release_request_pad(&self.tee_pad);
        self.transceiver
            .set_direction(WebRTCRTPTransceiverDirection::Inactive);
        subscriber.release_request_pad(&self.sink_pad);
        let _ = self.queue.set_state(gst::State::Null);
        let _ = pipeline.remove(&self.queue);
    }

    /// First half of taking down a subscriber webrtcbin as a whole: the tee
    /// stops feeding this branch. Call [`Forwarder::dispose`] once the
    /// webrtcbin is in `Null` (that unblocks a queue waiting on its pad).
    pub fn detach(&self, tee: &gst::Element) {
        tee.release_request_pad(&self.tee_pad);
    }

    /// Second half: the queue goes away.
    pub fn dispose(self, pipeline: &gst::Pipeline) {
        let _ = self.queue.set_state(gst::State::Null);
        let _ = pipeline.remove(&self.queue);
    }
}
