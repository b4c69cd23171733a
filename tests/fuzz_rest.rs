//! Property tests of every JSON body the REST API parses (`CreateRoom`,
//! `PatchRoom`, `RotateInvite`, `MuteRequest`, `StartRecording`,
//! `StartBroadcast`) and of the `Range` header of downloads:
//! - in-process, 256 cases per property: arbitrary bytes, arbitrary JSON
//!   and objects made of the body's own fields with edge values give `Ok`
//!   or a 400/415/422 with a snake_case code, never a panic;
//! - against a live server, 200 generated bodies per JSON endpoint (and
//!   per SDP endpoint): every answer is 2xx or 4xx with the
//!   `{"error": {"code", "message"}}` body, never 5xx; afterwards the server
//!   is healthy and a room nobody fuzzed, and a participant in it, are untouched.
//!
//! `PROPTEST_CASES` overrides both counts (see docs/testing.md).

mod common;

use common::{ADMIN_TOKEN, Server, fetch};
use futures::{SinkExt, StreamExt};
#[path = "common/proptest_config.rs"]
mod proptest_config;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use roomcast::control::broadcast::StartBroadcast;
use roomcast::control::{CreateRoom, MuteRequest, PatchRoom, RotateInvite, StartRecording};
use roomcast::edge::errors::ApiError;
use roomcast::edge::{files, parse_json};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Cases of the live test per endpoint, unless `PROPTEST_CASES` says otherwise.
const LIVE_CASES: u32 = 200;

/// A body type: its fields, values each may validly take, and values
/// worth trying that are invalid (edges, wrong types).
struct Body {
    name: &'static str,
    /// Fields without which the body is invalid.
    required: &'static [&'static str],
    /// Unknown fields are refused (`#[serde(deny_unknown_fields)]`).
    closed: bool,
    fields: Vec<Field>,
}

struct Field {
    name: &'static str,
    valid: Vec<Value>,
    invalid: Vec<Value>,
}

fn field(name: &'static str, valid: Vec<Value>, invalid: Vec<Value>) -> Field {
    Field {
        name,
        valid,
        invalid,
    }
}

fn bodies() -> Vec<Body> {
    let long = |n: usize| json!("x".repeat(n));
    let bools = || vec![json!(true), json!(false)];
    let not_bools = || vec![json!("true"), json!(0), json!([])];
    let counts = || vec![json!(1), json!(50), json!(100)];
    let not_counts = || {
        vec![
            json!(0),
            json!(101),
            json!(-1),
            json!(u64::from(u32::MAX) + 1),
            json!(1.5),
            json!("5"),
        ]
    };
    vec![
        Body {
            name: "CreateRoom",
            required: &["name"],
            closed: false,
            fields: vec![
                field(
                    "name",
                    vec![
                        json!("Team sync"),
                        long(100),
                        json!("é".repeat(100)),
                        json!("💥"),
                        json!("  padded  "),
                    ],
                    vec![
                        json!(""),
                        json!("   "),
                        long(101),
                        json!("a\u{0}b"),
                        json!("line\nbreak"),
                        json!(5),
                        Value::Null,
                    ],
                ),
                field("max_participants", counts(), not_counts()),
                field(
                    "visibility",
                    vec![json!("private"), json!("listed")],
                    vec![json!("public"), json!(1)],
                ),
                field("lobby", bools(), not_bools()),
                field(
                    "mode",
                    vec![json!("sfu"), json!("mcu")],
                    vec![json!("SFU"), json!([])],
                ),
            ],
        },
        Body {
            name: "PatchRoom",
            required: &[],
            closed: false,
            fields: vec![
                field(
                    "name",
                    vec![json!("Renamed"), long(100)],
                    vec![json!(""), long(101), json!(7)],
                ),
                field("max_participants", counts(), not_counts()),
                field(
                    "visibility",
                    vec![json!("listed"), json!("private")],
                    vec![json!("x")],
                ),
                field("lobby", bools(), not_bools()),
                field("locked", vec![json!(false)], not_bools()),
                field("invites_enabled", vec![json!(true)], not_bools()),
            ],
        },
        Body {
            name: "RotateInvite",
            required: &[],
            closed: false,
            fields: vec![field(
                "expires_in",
                vec![json!(1), json!(3600), json!(365 * 24 * 3600)],
                vec![
                    json!(365 * 24 * 3600 + 1),
                    json!(0),
                    json!(-5),
                    json!(u64::MAX),
                    json!(1e20),
                    json!("60"),
                ],
            )],
        },
        Body {
            name: "MuteRequest",
            required: &["audio"],
            closed: false,
            fields: vec![
                field("audio", bools(), not_bools()),
                field("video", bools(), not_bools()),
            ],
        },
        Body {
            name: "StartRecording",
            required: &[],
            closed: false,
            fields: vec![
                field(
                    "kind",
                    vec![json!("composite"), json!("tracks")],
                    vec![json!("both")],
                ),
                field(
                    "format",
                    vec![json!("mp4"), json!("mkv")],
                    vec![json!("avi"), json!(1)],
                ),
                field(
                    "layout",
                    vec![json!("grid"), json!("speaker")],
                    vec![json!("x"), json!(2)],
                ),
            ],
        },
        Body {
            name: "StartBroadcast",
            required: &["hls"],
            closed: true,
            fields: vec![
                field("hls", vec![json!(true)], not_bools()),
                field("whep", bools(), not_bools()),
                field(
                    "rtmp",
                    vec![json!([]), json!(["rtmp://127.0.0.1/live/key"])],
                    vec![
                        json!(["http://x/y"]),
                        json!(["rtmp://"]),
                        json!(vec!["rtmp://h/a/k"; 20]),
                        json!("rtmp://h/a/k"),
                        json!([1]),
                    ],
                ),
                field(
                    "renditions",
                    vec![
                        json!(["720p", "360p"]),
                        json!(["1080p", "1080p"]),
                        json!([]),
                        json!(["240p", "480p", "720p", "1080p", "360p"]),
                    ],
                    vec![json!(["4k"]), json!("720p"), json!([720])],
                ),
                field(
                    "source",
                    vec![json!("composite"), json!("ingest"), json!("p_abcdefghijkl")],
                    vec![json!("p_"), json!("../../etc"), json!(3)],
                ),
            ],
        },
    ]
}

fn nasty_string() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("\u{0}".to_owned()),
        Just("💥".repeat(30)),
        "\\PC{0,30}",
        any::<String>(),
    ]
}

/// Any JSON value, nested a few levels.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        nasty_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{0,16}", inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A valid body: its required fields and some others, each with a valid
/// value (and maybe a field it does not know, which is ignored).
fn valid(body: &Body) -> impl Strategy<Value = Value> + use<> {
    let fields: Vec<BoxedStrategy<Option<Entry>>> = body
        .fields
        .iter()
        .map(|f| {
            let name = f.name.to_owned();
            let value = prop::sample::select(f.valid.clone()).prop_map(move |v| (name.clone(), v));
            if body.required.contains(&f.name) {
                value.prop_map(Some).boxed()
            } else {
                proptest::option::weighted(0.6, value).boxed()
            }
        })
        .collect();
    let extra = proptest::option::weighted(0.2, ("x_[a-z]{1,8}", json_value()));
    let closed = body.closed;
    (fields, extra).prop_map(move |(fields, extra)| object((fields, extra.filter(|_| !closed))))
}

/// An object of `body`'s fields (some), each with a valid, invalid or any value.
fn shaped(body: &Body) -> impl Strategy<Value = Value> + use<> {
    let fields: Vec<BoxedStrategy<Option<Entry>>> = body
        .fields
        .iter()
        .map(|f| {
            let name = f.name.to_owned();
            let value = prop_oneof![
                2 => prop::sample::select(f.valid.clone()),
                2 => prop::sample::select(f.invalid.clone()),
                1 => json_value(),
            ];
            proptest::option::weighted(0.7, value.prop_map(move |v| (name.clone(), v))).boxed()
        })
        .collect();
    let extra = proptest::option::of(("[a-z_]{1,12}", json_value()));
    (fields, extra).prop_map(object)
}

/// A field of a generated object.
type Entry = (String, Value);

fn object((fields, extra): (Vec<Option<Entry>>, Option<Entry>)) -> Value {
    let mut m: serde_json::Map<String, Value> = fields.into_iter().flatten().collect();
    if let Some((k, v)) = extra {
        m.entry(k).or_insert(v);
    }
    Value::Object(m)
}

/// Bytes of a request body: junk, any JSON, shaped objects, and those cut or padded.
fn body_bytes(body: &Body) -> impl Strategy<Value = Vec<u8>> + use<> {
    prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..64),
        1 => json_value().prop_map(|v| v.to_string().into_bytes()),
        3 => valid(body).prop_map(|v| v.to_string().into_bytes()),
        4 => shaped(body).prop_map(|v| v.to_string().into_bytes()),
        1 => (shaped(body), any::<prop::sample::Index>()).prop_map(|(v, at)| {
            let mut b = v.to_string().into_bytes();
            b.truncate(at.index(b.len() + 1));
            b
        }),
        1 => shaped(body).prop_map(|v| format!(" \n{v}\t ").into_bytes()),
    ]
}

/// A Content-Type header, mostly the right one.
fn content_type() -> impl Strategy<Value = Option<&'static str>> {
    prop_oneof![
        8 => Just(Some("application/json")),
        1 => Just(Some("application/json; charset=utf-8")),
        1 => Just(None),
        1 => Just(Some("text/plain")),
        1 => Just(Some("APPLICATION/JSON")),
    ]
}

/// The in-process property: the body's parser answers `Ok` or a client error.
fn parse_as<T: DeserializeOwned>(
    ct: Option<&str>,
    bytes: &[u8],
) -> Result<Option<T>, TestCaseError> {
    match parse_json::<T>(ct, bytes) {
        Ok(v) => Ok(Some(v)),
        Err(e) => {
            check_error(&e)?;
            Ok(None)
        }
    }
}

fn check_error(e: &ApiError) -> Result<(), TestCaseError> {
    prop_assert!(
        [400, 415, 422].contains(&e.status.as_u16()),
        "{} {}",
        e.status,
        e.message
    );
    prop_assert!(is_code(e.code), "{}", e.code);
    prop_assert!(!e.message.is_empty());
    prop_assert!(
        e.message.len() <= roomcast::edge::errors::MAX_MESSAGE,
        "{} bytes: {}",
        e.message.len(),
        &e.message[..e.message.floor_char_boundary(200)]
    );
    Ok(())
}

fn is_code(code: &str) -> bool {
    code.starts_with(|c: char| c.is_ascii_lowercase())
        && code
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fn body_named(name: &str) -> Body {
    bodies()
        .into_iter()
        .find(|b| b.name == name)
        .unwrap_or_else(|| panic!("no body {name}"))
}

/// 256 cases unless `PROPTEST_CASES` says otherwise (see `proptest_config`).
fn config() -> ProptestConfig {
    proptest_config::config(file!())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn create_room_bodies(ct in content_type(), bytes in body_bytes(&body_named("CreateRoom"))) {
        parse_as::<CreateRoom>(ct, &bytes)?;
    }

    #[test]
    fn patch_room_bodies(ct in content_type(), bytes in body_bytes(&body_named("PatchRoom"))) {
        parse_as::<PatchRoom>(ct, &bytes)?;
    }

    #[test]
    fn rotate_invite_bodies(ct in content_type(), bytes in body_bytes(&body_named("RotateInvite"))) {
        parse_as::<RotateInvite>(ct, &bytes)?;
    }

    #[test]
    fn mute_bodies(ct in content_type(), bytes in body_bytes(&body_named("MuteRequest"))) {
        parse_as::<MuteRequest>(ct, &bytes)?;
    }

    #[test]
    fn recording_bodies(ct in content_type(), bytes in body_bytes(&body_named("StartRecording"))) {
        parse_as::<StartRecording>(ct, &bytes)?;
    }

    #[test]
    fn broadcast_bodies_parse_and_validate(
        ct in content_type(),
        bytes in body_bytes(&body_named("StartBroadcast")),
    ) {
        if let Some(b) = parse_as::<StartBroadcast>(ct, &bytes)?
            && let Err(e) = b.validate()
        {
            let e = ApiError::from(e);
            prop_assert_eq!(e.status.as_u16(), 422, "{}", e.message);
            check_error(&e)?;
        }
    }

    #[test]
    fn ranges_stay_inside_the_file(
        header in proptest::option::of(prop_oneof![
            any::<String>(),
            "bytes=[0-9]{0,22}-[0-9]{0,22}",
            "bytes=-?[0-9]{0,22}(,[0-9]{0,3}-[0-9]{0,3})?",
            "[ a-z=0-9,-]{0,20}",
        ]),
        size in prop_oneof![Just(0u64), Just(1), Just(u64::MAX), any::<u64>(), 0..1000u64],
    ) {
        if let Ok(Some(r)) = files::parse_range(header.as_deref(), size) {
            prop_assert!(r.start <= r.end && r.end < size, "{:?} of {}", r, size);
        }
    }
}

/// The generator's valid bodies are accepted: what the refusals above
/// are measured against.
#[test]
fn valid_bodies_are_accepted() {
    fn accepts<T: DeserializeOwned>(name: &str, then: impl Fn(T) -> Result<(), String>) {
        let mut runner = TestRunner::new(config());
        let result = runner.run(&valid(&body_named(name)), |v| {
            let bytes = v.to_string();
            let parsed = parse_json::<T>(Some("application/json"), bytes.as_bytes())
                .map_err(|e| TestCaseError::fail(format!("{}: {bytes}", e.message)))?;
            then(parsed).map_err(|e| TestCaseError::fail(format!("{e}: {bytes}")))?;
            Ok(())
        });
        if let Err(e) = result {
            panic!("{name}: {e}");
        }
    }
    fn ok<T>(_: T) -> Result<(), String> {
        Ok(())
    }
    accepts::<CreateRoom>("CreateRoom", ok);
    accepts::<PatchRoom>("PatchRoom", ok);
    accepts::<RotateInvite>("RotateInvite", ok);
    accepts::<MuteRequest>("MuteRequest", ok);
    accepts::<StartRecording>("StartRecording", ok);
    accepts::<StartBroadcast>("StartBroadcast", |b| {
        b.validate().map(|_| ()).map_err(|e| e.to_string())
    });
}

// ------------------------------------------------------------ live server

fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One call; the answer must be 2xx, or 4xx with the error body.
fn call(
    s: &Server,
    method: &str,
    path: &str,
    ct: Option<&str>,
    body: &[u8],
    token: Option<&str>,
) -> Result<u16, TestCaseError> {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers: Vec<(&str, &str)> = Vec::new();
    if let Some(ct) = ct {
        headers.push(("content-type", ct));
    }
    if let Some(a) = &auth {
        headers.push(("authorization", a));
    }
    let a = fetch(method, &s.url(path), &headers, Some(body));
    let what = format!(
        "{method} {path} ({ct:?}, {:?}) -> {}: {}",
        String::from_utf8_lossy(body),
        a.status,
        a.text()
    );
    prop_assert!(a.status < 500, "server error: {}", what);
    prop_assert!(
        (200..300).contains(&a.status) || (400..500).contains(&a.status),
        "{}",
        what
    );
    if a.status >= 400 {
        prop_assert_ne!(a.status, 429, "limits are off: {}", what);
        let v: Value = serde_json::from_slice(&a.body)
            .map_err(|e| TestCaseError::fail(format!("error body is not JSON ({e}): {what}")))?;
        let code = v["error"]["code"].as_str().unwrap_or_default();
        prop_assert!(is_code(code), "code: {}", what);
        let message = v["error"]["message"].as_str().unwrap_or_default();
        prop_assert!(!message.is_empty(), "message: {}", what);
        prop_assert!(
            message.len() <= roomcast::edge::errors::MAX_MESSAGE,
            "message of {} bytes: {}",
            message.len(),
            what
        );
    }
    Ok(a.status)
}

/// A signaling socket in the bystander room: what it received, and a way to ping.
struct Bystander {
    seen: Arc<Mutex<Vec<String>>>,
    ping: tokio::sync::mpsc::Sender<()>,
}

async fn join_bystander(s: &Server, invite_url: &str) -> Bystander {
    let token = invite_url.split("#t=").nth(1).expect("token").to_owned();
    let url = s.base.replace("http://", "ws://") + "/ws";
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .expect("WebSocket");
    let join = json!({"type": "join", "token": token, "display_name": "Bystander"});
    ws.send(tokio_tungstenite::tungstenite::Message::Text(
        join.to_string(),
    ))
    .await
    .expect("send join");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (ping, mut pings) = tokio::sync::mpsc::channel::<()>(4);
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                frame = ws.next() => match frame {
                    Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t))) => {
                        let v: Value = serde_json::from_str(&t).unwrap_or(Value::Null);
                        let kind = v["type"].as_str().unwrap_or("?").to_owned();
                        log.lock().unwrap_or_else(|p| p.into_inner()).push(kind);
                    }
                    Some(Ok(_)) => {}
                    _ => {
                        log.lock().unwrap_or_else(|p| p.into_inner()).push("closed".into());
                        break;
                    }
                },
                Some(()) = pings.recv() => {
                    let ping = tokio_tungstenite::tungstenite::Message::Text(r#"{"type":"ping"}"#.into());
                    if ws.send(ping).await.is_err() {
                        break;
                    }
                }
            }
        }
    });
    Bystander { seen, ping }
}

impl Bystander {
    fn has(&self, kind: &str) -> bool {
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|k| k == kind)
    }
}

fn run_endpoint(
    s: &Server,
    method: &str,
    path: &str,
    strategy: impl Strategy<Value = (Option<&'static str>, Vec<u8>)>,
    token: Option<&str>,
) -> Vec<u16> {
    let mut runner = TestRunner::new(Config {
        cases: cases(LIVE_CASES),
        // A live server's answers are not replayable: nothing is saved.
        failure_persistence: None,
        ..Config::default()
    });
    let statuses = Mutex::new(Vec::new());
    let result = runner.run(&strategy, |(ct, body)| {
        let status = call(s, method, path, ct, &body, token)?;
        statuses
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(status);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{method} {path}: {e}");
    }
    // Still alive after each endpoint's batch.
    assert_eq!(
        s.request("GET", "/healthz", None, None).0,
        200,
        "healthz after {method} {path}"
    );
    statuses.into_inner().unwrap_or_else(|p| p.into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_server_answers_every_generated_body() {
    // Per-address limits off: this test sends far more WHEP/WHIP offers
    // than one address may (tests/limits.rs covers the limits).
    let s = Server::start_with(&["--rate-limit", "false"]);
    let t = std::time::Instant::now();
    let bystander_room = s.create_room(r#"{"name": "Bystander", "max_participants": 5}"#);
    let bystander_id = bystander_room["id"].as_str().expect("id").to_owned();
    let bystander =
        join_bystander(&s, bystander_room["invite_url"].as_str().expect("invite")).await;
    let target = s.create_room(r#"{"name": "Target"}"#);
    let target_id = target["id"].as_str().expect("id").to_owned();
    // Ids of the right form that do not exist: the body is read and
    // validated first, then the id is looked up (404).
    let nowhere = "r_AbCdEf123456";
    let nobody = "p_AbCdEf123456";

    // Blocking HTTP calls on this worker; the bystander's socket runs on the other.
    let report = tokio::task::block_in_place(|| {
        let mut report = Vec::new();
        let plan: Vec<(&str, String, &str)> = vec![
            ("POST", "/api/v1/rooms".to_owned(), "CreateRoom"),
            ("PATCH", format!("/api/v1/rooms/{target_id}"), "PatchRoom"),
            (
                "POST",
                format!("/api/v1/rooms/{target_id}/invite"),
                "RotateInvite",
            ),
            (
                "POST",
                format!("/api/v1/rooms/{target_id}/participants/{nobody}/mute"),
                "MuteRequest",
            ),
            (
                "POST",
                format!("/api/v1/rooms/{nowhere}/recordings"),
                "StartRecording",
            ),
            (
                "POST",
                format!("/api/v1/rooms/{nowhere}/broadcasts"),
                "StartBroadcast",
            ),
        ];
        for (method, path, name) in plan {
            let body = body_named(name);
            let statuses = run_endpoint(
                &s,
                method,
                &path,
                (content_type(), body_bytes(&body)),
                Some(ADMIN_TOKEN),
            );
            report.push((path, statuses));
        }
        // SDP bodies: the offer checks (type, UTF-8, `v=0`) come before the id.
        let sdp = (
            prop_oneof![
                6 => Just(Some("application/sdp")),
                1 => Just(Some("application/json")),
                1 => Just(None),
            ],
            prop_oneof![
                prop::collection::vec(any::<u8>(), 0..64),
                "v=0\r\n[ -~\r\n]{0,200}".prop_map(String::into_bytes),
                "[ -~\r\n]{0,100}".prop_map(String::into_bytes),
            ],
        );
        let statuses = run_endpoint(&s, "POST", "/whep/b_AbCdEf123456", sdp.clone(), None);
        report.push(("/whep".into(), statuses));
        let statuses = run_endpoint(
            &s,
            "POST",
            &format!("/whip/{nowhere}"),
            sdp,
            Some("not-a-token"),
        );
        report.push(("/whip".into(), statuses));
        report
    });

    for (path, statuses) in &report {
        let mut counts = std::collections::BTreeMap::new();
        for st in statuses {
            *counts.entry(*st).or_insert(0) += 1;
        }
        eprintln!("{path}: {counts:?}");
        // Bodies that pass validation reach the handler (2xx, or the 404 of
        // the missing id): the generator does not only produce junk.
        if path.starts_with("/api/") {
            assert!(
                statuses.iter().any(|s| *s < 300 || *s == 404),
                "{path}: no body got through: {counts:?}"
            );
            assert!(
                statuses.contains(&422),
                "{path}: no body was refused: {counts:?}"
            );
        }
    }

    // The server is healthy; the bystander room and its participant never noticed.
    assert_eq!(s.request("GET", "/healthz", None, None).0, 200);
    let (status, after) = s.admin("GET", &format!("/api/v1/rooms/{bystander_id}"), None);
    assert_eq!(status, 200, "{after}");
    for field in [
        "name",
        "max_participants",
        "visibility",
        "lobby",
        "locked",
        "invites_enabled",
        "invite_url",
        "host_url",
    ] {
        assert_eq!(after[field], bystander_room[field], "{field}");
    }
    assert_eq!(after["participant_count"], 1, "{after}");
    bystander.ping.send(()).await.expect("ping");
    common::wait_for("the bystander's pong", Duration::from_secs(5), || {
        bystander.has("pong").then_some(())
    })
    .await;
    assert!(bystander.has("joined") && !bystander.has("closed"));
    eprintln!("live fuzzing took {:?}", t.elapsed());
}
