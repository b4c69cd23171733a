//! Plain data shared by every layer: enums of the product contract and the
//! stored shape of a room. No behaviour lives here.

use crate::ids::RoomId;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Who may find a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Visibility {
    /// Reachable by link only.
    #[default]
    Private,
    /// Also on the public list and the home page.
    Listed,
}

/// How a room's media plane works.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RoomMode {
    /// Forwarding without decoding.
    #[default]
    Sfu,
    /// Mixing into one composite.
    Mcu,
}

/// What a token lets its bearer do in a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Moderates the room.
    Host,
    /// Joins and publishes.
    Guest,
    /// Watches a broadcast only.
    Viewer,
    /// Publishes through WHIP.
    Ingest,
}

impl Role {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Host => "host",
            Role::Guest => "guest",
            Role::Viewer => "viewer",
            Role::Ingest => "ingest",
        }
    }

    /// Parses the wire name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "host" => Role::Host,
            "guest" => Role::Guest,
            "viewer" => Role::Viewer,
            "ingest" => Role::Ingest,
            _ => return None,
        })
    }
}

/// A room as stored: its settings, not its live participants.
#[derive(Debug, Clone, PartialEq)]
pub struct RoomRecord {
    /// Id.
    pub id: RoomId,
    /// Display name, 1..=100 characters.
    pub name: String,
    /// Cap on people inside, 1..=100.
    pub max_participants: u32,
    /// Private or listed.
    pub visibility: Visibility,
    /// Newcomers wait for the host.
    pub lobby: bool,
    /// SFU or MCU.
    pub mode: RoomMode,
    /// Nobody new gets in.
    pub locked: bool,
    /// The invite link works.
    pub invites_enabled: bool,
    /// Bumped on every rotation; invite tokens of older generations are refused.
    pub invite_generation: u32,
    /// RFC 3339 creation time.
    pub created_at: String,
    /// RFC 3339 time it was closed, if it was.
    pub closed_at: Option<String>,
    /// Unix time after which the current invite link stops working.
    pub invite_expires_at: Option<u64>,
    /// Bumped when the host link is rotated; older host links are refused.
    pub host_generation: u32,
    /// Address of an anonymous creator (public creation), for the per-address cap.
    pub creator_addr: Option<String>,
}

/// One line of a room's moderation log.
#[derive(Debug, Clone, PartialEq, serde::Serialize, JsonSchema)]
pub struct AuditEvent {
    /// Sequence number.
    pub id: i64,
    /// RFC 3339 time.
    pub at: String,
    /// `admin`, `host:p_…` or `system`.
    pub actor: String,
    /// What happened (`room_locked`, `participant_removed`, …).
    pub action: String,
    /// Whom it concerned (a participant id), if anyone.
    pub target: Option<String>,
    /// Details (JSON).
    pub detail: serde_json::Value,
}

/// Current time in RFC 3339 (UTC, seconds).
pub fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap_or_else(|_| time::OffsetDateTime::now_utc());
    now.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_owned())
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// What a recording captures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RecordingKind {
    /// Everyone in a grid plus the mixed audio, one file.
    Composite,
    /// One file per published track, as published (no re-encoding).
    Tracks,
}

/// Container of a recording.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RecordingFormat {
    /// Fragmented MP4 (playable up to the last fragment if the server dies).
    #[default]
    Mp4,
    /// Matroska.
    Mkv,
}

/// Where a recording is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RecordingState {
    /// Writing.
    Recording,
    /// Stopping: the files are being closed.
    Finalizing,
    /// Done; files can be downloaded.
    Ready,
    /// Something went wrong (`error` says what); files written so far remain.
    Failed,
}

/// One file of a recording.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordingFile {
    /// File name (no directories).
    pub name: String,
    /// Size in bytes.
    pub size: u64,
}

/// A file of a recording as the API shows it.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct RecordingFileView {
    /// File name.
    pub name: String,
    /// Bytes.
    pub size: u64,
    /// Download URL (admin token required, HTTP Range supported).
    pub url: String,
}

/// A recording as the API shows it.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct RecordingView {
    /// Id.
    pub id: crate::ids::RecordingId,
    /// Room.
    pub room_id: RoomId,
    /// Composite or tracks.
    pub kind: RecordingKind,
    /// Container.
    pub format: RecordingFormat,
    /// State.
    pub state: RecordingState,
    /// Start.
    pub started_at: String,
    /// End.
    pub ended_at: Option<String>,
    /// Seconds recorded.
    pub duration_s: Option<f64>,
    /// Files.
    pub files: Vec<RecordingFileView>,
    /// Why it failed (or how it ended early).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl RecordingView {
    /// The stored recording with its stored files; file URLs start with
    /// `public_url`.
    pub fn new(r: &RecordingRecord, public_url: &str) -> Self {
        Self::with_files(r, r.files.clone(), public_url)
    }

    /// The stored recording with `files` (those on disk while it records).
    pub fn with_files(r: &RecordingRecord, files: Vec<RecordingFile>, public_url: &str) -> Self {
        Self {
            id: r.id.clone(),
            room_id: r.room_id.clone(),
            kind: r.kind,
            format: r.format,
            state: r.state,
            started_at: r.started_at.clone(),
            ended_at: r.ended_at.clone(),
            duration_s: r.duration_s,
            files: files
                .into_iter()
                .map(|f| RecordingFileView {
                    url: format!("{public_url}/api/v1/recordings/{}/files/{}", r.id, f.name),
                    name: f.name,
                    size: f.size,
                })
                .collect(),
            error: r.error.clone(),
        }
    }
}

/// A room's settings and head count: the API's Room without its links
/// (which carry tokens), and what webhooks show.
#[derive(Debug, Clone, Serialize, JsonSchema)]
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
    /// People inside (when the event happened, for a webhook).
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

/// A recording as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordingRecord {
    /// Id (`rec_…`).
    pub id: crate::ids::RecordingId,
    /// Room.
    pub room_id: RoomId,
    /// Composite or tracks.
    pub kind: RecordingKind,
    /// Container.
    pub format: RecordingFormat,
    /// State.
    pub state: RecordingState,
    /// RFC 3339 start.
    pub started_at: String,
    /// RFC 3339 end.
    pub ended_at: Option<String>,
    /// Seconds recorded.
    pub duration_s: Option<f64>,
    /// Why it failed.
    pub error: Option<String>,
    /// Files written.
    pub files: Vec<RecordingFile>,
}
