//! `roomcast loadgen whep`: how many WHEP viewers one core of server CPU
//! carries at < 1 % loss.
//!
//! Starts a release server of its own (this binary, a temp data dir, ICE on
//! 127.0.0.1, `RUST_LOG=warn`, by default under `chrt --rr 1`; run it in a
//! network namespace with only `lo`, as `scripts/bench whep` does), creates a
//! listed room and an ingest, publishes into it over WHIP (H.264 from x264,
//! a picture that fills the bitrate) and starts a broadcast of the ingest
//! with WHEP only: a passthrough, the server runs no video encoder and its
//! cost is per viewer (SRTP and a `sendmsg` per packet). Then viewers join in
//! steps; each is a webrtcbin that counts the RTP it receives without
//! decoding it. Per step, after a settle time, the window measures the
//! server's CPU (`/proc/<pid>/stat`), loss as webrtcbin's `get-stats` reports
//! it (inbound-rtp `packets-lost` against `packets-received`), sequence gaps
//! after the jitterbuffer, what reached the viewers against what the
//! publisher sent, how much further behind real time the video arrives (RTP
//! timestamps against arrival), the namespace's UDP counters and
//! `viewers.whep` from the API. It stops after the first step with loss ≥
//! `--max-loss`, less than `--min-delivered` of the video delivered, a viewer
//! that received nothing, a viewer count the API disagrees with, or the whole
//! machine busy.

use super::counting::StreamCounter;
use super::scenario::{ProcSample, sample_process};
use super::whip::{InboundRtp, VideoCodec, VideoDelay, WhepViewer, WhipOptions, WhipPublisher};
use anyhow::{Context, anyhow, bail};
use futures::StreamExt;
use serde::Serialize;
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Flags of `loadgen whep`.
#[derive(Debug, Clone, clap::Args)]
pub struct WhepBenchArgs {
    /// Viewer counts to step through (viewers are added, never removed).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "25,50,75,100,125,150,200,250,300"
    )]
    pub steps: Vec<usize>,
    /// Seconds between the last join of a step and its measurement.
    #[arg(long, default_value_t = 5)]
    pub settle: u64,
    /// Measured seconds per step.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Published picture width.
    #[arg(long, default_value_t = 640)]
    pub width: u32,
    /// Published picture height.
    #[arg(long, default_value_t = 360)]
    pub height: u32,
    /// Published video bitrate, kbit/s (x264, CBR).
    #[arg(long, default_value_t = 1200)]
    pub video_kbps: u32,
    /// `videotestsrc` pattern published (`snow` fills the bitrate; a solid
    /// colour compresses to almost nothing).
    #[arg(long, default_value = "snow")]
    pub pattern: String,
    /// Viewers negotiating at once while a step joins.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Stop after the first step whose loss is at least this, percent.
    #[arg(long, default_value_t = 1.0)]
    pub max_loss: f64,
    /// Stop after the first step where the machine (all cores, server and
    /// load generator together) is busier than this, percent.
    #[arg(long, default_value_t = 99.0)]
    pub max_busy: f64,
    /// Stop after the first step whose viewers receive less than this
    /// share of the published video, percent (below 100 the server or the
    /// load generator falls behind: packets pile up in queues, no loss shows).
    #[arg(long, default_value_t = 95.0)]
    pub min_delivered: f64,
    /// How the server is scheduled: `rr` runs it under `chrt --rr 1`
    /// (root), so that it gets the CPU it asks for and its own cost is
    /// measured, the load generator giving way; `normal` shares the cores
    /// fairly with the load generator's hundreds of threads, which starve
    /// its fan-out thread long before it is busy.
    #[arg(long, value_enum, default_value_t = Sched::Rr)]
    pub server_sched: Sched,
    /// Run every step whatever happens.
    #[arg(long)]
    pub all_steps: bool,
    /// Replace the figures between `<!-- whep:start -->` and
    /// `<!-- whep:end -->` of this markdown file.
    #[arg(long)]
    pub write: Option<PathBuf>,
    /// Write the report as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// Scheduling of the server under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Sched {
    /// `SCHED_RR`, priority 1 (`chrt --rr 1`).
    Rr,
    /// The default policy, like every other process.
    Normal,
}

/// A step whose video delay moves faster than this (ms per second, either
/// way) is not in a steady state: a backlog is building up or draining.
const MAX_DRIFT_MS_PER_S: f64 = 50.0;
/// CPU of other processes above which a step is flagged, cores.
const OTHERS_NOTED: f64 = 0.10;
/// Share of its 0-viewer video rate the publisher must keep for a step to
/// count.
const MIN_PUBLISHED: f64 = 0.9;

const ADMIN: &str = "whep-bench-admin-token-0123456789";
const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

/// One measured step.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    /// Viewers asked for.
    pub target: usize,
    /// Viewers connected (counting ones that failed to join out).
    pub viewers: usize,
    /// `viewers.whep` of the broadcast at the end of the window.
    pub api_viewers: Option<u64>,
    /// Joins that failed so far.
    pub join_failures: usize,
    /// Milliseconds per join in this step (wall time ÷ joins).
    pub join_ms_each: Option<f64>,
    /// The first viewer's added delay right after this step's joins, ms.
    pub backlog_after_joins_ms: Option<f64>,
    /// Measured seconds.
    pub seconds: f64,
    /// Server CPU, cores (1.0 = one core busy).
    pub server_cores: f64,
    /// Viewers ÷ server cores.
    pub viewers_per_core: Option<f64>,
    /// Viewers ÷ (server cores − the cores of the step with no viewer).
    pub viewers_per_core_above_idle: Option<f64>,
    /// Server resident memory, MiB.
    pub server_rss_mib: f64,
    /// Server threads.
    pub server_threads: u64,
    /// RTP packets received per second per viewer (video + audio).
    pub packets_per_s_each: f64,
    /// RTP received per viewer, kbit/s (headers included, not SRTP's tag).
    pub kbit_per_s_each: f64,
    /// Packets the viewers received per second of server CPU.
    pub packets_per_cpu_s: Option<f64>,
    /// Loss from `get-stats`: packets-lost ÷ (packets-received + packets-lost), percent.
    pub loss_pct: f64,
    /// Sequence gaps seen after the jitterbuffer, percent.
    pub gaps_pct: f64,
    /// Video packets received ÷ (video packets published × viewers), percent.
    pub video_delivered_pct: Option<f64>,
    /// Audio packets received ÷ (audio packets published × viewers), percent.
    pub audio_delivered_pct: Option<f64>,
    /// Video packets the publisher sent per second (it shares the machine:
    /// when the load generator runs out of CPU its encoder slows down and
    /// every viewer gets less to carry).
    pub published_video_pps: f64,
    /// The server's busiest threads (name, cores) over the window.
    pub busiest_threads: Vec<(String, f64)>,
    /// Viewers that received no packet in the window.
    pub silent: usize,
    /// How much further behind real time the viewers' video arrives at the
    /// end of the window than at its start, ms per second, mean of viewers:
    /// ~0 when they keep up, up to 1000 when nothing moves.
    pub lag_growth_ms_per_s: Option<f64>,
    /// … the largest of one viewer.
    pub lag_growth_max_ms_per_s: Option<f64>,
    /// Delay the viewers' video has gained since each one's best moment, at
    /// the end of the window, ms, mean of viewers: a backlog in front of
    /// them (plus jitter); the viewers of the first step joined an idle server.
    pub extra_delay_ms: Option<f64>,
    /// … the largest of one viewer.
    pub extra_delay_max_ms: Option<f64>,
    /// Viewers whose connection is not `connected` at the end.
    pub not_connected: usize,
    /// The whole machine's busy CPU, percent of all cores.
    pub machine_busy_pct: f64,
    /// The load generator's CPU, cores.
    pub loadgen_cores: f64,
    /// CPU of everything else on the machine (busy cores − server − load
    /// generator), cores: other jobs, and kernel work charged to no process.
    pub others_cores: f64,
    /// UDP datagrams sent per second in the namespace (`OutDatagrams`):
    /// the server's packets to every viewer, plus the publisher's and
    /// everyone's RTCP.
    pub udp_out_per_s: f64,
    /// UDP datagrams queued to sockets per second (`InDatagrams`).
    pub udp_in_per_s: f64,
    /// UDP datagrams dropped for full receive buffers in the window (the
    /// namespace's `/proc/net/snmp`; on loopback, mostly the viewers').
    pub udp_rcvbuf_drops: u64,
    /// The load generator's resident memory at the end, MiB (grows when
    /// its viewers fall behind and packets pile up in their queues).
    pub loadgen_rss_mib: f64,
}

/// A whole run.
#[derive(Debug, Clone, Serialize)]
pub struct WhepReport {
    /// When.
    pub at: String,
    /// Cores, CPU model, memory.
    pub machine: String,
    /// GStreamer version.
    pub gstreamer: String,
    /// What was published.
    pub published: String,
    /// The steps, the first with no viewer.
    pub steps: Vec<Step>,
    /// Why the run stopped where it did.
    pub stopped: String,
    /// Warnings and errors the server logged (count, last ones).
    pub server_log_lines: usize,
    /// The last of them.
    pub server_log_tail: Vec<String>,
}

/// The server under test; killed when dropped.
struct Server {
    child: Child,
    base: String,
    log: Arc<Mutex<(usize, VecDeque<String>)>>,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(sched: Sched) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let exe = std::env::current_exe()?;
        let mut cmd = match sched {
            Sched::Rr => {
                let mut c = Command::new("chrt");
                c.args(["--rr", "1"]).arg(exe);
                c
            }
            Sched::Normal => Command::new(exe),
        };
        let mut child = cmd
            .args(["serve", "--listen", "127.0.0.1:0", "--admin-token", ADMIN])
            // All the load comes from one address: no per-address limits.
            .args(["--rate-limit", "false"])
            .args(["--ice-local-ip", "127.0.0.1"])
            .arg("--data-dir")
            .arg(dir.path())
            .env("RUST_LOG", "warn")
            .env_remove("ROOMCAST_LOG_FORMAT")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting roomcast")?;
        let log: Arc<Mutex<(usize, VecDeque<String>)>> = Arc::default();
        if let Some(stderr) = child.stderr.take() {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if line.trim().is_empty() {
                        continue;
                    }
                    let mut l = log.lock().unwrap_or_else(|p| p.into_inner());
                    l.0 += 1;
                    l.1.push_back(line);
                    if l.1.len() > 200 {
                        l.1.pop_front();
                    }
                }
            });
        }
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let mut lines = BufReader::new(stdout).lines();
        let mut server = Self {
            child,
            base: String::new(),
            log,
            _dir: dir,
        };
        // (chrt execs the server: the child's pid is the server's.)
        server.base = loop {
            let Some(line) = lines.next().transpose()? else {
                std::thread::sleep(Duration::from_millis(200));
                let log = server.log.lock().map(|l| l.1.clone()).unwrap_or_default();
                bail!(
                    "roomcast exited before listening: {}",
                    log.into_iter().collect::<Vec<_>>().join(" / ")
                );
            };
            if let Some(url) = line.strip_prefix("roomcast listening on ") {
                break url.trim().trim_end_matches('/').to_owned();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        Ok(server)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// An admin API call off the async threads.
    async fn api(
        &self,
        method: &'static str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<serde_json::Value> {
        let url = format!("{}{path}", self.base);
        tokio::task::spawn_blocking(move || {
            let req = ureq::request(method, &url)
                .timeout(Duration::from_secs(15))
                .set("Authorization", &format!("Bearer {ADMIN}"));
            let resp = match body {
                Some(b) => req.send_json(b),
                None => req.call(),
            };
            match resp {
                Ok(r) => r
                    .into_json::<serde_json::Value>()
                    .map_err(|e| anyhow!("{method} {url}: {e}")),
                Err(ureq::Error::Status(code, r)) => Err(anyhow!(
                    "{method} {url}: HTTP {code}: {}",
                    r.into_string().unwrap_or_default()
                )),
                Err(e) => Err(anyhow!("{method} {url}: {e}")),
            }
        })
        .await?
    }
}

/// `/proc/stat`'s first line: (busy, total) jiffies of all cores.
fn machine_jiffies() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: u64 = f.iter().take(8).sum();
    // idle + iowait
    let idle = f.get(3).copied().unwrap_or(0) + f.get(4).copied().unwrap_or(0);
    (total.saturating_sub(idle), total)
}

/// UDP counters of this network namespace (`/proc/net/snmp`):
/// (`InDatagrams`, `OutDatagrams`, `RcvbufErrors`).
fn udp_counters() -> (u64, u64, u64) {
    let snmp = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let udp: Vec<&str> = snmp.lines().filter(|l| l.starts_with("Udp:")).collect();
    let [names, values, ..] = udp.as_slice() else {
        return (0, 0, 0);
    };
    let field = |name: &str| {
        names
            .split_whitespace()
            .zip(values.split_whitespace())
            .find(|(n, _)| *n == name)
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0)
    };
    (
        field("InDatagrams"),
        field("OutDatagrams"),
        field("RcvbufErrors"),
    )
}

/// CPU seconds so far of each thread of `pid`: (tid, name, seconds).
fn thread_cpu(pid: u32) -> Vec<(u32, String, f64)> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| {
            let tid: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let (head, rest) = stat.rsplit_once(')')?;
            let name = head.split_once('(')?.1.to_owned();
            let f: Vec<&str> = rest.split_whitespace().collect();
            let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
            Some((tid, name, (ticks(11) + ticks(12)) / 100.0))
        })
        .collect()
}

/// Everything read at one end of a window.
struct Snapshot {
    at: Instant,
    server: ProcSample,
    loadgen: ProcSample,
    machine: (u64, u64),
    udp: (u64, u64, u64),
    sent: (u64, u64),
    threads: Vec<(u32, String, f64)>,
    received: Vec<(StreamCounter, StreamCounter)>,
    delays: Vec<Option<VideoDelay>>,
    inbound: Vec<InboundRtp>,
}

async fn snapshot(server_pid: u32, publisher: &WhipPublisher, viewers: &[WhepViewer]) -> Snapshot {
    // Cheap counters first, all at the same moment; get-stats after.
    let at = Instant::now();
    let server = sample_process(server_pid).unwrap_or_default();
    let loadgen = sample_process(std::process::id()).unwrap_or_default();
    let machine = machine_jiffies();
    let udp = udp_counters();
    let sent = publisher.sent();
    let threads = thread_cpu(server_pid);
    let received = viewers.iter().map(WhepViewer::received).collect();
    let delays = viewers.iter().map(WhepViewer::video_delay).collect();
    let mut inbound = Vec::with_capacity(viewers.len());
    for v in viewers {
        inbound.push(v.inbound_rtp().await.unwrap_or_default());
    }
    Snapshot {
        at,
        server,
        loadgen,
        machine,
        udp,
        sent,
        threads,
        received,
        delays,
        inbound,
    }
}

fn progress(line: &str) {
    let mut err = std::io::stderr();
    let _ = write!(err, "\r{line:<110}");
    let _ = err.flush();
}

/// The step's figures from the snapshots around its window.
fn measure(
    target: usize,
    a: &Snapshot,
    b: &Snapshot,
    idle_cores: Option<f64>,
    viewers: &[WhepViewer],
) -> Step {
    let seconds = b.at.duration_since(a.at).as_secs_f64().max(0.001);
    let server_cores = (b.server.cpu_s - a.server.cpu_s) / seconds;
    let loadgen_cores = (b.loadgen.cpu_s - a.loadgen.cpu_s) / seconds;
    let (busy, total) = (
        b.machine.0.saturating_sub(a.machine.0),
        b.machine.1.saturating_sub(a.machine.1),
    );
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let busy_cores = if total > 0 {
        busy as f64 / total as f64 * cores
    } else {
        0.0
    };
    let n = viewers.len();
    let (mut packets, mut bytes, mut expected, mut video_packets, mut audio_packets) =
        (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut silent = 0;
    for i in 0..n {
        let before = a.received.get(i).cloned().unwrap_or_default();
        let after = &b.received[i];
        let p =
            (after.0.packets + after.1.packets).saturating_sub(before.0.packets + before.1.packets);
        if p == 0 {
            silent += 1;
        }
        packets += p;
        video_packets += after.0.packets.saturating_sub(before.0.packets);
        audio_packets += after.1.packets.saturating_sub(before.1.packets);
        bytes += (after.0.bytes + after.1.bytes).saturating_sub(before.0.bytes + before.1.bytes);
        expected += (after.0.expected + after.1.expected)
            .saturating_sub(before.0.expected + before.1.expected);
    }
    let (mut got, mut lost) = (0i64, 0i64);
    for i in 0..n {
        let before = a.inbound.get(i).copied().unwrap_or_default();
        let after = b.inbound[i];
        got += after.packets_received as i64 - before.packets_received as i64;
        lost += after.packets_lost - before.packets_lost;
    }
    let lost = lost.max(0);
    // How much further behind real time each viewer's video arrives at the
    // end of the window than at its start, per second.
    let lags: Vec<f64> = (0..n)
        .filter_map(|i| {
            let da = a.delays.get(i).copied().flatten()?;
            let db = b.delays.get(i).copied().flatten()?;
            Some((db.transit_ms - da.transit_ms) / seconds)
        })
        .collect();
    let extra: Vec<f64> = b.delays.iter().flatten().map(|d| d.extra_ms).collect();
    let sent = b.sent.0.saturating_sub(a.sent.0);
    let sent_audio = b.sent.1.saturating_sub(a.sent.1);
    // The server's busiest threads over the window.
    let mut busiest: Vec<(String, f64)> = b
        .threads
        .iter()
        .map(|(tid, name, cpu)| {
            let before = a
                .threads
                .iter()
                .find(|(t, _, _)| t == tid)
                .map_or(0.0, |(_, _, c)| *c);
            (name.clone(), (cpu - before) / seconds)
        })
        .collect();
    busiest.sort_by(|x, y| y.1.total_cmp(&x.1));
    busiest.truncate(3);
    let cpu_s = server_cores * seconds;
    Step {
        target,
        viewers: n,
        api_viewers: None,
        join_failures: 0,
        join_ms_each: None,
        backlog_after_joins_ms: None,
        seconds,
        server_cores,
        viewers_per_core: (n > 0 && server_cores > 0.0).then(|| n as f64 / server_cores),
        viewers_per_core_above_idle: idle_cores
            .map(|idle| server_cores - idle)
            .filter(|c| n > 0 && *c > 0.0)
            .map(|c| n as f64 / c),
        server_rss_mib: b.server.rss_kib as f64 / 1024.0,
        server_threads: b.server.threads,
        packets_per_s_each: if n > 0 {
            packets as f64 / seconds / n as f64
        } else {
            0.0
        },
        kbit_per_s_each: if n > 0 {
            bytes as f64 * 8.0 / 1000.0 / seconds / n as f64
        } else {
            0.0
        },
        packets_per_cpu_s: (cpu_s > 0.0 && n > 0).then(|| packets as f64 / cpu_s),
        loss_pct: if got + lost > 0 {
            lost as f64 / (got + lost) as f64 * 100.0
        } else {
            0.0
        },
        gaps_pct: if expected > 0 {
            expected.saturating_sub(packets) as f64 / expected as f64 * 100.0
        } else {
            0.0
        },
        video_delivered_pct: (sent > 0 && n > 0)
            .then(|| video_packets as f64 / (sent as f64 * n as f64) * 100.0),
        published_video_pps: sent as f64 / seconds,
        audio_delivered_pct: (sent_audio > 0 && n > 0)
            .then(|| audio_packets as f64 / (sent_audio as f64 * n as f64) * 100.0),
        busiest_threads: busiest,
        silent,
        lag_growth_ms_per_s: (!lags.is_empty())
            .then(|| lags.iter().sum::<f64>() / lags.len() as f64),
        lag_growth_max_ms_per_s: lags.iter().copied().reduce(f64::max),
        extra_delay_ms: (!extra.is_empty()).then(|| extra.iter().sum::<f64>() / extra.len() as f64),
        extra_delay_max_ms: extra.iter().copied().reduce(f64::max),
        not_connected: viewers
            .iter()
            .filter(|v| v.connection_state() != "connected")
            .count(),
        machine_busy_pct: if total > 0 {
            busy as f64 / total as f64 * 100.0
        } else {
            0.0
        },
        loadgen_cores,
        others_cores: (busy_cores - server_cores - loadgen_cores).max(0.0),
        udp_in_per_s: b.udp.0.saturating_sub(a.udp.0) as f64 / seconds,
        udp_out_per_s: b.udp.1.saturating_sub(a.udp.1) as f64 / seconds,
        udp_rcvbuf_drops: b.udp.2.saturating_sub(a.udp.2),
        loadgen_rss_mib: b.loadgen.rss_kib as f64 / 1024.0,
    }
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map(|v| format!("{v:.digits$}"))
        .unwrap_or_else(|| "–".into())
}

/// The columns of a step: (header, value, also in the docs' shorter table).
fn columns(s: &Step) -> Vec<(&'static str, String, bool)> {
    let mut notes = Vec::new();
    if s.viewers != s.target {
        notes.push(format!("{} of {} joined", s.viewers, s.target));
    }
    if s.silent > 0 {
        notes.push(format!("{} received nothing", s.silent));
    }
    if s.not_connected > 0 {
        notes.push(format!("{} not connected", s.not_connected));
    }
    if s.others_cores > OTHERS_NOTED {
        notes.push(format!(
            "other work on the machine: {:.0} % of a core",
            s.others_cores * 100.0
        ));
    }
    if s.udp_rcvbuf_drops > 0 {
        notes.push(format!("{} UDP receive-buffer drops", s.udp_rcvbuf_drops));
    }
    let pair = |a: Option<f64>, b: Option<f64>, digits: usize| {
        format!("{} / {}", opt(a, digits), opt(b, digits))
    };
    let api = s
        .api_viewers
        .map(|v| v.to_string())
        .unwrap_or_else(|| "–".into());
    vec![
        (
            "viewers (`viewers.whep`)",
            format!("{} ({api})", s.viewers),
            true,
        ),
        (
            "server CPU % (1 core)",
            format!("{:.1}", s.server_cores * 100.0),
            true,
        ),
        ("viewers per core", opt(s.viewers_per_core, 0), true),
        (
            "per core above 0-viewer CPU",
            opt(s.viewers_per_core_above_idle, 0),
            true,
        ),
        (
            "packets/s each",
            format!("{:.0}", s.packets_per_s_each),
            true,
        ),
        ("kbit/s each", format!("{:.0}", s.kbit_per_s_each), true),
        (
            "packets per server CPU-s",
            opt(s.packets_per_cpu_s, 0),
            true,
        ),
        ("loss % (get-stats)", format!("{:.2}", s.loss_pct), true),
        ("seq gaps %", format!("{:.2}", s.gaps_pct), true),
        (
            "video / audio delivered %",
            pair(s.video_delivered_pct, s.audio_delivered_pct, 1),
            true,
        ),
        (
            "falls behind ms/s (mean / max)",
            pair(s.lag_growth_ms_per_s, s.lag_growth_max_ms_per_s, 0),
            true,
        ),
        (
            "delay added ms (mean / max)",
            pair(s.extra_delay_ms, s.extra_delay_max_ms, 0),
            true,
        ),
        (
            "UDP datagrams out/s",
            format!("{:.0}", s.udp_out_per_s),
            false,
        ),
        ("server RSS MiB", format!("{:.0}", s.server_rss_mib), false),
        ("server threads", s.server_threads.to_string(), false),
        (
            "machine busy % (all cores)",
            format!("{:.0}", s.machine_busy_pct),
            true,
        ),
        (
            "loadgen CPU % (1 core)",
            format!("{:.0}", s.loadgen_cores * 100.0),
            true,
        ),
        (
            "other CPU % (1 core)",
            format!("{:.0}", s.others_cores * 100.0),
            false,
        ),
        (
            "loadgen RSS MiB",
            format!("{:.0}", s.loadgen_rss_mib),
            false,
        ),
        (
            "busiest server threads (% of a core)",
            s.busiest_threads
                .iter()
                .map(|(name, cores)| format!("{name} {:.0}", cores * 100.0))
                .collect::<Vec<_>>()
                .join(", "),
            true,
        ),
        ("notes", notes.join("; "), true),
    ]
}

/// The steps as a markdown table: every column, or (`short`) those the
/// docs show.
pub fn table(steps: &[Step], short: bool) -> String {
    let keep = |c: &(&str, String, bool)| !short || c.2;
    let Some(first) = steps.first() else {
        return String::new();
    };
    let heads: Vec<&str> = columns(first)
        .iter()
        .filter(|c| keep(c))
        .map(|c| c.0)
        .collect();
    let mut out = format!(
        "| {} |\n|{}\n",
        heads.join(" | "),
        "---|".repeat(heads.len())
    );
    for s in steps {
        out.push_str(&table_row(s, short));
        out.push('\n');
    }
    out
}

/// One step as a markdown table row (see [`table`]).
pub fn table_row(s: &Step, short: bool) -> String {
    let cells: Vec<String> = columns(s)
        .into_iter()
        .filter(|c| !short || c.2)
        .map(|c| c.1)
        .collect();
    format!("| {} |", cells.join(" | "))
}

/// `scripts/bench whep` with the flags of this run (output files left out).
fn command_line() -> String {
    let mut words = vec!["scripts/bench".to_owned(), "whep".to_owned()];
    let mut args = std::env::args().skip_while(|a| a != "whep").skip(1);
    while let Some(a) = args.next() {
        if a == "--write" || a == "--json" {
            args.next();
        } else if !a.starts_with("--write=") && !a.starts_with("--json=") {
            words.push(a);
        }
    }
    words.join(" ")
}

/// Why a step does not pass (empty: it does).
fn failures_of(s: &Step, args: &WhepBenchArgs, idle: Option<&Step>) -> Vec<String> {
    let mut why = Vec::new();
    if let Some(idle) = idle.filter(|i| i.published_video_pps > 0.0)
        && s.published_video_pps < idle.published_video_pps * MIN_PUBLISHED
    {
        why.push(format!(
            "the publisher sent {:.0} video packets/s, < {:.0} % of its {:.0} with no viewer \
             (the load generator is out of CPU)",
            s.published_video_pps,
            MIN_PUBLISHED * 100.0,
            idle.published_video_pps
        ));
    }
    if s.loss_pct >= args.max_loss {
        why.push(format!("loss {:.2} % ≥ {} %", s.loss_pct, args.max_loss));
    }
    if s.gaps_pct >= args.max_loss {
        why.push(format!(
            "sequence gaps after the viewers' jitterbuffers {:.2} % ≥ {} %",
            s.gaps_pct, args.max_loss
        ));
    }
    for (what, pct) in [
        ("video", s.video_delivered_pct),
        ("audio", s.audio_delivered_pct),
    ] {
        if pct.is_some_and(|d| d < args.min_delivered) {
            why.push(format!(
                "the viewers received {} % of the published {what} (< {} %)",
                opt(pct, 1),
                args.min_delivered
            ));
        }
    }
    if s.lag_growth_ms_per_s
        .is_some_and(|l| l.abs() > MAX_DRIFT_MS_PER_S)
    {
        why.push(format!(
            "the video's delay moved by {} ms per second (a backlog building up or draining)",
            opt(s.lag_growth_ms_per_s, 0)
        ));
    }
    if s.silent > 0 {
        why.push(format!("{} viewers received nothing", s.silent));
    }
    if s.api_viewers != Some(s.viewers as u64) {
        why.push(format!(
            "the API counts {} WHEP viewers, {} are connected",
            opt(s.api_viewers.map(|v| v as f64), 0),
            s.viewers
        ));
    }
    why
}

/// Runs the benchmark.
pub async fn run(args: WhepBenchArgs) -> anyhow::Result<()> {
    gst::init()?;
    if args.steps.is_empty() {
        bail!("--steps: at least one viewer count");
    }
    let server = Server::start(args.server_sched).with_context(|| {
        format!(
            "starting the server ({:?} scheduling; `--server-sched normal` without root or chrt)",
            args.server_sched
        )
    })?;
    eprintln!(
        "roomcast (pid {}) listening on {}",
        server.pid(),
        server.base
    );
    let result = tokio::select! {
        r = bench(&args, &server) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
    };
    let log = server.log.lock().map(|l| l.clone()).unwrap_or_default();
    // The server goes first, so that 400 viewers closing do not each
    // become a `ViewerGone` for it to handle.
    drop(server);
    let (mut report, viewers) = result?;
    drop(viewers);
    report.server_log_lines = log.0;
    report.server_log_tail = log.1.into_iter().collect();
    if report.server_log_lines > 0 {
        eprintln!(
            "the server logged {} warning/error lines; the last ones:",
            report.server_log_lines
        );
        let tail = &report.server_log_tail;
        for l in &tail[tail.len().saturating_sub(20)..] {
            eprintln!("  {l}");
        }
    }
    let out = table(&report.steps, false);
    println!("\n{out}\n{}", report.stopped);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.write {
        let doc =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let (start, end) = ("<!-- whep:start -->", "<!-- whep:end -->");
        let (Some(a), Some(b)) = (doc.find(start), doc.find(end)) else {
            bail!("{} has no {start} … {end} markers", path.display());
        };
        let block = format!(
            "{start}\nMeasured {} on {}; {}; published {}; server scheduled {}; {} s settle + {} s measured per step; \
             command: `{}`.\n\n{}\n{}\n{end}",
            report.at,
            report.machine,
            report.gstreamer,
            report.published,
            match args.server_sched {
                Sched::Rr => "`chrt --rr 1` (SCHED_RR)",
                Sched::Normal => "normally (CFS, like the load generator)",
            },
            args.settle,
            args.seconds,
            command_line(),
            table(&report.steps, true),
            report.stopped,
        );
        let doc = format!("{}{}{}", &doc[..a], block, &doc[b + end.len()..]);
        std::fs::write(path, doc)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// The run itself; returns the viewers too, for the caller to drop after
/// the server.
async fn bench(
    args: &WhepBenchArgs,
    server: &Server,
) -> anyhow::Result<(WhepReport, Vec<WhepViewer>)> {
    let room = server
        .api(
            "POST",
            "/api/v1/rooms",
            Some(serde_json::json!({"name": "WHEP bench", "visibility": "listed"})),
        )
        .await?;
    let room_id = room["id"]
        .as_str()
        .ok_or_else(|| anyhow!("room without id: {room}"))?
        .to_owned();
    let ingest = server
        .api(
            "POST",
            &format!("/api/v1/rooms/{room_id}/ingests"),
            Some(serde_json::json!({})),
        )
        .await?;
    let whip_url = ingest["whip_url"]
        .as_str()
        .ok_or_else(|| anyhow!("ingest without whip_url: {ingest}"))?;
    let whip_token = ingest["token"]
        .as_str()
        .ok_or_else(|| anyhow!("ingest without token: {ingest}"))?;
    let mut opts = WhipOptions::new(VideoCodec::H264);
    opts.width = args.width;
    opts.height = args.height;
    opts.video_kbps = args.video_kbps;
    opts.pattern = args.pattern.clone();
    let publisher = WhipPublisher::connect_with(whip_url, Some(whip_token), &opts)
        .await
        .context("WHIP publish")?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while publisher.connection_state() != "connected" || publisher.sent().0 < 30 {
        if Instant::now() > deadline {
            bail!(
                "the WHIP publisher is {} after 20 s (sent {:?}, errors {:?})",
                publisher.connection_state(),
                publisher.sent(),
                publisher.errors()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let bc = server
        .api(
            "POST",
            &format!("/api/v1/rooms/{room_id}/broadcasts"),
            Some(serde_json::json!({"source": "ingest", "hls": false, "whep": true})),
        )
        .await
        .context("starting the broadcast")?;
    let bid = bc["id"]
        .as_str()
        .ok_or_else(|| anyhow!("broadcast without id: {bc}"))?
        .to_owned();
    let whep_url = bc["whep_url"]
        .as_str()
        .ok_or_else(|| anyhow!("broadcast without whep_url: {bc}"))?
        .to_owned();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let b = server
            .api("GET", &format!("/api/v1/broadcasts/{bid}"), None)
            .await?;
        match b["state"].as_str() {
            Some("live") => {
                let encoders = &b["encoders"];
                eprintln!("broadcast {bid} live; encoders {encoders}");
                break;
            }
            Some("failed" | "ended") => bail!("the broadcast {}: {b}", b["state"]),
            _ if Instant::now() > deadline => bail!("the broadcast is not live after 20 s: {b}"),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let published = format!(
        "H.264 {}x{} 30 fps, x264 {} kbit/s, `{}` picture, Opus 32 kbit/s, over WHIP",
        args.width, args.height, args.video_kbps, args.pattern
    );
    let mut report = WhepReport {
        at: crate::model::now_rfc3339(),
        machine: super::bench::machine(),
        gstreamer: gst::version_string().to_string(),
        published,
        steps: Vec::new(),
        stopped: String::new(),
        server_log_lines: 0,
        server_log_tail: Vec::new(),
    };
    let mut viewers: Vec<WhepViewer> = Vec::new();
    let mut failures = 0usize;
    let mut idle_cores: Option<f64> = None;
    let mut targets = vec![0];
    targets.extend(args.steps.iter().copied().filter(|&n| n > 0));
    for target in targets {
        // Join up to `target`.
        let missing = target.saturating_sub(viewers.len());
        let t = Instant::now();
        if missing > 0 {
            let ips = [LOCAL];
            let url = whep_url.clone();
            let mut joins = futures::stream::iter(0..missing)
                .map(|_| {
                    let url = url.clone();
                    async move { WhepViewer::connect_counting(&url, None, &ips).await }
                })
                .buffer_unordered(args.concurrency.max(1));
            while let Some(joined) = joins.next().await {
                match joined {
                    Ok(v) => viewers.push(v),
                    Err(e) => {
                        failures += 1;
                        if failures <= 5 {
                            eprintln!("\na viewer could not join: {e:#}");
                        }
                    }
                }
                progress(&format!(
                    "step {target}: {} viewers joined, {failures} failed",
                    viewers.len()
                ));
            }
        }
        let join_ms_each =
            (missing > 0).then(|| t.elapsed().as_secs_f64() * 1000.0 / missing as f64);
        // The first viewer joined an idle server: its added delay now is
        // the backlog these joins left in front of everyone.
        let backlog_after_joins = viewers
            .first()
            .and_then(WhepViewer::video_delay)
            .map(|d| d.extra_ms);
        if let Some(ms) = join_ms_each {
            progress("");
            eprintln!(
                "\rstep {target}: {missing} joins in {:.1} s ({ms:.0} ms each, {} at once); first viewer's delay added: {} ms",
                t.elapsed().as_secs_f64(),
                args.concurrency.max(1),
                opt(backlog_after_joins, 0)
            );
        }
        // Connected, then settled.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let waiting = viewers
                .iter()
                .filter(|v| v.connection_state() != "connected")
                .count();
            if waiting == 0 || Instant::now() > deadline {
                break;
            }
            progress(&format!(
                "step {target}: {waiting} viewers not connected yet"
            ));
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        progress(&format!("step {target}: settling {} s", args.settle));
        tokio::time::sleep(Duration::from_secs(args.settle)).await;
        progress(&format!(
            "step {target}: measuring {} s with {} viewers",
            args.seconds,
            viewers.len()
        ));
        let a = snapshot(server.pid(), &publisher, &viewers).await;
        tokio::time::sleep_until((a.at + Duration::from_secs(args.seconds)).into()).await;
        let b = snapshot(server.pid(), &publisher, &viewers).await;
        let mut step = measure(target, &a, &b, idle_cores, &viewers);
        step.join_failures = failures;
        step.join_ms_each = join_ms_each;
        step.backlog_after_joins_ms = backlog_after_joins;
        step.api_viewers = server
            .api("GET", &format!("/api/v1/broadcasts/{bid}"), None)
            .await
            .ok()
            .and_then(|b| b["viewers"]["whep"].as_u64());
        if target == 0 {
            idle_cores = Some(step.server_cores);
        }
        progress("");
        eprintln!("\r{}", table_row(&step, false));
        let failures_of_step = failures_of(&step, args, report.steps.first());
        let saturated = step.machine_busy_pct >= args.max_busy;
        report.steps.push(step);
        if !args.all_steps && target > 0 && (!failures_of_step.is_empty() || saturated) {
            let s = report.steps.last().expect("pushed");
            let mut why = failures_of_step;
            if saturated {
                why.push(format!(
                    "the machine was {:.0} % busy (≥ {} %)",
                    s.machine_busy_pct, args.max_busy
                ));
            }
            report.stopped = format!("Stopped after {} viewers: {}.", s.viewers, why.join("; "));
            break;
        }
    }
    if report.stopped.is_empty() {
        report.stopped = "Every step ran.".into();
    }
    let best = report
        .steps
        .iter()
        .filter(|s| s.viewers > 0 && failures_of(s, args, report.steps.first()).is_empty())
        .filter_map(|s| s.viewers_per_core.map(|v| (s.viewers, v)))
        .max_by_key(|(n, _)| *n);
    if let Some((n, per_core)) = best {
        report.stopped.push_str(&format!(
            " Most viewers that passed (loss and gaps < {} %, ≥ {} % of the video delivered, \
             delay steady within ±{MAX_DRIFT_MS_PER_S} ms/s): {n}, {per_core:.0} per core of server CPU.",
            args.max_loss, args.min_delivered
        ));
    }
    drop(publisher);
    Ok((report, viewers))
}
