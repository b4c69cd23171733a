//! One room's media: a pipeline, two webrtcbins per participant, one `tee`
//! per published track and one forwarder per (track, subscriber).
//!
//! Methods are called by the room's task (control layer). GStreamer signal
//! handlers only translate what happened into [`MediaEvent`]s on a channel
//! back to that task; the one exception is a new publisher pad, which is
//! linked to its `tee` right in `pad-added` so media never waits for a
//! round trip through the task.

use super::audio_level::{self, LevelMeter};
use super::broadcast::{BroadcastMedia, Outputs, Source};
use super::codecs::Selection;
use super::egress::{Egress, Hooks};
use super::forwarder::Forwarder;
use super::mixer::{MixInput, Mixer, MixerConfig, mcu_format};
use super::recorder::{BranchDone, RecordingBranch};
use super::rtp::{ForwardFormat, forward_format, normalise_buffer};
use super::stats::{self, Branch, LossTracker};
use super::{MediaError, ice, make, peer, sdp};
use crate::config::IceSettings;
use crate::ids::{BroadcastId, RecordingId, ViewerId};
use crate::ids::{ParticipantId, RoomId, TrackId};
use crate::model::RecordingFormat;
use crate::signaling::PcKind;
use futures::StreamExt;
use gst::prelude::*;
use gst_webrtc::{WebRTCPeerConnectionState, WebRTCSDPType};
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

pub use super::rtp::TrackKind;

/// Connection state of one peer connection, as the control layer needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerState {
    /// ICE and DTLS are up: media flows.
    Connected,
    /// Temporarily lost.
    Disconnected,
    /// Gave up.
    Failed,
}

/// What the media plane tells the room task.
#[derive(Debug)]
pub enum MediaEvent {
    /// A local ICE candidate to trickle to the client.
    LocalCandidate {
        /// Whose connection.
        participant: ParticipantId,
        /// Which connection.
        pc: PcKind,
        /// m-line index.
        mline: u32,
        /// `candidate:…` line (1:1 NAT applied).
        candidate: String,
    },
    /// A publisher's track started arriving.
    TrackAdded {
        /// Publisher.
        participant: ParticipantId,
        /// New track id.
        track: TrackId,
        /// Audio or video.
        kind: TrackKind,
        /// Codec name (`VP8`, `H264`, `OPUS`).
        codec: String,
    },
    /// A connection changed state.
    ConnectionState {
        /// Whose connection.
        participant: ParticipantId,
        /// Which connection.
        pc: PcKind,
        /// New state.
        state: PeerState,
    },
    /// A recording file is complete.
    RecordingFileDone {
        /// Recording.
        recording: RecordingId,
        /// File.
        file: std::path::PathBuf,
    },
    /// A recording failed (disk full, write error); its branches are gone.
    RecordingFailed {
        /// Recording.
        recording: RecordingId,
        /// What happened.
        message: String,
    },
    /// A broadcast's first frames went out.
    BroadcastLive {
        /// Which.
        broadcast: BroadcastId,
    },
    /// An element of a broadcast's outputs failed (the rest of the room
    /// goes on: the branch's sink pad keeps the error from the tee).
    BroadcastFailed {
        /// Which.
        broadcast: BroadcastId,
        /// GStreamer's message.
        message: String,
    },
    /// A WHEP viewer's connection failed or closed.
    ViewerGone {
        /// Broadcast.
        broadcast: BroadcastId,
        /// Viewer.
        viewer: ViewerId,
    },
    /// An element of a participant's branch failed.
    PeerError {
        /// Whose branch.
        participant: ParticipantId,
        /// GStreamer's message.
        message: String,
    },
}

/// A subscribe offer and which track each m-line carries.
#[derive(Debug)]
pub struct SubscribeOffer {
    /// SDP text.
    pub sdp: String,
    /// `(mid, track)` of every active m-line.
    pub tracks: Vec<(String, TrackId)>,
}

struct Track {
    owner: ParticipantId,
    tee: gst::Element,
    format: ForwardFormat,
    /// Audio tracks: loudness from the RFC 6464 extension.
    meter: Option<Arc<LevelMeter>>,
    /// Publication order (the composite's tiles follow it).
    seq: u64,
}

/// A participant's connections, each created when first needed: a
/// receive-only participant never gets a publish webrtcbin (and its
/// threads), one that nobody else publishes to never gets a subscribe one.
#[derive(Default)]
struct Peer {
    publish: Option<gst::Element>,
    subscribe: Option<gst::Element>,
    /// Tracks forwarded into `subscribe`.
    forwarders: HashMap<TrackId, Forwarder>,
    /// M-lines of `subscribe` whose track ended, kept for the next track of
    /// the same kind and codec ([`Forwarder::recycle`]).
    parked: Vec<Forwarder>,
    /// Negotiated id of the audio-level header extension (0: none).
    audio_level_id: Arc<AtomicU8>,
    /// Loss reported by both webrtcbins' stats, for `/metrics`.
    loss: Arc<LossTracker>,
}

#[derive(Default)]
struct State {
    peers: HashMap<ParticipantId, Peer>,
    tracks: HashMap<TrackId, Track>,
    /// The composite, while something uses it.
    mixer: Option<Mixer>,
    /// Recording branches being written or finishing.
    branches: Vec<RecordingBranch>,
    /// Tracks published so far (orders them).
    published: u64,
    /// MCU outputs of the mixer, forwarded like tracks: the composite video
    /// (owner `None`) and each MCU participant's mix-minus audio.
    mcu: HashMap<TrackId, McuTrack>,
    /// Live broadcasts and their WHEP viewers.
    broadcasts: HashMap<BroadcastId, LiveBroadcast>,
}

/// A broadcast's outputs and the viewers fed from them.
struct LiveBroadcast {
    media: BroadcastMedia,
    /// A passed-through publisher's video: keyframes are asked of it every
    /// HLS segment (WebRTC publishers send them only when asked).
    keyframes_of: Option<TrackId>,
    /// Reads the composite (keeps the mixer alive).
    composite: bool,
    /// Sends the broadcast to its WHEP viewers.
    egress: Option<Egress>,
    viewers: HashSet<ViewerId>,
}

/// Where a broadcast takes its media from, in media-plane terms.
#[derive(Debug, Clone)]
pub enum BroadcastInput {
    /// The composite.
    Composite,
    /// A participant's published tracks.
    Participant(ParticipantId),
}

/// What a started broadcast runs.
#[derive(Debug, Clone)]
pub struct BuiltBroadcast {
    /// Encoders it added (element names).
    pub encoders: Vec<String>,
    /// Video re-encoded.
    pub transcode_video: bool,
    /// Audio re-encoded.
    pub transcode_audio: bool,
    /// Rendition names, largest first.
    pub renditions: Vec<String>,
    /// Feed for RTMP targets.
    pub rtmp: Option<Arc<super::rtmp::RtmpFeed>>,
}

/// An output of the mixer that MCU participants receive.
struct McuTrack {
    /// For this participant only (its mix-minus audio); `None`: everyone's.
    owner: Option<ParticipantId>,
    tee: gst::Element,
    format: ForwardFormat,
}

struct Inner {
    room: RoomId,
    pipeline: gst::Pipeline,
    ice: IceSettings,
    codecs: Arc<Selection>,
    events: mpsc::UnboundedSender<MediaEvent>,
    branch_done: mpsc::UnboundedSender<BranchDone>,
    state: Mutex<State>,
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // State stays consistent across a panic in another thread: every
        // mutation is a single insert/remove.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Stopping dozens of webrtcbins joins their threads: never on the
        // room task (or whoever drops the last reference).
        let pipeline = self.pipeline.clone();
        let _ = std::thread::Builder::new()
            .name("room-teardown".into())
            .spawn(move || {
                let _ = pipeline.set_state(gst::State::Null);
                drop(pipeline);
                super::heap::released();
            });
    }
}

/// The media plane of one room. Dropping it stops the pipeline.
pub struct RoomMedia {
    inner: Arc<Inner>,
    bus_task: tokio::task::JoinHandle<()>,
}

impl Drop for RoomMedia {
    fn drop(&mut self) {
        self.bus_task.abort();
    }
}

fn pc_name(pc: PcKind) -> &'static str {
    match pc {
        PcKind::Publish => "pub",
        PcKind::Subscribe => "sub",
    }
}

/// Finds the participant whose webrtcbin (named `pub_p_…`/`sub_p_…`) holds `obj`.
fn owner_of(obj: &gst::Object) -> Option<ParticipantId> {
    let mut cur = Some(obj.clone());
    while let Some(o) = cur {
        let name = o.name();
        if let Some(pid) = name
            .strip_prefix("pub_")
            .or_else(|| name.strip_prefix("sub_"))
            && let Some(pid) = ParticipantId::parse(pid)
        {
            return Some(pid);
        }
        cur = o.parent();
    }
    None
}

/// Whether `obj` is inside a WHEP viewer's webrtcbin (named `whep_…`).
fn is_viewer(obj: &gst::Object) -> bool {
    let mut cur = Some(obj.clone());
    while let Some(o) = cur {
        if o.name().starts_with("whep_") {
            return true;
        }
        cur = o.parent();
    }
    false
}

impl RoomMedia {
    /// Builds the (empty, playing) pipeline of a room. Must run inside a tokio runtime.
    pub fn new(
        room: RoomId,
        ice: IceSettings,
        codecs: Arc<Selection>,
        events: mpsc::UnboundedSender<MediaEvent>,
    ) -> Result<Self, MediaError> {
        let pipeline = gst::Pipeline::with_name(&format!("room_{room}"));
        pipeline
            .set_state(gst::State::Playing)
            .map_err(|e| MediaError::Pipeline(format!("start pipeline: {e}")))?;
        let bus = pipeline
            .bus()
            .ok_or_else(|| MediaError::Pipeline("pipeline without bus".into()))?;
        let (branch_tx, mut branch_rx) = mpsc::unbounded_channel::<BranchDone>();
        let inner = Arc::new(Inner {
            room,
            pipeline,
            ice,
            codecs,
            events,
            branch_done: branch_tx,
            state: Mutex::new(State::default()),
        });
        let weak = Arc::downgrade(&inner);
        let bus_task = tokio::spawn(async move {
            let mut messages = bus.stream();
            loop {
                tokio::select! {
                    msg = messages.next() => {
                        let Some(msg) = msg else { break };
                        let Some(inner) = weak.upgrade() else { break };
                        inner.on_bus_message(&msg);
                    }
                    Some(done) = branch_rx.recv() => {
                        let Some(inner) = weak.upgrade() else { break };
                        inner.on_branch_done(done);
                    }
                }
            }
        });
        Ok(Self { inner, bus_task })
    }

    /// Registers a participant; its webrtcbins come when first needed.
    pub fn add_participant(&self, pid: &ParticipantId) -> Result<(), MediaError> {
        self.inner.lock().peers.insert(pid.clone(), Peer::default());
        Ok(())
    }

    /// The participant's webrtcbin for `pc`, created on first use.
    fn bin(&self, pid: &ParticipantId, pc: PcKind) -> Result<gst::Element, MediaError> {
        if let Some(bin) = self.existing_bin(pid, pc)? {
            return Ok(bin);
        }
        let inner = &self.inner;
        let bin = inner.new_webrtcbin(pid, pc)?;
        if pc == PcKind::Publish {
            let weak = Arc::downgrade(inner);
            let owner = pid.clone();
            bin.connect_pad_added(move |_, pad| {
                if pad.direction() != gst::PadDirection::Src {
                    return;
                }
                if let Some(inner) = weak.upgrade() {
                    inner.on_publisher_pad(&owner, pad);
                }
            });
        }
        let mut state = inner.lock();
        match state.peers.get_mut(pid) {
            Some(peer) => {
                let slot = match pc {
                    PcKind::Publish => &mut peer.publish,
                    PcKind::Subscribe => &mut peer.subscribe,
                };
                *slot = Some(bin.clone());
                Ok(bin)
            }
            None => {
                drop(state);
                inner.remove_element(&bin);
                Err(MediaError::NoPeer)
            }
        }
    }

    fn existing_bin(
        &self,
        pid: &ParticipantId,
        pc: PcKind,
    ) -> Result<Option<gst::Element>, MediaError> {
        let state = self.inner.lock();
        let peer = state.peers.get(pid).ok_or(MediaError::NoPeer)?;
        Ok(match pc {
            PcKind::Publish => peer.publish.clone(),
            PcKind::Subscribe => peer.subscribe.clone(),
        })
    }

    /// Answers a publisher's offer (after reducing it to forwarded codecs).
    pub async fn publish_offer(
        &self,
        pid: &ParticipantId,
        offer: &str,
    ) -> Result<String, MediaError> {
        let filtered = sdp::filter_publish_offer(offer)?;
        let desc = peer::parse_description(WebRTCSDPType::Offer, &filtered)?;
        let level_id = audio_level::offered_id(&filtered);
        let bin = self.bin(pid, PcKind::Publish)?;
        if let Some(peer) = self.inner.lock().peers.get(pid) {
            peer.audio_level_id
                .store(level_id.unwrap_or(0), Ordering::Relaxed);
        }
        peer::set_remote(&bin, &desc).await?;
        peer::create_and_set_local_with(&bin, "answer", |answer| match level_id {
            Some(id) => audio_level::add_to_answer(&answer, id),
            None => answer,
        })
        .await
    }

    /// Smoothed loudness (0 silence … 127) of every audio track that carries levels.
    pub fn audio_levels(&self) -> Vec<(TrackId, u8)> {
        let state = self.inner.lock();
        state
            .tracks
            .iter()
            .filter_map(|(id, t)| Some((id.clone(), t.meter.as_ref()?.loudness())))
            .collect()
    }

    /// Adds a client's trickled candidate.
    pub fn add_remote_candidate(
        &self,
        pid: &ParticipantId,
        pc: PcKind,
        mline: u32,
        candidate: &str,
    ) -> Result<(), MediaError> {
        if !peer::candidate_is_plausible(candidate) {
            return Err(MediaError::BadSdp("malformed ICE candidate".into()));
        }
        let bin = self.existing_bin(pid, pc)?.ok_or(MediaError::NoPeer)?;
        peer::add_candidate(&bin, mline, candidate);
        Ok(())
    }

    /// Adds an m-line for `track` to `subscriber`'s connection; media flows
    /// once the next subscribe negotiation completes.
    pub fn subscribe(&self, subscriber: &ParticipantId, track: &TrackId) -> Result<(), MediaError> {
        let (tee, caps) = {
            let state = self.inner.lock();
            let peer = state.peers.get(subscriber).ok_or(MediaError::NoPeer)?;
            if peer.forwarders.contains_key(track) {
                return Ok(());
            }
            match (state.tracks.get(track), state.mcu.get(track)) {
                (Some(t), _) => (t.tee.clone(), t.format.caps.clone()),
                (None, Some(m)) => (m.tee.clone(), m.format.caps.clone()),
                _ => return Err(MediaError::Pipeline(format!("unknown track {track}"))),
            }
        };
        let bin = self.bin(subscriber, PcKind::Subscribe)?;
        // A parked m-line of the same format first; a new one otherwise.
        let parked = {
            let mut state = self.inner.lock();
            state.peers.get_mut(subscriber).and_then(|p| {
                let i = p.parked.iter().position(|f| f.can_carry(&caps))?;
                Some(p.parked.swap_remove(i))
            })
        };
        let fwd = match parked {
            Some(mut f) => match f.recycle(&tee, &caps) {
                Ok(()) => f,
                Err(e) => {
                    tracing::warn!(room = %self.inner.room, participant = %subscriber, "{e}");
                    f.remove(&bin);
                    Forwarder::prepare(&tee, &bin, &caps)?
                }
            },
            None => Forwarder::prepare(&tee, &bin, &caps)?,
        };
        let mut state = self.inner.lock();
        match state.peers.get_mut(subscriber) {
            Some(peer) => {
                peer.forwarders.insert(track.clone(), fwd);
            }
            None => {
                drop(state);
                fwd.remove(&bin);
            }
        }
        Ok(())
    }

    /// Stops forwarding `track` to `subscriber`; its m-line is parked for
    /// the next track of the same format.
    pub fn unsubscribe(&self, subscriber: &ParticipantId, track: &TrackId) {
        let found = {
            let mut state = self.inner.lock();
            state
                .peers
                .get_mut(subscriber)
                .and_then(|p| p.forwarders.remove(track))
        };
        if let Some(fwd) = found {
            self.park(subscriber, fwd);
        }
    }

    /// Detaches `fwd` from its tee and keeps its m-line for reuse (dropped
    /// when the subscriber is gone: its connection goes with it).
    fn park(&self, subscriber: &ParticipantId, mut fwd: Forwarder) {
        fwd.park();
        if let Some(p) = self.inner.lock().peers.get_mut(subscriber) {
            p.parked.push(fwd);
        }
    }

    /// Pauses or resumes forwarding `track` to `subscriber` without
    /// renegotiating. Returns whether anything changed.
    pub fn set_forwarding(
        &self,
        subscriber: &ParticipantId,
        track: &TrackId,
        enabled: bool,
    ) -> bool {
        let state = self.inner.lock();
        state
            .peers
            .get(subscriber)
            .and_then(|p| p.forwarders.get(track))
            .is_some_and(|f| f.set_paused(!enabled))
    }

    /// Testing (`--simulate-faults`): the participant's publishing
    /// `webrtcbin` posts an error on the bus, as a failing element of its
    /// branch would; the bus handler then treats it like any other
    /// (`MediaEvent::PeerError`). Returns whether the participant has a
    /// publishing connection to fail.
    pub fn simulate_media_error(&self, pid: &ParticipantId) -> bool {
        let bin = {
            let state = self.inner.lock();
            state.peers.get(pid).and_then(|p| p.publish.clone())
        };
        let Some(bin) = bin else { return false };
        let msg = gst::message::Error::builder(
            gst::StreamError::Failed,
            "simulated element error (--simulate-faults)",
        )
        .src(&bin)
        .build();
        bin.post_message(msg).is_ok()
    }

    /// Creates and sets a new subscribe offer; `None` when nothing is forwarded yet.
    pub async fn subscribe_offer(
        &self,
        pid: &ParticipantId,
    ) -> Result<Option<SubscribeOffer>, MediaError> {
        let Some(bin) = self.existing_bin(pid, PcKind::Subscribe)? else {
            return Ok(None);
        };
        let sdp = peer::create_and_set_local(&bin, "offer").await?;
        // webrtcbin 1.22 assigns a transceiver's `mid` only once negotiation
        // completes, so map m-lines to tracks through the SSRC each carries.
        let mut guard = self.inner.lock();
        let state = &mut *guard;
        let peer = state.peers.get_mut(pid).ok_or(MediaError::NoPeer)?;
        let by_ssrc: HashMap<u32, TrackId> = peer
            .forwarders
            .keys()
            .filter_map(|tid| {
                let caps = match (state.tracks.get(tid), state.mcu.get(tid)) {
                    (Some(t), _) => &t.format.caps,
                    (None, Some(m)) => &m.format.caps,
                    _ => return None,
                };
                let ssrc = caps.structure(0)?.get::<u32>("ssrc").ok()?;
                Some((ssrc, tid.clone()))
            })
            .collect();
        let tracks: Vec<(String, TrackId)> = sdp::media_sections(&sdp)
            .into_iter()
            .filter(|m| !m.inactive)
            .filter_map(|m| Some((m.mid?, by_ssrc.get(&m.ssrc?)?.clone())))
            .collect();
        for (_, tid) in &tracks {
            if let Some(f) = peer.forwarders.get_mut(tid) {
                f.announced();
            }
        }
        Ok(Some(SubscribeOffer { sdp, tracks }))
    }

    /// Applies the client's answer to the latest subscribe offer and starts
    /// the flow into every m-line it negotiated. Returns the tracks that
    /// started flowing (they need a keyframe).
    pub async fn subscribe_answer(
        &self,
        pid: &ParticipantId,
        answer: &str,
    ) -> Result<Vec<TrackId>, MediaError> {
        let desc = peer::parse_description(WebRTCSDPType::Answer, answer)?;
        let bin = self
            .existing_bin(pid, PcKind::Subscribe)?
            .ok_or(MediaError::NoPeer)?;
        peer::set_remote(&bin, &desc).await?;
        let mut started = Vec::new();
        let mut state = self.inner.lock();
        let peer = state.peers.get_mut(pid).ok_or(MediaError::NoPeer)?;
        for (tid, f) in peer.forwarders.iter_mut() {
            if f.is_connected() || !f.can_connect() {
                continue;
            }
            match f.connect() {
                Ok(()) => started.push(tid.clone()),
                Err(e) => {
                    tracing::warn!(room = %self.inner.room, participant = %pid, track = %tid, "{e}")
                }
            }
        }
        Ok(started)
    }

    /// Asks the publisher of `track` for a keyframe (force-key-unit upstream → RTCP PLI).
    pub fn request_keyframe(&self, track: &TrackId) {
        let pad = {
            let state = self.inner.lock();
            match state.tracks.get(track) {
                Some(t) => Some(&t.tee).filter(|_| t.format.kind == TrackKind::Video),
                // The MCU video: the event reaches the mixer's encoder.
                None => state
                    .mcu
                    .get(track)
                    .filter(|m| m.format.kind == TrackKind::Video)
                    .map(|m| &m.tee),
            }
            .and_then(|tee| tee.static_pad("sink"))
        };
        if let Some(pad) = pad {
            let event = gst_video::UpstreamForceKeyUnitEvent::builder()
                .all_headers(true)
                .build();
            pad.push_event(event);
        }
    }

    /// Tracks flowing to `pid` (negotiated and not paused).
    pub fn flowing_to(&self, pid: &ParticipantId) -> Vec<TrackId> {
        let state = self.inner.lock();
        state
            .peers
            .get(pid)
            .map(|p| {
                p.forwarders
                    .iter()
                    .filter(|(_, f)| f.is_connected() && !f.is_paused())
                    .map(|(id, _)| id.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Removes a participant's connections and tracks. The m-lines that
    /// carried its tracks to the others are parked, not renegotiated: they
    /// fall silent, and the next offer that needs one recycles it.
    pub fn remove_participant(&self, pid: &ParticipantId) {
        let inner = &self.inner;
        let (peer, owned) = {
            let mut state = inner.lock();
            let peer = state.peers.remove(pid);
            let ids: Vec<TrackId> = state
                .tracks
                .iter()
                .filter(|(_, t)| &t.owner == pid)
                .map(|(id, _)| id.clone())
                .collect();
            let owned: Vec<(TrackId, Track)> = ids
                .into_iter()
                .filter_map(|id| state.tracks.remove(&id).map(|t| (id, t)))
                .collect();
            (peer, owned)
        };
        // Elements to stop, in order; stopping joins threads, so it happens
        // on a thread of its own and the room goes on meanwhile.
        let mut teardown: Vec<gst::Element> = Vec::new();
        if let Some(mut peer) = peer {
            // The tees stop feeding this subscriber before its webrtcbin goes down.
            for f in peer.forwarders.values_mut() {
                f.detach();
            }
            teardown.extend(
                [peer.publish.take(), peer.subscribe.take()]
                    .into_iter()
                    .flatten(),
            );
        }
        // Its MCU audio mix.
        {
            let mut state = inner.lock();
            state.mcu.retain(|_, m| m.owner.as_ref() != Some(pid));
            if let Some(m) = state.mixer.as_mut() {
                teardown.extend(m.remove_mcu(pid));
            }
        }
        // This participant's tracks, forwarded to others.
        for (tid, track) in owned {
            {
                let mut state = inner.lock();
                // Its files end here; its tile leaves the composite.
                for b in state.branches.iter_mut() {
                    if b.reads(&track.tee) {
                        b.finish();
                    }
                }
                if let Some(m) = state.mixer.as_mut() {
                    teardown.extend(m.remove_input(&tid));
                }
            }
            let branches: Vec<(ParticipantId, Forwarder)> = {
                let mut state = inner.lock();
                state
                    .peers
                    .iter_mut()
                    .filter_map(|(sub, p)| Some((sub.clone(), p.forwarders.remove(&tid)?)))
                    .collect()
            };
            for (sub, f) in branches {
                self.park(&sub, f);
            }
            teardown.push(track.tee);
        }
        inner.remove_elements_later(teardown);
    }

    /// MCU: the composite video and `pid`'s mix of everyone else's audio,
    /// as tracks [`RoomMedia::subscribe`] forwards (the mixer starts with
    /// the first MCU participant).
    pub fn mcu_tracks(&self, pid: &ParticipantId) -> Result<Vec<(TrackId, TrackKind)>, MediaError> {
        let inner = &self.inner;
        let mut state = inner.lock();
        inner.ensure_mixer(&mut state)?;
        let mut out = Vec::new();
        // The video is everyone's (owner `None`); the audio is `pid`'s own mix.
        for (kind, owner) in [
            (TrackKind::Video, None),
            (TrackKind::Audio, Some(pid.clone())),
        ] {
            let existing = state
                .mcu
                .iter()
                .find(|(_, m)| m.owner == owner)
                .map(|(id, _)| id.clone());
            if let Some(id) = existing {
                out.push((id, kind));
                continue;
            }
            let mixer = state
                .mixer
                .as_mut()
                .ok_or_else(|| MediaError::Pipeline("no mixer".into()))?;
            let (tee, ssrc) = match &owner {
                None => mixer.mcu_video(&inner.pipeline, &inner.codecs)?,
                Some(p) => mixer.mcu_audio(&inner.pipeline, p, &inner.codecs)?,
            };
            let format = mcu_format(kind, ssrc)
                .ok_or_else(|| MediaError::Pipeline("MCU output caps".into()))?;
            let id = TrackId::generate();
            state
                .mcu
                .insert(id.clone(), McuTrack { owner, tee, format });
            out.push((id, kind));
        }
        Ok(out)
    }

    /// Starts a composite recording into `dir` (the mixer starts with it).
    pub fn start_composite_recording(
        &self,
        recording: &RecordingId,
        format: RecordingFormat,
        dir: &std::path::Path,
    ) -> Result<std::path::PathBuf, MediaError> {
        let inner = &self.inner;
        let mut state = inner.lock();
        inner.ensure_mixer(&mut state)?;
        let Some(mixer) = &state.mixer else {
            return Err(MediaError::Pipeline("no mixer".into()));
        };
        let branch = RecordingBranch::composite(
            &inner.pipeline,
            recording,
            &mixer.video,
            &mixer.audio_aac,
            format,
            dir,
            inner.branch_done.clone(),
        )?;
        // The file starts at the next keyframe: ask for one now.
        if let Some(pad) = mixer.video.static_pad("sink") {
            pad.push_event(
                gst_video::UpstreamForceKeyUnitEvent::builder()
                    .all_headers(true)
                    .build(),
            );
        }
        let file = branch.file.clone();
        state.branches.push(branch);
        let tracks: Vec<TrackId> = state.tracks.keys().cloned().collect();
        drop(state);
        // Decoders start at a keyframe too.
        for t in tracks {
            self.request_keyframe(&t);
        }
        Ok(file)
    }

    /// Starts writing `track` (as published) into `dir`, named `stem`.
    pub fn record_track(
        &self,
        recording: &RecordingId,
        track: &TrackId,
        format: RecordingFormat,
        dir: &std::path::Path,
        stem: &str,
    ) -> Result<std::path::PathBuf, MediaError> {
        let inner = &self.inner;
        let (tee, codec) = {
            let state = inner.lock();
            let t = state
                .tracks
                .get(track)
                .ok_or_else(|| MediaError::Pipeline(format!("unknown track {track}")))?;
            (t.tee.clone(), t.format.codec.clone())
        };
        let branch = RecordingBranch::track(
            &inner.pipeline,
            recording,
            &tee,
            &codec,
            format,
            &dir.join(stem),
            inner.branch_done.clone(),
        )?;
        let file = branch.file.clone();
        inner.lock().branches.push(branch);
        self.request_keyframe(track);
        Ok(file)
    }

    /// Finishes every file of `recording` (EOS through its branches);
    /// `RecordingFileDone` follows per file. Returns how many are finishing.
    pub fn stop_recording(&self, recording: &RecordingId) -> usize {
        let mut state = self.inner.lock();
        let mut n = 0;
        for b in state
            .branches
            .iter_mut()
            .filter(|b| b.recording() == recording && !b.is_done())
        {
            b.finish();
            n += 1;
        }
        n
    }

    /// Gives up on files of `recording` that did not finish in time: their
    /// branches go, so nothing touches the files once they are served
    /// (fragmented MP4 and Matroska play up to the last fragment written).
    pub fn abandon_recording(&self, recording: &RecordingId) {
        self.inner.drop_recording(recording);
    }

    /// Files of `recording` still being written.
    pub fn recording_files(&self, recording: &RecordingId) -> Vec<std::path::PathBuf> {
        let state = self.inner.lock();
        state
            .branches
            .iter()
            .filter(|b| b.recording() == recording)
            .map(|b| b.file.clone())
            .collect()
    }

    /// Drops the mixer when nothing records the composite any more.
    pub fn release_mixer_if_unused(&self) {
        let elements = {
            let mut state = self.inner.lock();
            let used = state.branches.iter().any(|b| b.composite)
                || state.mixer.as_ref().is_some_and(|m| m.has_mcu())
                || state.broadcasts.values().any(|b| b.composite);
            if used {
                return;
            }
            state.mcu.clear();
            match state.mixer.take() {
                Some(m) => m.into_elements(),
                None => return,
            }
        };
        self.inner.remove_elements_later(elements);
    }

    /// The composite's tiles: (participant, rectangle), in order.
    pub fn composite_tiles(&self) -> Vec<(ParticipantId, super::layout::Rect)> {
        self.inner
            .lock()
            .mixer
            .as_ref()
            .map(|m| m.tiles())
            .unwrap_or_default()
    }

    /// Brings the composite in line with the room: each participant's mute
    /// state (muted audio leaves the mix, muted video the grid), the layout
    /// and who the speaker layout puts large. Cheap when nothing changed.
    pub fn sync_composite<'a>(
        &self,
        muted: impl IntoIterator<Item = (&'a ParticipantId, bool, bool)>,
        layout: super::layout::LayoutMode,
        focus: Option<ParticipantId>,
    ) {
        if let Some(m) = self.inner.lock().mixer.as_mut() {
            for (owner, audio, video) in muted {
                m.set_muted(owner, audio, video);
            }
            m.set_layout(layout);
            m.set_focus(focus);
        }
    }

    /// Asks every webrtcbin of the room for its stats; the replies (on
    /// webrtcbin's threads) add what was lost since the last sample to the
    /// loss counters. Returns at once; call every few seconds.
    pub fn sample_stats(&self) {
        let bins: Vec<(gst::Element, Arc<LossTracker>)> = {
            let state = self.inner.lock();
            // WHEP viewers' loss is counted by the egress.
            state
                .peers
                .values()
                .flat_map(|p| {
                    [&p.publish, &p.subscribe]
                        .into_iter()
                        .flatten()
                        .map(|bin| (bin.clone(), p.loss.clone()))
                })
                .collect()
        };
        for (bin, loss) in bins {
            stats::sample_loss(&bin, loss);
        }
    }

    /// Number of participants with media sessions.
    pub fn participant_count(&self) -> usize {
        self.inner.lock().peers.len()
    }

    /// Starts broadcast `id`: its encoders and outputs hang off the
    /// composite (the mixer starts with it) or off a participant's tracks.
    /// `Err(NoPeer)` when that participant has no video yet.
    pub fn start_broadcast(
        &self,
        id: &BroadcastId,
        input: &BroadcastInput,
        outputs: &Outputs,
    ) -> Result<BuiltBroadcast, MediaError> {
        let inner = &self.inner;
        let mut state = inner.lock();
        let mut source_video: Option<TrackId> = None;
        let (source, composite) = match input {
            BroadcastInput::Composite => {
                inner.ensure_mixer(&mut state)?;
                let Some(m) = &state.mixer else {
                    return Err(MediaError::Pipeline("no mixer".into()));
                };
                let c = m.config();
                (
                    Source::Composite {
                        encoded: m.video.clone(),
                        raw: m.raw.clone(),
                        aac: m.audio_aac.clone(),
                        pcm: m.pcm.clone(),
                        width: c.width,
                        height: c.height,
                        video_kbps: c.video_kbps,
                    },
                    true,
                )
            }
            BroadcastInput::Participant(pid) => {
                let of = |kind: TrackKind| {
                    state
                        .tracks
                        .iter()
                        .filter(|(_, t)| &t.owner == pid && t.format.kind == kind)
                        .max_by_key(|(_, t)| t.seq)
                        .map(|(id, t)| (id.clone(), t.tee.clone(), t.format.codec.clone()))
                };
                let Some((video_id, video_tee, video_codec)) = of(TrackKind::Video) else {
                    return Err(MediaError::NoPeer);
                };
                source_video = Some(video_id);
                let video = (video_tee, video_codec);
                let audio = of(TrackKind::Audio).map(|(_, tee, _)| tee);
                (
                    Source::Tracks {
                        video: Some(video),
                        audio,
                    },
                    false,
                )
            }
        };
        let media = BroadcastMedia::new(&inner.pipeline, id, source, outputs, &inner.codecs)?;
        // "live" once the first frame leaves the first rendition.
        let first = media
            .renditions
            .first()
            .and_then(|r| r.tee.static_pad("sink"));
        if let Some(pad) = &first {
            let events = inner.events.clone();
            let broadcast = id.clone();
            pad.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
                let _ = events.send(MediaEvent::BroadcastLive {
                    broadcast: broadcast.clone(),
                });
                gst::PadProbeReturn::Remove
            });
        }
        let built = BuiltBroadcast {
            encoders: media.encoders.clone(),
            transcode_video: media.transcode_video,
            transcode_audio: media.transcode_audio,
            renditions: media.renditions.iter().map(|r| r.name.clone()).collect(),
            rtmp: media.rtmp.clone(),
        };
        let keyframes_of = source_video.filter(|_| !built.transcode_video);
        let egress = match self.start_egress(id, &media) {
            Ok(e) => e,
            Err(e) => {
                drop(state);
                super::tear_down_later(
                    &inner.pipeline,
                    media.into_elements(),
                    std::time::Duration::ZERO,
                    "broadcast-teardown",
                );
                return Err(e);
            }
        };
        state.broadcasts.insert(
            id.clone(),
            LiveBroadcast {
                media,
                keyframes_of,
                composite,
                egress,
                viewers: HashSet::new(),
            },
        );
        let tracks: Vec<TrackId> = state.tracks.keys().cloned().collect();
        drop(state);
        // Start at a keyframe (the event travels upstream to the encoder or
        // the publisher: never under the state lock).
        if let Some(pad) = first {
            pad.push_event(
                gst_video::UpstreamForceKeyUnitEvent::builder()
                    .all_headers(true)
                    .build(),
            );
        }
        if composite {
            for t in tracks {
                self.request_keyframe(&t);
            }
        }
        Ok(built)
    }

    /// The WHEP egress of a broadcast with WHEP output, fed by its appsinks.
    fn start_egress(
        &self,
        id: &BroadcastId,
        media: &BroadcastMedia,
    ) -> Result<Option<Egress>, MediaError> {
        if media.whep_sinks.is_empty() {
            return Ok(None);
        }
        let keyframe_pad = media.whep_video.as_ref().and_then(|t| t.static_pad("sink"));
        let events = self.inner.events.clone();
        let broadcast = id.clone();
        let hooks = Hooks {
            // Upstream to the encoder, or to a passed-through publisher.
            keyframe: Box::new(move || {
                if let Some(pad) = &keyframe_pad {
                    pad.push_event(
                        gst_video::UpstreamForceKeyUnitEvent::builder()
                            .all_headers(true)
                            .build(),
                    );
                }
            }),
            gone: Box::new(move |viewer| {
                let _ = events.send(MediaEvent::ViewerGone {
                    broadcast: broadcast.clone(),
                    viewer,
                });
            }),
        };
        let egress = Egress::start(&id.to_string(), &self.inner.ice, hooks)?;
        for (kind, sink) in &media.whep_sinks {
            let (feed, kind) = (egress.feed(), *kind);
            sink.set_callbacks(
                gst_app::AppSinkCallbacks::builder()
                    .new_sample(move |sink| {
                        let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                        if let Some(map) = sample.buffer().and_then(|b| b.map_readable().ok()) {
                            feed.push(kind, &map);
                        }
                        Ok(gst::FlowSuccess::Ok)
                    })
                    .build(),
            );
        }
        Ok(Some(egress))
    }

    /// Stops broadcast `id`: viewers are disconnected, HLS playlists end,
    /// RTMP targets stop. Returns whether it was running.
    pub fn stop_broadcast(&self, id: &BroadcastId) -> bool {
        let Some(b) = self.inner.lock().broadcasts.remove(id) else {
            return false;
        };
        if let Some(e) = &b.egress {
            e.stop();
        }
        // The HLS writers end their playlists on EOS: give them a moment.
        super::tear_down_later(
            &self.inner.pipeline,
            b.media.into_elements(),
            std::time::Duration::from_millis(500),
            "broadcast-teardown",
        );
        if b.composite {
            self.release_mixer_if_unused();
        }
        true
    }

    /// Answers a WHEP viewer's offer; the broadcast's egress sends to it
    /// once it connects. The answer carries every candidate (no trickle).
    pub async fn whep_viewer(
        &self,
        broadcast: &BroadcastId,
        offer: &str,
    ) -> Result<(ViewerId, String), MediaError> {
        let viewer = ViewerId::generate();
        let mut state = self.inner.lock();
        let b = state
            .broadcasts
            .get_mut(broadcast)
            .ok_or_else(|| MediaError::Pipeline("the broadcast is not running".into()))?;
        let egress = b
            .egress
            .as_ref()
            .ok_or_else(|| MediaError::Pipeline("the broadcast has no WHEP output".into()))?;
        let answer = egress.add_viewer(&viewer, offer)?;
        b.viewers.insert(viewer.clone());
        Ok((viewer, answer))
    }

    /// Asks the publishers whose video broadcasts pass through for a
    /// keyframe (call once per HLS segment: segments start at keyframes).
    pub fn broadcast_keyframes(&self) {
        let tracks: Vec<TrackId> = self
            .inner
            .lock()
            .broadcasts
            .values()
            .filter_map(|b| b.keyframes_of.clone())
            .collect();
        for t in tracks {
            self.request_keyframe(&t);
        }
    }

    /// Disconnects a WHEP viewer; returns whether it was there.
    pub fn remove_viewer(&self, broadcast: &BroadcastId, viewer: &ViewerId) -> bool {
        let mut state = self.inner.lock();
        let Some(b) = state.broadcasts.get_mut(broadcast) else {
            return false;
        };
        if !b.viewers.remove(viewer) {
            return false;
        }
        if let Some(e) = &b.egress {
            e.remove_viewer(viewer);
        }
        true
    }

    /// WHEP viewers of `broadcast` now.
    pub fn viewer_count(&self, broadcast: &BroadcastId) -> usize {
        self.inner
            .lock()
            .broadcasts
            .get(broadcast)
            .map_or(0, |b| b.viewers.len())
    }

    /// WHIP: answers a publisher's offer and returns the answer with every
    /// candidate of ours in it (WHIP clients do not trickle).
    pub async fn publish_offer_gathered(
        &self,
        pid: &ParticipantId,
        offer: &str,
    ) -> Result<String, MediaError> {
        self.publish_offer(pid, offer).await?;
        let bin = self
            .existing_bin(pid, PcKind::Publish)?
            .ok_or(MediaError::NoPeer)?;
        super::whep::gathered_local_sdp(&bin, self.inner.ice.public_ip).await
    }

    /// Writes the pipeline graph to `$GST_DEBUG_DUMP_DOT_DIR` (when set).
    pub fn dump_graph(&self, label: &str) {
        self.inner
            .pipeline
            .debug_to_dot_file_with_ts(gst::DebugGraphDetails::all(), label);
    }
}

impl Inner {
    /// Creates the mixer (if there is none) with every published track.
    fn ensure_mixer(&self, state: &mut State) -> Result<(), MediaError> {
        if state.mixer.is_some() {
            return Ok(());
        }
        let inner = self;
        let mut mixer = Mixer::new(&inner.pipeline, MixerConfig::default(), &inner.codecs)?;
        let mut tracks: Vec<(u64, TrackId, ParticipantId, TrackKind, String, gst::Element)> = state
            .tracks
            .iter()
            .map(|(id, t)| {
                (
                    t.seq,
                    id.clone(),
                    t.owner.clone(),
                    t.format.kind,
                    t.format.codec.clone(),
                    t.tee.clone(),
                )
            })
            .collect();
        // Tiles in the order people published.
        tracks.sort_by_key(|t| t.0);
        for (_, id, owner, kind, codec, tee) in tracks {
            let input = MixInput {
                track: &id,
                owner: &owner,
                kind,
                codec: &codec,
                tee: &tee,
            };
            if let Err(e) = mixer.add_input(&inner.pipeline, input, &inner.codecs) {
                tracing::warn!(room = %inner.room, track = %id, "cannot mix: {e}");
            }
        }
        state.mixer = Some(mixer);
        Ok(())
    }

    /// A webrtcbin named `name`, configured for this server, in the pipeline.
    fn webrtcbin(&self, name: &str) -> Result<gst::Element, MediaError> {
        let bin = make("webrtcbin", Some(name))?;
        ice::configure(&bin, &self.ice);
        // Forwarding adds no playout delay; a short jitter buffer on the
        // publish side still reorders and asks for retransmissions.
        if bin.has_property("latency") {
            bin.set_property("latency", 50u32);
        }
        // webrtcbin paces every input through `clocksync sync=true`. Forwarded
        // packets are already on time (they come out of the publisher's
        // jitterbuffer), so the clock wait per packet per subscriber is pure
        // overhead.
        // rtpsession timestamps sender reports from the send time, which
        // needs the pipeline's latency; a webrtcbin added to a playing
        // pipeline never gets it, and every packet sent then logs a warning
        // (a log call per packet per subscriber on the fan-out thread).
        // Capture time is right for forwarded and encoded streams alike.
        if let Some(rtpbin) = bin
            .downcast_ref::<gst::Bin>()
            .and_then(|b| b.by_name("rtpbin"))
            && rtpbin.has_property("rtcp-sync-send-time")
        {
            rtpbin.set_property("rtcp-sync-send-time", false);
        }
        bin.connect("deep-element-added", false, |values| {
            let element = values.get(2).and_then(|v| v.get::<gst::Element>().ok())?;
            if element.factory().is_some_and(|f| f.name() == "clocksync") {
                element.set_property("sync", false);
            }
            None
        });
        self.pipeline
            .add(&bin)
            .map_err(|e| MediaError::Pipeline(format!("add webrtcbin: {e}")))?;
        bin.sync_state_with_parent()
            .map_err(|e| MediaError::Pipeline(format!("start webrtcbin: {e}")))?;
        Ok(bin)
    }

    fn new_webrtcbin(
        self: &Arc<Self>,
        pid: &ParticipantId,
        pc: PcKind,
    ) -> Result<gst::Element, MediaError> {
        let bin = self.webrtcbin(&format!("{}_{pid}", pc_name(pc)))?;
        let events = self.events.clone();
        let owner = pid.clone();
        let public_ip: Option<IpAddr> = self.ice.public_ip;
        bin.connect("on-ice-candidate", false, move |values| {
            let mline = values.get(1).and_then(|v| v.get::<u32>().ok())?;
            let candidate = values.get(2).and_then(|v| v.get::<String>().ok())?;
            let _ = events.send(MediaEvent::LocalCandidate {
                participant: owner.clone(),
                pc,
                mline,
                candidate: ice::rewrite_candidate(&candidate, public_ip),
            });
            None
        });
        let events = self.events.clone();
        let owner = pid.clone();
        bin.connect_notify(Some("connection-state"), move |bin, _| {
            let state = match bin.property::<WebRTCPeerConnectionState>("connection-state") {
                WebRTCPeerConnectionState::Connected => PeerState::Connected,
                WebRTCPeerConnectionState::Disconnected => PeerState::Disconnected,
                WebRTCPeerConnectionState::Failed => PeerState::Failed,
                _ => return,
            };
            let _ = events.send(MediaEvent::ConnectionState {
                participant: owner.clone(),
                pc,
                state,
            });
        });
        Ok(bin)
    }

    fn remove_element(&self, element: &gst::Element) {
        super::stop_and_remove(&self.pipeline, element);
    }

    /// Stops and removes `elements`, in order, on a thread of its own.
    fn remove_elements_later(&self, elements: Vec<gst::Element>) {
        super::tear_down_later(
            &self.pipeline,
            elements,
            std::time::Duration::ZERO,
            "peer-teardown",
        );
    }

    /// `pad-added` of a publisher: a new track. Runs on a streaming thread.
    fn on_publisher_pad(self: &Arc<Self>, owner: &ParticipantId, pad: &gst::Pad) {
        let caps = pad.current_caps().unwrap_or_else(|| pad.query_caps(None));
        let Some(format) = forward_format(&caps) else {
            tracing::warn!(room = %self.room, participant = %owner, %caps, "unsupported track, discarding");
            self.discard(pad);
            return;
        };
        let track = TrackId::generate();
        let Ok(tee) = make("tee", Some(&format!("tee_{track}"))) else {
            self.discard(pad);
            return;
        };
        tee.set_property("allow-not-linked", true);
        if self.pipeline.add(&tee).is_err() {
            self.discard(pad);
            return;
        }
        let _ = tee.sync_state_with_parent();
        // Relabel payload type, clean the caps and read audio levels before the tee.
        let pt = format.payload;
        let meter = (format.kind == TrackKind::Audio).then(|| Arc::new(LevelMeter::default()));
        let level_id = self
            .lock()
            .peers
            .get(owner)
            .map(|p| p.audio_level_id.clone());
        let probe_meter = meter.clone().zip(level_id);
        let received = stats::received(format.kind);
        let inspect = move |buffer: &mut gst::Buffer| {
            received.count(buffer.size());
            normalise_buffer(buffer, pt);
            if let Some((meter, id)) = &probe_meter {
                let id = id.load(Ordering::Relaxed);
                if id != 0
                    && let Ok(map) = buffer.map_readable()
                    && let Some(level) = audio_level::read_level(&map, id)
                {
                    meter.update(level);
                }
            }
        };
        pad.add_probe(
            gst::PadProbeType::BUFFER
                | gst::PadProbeType::BUFFER_LIST
                | gst::PadProbeType::EVENT_DOWNSTREAM,
            move |_, info| {
                match &mut info.data {
                    Some(gst::PadProbeData::Buffer(buffer)) => inspect(buffer),
                    Some(gst::PadProbeData::BufferList(list)) => {
                        list.make_mut().foreach_mut(|mut b, _| {
                            inspect(&mut b);
                            std::ops::ControlFlow::Continue(Some(b))
                        });
                    }
                    Some(gst::PadProbeData::Event(ev)) => {
                        if let gst::EventView::Caps(c) = ev.view()
                            && let Some(f) = forward_format(c.caps())
                        {
                            *ev = gst::event::Caps::new(&f.caps);
                        }
                    }
                    _ => {}
                }
                gst::PadProbeReturn::Ok
            },
        );
        let Some(sink) = tee.static_pad("sink") else {
            return;
        };
        if let Err(e) = pad.link(&sink) {
            tracing::warn!(room = %self.room, participant = %owner, "link publisher pad: {e:?}");
            return;
        }
        tracing::info!(room = %self.room, participant = %owner, track = %track, codec = %format.codec, "track published");
        let kind = format.kind;
        let codec = format.codec.clone();
        {
            let mut state = self.lock();
            if !state.peers.contains_key(owner) {
                drop(state);
                self.remove_element(&tee);
                return;
            }
            if let Some(m) = state.mixer.as_mut()
                && let Err(e) = m.add_input(
                    &self.pipeline,
                    MixInput {
                        track: &track,
                        owner,
                        kind: format.kind,
                        codec: &format.codec,
                        tee: &tee,
                    },
                    &self.codecs,
                )
            {
                tracing::warn!(room = %self.room, %track, "cannot mix: {e}");
            }
            state.published += 1;
            let seq = state.published;
            state.tracks.insert(
                track.clone(),
                Track {
                    owner: owner.clone(),
                    tee,
                    format,
                    meter,
                    seq,
                },
            );
        }
        let _ = self.events.send(MediaEvent::TrackAdded {
            participant: owner.clone(),
            track,
            kind,
            codec,
        });
    }

    /// Sends a pad we do not forward into a fakesink so it never errors.
    fn discard(&self, pad: &gst::Pad) {
        let Ok(sink) = make("fakesink", None) else {
            return;
        };
        sink.set_property("async", false);
        sink.set_property("sync", false);
        if self.pipeline.add(&sink).is_ok() {
            let _ = sink.sync_state_with_parent();
            if let Some(sp) = sink.static_pad("sink") {
                let _ = pad.link(&sp);
            }
        }
    }

    /// The broadcast whose outputs `obj` belongs to (its bins are named
    /// `{broadcast}_…`; WHEP viewers' webrtcbins are not outputs).
    fn broadcast_of(&self, obj: &gst::Object) -> Option<BroadcastId> {
        let state = self.lock();
        let mut cur = Some(obj.clone());
        while let Some(o) = cur {
            let name = o.name();
            if let Some(id) = state.broadcasts.keys().find(|id| {
                name.strip_prefix(id.as_str())
                    .is_some_and(|rest| rest.starts_with('_'))
            }) {
                return Some(id.clone());
            }
            cur = o.parent();
        }
        None
    }

    fn recording_of(&self, obj: &gst::Object) -> Option<RecordingId> {
        let state = self.lock();
        state
            .branches
            .iter()
            .find(|b| b.owns(obj))
            .map(|b| b.recording().clone())
    }

    /// A file is complete: its branch goes, the room task is told.
    fn on_branch_done(&self, done: BranchDone) {
        let bins: Vec<gst::Element> = {
            let mut state = self.lock();
            let (finished, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut state.branches)
                .into_iter()
                .partition(|b| b.recording() == &done.recording && b.file == done.file);
            state.branches = keep;
            finished
                .into_iter()
                .map(|b| b.into_bin().upcast())
                .collect()
        };
        self.remove_elements_later(bins);
        let _ = self.events.send(MediaEvent::RecordingFileDone {
            recording: done.recording,
            file: done.file,
        });
    }

    /// Drops every branch of a failed recording (the rest of the room goes on).
    fn fail_recording(&self, recording: &RecordingId, message: String) {
        self.drop_recording(recording);
        let _ = self.events.send(MediaEvent::RecordingFailed {
            recording: recording.clone(),
            message,
        });
    }

    /// Removes every branch of `recording`: nothing writes its files any more.
    fn drop_recording(&self, recording: &RecordingId) {
        let bins: Vec<gst::Element> = {
            let mut state = self.lock();
            let (failed, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut state.branches)
                .into_iter()
                .partition(|b| b.recording() == recording);
            state.branches = keep;
            failed.into_iter().map(|b| b.into_bin().upcast()).collect()
        };
        self.remove_elements_later(bins);
    }

    fn on_bus_message(&self, msg: &gst::Message) {
        match msg.view() {
            gst::MessageView::Error(err) => {
                // A graph to debug with, when GST_DEBUG_DUMP_DOT_DIR is set
                // (a no-op otherwise).
                self.pipeline.debug_to_dot_file_with_ts(
                    gst::DebugGraphDetails::all(),
                    format!("{}-error", self.pipeline.name()),
                );
                if let Some(src) = msg.src()
                    && let Some(recording) = self.recording_of(src)
                {
                    stats::pipeline_error(Branch::Recording);
                    tracing::warn!(room = %self.room, %recording, "recording failed: {} ({:?})", err.error(), err.debug());
                    self.fail_recording(&recording, err.error().to_string());
                    return;
                }
                if let Some(src) = msg.src()
                    && let Some(broadcast) = self.broadcast_of(src)
                {
                    stats::pipeline_error(Branch::Broadcast);
                    tracing::warn!(room = %self.room, %broadcast, "broadcast output failed: {} ({:?})", err.error(), err.debug());
                    let _ = self.events.send(MediaEvent::BroadcastFailed {
                        broadcast,
                        message: err.error().to_string(),
                    });
                    return;
                }
                let owner = msg.src().and_then(owner_of);
                stats::pipeline_error(match &owner {
                    Some(_) => Branch::Participant,
                    None if msg.src().is_some_and(is_viewer) => Branch::Viewer,
                    None => Branch::Other,
                });
                tracing::warn!(room = %self.room, participant = ?owner, "pipeline error: {} ({:?})", err.error(), err.debug());
                if let Some(participant) = owner {
                    let _ = self.events.send(MediaEvent::PeerError {
                        participant,
                        message: err.error().to_string(),
                    });
                }
            }
            gst::MessageView::Warning(w) => {
                tracing::debug!(room = %self.room, "pipeline warning: {} ({:?})", w.error(), w.debug());
            }
            _ => {}
        }
    }
}
