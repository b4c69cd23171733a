//! Recordings, checked by decoding what was written: the composite of three
//! participants (tiles and tones), per-track files without re-encoding, a
//! `kill -9` during a recording, SIGTERM during one, a full disk, and audio/video sync of someone
//! who joins while the recording runs.

mod common;

use common::av::{self, H, W};
use common::{ADMIN_TOKEN, Server, color_close, wait_for};
use roomcast::loadgen::peer::{PeerConfig, TestPeer};
use roomcast::loadgen::source::{PULSE_MS, VideoCodec};
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;

/// The sync test measures timing, which a machine saturated by the other
/// tests of this file (each with encoders and peers) would distort: it runs
/// alone, the others together.
static LOAD: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

fn link(room: &Value, which: &str) -> String {
    room[which].as_str().unwrap().to_owned()
}

async fn join(room: &Value, name: &str, color: u32, freq: f64) -> TestPeer {
    let mut cfg = PeerConfig::new(&link(room, "host_url"), name);
    cfg.color = color;
    cfg.freq = freq;
    TestPeer::join(cfg).await.expect("join")
}

/// Waits until `p` decodes video from each of `from`.
async fn sees(p: &TestPeer, from: &[&TestPeer]) {
    wait_for(
        "media between participants",
        Duration::from_secs(20),
        || {
            let st = p.stats();
            from.iter()
                .all(|f| st.remote.get(&f.id).is_some_and(|r| r.video_frames > 5))
                .then_some(())
        },
    )
    .await;
}

/// Waits until the server has `p`'s video (tiles follow publication order).
async fn published(s: &Server, room: &str, p: &TestPeer) {
    let id = p.id.to_string();
    wait_for("the video to be published", Duration::from_secs(15), || {
        let (_, body) = s.admin("GET", &format!("/api/v1/rooms/{room}/participants"), None);
        body["participants"]
            .as_array()?
            .iter()
            .any(|q| q["id"] == id.as_str() && q["video"]["published"] == true)
            .then_some(())
    })
    .await;
}

fn start(s: &Server, room: &str, body: &str) -> Value {
    let (st, rec) = s.admin(
        "POST",
        &format!("/api/v1/rooms/{room}/recordings"),
        Some(body),
    );
    assert_eq!(st, 201, "start recording: {rec}");
    assert_eq!(rec["state"], "recording", "{rec}");
    assert!(rec["id"].as_str().unwrap().starts_with("rec_"), "{rec}");
    rec
}

/// Stops a recording and waits until it is `ready`.
async fn stop(s: &Server, id: &str) -> Value {
    let (st, rec) = s.admin("POST", &format!("/api/v1/recordings/{id}/stop"), None);
    assert_eq!(st, 200, "stop: {rec}");
    wait_for("the recording to be ready", Duration::from_secs(15), || {
        let (st, rec) = s.admin("GET", &format!("/api/v1/recordings/{id}"), None);
        assert_eq!(st, 200);
        assert_ne!(rec["state"], "failed", "{rec}");
        (rec["state"] == "ready").then_some(rec)
    })
    .await
}

/// Downloads a file of a recording through the API into `dir`.
fn download(s: &Server, file: &Value, dir: &std::path::Path) -> PathBuf {
    let url = file["url"].as_str().expect("file url");
    let path = dir.join(file["name"].as_str().unwrap());
    let resp = ureq::get(url)
        .set("Authorization", &format!("Bearer {ADMIN_TOKEN}"))
        .call()
        .expect("download");
    assert_eq!(resp.status(), 200);
    let mut body = Vec::new();
    std::io::copy(&mut resp.into_reader(), &mut body).unwrap();
    assert_eq!(body.len() as u64, file["size"].as_u64().unwrap(), "size");
    // A range of it comes back as 206 with the same bytes.
    let part = ureq::get(url)
        .set("Authorization", &format!("Bearer {ADMIN_TOKEN}"))
        .set("Range", "bytes=100-199")
        .call()
        .expect("range download");
    assert_eq!(part.status(), 206);
    assert_eq!(
        part.header("Content-Range").unwrap_or_default(),
        format!("bytes 100-199/{}", body.len())
    );
    let mut bytes = Vec::new();
    std::io::copy(&mut part.into_reader(), &mut bytes).unwrap();
    assert_eq!(bytes, body[100..200]);
    let _ = s;
    std::fs::write(&path, &body).unwrap();
    if let Ok(keep) = std::env::var("KEEP_RECORDINGS") {
        let _ = std::fs::copy(
            &path,
            std::path::Path::new(&keep).join(path.file_name().unwrap()),
        );
    }
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn composite_of_three_has_every_tile_and_tone() {
    let _shared = LOAD.read().await;
    let s = Server::start();
    let room = s.create_room(r#"{"name": "Recorded"}"#);
    let id = room["id"].as_str().unwrap().to_owned();
    let colors = [0xd02020u32, 0x20b020, 0x2040d0];
    let tones = [350.0, 650.0, 1100.0];
    let a = join(&room, "A", colors[0], tones[0]).await;
    published(&s, &id, &a).await;
    let b = join(&room, "B", colors[1], tones[1]).await;
    published(&s, &id, &b).await;
    let c = join(&room, "C", colors[2], tones[2]).await;
    sees(&a, &[&b, &c]).await;

    let rec = start(&s, &id, r#"{"kind": "composite", "format": "mp4"}"#);
    let rid = rec["id"].as_str().unwrap().to_owned();
    // The room shows it, and a second one is refused.
    let (_, view) = s.admin("GET", &format!("/api/v1/rooms/{id}"), None);
    assert_eq!(view["recording"]["id"], rid.as_str(), "{view}");
    let (st, err) = s.admin(
        "POST",
        &format!("/api/v1/rooms/{id}/recordings"),
        Some(r#"{"kind": "composite"}"#),
    );
    assert_eq!(
        (st, err["error"]["code"].as_str()),
        (409, Some("already_recording"))
    );
    // Everyone inside is told that the room is recorded.
    wait_for(
        "participants told of the recording",
        Duration::from_secs(5),
        || {
            [&a, &b, &c]
                .iter()
                .all(|p| p.stats().room_recording)
                .then_some(())
        },
    )
    .await;

    tokio::time::sleep(Duration::from_secs(10)).await;
    let rec = stop(&s, &rid).await;
    let (_, view) = s.admin("GET", &format!("/api/v1/rooms/{id}"), None);
    assert!(view["recording"].is_null(), "{view}");
    let files = rec["files"].as_array().expect("files");
    assert_eq!(files.len(), 1, "{rec}");
    assert_eq!(files[0]["name"], "composite.mp4");
    let duration = rec["duration_s"].as_f64().expect("duration_s");
    assert!((9.0..=12.0).contains(&duration), "{rec}");

    let tmp = tempfile::tempdir().unwrap();
    let path = download(&s, &files[0], tmp.path());
    let (streams, duration) = av::probe(&path);
    assert_eq!(
        streams,
        vec![
            ("video".to_owned(), "h264".to_owned()),
            ("audio".to_owned(), "aac".to_owned())
        ]
    );
    assert!((9.0..=11.0).contains(&duration), "duration {duration}");

    let d = av::decode(&path, true, true);
    assert!(d.frames.len() >= 9 * 30 - 15, "{} frames", d.frames.len());
    // Grid of three at 1280x720: two tiles on top, one centred below; each
    // 4:3 picture is letterboxed in its tile, so sample the tile centres.
    let frame = d.frame_at(duration / 2.0);
    let centres = [(W / 4, H / 4), (3 * W / 4, H / 4), (W / 2, 3 * H / 4)];
    for ((x, y), color) in centres.iter().zip(colors) {
        let rgb = av::mean_rgb(frame, x - 6, y - 4, 12, 8);
        assert!(
            color_close(rgb, color, 45),
            "tile at ({x},{y}) is {rgb:?}, want {color:06x}"
        );
    }
    // Each tone is in the mix, well above a frequency nobody sends.
    let mix = d.audio_between(2.0, duration - 1.0);
    assert!(mix.len() > 5 * av::RATE, "{} samples", mix.len());
    let floor = av::tone_power(mix, 2500.0);
    for f in tones {
        let p = av::tone_power(mix, f);
        assert!(
            p > 50.0 * floor.max(1e-12),
            "tone {f} Hz: {p:e} vs floor {floor:e}"
        );
    }
    // Listed per room, deletable (files go too).
    let (_, list) = s.admin("GET", &format!("/api/v1/recordings?room_id={id}"), None);
    assert_eq!(list["recordings"].as_array().unwrap().len(), 1);
    let (st, _) = s.admin("DELETE", &format!("/api/v1/recordings/{rid}"), None);
    assert_eq!(st, 204);
    let (st, _) = s.admin("GET", &format!("/api/v1/recordings/{rid}"), None);
    assert_eq!(st, 404);
    assert!(!s.data_dir.join("recordings").join(&rid).exists());
    drop((a, b, c));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tracks_are_recorded_without_reencoding() {
    let _shared = LOAD.read().await;
    let s = Server::start();
    let room = s.create_room(r#"{"name": "Tracks"}"#);
    let id = room["id"].as_str().unwrap().to_owned();
    let a = join(&room, "Vp8", 0xd02020, 440.0).await;
    let mut cfg = PeerConfig::new(&link(&room, "host_url"), "H264");
    cfg.codec = VideoCodec::H264;
    let b = TestPeer::join(cfg).await.expect("join");
    sees(&a, &[&b]).await;

    let rec = start(&s, &id, r#"{"kind": "tracks", "format": "mp4"}"#);
    let rid = rec["id"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let rec = stop(&s, &rid).await;
    let files = rec["files"].as_array().expect("files").clone();
    assert_eq!(files.len(), 4, "two tracks each: {rec}");
    let tmp = tempfile::tempdir().unwrap();
    let mut seen = Vec::new();
    for f in &files {
        let name = f["name"].as_str().unwrap().to_owned();
        let path = download(&s, f, tmp.path());
        let (streams, duration) = av::probe(&path);
        assert_eq!(streams.len(), 1, "{name}: {streams:?}");
        assert!(duration >= 3.0, "{name}: {duration} s");
        let (kind, codec) = streams[0].clone();
        // MP4 cannot carry VP8: that track is written as Matroska (WebM).
        let ext = if codec == "vp8" { "mkv" } else { "mp4" };
        assert!(name.ends_with(ext), "{name} holds {codec}");
        let d = av::decode(&path, kind == "video", kind == "audio");
        if kind == "video" {
            assert!(d.frames.len() > 60, "{name}: {} frames", d.frames.len());
        } else {
            assert!(
                d.audio.len() > 3 * av::RATE,
                "{name}: {} samples",
                d.audio.len()
            );
        }
        seen.push(codec);
    }
    seen.sort();
    assert_eq!(seen, ["h264", "opus", "opus", "vp8"]);
    drop((a, b));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_server_leaves_a_playable_recording() {
    let _shared = LOAD.read().await;
    let mut s = Server::start();
    let room = s.create_room(r#"{"name": "Crash"}"#);
    let id = room["id"].as_str().unwrap().to_owned();
    let a = join(&room, "A", 0xd02020, 440.0).await;
    let b = join(&room, "B", 0x2040d0, 660.0).await;
    sees(&a, &[&b]).await;
    let composite = start(&s, &id, r#"{"kind": "composite", "format": "mp4"}"#);
    let rid = composite["id"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_secs(8)).await;
    s.kill();
    drop((a, b));

    let file = s
        .data_dir
        .join("recordings")
        .join(&rid)
        .join("composite.mp4");
    let (streams, duration) = av::probe(&file);
    assert_eq!(streams.len(), 2, "{streams:?}");
    // Fragments are a second long: all but the last second or two is there.
    assert!(duration >= 5.0, "{duration} s of 8 survived");
    let d = av::decode(&file, true, true);
    assert!(d.frames.len() >= 5 * 30, "{} frames", d.frames.len());

    s.start_again();
    let (st, rec) = s.admin("GET", &format!("/api/v1/recordings/{rid}"), None);
    assert_eq!(st, 200);
    assert_eq!(rec["state"], "ready", "not stuck recording: {rec}");
    assert!(rec["ended_at"].is_string(), "{rec}");
    assert_eq!(rec["files"].as_array().unwrap().len(), 1, "{rec}");
}

/// SIGTERM: the recording is finished (all of it, unlike a kill), the
/// participants are told to reconnect, the process exits in time, and the
/// room is still there when the server starts again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_finishes_the_recording_and_tells_everyone() {
    let _shared = LOAD.read().await;
    let mut s = Server::start();
    let room = s.create_room(r#"{"name": "Restart"}"#);
    let id = room["id"].as_str().unwrap().to_owned();
    let a = join(&room, "A", 0xd02020, 440.0).await;
    let b = join(&room, "B", 0x2040d0, 660.0).await;
    sees(&a, &[&b]).await;
    let composite = start(&s, &id, r#"{"kind": "composite", "format": "mp4"}"#);
    let rid = composite["id"].as_str().unwrap().to_owned();
    let file = s
        .data_dir
        .join("recordings")
        .join(&rid)
        .join("composite.mp4");
    // The mixer and its encoders start first (seconds on a busy machine):
    // the recorded length counts from the first fragment on disk.
    wait_for("the first fragments", Duration::from_secs(30), || {
        std::fs::metadata(&file)
            .ok()
            .filter(|m| m.len() > 20_000)
            .map(|_| ())
    })
    .await;
    let recorded = std::time::Instant::now();
    // The recorded length is this test's input, not a wait for something.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let t = std::time::Instant::now();
    let status = s.terminate(Duration::from_secs(15));
    let (stopped_after, recorded_s) = (t.elapsed(), recorded.elapsed().as_secs_f64());
    eprintln!("SIGTERM → exit in {} ms", stopped_after.as_millis());
    assert!(status.success(), "exit status after SIGTERM: {status}");
    // Both were told to come back later (a fatal error the web client
    // answers by reconnecting).
    for p in [&a, &b] {
        wait_for("server_shutdown", Duration::from_secs(5), || {
            p.stats()
                .errors
                .iter()
                .any(|e| e == "server_shutdown")
                .then_some(())
        })
        .await;
    }
    drop((a, b));

    let (streams, duration) = av::probe(&file);
    assert_eq!(streams.len(), 2, "{streams:?}");
    // Finished, not cut: everything from the first fragment to the signal
    // is there, the last second too (a kill loses it).
    assert!(
        duration >= recorded_s,
        "{duration} s, {recorded_s:.1} s recorded after the first fragment"
    );
    let d = av::decode(&file, true, true);
    assert!(d.frames.len() >= 5 * 25, "{} frames", d.frames.len());

    s.start_again();
    let (st, rec) = s.admin("GET", &format!("/api/v1/recordings/{rid}"), None);
    assert_eq!(st, 200);
    assert_eq!(rec["state"], "ready", "{rec}");
    assert_eq!(rec["files"].as_array().unwrap().len(), 1, "{rec}");
    let (st, view) = s.admin("GET", &format!("/api/v1/rooms/{id}"), None);
    assert_eq!(st, 200, "the room outlives a restart: {view}");
    assert!(view["closed_at"].is_null(), "{view}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_disk_fails_the_recording_not_the_call() {
    let _shared = LOAD.read().await;
    // Recordings go to a 160 KB disk: the composite fills it in seconds.
    let s = Server::start_limited(&[], Some(160_000));
    let room = s.create_room(r#"{"name": "Full disk"}"#);
    let id = room["id"].as_str().unwrap().to_owned();
    let a = join(&room, "A", 0xd02020, 440.0).await;
    let b = join(&room, "B", 0x2040d0, 660.0).await;
    sees(&a, &[&b]).await;
    let rec = start(&s, &id, r#"{"kind": "composite", "format": "mkv"}"#);
    let rid = rec["id"].as_str().unwrap().to_owned();
    let failed = wait_for("the recording to fail", Duration::from_secs(40), || {
        let (_, rec) = s.admin("GET", &format!("/api/v1/recordings/{rid}"), None);
        (rec["state"] == "failed").then_some(rec)
    })
    .await;
    assert!(
        failed["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{failed}"
    );
    // The call goes on: media still flows both ways, the room is fine.
    let (before_a, before_b) = (
        a.stats().remote[&b.id].video_frames,
        b.stats().remote[&a.id].video_frames,
    );
    wait_for("media after the failure", Duration::from_secs(10), || {
        (a.stats().remote[&b.id].video_frames > before_a + 30
            && b.stats().remote[&a.id].video_frames > before_b + 30)
            .then_some(())
    })
    .await;
    let (st, view) = s.admin("GET", &format!("/api/v1/rooms/{id}"), None);
    assert_eq!(st, 200);
    assert_eq!(view["participant_count"], 2);
    assert!(view["recording"].is_null(), "{view}");
    // The file up to the failure is kept.
    let (_, rec) = s.admin("GET", &format!("/api/v1/recordings/{rid}"), None);
    assert!(!rec["files"].as_array().unwrap().is_empty(), "{rec}");
    drop((a, b));
}

/// Onsets of sync marks: times (s) where `on` turns true after being false
/// for at least half a second.
fn onsets(series: &[(f64, bool)]) -> Vec<f64> {
    let mut out = Vec::new();
    let mut last_on: Option<f64> = None;
    let mut prev = true;
    for &(t, on) in series {
        if on && !prev && last_on.is_none_or(|l| t - l > 0.5) {
            out.push(t);
        }
        if on {
            last_on = Some(t);
        }
        prev = on;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn audio_and_video_stay_in_sync_for_a_late_joiner() {
    let _alone = LOAD.write().await;
    let s = Server::start();
    let room = s.create_room(r#"{"name": "Sync"}"#);
    let id = room["id"].as_str().unwrap().to_owned();
    let mut first = PeerConfig::new(&link(&room, "host_url"), "First");
    first.color = 0x20b020;
    first.volume = 0.0;
    let first = TestPeer::join(first).await.expect("join");
    published(&s, &id, &first).await;
    let rec = start(&s, &id, r#"{"kind": "composite", "format": "mp4"}"#);
    let rid = rec["id"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Joins mid-recording, publishing a white flash with a beep every second.
    let mut late = PeerConfig::new(&link(&room, "host_url"), "Late");
    late.color = 0x202060;
    late.freq = 1000.0;
    late.volume = 0.8;
    late.pulse = true;
    let late = TestPeer::join(late).await.expect("join");
    sees(&first, &[&late]).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let rec = stop(&s, &rid).await;

    let tmp = tempfile::tempdir().unwrap();
    let path = download(&s, &rec["files"][0], tmp.path());
    let d = av::decode(&path, true, true);
    // Grid of two: the late joiner is on the right; sample its centre.
    let video: Vec<(f64, bool)> = d
        .frames
        .iter()
        .map(|(pts, f)| {
            let [r, g, b] = av::mean_rgb(f, 3 * W / 4 - 8, H / 2 - 6, 16, 12);
            (*pts as f64 / 1e9, r > 150 && g > 150 && b > 150)
        })
        .collect();
    // Audio: the 1 kHz beep in 2.5 ms windows.
    let window = av::RATE / 400;
    let start = d.audio_start.unwrap_or(0) as f64 / 1e9;
    let powers: Vec<f64> = d
        .audio
        .chunks(window)
        .map(|w| av::tone_power(w, 1000.0))
        .collect();
    let peak = powers.iter().cloned().fold(0.0, f64::max);
    let audio: Vec<(f64, bool)> = powers
        .iter()
        .enumerate()
        .map(|(i, p)| {
            (
                start + (i * window) as f64 / av::RATE as f64,
                *p > peak / 10.0,
            )
        })
        .collect();
    let (v, a) = (onsets(&video), onsets(&audio));
    assert!(
        v.len() >= 6 && a.len() >= 6,
        "marks: video {v:?} audio {a:?}"
    );
    // Pair each video mark with the nearest audio mark.
    let mut offsets: Vec<f64> = v
        .iter()
        .filter_map(|tv| {
            a.iter()
                .map(|ta| tv - ta)
                .min_by(|x, y| x.abs().total_cmp(&y.abs()))
        })
        .filter(|o| o.abs() < 0.5)
        .collect();
    assert!(
        offsets.len() >= 6,
        "paired marks: {offsets:?} (video {v:?} audio {a:?})"
    );
    offsets.sort_by(f64::total_cmp);
    let median = offsets[offsets.len() / 2];
    eprintln!(
        "A/V offset of the late joiner (video - audio): median {:.0} ms, all {:?}",
        median * 1000.0,
        offsets
            .iter()
            .map(|o| (o * 1000.0).round())
            .collect::<Vec<_>>()
    );
    // Video frames are 33 ms apart: a mark is seen up to one frame late.
    assert!(
        median.abs() <= 0.060,
        "A/V offset {:.0} ms (marks {} ms long)",
        median * 1000.0,
        PULSE_MS
    );
    drop((first, late));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_muted_participant_is_neither_heard_nor_seen_in_the_composite() {
    let _shared = LOAD.read().await;
    let s = Server::start();
    let room = s.create_room(r#"{"name": "Muted"}"#);
    let id = room["id"].as_str().unwrap().to_owned();
    let a = join(&room, "A", 0xd02020, 350.0).await;
    published(&s, &id, &a).await;
    let b = join(&room, "B", 0x2040d0, 1100.0).await;
    published(&s, &id, &b).await;
    sees(&a, &[&b]).await;
    // A host mutes B's audio and video: the recording must not carry them.
    let (st, _) = s.admin(
        "POST",
        &format!("/api/v1/rooms/{id}/participants/{}/mute", b.id),
        Some(r#"{"audio": true, "video": true}"#),
    );
    assert_eq!(st, 204);
    let rec = start(&s, &id, r#"{"kind": "composite", "layout": "speaker"}"#);
    tokio::time::sleep(Duration::from_secs(6)).await;
    let rec = stop(&s, rec["id"].as_str().unwrap()).await;
    let tmp = tempfile::tempdir().unwrap();
    let path = download(&s, &rec["files"][0], tmp.path());
    let d = av::decode(&path, true, true);
    // Only A is in the picture: one tile, centred.
    let frame = d.frame_at(3.0);
    let centre = av::mean_rgb(frame, W / 2 - 6, H / 2 - 4, 12, 8);
    assert!(color_close(centre, 0xd02020, 45), "centre is {centre:?}");
    let right = av::mean_rgb(frame, W - 12, H / 2 - 4, 8, 8);
    assert!(
        !color_close(right, 0x2040d0, 60),
        "B's colour at the side: {right:?}"
    );
    // A's tone, not B's.
    let mix = d.audio_between(1.0, 5.0);
    let (pa, pb, floor) = (
        av::tone_power(mix, 350.0),
        av::tone_power(mix, 1100.0),
        av::tone_power(mix, 2500.0),
    );
    assert!(
        pa > 50.0 * floor.max(1e-12),
        "A's tone {pa:e} vs floor {floor:e}"
    );
    assert!(pb < pa / 100.0, "B's tone {pb:e} against A's {pa:e}");
    drop((a, b));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn closing_the_room_finalizes_its_recording() {
    let _shared = LOAD.read().await;
    let s = Server::start();
    let room = s.create_room(r#"{"name": "Closing"}"#);
    let id = room["id"].as_str().unwrap().to_owned();
    let a = join(&room, "A", 0xd02020, 440.0).await;
    published(&s, &id, &a).await;
    let rec = start(&s, &id, r#"{"kind": "composite", "format": "mkv"}"#);
    let rid = rec["id"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (st, _) = s.admin("DELETE", &format!("/api/v1/rooms/{id}"), None);
    assert_eq!(st, 204);
    // Finalized by the close, not left recording; the file is whole.
    let (st, rec) = s.admin("GET", &format!("/api/v1/recordings/{rid}"), None);
    assert_eq!(st, 200);
    assert_eq!(rec["state"], "ready", "{rec}");
    let tmp = tempfile::tempdir().unwrap();
    let path = download(&s, &rec["files"][0], tmp.path());
    let (streams, duration) = av::probe(&path);
    assert_eq!(streams.len(), 2, "{streams:?}");
    // A finished Matroska file knows its duration.
    assert!((3.0..=6.0).contains(&duration), "{duration} s");
    drop(a);
}
