//! Every HTTP endpoint in one table: method, path, auth, bodies, answers.
//!
//! The table is the single source of two things that must agree: the warp
//! routes ([`route0`] … [`route3`], [`route_tail`] build each route's
//! path-and-method head from its entry, and refuse an entry that is not in
//! [`ALL`]) and the OpenAPI document (`super::openapi` walks [`ALL`], and
//! the JSON schemas come from the Rust types named here). A route cannot be
//! served without an entry, and an entry that no route serves is caught by
//! `tests/openapi.rs`, which calls every documented operation on a live server.
//!
//! Error answers are added by `super::openapi` from the entry itself: 401
//! where a token is checked, 400/408/413/415/422 where a JSON body is parsed,
//! 400/408/413/415 for an SDP body, 429 where a per-address limit applies
//! ([`Endpoint::rate_limit`]); [`Endpoint::errors`] lists the others.

use super::errors;
use super::live::{BroadcastList, Ingest};
use super::rest::{
    EventList, Health, Lobby, ParticipantList, PublicRoomList, RecordingList, RoomList,
};
use crate::control::broadcast::{BroadcastView, PublicBroadcast, StartBroadcast};
use crate::control::{
    CreateRoom, MuteRequest, PatchRoom, RecordingView, RoomView, RotateInvite, StartRecording,
};
use crate::ids::{BroadcastId, ParticipantId, RecordingId, RoomId, ViewerId};
use schemars::{JsonSchema, Schema, SchemaGenerator};
use warp::filters::BoxedFilter;
use warp::{Filter, Rejection};

/// Makes the schema of a body or parameter (a `$ref` for named types).
pub type SchemaFn = fn(&mut SchemaGenerator) -> Schema;

/// The schema of `T`, as serde reads or writes it.
pub fn schema<T: JsonSchema>(g: &mut SchemaGenerator) -> Schema {
    g.subschema_for::<T>()
}

/// HTTP method of an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// GET.
    Get,
    /// GET, and HEAD with the same headers and no body.
    GetOrHead,
    /// POST.
    Post,
    /// PATCH.
    Patch,
    /// DELETE.
    Delete,
    /// OPTIONS (CORS preflight).
    Options,
}

impl Method {
    /// The lower-case names the OpenAPI document uses.
    pub fn names(self) -> &'static [&'static str] {
        match self {
            Method::Get => &["get"],
            Method::GetOrHead => &["get", "head"],
            Method::Post => &["post"],
            Method::Patch => &["patch"],
            Method::Delete => &["delete"],
            Method::Options => &["options"],
        }
    }
}

/// What the caller must show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// Nothing (*public* in the contract).
    Public,
    /// `Authorization: Bearer <admin token>`.
    Admin,
    /// The admin token, or nothing while public creation is on (rate-limited per address).
    AdminOrAnonymous,
    /// A room link token (WHIP: the ingest token).
    Link,
    /// A room link token where the room asks for one (WHEP: private rooms' viewer token).
    OptionalLink,
}

/// A per-address rate limit (`super::ratelimit`): a 429 with `Retry-After`
/// once a client address has used its allowance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// Room creation without the admin token.
    PublicCreate,
    /// Calls without a valid admin token to an endpoint that needs one.
    WithoutAdminToken,
    /// Signaling WebSocket connections (joins).
    Signaling,
    /// WHEP offers.
    Whep,
    /// WHIP offers.
    Whip,
}

/// A path parameter.
#[derive(Debug, Clone, Copy)]
pub struct Param {
    /// Name, as in the path template.
    pub name: &'static str,
    /// What it is.
    pub description: &'static str,
    /// A value of the right form (also what `tests/openapi.rs` calls with).
    pub example: &'static str,
    /// Its schema.
    pub schema: SchemaFn,
}

/// A query parameter.
#[derive(Debug, Clone, Copy)]
pub struct Query {
    /// Name.
    pub name: &'static str,
    /// What it does.
    pub description: &'static str,
    /// Its schema.
    pub schema: SchemaFn,
}

/// A request body.
#[derive(Debug, Clone, Copy)]
pub enum Request {
    /// None.
    None,
    /// JSON (at most [`super::MAX_BODY_BYTES`]); `required: false` when an
    /// absent or empty body means the defaults.
    Json {
        /// Schema of the body.
        schema: SchemaFn,
        /// A body must be sent.
        required: bool,
    },
    /// An SDP offer (`application/sdp`).
    Sdp,
}

/// The body of an answer.
#[derive(Debug, Clone, Copy)]
pub enum Content {
    /// No body.
    None,
    /// JSON.
    Json(SchemaFn),
    /// An SDP answer.
    Sdp,
    /// Text or bytes of these media types.
    Media(&'static [&'static str]),
}

/// A response header worth knowing.
#[derive(Debug, Clone, Copy)]
pub struct Header {
    /// Name.
    pub name: &'static str,
    /// What it carries.
    pub description: &'static str,
}

/// A successful (or otherwise expected, non-error) answer.
#[derive(Debug, Clone, Copy)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// What it means.
    pub description: &'static str,
    /// Its body.
    pub content: Content,
    /// Headers it carries.
    pub headers: &'static [Header],
}

/// One endpoint: one method on one path.
#[derive(Debug, Clone, Copy)]
pub struct Endpoint {
    /// Method.
    pub method: Method,
    /// Path template, `{name}` for each parameter.
    pub path: &'static str,
    /// Unique name of the operation.
    pub operation_id: &'static str,
    /// Group in the document.
    pub tag: &'static str,
    /// One line.
    pub summary: &'static str,
    /// More, in Markdown.
    pub description: &'static str,
    /// Who may call it.
    pub auth: Auth,
    /// Path parameters, in template order.
    pub params: &'static [Param],
    /// Query parameters.
    pub query: &'static [Query],
    /// Request body.
    pub request: Request,
    /// Expected answers.
    pub answers: &'static [Answer],
    /// Error statuses besides those the auth and body imply.
    pub errors: &'static [u16],
    /// A per-address limit besides the one its auth implies (see [`Endpoint::rate_limit`]).
    pub limit: Option<Limit>,
}

impl Endpoint {
    /// The per-address limit of this endpoint: its own, else the one its
    /// auth implies (admin endpoints limit calls without the token, public
    /// creation limits anonymous callers); public reads are not limited.
    pub fn rate_limit(&self) -> Option<Limit> {
        self.limit.or(match self.auth {
            Auth::Admin => Some(Limit::WithoutAdminToken),
            Auth::AdminOrAnonymous => Some(Limit::PublicCreate),
            Auth::Public | Auth::Link | Auth::OptionalLink => None,
        })
    }
}

const BASE: Endpoint = Endpoint {
    method: Method::Get,
    path: "/",
    operation_id: "",
    tag: "",
    summary: "",
    description: "",
    auth: Auth::Admin,
    params: &[],
    query: &[],
    request: Request::None,
    answers: &[],
    errors: &[],
    limit: None,
};

const fn ok(description: &'static str, content: Content) -> Answer {
    Answer {
        status: 200,
        description,
        content,
        headers: &[],
    }
}

const fn json(status: u16, description: &'static str, schema: SchemaFn) -> Answer {
    Answer {
        status,
        description,
        content: Content::Json(schema),
        headers: &[],
    }
}

const NO_CONTENT: Answer = Answer {
    status: 204,
    description: "Done.",
    content: Content::None,
    headers: &[],
};

const fn body<T: JsonSchema>(required: bool) -> Request {
    Request::Json {
        schema: schema::<T>,
        required,
    }
}

// Path parameters.
const ROOM: Param = Param {
    name: "room_id",
    description: "Room id (`r_…`).",
    example: "r_AbCdEf123456",
    schema: schema::<RoomId>,
};
const PARTICIPANT: Param = Param {
    name: "participant_id",
    description: "Participant id (`p_…`).",
    example: "p_AbCdEf123456",
    schema: schema::<ParticipantId>,
};
const RECORDING: Param = Param {
    name: "recording_id",
    description: "Recording id (`rec_…`).",
    example: "rec_AbCdEf123456",
    schema: schema::<RecordingId>,
};
const BROADCAST: Param = Param {
    name: "broadcast_id",
    description: "Broadcast id (`b_…`).",
    example: "b_AbCdEf123456",
    schema: schema::<BroadcastId>,
};
const VIEWER: Param = Param {
    name: "viewer_id",
    description: "WHEP viewer (`v_…`), from the `Location` of `POST /whep/{broadcast_id}`.",
    example: "v_AbCdEf123456",
    schema: schema::<ViewerId>,
};
const INGEST_PARTICIPANT: Param = Param {
    name: "participant_id",
    description: "The ingest's participant id (`p_…`), from the `Location` of `POST /whip/{room_id}`.",
    ..PARTICIPANT
};

const ROOM_QUERY: Query = Query {
    name: "room_id",
    description: "Only those of this room.",
    schema: schema::<RoomId>,
};

const CORS_PREFLIGHT: &[Answer] = &[Answer {
    status: 204,
    description: "CORS preflight: `Access-Control-Allow-Methods`, `-Headers`, and `Accept-Post: application/sdp`.",
    content: Content::None,
    headers: &[Header {
        name: "Access-Control-Allow-Origin",
        description: "`*`",
    }],
}];

const TRICKLE: &str = "Trickle ICE and ICE restarts are not supported (the SDP answer carries every \
candidate): always 405, as draft-ietf-wish-whip/whep allow.";

const SDP_CREATED: &[Answer] = &[Answer {
    status: 201,
    description: "The SDP answer.",
    content: Content::Sdp,
    headers: &[Header {
        name: "Location",
        description: "The session resource; `DELETE` it to stop.",
    }],
}];

const HLS_HEADERS: &[Header] = &[
    Header {
        name: "Cache-Control",
        description: "Playlists `public, max-age=1` (master `max-age=2`); segments `public, max-age=31536000, immutable`.",
    },
    Header {
        name: "ETag",
        description: "Validator; `If-None-Match` gives 304.",
    },
    Header {
        name: "Last-Modified",
        description: "File modification time.",
    },
];

const HLS_NOT_MODIFIED: Answer = Answer {
    status: 304,
    description: "Unchanged since the `If-None-Match` ETag.",
    content: Content::None,
    headers: &[],
};

const PAGE: &[Answer] = &[ok("The page.", Content::Media(&["text/html"]))];

// ---------------------------------------------------------------- system

/// `GET /healthz`.
pub static HEALTHZ: Endpoint = Endpoint {
    path: "/healthz",
    operation_id: "healthz",
    tag: "system",
    summary: "Liveness",
    auth: Auth::Public,
    answers: &[json(200, "The process serves requests.", schema::<Health>)],
    ..BASE
};

/// `GET /metrics`.
pub static METRICS: Endpoint = Endpoint {
    path: "/metrics",
    operation_id: "metrics",
    tag: "system",
    summary: "Prometheus metrics",
    description: "Rooms, participants, bitrates, recordings, broadcasts, viewers (text exposition format 0.0.4).",
    auth: Auth::Public,
    answers: &[ok("Metrics.", Content::Media(&["text/plain"]))],
    ..BASE
};

/// `GET /api/openapi.json`.
pub static OPENAPI: Endpoint = Endpoint {
    path: "/api/openapi.json",
    operation_id: "openapi",
    tag: "system",
    summary: "This document",
    description: "OpenAPI 3.1, generated from the route table and the Rust types of the server.",
    auth: Auth::Public,
    answers: &[json(
        200,
        "The OpenAPI document.",
        schema::<serde_json::Value>,
    )],
    ..BASE
};

/// `GET /api/v1/system`.
pub static SYSTEM: Endpoint = Endpoint {
    path: "/api/v1/system",
    operation_id: "get_system",
    tag: "system",
    summary: "Versions, hardware acceleration and the chosen codecs",
    answers: &[json(200, "System facts.", schema::<super::SystemInfo>)],
    ..BASE
};

// ----------------------------------------------------------------- rooms

/// `POST /api/v1/rooms`.
pub static CREATE_ROOM: Endpoint = Endpoint {
    method: Method::Post,
    path: "/api/v1/rooms",
    operation_id: "create_room",
    tag: "rooms",
    summary: "Create a room",
    description: "With the admin token, or without one while the `public_create` setting is on \
(rate-limited per client address; the answer's `host_url` is the creator's).",
    auth: Auth::AdminOrAnonymous,
    request: body::<CreateRoom>(true),
    answers: &[json(201, "The room.", schema::<RoomView>)],
    ..BASE
};

/// `GET /api/v1/rooms`.
pub static LIST_ROOMS: Endpoint = Endpoint {
    path: "/api/v1/rooms",
    operation_id: "list_rooms",
    tag: "rooms",
    summary: "Open rooms",
    answers: &[json(200, "Every open room.", schema::<RoomList>)],
    ..BASE
};

/// `GET /api/v1/rooms/{room_id}`.
pub static GET_ROOM: Endpoint = Endpoint {
    path: "/api/v1/rooms/{room_id}",
    operation_id: "get_room",
    tag: "rooms",
    summary: "A room, with its participants",
    params: &[ROOM],
    answers: &[json(
        200,
        "The room, with `participants`.",
        schema::<RoomView>,
    )],
    errors: &[404],
    ..BASE
};

/// `PATCH /api/v1/rooms/{room_id}`.
pub static PATCH_ROOM: Endpoint = Endpoint {
    method: Method::Patch,
    path: "/api/v1/rooms/{room_id}",
    operation_id: "update_room",
    tag: "rooms",
    summary: "Change settings, lock, disable the invite link",
    description: "`locked: true`: nobody new gets in (409 `room_locked`), people inside stay. \
`invites_enabled: false`: the invite link stops working (403); the host link still works.",
    params: &[ROOM],
    request: body::<PatchRoom>(true),
    answers: &[json(200, "The room.", schema::<RoomView>)],
    errors: &[404, 409],
    ..BASE
};

/// `DELETE /api/v1/rooms/{room_id}`.
pub static CLOSE_ROOM: Endpoint = Endpoint {
    method: Method::Delete,
    path: "/api/v1/rooms/{room_id}",
    operation_id: "close_room",
    tag: "rooms",
    summary: "Close a room",
    description: "Everyone is disconnected, recordings are finalized (still downloadable), \
broadcasts end, the links stop working; `GET` answers 404 from then on.",
    params: &[ROOM],
    answers: &[NO_CONTENT],
    errors: &[404, 409],
    ..BASE
};

/// `POST /api/v1/rooms/{room_id}/invite`.
pub static ROTATE_INVITE: Endpoint = Endpoint {
    method: Method::Post,
    path: "/api/v1/rooms/{room_id}/invite",
    operation_id: "rotate_invite",
    tag: "rooms",
    summary: "New invite link",
    description: "Every older invite link is revoked (403); the host link is unchanged. \
The body is optional.",
    params: &[ROOM],
    request: body::<RotateInvite>(false),
    answers: &[json(
        200,
        "The room with its new `invite_url`.",
        schema::<RoomView>,
    )],
    errors: &[404, 409],
    ..BASE
};

/// `POST /api/v1/rooms/{room_id}/host-link`.
pub static ROTATE_HOST_LINK: Endpoint = Endpoint {
    method: Method::Post,
    path: "/api/v1/rooms/{room_id}/host-link",
    operation_id: "rotate_host_link",
    tag: "rooms",
    summary: "New host link",
    description: "Every older host link is revoked.",
    params: &[ROOM],
    answers: &[json(
        200,
        "The room with its new `host_url`.",
        schema::<RoomView>,
    )],
    errors: &[404, 409],
    ..BASE
};

/// `GET /api/v1/rooms/{room_id}/events`.
pub static ROOM_EVENTS: Endpoint = Endpoint {
    path: "/api/v1/rooms/{room_id}/events",
    operation_id: "room_events",
    tag: "rooms",
    summary: "Moderation log",
    params: &[ROOM],
    answers: &[json(
        200,
        "What happened in the room, oldest first.",
        schema::<EventList>,
    )],
    errors: &[404],
    ..BASE
};

/// `GET /api/v1/public/rooms`.
pub static PUBLIC_ROOMS: Endpoint = Endpoint {
    path: "/api/v1/public/rooms",
    operation_id: "public_rooms",
    tag: "rooms",
    summary: "Listed rooms",
    auth: Auth::Public,
    answers: &[json(
        200,
        "Rooms whose visibility is `listed`.",
        schema::<PublicRoomList>,
    )],
    ..BASE
};

// ---------------------------------------------------------- participants

/// `GET /api/v1/rooms/{room_id}/participants`.
pub static PARTICIPANTS: Endpoint = Endpoint {
    path: "/api/v1/rooms/{room_id}/participants",
    operation_id: "list_participants",
    tag: "participants",
    summary: "People in a room",
    params: &[ROOM],
    answers: &[json(
        200,
        "Participants inside (not those in the lobby).",
        schema::<ParticipantList>,
    )],
    errors: &[404],
    ..BASE
};

/// `DELETE /api/v1/rooms/{room_id}/participants/{participant_id}`.
pub static REMOVE_PARTICIPANT: Endpoint = Endpoint {
    method: Method::Delete,
    path: "/api/v1/rooms/{room_id}/participants/{participant_id}",
    operation_id: "remove_participant",
    tag: "participants",
    summary: "Remove (kick) a participant",
    description: "Revokes that participant's session; removed within 1 s. The same browser may come \
back through the invite link unless `ban=true`, which bars that browser from rejoining through any link.",
    params: &[ROOM, PARTICIPANT],
    query: &[Query {
        name: "ban",
        description: "Also bar this browser from rejoining (`true`/`false`, `1`/`0`); anything else is 400.",
        schema: schema::<bool>,
    }],
    answers: &[NO_CONTENT],
    errors: &[400, 404, 409],
    ..BASE
};

/// `POST /api/v1/rooms/{room_id}/participants/{participant_id}/mute`.
pub static MUTE_PARTICIPANT: Endpoint = Endpoint {
    method: Method::Post,
    path: "/api/v1/rooms/{room_id}/participants/{participant_id}/mute",
    operation_id: "mute_participant",
    tag: "participants",
    summary: "Stop (or resume) forwarding a participant's audio or video",
    params: &[ROOM, PARTICIPANT],
    request: body::<MuteRequest>(true),
    answers: &[NO_CONTENT],
    errors: &[404, 409],
    ..BASE
};

/// `GET /api/v1/rooms/{room_id}/lobby`.
pub static LOBBY: Endpoint = Endpoint {
    path: "/api/v1/rooms/{room_id}/lobby",
    operation_id: "list_lobby",
    tag: "participants",
    summary: "People waiting in the lobby",
    params: &[ROOM],
    answers: &[json(
        200,
        "Waiting participants (rooms with `lobby: true`).",
        schema::<Lobby>,
    )],
    errors: &[404],
    ..BASE
};

/// `POST /api/v1/rooms/{room_id}/lobby/{participant_id}/admit`.
pub static ADMIT: Endpoint = Endpoint {
    method: Method::Post,
    path: "/api/v1/rooms/{room_id}/lobby/{participant_id}/admit",
    operation_id: "admit_participant",
    tag: "participants",
    summary: "Let a waiting participant in",
    params: &[ROOM, PARTICIPANT],
    answers: &[NO_CONTENT],
    errors: &[404, 409],
    ..BASE
};

/// `POST /api/v1/rooms/{room_id}/lobby/{participant_id}/deny`.
pub static DENY: Endpoint = Endpoint {
    method: Method::Post,
    path: "/api/v1/rooms/{room_id}/lobby/{participant_id}/deny",
    operation_id: "deny_participant",
    tag: "participants",
    summary: "Turn a waiting participant away",
    params: &[ROOM, PARTICIPANT],
    answers: &[NO_CONTENT],
    errors: &[404, 409],
    ..BASE
};

// ------------------------------------------------------------ recordings

/// `POST /api/v1/rooms/{room_id}/recordings`.
pub static START_RECORDING: Endpoint = Endpoint {
    method: Method::Post,
    path: "/api/v1/rooms/{room_id}/recordings",
    operation_id: "start_recording",
    tag: "recordings",
    summary: "Start recording a room",
    description: "`composite`: one file, everyone in a grid plus the mixed audio. `tracks`: one file \
per published track, not re-encoded. No body: composite MP4.",
    params: &[ROOM],
    request: body::<StartRecording>(false),
    answers: &[json(201, "The recording.", schema::<RecordingView>)],
    errors: &[404, 409],
    ..BASE
};

/// `GET /api/v1/recordings`.
pub static LIST_RECORDINGS: Endpoint = Endpoint {
    path: "/api/v1/recordings",
    operation_id: "list_recordings",
    tag: "recordings",
    summary: "Recordings",
    query: &[ROOM_QUERY],
    answers: &[json(200, "Recordings.", schema::<RecordingList>)],
    errors: &[404],
    ..BASE
};

/// `GET /api/v1/recordings/{recording_id}`.
pub static GET_RECORDING: Endpoint = Endpoint {
    path: "/api/v1/recordings/{recording_id}",
    operation_id: "get_recording",
    tag: "recordings",
    summary: "A recording",
    params: &[RECORDING],
    answers: &[json(200, "The recording.", schema::<RecordingView>)],
    errors: &[404],
    ..BASE
};

/// `POST /api/v1/recordings/{recording_id}/stop`.
pub static STOP_RECORDING: Endpoint = Endpoint {
    method: Method::Post,
    path: "/api/v1/recordings/{recording_id}/stop",
    operation_id: "stop_recording",
    tag: "recordings",
    summary: "Stop a recording",
    params: &[RECORDING],
    answers: &[json(
        200,
        "The recording, finalized.",
        schema::<RecordingView>,
    )],
    errors: &[404, 409],
    ..BASE
};

/// `DELETE /api/v1/recordings/{recording_id}`.
pub static DELETE_RECORDING: Endpoint = Endpoint {
    method: Method::Delete,
    path: "/api/v1/recordings/{recording_id}",
    operation_id: "delete_recording",
    tag: "recordings",
    summary: "Delete a recording and its files",
    params: &[RECORDING],
    answers: &[NO_CONTENT],
    errors: &[404, 409],
    ..BASE
};

/// `GET /api/v1/recordings/{recording_id}/files/{name}`.
pub static RECORDING_FILE: Endpoint = Endpoint {
    path: "/api/v1/recordings/{recording_id}/files/{name}",
    operation_id: "download_recording_file",
    tag: "recordings",
    summary: "Download a recording file (HTTP Range)",
    description: "One `bytes=` range is honoured (206); several ranges get the whole file.",
    params: &[
        RECORDING,
        Param {
            name: "name",
            description: "File name, as in the recording's `files`.",
            example: "composite.mp4",
            schema: schema::<String>,
        },
    ],
    answers: &[
        Answer {
            status: 200,
            description: "The whole file.",
            content: Content::Media(&[
                "video/mp4",
                "video/x-matroska",
                "video/webm",
                "application/octet-stream",
            ]),
            headers: &[Header {
                name: "Accept-Ranges",
                description: "`bytes`",
            }],
        },
        Answer {
            status: 206,
            description: "The asked range.",
            content: Content::Media(&[
                "video/mp4",
                "video/x-matroska",
                "video/webm",
                "application/octet-stream",
            ]),
            headers: &[Header {
                name: "Content-Range",
                description: "`bytes start-end/size`",
            }],
        },
    ],
    errors: &[404, 416],
    ..BASE
};

// ------------------------------------------------------------ broadcasts

/// `POST /api/v1/rooms/{room_id}/broadcasts`.
pub static START_BROADCAST: Endpoint = Endpoint {
    method: Method::Post,
    path: "/api/v1/rooms/{room_id}/broadcasts",
    operation_id: "start_broadcast",
    tag: "broadcasts",
    summary: "Broadcast a room (HLS, WHEP, RTMP)",
    description: "`renditions` from `1080p`, `720p`, `480p`, `360p`, `240p` (else 422). No body: HLS and WHEP \
of the composite. For `private` rooms `watch_url` carries a viewer token (`#t=`), sent to WHEP as a bearer.",
    params: &[ROOM],
    request: body::<StartBroadcast>(false),
    answers: &[json(201, "The broadcast.", schema::<BroadcastView>)],
    errors: &[404, 409],
    ..BASE
};

/// `GET /api/v1/broadcasts`.
pub static LIST_BROADCASTS: Endpoint = Endpoint {
    path: "/api/v1/broadcasts",
    operation_id: "list_broadcasts",
    tag: "broadcasts",
    summary: "Broadcasts",
    query: &[ROOM_QUERY],
    answers: &[json(
        200,
        "Live broadcasts, and those ended in the last hour.",
        schema::<BroadcastList>,
    )],
    errors: &[404],
    ..BASE
};

/// `GET /api/v1/broadcasts/{broadcast_id}`.
pub static GET_BROADCAST: Endpoint = Endpoint {
    path: "/api/v1/broadcasts/{broadcast_id}",
    operation_id: "get_broadcast",
    tag: "broadcasts",
    summary: "A broadcast",
    params: &[BROADCAST],
    answers: &[json(200, "The broadcast.", schema::<BroadcastView>)],
    errors: &[404],
    ..BASE
};

/// `DELETE /api/v1/broadcasts/{broadcast_id}`.
pub static STOP_BROADCAST: Endpoint = Endpoint {
    method: Method::Delete,
    path: "/api/v1/broadcasts/{broadcast_id}",
    operation_id: "stop_broadcast",
    tag: "broadcasts",
    summary: "End a broadcast",
    description: "Its state is `ended` within 5 s.",
    params: &[BROADCAST],
    answers: &[NO_CONTENT],
    errors: &[404],
    ..BASE
};

/// `GET /api/v1/public/broadcasts/{broadcast_id}`.
pub static PUBLIC_BROADCAST: Endpoint = Endpoint {
    path: "/api/v1/public/broadcasts/{broadcast_id}",
    operation_id: "public_broadcast",
    tag: "broadcasts",
    summary: "What the viewer page may know of a broadcast",
    auth: Auth::Public,
    params: &[BROADCAST],
    answers: &[json(
        200,
        "The broadcast, as viewers see it.",
        schema::<PublicBroadcast>,
    )],
    errors: &[404],
    ..BASE
};

/// `POST /api/v1/rooms/{room_id}/ingests`.
pub static CREATE_INGEST: Endpoint = Endpoint {
    method: Method::Post,
    path: "/api/v1/rooms/{room_id}/ingests",
    operation_id: "create_ingest",
    tag: "ingest",
    summary: "A WHIP endpoint and token for a room",
    description: "A WHIP client (OBS 30+, a browser, GStreamer) `POST`s its offer to `whip_url` with \
`Authorization: Bearer <token>` and publishes into the room as a participant with role `ingest`.",
    params: &[ROOM],
    answers: &[json(201, "Where and how to publish.", schema::<Ingest>)],
    errors: &[404],
    ..BASE
};

// ------------------------------------------------------------------ live

/// `GET /hls/{broadcast_id}/index.m3u8`.
pub static HLS_MASTER: Endpoint = Endpoint {
    method: Method::GetOrHead,
    path: "/hls/{broadcast_id}/index.m3u8",
    operation_id: "hls_master_playlist",
    tag: "live",
    summary: "HLS master playlist",
    auth: Auth::Public,
    params: &[BROADCAST],
    answers: &[
        Answer {
            status: 200,
            description: "The playlist.",
            content: Content::Media(&["application/vnd.apple.mpegurl"]),
            headers: HLS_HEADERS,
        },
        HLS_NOT_MODIFIED,
    ],
    errors: &[404],
    ..BASE
};

/// `GET /hls/{broadcast_id}/{rendition}/{file}`.
pub static HLS_FILE: Endpoint = Endpoint {
    method: Method::GetOrHead,
    path: "/hls/{broadcast_id}/{rendition}/{file}",
    operation_id: "hls_file",
    tag: "live",
    summary: "HLS media playlist or segment",
    description: "Headers fit for a CDN: segments and parts never change, playlists change every part. \
Low-Latency HLS: the media playlist lists the newest segments' parts (`EXT-X-PART`, `seg00042.3.ts`) \
and hints the next one (`EXT-X-PRELOAD-HINT`); a request for the hinted part is held until it is \
written. Blocking playlist reload (`CAN-BLOCK-RELOAD=YES`): with `_HLS_msn` (and `_HLS_part`) the \
answer waits until the playlist lists that segment (part), at most 3 target durations (then 503).",
    auth: Auth::Public,
    params: &[
        BROADCAST,
        Param {
            name: "rendition",
            description: "`source`, or one of the broadcast's renditions (`720p`, …).",
            example: "720p",
            schema: schema::<String>,
        },
        Param {
            name: "file",
            description: "`index.m3u8`, a segment (`seg00042.ts`) or a part (`seg00042.3.ts`).",
            example: "seg00001.ts",
            schema: schema::<String>,
        },
    ],
    answers: &[
        Answer {
            status: 200,
            description: "The playlist or segment.",
            content: Content::Media(&["application/vnd.apple.mpegurl", "video/mp2t"]),
            headers: HLS_HEADERS,
        },
        HLS_NOT_MODIFIED,
    ],
    query: &[
        Query {
            name: "_HLS_msn",
            description: "Playlist only: answer once segment `_HLS_msn` is listed (blocking reload).",
            schema: schema::<u64>,
        },
        Query {
            name: "_HLS_part",
            description: "Playlist only, with `_HLS_msn`: answer once part `_HLS_part` of segment `_HLS_msn` is listed.",
            schema: schema::<u32>,
        },
    ],
    errors: &[400, 404, 503],
    ..BASE
};

/// `POST /whep/{broadcast_id}`.
pub static WHEP_OFFER: Endpoint = Endpoint {
    method: Method::Post,
    path: "/whep/{broadcast_id}",
    operation_id: "whep_offer",
    tag: "live",
    summary: "Watch a broadcast over WebRTC (WHEP)",
    description: "draft-ietf-wish-whep. Broadcasts of `listed` rooms are open to anyone; for `private` \
rooms send the viewer token of `watch_url` (`#t=`) as the bearer.",
    auth: Auth::OptionalLink,
    params: &[BROADCAST],
    request: Request::Sdp,
    answers: SDP_CREATED,
    errors: &[404, 409],
    limit: Some(Limit::Whep),
    ..BASE
};

/// `DELETE /whep/{broadcast_id}/{viewer_id}`.
pub static WHEP_DELETE: Endpoint = Endpoint {
    method: Method::Delete,
    path: "/whep/{broadcast_id}/{viewer_id}",
    operation_id: "whep_stop",
    tag: "live",
    summary: "Stop watching (WHEP)",
    auth: Auth::OptionalLink,
    params: &[BROADCAST, VIEWER],
    answers: &[ok("Stopped.", Content::None)],
    errors: &[404],
    ..BASE
};

/// `PATCH /whep/{broadcast_id}/{viewer_id}`.
pub static WHEP_PATCH: Endpoint = Endpoint {
    method: Method::Patch,
    path: "/whep/{broadcast_id}/{viewer_id}",
    operation_id: "whep_trickle",
    tag: "live",
    summary: "Trickle ICE (not supported)",
    description: TRICKLE,
    auth: Auth::Public,
    params: &[BROADCAST, VIEWER],
    errors: &[405],
    ..BASE
};

/// `POST /whip/{room_id}`.
pub static WHIP_OFFER: Endpoint = Endpoint {
    method: Method::Post,
    path: "/whip/{room_id}",
    operation_id: "whip_offer",
    tag: "live",
    summary: "Publish into a room (WHIP)",
    description: "draft-ietf-wish-whip, with the token of `POST /api/v1/rooms/{room_id}/ingests` as the bearer.",
    auth: Auth::Link,
    params: &[ROOM],
    request: Request::Sdp,
    answers: SDP_CREATED,
    errors: &[404, 409],
    limit: Some(Limit::Whip),
    ..BASE
};

/// `DELETE /whip/{room_id}/{participant_id}`.
pub static WHIP_DELETE: Endpoint = Endpoint {
    method: Method::Delete,
    path: "/whip/{room_id}/{participant_id}",
    operation_id: "whip_stop",
    tag: "live",
    summary: "Stop publishing (WHIP)",
    auth: Auth::Link,
    params: &[ROOM, INGEST_PARTICIPANT],
    answers: &[ok("Stopped.", Content::None)],
    errors: &[404],
    ..BASE
};

/// `PATCH /whip/{room_id}/{participant_id}`.
pub static WHIP_PATCH: Endpoint = Endpoint {
    method: Method::Patch,
    path: "/whip/{room_id}/{participant_id}",
    operation_id: "whip_trickle",
    tag: "live",
    summary: "Trickle ICE (not supported)",
    description: TRICKLE,
    auth: Auth::Public,
    params: &[ROOM, INGEST_PARTICIPANT],
    errors: &[405],
    ..BASE
};

/// `OPTIONS /whep/{broadcast_id}`.
pub static WHEP_PREFLIGHT: Endpoint = Endpoint {
    method: Method::Options,
    path: "/whep/{broadcast_id}",
    operation_id: "whep_preflight",
    tag: "live",
    summary: "CORS preflight",
    auth: Auth::Public,
    params: &[BROADCAST],
    answers: CORS_PREFLIGHT,
    ..BASE
};

/// `OPTIONS /whep/{broadcast_id}/{viewer_id}`.
pub static WHEP_SESSION_PREFLIGHT: Endpoint = Endpoint {
    method: Method::Options,
    path: "/whep/{broadcast_id}/{viewer_id}",
    operation_id: "whep_session_preflight",
    tag: "live",
    summary: "CORS preflight",
    auth: Auth::Public,
    params: &[BROADCAST, VIEWER],
    answers: CORS_PREFLIGHT,
    ..BASE
};

/// `OPTIONS /whip/{room_id}`.
pub static WHIP_PREFLIGHT: Endpoint = Endpoint {
    method: Method::Options,
    path: "/whip/{room_id}",
    operation_id: "whip_preflight",
    tag: "live",
    summary: "CORS preflight",
    auth: Auth::Public,
    params: &[ROOM],
    answers: CORS_PREFLIGHT,
    ..BASE
};

/// `OPTIONS /whip/{room_id}/{participant_id}`.
pub static WHIP_SESSION_PREFLIGHT: Endpoint = Endpoint {
    method: Method::Options,
    path: "/whip/{room_id}/{participant_id}",
    operation_id: "whip_session_preflight",
    tag: "live",
    summary: "CORS preflight",
    auth: Auth::Public,
    params: &[ROOM, INGEST_PARTICIPANT],
    answers: CORS_PREFLIGHT,
    ..BASE
};

// ------------------------------------------------------- signaling, pages

/// `GET /ws`.
pub static SIGNALING: Endpoint = Endpoint {
    path: "/ws",
    operation_id: "signaling",
    tag: "signaling",
    summary: "WebSocket signaling (one socket per participant)",
    description: "A WebSocket upgrade; OpenAPI cannot describe the frames, `docs/signaling.md` does. \
The first frame must be `join` carrying the room link token (tokens never travel in URLs).",
    auth: Auth::Public,
    answers: &[Answer {
        status: 101,
        description: "Switching Protocols: the signaling socket.",
        content: Content::None,
        headers: &[],
    }],
    errors: &[400],
    limit: Some(Limit::Signaling),
    ..BASE
};

/// `GET /`.
pub static HOME_PAGE: Endpoint = Endpoint {
    path: "/",
    operation_id: "home_page",
    tag: "web",
    summary: "Home: create a room, list `listed` rooms",
    auth: Auth::Public,
    answers: PAGE,
    ..BASE
};

/// `GET /r/{room_id}`.
pub static ROOM_PAGE: Endpoint = Endpoint {
    path: "/r/{room_id}",
    operation_id: "room_page",
    tag: "web",
    summary: "Join page and call (opened by `invite_url` / `host_url`)",
    description: "The link token travels in the fragment (`#t=`), which browsers never send.",
    auth: Auth::Public,
    params: &[ROOM],
    answers: PAGE,
    ..BASE
};

/// `GET /watch/{broadcast_id}`.
pub static WATCH_PAGE: Endpoint = Endpoint {
    path: "/watch/{broadcast_id}",
    operation_id: "watch_page",
    tag: "web",
    summary: "Viewer page (WHEP, falling back to HLS)",
    auth: Auth::Public,
    params: &[BROADCAST],
    answers: PAGE,
    ..BASE
};

/// `GET /assets/{path}`.
pub static ASSETS: Endpoint = Endpoint {
    path: "/assets/{path}",
    operation_id: "asset",
    tag: "web",
    summary: "Scripts, styles and images of the web client",
    auth: Auth::Public,
    params: &[Param {
        name: "path",
        description: "File under `web/assets/` (may contain `/`).",
        example: "home.js",
        schema: schema::<String>,
    }],
    answers: &[ok(
        "The file, typed by its extension.",
        Content::Media(&["*/*"]),
    )],
    errors: &[404],
    ..BASE
};

/// Every endpoint, in the order the document lists them.
pub static ALL: &[&Endpoint] = &[
    &HEALTHZ,
    &METRICS,
    &OPENAPI,
    &SYSTEM,
    &CREATE_ROOM,
    &LIST_ROOMS,
    &GET_ROOM,
    &PATCH_ROOM,
    &CLOSE_ROOM,
    &ROTATE_INVITE,
    &ROTATE_HOST_LINK,
    &ROOM_EVENTS,
    &PUBLIC_ROOMS,
    &PARTICIPANTS,
    &REMOVE_PARTICIPANT,
    &MUTE_PARTICIPANT,
    &LOBBY,
    &ADMIT,
    &DENY,
    &START_RECORDING,
    &LIST_RECORDINGS,
    &GET_RECORDING,
    &STOP_RECORDING,
    &DELETE_RECORDING,
    &RECORDING_FILE,
    &START_BROADCAST,
    &LIST_BROADCASTS,
    &GET_BROADCAST,
    &STOP_BROADCAST,
    &PUBLIC_BROADCAST,
    &CREATE_INGEST,
    &HLS_MASTER,
    &HLS_FILE,
    &WHEP_OFFER,
    &WHEP_DELETE,
    &WHEP_PATCH,
    &WHIP_OFFER,
    &WHIP_DELETE,
    &WHIP_PATCH,
    &WHEP_PREFLIGHT,
    &WHEP_SESSION_PREFLIGHT,
    &WHIP_PREFLIGHT,
    &WHIP_SESSION_PREFLIGHT,
    &SIGNALING,
    &HOME_PAGE,
    &ROOM_PAGE,
    &WATCH_PAGE,
    &ASSETS,
];

/// The error body, for `super::openapi`.
pub fn error_schema(g: &mut SchemaGenerator) -> Schema {
    g.subschema_for::<errors::Body<'static>>()
}

// ------------------------------------------------------------ route heads

/// Whether a path template (`/a/{x}/b`) matches a request path; a last
/// `{path}` takes the rest (one segment or more), as [`route_tail`] does.
fn template_matches(template: &str, path: &str) -> bool {
    let mut t = template.split('/').filter(|s| !s.is_empty()).peekable();
    let mut p = path.split('/').filter(|s| !s.is_empty());
    loop {
        match (t.next(), p.next()) {
            (None, None) => return true,
            (Some("{path}"), Some(_)) if t.peek().is_none() => return true,
            (Some(ts), Some(ps)) => {
                let param = ts.starts_with('{') && ts.ends_with('}');
                if !param && ts != ps {
                    return false;
                }
            }
            _ => return false,
        }
    }
}

/// The entry that serves `method` on `path`, if any.
pub fn lookup(method: &warp::http::Method, path: &str) -> Option<&'static Endpoint> {
    use warp::http::Method as M;
    let wanted = match *method {
        M::GET => "get",
        M::HEAD => "head",
        M::POST => "post",
        M::PATCH => "patch",
        M::DELETE => "delete",
        M::OPTIONS => "options",
        _ => return None,
    };
    ALL.iter()
        .copied()
        .find(|e| e.method.names().contains(&wanted) && template_matches(e.path, path))
}

/// The entry a request is for (without consuming its path), for filters
/// that apply to every route, such as the per-address limits.
pub fn requested()
-> impl Filter<Extract = (Option<&'static Endpoint>,), Error = std::convert::Infallible> + Clone {
    warp::method()
        .and(warp::path::full())
        .map(|m: warp::http::Method, p: warp::path::FullPath| lookup(&m, p.as_str()))
}

/// The literal segments between a template's parameters: `n` parameters
/// give `n + 1` runs.
fn runs(path: &'static str) -> Vec<Vec<&'static str>> {
    let mut runs = vec![Vec::new()];
    for seg in path.split('/').filter(|s| !s.is_empty()) {
        if seg.starts_with('{') && seg.ends_with('}') {
            runs.push(Vec::new());
        } else if let Some(run) = runs.last_mut() {
            run.push(seg);
        }
    }
    runs
}

/// Matches literal segments, in order.
fn literals(run: &[&'static str]) -> BoxedFilter<()> {
    run.iter().fold(warp::any().boxed(), |f, seg| {
        f.and(warp::path(*seg)).boxed()
    })
}

/// The method filter; heads put it after the path, since a method filter
/// first would turn the 404 of another path into a 405.
fn method(m: Method) -> BoxedFilter<()> {
    match m {
        Method::Get => warp::get().boxed(),
        Method::GetOrHead => warp::get().or(warp::head()).unify().boxed(),
        Method::Post => warp::post().boxed(),
        Method::Patch => warp::patch().boxed(),
        Method::Delete => warp::delete().boxed(),
        Method::Options => warp::options().boxed(),
    }
}

/// An entry may be served only when it is in [`ALL`] (so documented) and its
/// template has the parameters the handler takes. Otherwise the route never
/// matches (a live request finds the 404 of an unknown route, which
/// `tests/openapi.rs` looks for) and the reason is logged at start-up.
fn servable(ep: &'static Endpoint, params: usize) -> bool {
    let listed = ALL
        .iter()
        .any(|e| e.operation_id == ep.operation_id && e.path == ep.path && e.method == ep.method);
    let found = runs(ep.path).len() - 1;
    if !listed {
        tracing::error!(
            path = ep.path,
            "endpoint missing from endpoints::ALL: not served"
        );
    }
    if found != params {
        tracing::error!(
            path = ep.path,
            found,
            params,
            "route takes another number of path parameters: not served"
        );
    }
    listed && found == params
}

fn unserved<T: Send + 'static>() -> BoxedFilter<(T,)> {
    warp::any()
        .and_then(|| async { Err::<T, Rejection>(warp::reject::not_found()) })
        .boxed()
}

/// Path and method of an endpoint without parameters.
pub fn route0(ep: &'static Endpoint) -> BoxedFilter<()> {
    match (servable(ep, 0), runs(ep.path).as_slice()) {
        (true, [a]) => literals(a)
            .and(warp::path::end())
            .and(method(ep.method))
            .boxed(),
        _ => unserved::<()>().untuple_one().boxed(),
    }
}

/// Path and method of an endpoint with one parameter.
pub fn route1(ep: &'static Endpoint) -> BoxedFilter<(String,)> {
    match (servable(ep, 1), runs(ep.path).as_slice()) {
        (true, [a, b]) => literals(a)
            .and(warp::path::param::<String>())
            .and(literals(b))
            .and(warp::path::end())
            .and(method(ep.method))
            .boxed(),
        _ => unserved::<String>(),
    }
}

/// Path and method of an endpoint with two parameters.
pub fn route2(ep: &'static Endpoint) -> BoxedFilter<(String, String)> {
    match (servable(ep, 2), runs(ep.path).as_slice()) {
        (true, [a, b, c]) => literals(a)
            .and(warp::path::param::<String>())
            .and(literals(b))
            .and(warp::path::param::<String>())
            .and(literals(c))
            .and(warp::path::end())
            .and(method(ep.method))
            .boxed(),
        _ => unserved::<(String, String)>().untuple_one().boxed(),
    }
}

/// Path and method of an endpoint with three parameters.
pub fn route3(ep: &'static Endpoint) -> BoxedFilter<(String, String, String)> {
    match (servable(ep, 3), runs(ep.path).as_slice()) {
        (true, [a, b, c, d]) => literals(a)
            .and(warp::path::param::<String>())
            .and(literals(b))
            .and(warp::path::param::<String>())
            .and(literals(c))
            .and(warp::path::param::<String>())
            .and(literals(d))
            .and(warp::path::end())
            .and(method(ep.method))
            .boxed(),
        _ => unserved::<(String, String, String)>().untuple_one().boxed(),
    }
}

/// Path and method of an endpoint whose one parameter, last, takes the rest
/// of the path (several segments).
pub fn route_tail(ep: &'static Endpoint) -> BoxedFilter<(warp::path::Tail,)> {
    match (servable(ep, 1), runs(ep.path).as_slice()) {
        (true, [a, b]) if b.is_empty() => literals(a)
            .and(warp::path::tail())
            .and(method(ep.method))
            .boxed(),
        _ => unserved::<warp::path::Tail>(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn example_path(ep: &Endpoint) -> String {
        ep.params.iter().fold(ep.path.to_owned(), |p, param| {
            p.replace(&format!("{{{}}}", param.name), param.example)
        })
    }

    fn verbs(m: Method) -> &'static [&'static str] {
        match m {
            Method::Get => &["GET"],
            Method::GetOrHead => &["GET", "HEAD"],
            Method::Post => &["POST"],
            Method::Patch => &["PATCH"],
            Method::Delete => &["DELETE"],
            Method::Options => &["OPTIONS"],
        }
    }

    #[test]
    fn operations_are_unique_and_parameters_match_their_templates() {
        let mut ids = HashSet::new();
        let mut ops = HashSet::new();
        for ep in ALL {
            assert!(ids.insert(ep.operation_id), "{} twice", ep.operation_id);
            for m in ep.method.names() {
                assert!(ops.insert((*m, ep.path)), "{m} {} twice", ep.path);
            }
            let in_path: Vec<&str> = ep
                .path
                .split('/')
                .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
                .collect();
            let declared: Vec<&str> = ep.params.iter().map(|p| p.name).collect();
            assert_eq!(in_path, declared, "{}", ep.path);
        }
    }

    /// Whether the head of `ep` (built as its handler builds it) takes this request.
    async fn head_matches(ep: &'static Endpoint, verb: &str, path: &str) -> bool {
        let req = || warp::test::request().method(verb).path(path);
        match ep.params.len() {
            0 => req().matches(&route0(ep)).await,
            1 if ep.path.ends_with("{path}") => req().matches(&route_tail(ep)).await,
            1 => req().matches(&route1(ep)).await,
            2 => req().matches(&route2(ep)).await,
            _ => req().matches(&route3(ep)).await,
        }
    }

    /// Each entry's head matches its own path with the examples, and only
    /// with its own method.
    #[tokio::test]
    async fn heads_match_their_entries() {
        for ep in ALL {
            let path = example_path(ep);
            for verb in verbs(ep.method) {
                assert!(head_matches(ep, verb, &path).await, "{verb} {path}");
            }
            let other = if ep.method == Method::Post {
                "PUT"
            } else {
                "POST"
            };
            assert!(!head_matches(ep, other, &path).await, "{other} {path}");
            let longer = format!("{path}/x");
            if !ep.path.ends_with("{path}") {
                assert!(
                    !head_matches(ep, verbs(ep.method)[0], &longer).await,
                    "{longer}"
                );
            }
        }
    }

    #[test]
    fn requests_are_matched_to_their_entries() {
        use warp::http::Method as M;
        for ep in ALL {
            let path = example_path(ep);
            for verb in verbs(ep.method) {
                let m = M::from_bytes(verb.as_bytes()).unwrap();
                let found = lookup(&m, &path).map(|e| e.operation_id);
                assert_eq!(found, Some(ep.operation_id), "{verb} {path}");
            }
        }
        let id = |m: &M, p: &str| lookup(m, p).map(|e| e.operation_id);
        assert_eq!(id(&M::PUT, "/api/v1/rooms"), None);
        assert_eq!(id(&M::GET, "/api/v1/nothing"), None);
        assert_eq!(id(&M::GET, "/assets/"), None);
        assert_eq!(id(&M::GET, "/assets/a/b/c.js"), Some("asset"));
        assert_eq!(id(&M::GET, "/"), Some("home_page"));
        assert_eq!(
            lookup(&M::POST, "/whep/b_x").and_then(|e| e.rate_limit()),
            Some(Limit::Whep)
        );
        assert_eq!(
            lookup(&M::GET, "/ws").and_then(|e| e.rate_limit()),
            Some(Limit::Signaling)
        );
        assert_eq!(
            lookup(&M::GET, "/hls/b_x/720p/seg00001.ts").and_then(|e| e.rate_limit()),
            None
        );
    }

    #[tokio::test]
    async fn an_entry_outside_the_table_or_of_another_arity_is_not_served() {
        static STRAY: Endpoint = Endpoint {
            path: "/stray/{room_id}",
            operation_id: "stray",
            params: &[ROOM],
            ..BASE
        };
        assert!(!head_matches(&STRAY, "GET", "/stray/r_x").await);
        let req = || {
            warp::test::request()
                .method("GET")
                .path("/api/v1/rooms/r_x")
        };
        assert!(req().matches(&route1(&GET_ROOM)).await);
        assert!(!req().matches(&route2(&GET_ROOM)).await);
        assert!(!req().matches(&route0(&GET_ROOM)).await);
    }
}
