//! REST contract: every endpoint of the Rooms and Participants sections,
//! auth, validation and the JSON error shape, and persistence across a
//! restart. Joins use real test peers where a refusal needs to be seen.

mod common;

use common::{ADMIN_TOKEN, Server, peer_view, saw_room_closed, wait_for, wait_for_explained};
use roomcast::loadgen::peer::{PeerConfig, TestPeer};
use serde_json::Value;
use std::time::Duration;

/// Announces `body` (as admin, over a plain socket) and reads the answer
/// before sending it: the server must refuse an oversized body from its
/// Content-Length alone. (It then closes; a client that writes the whole
/// body first may see a broken pipe or a reset instead of the 413.)
fn post_oversized(port: u16, path: &str, body: &str) -> (u16, Value) {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    c.write_all(head.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let _ = c.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP answer: {text:?}"));
    let json = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, serde_json::from_str(json).unwrap_or(Value::Null))
}

fn assert_error(status: u16, body: &Value, want_status: u16, want_code: &str) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["error"]["code"], want_code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

async fn join_error(link: &str) -> String {
    match TestPeer::join(PeerConfig::new(link, "X")).await {
        Ok(_) => "joined".into(),
        Err(e) => e.to_string(),
    }
}

#[test]
fn health_system_and_unknown_routes() {
    let s = Server::start();
    let (status, body) = s.request("GET", "/healthz", None, None);
    assert_eq!((status, body), (200, serde_json::json!({"status": "ok"})));
    let (status, body) = s.admin("GET", "/api/v1/system", None);
    assert_eq!(status, 200);
    assert!(body["version"].is_string());
    assert!(body["gstreamer_version"].as_str().unwrap().contains("1.22"));
    assert_eq!(body["hw_acceleration"], "none");
    assert!(body["encoders"]["vp8"].is_string(), "{body}");
    assert!(body["decoders"]["h264"].is_string(), "{body}");
    let (status, body) = s.request("GET", "/api/v1/system", None, None);
    assert_error(status, &body, 401, "unauthorized");
    let (status, body) = s.admin("GET", "/api/v1/nope", None);
    assert_error(status, &body, 404, "not_found");
    let (status, body) = s.admin("PUT", "/api/v1/rooms", None);
    assert_error(status, &body, 405, "method_not_allowed");
}

#[test]
fn auth_is_required_and_checked() {
    let s = Server::start();
    for (method, path) in [
        ("GET", "/api/v1/rooms"),
        ("GET", "/api/v1/rooms/r_abc"),
        ("PATCH", "/api/v1/rooms/r_abc"),
        ("DELETE", "/api/v1/rooms/r_abc"),
        ("POST", "/api/v1/rooms/r_abc/invite"),
        ("GET", "/api/v1/rooms/r_abc/participants"),
        ("DELETE", "/api/v1/rooms/r_abc/participants/p_abc"),
    ] {
        let body = (method == "PATCH").then_some("{}");
        let (status, resp) = s.request(method, path, None, body);
        assert_error(status, &resp, 401, "unauthorized");
        let (status, resp) = s.request(method, path, Some("wrong-token-wrong-token"), body);
        assert_error(status, &resp, 401, "unauthorized");
    }
    // A room link token is not an admin token.
    let room = s.create_room(r#"{"name": "Auth"}"#);
    let link_token = room["invite_url"]
        .as_str()
        .unwrap()
        .split("#t=")
        .nth(1)
        .unwrap()
        .to_owned();
    let (status, resp) = s.request("GET", "/api/v1/rooms", Some(&link_token), None);
    assert_error(status, &resp, 401, "unauthorized");
    // A wrong token on the public creation route is refused, not treated as anonymous.
    let (status, resp) = s.request(
        "POST",
        "/api/v1/rooms",
        Some("wrong-token-wrong-token"),
        Some(r#"{"name":"x"}"#),
    );
    assert_error(status, &resp, 401, "unauthorized");
}

#[test]
fn create_validates_and_answers_the_contract_shape() {
    let s = Server::start();
    let room = s.create_room(r#"{"name": "Team sync"}"#);
    let id = room["id"].as_str().unwrap();
    assert!(id.starts_with("r_"));
    assert_eq!(room["name"], "Team sync");
    assert_eq!(room["max_participants"], 50);
    assert_eq!(room["visibility"], "private");
    assert_eq!(room["lobby"], false);
    assert_eq!(room["mode"], "sfu");
    assert_eq!(room["locked"], false);
    assert_eq!(room["invites_enabled"], true);
    assert_eq!(room["participant_count"], 0);
    assert!(room["created_at"].as_str().unwrap().ends_with('Z'));
    for link in ["invite_url", "host_url"] {
        let url = room[link].as_str().unwrap();
        assert!(url.starts_with(&format!("{}/r/{id}#t=", s.base)), "{url}");
    }
    assert_ne!(room["invite_url"], room["host_url"]);

    let full = s.create_room(
        r#"{"name": "All set", "max_participants": 100, "visibility": "listed", "lobby": true, "mode": "mcu"}"#,
    );
    assert_eq!(full["max_participants"], 100);
    assert_eq!(full["visibility"], "listed");
    assert_eq!(full["lobby"], true);
    assert_eq!(full["mode"], "mcu");

    let long = format!(r#"{{"name": "{}"}}"#, "x".repeat(101));
    for (body, status, code) in [
        ("{", 400, "bad_request"),
        ("not json", 400, "bad_request"),
        ("[1, 2]", 422, "invalid_request"),
        ("{}", 422, "invalid_request"),
        (r#"{"name": ""}"#, 422, "invalid_request"),
        (r#"{"name": "   "}"#, 422, "invalid_request"),
        (long.as_str(), 422, "invalid_request"),
        (r#"{"name": 5}"#, 422, "invalid_request"),
        (
            r#"{"name": "a", "max_participants": 0}"#,
            422,
            "invalid_request",
        ),
        (
            r#"{"name": "a", "max_participants": 101}"#,
            422,
            "invalid_request",
        ),
        (
            r#"{"name": "a", "max_participants": -1}"#,
            422,
            "invalid_request",
        ),
        (
            r#"{"name": "a", "visibility": "public"}"#,
            422,
            "invalid_request",
        ),
        (r#"{"name": "a", "mode": "p2p"}"#, 422, "invalid_request"),
        (r#"{"name": "a", "lobby": "yes"}"#, 422, "invalid_request"),
    ] {
        let (st, resp) = s.admin("POST", "/api/v1/rooms", Some(body));
        assert_error(st, &resp, status, code);
    }
    // Wrong content type.
    let resp = ureq::post(&s.url("/api/v1/rooms"))
        .set("Authorization", &format!("Bearer {ADMIN_TOKEN}"))
        .set("Content-Type", "text/plain")
        .send_string(r#"{"name": "a"}"#);
    let Err(ureq::Error::Status(415, r)) = resp else {
        panic!("expected 415")
    };
    let body: Value = r.into_json().unwrap();
    assert_eq!(body["error"]["code"], "unsupported_media_type");
    // Oversized body.
    let huge = format!(r#"{{"name": "a", "pad": "{}"}}"#, "x".repeat(64 * 1024));
    let (st, resp) = post_oversized(s.port, "/api/v1/rooms", &huge);
    assert_error(st, &resp, 413, "payload_too_large");
    // The server is still fine.
    assert_eq!(s.request("GET", "/healthz", None, None).0, 200);
}

#[test]
fn list_get_patch_rotate_delete() {
    let s = Server::start();
    let a = s.create_room(r#"{"name": "A"}"#);
    let b = s.create_room(r#"{"name": "B", "visibility": "listed"}"#);
    let (ida, idb) = (a["id"].as_str().unwrap(), b["id"].as_str().unwrap());

    let (st, list) = s.admin("GET", "/api/v1/rooms", None);
    assert_eq!(st, 200);
    let ids: Vec<&str> = list["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![ida, idb]);

    let (st, got) = s.admin("GET", &format!("/api/v1/rooms/{ida}"), None);
    assert_eq!(st, 200);
    assert_eq!(got["participants"], serde_json::json!([]));
    assert_eq!(got["invite_url"], a["invite_url"]);
    for bad in ["r_doesnotexist", "nonsense", "r_..%2F..", "p_abc"] {
        let (st, resp) = s.admin("GET", &format!("/api/v1/rooms/{bad}"), None);
        assert_error(st, &resp, 404, "not_found");
    }

    // Public list: only listed rooms.
    let (st, public) = s.request("GET", "/api/v1/public/rooms", None, None);
    assert_eq!(st, 200);
    let rooms = public["rooms"].as_array().unwrap();
    assert_eq!(rooms.len(), 1);
    assert_eq!(rooms[0]["id"], idb);
    assert_eq!(rooms[0]["join_url"], b["invite_url"]);
    assert_eq!(rooms[0]["participant_count"], 0);

    let (st, patched) = s.admin(
        "PATCH",
        &format!("/api/v1/rooms/{ida}"),
        Some(r#"{"name": "A2", "locked": true, "max_participants": 10, "visibility": "listed"}"#),
    );
    assert_eq!(st, 200, "{patched}");
    assert_eq!(patched["name"], "A2");
    assert_eq!(patched["locked"], true);
    assert_eq!(patched["max_participants"], 10);
    assert!(patched.get("participants").is_none());
    let (st, resp) = s.admin(
        "PATCH",
        &format!("/api/v1/rooms/{ida}"),
        Some(r#"{"max_participants": 500}"#),
    );
    assert_error(st, &resp, 422, "invalid_request");
    let (st, resp) = s.admin(
        "PATCH",
        &format!("/api/v1/rooms/{ida}"),
        Some(r#"{"locked": "yes"}"#),
    );
    assert_error(st, &resp, 422, "invalid_request");
    let (st, resp) = s.admin(
        "PATCH",
        "/api/v1/rooms/r_missing",
        Some(r#"{"locked": true}"#),
    );
    assert_error(st, &resp, 404, "not_found");

    let (st, rotated) = s.admin("POST", &format!("/api/v1/rooms/{ida}/invite"), None);
    assert_eq!(st, 200);
    assert_ne!(rotated["invite_url"], a["invite_url"]);
    assert_eq!(rotated["host_url"], a["host_url"]);

    let (st, resp) = s.admin("GET", &format!("/api/v1/rooms/{idb}/participants"), None);
    assert_eq!((st, resp), (200, serde_json::json!({"participants": []})));
    let (st, resp) = s.admin(
        "DELETE",
        &format!("/api/v1/rooms/{idb}/participants/p_nobody"),
        None,
    );
    assert_error(st, &resp, 404, "not_found");

    let (st, _) = s.admin("DELETE", &format!("/api/v1/rooms/{idb}"), None);
    assert_eq!(st, 204);
    let (st, resp) = s.admin("GET", &format!("/api/v1/rooms/{idb}"), None);
    assert_error(st, &resp, 404, "not_found");
    let (st, resp) = s.admin("DELETE", &format!("/api/v1/rooms/{idb}"), None);
    assert_error(st, &resp, 404, "not_found");
    let (_, list) = s.admin("GET", "/api/v1/rooms", None);
    assert_eq!(list["rooms"].as_array().unwrap().len(), 1);
    let (_, public) = s.request("GET", "/api/v1/public/rooms", None, None);
    assert_eq!(public["rooms"].as_array().unwrap().len(), 1);
}

#[test]
fn public_creation_is_rate_limited_and_can_be_turned_off() {
    let s = Server::start();
    let (st, room) = s.request("POST", "/api/v1/rooms", None, Some(r#"{"name": "Mine"}"#));
    assert_eq!(st, 201, "{room}");
    assert!(room["host_url"].as_str().unwrap().contains("#t="));
    let mut statuses = Vec::new();
    for _ in 0..15 {
        statuses.push(
            s.request("POST", "/api/v1/rooms", None, Some(r#"{"name": "Spam"}"#))
                .0,
        );
    }
    assert!(statuses.contains(&429), "{statuses:?}");
    let (st, resp) = s.request("POST", "/api/v1/rooms", None, Some(r#"{"name": "Spam"}"#));
    assert_error(st, &resp, 429, "rate_limited");
    // The admin is never rate-limited.
    s.create_room(r#"{"name": "Admin's"}"#);

    let closed = Server::start_with(&["--public-create", "false"]);
    let (st, resp) = closed.request("POST", "/api/v1/rooms", None, Some(r#"{"name": "x"}"#));
    assert_error(st, &resp, 401, "unauthorized");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_are_refused_as_the_contract_says() {
    let s = Server::start();
    let room = s.create_room(r#"{"name": "Small", "max_participants": 1}"#);
    let id = room["id"].as_str().unwrap().to_owned();
    let invite = room["invite_url"].as_str().unwrap().to_owned();
    let host = room["host_url"].as_str().unwrap().to_owned();

    let first = TestPeer::join(PeerConfig::new(&invite, "First"))
        .await
        .expect("first joins");
    let err = join_error(&invite).await;
    assert!(err.contains("room_full"), "{err}");
    let (st, parts) = s.admin("GET", &format!("/api/v1/rooms/{id}/participants"), None);
    assert_eq!(st, 200);
    let p = &parts["participants"][0];
    assert_eq!(p["id"], first.id.to_string());
    assert_eq!(p["display_name"], "First");
    assert_eq!(p["role"], "guest");
    assert!(p["joined_at"].is_string());
    assert!(p["audio"]["published"].is_boolean() && p["video"]["muted"].is_boolean());
    let (_, got) = s.admin("GET", &format!("/api/v1/rooms/{id}"), None);
    assert_eq!(got["participant_count"], 1);
    assert_eq!(got["participants"].as_array().unwrap().len(), 1);

    // Removal: gone within 1 s, and its session cannot come back.
    let (st, _) = s.admin(
        "DELETE",
        &format!("/api/v1/rooms/{id}/participants/{}", first.id),
        None,
    );
    assert_eq!(st, 204);
    wait_for("removal", Duration::from_secs(1), || {
        (s.participant_ids(&id).is_empty() && first.stats().errors.contains(&"removed".to_string()))
            .then_some(())
    })
    .await;
    let mut again = PeerConfig::new(&invite, "First");
    again.session = first.session();
    let back = TestPeer::join(again).await.expect("the link still works");
    assert_ne!(back.id, first.id, "a revoked session does not resume");
    drop(back);
    wait_for("empty room", Duration::from_secs(5), || {
        s.participant_ids(&id).is_empty().then_some(())
    })
    .await;

    // Locked: newcomers get room_locked.
    s.admin(
        "PATCH",
        &format!("/api/v1/rooms/{id}"),
        Some(r#"{"locked": true, "max_participants": 5}"#),
    );
    let err = join_error(&invite).await;
    assert!(err.contains("room_locked"), "{err}");
    s.admin(
        "PATCH",
        &format!("/api/v1/rooms/{id}"),
        Some(r#"{"locked": false}"#),
    );

    // Disabled invites: guests are refused, the host link works.
    s.admin(
        "PATCH",
        &format!("/api/v1/rooms/{id}"),
        Some(r#"{"invites_enabled": false}"#),
    );
    let err = join_error(&invite).await;
    assert!(err.contains("forbidden"), "{err}");
    let host_peer = TestPeer::join(PeerConfig::new(&host, "Host"))
        .await
        .expect("host joins");
    let (_, parts) = s.admin("GET", &format!("/api/v1/rooms/{id}/participants"), None);
    assert_eq!(parts["participants"][0]["role"], "host");
    s.admin(
        "PATCH",
        &format!("/api/v1/rooms/{id}"),
        Some(r#"{"invites_enabled": true}"#),
    );

    // Rotation: the old invite is refused, the new one works.
    let (_, rotated) = s.admin("POST", &format!("/api/v1/rooms/{id}/invite"), None);
    let err = join_error(&invite).await;
    assert!(err.contains("forbidden"), "{err}");
    let new_invite = rotated["invite_url"].as_str().unwrap();
    let guest = TestPeer::join(PeerConfig::new(new_invite, "Guest"))
        .await
        .expect("new invite works");

    // Tampered token.
    let tampered = format!("{}x", new_invite);
    let err = join_error(&tampered).await;
    assert!(err.contains("unauthorized"), "{err}");

    // Close: everyone is disconnected within 2 s (the contract), as the
    // server counts its open signaling sockets and as each peer sees it,
    // and links stop working.
    wait_for("both sockets counted", Duration::from_secs(2), || {
        s.signaling_sockets_are(2).then_some(())
    })
    .await;
    let (st, _) = s.admin("DELETE", &format!("/api/v1/rooms/{id}"), None);
    assert_eq!(st, 204);
    wait_for(
        "the server to close both sockets",
        Duration::from_secs(2),
        || s.signaling_sockets_are(0).then_some(()),
    )
    .await;
    wait_for_explained(
        "room_closed at both",
        Duration::from_secs(2),
        || (saw_room_closed(&host_peer) && saw_room_closed(&guest)).then_some(()),
        || format!("{}; {}", peer_view(&host_peer), peer_view(&guest)),
    )
    .await;
    let err = join_error(new_invite).await;
    assert!(
        err.contains("room_closed") || err.contains("not_found"),
        "{err}"
    );
    let err = join_error(&host).await;
    assert!(
        err.contains("room_closed") || err.contains("not_found"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_and_links_survive_a_restart() {
    let mut s = Server::start();
    let room =
        s.create_room(r#"{"name": "Durable", "visibility": "listed", "max_participants": 7}"#);
    let id = room["id"].as_str().unwrap().to_owned();
    let closed = s.create_room(r#"{"name": "Gone"}"#);
    let closed_id = closed["id"].as_str().unwrap().to_owned();
    s.admin(
        "PATCH",
        &format!("/api/v1/rooms/{id}"),
        Some(r#"{"locked": true}"#),
    );
    s.admin("DELETE", &format!("/api/v1/rooms/{closed_id}"), None);
    s.restart();
    let (st, got) = s.admin("GET", &format!("/api/v1/rooms/{id}"), None);
    assert_eq!(st, 200, "{got}");
    assert_eq!(got["name"], "Durable");
    assert_eq!(got["max_participants"], 7);
    assert_eq!(got["locked"], true);
    assert_eq!(
        got["invite_url"], room["invite_url"],
        "links are stable across restarts"
    );
    let (st, _) = s.admin("GET", &format!("/api/v1/rooms/{closed_id}"), None);
    assert_eq!(st, 404);
    s.admin(
        "PATCH",
        &format!("/api/v1/rooms/{id}"),
        Some(r#"{"locked": false}"#),
    );
    let peer = TestPeer::join(PeerConfig::new(
        room["invite_url"].as_str().unwrap(),
        "After",
    ))
    .await;
    assert!(peer.is_ok(), "the old link joins after a restart");
}

#[tokio::test]
async fn empty_rooms_close_after_the_timeout() {
    let s = Server::start_with(&["--empty-timeout", "2s"]);
    let room = s.create_room(r#"{"name": "Brief"}"#);
    let id = room["id"].as_str().unwrap().to_owned();
    wait_for("the empty room to close", Duration::from_secs(6), || {
        (s.admin("GET", &format!("/api/v1/rooms/{id}"), None).0 == 404).then_some(())
    })
    .await;
}
