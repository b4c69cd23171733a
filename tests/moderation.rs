//! Host controls and access: the lobby, server-side mute, removal with and
//! without a ban, host actions over the signaling (and their refusal to
//! guests), expiring invite links, the per-address room cap and the audit log.

mod common;

use common::{Server, peer_view, saw_room_closed, wait_for, wait_for_explained};
use roomcast::loadgen::peer::{PeerConfig, TestPeer};
use roomcast::signaling::ClientMessage;
use serde_json::Value;
use std::time::Duration;

fn link(room: &Value, which: &str) -> String {
    room[which].as_str().unwrap().to_owned()
}

async fn join_error(cfg: PeerConfig) -> String {
    match TestPeer::join(cfg).await {
        Ok(_) => "joined".into(),
        Err(e) => e.to_string(),
    }
}

fn samples_from(p: &TestPeer, from: &TestPeer) -> u64 {
    p.stats()
        .remote
        .get(&from.id)
        .map(|r| r.audio_samples)
        .unwrap_or(0)
}

fn frames_from(p: &TestPeer, from: &TestPeer) -> u64 {
    p.stats()
        .remote
        .get(&from.id)
        .map(|r| r.video_frames)
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lobby_admit_and_deny() {
    let s = Server::start();
    let room = s.create_room(r#"{"name": "Waiting room", "lobby": true}"#);
    let id = room["id"].as_str().unwrap().to_owned();
    // Hosts skip the lobby.
    let host = TestPeer::join(PeerConfig::new(&link(&room, "host_url"), "Host"))
        .await
        .expect("host joins");
    let invite = link(&room, "invite_url");

    // A guest waits; the host sees it, REST lists it, and it is not inside.
    let guest = tokio::spawn(TestPeer::join(PeerConfig::new(&invite, "Guest")));
    let waiting = wait_for("the guest in the lobby", Duration::from_secs(5), || {
        let (st, body) = s.admin("GET", &format!("/api/v1/rooms/{id}/lobby"), None);
        assert_eq!(st, 200);
        let list = body["lobby"].as_array().cloned().unwrap_or_default();
        (list.len() == 1).then(|| list[0]["id"].as_str().unwrap().to_owned())
    })
    .await;
    assert_eq!(s.participant_ids(&id).len(), 1, "only the host is inside");
    wait_for("the host to see the lobby", Duration::from_secs(3), || {
        (host.stats().lobby.len() == 1).then_some(())
    })
    .await;
    let (st, _) = s.admin(
        "POST",
        &format!("/api/v1/rooms/{id}/lobby/{waiting}/admit"),
        None,
    );
    assert_eq!(st, 204);
    let guest = guest.await.unwrap().expect("admitted guest joins");
    assert_eq!(
        guest.id.to_string(),
        waiting,
        "the admitted guest keeps its id"
    );
    // Admitted, it sees the host's media.
    wait_for("media after admission", Duration::from_secs(15), || {
        (frames_from(&guest, &host) > 10).then_some(())
    })
    .await;

    // The host turns the next one away, over the signaling.
    let second = tokio::spawn(TestPeer::join(PeerConfig::new(&invite, "Second")));
    let waiting = wait_for(
        "the second guest in the lobby",
        Duration::from_secs(5),
        || host.stats().lobby.first().cloned(),
    )
    .await;
    host.send(ClientMessage::Deny {
        participant_id: waiting.clone(),
    });
    let err = second.await.unwrap().err().expect("denied").to_string();
    assert!(err.contains("denied"), "{err}");
    let (_, body) = s.admin("GET", &format!("/api/v1/rooms/{id}/lobby"), None);
    assert_eq!(body["lobby"], serde_json::json!([]));
    let (st, body) = s.admin(
        "POST",
        &format!("/api/v1/rooms/{id}/lobby/{waiting}/admit"),
        None,
    );
    assert_eq!(
        (st, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );

    // The audit log has both decisions.
    let (_, ev) = s.admin("GET", &format!("/api/v1/rooms/{id}/events"), None);
    let actions: Vec<(&str, &str)> = ev["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["action"].as_str().unwrap(), e["actor"].as_str().unwrap()))
        .collect();
    assert!(actions.contains(&("room_created", "admin")), "{actions:?}");
    assert!(
        actions.contains(&("lobby_admitted", "admin")),
        "{actions:?}"
    );
    let host_actor = format!("host:{}", host.id);
    assert!(
        actions.contains(&("lobby_denied", host_actor.as_str())),
        "{actions:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mute_remove_ban_and_host_only_actions() {
    let s = Server::start_with(&["--audio-last-n", "0"]);
    let room = s.create_room(r#"{"name": "Moderated"}"#);
    let id = room["id"].as_str().unwrap().to_owned();
    let invite = link(&room, "invite_url");
    let host = TestPeer::join(PeerConfig::new(&link(&room, "host_url"), "Host"))
        .await
        .unwrap();
    let mut cfg = PeerConfig::new(&invite, "Loud");
    cfg.color = 0x00ff00;
    let device = cfg.device.clone();
    let guest = TestPeer::join(cfg.clone()).await.unwrap();
    let other = TestPeer::join(PeerConfig::new(&invite, "Other"))
        .await
        .unwrap();
    wait_for("media everywhere", Duration::from_secs(20), || {
        (samples_from(&other, &guest) > 48_000 && frames_from(&other, &guest) > 30).then_some(())
    })
    .await;

    // A guest cannot use host actions.
    guest.send(ClientMessage::SetLocked { locked: true });
    wait_for("forbidden", Duration::from_secs(3), || {
        guest
            .stats()
            .errors
            .contains(&"forbidden".to_string())
            .then_some(())
    })
    .await;
    let (_, got) = s.admin("GET", &format!("/api/v1/rooms/{id}"), None);
    assert_eq!(got["locked"], false);

    // Server-side mute over REST: audio stops reaching others, video goes on.
    let (st, body) = s.admin(
        "POST",
        &format!("/api/v1/rooms/{id}/participants/{}/mute", guest.id),
        Some("{}"),
    );
    assert_eq!(
        (st, body["error"]["code"].as_str()),
        (422, Some("invalid_request"))
    );
    let (st, _) = s.admin(
        "POST",
        &format!("/api/v1/rooms/{id}/participants/{}/mute", guest.id),
        Some(r#"{"audio": true}"#),
    );
    assert_eq!(st, 204);
    wait_for("the guest to be told", Duration::from_secs(2), || {
        (guest.stats().muted_by_host == Some((true, false))).then_some(())
    })
    .await;
    let parts = s
        .admin("GET", &format!("/api/v1/rooms/{id}/participants"), None)
        .1;
    let me = parts["participants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == guest.id.to_string())
        .cloned()
        .unwrap();
    assert_eq!(me["audio"]["muted"], true);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (a0, v0) = (samples_from(&other, &guest), frames_from(&other, &guest));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        samples_from(&other, &guest) <= a0 + 4_800,
        "muted audio is not forwarded"
    );
    assert!(frames_from(&other, &guest) > v0 + 30, "video still is");
    // The host unmutes over the signaling.
    host.send(ClientMessage::MuteParticipant {
        participant_id: guest.id.clone(),
        audio: Some(false),
        video: None,
    });
    let a1 = samples_from(&other, &guest);
    wait_for("audio again", Duration::from_secs(5), || {
        (samples_from(&other, &guest) > a1 + 48_000).then_some(())
    })
    .await;

    // The host locks the room over the signaling: newcomers get room_locked.
    host.send(ClientMessage::SetLocked { locked: true });
    wait_for("locked", Duration::from_secs(2), || {
        (s.admin("GET", &format!("/api/v1/rooms/{id}"), None).1["locked"] == true).then_some(())
    })
    .await;
    let err = join_error(PeerConfig::new(&invite, "Late")).await;
    assert!(err.contains("room_locked"), "{err}");
    host.send(ClientMessage::SetLocked { locked: false });

    // Removal without a ban: gone within 1 s; the same browser may come back.
    host.send(ClientMessage::RemoveParticipant {
        participant_id: guest.id.clone(),
        ban: false,
    });
    wait_for("removal", Duration::from_secs(1), || {
        (guest.stats().errors.contains(&"removed".to_string())
            && !s.participant_ids(&id).contains(&guest.id.to_string()))
        .then_some(())
    })
    .await;
    let back = TestPeer::join(cfg.clone())
        .await
        .expect("the same browser comes back without a ban");
    assert_ne!(back.id, guest.id);

    // Removal with a ban (REST): that browser cannot come back through any link.
    let (st, _) = s.admin(
        "DELETE",
        &format!("/api/v1/rooms/{id}/participants/{}?ban=true", back.id),
        None,
    );
    assert_eq!(st, 204);
    wait_for("banned removal", Duration::from_secs(1), || {
        (!s.participant_ids(&id).contains(&back.id.to_string())).then_some(())
    })
    .await;
    let err = join_error(cfg.clone()).await;
    assert!(err.contains("banned"), "{err}");
    let mut by_host_link = cfg.clone();
    by_host_link.link = link(&room, "host_url");
    let err = join_error(by_host_link).await;
    assert!(err.contains("banned"), "{err}");
    // Another browser is not affected.
    let mut fresh = cfg.clone();
    fresh.device = Some("another-browser-0001".into());
    assert_ne!(fresh.device, device);
    assert!(TestPeer::join(fresh).await.is_ok());

    let (_, ev) = s.admin("GET", &format!("/api/v1/rooms/{id}/events"), None);
    let kinds: Vec<&str> = ev["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for k in ["participant_muted", "room_updated", "participant_removed"] {
        assert!(kinds.contains(&k), "{k} in {kinds:?}");
    }
    let removals: Vec<&Value> = ev["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "participant_removed")
        .collect();
    assert_eq!(removals.len(), 2);
    assert_eq!(removals[1]["detail"]["ban"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn host_rotates_and_closes_over_the_signaling() {
    let s = Server::start();
    let room = s.create_room(r#"{"name": "Rotating"}"#);
    let id = room["id"].as_str().unwrap().to_owned();
    let old_invite = link(&room, "invite_url");
    let host = TestPeer::join(PeerConfig::new(&link(&room, "host_url"), "Host"))
        .await
        .unwrap();
    assert_eq!(
        host.stats().invite_url.as_deref(),
        Some(old_invite.as_str()),
        "hosts get the invite link"
    );
    let guest = TestPeer::join(PeerConfig::new(&old_invite, "Guest"))
        .await
        .unwrap();
    assert_eq!(guest.stats().invite_url, None, "guests do not");

    host.send(ClientMessage::RotateInvite);
    let new_invite = wait_for("the new link", Duration::from_secs(3), || {
        host.stats().invite_url.filter(|u| *u != old_invite)
    })
    .await;
    let err = join_error(PeerConfig::new(&old_invite, "Old")).await;
    assert!(err.contains("forbidden"), "{err}");
    assert!(
        TestPeer::join(PeerConfig::new(&new_invite, "New"))
            .await
            .is_ok()
    );
    let (_, got) = s.admin("GET", &format!("/api/v1/rooms/{id}"), None);
    assert_eq!(got["invite_url"], new_invite.as_str());

    // The host link can be replaced too (hosts inside stay).
    let old_host = link(&room, "host_url");
    let (st, replaced) = s.admin("POST", &format!("/api/v1/rooms/{id}/host-link"), None);
    assert_eq!(st, 200);
    assert_ne!(replaced["host_url"], old_host.as_str());
    assert_eq!(
        replaced["invite_url"],
        new_invite.as_str(),
        "the invite link is untouched"
    );
    let err = join_error(PeerConfig::new(&old_host, "Old host")).await;
    assert!(err.contains("forbidden"), "{err}");
    assert!(
        TestPeer::join(PeerConfig::new(&link(&replaced, "host_url"), "New host"))
            .await
            .is_ok()
    );

    // Everyone out within 2 s (the contract), as the server counts its
    // signaling sockets and as the guest sees it.
    host.send(ClientMessage::CloseRoom);
    wait_for(
        "the server to close every socket",
        Duration::from_secs(2),
        || s.signaling_sockets_are(0).then_some(()),
    )
    .await;
    wait_for_explained(
        "everyone out",
        Duration::from_secs(2),
        || saw_room_closed(&guest).then_some(()),
        || peer_view(&guest),
    )
    .await;
    assert_eq!(s.admin("GET", &format!("/api/v1/rooms/{id}"), None).0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invite_links_can_expire() {
    let s = Server::start();
    let room = s.create_room(r#"{"name": "Short"}"#);
    let id = room["id"].as_str().unwrap().to_owned();
    for bad in [
        r#"{"expires_in": 0}"#,
        r#"{"expires_in": -5}"#,
        r#"{"expires_in": "soon"}"#,
    ] {
        let (st, _) = s.admin("POST", &format!("/api/v1/rooms/{id}/invite"), Some(bad));
        assert_eq!(st, 422, "{bad}");
    }
    let (st, rotated) = s.admin(
        "POST",
        &format!("/api/v1/rooms/{id}/invite"),
        Some(r#"{"expires_in": 2}"#),
    );
    assert_eq!(st, 200);
    let invite = link(&rotated, "invite_url");
    assert!(
        TestPeer::join(PeerConfig::new(&invite, "InTime"))
            .await
            .is_ok()
    );
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let err = join_error(PeerConfig::new(&invite, "Late")).await;
    assert!(
        err.contains("unauthorized") && err.contains("expired"),
        "{err}"
    );
    // The host link does not expire.
    assert!(
        TestPeer::join(PeerConfig::new(&link(&rotated, "host_url"), "Host"))
            .await
            .is_ok()
    );
}

#[test]
fn anonymous_creators_have_a_room_cap() {
    let s = Server::start();
    for i in 0..10 {
        let (st, body) = s.request(
            "POST",
            "/api/v1/rooms",
            None,
            Some(&format!(r#"{{"name": "Mine {i}"}}"#)),
        );
        assert_eq!(st, 201, "{body}");
    }
    let (st, body) = s.request(
        "POST",
        "/api/v1/rooms",
        None,
        Some(r#"{"name": "One too many"}"#),
    );
    assert_eq!(st, 429);
    assert_eq!(body["error"]["code"], "rate_limited");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("open rooms"),
        "{body}"
    );
    // Closing one makes room for another.
    let (_, list) = s.admin("GET", "/api/v1/rooms", None);
    let first = list["rooms"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        s.admin("DELETE", &format!("/api/v1/rooms/{first}"), None).0,
        204
    );
    assert_eq!(
        s.request("POST", "/api/v1/rooms", None, Some(r#"{"name": "Again"}"#))
            .0,
        201
    );
    // Admins are not capped.
    s.create_room(r#"{"name": "Admin's"}"#);
}
