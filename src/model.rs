//! Plain data shared by every layer: enums of the product contract and the
//! stored shape of a room. No behaviour lives here.

use crate::ids::RoomId;
use serde::{Deserialize, Serialize};

/// Who may find a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Visibility {
    /// Reachable by link only.
    #[default]
    Private,
    /// Also on the public list and the home page.
    Listed,
}

/// How a room's media plane works.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum RoomMode {
    /// Forwarding without decoding.
    #[default]
    Sfu,
    /// Mixing into one composite.
    Mcu,
}

/// What a token lets its bearer do in a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
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
