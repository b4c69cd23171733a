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
}

fn spawn(data_dir: &Path, listen: &str, extra: &[String]) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_roomcast"))
        .args([
            "serve",
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
        let tmp = tempfile::tempdir().expect("tempdir");
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let (child, base) = spawn(tmp.path(), "127.0.0.1:0", &extra);
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
        }
    }

    /// Kills the process (SIGKILL) and starts a new one on the same port and data dir.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let listen = format!("127.0.0.1:{}", self.port);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            // The port may linger for a moment after the kill.
            if std::net::TcpListener::bind(&listen).is_ok() || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let (child, base) = spawn(&self.data_dir, &listen, &self.extra);
        self.child = child;
        self.base = base;
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
pub async fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether `rgb` is close to the 0xRRGGBB colour.
pub fn color_close(rgb: [u8; 3], color: u32, tolerance: i32) -> bool {
    let want = [(color >> 16) as u8, (color >> 8) as u8, color as u8];
    rgb.iter()
        .zip(want)
        .all(|(a, b)| (*a as i32 - b as i32).abs() <= tolerance)
}
