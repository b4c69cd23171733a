//! Control layer: rooms, participants, roles, tokens. No GStreamer or HTTP
//! types here; the media plane is reached through `media::RoomMedia`'s
//! plain-Rust methods, the edge through the types below.
//!
//! [`Control`] is the directory of rooms. Each open room is an actor
//! ([`room`]): one tokio task owning that room's state, fed commands over a
//! channel and publishing a snapshot for readers.

pub mod broadcast;
pub mod recording;
pub mod room;
pub mod speakers;
pub mod tokens;

use crate::config::IceSettings;
use crate::ids::{ParticipantId, RoomId};
pub use crate::model::{RecordingFileView, RecordingView};
use crate::model::{Role, RoomMode, RoomRecord, Visibility, now_rfc3339, unix_now};
use crate::signaling::{IceServer, ParticipantInfo, ServerMessage};
use crate::store::{Store, StoreError};
use room::{Command, JoinRequest, RoomHandle};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokens::{TokenError, TokenKind, TokenSigner};
use tokio::sync::{mpsc, oneshot};

/// Most participants a room may be configured for.
pub const MAX_PARTICIPANTS_LIMIT: u32 = 100;
/// Default cap.
pub const DEFAULT_MAX_PARTICIPANTS: u32 = 50;
/// Longest room name, in characters.
pub const MAX_NAME_CHARS: usize = 100;
/// Longest display name, in characters.
pub const MAX_DISPLAY_NAME_CHARS: usize = 64;

/// Why the control layer said no.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Unknown room or participant.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The room was closed.
    #[error("the room is closed")]
    RoomClosed,
    /// The room is locked.
    #[error("the room is locked")]
    RoomLocked,
    /// The room is full.
    #[error("the room is full")]
    RoomFull,
    /// The token does not allow this.
    #[error("{0}")]
    Forbidden(String),
    /// The token is not valid.
    #[error("{0}")]
    Unauthorized(String),
    /// Valid request, invalid values.
    #[error("{0}")]
    Invalid(String),
    /// Storage failed.
    #[error("storage error: {0}")]
    Store(#[from] StoreError),
    /// The media plane failed.
    #[error("media error: {0}")]
    Media(String),
    /// This browser was barred from the room.
    #[error("you were removed from this room")]
    Banned,
    /// Too many requests or rooms from one address.
    #[error("{0}")]
    RateLimited(String),
    /// The room records already.
    #[error("the room is being recorded already")]
    AlreadyRecording,
    /// The request conflicts with the current state (409 with this code).
    #[error("{1}")]
    Conflict(&'static str, String),
    /// Malformed input that is not JSON (an SDP offer).
    #[error("{0}")]
    BadRequest(String),
}

impl ControlError {
    /// snake_case code for the JSON error shape and signaling errors.
    pub fn code(&self) -> &'static str {
        match self {
            ControlError::NotFound(_) => "not_found",
            ControlError::RoomClosed => "room_closed",
            ControlError::RoomLocked => "room_locked",
            ControlError::RoomFull => "room_full",
            ControlError::Forbidden(_) => "forbidden",
            ControlError::Unauthorized(_) => "unauthorized",
            ControlError::Invalid(_) => "invalid_request",
            ControlError::Store(_) => "internal",
            ControlError::Media(_) => "media_error",
            ControlError::Banned => "banned",
            ControlError::RateLimited(_) => "rate_limited",
            ControlError::AlreadyRecording => "already_recording",
            ControlError::Conflict(code, _) => code,
            ControlError::BadRequest(_) => "bad_request",
        }
    }
}

impl From<TokenError> for ControlError {
    fn from(e: TokenError) -> Self {
        ControlError::Unauthorized(e.to_string())
    }
}

/// Who did something (for the audit log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// The admin API.
    Admin,
    /// A host, through the signaling.
    Host(ParticipantId),
    /// The server itself (timeouts).
    System,
}

impl Actor {
    /// `admin`, `host:p_…`, `system`.
    pub fn label(&self) -> String {
        match self {
            Actor::Admin => "admin".into(),
            Actor::Host(p) => format!("host:{p}"),
            Actor::System => "system".into(),
        }
    }
}

/// Makes a room's links from the server's public URL and signing key.
#[derive(Debug, Clone)]
pub struct Links {
    public_url: String,
    signer: TokenSigner,
}

impl Links {
    fn link_url(&self, id: &RoomId, token: &str) -> String {
        format!("{}/r/{}#t={}", self.public_url, id, token)
    }

    /// The current invite link (guests).
    pub fn invite(&self, r: &RoomRecord) -> String {
        self.link_url(
            &r.id,
            &self
                .signer
                .link(&r.id, Role::Guest, r.invite_generation, r.invite_expires_at),
        )
    }

    /// The current host link.
    pub fn host(&self, r: &RoomRecord) -> String {
        self.link_url(
            &r.id,
            &self.signer.link(&r.id, Role::Host, r.host_generation, None),
        )
    }
}

/// Anonymous room creation: open rooms one address may have at once.
pub const MAX_ROOMS_PER_ADDRESS: usize = 10;
/// Longest invite link lifetime, seconds (a year).
pub const MAX_INVITE_TTL: u64 = 365 * 24 * 3600;

/// Body of `POST /api/v1/rooms/{id}/invite` (optional).
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
pub struct RotateInvite {
    /// The new invite link stops working after this many seconds.
    #[serde(default)]
    #[schemars(range(min = 1, max = MAX_INVITE_TTL))]
    pub expires_in: Option<u64>,
}

/// Body of `POST /api/v1/rooms/{id}/participants/{pid}/mute`.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
pub struct MuteRequest {
    /// Stop (true) or resume (false) forwarding the audio.
    #[serde(default)]
    pub audio: Option<bool>,
    /// Stop (true) or resume (false) forwarding the video.
    #[serde(default)]
    pub video: Option<bool>,
}

/// Body of `POST /api/v1/rooms/{id}/recordings`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
pub struct StartRecording {
    /// Composite (default) or tracks.
    #[serde(default = "default_kind")]
    pub kind: crate::model::RecordingKind,
    /// mp4 (default) or mkv.
    #[serde(default)]
    pub format: crate::model::RecordingFormat,
    /// Composite: `grid` (default) or `speaker` (the active speaker large).
    #[serde(default)]
    pub layout: Option<crate::media::layout::LayoutMode>,
}

fn default_kind() -> crate::model::RecordingKind {
    crate::model::RecordingKind::Composite
}

/// Body of `POST /api/v1/rooms`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
pub struct CreateRoom {
    /// Name.
    #[schemars(length(min = 1, max = MAX_NAME_CHARS))]
    pub name: String,
    /// Cap.
    #[serde(default)]
    #[schemars(range(min = 1, max = MAX_PARTICIPANTS_LIMIT))]
    pub max_participants: Option<u32>,
    /// Visibility.
    #[serde(default)]
    pub visibility: Option<Visibility>,
    /// Lobby.
    #[serde(default)]
    pub lobby: Option<bool>,
    /// Mode.
    #[serde(default)]
    pub mode: Option<RoomMode>,
}

/// Body of `PATCH /api/v1/rooms/{id}`.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
pub struct PatchRoom {
    /// Name.
    #[schemars(length(min = 1, max = MAX_NAME_CHARS))]
    pub name: Option<String>,
    /// Cap.
    #[schemars(range(min = 1, max = MAX_PARTICIPANTS_LIMIT))]
    pub max_participants: Option<u32>,
    /// Visibility.
    pub visibility: Option<Visibility>,
    /// Lobby.
    pub lobby: Option<bool>,
    /// Locked.
    pub locked: Option<bool>,
    /// Invite link works.
    pub invites_enabled: Option<bool>,
}

/// A room as the API shows it.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct RoomView {
    /// Settings and head count.
    #[serde(flatten)]
    pub room: crate::model::RoomInfo,
    /// Link for guests.
    pub invite_url: String,
    /// Link for hosts.
    pub host_url: String,
    /// Present on `GET /rooms/{id}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub participants: Option<Vec<ParticipantInfo>>,
    /// The recording running (or finalizing) now, if any.
    pub recording: Option<ActiveRecording>,
}

/// The recording a room is making, as its room view shows it.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct ActiveRecording {
    /// Recording id.
    pub id: crate::ids::RecordingId,
    /// `composite` or `tracks`.
    pub kind: crate::model::RecordingKind,
    /// `recording` or `finalizing`.
    pub state: crate::model::RecordingState,
}

/// A listed room on the public list.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct PublicRoom {
    /// Id.
    pub id: RoomId,
    /// Name.
    pub name: String,
    /// People inside.
    pub participant_count: usize,
    /// Link to join (the invite link).
    pub join_url: String,
}

/// Settings the control layer needs.
#[derive(Debug, Clone)]
pub struct ControlSettings {
    /// Base of returned URLs.
    pub public_url: String,
    /// ICE for media.
    pub ice: IceSettings,
    /// Empty rooms close after this.
    pub empty_timeout: Duration,
    /// Audio of at most this many recent speakers is forwarded (0: everyone's).
    pub audio_last_n: usize,
    /// Data directory (recordings go under `recordings/`).
    pub data_dir: std::path::PathBuf,
    /// Encoders and decoders of this machine.
    pub codecs: Arc<crate::media::codecs::Selection>,
    /// Where room, participant, recording and broadcast events are queued.
    pub webhooks: crate::webhooks::Webhooks,
    /// Clients may ask for simulated faults (`--simulate-faults`).
    pub simulate_faults: bool,
}

/// What a successful join gives the edge.
#[derive(Debug)]
pub struct Joined {
    /// Room actor to send the participant's messages to.
    pub room: RoomHandle,
    /// The participant.
    pub participant: ParticipantId,
    /// Connection serial (a reconnect of the same participant gets a new one).
    pub connection: u64,
}

struct Inner {
    store: Arc<Store>,
    signer: TokenSigner,
    links: Links,
    settings: ControlSettings,
    rooms: Mutex<HashMap<RoomId, RoomHandle>>,
    next_seq: std::sync::atomic::AtomicU64,
    broadcasts: Arc<broadcast::Registry>,
}

/// The room directory.
#[derive(Clone)]
pub struct Control {
    inner: Arc<Inner>,
}

fn check_name(name: &str) -> Result<String, ControlError> {
    let name = name.trim();
    let n = name.chars().count();
    if n == 0 || n > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(ControlError::Invalid(format!(
            "name must be 1..={MAX_NAME_CHARS} printable characters"
        )));
    }
    Ok(name.to_owned())
}

fn check_max(n: u32) -> Result<u32, ControlError> {
    if (1..=MAX_PARTICIPANTS_LIMIT).contains(&n) {
        Ok(n)
    } else {
        Err(ControlError::Invalid(format!(
            "max_participants must be 1..={MAX_PARTICIPANTS_LIMIT}"
        )))
    }
}

/// Converts configured STUN/TURN URLs to what a browser's RTCPeerConnection takes.
pub fn client_ice_servers(ice: &IceSettings) -> Vec<IceServer> {
    let mut out = Vec::new();
    if let Some(stun) = &ice.stun_server {
        out.push(IceServer {
            urls: vec![format!("stun:{}", stun.trim_start_matches("stun://"))],
            username: None,
            credential: None,
        });
    }
    for turn in &ice.turn_servers {
        let (scheme, rest) = match turn.split_once("://") {
            Some(("turns", r)) => ("turns", r),
            Some((_, r)) => ("turn", r),
            None => continue,
        };
        let (creds, host) = rest.rsplit_once('@').unwrap_or(("", rest));
        let (user, pass) = creds.split_once(':').unwrap_or((creds, ""));
        out.push(IceServer {
            urls: vec![format!("{scheme}:{host}")],
            username: (!user.is_empty()).then(|| user.to_owned()),
            credential: (!pass.is_empty()).then(|| pass.to_owned()),
        });
    }
    out
}

impl Control {
    /// Loads every open room from the store and starts its actor.
    pub fn start(store: Arc<Store>, settings: ControlSettings) -> Result<Self, ControlError> {
        let signer = TokenSigner::new(store.secret()?);
        let purged = store.purge_revocations(unix_now())?;
        if purged > 0 {
            tracing::debug!(purged, "expired revocations dropped");
        }
        let links = Links {
            public_url: settings.public_url.clone(),
            signer: signer.clone(),
        };
        let control = Self {
            inner: Arc::new(Inner {
                store: store.clone(),
                signer,
                links,
                settings,
                rooms: Mutex::new(HashMap::new()),
                next_seq: std::sync::atomic::AtomicU64::new(0),
                broadcasts: Arc::new(broadcast::Registry::default()),
            }),
        };
        // HLS of a previous run is stale: its broadcasts ended with it. The
        // directory itself stays (it may be a mount point, e.g. a tmpfs).
        let hls = control.hls_dir();
        for entry in std::fs::read_dir(&hls).into_iter().flatten().flatten() {
            let path = entry.path();
            let removed = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            if let Err(e) = removed {
                tracing::warn!("cannot clear {}: {e}", path.display());
            }
        }
        control.recover_recordings()?;
        for record in store.open_rooms()? {
            control.spawn_room(record);
        }
        Ok(control)
    }

    /// The token signer (for tests and tools).
    pub fn signer(&self) -> &TokenSigner {
        &self.inner.signer
    }

    fn rooms(&self) -> std::sync::MutexGuard<'_, HashMap<RoomId, RoomHandle>> {
        self.inner.rooms.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn spawn_room(&self, record: RoomRecord) -> RoomHandle {
        let id = record.id.clone();
        let weak = Arc::downgrade(&self.inner);
        let on_closed = Box::new(move |id: &RoomId| {
            if let Some(inner) = weak.upgrade() {
                inner
                    .rooms
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(id);
            }
        });
        let seq = self
            .inner
            .next_seq
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let handle = room::spawn(
            seq,
            record,
            room::RoomDeps {
                store: self.inner.store.clone(),
                signer: self.inner.signer.clone(),
                ice: self.inner.settings.ice.clone(),
                empty_timeout: self.inner.settings.empty_timeout,
                audio_last_n: self.inner.settings.audio_last_n,
                simulate_faults: self.inner.settings.simulate_faults,
                links: self.inner.links.clone(),
                codecs: self.inner.settings.codecs.clone(),
                recordings_dir: self.inner.settings.data_dir.join("recordings"),
                hls_dir: self.hls_dir(),
                broadcasts: self.inner.broadcasts.clone(),
                webhooks: self.inner.settings.webhooks.clone(),
                on_closed,
            },
        );
        self.rooms().insert(id, handle.clone());
        handle
    }

    fn handle(&self, id: &RoomId) -> Result<RoomHandle, ControlError> {
        if let Some(h) = self.rooms().get(id)
            && !h.is_closed()
        {
            return Ok(h.clone());
        }
        match self.inner.store.get_room(id)? {
            Some(r) if r.closed_at.is_some() => Err(ControlError::RoomClosed),
            _ => Err(ControlError::NotFound("room")),
        }
    }

    fn view(
        &self,
        record: &RoomRecord,
        participants: &[ParticipantInfo],
        with_list: bool,
    ) -> RoomView {
        RoomView {
            room: crate::model::RoomInfo::new(record, participants.len()),
            invite_url: self.inner.links.invite(record),
            host_url: self.inner.links.host(record),
            participants: with_list.then(|| participants.to_vec()),
            recording: self.active_recording(&record.id),
        }
    }

    fn active_recording(&self, room: &RoomId) -> Option<ActiveRecording> {
        use crate::model::RecordingState;
        let list = match self.inner.store.room_recordings(room) {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(%room, "cannot read recordings: {e}");
                return None;
            }
        };
        list.into_iter()
            .find(|r| {
                matches!(
                    r.state,
                    RecordingState::Recording | RecordingState::Finalizing
                )
            })
            .map(|r| ActiveRecording {
                id: r.id,
                kind: r.kind,
                state: r.state,
            })
    }

    /// Creates a room. `creator` is the address of an anonymous creator
    /// (public creation), who may have at most [`MAX_ROOMS_PER_ADDRESS`] open.
    pub fn create_room(
        &self,
        req: CreateRoom,
        creator: Option<std::net::IpAddr>,
    ) -> Result<RoomView, ControlError> {
        let creator_addr = creator.map(|a| a.to_string());
        if let Some(addr) = &creator_addr
            && self.inner.store.open_rooms_from(addr)? >= MAX_ROOMS_PER_ADDRESS
        {
            return Err(ControlError::RateLimited(format!(
                "at most {MAX_ROOMS_PER_ADDRESS} open rooms per address; close one first"
            )));
        }
        let record = RoomRecord {
            id: RoomId::generate(),
            name: check_name(&req.name)?,
            max_participants: check_max(req.max_participants.unwrap_or(DEFAULT_MAX_PARTICIPANTS))?,
            visibility: req.visibility.unwrap_or_default(),
            lobby: req.lobby.unwrap_or(false),
            mode: req.mode.unwrap_or_default(),
            locked: false,
            invites_enabled: true,
            invite_generation: 0,
            created_at: now_rfc3339(),
            closed_at: None,
            invite_expires_at: None,
            creator_addr,
            host_generation: 0,
        };
        self.inner.store.insert_room(&record)?;
        let actor = if creator.is_some() { "public" } else { "admin" };
        self.inner.store.add_event(
            &record.id,
            actor,
            "room_created",
            None,
            &serde_json::json!({"name": record.name}),
        )?;
        tracing::info!(room = %record.id, "room created");
        // LiveKit semantics: a room has started once it exists (joining needs it).
        self.inner
            .settings
            .webhooks
            .emit(crate::webhooks::Event::new(
                crate::webhooks::EventKind::RoomStarted,
                crate::webhooks::RoomInfo::new(&record, 0),
            ));
        self.spawn_room(record.clone());
        Ok(self.view(&record, &[], false))
    }

    /// Every open room.
    pub fn list_rooms(&self) -> Vec<RoomView> {
        let mut handles: Vec<RoomHandle> = self.rooms().values().cloned().collect();
        handles.sort_by_key(|h| h.seq);
        handles
            .iter()
            .filter(|h| !h.is_closed())
            .map(|h| {
                let snap = h.snapshot();
                self.view(&snap.record, &snap.participants, false)
            })
            .collect()
    }

    /// Prometheus text exposition of what the server is doing now: rooms,
    /// people and tracks (from the rooms' snapshots), media counters (from
    /// the media plane's atomics), broadcasts, webhooks and the process.
    /// Nothing here waits on a room task or touches a pipeline.
    pub fn metrics(&self) -> String {
        use crate::metrics::{Exposition, Kind};
        let snapshots: Vec<room::Snapshot> = {
            let mut handles: Vec<RoomHandle> = self.rooms().values().cloned().collect();
            handles.sort_by_key(|h| h.seq);
            handles
                .iter()
                .filter(|h| !h.is_closed())
                .map(|h| h.snapshot())
                .collect()
        };
        let participants: usize = snapshots.iter().map(|s| s.participants.len()).sum();
        let lobby: usize = snapshots.iter().map(|s| s.lobby.len()).sum();
        let audio: usize = snapshots.iter().map(|s| s.tracks.0).sum();
        let video: usize = snapshots.iter().map(|s| s.tracks.1).sum();
        let recording = self
            .list_rooms()
            .iter()
            .filter(|r| r.recording.is_some())
            .count();
        let mut e = Exposition::new();
        e.single(
            "roomcast_rooms",
            Kind::Gauge,
            "Open rooms.",
            snapshots.len(),
        );
        e.single(
            "roomcast_participants",
            Kind::Gauge,
            "Participants in calls.",
            participants,
        );
        e.single(
            "roomcast_lobby_participants",
            Kind::Gauge,
            "People waiting in lobbies.",
            lobby,
        );
        e.family(
            "roomcast_tracks",
            Kind::Gauge,
            "Tracks published now, by kind.",
        )
        .sample("roomcast_tracks", &[("kind", "audio")], audio)
        .sample("roomcast_tracks", &[("kind", "video")], video);
        e.single(
            "roomcast_rooms_recording",
            Kind::Gauge,
            "Rooms being recorded.",
            recording,
        );
        self.write_broadcasts(&mut e);
        write_media(&mut e);
        e.raw(&self.inner.settings.webhooks.prometheus());
        crate::metrics::process::write(&mut e);
        e.finish()
    }

    fn write_broadcasts(&self, e: &mut crate::metrics::Exposition) {
        use crate::metrics::Kind;
        let broadcasts = self.inner.broadcasts.list(None);
        let active: Vec<&Arc<broadcast::Broadcast>> =
            broadcasts.iter().filter(|b| b.is_active()).collect();
        e.single(
            "roomcast_broadcasts",
            Kind::Gauge,
            "Live or starting broadcasts.",
            active.len(),
        );
        let mut targets: HashMap<String, usize> = HashMap::new();
        e.family(
            "roomcast_broadcast_viewers",
            Kind::Gauge,
            "Viewers of a broadcast (WHEP connected, HLS clients seen in 15 s).",
        );
        for b in &active {
            let v = b.viewers();
            let id = b.id.to_string();
            e.sample(
                "roomcast_broadcast_viewers",
                &[("broadcast", &id), ("protocol", "whep")],
                v.whep,
            );
            e.sample(
                "roomcast_broadcast_viewers",
                &[("broadcast", &id), ("protocol", "hls")],
                v.hls,
            );
            for t in b.rtmp.lock().unwrap_or_else(|p| p.into_inner()).iter() {
                let state = serde_json::to_value(t.state)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                *targets.entry(state).or_default() += 1;
            }
        }
        let mut targets: Vec<(String, usize)> = targets.into_iter().collect();
        targets.sort();
        e.family(
            "roomcast_rtmp_targets",
            Kind::Gauge,
            "RTMP push targets of live broadcasts, by state.",
        );
        for (state, n) in &targets {
            e.sample("roomcast_rtmp_targets", &[("state", state)], n);
        }
    }

    /// Listed rooms, for anyone.
    pub fn public_rooms(&self) -> Vec<PublicRoom> {
        self.list_rooms()
            .into_iter()
            .filter(|r| r.room.visibility == Visibility::Listed && r.room.invites_enabled)
            .map(|r| PublicRoom {
                id: r.room.id,
                name: r.room.name,
                participant_count: r.room.participant_count,
                join_url: r.invite_url,
            })
            .collect()
    }

    /// One room with its participants.
    pub fn get_room(&self, id: &RoomId) -> Result<RoomView, ControlError> {
        let snap = self.handle(id).map_err(hide_closed)?.snapshot();
        Ok(self.view(&snap.record, &snap.participants, true))
    }

    /// Participants of a room.
    pub fn participants(&self, id: &RoomId) -> Result<Vec<ParticipantInfo>, ControlError> {
        Ok(self
            .handle(id)
            .map_err(hide_closed)?
            .snapshot()
            .participants)
    }

    /// Where HLS is written (`<data dir>/hls/<broadcast>/`).
    pub fn hls_dir(&self) -> std::path::PathBuf {
        self.inner.settings.data_dir.join("hls")
    }

    /// Starts a broadcast of room `id`.
    pub async fn start_broadcast(
        &self,
        id: &RoomId,
        req: broadcast::StartBroadcast,
        actor: Actor,
    ) -> Result<broadcast::BroadcastView, ControlError> {
        let spec = req.validate()?;
        let snap = self.handle(id).map_err(hide_closed)?.snapshot();
        let viewer_token = (snap.record.visibility == Visibility::Private)
            .then(|| self.inner.signer.link(id, Role::Viewer, 0, None));
        let b = broadcast::Broadcast::new(id.clone(), spec, viewer_token);
        self.inner.broadcasts.insert(b.clone());
        let started = self
            .ask(id, |reply| Command::StartBroadcast {
                broadcast: b.clone(),
                actor,
                reply,
            })
            .await;
        if let Err(e) = started {
            b.end(Some(e.to_string()));
            return Err(e);
        }
        Ok(b.view(&self.inner.settings.public_url))
    }

    fn find_broadcast(
        &self,
        id: &crate::ids::BroadcastId,
    ) -> Result<Arc<broadcast::Broadcast>, ControlError> {
        self.inner
            .broadcasts
            .get(id)
            .ok_or(ControlError::NotFound("broadcast"))
    }

    /// A broadcast.
    pub fn broadcast(
        &self,
        id: &crate::ids::BroadcastId,
    ) -> Result<broadcast::BroadcastView, ControlError> {
        Ok(self
            .find_broadcast(id)?
            .view(&self.inner.settings.public_url))
    }

    /// Broadcasts (of one room), newest first.
    pub fn broadcasts(&self, room: Option<&RoomId>) -> Vec<broadcast::BroadcastView> {
        self.inner
            .broadcasts
            .list(room)
            .iter()
            .map(|b| b.view(&self.inner.settings.public_url))
            .collect()
    }

    /// What the viewer page shows.
    pub fn public_broadcast(
        &self,
        id: &crate::ids::BroadcastId,
    ) -> Result<broadcast::PublicBroadcast, ControlError> {
        let b = self.find_broadcast(id)?;
        let view = b.view(&self.inner.settings.public_url);
        let room_name = self
            .inner
            .store
            .get_room(&b.room_id)?
            .map(|r| r.name)
            .unwrap_or_default();
        Ok(broadcast::PublicBroadcast {
            id: view.id,
            state: view.state,
            room_name,
            hls_url: view.hls_url,
            whep_url: view.whep_url,
            viewers: view.viewers,
        })
    }

    /// Ends a broadcast (204 even when it had ended already).
    pub async fn stop_broadcast(&self, id: &crate::ids::BroadcastId) -> Result<(), ControlError> {
        let b = self.find_broadcast(id)?;
        if !b.is_active() {
            return Ok(());
        }
        let res = self
            .ask(&b.room_id, |reply| Command::StopBroadcast {
                broadcast: id.clone(),
                reply,
            })
            .await;
        // A room that is gone took its broadcasts with it.
        if res.is_err() {
            b.end(None);
        }
        Ok(())
    }

    /// Where rendition `rendition` of broadcast `id`'s HLS stands, to wait
    /// on (LL-HLS blocking requests); `None` for an unknown broadcast or a
    /// rendition not written (yet).
    pub fn hls_position(
        &self,
        id: &crate::ids::BroadcastId,
        rendition: &str,
    ) -> Option<tokio::sync::watch::Receiver<crate::media::hls::Position>> {
        self.inner.broadcasts.get(id)?.hls_live.watch(rendition)
    }

    /// An HLS client fetched a playlist of broadcast `id`.
    pub fn hls_seen(&self, id: &crate::ids::BroadcastId, client: u64) {
        if let Some(b) = self.inner.broadcasts.get(id) {
            b.hls_seen(client);
        }
    }

    /// Checks a WHEP viewer's credentials: none for listed rooms, the
    /// viewer token (or a host link) for private ones.
    fn check_viewer(
        &self,
        b: &broadcast::Broadcast,
        bearer: Option<&str>,
    ) -> Result<(), ControlError> {
        if b.viewer_token.is_none() {
            return Ok(());
        }
        let token = bearer.ok_or_else(|| {
            ControlError::Unauthorized("this broadcast needs its viewer token".into())
        })?;
        let claims = self.inner.signer.verify(token, unix_now())?;
        if claims.room != b.room_id
            || claims.kind != TokenKind::Link
            || !matches!(claims.role, Role::Viewer | Role::Host)
        {
            return Err(ControlError::Unauthorized(
                "not a viewer token of this broadcast".into(),
            ));
        }
        Ok(())
    }

    /// A WHEP viewer's offer → (viewer id, answer).
    pub async fn whep_offer(
        &self,
        id: &crate::ids::BroadcastId,
        bearer: Option<&str>,
        sdp: String,
    ) -> Result<(crate::ids::ViewerId, String), ControlError> {
        let b = self.find_broadcast(id)?;
        self.check_viewer(&b, bearer)?;
        if !b.spec.whep {
            return Err(ControlError::NotFound("WHEP endpoint"));
        }
        if !b.is_active() {
            return Err(ControlError::Conflict(
                "broadcast_ended",
                "the broadcast has ended".into(),
            ));
        }
        self.ask(&b.room_id, |reply| Command::WhepOffer {
            broadcast: id.clone(),
            sdp,
            reply,
        })
        .await
    }

    /// A WHEP viewer leaves.
    pub async fn whep_delete(
        &self,
        id: &crate::ids::BroadcastId,
        viewer: &crate::ids::ViewerId,
        bearer: Option<&str>,
    ) -> Result<(), ControlError> {
        let b = self.find_broadcast(id)?;
        self.check_viewer(&b, bearer)?;
        let handle = self.handle(&b.room_id).map_err(hide_closed)?;
        let (tx, rx) = oneshot::channel();
        handle.send(Command::WhepStop {
            broadcast: id.clone(),
            viewer: viewer.clone(),
            reply: tx,
        })?;
        if rx.await.unwrap_or(false) {
            Ok(())
        } else {
            Err(ControlError::NotFound("viewer"))
        }
    }

    /// A WHIP endpoint for room `id` and its bearer token.
    pub fn create_ingest(&self, id: &RoomId) -> Result<serde_json::Value, ControlError> {
        let snap = self.handle(id).map_err(hide_closed)?.snapshot();
        let token = self
            .inner
            .signer
            .link(&snap.record.id, Role::Ingest, 0, None);
        Ok(serde_json::json!({
            "whip_url": format!("{}/whip/{}", self.inner.settings.public_url, id),
            "token": token,
            "room_id": id,
        }))
    }

    fn check_ingest(&self, room: &RoomId, bearer: Option<&str>) -> Result<(), ControlError> {
        let token = bearer
            .ok_or_else(|| ControlError::Unauthorized("WHIP needs the ingest token".into()))?;
        let claims = self.inner.signer.verify(token, unix_now())?;
        if &claims.room != room || claims.kind != TokenKind::Link || claims.role != Role::Ingest {
            return Err(ControlError::Unauthorized(
                "not an ingest token of this room".into(),
            ));
        }
        Ok(())
    }

    /// A WHIP publisher's offer → (participant, answer).
    pub async fn whip_offer(
        &self,
        room: &RoomId,
        bearer: Option<&str>,
        sdp: String,
    ) -> Result<(ParticipantId, String), ControlError> {
        self.check_ingest(room, bearer)?;
        self.ask(room, |reply| Command::Ingest {
            display_name: "Ingest".into(),
            sdp,
            reply,
        })
        .await
    }

    /// A WHIP publisher stops.
    pub async fn whip_delete(
        &self,
        room: &RoomId,
        pid: &ParticipantId,
        bearer: Option<&str>,
    ) -> Result<(), ControlError> {
        self.check_ingest(room, bearer)?;
        let is_ingest = self
            .participants(room)?
            .iter()
            .any(|p| &p.id == pid && p.role == Role::Ingest);
        if !is_ingest {
            return Err(ControlError::NotFound("ingest"));
        }
        self.remove_participant(room, pid, false, Actor::System)
            .await
    }

    /// Sends a command built around a reply channel and waits for the answer.
    async fn ask<T>(
        &self,
        id: &RoomId,
        make: impl FnOnce(oneshot::Sender<Result<T, ControlError>>) -> Command,
    ) -> Result<T, ControlError> {
        let handle = self.handle(id).map_err(hide_closed)?;
        let (tx, rx) = oneshot::channel();
        handle.send(make(tx))?;
        rx.await.map_err(|_| ControlError::NotFound("room"))?
    }

    fn room_view(&self, id: &RoomId) -> Result<RoomView, ControlError> {
        self.get_room(id).map(|mut v| {
            v.participants = None;
            v
        })
    }

    /// Changes settings.
    pub async fn update_room(
        &self,
        id: &RoomId,
        mut patch: PatchRoom,
        actor: Actor,
    ) -> Result<RoomView, ControlError> {
        if let Some(n) = &patch.name {
            patch.name = Some(check_name(n)?);
        }
        if let Some(m) = patch.max_participants {
            check_max(m)?;
        }
        self.ask(id, |reply| Command::Update {
            patch,
            actor,
            reply,
        })
        .await?;
        self.room_view(id)
    }

    /// Issues a new invite link; all older ones stop working.
    pub async fn rotate_invite(
        &self,
        id: &RoomId,
        expires_in: Option<u64>,
        actor: Actor,
    ) -> Result<RoomView, ControlError> {
        if expires_in.is_some_and(|s| s == 0 || s > MAX_INVITE_TTL) {
            return Err(ControlError::Invalid(format!(
                "expires_in must be 1..={MAX_INVITE_TTL} seconds"
            )));
        }
        self.ask(id, |reply| Command::RotateInvite {
            expires_in,
            actor,
            reply,
        })
        .await?;
        self.room_view(id)
    }

    /// Issues a new host link; older host links stop working (hosts inside stay).
    pub async fn rotate_host_link(
        &self,
        id: &RoomId,
        actor: Actor,
    ) -> Result<RoomView, ControlError> {
        self.ask(id, |reply| Command::RotateHostLink { actor, reply })
            .await?;
        self.room_view(id)
    }

    /// The server is stopping: every room finishes its recordings, ends its
    /// broadcasts and tells its people to reconnect, all at once, for at
    /// most `bound`. Rooms stay open in the store. Returns how many rooms
    /// did not finish in time.
    pub async fn shutdown(&self, bound: Duration) -> usize {
        let handles: Vec<RoomHandle> = self.rooms().values().cloned().collect();
        let waits: Vec<_> = handles
            .iter()
            .filter_map(|h| {
                let (tx, rx) = oneshot::channel();
                h.send(Command::Shutdown { reply: tx }).ok().map(|_| rx)
            })
            .collect();
        let total = waits.len();
        match tokio::time::timeout(bound, futures::future::join_all(waits)).await {
            Ok(_) => 0,
            Err(_) => {
                tracing::warn!(rooms = total, "not every room stopped within {bound:?}");
                total
            }
        }
    }

    /// Closes a room: everyone is disconnected, links stop working.
    pub async fn close_room(&self, id: &RoomId, actor: Actor) -> Result<(), ControlError> {
        let handle = self.handle(id).map_err(hide_closed)?;
        let (tx, rx) = oneshot::channel();
        handle.send(Command::Close {
            actor,
            reply: Some(tx),
        })?;
        // The actor answers once everyone was told and the room is stored closed.
        let _ = rx.await;
        self.rooms().remove(id);
        Ok(())
    }

    /// Removes a participant (revoking its session); `ban` bars its browser.
    pub async fn remove_participant(
        &self,
        id: &RoomId,
        pid: &ParticipantId,
        ban: bool,
        actor: Actor,
    ) -> Result<(), ControlError> {
        let participant = pid.clone();
        self.ask(id, |reply| Command::Remove {
            participant,
            ban,
            actor,
            reply,
        })
        .await
    }

    /// Stops (true) or resumes (false) forwarding a participant's audio/video.
    pub async fn mute_participant(
        &self,
        id: &RoomId,
        pid: &ParticipantId,
        m: MuteRequest,
        actor: Actor,
    ) -> Result<(), ControlError> {
        if m.audio.is_none() && m.video.is_none() {
            return Err(ControlError::Invalid("give audio and/or video".into()));
        }
        let participant = pid.clone();
        self.ask(id, |reply| Command::Mute {
            participant,
            audio: m.audio,
            video: m.video,
            actor,
            reply,
        })
        .await
    }

    /// People waiting in a room's lobby.
    pub fn lobby(&self, id: &RoomId) -> Result<Vec<ParticipantInfo>, ControlError> {
        Ok(self.handle(id).map_err(hide_closed)?.snapshot().lobby)
    }

    /// Lets someone in from the lobby.
    pub async fn admit(
        &self,
        id: &RoomId,
        pid: &ParticipantId,
        actor: Actor,
    ) -> Result<(), ControlError> {
        let participant = pid.clone();
        self.ask(id, |reply| Command::Admit {
            participant,
            actor,
            reply,
        })
        .await
    }

    /// Turns someone in the lobby away.
    pub async fn deny(
        &self,
        id: &RoomId,
        pid: &ParticipantId,
        actor: Actor,
    ) -> Result<(), ControlError> {
        let participant = pid.clone();
        self.ask(id, |reply| Command::Deny {
            participant,
            actor,
            reply,
        })
        .await
    }

    fn recording_view(&self, r: &crate::model::RecordingRecord) -> RecordingView {
        let files = if r.state == crate::model::RecordingState::Recording {
            recording::list_files(&self.recording_dir(&r.id))
        } else {
            r.files.clone()
        };
        RecordingView::with_files(r, files, &self.inner.settings.public_url)
    }

    fn recording_dir(&self, id: &crate::ids::RecordingId) -> std::path::PathBuf {
        self.inner
            .settings
            .data_dir
            .join("recordings")
            .join(id.as_str())
    }

    /// Starts recording a room.
    pub async fn start_recording(
        &self,
        id: &RoomId,
        req: StartRecording,
        actor: Actor,
    ) -> Result<RecordingView, ControlError> {
        let record = self
            .ask(id, |reply| Command::StartRecording {
                kind: req.kind,
                format: req.format,
                layout: req.layout.unwrap_or_default(),
                actor,
                reply,
            })
            .await?;
        Ok(self.recording_view(&record))
    }

    fn stored_recording(
        &self,
        id: &crate::ids::RecordingId,
    ) -> Result<crate::model::RecordingRecord, ControlError> {
        self.inner
            .store
            .get_recording(id)?
            .ok_or(ControlError::NotFound("recording"))
    }

    /// Stops a recording; answers once its files are complete.
    pub async fn stop_recording(
        &self,
        id: &crate::ids::RecordingId,
    ) -> Result<RecordingView, ControlError> {
        let record = self.stored_recording(id)?;
        let running = matches!(
            record.state,
            crate::model::RecordingState::Recording | crate::model::RecordingState::Finalizing
        );
        if running && let Ok(handle) = self.handle(&record.room_id) {
            let (tx, rx) = oneshot::channel();
            handle.send(Command::StopRecording {
                recording: id.clone(),
                reply: tx,
            })?;
            if let Ok(Ok(done)) = tokio::time::timeout(Duration::from_secs(10), rx).await {
                return Ok(self.recording_view(&done?));
            }
        }
        Ok(self.recording_view(&self.stored_recording(id)?))
    }

    /// One recording.
    pub fn recording(&self, id: &crate::ids::RecordingId) -> Result<RecordingView, ControlError> {
        Ok(self.recording_view(&self.stored_recording(id)?))
    }

    /// Recordings, of one room or all.
    pub fn recordings(&self, room: Option<&RoomId>) -> Result<Vec<RecordingView>, ControlError> {
        let list = match room {
            Some(r) => self.inner.store.room_recordings(r)?,
            None => self.inner.store.all_recordings()?,
        };
        Ok(list.iter().map(|r| self.recording_view(r)).collect())
    }

    /// Stops (if needed) and deletes a recording and its files.
    pub async fn delete_recording(&self, id: &crate::ids::RecordingId) -> Result<(), ControlError> {
        self.stop_recording(id).await?;
        let dir = self.recording_dir(id);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .map_err(|e| ControlError::Media(format!("cannot delete files: {e}")))?;
        }
        self.inner.store.delete_recording(id)?;
        Ok(())
    }

    /// The path of a recording's file, for download.
    pub fn recording_file(
        &self,
        id: &crate::ids::RecordingId,
        name: &str,
    ) -> Result<std::path::PathBuf, ControlError> {
        if !recording::is_plain_name(name) {
            return Err(ControlError::NotFound("file"));
        }
        self.stored_recording(id)?;
        let dir = self.recording_dir(id);
        let path = dir.join(name);
        if recording::resolves_inside(&dir, &path) {
            Ok(path)
        } else {
            if path.is_symlink() {
                tracing::warn!(recording = %id, file = name, "refusing a link out of the recording's directory");
            }
            Err(ControlError::NotFound("file"))
        }
    }

    /// Recordings left running by a server that died end now: their files
    /// are fragmented/streamable, so what was written is playable.
    fn recover_recordings(&self) -> Result<(), ControlError> {
        use crate::model::RecordingState;
        let mut stale = self.inner.store.recordings_in_state("recording")?;
        stale.extend(self.inner.store.recordings_in_state("finalizing")?);
        for mut r in stale {
            let dir = self.recording_dir(&r.id);
            r.files = recording::list_files(&dir);
            let last_write = std::fs::read_dir(&dir)
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|e| e.metadata().ok()?.modified().ok())
                .max();
            r.ended_at = Some(match last_write {
                Some(t) => time::OffsetDateTime::from(t)
                    .replace_nanosecond(0)
                    .ok()
                    .and_then(|t| {
                        t.format(&time::format_description::well_known::Rfc3339)
                            .ok()
                    })
                    .unwrap_or_else(now_rfc3339),
                None => now_rfc3339(),
            });
            let started = time::OffsetDateTime::parse(
                &r.started_at,
                &time::format_description::well_known::Rfc3339,
            )
            .ok();
            let ended = r.ended_at.as_deref().and_then(|e| {
                time::OffsetDateTime::parse(e, &time::format_description::well_known::Rfc3339).ok()
            });
            r.duration_s = started
                .zip(ended)
                .map(|(s, e)| (e - s).as_seconds_f64().max(0.0));
            if r.files.iter().any(|f| f.size > 0) {
                r.state = RecordingState::Ready;
                r.error = Some(
                    "the server stopped while recording; the files end where it stopped".into(),
                );
            } else {
                r.state = RecordingState::Failed;
                r.error = Some("the server stopped before anything was written".into());
            }
            tracing::info!(recording = %r.id, state = ?r.state, "interrupted recording closed");
            self.inner.store.save_recording(&r)?;
            self.recording_event(&r);
        }
        Ok(())
    }

    /// Queues `recording_ready`/`recording_failed` for a recording closed at start.
    fn recording_event(&self, r: &crate::model::RecordingRecord) {
        use crate::webhooks::{Event, EventKind, RoomInfo};
        let kind = match r.state {
            crate::model::RecordingState::Ready => EventKind::RecordingReady,
            _ => EventKind::RecordingFailed,
        };
        match self.inner.store.get_room(&r.room_id) {
            Ok(Some(room)) => self.inner.settings.webhooks.emit(
                Event::new(kind, RoomInfo::new(&room, 0))
                    .recording(RecordingView::new(r, &self.inner.settings.public_url)),
            ),
            Ok(None) => tracing::warn!(recording = %r.id, "no room for the recording's webhook"),
            Err(e) => tracing::warn!(recording = %r.id, "cannot read the recording's room: {e}"),
        }
    }

    /// A room's moderation log (open or closed rooms).
    pub fn events(&self, id: &RoomId) -> Result<Vec<crate::model::AuditEvent>, ControlError> {
        if self.inner.store.get_room(id)?.is_none() {
            return Err(ControlError::NotFound("room"));
        }
        Ok(self.inner.store.events(id, 1000)?)
    }

    /// Admits a participant into a room with a link or session token.
    /// `out` receives every message for that participant; when it is
    /// dropped by the room, the edge closes the socket.
    pub async fn join(
        &self,
        token: &str,
        session: Option<&str>,
        display_name: &str,
        device: Option<&str>,
        out: mpsc::Sender<ServerMessage>,
    ) -> Result<Joined, ControlError> {
        let now = unix_now();
        let display_name = display_name.trim();
        let n = display_name.chars().count();
        if n == 0 || n > MAX_DISPLAY_NAME_CHARS || display_name.chars().any(char::is_control) {
            return Err(ControlError::Invalid(format!(
                "display_name must be 1..={MAX_DISPLAY_NAME_CHARS} printable characters"
            )));
        }
        let link = self.inner.signer.verify(token, now)?;
        if link.kind != TokenKind::Link {
            return Err(ControlError::Unauthorized("not a room link".into()));
        }
        if !matches!(link.role, Role::Host | Role::Guest) {
            return Err(ControlError::Forbidden(
                "this link cannot join the call".into(),
            ));
        }
        // A valid session of the same room lets a participant come back as itself.
        let resume = match session {
            Some(s) => match self.inner.signer.verify(s, now) {
                Ok(c)
                    if c.kind == TokenKind::Session
                        && c.room == link.room
                        && c.jti
                            .as_deref()
                            .is_some_and(|j| !self.inner.store.is_revoked(j).unwrap_or(true)) =>
                {
                    c.participant.clone()
                }
                _ => None,
            },
            None => None,
        };
        // A browser id is a random token the client keeps; anything else is ignored.
        let device = device
            .filter(|d| {
                (8..=64).contains(&d.len())
                    && d.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            })
            .map(str::to_owned);
        if let Some(d) = &device
            && self.inner.store.is_banned(&link.room, d)?
        {
            return Err(ControlError::Banned);
        }
        let handle = self.handle(&link.room)?;
        let (tx, rx) = oneshot::channel();
        handle.send(Command::Join(JoinRequest {
            role: link.role,
            link_generation: link.generation,
            resume,
            display_name: display_name.to_owned(),
            device,
            out,
            ice_servers: client_ice_servers(&self.inner.settings.ice),
            reply: tx,
        }))?;
        let (participant, connection) = rx.await.map_err(|_| ControlError::RoomClosed)??;
        Ok(Joined {
            room: handle,
            participant,
            connection,
        })
    }
}

/// REST answers 404 for closed rooms (the contract: `GET` on a closed room is 404).
fn hide_closed(e: ControlError) -> ControlError {
    match e {
        ControlError::RoomClosed => ControlError::NotFound("room"),
        other => other,
    }
}

/// The media plane's counters: RTP in and out, loss, pipeline errors and
/// GStreamer's own warnings and errors.
fn write_media(e: &mut crate::metrics::Exposition) {
    use crate::metrics::Kind;
    let m = crate::media::stats::totals();
    let flows = [
        (
            "roomcast_media_received",
            "from publishers (RTP header and payload, counted before the track's tee)",
            &m.received,
        ),
        (
            "roomcast_media_sent",
            "to subscribers and WHEP viewers (RTP header and payload, counted at each forwarder)",
            &m.sent,
        ),
    ];
    for (prefix, what, flows) in flows {
        for (unit, bytes) in [("bytes", true), ("packets", false)] {
            let name = format!("{prefix}_{unit}_total");
            e.family(
                &name,
                Kind::Counter,
                &format!("RTP {unit} {what}, by kind."),
            );
            for (kind, t) in flows {
                let v = if bytes { t.bytes } else { t.packets };
                e.sample(&name, &[("kind", kind.as_str())], v);
            }
        }
    }
    e.family(
        "roomcast_media_packets_lost_total",
        Kind::Counter,
        "RTP packets lost: direction=in from publishers as the server's receiver counts them, direction=out as subscribers and viewers report in RTCP (sampled every 5 s).",
    )
    .sample(
        "roomcast_media_packets_lost_total",
        &[("direction", "in")],
        m.lost_in,
    )
    .sample(
        "roomcast_media_packets_lost_total",
        &[("direction", "out")],
        m.lost_out,
    );
    e.family(
        "roomcast_pipeline_errors_total",
        Kind::Counter,
        "GStreamer ERROR messages from room pipelines and RTMP pipelines, by branch.",
    );
    for (branch, n) in &m.errors {
        e.sample(
            "roomcast_pipeline_errors_total",
            &[("branch", branch.as_str())],
            n,
        );
    }
    let c = crate::media::gst_log::counts();
    e.family(
        "roomcast_gstreamer_log_messages_total",
        Kind::Counter,
        "GStreamer log messages at WARNING and ERROR level, by level \
         (\"expected\": warnings every normal call produces, logged at debug).",
    )
    .sample(
        "roomcast_gstreamer_log_messages_total",
        &[("level", "warning")],
        c.warnings,
    )
    .sample(
        "roomcast_gstreamer_log_messages_total",
        &[("level", "expected")],
        c.expected,
    )
    .sample(
        "roomcast_gstreamer_log_messages_total",
        &[("level", "error")],
        c.errors,
    );
    e.single(
        "roomcast_gstreamer_log_suppressed_total",
        Kind::Counter,
        "GStreamer log messages not written to the log by the rate limit.",
        c.suppressed,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ice_servers_for_browsers() {
        let ice = IceSettings {
            stun_server: Some("stun://stun.example.org:3478".into()),
            turn_servers: vec!["turn://ann:s3cret@turn.example.org:3478".into()],
            ..Default::default()
        };
        let s = client_ice_servers(&ice);
        assert_eq!(s[0].urls, vec!["stun:stun.example.org:3478"]);
        assert_eq!(s[1].urls, vec!["turn:turn.example.org:3478"]);
        assert_eq!(s[1].username.as_deref(), Some("ann"));
        assert_eq!(s[1].credential.as_deref(), Some("s3cret"));
    }

    #[test]
    fn names_and_caps_are_validated() {
        assert!(check_name("").is_err());
        assert!(check_name(&"x".repeat(101)).is_err());
        assert_eq!(check_name("  Team sync ").unwrap(), "Team sync");
        assert!(check_name("a\u{0}b").is_err());
        assert!(check_max(0).is_err());
        assert!(check_max(101).is_err());
        assert_eq!(check_max(100).unwrap(), 100);
    }
}
