//! `GET /api/openapi.json`: the document is valid OpenAPI (checked by
//! openapi-spec-validator, installed into `.venv` by
//! `scripts/install-deps test`), lists the whole contract, and matches what
//! the server does in both directions:
//! - every documented operation is served: a live call answers one of its
//!   documented statuses, never the 404 of an unknown route nor a 405, and
//!   its JSON body matches the documented schema;
//! - every served route is documented: routes are registered only through
//!   `src/edge/endpoints.rs` (the table the document is built from), which
//!   the source scan below enforces.

mod common;

use common::{ADMIN_TOKEN, Server};
use roomcast::edge::errors::UNKNOWN_ROUTE;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const METHODS: &[&str] = &["get", "head", "post", "put", "patch", "delete", "options"];

/// The operations of `../shared/api.md`, as the document names them.
const CONTRACT: &[(&str, &str)] = &[
    ("get", "/healthz"),
    ("get", "/metrics"),
    ("get", "/api/openapi.json"),
    ("get", "/api/v1/system"),
    ("post", "/api/v1/rooms"),
    ("get", "/api/v1/rooms"),
    ("get", "/api/v1/rooms/{room_id}"),
    ("patch", "/api/v1/rooms/{room_id}"),
    ("delete", "/api/v1/rooms/{room_id}"),
    ("post", "/api/v1/rooms/{room_id}/invite"),
    ("get", "/api/v1/public/rooms"),
    ("get", "/api/v1/rooms/{room_id}/participants"),
    (
        "delete",
        "/api/v1/rooms/{room_id}/participants/{participant_id}",
    ),
    (
        "post",
        "/api/v1/rooms/{room_id}/participants/{participant_id}/mute",
    ),
    ("get", "/api/v1/rooms/{room_id}/lobby"),
    (
        "post",
        "/api/v1/rooms/{room_id}/lobby/{participant_id}/admit",
    ),
    (
        "post",
        "/api/v1/rooms/{room_id}/lobby/{participant_id}/deny",
    ),
    ("post", "/api/v1/rooms/{room_id}/recordings"),
    ("post", "/api/v1/recordings/{recording_id}/stop"),
    ("get", "/api/v1/recordings"),
    ("get", "/api/v1/recordings/{recording_id}"),
    ("get", "/api/v1/recordings/{recording_id}/files/{name}"),
    ("delete", "/api/v1/recordings/{recording_id}"),
    ("post", "/api/v1/rooms/{room_id}/broadcasts"),
    ("get", "/api/v1/broadcasts/{broadcast_id}"),
    ("delete", "/api/v1/broadcasts/{broadcast_id}"),
    ("post", "/api/v1/rooms/{room_id}/ingests"),
    ("get", "/hls/{broadcast_id}/index.m3u8"),
    ("post", "/whep/{broadcast_id}"),
    ("post", "/whip/{room_id}"),
    ("get", "/ws"),
    ("get", "/"),
    ("get", "/r/{room_id}"),
    ("get", "/watch/{broadcast_id}"),
];

/// An answer as the checker wants it.
struct Answer {
    status: u16,
    content_type: String,
    text: String,
}

impl Answer {
    fn json(&self) -> Option<Value> {
        self.content_type
            .starts_with("application/json")
            .then(|| serde_json::from_str(&self.text).ok())
            .flatten()
    }

    fn unknown_route(&self) -> bool {
        self.status == 404
            && self
                .json()
                .is_some_and(|b| b["error"]["message"] == UNKNOWN_ROUTE)
    }
}

fn call(
    s: &Server,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<(&str, &str)>,
) -> Answer {
    let mut req =
        ureq::request(&method.to_uppercase(), &s.url(path)).timeout(Duration::from_secs(20));
    if let Some(t) = token {
        req = req.set("Authorization", &format!("Bearer {t}"));
    }
    let resp = match body {
        Some((content_type, b)) => req.set("Content-Type", content_type).send_string(b),
        None => req.call(),
    };
    let resp = match resp {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{method} {path}: {e}"),
    };
    Answer {
        status: resp.status(),
        content_type: resp.content_type().to_owned(),
        text: resp.into_string().unwrap_or_default(),
    }
}

fn fetch_doc(s: &Server) -> Value {
    let a = call(s, "get", "/api/openapi.json", None, None);
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.content_type, "application/json");
    a.json().expect("the document is JSON")
}

/// Every (method, path template, operation) of the document.
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let paths = doc["paths"].as_object().expect("paths");
    let mut ops = Vec::new();
    for (path, item) in paths {
        for m in METHODS {
            if let Some(op) = item.get(*m) {
                ops.push((m.to_string(), path.clone(), op.clone()));
            }
        }
    }
    ops
}

/// The path with each parameter replaced by its documented example.
fn example_path(path: &str, op: &Value) -> String {
    let mut out = path.to_owned();
    for p in op["parameters"].as_array().into_iter().flatten() {
        if p["in"] == "path" {
            let name = p["name"].as_str().expect("parameter name");
            let example = p["example"]
                .as_str()
                .unwrap_or_else(|| panic!("{path}: parameter {name} has no example"));
            out = out.replace(&format!("{{{name}}}"), example);
        }
    }
    assert!(!out.contains('{'), "{path}: undeclared parameter");
    out
}

fn needs_admin(op: &Value) -> bool {
    op["security"] == json!([{"adminToken": []}])
}

fn documents(op: &Value, status: u16) -> bool {
    op["responses"].get(status.to_string()).is_some()
}

/// Runs `tests/openapi_check.py` on the document and the recorded answers.
fn check(doc: &Value, answers: &[Value]) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python: PathBuf = root.join(".venv/bin/python3");
    assert!(
        python.exists(),
        "{} is missing: run `scripts/install-deps test` (it installs openapi-spec-validator)",
        python.display()
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let doc_file = dir.path().join("openapi.json");
    let answers_file = dir.path().join("answers.json");
    std::fs::write(&doc_file, doc.to_string()).expect("write document");
    std::fs::write(&answers_file, Value::from(answers.to_vec()).to_string())
        .expect("write answers");
    let out = Command::new(&python)
        .arg(root.join("tests/openapi_check.py"))
        .arg(&doc_file)
        .arg(&answers_file)
        .output()
        .expect("run the OpenAPI checker");
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "OpenAPI check failed:\n{text}");
    assert!(
        text.contains(&format!("{} answers checked, 0 problems", answers.len())),
        "{text}"
    );
}

fn record(path: &str, method: &str, a: &Answer) -> Value {
    json!({"path": path, "method": method, "status": a.status, "body": a.json()})
}

#[test]
fn the_document_is_valid_and_lists_the_contract() {
    let s = Server::start();
    let doc = fetch_doc(&s);
    assert_eq!(doc["openapi"], "3.1.0");
    let ops = operations(&doc);
    for (method, path) in CONTRACT {
        assert!(
            ops.iter().any(|(m, p, _)| m == method && p == path),
            "{method} {path} is not documented"
        );
    }
    // Every /api/v1 call needs the admin token, except the public ones.
    for (method, path, op) in &ops {
        let public =
            path.starts_with("/api/v1/public/") || (*method == "post" && path == "/api/v1/rooms");
        if path.starts_with("/api/v1/") && !public {
            assert!(needs_admin(op), "{method} {path}: {}", op["security"]);
        }
        if path.starts_with("/api/") {
            for status in [400, 401, 403, 404, 409, 413, 415, 422, 429] {
                if let Some(r) = op["responses"].get(status.to_string()) {
                    let name = r["$ref"].as_str().expect("error answers are shared");
                    let pointer = name.trim_start_matches('#');
                    let schema = &doc.pointer(pointer).expect("resolves")["content"]["application/json"]
                        ["schema"];
                    assert_eq!(
                        schema["$ref"], "#/components/schemas/Error",
                        "{method} {path} {status}"
                    );
                }
            }
        }
    }
    let error = &doc["components"]["schemas"]["Error"];
    assert_eq!(error["required"], json!(["error"]));
    assert_eq!(
        doc["components"]["securitySchemes"]["adminToken"]["scheme"],
        "bearer"
    );
    assert!(documents(&doc["paths"]["/api/v1/rooms"]["post"], 201));
    assert!(documents(
        &doc["paths"]["/api/v1/rooms/{room_id}"]["delete"],
        204
    ));
    assert!(documents(
        &doc["paths"]["/api/v1/rooms/{room_id}/recordings"]["post"],
        409
    ));
    assert!(documents(&doc["paths"]["/api/v1/rooms"]["post"], 429));
    check(&doc, &[]);
}

/// Each documented operation, called with the examples of its parameters
/// (ids of the right form that do not exist), is answered by its route.
#[test]
fn every_documented_operation_is_served() {
    let s = Server::start();
    let doc = fetch_doc(&s);
    let ops = operations(&doc);
    assert!(ops.len() >= 45, "{} operations", ops.len());
    let mut answers = Vec::new();
    for (method, path, op) in &ops {
        let url = example_path(path, op);
        let content = &op["requestBody"]["content"];
        let body = if content.get("application/json").is_some() {
            Some(("application/json", "{}"))
        } else if content.get("application/sdp").is_some() {
            Some(("application/sdp", "not an offer"))
        } else {
            None
        };
        let token = op["security"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|s| s.get("adminToken").is_some())
            .then_some(ADMIN_TOKEN);
        let a = call(&s, method, &url, token, body);
        let what = format!(
            "{} {url} -> {}: {}",
            method.to_uppercase(),
            a.status,
            a.text
        );
        assert!(!a.unknown_route(), "documented but not served: {what}");
        assert!(a.status < 500, "{what}");
        assert!(a.status != 405 || documents(op, 405), "{what}");
        assert!(documents(op, a.status), "undocumented status: {what}");
        if *method == "head" {
            let get = call(&s, "get", &url, token, None);
            assert_eq!(a.status, get.status, "HEAD and GET {url}");
        }
        if needs_admin(op) {
            let anonymous = call(&s, method, &url, None, body);
            assert_eq!(
                anonymous.status, 401,
                "{method} {url} without the admin token"
            );
            answers.push(record(path, method, &anonymous));
        }
        answers.push(record(path, method, &a));
    }
    // A path no route serves, for contrast.
    let a = call(&s, "get", "/api/v1/nothing-here", Some(ADMIN_TOKEN), None);
    assert!(a.unknown_route(), "{}", a.text);
    // The signaling endpoint upgrades to a WebSocket.
    let url = s.base.replace("http://", "ws://") + "/ws";
    let (mut socket, resp) =
        tokio_tungstenite::tungstenite::connect(url.as_str()).expect("WebSocket");
    assert_eq!(resp.status().as_u16(), 101);
    assert!(documents(&doc["paths"]["/ws"]["get"], 101));
    let _ = socket.close(None);
    check(&doc, &answers);
}

/// Answers with real data match their documented schemas.
#[test]
fn answers_match_their_schemas() {
    let s = Server::start();
    let doc = fetch_doc(&s);
    let mut answers = Vec::new();
    let mut admin = |method: &str, template: &str, path: &str, body: Option<&str>, want: u16| {
        let a = call(
            &s,
            method,
            path,
            Some(ADMIN_TOKEN),
            body.map(|b| ("application/json", b)),
        );
        assert_eq!(a.status, want, "{method} {path}: {}", a.text);
        answers.push(record(template, method, &a));
        a.json().unwrap_or(Value::Null)
    };
    let room = admin(
        "post",
        "/api/v1/rooms",
        "/api/v1/rooms",
        Some(r#"{"name": "Docs", "visibility": "listed", "lobby": true}"#),
        201,
    );
    let id = room["id"].as_str().expect("room id").to_owned();
    let r = format!("/api/v1/rooms/{id}");
    admin("get", "/api/v1/rooms", "/api/v1/rooms", None, 200);
    admin("get", "/api/v1/rooms/{room_id}", &r, None, 200);
    admin(
        "patch",
        "/api/v1/rooms/{room_id}",
        &r,
        Some(r#"{"name": "Docs 2", "locked": false}"#),
        200,
    );
    admin(
        "patch",
        "/api/v1/rooms/{room_id}",
        &r,
        Some(r#"{"max_participants": 0}"#),
        422,
    );
    admin(
        "post",
        "/api/v1/rooms/{room_id}/invite",
        &format!("{r}/invite"),
        Some(r#"{"expires_in": 3600}"#),
        200,
    );
    admin(
        "post",
        "/api/v1/rooms/{room_id}/host-link",
        &format!("{r}/host-link"),
        None,
        200,
    );
    admin(
        "get",
        "/api/v1/rooms/{room_id}/participants",
        &format!("{r}/participants"),
        None,
        200,
    );
    admin(
        "get",
        "/api/v1/rooms/{room_id}/lobby",
        &format!("{r}/lobby"),
        None,
        200,
    );
    let events = admin(
        "get",
        "/api/v1/rooms/{room_id}/events",
        &format!("{r}/events"),
        None,
        200,
    );
    assert!(!events["events"].as_array().expect("events").is_empty());
    admin(
        "post",
        "/api/v1/rooms/{room_id}/ingests",
        &format!("{r}/ingests"),
        None,
        201,
    );
    admin(
        "get",
        "/api/v1/recordings",
        &format!("/api/v1/recordings?room_id={id}"),
        None,
        200,
    );
    admin(
        "get",
        "/api/v1/broadcasts",
        &format!("/api/v1/broadcasts?room_id={id}"),
        None,
        200,
    );
    admin("get", "/api/v1/system", "/api/v1/system", None, 200);
    admin(
        "post",
        "/api/v1/rooms",
        "/api/v1/rooms",
        Some(r#"{"name": ""}"#),
        422,
    );
    admin("post", "/api/v1/rooms", "/api/v1/rooms", Some("{"), 400);
    let public = call(&s, "get", "/api/v1/public/rooms", None, None);
    assert_eq!(public.status, 200);
    assert_eq!(public.json().expect("JSON")["rooms"][0]["id"], id.as_str());
    answers.push(record("/api/v1/public/rooms", "get", &public));
    let anonymous = call(
        &s,
        "post",
        "/api/v1/rooms",
        None,
        Some(("application/json", r#"{"name": "Mine"}"#)),
    );
    assert_eq!(anonymous.status, 201, "{}", anonymous.text);
    answers.push(record("/api/v1/rooms", "post", &anonymous));
    let wrong_type = call(
        &s,
        "post",
        "/api/v1/rooms",
        Some(ADMIN_TOKEN),
        Some(("text/plain", "{}")),
    );
    assert_eq!(wrong_type.status, 415);
    answers.push(record("/api/v1/rooms", "post", &wrong_type));
    let health = call(&s, "get", "/healthz", None, None);
    answers.push(record("/healthz", "get", &health));
    let closed = call(&s, "delete", &r, Some(ADMIN_TOKEN), None);
    assert_eq!(closed.status, 204);
    answers.push(record("/api/v1/rooms/{room_id}", "delete", &closed));
    let gone = call(&s, "get", &r, Some(ADMIN_TOKEN), None);
    assert_eq!(gone.status, 404);
    assert!(!gone.unknown_route());
    answers.push(record("/api/v1/rooms/{room_id}", "get", &gone));
    check(&doc, &answers);
}

/// Routes are registered only from the table the document is built from:
/// no path or method filter is written anywhere else.
#[test]
fn every_route_is_registered_from_the_table() {
    const FILTERS: &[&str] = &[
        "warp::path!(",
        "warp::path(",
        "path::end()",
        "path::tail()",
        "path::param",
        "path::full()",
        "path::peek()",
        "warp::get()",
        "warp::head()",
        "warp::post()",
        "warp::put()",
        "warp::patch()",
        "warp::delete()",
        "warp::options()",
        "warp::method()",
    ];
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let table = root.join("src/edge/endpoints.rs");
    let mut files = vec![root.join("src")];
    let mut scanned = 0;
    while let Some(path) = files.pop() {
        if path.is_dir() {
            for entry in std::fs::read_dir(&path).expect("read src") {
                files.push(entry.expect("entry").path());
            }
        } else if path.extension().is_some_and(|e| e == "rs") && path != table {
            let text = std::fs::read_to_string(&path).expect("read source");
            for f in FILTERS {
                assert!(
                    !text.contains(f),
                    "{} uses {f}: register routes through src/edge/endpoints.rs so they are documented",
                    path.display()
                );
            }
            scanned += 1;
        }
    }
    assert!(scanned > 20, "{scanned} files");
    let text = std::fs::read_to_string(&table).expect("read the table");
    assert!(text.contains("pub static ALL"));
}
