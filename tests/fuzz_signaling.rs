//! Property tests of the signaling protocol's parser: whatever a client
//! sends in a text frame — arbitrary text, arbitrary JSON, valid messages
//! with bytes or fields mutated — `parse_client_message` answers `Ok` or an
//! error text (short enough to send back), never panics, and every message
//! it accepts survives a round trip through the wire format.
//!
//! 256 cases per property (`PROPTEST_CASES` overrides: see docs/testing.md).

#[path = "common/proptest_config.rs"]
mod proptest_config;

use proptest::prelude::*;
use roomcast::signaling::{MAX_MESSAGE_BYTES, parse_client_message};
use serde_json::{Value, json};

/// Longest error text sent back for a bad frame.
const MAX_ERROR_TEXT: usize = roomcast::signaling::MAX_ERROR_TEXT;

/// One valid message of every type, as a client would send it.
fn corpus() -> Vec<Value> {
    vec![
        json!({"type": "join", "version": 1, "token": "eyJ.abc", "display_name": "Ada",
               "session": "s.t", "device": "d_123"}),
        json!({"type": "join", "token": "t", "display_name": "Bob"}),
        json!({"type": "publish_offer", "sdp": "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"}),
        json!({"type": "subscribe_answer", "sdp": "v=0\r\n"}),
        json!({"type": "ice", "pc": "publish",
               "candidate": "candidate:1 1 UDP 2122260223 127.0.0.1 50000 typ host",
               "sdp_mline_index": 1}),
        json!({"type": "ice", "pc": "subscribe", "candidate": ""}),
        json!({"type": "set_muted", "audio": true, "video": false}),
        json!({"type": "set_visible", "participants": ["p_abc", "p_def"]}),
        json!({"type": "set_visible", "participants": null}),
        json!({"type": "set_locked", "locked": true}),
        json!({"type": "set_invites", "enabled": false}),
        json!({"type": "rotate_invite"}),
        json!({"type": "close_room"}),
        json!({"type": "remove_participant", "participant_id": "p_abc", "ban": true}),
        json!({"type": "mute_participant", "participant_id": "p_abc", "audio": true}),
        json!({"type": "start_recording", "kind": "tracks", "format": "mkv", "layout": "speaker"}),
        json!({"type": "start_recording"}),
        json!({"type": "stop_recording"}),
        json!({"type": "start_broadcast", "renditions": ["720p", "360p"]}),
        json!({"type": "stop_broadcast"}),
        json!({"type": "admit", "participant_id": "p_abc"}),
        json!({"type": "deny", "participant_id": "p_abc"}),
        json!({"type": "ping"}),
        json!({"type": "leave"}),
    ]
}

/// Field names and `type` values the protocol knows, so that generated
/// objects often come close to valid messages.
const KEYS: &[&str] = &[
    "type",
    "version",
    "token",
    "session",
    "display_name",
    "device",
    "sdp",
    "pc",
    "candidate",
    "sdp_mline_index",
    "audio",
    "video",
    "participants",
    "locked",
    "enabled",
    "participant_id",
    "ban",
    "kind",
    "format",
    "layout",
    "renditions",
];
const TYPES: &[&str] = &[
    "join",
    "publish_offer",
    "subscribe_answer",
    "ice",
    "set_muted",
    "set_visible",
    "set_locked",
    "set_invites",
    "rotate_invite",
    "close_room",
    "remove_participant",
    "mute_participant",
    "start_recording",
    "stop_recording",
    "start_broadcast",
    "stop_broadcast",
    "admit",
    "deny",
    "ping",
    "leave",
];

/// Strings that tend to break parsers.
fn nasty_string() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("p_".to_owned()),
        Just("p_abc".to_owned()),
        Just("publish".to_owned()),
        Just("\u{0}".to_owned()),
        Just("\u{feff}".to_owned()),
        Just("\r\n".to_owned()),
        Just("💥".repeat(50)),
        Just("a".repeat(5000)),
        "\\PC{0,40}",
        any::<String>(),
    ]
}

/// Numbers at and around the edges of every integer type a field may have.
fn nasty_number() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!(0)),
        Just(json!(1)),
        Just(json!(-1)),
        Just(json!(u32::MAX)),
        Just(json!(u64::from(u32::MAX) + 1)),
        Just(json!(u64::MAX)),
        Just(json!(i64::MIN)),
        Just(json!(1.5)),
        Just(json!(1e300)),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
    ]
}

/// Any JSON value, nested a few levels, with protocol keys among the random ones.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        nasty_number(),
        nasty_string().prop_map(Value::String),
        prop::sample::select(TYPES).prop_map(|t| json!(t)),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        let key = prop_oneof![
            3 => prop::sample::select(KEYS).prop_map(str::to_owned),
            1 => "\\PC{0,12}",
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(key, inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// An object with a known `type` and fields drawn from the protocol's.
fn message_like() -> impl Strategy<Value = Value> {
    (
        prop::sample::select(TYPES),
        prop::collection::btree_map(prop::sample::select(KEYS), json_value(), 0..6),
    )
        .prop_map(|(t, fields)| {
            let mut m: serde_json::Map<String, Value> =
                fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
            m.insert("type".into(), json!(t));
            Value::Object(m)
        })
}

/// A valid message with one field replaced, removed or added.
fn mutated_message() -> impl Strategy<Value = Value> {
    (
        prop::sample::select(corpus()),
        prop::sample::select(KEYS),
        json_value(),
        0..3u8,
    )
        .prop_map(|(mut msg, key, value, how)| {
            if let Value::Object(m) = &mut msg {
                match how {
                    0 => {
                        m.insert(key.to_owned(), value);
                    }
                    1 => {
                        m.remove(key);
                    }
                    _ => {
                        // Replace the value of a field the message has.
                        let keys: Vec<String> = m.keys().cloned().collect();
                        let k = &keys[key.len() % keys.len()];
                        m.insert(k.clone(), value);
                    }
                }
            }
            msg
        })
}

/// Byte-level edits of a valid message's text: cut, insert, overwrite, duplicate.
fn mutated_text() -> impl Strategy<Value = String> {
    (
        prop::sample::select(corpus()),
        prop::collection::vec(
            (
                any::<prop::sample::Index>(),
                0..4u8,
                "\\PC{0,3}|[{}\\[\\]\":,\\\\]",
            ),
            1..5,
        ),
    )
        .prop_map(|(msg, edits)| {
            let mut text = msg.to_string().into_bytes();
            for (at, how, insert) in edits {
                let i = at.index(text.len() + 1);
                match how {
                    0 => text.truncate(i),
                    1 => {
                        let tail = text.split_off(i);
                        text.extend_from_slice(insert.as_bytes());
                        text.extend(tail);
                    }
                    2 if i < text.len() => text[i] = insert.bytes().next().unwrap_or(b'"'),
                    _ => {
                        let copy = text[i..].to_vec();
                        text.extend(copy);
                    }
                }
            }
            // Frames are text: invalid UTF-8 never reaches the parser.
            String::from_utf8_lossy(&text).into_owned()
        })
}

/// The property every input must satisfy.
fn check(text: &str) -> Result<(), TestCaseError> {
    match parse_client_message(text) {
        Ok(msg) => {
            let wire = serde_json::to_string(&msg)
                .map_err(|e| TestCaseError::fail(format!("accepted but not writable: {e}")))?;
            let again = parse_client_message(&wire);
            prop_assert_eq!(again.as_ref(), Ok(&msg), "round trip of {}", wire);
            prop_assert!(text.len() <= MAX_MESSAGE_BYTES);
        }
        Err(e) => {
            prop_assert!(!e.is_empty());
            prop_assert!(
                e.len() <= MAX_ERROR_TEXT,
                "error text of {} bytes: {}",
                e.len(),
                &e[..e.floor_char_boundary(200)]
            );
        }
    }
    Ok(())
}

/// 256 cases unless `PROPTEST_CASES` says otherwise (see `proptest_config`).
fn config() -> ProptestConfig {
    proptest_config::config(file!())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_text_is_answered(text in any::<String>()) {
        check(&text)?;
    }

    #[test]
    fn json_looking_text_is_answered(text in "[{}\\[\\]\":,a-z_0-9 .-]{0,120}") {
        check(&text)?;
    }

    #[test]
    fn arbitrary_json_is_answered(value in json_value()) {
        check(&value.to_string())?;
    }

    #[test]
    fn objects_of_protocol_fields_are_answered(value in message_like()) {
        check(&value.to_string())?;
    }

    #[test]
    fn mutated_messages_are_answered(value in mutated_message()) {
        check(&value.to_string())?;
    }

    #[test]
    fn mutated_message_text_is_answered(text in mutated_text()) {
        check(&text)?;
    }

    #[test]
    fn oversized_frames_are_refused_without_parsing(pad in (MAX_MESSAGE_BYTES - 64)..(MAX_MESSAGE_BYTES + 64)) {
        let text = format!(r#"{{"type":"publish_offer","sdp":"{}"}}"#, "a".repeat(pad));
        let result = parse_client_message(&text);
        if text.len() > MAX_MESSAGE_BYTES {
            prop_assert!(result.is_err());
        } else {
            prop_assert!(result.is_ok());
        }
        check(&text)?;
    }
}

#[test]
fn the_corpus_is_valid_and_covers_every_message_type() {
    let mut seen = std::collections::BTreeSet::new();
    for msg in corpus() {
        let parsed = parse_client_message(&msg.to_string());
        assert!(parsed.is_ok(), "{msg}: {parsed:?}");
        seen.insert(msg["type"].as_str().unwrap_or_default().to_owned());
    }
    let types: std::collections::BTreeSet<String> = TYPES.iter().map(|t| t.to_string()).collect();
    assert_eq!(seen, types);
    // A message the server sends is not one a client may send.
    assert!(parse_client_message(r#"{"type":"pong"}"#).is_err());
}
