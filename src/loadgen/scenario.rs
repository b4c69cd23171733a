//! Load scenarios: many synthetic participants in one process, sharing one
//! pipeline and one set of encoders, counting (not decoding) what they
//! receive; the server process is measured from `/proc`.

use super::counting::StreamCounter;
use super::janus::{Janus, JanusPeer};
use super::media::PeerStats;
use super::peer::{PeerConfig, SharedMedia, SinkMode, TestPeer};
use super::source::{EncodedSource, SourceSpec};
use crate::ids::ParticipantId;
use anyhow::{Context, anyhow, bail};
use gst::prelude::*;
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::Write;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Which load to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// Everyone publishes video and audio, everyone receives everyone.
    Meeting,
    /// Everyone publishes; each shows `visible` others' video and hears the
    /// server's last-N speakers.
    LargeMeeting,
    /// One publisher, everyone else only receives.
    Livestream,
    /// One publisher, then the others join (receive-only) within `join_within` seconds.
    JoinStorm,
}

/// Parameters of a run.
#[derive(Debug, Clone, clap::Args)]
pub struct ScenarioArgs {
    /// Server base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Admin token (to create the room).
    #[arg(long, env = "ROOMCAST_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: String,
    /// Participants (publishers and receivers together).
    #[arg(long, short = 'n', default_value_t = 5)]
    pub participants: usize,
    /// Measured seconds, after the warm-up.
    #[arg(long, default_value_t = 20)]
    pub duration: u64,
    /// Seconds between the last join and the measurement.
    #[arg(long, default_value_t = 5)]
    pub warmup: u64,
    /// large-meeting: videos each participant shows.
    #[arg(long, default_value_t = 9)]
    pub visible: usize,
    /// large-meeting: people speaking at a time (rotating every 5 s).
    #[arg(long, default_value_t = 3)]
    pub speakers: usize,
    /// join-storm: seconds over which everyone joins.
    #[arg(long, default_value_t = 10)]
    pub join_within: u64,
    /// Video bitrate of publishers, kbit/s.
    #[arg(long, default_value_t = 300)]
    pub video_kbps: u32,
    /// Process id of the server, to measure its CPU, memory and threads.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// ICE host candidate addresses.
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1")]
    pub ice_local_ip: Vec<IpAddr>,
    /// Write the report as JSON here.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
    /// Label for the report (e.g. the server under test).
    #[arg(long, default_value = "roomcast")]
    pub label: String,
    /// Run against Janus VideoRoom at this URL (`http://host:8088/janus`)
    /// instead of roomcast (meeting and livestream only).
    #[arg(long)]
    pub janus_url: Option<String>,
}

/// A participant of either server.
enum Participant {
    Ours(TestPeer),
    Janus(JanusPeer),
}

impl Participant {
    fn stats(&self) -> PeerStats {
        match self {
            Participant::Ours(p) => p.stats(),
            Participant::Janus(p) => p.stats(),
        }
    }

    fn sent(&self) -> (u64, u64) {
        match self {
            Participant::Ours(p) => p.sent(),
            Participant::Janus(p) => p.sent(),
        }
    }

    fn set_level(&self, level: u8) {
        match self {
            Participant::Ours(p) => p.set_level(level),
            Participant::Janus(p) => p.set_level(level),
        }
    }

    fn id(&self) -> &ParticipantId {
        match self {
            Participant::Ours(p) => &p.id,
            Participant::Janus(p) => &p.id,
        }
    }

    fn joined_at(&self) -> Instant {
        match self {
            Participant::Ours(p) => p.joined_at,
            Participant::Janus(p) => p.joined_at,
        }
    }

    async fn leave(self) {
        if let Participant::Ours(p) = self {
            p.leave().await;
        }
    }
}

/// A process's CPU time, memory and threads at one moment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcSample {
    /// user + system CPU seconds so far.
    pub cpu_s: f64,
    /// Resident memory, KiB.
    pub rss_kib: u64,
    /// Threads.
    pub threads: u64,
    /// When.
    pub at: Option<Instant>,
}

/// Reads `/proc/<pid>/stat` and `/proc/<pid>/status`.
pub fn sample_process(pid: u32) -> anyhow::Result<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command name.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow!("stat"))?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime = field 14, stime = 15, num_threads = 20 (1-based, counting pid and comm).
    let cpu_s = (ticks(11) + ticks(12)) / 100.0;
    let threads = ticks(17) as u64;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Ok(ProcSample {
        cpu_s,
        rss_kib,
        threads,
        at: Some(Instant::now()),
    })
}

/// The result of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Server under test.
    pub label: String,
    /// Scenario.
    pub scenario: Kind,
    /// Participants asked for.
    pub participants: usize,
    /// Participants that joined.
    pub joined: usize,
    /// Publishers among them.
    pub publishers: usize,
    /// Measured seconds.
    pub seconds: f64,
    /// Server CPU over the window, percent of one core.
    pub server_cpu_pct: Option<f64>,
    /// Server resident memory at the end, MiB.
    pub server_rss_mib: Option<f64>,
    /// Server memory added per participant (vs. before the room), MiB.
    pub rss_per_participant_mib: Option<f64>,
    /// Server threads at the end.
    pub server_threads: Option<u64>,
    /// Threads added per participant.
    pub threads_per_participant: Option<f64>,
    /// RTP packets received by all participants per second.
    pub packets_per_s: f64,
    /// Received payload, Mbit/s.
    pub mbit_per_s: f64,
    /// Packets received per second of server CPU.
    pub packets_per_cpu_s: Option<f64>,
    /// Packet loss, percent (sequence gaps at the receivers).
    pub loss_pct: f64,
    /// Video packets received ÷ video packets published × receivers of each,
    /// percent: below 100 when the server (or the machine) cannot keep up.
    pub video_delivery_pct: Option<f64>,
    /// Mean interarrival jitter of video streams, ms.
    pub jitter_ms: f64,
    /// Join → first remote keyframe, 50th percentile, ms.
    pub first_frame_p50_ms: Option<u64>,
    /// … 95th percentile, ms.
    pub first_frame_p95_ms: Option<u64>,
    /// Participants that never received a keyframe.
    pub no_frame: usize,
    /// Video streams received per participant, on average.
    pub video_streams_per_participant: f64,
    /// Audio streams received per participant, on average.
    pub audio_streams_per_participant: f64,
}

fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied()
}

/// Sums every stream counter of every peer: (video, audio).
fn totals(peers: &[Participant]) -> (StreamCounter, StreamCounter) {
    let (mut v, mut a) = (StreamCounter::default(), StreamCounter::default());
    for p in peers {
        for r in p.stats().remote.values() {
            v.absorb(&r.video_rtp);
            a.absorb(&r.audio_rtp);
        }
    }
    (v, a)
}

async fn create_room(args: &ScenarioArgs, name: &str) -> anyhow::Result<String> {
    let url = format!("{}/api/v1/rooms", args.url.trim_end_matches('/'));
    let token = args.admin_token.clone();
    let body =
        serde_json::json!({"name": name, "max_participants": args.participants.clamp(1, 100)});
    let resp: serde_json::Value = tokio::task::spawn_blocking(move || {
        ureq::post(&url)
            .set("Authorization", &format!("Bearer {token}"))
            .send_json(body)
            .map_err(|e| anyhow!("create room: {e}"))?
            .into_json::<serde_json::Value>()
            .map_err(|e| anyhow!("create room: {e}"))
    })
    .await??;
    resp["invite_url"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("no invite_url in {resp}"))
}

fn progress(line: &str) {
    let mut err = std::io::stderr();
    let _ = write!(err, "\r{line:<100}");
    let _ = err.flush();
}

/// Runs one scenario against a roomcast server.
pub async fn run(kind: Kind, args: &ScenarioArgs) -> anyhow::Result<Report> {
    gst::init()?;
    if args.participants < 2 {
        bail!("at least 2 participants");
    }
    if args.participants > 100 {
        bail!("a room holds at most 100 participants");
    }
    let idle = args.server_pid.map(sample_process).transpose()?;
    let janus = args
        .janus_url
        .as_ref()
        .map(|base| Janus { base: base.clone() });
    if janus.is_some() && !matches!(kind, Kind::Meeting | Kind::Livestream) {
        bail!("against Janus only the meeting and livestream scenarios run");
    }
    let pipeline = gst::Pipeline::with_name("loadgen");
    pipeline.set_state(gst::State::Playing)?;
    let source = EncodedSource::new(
        &pipeline,
        &SourceSpec {
            video_kbps: args.video_kbps,
            ..Default::default()
        },
    )?;
    let shared = SharedMedia {
        pipeline: pipeline.clone(),
        source,
    };
    let publishers = match kind {
        Kind::Meeting | Kind::LargeMeeting => args.participants,
        Kind::Livestream | Kind::JoinStorm => 1,
    };
    let started = Instant::now();
    let mut peers: Vec<Participant> = Vec::new();
    let spacing = match kind {
        Kind::JoinStorm => {
            Duration::from_secs_f64(args.join_within as f64 / args.participants.max(1) as f64)
        }
        _ => Duration::from_millis(50),
    };
    let mut failures = 0;
    match &janus {
        None => {
            let link = create_room(args, &format!("loadgen {kind:?}")).await?;
            for i in 0..args.participants {
                let mut cfg = PeerConfig::new(&link, &format!("lg{i}"));
                cfg.publish = i < publishers;
                cfg.sink = SinkMode::Count;
                cfg.shared = Some(shared.clone());
                cfg.ice_local_ips = args.ice_local_ip.clone();
                // Nobody speaks until the rotation starts.
                cfg.level = Some(127);
                let next = started + spacing * (i as u32 + 1);
                match TestPeer::join(cfg).await {
                    Ok(p) => peers.push(Participant::Ours(p)),
                    Err(e) => {
                        failures += 1;
                        tracing::warn!("participant {i} could not join: {e:#}");
                    }
                }
                progress(&format!("joining {}/{}", peers.len(), args.participants));
                tokio::time::sleep_until(next.into()).await;
            }
        }
        Some(janus) => {
            // Publishers join first, then everyone subscribes to every other
            // feed in one multistream subscription.
            let room = janus.create_room(publishers).await?;
            let mut joined = Vec::new();
            for i in 0..args.participants {
                match JanusPeer::join(
                    janus,
                    room,
                    &format!("lg{i}"),
                    i < publishers,
                    shared.clone(),
                    args.ice_local_ip.clone(),
                )
                .await
                {
                    Ok(p) => joined.push(p),
                    Err(e) => {
                        failures += 1;
                        tracing::warn!("participant {i} could not join Janus: {e:#}");
                    }
                }
                progress(&format!(
                    "joining Janus {}/{}",
                    joined.len(),
                    args.participants
                ));
            }
            let feeds: Vec<u64> = joined.iter().filter_map(|p| p.feed).collect();
            for (i, p) in joined.iter().enumerate() {
                let others: Vec<u64> = feeds
                    .iter()
                    .copied()
                    .filter(|f| Some(*f) != p.feed)
                    .collect();
                if let Err(e) = p.subscribe(&others).await {
                    failures += 1;
                    tracing::warn!("participant {i} could not subscribe on Janus: {e:#}");
                }
                progress(&format!("subscribing on Janus {}/{}", i + 1, joined.len()));
            }
            peers.extend(joined.into_iter().map(Participant::Janus));
        }
    }
    if peers.is_empty() {
        bail!("nobody could join ({failures} failures)");
    }
    let ids: Vec<ParticipantId> = peers.iter().map(|p| p.id().clone()).collect();
    if kind == Kind::LargeMeeting {
        // Each shows the next `visible` participants, so every publisher is watched.
        for (i, p) in peers.iter().enumerate() {
            let shown: Vec<ParticipantId> = (1..=args.visible.min(ids.len() - 1))
                .map(|k| ids[(i + k) % ids.len()].clone())
                .collect();
            if let Participant::Ours(p) = p {
                p.set_visible(Some(shown));
            }
        }
    }
    let rotate = |round: usize| {
        if kind != Kind::LargeMeeting && kind != Kind::Meeting {
            return;
        }
        let n = peers.len();
        let speakers = args.speakers.min(n);
        for (i, p) in peers.iter().enumerate() {
            let speaking = (i + n - (round * speakers) % n) % n < speakers;
            p.set_level(if speaking { 25 } else { 127 });
        }
    };
    rotate(0);
    // Warm-up.
    let warm_end = Instant::now() + Duration::from_secs(args.warmup);
    while Instant::now() < warm_end {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (v, a) = totals(&peers);
        progress(&format!(
            "warm-up: {} joined, {} video + {} audio packets so far",
            peers.len(),
            v.packets,
            a.packets
        ));
    }
    let sent_before: u64 = peers.iter().map(|p| p.sent().0).sum();
    let before = totals(&peers);
    let start_stats: Vec<PeerStats> = peers.iter().map(|p| p.stats()).collect();
    let cpu0 = args.server_pid.map(sample_process).transpose()?;
    let t0 = Instant::now();
    let mut round = 0;
    while t0.elapsed() < Duration::from_secs(args.duration) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let elapsed = t0.elapsed().as_secs();
        if elapsed / 5 > round as u64 {
            round += 1;
            rotate(round);
        }
        let (v, a) = totals(&peers);
        let rate = (v.packets + a.packets - before.0.packets - before.1.packets) as f64
            / t0.elapsed().as_secs_f64();
        let cpu = match (args.server_pid, cpu0) {
            (Some(pid), Some(c0)) => sample_process(pid)
                .map(|c| {
                    format!(
                        ", server {:.0}% CPU",
                        (c.cpu_s - c0.cpu_s) / t0.elapsed().as_secs_f64() * 100.0
                    )
                })
                .unwrap_or_default(),
            _ => String::new(),
        };
        progress(&format!(
            "{:?} n={}: {elapsed}/{} s, {rate:.0} packets/s received{cpu}",
            kind,
            peers.len(),
            args.duration
        ));
    }
    let seconds = t0.elapsed().as_secs_f64();
    let sent_after: u64 = peers.iter().map(|p| p.sent().0).sum();
    let after = totals(&peers);
    let cpu1 = args.server_pid.map(sample_process).transpose()?;
    let _ = writeln!(std::io::stderr());

    let packets = (after.0.packets + after.1.packets) - (before.0.packets + before.1.packets);
    let expected = (after.0.expected + after.1.expected) - (before.0.expected + before.1.expected);
    let bytes = (after.0.bytes + after.1.bytes) - (before.0.bytes + before.1.bytes);
    // Join → first frame: for each participant, the first keyframe from
    // someone who was already publishing when it joined.
    let joined_at: BTreeMap<ParticipantId, Instant> = peers
        .iter()
        .map(|p| (p.id().clone(), p.joined_at()))
        .collect();
    let mut first_frames: Vec<u64> = Vec::new();
    let mut no_frame = 0;
    let (mut video_streams, mut audio_streams, mut jitter_sum, mut jitter_n) =
        (0usize, 0usize, 0.0, 0usize);
    for p in &peers {
        let s = p.stats();
        let earlier =
            |remote: &ParticipantId| joined_at.get(remote).is_some_and(|t| *t < p.joined_at());
        // Someone publishing joined before: a frame is expected.
        let expects = publishers > 0 && peers.iter().any(|q| q.joined_at() < p.joined_at());
        let first = s
            .remote
            .iter()
            .filter(|(remote, _)| earlier(remote))
            .filter_map(|(_, r)| r.video_rtp.first_keyframe_ms)
            .min();
        match first {
            Some(ms) => first_frames.push(ms),
            None if expects => no_frame += 1,
            None => {}
        }
        // Streams that delivered packets during the measured window.
        let at_start = &start_stats[peers.iter().position(|q| q.id() == p.id()).unwrap_or(0)];
        for (remote, r) in &s.remote {
            let earlier = at_start.remote.get(remote);
            let moved = |now: u64, then: Option<u64>| now > then.unwrap_or(0);
            if moved(r.video_rtp.packets, earlier.map(|e| e.video_rtp.packets)) {
                video_streams += 1;
                jitter_sum += r.video_rtp.jitter_ms;
                jitter_n += 1;
            }
            if moved(r.audio_rtp.packets, earlier.map(|e| e.audio_rtp.packets)) {
                audio_streams += 1;
            }
        }
    }
    first_frames.sort_unstable();
    let cpu_s = match (cpu0, cpu1) {
        (Some(a), Some(b)) => Some(b.cpu_s - a.cpu_s),
        _ => None,
    };
    let n = peers.len() as f64;
    // Each published video is meant for this many receivers.
    let watchers = match kind {
        Kind::LargeMeeting => args.visible.min(peers.len().saturating_sub(1)),
        _ => peers.len().saturating_sub(1),
    } as f64;
    let video_expected = (sent_after - sent_before) as f64 * watchers;
    let video_received = (after.0.packets - before.0.packets) as f64;
    let report = Report {
        label: args.label.clone(),
        scenario: kind,
        participants: args.participants,
        joined: peers.len(),
        publishers: publishers.min(peers.len()),
        seconds,
        server_cpu_pct: cpu_s.map(|c| c / seconds * 100.0),
        server_rss_mib: cpu1.map(|c| c.rss_kib as f64 / 1024.0),
        rss_per_participant_mib: idle
            .zip(cpu1)
            .map(|(i, e)| (e.rss_kib as f64 - i.rss_kib as f64) / 1024.0 / n),
        server_threads: cpu1.map(|c| c.threads),
        threads_per_participant: idle
            .zip(cpu1)
            .map(|(i, e)| (e.threads as f64 - i.threads as f64) / n),
        packets_per_s: packets as f64 / seconds,
        mbit_per_s: bytes as f64 * 8.0 / seconds / 1e6,
        packets_per_cpu_s: cpu_s.filter(|c| *c > 0.0).map(|c| packets as f64 / c),
        loss_pct: if expected > 0 {
            expected.saturating_sub(packets) as f64 / expected as f64 * 100.0
        } else {
            0.0
        },
        video_delivery_pct: (video_expected > 0.0)
            .then(|| (video_received / video_expected * 100.0).min(100.0)),
        jitter_ms: if jitter_n > 0 {
            jitter_sum / jitter_n as f64
        } else {
            0.0
        },
        first_frame_p50_ms: percentile(&first_frames, 0.5),
        first_frame_p95_ms: percentile(&first_frames, 0.95),
        no_frame,
        video_streams_per_participant: video_streams as f64 / n,
        audio_streams_per_participant: audio_streams as f64 / n,
    };
    for p in peers {
        p.leave().await;
    }
    let _ = pipeline.set_state(gst::State::Null);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(report)
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map(|v| format!("{v:.digits$}"))
        .unwrap_or_else(|| "–".into())
}

/// The report as a markdown table row (see [`TABLE_HEADER`]).
pub fn table_row(r: &Report) -> String {
    format!(
        "| {} | {:?} | {}/{} | {} | {} | {} | {} | {} | {:.0} | {} | {:.2} | {} | {:.1} | {} / {} | {:.1} v + {:.1} a |",
        r.label,
        r.scenario,
        r.joined,
        r.participants,
        opt(r.server_cpu_pct, 1),
        opt(r.server_rss_mib, 1),
        opt(r.rss_per_participant_mib, 2),
        opt(r.server_threads.map(|t| t as f64), 0),
        opt(r.threads_per_participant, 1),
        r.packets_per_s,
        opt(r.packets_per_cpu_s, 0),
        r.loss_pct,
        opt(r.video_delivery_pct, 1),
        r.jitter_ms,
        r.first_frame_p50_ms
            .map(|v| v.to_string())
            .unwrap_or_else(|| "–".into()),
        r.first_frame_p95_ms
            .map(|v| v.to_string())
            .unwrap_or_else(|| "–".into()),
        r.video_streams_per_participant,
        r.audio_streams_per_participant,
    )
}

/// Header of [`table_row`].
pub const TABLE_HEADER: &str = "| server | scenario | joined | server CPU % (1 core) | RSS MiB | RSS/participant MiB | threads | threads/participant | packets/s received | packets per CPU-s | loss % | video delivered % | jitter ms | first frame p50 / p95 ms | streams received each |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|";

/// Collected rows, printed as one table.
pub fn print_table(reports: &[Report]) {
    println!("{TABLE_HEADER}");
    for r in reports {
        println!("{}", table_row(r));
    }
}

/// Summary of a set of reports keyed by scenario (for JSON output).
pub fn by_scenario(reports: &[Report]) -> BTreeMap<String, &Report> {
    reports
        .iter()
        .map(|r| (format!("{}-{:?}", r.label, r.scenario), r))
        .collect()
}
