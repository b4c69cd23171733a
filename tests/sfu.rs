//! Integration: real server process, real webrtcbin participants over the
//! real WebSocket protocol, media decoded and checked for content.

mod common;

use common::{Server, color_close, wait_for};
use roomcast::loadgen::peer::{PeerConfig, PeerStats, TestPeer, VideoCodec};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

struct Who {
    name: &'static str,
    color: u32,
    freq: f64,
    codec: VideoCodec,
}

const A: Who = Who {
    name: "A",
    color: 0xff0000,
    freq: 440.0,
    codec: VideoCodec::Vp8,
};
const B: Who = Who {
    name: "B",
    color: 0x00ff00,
    freq: 660.0,
    codec: VideoCodec::H264,
};
const C: Who = Who {
    name: "C",
    color: 0x0000ff,
    freq: 880.0,
    codec: VideoCodec::Vp8,
};
const D: Who = Who {
    name: "D",
    color: 0xffff00,
    freq: 550.0,
    codec: VideoCodec::Vp8,
};

fn config(link: &str, w: &Who) -> PeerConfig {
    let mut c = PeerConfig::new(link, w.name);
    c.color = w.color;
    c.freq = w.freq;
    c.codec = w.codec;
    c
}

/// A participant in its own process (`roomcast loadgen peer`), so it can be
/// killed without a goodbye. Its stats come back as JSON lines.
struct ProcessPeer {
    child: Child,
    last: Arc<Mutex<Option<PeerStats>>>,
}

#[derive(serde::Deserialize)]
struct Line {
    participant_id: Option<String>,
    remote: std::collections::BTreeMap<String, serde_json::Value>,
}

impl ProcessPeer {
    fn spawn(link: &str, w: &Who) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_roomcast"))
            .args([
                "loadgen",
                "peer",
                "--link",
                link,
                "--name",
                w.name,
                "--stats-ms",
                "200",
            ])
            .args([
                "--color",
                &format!("{:06x}", w.color),
                "--freq",
                &w.freq.to_string(),
            ])
            .args([
                "--codec",
                if w.codec == VideoCodec::H264 {
                    "h264"
                } else {
                    "vp8"
                },
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn loadgen peer");
        let stdout = child.stdout.take().expect("stdout");
        let last: Arc<Mutex<Option<PeerStats>>> = Arc::default();
        let sink = last.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(l) = serde_json::from_str::<Line>(&line) {
                    let mut stats = PeerStats {
                        participant_id: l
                            .participant_id
                            .and_then(|p| roomcast::ids::ParticipantId::parse(&p)),
                        ..Default::default()
                    };
                    for (k, v) in l.remote {
                        if let (Some(id), Ok(r)) = (
                            roomcast::ids::ParticipantId::parse(&k),
                            serde_json::from_value(v),
                        ) {
                            stats.remote.insert(id, r);
                        }
                    }
                    *sink.lock().unwrap() = Some(stats);
                }
            }
        });
        Self { child, last }
    }

    fn stats(&self) -> Option<PeerStats> {
        self.last.lock().unwrap().clone()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ProcessPeer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `stats` decoded ≥ `frames` video frames and ≥ 1 s of audio from `from`,
/// with the right colour and tone.
fn receives(
    stats: &PeerStats,
    from: &roomcast::ids::ParticipantId,
    who: &Who,
    frames: u64,
) -> bool {
    let Some(r) = stats.remote.get(from) else {
        return false;
    };
    r.video_frames >= frames
        && r.audio_samples >= 48_000
        && r.last_rgb
            .is_some_and(|rgb| color_close(rgb, who.color, 40))
        && r.audio_freq
            .is_some_and(|f| (f - who.freq).abs() / who.freq < 0.05)
}

fn frames_from(stats: &PeerStats, from: &roomcast::ids::ParticipantId) -> u64 {
    stats.remote.get(from).map(|r| r.video_frames).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_participants_late_joiner_and_one_that_vanishes() {
    let server = Server::start();
    let room = server.create_room(r#"{"name": "SFU test"}"#);
    let room_id = room["id"].as_str().unwrap().to_owned();
    let link = room["invite_url"].as_str().unwrap().to_owned();

    let a = TestPeer::join(config(&link, &A)).await.expect("A joins");
    let b = TestPeer::join(config(&link, &B)).await.expect("B joins");
    let mut c = ProcessPeer::spawn(&link, &C);
    let c_id = wait_for("C to join", Duration::from_secs(15), || {
        c.stats().and_then(|s| s.participant_id)
    })
    .await;

    // Everyone decodes ≥ 60 frames and the tone of each of the two others.
    wait_for("full mesh media", Duration::from_secs(30), || {
        let (sa, sb, sc) = (a.stats(), b.stats(), c.stats()?);
        (receives(&sa, &b.id, &B, 60)
            && receives(&sa, &c_id, &C, 60)
            && receives(&sb, &a.id, &A, 60)
            && receives(&sb, &c_id, &C, 60)
            && receives(&sc, &a.id, &A, 60)
            && receives(&sc, &b.id, &B, 60))
        .then_some(())
    })
    .await;
    // B published H.264, the others VP8: forwarded as published, no transcoding.
    assert_eq!(a.stats().remote[&b.id].video_codec.as_deref(), Some("H264"));
    assert_eq!(b.stats().remote[&a.id].video_codec.as_deref(), Some("VP8"));
    assert_eq!(server.participant_ids(&room_id).len(), 3);

    // A late joiner gets a keyframe from everyone and decodes within 1 s.
    let d = TestPeer::join(config(&link, &D)).await.expect("D joins");
    let sd = wait_for("D decodes everyone", Duration::from_secs(10), || {
        let s = d.stats();
        [&a.id, &b.id, &c_id]
            .iter()
            .all(|id| {
                s.remote
                    .get(*id)
                    .is_some_and(|r| r.first_video_ms.is_some())
            })
            .then_some(s)
    })
    .await;
    for id in [&a.id, &b.id, &c_id] {
        let ms = sd.remote[id].first_video_ms.unwrap();
        eprintln!("late joiner: first frame from {id} after {ms} ms");
        assert!(ms <= 1000, "late joiner decoded {id} only after {ms} ms");
    }

    // C is killed without a goodbye: gone from the others and from REST
    // within 15 s, while the others keep receiving.
    let before = (
        frames_from(&a.stats(), &b.id),
        frames_from(&b.stats(), &a.id),
    );
    c.kill();
    wait_for("C to disappear", Duration::from_secs(15), || {
        let gone = |s: PeerStats| !s.present.contains(&c_id);
        (gone(a.stats())
            && gone(b.stats())
            && gone(d.stats())
            && !server.participant_ids(&room_id).contains(&c_id.to_string()))
        .then_some(())
    })
    .await;
    wait_for("media to keep flowing", Duration::from_secs(5), || {
        (frames_from(&a.stats(), &b.id) > before.0 + 30
            && frames_from(&b.stats(), &a.id) > before.1 + 30)
            .then_some(())
    })
    .await;
    let ids = server.participant_ids(&room_id);
    assert_eq!(ids.len(), 3, "{ids:?}");

    // A graceful leave is seen at once.
    d.leave().await;
    wait_for("D's leave", Duration::from_secs(3), || {
        (!a.stats()
            .present
            .contains(&sd.participant_id.clone().unwrap()))
        .then_some(())
    })
    .await;
    let after = frames_from(&a.stats(), &b.id);
    wait_for("media after renegotiation", Duration::from_secs(5), || {
        (frames_from(&a.stats(), &b.id) > after + 30).then_some(())
    })
    .await;
}

const E: Who = Who {
    name: "E",
    color: 0xff00ff,
    freq: 770.0,
    codec: VideoCodec::H264,
};

/// People coming and going: a subscriber's connection keeps as many m-lines
/// as tracks it receives at once (a leaver's lines are parked and recycled
/// for the next track of the same kind and codec), and what arrives on a
/// recycled line is the newcomer's picture and tone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn m_lines_of_those_who_left_carry_the_next_ones() {
    let server = Server::start();
    let room = server.create_room(r#"{"name": "Churn"}"#);
    let link = room["invite_url"].as_str().unwrap().to_owned();
    let a = TestPeer::join(config(&link, &A)).await.expect("A joins");
    // B: H.264 (2 lines); C: VP8 video cannot take B's H.264 line (3);
    // D: VP8 again, E: H.264 again: both find a parked line of their codec.
    for (who, lines) in [(&B, 2), (&C, 3), (&D, 3), (&E, 3)] {
        let x = TestPeer::join(config(&link, who)).await.expect("join");
        wait_for(
            &format!("A to see and hear {} on {lines} m-lines", who.name),
            Duration::from_secs(20),
            || {
                let s = a.stats();
                (receives(&s, &x.id, who, 30) && s.subscribe_mlines == lines).then_some(())
            },
        )
        .await;
        wait_for(
            &format!("{} to see and hear A", who.name),
            Duration::from_secs(20),
            || receives(&x.stats(), &a.id, &A, 30).then_some(()),
        )
        .await;
        let gone = x.id.clone();
        x.leave().await;
        wait_for(
            &format!("{}'s leave", who.name),
            Duration::from_secs(5),
            || (!a.stats().present.contains(&gone)).then_some(()),
        )
        .await;
    }
    assert_eq!(a.stats().subscribe_mlines, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_frozen_participant_is_released_within_15_seconds() {
    let server = Server::start();
    let room = server.create_room(r#"{"name": "Freeze"}"#);
    let room_id = room["id"].as_str().unwrap().to_owned();
    let link = room["invite_url"].as_str().unwrap().to_owned();
    let a = TestPeer::join(config(&link, &A)).await.expect("A joins");
    let c = ProcessPeer::spawn(&link, &C);
    let c_id = wait_for("C to join and send media", Duration::from_secs(20), || {
        let id = c.stats()?.participant_id?;
        (frames_from(&a.stats(), &id) > 10).then_some(id)
    })
    .await;
    // SIGSTOP: no FIN, no packets, no pongs — the process just vanishes from the network.
    let pid = c.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-STOP", &pid])
            .status()
            .unwrap()
            .success()
    );
    let started = std::time::Instant::now();
    wait_for("frozen C to be removed", Duration::from_secs(16), || {
        (!server.participant_ids(&room_id).contains(&c_id.to_string())
            && !a.stats().present.contains(&c_id))
        .then_some(())
    })
    .await;
    assert!(
        started.elapsed() <= Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
    let _ = Command::new("kill").args(["-CONT", &pid]).status();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ice_settings_shape_the_candidates() {
    let server = Server::start_with(&[
        "--rtp-port-range",
        "41000-41020",
        "--ice-public-ip",
        "127.0.0.9",
    ]);
    let room = server.create_room(r#"{"name": "ICE"}"#);
    let link = room["invite_url"].as_str().unwrap().to_owned();
    let a = TestPeer::join(config(&link, &A)).await.expect("A joins");
    let candidates = wait_for("server candidates", Duration::from_secs(10), || {
        let c = a.stats().server_candidates;
        (!c.is_empty()).then_some(c)
    })
    .await;
    for c in &candidates {
        let f: Vec<&str> = c.split_whitespace().collect();
        assert!(f.len() >= 8 && f[7] == "host", "{c}");
        assert_eq!(f[4], "127.0.0.9", "1:1 NAT address advertised: {c}");
        let port: u16 = f[5].parse().unwrap();
        assert!((41000..=41020).contains(&port), "port in range: {c}");
    }
}

fn samples_from(stats: &PeerStats, from: &roomcast::ids::ParticipantId) -> u64 {
    stats.remote.get(from).map(|r| r.audio_samples).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn active_speakers_last_n_audio_and_visible_video() {
    // Audio of only the most recent speaker is forwarded.
    let server = Server::start_with(&["--audio-last-n", "1"]);
    let room = server.create_room(r#"{"name": "Speakers"}"#);
    let link = room["invite_url"].as_str().unwrap().to_owned();
    let mut loud = config(&link, &A);
    loud.volume = 0.5;
    let mut quiet_b = config(&link, &B);
    quiet_b.volume = 0.0;
    quiet_b.codec = VideoCodec::Vp8;
    let mut quiet_c = config(&link, &C);
    quiet_c.volume = 0.0;
    let a = TestPeer::join(loud).await.expect("A joins");
    let b = TestPeer::join(quiet_b).await.expect("B joins");
    let c = TestPeer::join(quiet_c).await.expect("C joins");

    // A is the active speaker, for everyone.
    wait_for(
        "A to be the active speaker",
        Duration::from_secs(15),
        || {
            [&b, &c]
                .iter()
                .all(|p| p.stats().speakers == vec![a.id.clone()])
                .then_some(())
        },
    )
    .await;
    // C hears A, and not B (last-N = 1), while it sees both.
    wait_for(
        "C to hear A and see A and B",
        Duration::from_secs(15),
        || {
            let s = c.stats();
            (samples_from(&s, &a.id) > 48_000
                && frames_from(&s, &a.id) > 30
                && frames_from(&s, &b.id) > 30)
                .then_some(())
        },
    )
    .await;
    let heard_b = samples_from(&c.stats(), &b.id);
    let heard_a = samples_from(&c.stats(), &a.id);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        samples_from(&c.stats(), &a.id) > heard_a + 48_000,
        "A's audio keeps coming"
    );
    assert!(
        samples_from(&c.stats(), &b.id) <= heard_b + 4_800,
        "B's audio is not forwarded under last-N: {} -> {}",
        heard_b,
        samples_from(&c.stats(), &b.id)
    );

    // C shows only A: B's video stops, A's goes on; then everyone again.
    c.set_visible(Some(vec![a.id.clone()]));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (fa, fb) = (
        frames_from(&c.stats(), &a.id),
        frames_from(&c.stats(), &b.id),
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        frames_from(&c.stats(), &a.id) > fa + 30,
        "A's video keeps coming"
    );
    assert!(
        frames_from(&c.stats(), &b.id) <= fb + 2,
        "B's video is paused for C"
    );
    c.set_visible(None);
    let resumed = wait_for("B's video to resume", Duration::from_secs(3), || {
        (frames_from(&c.stats(), &b.id) > fb + 15).then_some(())
    });
    resumed.await;
    // B was never paused for A.
    assert!(frames_from(&a.stats(), &b.id) > 60);
}

/// `roomcast_pipeline_errors_total{branch="participant"}` of a server.
fn participant_errors(server: &Server) -> f64 {
    let text = common::fetch("GET", &server.url("/metrics"), &[], None).text();
    text.lines()
        .find_map(|l| {
            l.strip_prefix("roomcast_pipeline_errors_total{branch=\"participant\"} ")
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_element_error_in_ones_branch_removes_only_that_participant() {
    let simulate = r#"{"type": "simulate", "scenario": "media_error"}"#;
    // A server real people use refuses to simulate anything.
    {
        let server = Server::start();
        let room = server.create_room(r#"{"name": "No faults"}"#);
        let link = room["invite_url"].as_str().unwrap().to_owned();
        let a = TestPeer::join(config(&link, &A)).await.expect("A joins");
        a.send_raw(simulate);
        wait_for("forbidden", Duration::from_secs(5), || {
            a.stats()
                .errors
                .iter()
                .any(|e| e == "forbidden")
                .then_some(())
        })
        .await;
        assert_eq!(
            server.participant_ids(room["id"].as_str().unwrap()).len(),
            1
        );
    }

    let server = Server::start_with(&["--simulate-faults"]);
    let room = server.create_room(r#"{"name": "Faults"}"#);
    let room_id = room["id"].as_str().unwrap().to_owned();
    let link = room["invite_url"].as_str().unwrap().to_owned();
    let a = TestPeer::join(config(&link, &A)).await.expect("A joins");
    let b = TestPeer::join(config(&link, &B)).await.expect("B joins");
    let c = TestPeer::join(config(&link, &C)).await.expect("C joins");
    wait_for("full mesh media", Duration::from_secs(30), || {
        let (sa, sb, sc) = (a.stats(), b.stats(), c.stats());
        (receives(&sa, &b.id, &B, 30)
            && receives(&sa, &c.id, &C, 30)
            && receives(&sb, &a.id, &A, 30)
            && receives(&sc, &a.id, &A, 30)
            && receives(&sc, &b.id, &B, 30))
        .then_some(())
    })
    .await;
    let errors_before = participant_errors(&server);

    // An element of B's publishing branch fails: B is told (fatal
    // media_failed) and removed; A and C go on seeing and hearing each other.
    b.send_raw(simulate);
    wait_for("B removed", Duration::from_secs(10), || {
        (b.stats().errors.iter().any(|e| e == "media_failed")
            && !a.stats().present.contains(&b.id)
            && !c.stats().present.contains(&b.id)
            && !server.participant_ids(&room_id).contains(&b.id.to_string()))
        .then_some(())
    })
    .await;
    let before = (
        frames_from(&a.stats(), &c.id),
        frames_from(&c.stats(), &a.id),
    );
    wait_for(
        "A and C still see each other",
        Duration::from_secs(10),
        || {
            (frames_from(&a.stats(), &c.id) > before.0 + 30
                && frames_from(&c.stats(), &a.id) > before.1 + 30)
                .then_some(())
        },
    )
    .await;
    let ids = server.participant_ids(&room_id);
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert!(
        participant_errors(&server) >= errors_before + 1.0,
        "the error is counted in /metrics"
    );
}
