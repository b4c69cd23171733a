//! The bounds that keep one client from hurting the others, on a live server:
//! - paths: recording downloads, HLS files and web assets never serve a file
//!   outside their directory (`..`, `%2e%2e`, `%2f`, backslashes, absolute
//!   paths, symbolic links planted inside);
//! - slow-loris: 200 connections trickling their headers do not delay a
//!   normal request, and are closed once the header deadline passes; one
//!   address holding its connection cap is refused while another is served;
//! - WebSocket frames over the limit (one huge frame announced by its header,
//!   fragments adding up, a text message after join) close that socket with
//!   1009 and an error message;
//! - per-address rate limits: bursts of WHEP and WHIP offers, signaling
//!   connections and calls without the admin token get 429 with
//!   `Retry-After` and the `rate_limited` error, while another address
//!   (127.0.0.2) is still served and the admin token is never limited.

mod common;

use common::{ADMIN_TOKEN, Server};
use roomcast::edge::listener::{HEADER_READ_TIMEOUT, MAX_CONNECTIONS_PER_ADDRESS};
use roomcast::edge::ratelimit;
use roomcast::signaling::MAX_MESSAGE_BYTES;
use serde_json::Value;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const OTHER: &str = "127.0.0.2";
const LOCAL: &str = "127.0.0.1";

/// A TCP connection to the server from source address `from`.
async fn connect_from(from: &str, port: u16) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    let local: IpAddr = from.parse().expect("address");
    socket
        .bind(SocketAddr::new(local, 0))
        .expect("bind the source address");
    socket
        .connect(SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .expect("connect")
}

/// An answer read off a raw socket.
#[derive(Debug)]
struct Raw {
    status: u16,
    head: String,
    body: String,
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then_some(v.trim())
        })
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

/// Sends `request` byte for byte from `from` (no URL normalisation) and reads the answer.
async fn raw_from(from: &str, port: u16, request: &[u8]) -> Raw {
    let mut s = connect_from(from, port).await;
    s.write_all(request).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    Raw {
        status: head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0),
        head: head.to_owned(),
        body: body.to_owned(),
    }
}

fn request(method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Vec<u8> {
    let mut r = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for (k, v) in headers {
        r.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        r.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    r.push_str("\r\n");
    r.push_str(body);
    r.into_bytes()
}

fn assert_rate_limited(r: &Raw) {
    assert_eq!(r.status, 429, "{r:?}");
    let after: u64 = r
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("Retry-After: {r:?}"));
    assert!((1..=60).contains(&after), "{r:?}");
    let v = r.json();
    assert_eq!(v["error"]["code"], "rate_limited", "{r:?}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );
}

// ---------------------------------------------------------------- paths

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_file_outside_its_directory_is_served() {
    let s = Server::start();
    const SECRET: &str = "top-secret-3141592653";
    // One secret inside the data dir (outside recordings/ and hls/), one next to it.
    std::fs::write(s.data_dir.join("secret.txt"), SECRET).expect("secret");
    let parent = s.data_dir.parent().expect("parent").to_owned();
    let beside = parent.join(format!(
        "{}-secret.txt",
        s.data_dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("x")
    ));
    std::fs::write(&beside, SECRET).expect("secret beside");
    let beside_name = beside
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("x")
        .to_owned();

    // A stored recording: a `tracks` recording of an empty room, stopped.
    let room = s.create_room(r#"{"name": "Files"}"#);
    let rid = room["id"].as_str().expect("id");
    let (st, rec) = s.admin(
        "POST",
        &format!("/api/v1/rooms/{rid}/recordings"),
        Some(r#"{"kind": "tracks"}"#),
    );
    assert_eq!(st, 201, "{rec}");
    let rec_id = rec["id"].as_str().expect("recording id").to_owned();
    let (st, _) = s.admin("POST", &format!("/api/v1/recordings/{rec_id}/stop"), None);
    assert_eq!(st, 200);
    let rec_dir = s.data_dir.join("recordings").join(&rec_id);
    std::fs::write(rec_dir.join("fine.mkv"), b"fine").expect("a file");
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(s.data_dir.join("secret.txt"), rec_dir.join("inside.mkv"))
            .expect("symlink");
        std::os::unix::fs::symlink(&beside, rec_dir.join("beside.mkv")).expect("symlink");
        std::os::unix::fs::symlink(&parent, rec_dir.join("up")).expect("symlink");
    }
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let port = s.port;
    let get = |path: String| {
        let auth = auth.clone();
        async move {
            raw_from(
                LOCAL,
                port,
                &request("GET", &path, &[("Authorization", &auth)], ""),
            )
            .await
        }
    };
    let base = format!("/api/v1/recordings/{rec_id}/files");
    let ok = get(format!("{base}/fine.mkv")).await;
    assert_eq!((ok.status, ok.body.as_str()), (200, "fine"), "{ok:?}");
    let tries = [
        format!("{base}/../../secret.txt"),
        format!("{base}/..%2f..%2f..%2fsecret.txt"),
        format!("{base}/%2e%2e%2f%2e%2e%2f%2e%2e%2fsecret.txt"),
        format!("{base}/%2e%2e/%2e%2e/%2e%2e/secret.txt"),
        format!("{base}/..%5c..%5c..%5csecret.txt"),
        format!("{base}/..\\..\\..\\secret.txt"),
        format!("{base}/%2fetc%2fpasswd"),
        format!("{base}/%2F{}", s.data_dir.join("secret.txt").display()),
        format!("{base}/..%2f..%2f..%2f..%2f{beside_name}"),
        format!("{base}/inside.mkv"),
        format!("{base}/beside.mkv"),
        format!("{base}/up%2f{beside_name}"),
        format!("{base}/.."),
        format!("{base}/%00secret.txt"),
        "/api/v1/recordings/..%2f..%2fsecret.txt/files/secret.txt".to_owned(),
        format!("/api/v1/recordings/{rec_id}/files/../../../secret.txt"),
    ];
    for path in &tries {
        let r = get(path.clone()).await;
        assert!(
            [400, 404].contains(&r.status),
            "{path} -> {}: {}",
            r.status,
            r.body
        );
        assert!(!r.body.contains(SECRET), "{path} served the secret");
    }
    // Links are never listed as files of the recording.
    let (_, rec) = s.admin("GET", &format!("/api/v1/recordings/{rec_id}"), None);
    let names: Vec<&str> = rec["files"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f["name"].as_str())
        .collect();
    assert!(
        !names
            .iter()
            .any(|n| ["inside.mkv", "beside.mkv", "up"].contains(n)),
        "{rec}"
    );

    // HLS: files planted where a broadcast would write them.
    let bid = "b_AbCdEf123456";
    let hls = s.data_dir.join("hls").join(bid);
    std::fs::create_dir_all(hls.join("720p")).expect("hls dir");
    std::fs::write(hls.join("720p").join("seg00001.ts"), b"segment").expect("segment");
    let outside = parent.join(format!("{beside_name}.d"));
    std::fs::create_dir_all(&outside).expect("a directory outside");
    std::fs::write(outside.join("seg00001.ts"), SECRET).expect("secret segment");
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(s.data_dir.join("secret.txt"), hls.join("720p/seg00002.ts"))
            .expect("symlink");
        std::os::unix::fs::symlink(&beside, hls.join("index.m3u8")).expect("symlink");
        std::os::unix::fs::symlink(&outside, hls.join("360p")).expect("symlink");
    }
    let ok = get(format!("/hls/{bid}/720p/seg00001.ts")).await;
    assert_eq!((ok.status, ok.body.as_str()), (200, "segment"), "{ok:?}");
    for path in [
        format!("/hls/{bid}/720p/seg00002.ts"),
        format!("/hls/{bid}/index.m3u8"),
        format!("/hls/{bid}/360p/seg00001.ts"),
        format!("/hls/{bid}/../../secret.txt"),
        format!("/hls/{bid}/720p/..%2f..%2f..%2fsecret.txt"),
        format!("/hls/{bid}/%2e%2e/%2e%2e/secret.txt"),
        format!("/hls/{bid}/..\\..\\secret.txt"),
        "/hls/..%2f..%2f/720p/seg00001.ts".to_owned(),
        format!("/hls/{bid}/720p/%2fetc%2fpasswd"),
    ] {
        let r = get(path.clone()).await;
        assert!([400, 404].contains(&r.status), "{path} -> {}", r.status);
        assert!(!r.body.contains(SECRET), "{path} served the secret");
    }

    // Web assets (read from disk in debug builds): nothing outside web/assets.
    let ok = get("/assets/home.js".into()).await;
    assert_eq!(ok.status, 200);
    for path in [
        "/assets/../../Cargo.toml",
        "/assets/../index.html",
        "/assets/%2e%2e/%2e%2e/Cargo.toml",
        "/assets/..%2f..%2fCargo.toml",
        "/assets/%2fetc%2fpasswd",
        "/assets//etc/passwd",
        "/assets/..\\..\\Cargo.toml",
        "/assets/vendor/../../../Cargo.toml",
        "/assets/.%2e/.%2e/Cargo.toml",
    ] {
        let r = get(path.into()).await;
        assert!([400, 404].contains(&r.status), "{path} -> {}", r.status);
        assert!(!r.body.contains("[package]"), "{path} served Cargo.toml");
    }
    let _ = std::fs::remove_file(&beside);
    let _ = std::fs::remove_dir_all(&outside);
}

// ------------------------------------------------------------ slow-loris

/// How long a normal request may take while the slow clients hang on.
const SERVED_WITHIN: Duration = Duration::from_secs(2);

async fn healthz_from(from: &str, port: u16) -> (u16, Duration) {
    let t = Instant::now();
    let r = tokio::time::timeout(
        SERVED_WITHIN * 5,
        raw_from(from, port, &request("GET", "/healthz", &[], "")),
    )
    .await
    .map(|r| r.status)
    .unwrap_or(0);
    (r, t.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_bounded() {
    let s = Server::start();
    let port = s.port;
    // 200 clients start a request and trickle its headers, a byte every 500 ms.
    let mut slow = Vec::new();
    for _ in 0..200 {
        let mut c = connect_from(LOCAL, port).await;
        c.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            .await
            .expect("write");
        slow.push(c);
    }
    let started = Instant::now();
    let trickle = tokio::spawn(async move {
        let mut closed_after = Vec::new();
        let mut open: Vec<Option<TcpStream>> = slow.into_iter().map(Some).collect();
        while started.elapsed() < HEADER_READ_TIMEOUT * 2 && open.iter().any(Option::is_some) {
            for slot in open.iter_mut() {
                let Some(c) = slot else { continue };
                let mut buf = [0u8; 256];
                // Closed by the server? (EOF, a reset, or a 408 then EOF.)
                let gone =
                    match tokio::time::timeout(Duration::from_millis(1), c.read(&mut buf)).await {
                        Ok(Ok(0)) | Ok(Err(_)) => true,
                        Ok(Ok(_)) => false,
                        Err(_) => c.write_all(b"a").await.is_err(),
                    };
                if gone {
                    closed_after.push(started.elapsed());
                    *slot = None;
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        (closed_after, open.iter().filter(|c| c.is_some()).count())
    });
    // Meanwhile, normal requests are served at once, from this address and another.
    for from in [LOCAL, OTHER, LOCAL] {
        let (status, took) = healthz_from(from, port).await;
        assert_eq!(status, 200, "from {from}");
        assert!(took < SERVED_WITHIN, "from {from}: {took:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let (closed_after, still_open) = trickle.await.expect("trickle task");
    assert_eq!(still_open, 0, "every slow client is cut off");
    let latest = closed_after.iter().max().copied().unwrap_or_default();
    assert!(
        latest < HEADER_READ_TIMEOUT + Duration::from_secs(4),
        "the last slow client was cut off after {latest:?}"
    );
    // A client that connects and never sends anything is cut off too.
    let mut idle = connect_from(LOCAL, port).await;
    let t = Instant::now();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(HEADER_READ_TIMEOUT * 2, idle.read(&mut buf))
        .await
        .expect("the idle connection is closed");
    assert!(!matches!(n, Ok(n) if n > 0 && !buf.starts_with(b"HTTP/1.1 408")));
    assert!(t.elapsed() < HEADER_READ_TIMEOUT + Duration::from_secs(3));
    assert_eq!(healthz_from(LOCAL, port).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_take_every_connection() {
    let s = Server::start();
    let port = s.port;
    let mut held = Vec::new();
    for _ in 0..MAX_CONNECTIONS_PER_ADDRESS {
        held.push(connect_from(LOCAL, port).await);
    }
    // The server counts a connection once it accepted it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    // One more is told so and closed (read before writing: a request the
    // server never reads could turn its close into a reset).
    let mut extra = connect_from(LOCAL, port).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), extra.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let refused = Raw {
        status: head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0),
        head: head.to_owned(),
        body: body.to_owned(),
    };
    assert_rate_limited(&refused);
    let (status, took) = healthz_from(OTHER, port).await;
    assert_eq!(status, 200, "another address is served");
    assert!(took < SERVED_WITHIN, "{took:?}");
    drop(held);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(healthz_from(LOCAL, port).await.0, 200, "slots come back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_bodies_are_cut_off() {
    let s = Server::start();
    let mut c = connect_from(LOCAL, s.port).await;
    let head = format!(
        "POST /api/v1/rooms HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"name\""
    );
    c.write_all(head.as_bytes()).await.expect("write");
    let t = Instant::now();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), c.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("request_timeout"), "{text}");
    assert!(t.elapsed() < roomcast::edge::BODY_READ_TIMEOUT + Duration::from_secs(3));
    assert_eq!(healthz_from(LOCAL, s.port).await.0, 200);
}

// ------------------------------------------------------- WebSocket frames

/// Opens `/ws` on a raw socket and completes the handshake.
async fn ws_raw(port: u16) -> TcpStream {
    let mut c = connect_from(LOCAL, port).await;
    let req = "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
               Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    c.write_all(req.as_bytes()).await.expect("write");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        c.read_exact(&mut byte).await.expect("handshake answer");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    c
}

/// A client frame header (masked, as clients must) announcing `len` payload bytes.
fn frame_header(fin: bool, opcode: u8, len: u64) -> Vec<u8> {
    let mut h = vec![(u8::from(fin) << 7) | opcode];
    if len < 126 {
        h.push(0x80 | len as u8);
    } else if len <= u64::from(u16::MAX) {
        h.push(0x80 | 126);
        h.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        h.push(0x80 | 127);
        h.extend_from_slice(&len.to_be_bytes());
    }
    h.extend_from_slice(&[0, 0, 0, 0]); // mask key 0: payload as is
    h
}

/// Reads server frames until the close frame; returns its code and the text frames before it.
async fn read_until_close(c: &mut TcpStream) -> (Option<u16>, Vec<String>) {
    let mut texts = Vec::new();
    loop {
        let mut h = [0u8; 2];
        if c.read_exact(&mut h).await.is_err() {
            return (None, texts);
        }
        let mut len = u64::from(h[1] & 0x7f);
        if len == 126 {
            let mut b = [0u8; 2];
            c.read_exact(&mut b).await.expect("len");
            len = u64::from(u16::from_be_bytes(b));
        } else if len == 127 {
            let mut b = [0u8; 8];
            c.read_exact(&mut b).await.expect("len");
            len = u64::from_be_bytes(b);
        }
        assert!(len < 1 << 20, "server frame of {len} bytes");
        let mut payload = vec![0u8; len as usize];
        c.read_exact(&mut payload).await.expect("payload");
        match h[0] & 0x0f {
            0x1 => texts.push(String::from_utf8_lossy(&payload).into_owned()),
            0x8 => {
                let code =
                    (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
                return (code, texts);
            }
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_websocket_frames_close_with_1009() {
    let s = Server::start();
    // One frame announcing 1 GiB: refused from its header, without waiting for (or allocating) it.
    let mut c = ws_raw(s.port).await;
    c.write_all(&frame_header(true, 0x1, 1 << 30))
        .await
        .expect("write");
    c.write_all(b"{\"type\":").await.expect("write");
    let t = Instant::now();
    let (code, texts) = tokio::time::timeout(Duration::from_secs(5), read_until_close(&mut c))
        .await
        .expect("closed at once");
    assert_eq!(code, Some(1009), "{texts:?}");
    assert!(
        texts.iter().any(|t| t.contains("message_too_big")),
        "{texts:?}"
    );
    assert!(t.elapsed() < Duration::from_secs(2));

    // Fragments, each small, adding up to more than the limit.
    let mut c = ws_raw(s.port).await;
    let chunk = vec![b'a'; 32 * 1024];
    let mut closed = None;
    for i in 0..8 {
        let opcode = if i == 0 { 0x1 } else { 0x0 };
        let mut frame = frame_header(false, opcode, chunk.len() as u64);
        frame.extend_from_slice(&chunk);
        if c.write_all(&frame).await.is_err() {
            break;
        }
        if (i + 1) * chunk.len() > MAX_MESSAGE_BYTES + 1024 {
            closed = tokio::time::timeout(Duration::from_secs(5), read_until_close(&mut c))
                .await
                .ok();
            break;
        }
    }
    let (code, texts) = closed.expect("closed after the limit");
    assert_eq!(code, Some(1009), "{texts:?}");

    // After join: a message over the limit closes that socket only.
    let room = s.create_room(r#"{"name": "Frames"}"#);
    let token = room["invite_url"]
        .as_str()
        .and_then(|u| u.split("#t=").nth(1))
        .expect("token")
        .to_owned();
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let url = s.base.replace("http://", "ws://") + "/ws";
    let mut joined = Vec::new();
    for name in ["Big", "Small"] {
        let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .expect("connect");
        let join = serde_json::json!({"type": "join", "token": token, "display_name": name});
        ws.send(Message::Text(join.to_string()))
            .await
            .expect("join");
        loop {
            let m = tokio::time::timeout(Duration::from_secs(5), ws.next())
                .await
                .expect("joined in time");
            if let Some(Ok(Message::Text(t))) = m
                && t.contains("\"joined\"")
            {
                break;
            }
        }
        joined.push(ws);
    }
    let mut small = joined.pop().expect("small");
    let mut big = joined.pop().expect("big");
    let _ = big
        .send(Message::Text("x".repeat(MAX_MESSAGE_BYTES + 2048)))
        .await;
    // The server refuses from the frame header and closes while this client
    // may still be sending: the error and the close frame can be lost to a
    // reset (the raw-socket cases above check them deterministically). What
    // must hold: this socket ends, soon, and the other one is fine.
    let mut close_code = None;
    let mut saw_error = false;
    let mut ended = false;
    while let Ok(next) = tokio::time::timeout(Duration::from_secs(5), big.next()).await {
        match next {
            Some(Ok(Message::Text(t))) => saw_error |= t.contains("message_too_big"),
            Some(Ok(Message::Close(f))) => {
                close_code = f.map(|f| u16::from(f.code));
                ended = true;
                break;
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => {
                ended = true;
                break;
            }
        }
    }
    assert!(ended, "the oversized socket was not closed within 5 s");
    if let Some(code) = close_code {
        assert_eq!(code, 1009);
    }
    eprintln!("oversized message after join: error seen {saw_error}, close code {close_code:?}");
    small
        .send(Message::Text(r#"{"type":"ping"}"#.into()))
        .await
        .expect("the other socket is fine");
    let mut pong = false;
    while let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_secs(5), small.next()).await {
        if let Message::Text(t) = m
            && t.contains("\"pong\"")
        {
            pong = true;
            break;
        }
    }
    assert!(pong);
}

// ------------------------------------------------------------ rate limits

/// Sends `n` requests from `from`; returns their answers.
async fn burst(from: &str, port: u16, n: u32, req: &[u8]) -> Vec<Raw> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(raw_from(from, port, req).await);
    }
    out
}

type Counts = std::collections::BTreeMap<u16, usize>;

fn statuses(answers: &[Raw]) -> Counts {
    let mut m = Counts::new();
    for a in answers {
        *m.entry(a.status).or_insert(0) += 1;
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bursts_from_one_address_are_rate_limited() {
    let s = Server::start();
    let port = s.port;
    let sdp = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n";
    let sdp_type = [("Content-Type", "application/sdp")];

    // WHEP offers (an unknown broadcast: 404 until the limit).
    let whep = request("POST", "/whep/b_AbCdEf123456", &sdp_type, sdp);
    let n = ratelimit::WHEP.burst + 40;
    let answers = burst(LOCAL, port, n, &whep).await;
    let counts = statuses(&answers);
    assert!(counts.get(&429).copied().unwrap_or(0) >= 10, "{counts:?}");
    assert!(
        counts.get(&404).copied().unwrap_or(0) >= ratelimit::WHEP.burst as usize - 5,
        "{counts:?}"
    );
    assert_rate_limited(answers.last().expect("answers"));
    let other = raw_from(OTHER, port, &whep).await;
    assert_eq!(other.status, 404, "another address is served: {other:?}");

    // WHIP offers with a wrong token (401 until the limit).
    let whip = request(
        "POST",
        "/whip/r_AbCdEf123456",
        &[
            ("Content-Type", "application/sdp"),
            ("Authorization", "Bearer guess"),
        ],
        sdp,
    );
    let answers = burst(LOCAL, port, ratelimit::WHIP.burst + 5, &whip).await;
    assert_rate_limited(answers.last().expect("answers"));
    assert!(
        statuses(&answers).contains_key(&401),
        "{:?}",
        statuses(&answers)
    );
    assert_ne!(raw_from(OTHER, port, &whip).await.status, 429);

    // Signaling connections (each would be a join).
    let upgrade = request(
        "GET",
        "/ws",
        &[
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("Sec-WebSocket-Version", "13"),
        ],
        "",
    );
    let mut upgraded = 0;
    let mut limited = None;
    for _ in 0..ratelimit::SIGNALING.burst + 40 {
        let mut c = connect_from(LOCAL, port).await;
        c.write_all(&upgrade).await.expect("write");
        let mut buf = vec![0u8; 1024];
        let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or(0);
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        if text.starts_with("HTTP/1.1 101") {
            upgraded += 1;
        } else if text.starts_with("HTTP/1.1 429") {
            limited = Some(text);
        }
    }
    assert!(
        upgraded >= ratelimit::SIGNALING.burst as usize - 5,
        "{upgraded}"
    );
    let limited = limited.expect("a 429 for the signaling burst");
    assert!(
        limited.to_ascii_lowercase().contains("retry-after:"),
        "{limited}"
    );
    assert!(limited.contains("rate_limited"), "{limited}");
    let mut c = connect_from(OTHER, port).await;
    c.write_all(&upgrade).await.expect("write");
    let mut buf = vec![0u8; 64];
    let n = c.read(&mut buf).await.expect("read");
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 101"),
        "another address still joins"
    );

    // Calls without a valid admin token (guessing it): 401, then 429.
    let guess = request(
        "GET",
        "/api/v1/rooms",
        &[("Authorization", "Bearer guess")],
        "",
    );
    let answers = burst(
        LOCAL,
        port,
        ratelimit::WITHOUT_ADMIN_TOKEN.burst + 5,
        &guess,
    )
    .await;
    assert_rate_limited(answers.last().expect("answers"));
    assert_eq!(raw_from(OTHER, port, &guess).await.status, 401);
    // The admin token is never limited, even from the limited address.
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let create = request(
        "POST",
        "/api/v1/rooms",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        r#"{"name": "Admin burst"}"#,
    );
    let answers = burst(LOCAL, port, 150, &create).await;
    assert_eq!(
        statuses(&answers),
        Counts::from([(201, 150)]),
        "the admin is exempt"
    );
    let list = raw_from(
        LOCAL,
        port,
        &request("GET", "/api/v1/rooms", &[("Authorization", &auth)], ""),
    )
    .await;
    assert_eq!(list.status, 200);
    // Public reads are not limited.
    let answers = burst(LOCAL, port, 150, &request("GET", "/healthz", &[], "")).await;
    assert_eq!(statuses(&answers), Counts::from([(200, 150)]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_can_be_turned_off_for_load_tests() {
    let s = Server::start_with(&["--rate-limit", "false"]);
    let whep = request(
        "POST",
        "/whep/b_AbCdEf123456",
        &[("Content-Type", "application/sdp")],
        "v=0\r\n",
    );
    let answers = burst(LOCAL, s.port, ratelimit::WHEP.burst + 20, &whep).await;
    assert_eq!(
        statuses(&answers),
        Counts::from([(404, ratelimit::WHEP.burst as usize + 20)])
    );
}
