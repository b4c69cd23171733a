//! The room actor: one tokio task per open room owns its participants,
//! tracks and subscription negotiations. Commands come in over a channel
//! (from the edge), media events over another (from GStreamer callbacks);
//! readers see a published [`Snapshot`].

use super::speakers::Speakers;
use super::tokens::TokenSigner;
use super::{ControlError, PatchRoom};
use crate::config::IceSettings;
use crate::ids::{ParticipantId, RoomId, TrackId};
use crate::media::{MediaEvent, PeerState, RoomMedia, TrackKind};
use crate::model::{Role, RoomRecord, now_rfc3339, unix_now};
use crate::signaling::{
    ClientMessage, IceServer, MediaState, PROTOCOL_VERSION, ParticipantInfo, PcKind, RoomSummary,
    ServerMessage, TrackDescription,
};
use crate::store::Store;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tracing::Instrument;

/// A subscriber that has not answered an offer within this long is dropped.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(15);
/// Remote ICE candidates accepted per participant connection (browsers send
/// a handful; the bound keeps a misbehaving client from growing the agent).
const MAX_REMOTE_CANDIDATES: u32 = 64;

/// What readers of a room see.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Settings.
    pub record: RoomRecord,
    /// People inside.
    pub participants: Vec<ParticipantInfo>,
    /// The actor has stopped.
    pub closed: bool,
}

/// A join, as the actor receives it.
#[derive(Debug)]
pub struct JoinRequest {
    /// Role granted by the link.
    pub role: Role,
    /// Invite generation of the link.
    pub link_generation: u32,
    /// Participant to resume (valid session).
    pub resume: Option<ParticipantId>,
    /// Name.
    pub display_name: String,
    /// Outgoing messages.
    pub out: mpsc::Sender<ServerMessage>,
    /// ICE servers for the client.
    pub ice_servers: Vec<IceServer>,
    /// Participant id and connection serial.
    pub reply: oneshot::Sender<Result<(ParticipantId, u64), ControlError>>,
}

/// Commands to a room.
#[derive(Debug)]
pub enum Command {
    /// Someone wants in.
    Join(JoinRequest),
    /// A signaling message from a participant's connection.
    Client {
        /// Sender.
        participant: ParticipantId,
        /// Its connection serial.
        connection: u64,
        /// Message.
        message: ClientMessage,
    },
    /// The participant's socket went away (without `leave`, or after it).
    Disconnected {
        /// Who.
        participant: ParticipantId,
        /// Its connection serial.
        connection: u64,
    },
    /// Settings change.
    Update {
        /// Fields to change.
        patch: PatchRoom,
        /// Done.
        reply: oneshot::Sender<Result<(), ControlError>>,
    },
    /// New invite generation.
    RotateInvite {
        /// Done.
        reply: oneshot::Sender<Result<(), ControlError>>,
    },
    /// Remove a participant.
    Remove {
        /// Who.
        participant: ParticipantId,
        /// Done.
        reply: oneshot::Sender<Result<(), ControlError>>,
    },
    /// Close the room.
    Close {
        /// Done.
        reply: Option<oneshot::Sender<()>>,
    },
}

/// Handle to a room actor.
#[derive(Debug, Clone)]
pub struct RoomHandle {
    /// Creation order among the rooms of this process.
    pub seq: u64,
    tx: mpsc::UnboundedSender<Command>,
    snapshot: watch::Receiver<Snapshot>,
}

impl RoomHandle {
    /// Sends a command; fails when the room has stopped.
    pub fn send(&self, cmd: Command) -> Result<(), ControlError> {
        self.tx.send(cmd).map_err(|_| ControlError::RoomClosed)
    }

    /// Current state.
    pub fn snapshot(&self) -> Snapshot {
        self.snapshot.borrow().clone()
    }

    /// The actor has stopped.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed() || self.snapshot.borrow().closed
    }
}

/// What a room actor needs from outside.
pub struct RoomDeps {
    /// Database.
    pub store: Arc<Store>,
    /// Token signer.
    pub signer: TokenSigner,
    /// ICE settings for the media plane.
    pub ice: IceSettings,
    /// Empty rooms close after this.
    pub empty_timeout: Duration,
    /// Audio of at most this many recent speakers is forwarded (0: all).
    pub audio_last_n: usize,
    /// Called when the actor stops.
    pub on_closed: Box<dyn Fn(&RoomId) + Send + Sync>,
}

impl std::fmt::Debug for RoomDeps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RoomDeps")
    }
}

/// Whether a newcomer may enter (pure; unit-tested below).
pub fn admit(
    record: &RoomRecord,
    inside: usize,
    role: Role,
    link_generation: u32,
    resuming: bool,
) -> Result<(), ControlError> {
    if record.closed_at.is_some() {
        return Err(ControlError::RoomClosed);
    }
    if role == Role::Guest && !resuming {
        if !record.invites_enabled {
            return Err(ControlError::Forbidden(
                "the invite link is disabled".into(),
            ));
        }
        if link_generation != record.invite_generation {
            return Err(ControlError::Forbidden(
                "this invite link was revoked".into(),
            ));
        }
    }
    // People coming back to their own session were inside: a lock keeps
    // newcomers out, not them.
    if record.locked && !resuming && role != Role::Host {
        return Err(ControlError::RoomLocked);
    }
    if inside >= record.max_participants as usize {
        return Err(ControlError::RoomFull);
    }
    Ok(())
}

#[derive(Debug, Default)]
struct Negotiation {
    /// An offer is out, waiting for the answer.
    offer_sent: Option<Instant>,
    /// Tracks changed while an offer was out.
    dirty: bool,
}

struct Participant {
    info: ParticipantInfo,
    connection: u64,
    out: mpsc::Sender<ServerMessage>,
    session_jti: String,
    negotiation: Negotiation,
    candidates: u32,
    /// Participants whose video this one shows (`None`: everyone's).
    visible: Option<HashSet<ParticipantId>>,
}

struct TrackMeta {
    owner: ParticipantId,
    kind: TrackKind,
}

struct Room {
    record: RoomRecord,
    deps: RoomDeps,
    participants: HashMap<ParticipantId, Participant>,
    /// Join order, for stable listings.
    order: Vec<ParticipantId>,
    tracks: HashMap<TrackId, TrackMeta>,
    media: Option<RoomMedia>,
    media_tx: mpsc::UnboundedSender<MediaEvent>,
    snapshot: watch::Sender<Snapshot>,
    empty_since: Option<Instant>,
    next_connection: u64,
    closed: bool,
    speakers: Speakers,
    /// Publishers whose audio is forwarded under last-N (`None`: everyone's).
    audio_forwarded: Option<HashSet<ParticipantId>>,
}

/// How often speakers are re-evaluated.
const SPEAKER_INTERVAL: Duration = Duration::from_millis(200);

/// Whether `track` (of `owner`) flows to a subscriber showing `visible`,
/// given whose audio is forwarded.
fn should_forward(
    kind: TrackKind,
    owner: &ParticipantId,
    visible: Option<&HashSet<ParticipantId>>,
    audio_forwarded: Option<&HashSet<ParticipantId>>,
) -> bool {
    match kind {
        TrackKind::Video => visible.is_none_or(|v| v.contains(owner)),
        TrackKind::Audio => audio_forwarded.is_none_or(|a| a.contains(owner)),
    }
}

/// Starts the actor of an open room.
pub fn spawn(seq: u64, record: RoomRecord, deps: RoomDeps) -> RoomHandle {
    let (tx, rx) = mpsc::unbounded_channel();
    let (media_tx, media_rx) = mpsc::unbounded_channel();
    let (snap_tx, snap_rx) = watch::channel(Snapshot {
        record: record.clone(),
        participants: Vec::new(),
        closed: false,
    });
    let room = Room {
        record,
        deps,
        participants: HashMap::new(),
        order: Vec::new(),
        tracks: HashMap::new(),
        media: None,
        media_tx,
        snapshot: snap_tx,
        empty_since: Some(Instant::now()),
        next_connection: 1,
        closed: false,
        speakers: Speakers::default(),
        audio_forwarded: None,
    };
    let span = tracing::info_span!("room", room = %room.record.id);
    tokio::spawn(room.run(rx, media_rx).instrument(span));
    RoomHandle {
        seq,
        tx,
        snapshot: snap_rx,
    }
}

impl Room {
    async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<Command>,
        mut media_rx: mpsc::UnboundedReceiver<MediaEvent>,
    ) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut speaker_tick = tokio::time::interval(SPEAKER_INTERVAL);
        speaker_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !self.closed {
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    Some(cmd) => self.on_command(cmd).await,
                    None => break,
                },
                Some(ev) = media_rx.recv() => self.on_media_event(ev).await,
                _ = tick.tick() => self.on_tick().await,
                _ = speaker_tick.tick(), if self.media.is_some() => self.on_speaker_tick(),
            }
        }
        // A dropped handle (server shutting down) leaves the room open in the
        // store: it comes back on the next start.
        (self.deps.on_closed)(&self.record.id);
        // Refuse whatever is still queued.
        rx.close();
        while let Ok(cmd) = rx.try_recv() {
            refuse(cmd);
        }
    }

    fn publish_snapshot(&self) {
        let participants = self
            .order
            .iter()
            .filter_map(|id| self.participants.get(id).map(|p| p.info.clone()))
            .collect();
        self.snapshot.send_replace(Snapshot {
            record: self.record.clone(),
            participants,
            closed: self.closed,
        });
    }

    fn send(&self, to: &ParticipantId, msg: ServerMessage) {
        if let Some(p) = self.participants.get(to) {
            // A client that lets 256 messages pile up is not reading.
            if let Err(mpsc::error::TrySendError::Full(_)) = p.out.try_send(msg) {
                tracing::warn!(participant = %to, "signaling backlog full, message dropped");
            }
        }
    }

    fn broadcast(&self, except: Option<&ParticipantId>, msg: ServerMessage) {
        for id in &self.order {
            if Some(id) != except {
                self.send(id, msg.clone());
            }
        }
    }

    async fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Join(req) => self.join(req).await,
            Command::Client {
                participant,
                connection,
                message,
            } => {
                if self
                    .participants
                    .get(&participant)
                    .is_some_and(|p| p.connection == connection)
                {
                    self.on_client(&participant, message).await;
                }
            }
            Command::Disconnected {
                participant,
                connection,
            } => {
                if self
                    .participants
                    .get(&participant)
                    .is_some_and(|p| p.connection == connection)
                {
                    self.remove(&participant, "disconnected").await;
                }
            }
            Command::Update { patch, reply } => {
                let _ = reply.send(self.update(patch));
            }
            Command::RotateInvite { reply } => {
                let mut record = self.record.clone();
                record.invite_generation = record.invite_generation.wrapping_add(1);
                let res = self.store_record(record);
                let _ = reply.send(res);
            }
            Command::Remove { participant, reply } => {
                if self.participants.contains_key(&participant) {
                    self.revoke_session(&participant);
                    self.send(
                        &participant,
                        ServerMessage::error("removed", "you were removed from the room", true),
                    );
                    self.remove(&participant, "removed").await;
                    let _ = reply.send(Ok(()));
                } else {
                    let _ = reply.send(Err(ControlError::NotFound("participant")));
                }
            }
            Command::Close { reply } => {
                self.close("closed").await;
                if let Some(r) = reply {
                    let _ = r.send(());
                }
            }
        }
    }

    fn store_record(&mut self, record: RoomRecord) -> Result<(), ControlError> {
        self.deps.store.update_room(&record)?;
        self.record = record;
        self.publish_snapshot();
        Ok(())
    }

    fn update(&mut self, patch: PatchRoom) -> Result<(), ControlError> {
        let mut r = self.record.clone();
        if let Some(v) = patch.name {
            r.name = v;
        }
        if let Some(v) = patch.max_participants {
            r.max_participants = v;
        }
        if let Some(v) = patch.visibility {
            r.visibility = v;
        }
        if let Some(v) = patch.lobby {
            r.lobby = v;
        }
        if let Some(v) = patch.locked {
            r.locked = v;
        }
        if let Some(v) = patch.invites_enabled {
            r.invites_enabled = v;
        }
        self.store_record(r)
    }

    fn revoke_session(&self, pid: &ParticipantId) {
        if let Some(p) = self.participants.get(pid) {
            let exp = unix_now() + super::tokens::SESSION_TTL_SECS;
            if let Err(e) = self.deps.store.revoke(&p.session_jti, &self.record.id, exp) {
                tracing::error!(participant = %pid, "cannot store revocation: {e}");
            }
        }
    }

    async fn join(&mut self, req: JoinRequest) {
        let resuming = req.resume.as_ref();
        // A participant coming back replaces its old connection, which may not
        // have noticed yet that it is gone.
        let already_inside = resuming.is_some_and(|pid| self.participants.contains_key(pid));
        let inside = self.participants.len() - usize::from(already_inside);
        if let Err(e) = admit(
            &self.record,
            inside,
            req.role,
            req.link_generation,
            resuming.is_some(),
        ) {
            tracing::info!(reason = e.code(), "join refused");
            let _ = req.reply.send(Err(e));
            return;
        }
        if already_inside && let Some(pid) = resuming {
            self.remove(pid, "reconnected").await;
        }
        if self.media.is_none() {
            match RoomMedia::new(
                self.record.id.clone(),
                self.deps.ice.clone(),
                self.media_tx.clone(),
            ) {
                Ok(m) => self.media = Some(m),
                Err(e) => {
                    tracing::error!("cannot start room media: {e}");
                    let _ = req.reply.send(Err(ControlError::Media(e.to_string())));
                    return;
                }
            }
        }
        let pid = req.resume.clone().unwrap_or_else(ParticipantId::generate);
        if let Some(media) = &self.media
            && let Err(e) = media.add_participant(&pid)
        {
            tracing::error!(participant = %pid, "cannot create peer: {e}");
            let _ = req.reply.send(Err(ControlError::Media(e.to_string())));
            return;
        }
        let connection = self.next_connection;
        self.next_connection += 1;
        let (session, claims) =
            self.deps
                .signer
                .session(&self.record.id, req.role, &pid, unix_now());
        let info = ParticipantInfo {
            id: pid.clone(),
            display_name: req.display_name,
            role: req.role,
            joined_at: now_rfc3339(),
            audio: MediaState::default(),
            video: MediaState::default(),
        };
        let others: Vec<ParticipantInfo> = self
            .order
            .iter()
            .filter_map(|id| self.participants.get(id).map(|p| p.info.clone()))
            .collect();
        let joined = ServerMessage::Joined {
            version: PROTOCOL_VERSION,
            participant_id: pid.clone(),
            session,
            role: req.role,
            room: RoomSummary {
                id: self.record.id.clone(),
                name: self.record.name.clone(),
                max_participants: self.record.max_participants,
            },
            participants: others,
            ice_servers: req.ice_servers,
        };
        let _ = req.out.try_send(joined);
        self.broadcast(
            None,
            ServerMessage::ParticipantJoined {
                participant: info.clone(),
            },
        );
        self.participants.insert(
            pid.clone(),
            Participant {
                info,
                connection,
                out: req.out,
                session_jti: claims.jti.unwrap_or_default(),
                negotiation: Negotiation::default(),
                candidates: 0,
                visible: None,
            },
        );
        self.order.push(pid.clone());
        self.empty_since = None;
        tracing::info!(participant = %pid, role = req.role.as_str(), "participant joined");
        let _ = req.reply.send(Ok((pid.clone(), connection)));
        self.publish_snapshot();
        // Everything already published starts flowing to the newcomer.
        let existing: Vec<TrackId> = self.tracks.keys().cloned().collect();
        if !existing.is_empty() {
            for track in existing {
                self.forward(&pid, &track);
            }
            self.renegotiate(&pid).await;
        }
    }

    fn forward(&mut self, subscriber: &ParticipantId, track: &TrackId) {
        let Some(media) = &self.media else { return };
        if self
            .tracks
            .get(track)
            .is_some_and(|t| &t.owner == subscriber)
        {
            return;
        }
        if let Err(e) = media.subscribe(subscriber, track) {
            tracing::warn!(participant = %subscriber, %track, "cannot forward: {e}");
            return;
        }
        self.gate(subscriber, track);
    }

    /// Opens or closes the flow of `track` to `subscriber` by the rules of
    /// [`should_forward`]; a video that resumes gets a keyframe.
    fn gate(&self, subscriber: &ParticipantId, track: &TrackId) {
        let (Some(media), Some(t), Some(p)) = (
            &self.media,
            self.tracks.get(track),
            self.participants.get(subscriber),
        ) else {
            return;
        };
        let on = should_forward(
            t.kind,
            &t.owner,
            p.visible.as_ref(),
            self.audio_forwarded.as_ref(),
        );
        if media.set_forwarding(subscriber, track, on) && on && t.kind == TrackKind::Video {
            media.request_keyframe(track);
        }
    }

    /// Applies [`Room::gate`] to every track forwarded to `subscriber`.
    fn gate_all(&self, subscriber: &ParticipantId) {
        for (tid, t) in &self.tracks {
            if &t.owner != subscriber {
                self.gate(subscriber, tid);
            }
        }
    }

    /// Every 200 ms: who speaks now, and whose audio is forwarded.
    fn on_speaker_tick(&mut self) {
        let Some(media) = &self.media else { return };
        let levels: Vec<(ParticipantId, u8)> = media
            .audio_levels()
            .into_iter()
            .filter_map(|(tid, level)| Some((self.tracks.get(&tid)?.owner.clone(), level)))
            .collect();
        if let Some(speakers) = self.speakers.update(&levels, std::time::Instant::now()) {
            self.broadcast(None, ServerMessage::ActiveSpeakers { speakers });
        }
        self.update_audio_forwarding();
    }

    /// Recomputes whose audio is forwarded (last-N) and applies a change.
    fn update_audio_forwarding(&mut self) {
        let publishers: Vec<ParticipantId> = self
            .order
            .iter()
            .filter(|pid| {
                self.tracks
                    .values()
                    .any(|t| &t.owner == *pid && t.kind == TrackKind::Audio)
            })
            .cloned()
            .collect();
        let forwarded = self.speakers.forwarded(&publishers, self.deps.audio_last_n);
        if forwarded != self.audio_forwarded {
            tracing::debug!(?forwarded, "audio forwarding changed");
            self.audio_forwarded = forwarded;
            for sub in &self.order {
                self.gate_all(sub);
            }
        }
    }

    async fn renegotiate(&mut self, pid: &ParticipantId) {
        let Some(p) = self.participants.get_mut(pid) else {
            return;
        };
        if p.negotiation.offer_sent.is_some() {
            p.negotiation.dirty = true;
            return;
        }
        let Some(media) = &self.media else { return };
        match media.subscribe_offer(pid).await {
            Ok(Some(offer)) => {
                let tracks = offer
                    .tracks
                    .iter()
                    .filter_map(|(mid, tid)| {
                        let t = self.tracks.get(tid)?;
                        Some(TrackDescription {
                            mid: mid.clone(),
                            participant_id: t.owner.clone(),
                            kind: t.kind.as_str().to_owned(),
                        })
                    })
                    .collect();
                if let Some(p) = self.participants.get_mut(pid) {
                    p.negotiation.offer_sent = Some(Instant::now());
                    p.negotiation.dirty = false;
                }
                self.send(
                    pid,
                    ServerMessage::SubscribeOffer {
                        sdp: offer.sdp,
                        tracks,
                    },
                );
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(participant = %pid, "subscribe offer failed: {e}");
                self.send(
                    pid,
                    ServerMessage::error("negotiation_failed", e.to_string(), false),
                );
            }
        }
    }

    async fn on_client(&mut self, pid: &ParticipantId, msg: ClientMessage) {
        match msg {
            ClientMessage::Join { .. } => {
                self.send(
                    pid,
                    ServerMessage::error(
                        "already_joined",
                        "this connection has joined already",
                        false,
                    ),
                );
            }
            ClientMessage::PublishOffer { sdp } => {
                let Some(media) = &self.media else { return };
                match media.publish_offer(pid, &sdp).await {
                    Ok(answer) => {
                        tracing::debug!(participant = %pid, "publish offer:\n{sdp}\nanswer:\n{answer}");
                        self.send(pid, ServerMessage::PublishAnswer { sdp: answer })
                    }
                    Err(e) => {
                        tracing::info!(participant = %pid, "publish offer refused: {e}");
                        self.send(
                            pid,
                            ServerMessage::error("invalid_sdp", e.to_string(), false),
                        );
                    }
                }
            }
            ClientMessage::SubscribeAnswer { sdp } => {
                let Some(p) = self.participants.get_mut(pid) else {
                    return;
                };
                if p.negotiation.offer_sent.is_none() {
                    self.send(
                        pid,
                        ServerMessage::error(
                            "unexpected_answer",
                            "no subscribe offer is pending",
                            false,
                        ),
                    );
                    return;
                }
                let Some(media) = &self.media else { return };
                match media.subscribe_answer(pid, &sdp).await {
                    Ok(started) => {
                        let dirty = match self.participants.get_mut(pid) {
                            Some(p) => {
                                p.negotiation.offer_sent = None;
                                p.negotiation.dirty
                            }
                            None => return,
                        };
                        for t in &started {
                            media.request_keyframe(t);
                        }
                        if dirty {
                            self.renegotiate(pid).await;
                        }
                    }
                    Err(e) => {
                        // The offer stays pending: a corrected answer may follow.
                        tracing::info!(participant = %pid, "subscribe answer refused: {e}");
                        self.send(
                            pid,
                            ServerMessage::error("invalid_sdp", e.to_string(), false),
                        );
                    }
                }
            }
            ClientMessage::Ice {
                pc,
                candidate,
                sdp_mline_index,
            } => {
                let Some(p) = self.participants.get_mut(pid) else {
                    return;
                };
                p.candidates += 1;
                if p.candidates > MAX_REMOTE_CANDIDATES {
                    self.send(
                        pid,
                        ServerMessage::error("invalid_candidate", "too many ICE candidates", false),
                    );
                    return;
                }
                let Some(media) = &self.media else { return };
                if let Err(e) = media.add_remote_candidate(pid, pc, sdp_mline_index, &candidate) {
                    self.send(
                        pid,
                        ServerMessage::error("invalid_candidate", e.to_string(), false),
                    );
                }
            }
            ClientMessage::SetMuted { audio, video } => {
                let Some(p) = self.participants.get_mut(pid) else {
                    return;
                };
                if let Some(a) = audio {
                    p.info.audio.muted = a;
                }
                if let Some(v) = video {
                    p.info.video.muted = v;
                }
                let info = p.info.clone();
                self.broadcast(
                    Some(pid),
                    ServerMessage::ParticipantUpdated { participant: info },
                );
                self.publish_snapshot();
            }
            ClientMessage::SetVisible { participants } => {
                let Some(p) = self.participants.get_mut(pid) else {
                    return;
                };
                if participants.as_ref().is_some_and(|v| v.len() > 200) {
                    self.send(
                        pid,
                        ServerMessage::error(
                            "invalid_message",
                            "too many participants listed",
                            false,
                        ),
                    );
                    return;
                }
                p.visible = participants.map(|v| v.into_iter().collect());
                self.gate_all(pid);
            }
            ClientMessage::Ping => self.send(pid, ServerMessage::Pong),
            ClientMessage::Leave => self.remove(pid, "left").await,
        }
    }

    async fn on_media_event(&mut self, ev: MediaEvent) {
        match ev {
            MediaEvent::LocalCandidate {
                participant,
                pc,
                mline,
                candidate,
            } => self.send(
                &participant,
                ServerMessage::Ice {
                    pc,
                    candidate,
                    sdp_mline_index: mline,
                },
            ),
            MediaEvent::TrackAdded {
                participant,
                track,
                kind,
                codec,
            } => {
                let Some(p) = self.participants.get_mut(&participant) else {
                    return;
                };
                tracing::debug!(participant = %participant, %track, codec, "track added");
                match kind {
                    TrackKind::Audio => p.info.audio.published = true,
                    TrackKind::Video => p.info.video.published = true,
                }
                let info = p.info.clone();
                self.tracks.insert(
                    track.clone(),
                    TrackMeta {
                        owner: participant.clone(),
                        kind,
                    },
                );
                self.broadcast(
                    None,
                    ServerMessage::ParticipantUpdated { participant: info },
                );
                self.publish_snapshot();
                let subscribers: Vec<ParticipantId> = self
                    .order
                    .iter()
                    .filter(|id| **id != participant)
                    .cloned()
                    .collect();
                for sub in &subscribers {
                    self.forward(sub, &track);
                }
                if kind == TrackKind::Audio {
                    self.update_audio_forwarding();
                }
                for sub in &subscribers {
                    self.renegotiate(sub).await;
                }
            }
            MediaEvent::ConnectionState {
                participant,
                pc,
                state,
            } => {
                if !self.participants.contains_key(&participant) {
                    return;
                }
                tracing::debug!(participant = %participant, ?pc, ?state, "connection state");
                match state {
                    PeerState::Connected if pc == PcKind::Subscribe => {
                        if let Some(media) = &self.media {
                            for t in media.flowing_to(&participant) {
                                media.request_keyframe(&t);
                            }
                        }
                    }
                    PeerState::Failed => {
                        self.send(
                            &participant,
                            ServerMessage::error(
                                "media_failed",
                                "the media connection failed",
                                true,
                            ),
                        );
                        self.remove(&participant, "failed").await;
                    }
                    _ => {}
                }
            }
            MediaEvent::PeerError {
                participant,
                message,
            } => {
                if self.participants.contains_key(&participant) {
                    self.send(
                        &participant,
                        ServerMessage::error("media_failed", message, true),
                    );
                    self.remove(&participant, "failed").await;
                }
            }
        }
    }

    async fn on_tick(&mut self) {
        let now = Instant::now();
        let stuck: Vec<ParticipantId> = self
            .participants
            .iter()
            .filter(|(_, p)| {
                p.negotiation
                    .offer_sent
                    .is_some_and(|t| now.duration_since(t) > ANSWER_TIMEOUT)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for pid in stuck {
            tracing::info!(participant = %pid, "no subscribe answer, dropping");
            self.send(
                &pid,
                ServerMessage::error(
                    "negotiation_timeout",
                    "no answer to the subscribe offer",
                    true,
                ),
            );
            self.remove(&pid, "failed").await;
        }
        if let Some(since) = self.empty_since
            && now.duration_since(since) >= self.deps.empty_timeout
        {
            tracing::info!("empty for {:?}, closing", self.deps.empty_timeout);
            self.close("empty").await;
        }
    }

    async fn remove(&mut self, pid: &ParticipantId, reason: &str) {
        let Some(p) = self.participants.remove(pid) else {
            return;
        };
        drop(p);
        self.order.retain(|id| id != pid);
        self.tracks.retain(|_, t| &t.owner != pid);
        self.speakers.forget(pid);
        let affected = self
            .media
            .as_ref()
            .map(|m| m.remove_participant(pid))
            .unwrap_or_default();
        tracing::info!(participant = %pid, reason, "participant left");
        self.broadcast(
            None,
            ServerMessage::ParticipantLeft {
                participant_id: pid.clone(),
                reason: reason.to_owned(),
            },
        );
        if self.participants.is_empty() {
            // Nobody inside: free the pipeline; the empty timer starts.
            self.media = None;
            self.empty_since = Some(Instant::now());
        }
        self.publish_snapshot();
        self.update_audio_forwarding();
        for sub in affected {
            self.renegotiate(&sub).await;
        }
    }

    async fn close(&mut self, reason: &str) {
        if self.closed {
            return;
        }
        self.broadcast(None, ServerMessage::RoomClosed);
        self.participants.clear();
        self.order.clear();
        self.tracks.clear();
        self.media = None;
        let mut record = self.record.clone();
        record.closed_at = Some(now_rfc3339());
        if let Err(e) = self.deps.store.update_room(&record) {
            tracing::error!("cannot store closed room: {e}");
        }
        self.record = record;
        self.closed = true;
        tracing::info!(reason, "room closed");
        self.publish_snapshot();
    }
}

fn refuse(cmd: Command) {
    match cmd {
        Command::Join(req) => {
            let _ = req.reply.send(Err(ControlError::RoomClosed));
        }
        Command::Update { reply, .. }
        | Command::RotateInvite { reply }
        | Command::Remove { reply, .. } => {
            let _ = reply.send(Err(ControlError::RoomClosed));
        }
        Command::Close { reply } => {
            if let Some(r) = reply {
                let _ = r.send(());
            }
        }
        Command::Client { .. } | Command::Disconnected { .. } => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{RoomMode, Visibility};

    fn record() -> RoomRecord {
        RoomRecord {
            id: RoomId::generate(),
            name: "r".into(),
            max_participants: 2,
            visibility: Visibility::Private,
            lobby: false,
            mode: RoomMode::Sfu,
            locked: false,
            invites_enabled: true,
            invite_generation: 1,
            created_at: now_rfc3339(),
            closed_at: None,
            invite_expires_at: None,
            creator_addr: None,
        }
    }

    #[test]
    fn admission_rules() {
        let r = record();
        assert!(admit(&r, 0, Role::Guest, 1, false).is_ok());
        assert!(matches!(
            admit(&r, 2, Role::Guest, 1, false),
            Err(ControlError::RoomFull)
        ));
        assert!(matches!(
            admit(&r, 2, Role::Host, 0, false),
            Err(ControlError::RoomFull)
        ));
        assert!(matches!(
            admit(&r, 0, Role::Guest, 0, false),
            Err(ControlError::Forbidden(_))
        ));
        // Host links do not depend on the invite generation.
        assert!(admit(&r, 0, Role::Host, 0, false).is_ok());
        let mut locked = r.clone();
        locked.locked = true;
        assert!(matches!(
            admit(&locked, 0, Role::Guest, 1, false),
            Err(ControlError::RoomLocked)
        ));
        assert!(admit(&locked, 0, Role::Guest, 1, true).is_ok());
        let mut no_invites = r.clone();
        no_invites.invites_enabled = false;
        assert!(matches!(
            admit(&no_invites, 0, Role::Guest, 1, false),
            Err(ControlError::Forbidden(_))
        ));
        assert!(admit(&no_invites, 0, Role::Host, 0, false).is_ok());
        let mut closed = r;
        closed.closed_at = Some(now_rfc3339());
        assert!(matches!(
            admit(&closed, 0, Role::Host, 0, false),
            Err(ControlError::RoomClosed)
        ));
    }
}
