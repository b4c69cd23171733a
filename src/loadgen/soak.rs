//! `roomcast loadgen soak`: one room held for a long time, watched for leaks.
//!
//! Starts its own server (this binary, temp data dir, loopback ICE), fills a
//! room with synthetic participants that all publish (VP8 at a low bitrate
//! and Opus, encoded once and shared) but each show only a few others' video
//! (`set_visible`) and hear the server's last-N speakers, so that the machine
//! is far from saturated: a soak measures leaks, not capacity. Meanwhile it
//! churns what leaks would show — a participant replaced every minute (in
//! turn leaving and dropping its connection), a short recording every few
//! minutes (composite and tracks in turn, deleted afterwards), a broadcast
//! watched by a WHEP viewer — and samples the server's RSS, threads, file
//! descriptors and CPU. The verdict ([`super::soakreport::verdict`]) compares
//! the first window after the warm-up with the last one.

use super::counting::StreamCounter;
use super::hlsbench::Proc;
use super::peer::{PeerConfig, SharedMedia, SinkMode, TestPeer};
use super::scenario::{ProcSample, sample_process};
use super::soakreport::{self, EndCheck, Limits, Ops, Received, Sample};
use super::source::{EncodedSource, SourceSpec};
use super::whip::WhepViewer;
use crate::ids::ParticipantId;
use anyhow::{Context, anyhow, bail};
use gst::prelude::*;
use serde_json::{Value, json};
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::io::{BufRead, BufReader, Write};
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Flags of `loadgen soak`.
#[derive(Debug, Clone, clap::Args)]
pub struct SoakArgs {
    /// Participants in the room (kept constant through the churn).
    #[arg(long, short = 'n', default_value_t = 20)]
    pub participants: usize,
    /// Length of the run, minutes (after everyone joined).
    #[arg(long, default_value_t = 30)]
    pub minutes: u64,
    /// Seconds between samples of the server.
    #[arg(long, default_value_t = 30)]
    pub sample_seconds: u64,
    /// Videos each participant shows.
    #[arg(long, default_value_t = 3)]
    pub visible: usize,
    /// People speaking at a time (rotating every 5 s); the server forwards
    /// the audio of its last 3 speakers.
    #[arg(long, default_value_t = 3)]
    pub speakers: usize,
    /// Video bitrate of the participants, kbit/s.
    #[arg(long, default_value_t = 150)]
    pub video_kbps: u32,
    /// Replace a participant every this many seconds (0: never).
    #[arg(long, default_value_t = 60)]
    pub churn_seconds: u64,
    /// Record every this many seconds (0: never); the first one early in
    /// the warm-up, so that the compared windows start from memory that
    /// has seen every path.
    #[arg(long, default_value_t = 180)]
    pub record_every: u64,
    /// Length of each recording, seconds.
    #[arg(long, default_value_t = 10)]
    pub record_seconds: u64,
    /// Broadcast every this many seconds (0: never); the first one in the warm-up.
    #[arg(long, default_value_t = 300)]
    pub broadcast_every: u64,
    /// Length of each broadcast's WHEP viewing, seconds.
    #[arg(long, default_value_t = 15)]
    pub broadcast_seconds: u64,
    /// Replace the section between the soak markers of this markdown file.
    #[arg(long)]
    pub write: Option<PathBuf>,
    /// Write every sample, the end check and the verdict as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write the server's whole stderr here (else only counted, and the
    /// first lines echoed).
    #[arg(long)]
    pub server_log: Option<PathBuf>,
    /// An environment variable for the server only, `NAME=VALUE` (repeat
    /// for more): allocator experiments such as `MALLOC_ARENA_MAX=1` or
    /// `LD_PRELOAD=…/libjemalloc.so.2`, without touching the load generator.
    #[arg(long = "server-env", value_parser = parse_env)]
    pub server_env: Vec<(String, String)>,
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("{s:?} is not NAME=VALUE")),
    }
}

const ADMIN: &str = "soak-admin-token-0123456789";
const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
/// Speakers change this often.
const ROTATE: Duration = Duration::from_secs(5);
/// How long the end check watches everyone's media.
const END_CHECK: Duration = Duration::from_secs(10);
/// The audio last-N the server runs with.
const AUDIO_LAST_N: usize = 3;
/// Between the joins and the first sample.
const SETTLE: Duration = Duration::from_secs(5);
/// Server log lines echoed on stderr (all are counted).
const ECHOED_SERVER_LINES: usize = 40;

/// What the server wrote to stderr (warnings and errors at `RUST_LOG=warn`).
#[derive(Debug, Clone, Default)]
struct ServerLog {
    lines: usize,
    tail: VecDeque<String>,
}

/// The server under test, stopped (SIGTERM) when dropped.
struct Server {
    proc: Proc,
    base: String,
    log: Arc<Mutex<ServerLog>>,
}

impl Server {
    fn start(log_file: Option<&std::path::Path>, env: &[(String, String)]) -> anyhow::Result<Self> {
        let mut file = log_file
            .map(|p| std::fs::File::create(p).with_context(|| format!("creating {}", p.display())))
            .transpose()?;
        let dir = tempfile::tempdir()?;
        let exe = std::env::current_exe()?;
        let mut child = Command::new(exe)
            .args(["serve", "--listen", "127.0.0.1:0", "--admin-token", ADMIN])
            // All the load comes from one address: no per-address limits.
            .args(["--rate-limit", "false"])
            .args(["--ice-local-ip", "127.0.0.1", "--empty-timeout", "1h"])
            .args(["--audio-last-n", &AUDIO_LAST_N.to_string()])
            .arg("--data-dir")
            .arg(dir.path())
            .env("RUST_LOG", "warn")
            .env("NO_COLOR", "1")
            .env_remove("ROOMCAST_LOG_FORMAT")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting roomcast")?;
        let log: Arc<Mutex<ServerLog>> = Arc::default();
        if let Some(stderr) = child.stderr.take() {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if line.trim().is_empty() {
                        continue;
                    }
                    if let Some(f) = file.as_mut() {
                        let _ = writeln!(f, "{line}");
                    }
                    let mut l = log.lock().unwrap_or_else(|p| p.into_inner());
                    // Echoed up to a point; counted and the last ones kept.
                    if l.lines < ECHOED_SERVER_LINES {
                        eprintln!("server: {line}");
                    } else if l.lines == ECHOED_SERVER_LINES {
                        eprintln!("server: … (further lines only counted)");
                    }
                    l.lines += 1;
                    l.tail.push_back(line);
                    if l.tail.len() > 20 {
                        l.tail.pop_front();
                    }
                }
            });
        }
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let proc = Proc { child, dir };
        let mut lines = BufReader::new(stdout).lines();
        let base = loop {
            let line = lines
                .next()
                .ok_or_else(|| anyhow!("roomcast exited before listening"))??;
            if let Some(url) = line.strip_prefix("roomcast listening on ") {
                break url.trim().trim_end_matches('/').to_owned();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        Ok(Self { proc, base, log })
    }

    fn pid(&self) -> u32 {
        self.proc.child.id()
    }
}

/// An admin API call off the async threads; the JSON answer (`Null` when empty).
async fn api(
    base: &str,
    method: &'static str,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<Value> {
    let url = format!("{base}{path}");
    tokio::task::spawn_blocking(move || {
        let req = ureq::request(method, &url)
            .timeout(Duration::from_secs(20))
            .set("Authorization", &format!("Bearer {ADMIN}"));
        let resp = match body {
            Some(b) => req.send_json(b),
            None => req.call(),
        };
        let text = match resp {
            Ok(r) => r
                .into_string()
                .map_err(|e| anyhow!("{method} {url}: {e}"))?,
            Err(ureq::Error::Status(code, r)) => bail!(
                "{method} {url}: HTTP {code}: {}",
                r.into_string().unwrap_or_default()
            ),
            Err(e) => bail!("{method} {url}: {e}"),
        };
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).map_err(|e| anyhow!("{method} {url}: {e}"))
    })
    .await?
}

/// The server's heap in use and kept free, KiB, from its `/metrics`.
async fn heap_of(base: &str) -> Option<(u64, u64)> {
    let url = format!("{base}/metrics");
    let text = tokio::task::spawn_blocking(move || {
        ureq::get(&url)
            .timeout(Duration::from_secs(10))
            .set("Authorization", &format!("Bearer {ADMIN}"))
            .call()
            .ok()?
            .into_string()
            .ok()
    })
    .await
    .ok()??;
    let value = |state: &str| {
        let name = format!("roomcast_heap_bytes{{state=\"{state}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(name.as_str()))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|b| b / 1024)
    };
    Some((value("in_use")?, value("free")?))
}

fn str_field(v: &Value, key: &str) -> anyhow::Result<String> {
    v[key]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("no {key} in {v}"))
}

/// Open file descriptors of a process.
fn fds_of(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count() as u64)
        .unwrap_or(0)
}

/// The room's synthetic participants, one per slot. Slot 0 never churns
/// (it is the broadcasts' source).
struct Room {
    id: String,
    link: String,
    shared: SharedMedia,
    slots: Mutex<Vec<Option<TestPeer>>>,
    /// Whose video each slot was last told to show.
    shown: Mutex<Vec<Vec<ParticipantId>>>,
    visible: usize,
    speakers: usize,
    joins: Mutex<u64>,
}

impl Room {
    fn slots(&self) -> std::sync::MutexGuard<'_, Vec<Option<TestPeer>>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn len(&self) -> usize {
        self.slots().len()
    }

    /// A new participant (publishing, counting what it receives, silent
    /// until the speaker rotation picks it).
    async fn join(&self, slot: usize) -> anyhow::Result<TestPeer> {
        let n = {
            let mut j = self.joins.lock().unwrap_or_else(|p| p.into_inner());
            *j += 1;
            *j
        };
        let mut cfg = PeerConfig::new(&self.link, &format!("soak{slot}_{n}"));
        cfg.sink = SinkMode::Count;
        cfg.shared = Some(self.shared.clone());
        cfg.ice_local_ips = vec![LOCAL];
        cfg.level = Some(127);
        TestPeer::join(cfg).await
    }

    /// Tells every participant whose set changed which videos to show: the
    /// next `visible` participants, so that every video is watched.
    fn update_visible(&self) {
        let slots = self.slots();
        let ids: Vec<Option<ParticipantId>> = slots
            .iter()
            .map(|p| p.as_ref().map(|p| p.id.clone()))
            .collect();
        let mut shown = self.shown.lock().unwrap_or_else(|p| p.into_inner());
        shown.resize(ids.len(), Vec::new());
        for (i, peer) in slots.iter().enumerate() {
            let Some(peer) = peer else { continue };
            let want: Vec<ParticipantId> = (1..ids.len())
                .filter_map(|k| ids[(i + k) % ids.len()].clone())
                .take(self.visible)
                .collect();
            if shown[i] != want {
                peer.set_visible(Some(want.clone()));
                shown[i] = want;
            }
        }
    }

    /// Round `round` of the speaker rotation.
    fn rotate(&self, round: usize) {
        let slots = self.slots();
        let n = slots.len().max(1);
        let speakers = self.speakers.min(n);
        for (i, p) in slots.iter().enumerate() {
            if let Some(p) = p {
                let speaking = (i + n - (round * speakers) % n) % n < speakers;
                p.set_level(if speaking { 25 } else { 127 });
            }
        }
    }

    /// Every participant's received packets so far.
    fn received(&self) -> HashMap<ParticipantId, Received> {
        let slots = self.slots();
        slots
            .iter()
            .flatten()
            .map(|p| {
                let (mut v, mut a) = (StreamCounter::default(), StreamCounter::default());
                for r in p.stats().remote.values() {
                    v.absorb(&r.video_rtp);
                    a.absorb(&r.audio_rtp);
                }
                let r = Received {
                    video: v.packets,
                    video_expected: v.expected,
                    audio: a.packets,
                    audio_expected: a.expected,
                };
                (p.id.clone(), r)
            })
            .collect()
    }

    /// Says on stderr who received no video or no audio between two
    /// readings (once per participant in `told`), from whom it received
    /// and what it shows.
    fn describe_stalled(
        &self,
        before: &HashMap<ParticipantId, Received>,
        after: &HashMap<ParticipantId, Received>,
        told: &mut HashSet<ParticipantId>,
    ) {
        let slots = self.slots();
        let shown = self.shown.lock().unwrap_or_else(|p| p.into_inner());
        for (slot, peer) in slots.iter().enumerate() {
            let Some(peer) = peer else { continue };
            let then = before.get(&peer.id).copied().unwrap_or_default();
            let Some(now) = after.get(&peer.id) else {
                continue;
            };
            if (now.video > then.video && now.audio > then.audio) || !told.insert(peer.id.clone()) {
                continue;
            }
            let stats = peer.stats();
            let from: Vec<String> = stats
                .remote
                .iter()
                .map(|(id, r)| {
                    format!(
                        "{id}: {} v / {} a",
                        r.video_rtp.packets, r.audio_rtp.packets
                    )
                })
                .collect();
            eprintln!(
                "slot {slot} ({}, joined {:.0} s ago, {} subscribe offers, subscribe connection {}{}): +{} video, +{} audio packets; shows {:?}; received so far from {}; speakers {:?}; errors {:?}",
                peer.id,
                peer.joined_at.elapsed().as_secs_f64(),
                stats.subscribe_offers,
                peer.subscribe_state(),
                if stats.disconnected {
                    ", disconnected"
                } else {
                    ""
                },
                now.video - then.video.min(now.video),
                now.audio - then.audio.min(now.audio),
                shown
                    .get(slot)
                    .map(|s| s.iter().map(ToString::to_string).collect::<Vec<_>>()),
                from.join(", "),
                stats
                    .speakers
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>(),
                stats.errors,
            );
        }
    }

    /// The participant of a slot.
    fn id_of(&self, slot: usize) -> Option<ParticipantId> {
        self.slots()
            .get(slot)
            .and_then(|p| p.as_ref().map(|p| p.id.clone()))
    }

    /// Replaces the participant of `slot`: it leaves (or, `abrupt`, its
    /// connection just drops), then a new one joins in its place.
    async fn replace(&self, slot: usize, abrupt: bool) -> anyhow::Result<()> {
        let old = self.slots().get_mut(slot).and_then(Option::take);
        if let Some(old) = old {
            if abrupt {
                drop(old);
            } else {
                old.leave().await;
            }
        }
        let new = self.join(slot).await?;
        if let Some(s) = self.slots().get_mut(slot) {
            *s = Some(new);
        }
        // The newcomer has told the server nothing yet: its slot's list is
        // sent again (it shows the same others as the one it replaces).
        if let Some(s) = self
            .shown
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(slot)
        {
            s.clear();
        }
        self.update_visible();
        Ok(())
    }

    async fn leave_all(&self) {
        let peers: Vec<TestPeer> = self.slots().iter_mut().filter_map(Option::take).collect();
        for p in peers {
            p.leave().await;
        }
    }
}

/// Counters of the operations, and what runs now (for the samples).
#[derive(Default)]
struct Progress {
    ops: Ops,
    running: BTreeSet<&'static str>,
}

type Shared = Arc<Mutex<Progress>>;

fn progress(p: &Shared) -> std::sync::MutexGuard<'_, Progress> {
    p.lock().unwrap_or_else(|e| e.into_inner())
}

/// Waits until `at`; true when the run was stopped first.
async fn wait_until(at: Instant, stop: &mut watch::Receiver<bool>) -> bool {
    if *stop.borrow() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep_until(at.into()) => *stop.borrow(),
        _ = stop.changed() => true,
    }
}

/// Replaces a participant every `every` from `start`, slots 1.. in turn,
/// leaving and dropping in turn; an empty slot (a failed join) is filled first.
async fn churn(
    room: Arc<Room>,
    (start, every): (Instant, Duration),
    p: Shared,
    mut stop: watch::Receiver<bool>,
) {
    let n = room.len();
    for k in 0u32.. {
        if wait_until(start + every * k, &mut stop).await {
            return;
        }
        let empty = (1..n).find(|&s| room.id_of(s).is_none());
        let slot = empty.unwrap_or(1 + k as usize % (n - 1));
        let abrupt = k % 2 == 1;
        progress(&p).running.insert("churn");
        let r = room.replace(slot, abrupt).await;
        let mut pr = progress(&p);
        pr.running.remove("churn");
        match r {
            Ok(()) => pr.ops.churns += 1,
            Err(e) => {
                pr.ops.churn_failures += 1;
                pr.ops.note("replacing a participant", &e);
            }
        }
    }
}

/// One recording: start, wait, stop, wait until it is ready, check it has
/// bytes, delete it.
async fn record_once(base: &str, room: &str, kind: &str, seconds: u64) -> anyhow::Result<()> {
    let r = api(
        base,
        "POST",
        &format!("/api/v1/rooms/{room}/recordings"),
        Some(json!({ "kind": kind })),
    )
    .await?;
    let rid = str_field(&r, "id")?;
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    api(
        base,
        "POST",
        &format!("/api/v1/recordings/{rid}/stop"),
        None,
    )
    .await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let done = loop {
        let r = api(base, "GET", &format!("/api/v1/recordings/{rid}"), None).await?;
        match r["state"].as_str() {
            Some("ready") => break r,
            Some("failed") => bail!("{kind} recording {rid} failed: {r}"),
            _ if Instant::now() > deadline => {
                bail!("{kind} recording {rid} not ready after 30 s: {r}")
            }
            _ => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    };
    let bytes: u64 = done["files"]
        .as_array()
        .map(|f| f.iter().filter_map(|f| f["size"].as_u64()).sum())
        .unwrap_or(0);
    if bytes == 0 {
        bail!("{kind} recording {rid} is empty: {done}");
    }
    api(base, "DELETE", &format!("/api/v1/recordings/{rid}"), None).await?;
    Ok(())
}

/// One broadcast of `source` (HLS and WHEP): live, watched by a counting
/// WHEP viewer that must receive video and audio, then ended.
async fn broadcast_once(
    base: &str,
    room: &str,
    source: &ParticipantId,
    seconds: u64,
) -> anyhow::Result<()> {
    let b = api(
        base,
        "POST",
        &format!("/api/v1/rooms/{room}/broadcasts"),
        Some(json!({ "source": source.to_string(), "hls": true, "whep": true })),
    )
    .await?;
    let bid = str_field(&b, "id")?;
    let result = watch_broadcast(base, &b, &bid, seconds).await;
    let ended = api(base, "DELETE", &format!("/api/v1/broadcasts/{bid}"), None).await;
    result?;
    ended?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let b = api(base, "GET", &format!("/api/v1/broadcasts/{bid}"), None).await?;
        match b["state"].as_str() {
            Some("ended") => return Ok(()),
            _ if Instant::now() > deadline => {
                bail!("broadcast {bid} not ended 10 s after DELETE: {b}")
            }
            _ => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

async fn watch_broadcast(base: &str, b: &Value, bid: &str, seconds: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let b = api(base, "GET", &format!("/api/v1/broadcasts/{bid}"), None).await?;
        match b["state"].as_str() {
            Some("live") => break,
            Some(s @ ("failed" | "ended")) => bail!("broadcast {bid} {s}: {b}"),
            _ if Instant::now() > deadline => bail!("broadcast {bid} not live after 20 s: {b}"),
            _ => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
    let whep_url = str_field(b, "whep_url")?;
    // Private rooms: the viewer token is the watch link's `#t=`.
    let token = b["watch_url"]
        .as_str()
        .and_then(|u| u.split_once("#t="))
        .map(|(_, t)| t.to_owned());
    let viewer = WhepViewer::connect_counting(&whep_url, token.as_deref(), &[LOCAL]).await?;
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let (video, audio) = viewer.received();
    viewer.stop().await?;
    if video.packets == 0 || audio.packets == 0 {
        bail!(
            "the WHEP viewer of broadcast {bid} received {} video and {} audio packets in {seconds} s",
            video.packets,
            audio.packets
        );
    }
    Ok(())
}

/// Recordings every `every` (composite and tracks in turn), the first at `start`.
async fn recordings(
    base: String,
    room: Arc<Room>,
    (start, every): (Instant, Duration),
    seconds: u64,
    p: Shared,
    mut stop: watch::Receiver<bool>,
) {
    for k in 0u32.. {
        if wait_until(start + every * k, &mut stop).await {
            return;
        }
        let kind = if k % 2 == 0 { "composite" } else { "tracks" };
        progress(&p).running.insert("recording");
        let r = record_once(&base, &room.id, kind, seconds).await;
        let mut pr = progress(&p);
        pr.running.remove("recording");
        match r {
            Ok(()) => pr.ops.recordings += 1,
            Err(e) => {
                pr.ops.recording_failures += 1;
                pr.ops.note("recording", &e);
            }
        }
    }
}

/// Broadcasts of slot 0 every `every`, the first at `start`.
async fn broadcasts(
    base: String,
    room: Arc<Room>,
    (start, every): (Instant, Duration),
    seconds: u64,
    p: Shared,
    mut stop: watch::Receiver<bool>,
) {
    for k in 0u32.. {
        if wait_until(start + every * k, &mut stop).await {
            return;
        }
        progress(&p).running.insert("broadcast");
        let r = match room.id_of(0) {
            Some(source) => broadcast_once(&base, &room.id, &source, seconds).await,
            None => Err(anyhow!("slot 0 is empty")),
        };
        let mut pr = progress(&p);
        pr.running.remove("broadcast");
        match r {
            Ok(()) => pr.ops.broadcasts += 1,
            Err(e) => {
                pr.ops.broadcast_failures += 1;
                pr.ops.note("broadcast", &e);
            }
        }
    }
}

/// Everything a run produced.
#[derive(Debug, serde::Serialize)]
struct SoakReport {
    at: String,
    machine: String,
    gstreamer: String,
    command: String,
    idle_rss_kib: u64,
    idle_threads: u64,
    idle_fds: u64,
    limits: Limits,
    samples: Vec<Sample>,
    end: EndCheck,
    ops: Ops,
    verdict: soakreport::Verdict,
    /// Server stderr lines until everyone left …
    server_log_lines: usize,
    /// … and in all (the room's teardown, the server's stop).
    server_log_lines_total: usize,
    server_log_tail: Vec<String>,
}

/// `scripts/soak` with the flags of this run (output files left out).
fn command_line() -> String {
    let mut words = vec!["scripts/soak".to_owned()];
    let mut args = std::env::args().skip_while(|a| a != "soak").skip(1);
    while let Some(a) = args.next() {
        if a == "--write" || a == "--json" || a == "--server-log" {
            args.next();
        } else if !["--write=", "--json=", "--server-log="]
            .iter()
            .any(|p| a.starts_with(p))
        {
            words.push(a);
        }
    }
    words.join(" ")
}

/// Runs the soak; an error when the verdict fails.
pub async fn run(args: SoakArgs) -> anyhow::Result<()> {
    gst::init()?;
    if !(3..=100).contains(&args.participants) {
        bail!("--participants: 3 to 100");
    }
    if args.minutes < 2 || args.sample_seconds == 0 || args.visible == 0 {
        bail!("--minutes at least 2, --sample-seconds and --visible at least 1");
    }
    let server = Server::start(args.server_log.as_deref(), &args.server_env)?;
    eprintln!(
        "roomcast (pid {}) listening on {}",
        server.pid(),
        server.base
    );
    let result = tokio::select! {
        r = soak(&args, &server) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
    };
    let log = server.log.lock().map(|l| l.clone()).unwrap_or_default();
    drop(server);
    let mut report = result?;
    report.server_log_lines_total = log.lines;
    report.server_log_tail = log.tail.into_iter().collect();
    let body = soakreport::markdown(
        &report.samples,
        &report.end,
        &report.ops,
        &report.limits,
        &report.verdict,
    );
    println!("\n{body}");
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.write {
        let doc =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let (start, end) = ("<!-- soak:start -->", "<!-- soak:end -->");
        let (Some(a), Some(b)) = (doc.find(start), doc.find(end)) else {
            bail!("{} has no {start} … {end} markers", path.display());
        };
        let block = format!(
            "{start}\nMeasured {} on {}; {}; command: `{}`. Load: {} participants, each publishing VP8 \
             ({} kbit/s, 320×240 noise) and Opus, showing {} others' video and hearing the server's last {AUDIO_LAST_N} \
             speakers ({} speaking at a time, rotating every {} s). Churn: a participant replaced every {} s \
             (leaving and dropping its connection in turn); a {} s recording every {} s (composite and tracks \
             in turn, deleted once ready); a broadcast of one participant (HLS + WHEP) every {} s, watched {} s \
             by a WHEP viewer. Idle server before the room: {:.1} MiB RSS, {} threads, {} fds. Server log: {} \
             warning/error lines during the run, {} in all.\n\n{body}{end}",
            report.at,
            report.machine,
            report.gstreamer,
            report.command,
            args.participants,
            args.video_kbps,
            args.visible,
            args.speakers,
            ROTATE.as_secs(),
            args.churn_seconds,
            args.record_seconds,
            args.record_every,
            args.broadcast_every,
            args.broadcast_seconds,
            report.idle_rss_kib as f64 / 1024.0,
            report.idle_threads,
            report.idle_fds,
            report.server_log_lines,
            report.server_log_lines_total,
        );
        let doc = format!("{}{}{}", &doc[..a], block, &doc[b + end.len()..]);
        std::fs::write(path, doc)?;
        eprintln!("wrote {}", path.display());
    }
    if !report.verdict.pass() {
        bail!("soak failed: {}", report.verdict.failures.join("; "));
    }
    eprintln!("soak passed");
    Ok(())
}

/// The run itself.
async fn soak(args: &SoakArgs, server: &Server) -> anyhow::Result<SoakReport> {
    let base = server.base.clone();
    let pid = server.pid();
    let idle = sample_process(pid)?;
    let idle_fds = fds_of(pid);
    let created = api(
        &base,
        "POST",
        "/api/v1/rooms",
        Some(json!({"name": "soak", "max_participants": args.participants + 2})),
    )
    .await
    .context("creating the room")?;
    let pipeline = gst::Pipeline::with_name("soak");
    pipeline.set_state(gst::State::Playing)?;
    let source = EncodedSource::new(
        &pipeline,
        &SourceSpec {
            video_kbps: args.video_kbps,
            ..Default::default()
        },
    )?;
    let room = Arc::new(Room {
        id: str_field(&created, "id")?,
        link: str_field(&created, "invite_url")?,
        shared: SharedMedia {
            pipeline: pipeline.clone(),
            source,
        },
        slots: Mutex::new((0..args.participants).map(|_| None).collect()),
        shown: Mutex::default(),
        visible: args.visible,
        speakers: args.speakers,
        joins: Mutex::new(0),
    });
    for slot in 0..args.participants {
        let peer = room
            .join(slot)
            .await
            .with_context(|| format!("participant {slot} could not join"))?;
        if let Some(s) = room.slots().get_mut(slot) {
            *s = Some(peer);
        }
        eprint!("\rjoining {}/{}", slot + 1, args.participants);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    room.update_visible();
    room.rotate(0);
    eprintln!(
        "\r{} joined; settling {} s, then soaking {} min, a sample every {} s",
        args.participants,
        SETTLE.as_secs(),
        args.minutes,
        args.sample_seconds
    );
    // The first sample counts what arrived, and the CPU spent, while settling.
    let mut last_received = room.received();
    let me = std::process::id();
    let mut last_server: ProcSample = sample_process(pid)?;
    let mut last_self: ProcSample = sample_process(me)?;
    tokio::time::sleep(SETTLE).await;

    let total = Duration::from_secs(args.minutes * 60);
    let limits = Limits::for_run(total.as_secs_f64(), args.participants);
    let warmup = Duration::from_secs_f64(limits.warmup_s);
    // Each side activity runs once in the warm-up (the recording early),
    // then every period; all start half-way between two samples, so that
    // as many samples as possible see only the meeting.
    let now = Instant::now();
    let sample = Duration::from_secs(args.sample_seconds);
    let schedule = |every: u64, first: Duration| {
        let every = Duration::from_secs(every);
        let first = first.min(every);
        let phase = sample * (first.as_secs_f64() / sample.as_secs_f64()) as u32 + sample / 2;
        (now + phase, every)
    };
    let p: Shared = Arc::default();
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    if args.churn_seconds > 0 {
        tasks.push(tokio::spawn(churn(
            room.clone(),
            schedule(args.churn_seconds, Duration::from_secs(args.churn_seconds)),
            p.clone(),
            stop_rx.clone(),
        )));
    }
    if args.record_every > 0 {
        tasks.push(tokio::spawn(recordings(
            base.clone(),
            room.clone(),
            schedule(
                args.record_every,
                (warmup / 4).min(Duration::from_secs(args.record_every / 2)),
            ),
            args.record_seconds,
            p.clone(),
            stop_rx.clone(),
        )));
    }
    if args.broadcast_every > 0 {
        tasks.push(tokio::spawn(broadcasts(
            base.clone(),
            room.clone(),
            schedule(
                args.broadcast_every,
                (warmup / 2).min(Duration::from_secs(args.broadcast_every / 2)),
            ),
            args.broadcast_seconds,
            p.clone(),
            stop_rx.clone(),
        )));
    }

    let t0 = now;
    let every = sample;
    let mut told = HashSet::new();
    let mut samples: Vec<Sample> = Vec::new();
    let mut next_sample = t0;
    let mut round = 0usize;
    let mut next_rotate = t0 + ROTATE;
    loop {
        let now = Instant::now();
        if now >= next_rotate {
            round += 1;
            room.rotate(round);
            next_rotate += ROTATE;
        }
        if now >= next_sample {
            let participants = api(&base, "GET", &format!("/api/v1/rooms/{}", room.id), None)
                .await
                .ok()
                .and_then(|r| r["participant_count"].as_u64());
            let server_now = sample_process(pid)?;
            let heap = heap_of(&base).await;
            let self_now = sample_process(me)?;
            let received = room.received();
            let d = soakreport::delivery(&last_received, &received);
            if !last_received.is_empty() {
                room.describe_stalled(&last_received, &received, &mut told);
            }
            let pct = |a: &ProcSample, b: &ProcSample| match (a.at, b.at) {
                (Some(x), Some(y)) if y > x => (b.cpu_s - a.cpu_s) / (y - x).as_secs_f64() * 100.0,
                _ => 0.0,
            };
            let pr = progress(&p);
            let s = Sample {
                t_s: next_sample.duration_since(t0).as_secs_f64().round(),
                rss_kib: server_now.rss_kib,
                heap_kib: heap.map(|h| h.0),
                heap_free_kib: heap.map(|h| h.1),
                threads: server_now.threads,
                fds: fds_of(pid),
                cpu_pct: pct(&last_server, &server_now),
                loadgen_cpu_pct: pct(&last_self, &self_now),
                participants,
                peers: d.peers,
                receiving: d.receiving,
                no_video: d.no_video,
                no_audio: d.no_audio,
                loss_pct: d.loss_pct,
                churns: pr.ops.churns,
                recordings: pr.ops.recordings,
                broadcasts: pr.ops.broadcasts,
                activity: pr.running.iter().copied().collect::<Vec<_>>().join(", "),
            };
            drop(pr);
            eprintln!("{}", soakreport::progress_line(&s));
            samples.push(s);
            last_server = server_now;
            last_self = self_now;
            last_received = received;
            if next_sample >= t0 + total {
                break;
            }
            next_sample += every;
            if next_sample > t0 + total {
                next_sample = t0 + total;
            }
        }
        tokio::time::sleep_until(next_sample.min(next_rotate).into()).await;
    }

    // The end check: churn and activities stopped, everyone's media watched.
    let _ = stop_tx.send(true);
    for t in tasks {
        if tokio::time::timeout(Duration::from_secs(120), t)
            .await
            .is_err()
        {
            eprintln!("an activity did not finish within 120 s of the end");
        }
    }
    let before = room.received();
    let check_start = Instant::now();
    while check_start.elapsed() < END_CHECK {
        tokio::time::sleep(ROTATE.min(END_CHECK - check_start.elapsed())).await;
        round += 1;
        room.rotate(round);
    }
    let after = room.received();
    let d = soakreport::delivery(&before, &after);
    room.describe_stalled(&before, &after, &mut HashSet::new());
    let end = EndCheck {
        seconds: check_start.elapsed().as_secs_f64(),
        participants: api(&base, "GET", &format!("/api/v1/rooms/{}", room.id), None)
            .await
            .ok()
            .and_then(|r| r["participant_count"].as_u64()),
        peers: d.peers,
        receiving: d.receiving,
        no_video: d.no_video,
        no_audio: d.no_audio,
        loss_pct: d.loss_pct,
    };
    let server_log_lines = server.log.lock().map(|l| l.lines).unwrap_or(0);
    room.leave_all().await;
    let _ = pipeline.set_state(gst::State::Null);
    let ops = progress(&p).ops.clone();
    let verdict = soakreport::verdict(&samples, &end, &ops, &limits);
    Ok(SoakReport {
        at: crate::model::now_rfc3339(),
        machine: super::bench::machine(),
        gstreamer: gst::version_string().to_string(),
        command: command_line(),
        idle_rss_kib: idle.rss_kib,
        idle_threads: idle.threads,
        idle_fds,
        limits,
        samples,
        end,
        ops,
        verdict,
        server_log_lines,
        server_log_lines_total: 0,
        server_log_tail: Vec::new(),
    })
}
