//! `roomcast loadgen bench`: the benchmark suite. Starts a fresh roomcast
//! server (this binary) and, when installed, a Janus server per scenario,
//! runs the scenarios against both, prints one table with the ratios and
//! can write it into `docs/benchmarks.md`.
//!
//! Run it in a network namespace of its own (scripts/bench does): it adds a
//! veth pair there so that Janus, which ignores loopback for ICE, has an
//! address, and both servers are measured on that same address.

use super::janus::write_config;
use super::scenario::{self, Kind, Report, ScenarioArgs};
use anyhow::{Context, anyhow, bail};
use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Flags of `loadgen bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// The quick suite (about 3 minutes) instead of the full one.
    #[arg(long)]
    pub quick: bool,
    /// Skip Janus even when it is installed.
    #[arg(long)]
    pub no_janus: bool,
    /// Replace the figures between the bench markers of this markdown file.
    #[arg(long)]
    pub write: Option<PathBuf>,
    /// Write every report as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Run only this scenario (`meeting`, `large-meeting`, `livestream`, `join-storm`).
    #[arg(long, value_enum)]
    pub only: Option<Kind>,
}

const ADMIN: &str = "bench-admin-token-0123456789";
const BENCH_IP: &str = "10.99.0.1";

/// One run of the suite.
struct Entry {
    kind: Kind,
    participants: usize,
    janus: bool,
}

fn suite(quick: bool) -> Vec<Entry> {
    let e = |kind, participants, janus| Entry {
        kind,
        participants,
        janus,
    };
    if quick {
        vec![
            e(Kind::Meeting, 5, true),
            e(Kind::Meeting, 10, true),
            e(Kind::LargeMeeting, 20, false),
            e(Kind::Livestream, 40, true),
            e(Kind::JoinStorm, 20, false),
        ]
    } else {
        vec![
            e(Kind::Meeting, 5, true),
            e(Kind::Meeting, 10, true),
            e(Kind::Meeting, 15, true),
            e(Kind::Meeting, 20, true),
            e(Kind::Meeting, 25, false),
            e(Kind::LargeMeeting, 50, false),
            e(Kind::Livestream, 99, true),
            e(Kind::JoinStorm, 50, false),
        ]
    }
}

fn sh(args: &[&str]) -> bool {
    Command::new(args[0])
        .args(&args[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A veth pair with `BENCH_IP` inside this (private) network namespace.
fn setup_network() -> Option<IpAddr> {
    let ok = sh(&["ip", "link", "set", "lo", "up"])
        && (sh(&["ip", "addr", "show", "rcbench0"])
            || (sh(&[
                "ip", "link", "add", "rcbench0", "type", "veth", "peer", "name", "rcbench1",
            ]) && sh(&[
                "ip",
                "addr",
                "add",
                &format!("{BENCH_IP}/24"),
                "dev",
                "rcbench0",
            ]) && sh(&["ip", "link", "set", "rcbench0", "up"])
                && sh(&["ip", "link", "set", "rcbench1", "up"])));
    ok.then(|| BENCH_IP.parse().ok()).flatten()
}

struct Proc {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_roomcast(ip: IpAddr, audio_last_n: usize) -> anyhow::Result<(Proc, String)> {
    let dir = tempfile::tempdir()?;
    let exe = std::env::current_exe()?;
    let mut child = Command::new(exe)
        .args(["serve", "--listen", "127.0.0.1:0", "--admin-token", ADMIN])
        // All the load comes from one address: no per-address limits.
        .args(["--rate-limit", "false"])
        .args([
            "--ice-local-ip",
            &ip.to_string(),
            "--audio-last-n",
            &audio_last_n.to_string(),
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting roomcast")?;
    let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
    let mut lines = BufReader::new(stdout).lines();
    let base = loop {
        let line = lines.next().ok_or_else(|| anyhow!("roomcast exited"))??;
        if let Some(url) = line.strip_prefix("roomcast listening on ") {
            break url.trim().to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    Ok((Proc { child, _dir: dir }, base))
}

fn start_janus(ip: IpAddr) -> anyhow::Result<(Proc, String)> {
    let dir = tempfile::tempdir()?;
    let config = write_config(dir.path(), ip, 8088, "rcbench0")?;
    let child = Command::new("janus")
        .arg("-C")
        .arg(&config)
        .arg("-F")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting janus")?;
    let proc = Proc { child, _dir: dir };
    let base = format!("http://{ip}:8088/janus");
    let deadline = Instant::now() + Duration::from_secs(10);
    while ureq::get(&format!("{base}/info")).call().is_err() {
        if Instant::now() > deadline {
            bail!("janus did not start");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok((proc, base))
}

fn janus_version() -> Option<String> {
    let out = Command::new("janus").arg("--version").output().ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .map(|l| l.trim().to_owned())
}

/// Cores, CPU model and memory of this machine, for benchmark reports.
pub(crate) fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
            })
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_owned())
        })
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| format!("{} GiB", kb / 1024 / 1024))
        .unwrap_or_default();
    format!("{cores} cores ({cpu}), {mem}")
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
        _ => "–".into(),
    }
}

/// Runs the suite.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let ip = setup_network().ok_or_else(|| {
        anyhow!("cannot set up the benchmark network; run inside `unshare -n` as root (scripts/bench does)")
    })?;
    let janus_ok = !args.no_janus && janus_version().is_some();
    if !janus_ok && !args.no_janus {
        eprintln!(
            "janus is not installed: roomcast only (apt-get install janus for the comparison)"
        );
    }
    let (duration, warmup) = if args.quick { (10, 3) } else { (20, 5) };
    let mut reports: Vec<Report> = Vec::new();
    let mut pairs: Vec<(Report, Report)> = Vec::new();
    for entry in suite(args.quick) {
        if args.only.is_some_and(|o| o != entry.kind) {
            continue;
        }
        let mut base_args = ScenarioArgs {
            url: String::new(),
            admin_token: ADMIN.into(),
            participants: entry.participants,
            duration,
            warmup,
            visible: 9,
            speakers: 3,
            join_within: 10,
            video_kbps: 300,
            server_pid: None,
            ice_local_ip: vec![ip],
            json: None,
            label: "roomcast".into(),
            janus_url: None,
        };
        // Janus forwards every audio stream: so does roomcast in the compared scenarios.
        let last_n = if entry.kind == Kind::LargeMeeting {
            3
        } else {
            0
        };
        let (server, base) = start_roomcast(ip, last_n)?;
        base_args.url = base;
        base_args.server_pid = Some(server.child.id());
        eprintln!("== roomcast {:?} n={}", entry.kind, entry.participants);
        let ours = scenario::run(entry.kind, &base_args).await;
        drop(server);
        let ours = match ours {
            Ok(r) => r,
            Err(e) => {
                eprintln!(
                    "roomcast {:?} n={} failed: {e:#}",
                    entry.kind, entry.participants
                );
                continue;
            }
        };
        reports.push(ours.clone());
        if entry.janus && janus_ok {
            let (janus, url) = start_janus(ip)?;
            let mut j = base_args.clone();
            j.label = "janus".into();
            j.janus_url = Some(url);
            j.server_pid = Some(janus.child.id());
            eprintln!("== janus {:?} n={}", entry.kind, entry.participants);
            let theirs = scenario::run(entry.kind, &j).await;
            drop(janus);
            match theirs {
                Ok(r) => {
                    reports.push(r.clone());
                    pairs.push((ours, r));
                }
                Err(e) => eprintln!(
                    "janus {:?} n={} failed: {e:#}",
                    entry.kind, entry.participants
                ),
            }
        }
    }
    let mut out = String::new();
    out.push_str(scenario::TABLE_HEADER);
    out.push('\n');
    for r in &reports {
        out.push_str(&scenario::table_row(r));
        out.push('\n');
    }
    if !pairs.is_empty() {
        out.push_str("\nroomcast ÷ Janus, same scenario, same run:\n\n");
        out.push_str("| scenario | packets per CPU-second | server CPU | RSS per participant | threads per participant | first frame p50 |\n|---|---|---|---|---|---|\n");
        for (o, j) in &pairs {
            out.push_str(&format!(
                "| {:?} n={} | {} | {} | {} | {} | {} |\n",
                o.scenario,
                o.participants,
                ratio(o.packets_per_cpu_s, j.packets_per_cpu_s),
                ratio(o.server_cpu_pct, j.server_cpu_pct),
                ratio(o.rss_per_participant_mib, j.rss_per_participant_mib),
                ratio(o.threads_per_participant, j.threads_per_participant),
                ratio(
                    o.first_frame_p50_ms.map(|v| v as f64),
                    j.first_frame_p50_ms.map(|v| v as f64)
                ),
            ));
        }
    }
    let meeting_max = reports
        .iter()
        .filter(|r| {
            r.label == "roomcast"
                && r.scenario == Kind::Meeting
                && r.loss_pct < 1.0
                && r.joined == r.participants
        })
        .map(|r| r.participants)
        .max();
    if let Some(n) = meeting_max {
        out.push_str(&format!(
            "\nLargest full-mesh meeting with < 1 % loss in this run: {n} participants.\n"
        ));
    }
    println!("\n{out}");
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&reports)?)?;
    }
    if let Some(path) = &args.write {
        let doc =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let (start, end) = ("<!-- bench:start -->", "<!-- bench:end -->");
        let (Some(a), Some(b)) = (doc.find(start), doc.find(end)) else {
            bail!("{} has no bench markers", path.display());
        };
        let gst = gst::version_string();
        let janus = if janus_ok {
            janus_version().unwrap_or_default()
        } else {
            "not run".into()
        };
        let block = format!(
            "{start}\nMeasured {} on {}; {gst}; Janus: {janus}; {duration} s per scenario after {warmup} s warm-up; \
             command: `scripts/bench{}`.\n\n{out}{end}",
            crate::model::now_rfc3339(),
            machine(),
            if args.quick { " --quick" } else { "" },
        );
        let doc = format!("{}{}{}", &doc[..a], block, &doc[b + end.len()..]);
        std::fs::write(path, doc)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
