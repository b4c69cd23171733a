//! `roomcast loadgen`: synthetic participants on GStreamer, for tests and
//! load. `peer` runs one participant and prints what it receives as JSON
//! lines (used by tests that need a participant in another process).

pub mod bench;
pub mod counting;
pub mod hlsbench;
pub mod janus;
pub mod latency;
pub mod media;
pub mod mixbench;
pub mod peer;
pub mod scenario;
pub mod soak;
pub mod soakreport;
pub mod source;
pub mod whepbench;
pub mod whip;

use clap::{Args, Subcommand};
use peer::{PeerConfig, TestPeer, VideoCodec};
use std::io::Write;
use std::net::IpAddr;
use std::time::Duration;

/// `roomcast loadgen …`
#[derive(Debug, Args)]
pub struct LoadgenArgs {
    /// Scenario.
    #[command(subcommand)]
    pub scenario: Scenario,
}

/// Scenarios.
#[derive(Debug, Subcommand)]
pub enum Scenario {
    /// One participant that publishes a colour and a tone and decodes everyone else.
    Peer(PeerArgs),
    /// N participants, everyone publishes, everyone receives everyone.
    Meeting(scenario::ScenarioArgs),
    /// N publishers; each receives `--visible` videos and the server's last-N speakers.
    LargeMeeting(scenario::ScenarioArgs),
    /// One publisher, N−1 receivers.
    Livestream(scenario::ScenarioArgs),
    /// One publisher, then N−1 receivers join within `--join-within` seconds.
    JoinStorm(scenario::ScenarioArgs),
    /// The benchmark suite: fresh servers (roomcast, and Janus when installed) per scenario.
    Bench(bench::BenchArgs),
    /// Cost of composing 4 × 360p into 720p30 H.264: roomcast's mixer and ffmpeg.
    Mixer(mixbench::MixerBenchArgs),
    /// HLS requests/s served by roomcast and by nginx serving the same files.
    Hls(hlsbench::HlsBenchArgs),
    /// Glass-to-glass latency of a broadcast over WHEP and HLS.
    Latency(latency::LatencyArgs),
    /// WHEP viewers per core of server CPU (a broadcast of a WHIP ingest).
    Whep(whepbench::WhepBenchArgs),
    /// A room held for a long time with churn, watched for leaks (memory, threads, fds).
    Soak(soak::SoakArgs),
}

/// Flags of `loadgen peer`.
#[derive(Debug, Args)]
pub struct PeerArgs {
    /// Invite or host URL of the room.
    #[arg(long)]
    pub link: String,
    /// Display name.
    #[arg(long, default_value = "loadgen")]
    pub name: String,
    /// Colour to publish, hex RRGGBB.
    #[arg(long, default_value = "ff0000")]
    pub color: String,
    /// Tone to publish, Hz.
    #[arg(long, default_value_t = 440.0)]
    pub freq: f64,
    /// Video codec.
    #[arg(long, value_enum, default_value_t = VideoCodec::Vp8)]
    pub codec: VideoCodec,
    /// ICE host candidate addresses.
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1")]
    pub ice_local_ip: Vec<IpAddr>,
    /// Print stats every this many milliseconds.
    #[arg(long, default_value_t = 500)]
    pub stats_ms: u64,
    /// Leave after this many seconds (0: run until killed).
    #[arg(long, default_value_t = 0)]
    pub duration: u64,
}

/// Runs a loadgen scenario.
pub async fn run(args: LoadgenArgs) -> anyhow::Result<()> {
    let (kind, a) = match args.scenario {
        Scenario::Peer(a) => return run_peer(a).await,
        Scenario::Meeting(a) => (scenario::Kind::Meeting, a),
        Scenario::LargeMeeting(a) => (scenario::Kind::LargeMeeting, a),
        Scenario::Livestream(a) => (scenario::Kind::Livestream, a),
        Scenario::JoinStorm(a) => (scenario::Kind::JoinStorm, a),
        Scenario::Bench(a) => return bench::run(a).await,
        Scenario::Mixer(a) => {
            return tokio::task::spawn_blocking(move || mixbench::run(a)).await?;
        }
        Scenario::Hls(a) => return tokio::task::spawn_blocking(move || hlsbench::run(a)).await?,
        Scenario::Latency(a) => return latency::run(a).await,
        Scenario::Whep(a) => return whepbench::run(a).await,
        Scenario::Soak(a) => return soak::run(a).await,
    };
    let report = scenario::run(kind, &a).await?;
    scenario::print_table(std::slice::from_ref(&report));
    Ok(())
}

async fn run_peer(a: PeerArgs) -> anyhow::Result<()> {
    let color = u32::from_str_radix(a.color.trim_start_matches("0x").trim_start_matches('#'), 16)
        .map_err(|_| anyhow::anyhow!("--color must be hex RRGGBB"))?;
    let mut cfg = PeerConfig::new(&a.link, &a.name);
    cfg.color = color;
    cfg.freq = a.freq;
    cfg.codec = a.codec;
    cfg.ice_local_ips = a.ice_local_ip;
    let peer = TestPeer::join(cfg).await?;
    let start = std::time::Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(a.stats_ms.max(50)));
    loop {
        tick.tick().await;
        let stats = peer.stats();
        println!("{}", serde_json::to_string(&stats)?);
        let _ = std::io::stdout().flush();
        if stats.disconnected {
            anyhow::bail!("disconnected");
        }
        if a.duration > 0 && start.elapsed() >= Duration::from_secs(a.duration) {
            peer.leave().await;
            return Ok(());
        }
    }
}
