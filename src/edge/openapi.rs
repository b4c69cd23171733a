//! `GET /api/openapi.json`: the OpenAPI 3.1 document of every endpoint.
//!
//! It is built from [`super::endpoints::ALL`], the table the routes are
//! registered from, and the JSON schemas come from the Rust types the
//! handlers read and write (`#[derive(schemars::JsonSchema)]` beside
//! `Serialize`/`Deserialize`), so the document follows the code.
//!
//! Why schemars and a table rather than utoipa's `#[utoipa::path]`: our
//! handlers are closures inside warp filter chains, so per-handler
//! annotations would sit apart from the filters that define the path and
//! method, and could disagree with them; a table that the route heads are
//! built from cannot. schemars follows every serde attribute we use
//! (`default = "…"`, `skip_serializing_if`, `deny_unknown_fields`,
//! `transparent`, `rename_all`) and tells request shapes (deserialize) from
//! answer shapes (serialize). It adds six small crates to the build.

use super::endpoints::{self as ep, Answer, Auth, Content, Endpoint, Request};
use super::errors::{self, ApiError};
use schemars::SchemaGenerator;
use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};
use std::collections::BTreeSet;
use warp::filters::BoxedFilter;
use warp::http::{HeaderValue, Response, StatusCode, header};
use warp::{Filter, Reply};

/// Groups of operations, in document order.
const TAGS: &[(&str, &str)] = &[
    ("system", "Health, metrics, versions and this document."),
    ("rooms", "Rooms, their settings and their links."),
    ("participants", "People in a room, the lobby, moderation."),
    ("recordings", "Recording rooms and downloading the files."),
    ("broadcasts", "Live broadcasts of a room (HLS, WHEP, RTMP)."),
    (
        "ingest",
        "Publishing into a room with WHIP (OBS, GStreamer, browsers).",
    ),
    ("live", "HLS files, WHEP viewers, WHIP publishers."),
    (
        "signaling",
        "The WebSocket of the web client (`docs/signaling.md`).",
    ),
    ("web", "The web client's pages and files."),
];

const DESCRIPTION: &str = "Self-hosted video rooms and live broadcast.\n\n\
Every 4xx/5xx answer under `/api/` has the body `{\"error\": {\"code\": \"<snake_case>\", \
\"message\": \"<human text>\"}}` (schema `Error`). Calls under `/api/v1` need \
`Authorization: Bearer <admin token>` unless marked otherwise (`security: []`). Room links \
carry signed, revocable tokens in their fragment (`#t=`); tokens never appear in URLs \
that reach the server.";

/// The name and meaning of each error status in `components/responses`.
fn error_response(status: u16) -> (&'static str, String) {
    match status {
        400 => (
            "BadRequest",
            "Malformed input: JSON that does not parse, a bad query value, an SDP that is not an offer.".into(),
        ),
        401 => ("Unauthorized", "Missing or invalid token.".into()),
        403 => (
            "Forbidden",
            "Not allowed: wrong role, revoked or expired link, banned.".into(),
        ),
        404 => (
            "NotFound",
            format!(
                "Unknown id (`<what> not found`). A path no route serves answers `{}`.",
                errors::UNKNOWN_ROUTE
            ),
        ),
        405 => ("MethodNotAllowed", "Not supported on this resource.".into()),
        409 => (
            "Conflict",
            "Conflict with the room's state: `room_locked`, `room_full`, `room_closed`, \
`already_recording`, …"
                .into(),
        ),
        413 => (
            "PayloadTooLarge",
            format!(
                "Body too large: JSON bodies take at most {} bytes, SDP offers {} bytes.",
                super::MAX_BODY_BYTES,
                super::live::MAX_SDP_BYTES
            ),
        ),
        415 => (
            "UnsupportedMediaType",
            "Wrong `Content-Type`: `application/json` for JSON bodies, `application/sdp` for offers.".into(),
        ),
        416 => (
            "RangeNotSatisfiable",
            "The `Range` is outside the file (`Content-Range: bytes */size`).".into(),
        ),
        422 => (
            "UnprocessableEntity",
            "Valid JSON, but of the wrong shape or with invalid values (`invalid_request`).".into(),
        ),
        408 => (
            "RequestTimeout",
            format!(
                "The body did not arrive within {} s of the headers (`request_timeout`).",
                super::BODY_READ_TIMEOUT.as_secs()
            ),
        ),
        429 => (
            "TooManyRequests",
            "Rate limited per client address (`rate_limited`); `Retry-After` says when to try \
again. Calls with the admin token are never limited. Limits: room creation without the admin \
token, calls without a valid admin token to endpoints that need one, signaling connections, \
WHEP and WHIP offers (see docs/operations.md)."
                .into(),
        ),
        503 => (
            "ServiceUnavailable",
            "Not there yet: an LL-HLS blocking request whose segment or part was not written within 3 target durations.".into(),
        ),
        _ => (
            "ServerError",
            "Internal error; details are in the server log, never in the answer.".into(),
        ),
    }
}

/// Error statuses of an endpoint: those its auth and body imply, and its own.
fn error_statuses(e: &Endpoint) -> BTreeSet<u16> {
    let mut statuses: BTreeSet<u16> = e.errors.iter().copied().collect();
    let by_auth: &[u16] = match e.auth {
        Auth::Public => &[],
        Auth::Admin => &[401],
        Auth::AdminOrAnonymous => &[401, 429],
        Auth::Link | Auth::OptionalLink => &[401, 403],
    };
    let by_body: &[u16] = match e.request {
        Request::None => &[],
        Request::Json { .. } => &[400, 408, 413, 415, 422],
        Request::Sdp => &[400, 408, 413, 415],
    };
    statuses.extend(by_auth.iter().chain(by_body));
    if e.rate_limit().is_some() {
        statuses.insert(429);
    }
    statuses
}

fn security(auth: Auth) -> Value {
    match auth {
        Auth::Public => json!([]),
        Auth::Admin => json!([{"adminToken": []}]),
        Auth::AdminOrAnonymous => json!([{"adminToken": []}, {}]),
        Auth::Link => json!([{"linkToken": []}]),
        Auth::OptionalLink => json!([{"linkToken": []}, {}]),
    }
}

fn content(c: &Content, output: &mut SchemaGenerator) -> Option<Value> {
    match c {
        Content::None => None,
        Content::Json(schema) => Some(json!({"application/json": {"schema": schema(output)}})),
        Content::Sdp => Some(json!({"application/sdp": {"schema": {"type": "string"}}})),
        Content::Media(types) => Some(Value::Object(
            types.iter().map(|t| ((*t).to_owned(), json!({}))).collect(),
        )),
    }
}

fn answer(a: &Answer, head: bool, output: &mut SchemaGenerator) -> Value {
    let mut r = Map::new();
    r.insert("description".into(), a.description.into());
    if !head && let Some(c) = content(&a.content, output) {
        r.insert("content".into(), c);
    }
    if !a.headers.is_empty() {
        let headers: Map<String, Value> = a
            .headers
            .iter()
            .map(|h| {
                let v = json!({"description": h.description, "schema": {"type": "string"}});
                (h.name.to_owned(), v)
            })
            .collect();
        r.insert("headers".into(), Value::Object(headers));
    }
    Value::Object(r)
}

/// One operation object; `head` for the HEAD twin of a GET.
fn operation(
    e: &Endpoint,
    head: bool,
    input: &mut SchemaGenerator,
    output: &mut SchemaGenerator,
) -> Value {
    let mut op = Map::new();
    let id = if head {
        format!("{}_head", e.operation_id)
    } else {
        e.operation_id.to_owned()
    };
    op.insert("operationId".into(), id.into());
    op.insert("tags".into(), json!([e.tag]));
    op.insert("summary".into(), e.summary.into());
    if !e.description.is_empty() {
        op.insert("description".into(), e.description.into());
    }
    let mut params: Vec<Value> = e
        .params
        .iter()
        .map(|p| {
            json!({"name": p.name, "in": "path", "required": true, "description": p.description,
                   "schema": (p.schema)(input), "example": p.example})
        })
        .collect();
    params.extend(e.query.iter().map(|q| {
        json!({"name": q.name, "in": "query", "required": false, "description": q.description,
               "schema": (q.schema)(input)})
    }));
    if !params.is_empty() {
        op.insert("parameters".into(), Value::Array(params));
    }
    match e.request {
        Request::None => {}
        Request::Json { schema, required } => {
            op.insert(
                "requestBody".into(),
                json!({"required": required,
                       "content": {"application/json": {"schema": schema(input)}}}),
            );
        }
        Request::Sdp => {
            op.insert(
                "requestBody".into(),
                json!({"required": true, "description": "The SDP offer.",
                       "content": {"application/sdp": {"schema": {"type": "string"}}}}),
            );
        }
    }
    let mut responses = Map::new();
    for a in e.answers {
        responses.insert(a.status.to_string(), answer(a, head, output));
    }
    for status in error_statuses(e) {
        let (name, _) = error_response(status);
        responses.insert(
            status.to_string(),
            json!({"$ref": format!("#/components/responses/{name}")}),
        );
    }
    if e.path.starts_with("/api/") {
        responses.insert(
            "5XX".into(),
            json!({"$ref": "#/components/responses/ServerError"}),
        );
    }
    op.insert("responses".into(), Value::Object(responses));
    op.insert("security".into(), security(e.auth));
    Value::Object(op)
}

fn generator(settings: SchemaSettings) -> SchemaGenerator {
    settings
        .with(|s| {
            s.definitions_path = "/components/schemas".into();
            s.meta_schema = None;
        })
        .into_generator()
}

/// The whole document. Fails only if one type name would need two
/// different schemas (a request and an answer type sharing a name).
pub fn document() -> Result<Value, String> {
    // Requests are described as serde reads them, answers as it writes them.
    let mut input = generator(SchemaSettings::draft2020_12().for_deserialize());
    let mut output = generator(SchemaSettings::draft2020_12().for_serialize());

    let mut paths = Map::new();
    for e in ep::ALL {
        let item = paths
            .entry(e.path)
            .or_insert_with(|| Value::Object(Map::new()));
        for (i, method) in e.method.names().iter().enumerate() {
            let op = operation(e, i > 0, &mut input, &mut output);
            if let Value::Object(item) = item {
                item.insert((*method).to_owned(), op);
            }
        }
    }

    let error = ep::error_schema(&mut output);
    let mut schemas = output.take_definitions(true);
    for (name, schema) in input.take_definitions(true) {
        match schemas.get(&name) {
            Some(other) if other != &schema => {
                return Err(format!(
                    "type {name} has one schema as a request and another as an answer"
                ));
            }
            _ => {
                schemas.insert(name, schema);
            }
        }
    }

    let mut statuses: BTreeSet<u16> = ep::ALL.iter().flat_map(|e| error_statuses(e)).collect();
    statuses.insert(500);
    let responses: Map<String, Value> = statuses
        .into_iter()
        .map(|s| {
            let (name, description) = error_response(s);
            let mut body = json!({"description": description,
                              "content": {"application/json": {"schema": error}}});
            if s == 429 {
                body["headers"] = json!({"Retry-After": {
                    "description": "Seconds until the next request from this address is allowed.",
                    "schema": {"type": "integer", "minimum": 1}}});
            }
            (name.to_owned(), body)
        })
        .collect();

    let tags: Vec<Value> = TAGS
        .iter()
        .map(|(name, description)| json!({"name": name, "description": description}))
        .collect();

    Ok(json!({
        "openapi": "3.1.0",
        "info": {
            "title": "roomcast",
            "version": env!("CARGO_PKG_VERSION"),
            "description": DESCRIPTION,
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "tags": tags,
        "paths": paths,
        "components": {
            "schemas": schemas,
            "responses": responses,
            "securitySchemes": {
                "adminToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The admin token (`--admin-token` / `ROOMCAST_ADMIN_TOKEN`; \
    generated, stored in the data dir and printed once when unset).",
                },
                "linkToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A room link token: for WHEP the viewer token of a private \
    room's `watch_url` (`#t=`); for WHIP the token of `POST /api/v1/rooms/{room_id}/ingests`.",
                },
            },
        },
    }))
}

/// The `GET /api/openapi.json` route: the document is built once, at start.
pub fn route() -> BoxedFilter<(warp::reply::Response,)> {
    let doc = document().and_then(|d| {
        serde_json::to_vec(&d)
            .map(bytes::Bytes::from)
            .map_err(|e| e.to_string())
    });
    if let Err(e) = &doc {
        tracing::error!("the OpenAPI document cannot be built: {e}");
    }
    ep::route0(&ep::OPENAPI)
        .map(move || match &doc {
            Ok(body) => {
                let mut resp = Response::new(warp::hyper::Body::from(body.clone()));
                let h = resp.headers_mut();
                h.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
                // API explorers on other origins may load it.
                h.insert(
                    header::ACCESS_CONTROL_ALLOW_ORIGIN,
                    HeaderValue::from_static("*"),
                );
                resp
            }
            Err(_) => errors::reply(&ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the OpenAPI document could not be built",
            )),
        })
        .map(Reply::into_response)
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    out.push(r);
                }
                m.values().for_each(|v| refs(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }

    #[test]
    fn the_document_builds_and_every_reference_resolves() {
        let doc = document().unwrap();
        let mut found = Vec::new();
        refs(&doc, &mut found);
        assert!(found.len() > 50);
        for r in found {
            let pointer = r.strip_prefix('#').unwrap();
            assert!(doc.pointer(pointer).is_some(), "{r} does not resolve");
        }
    }

    #[test]
    fn every_entry_is_documented_with_its_errors_and_auth() {
        let doc = document().unwrap();
        for e in ep::ALL {
            for m in e.method.names() {
                let op = &doc["paths"][e.path][m];
                assert!(op.is_object(), "{m} {}", e.path);
                for s in error_statuses(e) {
                    assert!(op["responses"][s.to_string()].is_object(), "{m} {}", e.path);
                }
            }
        }
        let create = &doc["paths"]["/api/v1/rooms"]["post"];
        assert_eq!(
            create["responses"]["201"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/RoomView"
        );
        assert_eq!(create["security"], json!([{"adminToken": []}, {}]));
        assert_eq!(doc["paths"]["/healthz"]["get"]["security"], json!([]));
        let body = &doc["components"]["schemas"]["CreateRoom"];
        assert_eq!(body["required"], json!(["name"]));
        assert_eq!(body["properties"]["name"]["maxLength"], 100);
        let error = &doc["components"]["schemas"]["Error"];
        assert_eq!(error["required"], json!(["error"]));
        let room = &doc["components"]["schemas"]["RoomView"];
        let required = room["required"].as_array().unwrap();
        assert!(required.contains(&json!("invite_url")));
        assert!(
            !required.contains(&json!("participants")),
            "skipped when absent"
        );
    }
}
