//! Broadcasts and ingest, checked the way viewers and encoders see them: HLS
//! fetched over HTTP and decoded by ffprobe, an RTMP push read back from a
//! real nginx-rtmp (which is restarted under it), WHEP viewers that decode,
//! and WHIP publishers whose media the room's participants decode.

mod common;

use common::{
    Fetched, Nginx, Server, VideoProbe, color_close, fetch, ffprobe_video, free_port, raw_get,
    wait_for,
};
use roomcast::ids::ParticipantId;
use roomcast::loadgen::peer::{PeerConfig, TestPeer};
use roomcast::loadgen::whip::{self, VideoCodec, WHIP_COLOR, WhepViewer, WhipPublisher, status_of};
use serde_json::Value;
use std::time::{Duration, Instant};

/// Every test here runs encoders, peers and decoders; on 2 cores, two at
/// once would turn deadlines into a measure of each other's load.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn join(room: &Value, name: &str, color: u32, freq: f64) -> TestPeer {
    let mut cfg = PeerConfig::new(room["host_url"].as_str().unwrap(), name);
    cfg.color = color;
    cfg.freq = freq;
    TestPeer::join(cfg).await.expect("join")
}

fn frames_from(p: &TestPeer, from: &ParticipantId) -> u64 {
    p.stats()
        .remote
        .get(from)
        .map(|r| r.video_frames)
        .unwrap_or(0)
}

/// Waits until each peer decodes video from every other.
async fn mesh(peers: &[&TestPeer]) {
    wait_for(
        "media between participants",
        Duration::from_secs(20),
        || {
            peers
                .iter()
                .all(|p| {
                    peers
                        .iter()
                        .filter(|q| q.id != p.id)
                        .all(|q| frames_from(p, &q.id) > 10)
                })
                .then_some(())
        },
    )
    .await;
}

fn start_broadcast(s: &Server, room: &str, body: &str) -> Value {
    let (st, b) = s.admin_within(
        "POST",
        &format!("/api/v1/rooms/{room}/broadcasts"),
        Some(body),
    );
    assert_eq!(st, 201, "start broadcast {body}: {b}");
    let id = b["id"].as_str().expect("broadcast id");
    assert!(id.starts_with("b_"), "{b}");
    assert_eq!(b["room_id"], room, "{b}");
    assert!(
        matches!(b["state"].as_str(), Some("starting" | "live")),
        "{b}"
    );
    assert!(b["ended_at"].is_null(), "{b}");
    b
}

fn get_broadcast(s: &Server, id: &str) -> Value {
    let (st, b) = s.admin_within("GET", &format!("/api/v1/broadcasts/{id}"), None);
    assert_eq!(st, 200, "GET broadcast: {b}");
    b
}

/// Polls the broadcast until `ok` holds; panics at once if it failed or ended.
async fn wait_broadcast(
    s: &Server,
    id: &str,
    what: &str,
    timeout: Duration,
    ok: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let b = get_broadcast(s, id);
        assert!(
            !matches!(b["state"].as_str(), Some("failed" | "ended")),
            "broadcast {} while waiting for {what}: {b}",
            b["state"]
        );
        if ok(&b) {
            return b;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}: {b}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until every viewer has decoded `more` frames beyond `from` (and
/// some audio); on timeout, says what each one that lags saw.
async fn viewers_decode(viewers: &[WhepViewer], from: &[u64], more: u64, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let lagging: Vec<(usize, whip::ViewerStats)> = viewers
            .iter()
            .enumerate()
            .filter(|(i, v)| {
                v.video_frames() < from.get(*i).copied().unwrap_or(0) + more
                    || v.audio_buffers() == 0
            })
            .map(|(i, v)| (i, v.stats()))
            .collect();
        if lagging.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "after {timeout:?}, {} of {} viewers have not decoded {more} more frames: {lagging:#?}",
            lagging.len(),
            viewers.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn live(s: &Server, id: &str) -> Value {
    let b = wait_broadcast(
        s,
        id,
        "the broadcast to be live",
        Duration::from_secs(20),
        |b| b["state"] == "live",
    )
    .await;
    assert!(b["started_at"].is_string(), "{b}");
    b
}

/// DELETE, then `ended` (with `ended_at`) within 5 s.
async fn end_broadcast(s: &Server, id: &str) -> Value {
    let (st, body) = s.admin_within("DELETE", &format!("/api/v1/broadcasts/{id}"), None);
    assert_eq!(st, 204, "DELETE broadcast: {body}");
    let t = Instant::now();
    let b = wait_for("the broadcast to end", Duration::from_secs(5), || {
        let b = get_broadcast(s, id);
        (b["state"] == "ended").then_some(b)
    })
    .await;
    assert!(b["ended_at"].is_string(), "{b}");
    eprintln!(
        "broadcast {id} ended {} ms after DELETE",
        t.elapsed().as_millis()
    );
    b
}

fn get(url: &str) -> Fetched {
    fetch("GET", url, &[], None)
}

async fn get_async(url: &str) -> Fetched {
    let url = url.to_owned();
    tokio::task::spawn_blocking(move || get(&url))
        .await
        .unwrap()
}

/// ffprobe off the async threads, with a bound on stream time and on wall time.
async fn probe(url: &str, extra: &[&str]) -> VideoProbe {
    let url = url.to_owned();
    let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    let t = Instant::now();
    let p = tokio::task::spawn_blocking(move || {
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        ffprobe_video(&url, &extra, Duration::from_secs(40))
    })
    .await
    .unwrap()
    .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("ffprobe: {p:?} in {} ms", t.elapsed().as_millis());
    p
}

/// Reads 4 s of a live HLS playlist (from its third-last segment on).
async fn probe_hls(url: &str) -> VideoProbe {
    probe(url, &["-read_intervals", "%+4"]).await
}

fn resolve(base: &str, relative: &str) -> String {
    url::Url::parse(base)
        .and_then(|b| b.join(relative))
        .unwrap_or_else(|e| panic!("{relative} against {base}: {e}"))
        .to_string()
}

/// One `#EXT-X-STREAM-INF` of a master playlist.
#[derive(Debug)]
struct Variant {
    bandwidth: u64,
    resolution: Option<String>,
    codecs: Option<String>,
    uri: String,
}

/// The value of `key=` in an attribute list (quotes removed).
fn attribute(list: &str, key: &str) -> Option<String> {
    // Quoted values may hold commas (CODECS="avc1…,mp4a…").
    let mut rest = list;
    while !rest.is_empty() {
        let (k, after) = rest.split_once('=')?;
        let (value, next) = if let Some(q) = after.strip_prefix('"') {
            let end = q.find('"')?;
            (&q[..end], q[end + 1..].trim_start_matches(','))
        } else {
            match after.split_once(',') {
                Some((v, n)) => (v, n),
                None => (after, ""),
            }
        };
        if k.trim() == key {
            return Some(value.to_owned());
        }
        rest = next;
    }
    None
}

fn variants(master: &str) -> Vec<Variant> {
    let lines: Vec<&str> = master.lines().map(str::trim).collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(attrs) = line.strip_prefix("#EXT-X-STREAM-INF:") else {
            continue;
        };
        let uri = lines[i + 1..]
            .iter()
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .unwrap_or_else(|| panic!("no URI after {line}"));
        out.push(Variant {
            bandwidth: attribute(attrs, "BANDWIDTH")
                .and_then(|b| b.parse().ok())
                .unwrap_or(0),
            resolution: attribute(attrs, "RESOLUTION"),
            codecs: attribute(attrs, "CODECS"),
            uri: uri.to_string(),
        });
    }
    out
}

/// Segment URIs of a media playlist.
fn segments(playlist: &str) -> Vec<String> {
    playlist
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

fn tag_value(playlist: &str, tag: &str) -> Option<u64> {
    playlist
        .lines()
        .find_map(|l| l.trim().strip_prefix(tag))
        .and_then(|v| v.trim().parse().ok())
}

/// `Cache-Control: max-age=N` → N.
fn max_age(cache_control: &str) -> Option<u64> {
    cache_control
        .split(',')
        .find_map(|d| d.trim().strip_prefix("max-age="))
        .and_then(|v| v.trim().parse().ok())
}

/// Headers a CDN needs on a playlist: the HLS type, a short cache life, CORS.
fn check_playlist_headers(url: &str, r: &Fetched) {
    assert_eq!(r.status, 200, "{url}");
    let ct = r.header("Content-Type").unwrap_or_default();
    assert!(
        ct.to_ascii_lowercase()
            .starts_with("application/vnd.apple.mpegurl"),
        "{url}: Content-Type {ct:?}"
    );
    let cc = r.header("Cache-Control").unwrap_or_default().to_owned();
    assert!(
        cc.contains("no-cache") || cc.contains("no-store") || max_age(&cc).is_some_and(|a| a <= 2),
        "{url}: Cache-Control {cc:?} (a playlist changes every segment)"
    );
    assert_eq!(
        r.header("Access-Control-Allow-Origin"),
        Some("*"),
        "{url}: {:?}",
        r.headers
    );
}

/// Headers a CDN needs on a segment: MPEG-TS, cached for long, CORS.
fn check_segment_headers(url: &str, r: &Fetched) {
    assert_eq!(r.status, 200, "{url}");
    assert_eq!(r.header("Content-Type"), Some("video/mp2t"), "{url}");
    let cc = r.header("Cache-Control").unwrap_or_default().to_owned();
    assert!(
        cc.contains("immutable") || max_age(&cc).is_some_and(|a| a >= 60),
        "{url}: Cache-Control {cc:?} (a segment never changes)"
    );
    assert_eq!(r.header("Access-Control-Allow-Origin"), Some("*"), "{url}");
    assert_eq!(r.body.first(), Some(&0x47), "{url}: not MPEG-TS");
}

/// `seg00042.3.ts` → (42, 3).
fn part_of(uri: &str) -> (u64, u32) {
    let stem = uri.strip_prefix("seg").and_then(|r| r.strip_suffix(".ts"));
    stem.and_then(|r| r.split_once('.'))
        .and_then(|(m, p)| Some((m.parse().ok()?, p.parse().ok()?)))
        .unwrap_or_else(|| panic!("not a part name: {uri}"))
}

/// The URI of the playlist's `EXT-X-PRELOAD-HINT`.
fn preload_hint(playlist: &str) -> String {
    playlist
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-PRELOAD-HINT:"))
        .and_then(|a| attribute(a, "URI"))
        .unwrap_or_else(|| panic!("no preload hint in\n{playlist}"))
}

/// Low-Latency HLS on a live media playlist: parts listed and hinted,
/// blocking reloads and hinted parts held until written, parts that
/// decode and add up to their segment, bad delivery directives refused.
async fn check_low_latency(url: &str, width: u64, height: u64) {
    let text = get_async(url).await.text();
    for tag in [
        "#EXT-X-PART-INF:PART-TARGET=",
        "CAN-BLOCK-RELOAD=YES",
        "PART-HOLD-BACK=",
    ] {
        assert!(text.contains(tag), "no {tag} in\n{text}");
    }
    let part_target: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-PART-INF:PART-TARGET="))
        .and_then(|v| v.trim().parse().ok())
        .expect("PART-TARGET");
    assert!((0.2..=1.0).contains(&part_target), "{text}");

    // A blocking reload for the hinted part answers once it is listed.
    let hint = preload_hint(&text);
    let (msn, part) = part_of(&hint);
    let t = Instant::now();
    let r = get_async(&format!("{url}?_HLS_msn={msn}&_HLS_part={part}")).await;
    let waited = t.elapsed();
    assert_eq!(r.status, 200, "{}", r.text());
    let blocked = r.text();
    assert!(
        blocked.contains(&format!("URI=\"{hint}\""))
            && !blocked.contains(&format!("PRELOAD-HINT:TYPE=PART,URI=\"{hint}\"")),
        "{hint} not listed as a part after {waited:?}:\n{blocked}"
    );
    assert!(waited < Duration::from_secs(3), "blocked {waited:?}");
    let cc = r.header("Cache-Control").unwrap_or_default().to_owned();
    assert!(
        max_age(&cc).is_some_and(|a| a >= 1),
        "blocking reload Cache-Control {cc:?}"
    );

    // The part hinted now is held until written, then served whole.
    let next = preload_hint(&blocked);
    let t = Instant::now();
    let r = get_async(&resolve(url, &next)).await;
    eprintln!(
        "hinted part {next}: {} bytes after {} ms",
        r.body.len(),
        t.elapsed().as_millis()
    );
    check_segment_headers(&next, &r);
    assert_eq!(r.body.len() % 188, 0, "{next}: whole TS packets");

    // A segment listed with its parts is exactly its parts, in order; its
    // first part starts with a keyframe and decodes on its own.
    let lines: Vec<&str> = blocked.lines().collect();
    let (seg_line, _) = lines
        .iter()
        .enumerate()
        .find(|(i, l)| {
            !l.starts_with('#')
                && *i > 0
                && lines[i - 1].starts_with("#EXTINF")
                && lines[i - 2].starts_with("#EXT-X-PART:")
        })
        .unwrap_or_else(|| panic!("no segment listed with parts:\n{blocked}"));
    let seg = lines[seg_line];
    let (seg_msn, _) = part_of(&format!("{}.0.ts", seg.trim_end_matches(".ts")));
    let parts: Vec<String> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("#EXT-X-PART:"))
        .filter_map(|a| attribute(a, "URI"))
        .filter(|u| part_of(u).0 == seg_msn)
        .collect();
    assert!(parts.len() >= 3, "{seg}: parts {parts:?}");
    let whole = get_async(&resolve(url, seg)).await;
    assert_eq!(whole.status, 200, "{seg}");
    let mut joined = Vec::new();
    for p in &parts {
        let r = get_async(&resolve(url, p)).await;
        check_segment_headers(p, &r);
        joined.extend(r.body);
    }
    assert!(
        joined == whole.body,
        "{seg} ({} bytes) is not its parts ({} bytes)",
        whole.body.len(),
        joined.len()
    );
    assert!(
        blocked.contains(&format!("URI=\"{}\",INDEPENDENT=YES", parts[0])),
        "{} not independent:\n{blocked}",
        parts[0]
    );
    let first = probe(&resolve(url, &parts[0]), &[]).await;
    assert!(first.frames >= 5, "{}: {first:?}", parts[0]);
    assert_eq!((first.width, first.height), (width, height), "{}", parts[0]);

    // Delivery directives the spec says to refuse.
    for query in [
        "_HLS_part=1".to_owned(),
        format!("_HLS_msn={}", msn + 10),
        "_HLS_msn=x".to_owned(),
    ] {
        let r = get_async(&format!("{url}?{query}")).await;
        assert_eq!(r.status, 400, "?{query}: {}", r.text());
    }
}

/// Waits until the media playlist at `url` lists at least `n` segments.
async fn playlist_with(url: &str, n: usize, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let r = get_async(url).await;
        if r.status == 200 {
            let text = r.text();
            if segments(&text).len() >= n {
                return text;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{url}: fewer than {n} segments after {timeout:?}: {} {}",
            r.status,
            r.text()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The master playlist, once it is there.
async fn master_playlist(url: &str) -> Fetched {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = get_async(url).await;
        if r.status == 200 && r.text().contains("#EXT-X-STREAM-INF") {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "{url}: no master playlist: {} {}",
            r.status,
            r.text()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Segment files (`seg00042.ts`) and LL-HLS part files (`seg00042.3.ts`)
/// in a directory (0 when it does not exist).
fn ts_files(dir: &std::path::Path) -> (usize, usize) {
    let names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("seg") && n.ends_with(".ts"))
                .collect()
        })
        .unwrap_or_default();
    let parts = names.iter().filter(|n| n.matches('.').count() == 2).count();
    (names.len() - parts, parts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hls_of_a_two_person_room_with_renditions() {
    let _one = ONE_AT_A_TIME.lock().await;
    let t0 = Instant::now();
    let s = Server::start();
    let room = s.create_room(r#"{"name": "On air"}"#);
    let rid = room["id"].as_str().unwrap().to_owned();
    let a = join(&room, "A", 0xd02020, 440.0).await;
    let b = join(&room, "B", 0x2040d0, 660.0).await;
    mesh(&[&a, &b]).await;

    let bc = start_broadcast(
        &s,
        &rid,
        r#"{"hls": true, "whep": false, "renditions": ["720p", "360p"]}"#,
    );
    let bid = bc["id"].as_str().unwrap().to_owned();
    assert_eq!(
        bc["renditions"],
        serde_json::json!(["720p", "360p"]),
        "{bc}"
    );
    assert_eq!(bc["source"], "composite", "the default source: {bc}");
    // The composite is encoded, once per rendition at most.
    let encoders = bc["encoders"].as_array().expect("encoders");
    assert!(!encoders.is_empty(), "a composite needs an encoder: {bc}");
    let hls_url = bc["hls_url"].as_str().expect("hls_url").to_owned();
    assert!(
        hls_url.ends_with(&format!("/hls/{bid}/index.m3u8")),
        "{hls_url}"
    );
    assert!(
        bc["watch_url"]
            .as_str()
            .is_some_and(|w| w.contains(&format!("/watch/{bid}"))),
        "{bc}"
    );
    let bc = live(&s, &bid).await;
    eprintln!("live after {} ms", t0.elapsed().as_millis());
    assert!(bc["viewers"]["hls"].is_u64(), "{bc}");

    // The master playlist lists both renditions, with relative URIs.
    let master = master_playlist(&hls_url).await;
    check_playlist_headers(&hls_url, &master);
    let text = master.text();
    assert!(text.starts_with("#EXTM3U"), "{text}");
    let vs = variants(&text);
    assert_eq!(vs.len(), 2, "{text}");
    let mut media = Vec::new();
    for (res, name) in [("1280x720", "720p"), ("640x360", "360p")] {
        let v = vs
            .iter()
            .find(|v| v.resolution.as_deref() == Some(res))
            .unwrap_or_else(|| panic!("no {res} variant in {text}"));
        assert_eq!(v.uri, format!("{name}/index.m3u8"), "{text}");
        assert!(v.bandwidth > 0, "{v:?}");
        assert!(
            v.codecs.as_deref().is_some_and(|c| c.contains("avc1")),
            "{v:?}"
        );
        let (w, h) = res.split_once('x').unwrap();
        media.push((
            name,
            resolve(&hls_url, &v.uri),
            w.parse::<u64>().unwrap(),
            h.parse::<u64>().unwrap(),
        ));
    }

    // Each rendition: ≥ 3 segments, then ≥ 90 frames of the right size.
    let mut first_segments = Vec::new();
    for (name, url, w, h) in &media {
        let playlist = playlist_with(url, 3, Duration::from_secs(30)).await;
        eprintln!(
            "{name}: 3 segments after {} ms:\n{playlist}",
            t0.elapsed().as_millis()
        );
        let r = get_async(url).await;
        check_playlist_headers(url, &r);
        let segs = segments(&playlist);
        let seg_url = resolve(url, &segs[0]);
        let seg = get_async(&seg_url).await;
        check_segment_headers(&seg_url, &seg);
        first_segments.push((name.to_string(), segs[0].clone(), seg_url));
        let p = probe_hls(url).await;
        assert!(p.frames >= 90, "{name}: {p:?}");
        assert_eq!((p.width, p.height), (*w, *h), "{name}");
    }
    let (_, url, w, h) = &media[0];
    check_low_latency(url, *w, *h).await;

    // Unknown files and paths out of the broadcast's directory.
    let base = format!("http://127.0.0.1:{}", s.port);
    for path in [
        format!("/hls/{bid}/nothing.ts"),
        format!("/hls/{bid}/720p/nothing.m3u8"),
        "/hls/b_doesnotexist000/index.m3u8".to_owned(),
    ] {
        let r = get_async(&format!("{base}{path}")).await;
        assert_eq!(r.status, 404, "{path}");
    }
    for path in [
        format!("/hls/{bid}/../../admin_token"),
        format!("/hls/{bid}/720p/../../../admin_token"),
        format!("/hls/{bid}/%2e%2e/%2e%2e/admin_token"),
        format!("/hls/{bid}/..%2f..%2fadmin_token"),
    ] {
        let (status, text) = raw_get(s.port, &path);
        assert!(status == 404 || status == 400, "{path}: {status}\n{text}");
        assert!(!text.contains(common::ADMIN_TOKEN), "{path} leaks a file");
    }

    // Old segments go: files on disk stay few, and the first segment of
    // each rendition is removed (from disk and from HTTP) while it runs.
    let dirs: Vec<_> = media
        .iter()
        .map(|(name, ..)| s.data_dir.join("hls").join(&bid).join(name))
        .collect();
    for d in &dirs {
        assert!(d.is_dir(), "no HLS directory {}", d.display());
    }
    let deadline = Instant::now() + Duration::from_secs(40);
    let (mut most, mut most_parts) = (0, 0);
    loop {
        for d in &dirs {
            let (segments, parts) = ts_files(d);
            most = most.max(segments);
            most_parts = most_parts.max(parts);
        }
        assert!(
            most <= 12,
            "{most} segments on disk: old ones are not deleted"
        );
        // Parts of the newest 4–5 segments, 5 or 6 each.
        assert!(
            most_parts <= 36,
            "{most_parts} parts on disk: old ones are not deleted"
        );
        let gone = first_segments.iter().zip(&dirs).all(|((_, seg, _), d)| {
            let file = seg.rsplit('/').next().unwrap();
            !d.join(file).exists()
        });
        if gone {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "first segments {first_segments:?} still on disk after 40 s"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for (name, _, url) in &first_segments {
        let r = get_async(url).await;
        assert_eq!(r.status, 404, "{name}: deleted segment {url}");
    }
    for (name, url, ..) in &media {
        let text = get_async(url).await.text();
        let seq = tag_value(&text, "#EXT-X-MEDIA-SEQUENCE:").unwrap_or(0);
        eprintln!(
            "{name}: media sequence {seq}, at most {most} files on disk, {} s in",
            t0.elapsed().as_secs()
        );
        assert!(seq > 0, "{name}: the playlist does not slide:\n{text}");
    }
    // Both participants kept receiving each other.
    let before = (frames_from(&a, &b.id), frames_from(&b, &a.id));
    wait_for("the call to go on", Duration::from_secs(5), || {
        (frames_from(&a, &b.id) > before.0 + 30 && frames_from(&b, &a.id) > before.1 + 30)
            .then_some(())
    })
    .await;

    // Players learn the end: each playlist gets #EXT-X-ENDLIST (or goes).
    end_broadcast(&s, &bid).await;
    let t = Instant::now();
    for (name, url, ..) in &media {
        let deadline = t + Duration::from_secs(5);
        loop {
            let r = get_async(url).await;
            if r.status == 404 || (r.status == 200 && r.text().contains("#EXT-X-ENDLIST")) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{name}, 5 s after the end: {} {}",
                r.status,
                r.text()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    eprintln!(
        "playlists closed {} ms after ended; hls test: {} s",
        t.elapsed().as_millis(),
        t0.elapsed().as_secs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rtmp_push_survives_an_nginx_restart() {
    let _one = ONE_AT_A_TIME.lock().await;
    let t0 = Instant::now();
    let mut nginx = Nginx::start(free_port());
    let target = nginx.url("test");
    let s = Server::start();
    let room = s.create_room(r#"{"name": "Streamed"}"#);
    let rid = room["id"].as_str().unwrap().to_owned();
    let a = join(&room, "A", 0xd02020, 440.0).await;
    let b = join(&room, "B", 0x2040d0, 660.0).await;
    mesh(&[&a, &b]).await;

    // A second target that refuses every connection must not affect the first.
    let dead = format!("rtmp://127.0.0.1:{}/live/nobody", free_port());
    let bc = start_broadcast(
        &s,
        &rid,
        &serde_json::json!({"hls": false, "whep": false, "rtmp": [target, dead]}).to_string(),
    );
    let bid = bc["id"].as_str().unwrap().to_owned();
    assert_eq!(bc["rtmp"].as_array().map(Vec::len), Some(2), "{bc}");
    assert_eq!(bc["rtmp"][0]["url"], target.as_str(), "{bc}");
    let rtmp_state = |b: &Value| {
        b["rtmp"][0]["state"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    assert!(
        matches!(rtmp_state(&bc).as_str(), "connecting" | "live"),
        "{bc}"
    );
    let rtmp_is = |want: &'static str| {
        move |b: &Value| {
            let st = b["rtmp"][0]["state"].as_str().unwrap_or_default();
            assert_ne!(st, "failed", "{b}");
            st == want
        }
    };
    wait_broadcast(
        &s,
        &bid,
        "RTMP live",
        Duration::from_secs(20),
        rtmp_is("live"),
    )
    .await;
    eprintln!("rtmp live after {} ms", t0.elapsed().as_millis());
    let rtmp_probe = ["-rw_timeout", "10000000", "-read_intervals", "%+5"];
    let p = probe(&target, &rtmp_probe).await;
    assert!(p.frames >= 30, "{p:?}");
    let bc = get_broadcast(&s, &bid);
    assert_eq!(bc["rtmp"][1]["state"], "reconnecting", "{bc}");
    assert!(bc["rtmp"][1]["attempts"].as_u64() >= Some(2), "{bc}");
    assert_eq!(bc["rtmp"][0]["state"], "live", "{bc}");

    // nginx goes away: the target reconnects, the broadcast and the call go on.
    let before = (frames_from(&a, &b.id), frames_from(&b, &a.id));
    nginx.stop();
    let t = Instant::now();
    wait_broadcast(
        &s,
        &bid,
        "RTMP reconnecting",
        Duration::from_secs(15),
        rtmp_is("reconnecting"),
    )
    .await;
    eprintln!(
        "reconnecting {} ms after nginx stopped",
        t.elapsed().as_millis()
    );
    nginx.start_again();
    let t = Instant::now();
    let bc = wait_broadcast(
        &s,
        &bid,
        "RTMP live again",
        Duration::from_secs(30),
        rtmp_is("live"),
    )
    .await;
    eprintln!(
        "live again {} ms after nginx restarted",
        t.elapsed().as_millis()
    );
    assert_eq!(bc["state"], "live", "{bc}");
    let p = probe(&target, &rtmp_probe).await;
    assert!(p.frames >= 30, "after the restart: {p:?}");
    assert!(
        frames_from(&a, &b.id) > before.0 + 60 && frames_from(&b, &a.id) > before.1 + 60,
        "the call stalled during the RTMP outage: {before:?} → {:?}",
        (frames_from(&a, &b.id), frames_from(&b, &a.id))
    );

    end_broadcast(&s, &bid).await;
    eprintln!("rtmp test: {} s", t0.elapsed().as_secs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_whep_viewers_all_decode() {
    let _one = ONE_AT_A_TIME.lock().await;
    let t0 = Instant::now();
    let s = Server::start();
    let room = s.create_room(r#"{"name": "Town hall", "visibility": "listed"}"#);
    let rid = room["id"].as_str().unwrap().to_owned();
    let a = join(&room, "A", 0xd02020, 440.0).await;
    let b = join(&room, "B", 0x2040d0, 660.0).await;
    mesh(&[&a, &b]).await;

    let bc = start_broadcast(&s, &rid, r#"{"hls": false, "whep": true}"#);
    let bid = bc["id"].as_str().unwrap().to_owned();
    let whep_url = bc["whep_url"].as_str().expect("whep_url").to_owned();
    assert!(whep_url.ends_with(&format!("/whep/{bid}")), "{whep_url}");
    live(&s, &bid).await;

    // A listed room's broadcast needs no token.
    let connected =
        futures::future::join_all((0..20).map(|_| WhepViewer::connect(&whep_url, None))).await;
    let mut viewers: Vec<WhepViewer> = connected
        .into_iter()
        .enumerate()
        .map(|(i, v)| v.unwrap_or_else(|e| panic!("viewer {i}: {e:#}")))
        .collect();
    eprintln!("20 viewers connected after {} ms", t0.elapsed().as_millis());
    for v in &viewers {
        let path = url::Url::parse(v.resource_url()).unwrap().path().to_owned();
        assert!(path.starts_with(&format!("/whep/{bid}/")), "{path}");
    }
    let t = Instant::now();
    viewers_decode(&viewers, &[], 30, Duration::from_secs(40)).await;
    let first: Vec<_> = viewers.iter().map(|v| v.stats().first_frame_ms).collect();
    eprintln!(
        "all decoding {} ms later; first frames (ms after answer): {first:?}; codec {:?} {:?}",
        t.elapsed().as_millis(),
        viewers[0].stats().video_codec,
        viewers[0].stats().video_size,
    );
    wait_broadcast(&s, &bid, "20 WHEP viewers", Duration::from_secs(5), |b| {
        b["viewers"]["whep"] == 20
    })
    .await;
    // The public metrics say so too.
    let metrics = get_async(&s.url("/metrics")).await;
    assert_eq!(metrics.status, 200);
    let text = String::from_utf8_lossy(&metrics.body).into_owned();
    let series = format!("roomcast_broadcast_viewers{{broadcast=\"{bid}\",protocol=\"whep\"}} 20");
    assert!(text.contains(&series), "no {series:?} in /metrics:\n{text}");
    assert!(text.contains("roomcast_broadcasts 1"), "{text}");

    // Ten leave (DELETE on their resource); ten stay and keep decoding.
    let leaving: Vec<WhepViewer> = viewers.drain(..10).collect();
    for v in leaving {
        let status = v.stop().await.expect("DELETE");
        assert!(matches!(status, 200 | 204), "DELETE: {status}");
    }
    wait_broadcast(&s, &bid, "10 WHEP viewers", Duration::from_secs(5), |b| {
        b["viewers"]["whep"] == 10
    })
    .await;
    let before: Vec<u64> = viewers.iter().map(WhepViewer::video_frames).collect();
    viewers_decode(&viewers, &before, 30, Duration::from_secs(10)).await;

    end_broadcast(&s, &bid).await;
    eprintln!("whep test: {} s", t0.elapsed().as_secs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn whep_of_a_private_room_needs_the_viewer_token() {
    let _one = ONE_AT_A_TIME.lock().await;
    let t0 = Instant::now();
    let s = Server::start();
    let room = s.create_room(r#"{"name": "Board meeting", "visibility": "private"}"#);
    let rid = room["id"].as_str().unwrap().to_owned();
    let _a = join(&room, "A", 0xd02020, 440.0).await;

    let bc = start_broadcast(&s, &rid, r#"{"hls": false, "whep": true}"#);
    let bid = bc["id"].as_str().unwrap().to_owned();
    let whep_url = bc["whep_url"].as_str().expect("whep_url").to_owned();
    let watch = url::Url::parse(bc["watch_url"].as_str().expect("watch_url")).unwrap();
    assert_eq!(watch.path(), format!("/watch/{bid}"), "{bc}");
    let token = watch
        .fragment()
        .and_then(|f| f.strip_prefix("t="))
        .unwrap_or_else(|| panic!("watch_url of a private room without #t=: {watch}"))
        .to_owned();
    live(&s, &bid).await;

    // No token, or a wrong one: 401.
    for t in [None, Some("not-a-token")] {
        match WhepViewer::connect(&whep_url, t).await {
            Ok(_) => panic!("WHEP with token {t:?} was let in"),
            Err(e) => assert_eq!(status_of(&e), Some(401), "token {t:?}: {e:#}"),
        }
    }
    // The viewer token: 201, and media.
    let v = WhepViewer::connect(&whep_url, Some(&token))
        .await
        .expect("WHEP with the viewer token");
    viewers_decode(std::slice::from_ref(&v), &[], 30, Duration::from_secs(20)).await;
    wait_broadcast(&s, &bid, "1 WHEP viewer", Duration::from_secs(5), |b| {
        b["viewers"]["whep"] == 1
    })
    .await;

    // Not SDP: 415. An unknown broadcast: 404.
    let offer = whip::recvonly_offer().await.expect("an offer");
    let auth = format!("Bearer {token}");
    let r = fetch(
        "POST",
        &whep_url,
        &[("Content-Type", "text/plain"), ("Authorization", &auth)],
        Some(offer.as_bytes()),
    );
    assert_eq!(r.status, 415, "text/plain: {}", r.text());
    let unknown = resolve(&whep_url, "/whep/b_doesnotexist000");
    let r = fetch(
        "POST",
        &unknown,
        &[
            ("Content-Type", "application/sdp"),
            ("Authorization", &auth),
        ],
        Some(offer.as_bytes()),
    );
    assert_eq!(r.status, 404, "unknown broadcast: {}", r.text());

    let status = v.stop().await.expect("DELETE");
    assert!(matches!(status, 200 | 204), "DELETE: {status}");
    wait_broadcast(&s, &bid, "0 WHEP viewers", Duration::from_secs(5), |b| {
        b["viewers"]["whep"] == 0
    })
    .await;
    end_broadcast(&s, &bid).await;
    eprintln!("private whep test: {} s", t0.elapsed().as_secs());
}

/// Creates an ingest: (`whip_url`, token).
fn create_ingest(s: &Server, room: &str) -> (String, String) {
    let (st, ing) = s.admin_within("POST", &format!("/api/v1/rooms/{room}/ingests"), Some("{}"));
    assert_eq!(st, 201, "create ingest: {ing}");
    let url = ing["whip_url"].as_str().expect("whip_url").to_owned();
    assert!(url.ends_with(&format!("/whip/{room}")), "{ing}");
    let token = ing["token"].as_str().expect("token").to_owned();
    assert!(!token.is_empty());
    (url, token)
}

/// The ingest's participant id, from its `Location` (`/whip/{room}/{pid}`).
fn ingest_id(p: &WhipPublisher, room: &str) -> ParticipantId {
    let path = url::Url::parse(p.resource_url()).unwrap().path().to_owned();
    let pid = path
        .strip_prefix(&format!("/whip/{room}/"))
        .unwrap_or_else(|| panic!("Location {path} is not /whip/{room}/<participant>"));
    ParticipantId::parse(pid).unwrap_or_else(|| panic!("{pid} is not a participant id"))
}

fn role_of(s: &Server, room: &str, pid: &ParticipantId) -> Option<String> {
    let (st, body) = s.admin_within("GET", &format!("/api/v1/rooms/{room}/participants"), None);
    assert_eq!(st, 200, "{body}");
    body["participants"]
        .as_array()?
        .iter()
        .find(|p| p["id"] == pid.as_str())
        .map(|p| p["role"].as_str().unwrap_or_default().to_owned())
}

/// Publishes over WHIP and waits until `peer` decodes the ingest's picture.
async fn ingest_seen(
    s: &Server,
    room: &str,
    peer: &TestPeer,
    codec: VideoCodec,
) -> (WhipPublisher, ParticipantId) {
    let (whip_url, token) = create_ingest(s, room);
    let name = if codec == VideoCodec::H264 {
        "H264"
    } else {
        "VP8"
    };
    // Without the token, or with another one: 401.
    for t in [None, Some("not-a-token")] {
        match WhipPublisher::connect(&whip_url, t, codec).await {
            Ok(_) => panic!("WHIP with token {t:?} was let in"),
            Err(e) => assert_eq!(status_of(&e), Some(401), "token {t:?}: {e:#}"),
        }
    }
    let t = Instant::now();
    let publisher = WhipPublisher::connect(&whip_url, Some(&token), codec)
        .await
        .expect("WHIP publish");
    let pid = ingest_id(&publisher, room);
    wait_for(
        "the ingest in the participant list",
        Duration::from_secs(5),
        || role_of(s, room, &pid),
    )
    .await;
    assert_eq!(role_of(s, room, &pid).as_deref(), Some("ingest"));
    wait_for(
        "the participant to decode the ingest",
        Duration::from_secs(20),
        || {
            let st = peer.stats();
            let r = st.remote.get(&pid)?;
            (r.video_frames >= 30 && r.last_rgb.is_some_and(|c| color_close(c, WHIP_COLOR, 40)))
                .then_some(())
        },
    )
    .await;
    let r = peer.stats().remote[&pid].clone();
    assert_eq!(
        r.video_codec.as_deref(),
        Some(name),
        "forwarded as published"
    );
    eprintln!(
        "{name} ingest decoded by a participant {} ms after the POST; sent {:?}, {}",
        t.elapsed().as_millis(),
        publisher.sent(),
        publisher.connection_state()
    );
    (publisher, pid)
}

/// DELETE on the ingest's resource: 200/204 and the participant is gone.
async fn end_ingest(
    s: &Server,
    room: &str,
    peer: &TestPeer,
    p: WhipPublisher,
    pid: &ParticipantId,
) {
    let status = p.stop().await.expect("DELETE");
    assert!(matches!(status, 200 | 204), "DELETE: {status}");
    wait_for("the ingest to leave", Duration::from_secs(5), || {
        (role_of(s, room, pid).is_none() && !peer.stats().present.contains(pid)).then_some(())
    })
    .await;
}

/// The ingest's video goes out as it came in: no video encoder among the
/// broadcast's `encoders` (Opus may become AAC for MPEG-TS: an audio encoder
/// is fine).
fn assert_no_video_encoder(bc: &Value) {
    gst::init().unwrap();
    let encoders = bc["encoders"].as_array().expect("encoders");
    for e in encoders {
        let name = e.as_str().expect("encoder name");
        let factory = gst::ElementFactory::find(name)
            .unwrap_or_else(|| panic!("{name} is not an element of this machine"));
        assert!(
            !factory.klass().contains("Video"),
            "{name} encodes video, the ingest should pass through: {bc}"
        );
    }
    if let Some(video) = bc["transcode"]["video"].as_bool() {
        assert!(!video, "{bc}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn whip_h264_ingest_is_seen_and_goes_to_hls_without_encoding() {
    let _one = ONE_AT_A_TIME.lock().await;
    let t0 = Instant::now();
    let s = Server::start();
    let room = s.create_room(r#"{"name": "Studio"}"#);
    let rid = room["id"].as_str().unwrap().to_owned();
    let p = join(&room, "P", 0x2040d0, 660.0).await;
    let (publisher, pid) = ingest_seen(&s, &rid, &p, VideoCodec::H264).await;

    // A broadcast of the ingest as it is: no encoder.
    let bc = start_broadcast(
        &s,
        &rid,
        r#"{"source": "ingest", "hls": true, "whep": false}"#,
    );
    let bid = bc["id"].as_str().unwrap().to_owned();
    assert_eq!(bc["source"], "ingest", "{bc}");
    assert_no_video_encoder(&bc);
    let bc = live(&s, &bid).await;
    assert_no_video_encoder(&bc);
    let hls_url = bc["hls_url"].as_str().expect("hls_url").to_owned();
    let master = master_playlist(&hls_url).await;
    check_playlist_headers(&hls_url, &master);
    let vs = variants(&master.text());
    assert!(!vs.is_empty(), "{}", master.text());
    if let Some(res) = &vs[0].resolution {
        assert_eq!(res, "640x360", "{vs:?}");
    }
    let media = resolve(&hls_url, &vs[0].uri);
    playlist_with(&media, 3, Duration::from_secs(30)).await;
    let pr = probe_hls(&media).await;
    assert!(pr.frames >= 90, "{pr:?}");
    assert_eq!((pr.width, pr.height), (640, 360), "{pr:?}");
    end_broadcast(&s, &bid).await;

    end_ingest(&s, &rid, &p, publisher, &pid).await;
    eprintln!("whip h264 test: {} s", t0.elapsed().as_secs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn whip_vp8_ingest_publishes() {
    let _one = ONE_AT_A_TIME.lock().await;
    let t0 = Instant::now();
    let s = Server::start();
    let room = s.create_room(r#"{"name": "Studio VP8"}"#);
    let rid = room["id"].as_str().unwrap().to_owned();
    let p = join(&room, "P", 0x2040d0, 660.0).await;
    let (publisher, pid) = ingest_seen(&s, &rid, &p, VideoCodec::Vp8).await;

    // VP8 cannot go to HLS as it is: decoded once, scaled, encoded to H.264.
    let bc = start_broadcast(
        &s,
        &rid,
        r#"{"source": "ingest", "hls": true, "whep": false, "renditions": ["360p"]}"#,
    );
    let bid = bc["id"].as_str().unwrap().to_owned();
    let bc = live(&s, &bid).await;
    assert_eq!(bc["transcode"]["video"], true, "{bc}");
    assert_eq!(bc["renditions"], serde_json::json!(["360p"]), "{bc}");
    let media = resolve(bc["hls_url"].as_str().unwrap(), "360p/index.m3u8");
    playlist_with(&media, 2, Duration::from_secs(20)).await;
    let v = probe_hls(&media).await;
    assert!(v.frames >= 90, "{v:?}");
    assert_eq!((v.width, v.height), (640, 360), "{v:?}");
    end_broadcast(&s, &bid).await;

    end_ingest(&s, &rid, &p, publisher, &pid).await;
    eprintln!("whip vp8 test: {} s", t0.elapsed().as_secs());
}

/// A broadcast whose HLS output cannot be written (the disk is full) fails
/// on its own: the call goes on, the room's mixer keeps running (a second
/// broadcast from the same composite goes live and is watched over WHEP).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_disk_fails_the_broadcast_not_the_call() {
    let _one = ONE_AT_A_TIME.lock().await;
    // HLS goes to a 300 kB disk: the first segments fill it.
    let s = Server::start_limited(&[], Some(300_000));
    let room = s.create_room(r#"{"name": "Full disk on air", "visibility": "listed"}"#);
    let rid = room["id"].as_str().unwrap().to_owned();
    let a = join(&room, "A", 0xd02020, 440.0).await;
    let b = join(&room, "B", 0x2040d0, 660.0).await;
    mesh(&[&a, &b]).await;

    let bc = start_broadcast(&s, &rid, r#"{"hls": true, "whep": false}"#);
    let bid = bc["id"].as_str().unwrap().to_owned();
    let failed = wait_for("the broadcast to fail", Duration::from_secs(60), || {
        let b = get_broadcast(&s, &bid);
        assert_ne!(b["state"], "ended", "{b}");
        (b["state"] == "failed").then_some(b)
    })
    .await;
    assert!(
        failed["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{failed}"
    );
    assert!(failed["ended_at"].is_string(), "{failed}");

    // The call goes on, both ways.
    let (before_a, before_b) = (frames_from(&a, &b.id), frames_from(&b, &a.id));
    wait_for("media after the failure", Duration::from_secs(10), || {
        (frames_from(&a, &b.id) > before_a + 30 && frames_from(&b, &a.id) > before_b + 30)
            .then_some(())
    })
    .await;
    let (st, view) = s.admin("GET", &format!("/api/v1/rooms/{rid}"), None);
    assert_eq!(st, 200, "{view}");
    assert_eq!(view["participant_count"], 2, "{view}");

    // The composite still runs: a WHEP broadcast of it goes live and plays.
    let again = start_broadcast(&s, &rid, r#"{"hls": false, "whep": true}"#);
    let again_id = again["id"].as_str().unwrap().to_owned();
    let again = live(&s, &again_id).await;
    let viewer = WhepViewer::connect(again["whep_url"].as_str().unwrap(), None)
        .await
        .expect("WHEP viewer");
    viewers_decode(
        std::slice::from_ref(&viewer),
        &[0],
        30,
        Duration::from_secs(20),
    )
    .await;
    end_broadcast(&s, &again_id).await;
    drop((a, b, viewer));
}

/// Composite broadcasts started and stopped one after another, each in a
/// new room (so each starts the room's mixer): every one goes live and its
/// playlist grows. (A mixer whose live sources started before the elements
/// after them stalled now and then on a busy machine; a failed build left
/// elements playing and crashed the server.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn composite_broadcasts_start_every_time() {
    let _one = ONE_AT_A_TIME.lock().await;
    let s = Server::start();
    for i in 0..4 {
        let room = s.create_room(&format!(r#"{{"name": "Start {i}"}}"#));
        let rid = room["id"].as_str().unwrap().to_owned();
        let bc = start_broadcast(
            &s,
            &rid,
            r#"{"hls": true, "whep": false, "renditions": ["360p"]}"#,
        );
        let bid = bc["id"].as_str().unwrap().to_owned();
        live(&s, &bid).await;
        let url = s.url(&format!("/hls/{bid}/360p/index.m3u8"));
        let listed = |n: usize| {
            let url = url.clone();
            async move {
                let r = get_async(&url).await;
                (r.status == 200 && segments(&String::from_utf8_lossy(&r.body)).len() >= n)
                    .then_some(())
            }
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while listed(2).await.is_none() {
            assert!(
                Instant::now() < deadline,
                "start {i}: {bid} did not list 2 segments in 20 s: {}",
                get_broadcast(&s, &bid)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        end_broadcast(&s, &bid).await;
        let (st, body) = s.admin("DELETE", &format!("/api/v1/rooms/{rid}"), None);
        assert!(matches!(st, 200 | 204), "close room: {st} {body}");
    }
    assert_eq!(s.request("GET", "/healthz", None, None).0, 200);
}
