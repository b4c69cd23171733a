//! MCU rooms: every participant receives one composite picture and a mix of
//! everyone else's audio (never their own voice), decoded by real peers.

mod common;

use common::av::tone_power;
use common::{Server, wait_for};
use roomcast::ids::ParticipantId;
use roomcast::loadgen::peer::{PeerConfig, TestPeer};
use roomcast::signaling::COMPOSITE_PARTICIPANT;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn everyone_gets_the_composite_and_everyone_elses_voice() {
    let s = Server::start();
    let room = s.create_room(r#"{"name": "Weak clients", "mode": "mcu"}"#);
    let link = room["host_url"].as_str().unwrap().to_owned();
    let people = [
        ("A", 0xd02020u32, 350.0),
        ("B", 0x20b020, 650.0),
        ("C", 0x2040d0, 1100.0),
    ];
    let mut peers = Vec::new();
    for (name, color, freq) in people {
        let mut cfg = PeerConfig::new(&link, name);
        cfg.color = color;
        cfg.freq = freq;
        cfg.volume = 0.5;
        peers.push(TestPeer::join(cfg).await.expect("join"));
    }
    let composite = ParticipantId::parse(COMPOSITE_PARTICIPANT).unwrap();

    // Each receives exactly one stream pair: the composite, nobody's own.
    wait_for(
        "the composite at every peer",
        Duration::from_secs(30),
        || {
            peers
                .iter()
                .all(|p| {
                    let st = p.stats();
                    st.remote
                        .get(&composite)
                        .is_some_and(|r| r.video_frames > 60 && r.recent_audio.len() >= 48_000)
                })
                .then_some(())
        },
    )
    .await;
    for p in &peers {
        let st = p.stats();
        let others: Vec<&ParticipantId> = st
            .remote
            .iter()
            .filter(|(id, r)| **id != composite && (r.video_frames > 0 || r.audio_samples > 0))
            .map(|(id, _)| id)
            .collect();
        assert!(
            others.is_empty(),
            "{} got individual streams: {others:?}",
            p.id
        );
        assert_eq!(
            st.remote[&composite].video_codec.as_deref(),
            Some("VP8"),
            "the composite is VP8"
        );
    }

    // Each peer hears the two others but not itself: power of each tone
    // against a frequency nobody sends, over the last second received.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let table = loop {
        let table: Vec<Vec<f64>> = peers
            .iter()
            .map(|p| {
                let st = p.stats();
                let audio: Vec<f32> = st.remote[&composite]
                    .recent_audio
                    .iter()
                    .map(|&v| v as f32 / 32768.0)
                    .collect();
                let floor = tone_power(&audio, 2500.0).max(1e-12);
                people
                    .iter()
                    .map(|(_, _, f)| tone_power(&audio, *f) / floor)
                    .collect()
            })
            .collect();
        // Own tone: leakage-level, thousands of times below the others'.
        let ok = table.iter().enumerate().all(|(i, row)| {
            let others = row
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, r)| *r)
                .fold(f64::INFINITY, f64::min);
            others > 200.0 && row[i] * 1000.0 < others
        });
        if ok || std::time::Instant::now() > deadline {
            break (ok, table);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        table.0,
        "tone power / floor per listener (rows) and speaker (columns): {:?}",
        table.1
    );
    let rgb = peers[0].stats().remote[&composite].last_rgb;
    assert!(rgb.is_some(), "a picture arrived");
    drop(peers);
}
