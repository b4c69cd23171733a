//! Shared harness: a real `roomcast serve` process on loopback, REST calls,
//! and polling with deadlines.
#![allow(dead_code)]

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// A running server.
pub struct Server {
    pub base: String,
    pub port: u16,
    child: Child,
    pub data_dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    extra: Vec<String>,
    small_disk: Option<u64>,
    env: Vec<(String, String)>,
}

fn spawn(
    data_dir: &Path,
    listen: &str,
    extra: &[String],
    small_disk: Option<u64>,
    env: &[(String, String)],
) -> (Child, String) {
    let mut command = match small_disk {
        // Recordings and HLS each go to a tmpfs of this many bytes (its own
        // mount namespace, so nothing outside sees it): a disk that fills up.
        Some(bytes) => {
            let (rec, hls) = (data_dir.join("recordings"), data_dir.join("hls"));
            for dir in [&rec, &hls] {
                std::fs::create_dir_all(dir).expect("data subdirectory");
            }
            let mut c = Command::new("unshare");
            c.args(["-m", "sh", "-c"])
                .arg(format!(
                    "mount -t tmpfs -o size={bytes} roomcast-test \"$0\" && mount -t tmpfs -o size={bytes} roomcast-test \"$1\" && bin=\"$2\" && shift 2 && exec \"$bin\" serve \"$@\"",
                ))
                .arg(&rec)
                .arg(&hls)
                .arg(env!("CARGO_BIN_EXE_roomcast"));
            c
        }
        None => {
            let mut c = Command::new(env!("CARGO_BIN_EXE_roomcast"));
            c.arg("serve");
            c
        }
    };
    let mut child = command
        .args([
            "--listen",
            listen,
            "--ice-local-ip",
            "127.0.0.1",
            "--admin-token",
            ADMIN_TOKEN,
        ])
        .arg("--data-dir")
        .arg(data_dir)
        .args(extra)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env(
            "RUST_LOG",
            std::env::var("TEST_SERVER_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start roomcast");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let base = loop {
        let line = lines
            .next()
            .expect("server exited before listening")
            .expect("read stdout");
        if let Some(url) = line.strip_prefix("roomcast listening on ") {
            break url.trim().to_owned();
        }
    };
    // Keep draining stdout so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, base)
}

impl Server {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> Self {
        Self::start_limited(extra, None)
    }

    /// A server whose recordings and HLS go to disks of `small_disk` bytes.
    pub fn start_limited(extra: &[&str], small_disk: Option<u64>) -> Self {
        Self::start_full(extra, small_disk, &[])
    }

    /// A server with `env` added to its environment.
    pub fn start_env(extra: &[&str], env: &[(&str, &str)]) -> Self {
        Self::start_full(extra, None, env)
    }

    fn start_full(extra: &[&str], small_disk: Option<u64>, env: &[(&str, &str)]) -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let (child, base) = spawn(tmp.path(), "127.0.0.1:0", &extra, small_disk, &env);
        let port = base
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port");
        Self {
            base,
            port,
            child,
            data_dir: tmp.path().to_owned(),
            _tmp: Some(tmp),
            extra,
            small_disk,
            env,
        }
    }

    /// Kills the process (SIGKILL) and starts a new one on the same port and data dir.
    pub fn restart(&mut self) {
        self.kill();
        let listen = format!("127.0.0.1:{}", self.port);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            // The port may linger for a moment after the kill.
            if std::net::TcpListener::bind(&listen).is_ok() || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let (child, base) = spawn(
            &self.data_dir,
            &listen,
            &self.extra,
            self.small_disk,
            &self.env,
        );
        self.child = child;
        self.base = base;
    }

    /// Kills the process (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits (at most `timeout`) for the process to exit.
    pub fn terminate(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill -TERM");
        assert!(sent.success(), "kill -TERM failed");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for the server") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the server did not exit within {timeout:?} of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the server again after [`Server::kill`].
    pub fn start_again(&mut self) {
        self.restart();
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Any request; returns status and JSON body (Null when empty or not JSON).
    pub fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> (u16, Value) {
        let mut req = ureq::request(method, &self.url(path));
        if let Some(t) = token {
            req = req.set("Authorization", &format!("Bearer {t}"));
        }
        let resp = match body {
            Some(b) => req.set("Content-Type", "application/json").send_string(b),
            None => req.call(),
        };
        let resp = match resp {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{method} {path}: {e}"),
        };
        let status = resp.status();
        let text = resp.into_string().unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// The `/metrics` text.
    pub fn metrics(&self) -> String {
        fetch("GET", &self.url("/metrics"), &[], None).text()
    }

    /// Whether `/metrics` says `roomcast_signaling_sockets n`.
    pub fn signaling_sockets_are(&self, n: usize) -> bool {
        let line = format!("roomcast_signaling_sockets {n}");
        self.metrics().lines().any(|l| l == line)
    }

    pub fn admin(&self, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
        self.request(method, path, Some(ADMIN_TOKEN), body)
    }

    pub fn create_room(&self, body: &str) -> Value {
        let (status, room) = self.admin("POST", "/api/v1/rooms", Some(body));
        assert_eq!(status, 201, "create room: {room}");
        room
    }

    pub fn participant_ids(&self, room: &str) -> Vec<String> {
        let (status, body) = self.admin("GET", &format!("/api/v1/rooms/{room}/participants"), None);
        assert_eq!(status, 200, "{body}");
        body["participants"]
            .as_array()
            .expect("participants")
            .iter()
            .map(|p| p["id"].as_str().unwrap_or_default().to_owned())
            .collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `f` until it returns `Some` or the deadline passes.
pub async fn wait_for<T>(what: &str, timeout: Duration, f: impl FnMut() -> Option<T>) -> T {
    wait_for_explained(what, timeout, f, String::new).await
}

/// Like [`wait_for`]; a timeout also says what `explain` reports then.
pub async fn wait_for_explained<T>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> Option<T>,
    explain: impl Fn() -> String,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            let why = explain();
            let why = if why.is_empty() {
                why
            } else {
                format!(": {why}")
            };
            panic!("timed out after {timeout:?} waiting for {what}{why}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether a test peer was told `room_closed` and its socket ended.
pub fn saw_room_closed(p: &roomcast::loadgen::peer::TestPeer) -> bool {
    let st = p.stats();
    st.disconnected && st.errors.iter().any(|e| e == "room_closed")
}

/// What a test peer has seen of its room and its subscribe connection, for
/// failure messages.
pub fn peer_view(p: &roomcast::loadgen::peer::TestPeer) -> String {
    let st = p.stats();
    format!(
        "{}: errors {:?}, disconnected {}, subscribe {}",
        p.id,
        st.errors,
        st.disconnected,
        p.subscribe_state()
    )
}

/// Whether `rgb` is close to the 0xRRGGBB colour.
pub fn color_close(rgb: [u8; 3], color: u32, tolerance: i32) -> bool {
    let want = [(color >> 16) as u8, (color >> 8) as u8, color as u8];
    rgb.iter()
        .zip(want)
        .all(|(a, b)| (*a as i32 - b as i32).abs() <= tolerance)
}

/// Decoding recorded files with GStreamer, and what tests measure on them.
pub mod av {
    use gst::prelude::*;
    use std::path::Path;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    /// Decoded pictures are scaled to this size (RGB).
    pub const W: usize = 128;
    /// Height of decoded pictures.
    pub const H: usize = 72;
    /// Audio is decoded to mono float at this rate.
    pub const RATE: usize = 48_000;

    /// What a file decodes to.
    #[derive(Default)]
    pub struct Decoded {
        /// (timestamp ns, RGB W×H).
        pub frames: Vec<(u64, Vec<u8>)>,
        /// Mono samples.
        pub audio: Vec<f32>,
        /// Timestamp of the first sample, ns.
        pub audio_start: Option<u64>,
    }

    impl Decoded {
        /// The frame nearest `t` seconds.
        pub fn frame_at(&self, t: f64) -> &[u8] {
            let want = (t * 1e9) as i64;
            &self
                .frames
                .iter()
                .min_by_key(|(pts, _)| (*pts as i64 - want).abs())
                .expect("no frames")
                .1
        }

        /// The samples between `from` and `to` seconds.
        pub fn audio_between(&self, from: f64, to: f64) -> &[f32] {
            let start = self.audio_start.unwrap_or(0) as f64 / 1e9;
            let a = (((from - start) * RATE as f64).max(0.0) as usize).min(self.audio.len());
            let b = (((to - start) * RATE as f64).max(0.0) as usize).min(self.audio.len());
            &self.audio[a..b]
        }
    }

    /// Mean colour of a rectangle (in W×H coordinates) of an RGB frame.
    pub fn mean_rgb(frame: &[u8], x: usize, y: usize, w: usize, h: usize) -> [u8; 3] {
        let mut sum = [0u64; 3];
        for yy in y..y + h {
            for xx in x..x + w {
                let i = (yy * W + xx) * 3;
                for c in 0..3 {
                    sum[c] += frame[i + c] as u64;
                }
            }
        }
        let n = (w * h) as u64;
        [(sum[0] / n) as u8, (sum[1] / n) as u8, (sum[2] / n) as u8]
    }

    /// Power of `samples` at `freq` Hz (Goertzel), normalised by length.
    pub fn tone_power(samples: &[f32], freq: f64) -> f64 {
        let k = 2.0 * (2.0 * std::f64::consts::PI * freq / RATE as f64).cos();
        let (mut s1, mut s2) = (0.0f64, 0.0f64);
        for &x in samples {
            let s = x as f64 + k * s1 - s2;
            s2 = s1;
            s1 = s;
        }
        let p = s1 * s1 + s2 * s2 - k * s1 * s2;
        p / (samples.len().max(1) as f64).powi(2)
    }

    /// Decodes the video and/or audio of `path` completely; panics on any
    /// decoding error.
    pub fn decode(path: &Path, video: bool, audio: bool) -> Decoded {
        gst::init().expect("gst init");
        let mut desc = format!(
            "filesrc location=\"{}\" ! decodebin name=d ",
            path.display()
        );
        if video {
            desc += &format!(
                "d. ! queue ! videoconvert ! videoscale ! video/x-raw,format=RGB,width={W},height={H},pixel-aspect-ratio=1/1 ! appsink name=v sync=false "
            );
        }
        if audio {
            desc += &format!(
                "d. ! queue ! audioconvert ! audioresample ! audio/x-raw,format=F32LE,channels=1,rate={RATE} ! appsink name=a sync=false "
            );
        }
        let pipeline = gst::parse::launch(&desc)
            .expect("decode pipeline")
            .downcast::<gst::Pipeline>()
            .expect("a pipeline");
        let out = Arc::new(Mutex::new(Decoded::default()));
        {
            let out = out.clone();
            on_buffers(&pipeline, "v", move |buf, data| {
                let pts = buf.pts().map(|t| t.nseconds()).unwrap_or(0);
                // Rows of W*3 bytes are 4-aligned already (W = 128).
                out.lock().unwrap().frames.push((pts, data.to_vec()));
            });
        }
        {
            let out = out.clone();
            on_buffers(&pipeline, "a", move |buf, data| {
                let mut o = out.lock().unwrap();
                if o.audio_start.is_none() {
                    o.audio_start = buf.pts().map(|t| t.nseconds());
                }
                o.audio.extend(
                    data.chunks_exact(4)
                        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
                );
            });
        }
        pipeline.set_state(gst::State::Playing).expect("play");
        let bus = pipeline.bus().expect("bus");
        let mut result = Ok(());
        for msg in bus.iter_timed(gst::ClockTime::from_seconds(120)) {
            match msg.view() {
                gst::MessageView::Eos(_) => break,
                gst::MessageView::Error(e) => {
                    result = Err(format!("{}: {:?}", e.error(), e.debug()));
                    break;
                }
                _ => {}
            }
        }
        let _ = pipeline.set_state(gst::State::Null);
        if let Err(e) = result {
            panic!("decoding {}: {e}", path.display());
        }
        std::thread::sleep(Duration::from_millis(10));
        std::mem::take(&mut *out.lock().unwrap())
    }

    /// Calls `f` with every buffer reaching the appsink `name` (if there is one).
    fn on_buffers(
        pipeline: &gst::Pipeline,
        name: &str,
        mut f: impl FnMut(&gst::BufferRef, &[u8]) + Send + 'static,
    ) {
        let Some(sink) = pipeline.by_name(name) else {
            return;
        };
        sink.downcast::<gst_app::AppSink>()
            .expect("appsink")
            .set_callbacks(
                gst_app::AppSinkCallbacks::builder()
                    .new_sample(move |s| {
                        let sample = s.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                        let buf = sample.buffer().ok_or(gst::FlowError::Error)?;
                        let map = buf.map_readable().map_err(|_| gst::FlowError::Error)?;
                        f(buf, &map);
                        Ok(gst::FlowSuccess::Ok)
                    })
                    .build(),
            );
    }

    /// `ffprobe` of a file: (codec_type, codec_name) of each stream and the duration.
    pub fn probe(path: &Path) -> (Vec<(String, String)>, f64) {
        let out = std::process::Command::new("ffprobe")
            .args([
                "-v",
                "error",
                "-show_streams",
                "-show_format",
                "-of",
                "json",
            ])
            .arg(path)
            .output()
            .expect("run ffprobe (scripts/install-deps test installs it)");
        assert!(
            out.status.success(),
            "ffprobe {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ffprobe json");
        let streams = v["streams"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|s| {
                (
                    s["codec_type"].as_str().unwrap_or_default().to_owned(),
                    s["codec_name"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        let duration = v["format"]["duration"]
            .as_str()
            .and_then(|d| d.parse().ok())
            .unwrap_or(0.0);
        (streams, duration)
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free port")
        .port()
}

/// An HTTP answer with its headers and raw body.
pub struct Fetched {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Fetched {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Any HTTP request (no redirects followed); any status comes back as is.
pub fn fetch(method: &str, url: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> Fetched {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(15))
        .redirects(0)
        .build();
    let mut req = agent.request(method, url);
    for (k, v) in headers {
        req = req.set(k, v);
    }
    let resp = match body {
        Some(b) => req.send_bytes(b),
        None => req.call(),
    };
    let resp = match resp {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{method} {url}: {e}"),
    };
    let status = resp.status();
    let headers = resp
        .headers_names()
        .into_iter()
        .filter_map(|k| resp.header(&k).map(|v| (k.clone(), v.to_owned())))
        .collect();
    let mut body = Vec::new();
    std::io::Read::read_to_end(&mut resp.into_reader(), &mut body).expect("read body");
    Fetched {
        status,
        headers,
        body,
    }
}

/// A request sent byte for byte (no URL normalisation: `..` stays `..`);
/// returns the status and the body.
pub fn raw_get(port: u16, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// What ffprobe decoded of the first video stream of a URL or file.
#[derive(Debug, Clone, Copy)]
pub struct VideoProbe {
    pub frames: u64,
    pub width: u64,
    pub height: u64,
}

/// `ffprobe -v error <extra> -count_frames -select_streams v:0 -show_entries
/// stream=nb_read_frames,width,height -of json <input>`, killed after `timeout`.
/// Live inputs (HLS without ENDLIST, RTMP) need `-read_intervals %+N` in `extra`.
pub fn ffprobe_video(input: &str, extra: &[&str], timeout: Duration) -> Result<VideoProbe, String> {
    use std::io::Read;
    let mut child = Command::new("ffprobe")
        .args(["-v", "error"])
        .args(extra)
        .args([
            "-count_frames",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=nb_read_frames,width,height",
            "-of",
            "json",
        ])
        .arg(input)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("run ffprobe (scripts/install-deps test installs it): {e}"))?;
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("stdout")));
    let err = drain(Box::new(child.stderr.take().expect("stderr")));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait ffprobe") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let (out, err) = (
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default(),
    );
    let mut err = err;
    err.truncate(2000);
    let Some(status) = status else {
        return Err(format!(
            "ffprobe {input}: no result within {timeout:?}; {err}"
        ));
    };
    if !status.success() {
        return Err(format!("ffprobe {input}: {status}: {err}"));
    }
    let v: Value = serde_json::from_str(&out).map_err(|e| format!("ffprobe json: {e}: {out}"))?;
    let s = &v["streams"][0];
    let frames = s["nb_read_frames"]
        .as_str()
        .and_then(|n| n.parse().ok())
        .or_else(|| s["nb_read_frames"].as_u64())
        .ok_or_else(|| format!("ffprobe {input}: no video stream: {out} {err}"))?;
    Ok(VideoProbe {
        frames,
        width: s["width"].as_u64().unwrap_or(0),
        height: s["height"].as_u64().unwrap_or(0),
    })
}

/// nginx with the RTMP module (`libnginx-mod-rtmp`): a real RTMP server,
/// standing in for YouTube or Twitch. `application live`, on 127.0.0.1.
pub struct Nginx {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Nginx {
    /// Writes a configuration in a temporary prefix and starts nginx on
    /// `port`; returns once the port accepts connections.
    pub fn start(port: u16) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("conf")).expect("conf dir");
        std::fs::create_dir_all(dir.path().join("logs")).expect("logs dir");
        let module = "/usr/lib/nginx/modules/ngx_rtmp_module.so";
        assert!(
            Path::new(module).exists(),
            "{module} missing: apt-get install nginx libnginx-mod-rtmp"
        );
        let conf = format!(
            "load_module {module};\n\
             daemon off;\n\
             master_process on;\n\
             worker_processes 1;\n\
             error_log stderr;\n\
             pid {pid};\n\
             events {{ worker_connections 256; }}\n\
             rtmp {{\n  server {{\n    listen 127.0.0.1:{port};\n    chunk_size 4096;\n    \
             application live {{ live on; record off; }}\n  }}\n}}\n",
            pid = dir.path().join("nginx.pid").display(),
        );
        std::fs::write(dir.path().join("conf/nginx.conf"), conf).expect("write nginx.conf");
        let mut n = Self {
            port,
            dir,
            child: None,
        };
        n.spawn();
        n
    }

    /// `rtmp://127.0.0.1:<port>/live/<key>`.
    pub fn url(&self, key: &str) -> String {
        format!("rtmp://127.0.0.1:{}/live/{key}", self.port)
    }

    fn spawn(&mut self) {
        let mut child = Command::new("nginx")
            .arg("-p")
            .arg(self.dir.path())
            .args(["-e", "stderr", "-c", "conf/nginx.conf"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("run nginx (apt-get install nginx libnginx-mod-rtmp)");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("nginx exited at start: {status}");
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("nginx does not accept on port {} after 10 s", self.port);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.child = Some(child);
    }

    /// SIGTERM (fast shutdown: connections are closed), then waits for the
    /// master (SIGKILL after 5 s).
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Starts nginx again after [`Nginx::stop`], same port and configuration.
    pub fn start_again(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Server {
    /// Like [`Server::admin`], but a server that does not answer within 15 s
    /// fails the test instead of hanging it.
    pub fn admin_within(&self, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(15))
            .build();
        let req = agent
            .request(method, &self.url(path))
            .set("Authorization", &format!("Bearer {ADMIN_TOKEN}"));
        let resp = match body {
            Some(b) => req.set("Content-Type", "application/json").send_string(b),
            None => req.call(),
        };
        let resp = match resp {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{method} {path}: {e}"),
        };
        let status = resp.status();
        let text = resp.into_string().unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}
