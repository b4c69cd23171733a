//! The media side of a synthetic participant, whatever server it talks to:
//! a publish webrtcbin fed from encoders (own or shared), a subscribe
//! webrtcbin whose streams are decoded (tests) or only counted (load), and
//! what was seen, per remote participant.

use super::counting::{StreamCounter, is_keyframe};
use super::source::{EncodedSource, PublishBranch, SentCounters, SourceSpec};
use crate::ids::ParticipantId;
use crate::media::{MediaError, ice, peer as sdp_ops};
use crate::signaling::PcKind;
use gst::prelude::*;
use gst_webrtc::WebRTCSDPType;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::mpsc;

/// What a peer does with the media it receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SinkMode {
    /// Decode it (frames, colour, tone).
    #[default]
    Decode,
    /// Count RTP packets only.
    Count,
}

/// A pipeline and an encoded source shared by many peers (load generation).
#[derive(Debug, Clone)]
pub struct SharedMedia {
    /// Pipeline every peer's webrtcbins go into (playing).
    pub pipeline: gst::Pipeline,
    /// Encoders publishers take from.
    pub source: Arc<EncodedSource>,
}

/// What arrived from one remote participant.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RemoteStats {
    /// Video frames decoded.
    pub video_frames: u64,
    /// Milliseconds from our `joined` to the first decoded frame.
    pub first_video_ms: Option<u64>,
    /// Audio samples decoded (mono, 48 kHz).
    pub audio_samples: u64,
    /// Tone estimated from zero crossings, Hz.
    pub audio_freq: Option<f64>,
    /// Colour of the centre pixel of the last frame.
    pub last_rgb: Option<[u8; 3]>,
    /// Video codec received.
    pub video_codec: Option<String>,
    /// Video RTP counters (count mode).
    pub video_rtp: StreamCounter,
    /// Audio RTP counters (count mode).
    pub audio_rtp: StreamCounter,
    /// The last second of decoded audio (decode mode), for tests that
    /// look for tones in a mix.
    #[serde(skip)]
    pub recent_audio: std::collections::VecDeque<i16>,
    #[serde(skip)]
    crossings: u64,
    #[serde(skip)]
    last_sign: bool,
}

/// Everything a test peer saw.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PeerStats {
    /// Our participant id.
    pub participant_id: Option<ParticipantId>,
    /// Per remote participant (by id).
    pub remote: BTreeMap<ParticipantId, RemoteStats>,
    /// Others currently in the room, per signaling.
    pub present: Vec<ParticipantId>,
    /// Error codes received.
    pub errors: Vec<String>,
    /// Subscribe offers received.
    pub subscribe_offers: u64,
    /// M-lines in the latest subscribe offer.
    pub subscribe_mlines: usize,
    /// The socket closed.
    pub disconnected: bool,
    /// ICE candidates the server sent (first 64).
    pub server_candidates: Vec<String>,
    /// Latest `active_speakers`.
    pub speakers: Vec<ParticipantId>,
    /// Latest `muted_by_host` (audio, video).
    pub muted_by_host: Option<(bool, bool)>,
    /// The room is locked (from `room_updated`).
    pub room_locked: bool,
    /// The room is being recorded (from `joined` / `room_updated`).
    pub room_recording: bool,
    /// Latest invite link seen (hosts).
    pub invite_url: Option<String>,
    /// Who waits in the lobby (hosts).
    pub lobby: Vec<ParticipantId>,
    /// Session token.
    #[serde(skip)]
    pub session: Option<String>,
}

/// Stats shared between callbacks and the peer.
pub type Shared = Arc<Mutex<PeerStats>>;

/// Locks the stats (a panic elsewhere does not make them unusable).
pub fn lock(s: &Shared) -> std::sync::MutexGuard<'_, PeerStats> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

/// Elements a peer added to a shared pipeline, removed when it goes.
#[derive(Default)]
struct Owned {
    branches: Vec<PublishBranch>,
    elements: Vec<gst::Element>,
}

type OwnedRef = Arc<Mutex<Owned>>;

/// A local ICE candidate to send: connection, m-line, `candidate:…`.
pub type LocalCandidate = (PcKind, u32, String);

fn new_webrtcbin(
    name: &str,
    ice_local_ips: &[IpAddr],
    pc: PcKind,
    candidates: mpsc::UnboundedSender<LocalCandidate>,
) -> anyhow::Result<gst::Element> {
    let bin = gst::ElementFactory::make("webrtcbin").name(name).build()?;
    ice::configure(
        &bin,
        &crate::config::IceSettings {
            local_ips: ice_local_ips.to_vec(),
            ..Default::default()
        },
    );
    // Sender reports map RTP time to the capture time, as browsers do
    // (rtpbin's default is the send time, which adds each encoder's delay
    // to its stream and shifts audio against video at the receiver).
    bin.connect("deep-element-added", false, |values| {
        let element = values.get(2).and_then(|v| v.get::<gst::Element>().ok())?;
        if element.has_property("rtcp-sync-send-time") {
            element.set_property("rtcp-sync-send-time", false);
        }
        None
    });
    bin.connect("on-ice-candidate", false, move |values| {
        let mline = values.get(1).and_then(|v| v.get::<u32>().ok())?;
        let candidate = values.get(2).and_then(|v| v.get::<String>().ok())?;
        let _ = candidates.send((pc, mline, candidate));
        None
    });
    Ok(bin)
}

/// How to build a [`PeerMedia`].
#[derive(Debug, Clone)]
pub struct MediaOptions {
    /// Element name prefix (unique in a shared pipeline).
    pub name: String,
    /// ICE host candidate addresses.
    pub ice_local_ips: Vec<IpAddr>,
    /// Publish at all.
    pub publish: bool,
    /// Decode or count.
    pub sink: SinkMode,
    /// Shared pipeline and encoders; `None`: own pipeline with encoders of `own`.
    pub shared: Option<SharedMedia>,
    /// What own encoders show and play.
    pub own: SourceSpec,
    /// RFC 6464 level on audio (`None`: the tone's).
    pub level: Option<u8>,
}

/// The media of one synthetic participant.
pub struct PeerMedia {
    pipeline: gst::Pipeline,
    own_pipeline: bool,
    publish: Option<gst::Element>,
    subscribe: gst::Element,
    owned: OwnedRef,
    mids: Arc<Mutex<HashMap<String, ParticipantId>>>,
    level: Arc<AtomicU8>,
    /// RTP packets published.
    pub sent: SentCounters,
    /// What was received.
    pub stats: Shared,
}

impl Drop for PeerMedia {
    fn drop(&mut self) {
        if self.own_pipeline {
            let _ = self.pipeline.set_state(gst::State::Null);
            return;
        }
        let owned = std::mem::take(&mut *self.owned.lock().unwrap_or_else(|p| p.into_inner()));
        for b in owned.branches {
            b.remove(&self.pipeline);
        }
        for e in owned.elements {
            let _ = e.set_state(gst::State::Null);
            let _ = self.pipeline.remove(&e);
        }
    }
}

impl PeerMedia {
    /// Builds the webrtcbins (and own encoders); local candidates go to `candidates`.
    pub fn new(
        opts: &MediaOptions,
        stats: Shared,
        joined_at: Instant,
        candidates: mpsc::UnboundedSender<LocalCandidate>,
    ) -> anyhow::Result<Self> {
        gst::init()?;
        let own_pipeline = opts.shared.is_none();
        let (pipeline, source) = match &opts.shared {
            Some(shared) => (
                shared.pipeline.clone(),
                opts.publish.then(|| shared.source.clone()),
            ),
            None => {
                let pipeline = gst::Pipeline::with_name(&format!("peer_{}", opts.name));
                let source = if opts.publish {
                    Some(EncodedSource::new(&pipeline, &opts.own)?)
                } else {
                    None
                };
                (pipeline, source)
            }
        };
        let name = &opts.name;
        let subscribe = new_webrtcbin(
            &format!("sub_{name}"),
            &opts.ice_local_ips,
            PcKind::Subscribe,
            candidates.clone(),
        )?;
        if opts.sink == SinkMode::Count {
            // Count packets as they arrive: no playout delay.
            subscribe.set_property("latency", 0u32);
        }
        pipeline.add(&subscribe)?;
        let owned: OwnedRef = Arc::default();
        owned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .elements
            .push(subscribe.clone());
        // Which participant each subscribe m-line carries, from the latest offer.
        let mids: Arc<Mutex<HashMap<String, ParticipantId>>> = Arc::default();
        {
            let weak = pipeline.downgrade();
            let mids = mids.clone();
            let stats = stats.clone();
            let mode = opts.sink;
            let owned = owned.clone();
            subscribe.connect_pad_added(move |_, pad| {
                if pad.direction() != gst::PadDirection::Src {
                    return;
                }
                let Some(pipeline) = weak.upgrade() else {
                    return;
                };
                let mid = pad
                    .property::<Option<gst_webrtc::WebRTCRTPTransceiver>>("transceiver")
                    .and_then(|t| t.mid())
                    .map(|m| m.to_string())
                    .unwrap_or_default();
                let owner = mids
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&mid)
                    .cloned();
                let Some(owner) = owner else {
                    // Linked all the same: an unlinked pad answers
                    // not-linked, which stops the whole connection.
                    tracing::warn!(mid, "track of unknown owner, discarded");
                    if let Err(e) = discard(&pipeline, pad) {
                        tracing::warn!("cannot discard: {e}");
                    }
                    return;
                };
                let attached = match mode {
                    SinkMode::Decode => {
                        attach_decoder(&pipeline, pad, owner, stats.clone(), joined_at)
                    }
                    SinkMode::Count => {
                        attach_counter(&pipeline, pad, owner, stats.clone(), joined_at)
                    }
                };
                match attached {
                    Ok(e) => owned
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .elements
                        .push(e),
                    Err(e) => {
                        tracing::warn!("cannot receive: {e}");
                        if pad.peer().is_none()
                            && let Err(e) = discard(&pipeline, pad)
                        {
                            tracing::warn!("cannot discard: {e}");
                        }
                    }
                }
            });
        }
        let level = Arc::new(AtomicU8::new(
            opts.level
                .or(source.as_ref().map(|s| s.level))
                .unwrap_or(127),
        ));
        let mut publish = None;
        let sent = SentCounters::default();
        if let Some(source) = &source {
            let bin = new_webrtcbin(
                &format!("pub_{name}"),
                &opts.ice_local_ips,
                PcKind::Publish,
                candidates,
            )?;
            pipeline.add(&bin)?;
            let branches =
                PublishBranch::prepare_all(&pipeline, &bin, source, level.clone(), &sent)?;
            bin.sync_state_with_parent()?;
            let mut o = owned.lock().unwrap_or_else(|p| p.into_inner());
            o.branches = branches;
            o.elements.push(bin.clone());
            publish = Some(bin);
        }
        subscribe.sync_state_with_parent()?;
        if own_pipeline {
            pipeline.set_state(gst::State::Playing)?;
        }
        Ok(Self {
            pipeline,
            own_pipeline,
            publish,
            subscribe,
            owned,
            mids,
            level,
            sent,
            stats,
        })
    }

    /// The publish offer (`None` when not publishing).
    pub async fn publish_offer(&self) -> Result<Option<String>, MediaError> {
        match &self.publish {
            Some(bin) => Ok(Some(sdp_ops::create_and_set_local(bin, "offer").await?)),
            None => Ok(None),
        }
    }

    /// Applies the server's answer and starts feeding the publisher (the
    /// shared encoders must never push into an unnegotiated pad).
    pub async fn publish_answer(&self, sdp: &str) -> Result<(), MediaError> {
        let Some(publish) = &self.publish else {
            return Err(MediaError::Negotiation("answer without an offer".into()));
        };
        let desc = sdp_ops::parse_description(WebRTCSDPType::Answer, sdp)?;
        sdp_ops::set_remote(publish, &desc).await?;
        let mut o = self.owned.lock().unwrap_or_else(|p| p.into_inner());
        for b in o.branches.iter_mut() {
            b.connect()
                .map_err(|e| MediaError::Pipeline(e.to_string()))?;
        }
        Ok(())
    }

    /// Answers an offer for the subscribe connection; `tracks` maps mids to publishers.
    pub async fn subscribe_offer(
        &self,
        sdp: &str,
        tracks: impl IntoIterator<Item = (String, ParticipantId)>,
    ) -> Result<String, MediaError> {
        self.mids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(tracks);
        {
            let mut stats = lock(&self.stats);
            stats.subscribe_offers += 1;
            stats.subscribe_mlines = sdp.lines().filter(|l| l.starts_with("m=")).count();
        }
        let desc = sdp_ops::parse_description(WebRTCSDPType::Offer, sdp)?;
        sdp_ops::set_remote(&self.subscribe, &desc).await?;
        sdp_ops::create_and_set_local(&self.subscribe, "answer").await
    }

    /// Adds a remote candidate to one of the connections.
    pub fn add_candidate(&self, pc: PcKind, mline: u32, candidate: &str) {
        let bin = match pc {
            PcKind::Publish => self.publish.as_ref(),
            PcKind::Subscribe => Some(&self.subscribe),
        };
        if let Some(bin) = bin {
            sdp_ops::add_candidate(bin, mline, candidate);
        }
    }

    /// RTP packets published so far: (video, audio).
    pub fn sent(&self) -> (u64, u64) {
        (
            self.sent.video.load(Ordering::Relaxed),
            self.sent.audio.load(Ordering::Relaxed),
        )
    }

    /// The subscribe connection's peer-connection, ICE and signaling states
    /// (`connected/connected/stable`), for diagnostics.
    pub fn subscribe_state(&self) -> String {
        let pc = self
            .subscribe
            .property::<gst_webrtc::WebRTCPeerConnectionState>("connection-state");
        let ice = self
            .subscribe
            .property::<gst_webrtc::WebRTCICEConnectionState>("ice-connection-state");
        let sig = self
            .subscribe
            .property::<gst_webrtc::WebRTCSignalingState>("signaling-state");
        format!("{pc:?}/{ice:?}/{sig:?}").to_lowercase()
    }

    /// Changes the RFC 6464 level sent with the audio (0 loudest, 127 silence).
    pub fn set_level(&self, level: u8) {
        self.level.store(level.min(127), Ordering::Relaxed);
    }
}

fn sink_description(encoding: &str) -> Option<&'static str> {
    Some(match encoding {
        "VP8" => {
            "rtpvp8depay request-keyframe=true wait-for-keyframe=true ! vp8dec ! videoconvert ! video/x-raw,format=RGB ! appsink name=sink sync=false max-buffers=2 drop=true"
        }
        "H264" => {
            "rtph264depay request-keyframe=true wait-for-keyframe=true ! avdec_h264 ! videoconvert ! video/x-raw,format=RGB ! appsink name=sink sync=false max-buffers=2 drop=true"
        }
        "OPUS" => {
            "rtpopusdepay ! opusdec ! audioconvert ! audioresample ! audio/x-raw,format=S16LE,channels=1,rate=48000 ! appsink name=sink sync=false max-buffers=8 drop=true"
        }
        _ => return None,
    })
}

fn on_video_sample(stats: &Shared, joined: Instant, from: &ParticipantId, sample: &gst::Sample) {
    let rgb = (|| {
        let caps = sample.caps()?;
        let s = caps.structure(0)?;
        let (w, h) = (
            s.get::<i32>("width").ok()? as usize,
            s.get::<i32>("height").ok()? as usize,
        );
        let buf = sample.buffer()?;
        let map = buf.map_readable().ok()?;
        let stride = (w * 3).div_ceil(4) * 4;
        let off = (h / 2) * stride + (w / 2) * 3;
        map.get(off..off + 3).map(|p| [p[0], p[1], p[2]])
    })();
    let mut s = lock(stats);
    let r = s.remote.entry(from.clone()).or_default();
    r.video_frames += 1;
    if r.first_video_ms.is_none() {
        r.first_video_ms = Some(joined.elapsed().as_millis() as u64);
    }
    if rgb.is_some() {
        r.last_rgb = rgb;
    }
}

fn on_audio_sample(stats: &Shared, from: &ParticipantId, sample: &gst::Sample) {
    let Some(buf) = sample.buffer() else { return };
    let Ok(map) = buf.map_readable() else { return };
    let mut s = lock(stats);
    let r = s.remote.entry(from.clone()).or_default();
    for chunk in map.chunks_exact(2) {
        let v = i16::from_le_bytes([chunk[0], chunk[1]]);
        let sign = v >= 0;
        if sign != r.last_sign && v.unsigned_abs() > 64 {
            r.crossings += 1;
            r.last_sign = sign;
        }
        r.audio_samples += 1;
        r.recent_audio.push_back(v);
    }
    while r.recent_audio.len() > 48_000 {
        r.recent_audio.pop_front();
    }
    if r.audio_samples > 4800 {
        r.audio_freq = Some(r.crossings as f64 / 2.0 / (r.audio_samples as f64 / 48_000.0));
    }
}

/// Attaches a decoder to a subscribe-side pad for the participant owning `mid`.
fn attach_decoder(
    pipeline: &gst::Pipeline,
    pad: &gst::Pad,
    owner: ParticipantId,
    stats: Shared,
    joined: Instant,
) -> Result<gst::Element, MediaError> {
    let caps = pad.current_caps().unwrap_or_else(|| pad.query_caps(None));
    let encoding = caps
        .structure(0)
        .and_then(|s| s.get::<&str>("encoding-name").ok())
        .unwrap_or("")
        .to_ascii_uppercase();
    let desc = sink_description(&encoding)
        .ok_or_else(|| MediaError::Pipeline(format!("cannot decode {encoding}")))?;
    let bin = gst::parse::bin_from_description(desc, true)
        .map_err(|e| MediaError::Pipeline(format!("decoder: {e}")))?;
    let appsink = bin
        .by_name("sink")
        .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
        .ok_or_else(|| MediaError::Pipeline("no appsink".into()))?;
    let is_video = encoding != "OPUS";
    if is_video {
        lock(&stats)
            .remote
            .entry(owner.clone())
            .or_default()
            .video_codec = Some(encoding.clone());
    }
    appsink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                if is_video {
                    on_video_sample(&stats, joined, &owner, &sample);
                } else {
                    on_audio_sample(&stats, &owner, &sample);
                }
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
    pipeline
        .add(&bin)
        .map_err(|e| MediaError::Pipeline(format!("add decoder: {e}")))?;
    let _ = bin.sync_state_with_parent();
    let sink = bin
        .static_pad("sink")
        .ok_or_else(|| MediaError::Pipeline("decoder without sink".into()))?;
    pad.link(&sink)
        .map_err(|e| MediaError::Pipeline(format!("link decoder: {e:?}")))?;
    Ok(bin.upcast())
}

/// Counts the RTP packets of a subscribe-side pad for the participant owning it.
fn attach_counter(
    pipeline: &gst::Pipeline,
    pad: &gst::Pad,
    owner: ParticipantId,
    stats: Shared,
    joined: Instant,
) -> Result<gst::Element, MediaError> {
    let caps = pad.current_caps().unwrap_or_else(|| pad.query_caps(None));
    let s = caps.structure(0);
    let encoding = s
        .and_then(|s| s.get::<&str>("encoding-name").ok())
        .unwrap_or("")
        .to_ascii_uppercase();
    let rate = s
        .and_then(|s| s.get::<i32>("clock-rate").ok())
        .unwrap_or(90_000) as u32;
    let is_video = encoding != "OPUS";
    if is_video {
        lock(&stats)
            .remote
            .entry(owner.clone())
            .or_default()
            .video_codec = Some(encoding.clone());
    }
    let sink = crate::media::make("fakesink", None)?;
    sink.set_property("sync", false);
    sink.set_property("async", false);
    sink.set_property("enable-last-sample", false);
    let sink_pad = sink
        .static_pad("sink")
        .ok_or_else(|| MediaError::Pipeline("fakesink without sink".into()))?;
    sink_pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        if let Some(gst::PadProbeData::Buffer(buffer)) = &info.data
            && let Ok(map) = buffer.map_readable()
            && map.len() >= 12
        {
            let seq = u16::from_be_bytes([map[2], map[3]]);
            let ts = u32::from_be_bytes([map[4], map[5], map[6], map[7]]);
            let key = is_video && rtp_payload(&map).is_some_and(|p| is_keyframe(&encoding, p));
            let arrival = joined.elapsed().as_secs_f64() * 1000.0;
            let mut st = lock(&stats);
            let r = st.remote.entry(owner.clone()).or_default();
            let counter = if is_video {
                &mut r.video_rtp
            } else {
                &mut r.audio_rtp
            };
            counter.record(seq, ts, rate, arrival, map.len(), key);
        }
        gst::PadProbeReturn::Ok
    });
    pipeline
        .add(&sink)
        .map_err(|e| MediaError::Pipeline(format!("add counter: {e}")))?;
    let _ = sink.sync_state_with_parent();
    pad.link(&sink_pad)
        .map_err(|e| MediaError::Pipeline(format!("link counter: {e:?}")))?;
    Ok(sink)
}

/// Links `pad` to a fakesink of its own.
fn discard(pipeline: &gst::Pipeline, pad: &gst::Pad) -> Result<(), MediaError> {
    let sink = crate::media::make("fakesink", None)?;
    sink.set_property("sync", false);
    sink.set_property("async", false);
    pipeline
        .add(&sink)
        .map_err(|e| MediaError::Pipeline(format!("add discard: {e}")))?;
    let _ = sink.sync_state_with_parent();
    let sink_pad = sink
        .static_pad("sink")
        .ok_or_else(|| MediaError::Pipeline("fakesink without sink".into()))?;
    pad.link(&sink_pad)
        .map_err(|e| MediaError::Pipeline(format!("link discard: {e:?}")))?;
    Ok(())
}

/// The payload of an RTP packet (after CSRCs and header extensions).
fn rtp_payload(p: &[u8]) -> Option<&[u8]> {
    let mut i = 12 + 4 * usize::from(p.first()? & 0x0f);
    if p[0] & 0x10 != 0 {
        let len = u16::from_be_bytes([*p.get(i + 2)?, *p.get(i + 3)?]);
        i += 4 + 4 * usize::from(len);
    }
    p.get(i..)
}
