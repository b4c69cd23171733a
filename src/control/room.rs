//! The room actor: one tokio task per open room owns its participants,
//! tracks and subscription negotiations. Commands come in over a channel
//! (from the edge), media events over another (from GStreamer callbacks);
//! readers see a published [`Snapshot`].

use super::broadcast::{Broadcast, SourceSpec, Transcode};
use super::recording::{Active, track_stem};
use super::speakers::Speakers;
use super::tokens::TokenSigner;
use super::{Actor, ControlError, Links, PatchRoom};
use crate::config::IceSettings;
use crate::ids::{BroadcastId, RecordingId, ViewerId};
use crate::ids::{ParticipantId, RoomId, TrackId};
use crate::media::layout::LayoutMode;
use crate::media::{BroadcastInput, MediaError, MediaEvent, PeerState, RoomMedia, TrackKind};
use crate::model::RoomMode;
use crate::model::{
    RecordingFormat, RecordingKind, RecordingRecord, RecordingState, Role, RoomRecord, now_rfc3339,
    unix_now,
};
use crate::signaling::{
    ClientMessage, IceServer, MediaState, PROTOCOL_VERSION, ParticipantInfo, PcKind, RoomSummary,
    ServerMessage, TrackDescription,
};
use crate::store::Store;
use crate::webhooks::{Event, EventKind, RoomInfo};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tracing::Instrument;

/// The participant id the composite's tracks carry in subscribe offers.
fn composite_participant() -> ParticipantId {
    ParticipantId::parse(crate::signaling::COMPOSITE_PARTICIPANT)
        .unwrap_or_else(ParticipantId::generate)
}

/// How long a stopped recording's files get to finish (the muxer's final
/// header written after EOS) before they are served as last written.
const FINALIZE_WAIT: Duration = Duration::from_secs(10);
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
    /// People waiting in the lobby.
    pub lobby: Vec<ParticipantInfo>,
    /// The actor has stopped.
    pub closed: bool,
    /// Tracks published now: `(audio, video)`.
    pub tracks: (usize, usize),
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
    /// Browser id (for bans).
    pub device: Option<String>,
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
        /// Who asks.
        actor: Actor,
        /// Done.
        reply: oneshot::Sender<Result<(), ControlError>>,
    },
    /// New invite generation.
    RotateInvite {
        /// The new link stops working after this many seconds.
        expires_in: Option<u64>,
        /// Who asks.
        actor: Actor,
        /// Done.
        reply: oneshot::Sender<Result<(), ControlError>>,
    },
    /// New host link generation.
    RotateHostLink {
        /// Who asks.
        actor: Actor,
        /// Done.
        reply: oneshot::Sender<Result<(), ControlError>>,
    },
    /// Remove a participant (in the call or in the lobby).
    Remove {
        /// Who.
        participant: ParticipantId,
        /// Also bar the browser.
        ban: bool,
        /// Who asks.
        actor: Actor,
        /// Done.
        reply: oneshot::Sender<Result<(), ControlError>>,
    },
    /// Stop or resume forwarding a participant's media.
    Mute {
        /// Who.
        participant: ParticipantId,
        /// Audio muted.
        audio: Option<bool>,
        /// Video muted.
        video: Option<bool>,
        /// Who asks.
        actor: Actor,
        /// Done.
        reply: oneshot::Sender<Result<(), ControlError>>,
    },
    /// Let someone in from the lobby.
    Admit {
        /// Who.
        participant: ParticipantId,
        /// Who asks.
        actor: Actor,
        /// Done.
        reply: oneshot::Sender<Result<(), ControlError>>,
    },
    /// Turn someone in the lobby away.
    Deny {
        /// Who.
        participant: ParticipantId,
        /// Who asks.
        actor: Actor,
        /// Done.
        reply: oneshot::Sender<Result<(), ControlError>>,
    },
    /// Start recording.
    StartRecording {
        /// Composite or tracks.
        kind: RecordingKind,
        /// Container.
        format: RecordingFormat,
        /// Composite layout.
        layout: LayoutMode,
        /// Who asks.
        actor: Actor,
        /// The new recording.
        reply: oneshot::Sender<Result<RecordingRecord, ControlError>>,
    },
    /// Stop a recording; the reply comes once its files are complete.
    StopRecording {
        /// Which.
        recording: RecordingId,
        /// The finished recording.
        reply: oneshot::Sender<Result<RecordingRecord, ControlError>>,
    },
    /// Start a broadcast (registered already; the room builds and runs it).
    StartBroadcast {
        /// The broadcast.
        broadcast: Arc<Broadcast>,
        /// Who asks.
        actor: Actor,
        /// Done.
        reply: oneshot::Sender<Result<(), ControlError>>,
    },
    /// End a broadcast.
    StopBroadcast {
        /// Which.
        broadcast: BroadcastId,
        /// Done.
        reply: oneshot::Sender<Result<(), ControlError>>,
    },
    /// A WHEP viewer's offer.
    WhepOffer {
        /// Broadcast.
        broadcast: BroadcastId,
        /// SDP offer.
        sdp: String,
        /// Viewer id and SDP answer.
        reply: oneshot::Sender<Result<(ViewerId, String), ControlError>>,
    },
    /// A WHEP viewer leaves (`DELETE` on its resource).
    WhepStop {
        /// Broadcast.
        broadcast: BroadcastId,
        /// Viewer.
        viewer: ViewerId,
        /// Whether it was there.
        reply: oneshot::Sender<bool>,
    },
    /// A WHIP publisher's offer: it enters as a participant of role `ingest`.
    Ingest {
        /// Name shown to others.
        display_name: String,
        /// SDP offer.
        sdp: String,
        /// Participant id and SDP answer.
        reply: oneshot::Sender<Result<(ParticipantId, String), ControlError>>,
    },
    /// Close the room.
    Close {
        /// Who asks.
        actor: Actor,
        /// Done.
        reply: Option<oneshot::Sender<()>>,
    },
    /// The server is stopping: recordings are finished, broadcasts ended,
    /// everyone is told to reconnect; the room stays open in the store.
    Shutdown {
        /// Done.
        reply: oneshot::Sender<()>,
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
    /// Clients may ask for simulated faults.
    pub simulate_faults: bool,
    /// Makes the room's links (hosts are shown the invite link).
    pub links: Links,
    /// Encoders and decoders of this machine.
    pub codecs: Arc<crate::media::codecs::Selection>,
    /// Where recordings are written (a directory per recording).
    pub recordings_dir: std::path::PathBuf,
    /// Where HLS is written (a directory per broadcast).
    pub hls_dir: std::path::PathBuf,
    /// Every broadcast of the server.
    pub broadcasts: Arc<super::broadcast::Registry>,
    /// Webhook queue (storing an event is all the actor does; delivery is elsewhere).
    pub webhooks: crate::webhooks::Webhooks,
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
    if role == Role::Host && !resuming && link_generation != record.host_generation {
        return Err(ControlError::Forbidden(
            "this host link was replaced".into(),
        ));
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

/// Muted state of one participant's audio and video.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Muted {
    audio: bool,
    video: bool,
}

struct Participant {
    info: ParticipantInfo,
    connection: u64,
    out: mpsc::Sender<ServerMessage>,
    session_jti: String,
    device: Option<String>,
    negotiation: Negotiation,
    candidates: u32,
    /// Participants whose video this one shows (`None`: everyone's).
    visible: Option<HashSet<ParticipantId>>,
    /// Muted by the participant itself.
    self_muted: Muted,
    /// Muted by a host: its media is not forwarded.
    host_muted: Muted,
}

/// Someone about to enter the call (joining, or admitted from the lobby).
struct Entrant {
    pid: ParticipantId,
    display_name: String,
    role: Role,
    device: Option<String>,
    out: mpsc::Sender<ServerMessage>,
    ice_servers: Vec<IceServer>,
    connection: u64,
    /// Replaces its own connection that was still inside (no webhook: to
    /// the outside it never left).
    reconnect: bool,
}

/// Someone in the lobby, waiting for a host.
struct Waiting {
    info: ParticipantInfo,
    connection: u64,
    out: mpsc::Sender<ServerMessage>,
    device: Option<String>,
    ice_servers: Vec<IceServer>,
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
    /// MCU rooms: the mixer's outputs forwarded to participants (composite
    /// video, mix-minus audio) and their kind.
    mcu_tracks: HashMap<TrackId, (TrackKind, Option<ParticipantId>)>,
    media: Option<RoomMedia>,
    media_tx: mpsc::UnboundedSender<MediaEvent>,
    snapshot: watch::Sender<Snapshot>,
    empty_since: Option<Instant>,
    next_connection: u64,
    closed: bool,
    /// Stopped for the server's shutdown (the room stays open).
    stopping: bool,
    speakers: Speakers,
    /// Publishers whose audio is forwarded under last-N (`None`: everyone's).
    audio_forwarded: Option<HashSet<ParticipantId>>,
    /// People waiting for a host, in arrival order.
    lobby: Vec<(ParticipantId, Waiting)>,
    /// Recordings running or finishing.
    recordings: Vec<Active>,
    /// Layout of the composite (set by the composite recording).
    composite_layout: LayoutMode,
    /// Broadcasts running or waiting for their source.
    on_air: Vec<OnAir>,
    /// 1 s ticks so far.
    ticks: u64,
}

/// A broadcast of this room that has not ended.
struct OnAir {
    broadcast: Arc<Broadcast>,
    /// Asked for at.
    since: Instant,
    /// Its outputs run (the source was there).
    built: bool,
    /// The participant it shows (it ends when they leave).
    source: Option<ParticipantId>,
    /// Failed attempts to build its outputs.
    failures: u32,
}

/// Attempts (one per second) to build a broadcast before it fails.
const BROADCAST_BUILD_ATTEMPTS: u32 = 5;

/// How often speakers are re-evaluated.
const SPEAKER_INTERVAL: Duration = Duration::from_millis(200);

/// Every this many 1 s ticks the room's webrtcbins are asked for their
/// stats (packet loss for `/metrics`).
const STATS_TICKS: u64 = 5;

/// Whether `track` (of `owner`) flows to a subscriber showing `visible`,
/// given whose audio is forwarded.
fn should_forward(
    kind: TrackKind,
    owner: &ParticipantId,
    owner_host_muted: Muted,
    visible: Option<&HashSet<ParticipantId>>,
    audio_forwarded: Option<&HashSet<ParticipantId>>,
) -> bool {
    match kind {
        TrackKind::Video => !owner_host_muted.video && visible.is_none_or(|v| v.contains(owner)),
        TrackKind::Audio => {
            !owner_host_muted.audio && audio_forwarded.is_none_or(|a| a.contains(owner))
        }
    }
}

/// Starts the actor of an open room.
pub fn spawn(seq: u64, record: RoomRecord, deps: RoomDeps) -> RoomHandle {
    let (tx, rx) = mpsc::unbounded_channel();
    let (media_tx, media_rx) = mpsc::unbounded_channel();
    let (snap_tx, snap_rx) = watch::channel(Snapshot {
        record: record.clone(),
        participants: Vec::new(),
        lobby: Vec::new(),
        closed: false,
        tracks: (0, 0),
    });
    let room = Room {
        record,
        deps,
        participants: HashMap::new(),
        order: Vec::new(),
        tracks: HashMap::new(),
        mcu_tracks: HashMap::new(),
        media: None,
        media_tx,
        snapshot: snap_tx,
        empty_since: Some(Instant::now()),
        next_connection: 1,
        closed: false,
        stopping: false,
        speakers: Speakers::default(),
        audio_forwarded: None,
        lobby: Vec::new(),
        recordings: Vec::new(),
        composite_layout: LayoutMode::default(),
        on_air: Vec::new(),
        ticks: 0,
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
        while !self.closed && !self.stopping {
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
            lobby: self.lobby.iter().map(|(_, w)| w.info.clone()).collect(),
            closed: self.closed,
            tracks: (
                self.count_tracks(TrackKind::Audio),
                self.count_tracks(TrackKind::Video),
            ),
        });
    }

    fn count_tracks(&self, kind: TrackKind) -> usize {
        self.tracks.values().filter(|t| t.kind == kind).count()
    }

    fn send(&self, to: &ParticipantId, msg: ServerMessage) {
        let out = self.participants.get(to).map(|p| &p.out).or_else(|| {
            self.lobby
                .iter()
                .find(|(id, _)| id == to)
                .map(|(_, w)| &w.out)
        });
        // A client that lets 256 messages pile up is not reading.
        if let Some(out) = out
            && let Err(mpsc::error::TrySendError::Full(_)) = out.try_send(msg)
        {
            tracing::warn!(participant = %to, "signaling backlog full, message dropped");
        }
    }

    fn hosts(&self) -> impl Iterator<Item = &ParticipantId> {
        self.order.iter().filter(|id| {
            self.participants
                .get(*id)
                .is_some_and(|p| p.info.role == Role::Host)
        })
    }

    fn summary(&self) -> RoomSummary {
        RoomSummary {
            id: self.record.id.clone(),
            name: self.record.name.clone(),
            max_participants: self.record.max_participants,
            locked: self.record.locked,
            lobby: self.record.lobby,
            invites_enabled: self.record.invites_enabled,
            recording: self.is_recording(),
            mode: self.record.mode,
            broadcast: self
                .on_air
                .first()
                .map(|o| o.broadcast.summary(&self.deps.links.public_url)),
        }
    }

    fn is_recording(&self) -> bool {
        self.recordings
            .iter()
            .any(|a| a.record.state == RecordingState::Recording)
    }

    /// Tells everyone the room's state; hosts also get the invite link.
    fn announce_room(&self) {
        let invite = self.deps.links.invite(&self.record);
        for id in &self.order {
            let is_host = self
                .participants
                .get(id)
                .is_some_and(|p| p.info.role == Role::Host);
            self.send(
                id,
                ServerMessage::RoomUpdated {
                    room: self.summary(),
                    invite_url: is_host.then(|| invite.clone()),
                },
            );
        }
    }

    fn announce_lobby(&self) {
        let lobby: Vec<ParticipantInfo> = self.lobby.iter().map(|(_, w)| w.info.clone()).collect();
        for h in self.hosts() {
            self.send(
                h,
                ServerMessage::LobbyUpdated {
                    lobby: lobby.clone(),
                },
            );
        }
    }

    fn audit(
        &self,
        actor: &Actor,
        action: &str,
        target: Option<&ParticipantId>,
        detail: serde_json::Value,
    ) {
        if let Err(e) = self.deps.store.add_event(
            &self.record.id,
            &actor.label(),
            action,
            target.map(ParticipantId::as_str),
            &detail,
        ) {
            tracing::error!("cannot store audit event: {e}");
        }
    }

    /// A webhook event about this room as it is now.
    fn event(&self, kind: EventKind) -> Event {
        Event::new(kind, RoomInfo::new(&self.record, self.participants.len()))
    }

    /// Queues `recording_ready` or `recording_failed` (by its state).
    fn recording_event(&self, record: &RecordingRecord) {
        let kind = if record.state == RecordingState::Failed {
            EventKind::RecordingFailed
        } else {
            EventKind::RecordingReady
        };
        self.deps
            .webhooks
            .emit(self.event(kind).recording(crate::model::RecordingView::new(
                record,
                &self.deps.links.public_url,
            )));
    }

    /// Queues a `broadcast_*` event.
    fn broadcast_event(&self, kind: EventKind, b: &Broadcast) {
        self.deps.webhooks.emit(
            self.event(kind)
                .broadcast(b.webhook_info(&self.deps.links.public_url)),
        );
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
                } else if self.waiting(&participant, connection) {
                    match message {
                        ClientMessage::Leave => self.leave_lobby(&participant),
                        ClientMessage::Ping => self.send(&participant, ServerMessage::Pong),
                        _ => self.send(
                            &participant,
                            ServerMessage::error(
                                "in_lobby",
                                "wait until a host lets you in",
                                false,
                            ),
                        ),
                    }
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
                } else if self.waiting(&participant, connection) {
                    self.leave_lobby(&participant);
                }
            }
            Command::Update {
                patch,
                actor,
                reply,
            } => {
                let res = self.update(patch, &actor).await;
                let _ = reply.send(res);
            }
            Command::RotateInvite {
                expires_in,
                actor,
                reply,
            } => {
                let _ = reply.send(self.rotate_invite(expires_in, &actor));
            }
            Command::RotateHostLink { actor, reply } => {
                let mut record = self.record.clone();
                record.host_generation = record.host_generation.wrapping_add(1);
                let res = self.store_record(record);
                if res.is_ok() {
                    self.audit(&actor, "host_link_rotated", None, serde_json::json!({}));
                }
                let _ = reply.send(res);
            }
            Command::Remove {
                participant,
                ban,
                actor,
                reply,
            } => {
                let _ = reply.send(self.remove_by(&participant, ban, &actor).await);
            }
            Command::Mute {
                participant,
                audio,
                video,
                actor,
                reply,
            } => {
                let _ = reply.send(self.mute(&participant, audio, video, &actor));
            }
            Command::Admit {
                participant,
                actor,
                reply,
            } => {
                let _ = reply.send(self.admit_waiting(&participant, &actor).await);
            }
            Command::Deny {
                participant,
                actor,
                reply,
            } => {
                let _ = reply.send(self.deny(&participant, &actor));
            }
            Command::StartRecording {
                kind,
                format,
                layout,
                actor,
                reply,
            } => {
                let _ = reply.send(self.start_recording(kind, format, layout, &actor));
            }
            Command::StopRecording { recording, reply } => self.stop_recording(&recording, reply),
            Command::StartBroadcast {
                broadcast,
                actor,
                reply,
            } => {
                let _ = reply.send(self.start_broadcast(broadcast, &actor));
            }
            Command::StopBroadcast { broadcast, reply } => {
                let res = if self.end_broadcast(&broadcast, None) {
                    Ok(())
                } else {
                    Err(ControlError::NotFound("broadcast"))
                };
                let _ = reply.send(res);
            }
            Command::WhepOffer {
                broadcast,
                sdp,
                reply,
            } => {
                let _ = reply.send(self.whep_offer(&broadcast, &sdp).await);
            }
            Command::WhepStop {
                broadcast,
                viewer,
                reply,
            } => {
                let _ = reply.send(self.remove_viewer(&broadcast, &viewer));
            }
            Command::Ingest {
                display_name,
                sdp,
                reply,
            } => {
                let _ = reply.send(self.ingest(display_name, &sdp).await);
            }
            Command::Close { actor, reply } => {
                self.audit(&actor, "room_closed", None, serde_json::json!({}));
                self.close("closed").await;
                if let Some(r) = reply {
                    let _ = r.send(());
                }
            }
            Command::Shutdown { reply } => {
                self.shut_down().await;
                let _ = reply.send(());
            }
        }
    }

    fn waiting(&self, pid: &ParticipantId, connection: u64) -> bool {
        self.lobby
            .iter()
            .any(|(id, w)| id == pid && w.connection == connection)
    }

    fn leave_lobby(&mut self, pid: &ParticipantId) {
        let _ = self.take_waiting(pid);
    }

    fn rotate_invite(
        &mut self,
        expires_in: Option<u64>,
        actor: &Actor,
    ) -> Result<(), ControlError> {
        let mut record = self.record.clone();
        record.invite_generation = record.invite_generation.wrapping_add(1);
        record.invite_expires_at = expires_in.map(|s| unix_now() + s);
        self.store_record(record)?;
        self.audit(
            actor,
            "invite_rotated",
            None,
            serde_json::json!({"expires_in": expires_in}),
        );
        self.announce_room();
        Ok(())
    }

    /// A host or admin removes someone; `ban` bars the browser too.
    async fn remove_by(
        &mut self,
        pid: &ParticipantId,
        ban: bool,
        actor: &Actor,
    ) -> Result<(), ControlError> {
        let device = match (
            self.participants.get(pid),
            self.lobby.iter().find(|(id, _)| id == pid),
        ) {
            (Some(p), _) => p.device.clone(),
            (None, Some((_, w))) => w.device.clone(),
            (None, None) => return Err(ControlError::NotFound("participant")),
        };
        if ban && let Some(d) = &device {
            self.deps.store.ban(&self.record.id, d)?;
        }
        self.audit(
            actor,
            "participant_removed",
            Some(pid),
            serde_json::json!({"ban": ban}),
        );
        let message = if ban {
            "you were removed from the room and cannot come back"
        } else {
            "you were removed from the room"
        };
        if self.participants.contains_key(pid) {
            self.send(pid, ServerMessage::error("removed", message, true));
            self.revoke_session(pid);
            self.remove(pid, "removed").await;
        } else if let Some(w) = self.take_waiting(pid) {
            let _ = w
                .out
                .try_send(ServerMessage::error("removed", message, true));
        }
        Ok(())
    }

    /// Stops (or resumes) forwarding someone's audio and/or video.
    fn mute(
        &mut self,
        pid: &ParticipantId,
        audio: Option<bool>,
        video: Option<bool>,
        actor: &Actor,
    ) -> Result<(), ControlError> {
        let Some(p) = self.participants.get_mut(pid) else {
            return Err(ControlError::NotFound("participant"));
        };
        if let Some(a) = audio {
            p.host_muted.audio = a;
        }
        if let Some(v) = video {
            p.host_muted.video = v;
        }
        p.info.audio.muted = p.self_muted.audio || p.host_muted.audio;
        p.info.video.muted = p.self_muted.video || p.host_muted.video;
        let (muted, info) = (p.host_muted, p.info.clone());
        self.audit(
            actor,
            "participant_muted",
            Some(pid),
            serde_json::json!({"audio": audio, "video": video}),
        );
        self.send(
            pid,
            ServerMessage::MutedByHost {
                audio: muted.audio,
                video: muted.video,
            },
        );
        self.broadcast(
            Some(pid),
            ServerMessage::ParticipantUpdated { participant: info },
        );
        for sub in &self.order {
            self.gate_all(sub);
        }
        self.publish_snapshot();
        self.sync_composite();
        Ok(())
    }

    async fn admit_waiting(
        &mut self,
        pid: &ParticipantId,
        actor: &Actor,
    ) -> Result<(), ControlError> {
        let Some(i) = self.lobby.iter().position(|(id, _)| id == pid) else {
            return Err(ControlError::NotFound("participant"));
        };
        if self.participants.len() >= self.record.max_participants as usize {
            return Err(ControlError::RoomFull);
        }
        let (pid, w) = self.lobby.remove(i);
        self.audit(actor, "lobby_admitted", Some(&pid), serde_json::json!({}));
        self.announce_lobby();
        let entrant = Entrant {
            pid,
            display_name: w.info.display_name,
            role: w.info.role,
            device: w.device,
            out: w.out,
            ice_servers: w.ice_servers,
            connection: w.connection,
            reconnect: false,
        };
        self.enter(entrant).await
    }

    fn deny(&mut self, pid: &ParticipantId, actor: &Actor) -> Result<(), ControlError> {
        let w = self
            .take_waiting(pid)
            .ok_or(ControlError::NotFound("participant"))?;
        self.audit(actor, "lobby_denied", Some(pid), serde_json::json!({}));
        let _ = w.out.try_send(ServerMessage::error(
            "denied",
            "the host did not let you in",
            true,
        ));
        Ok(())
    }

    /// Takes someone out of the lobby (state first, so the API agrees with
    /// what they are told next).
    fn take_waiting(&mut self, pid: &ParticipantId) -> Option<Waiting> {
        let i = self.lobby.iter().position(|(id, _)| id == pid)?;
        let (_, w) = self.lobby.remove(i);
        self.announce_lobby();
        self.publish_snapshot();
        Some(w)
    }

    fn store_record(&mut self, record: RoomRecord) -> Result<(), ControlError> {
        self.deps.store.update_room(&record)?;
        self.record = record;
        self.publish_snapshot();
        Ok(())
    }

    async fn update(&mut self, patch: PatchRoom, actor: &Actor) -> Result<(), ControlError> {
        let mut r = self.record.clone();
        let detail = serde_json::json!({
            "name": patch.name, "max_participants": patch.max_participants,
            "visibility": patch.visibility, "lobby": patch.lobby,
            "locked": patch.locked, "invites_enabled": patch.invites_enabled,
        });
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
        self.store_record(r)?;
        let detail = serde_json::Value::Object(
            detail
                .as_object()
                .map(|o| {
                    o.iter()
                        .filter(|(_, v)| !v.is_null())
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect()
                })
                .unwrap_or_default(),
        );
        self.audit(actor, "room_updated", None, detail);
        self.announce_room();
        // Turning the lobby off lets everyone waiting in, as far as there is room.
        if !self.record.lobby {
            let waiting: Vec<ParticipantId> = self.lobby.iter().map(|(id, _)| id.clone()).collect();
            for pid in waiting {
                if let Err(e) = self.admit_waiting(&pid, actor).await {
                    tracing::info!(participant = %pid, "not admitted: {e}");
                }
            }
        }
        Ok(())
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
        let connection = self.next_connection;
        self.next_connection += 1;
        let pid = req.resume.clone().unwrap_or_else(ParticipantId::generate);
        // Lobby rooms: guests who were not inside wait for a host.
        if self.record.lobby && req.role == Role::Guest && req.resume.is_none() {
            let info = ParticipantInfo {
                id: pid.clone(),
                display_name: req.display_name,
                role: req.role,
                joined_at: now_rfc3339(),
                audio: MediaState::default(),
                video: MediaState::default(),
            };
            let _ = req.out.try_send(ServerMessage::Waiting {
                room: self.summary(),
            });
            self.lobby.push((
                pid.clone(),
                Waiting {
                    info,
                    connection,
                    out: req.out,
                    device: req.device,
                    ice_servers: req.ice_servers,
                },
            ));
            tracing::info!(participant = %pid, "waiting in the lobby");
            let _ = req.reply.send(Ok((pid, connection)));
            self.announce_lobby();
            self.publish_snapshot();
            return;
        }
        let entrant = Entrant {
            pid: pid.clone(),
            display_name: req.display_name,
            role: req.role,
            device: req.device,
            out: req.out,
            ice_servers: req.ice_servers,
            connection,
            reconnect: already_inside,
        };
        let res = self.enter(entrant).await;
        let _ = req.reply.send(res.map(|()| (pid, connection)));
    }

    /// Brings someone into the call: media session, `joined`, everyone told,
    /// everything already published starts flowing to them.
    async fn enter(&mut self, e: Entrant) -> Result<(), ControlError> {
        if self.media.is_none() {
            match RoomMedia::new(
                self.record.id.clone(),
                self.deps.ice.clone(),
                self.deps.codecs.clone(),
                self.media_tx.clone(),
            ) {
                Ok(m) => self.media = Some(m),
                Err(err) => {
                    tracing::error!("cannot start room media: {err}");
                    return Err(ControlError::Media(err.to_string()));
                }
            }
        }
        let pid = e.pid;
        if let Some(media) = &self.media
            && let Err(err) = media.add_participant(&pid)
        {
            tracing::error!(participant = %pid, "cannot create peer: {err}");
            return Err(ControlError::Media(err.to_string()));
        }
        let (session, claims) = self
            .deps
            .signer
            .session(&self.record.id, e.role, &pid, unix_now());
        let info = ParticipantInfo {
            id: pid.clone(),
            display_name: e.display_name,
            role: e.role,
            joined_at: now_rfc3339(),
            audio: MediaState::default(),
            video: MediaState::default(),
        };
        let others: Vec<ParticipantInfo> = self
            .order
            .iter()
            .filter_map(|id| self.participants.get(id).map(|p| p.info.clone()))
            .collect();
        let is_host = e.role == Role::Host;
        let joined = ServerMessage::Joined {
            version: PROTOCOL_VERSION,
            participant_id: pid.clone(),
            session,
            role: e.role,
            room: self.summary(),
            participants: others,
            ice_servers: e.ice_servers,
            invite_url: is_host.then(|| self.deps.links.invite(&self.record)),
            lobby: if is_host {
                self.lobby.iter().map(|(_, w)| w.info.clone()).collect()
            } else {
                Vec::new()
            },
        };
        let _ = e.out.try_send(joined);
        self.broadcast(
            None,
            ServerMessage::ParticipantJoined {
                participant: info.clone(),
            },
        );
        let joined_event = (!e.reconnect).then(|| info.clone());
        self.participants.insert(
            pid.clone(),
            Participant {
                info,
                connection: e.connection,
                out: e.out,
                session_jti: claims.jti.unwrap_or_default(),
                device: e.device,
                negotiation: Negotiation::default(),
                candidates: 0,
                visible: None,
                self_muted: Muted::default(),
                host_muted: Muted::default(),
            },
        );
        self.order.push(pid.clone());
        self.empty_since = None;
        tracing::info!(participant = %pid, role = e.role.as_str(), "participant joined");
        if let Some(info) = joined_event {
            self.deps
                .webhooks
                .emit(self.event(EventKind::ParticipantJoined).participant(info));
        }
        self.publish_snapshot();
        if e.role == Role::Ingest {
            // A WHIP publisher only sends.
            return Ok(());
        }
        if self.record.mode == RoomMode::Mcu {
            // One picture of everyone and a mix of everyone else's voice.
            self.subscribe_mcu(&pid);
            self.renegotiate(&pid).await;
            return Ok(());
        }
        let existing: Vec<TrackId> = self.tracks.keys().cloned().collect();
        if !existing.is_empty() {
            for track in existing {
                self.forward(&pid, &track);
            }
            self.renegotiate(&pid).await;
        }
        Ok(())
    }

    /// MCU: forwards the composite and `pid`'s mix-minus audio to `pid`.
    fn subscribe_mcu(&mut self, pid: &ParticipantId) {
        let Ok(media) = self.ensure_media() else {
            return;
        };
        let tracks = match media.mcu_tracks(pid) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(participant = %pid, "cannot set up MCU media: {e}");
                return;
            }
        };
        for (tid, _) in &tracks {
            if let Err(e) = media.subscribe(pid, tid) {
                tracing::warn!(participant = %pid, track = %tid, "cannot forward the composite: {e}");
            }
        }
        for (tid, kind) in tracks {
            // The audio is this participant's own mix; the video is shared.
            let owner = (kind == TrackKind::Audio).then(|| pid.clone());
            self.mcu_tracks.insert(tid, (kind, owner));
        }
    }

    fn forward(&mut self, subscriber: &ParticipantId, track: &TrackId) {
        let Some(media) = &self.media else { return };
        if self.record.mode == RoomMode::Mcu {
            // MCU participants receive the mixer's outputs only.
            return;
        }
        if self
            .tracks
            .get(track)
            .is_some_and(|t| &t.owner == subscriber)
            || self
                .participants
                .get(subscriber)
                .is_some_and(|p| p.info.role == Role::Ingest)
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
        let owner_muted = self
            .participants
            .get(&t.owner)
            .map(|o| o.host_muted)
            .unwrap_or_default();
        let on = should_forward(
            t.kind,
            &t.owner,
            owner_muted,
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

    /// A fault a client asked for (servers started with `--simulate-faults`).
    fn simulate(&self, pid: &ParticipantId, scenario: crate::signaling::Scenario) {
        use crate::signaling::Scenario;
        if !self.deps.simulate_faults {
            self.send(
                pid,
                ServerMessage::error(
                    "forbidden",
                    "fault simulation is off on this server (--simulate-faults)",
                    false,
                ),
            );
            return;
        }
        tracing::warn!(participant = %pid, ?scenario, "simulating a fault, as the client asked");
        match scenario {
            Scenario::MediaError => {
                let posted = self
                    .media
                    .as_ref()
                    .is_some_and(|m| m.simulate_media_error(pid));
                if !posted {
                    self.send(
                        pid,
                        ServerMessage::error(
                            "invalid_state",
                            "no media branch to fail yet (publish first)",
                            false,
                        ),
                    );
                }
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
        self.sync_composite();
    }

    /// Mute states, layout and focus to the composite (when there is one):
    /// a muted participant is neither heard nor shown in recordings.
    fn sync_composite(&self) {
        let Some(media) = &self.media else { return };
        // Called every speaker tick: no copies unless there is a mixer.
        let muted = self
            .participants
            .iter()
            .map(|(id, p)| (id, p.info.audio.muted, p.info.video.muted));
        let focus = self.speakers.speaking().first().cloned();
        media.sync_composite(muted, self.composite_layout, focus);
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
                        let (owner, kind) = match (self.tracks.get(tid), self.mcu_tracks.get(tid)) {
                            (Some(t), _) => (t.owner.clone(), t.kind),
                            (None, Some((kind, _))) => (composite_participant(), *kind),
                            _ => return None,
                        };
                        Some(TrackDescription {
                            mid: mid.clone(),
                            participant_id: owner,
                            kind: kind.as_str().to_owned(),
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
        if msg.is_host_action() {
            let is_host = self
                .participants
                .get(pid)
                .is_some_and(|p| p.info.role == Role::Host);
            if !is_host {
                self.send(
                    pid,
                    ServerMessage::error("forbidden", "only a host can do this", false),
                );
                return;
            }
            let actor = Actor::Host(pid.clone());
            let res = match msg {
                ClientMessage::SetLocked { locked } => {
                    self.update(
                        PatchRoom {
                            locked: Some(locked),
                            ..Default::default()
                        },
                        &actor,
                    )
                    .await
                }
                ClientMessage::SetInvites { enabled } => {
                    self.update(
                        PatchRoom {
                            invites_enabled: Some(enabled),
                            ..Default::default()
                        },
                        &actor,
                    )
                    .await
                }
                ClientMessage::RotateInvite => self.rotate_invite(None, &actor),
                ClientMessage::CloseRoom => {
                    self.audit(&actor, "room_closed", None, serde_json::json!({}));
                    self.close("closed").await;
                    Ok(())
                }
                ClientMessage::RemoveParticipant {
                    participant_id,
                    ban,
                } => self.remove_by(&participant_id, ban, &actor).await,
                ClientMessage::MuteParticipant {
                    participant_id,
                    audio,
                    video,
                } => self.mute(&participant_id, audio, video, &actor),
                ClientMessage::Admit { participant_id } => {
                    self.admit_waiting(&participant_id, &actor).await
                }
                ClientMessage::Deny { participant_id } => self.deny(&participant_id, &actor),
                ClientMessage::StartRecording {
                    kind,
                    format,
                    layout,
                } => self
                    .start_recording(
                        kind.unwrap_or(RecordingKind::Composite),
                        format.unwrap_or(RecordingFormat::Mp4),
                        layout.unwrap_or_default(),
                        &actor,
                    )
                    .map(|_| ()),
                ClientMessage::StartBroadcast { renditions } => {
                    let body = super::broadcast::StartBroadcast {
                        renditions: renditions.unwrap_or_default(),
                        ..Default::default()
                    };
                    match body.validate() {
                        Ok(spec) => {
                            let viewer_token = self.viewer_token();
                            let b = Broadcast::new(self.record.id.clone(), spec, viewer_token);
                            self.deps.broadcasts.insert(b.clone());
                            self.start_broadcast(b, &actor)
                        }
                        Err(e) => Err(e),
                    }
                }
                ClientMessage::StopBroadcast => {
                    let ids: Vec<BroadcastId> =
                        self.on_air.iter().map(|o| o.broadcast.id.clone()).collect();
                    for id in ids {
                        self.end_broadcast(&id, None);
                    }
                    Ok(())
                }
                ClientMessage::StopRecording => {
                    let running: Vec<RecordingId> = self
                        .recordings
                        .iter()
                        .filter(|a| a.record.state == RecordingState::Recording)
                        .map(|a| a.id().clone())
                        .collect();
                    if running.is_empty() {
                        Err(ControlError::NotFound("recording"))
                    } else {
                        for id in running {
                            let (tx, _rx) = oneshot::channel();
                            self.stop_recording(&id, tx);
                        }
                        Ok(())
                    }
                }
                _ => Ok(()),
            };
            if let Err(e) = res {
                self.send(pid, ServerMessage::error(e.code(), e.to_string(), false));
            }
            return;
        }
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
                    p.self_muted.audio = a;
                }
                if let Some(v) = video {
                    p.self_muted.video = v;
                }
                p.info.audio.muted = p.self_muted.audio || p.host_muted.audio;
                p.info.video.muted = p.self_muted.video || p.host_muted.video;
                let info = p.info.clone();
                self.broadcast(
                    Some(pid),
                    ServerMessage::ParticipantUpdated { participant: info },
                );
                self.publish_snapshot();
                self.sync_composite();
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
            ClientMessage::Simulate { scenario } => self.simulate(pid, scenario),
            // Host actions were handled above.
            ClientMessage::SetLocked { .. }
            | ClientMessage::SetInvites { .. }
            | ClientMessage::RotateInvite
            | ClientMessage::CloseRoom
            | ClientMessage::RemoveParticipant { .. }
            | ClientMessage::MuteParticipant { .. }
            | ClientMessage::Admit { .. }
            | ClientMessage::Deny { .. }
            | ClientMessage::StartRecording { .. }
            | ClientMessage::StopRecording
            | ClientMessage::StartBroadcast { .. }
            | ClientMessage::StopBroadcast => {}
        }
    }

    async fn on_media_event(&mut self, ev: MediaEvent) {
        match ev {
            MediaEvent::BroadcastLive { broadcast } => {
                if let Some(o) = self.on_air.iter().find(|o| o.broadcast.id == broadcast)
                    && o.broadcast.set_live()
                {
                    tracing::info!(%broadcast, "broadcast live");
                    self.broadcast_event(EventKind::BroadcastStarted, &o.broadcast);
                    self.announce_room();
                }
            }
            MediaEvent::BroadcastFailed { broadcast, message } => {
                if self.end_broadcast(&broadcast, Some(message)) {
                    tracing::warn!(%broadcast, "broadcast failed");
                }
            }
            MediaEvent::ViewerGone { broadcast, viewer } => {
                if self.remove_viewer(&broadcast, &viewer) {
                    tracing::debug!(%broadcast, %viewer, "WHEP viewer gone");
                }
            }
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
                self.record_new_track(&participant, &track, kind);
                self.build_broadcasts();
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
            MediaEvent::RecordingFileDone { recording, file } => {
                if let Some(a) = self.recordings.iter_mut().find(|a| a.id() == &recording) {
                    a.open.remove(&file);
                }
                self.finish_recordings();
            }
            MediaEvent::RecordingFailed { recording, message } => {
                if let Some(i) = self.recordings.iter().position(|a| a.id() == &recording) {
                    let mut a = self.recordings.remove(i);
                    let record = a.end(RecordingState::Failed, Some(message.clone()));
                    self.save_recording(&record);
                    self.recording_event(&record);
                    self.audit(
                        &Actor::System,
                        "recording_failed",
                        None,
                        serde_json::json!({"recording": recording, "error": message}),
                    );
                    tracing::warn!(%recording, "recording failed: {message}");
                    a.notify();
                    self.announce_room();
                }
                self.after_recordings_changed();
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
        self.finish_recordings();
        self.build_broadcasts();
        // Passed-through video: a keyframe per HLS segment.
        self.ticks = self.ticks.wrapping_add(1);
        if self
            .ticks
            .is_multiple_of(u64::from(crate::media::broadcast::HLS_SEGMENT_S))
            && let Some(media) = &self.media
        {
            media.broadcast_keyframes();
        }
        if self.ticks.is_multiple_of(STATS_TICKS)
            && let Some(media) = &self.media
        {
            media.sample_stats();
        }
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
        // A reconnect replaces the connection, not the participant.
        if reason != "reconnected" {
            self.deps.webhooks.emit(
                self.event(EventKind::ParticipantLeft)
                    .participant(p.info.clone())
                    .reason(reason),
            );
        }
        drop(p);
        let shown: Vec<BroadcastId> = self
            .on_air
            .iter()
            .filter(|o| o.source.as_ref() == Some(pid))
            .map(|o| o.broadcast.id.clone())
            .collect();
        for id in shown {
            self.end_broadcast(&id, None);
        }
        self.order.retain(|id| id != pid);
        self.tracks.retain(|_, t| &t.owner != pid);
        self.speakers.forget(pid);
        if let Some(m) = &self.media {
            m.remove_participant(pid);
        }
        if self.record.mode == RoomMode::Mcu
            && let Some(media) = &self.media
        {
            self.mcu_tracks
                .retain(|_, (_, owner)| owner.as_ref() != Some(pid));
            media.release_mixer_if_unused();
        }
        tracing::info!(participant = %pid, reason, "participant left");
        self.broadcast(
            None,
            ServerMessage::ParticipantLeft {
                participant_id: pid.clone(),
                reason: reason.to_owned(),
            },
        );
        if self.participants.is_empty() {
            // No MCU participant: the mixer's MCU outputs are gone.
            self.mcu_tracks.clear();
            // Nobody inside: free the pipeline (unless it is recording); the
            // empty timer starts.
            if self.recordings.is_empty() && self.on_air.is_empty() {
                self.media = None;
            }
            self.empty_since = Some(Instant::now());
        }
        self.publish_snapshot();
        self.update_audio_forwarding();
    }

    /// The viewer token of this room's broadcasts (private rooms only;
    /// broadcasts of listed rooms are open to anyone).
    fn viewer_token(&self) -> Option<String> {
        (self.record.visibility == crate::model::Visibility::Private).then(|| {
            self.deps
                .signer
                .link(&self.record.id, Role::Viewer, 0, None)
        })
    }

    fn start_broadcast(&mut self, b: Arc<Broadcast>, actor: &Actor) -> Result<(), ControlError> {
        if self.closed {
            return Err(ControlError::RoomClosed);
        }
        self.ensure_media()?;
        self.audit(
            actor,
            "broadcast_started",
            None,
            serde_json::json!({"broadcast": b.id, "source": b.spec.source.name()}),
        );
        tracing::info!(broadcast = %b.id, source = %b.spec.source.name(), "broadcast starting");
        self.on_air.push(OnAir {
            broadcast: b,
            since: Instant::now(),
            built: false,
            source: None,
            failures: 0,
        });
        self.build_broadcasts();
        self.announce_room();
        Ok(())
    }

    /// The participant a broadcast shows, once it publishes video (and
    /// audio, or 2 s have passed without it).
    fn broadcast_source(&self, spec: &SourceSpec, waited: Duration) -> Option<BroadcastInput> {
        let pid = match spec {
            SourceSpec::Composite => return Some(BroadcastInput::Composite),
            SourceSpec::Participant(p) => p.clone(),
            SourceSpec::Ingest => self
                .order
                .iter()
                .find(|id| {
                    self.participants
                        .get(*id)
                        .is_some_and(|p| p.info.role == Role::Ingest && p.info.video.published)
                })?
                .clone(),
        };
        let p = self.participants.get(&pid)?;
        (p.info.video.published && (p.info.audio.published || waited > Duration::from_secs(2)))
            .then_some(BroadcastInput::Participant(pid))
    }

    /// Builds the outputs of every broadcast whose source is there now.
    fn build_broadcasts(&mut self) {
        for i in 0..self.on_air.len() {
            let o = &self.on_air[i];
            if o.built {
                continue;
            }
            let Some(input) = self.broadcast_source(&o.broadcast.spec.source, o.since.elapsed())
            else {
                continue;
            };
            let b = o.broadcast.clone();
            let outputs = crate::media::broadcast::Outputs {
                hls_dir: b.spec.hls.then(|| self.deps.hls_dir.join(b.id.as_str())),
                hls_live: b.hls_live.clone(),
                whep: b.spec.whep,
                rtmp: !b.spec.rtmp.is_empty(),
                renditions: b.spec.renditions.clone(),
            };
            let media = match self.ensure_media() {
                Ok(m) => m,
                Err(e) => {
                    if b.end(Some(e.to_string())) {
                        self.broadcast_event(EventKind::BroadcastEnded, &b);
                    }
                    continue;
                }
            };
            match media.start_broadcast(&b.id, &input, &outputs) {
                Ok(built) => {
                    tracing::info!(broadcast = %b.id, renditions = ?built.renditions, encoders = ?built.encoders, "broadcast built");
                    b.built(
                        built.encoders,
                        Transcode {
                            video: built.transcode_video,
                            audio: built.transcode_audio,
                        },
                        built.renditions,
                    );
                    if let Some(feed) = built.rtmp {
                        for t in 0..b.spec.rtmp.len() {
                            tokio::spawn(crate::media::rtmp::run_target(
                                feed.clone(),
                                b.rtmp.clone(),
                                t,
                            ));
                        }
                    }
                    self.on_air[i].built = true;
                    if let BroadcastInput::Participant(p) = input {
                        self.on_air[i].source = Some(p);
                    }
                }
                // The source has no video (yet): try again later.
                Err(MediaError::NoPeer) => {}
                Err(e) => {
                    // Elements were removed again; try on the next tick.
                    self.on_air[i].failures += 1;
                    tracing::warn!(broadcast = %b.id, attempt = self.on_air[i].failures, "cannot start the broadcast: {e}");
                    if self.on_air[i].failures >= BROADCAST_BUILD_ATTEMPTS
                        && b.end(Some(e.to_string()))
                    {
                        self.broadcast_event(EventKind::BroadcastEnded, &b);
                    }
                }
            }
        }
        let before = self.on_air.len();
        self.on_air.retain(|o| o.broadcast.is_active());
        if self.on_air.len() != before {
            self.announce_room();
        }
    }

    /// Ends broadcast `id`; returns whether it was on air here.
    fn end_broadcast(&mut self, id: &BroadcastId, error: Option<String>) -> bool {
        let Some(i) = self.on_air.iter().position(|o| &o.broadcast.id == id) else {
            return false;
        };
        let o = self.on_air.remove(i);
        if let Some(media) = &self.media {
            media.stop_broadcast(id);
        }
        if o.broadcast.end(error) {
            self.broadcast_event(EventKind::BroadcastEnded, &o.broadcast);
        }
        if o.broadcast.spec.hls {
            // Players still fetch the end of the playlist for a while.
            let dir = self.deps.hls_dir.join(id.as_str());
            let live = o.broadcast.hls_live.clone();
            tokio::spawn(async move {
                // The writers end their playlists on EOS; whatever did not
                // (a writer that never got it) ends here, so no request
                // waits for parts that never come.
                tokio::time::sleep(Duration::from_secs(2)).await;
                live.end_all();
                tokio::time::sleep(Duration::from_secs(58)).await;
                let _ = tokio::fs::remove_dir_all(dir).await;
            });
        }
        tracing::info!(broadcast = %id, "broadcast ended");
        self.announce_room();
        true
    }

    async fn whep_offer(
        &mut self,
        id: &BroadcastId,
        sdp: &str,
    ) -> Result<(ViewerId, String), ControlError> {
        let o = self
            .on_air
            .iter()
            .find(|o| &o.broadcast.id == id)
            .ok_or(ControlError::NotFound("broadcast"))?;
        if !o.built {
            return Err(ControlError::Conflict(
                "broadcast_not_live",
                "the broadcast has not started yet".into(),
            ));
        }
        let b = o.broadcast.clone();
        let media = self
            .media
            .as_ref()
            .ok_or(ControlError::NotFound("broadcast"))?;
        let (viewer, answer) = media.whep_viewer(id, sdp).await.map_err(|e| match e {
            MediaError::BadSdp(m) => ControlError::BadRequest(m),
            other => ControlError::Media(other.to_string()),
        })?;
        b.whep_viewers
            .store(media.viewer_count(id), std::sync::atomic::Ordering::Relaxed);
        tracing::info!(broadcast = %id, %viewer, "WHEP viewer joined");
        Ok((viewer, answer))
    }

    fn remove_viewer(&self, id: &BroadcastId, viewer: &ViewerId) -> bool {
        let Some(media) = &self.media else {
            return false;
        };
        let removed = media.remove_viewer(id, viewer);
        if let Some(o) = self.on_air.iter().find(|o| &o.broadcast.id == id) {
            o.broadcast
                .whep_viewers
                .store(media.viewer_count(id), std::sync::atomic::Ordering::Relaxed);
        }
        removed
    }

    /// WHIP: the publisher enters as a participant of role `ingest` (room
    /// lock and size apply) and its offer is answered.
    async fn ingest(
        &mut self,
        display_name: String,
        sdp: &str,
    ) -> Result<(ParticipantId, String), ControlError> {
        admit(
            &self.record,
            self.participants.len(),
            Role::Ingest,
            0,
            false,
        )?;
        // Nobody reads an ingest's signaling: what is sent to it is dropped.
        let (out, _) = mpsc::channel(1);
        let pid = ParticipantId::generate();
        let connection = self.next_connection;
        self.next_connection += 1;
        self.enter(Entrant {
            pid: pid.clone(),
            display_name,
            role: Role::Ingest,
            device: None,
            out,
            ice_servers: Vec::new(),
            connection,
            reconnect: false,
        })
        .await?;
        let media = self.ensure_media()?;
        match media.publish_offer_gathered(&pid, sdp).await {
            Ok(answer) => Ok((pid, answer)),
            Err(e) => {
                self.remove(&pid, "failed").await;
                Err(match e {
                    MediaError::BadSdp(m) => ControlError::BadRequest(m),
                    other => ControlError::Media(other.to_string()),
                })
            }
        }
    }

    fn save_recording(&self, record: &RecordingRecord) {
        if let Err(e) = self.deps.store.save_recording(record) {
            tracing::error!(recording = %record.id, "cannot store recording: {e}");
        }
    }

    fn ensure_media(&mut self) -> Result<&RoomMedia, ControlError> {
        if self.media.is_none() {
            let m = RoomMedia::new(
                self.record.id.clone(),
                self.deps.ice.clone(),
                self.deps.codecs.clone(),
                self.media_tx.clone(),
            )
            .map_err(|e| ControlError::Media(e.to_string()))?;
            self.media = Some(m);
        }
        self.media
            .as_ref()
            .ok_or_else(|| ControlError::Media("no media".into()))
    }

    fn start_recording(
        &mut self,
        kind: RecordingKind,
        format: RecordingFormat,
        layout: LayoutMode,
        actor: &Actor,
    ) -> Result<RecordingRecord, ControlError> {
        if self
            .recordings
            .iter()
            .any(|a| a.record.state == RecordingState::Recording)
        {
            return Err(ControlError::AlreadyRecording);
        }
        let id = RecordingId::generate();
        let dir = self.deps.recordings_dir.join(id.as_str());
        std::fs::create_dir_all(&dir)
            .map_err(|e| ControlError::Media(format!("cannot create {}: {e}", dir.display())))?;
        let record = RecordingRecord {
            id: id.clone(),
            room_id: self.record.id.clone(),
            kind,
            format,
            state: RecordingState::Recording,
            started_at: now_rfc3339(),
            ended_at: None,
            duration_s: None,
            error: None,
            files: Vec::new(),
        };
        let mut active = Active::new(record.clone(), dir.clone());
        let tracks: Vec<(TrackId, ParticipantId, TrackKind)> = self
            .tracks
            .iter()
            .map(|(t, m)| (t.clone(), m.owner.clone(), m.kind))
            .collect();
        let media = self.ensure_media()?;
        match kind {
            RecordingKind::Composite => {
                let file = media
                    .start_composite_recording(&id, format, &dir)
                    .map_err(|e| ControlError::Media(e.to_string()))?;
                active.open.insert(file);
                self.composite_layout = layout;
            }
            RecordingKind::Tracks => {
                for (track, owner, k) in tracks {
                    let stem = track_stem(owner.as_str(), k.as_str(), track.as_str());
                    match media.record_track(&id, &track, format, &dir, &stem) {
                        Ok(file) => {
                            active.open.insert(file);
                        }
                        Err(e) => tracing::warn!(%track, "cannot record track: {e}"),
                    }
                }
            }
        }
        self.save_recording(&record);
        self.audit(
            actor,
            "recording_started",
            None,
            serde_json::json!({"recording": id, "kind": kind, "format": format}),
        );
        tracing::info!(recording = %id, ?kind, ?format, "recording started");
        self.recordings.push(active);
        self.sync_composite();
        self.announce_room();
        Ok(record)
    }

    /// A track that starts during a `tracks` recording gets its own file.
    fn record_new_track(&mut self, owner: &ParticipantId, track: &TrackId, kind: TrackKind) {
        let Some(media) = &self.media else { return };
        for a in self.recordings.iter_mut().filter(|a| {
            a.record.kind == RecordingKind::Tracks && a.record.state == RecordingState::Recording
        }) {
            let stem = track_stem(owner.as_str(), kind.as_str(), track.as_str());
            match media.record_track(&a.record.id, track, a.record.format, &a.dir, &stem) {
                Ok(file) => {
                    a.open.insert(file);
                }
                Err(e) => tracing::warn!(%track, "cannot record track: {e}"),
            }
        }
    }

    fn stop_recording(
        &mut self,
        id: &RecordingId,
        reply: oneshot::Sender<Result<RecordingRecord, ControlError>>,
    ) {
        let Some(a) = self.recordings.iter_mut().find(|a| a.id() == id) else {
            let _ = reply.send(Err(ControlError::NotFound("recording")));
            return;
        };
        if a.record.state == RecordingState::Recording {
            a.record.state = RecordingState::Finalizing;
            a.stopping_since = Some(std::time::Instant::now());
            if let Some(media) = &self.media {
                media.stop_recording(id);
            }
        }
        a.waiters.push(reply);
        let record = a.record.clone();
        self.save_recording(&record);
        self.announce_room();
        self.finish_recordings();
    }

    /// Recordings whose files are all complete (or that waited too long) end.
    fn finish_recordings(&mut self) {
        let mut i = 0;
        let mut changed = false;
        while i < self.recordings.len() {
            let a = &self.recordings[i];
            let late = a
                .stopping_since
                .is_some_and(|t| t.elapsed() > FINALIZE_WAIT);
            let done = a.record.state == RecordingState::Finalizing && (a.open.is_empty() || late);
            if done {
                let mut a = self.recordings.remove(i);
                if !a.open.is_empty() {
                    tracing::warn!(
                        recording = %a.id(),
                        files = a.open.len(),
                        "files not finished in time; served as last written"
                    );
                    if let Some(media) = &self.media {
                        media.abandon_recording(a.id());
                    }
                }
                let record = a.end(RecordingState::Ready, None);
                self.save_recording(&record);
                self.recording_event(&record);
                tracing::info!(recording = %record.id, "recording ready");
                a.notify();
                changed = true;
            } else {
                i += 1;
            }
        }
        if changed {
            self.after_recordings_changed();
        }
    }

    fn after_recordings_changed(&mut self) {
        if let Some(media) = &self.media {
            media.release_mixer_if_unused();
        }
        if self.recordings.is_empty() && self.participants.is_empty() {
            self.media = None;
        }
    }

    /// Stops every recording and waits (up to 3 s) for the files to close.
    async fn finalize_all_recordings(&mut self) {
        if self.recordings.is_empty() {
            return;
        }
        let ids: Vec<RecordingId> = self.recordings.iter().map(|a| a.id().clone()).collect();
        if let Some(media) = &self.media {
            for id in &ids {
                media.stop_recording(id);
            }
            let deadline = Instant::now() + Duration::from_secs(3);
            while ids.iter().any(|id| !media.recording_files(id).is_empty())
                && Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            for id in &ids {
                media.abandon_recording(id);
            }
        }
        for mut a in std::mem::take(&mut self.recordings) {
            let record = a.end(RecordingState::Ready, None);
            self.save_recording(&record);
            self.recording_event(&record);
            a.notify();
        }
    }

    /// The server is stopping. Recordings are finished (their files
    /// closed and playable), broadcasts end, everyone inside or waiting is
    /// told `server_shutdown` (fatal: the socket closes and clients
    /// reconnect once the server is back), and the actor stops. The room
    /// itself stays open in the store and comes back on the next start.
    async fn shut_down(&mut self) {
        if self.closed {
            return;
        }
        self.finalize_all_recordings().await;
        let on_air: Vec<BroadcastId> = self.on_air.iter().map(|o| o.broadcast.id.clone()).collect();
        for id in on_air {
            self.end_broadcast(&id, None);
        }
        let bye = ServerMessage::error(
            "server_shutdown",
            "the server is restarting; reconnect in a moment",
            true,
        );
        let inside = self.order.len();
        for (i, pid) in self.order.iter().enumerate() {
            if let Some(p) = self.participants.get(pid) {
                let room = RoomInfo::new(&self.record, inside - i - 1);
                self.deps.webhooks.emit(
                    Event::new(EventKind::ParticipantLeft, room)
                        .participant(p.info.clone())
                        .reason("server_shutdown"),
                );
            }
            self.send(pid, bye.clone());
        }
        for (id, _) in &self.lobby {
            self.send(id, bye.clone());
        }
        self.lobby.clear();
        self.participants.clear();
        self.order.clear();
        self.tracks.clear();
        self.media = None;
        self.stopping = true;
        tracing::info!("room stopped for the server's shutdown");
    }

    async fn close(&mut self, reason: &str) {
        if self.closed {
            return;
        }
        self.finalize_all_recordings().await;
        let on_air: Vec<BroadcastId> = self.on_air.iter().map(|o| o.broadcast.id.clone()).collect();
        for id in on_air {
            self.end_broadcast(&id, None);
        }
        // Stored closed (and the API answering 404) before anyone is told.
        let mut record = self.record.clone();
        record.closed_at = Some(now_rfc3339());
        if let Err(e) = self.deps.store.update_room(&record) {
            tracing::error!("cannot store closed room: {e}");
        }
        self.record = record;
        self.closed = true;
        // Everyone inside leaves with the room (in join order), then the room ends.
        let inside = self.order.len();
        for (i, pid) in self.order.iter().enumerate() {
            if let Some(p) = self.participants.get(pid) {
                let room = RoomInfo::new(&self.record, inside - i - 1);
                self.deps.webhooks.emit(
                    Event::new(EventKind::ParticipantLeft, room)
                        .participant(p.info.clone())
                        .reason("room_closed"),
                );
            }
        }
        self.deps
            .webhooks
            .emit(Event::new(EventKind::RoomEnded, RoomInfo::new(&self.record, 0)).reason(reason));
        self.publish_snapshot();
        self.broadcast(None, ServerMessage::RoomClosed);
        for (id, _) in &self.lobby {
            self.send(id, ServerMessage::RoomClosed);
        }
        self.lobby.clear();
        self.participants.clear();
        self.order.clear();
        self.tracks.clear();
        self.media = None;
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
        | Command::RotateInvite { reply, .. }
        | Command::RotateHostLink { reply, .. }
        | Command::Remove { reply, .. }
        | Command::Mute { reply, .. }
        | Command::Admit { reply, .. }
        | Command::Deny { reply, .. } => {
            let _ = reply.send(Err(ControlError::RoomClosed));
        }
        Command::StartRecording { reply, .. } | Command::StopRecording { reply, .. } => {
            let _ = reply.send(Err(ControlError::RoomClosed));
        }
        Command::StartBroadcast { reply, .. } | Command::StopBroadcast { reply, .. } => {
            let _ = reply.send(Err(ControlError::RoomClosed));
        }
        Command::WhepOffer { reply, .. } => {
            let _ = reply.send(Err(ControlError::RoomClosed));
        }
        Command::WhepStop { reply, .. } => {
            let _ = reply.send(false);
        }
        Command::Ingest { reply, .. } => {
            let _ = reply.send(Err(ControlError::RoomClosed));
        }
        Command::Close { reply, .. } => {
            if let Some(r) = reply {
                let _ = r.send(());
            }
        }
        Command::Shutdown { reply } => {
            let _ = reply.send(());
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
            host_generation: 0,
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
