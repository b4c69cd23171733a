//! What a webhook says: the event kinds and the JSON body receivers get.
//!
//! Bodies describe rooms, participants, recordings and broadcasts without
//! anything that grants access: no room links, no session or viewer tokens,
//! no RTMP stream keys. They are built when the event happens and stored as
//! they are, so every retry sends the same bytes.

use crate::ids::RoomId;
use crate::model::{RecordingRecord, RoomMode, RoomRecord, Visibility};
use crate::signaling::ParticipantInfo;
use serde::Serialize;

/// The events roomcast reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventKind {
    /// A room was created (rooms exist from creation on, like LiveKit's `room_started`).
    RoomStarted,
    /// A room was closed (`DELETE`, a host, or the empty-room timeout).
    RoomEnded,
    /// Someone entered the call (after the lobby, if any).
    ParticipantJoined,
    /// Someone left the call (left, disconnected, removed, failed, room closed).
    ParticipantLeft,
    /// A recording's files are complete.
    RecordingReady,
    /// A recording failed (its files so far are kept).
    RecordingFailed,
    /// A broadcast's first frames went out.
    BroadcastStarted,
    /// A broadcast ended or failed.
    BroadcastEnded,
}

impl EventKind {
    /// The name in `event` and `X-Roomcast-Event`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::RoomStarted => "room_started",
            EventKind::RoomEnded => "room_ended",
            EventKind::ParticipantJoined => "participant_joined",
            EventKind::ParticipantLeft => "participant_left",
            EventKind::RecordingReady => "recording_ready",
            EventKind::RecordingFailed => "recording_failed",
            EventKind::BroadcastStarted => "broadcast_started",
            EventKind::BroadcastEnded => "broadcast_ended",
        }
    }
}

/// A room as webhooks show it: the Room of the API without its links.
#[derive(Debug, Clone, Serialize)]
pub struct RoomInfo {
    /// Id.
    pub id: RoomId,
    /// Name.
    pub name: String,
    /// Cap.
    pub max_participants: u32,
    /// Visibility.
    pub visibility: Visibility,
    /// Lobby.
    pub lobby: bool,
    /// Mode.
    pub mode: RoomMode,
    /// Locked.
    pub locked: bool,
    /// Invite link works.
    pub invites_enabled: bool,
    /// People inside when the event happened.
    pub participant_count: usize,
    /// Creation time (RFC 3339).
    pub created_at: String,
    /// Closing time (RFC 3339), once closed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub closed_at: Option<String>,
}

impl RoomInfo {
    /// From the stored record and the number of people inside.
    pub fn new(r: &RoomRecord, participant_count: usize) -> Self {
        Self {
            id: r.id.clone(),
            name: r.name.clone(),
            max_participants: r.max_participants,
            visibility: r.visibility,
            lobby: r.lobby,
            mode: r.mode,
            locked: r.locked,
            invites_enabled: r.invites_enabled,
            participant_count,
            created_at: r.created_at.clone(),
            closed_at: r.closed_at.clone(),
        }
    }
}

/// A recording's file.
#[derive(Debug, Clone, Serialize)]
pub struct FileInfo {
    /// File name.
    pub name: String,
    /// Bytes.
    pub size: u64,
    /// Download URL (needs the admin token).
    pub url: String,
}

/// A recording as webhooks show it (the API's Recording).
#[derive(Debug, Clone, Serialize)]
pub struct RecordingInfo {
    /// Id.
    pub id: crate::ids::RecordingId,
    /// Room.
    pub room_id: RoomId,
    /// Composite or tracks.
    pub kind: crate::model::RecordingKind,
    /// Container.
    pub format: crate::model::RecordingFormat,
    /// `ready` or `failed`.
    pub state: crate::model::RecordingState,
    /// Start (RFC 3339).
    pub started_at: String,
    /// End (RFC 3339).
    pub ended_at: Option<String>,
    /// Seconds recorded.
    pub duration_s: Option<f64>,
    /// Files written.
    pub files: Vec<FileInfo>,
    /// Why it failed (or how it ended early).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl RecordingInfo {
    /// From the stored record; file URLs start with `public_url`.
    pub fn new(r: &RecordingRecord, public_url: &str) -> Self {
        Self {
            id: r.id.clone(),
            room_id: r.room_id.clone(),
            kind: r.kind,
            format: r.format,
            state: r.state,
            started_at: r.started_at.clone(),
            ended_at: r.ended_at.clone(),
            duration_s: r.duration_s,
            files: r
                .files
                .iter()
                .map(|f| FileInfo {
                    name: f.name.clone(),
                    size: f.size,
                    url: format!("{public_url}/api/v1/recordings/{}/files/{}", r.id, f.name),
                })
                .collect(),
            error: r.error.clone(),
        }
    }
}

/// An RTMP target of a broadcast, its stream key left out.
#[derive(Debug, Clone, Serialize)]
pub struct RtmpInfo {
    /// `rtmp://host/app/…` (the last path segment, the key, replaced).
    pub url: String,
    /// State when the event happened.
    pub state: String,
}

/// A broadcast as webhooks show it (the API's Broadcast without tokens or keys).
#[derive(Debug, Clone, Serialize)]
pub struct BroadcastInfo {
    /// Id.
    pub id: crate::ids::BroadcastId,
    /// Room.
    pub room_id: RoomId,
    /// `live`, `ended` or `failed`.
    pub state: String,
    /// `composite`, `ingest` or a participant id.
    pub source: String,
    /// Master playlist (when HLS is on).
    pub hls_url: Option<String>,
    /// WHEP endpoint (when WHEP is on).
    pub whep_url: Option<String>,
    /// Viewer page, without the viewer token of private rooms.
    pub watch_url: String,
    /// RTMP targets, keys redacted.
    pub rtmp: Vec<RtmpInfo>,
    /// Renditions produced.
    pub renditions: Vec<String>,
    /// Start (RFC 3339).
    pub started_at: String,
    /// End (RFC 3339).
    pub ended_at: Option<String>,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One event, as POSTed.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// `evt_…`: unique, the same on every retry (`X-Roomcast-Delivery`).
    pub id: String,
    /// What happened.
    pub event: EventKind,
    /// When it happened (Unix seconds).
    pub created_at: u64,
    /// The room it happened in.
    pub room: RoomInfo,
    /// `participant_*`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub participant: Option<ParticipantInfo>,
    /// `recording_*`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recording: Option<RecordingInfo>,
    /// `broadcast_*`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broadcast: Option<BroadcastInfo>,
    /// `participant_left`: `left`, `disconnected`, `removed`, `failed`,
    /// `room_closed`; `room_ended`: `closed`, `empty`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Event {
    /// A new event about `room`, happening now.
    pub fn new(event: EventKind, room: RoomInfo) -> Self {
        Self {
            id: format!("evt_{}", crate::ids::random_string(20)),
            event,
            created_at: crate::model::unix_now(),
            room,
            participant: None,
            recording: None,
            broadcast: None,
            reason: None,
        }
    }

    /// With the participant it is about.
    pub fn participant(mut self, p: ParticipantInfo) -> Self {
        self.participant = Some(p);
        self
    }

    /// With the recording it is about.
    pub fn recording(mut self, r: RecordingInfo) -> Self {
        self.recording = Some(r);
        self
    }

    /// With the broadcast it is about.
    pub fn broadcast(mut self, b: BroadcastInfo) -> Self {
        self.broadcast = Some(b);
        self
    }

    /// With why it happened.
    pub fn reason(mut self, reason: &str) -> Self {
        self.reason = Some(reason.to_owned());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::now_rfc3339;

    #[test]
    fn bodies_carry_no_links_and_skip_absent_parts() {
        let record = RoomRecord {
            id: RoomId::generate(),
            name: "Team sync".into(),
            max_participants: 50,
            visibility: Visibility::Private,
            lobby: false,
            mode: RoomMode::Sfu,
            locked: false,
            invites_enabled: true,
            invite_generation: 3,
            created_at: now_rfc3339(),
            closed_at: None,
            invite_expires_at: None,
            creator_addr: Some("10.0.0.1".into()),
            host_generation: 0,
        };
        let e = Event::new(EventKind::RoomStarted, RoomInfo::new(&record, 0));
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["event"], "room_started");
        assert!(v["id"].as_str().unwrap().starts_with("evt_"));
        assert_eq!(v["room"]["name"], "Team sync");
        for absent in ["participant", "recording", "broadcast", "reason"] {
            assert!(v.get(absent).is_none(), "{absent}: {v}");
        }
        let text = v.to_string();
        for secret in [
            "invite_url",
            "host_url",
            "creator_addr",
            "invite_generation",
        ] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
    }
}
