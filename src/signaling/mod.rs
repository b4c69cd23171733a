//! The WebSocket signaling protocol (version 1): typed JSON messages, one
//! object per text frame, discriminated by `"type"`. The wire format is
//! documented in `docs/signaling.md` and pinned by the golden tests below.
//!
//! This module only describes messages; it does no I/O.

use crate::ids::ParticipantId;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Protocol version spoken by this server.
pub const PROTOCOL_VERSION: u32 = 1;

/// Largest text frame accepted from a client (SDP offers of browsers are ~6 KiB).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// Which of a participant's two peer connections a message is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PcKind {
    /// The client sends its media (the client offers).
    Publish,
    /// The client receives everyone else's media (the server offers).
    Subscribe,
}

/// Mute state of one kind of media of a participant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub struct MediaState {
    /// The participant sends this kind of media.
    pub published: bool,
    /// It is muted (by the participant or by a host).
    pub muted: bool,
}

/// A participant as the REST API and the signaling show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ParticipantInfo {
    /// Id.
    pub id: ParticipantId,
    /// Name chosen at join.
    pub display_name: String,
    /// Role.
    pub role: crate::model::Role,
    /// RFC 3339 join time.
    pub joined_at: String,
    /// Audio state.
    pub audio: MediaState,
    /// Video state.
    pub video: MediaState,
}

/// The room as participants see it (sent at join and when it changes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomSummary {
    /// Room id.
    pub id: crate::ids::RoomId,
    /// Room name.
    pub name: String,
    /// Cap on participants.
    pub max_participants: u32,
    /// Nobody new gets in.
    #[serde(default)]
    pub locked: bool,
    /// Newcomers wait for a host.
    #[serde(default)]
    pub lobby: bool,
    /// The invite link works.
    #[serde(default)]
    pub invites_enabled: bool,
    /// A recording is running (everyone is told: people know they are recorded).
    #[serde(default)]
    pub recording: bool,
    /// `sfu` (everyone's tracks) or `mcu` (one composite picture and a mix
    /// of the others' audio, described as participant [`COMPOSITE_PARTICIPANT`]).
    #[serde(default)]
    pub mode: crate::model::RoomMode,
    /// The room's live broadcast (everyone is told: people know they are on air).
    #[serde(default)]
    pub broadcast: Option<BroadcastSummary>,
}

/// A room's broadcast, as participants are told about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BroadcastSummary {
    /// Broadcast id.
    pub id: crate::ids::BroadcastId,
    /// `starting` or `live`.
    pub state: String,
    /// The viewer page (with the viewer token for private rooms).
    pub watch_url: String,
}

/// The participant id that subscribe offers give the composite's tracks in
/// MCU rooms.
pub const COMPOSITE_PARTICIPANT: &str = "p_composite";

/// An ICE server for the client's peer connections (RTCIceServer shape).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServer {
    /// `stun:host:port` / `turn:host:port` URLs.
    pub urls: Vec<String>,
    /// TURN user name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// TURN password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// One m-line of a subscribe offer and whose media it carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackDescription {
    /// The m-line's `a=mid`.
    pub mid: String,
    /// Publisher.
    pub participant_id: ParticipantId,
    /// `audio` or `video`.
    pub kind: String,
}

/// Messages a client sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    /// First message on a socket: who am I and which link brought me.
    Join {
        /// Protocol version the client speaks.
        #[serde(default = "default_version")]
        version: u32,
        /// Link token from `#t=` of the invite or host URL.
        token: String,
        /// Session token from an earlier `joined`, to come back as the same participant.
        #[serde(default)]
        session: Option<String>,
        /// Name to show to others.
        display_name: String,
        /// A random id the browser keeps (localStorage), so a host can bar it.
        #[serde(default)]
        device: Option<String>,
    },
    /// SDP offer of the client's publish connection.
    PublishOffer {
        /// SDP text.
        sdp: String,
    },
    /// SDP answer to the server's latest `subscribe_offer`.
    SubscribeAnswer {
        /// SDP text.
        sdp: String,
    },
    /// A trickled ICE candidate of one of the client's connections.
    Ice {
        /// Which connection.
        pc: PcKind,
        /// `candidate:…` line (empty for end-of-candidates).
        candidate: String,
        /// m-line index it belongs to.
        #[serde(default)]
        sdp_mline_index: u32,
    },
    /// The client muted or unmuted its own media.
    SetMuted {
        /// Audio muted.
        #[serde(default)]
        audio: Option<bool>,
        /// Video muted.
        #[serde(default)]
        video: Option<bool>,
    },
    /// Which participants' video the client shows (the others' video is
    /// not forwarded to it). `null` means everyone's.
    SetVisible {
        /// Participants whose video is on screen.
        #[serde(default)]
        participants: Option<Vec<ParticipantId>>,
    },
    /// Host: lock or unlock the room.
    SetLocked {
        /// New state.
        locked: bool,
    },
    /// Host: turn the invite link on or off.
    SetInvites {
        /// New state.
        enabled: bool,
    },
    /// Host: issue a new invite link (older ones stop working).
    RotateInvite,
    /// Host: close the room for everyone.
    CloseRoom,
    /// Host: remove someone (in the call or in the lobby).
    RemoveParticipant {
        /// Whom.
        participant_id: ParticipantId,
        /// Also bar this browser from coming back through any link.
        #[serde(default)]
        ban: bool,
    },
    /// Host: stop (or resume) forwarding someone's audio and/or video.
    MuteParticipant {
        /// Whom.
        participant_id: ParticipantId,
        /// Audio muted.
        #[serde(default)]
        audio: Option<bool>,
        /// Video muted.
        #[serde(default)]
        video: Option<bool>,
    },
    /// Host: start recording the room (composite MP4 unless told otherwise).
    StartRecording {
        /// `composite` or `tracks`.
        #[serde(default)]
        kind: Option<crate::model::RecordingKind>,
        /// `mp4` or `mkv`.
        #[serde(default)]
        format: Option<crate::model::RecordingFormat>,
        /// Composite: `grid` or `speaker`.
        #[serde(default)]
        layout: Option<crate::media::layout::LayoutMode>,
    },
    /// Host: stop the room's recording.
    StopRecording,
    /// Host: go live (the composite to HLS and WHEP viewers).
    StartBroadcast {
        /// ABR renditions (`720p`, `360p`, …); none: the composite as it is.
        #[serde(default)]
        renditions: Option<Vec<String>>,
    },
    /// Host: end the room's broadcast.
    StopBroadcast,
    /// Host: let someone in from the lobby.
    Admit {
        /// Whom.
        participant_id: ParticipantId,
    },
    /// Host: turn someone in the lobby away.
    Deny {
        /// Whom.
        participant_id: ParticipantId,
    },
    /// Application-level keepalive (answered with `pong`).
    Ping,
    /// The client leaves the room.
    Leave,
    /// Testing: the server simulates a fault (only with `--simulate-faults`;
    /// refused with `forbidden` otherwise).
    Simulate {
        /// What goes wrong.
        scenario: Scenario,
    },
}

/// Faults a client can ask a server started with `--simulate-faults` for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scenario {
    /// An element of the sender's own media branch posts a GStreamer
    /// error, as a failing element would: the server removes that
    /// participant (`media_failed`) and nobody else notices.
    MediaError,
}

impl ClientMessage {
    /// Whether only a host may send this.
    pub fn is_host_action(&self) -> bool {
        matches!(
            self,
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
                | ClientMessage::StopBroadcast
        )
    }
}

fn default_version() -> u32 {
    PROTOCOL_VERSION
}

/// Messages the server sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ServerMessage {
    /// The join succeeded.
    Joined {
        /// Protocol version of the server.
        version: u32,
        /// This participant's id.
        participant_id: ParticipantId,
        /// Session token: send it back in `join.session` to reconnect as the same participant.
        session: String,
        /// Role granted by the link.
        role: crate::model::Role,
        /// The room.
        room: RoomSummary,
        /// Everyone else already inside.
        participants: Vec<ParticipantInfo>,
        /// ICE servers for the client's peer connections.
        ice_servers: Vec<IceServer>,
        /// Hosts: the current invite link, to share.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        invite_url: Option<String>,
        /// Hosts: who waits in the lobby.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        lobby: Vec<ParticipantInfo>,
    },
    /// The room has a lobby: wait until a host lets you in (`joined` follows)
    /// or turns you away (`error` `denied`).
    Waiting {
        /// The room.
        room: RoomSummary,
    },
    /// The room's settings changed.
    RoomUpdated {
        /// New state.
        room: RoomSummary,
        /// Hosts: the current invite link.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        invite_url: Option<String>,
    },
    /// Hosts: who waits in the lobby now.
    LobbyUpdated {
        /// Waiting people, in arrival order.
        lobby: Vec<ParticipantInfo>,
    },
    /// A host stopped (or resumed) forwarding your media.
    MutedByHost {
        /// Your audio is not forwarded.
        audio: bool,
        /// Your video is not forwarded.
        video: bool,
    },
    /// Someone came in.
    ParticipantJoined {
        /// Who.
        participant: ParticipantInfo,
    },
    /// Someone's state (mute, publishing) changed.
    ParticipantUpdated {
        /// New state.
        participant: ParticipantInfo,
    },
    /// Someone went away.
    ParticipantLeft {
        /// Who.
        participant_id: ParticipantId,
        /// `left`, `disconnected`, `failed`, `removed`.
        reason: String,
    },
    /// Answer to `publish_offer`.
    PublishAnswer {
        /// SDP text.
        sdp: String,
    },
    /// A new or renegotiated offer for the subscribe connection.
    SubscribeOffer {
        /// SDP text.
        sdp: String,
        /// Which publisher each m-line carries (inactive m-lines are left out).
        tracks: Vec<TrackDescription>,
    },
    /// A server ICE candidate.
    Ice {
        /// Which connection.
        pc: PcKind,
        /// `candidate:…` line.
        candidate: String,
        /// m-line index.
        sdp_mline_index: u32,
    },
    /// Who is speaking now, loudest first (sent when it changes).
    ActiveSpeakers {
        /// Speakers.
        speakers: Vec<ParticipantId>,
    },
    /// Answer to `ping`.
    Pong,
    /// Something went wrong; `fatal` ones are followed by the socket closing.
    Error {
        /// snake_case code (`room_full`, `room_locked`, `invalid_message`, …).
        code: String,
        /// Human text.
        message: String,
        /// The server closes the socket after this message.
        fatal: bool,
    },
    /// The room was closed; the socket closes next.
    RoomClosed,
}

impl ServerMessage {
    /// An error message.
    pub fn error(code: &str, message: impl Into<String>, fatal: bool) -> Self {
        ServerMessage::Error {
            code: code.to_owned(),
            message: message.into(),
            fatal,
        }
    }
}

/// Parses one client frame; the error text is safe to send back.
pub fn parse_client_message(text: &str) -> Result<ClientMessage, String> {
    if text.len() > MAX_MESSAGE_BYTES {
        return Err(format!("message larger than {MAX_MESSAGE_BYTES} bytes"));
    }
    serde_json::from_str(text).map_err(|e| {
        // serde's message names the field or the problem; it may quote a
        // value of the input (`invalid type: string "…"`), so it is cut short.
        clip(format!("invalid message: {e}"), MAX_ERROR_TEXT)
    })
}

/// Longest error text [`parse_client_message`] gives.
pub const MAX_ERROR_TEXT: usize = 300;

/// `text` cut to at most `max` bytes (on a character boundary), `…` marking the cut.
fn clip(mut text: String, max: usize) -> String {
    if text.len() > max {
        let end = text.floor_char_boundary(max.saturating_sub('…'.len_utf8()));
        text.truncate(end);
        text.push('…');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Role;

    #[test]
    fn golden_client_messages() {
        assert_eq!(
            parse_client_message(r#"{"type":"join","token":"t","display_name":"Ada"}"#).unwrap(),
            ClientMessage::Join {
                version: 1,
                token: "t".into(),
                session: None,
                display_name: "Ada".into(),
                device: None,
            }
        );
        assert_eq!(
            parse_client_message(
                r#"{"type":"ice","pc":"subscribe","candidate":"candidate:1 1 UDP 1 127.0.0.1 5000 typ host","sdp_mline_index":2}"#
            )
            .unwrap(),
            ClientMessage::Ice {
                pc: PcKind::Subscribe,
                candidate: "candidate:1 1 UDP 1 127.0.0.1 5000 typ host".into(),
                sdp_mline_index: 2
            }
        );
        assert_eq!(
            parse_client_message(r#"{"type":"set_muted","audio":true}"#).unwrap(),
            ClientMessage::SetMuted {
                audio: Some(true),
                video: None
            }
        );
        assert_eq!(
            parse_client_message(r#"{"type":"leave"}"#).unwrap(),
            ClientMessage::Leave
        );
        // Fields a newer client adds are ignored, so old servers keep working with it.
        assert_eq!(
            parse_client_message(r#"{"type":"leave","reason":"bye"}"#).unwrap(),
            ClientMessage::Leave
        );
    }

    #[test]
    fn bad_client_messages_are_errors_not_panics() {
        for bad in [
            "",
            "{",
            "null",
            "[]",
            r#"{"type":"nope"}"#,
            r#"{"type":"ice","pc":"sideways","candidate":"x"}"#,
            r#"{"type":"publish_offer"}"#,
            r#"{"type":"publish_offer","sdp":5}"#,
        ] {
            assert!(parse_client_message(bad).is_err(), "{bad}");
        }
        let huge = format!(
            r#"{{"type":"publish_offer","sdp":"{}"}}"#,
            "a".repeat(MAX_MESSAGE_BYTES)
        );
        assert!(parse_client_message(&huge).is_err());
        // A value quoted back in the error is cut short.
        let quoted = format!(
            r#"{{"type":"ice","pc":"publish","candidate":"x","sdp_mline_index":"{}"}}"#,
            "é".repeat(10_000)
        );
        let e = parse_client_message(&quoted).unwrap_err();
        assert!(e.len() <= MAX_ERROR_TEXT && e.ends_with('…'), "{e}");
    }

    #[test]
    fn golden_server_messages() {
        let pid = ParticipantId::parse("p_abc").unwrap();
        let msg = ServerMessage::ParticipantLeft {
            participant_id: pid.clone(),
            reason: "left".into(),
        };
        assert_eq!(
            serde_json::to_string(&msg).unwrap(),
            r#"{"type":"participant_left","participant_id":"p_abc","reason":"left"}"#
        );
        let info = ParticipantInfo {
            id: pid,
            display_name: "Ada".into(),
            role: Role::Guest,
            joined_at: "2026-11-28T10:00:00Z".into(),
            audio: MediaState {
                published: true,
                muted: false,
            },
            video: MediaState::default(),
        };
        assert_eq!(
            serde_json::to_string(&ServerMessage::ParticipantJoined { participant: info }).unwrap(),
            r#"{"type":"participant_joined","participant":{"id":"p_abc","display_name":"Ada","role":"guest","joined_at":"2026-11-28T10:00:00Z","audio":{"published":true,"muted":false},"video":{"published":false,"muted":false}}}"#
        );
        assert_eq!(
            serde_json::to_string(&ServerMessage::error("room_full", "full", true)).unwrap(),
            r#"{"type":"error","code":"room_full","message":"full","fatal":true}"#
        );
        assert_eq!(
            serde_json::to_string(&ServerMessage::RoomClosed).unwrap(),
            r#"{"type":"room_closed"}"#
        );
        assert_eq!(
            serde_json::to_string(&ServerMessage::MutedByHost {
                audio: true,
                video: false
            })
            .unwrap(),
            r#"{"type":"muted_by_host","audio":true,"video":false}"#
        );
        let remove = parse_client_message(
            r#"{"type":"remove_participant","participant_id":"p_x","ban":true}"#,
        )
        .unwrap();
        assert!(remove.is_host_action());
        assert!(
            !parse_client_message(r#"{"type":"ping"}"#)
                .unwrap()
                .is_host_action()
        );
    }
}
