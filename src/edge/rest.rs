//! REST routes of the contract (`/api/v1/...`, `/healthz`).

use super::errors::ApiError;
use super::{App, Caller, admin, caller, json_body, optional_json_body, with_app};
use crate::control::{Actor, CreateRoom, MuteRequest, PatchRoom, RotateInvite, StartRecording};
use crate::ids::RecordingId;
use crate::ids::{ParticipantId, RoomId};
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
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
    let healthz = warp::path!("healthz")
        .and(warp::get())
        .map(|| json_status(&json!({"status": "ok"}), StatusCode::OK));

    let metrics = warp::path!("metrics")
        .and(warp::get())
        .and(with_app(app.clone()))
        .map(|app: Arc<App>| {
            warp::reply::with_header(
                app.control.metrics(),
                "content-type",
                "text/plain; version=0.0.4",
            )
            .into_response()
        });

    let system = warp::path!("api" / "v1" / "system")
        .and(warp::get())
        .and(admin(app.clone()))
        .and(with_app(app.clone()))
        .map(|app: Arc<App>| json_status(&app.system, StatusCode::OK));

    let create = warp::path!("api" / "v1" / "rooms")
        .and(warp::post())
        .and(caller(app.clone()))
        .and(warp::addr::remote())
        .and(json_body::<CreateRoom>())
        .and(with_app(app.clone()))
        .and_then(create_room);

    let list = warp::path!("api" / "v1" / "rooms")
        .and(warp::get())
        .and(admin(app.clone()))
        .and(with_app(app.clone()))
        .map(|app: Arc<App>| {
            json_status(&json!({"rooms": app.control.list_rooms()}), StatusCode::OK)
        });

    let get = warp::path!("api" / "v1" / "rooms" / String)
        .and(warp::get())
        .and(admin(app.clone()))
        .and(with_app(app.clone()))
        .and_then(|id: String, app: Arc<App>| async move {
            let room = app.control.get_room(&room_id(&id)?)?;
            Resp::Ok(json_status(&room, StatusCode::OK))
        });

    let patch = warp::path!("api" / "v1" / "rooms" / String)
        .and(warp::patch())
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

    let delete = warp::path!("api" / "v1" / "rooms" / String)
        .and(warp::delete())
        .and(admin(app.clone()))
        .and(with_app(app.clone()))
        .and_then(|id: String, app: Arc<App>| async move {
            app.control.close_room(&room_id(&id)?, Actor::Admin).await?;
            Resp::Ok(no_content())
        });

    let invite = warp::path!("api" / "v1" / "rooms" / String / "invite")
        .and(warp::post())
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

    let host_link = warp::path!("api" / "v1" / "rooms" / String / "host-link")
        .and(warp::post())
        .and(admin(app.clone()))
        .and(with_app(app.clone()))
        .and_then(|id: String, app: Arc<App>| async move {
            let room = app
                .control
                .rotate_host_link(&room_id(&id)?, Actor::Admin)
                .await?;
            Resp::Ok(json_status(&room, StatusCode::OK))
        });

    let participants = warp::path!("api" / "v1" / "rooms" / String / "participants")
        .and(warp::get())
        .and(admin(app.clone()))
        .and(with_app(app.clone()))
        .and_then(|id: String, app: Arc<App>| async move {
            let list = app.control.participants(&room_id(&id)?)?;
            Resp::Ok(json_status(&json!({"participants": list}), StatusCode::OK))
        });

    let remove = warp::path!("api" / "v1" / "rooms" / String / "participants" / String)
        .and(warp::delete())
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

    let mute = warp::path!("api" / "v1" / "rooms" / String / "participants" / String / "mute")
        .and(warp::post())
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

    let lobby = warp::path!("api" / "v1" / "rooms" / String / "lobby")
        .and(warp::get())
        .and(admin(app.clone()))
        .and(with_app(app.clone()))
        .and_then(|id: String, app: Arc<App>| async move {
            let list = app.control.lobby(&room_id(&id)?)?;
            Resp::Ok(json_status(&json!({"lobby": list}), StatusCode::OK))
        });

    let admit = warp::path!("api" / "v1" / "rooms" / String / "lobby" / String / "admit")
        .and(warp::post())
        .and(admin(app.clone()))
        .and(with_app(app.clone()))
        .and_then(|id: String, pid: String, app: Arc<App>| async move {
            app.control
                .admit(&room_id(&id)?, &participant_id(&pid)?, Actor::Admin)
                .await?;
            Resp::Ok(no_content())
        });

    let deny = warp::path!("api" / "v1" / "rooms" / String / "lobby" / String / "deny")
        .and(warp::post())
        .and(admin(app.clone()))
        .and(with_app(app.clone()))
        .and_then(|id: String, pid: String, app: Arc<App>| async move {
            app.control
                .deny(&room_id(&id)?, &participant_id(&pid)?, Actor::Admin)
                .await?;
            Resp::Ok(no_content())
        });

    let events = warp::path!("api" / "v1" / "rooms" / String / "events")
        .and(warp::get())
        .and(admin(app.clone()))
        .and(with_app(app.clone()))
        .and_then(|id: String, app: Arc<App>| async move {
            let list = app.control.events(&room_id(&id)?)?;
            Resp::Ok(json_status(&json!({"events": list}), StatusCode::OK))
        });

    let start_recording = warp::path!("api" / "v1" / "rooms" / String / "recordings")
        .and(warp::post())
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

    let list_recordings = warp::path!("api" / "v1" / "recordings")
        .and(warp::get())
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
                let list = app.control.recordings(room.as_ref())?;
                Resp::Ok(json_status(&json!({"recordings": list}), StatusCode::OK))
            },
        );

    let get_recording = warp::path!("api" / "v1" / "recordings" / String)
        .and(warp::get())
        .and(admin(app.clone()))
        .and(with_app(app.clone()))
        .and_then(|id: String, app: Arc<App>| async move {
            let rec = app.control.recording(&recording_id(&id)?)?;
            Resp::Ok(json_status(&rec, StatusCode::OK))
        });

    let stop_recording = warp::path!("api" / "v1" / "recordings" / String / "stop")
        .and(warp::post())
        .and(admin(app.clone()))
        .and(with_app(app.clone()))
        .and_then(|id: String, app: Arc<App>| async move {
            let rec = app.control.stop_recording(&recording_id(&id)?).await?;
            Resp::Ok(json_status(&rec, StatusCode::OK))
        });

    let delete_recording = warp::path!("api" / "v1" / "recordings" / String)
        .and(warp::delete())
        .and(admin(app.clone()))
        .and(with_app(app.clone()))
        .and_then(|id: String, app: Arc<App>| async move {
            app.control.delete_recording(&recording_id(&id)?).await?;
            Resp::Ok(no_content())
        });

    let recording_file = warp::path!("api" / "v1" / "recordings" / String / "files" / String)
        .and(warp::get())
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

    let public = warp::path!("api" / "v1" / "public" / "rooms")
        .and(warp::get())
        .and(with_app(app.clone()))
        .map(|app: Arc<App>| {
            json_status(
                &json!({"rooms": app.control.public_rooms()}),
                StatusCode::OK,
            )
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
        if !app.public_create {
            return Err(warp::reject::custom(ApiError::unauthorized(
                "public room creation is off; use the admin token",
            )));
        }
        let ip = addr
            .map(|a| a.ip())
            .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into());
        if !app.create_limiter.check(ip, Instant::now()) {
            tracing::info!(%ip, "public room creation rate-limited");
            return Err(warp::reject::custom(ApiError::rate_limited()));
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
