//! The load generator measures what it should: a 5-person meeting on
//! loopback delivers every stream to everyone with 0 % loss, and the server's
//! process figures are read.

mod common;

use common::{ADMIN_TOKEN, Server};
use roomcast::loadgen::scenario::{self, Kind, ScenarioArgs};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_person_meeting_has_no_loss() {
    let server = Server::start_with(&["--audio-last-n", "0"]);
    let args = ScenarioArgs {
        url: server.base.clone(),
        admin_token: ADMIN_TOKEN.into(),
        participants: 5,
        duration: 5,
        warmup: 3,
        visible: 9,
        speakers: 3,
        join_within: 10,
        video_kbps: 300,
        server_pid: Some(server.pid()),
        ice_local_ip: vec!["127.0.0.1".parse().unwrap()],
        json: None,
        label: "roomcast".into(),
        janus_url: None,
    };
    let r = scenario::run(Kind::Meeting, &args)
        .await
        .expect("scenario runs");
    println!("{}\n{}", scenario::TABLE_HEADER, scenario::table_row(&r));
    assert_eq!(r.joined, 5);
    assert_eq!(r.loss_pct, 0.0, "no loss on loopback");
    assert!(
        r.video_delivery_pct.is_some_and(|d| d >= 99.0),
        "every published video packet reaches the 4 others: {:?}",
        r.video_delivery_pct
    );
    // Everyone receives the video and audio of the 4 others.
    assert_eq!(r.video_streams_per_participant, 4.0);
    assert_eq!(r.audio_streams_per_participant, 4.0);
    // 20 video streams (~30 packets/s each) and 20 Opus streams (50/s).
    assert!(r.packets_per_s > 1200.0, "{} packets/s", r.packets_per_s);
    assert!(r.first_frame_p50_ms.is_some());
    assert_eq!(r.no_frame, 0);
    // Server figures come from /proc.
    assert!(r.server_cpu_pct.is_some_and(|c| c > 0.0));
    assert!(r.server_threads.is_some_and(|t| t > 10));
    assert!(r.packets_per_cpu_s.is_some_and(|p| p > 0.0));
}
