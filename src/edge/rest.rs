//! REST routes of the contract (`/api/v1/...`, `/healthz`).

use super::endpoints::{self as ep, route0, route1, route2};
use super::errors::ApiError;
use super::{App, Caller, admin, caller, json_body, optional_json_body, with_app};
use crate::control::{
    Actor, CreateRoom, MuteRequest, PatchRoom, PublicRoom, RecordingView, RoomView, RotateInvite,
    StartRecording,
};
use crate::ids::RecordingId;
use crate::ids::{ParticipantId, RoomId};
use crate::model::AuditEvent;
use crate::signaling::ParticipantInfo;
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::Arc;
use warp::http::StatusCode;
use warp::{Filter, Rejection, Reply};

type Resp = Result<warp::reply::Response, Rejection>;

fn room_id(s: &str) -> Result<RoomId, Rejection> {
    RoomId::parse(s).ok_or_else(|| warp::reject::custom(ApiError::not_found("room")))
}

fn recording_id(s: &str) -> Result<RecordingId, Rejection> {
    RecordingId::parse(s).ok_or_else(|| warp::reject::custom(ApiError::not_found("recording")))
}

fn participant_id(s: &str) -> Result<ParticipantId, Rejection> {
    ParticipantId::parse(s).ok_or_else(|| warp::reject::custom(ApiError::not_found("participant")))
}

fn json_status<T: serde::Serialize>(body: &T, status: StatusCode) -> warp::reply::Response {
    warp::reply::with_status(warp::reply::json(body), status).into_response()
}

fn no_content() -> warp::reply::Response {
    StatusCode::NO_CONTENT.into_response()
}

/// One REST route, boxed.
type Route = warp::filters::BoxedFilter<(warp::reply::Response,)>;

/// Every REST route.
pub fn routes(app: Arc<App>) -> Route {
    let healthz =
        route0(&ep::HEALTHZ).map(|| json_status(&Health { status: "ok" }, StatusCode::OK));

    let metrics = route0(&ep::METRICS)
        .and(with_app(app.clone()))
        .map(|app: Arc<App>| {
            let mut text = app.control.metrics();
            let mut edge = crate::metrics::Exposition::new();
            edge.single(
                "roomcast_signaling_sockets",
                crate::metrics::Kind::Gauge,
                "Open signaling WebSockets past the join (participants and lobby).",
                super::ws::open_sockets(),
            );
            text.push_str(&edge.finish());
            warp::reply::with_header(text, "content-type", "text/plain; version=0.0.4")
                .into_response()
        });

    let system = route0(&ep::SYSTEM)
        .and(admin(app.clone()))
        .and(with_app(app.clone()))
        .map(|app: Arc<App>| json_status(&app.system, StatusCode::OK));

    let create = route0(&ep::CREATE_ROOM)
        .and(caller(app.clone()))
        .and(super::listener::remote())
        .and(json_body::<CreateRoom>())
        .and(with_app(app.clone()))
        .and_then(create_room);

    let list = route0(&ep::LIST_ROOMS)
        .and(admin(app.clone()))
        .and(with_app(app.clone()))
        .map(|app: Arc<App>| {
            let rooms = app.control.list_rooms();
            json_status(&RoomList { rooms }, StatusCode::OK)
        });

    let get = route1(&ep::GET_ROOM)
        .and(admin(app.clone()))
        .and(with_app(app.clone()))
        .and_then(|id: String, app: Arc<App>| async move {
            let room = app.control.get_room(&room_id(&id)?)?;
            Resp::Ok(json_status(&room, StatusCode::OK))
        });

    let patch = route1(&ep::PATCH_ROOM)
        .and(admin(app.clone()))
        .and(json_body::<PatchRoom>())
        .and(with_app(app.clone()))
        .and_then(|id: String, patch: PatchRoom, app: Arc<App>| async move {
            let room = app
                .control
                .update_room(&room_id(&id)?, patch, Actor::Admin)
                .await?;
            Resp::Ok(json_status(&room, StatusCode::OK))
        });

    let delete = route1(&ep::CLOSE_ROOM)
        .and(admin(app.clone()))
        .and(with_app(app.clone()))
        .and_then(|id: String, app: Arc<App>| async move {
            app.control.close_room(&room_id(&id)?, Actor::Admin).await?;
            Resp::Ok(no_content())
        });

    let invite = route1(&ep::ROTATE_INVITE)
        .and(admin(app.clone()))
        .and(optional_json_body::<RotateInvite>())
        .and(with_app(app.clone()))
        .and_then(|id: String, body: RotateInvite, app: Arc<App>| async move {
            let room = app
                .control
                .rotate_invite(&room_id(&id)?, body.expires_in, Actor::Admin)
                .await?;
            Resp::Ok(json_status(&room, StatusCode::OK))
        });

    let host_link = route1(&ep::ROTATE_HOST_LINK)
        .and(admin(app.clone()))
        .and(with_app(app.clone()))
        .and_then(|id: String, app: Arc<App>| async move {
            let room = app
                .control
                .rotate_host_link(&room_id(&id)?, Actor::Admin)
                .await?;
            Resp::Ok(json_status(&room, StatusCode::OK))
        });

    let participants = route1(&ep::PARTICIPANTS)
        .and(admin(app.clone()))
        .and(with_app(app.clone()))
        .and_then(|id: String, app: Arc<App>| async move {
            let participants = app.control.participants(&room_id(&id)?)?;
            Resp::Ok(json_status(
                &ParticipantList { participants },
                StatusCode::OK,
            ))
        });

    let remove = route2(&ep::REMOVE_PARTICIPANT)
        .and(admin(app.clone()))
        .and(warp::query::<std::collections::HashMap<String, String>>())
        .and(with_app(app.clone()))
        .and_then(
            |id: String,
             pid: String,
             q: std::collections::HashMap<String, String>,
             app: Arc<App>| async move {
                let ban = match q.get("ban").map(String::as_str) {
                    None | Some("false") | Some("0") => false,
                    Some("true") | Some("1") | Some("") => true,
                    Some(_) => {
                        return Err(warp::reject::custom(ApiError::bad_request(
                            "ban must be true or false",
                        )));
                    }
                };
                app.control
                    .remove_participant(&room_id(&id)?, &participant_id(&pid)?, ban, Actor::Admin)
                    .await?;
                Resp::Ok(no_content())
            },
        );

    let mute = route2(&ep::MUTE_PARTICIPANT)
        .and(admin(app.clone()))
        .and(json_body::<MuteRequest>())
        .and(with_app(app.clone()))
        .and_then(
            |id: String, pid: String, m: MuteRequest, app: Arc<App>| async move {
                app.control
                    .mute_participant(&room_id(&id)?, &participant_id(&pid)?, m, Actor::Admin)
                    .await?;
                Resp::Ok(no_content())
            },
        );

    let lobby = route1(&ep::LOBBY)
        .and(admin(app.clone()))
        .and(with_app(app.clone()))
        .and_then(|id: String, app: Arc<App>| async move {
            let lobby = app.control.lobby(&room_id(&id)?)?;
            Resp::Ok(json_status(&Lobby { lobby }, StatusCode::OK))
        });

    let admit = route2(&ep::ADMIT)
        .and(admin(app.clone()))
        .and(with_app(app.clone()))
        .and_then(|id: String, pid: String, app: Arc<App>| async move {
            app.control
                .admit(&room_id(&id)?, &participant_id(&pid)?, Actor::Admin)
                .await?;
            Resp::Ok(no_content())
        });

    let deny = route2(&ep::DENY)
        .and(admin(app.clone()))
        .and(with_app(app.clone()))
        .and_then(|id: String, pid: String, app: Arc<App>| async move {
            app.control
                .deny(&room_id(&id)?, &participant_id(&pid)?, Actor::Admin)
                .await?;
            Resp::Ok(no_content())
        });

    let events = route1(&ep::ROOM_EVENTS)
        .and(admin(app.clone()))
        .and(with_app(app.clone()))
        .and_then(|id: String, app: Arc<App>| async move {
            let events = app.control.events(&room_id(&id)?)?;
            Resp::Ok(json_status(&EventList { events }, StatusCode::OK))
        });

    let start_recording = route1(&ep::START_RECORDING)
        .and(admin(app.clone()))
        .and(optional_json_body::<OptionalStart>())
        .and(with_app(app.clone()))
        .and_then(
            |id: String, body: OptionalStart, app: Arc<App>| async move {
                let rec = app
                    .control
                    .start_recording(&room_id(&id)?, body.0, Actor::Admin)
                    .await?;
                Resp::Ok(json_status(&rec, StatusCode::CREATED))
            },
        );

    let list_recordings = route0(&ep::LIST_RECORDINGS)
        .and(admin(app.clone()))
        .and(warp::query::<std::collections::HashMap<String, String>>())
        .and(with_app(app.clone()))
        .and_then(
            |q: std::collections::HashMap<String, String>, app: Arc<App>| async move {
                let room = match q.get("room_id") {
                    Some(r) => Some(
                        RoomId::parse(r)
                            .ok_or_else(|| warp::reject::custom(ApiError::not_found("room")))?,
                    ),
                    None => None,
                };
                let recordings = app.control.recordings(room.as_ref())?;
                Resp::Ok(json_status(&RecordingList { recordings }, StatusCode::OK))
            },
        );

    let get_recording = route1(&ep::GET_RECORDING)
        .and(admin(app.clone()))
        .and(with_app(app.clone()))
        .and_then(|id: String, app: Arc<App>| async move {
            let rec = app.control.recording(&recording_id(&id)?)?;
            Resp::Ok(json_status(&rec, StatusCode::OK))
        });

    let stop_recording = route1(&ep::STOP_RECORDING)
        .and(admin(app.clone()))
        .and(with_app(app.clone()))
        .and_then(|id: String, app: Arc<App>| async move {
            let rec = app.control.stop_recording(&recording_id(&id)?).await?;
            Resp::Ok(json_status(&rec, StatusCode::OK))
        });

    let delete_recording = route1(&ep::DELETE_RECORDING)
        .and(admin(app.clone()))
        .and(with_app(app.clone()))
        .and_then(|id: String, app: Arc<App>| async move {
            app.control.delete_recording(&recording_id(&id)?).await?;
            Resp::Ok(no_content())
        });

    let recording_file = route2(&ep::RECORDING_FILE)
        .and(admin(app.clone()))
        .and(warp::header::optional::<String>("range"))
        .and(with_app(app.clone()))
        .and_then(
            |id: String, name: String, range: Option<String>, app: Arc<App>| async move {
                let path = app.control.recording_file(&recording_id(&id)?, &name)?;
                super::files::serve(&path, range.as_deref())
                    .await
                    .map_err(warp::reject::custom)
            },
        );

    let public = route0(&ep::PUBLIC_ROOMS)
        .and(with_app(app.clone()))
        .map(|app: Arc<App>| {
            let rooms = app.control.public_rooms();
            json_status(&PublicRoomList { rooms }, StatusCode::OK)
        });

    // Boxed one by one: a long chain of `or` makes type checking crawl.
    let rest: Vec<Route> = vec![
        metrics.boxed(),
        system.boxed(),
        public.boxed(),
        create.boxed(),
        list.boxed(),
        get.boxed(),
        patch.boxed(),
        delete.boxed(),
        invite.boxed(),
        participants.boxed(),
        remove.boxed(),
        mute.boxed(),
        lobby.boxed(),
        admit.boxed(),
        deny.boxed(),
        events.boxed(),
        host_link.boxed(),
        start_recording.boxed(),
        list_recordings.boxed(),
        get_recording.boxed(),
        stop_recording.boxed(),
        delete_recording.boxed(),
        recording_file.boxed(),
    ];
    rest.into_iter()
        .fold(healthz.boxed(), |all, r| all.or(r).unify().boxed())
}

/// `GET /healthz`.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct Health {
    /// Always `ok`.
    pub status: &'static str,
}

/// `GET /api/v1/rooms`.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct RoomList {
    /// Open rooms, oldest first.
    pub rooms: Vec<RoomView>,
}

/// `GET /api/v1/public/rooms`.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct PublicRoomList {
    /// Open `listed` rooms.
    pub rooms: Vec<PublicRoom>,
}

/// `GET /api/v1/rooms/{id}/participants`.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct ParticipantList {
    /// People inside.
    pub participants: Vec<ParticipantInfo>,
}

/// `GET /api/v1/rooms/{id}/lobby`.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct Lobby {
    /// People waiting to be admitted.
    pub lobby: Vec<ParticipantInfo>,
}

/// `GET /api/v1/rooms/{id}/events`.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct EventList {
    /// The moderation log.
    pub events: Vec<AuditEvent>,
}

/// `GET /api/v1/recordings`.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct RecordingList {
    /// Recordings.
    pub recordings: Vec<RecordingView>,
}

/// `POST /recordings` with an optional body: composite MP4 by default.
#[derive(Debug, serde::Deserialize)]
#[serde(transparent)]
struct OptionalStart(StartRecording);

impl Default for OptionalStart {
    fn default() -> Self {
        OptionalStart(StartRecording {
            kind: crate::model::RecordingKind::Composite,
            format: crate::model::RecordingFormat::Mp4,
            layout: None,
        })
    }
}

async fn create_room(
    caller: Caller,
    addr: Option<SocketAddr>,
    req: CreateRoom,
    app: Arc<App>,
) -> Resp {
    if caller == Caller::Anonymous {
        // The per-address rate limit (`ratelimit::PUBLIC_CREATE`) was applied before.
        if !app.public_create {
            return Err(warp::reject::custom(ApiError::unauthorized(
                "public room creation is off; use the admin token",
            )));
        }
    }
    let creator = match caller {
        Caller::Admin => None,
        Caller::Anonymous => Some(
            addr.map(|a| a.ip())
                .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into()),
        ),
    };
    let room = app.control.create_room(req, creator)?;
    Ok(json_status(&room, StatusCode::CREATED))
}
