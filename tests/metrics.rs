//! Observability: `/metrics` of a real server with two real participants
//! exchanging media (series present, values sensible, counters moving, the
//! exposition well-formed), and `--log-format json` writing JSON lines.

mod common;

use common::{Server, wait_for};
use roomcast::loadgen::peer::{PeerConfig, TestPeer, VideoCodec};
use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// One scrape: `name{labels}` (as written) → value.
type Scrape = BTreeMap<String, f64>;

/// Whether `s` is a metric or label name.
fn is_name(s: &str, colon: bool) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || (colon && c == ':'))
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || (colon && c == ':'))
}

/// Checks `{k="v",…}` (escapes `\\`, `\"`, `\n` inside values).
fn labels_ok(labels: &str) -> bool {
    let Some(inner) = labels.strip_prefix('{').and_then(|l| l.strip_suffix('}')) else {
        return false;
    };
    let mut rest = inner;
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once("=\"") else {
            return false;
        };
        if !is_name(key, false) {
            return false;
        }
        // Find the closing quote, skipping escaped characters.
        let bytes = after.as_bytes();
        let mut i = 0;
        let mut end = None;
        while i < bytes.len() {
            match bytes[i] {
                b'\\' => {
                    if !matches!(bytes.get(i + 1), Some(b'\\' | b'"' | b'n')) {
                        return false;
                    }
                    i += 2;
                }
                b'"' => {
                    end = Some(i);
                    break;
                }
                b'\n' => return false,
                _ => i += 1,
            }
        }
        let Some(end) = end else { return false };
        rest = &after[end + 1..];
        if let Some(r) = rest.strip_prefix(',') {
            rest = r;
        } else if !rest.is_empty() {
            return false;
        }
    }
    true
}

/// Parses a text exposition, failing on anything malformed: every line is a
/// `# HELP`/`# TYPE` comment or `name{labels} value`, every sample belongs
/// to a family declared before it (declared once), counters end in `_total`.
fn parse(text: &str) -> Scrape {
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut helped: HashSet<String> = HashSet::new();
    let mut out = Scrape::new();
    assert!(
        text.ends_with('\n'),
        "the exposition must end with a newline"
    );
    for line in text.lines() {
        if let Some(c) = line.strip_prefix('#') {
            let mut parts = c.trim_start().splitn(3, ' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some("HELP"), Some(name), Some(help)) => {
                    assert!(is_name(name, true), "bad name in {line:?}");
                    assert!(!help.trim().is_empty(), "empty help: {line:?}");
                    assert!(helped.insert(name.to_owned()), "HELP twice: {line:?}");
                }
                (Some("TYPE"), Some(name), Some(kind)) => {
                    assert!(
                        matches!(
                            kind,
                            "counter" | "gauge" | "histogram" | "summary" | "untyped"
                        ),
                        "{line:?}"
                    );
                    if kind == "counter" {
                        assert!(name.ends_with("_total"), "counter without _total: {line:?}");
                    }
                    assert!(
                        types.insert(name.to_owned(), kind.to_owned()).is_none(),
                        "TYPE twice: {line:?}"
                    );
                }
                _ => panic!("unexpected comment line {line:?}"),
            }
            continue;
        }
        assert!(!line.trim().is_empty(), "empty line in the exposition");
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let (name, labels) = match series.find('{') {
            Some(i) => (&series[..i], &series[i..]),
            None => (series, ""),
        };
        assert!(is_name(name, true), "bad metric name in {line:?}");
        assert!(
            labels.is_empty() || labels_ok(labels),
            "bad labels in {line:?}"
        );
        assert!(types.contains_key(name), "sample before its TYPE: {line:?}");
        assert!(
            out.insert(series.to_owned(), value).is_none(),
            "series twice: {line:?}"
        );
    }
    out
}

fn scrape(s: &Server) -> Scrape {
    let r = common::fetch("GET", &s.url("/metrics"), &[], None);
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("text/plain")),
        "content type {:?}",
        r.header("content-type")
    );
    parse(&r.text())
}

fn get(m: &Scrape, series: &str) -> f64 {
    *m.get(series)
        .unwrap_or_else(|| panic!("no {series} in /metrics: {m:#?}"))
}

/// Counters that must have moved between two scrapes while media flows.
const MOVING: &[&str] = &[
    "roomcast_media_received_bytes_total{kind=\"audio\"}",
    "roomcast_media_received_bytes_total{kind=\"video\"}",
    "roomcast_media_sent_bytes_total{kind=\"audio\"}",
    "roomcast_media_sent_bytes_total{kind=\"video\"}",
    "roomcast_media_received_packets_total{kind=\"video\"}",
    "roomcast_media_sent_packets_total{kind=\"video\"}",
    "process_cpu_seconds_total",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_follow_a_call() {
    let server = Server::start();
    let room = server.create_room(r#"{"name": "Metrics"}"#);
    let link = room["invite_url"].as_str().unwrap().to_owned();

    // Before anyone joins.
    let empty = scrape(&server);
    assert_eq!(get(&empty, "roomcast_rooms"), 1.0);
    assert_eq!(get(&empty, "roomcast_participants"), 0.0);
    assert_eq!(get(&empty, "roomcast_tracks{kind=\"video\"}"), 0.0);

    let mut a = PeerConfig::new(&link, "A");
    a.codec = VideoCodec::Vp8;
    let mut b = PeerConfig::new(&link, "B");
    b.codec = VideoCodec::H264;
    b.color = 0x00ff00;
    let a = TestPeer::join(a).await.expect("A joins");
    let b = TestPeer::join(b).await.expect("B joins");
    wait_for("media both ways", Duration::from_secs(30), || {
        let frames = |p: &TestPeer, from| {
            p.stats()
                .remote
                .get(from)
                .is_some_and(|r| r.video_frames >= 30 && r.audio_samples >= 48_000)
        };
        (frames(&a, &b.id) && frames(&b, &a.id)).then_some(())
    })
    .await;

    let first = scrape(&server);
    assert_eq!(get(&first, "roomcast_rooms"), 1.0);
    assert_eq!(get(&first, "roomcast_participants"), 2.0);
    assert_eq!(get(&first, "roomcast_tracks{kind=\"audio\"}"), 2.0);
    assert_eq!(get(&first, "roomcast_tracks{kind=\"video\"}"), 2.0);
    assert_eq!(get(&first, "roomcast_rooms_recording"), 0.0);
    assert_eq!(get(&first, "roomcast_broadcasts"), 0.0);
    for series in MOVING {
        assert!(get(&first, series) > 0.0, "{series} is 0: {first:#?}");
    }
    // Bytes are RTP bytes: more than 12 (a header) per packet, less than a
    // UDP datagram.
    for dir in ["received", "sent"] {
        let bytes = get(
            &first,
            &format!("roomcast_media_{dir}_bytes_total{{kind=\"video\"}}"),
        );
        let packets = get(
            &first,
            &format!("roomcast_media_{dir}_packets_total{{kind=\"video\"}}"),
        );
        let per_packet = bytes / packets;
        assert!(
            (12.0..1500.0).contains(&per_packet),
            "{dir}: {per_packet} bytes per packet"
        );
    }
    // Loss on loopback: present, sane (never more than was sent).
    for dir in ["in", "out"] {
        let lost = get(
            &first,
            &format!("roomcast_media_packets_lost_total{{direction=\"{dir}\"}}"),
        );
        let received = get(
            &first,
            "roomcast_media_received_packets_total{kind=\"video\"}",
        ) + get(
            &first,
            "roomcast_media_received_packets_total{kind=\"audio\"}",
        );
        assert!(
            lost >= 0.0 && lost < received / 10.0 + 1.0,
            "lost {dir}: {lost} of {received}"
        );
    }
    for branch in [
        "participant",
        "recording",
        "broadcast",
        "viewer",
        "rtmp",
        "other",
    ] {
        let n = get(
            &first,
            &format!("roomcast_pipeline_errors_total{{branch=\"{branch}\"}}"),
        );
        assert_eq!(n, 0.0, "pipeline errors in {branch}");
    }
    for level in ["warning", "expected", "error"] {
        get(
            &first,
            &format!("roomcast_gstreamer_log_messages_total{{level=\"{level}\"}}"),
        );
    }
    get(&first, "roomcast_gstreamer_log_suppressed_total");
    // The process: a real RSS, threads for two participants' webrtcbins,
    // open sockets.
    assert!(get(&first, "process_resident_memory_bytes") > 10e6);
    assert!(get(&first, "process_threads") >= 10.0);
    assert!(get(&first, "process_open_fds") >= 5.0);
    assert!(get(&first, "process_max_fds") >= get(&first, "process_open_fds"));
    assert!(get(&first, "process_start_time_seconds") > 1.6e9);

    // Counters move while media flows (polled, not slept on).
    let second = wait_for("counters to move", Duration::from_secs(15), || {
        let next = scrape(&server);
        MOVING
            .iter()
            .all(|s| get(&next, s) > get(&first, s))
            .then_some(next)
    })
    .await;
    // Counters never go down; the gauges stay.
    for (series, v) in &first {
        if series.contains("_total") {
            assert!(get(&second, series) >= *v, "{series} went down");
        }
    }
    assert_eq!(get(&second, "roomcast_participants"), 2.0);

    // One leaves: participants and tracks follow, counters keep their totals.
    let sent_before = get(&second, "roomcast_media_sent_bytes_total{kind=\"video\"}");
    b.leave().await;
    let after = wait_for("B gone from /metrics", Duration::from_secs(10), || {
        let m = scrape(&server);
        (get(&m, "roomcast_participants") == 1.0).then_some(m)
    })
    .await;
    assert_eq!(get(&after, "roomcast_tracks{kind=\"video\"}"), 1.0);
    assert_eq!(get(&after, "roomcast_tracks{kind=\"audio\"}"), 1.0);
    assert!(get(&after, "roomcast_media_sent_bytes_total{kind=\"video\"}") >= sent_before);
    drop(a);
}

#[test]
fn exposition_parser_rejects_malformed_lines() {
    let ok = "# HELP a_total A.\n# TYPE a_total counter\na_total{k=\"v\\\"x\",j=\"2\"} 3\n";
    assert_eq!(parse(ok).len(), 1);
    for bad in [
        "# TYPE a gauge\na{k=v} 1\n",
        "# TYPE a gauge\na 1 2 x\n",
        "a 1\n",
        "# TYPE a gauge\na{k=\"v\"}\n",
        "# TYPE a counter\na 1\n",
        "# TYPE a gauge\n9a 1\n",
    ] {
        let r = std::panic::catch_unwind(|| parse(bad));
        assert!(r.is_err(), "accepted {bad:?}");
    }
}

/// `--log-format json`: every line on stderr is one JSON object with a
/// level, a target and fields.
#[test]
fn json_logs_are_one_object_per_line() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_roomcast"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--ice-local-ip",
            "127.0.0.1",
            "--admin-token",
            common::ADMIN_TOKEN,
            "--log-format",
            "json",
        ])
        .arg("--data-dir")
        .arg(tmp.path())
        .env("RUST_LOG", "info")
        .env_remove("GST_DEBUG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start roomcast");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    let listening = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = rx.recv_timeout(left) else {
            break None;
        };
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"));
        assert!(v["level"].is_string(), "no level: {line}");
        assert!(v["target"].is_string(), "no target: {line}");
        assert!(v["fields"]["message"].is_string(), "no message: {line}");
        let done = v["fields"]["message"] == "roomcast listening";
        seen.push(line);
        if done {
            break Some(v);
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    let v = listening.unwrap_or_else(|| panic!("no 'roomcast listening' line in {seen:#?}"));
    assert!(v["fields"]["bound"].is_string(), "{v}");
    assert!(v["fields"]["gstreamer"].is_string(), "{v}");
    // The admin token never reaches the log.
    assert!(!seen.iter().any(|l| l.contains(common::ADMIN_TOKEN)));
}
