//! A forwarder carries one track to one subscriber: a `tee` src pad linked
//! straight to a send-only sink pad of the subscriber's `webrtcbin`.
//!
//! There is no queue (and so no thread) per forwarder: the publisher's
//! streaming thread pushes each packet through every subscriber's SRTP and
//! UDP send, which never block. The one thing that would block — webrtcbin
//! holds unnegotiated sink pads — is avoided by linking only once the
//! subscriber's answer has been applied ([`Forwarder::connect`]). Until then
//! the forwarder is just an m-line waiting to be negotiated.
//!
//! A forwarder can be paused (last-N, server-side mute): a pad probe drops
//! its packets before they reach the subscriber, without renegotiation.
//! When it resumes, sequence numbers are shifted so the subscriber sees no
//! gap (a gap would read as loss: NACKs, concealment); only a stream that
//! has been paused once pays for the rewrite (one copy per packet).
//!
//! The gate also counts what passes (bytes and packets out, per kind, for
//! `/metrics`): two relaxed atomic adds per packet, nothing more.
//!
//! When a track ends, its m-line is *parked*, not taken down: the tee lets
//! go, the send-only sink pad and its transceiver stay, and the next track
//! of the same kind and codec forwarded to that subscriber takes the line
//! over ([`Forwarder::recycle`]; the next offer carries the new SSRC). A
//! subscriber then has as many m-lines as tracks it ever received at once,
//! not as many as were ever published: webrtcbin 1.22 can neither stop a
//! transceiver nor turn an inactive one back on, and keeps every
//! transceiver (with its FEC/RED encoder bin) until the connection ends,
//! so a call with people coming and going grew without bound.

use super::MediaError;
use super::rtp::TrackKind;
use super::stats::{self, Flow};
use gst::prelude::*;
use gst_webrtc::{WebRTCRTPTransceiver, WebRTCRTPTransceiverDirection};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Sequence-number continuity across pauses.
#[derive(Debug, Default)]
struct Continuity {
    /// Subtracted from every sequence number.
    offset: u16,
    /// Last sequence number sent (after the offset).
    last_sent: Option<u16>,
    /// Packets were dropped since the last one sent.
    gap: bool,
}

impl Continuity {
    /// Returns the sequence number to send for `seq`.
    fn map(&mut self, seq: u16) -> u16 {
        if self.gap {
            self.gap = false;
            if let Some(last) = self.last_sent {
                self.offset = seq.wrapping_sub(last.wrapping_add(1));
            }
        }
        let out = seq.wrapping_sub(self.offset);
        self.last_sent = Some(out);
        out
    }
}

/// Applies the gate to one packet: `false` drops it.
fn pass(buffer: &mut gst::Buffer, paused: &AtomicBool, continuity: &Mutex<Continuity>) -> bool {
    let mut c = continuity.lock().unwrap_or_else(|p| p.into_inner());
    if paused.load(Ordering::Relaxed) {
        c.gap = true;
        return false;
    }
    let Some(seq) = buffer
        .map_readable()
        .ok()
        .filter(|m| m.len() >= 12)
        .map(|m| u16::from_be_bytes([m[2], m[3]]))
    else {
        return true;
    };
    let out = c.map(seq);
    if out != seq {
        let b = buffer.make_mut();
        if let Ok(mut m) = b.map_writable() {
            m[2..4].copy_from_slice(&out.to_be_bytes());
        }
    }
    true
}

/// One branch of a track's `tee`.
#[derive(Debug)]
pub struct Forwarder {
    /// The track's tee (`None` while parked: a parked line keeps no ended
    /// track's elements alive).
    tee: Option<gst::Element>,
    sink_pad: gst::Pad,
    tee_pad: Option<gst::Pad>,
    paused: Arc<AtomicBool>,
    /// The subscriber-side transceiver (its `mid` maps the m-line to the track).
    pub transceiver: WebRTCRTPTransceiver,
    /// Where the packets that pass are counted.
    sent: &'static Flow,
    /// Media kind and codec of the m-line (a parked line takes only these).
    format: (TrackKind, String),
    /// Recycled, and no offer has announced the new track yet: an answer to
    /// an earlier offer must not start the flow (unlike a new m-line, a
    /// recycled one is negotiated already, so webrtcbin would not hold it).
    unannounced: bool,
}

/// Kind and codec (`encoding-name`) of RTP caps.
fn format_of(caps: &gst::Caps) -> (TrackKind, String) {
    let codec = caps
        .structure(0)
        .and_then(|s| s.get::<&str>("encoding-name").ok())
        .unwrap_or_default()
        .to_ascii_uppercase();
    (kind_of(caps), codec)
}

/// Audio or video, from the `media` field of RTP caps (video when absent).
fn kind_of(caps: &gst::Caps) -> TrackKind {
    match caps.structure(0).and_then(|s| s.get::<&str>("media").ok()) {
        Some("audio") => TrackKind::Audio,
        _ => TrackKind::Video,
    }
}

impl Forwarder {
    /// Adds a send-only m-line for `caps` to `subscriber`, fed later from `tee`.
    pub fn prepare(
        tee: &gst::Element,
        subscriber: &gst::Element,
        caps: &gst::Caps,
    ) -> Result<Self, MediaError> {
        let templ = subscriber
            .pad_template("sink_%u")
            .ok_or_else(|| MediaError::Pipeline("webrtcbin has no sink_%u template".into()))?;
        let sink_pad = subscriber
            .request_pad(&templ, None, Some(caps))
            .ok_or_else(|| MediaError::Pipeline("webrtcbin refused a sink pad".into()))?;
        let transceiver = sink_pad.property::<WebRTCRTPTransceiver>("transceiver");
        transceiver.set_direction(WebRTCRTPTransceiverDirection::Sendonly);
        // webrtcbin takes the offer's (or answer's) caps from the codec
        // preferences while the pad is not linked yet.
        transceiver.set_codec_preferences(Some(caps));
        Ok(Self {
            tee: Some(tee.clone()),
            sink_pad,
            tee_pad: None,
            paused: Arc::new(AtomicBool::new(false)),
            transceiver,
            sent: stats::sent(kind_of(caps)),
            format: format_of(caps),
            unannounced: false,
        })
    }

    /// Whether this (parked) m-line can carry a track with `caps`: same
    /// kind and codec, so the negotiated format stays valid.
    pub fn can_carry(&self, caps: &gst::Caps) -> bool {
        self.format == format_of(caps)
    }

    /// Gives a parked m-line to another track, fed later from `tee` (as
    /// with a new one, media flows after [`Forwarder::connect`]). The new
    /// caps go into the m-line at once, so the next offer already
    /// announces the new SSRC; on failure the line stays parked.
    pub fn recycle(&mut self, tee: &gst::Element, caps: &gst::Caps) -> Result<(), MediaError> {
        debug_assert!(self.tee.is_none(), "recycling a line in use");
        // A line whose first track went before it ever flowed has seen no
        // stream-start yet, and caps must not come first.
        if self
            .sink_pad
            .sticky_event::<gst::event::StreamStart>(0)
            .is_none()
        {
            let id = format!("roomcast-{}", self.sink_pad.name());
            self.sink_pad.send_event(gst::event::StreamStart::new(&id));
        }
        // The pad accepts only caps that match the codec preferences.
        let before = self.transceiver.codec_preferences();
        self.transceiver.set_codec_preferences(Some(caps));
        if !self.sink_pad.send_event(gst::event::Caps::new(caps)) {
            self.transceiver.set_codec_preferences(before.as_ref());
            return Err(MediaError::Pipeline(
                "the parked m-line refused the new caps".into(),
            ));
        }
        self.tee = Some(tee.clone());
        self.paused.store(false, Ordering::Relaxed);
        self.unannounced = true;
        Ok(())
    }

    /// An offer carried the m-line with its current track.
    pub fn announced(&mut self) {
        self.unannounced = false;
    }

    /// Whether the answer to the latest offer may start the flow.
    pub fn can_connect(&self) -> bool {
        !self.unannounced
    }

    /// Whether media flows into the m-line (it was negotiated and linked).
    pub fn is_connected(&self) -> bool {
        self.tee_pad.is_some()
    }

    /// Links the tee to the negotiated m-line. Call after the answer was applied.
    pub fn connect(&mut self) -> Result<(), MediaError> {
        if self.tee_pad.is_some() {
            return Ok(());
        }
        let tee = self
            .tee
            .clone()
            .ok_or_else(|| MediaError::Pipeline("a parked m-line has no track".into()))?;
        let tee_pad = tee
            .request_pad_simple("src_%u")
            .ok_or_else(|| MediaError::Pipeline("tee refused a src pad".into()))?;
        let paused = self.paused.clone();
        let continuity = Arc::new(Mutex::new(Continuity::default()));
        let sent = self.sent;
        tee_pad.add_probe(
            gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST,
            move |_, info| match &mut info.data {
                Some(gst::PadProbeData::Buffer(buffer)) => {
                    if pass(buffer, &paused, &continuity) {
                        sent.count(buffer.size());
                        gst::PadProbeReturn::Ok
                    } else {
                        gst::PadProbeReturn::Drop
                    }
                }
                Some(gst::PadProbeData::BufferList(list)) => {
                    let list = list.make_mut();
                    list.foreach_mut(|mut b, _| {
                        if pass(&mut b, &paused, &continuity) {
                            sent.count(b.size());
                            std::ops::ControlFlow::Continue(Some(b))
                        } else {
                            std::ops::ControlFlow::Continue(None)
                        }
                    });
                    if list.is_empty() {
                        gst::PadProbeReturn::Drop
                    } else {
                        gst::PadProbeReturn::Ok
                    }
                }
                _ => gst::PadProbeReturn::Ok,
            },
        );
        if let Err(e) = tee_pad.link(&self.sink_pad) {
            tee.release_request_pad(&tee_pad);
            return Err(MediaError::Pipeline(format!(
                "link tee to webrtcbin: {e:?}"
            )));
        }
        self.tee_pad = Some(tee_pad);
        Ok(())
    }

    /// Stops or resumes the flow; returns whether the state changed.
    pub fn set_paused(&self, paused: bool) -> bool {
        self.paused.swap(paused, Ordering::Relaxed) != paused
    }

    /// Whether the flow is paused.
    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Relaxed)
    }

    /// Stops feeding the m-line: the tee lets go of the branch. Must happen
    /// before the subscriber's webrtcbin is taken down.
    pub fn detach(&mut self) {
        if let (Some(pad), Some(tee)) = (self.tee_pad.take(), &self.tee) {
            tee.release_request_pad(&pad);
        }
    }

    /// Detaches the line from its ended track and keeps it for
    /// [`Forwarder::recycle`]; nothing else is needed: the line stays
    /// send-only and silent until another track takes it.
    pub fn park(&mut self) {
        self.detach();
        self.tee = None;
    }

    /// Takes the branch down for good (a parked line that refused a new
    /// track, a subscriber gone meanwhile; otherwise lines are parked): the
    /// tee lets go first, then the m-line becomes inactive (webrtcbin 1.22
    /// can neither stop a transceiver nor activate it again) and its pad is
    /// released. No EOS goes into webrtcbin: with BUNDLE it would end every
    /// stream of the session.
    pub fn remove(mut self, subscriber: &gst::Element) {
        self.detach();
        self.transceiver
            .set_direction(WebRTCRTPTransceiverDirection::Inactive);
        subscriber.release_request_pad(&self.sink_pad);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_numbers_stay_continuous_across_pauses() {
        let mut c = Continuity::default();
        assert_eq!(c.map(100), 100);
        assert_eq!(c.map(101), 101);
        // 50 packets dropped while paused.
        c.gap = true;
        assert_eq!(c.map(152), 102);
        assert_eq!(c.map(153), 103);
        // Again, across the 16-bit wrap.
        c.gap = true;
        assert_eq!(c.map(5), 104);
        assert_eq!(c.map(6), 105);
        // A gap with nothing sent before keeps numbers as they are.
        let mut fresh = Continuity {
            gap: true,
            ..Default::default()
        };
        assert_eq!(fresh.map(7), 7);
    }
}
