//! Webhooks, received by an HTTP server in the test: every event of a room's
//! life arrives exactly once, in order, signed, without tokens; a receiver
//! that fails gets the same event again; events queued while a receiver is
//! down survive a server restart, and a dead receiver does not hold up a
//! live one; closing a room with people inside, and the empty-room timeout.

mod common;

use common::{Server, wait_for};
use hmac::{Hmac, Mac};
use roomcast::loadgen::peer::{PeerConfig, TestPeer};
use roomcast::loadgen::source::VideoCodec;
use serde_json::Value;
use sha2::Sha256;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SECRET: &str = "whsec-test-0123456789";

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Hit {
    /// What the receiver answered.
    status: u16,
    event: String,
    delivery: String,
    timestamp: String,
    signature: String,
    content_type: String,
    body: Vec<u8>,
    at: Instant,
}

impl Hit {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("webhook body is JSON")
    }
}

/// An HTTP server on 127.0.0.1 that records every POST to `/hook`.
struct Receiver {
    port: u16,
    hits: Arc<Mutex<Vec<Hit>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Receiver {
    /// Listens on `port` (0: any). With `fail_first`, the first delivery of
    /// each event id is answered 500, later ones 200.
    fn start(port: u16, fail_first: bool) -> Self {
        use warp::Filter;
        let hits: Arc<Mutex<Vec<Hit>>> = Arc::default();
        let log = hits.clone();
        let route = warp::post()
            .and(warp::path("hook"))
            .and(warp::header::headers_cloned())
            .and(warp::body::bytes())
            .map(move |headers: warp::http::HeaderMap, body: bytes::Bytes| {
                let h = |name: &str| {
                    headers
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned()
                };
                let mut hits = log.lock().unwrap();
                let delivery = h("x-roomcast-delivery");
                let seen = hits.iter().any(|x| x.delivery == delivery);
                let status = if fail_first && !seen { 500 } else { 200 };
                hits.push(Hit {
                    status,
                    event: h("x-roomcast-event"),
                    delivery,
                    timestamp: h("x-roomcast-timestamp"),
                    signature: h("x-roomcast-signature"),
                    content_type: h("content-type"),
                    body: body.to_vec(),
                    at: Instant::now(),
                });
                warp::reply::with_status("", warp::http::StatusCode::from_u16(status).unwrap())
            });
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (addr, server) = warp::serve(route)
            .try_bind_with_graceful_shutdown(([127, 0, 0, 1], port), async {
                let _ = rx.await;
            })
            .expect("bind the receiver");
        tokio::spawn(server);
        Self {
            port: addr.port(),
            hits,
            stop: Some(tx),
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }

    /// The events answered 200, in arrival order.
    fn delivered(&self) -> Vec<Hit> {
        self.hits()
            .into_iter()
            .filter(|h| h.status == 200)
            .collect()
    }

    /// Waits until an `event` was delivered; returns its body.
    async fn wait_event(&self, event: &str, timeout: Duration) -> Value {
        wait_for(&format!("webhook {event}"), timeout, || {
            self.delivered()
                .iter()
                .find(|h| h.event == event)
                .map(Hit::json)
        })
        .await
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// What a receiver does: HMAC-SHA256 of "<timestamp>.<body>" with the
/// secret, hex, compared with `sha256=…`; the timestamp must be recent.
fn assert_signed(h: &Hit) {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(h.timestamp.as_bytes());
    mac.update(b".");
    mac.update(&h.body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        h.signature,
        format!("sha256={hex}"),
        "signature of {}",
        h.event
    );
    let ts: u64 = h.timestamp.parse().expect("numeric X-Roomcast-Timestamp");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(now.abs_diff(ts) < 120, "timestamp {ts} vs now {now}");
    assert!(h.content_type.starts_with("application/json"), "{h:?}");
    let body = h.json();
    assert_eq!(body["event"], h.event.as_str(), "X-Roomcast-Event");
    assert_eq!(body["id"], h.delivery.as_str(), "X-Roomcast-Delivery");
    assert!(h.delivery.starts_with("evt_"), "{}", h.delivery);
    assert!(body["created_at"].as_u64().is_some(), "{body}");
}

fn names(hits: &[Hit]) -> Vec<String> {
    hits.iter().map(|h| h.event.clone()).collect()
}

/// Every delivery id once.
fn assert_no_duplicates(hits: &[Hit]) {
    let mut seen = HashSet::new();
    for h in hits {
        assert!(
            seen.insert(h.delivery.clone()),
            "{} ({}) delivered twice: {:?}",
            h.event,
            h.delivery,
            names(hits)
        );
    }
}

/// A sample of the server's /metrics.
fn metric(s: &Server, line_start: &str) -> Option<u64> {
    let text = common::fetch("GET", &s.url("/metrics"), &[], None).text();
    text.lines()
        .find_map(|l| l.strip_prefix(line_start)?.trim().parse().ok())
}

fn token_of(link: &str) -> String {
    link.split("#t=").nth(1).expect("link token").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rooms_life_arrives_once_in_order_and_signed() {
    let rx = Receiver::start(0, false);
    let s = Server::start_with(&["--webhook-url", &rx.url(), "--webhook-secret", SECRET]);
    let room = s.create_room(r#"{"name": "Hooked", "visibility": "private"}"#);
    let rid = room["id"].as_str().unwrap().to_owned();
    let started = rx.wait_event("room_started", Duration::from_secs(10)).await;
    assert_eq!(started["room"]["id"], rid.as_str());
    assert_eq!(started["room"]["name"], "Hooked");

    // A participant joins over the signaling socket and publishes H.264 + Opus.
    let host_url = room["host_url"].as_str().unwrap();
    let mut cfg = PeerConfig::new(host_url, "Ada");
    cfg.codec = VideoCodec::H264;
    let peer = TestPeer::join(cfg).await.expect("join");
    let pid = peer.id.to_string();
    let session = peer.session().expect("session token");
    let joined = rx
        .wait_event("participant_joined", Duration::from_secs(10))
        .await;
    assert_eq!(joined["participant"]["id"], pid.as_str());
    assert_eq!(joined["participant"]["display_name"], "Ada");
    assert_eq!(joined["participant"]["role"], "host");
    assert_eq!(joined["room"]["participant_count"], 1);
    wait_for("audio and video published", Duration::from_secs(20), || {
        let (_, body) = s.admin("GET", &format!("/api/v1/rooms/{rid}/participants"), None);
        let p = body["participants"].get(0)?.clone();
        (p["audio"]["published"] == true && p["video"]["published"] == true).then_some(())
    })
    .await;

    // A short recording of the tracks as published (no encoding).
    let (st, rec) = s.admin(
        "POST",
        &format!("/api/v1/rooms/{rid}/recordings"),
        Some(r#"{"kind": "tracks", "format": "mkv"}"#),
    );
    assert_eq!(st, 201, "start recording: {rec}");
    let rec_id = rec["id"].as_str().unwrap().to_owned();
    wait_for("recorded bytes", Duration::from_secs(15), || {
        let (_, r) = s.admin("GET", &format!("/api/v1/recordings/{rec_id}"), None);
        r["files"]
            .as_array()?
            .iter()
            .any(|f| f["size"].as_u64().unwrap_or(0) > 10_000)
            .then_some(())
    })
    .await;
    let (st, body) = s.admin("POST", &format!("/api/v1/recordings/{rec_id}/stop"), None);
    assert_eq!(st, 200, "stop: {body}");
    let ready = rx
        .wait_event("recording_ready", Duration::from_secs(15))
        .await;
    assert_eq!(ready["recording"]["id"], rec_id.as_str());
    assert_eq!(ready["recording"]["state"], "ready");
    assert!(
        !ready["recording"]["files"].as_array().unwrap().is_empty(),
        "{ready}"
    );

    // A WHEP broadcast of the participant (passed through, no encoding).
    let (st, bc) = s.admin(
        "POST",
        &format!("/api/v1/rooms/{rid}/broadcasts"),
        Some(&format!(
            r#"{{"hls": false, "whep": true, "source": "{pid}"}}"#
        )),
    );
    assert_eq!(st, 201, "start broadcast: {bc}");
    let bid = bc["id"].as_str().unwrap().to_owned();
    assert!(
        bc["watch_url"].as_str().unwrap().contains("#t="),
        "a private room's watch_url carries the viewer token: {bc}"
    );
    let live = rx
        .wait_event("broadcast_started", Duration::from_secs(20))
        .await;
    assert_eq!(live["broadcast"]["id"], bid.as_str());
    assert_eq!(live["broadcast"]["state"], "live");
    let (st, _) = s.admin("DELETE", &format!("/api/v1/broadcasts/{bid}"), None);
    assert_eq!(st, 204);
    let ended = rx
        .wait_event("broadcast_ended", Duration::from_secs(10))
        .await;
    assert_eq!(ended["broadcast"]["id"], bid.as_str());
    assert_eq!(ended["broadcast"]["state"], "ended");

    // The participant leaves; then the room is closed.
    peer.leave().await;
    let left = rx
        .wait_event("participant_left", Duration::from_secs(10))
        .await;
    assert_eq!(left["participant"]["id"], pid.as_str());
    assert_eq!(left["reason"], "left");
    assert_eq!(left["room"]["participant_count"], 0);
    let (st, _) = s.admin("DELETE", &format!("/api/v1/rooms/{rid}"), None);
    assert_eq!(st, 204);
    let ended = rx.wait_event("room_ended", Duration::from_secs(10)).await;
    assert_eq!(ended["room"]["id"], rid.as_str());
    assert_eq!(ended["reason"], "closed");
    assert!(ended["room"]["closed_at"].is_string(), "{ended}");

    // Nothing is left to send, and nothing came twice.
    wait_for("an empty webhook queue", Duration::from_secs(5), || {
        (metric(&s, "roomcast_webhook_pending ") == Some(0)).then_some(())
    })
    .await;
    let hits = rx.hits();
    assert!(hits.iter().all(|h| h.status == 200), "{:?}", names(&hits));
    assert_eq!(
        names(&hits),
        [
            "room_started",
            "participant_joined",
            "recording_ready",
            "broadcast_started",
            "broadcast_ended",
            "participant_left",
            "room_ended",
        ]
    );
    assert_no_duplicates(&hits);
    assert_eq!(
        metric(
            &s,
            "roomcast_webhook_deliveries_total{result=\"delivered\"} "
        ),
        Some(7)
    );
    let secrets = [
        token_of(room["host_url"].as_str().unwrap()),
        token_of(room["invite_url"].as_str().unwrap()),
        token_of(bc["watch_url"].as_str().unwrap()),
        session,
    ];
    for h in &hits {
        assert_signed(h);
        assert_eq!(h.json()["room"]["id"], rid.as_str());
        let text = String::from_utf8_lossy(&h.body);
        for secret in &secrets {
            assert!(!text.contains(secret.as_str()), "a token in {text}");
        }
        assert!(!text.contains("#t="), "a link in {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_delivery_is_retried_with_the_same_event() {
    let rx = Receiver::start(0, true);
    let s = Server::start_with(&["--webhook-url", &rx.url(), "--webhook-secret", SECRET]);
    let room = s.create_room(r#"{"name": "Flaky receiver"}"#);
    let rid = room["id"].as_str().unwrap().to_owned();
    let (st, _) = s.admin("DELETE", &format!("/api/v1/rooms/{rid}"), None);
    assert_eq!(st, 204);
    rx.wait_event("room_ended", Duration::from_secs(15)).await;
    let hits = rx.hits();
    // Each event: a 500, then the same event again after the back-off (1 s),
    // and the next event only after the first one was delivered.
    assert_eq!(
        hits.iter()
            .map(|h| (h.event.as_str(), h.status))
            .collect::<Vec<_>>(),
        [
            ("room_started", 500),
            ("room_started", 200),
            ("room_ended", 500),
            ("room_ended", 200),
        ]
    );
    for pair in hits.chunks(2) {
        let (first, retry) = (&pair[0], &pair[1]);
        assert_eq!(first.delivery, retry.delivery, "the same event id");
        assert_eq!(first.body, retry.body, "the same body");
        let gap = retry.at.duration_since(first.at);
        assert!(gap >= Duration::from_millis(900), "retried after {gap:?}");
        assert_signed(first);
        assert_signed(retry);
    }
    assert_no_duplicates(&rx.delivered());
    wait_for("the queue to empty", Duration::from_secs(5), || {
        (metric(&s, "roomcast_webhook_pending ") == Some(0)).then_some(())
    })
    .await;
    assert_eq!(
        metric(&s, "roomcast_webhook_deliveries_total{result=\"failed\"} "),
        Some(2)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_for_a_receiver_that_is_down_survive_a_restart() {
    // Nothing listens on `down` yet; `up` answers from the start.
    let down_port = common::free_port();
    let down_url = format!("http://127.0.0.1:{down_port}/hook");
    let up = Receiver::start(0, false);
    let urls = format!("{down_url},{}", up.url());
    let mut s = Server::start_with(&["--webhook-url", &urls, "--webhook-secret", SECRET]);
    let room = s.create_room(r#"{"name": "Queued"}"#);
    let rid = room["id"].as_str().unwrap().to_owned();
    let (st, _) = s.admin("DELETE", &format!("/api/v1/rooms/{rid}"), None);
    assert_eq!(st, 204);

    // The live receiver is not held up by the dead one.
    up.wait_event("room_ended", Duration::from_secs(10)).await;
    assert_eq!(names(&up.hits()), ["room_started", "room_ended"]);
    // The dead one was tried and both events wait for it.
    wait_for("a failed attempt", Duration::from_secs(10), || {
        let failed = metric(&s, "roomcast_webhook_deliveries_total{result=\"failed\"} ")?;
        (failed >= 1 && metric(&s, "roomcast_webhook_pending ") == Some(2)).then_some(())
    })
    .await;

    // Server killed; the receiver comes up; the server starts again.
    s.kill();
    let late = Receiver::start(down_port, false);
    s.start_again();
    late.wait_event("room_ended", Duration::from_secs(15)).await;
    wait_for("an empty webhook queue", Duration::from_secs(5), || {
        (metric(&s, "roomcast_webhook_pending ") == Some(0)).then_some(())
    })
    .await;
    let hits = late.hits();
    assert_eq!(names(&hits), ["room_started", "room_ended"]);
    assert_no_duplicates(&hits);
    for h in &hits {
        assert_signed(h);
        assert_eq!(h.json()["room"]["id"], rid.as_str());
    }
    // Same events as the live receiver got, and nothing new for it.
    let ids = |hits: &[Hit]| hits.iter().map(|h| h.delivery.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&hits), ids(&up.hits()));
    assert_eq!(up.hits().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_a_room_lets_everyone_leave_first_and_empty_rooms_end() {
    let rx = Receiver::start(0, false);
    let s = Server::start_with(&["--webhook-url", &rx.url(), "--webhook-secret", SECRET]);
    let room = s.create_room(r#"{"name": "Closed with people inside"}"#);
    let rid = room["id"].as_str().unwrap().to_owned();
    let mut cfg = PeerConfig::new(room["invite_url"].as_str().unwrap(), "Grace");
    cfg.publish = false;
    let peer = TestPeer::join(cfg).await.expect("join");
    rx.wait_event("participant_joined", Duration::from_secs(10))
        .await;
    let (st, _) = s.admin("DELETE", &format!("/api/v1/rooms/{rid}"), None);
    assert_eq!(st, 204);
    rx.wait_event("room_ended", Duration::from_secs(10)).await;
    let hits = rx.hits();
    assert_eq!(
        names(&hits),
        [
            "room_started",
            "participant_joined",
            "participant_left",
            "room_ended"
        ]
    );
    let left = hits[2].json();
    assert_eq!(left["participant"]["id"], peer.id.as_str());
    assert_eq!(left["participant"]["role"], "guest");
    assert_eq!(left["reason"], "room_closed");
    assert_eq!(hits[3].json()["reason"], "closed");
    drop(peer);

    // A room nobody enters ends by itself after the empty timeout.
    let rx = Receiver::start(0, false);
    let s = Server::start_with(&[
        "--webhook-url",
        &rx.url(),
        "--webhook-secret",
        SECRET,
        "--empty-timeout",
        "1s",
    ]);
    let room = s.create_room(r#"{"name": "Nobody came"}"#);
    let ended = rx.wait_event("room_ended", Duration::from_secs(10)).await;
    assert_eq!(ended["room"]["id"], room["id"]);
    assert_eq!(ended["reason"], "empty");
    assert_eq!(names(&rx.hits()), ["room_started", "room_ended"]);
    for h in rx.hits() {
        assert_signed(&h);
    }
}

/// A private CA and a certificate it signed for 127.0.0.1 (`openssl`, from
/// the test group of scripts/install-deps): (CA certificate, server
/// certificate, server key) paths.
fn private_ca(
    dir: &std::path::Path,
) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let p = |name: &str| dir.join(name);
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("run openssl (scripts/install-deps test)");
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(
        &[
            &["req", "-x509"][..],
            &ec,
            &["-days", "1", "-subj", "/CN=roomcast test CA"],
            &["-keyout", "ca.key", "-out", "ca.pem"],
        ]
        .concat(),
    );
    openssl(
        &[
            &["req"][..],
            &ec,
            &[
                "-subj",
                "/CN=127.0.0.1",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
            ],
        ]
        .concat(),
    );
    std::fs::write(
        p("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        "ext.cnf",
        "-out",
        "server.pem",
    ]);
    (p("ca.pem"), p("server.pem"), p("server.key"))
}

/// tests/https_receiver.py: an HTTPS server in Python that prints each
/// POST as a JSON line. Killed on drop.
struct HttpsReceiver {
    child: std::process::Child,
    port: u16,
    hits: Arc<Mutex<Vec<Value>>>,
}

impl HttpsReceiver {
    fn start(cert: &std::path::Path, key: &std::path::Path) -> Self {
        use std::io::BufRead;
        let mut child = std::process::Command::new("python3")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/https_receiver.py"
            ))
            .arg(cert)
            .arg(key)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start python3 tests/https_receiver.py");
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.next().expect("receiver output").expect("read");
        let port = first
            .strip_prefix("port ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("receiver said {first:?}"));
        let hits: Arc<Mutex<Vec<Value>>> = Arc::default();
        let log = hits.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    log.lock().unwrap().push(v);
                }
            }
        });
        Self { child, port, hits }
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}/hook", self.port)
    }
}

impl Drop for HttpsReceiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_receivers_get_signed_events_over_verified_tls() {
    let tmp = tempfile::tempdir().unwrap();
    let (ca, cert, key) = private_ca(tmp.path());
    let rx = HttpsReceiver::start(&cert, &key);
    let url = rx.url();
    let args = ["--webhook-url", url.as_str(), "--webhook-secret", SECRET];

    // A certificate the server does not trust: deliveries fail (and are
    // retried), nothing reaches the receiver.
    let untrusted = Server::start_with(&args);
    let _ = untrusted.create_room(r#"{"name": "Untrusted"}"#);
    wait_for("a failed delivery", Duration::from_secs(10), || {
        metric(
            &untrusted,
            "roomcast_webhook_deliveries_total{result=\"failed\"}",
        )
        .filter(|n| *n >= 1)
        .map(|_| ())
    })
    .await;
    assert!(
        rx.hits.lock().unwrap().is_empty(),
        "delivered over unverified TLS"
    );
    drop(untrusted);

    // With the receiver's CA as the trusted roots (SSL_CERT_FILE), the
    // event arrives, signed.
    let cert_file = ca.to_string_lossy().into_owned();
    let s = Server::start_env(&args, &[("SSL_CERT_FILE", cert_file.as_str())]);
    let room = s.create_room(r#"{"name": "Over TLS"}"#);
    let hit = wait_for("room_started over https", Duration::from_secs(10), || {
        rx.hits
            .lock()
            .unwrap()
            .iter()
            .find(|h| h["headers"]["x-roomcast-event"] == "room_started")
            .cloned()
    })
    .await;
    assert_eq!(hit["path"], "/hook");
    let header = |name: &str| hit["headers"][name].as_str().unwrap_or_default().to_owned();
    let as_hit = Hit {
        status: 200,
        event: header("x-roomcast-event"),
        delivery: header("x-roomcast-delivery"),
        timestamp: header("x-roomcast-timestamp"),
        signature: header("x-roomcast-signature"),
        content_type: header("content-type"),
        body: hit["body"].as_str().unwrap_or_default().as_bytes().to_vec(),
        at: Instant::now(),
    };
    assert_signed(&as_hit);
    assert_eq!(as_hit.json()["room"]["id"], room["id"]);
}
