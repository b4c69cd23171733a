//! WHEP egress: a broadcast's encoded RTP, sent to every viewer from one
//! thread, with a light WebRTC session per viewer instead of a webrtcbin.
//!
//! A webrtcbin per viewer costs ~8 elements, a session lock and 3–4 threads,
//! and every packet crossed all of them once per viewer (75–85 viewers per
//! core). Here each viewer is a sans-IO `str0m` session (ICE-lite, DTLS-SRTP,
//! RTCP, NACK answered from its send buffer) driven by the broadcast's egress
//! thread:
//!
//! ```text
//! RTP tee ─ appsink ─┐  (payload copied once, shared by every viewer)
//! RTP tee ─ appsink ─┼─▶ bounded queue ─▶ egress thread ─▶ per viewer: SRTP ─▶ sendto
//! UDP socket reader ─┘                         (STUN, DTLS, RTCP in)
//! ```
//!
//! One UDP socket per local address serves every viewer of the broadcast;
//! datagrams are told apart by source address, or by the ICE credentials of
//! a viewer's first STUN request. The streaming threads only copy the
//! payload and queue it (a full queue drops the packet and counts it).
//!
//! Every viewer's sequence numbers start with a rollover counter of 0 (SRTP
//! receivers assume it) and follow the source's, extended past 65535.

use super::MediaError;
use super::rtp::TrackKind;
use super::stats::{self, LossTracker};
use crate::config::IceSettings;
use crate::ids::ViewerId;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use str0m::change::SdpOffer;
use str0m::config::DtlsCert;
use str0m::media::{Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{RtpWrite, SeqNo};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc, RtcConfig};

/// Packets and datagrams queued to the egress thread at most; more are
/// dropped (viewer changes are always queued).
const QUEUE: usize = 4096;
/// A viewer that has not connected by then is dropped.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// How often socket readers look whether the egress stopped.
const READ_TIMEOUT: Duration = Duration::from_millis(250);
/// Keyframe requests to the source are passed on at most this often.
const KEYFRAME_GAP: Duration = Duration::from_millis(500);
/// The egress thread wakes at least this often.
const TICK: Duration = Duration::from_millis(100);
/// Receiver-report interval asked of str0m for loss figures.
const STATS_INTERVAL: Duration = Duration::from_secs(2);
/// Packets sent to the viewers in one pass at most.
const BATCH: usize = 64;
/// Sent video packets kept per viewer to answer NACKs (~4 s at 1.2 Mbit/s).
const SEND_BUFFER_VIDEO: usize = 1000;

/// One RTP packet of the source, parsed once.
#[derive(Debug, Clone)]
pub struct Packet {
    seq: u16,
    timestamp: u32,
    marker: bool,
    payload: Arc<[u8]>,
}

/// Reads an RTP packet: the header fields str0m rewrites, and the payload
/// without CSRCs, header extension and padding. `None`: not RTP, or empty.
pub fn parse_rtp(data: &[u8]) -> Option<Packet> {
    if data.len() < 12 || data[0] >> 6 != 2 {
        return None;
    }
    let csrcs = usize::from(data[0] & 0x0f);
    let mut start = 12 + 4 * csrcs;
    if data[0] & 0x10 != 0 {
        let ext = data.get(start + 2..start + 4)?;
        start += 4 + 4 * usize::from(u16::from_be_bytes([ext[0], ext[1]]));
    }
    let mut end = data.len();
    if data[0] & 0x20 != 0 {
        end = end.checked_sub(usize::from(*data.last()?))?;
    }
    if start >= end {
        return None;
    }
    Some(Packet {
        seq: u16::from_be_bytes([data[2], data[3]]),
        timestamp: u32::from_be_bytes([data[4], data[5], data[6], data[7]]),
        marker: data[1] & 0x80 != 0,
        payload: data[start..end].into(),
    })
}

/// Extends 16-bit sequence numbers past their wrap (RFC 3550 A.1 style:
/// a jump back of more than half the range is a wrap).
#[derive(Debug, Default, Clone, Copy)]
struct Extender {
    last: Option<u64>,
}

impl Extender {
    fn extend(&mut self, seq: u16) -> u64 {
        let Some(last) = self.last else {
            // Start one rollover up, so a late packet from before still fits.
            let ext = (1 << 16) | u64::from(seq);
            self.last = Some(ext);
            return ext;
        };
        let roc = last >> 16;
        let candidates = [roc.saturating_sub(1), roc, roc + 1].map(|r| (r << 16) | u64::from(seq));
        let ext = candidates
            .into_iter()
            .min_by_key(|c| c.abs_diff(last))
            .unwrap_or(last);
        self.last = Some(ext.max(last));
        ext
    }
}

/// What the egress tells its broadcast.
pub struct Hooks {
    /// A viewer asked for a keyframe (or just connected).
    pub keyframe: Box<dyn Fn() + Send>,
    /// A viewer left by itself (closed, timed out, failed).
    pub gone: Box<dyn Fn(ViewerId) + Send>,
}

enum Msg {
    Rtp(TrackKind, Packet),
    Net {
        socket: usize,
        source: SocketAddr,
        data: Vec<u8>,
    },
    Add(ViewerId, Box<Viewer>),
    Remove(ViewerId),
    Stop,
}

/// The egress thread's queue: unbounded for viewer changes, bounded for
/// packets and datagrams (counted in `pending`, dropped beyond `QUEUE`).
#[derive(Clone)]
struct Queue {
    tx: Sender<Msg>,
    pending: Arc<AtomicUsize>,
    dropped: Arc<AtomicU64>,
}

impl Queue {
    /// Queues a packet or datagram unless `QUEUE` are waiting; `false`
    /// when the egress stopped.
    fn offer(&self, msg: Msg) -> bool {
        if self.pending.fetch_add(1, Ordering::AcqRel) >= QUEUE {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            let n = self.dropped.fetch_add(1, Ordering::Relaxed);
            if n.is_power_of_two() {
                tracing::warn!(dropped = n + 1, "WHEP egress queue full: packets dropped");
            }
            return true;
        }
        if self.tx.send(msg).is_err() {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        true
    }

    /// Queues a viewer change (never dropped).
    fn control(&self, msg: Msg) -> bool {
        self.tx.send(msg).is_ok()
    }
}

/// Where the appsinks put the broadcast's packets.
#[derive(Clone)]
pub struct Feed {
    queue: Queue,
}

impl Feed {
    /// Queues one RTP packet of `kind` for every viewer (never blocks).
    pub fn push(&self, kind: TrackKind, rtp: &[u8]) {
        if let Some(packet) = parse_rtp(rtp) {
            self.queue.offer(Msg::Rtp(kind, packet));
        }
    }
}

/// The WHEP egress of one broadcast; stops its threads when dropped.
pub struct Egress {
    queue: Queue,
    stop: Arc<AtomicBool>,
    /// Host candidates given to viewers.
    advertised: Vec<SocketAddr>,
    cert: DtlsCert,
}

/// One viewer's line: its media id, our codec's payload type in it, and
/// the rollover counter its sequence numbers are rebased by.
#[derive(Debug, Clone)]
struct Line {
    mid: Mid,
    pt: Pt,
    base: Option<u64>,
}

struct Viewer {
    rtc: Rtc,
    video: Option<Line>,
    audio: Option<Line>,
    added: Instant,
    connected: bool,
    /// When str0m wants time next.
    timeout: Instant,
    loss: LossTracker,
}

impl Viewer {
    /// A session for a viewer's `offer`, and our answer to it.
    fn answer(
        offer: &str,
        cert: &DtlsCert,
        advertised: &[SocketAddr],
    ) -> Result<(Self, String), MediaError> {
        let parsed =
            SdpOffer::from_sdp_string(offer).map_err(|e| MediaError::BadSdp(e.to_string()))?;
        // Full ICE, not ICE-lite: a lite agent counts a viewer alive only
        // while it sends binding requests, which libnice-based clients
        // (GStreamer's whepsrc, webrtcbin) do not do once connected; a full
        // agent checks the pair itself.
        let mut config = RtcConfig::new()
            .set_rtp_mode(true)
            .set_dtls_cert(cert.clone())
            .set_stats_interval(Some(STATS_INTERVAL))
            .set_send_buffer_video(SEND_BUFFER_VIDEO)
            .clear_codecs()
            .enable_opus(true, false);
        // H.264 packetization-mode 1 only; the profiles browsers offer.
        for (pt, rtx, profile) in [(108, 109, 0x42e01f), (127, 121, 0x42001f)] {
            config
                .codec_config()
                .add_h264(pt.into(), Some(rtx.into()), true, profile);
        }
        let now = Instant::now();
        let mut rtc = config.build(now);
        for a in advertised {
            let c = Candidate::host(*a, "udp")
                .map_err(|e| MediaError::Pipeline(format!("host candidate {a}: {e}")))?;
            rtc.add_local_candidate(c);
        }
        let answer = rtc
            .sdp_api()
            .accept_offer(parsed)
            .map_err(|e| MediaError::BadSdp(e.to_string()))?
            .to_sdp_string();
        let (video, audio) = lines_of(&answer)?;
        let viewer = Viewer {
            rtc,
            video,
            audio,
            added: now,
            connected: false,
            timeout: now,
            loss: LossTracker::default(),
        };
        Ok((viewer, answer))
    }

    /// Queues packet `p` (extended sequence number `ext`) if the viewer
    /// takes its kind; returns whether it did.
    fn write(&mut self, kind: TrackKind, p: &Packet, ext: u64, now: Instant) -> bool {
        let line = match kind {
            TrackKind::Video => self.video.as_mut(),
            TrackKind::Audio => self.audio.as_mut(),
        };
        let Some(line) = line else { return false };
        let base = *line.base.get_or_insert(ext & !0xffff);
        let Some(seq) = ext.checked_sub(base) else {
            return false;
        };
        let mut api = self.rtc.direct_api();
        let Some(tx) = api.stream_tx_by_mid(line.mid, None) else {
            return false;
        };
        tx.write_rtp(
            RtpWrite::new(
                line.pt,
                SeqNo::from(seq),
                p.timestamp,
                now,
                p.payload.clone(),
            )
            .marker(p.marker)
            .nackable(kind == TrackKind::Video),
        );
        stats::sent(kind).count(p.payload.len() + 12);
        true
    }
}

/// HMAC-SHA1 (SRTP and STUN authentication) in Rust. OpenSSL 3's HMAC, as
/// str0m's OpenSSL provider calls it, builds a key object and looks the
/// digest up in its provider registry on every call, once per packet and
/// viewer: ~10 % of the egress's CPU in `perf`.
#[derive(Debug)]
struct Sha1Hmac;

impl str0m::crypto::Sha1HmacProvider for Sha1Hmac {
    fn sha1_hmac(&self, key: &[u8], payloads: &[&[u8]]) -> [u8; 20] {
        use hmac::Mac;
        // HMAC takes keys of any length: this never fails.
        let Ok(mut mac) = hmac::Hmac::<sha1::Sha1>::new_from_slice(key) else {
            return [0; 20];
        };
        for p in payloads {
            mac.update(p);
        }
        mac.finalize().into_bytes().into()
    }
}

static SHA1_HMAC: Sha1Hmac = Sha1Hmac;

fn install_crypto() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let mut provider = str0m::crypto::from_feature_flags();
        provider.sha1_hmac_provider = &SHA1_HMAC;
        provider.install_process_default();
    });
}

/// Addresses to serve on: the configured ones, else every non-loopback
/// address of the machine's interfaces, else loopback.
fn local_ips(ice: &IceSettings) -> Vec<IpAddr> {
    if !ice.local_ips.is_empty() {
        return ice.local_ips.clone();
    }
    let mut out = interface_ips();
    if out.is_empty() {
        out.push(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    out
}

/// IPv4 and global IPv6 addresses of the interfaces that are up.
fn interface_ips() -> Vec<IpAddr> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return out;
    }
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        let up = ifa.ifa_flags & (libc::IFF_UP as libc::c_uint) != 0;
        if ifa.ifa_addr.is_null() || !up {
            continue;
        }
        // SAFETY: ifa_addr points at a sockaddr whose family says its type.
        let ip = unsafe {
            match i32::from((*ifa.ifa_addr).sa_family) {
                libc::AF_INET => {
                    let a = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                    IpAddr::from(u32::from_be(a.sin_addr.s_addr).to_be_bytes())
                }
                libc::AF_INET6 => {
                    let a = &*(ifa.ifa_addr as *const libc::sockaddr_in6);
                    IpAddr::from(a.sin6_addr.s6_addr)
                }
                _ => continue,
            }
        };
        let link_local = matches!(ip, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80);
        if !ip.is_loopback() && !link_local && !out.contains(&ip) {
            out.push(ip);
        }
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    out
}

/// A UDP socket on `ip`, in the configured port range when there is one.
fn bind(ip: IpAddr, range: Option<(u16, u16)>) -> Result<UdpSocket, MediaError> {
    let err = |e: std::io::Error| MediaError::Pipeline(format!("WHEP egress socket on {ip}: {e}"));
    match range {
        None => UdpSocket::bind((ip, 0)).map_err(err),
        Some((low, high)) => {
            let mut last = None;
            for port in low..=high {
                match UdpSocket::bind((ip, port)) {
                    Ok(s) => return Ok(s),
                    Err(e) => last = Some(e),
                }
            }
            Err(err(last.unwrap_or_else(|| {
                std::io::Error::other("empty port range")
            })))
        }
    }
}

impl Egress {
    /// Opens the sockets and starts the egress thread of broadcast `name`.
    pub fn start(name: &str, ice: &IceSettings, hooks: Hooks) -> Result<Self, MediaError> {
        install_crypto();
        let cert = str0m::crypto::from_feature_flags()
            .dtls_provider
            .generate_certificate()
            .ok_or_else(|| MediaError::Pipeline("cannot make a DTLS certificate".into()))?;
        let mut sockets = Vec::new();
        let mut advertised = Vec::new();
        for ip in local_ips(ice) {
            let socket = bind(ip, ice.port_range)?;
            let local = socket
                .local_addr()
                .map_err(|e| MediaError::Pipeline(format!("WHEP egress socket: {e}")))?;
            let public = ice
                .public_ip
                .filter(|p| p.is_ipv4() == ip.is_ipv4())
                .map_or(local, |p| SocketAddr::new(p, local.port()));
            socket
                .set_read_timeout(Some(READ_TIMEOUT))
                .map_err(|e| MediaError::Pipeline(format!("WHEP egress socket: {e}")))?;
            sockets.push(Arc::new(socket));
            advertised.push(public);
        }
        let (tx, rx) = mpsc::channel();
        let queue = Queue {
            tx,
            pending: Arc::default(),
            dropped: Arc::default(),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let readers: Vec<(usize, Arc<UdpSocket>)> = sockets.iter().cloned().enumerate().collect();
        let worker = Worker {
            rx,
            pending: queue.pending.clone(),
            sockets,
            advertised: advertised.clone(),
            viewers: HashMap::new(),
            by_source: HashMap::new(),
            seqs: [Extender::default(); 2],
            hooks,
            last_keyframe: None,
            earliest: Instant::now(),
        };
        let span = tracing::info_span!("whep_egress", broadcast = %name);
        std::thread::Builder::new()
            .name("whep-egress".into())
            .spawn(move || span.in_scope(|| worker.run()))
            .map_err(|e| MediaError::Pipeline(format!("WHEP egress thread: {e}")))?;
        let egress = Self {
            queue,
            stop,
            advertised,
            cert,
        };
        // On an error the egress is dropped: the thread stops, and so do
        // the readers started so far.
        for (i, socket) in readers {
            let (queue, stop) = (egress.queue.clone(), egress.stop.clone());
            std::thread::Builder::new()
                .name(format!("whep-rx-{i}"))
                .spawn(move || read_socket(i, &socket, &queue, &stop))
                .map_err(|e| MediaError::Pipeline(format!("WHEP egress thread: {e}")))?;
        }
        tracing::debug!(broadcast = %name, advertised = ?egress.advertised, "WHEP egress started");
        Ok(egress)
    }

    /// Where the broadcast's RTP goes.
    pub fn feed(&self) -> Feed {
        Feed {
            queue: self.queue.clone(),
        }
    }

    /// Answers viewer `id`'s offer (no trickle: every candidate is in the
    /// answer) and starts sending once it connects.
    pub fn add_viewer(&self, id: &ViewerId, offer: &str) -> Result<String, MediaError> {
        let (viewer, answer) = Viewer::answer(offer, &self.cert, &self.advertised)?;
        if !self.queue.control(Msg::Add(id.clone(), Box::new(viewer))) {
            return Err(MediaError::Pipeline(
                "the broadcast's WHEP egress stopped".into(),
            ));
        }
        Ok(answer)
    }

    /// Disconnects viewer `id` (nothing when it already left).
    pub fn remove_viewer(&self, id: &ViewerId) {
        self.queue.control(Msg::Remove(id.clone()));
    }

    /// Stops the threads; viewers are disconnected.
    pub fn stop(&self) {
        if !self.stop.swap(true, Ordering::AcqRel) {
            self.queue.control(Msg::Stop);
        }
    }
}

impl Drop for Egress {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What the egress answers to a WHEP offer, without an egress (for tests
/// and fuzzing: a throwaway certificate and candidate): the answer and how
/// many m-lines it sends on (video always among them).
pub fn answer_offer(offer: &str) -> Result<(String, usize), MediaError> {
    install_crypto();
    let cert = str0m::crypto::from_feature_flags()
        .dtls_provider
        .generate_certificate()
        .ok_or_else(|| MediaError::Pipeline("cannot make a DTLS certificate".into()))?;
    let candidate = SocketAddr::from((Ipv4Addr::LOCALHOST, 9));
    let (viewer, answer) = Viewer::answer(offer, &cert, &[candidate])?;
    let lines = usize::from(viewer.video.is_some()) + usize::from(viewer.audio.is_some());
    Ok((answer, lines))
}

/// The sending lines of our answer: the video line with its H.264 payload
/// type (constrained baseline preferred) and the audio line with Opus.
fn lines_of(answer: &str) -> Result<(Option<Line>, Option<Line>), MediaError> {
    let sdp = gst_sdp::SDPMessage::parse_buffer(answer.as_bytes())
        .map_err(|e| MediaError::Negotiation(format!("our answer does not parse: {e}")))?;
    let chosen = super::whep::answered_lines(&sdp)?;
    let (mut video, mut audio) = (None, None);
    for c in chosen {
        let Some(mid) = sdp
            .media(c.index)
            .and_then(|m| m.attribute_val("mid"))
            .map(Mid::from)
        else {
            continue;
        };
        let line = Some(Line {
            mid,
            pt: c.pt.into(),
            base: None,
        });
        match c.kind {
            TrackKind::Video => video = video.or(line),
            TrackKind::Audio => audio = audio.or(line),
        }
    }
    Ok((video, audio))
}

fn read_socket(index: usize, socket: &UdpSocket, queue: &Queue, stop: &AtomicBool) {
    let mut buf = vec![0u8; 2048];
    while !stop.load(Ordering::Acquire) {
        match socket.recv_from(&mut buf) {
            Ok((n, source)) => {
                let msg = Msg::Net {
                    socket: index,
                    source,
                    data: buf[..n].to_vec(),
                };
                if !queue.offer(msg) {
                    return;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => {
                tracing::debug!("WHEP egress socket: {e}");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

struct Worker {
    rx: Receiver<Msg>,
    /// Packets and datagrams queued and not yet handled.
    pending: Arc<AtomicUsize>,
    sockets: Vec<Arc<UdpSocket>>,
    advertised: Vec<SocketAddr>,
    viewers: HashMap<ViewerId, Viewer>,
    /// Remote address → viewer, learnt from accepted datagrams.
    by_source: HashMap<SocketAddr, ViewerId>,
    seqs: [Extender; 2],
    hooks: Hooks,
    last_keyframe: Option<Instant>,
    /// No viewer wants time before this.
    earliest: Instant,
}

impl Worker {
    fn run(mut self) {
        let mut batch: Vec<(TrackKind, Packet)> = Vec::with_capacity(BATCH);
        let mut carried: Option<Msg> = None;
        loop {
            let now = Instant::now();
            let wait = self.earliest.min(now + TICK).saturating_duration_since(now);
            let next = match carried.take() {
                Some(msg) => Ok(msg),
                None => self.rx.recv_timeout(wait),
            };
            match next {
                Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => break,
                Ok(Msg::Rtp(kind, packet)) => {
                    self.pending.fetch_sub(1, Ordering::AcqRel);
                    // A frame's packets come together: they go out together,
                    // with one pass over the viewers.
                    batch.push((kind, packet));
                    while batch.len() < BATCH {
                        match self.rx.try_recv() {
                            Ok(Msg::Rtp(kind, packet)) => {
                                self.pending.fetch_sub(1, Ordering::AcqRel);
                                batch.push((kind, packet));
                            }
                            Ok(other) => {
                                carried = Some(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    self.forward(&batch);
                    batch.clear();
                }
                Ok(msg) => {
                    if matches!(msg, Msg::Net { .. }) {
                        self.pending.fetch_sub(1, Ordering::AcqRel);
                    }
                    self.handle(msg);
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
            let now = Instant::now();
            if now >= self.earliest {
                self.tick(now);
            }
        }
        for v in self.viewers.values_mut() {
            v.rtc.disconnect();
        }
        tracing::debug!(viewers = self.viewers.len(), "WHEP egress stopped");
    }

    fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Rtp(kind, packet) => self.forward(&[(kind, packet)]),
            Msg::Net {
                socket,
                source,
                data,
            } => self.receive(socket, source, &data),
            Msg::Add(id, mut viewer) => {
                let now = Instant::now();
                // Let str0m set its first timeout.
                if viewer.rtc.handle_input(Input::Timeout(now)).is_ok() {
                    self.viewers.insert(id.clone(), *viewer);
                    self.drain_one(&id);
                }
            }
            Msg::Remove(id) => {
                if let Some(mut v) = self.viewers.remove(&id) {
                    v.rtc.disconnect();
                    self.by_source.retain(|_, v| v != &id);
                }
            }
            Msg::Stop => {}
        }
    }

    /// A datagram from the network: to the viewer it belongs to.
    fn receive(&mut self, socket: usize, source: SocketAddr, data: &[u8]) {
        let Some(&destination) = self.advertised.get(socket) else {
            return;
        };
        let Ok(contents) = data.try_into() else {
            return;
        };
        let now = Instant::now();
        let input = Input::Receive(
            now,
            Receive {
                proto: Protocol::Udp,
                source,
                destination,
                contents,
            },
        );
        let id = match self.by_source.get(&source) {
            Some(id) if self.viewers.get(id).is_some_and(|v| v.rtc.accepts(&input)) => id.clone(),
            _ => {
                let Some(id) = self
                    .viewers
                    .iter()
                    .find(|(_, v)| v.rtc.accepts(&input))
                    .map(|(id, _)| id.clone())
                else {
                    return;
                };
                self.by_source.insert(source, id.clone());
                id
            }
        };
        let Some(v) = self.viewers.get_mut(&id) else {
            return;
        };
        if let Err(e) = v.rtc.handle_input(input) {
            tracing::debug!(viewer = %id, "WHEP viewer input: {e}");
            v.rtc.disconnect();
        }
        self.drain_one(&id);
    }

    /// Packets of the source to every connected viewer.
    fn forward(&mut self, batch: &[(TrackKind, Packet)]) {
        let exts: Vec<u64> = batch
            .iter()
            .map(|(kind, p)| self.seqs[usize::from(*kind == TrackKind::Video)].extend(p.seq))
            .collect();
        let now = Instant::now();
        let net = Net {
            sockets: &self.sockets,
            advertised: &self.advertised,
        };
        let mut keyframe = false;
        for (id, v) in self.viewers.iter_mut().filter(|(_, v)| v.connected) {
            let mut wrote = false;
            for ((kind, p), &ext) in batch.iter().zip(&exts) {
                wrote |= v.write(*kind, p, ext, now);
            }
            // Queued packets leave when time moves.
            if wrote && v.rtc.handle_input(Input::Timeout(now)).is_err() {
                v.rtc.disconnect();
            }
            keyframe |= drain(id, v, &net, &mut self.earliest);
        }
        if keyframe {
            self.request_keyframe();
        }
    }

    /// Gives time to the viewers that want it; drops the dead.
    fn tick(&mut self, now: Instant) {
        let net = Net {
            sockets: &self.sockets,
            advertised: &self.advertised,
        };
        let mut keyframe = false;
        for (id, v) in self.viewers.iter_mut().filter(|(_, v)| v.timeout <= now) {
            if v.rtc.handle_input(Input::Timeout(now)).is_err() {
                v.rtc.disconnect();
            }
            keyframe |= drain(id, v, &net, &mut self.earliest);
        }
        if keyframe {
            self.request_keyframe();
        }
        let gone: Vec<ViewerId> = self
            .viewers
            .iter()
            .filter(|(_, v)| {
                !v.rtc.is_alive() || (!v.connected && now.duration_since(v.added) > CONNECT_TIMEOUT)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            if let Some(v) = self.viewers.remove(&id) {
                tracing::debug!(viewer = %id, connected = v.connected, "WHEP viewer gone");
            }
            self.by_source.retain(|_, v| v != &id);
            (self.hooks.gone)(id);
        }
        self.earliest = self
            .viewers
            .values()
            .map(|v| v.timeout)
            .min()
            .unwrap_or(now + TICK)
            .max(now);
    }

    /// Sends what viewer `id` has to send and takes its events.
    fn drain_one(&mut self, id: &ViewerId) {
        let net = Net {
            sockets: &self.sockets,
            advertised: &self.advertised,
        };
        let Some(v) = self.viewers.get_mut(id) else {
            return;
        };
        if drain(id, v, &net, &mut self.earliest) {
            self.request_keyframe();
        }
    }

    /// Asks the source for a keyframe, at most once per `KEYFRAME_GAP`.
    fn request_keyframe(&mut self) {
        let now = Instant::now();
        if self
            .last_keyframe
            .is_none_or(|t| now.duration_since(t) >= KEYFRAME_GAP)
        {
            self.last_keyframe = Some(now);
            (self.hooks.keyframe)();
        }
    }
}

/// The sockets a viewer's datagrams leave from.
struct Net<'a> {
    sockets: &'a [Arc<UdpSocket>],
    advertised: &'a [SocketAddr],
}

/// Sends what viewer `id` has to send and takes its events; returns whether
/// it asked for a keyframe (or just connected).
fn drain(id: &ViewerId, v: &mut Viewer, net: &Net<'_>, earliest: &mut Instant) -> bool {
    let mut keyframe = false;
    loop {
        match v.rtc.poll_output() {
            Ok(Output::Transmit(t)) => {
                let socket = match net.advertised {
                    [_] => net.sockets.first(),
                    all => all
                        .iter()
                        .position(|a| *a == t.source)
                        .and_then(|i| net.sockets.get(i)),
                };
                if let Some(s) = socket {
                    let _ = s.send_to(&t.contents, t.destination);
                }
            }
            Ok(Output::Timeout(t)) => {
                v.timeout = t;
                *earliest = (*earliest).min(t);
                break;
            }
            Ok(Output::Event(e)) => match e {
                Event::Connected => {
                    v.connected = true;
                    keyframe = true;
                    tracing::debug!(viewer = %id, "WHEP viewer connected");
                }
                Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                    v.rtc.disconnect();
                }
                Event::KeyframeRequest(_) => keyframe = true,
                Event::MediaEgressStats(s) => {
                    if let Some(r) = s.remote {
                        let lost = i64::try_from(r.packets_lost).unwrap_or(i64::MAX);
                        v.loss.count_sent_loss(&s.mid.to_string(), lost);
                    }
                }
                _ => {}
            },
            Err(e) => {
                tracing::debug!(viewer = %id, "WHEP viewer: {e}");
                v.rtc.disconnect();
                break;
            }
        }
    }
    keyframe
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rtp(seq: u16, flags: u8, body: &[u8]) -> Vec<u8> {
        let mut p = vec![0x80 | flags, 0x80 | 96];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&90_000u32.to_be_bytes());
        p.extend_from_slice(&7u32.to_be_bytes());
        p.extend_from_slice(body);
        p
    }

    #[test]
    fn rtp_payload_without_extension_csrcs_and_padding() {
        let p = parse_rtp(&rtp(5, 0, &[1, 2, 3])).unwrap();
        assert_eq!((p.seq, p.timestamp, p.marker), (5, 90_000, true));
        assert_eq!(&p.payload[..], &[1, 2, 3]);
        // One-word extension, then payload, then 2 bytes of padding.
        let with_ext = rtp(6, 0x10 | 0x20, &[0xbe, 0xde, 0, 1, 9, 9, 9, 9, 4, 5, 0, 2]);
        assert_eq!(&parse_rtp(&with_ext).unwrap().payload[..], &[4, 5]);
        // One CSRC.
        assert_eq!(
            &parse_rtp(&rtp(7, 1, &[0, 0, 0, 1, 8])).unwrap().payload[..],
            &[8]
        );
        // Not RTP, truncated extension, padding longer than the packet, empty.
        assert!(parse_rtp(&[0u8; 12]).is_none());
        assert!(parse_rtp(&rtp(8, 0x10, &[0xbe])).is_none());
        assert!(parse_rtp(&rtp(9, 0x20, &[1, 200])).is_none());
        assert!(parse_rtp(&rtp(10, 0, &[])).is_none());
    }

    #[test]
    fn hmac_sha1_matches_rfc_2202() {
        use str0m::crypto::Sha1HmacProvider;
        // RFC 2202 test case 2, the data given in two pieces.
        let tag = Sha1Hmac.sha1_hmac(b"Jefe", &[b"what do ya want ", b"for nothing?"]);
        let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79");
    }

    #[test]
    fn sequence_numbers_extend_past_the_wrap() {
        let mut e = Extender::default();
        let first = e.extend(65_534);
        assert_eq!(first, (1 << 16) + 65_534);
        assert_eq!(e.extend(65_535), first + 1);
        assert_eq!(e.extend(0), first + 2);
        // A late packet from before the wrap keeps its rollover.
        assert_eq!(e.extend(65_535), first + 1);
        assert_eq!(e.extend(1), first + 3);
        // A late first packet still fits above zero.
        let mut e = Extender::default();
        let a = e.extend(3);
        assert_eq!(e.extend(65_530), a - 9);
    }

    #[test]
    fn an_answer_gives_the_lines_we_send_on() {
        gst::init().expect("gst init");
        let answer = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n\
            m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendonly\r\n\
            a=rtpmap:111 opus/48000/2\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 102 103\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\na=sendonly\r\n\
            a=rtpmap:102 H264/90000\r\na=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n\
            a=rtpmap:103 rtx/90000\r\na=fmtp:103 apt=102\r\n";
        let (video, audio) = lines_of(answer).unwrap();
        let (video, audio) = (video.unwrap(), audio.unwrap());
        assert_eq!((video.mid.to_string(), *video.pt), ("1".to_owned(), 102));
        assert_eq!((audio.mid.to_string(), *audio.pt), ("0".to_owned(), 111));
        let no_video = answer.split("m=video").next().unwrap();
        assert!(matches!(lines_of(no_video), Err(MediaError::BadSdp(_))));
    }
}
