//! Media counters for `/metrics`: RTP bytes and packets in and out, packet
//! loss, pipeline errors.
//!
//! Costs, by design:
//! - bytes/packets in: two relaxed atomic adds per packet in the probe that
//!   already sits on every publisher pad (before its `tee`);
//! - bytes/packets out: two relaxed atomic adds per packet per subscriber in
//!   the forwarder's gate probe, which already runs for every packet;
//! - loss: no per-packet work at all. Every few seconds the room task asks
//!   each webrtcbin for its `get-stats` (answered on webrtcbin's own thread);
//!   the reply's cumulative `packets-lost` of `inbound-rtp` (what the server
//!   did not receive from publishers) and `remote-inbound-rtp` (what
//!   subscribers and viewers say, in RTCP receiver reports, they did not
//!   receive from the server) become counters here. In: the jitterbuffer's
//!   count of packets given up on (after retransmission requests). Out:
//!   webrtcbin 1.22 keeps only the latest report block per receiver, so each
//!   sample sees one of a subscriber's streams; every stream's cumulative
//!   loss is caught up on the next time its block is the latest — a lower
//!   bound between samples, never an overcount.
//!
//! Counters are process-wide and only go up, so a participant leaving never
//! makes them fall (what Prometheus' `rate()` expects).

use super::TrackKind;
use gst::prelude::*;
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes and packets of one direction and kind.
#[derive(Debug, Default)]
pub struct Flow {
    bytes: AtomicU64,
    packets: AtomicU64,
}

impl Flow {
    const fn new() -> Self {
        Self {
            bytes: AtomicU64::new(0),
            packets: AtomicU64::new(0),
        }
    }

    /// Counts one packet of `bytes` bytes.
    #[inline]
    pub fn count(&self, bytes: usize) {
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        self.packets.fetch_add(1, Ordering::Relaxed);
    }

    fn read(&self) -> FlowTotals {
        FlowTotals {
            bytes: self.bytes.load(Ordering::Relaxed),
            packets: self.packets.load(Ordering::Relaxed),
        }
    }
}

/// Which part of a room's pipeline an error came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Branch {
    /// A participant's webrtcbin (publish or subscribe).
    Participant,
    /// A recording branch.
    Recording,
    /// A broadcast's outputs (HLS, encoders, RTMP appsinks).
    Broadcast,
    /// A WHEP viewer's webrtcbin.
    Viewer,
    /// An RTMP target's own pipeline.
    Rtmp,
    /// Anything else (the mixer, a tee).
    Other,
}

impl Branch {
    const ALL: [Branch; 6] = [
        Branch::Participant,
        Branch::Recording,
        Branch::Broadcast,
        Branch::Viewer,
        Branch::Rtmp,
        Branch::Other,
    ];

    fn index(self) -> usize {
        match self {
            Branch::Participant => 0,
            Branch::Recording => 1,
            Branch::Broadcast => 2,
            Branch::Viewer => 3,
            Branch::Rtmp => 4,
            Branch::Other => 5,
        }
    }

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Branch::Participant => "participant",
            Branch::Recording => "recording",
            Branch::Broadcast => "broadcast",
            Branch::Viewer => "viewer",
            Branch::Rtmp => "rtmp",
            Branch::Other => "other",
        }
    }
}

static RECEIVED: [Flow; 2] = [Flow::new(), Flow::new()];
static SENT: [Flow; 2] = [Flow::new(), Flow::new()];
static LOST_IN: AtomicU64 = AtomicU64::new(0);
static LOST_OUT: AtomicU64 = AtomicU64::new(0);
static ERRORS: [AtomicU64; 6] = [
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
];

fn kind_index(kind: TrackKind) -> usize {
    match kind {
        TrackKind::Audio => 0,
        TrackKind::Video => 1,
    }
}

/// RTP received from publishers (counted before the track's `tee`).
pub fn received(kind: TrackKind) -> &'static Flow {
    &RECEIVED[kind_index(kind)]
}

/// RTP handed to subscribers' and viewers' webrtcbins (counted at the
/// forwarder's gate: paused forwarders send nothing and count nothing).
pub fn sent(kind: TrackKind) -> &'static Flow {
    &SENT[kind_index(kind)]
}

/// Counts a GStreamer ERROR message of a room's bus or an RTMP pipeline.
pub fn pipeline_error(branch: Branch) {
    ERRORS[branch.index()].fetch_add(1, Ordering::Relaxed);
}

/// Bytes and packets so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlowTotals {
    /// RTP bytes (header and payload; no SRTP, UDP or IP overhead).
    pub bytes: u64,
    /// RTP packets.
    pub packets: u64,
}

/// Every media counter, as plain numbers (for the control layer's `/metrics`).
#[derive(Debug, Clone, Default)]
pub struct MediaTotals {
    /// From publishers: `(kind, totals)`.
    pub received: Vec<(TrackKind, FlowTotals)>,
    /// To subscribers and viewers: `(kind, totals)`.
    pub sent: Vec<(TrackKind, FlowTotals)>,
    /// Packets publishers sent that the server never received.
    pub lost_in: u64,
    /// Packets subscribers and viewers report lost (RTCP receiver reports).
    pub lost_out: u64,
    /// GStreamer ERROR messages by branch.
    pub errors: Vec<(Branch, u64)>,
}

/// Reads every counter.
pub fn totals() -> MediaTotals {
    let kinds = [TrackKind::Audio, TrackKind::Video];
    MediaTotals {
        received: kinds.iter().map(|k| (*k, received(*k).read())).collect(),
        sent: kinds.iter().map(|k| (*k, sent(*k).read())).collect(),
        lost_in: LOST_IN.load(Ordering::Relaxed),
        lost_out: LOST_OUT.load(Ordering::Relaxed),
        errors: Branch::ALL
            .iter()
            .map(|b| (*b, ERRORS[b.index()].load(Ordering::Relaxed)))
            .collect(),
    }
}

/// Turns one webrtcbin's cumulative per-stream loss reports into increments
/// of the process-wide counters. A stream's `packets-lost` can fall (a late
/// packet or a retransmission arrives after it was counted lost); only rises
/// above the highest value seen are counted, so the counter never goes back.
#[derive(Debug, Default)]
pub struct LossTracker {
    /// Stats id (one per stream and direction) → highest `packets-lost` seen.
    highest: Mutex<HashMap<String, i64>>,
}

impl LossTracker {
    /// Records stream `id`'s cumulative loss; returns the new packets lost.
    fn update(&self, id: &str, lost: i64) -> u64 {
        let mut highest = self.highest.lock().unwrap_or_else(|p| p.into_inner());
        match highest.get_mut(id) {
            Some(h) if lost > *h => {
                let delta = lost - *h;
                *h = lost;
                delta as u64
            }
            Some(_) => 0,
            None => {
                highest.insert(id.to_owned(), lost.max(0));
                lost.max(0) as u64
            }
        }
    }

    /// Records the cumulative loss a viewer reports for stream `id` of ours
    /// (RTCP receiver reports) into the sent-loss counter.
    pub fn count_sent_loss(&self, id: &str, lost: i64) {
        let new = self.update(id, lost);
        if new > 0 {
            LOST_OUT.fetch_add(new, Ordering::Relaxed);
        }
    }

    /// Takes a `get-stats` reply into the counters.
    fn absorb(&self, reply: &gst::StructureRef) {
        let (mut inbound, mut remote_inbound) = (0u32, 0u32);
        for (id, value) in reply.iter() {
            let Ok(stat) = value.get::<gst::Structure>() else {
                continue;
            };
            let (counter, seen) = match stat.get::<gst_webrtc::WebRTCStatsType>("type") {
                Ok(gst_webrtc::WebRTCStatsType::InboundRtp) => (&LOST_IN, &mut inbound),
                Ok(gst_webrtc::WebRTCStatsType::RemoteInboundRtp) => {
                    (&LOST_OUT, &mut remote_inbound)
                }
                _ => continue,
            };
            if let Some(lost) = int_field(&stat, "packets-lost") {
                *seen += 1;
                let new = self.update(id.as_str(), lost);
                if new > 0 {
                    counter.fetch_add(new, Ordering::Relaxed);
                }
            }
        }
        tracing::trace!(inbound, remote_inbound, "loss sampled");
    }
}

/// An integer field, whatever integer type this GStreamer version gives it.
fn int_field(s: &gst::StructureRef, field: &str) -> Option<i64> {
    let v = s.value(field).ok()?;
    v.get::<i64>()
        .ok()
        .or_else(|| v.get::<i32>().ok().map(i64::from))
        .or_else(|| v.get::<u64>().ok().and_then(|x| i64::try_from(x).ok()))
        .or_else(|| v.get::<u32>().ok().map(i64::from))
}

/// Asks `webrtcbin` for its stats; the reply (on webrtcbin's thread) feeds
/// `tracker`. Returns at once.
pub fn sample_loss(webrtcbin: &gst::Element, tracker: std::sync::Arc<LossTracker>) {
    let promise = gst::Promise::with_change_func(move |reply| {
        if let Ok(Some(stats)) = reply {
            tracker.absorb(stats);
        }
    });
    webrtcbin.emit_by_name::<()>("get-stats", &[&None::<gst::Pad>, &promise]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_counts_only_rises_above_the_highest_value() {
        let t = LossTracker::default();
        assert_eq!(t.update("a", 0), 0);
        assert_eq!(t.update("a", 3), 3);
        // A late packet arrived: the report falls, nothing is taken back.
        assert_eq!(t.update("a", 2), 0);
        assert_eq!(t.update("a", 5), 2);
        // Streams are independent; a first report counts in full.
        assert_eq!(t.update("b", 4), 4);
        assert_eq!(t.update("b", -1), 0);
        assert_eq!(t.update("c", -2), 0);
        assert_eq!(t.update("c", 1), 1);
    }

    #[test]
    fn a_stats_reply_feeds_the_counters() {
        gst::init().expect("gst init");
        let before = totals();
        let stat = |kind, lost: i64| {
            gst::Structure::builder("s")
                .field("type", kind)
                .field("packets-lost", lost)
                .build()
        };
        let reply = gst::Structure::builder("application/x-webrtc-stats")
            .field(
                "rtp-inbound-stream-stats_1",
                stat(gst_webrtc::WebRTCStatsType::InboundRtp, 7),
            )
            .field(
                "rtp-remote-inbound-stream-stats_2",
                stat(gst_webrtc::WebRTCStatsType::RemoteInboundRtp, 2),
            )
            .field(
                "rtp-outbound-stream-stats_2",
                stat(gst_webrtc::WebRTCStatsType::OutboundRtp, 99),
            )
            .build();
        let t = LossTracker::default();
        t.absorb(&reply);
        t.absorb(&reply);
        let after = totals();
        // Other tests may count too: at least ours, and never the outbound entry.
        assert!(after.lost_in >= before.lost_in + 7);
        assert!(after.lost_out >= before.lost_out + 2);
        assert!(after.lost_out < before.lost_out + 99);
    }
}
