//! `roomcast loadgen hls`: HLS requests per second served by roomcast, and by
//! nginx serving the same files on the same machine.
//!
//! A fresh roomcast server (this binary) runs a composite broadcast of an
//! empty room (black picture, silence, one `720p` rendition) while `wrk`
//! loads a fixed set of URLs: the media playlist and the newest segments,
//! one playlist request per `--segments` segment requests, as a CDN origin
//! sees a live stream. nginx (`root` = the same data dir, the same
//! Content-Type, Cache-Control and CORS headers) gets the identical load.
//!
//! Segments rotate (the HLS writer keeps 10, one every 2 s), so the URL set is taken
//! afresh from the playlist at the start of each round, and each round loads
//! both servers back to back with that same set, alternating which goes
//! first; a round is short enough that its segments outlive it. The
//! broadcast keeps encoding throughout, so both servers share the machine
//! with the same encoder.

use anyhow::{Context, anyhow, bail};
use clap::Args;
use serde::Serialize;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Flags of `loadgen hls`.
#[derive(Debug, Args)]
pub struct HlsBenchArgs {
    /// Seconds of load per server, split over the rounds.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Rounds (each: a fresh URL set, then both servers loaded in turn).
    #[arg(long, default_value_t = 2)]
    pub rounds: u32,
    /// Open connections (HTTP/1.1 keep-alive).
    #[arg(long, default_value_t = 64)]
    pub connections: u32,
    /// wrk threads.
    #[arg(long, default_value_t = 2)]
    pub threads: u32,
    /// Newest segments in the URL set (one playlist request per this many segment requests).
    #[arg(long, default_value_t = 3)]
    pub segments: usize,
    /// Load synthetic segments of this many KB (written next to the live
    /// ones, served by the same route) instead of the live segments, whose
    /// size depends on the picture (an empty room's black composite: ~37 KB;
    /// 2 s at 2.5 Mbit/s: 625 KB). 0: the live segments.
    #[arg(long, default_value_t = 0)]
    pub segment_kb: usize,
    /// Rendition whose files are loaded.
    #[arg(long, default_value = "720p")]
    pub rendition: String,
    /// roomcast only.
    #[arg(long)]
    pub no_nginx: bool,
    /// Write the results as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// Admin token of the servers benchmarks start.
pub(crate) const ADMIN: &str = "bench-admin-token-0123456789";

/// A child process killed when dropped, with its temp dir.
pub(crate) struct Proc {
    pub child: Child,
    pub dir: tempfile::TempDir,
}

impl Drop for Proc {
    /// SIGTERM first (nginx's master then stops its workers; a SIGKILL
    /// would leave them running), SIGKILL after 5 s.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A roomcast server (this binary) on loopback, fresh data dir.
pub(crate) struct Roomcast {
    pub proc: Proc,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
}

impl Roomcast {
    /// Starts `roomcast serve` and waits until it listens.
    pub fn start() -> anyhow::Result<Self> {
        // Inside `unshare -n` loopback starts down; outside this is a no-op.
        let _ = Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let dir = tempfile::tempdir()?;
        let exe = std::env::current_exe()?;
        let mut child = Command::new(exe)
            .args(["serve", "--listen", "127.0.0.1:0", "--admin-token", ADMIN])
            // All the load comes from one address: no per-address limits.
            .args(["--rate-limit", "false"])
            .args(["--ice-local-ip", "127.0.0.1", "--empty-timeout", "1h"])
            .arg("--data-dir")
            .arg(dir.path())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting roomcast")?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let proc = Proc { child, dir };
        let mut lines = BufReader::new(stdout).lines();
        let base = loop {
            let line = lines.next().ok_or_else(|| anyhow!("roomcast exited"))??;
            if let Some(url) = line.strip_prefix("roomcast listening on ") {
                break url.trim().to_owned();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        Ok(Self { proc, base })
    }

    /// The server's data dir.
    pub fn data_dir(&self) -> &Path {
        self.proc.dir.path()
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.proc.child.id()
    }

    /// An admin API call with a JSON body (none when empty); the JSON answer.
    pub fn admin(&self, method: &str, path: &str, body: &str) -> anyhow::Result<serde_json::Value> {
        let req = ureq::request(method, &format!("{}{path}", self.base))
            .timeout(Duration::from_secs(20))
            .set("Authorization", &format!("Bearer {ADMIN}"));
        let sent = if body.is_empty() {
            req.call()
        } else {
            req.set("Content-Type", "application/json")
                .send_string(body)
        };
        let resp = sent.map_err(|e| match e {
            ureq::Error::Status(code, r) => {
                anyhow!(
                    "{method} {path}: {code} {}",
                    r.into_string().unwrap_or_default()
                )
            }
            other => anyhow!("{method} {path}: {other}"),
        })?;
        let text = resp.into_string()?;
        if text.trim().is_empty() {
            return Ok(serde_json::Value::Null);
        }
        Ok(serde_json::from_str(&text)?)
    }

    /// A new room; its JSON.
    pub fn room(&self) -> anyhow::Result<serde_json::Value> {
        self.admin("POST", "/api/v1/rooms", r#"{"name":"bench"}"#)
    }

    /// Starts a broadcast in `room` and waits until its first rendition's
    /// playlist lists `segments` segments. A broadcast that does not get
    /// there in 25 s is stopped and started again, up to 3 times; returns
    /// the broadcast and how many attempts stalled.
    pub fn broadcast_with_segments(
        &self,
        room: &str,
        source: Option<&str>,
        renditions: &[&str],
        segments: usize,
    ) -> anyhow::Result<(serde_json::Value, u32)> {
        let mut stalls = 0;
        loop {
            let b = self.start_broadcast(room, source, renditions)?;
            let bid = b["id"]
                .as_str()
                .ok_or_else(|| anyhow!("broadcast id"))?
                .to_owned();
            let rendition = b["renditions"]
                .as_array()
                .and_then(|r| r.first())
                .and_then(|r| r.as_str())
                .unwrap_or("source")
                .to_owned();
            let url = format!("{}/hls/{bid}/{rendition}/index.m3u8", self.base);
            let Err(e) = wait_segments(&url, segments, Duration::from_secs(25)) else {
                return Ok((b, stalls));
            };
            stalls += 1;
            let state = self
                .admin("GET", &format!("/api/v1/broadcasts/{bid}"), "")
                .map(|v| v["state"].to_string())
                .unwrap_or_default();
            let dir = self.data_dir().join("hls").join(&bid).join(&rendition);
            let files: Vec<String> = std::fs::read_dir(&dir)
                .map(|d| {
                    d.flatten()
                        .map(|f| {
                            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
                            format!("{}:{len}", f.file_name().to_string_lossy())
                        })
                        .collect()
                })
                .unwrap_or_default();
            eprintln!(
                "SERVER STALL: broadcast {bid} (state {state}) did not list {segments} segments in 25 s: {e}; files {files:?}"
            );
            let _ = self.admin("DELETE", &format!("/api/v1/broadcasts/{bid}"), "");
            if stalls >= 3 {
                bail!("the broadcast stalled {stalls} times");
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    /// Starts a broadcast in `room`.
    pub fn start_broadcast(
        &self,
        room: &str,
        source: Option<&str>,
        renditions: &[&str],
    ) -> anyhow::Result<serde_json::Value> {
        let body = serde_json::json!({
            "hls": true,
            "whep": true,
            "renditions": renditions,
            "source": source.unwrap_or("composite"),
        });
        self.admin(
            "POST",
            &format!("/api/v1/rooms/{room}/broadcasts"),
            &body.to_string(),
        )
    }
}

/// `GET url` → (status, body); errors only when nothing answered.
pub(crate) fn get(url: &str) -> anyhow::Result<(u16, Vec<u8>)> {
    let resp = match ureq::get(url).timeout(Duration::from_secs(5)).call() {
        Ok(r) => r,
        Err(ureq::Error::Status(code, r)) => {
            return Ok((code, r.into_string().unwrap_or_default().into_bytes()));
        }
        Err(e) => bail!("GET {url}: {e}"),
    };
    let status = resp.status();
    let mut body = Vec::new();
    std::io::Read::read_to_end(&mut resp.into_reader(), &mut body)?;
    Ok((status, body))
}

/// Segment names of a media playlist, oldest first.
pub(crate) fn playlist_segments(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

/// Polls a media playlist until it lists at least `n` segments.
pub(crate) fn wait_segments(url: &str, n: usize, timeout: Duration) -> anyhow::Result<Vec<String>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok((200, body)) = get(url) {
            let segs = playlist_segments(&String::from_utf8_lossy(&body));
            if segs.len() >= n {
                return Ok(segs);
            }
        }
        if Instant::now() > deadline {
            bail!("{url} did not list {n} segments within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Cores, CPU model and memory of this machine.
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
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
        })
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| kb / 1024 / 1024)
        .unwrap_or(0);
    format!("{cores} cores ({cpu}), {mem_gib} GiB")
}

/// The 1-minute load average (other work on the machine skews the figures).
pub(crate) fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_default()
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn have(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|p| p.join(program).is_file()))
}

/// nginx serving `data_dir` (URLs `/hls/...` map to `<data_dir>/hls/...`)
/// with roomcast's HLS headers.
fn start_nginx(data_dir: &Path) -> anyhow::Result<(Proc, String)> {
    let dir = tempfile::tempdir()?;
    for d in ["conf", "logs", "tmp"] {
        std::fs::create_dir_all(dir.path().join(d))?;
    }
    let port = free_port()?;
    // As root, workers would switch to `nobody`, who cannot read the 0700 temp dirs.
    let user = if std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
    {
        "user root root;"
    } else {
        ""
    };
    let cors = r#"add_header Access-Control-Allow-Origin "*" always;
            add_header Access-Control-Expose-Headers "Location, Content-Length, Content-Range" always;"#;
    let conf = format!(
        r#"daemon off;
worker_processes auto;
{user}
pid logs/nginx.pid;
error_log logs/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 65;
    keepalive_requests 1000000;
    client_body_temp_path tmp/body;
    proxy_temp_path tmp/proxy;
    fastcgi_temp_path tmp/fastcgi;
    uwsgi_temp_path tmp/uwsgi;
    scgi_temp_path tmp/scgi;
    types {{
        application/vnd.apple.mpegurl m3u8;
        video/mp2t ts;
    }}
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location ~ ^/hls/[^/]+/index\.m3u8$ {{
            add_header Cache-Control "public, max-age=2";
            {cors}
        }}
        location ~ \.m3u8$ {{
            add_header Cache-Control "public, max-age=1";
            {cors}
        }}
        location ~ \.ts$ {{
            add_header Cache-Control "public, max-age=31536000, immutable";
            {cors}
        }}
        location / {{ return 404; }}
    }}
}}
"#,
        root = data_dir.display(),
    );
    std::fs::write(dir.path().join("conf/nginx.conf"), conf)?;
    let child = Command::new("nginx")
        .arg("-p")
        .arg(dir.path())
        .args(["-c", "conf/nginx.conf", "-e", "logs/error.log"])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting nginx (apt-get install nginx)")?;
    let proc = Proc { child, dir };
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("nginx did not start");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok((proc, format!("http://127.0.0.1:{port}")))
}

/// CPU seconds of `pid` and of its direct children (nginx: master and workers).
fn cpu_tree(pid: u32) -> f64 {
    let mut total = super::scenario::sample_process(pid)
        .map(|s| s.cpu_s)
        .unwrap_or(0.0);
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Some(child) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let ppid = std::fs::read_to_string(format!("/proc/{child}/stat"))
                .ok()
                .and_then(|s| {
                    s.rsplit_once(')')
                        .and_then(|(_, r)| r.split_whitespace().nth(1).map(str::to_owned))
                })
                .and_then(|p| p.parse::<u32>().ok());
            if ppid == Some(pid) {
                total += super::scenario::sample_process(child)
                    .map(|s| s.cpu_s)
                    .unwrap_or(0.0);
            }
        }
    }
    total
}

/// `--segments` files of `--segment-kb` KB, `seg9000N.ts`, in the rendition's
/// directory: the newest live segment repeated (whole 188-byte TS packets).
/// The HLS writer deletes only the files it wrote, so these stay.
fn synthetic_segments(
    data_dir: &Path,
    bid: &str,
    args: &HlsBenchArgs,
    playlist: &str,
    base: &str,
) -> anyhow::Result<Vec<String>> {
    let (_, body) = get(&format!("{base}{playlist}"))?;
    let last = playlist_segments(&String::from_utf8_lossy(&body))
        .pop()
        .ok_or_else(|| anyhow!("no segment"))?;
    let dir = data_dir.join("hls").join(bid).join(&args.rendition);
    let seed = std::fs::read(dir.join(&last))?;
    if seed.is_empty() {
        bail!("empty segment {last}");
    }
    let want = (args.segment_kb * 1000) / 188 * 188;
    let data: Vec<u8> = seed.iter().copied().cycle().take(want).collect();
    let mut names = Vec::new();
    for i in 0..args.segments.max(1) {
        let name = format!("seg9{i:04}.ts");
        std::fs::write(dir.join(&name), &data)?;
        names.push(name);
    }
    Ok(names)
}

/// What one wrk run measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WrkRun {
    /// Requests completed.
    pub requests: u64,
    /// Bytes read (headers and bodies).
    pub bytes: u64,
    /// Seconds of load.
    pub seconds: f64,
    /// Responses other than 2xx/3xx.
    pub non_2xx: u64,
    /// Connect, read, write errors and timeouts.
    pub socket_errors: u64,
    /// Latency percentiles, microseconds.
    pub p50_us: u64,
    /// 99th percentile, microseconds.
    pub p99_us: u64,
    /// Server CPU seconds meanwhile.
    pub server_cpu_s: f64,
}

/// wrk cycles through `paths` on every connection; `done` prints one line we parse.
fn wrk_script(paths: &[String]) -> String {
    let list = paths
        .iter()
        .map(|p| format!("\"{p}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r#"local paths = {{ {list} }}
local i = 0
request = function()
  i = i % #paths + 1
  return wrk.format("GET", paths[i])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("WRK %d %d %d %d %d %d %d\n",
    summary.requests, summary.bytes, summary.duration, e.status,
    e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"#
    )
}

fn run_wrk(
    base: &str,
    script: &Path,
    args: &HlsBenchArgs,
    seconds: u64,
    server_pid: u32,
) -> anyhow::Result<WrkRun> {
    let cpu0 = cpu_tree(server_pid);
    let out = Command::new("wrk")
        .arg(format!("-t{}", args.threads))
        .arg(format!("-c{}", args.connections))
        .arg(format!("-d{seconds}s"))
        .arg("--timeout")
        .arg("5s")
        .arg("-s")
        .arg(script)
        .arg(base)
        .stderr(Stdio::inherit())
        .output()
        .context("running wrk (apt-get install wrk)")?;
    let cpu1 = cpu_tree(server_pid);
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("WRK "))
        .ok_or_else(|| anyhow!("wrk printed no summary: {text}"))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    let [
        requests,
        bytes,
        duration_us,
        non_2xx,
        socket_errors,
        p50_us,
        p99_us,
    ] = v[..]
    else {
        bail!("wrk summary: {line}");
    };
    Ok(WrkRun {
        requests,
        bytes,
        seconds: duration_us as f64 / 1e6,
        non_2xx,
        socket_errors,
        p50_us,
        p99_us,
        server_cpu_s: cpu1 - cpu0,
    })
}

/// Totals of one server over every round.
#[derive(Debug, Clone, Default, Serialize)]
pub struct HlsReport {
    /// Server.
    pub label: String,
    /// Every round.
    pub runs: Vec<WrkRun>,
    /// Requests per second over all rounds.
    pub req_per_s: f64,
    /// MB/s read by the load generator (10^6 bytes, headers included).
    pub mb_per_s: f64,
    /// Server CPU, % of one core.
    pub cpu_pct: f64,
    /// Server CPU spent serving (roomcast: less what the broadcast costs meanwhile), % of one core.
    pub serving_cpu_pct: f64,
    /// Requests per CPU-second spent serving.
    pub req_per_cpu_s: f64,
    /// Errors and non-2xx responses over all rounds.
    pub failures: u64,
    /// Worst round's p50 and p99 latency, ms.
    pub p50_ms: f64,
    /// Worst p99, ms.
    pub p99_ms: f64,
}

fn summarize(label: &str, runs: Vec<WrkRun>, background_cpu_per_s: f64) -> HlsReport {
    let requests: u64 = runs.iter().map(|r| r.requests).sum();
    let bytes: u64 = runs.iter().map(|r| r.bytes).sum();
    let seconds: f64 = runs.iter().map(|r| r.seconds).sum();
    let cpu: f64 = runs.iter().map(|r| r.server_cpu_s).sum();
    let serving = (cpu - background_cpu_per_s * seconds).max(0.0);
    let s = seconds.max(1e-9);
    HlsReport {
        label: label.into(),
        req_per_s: requests as f64 / s,
        mb_per_s: bytes as f64 / s / 1e6,
        cpu_pct: cpu / s * 100.0,
        serving_cpu_pct: serving / s * 100.0,
        req_per_cpu_s: if serving > 0.0 {
            requests as f64 / serving
        } else {
            0.0
        },
        failures: runs.iter().map(|r| r.non_2xx + r.socket_errors).sum(),
        p50_ms: runs.iter().map(|r| r.p50_us).max().unwrap_or(0) as f64 / 1000.0,
        p99_ms: runs.iter().map(|r| r.p99_us).max().unwrap_or(0) as f64 / 1000.0,
        runs,
    }
}

/// Runs the comparison and prints a table.
pub fn run(args: HlsBenchArgs) -> anyhow::Result<()> {
    if !have("wrk") {
        bail!("wrk is not installed (scripts/install-deps bench, or apt-get install wrk)");
    }
    let nginx_on = !args.no_nginx;
    if nginx_on && !have("nginx") {
        bail!("nginx is not installed (scripts/install-deps bench), or pass --no-nginx");
    }
    let rounds = args.rounds.max(1);
    let per_round = (args.seconds / rounds as u64).max(1);
    if per_round * (1 + nginx_on as u64) > 12 {
        eprintln!(
            "hls bench: {per_round} s per server per round; segments live ~18 s, expect 404s (use more --rounds)"
        );
    }
    let load = loadavg();
    let server = Roomcast::start()?;
    let room = server.room()?;
    let room_id = room["id"].as_str().ok_or_else(|| anyhow!("room id"))?;
    eprintln!("hls bench: starting a broadcast, waiting for 4 segments");
    let (b, stalls) =
        server.broadcast_with_segments(room_id, None, &[&args.rendition], 4.max(args.segments))?;
    let bid = b["id"]
        .as_str()
        .ok_or_else(|| anyhow!("broadcast id"))?
        .to_owned();
    let playlist = format!("/hls/{bid}/{}/index.m3u8", args.rendition);
    let nginx = if nginx_on {
        Some(start_nginx(server.data_dir())?)
    } else {
        None
    };
    let synthetic = if args.segment_kb > 0 {
        synthetic_segments(server.data_dir(), &bid, &args, &playlist, &server.base)?
    } else {
        Vec::new()
    };
    let mut targets: Vec<(&str, String, u32)> =
        vec![("roomcast", server.base.clone(), server.pid())];
    if let Some((proc, base)) = &nginx {
        targets.push(("nginx", base.clone(), proc.child.id()));
    }
    let script_dir = tempfile::tempdir()?;
    let mut runs: Vec<Vec<WrkRun>> = vec![Vec::new(); targets.len()];
    let mut sizes = Vec::new();
    // roomcast's own CPU while nginx is loaded: what the broadcast costs.
    let mut background = (0.0f64, 0.0f64);
    for round in 0..rounds {
        let (_, body) = get(&format!("{}{playlist}", server.base))?;
        let segs = playlist_segments(&String::from_utf8_lossy(&body));
        let newest: Vec<&String> = if synthetic.is_empty() {
            segs.iter().rev().take(args.segments).rev().collect()
        } else {
            synthetic.iter().collect()
        };
        let mut paths = vec![playlist.clone()];
        for s in &newest {
            paths.push(format!("/hls/{bid}/{}/{s}", args.rendition));
        }
        // The same files, the same bytes, from both.
        for p in &paths {
            let mut bodies = Vec::new();
            for (label, base, _) in &targets {
                let (status, body) = get(&format!("{base}{p}"))?;
                if status != 200 {
                    bail!("{label} answered {status} for {p}");
                }
                bodies.push(body);
            }
            // (The playlist may change between the two fetches.)
            if p.ends_with(".ts") {
                if bodies.windows(2).any(|w| w[0] != w[1]) {
                    bail!("roomcast and nginx serve different bytes for {p}");
                }
                sizes.push(bodies[0].len());
            }
        }
        let script = script_dir.path().join(format!("round{round}.lua"));
        std::fs::write(&script, wrk_script(&paths))?;
        let mut order: Vec<usize> = (0..targets.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            let (label, base, pid) = &targets[i];
            eprintln!(
                "hls bench: round {} {label}: {} for {per_round} s",
                round + 1,
                paths.join(" ")
            );
            let rc0 = cpu_tree(server.pid());
            let r = run_wrk(base, &script, &args, per_round, *pid)?;
            if *label == "nginx" {
                background.0 += cpu_tree(server.pid()) - rc0;
                background.1 += r.seconds;
            }
            runs[i].push(r);
        }
    }
    let bg = if background.1 > 0.0 {
        background.0 / background.1
    } else {
        0.0
    };
    let reports: Vec<HlsReport> = targets
        .iter()
        .zip(runs)
        .map(|((label, _, _), runs)| {
            summarize(label, runs, if *label == "roomcast" { bg } else { 0.0 })
        })
        .collect();
    let avg_seg = sizes.iter().sum::<usize>() as f64 / sizes.len().max(1) as f64;
    println!(
        "\nMeasured {} on {}; load average {load} at start; {}; {}; {}; \
         {} rounds × {per_round} s per server, {} connections, {} wrk threads; \
         URL set: 1 media playlist + {} {} (average segment {:.1} KB).\n",
        crate::model::now_rfc3339(),
        machine(),
        gst::version_string(),
        version_of("nginx", &["-v"])
            .map(|v| v.trim_start_matches("nginx version: ").to_owned())
            .unwrap_or_else(|| "–".into()),
        version_of("wrk", &["-v"]).unwrap_or_else(|| "–".into()),
        rounds,
        args.connections,
        args.threads,
        args.segments,
        if synthetic.is_empty() {
            "newest live segments"
        } else {
            "synthetic segments"
        },
        avg_seg / 1000.0,
    );
    println!(
        "| server | requests/s | MB/s | p50 / p99 latency ms | server CPU % (1 core) | serving CPU % | requests per serving CPU-s | errors + non-2xx |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for r in &reports {
        println!(
            "| {} | {:.0} | {:.1} | {:.2} / {:.2} | {:.0} | {:.0} | {:.0} | {} |",
            r.label,
            r.req_per_s,
            r.mb_per_s,
            r.p50_ms,
            r.p99_ms,
            r.cpu_pct,
            r.serving_cpu_pct,
            r.req_per_cpu_s,
            r.failures
        );
    }
    println!("\nper round (requests/s):");
    for r in &reports {
        let per: Vec<String> = r
            .runs
            .iter()
            .map(|w| format!("{:.0}", w.requests as f64 / w.seconds.max(1e-9)))
            .collect();
        println!("  {}: {}", r.label, per.join(", "));
    }
    if let [ours, theirs] = &reports[..]
        && theirs.req_per_s > 0.0
    {
        println!(
            "\nroomcast ÷ nginx: {:.2}× requests/s, {:.2}× MB/s, {:.2}× requests per serving CPU-s (roomcast's broadcast costs {:.0} % of a core meanwhile, subtracted)",
            ours.req_per_s / theirs.req_per_s,
            ours.mb_per_s / theirs.mb_per_s.max(1e-9),
            ours.req_per_cpu_s / theirs.req_per_cpu_s.max(1e-9),
            bg * 100.0
        );
    }
    if stalls > 0 {
        println!(
            "\nroomcast: {stalls} broadcast start(s) stalled before writing 4 segments (restarted; see SERVER STALL above)"
        );
    }
    if reports.iter().any(|r| r.failures > 0) {
        eprintln!(
            "hls bench: some requests failed (see the errors column): the figures are not comparable"
        );
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&reports)?)?;
    }
    drop(nginx);
    drop(server);
    Ok(())
}

/// First line a tool prints about its version (stdout or stderr).
pub(crate) fn version_of(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .find(|l| !l.trim().is_empty())
        .map(|l| l.split(" Copyright").next().unwrap_or(l).trim().to_owned())
}
