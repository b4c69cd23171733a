//! WHIP and WHEP clients on webrtcbin, over plain HTTP (draft-ietf-wish-whip,
//! draft-ietf-wish-whep): no trickle ICE, the offer is posted once its
//! candidates are gathered, the answer comes back in the 201.
//!
//! [`WhepViewer`] watches a broadcast and counts what it decodes (or, made
//! with [`WhepViewer::connect_counting`], only counts the RTP packets it
//! receives, for load); [`WhipPublisher`] publishes a test picture and tone
//! into a room. Both are cheap enough to run many on a small machine (one
//! pipeline each, decoded pictures go to a `fakesink`, not converted or
//! copied).

use super::counting::StreamCounter;
pub use super::source::VideoCodec;
use crate::config::IceSettings;
use crate::media::{ice, peer as sdp_ops};
use anyhow::{Context, anyhow, bail};
use gst::prelude::*;
use gst_webrtc::{
    WebRTCICEGatheringState, WebRTCRTPTransceiver, WebRTCRTPTransceiverDirection, WebRTCSDPType,
    WebRTCSessionDescription,
};
use serde::Serialize;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Longest wait for ICE gathering before the offer is posted anyway.
const GATHER_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait for an HTTP answer.
const HTTP_TIMEOUT: Duration = Duration::from_secs(15);

/// The server answered something other than what the protocol expects
/// (`anyhow::Error::downcast_ref::<HttpStatus>()` gives it back to tests).
#[derive(Debug, thiserror::Error)]
#[error("{method} {url}: HTTP {status}: {body}")]
pub struct HttpStatus {
    /// Method of the request.
    pub method: &'static str,
    /// URL of the request.
    pub url: String,
    /// Status answered.
    pub status: u16,
    /// Body answered (truncated).
    pub body: String,
}

/// The status an error carries, when it is an [`HttpStatus`].
pub fn status_of(e: &anyhow::Error) -> Option<u16> {
    e.downcast_ref::<HttpStatus>().map(|s| s.status)
}

/// What a WHIP/WHEP endpoint answered to an offer.
#[derive(Debug, Clone)]
pub struct Created {
    /// The session's resource (`Location`, made absolute).
    pub resource_url: String,
    /// The answer SDP.
    pub answer: String,
    /// `Content-Type` of the answer.
    pub content_type: String,
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(HTTP_TIMEOUT)
        .redirects(0)
        .build()
}

fn bearer(req: ureq::Request, token: Option<&str>) -> ureq::Request {
    match token {
        Some(t) => req.set("Authorization", &format!("Bearer {t}")),
        None => req,
    }
}

fn status_error(method: &'static str, url: &str, status: u16, resp: ureq::Response) -> HttpStatus {
    let mut body = resp.into_string().unwrap_or_default();
    body.truncate(500);
    HttpStatus {
        method,
        url: url.to_owned(),
        status,
        body,
    }
}

/// POSTs an SDP offer (blocking); expects 201 with a `Location` and an
/// `application/sdp` answer. A relative `Location` is resolved against `url`.
pub fn post_offer(url: &str, token: Option<&str>, offer: &str) -> anyhow::Result<Created> {
    let req = bearer(agent().post(url), token).set("Content-Type", "application/sdp");
    let resp = match req.send_string(offer) {
        Ok(r) => r,
        Err(ureq::Error::Status(code, r)) => return Err(status_error("POST", url, code, r).into()),
        Err(e) => return Err(anyhow!("POST {url}: {e}")),
    };
    let status = resp.status();
    let location = resp.header("Location").map(str::to_owned);
    let content_type = resp.content_type().to_owned();
    if status != 201 {
        return Err(status_error("POST", url, status, resp).into());
    }
    let location = location.ok_or_else(|| anyhow!("POST {url}: 201 without Location"))?;
    let resource_url = url::Url::parse(url)
        .and_then(|base| base.join(&location))
        .with_context(|| format!("Location {location:?}"))?
        .to_string();
    let answer = resp.into_string().context("reading the answer")?;
    if content_type != "application/sdp" {
        bail!("POST {url}: answer has Content-Type {content_type:?}, not application/sdp");
    }
    Ok(Created {
        resource_url,
        answer,
        content_type,
    })
}

/// DELETEs a WHIP/WHEP resource (blocking); returns the status (any status,
/// errors only when no answer came at all).
pub fn delete_resource(url: &str, token: Option<&str>) -> anyhow::Result<u16> {
    match bearer(agent().delete(url), token).call() {
        Ok(r) => Ok(r.status()),
        Err(ureq::Error::Status(code, _)) => Ok(code),
        Err(e) => Err(anyhow!("DELETE {url}: {e}")),
    }
}

/// Adds `candidates` (m-line index, `candidate:…`) to the m-sections of `sdp`
/// that have none of their own.
pub fn with_candidates(sdp: &str, candidates: &[(u32, String)]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut section: Option<u32> = None;
    let mut has_own = false;
    let flush = |out: &mut Vec<String>, section: Option<u32>, has_own: bool| {
        if let Some(m) = section
            && !has_own
        {
            for (_, c) in candidates.iter().filter(|(i, _)| *i == m) {
                let c = c.strip_prefix("a=").unwrap_or(c);
                out.push(format!("a={c}"));
            }
        }
    };
    for line in sdp.lines().filter(|l| !l.is_empty()) {
        if line.starts_with("m=") {
            flush(&mut out, section, has_own);
            section = Some(section.map_or(0, |s| s + 1));
            has_own = false;
        } else if line.starts_with("a=candidate:") {
            has_own = true;
        }
        out.push(line.to_owned());
    }
    flush(&mut out, section, has_own);
    let mut text = out.join("\r\n");
    text.push_str("\r\n");
    text
}

/// A webrtcbin in its own pipeline, with the ICE settings of the tests and
/// what it gathers.
struct Endpoint {
    pipeline: gst::Pipeline,
    webrtcbin: gst::Element,
    gathered: tokio::sync::watch::Receiver<bool>,
    candidates: Arc<Mutex<Vec<(u32, String)>>>,
    errors: Arc<Mutex<Vec<String>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Endpoint {
    fn new(name: &str, ice_local_ips: &[IpAddr]) -> anyhow::Result<Self> {
        gst::init()?;
        let pipeline = gst::Pipeline::with_name(name);
        let webrtcbin = gst::ElementFactory::make("webrtcbin")
            .name(format!("{name}_webrtc"))
            .build()
            .context("webrtcbin")?;
        // max-bundle, UDP only, host candidates on exactly these addresses.
        ice::configure(
            &webrtcbin,
            &IceSettings {
                local_ips: ice_local_ips.to_vec(),
                ..Default::default()
            },
        );
        let (tx, gathered) = tokio::sync::watch::channel(false);
        webrtcbin.connect_notify(Some("ice-gathering-state"), move |bin, _| {
            let state = bin.property::<WebRTCICEGatheringState>("ice-gathering-state");
            if state == WebRTCICEGatheringState::Complete {
                tx.send_replace(true);
            }
        });
        let candidates: Arc<Mutex<Vec<(u32, String)>>> = Arc::default();
        {
            let candidates = candidates.clone();
            webrtcbin.connect("on-ice-candidate", false, move |values| {
                let mline = values.get(1).and_then(|v| v.get::<u32>().ok())?;
                let candidate = values.get(2).and_then(|v| v.get::<String>().ok())?;
                lock(&candidates).push((mline, candidate));
                None
            });
        }
        let errors: Arc<Mutex<Vec<String>>> = Arc::default();
        {
            let errors = errors.clone();
            let bus = pipeline
                .bus()
                .ok_or_else(|| anyhow!("pipeline without bus"))?;
            bus.set_sync_handler(move |_, msg| {
                if let gst::MessageView::Error(e) = msg.view() {
                    let mut errors = lock(&errors);
                    if errors.len() < 16 {
                        errors.push(format!("{}: {:?}", e.error(), e.debug()));
                    }
                }
                gst::BusSyncReply::Drop
            });
        }
        pipeline.add(&webrtcbin)?;
        Ok(Self {
            pipeline,
            webrtcbin,
            gathered,
            candidates,
            errors,
        })
    }

    /// Creates and sets the offer, waits for gathering (bounded) and returns
    /// the offer with its candidates.
    async fn offer(&mut self) -> anyhow::Result<String> {
        let offer = sdp_ops::create_and_set_local(&self.webrtcbin, "offer").await?;
        let complete = tokio::time::timeout(GATHER_TIMEOUT, self.gathered.wait_for(|done| *done))
            .await
            .is_ok();
        let local = self
            .webrtcbin
            .property::<Option<WebRTCSessionDescription>>("local-description")
            .and_then(|d| d.sdp().as_text().ok())
            .unwrap_or(offer);
        let candidates = lock(&self.candidates).clone();
        if candidates.is_empty() && !local.contains("a=candidate:") {
            bail!(
                "no ICE candidate gathered (gathering {})",
                if complete { "complete" } else { "timed out" }
            );
        }
        Ok(with_candidates(&local, &candidates))
    }

    /// Offers, posts, applies the answer.
    async fn negotiate(&mut self, url: &str, token: Option<&str>) -> anyhow::Result<Created> {
        let offer = self.offer().await?;
        let (url_owned, token_owned) = (url.to_owned(), token.map(str::to_owned));
        let created = tokio::task::spawn_blocking(move || {
            post_offer(&url_owned, token_owned.as_deref(), &offer)
        })
        .await??;
        let desc = sdp_ops::parse_description(WebRTCSDPType::Answer, &created.answer)?;
        sdp_ops::set_remote(&self.webrtcbin, &desc).await?;
        Ok(created)
    }

    fn connection_state(&self) -> String {
        let state = self
            .webrtcbin
            .property::<gst_webrtc::WebRTCPeerConnectionState>("connection-state");
        format!("{state:?}").to_lowercase()
    }

    fn shut_down(&self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.shut_down();
    }
}

/// DELETE then teardown, off the async threads.
async fn end_session(endpoint: &Endpoint, url: &str, token: Option<&str>) -> anyhow::Result<u16> {
    let (url, token) = (url.to_owned(), token.map(str::to_owned));
    let status =
        tokio::task::spawn_blocking(move || delete_resource(&url, token.as_deref())).await?;
    let pipeline = endpoint.pipeline.clone();
    let _ = tokio::task::spawn_blocking(move || pipeline.set_state(gst::State::Null)).await;
    status
}

/// Codecs a viewer offers to receive, best first.
const VIEWER_VIDEO_CAPS: &str = "application/x-rtp,media=video,encoding-name=H264,payload=102,clock-rate=90000,packetization-mode=(string)1,profile-level-id=(string)42e01f,rtcp-fb-nack-pli=(boolean)true,rtcp-fb-ccm-fir=(boolean)true;\
application/x-rtp,media=video,encoding-name=VP8,payload=96,clock-rate=90000,rtcp-fb-nack-pli=(boolean)true,rtcp-fb-ccm-fir=(boolean)true";
const VIEWER_AUDIO_CAPS: &str = "application/x-rtp,media=audio,encoding-name=OPUS,payload=111,clock-rate=48000,encoding-params=(string)2";

/// What a viewer has decoded so far.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ViewerStats {
    /// Video frames decoded.
    pub video_frames: u64,
    /// Decoded audio buffers.
    pub audio_buffers: u64,
    /// Video codec received (`H264`, `VP8`).
    pub video_codec: Option<String>,
    /// Size of the decoded pictures.
    pub video_size: Option<(i32, i32)>,
    /// Milliseconds from the POST's answer to the first decoded frame.
    pub first_frame_ms: Option<u64>,
    /// webrtcbin's connection state.
    pub connection_state: String,
    /// Errors posted on the pipeline.
    pub errors: Vec<String>,
}

#[derive(Default)]
struct Decoded {
    video_frames: AtomicU64,
    audio_buffers: AtomicU64,
    info: Mutex<DecodedInfo>,
}

#[derive(Default)]
struct DecodedInfo {
    codec: Option<String>,
    size: Option<(i32, i32)>,
    first_frame_ms: Option<u64>,
}

/// RTP packets a counting viewer received (after webrtcbin, not decoded).
#[derive(Default)]
struct Counted {
    video: Mutex<StreamCounter>,
    audio: Mutex<StreamCounter>,
    /// Arrival against media time of the video.
    video_clock: Mutex<VideoClock>,
}

/// Arrival time against media time (RTP timestamps) of a received stream.
#[derive(Debug, Clone, Copy, Default)]
struct VideoClock {
    last_ts: Option<u32>,
    /// Media time since the first packet, ms (timestamps unwrapped).
    media_ms: f64,
    /// Arrival minus media time of the latest packet, ms.
    transit_ms: f64,
    /// … its smallest value so far.
    min_transit_ms: Option<f64>,
}

impl VideoClock {
    /// Accounts a packet of RTP timestamp `ts` (clock `rate`) that arrived
    /// at `arrival_ms` (any fixed origin).
    fn record(&mut self, ts: u32, rate: u32, arrival_ms: f64) {
        if rate == 0 {
            return;
        }
        if let Some(last) = self.last_ts {
            // Signed: reordered packets step back; wraps pass unnoticed.
            self.media_ms += f64::from(ts.wrapping_sub(last) as i32) * 1000.0 / f64::from(rate);
        }
        self.last_ts = Some(ts);
        self.transit_ms = arrival_ms - self.media_ms;
        self.min_transit_ms = Some(
            self.min_transit_ms
                .map_or(self.transit_ms, |m| m.min(self.transit_ms)),
        );
    }
}

/// How late a counting viewer's video arrives, from its RTP timestamps.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct VideoDelay {
    /// Arrival minus media time of the latest packet, ms, on the viewer's
    /// own scale (only differences mean something: two readings tell how
    /// much further behind real time the viewer fell in between).
    pub transit_ms: f64,
    /// How much later the latest packet arrived than the earliest-arriving
    /// one so far, relative to media time, ms: the delay added since the
    /// viewer's best moment (a backlog upstream of it, and jitter).
    pub extra_ms: f64,
}

/// What webrtcbin's `get-stats` says of the RTP a viewer received, summed
/// over its inbound streams (video and audio).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct InboundRtp {
    /// `packets-received`.
    pub packets_received: u64,
    /// `packets-lost` (expected from the sequence numbers, not received).
    pub packets_lost: i64,
    /// `bytes-received`.
    pub bytes_received: u64,
    /// Inbound streams reported.
    pub streams: usize,
}

/// A field of a stats structure as an `i64`, whatever integer type it has.
fn stat_i64(s: &gst::StructureRef, field: &str) -> Option<i64> {
    let v = s.value(field).ok()?;
    if let Ok(x) = v.get::<u64>() {
        return i64::try_from(x).ok();
    }
    if let Ok(x) = v.get::<i64>() {
        return Some(x);
    }
    if let Ok(x) = v.get::<u32>() {
        return Some(i64::from(x));
    }
    v.get::<i32>().ok().map(i64::from)
}

/// How a viewer handles what it receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ViewerMode {
    Decode,
    Count,
}

/// A WHEP viewer: receives a broadcast's video and audio and decodes them
/// (or only counts their packets: [`WhepViewer::connect_counting`]).
pub struct WhepViewer {
    endpoint: Endpoint,
    decoded: Arc<Decoded>,
    counted: Arc<Counted>,
    resource_url: String,
    token: Option<String>,
    /// The answer the server sent.
    pub answer: String,
}

impl WhepViewer {
    /// Watches the broadcast at `whep_url` (127.0.0.1 ICE candidates).
    pub async fn connect(whep_url: &str, token: Option<&str>) -> anyhow::Result<Self> {
        Self::connect_on(whep_url, token, &[IpAddr::from([127, 0, 0, 1])]).await
    }

    /// Like [`WhepViewer::connect`], with other host candidate addresses.
    pub async fn connect_on(
        whep_url: &str,
        token: Option<&str>,
        ice_local_ips: &[IpAddr],
    ) -> anyhow::Result<Self> {
        Self::open(whep_url, token, ice_local_ips, ViewerMode::Decode).await
    }

    /// A viewer for load: receives like [`WhepViewer::connect_on`] but
    /// decodes nothing; each stream ends, after webrtcbin (its jitterbuffer
    /// set to no latency), in a `fakesink` that counts RTP packets, bytes and
    /// sequence gaps ([`WhepViewer::received`]). webrtcbin's own view of
    /// loss is [`WhepViewer::inbound_rtp`].
    pub async fn connect_counting(
        whep_url: &str,
        token: Option<&str>,
        ice_local_ips: &[IpAddr],
    ) -> anyhow::Result<Self> {
        Self::open(whep_url, token, ice_local_ips, ViewerMode::Count).await
    }

    async fn open(
        whep_url: &str,
        token: Option<&str>,
        ice_local_ips: &[IpAddr],
        mode: ViewerMode,
    ) -> anyhow::Result<Self> {
        let mut endpoint = recvonly_endpoint(ice_local_ips)?;
        let decoded: Arc<Decoded> = Arc::default();
        let counted: Arc<Counted> = Arc::default();
        let answered: Arc<Mutex<Option<Instant>>> = Arc::default();
        if mode == ViewerMode::Count {
            // Count packets as they arrive: no playout delay.
            endpoint.webrtcbin.set_property("latency", 0u32);
        }
        {
            let pipeline = endpoint.pipeline.downgrade();
            let decoded = decoded.clone();
            let counted = counted.clone();
            let answered = answered.clone();
            endpoint.webrtcbin.connect_pad_added(move |_, pad| {
                if pad.direction() != gst::PadDirection::Src {
                    return;
                }
                let Some(pipeline) = pipeline.upgrade() else {
                    return;
                };
                let attached = match mode {
                    ViewerMode::Decode => {
                        attach_decoder(&pipeline, pad, decoded.clone(), answered.clone())
                    }
                    ViewerMode::Count => {
                        attach_counter(&pipeline, pad, counted.clone(), answered.clone())
                    }
                };
                if let Err(e) = attached {
                    tracing::warn!("WHEP viewer cannot receive: {e}");
                }
            });
        }
        endpoint.pipeline.set_state(gst::State::Playing)?;
        let created = endpoint.negotiate(whep_url, token).await?;
        *lock(&answered) = Some(Instant::now());
        Ok(Self {
            endpoint,
            decoded,
            counted,
            resource_url: created.resource_url,
            token: token.map(str::to_owned),
            answer: created.answer,
        })
    }

    /// The viewer's WHEP session (`Location`, absolute).
    pub fn resource_url(&self) -> &str {
        &self.resource_url
    }

    /// Video frames decoded so far.
    pub fn video_frames(&self) -> u64 {
        self.decoded.video_frames.load(Ordering::Relaxed)
    }

    /// Audio buffers decoded so far.
    pub fn audio_buffers(&self) -> u64 {
        self.decoded.audio_buffers.load(Ordering::Relaxed)
    }

    /// What was decoded so far.
    pub fn stats(&self) -> ViewerStats {
        let info = lock(&self.decoded.info);
        ViewerStats {
            video_frames: self.video_frames(),
            audio_buffers: self.audio_buffers(),
            video_codec: info.codec.clone(),
            video_size: info.size,
            first_frame_ms: info.first_frame_ms,
            connection_state: self.endpoint.connection_state(),
            errors: lock(&self.endpoint.errors).clone(),
        }
    }

    /// RTP received so far by a counting viewer: (video, audio); empty
    /// counters for a decoding one.
    pub fn received(&self) -> (StreamCounter, StreamCounter) {
        (
            lock(&self.counted.video).clone(),
            lock(&self.counted.audio).clone(),
        )
    }

    /// How late a counting viewer's video arrives (`None` before its first
    /// video packet, or for a decoding viewer).
    pub fn video_delay(&self) -> Option<VideoDelay> {
        let c = *lock(&self.counted.video_clock);
        Some(VideoDelay {
            transit_ms: c.transit_ms,
            extra_ms: c.transit_ms - c.min_transit_ms?,
        })
    }

    /// webrtcbin's connection state (`connected`, `failed`, …).
    pub fn connection_state(&self) -> String {
        self.endpoint.connection_state()
    }

    /// webrtcbin's `get-stats`: the `inbound-rtp` entries, summed.
    pub async fn inbound_rtp(&self) -> anyhow::Result<InboundRtp> {
        let (promise, fut) = gst::Promise::new_future();
        self.endpoint
            .webrtcbin
            .emit_by_name::<()>("get-stats", &[&None::<gst::Pad>, &promise]);
        let reply = tokio::time::timeout(Duration::from_secs(5), fut)
            .await
            .map_err(|_| anyhow!("get-stats: no reply within 5 s"))?
            .map_err(|e| anyhow!("get-stats: {e:?}"))?
            .ok_or_else(|| anyhow!("get-stats: empty reply"))?;
        let mut sum = InboundRtp::default();
        for (_, value) in reply.iter() {
            let Ok(stat) = value.get::<gst::Structure>() else {
                continue;
            };
            let inbound = stat
                .get::<gst_webrtc::WebRTCStatsType>("type")
                .is_ok_and(|t| t == gst_webrtc::WebRTCStatsType::InboundRtp);
            if !inbound {
                continue;
            }
            sum.streams += 1;
            sum.packets_received += stat_i64(&stat, "packets-received").unwrap_or(0).max(0) as u64;
            sum.packets_lost += stat_i64(&stat, "packets-lost").unwrap_or(0);
            sum.bytes_received += stat_i64(&stat, "bytes-received").unwrap_or(0).max(0) as u64;
        }
        Ok(sum)
    }

    /// Ends the session (HTTP DELETE on its resource, with the token it was
    /// opened with) and tears the pipeline down; returns the DELETE's status.
    pub async fn stop(self) -> anyhow::Result<u16> {
        end_session(&self.endpoint, &self.resource_url, self.token.as_deref()).await
    }
}

fn recvonly_endpoint(ice_local_ips: &[IpAddr]) -> anyhow::Result<Endpoint> {
    let name = format!("whep_{}", crate::ids::random_string(8));
    let endpoint = Endpoint::new(&name, ice_local_ips)?;
    for caps in [VIEWER_VIDEO_CAPS, VIEWER_AUDIO_CAPS] {
        let caps: gst::Caps = caps.parse().map_err(|_| anyhow!("caps {caps}"))?;
        endpoint.webrtcbin.emit_by_name::<WebRTCRTPTransceiver>(
            "add-transceiver",
            &[&WebRTCRTPTransceiverDirection::Recvonly, &caps],
        );
    }
    Ok(endpoint)
}

/// A WHEP viewer's offer (recvonly H.264/VP8 video and Opus audio), without
/// candidates: for tests that post offers themselves.
pub async fn recvonly_offer() -> anyhow::Result<String> {
    let endpoint = recvonly_endpoint(&[IpAddr::from([127, 0, 0, 1])])?;
    endpoint.pipeline.set_state(gst::State::Ready)?;
    Ok(sdp_ops::create_and_set_local(&endpoint.webrtcbin, "offer").await?)
}

/// Depayloads and decodes one received stream into a counting `fakesink`.
fn attach_decoder(
    pipeline: &gst::Pipeline,
    pad: &gst::Pad,
    decoded: Arc<Decoded>,
    answered: Arc<Mutex<Option<Instant>>>,
) -> anyhow::Result<()> {
    let caps = pad.current_caps().unwrap_or_else(|| pad.query_caps(None));
    let encoding = caps
        .structure(0)
        .and_then(|s| s.get::<&str>("encoding-name").ok())
        .unwrap_or("")
        .to_ascii_uppercase();
    // One decoding thread each: many viewers share few cores.
    let chain = match encoding.as_str() {
        "H264" => {
            "rtph264depay request-keyframe=true wait-for-keyframe=true ! avdec_h264 max-threads=1"
        }
        "VP8" => "rtpvp8depay request-keyframe=true wait-for-keyframe=true ! vp8dec threads=1",
        "OPUS" => "rtpopusdepay ! opusdec",
        other => bail!("cannot decode {other:?}"),
    };
    let is_video = encoding != "OPUS";
    if is_video {
        lock(&decoded.info).codec = Some(encoding.clone());
    }
    let bin = gst::parse::bin_from_description(
        &format!("{chain} ! fakesink name=sink sync=false async=false enable-last-sample=false"),
        true,
    )?;
    let sink_pad = bin
        .by_name("sink")
        .and_then(|s| s.static_pad("sink"))
        .ok_or_else(|| anyhow!("fakesink without sink pad"))?;
    sink_pad.add_probe(gst::PadProbeType::BUFFER, move |pad, _| {
        if !is_video {
            decoded.audio_buffers.fetch_add(1, Ordering::Relaxed);
            return gst::PadProbeReturn::Ok;
        }
        let n = decoded.video_frames.fetch_add(1, Ordering::Relaxed);
        if n.is_multiple_of(30) {
            let size = pad.current_caps().and_then(|c| {
                let s = c.structure(0)?;
                Some((s.get::<i32>("width").ok()?, s.get::<i32>("height").ok()?))
            });
            let mut info = lock(&decoded.info);
            info.size = size.or(info.size);
            if n == 0 {
                info.first_frame_ms = lock(&answered).map(|t| t.elapsed().as_millis() as u64);
            }
        }
        gst::PadProbeReturn::Ok
    });
    pipeline.add(&bin)?;
    bin.sync_state_with_parent()?;
    let sink = bin
        .static_pad("sink")
        .ok_or_else(|| anyhow!("decoder without sink pad"))?;
    pad.link(&sink)
        .map_err(|e| anyhow!("link decoder: {e:?}"))?;
    Ok(())
}

/// Counts the RTP packets of one received stream in a `fakesink`.
fn attach_counter(
    pipeline: &gst::Pipeline,
    pad: &gst::Pad,
    counted: Arc<Counted>,
    answered: Arc<Mutex<Option<Instant>>>,
) -> anyhow::Result<()> {
    let caps = pad.current_caps().unwrap_or_else(|| pad.query_caps(None));
    let s = caps.structure(0);
    let encoding = s
        .and_then(|s| s.get::<&str>("encoding-name").ok())
        .unwrap_or("")
        .to_ascii_uppercase();
    let rate = s
        .and_then(|s| s.get::<i32>("clock-rate").ok())
        .unwrap_or(90_000)
        .max(0) as u32;
    let is_video = encoding != "OPUS";
    let sink = gst::ElementFactory::make("fakesink")
        .property("sync", false)
        .property("async", false)
        .property("enable-last-sample", false)
        .build()
        .context("fakesink")?;
    let sink_pad = sink
        .static_pad("sink")
        .ok_or_else(|| anyhow!("fakesink without sink pad"))?;
    let since = lock(&answered).unwrap_or_else(Instant::now);
    sink_pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        if let Some(gst::PadProbeData::Buffer(buffer)) = &info.data
            && let Ok(map) = buffer.map_readable()
            && map.len() >= 12
        {
            let seq = u16::from_be_bytes([map[2], map[3]]);
            let ts = u32::from_be_bytes([map[4], map[5], map[6], map[7]]);
            let arrival = since.elapsed().as_secs_f64() * 1000.0;
            if is_video {
                lock(&counted.video_clock).record(ts, rate, arrival);
            }
            let counter = if is_video {
                &counted.video
            } else {
                &counted.audio
            };
            lock(counter).record(seq, ts, rate, arrival, map.len(), false);
        }
        gst::PadProbeReturn::Ok
    });
    pipeline.add(&sink)?;
    sink.sync_state_with_parent()?;
    pad.link(&sink_pad)
        .map_err(|e| anyhow!("link counter: {e:?}"))?;
    Ok(())
}

/// What a [`WhipPublisher`] sends.
#[derive(Debug, Clone)]
pub struct WhipOptions {
    /// Video codec.
    pub codec: VideoCodec,
    /// Solid colour of the picture, 0xRRGGBB.
    pub color: u32,
    /// Tone, Hz.
    pub freq: f64,
    /// Picture size.
    pub width: u32,
    /// Picture height.
    pub height: u32,
    /// `videotestsrc` pattern (`solid-color`, or e.g. `snow` for a picture
    /// that fills the bitrate).
    pub pattern: String,
    /// Video bitrate, kbit/s.
    pub video_kbps: u32,
    /// Addresses for ICE host candidates.
    pub ice_local_ips: Vec<IpAddr>,
}

/// Colour a WHIP publisher shows unless told otherwise: orange, unlike any
/// colour the other tests' participants publish.
pub const WHIP_COLOR: u32 = 0xff8000;

impl WhipOptions {
    /// 640x360 at 30 fps in `codec`, 1000 kbit/s at most, [`WHIP_COLOR`]
    /// (solid), a 440 Hz tone, 127.0.0.1.
    pub fn new(codec: VideoCodec) -> Self {
        Self {
            codec,
            color: WHIP_COLOR,
            freq: 440.0,
            width: 640,
            height: 360,
            pattern: "solid-color".into(),
            video_kbps: 1000,
            ice_local_ips: vec![IpAddr::from([127, 0, 0, 1])],
        }
    }
}

/// A WHIP publisher: a live test picture and tone, sent only.
pub struct WhipPublisher {
    endpoint: Endpoint,
    resource_url: String,
    token: Option<String>,
    sent: [Arc<AtomicU64>; 2],
    /// The answer the server sent.
    pub answer: String,
}

impl WhipPublisher {
    /// Publishes to `whip_url` with defaults ([`WhipOptions::new`]).
    pub async fn connect(
        whip_url: &str,
        token: Option<&str>,
        codec: VideoCodec,
    ) -> anyhow::Result<Self> {
        Self::connect_with(whip_url, token, &WhipOptions::new(codec)).await
    }

    /// Publishes to `whip_url`.
    pub async fn connect_with(
        whip_url: &str,
        token: Option<&str>,
        opts: &WhipOptions,
    ) -> anyhow::Result<Self> {
        let name = format!("whip_{}", crate::ids::random_string(8));
        let mut endpoint = Endpoint::new(&name, &opts.ice_local_ips)?;
        let color = format!("{:#010x}", 0xff00_0000u32 | (opts.color & 0xff_ffff));
        // A leaky queue in front of each encoder: until the answer, webrtcbin
        // holds the payloaders' buffers, and the live sources must not stall.
        let kbps = opts.video_kbps.max(1);
        let encoder = match opts.codec {
            VideoCodec::H264 => format!(
                "x264enc tune=zerolatency speed-preset=ultrafast key-int-max=60 bitrate={kbps} ! video/x-h264,profile=constrained-baseline ! rtph264pay pt=102 mtu=1200 config-interval=-1 aggregate-mode=zero-latency"
            ),
            VideoCodec::Vp8 => format!(
                "vp8enc deadline=1 cpu-used=8 keyframe-max-dist=60 target-bitrate={} end-usage=cbr error-resilient=default ! rtpvp8pay pt=96 mtu=1200 picture-id-mode=15-bit",
                u64::from(kbps) * 1000
            ),
        };
        let video = format!(
            "videotestsrc is-live=true pattern={} foreground-color={color} ! video/x-raw,format=I420,width={},height={},framerate=30/1 ! queue leaky=downstream max-size-buffers=0 max-size-bytes=0 max-size-time=200000000 ! {encoder} name=pay",
            opts.pattern, opts.width, opts.height
        );
        let audio = format!(
            "audiotestsrc is-live=true wave=sine freq={} volume=0.4 ! audio/x-raw,rate=48000,channels=1 ! audioconvert ! audioresample ! queue leaky=downstream max-size-buffers=0 max-size-bytes=0 max-size-time=200000000 ! opusenc bitrate=32000 ! rtpopuspay pt=111 name=pay",
            opts.freq
        );
        let video_caps = match opts.codec {
            VideoCodec::H264 => {
                "application/x-rtp,media=video,encoding-name=H264,payload=102,clock-rate=90000,packetization-mode=(string)1"
            }
            VideoCodec::Vp8 => {
                "application/x-rtp,media=video,encoding-name=VP8,payload=96,clock-rate=90000"
            }
        };
        let audio_caps = "application/x-rtp,media=audio,encoding-name=OPUS,payload=111,clock-rate=48000,encoding-params=(string)2";
        let mut sent = Vec::new();
        for (chain, caps) in [(video, video_caps), (audio, audio_caps)] {
            sent.push(add_sendonly(&endpoint, &chain, caps)?);
        }
        endpoint.pipeline.set_state(gst::State::Playing)?;
        let created = endpoint.negotiate(whip_url, token).await?;
        let [video, audio]: [Arc<AtomicU64>; 2] =
            sent.try_into().map_err(|_| anyhow!("two branches"))?;
        Ok(Self {
            endpoint,
            resource_url: created.resource_url,
            token: token.map(str::to_owned),
            sent: [video, audio],
            answer: created.answer,
        })
    }

    /// The publisher's WHIP session (`Location`, absolute).
    pub fn resource_url(&self) -> &str {
        &self.resource_url
    }

    /// RTP packets sent so far: (video, audio).
    pub fn sent(&self) -> (u64, u64) {
        (
            self.sent[0].load(Ordering::Relaxed),
            self.sent[1].load(Ordering::Relaxed),
        )
    }

    /// webrtcbin's connection state (`connected`, `failed`, …).
    pub fn connection_state(&self) -> String {
        self.endpoint.connection_state()
    }

    /// Errors posted on the pipeline.
    pub fn errors(&self) -> Vec<String> {
        lock(&self.endpoint.errors).clone()
    }

    /// Ends the ingest (HTTP DELETE on its resource with the same token) and
    /// tears the pipeline down; returns the DELETE's status.
    pub async fn stop(self) -> anyhow::Result<u16> {
        end_session(&self.endpoint, &self.resource_url, self.token.as_deref()).await
    }
}

/// Adds a source chain ending in a payloader named `pay` to a sendonly
/// m-line of `caps`; returns its packet counter.
fn add_sendonly(endpoint: &Endpoint, chain: &str, caps: &str) -> anyhow::Result<Arc<AtomicU64>> {
    let ssrc: u32 = rand::random::<u32>() | 1;
    let bin = gst::parse::bin_from_description(chain, false)
        .with_context(|| format!("pipeline {chain}"))?;
    let pay = bin
        .by_name("pay")
        .ok_or_else(|| anyhow!("no payloader in {chain}"))?;
    pay.set_property("ssrc", ssrc);
    let src = pay
        .static_pad("src")
        .ok_or_else(|| anyhow!("payloader without src"))?;
    let ghost = gst::GhostPad::with_target(&src)?;
    bin.add_pad(&ghost)?;
    let sent = Arc::new(AtomicU64::new(0));
    {
        let sent = sent.clone();
        src.add_probe(
            gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST,
            move |_, info| {
                let n = match &info.data {
                    Some(gst::PadProbeData::BufferList(list)) => list.len() as u64,
                    _ => 1,
                };
                sent.fetch_add(n, Ordering::Relaxed);
                gst::PadProbeReturn::Ok
            },
        );
    }
    let caps: gst::Caps = format!("{caps},ssrc=(uint){ssrc},rtcp-fb-nack-pli=(boolean)true")
        .parse()
        .map_err(|_| anyhow!("caps {caps}"))?;
    let sink = endpoint
        .webrtcbin
        .request_pad_simple("sink_%u")
        .ok_or_else(|| anyhow!("webrtcbin sink pad"))?;
    let transceiver = sink.property::<WebRTCRTPTransceiver>("transceiver");
    transceiver.set_direction(WebRTCRTPTransceiverDirection::Sendonly);
    transceiver.set_codec_preferences(Some(&caps));
    endpoint.pipeline.add(&bin)?;
    ghost
        .link(&sink)
        .map_err(|e| anyhow!("link to webrtcbin: {e:?}"))?;
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_viewer_that_falls_behind_shows_it() {
        // 30 fps at 90 kHz, starting just before the timestamp wraps.
        let mut c = VideoClock::default();
        let start = u32::MAX - 3000 * 10;
        for i in 0..60u32 {
            c.record(
                start.wrapping_add(3000 * i),
                90_000,
                1000.0 + 100.0 * f64::from(i) / 3.0,
            );
        }
        assert!(c.transit_ms.abs() < 1000.1 && c.transit_ms > 999.9, "{c:?}");
        assert!((c.transit_ms - c.min_transit_ms.unwrap()).abs() < 1e-6);
        // Then each frame arrives 10 ms later than the one before.
        for i in 60..90u32 {
            let late = 10.0 * f64::from(i - 59);
            c.record(
                start.wrapping_add(3000 * i),
                90_000,
                1000.0 + 100.0 * f64::from(i) / 3.0 + late,
            );
        }
        let extra = c.transit_ms - c.min_transit_ms.unwrap();
        assert!((extra - 300.0).abs() < 1e-6, "{c:?}");
        // A reordered packet (an older timestamp) counts at its own media time.
        let before = c.transit_ms;
        c.record(
            start.wrapping_add(3000 * 88),
            90_000,
            1000.0 + 100.0 * 89.0 / 3.0 + 300.0,
        );
        assert!((c.transit_ms - before - 100.0 / 3.0).abs() < 1e-6, "{c:?}");
    }

    #[test]
    fn candidates_go_to_their_m_sections_unless_present() {
        let sdp = "v=0\r\no=- 1 0 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:video0\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:audio1\r\n";
        let cands = vec![
            (
                0,
                "candidate:1 1 UDP 2015363327 127.0.0.1 40000 typ host".to_owned(),
            ),
            (
                1,
                "a=candidate:2 1 UDP 2015363327 127.0.0.1 40002 typ host".to_owned(),
            ),
        ];
        let out = with_candidates(sdp, &cands);
        let lines: Vec<&str> = out.lines().collect();
        let video = lines.iter().position(|l| l.starts_with("m=video")).unwrap();
        let audio = lines.iter().position(|l| l.starts_with("m=audio")).unwrap();
        assert_eq!(
            lines[video + 2],
            "a=candidate:1 1 UDP 2015363327 127.0.0.1 40000 typ host"
        );
        assert_eq!(audio, video + 3);
        assert_eq!(
            *lines.last().unwrap(),
            "a=candidate:2 1 UDP 2015363327 127.0.0.1 40002 typ host"
        );
        assert!(out.ends_with("\r\n"));
        // Already there: unchanged.
        assert_eq!(with_candidates(&out, &cands), out);
    }
}
