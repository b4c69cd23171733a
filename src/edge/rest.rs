//! REST routes of the contract (`/api/v1/...`, `/healthz`).

use super::errors::ApiError;
use super::{App, Caller, admin, caller, json_body, optional_json_body, with_app};
use crate::control::{Actor, CreateRoom, MuteRequest, PatchRoom, RotateInvite};
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

fn participant_id(s: &str) -> Result<ParticipantId, Rejection> {
    ParticipantId::parse(s).ok_or_else(|| warp::reject::custom(ApiError::not_found("participant")))
}

fn json_status<T: serde::Serialize>(body: &T, status: StatusCode) -> warp::reply::Response {
    warp::reply::with_status(warp::reply::json(body), status).into_response()
}

fn no_content() -> warp::reply::Response {
    StatusCode::NO_CONTENT.into_response()
}

/// Every REST route.
pub fn routes(
    app: Arc<App>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    let healthz = warp::path!("healthz")
        .and(warp::get())
        .map(|| json_status(&json!({"status": "ok"}), StatusCode::OK));

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

    let public = warp::path!("api" / "v1" / "public" / "rooms")
        .and(warp::get())
        .and(with_app(app.clone()))
        .map(|app: Arc<App>| {
            json_status(
                &json!({"rooms": app.control.public_rooms()}),
                StatusCode::OK,
            )
        });

    healthz
        .or(system)
        .unify()
        .or(public)
        .unify()
        .or(create)
        .unify()
        .or(list)
        .unify()
        .or(get)
        .unify()
        .or(patch)
        .unify()
        .or(delete)
        .unify()
        .or(invite)
        .unify()
        .or(participants)
        .unify()
        .or(remove)
        .unify()
        .or(mute)
        .unify()
        .or(lobby)
        .unify()
        .or(admit)
        .unify()
        .or(deny)
        .unify()
        .or(events)
        .unify()
        .or(host_link)
        .unify()
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
