//! What a webhook says: the event kinds and the JSON body receivers get.
//!
//! Bodies describe rooms, participants, recordings and broadcasts without
//! anything that grants access: no room links, no session or viewer tokens,
//! no RTMP stream keys. They are built when the event happens and stored as
//! they are, so every retry sends the same bytes.

use crate::ids::RoomId;
pub use crate::model::RoomInfo;
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
    pub recording: Option<crate::model::RecordingView>,
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
    pub fn recording(mut self, r: crate::model::RecordingView) -> Self {
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
    use crate::model::{RoomMode, RoomRecord, Visibility, now_rfc3339};

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
