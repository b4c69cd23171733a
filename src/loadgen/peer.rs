//! A synthetic participant: a real WebRTC peer on webrtcbin that speaks our
//! signaling protocol and publishes a test picture and tone. What it
//! receives it either decodes (tests: frames, colour and tone per remote
//! participant) or only counts (load: packets, loss, jitter, first keyframe),
//! per remote participant.

use crate::ids::ParticipantId;
use crate::media::{MediaError, ice, peer as sdp_ops};
use crate::signaling::{ClientMessage, PcKind, ServerMessage};
use anyhow::{Context, anyhow, bail};
use futures::{SinkExt, StreamExt};
use gst::prelude::*;
use gst_webrtc::WebRTCSDPType;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use super::counting::{StreamCounter, is_keyframe};
pub use super::source::VideoCodec;
use super::source::{EncodedSource, PublishBranch, SourceSpec};
use std::sync::atomic::AtomicU8;

/// What a peer does with the media it receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SinkMode {
    /// Decode it (frames, colour, tone).
    #[default]
    Decode,
    /// Count RTP packets only.
    Count,
}

/// A pipeline and an encoded source shared by many peers (load generation).
#[derive(Debug, Clone)]
pub struct SharedMedia {
    /// Pipeline every peer's webrtcbins go into (playing).
    pub pipeline: gst::Pipeline,
    /// Encoders publishers take from.
    pub source: Arc<EncodedSource>,
}

/// How a test peer behaves.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    /// Invite or host URL (`http://host/r/r_…#t=…`).
    pub link: String,
    /// Display name.
    pub name: String,
    /// Solid colour published, 0xRRGGBB.
    pub color: u32,
    /// Tone published, Hz.
    pub freq: f64,
    /// Video codec.
    pub codec: VideoCodec,
    /// Publish media at all.
    pub publish: bool,
    /// Addresses for ICE host candidates (tests: 127.0.0.1).
    pub ice_local_ips: Vec<IpAddr>,
    /// Session token to resume as an earlier participant.
    pub session: Option<String>,
    /// Tone volume, 0.0 (silent) to 1.0; sent as RFC 6464 audio levels too.
    pub volume: f64,
    /// Decode or only count what arrives.
    pub sink: SinkMode,
    /// Use this pipeline and source instead of an own pipeline and encoders.
    pub shared: Option<SharedMedia>,
    /// RFC 6464 level sent on audio (`None`: the level of the tone); can be
    /// changed while running through [`TestPeer::level`].
    pub level: Option<u8>,
}

impl PeerConfig {
    /// A peer with defaults for `link`.
    pub fn new(link: &str, name: &str) -> Self {
        Self {
            link: link.to_owned(),
            name: name.to_owned(),
            color: 0xff0000,
            freq: 440.0,
            codec: VideoCodec::Vp8,
            publish: true,
            ice_local_ips: vec![IpAddr::from([127, 0, 0, 1])],
            session: None,
            volume: 0.4,
            sink: SinkMode::Decode,
            shared: None,
            level: None,
        }
    }
}

/// What arrived from one remote participant.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RemoteStats {
    /// Video frames decoded.
    pub video_frames: u64,
    /// Milliseconds from our `joined` to the first decoded frame.
    pub first_video_ms: Option<u64>,
    /// Audio samples decoded (mono, 48 kHz).
    pub audio_samples: u64,
    /// Tone estimated from zero crossings, Hz.
    pub audio_freq: Option<f64>,
    /// Colour of the centre pixel of the last frame.
    pub last_rgb: Option<[u8; 3]>,
    /// Video codec received.
    pub video_codec: Option<String>,
    /// Video RTP counters (count mode).
    pub video_rtp: StreamCounter,
    /// Audio RTP counters (count mode).
    pub audio_rtp: StreamCounter,
    #[serde(skip)]
    crossings: u64,
    #[serde(skip)]
    last_sign: bool,
}

/// Everything a test peer saw.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PeerStats {
    /// Our participant id.
    pub participant_id: Option<ParticipantId>,
    /// Per remote participant (by id).
    pub remote: BTreeMap<ParticipantId, RemoteStats>,
    /// Others currently in the room, per signaling.
    pub present: Vec<ParticipantId>,
    /// Error codes received.
    pub errors: Vec<String>,
    /// Subscribe offers received.
    pub subscribe_offers: u64,
    /// The socket closed.
    pub disconnected: bool,
    /// ICE candidates the server sent (first 64).
    pub server_candidates: Vec<String>,
    /// Latest `active_speakers`.
    pub speakers: Vec<ParticipantId>,
    /// Session token.
    #[serde(skip)]
    pub session: Option<String>,
}

type Shared = Arc<Mutex<PeerStats>>;

fn lock(s: &Shared) -> std::sync::MutexGuard<'_, PeerStats> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

/// Outgoing signaling from GStreamer callbacks.
enum Out {
    Msg(ClientMessage),
    Raw(String),
    Leave,
}

/// Elements a peer added to a shared pipeline, removed when it goes.
#[derive(Default)]
struct Owned {
    branches: Vec<PublishBranch>,
    elements: Vec<gst::Element>,
}

type OwnedRef = Arc<Mutex<Owned>>;

/// A running test peer. Dropping it stops its media and socket abruptly.
pub struct TestPeer {
    stats: Shared,
    out: mpsc::UnboundedSender<Out>,
    task: tokio::task::JoinHandle<()>,
    pipeline: gst::Pipeline,
    own_pipeline: bool,
    owned: OwnedRef,
    level: Arc<AtomicU8>,
    /// Our participant id.
    pub id: ParticipantId,
    /// When the server said `joined` (stream times count from here).
    pub joined_at: Instant,
}

impl Drop for TestPeer {
    fn drop(&mut self) {
        self.task.abort();
        if self.own_pipeline {
            let _ = self.pipeline.set_state(gst::State::Null);
            return;
        }
        let owned = std::mem::take(&mut *self.owned.lock().unwrap_or_else(|p| p.into_inner()));
        for b in owned.branches {
            b.remove(&self.pipeline);
        }
        for e in owned.elements {
            let _ = e.set_state(gst::State::Null);
            let _ = self.pipeline.remove(&e);
        }
    }
}

/// `http://host:port/r/r_x#t=TOKEN` → (`ws://host:port/ws`, TOKEN).
pub fn split_link(link: &str) -> anyhow::Result<(String, String)> {
    let url = url::Url::parse(link).context("invalid link")?;
    let token = url
        .fragment()
        .and_then(|f| f.strip_prefix("t="))
        .ok_or_else(|| anyhow!("link has no #t= token"))?
        .to_owned();
    let scheme = if url.scheme() == "https" { "wss" } else { "ws" };
    let host = url.host_str().ok_or_else(|| anyhow!("link has no host"))?;
    let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
    Ok((format!("{scheme}://{host}{port}/ws"), token))
}

fn sink_description(encoding: &str) -> Option<&'static str> {
    Some(match encoding {
        "VP8" => {
            "rtpvp8depay request-keyframe=true wait-for-keyframe=true ! vp8dec ! videoconvert ! video/x-raw,format=RGB ! appsink name=sink sync=false max-buffers=2 drop=true"
        }
        "H264" => {
            "rtph264depay request-keyframe=true wait-for-keyframe=true ! avdec_h264 ! videoconvert ! video/x-raw,format=RGB ! appsink name=sink sync=false max-buffers=2 drop=true"
        }
        "OPUS" => {
            "rtpopusdepay ! opusdec ! audioconvert ! audioresample ! audio/x-raw,format=S16LE,channels=1,rate=48000 ! appsink name=sink sync=false max-buffers=8 drop=true"
        }
        _ => return None,
    })
}

fn on_video_sample(stats: &Shared, joined: Instant, from: &ParticipantId, sample: &gst::Sample) {
    let rgb = (|| {
        let caps = sample.caps()?;
        let s = caps.structure(0)?;
        let (w, h) = (
            s.get::<i32>("width").ok()? as usize,
            s.get::<i32>("height").ok()? as usize,
        );
        let buf = sample.buffer()?;
        let map = buf.map_readable().ok()?;
        let stride = (w * 3).div_ceil(4) * 4;
        let off = (h / 2) * stride + (w / 2) * 3;
        map.get(off..off + 3).map(|p| [p[0], p[1], p[2]])
    })();
    let mut s = lock(stats);
    let r = s.remote.entry(from.clone()).or_default();
    r.video_frames += 1;
    if r.first_video_ms.is_none() {
        r.first_video_ms = Some(joined.elapsed().as_millis() as u64);
    }
    if rgb.is_some() {
        r.last_rgb = rgb;
    }
}

fn on_audio_sample(stats: &Shared, from: &ParticipantId, sample: &gst::Sample) {
    let Some(buf) = sample.buffer() else { return };
    let Ok(map) = buf.map_readable() else { return };
    let mut s = lock(stats);
    let r = s.remote.entry(from.clone()).or_default();
    for chunk in map.chunks_exact(2) {
        let v = i16::from_le_bytes([chunk[0], chunk[1]]);
        let sign = v >= 0;
        if sign != r.last_sign && v.unsigned_abs() > 64 {
            r.crossings += 1;
            r.last_sign = sign;
        }
        r.audio_samples += 1;
    }
    if r.audio_samples > 4800 {
        r.audio_freq = Some(r.crossings as f64 / 2.0 / (r.audio_samples as f64 / 48_000.0));
    }
}

/// Attaches a decoder to a subscribe-side pad for the participant owning `mid`.
fn attach_decoder(
    pipeline: &gst::Pipeline,
    pad: &gst::Pad,
    owner: ParticipantId,
    stats: Shared,
    joined: Instant,
) -> Result<gst::Element, MediaError> {
    let caps = pad.current_caps().unwrap_or_else(|| pad.query_caps(None));
    let encoding = caps
        .structure(0)
        .and_then(|s| s.get::<&str>("encoding-name").ok())
        .unwrap_or("")
        .to_ascii_uppercase();
    let desc = sink_description(&encoding)
        .ok_or_else(|| MediaError::Pipeline(format!("cannot decode {encoding}")))?;
    let bin = gst::parse::bin_from_description(desc, true)
        .map_err(|e| MediaError::Pipeline(format!("decoder: {e}")))?;
    let appsink = bin
        .by_name("sink")
        .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
        .ok_or_else(|| MediaError::Pipeline("no appsink".into()))?;
    let is_video = encoding != "OPUS";
    if is_video {
        lock(&stats)
            .remote
            .entry(owner.clone())
            .or_default()
            .video_codec = Some(encoding.clone());
    }
    appsink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                if is_video {
                    on_video_sample(&stats, joined, &owner, &sample);
                } else {
                    on_audio_sample(&stats, &owner, &sample);
                }
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
    pipeline
        .add(&bin)
        .map_err(|e| MediaError::Pipeline(format!("add decoder: {e}")))?;
    let _ = bin.sync_state_with_parent();
    let sink = bin
        .static_pad("sink")
        .ok_or_else(|| MediaError::Pipeline("decoder without sink".into()))?;
    pad.link(&sink)
        .map_err(|e| MediaError::Pipeline(format!("link decoder: {e:?}")))?;
    Ok(bin.upcast())
}

/// Counts the RTP packets of a subscribe-side pad for the participant owning it.
fn attach_counter(
    pipeline: &gst::Pipeline,
    pad: &gst::Pad,
    owner: ParticipantId,
    stats: Shared,
    joined: Instant,
) -> Result<gst::Element, MediaError> {
    let caps = pad.current_caps().unwrap_or_else(|| pad.query_caps(None));
    let s = caps.structure(0);
    let encoding = s
        .and_then(|s| s.get::<&str>("encoding-name").ok())
        .unwrap_or("")
        .to_ascii_uppercase();
    let rate = s
        .and_then(|s| s.get::<i32>("clock-rate").ok())
        .unwrap_or(90_000) as u32;
    let is_video = encoding != "OPUS";
    if is_video {
        lock(&stats)
            .remote
            .entry(owner.clone())
            .or_default()
            .video_codec = Some(encoding.clone());
    }
    let sink = crate::media::make("fakesink", None)?;
    sink.set_property("sync", false);
    sink.set_property("async", false);
    sink.set_property("enable-last-sample", false);
    let sink_pad = sink
        .static_pad("sink")
        .ok_or_else(|| MediaError::Pipeline("fakesink without sink".into()))?;
    sink_pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        if let Some(gst::PadProbeData::Buffer(buffer)) = &info.data
            && let Ok(map) = buffer.map_readable()
            && map.len() >= 12
        {
            let seq = u16::from_be_bytes([map[2], map[3]]);
            let ts = u32::from_be_bytes([map[4], map[5], map[6], map[7]]);
            let key = is_video && rtp_payload(&map).is_some_and(|p| is_keyframe(&encoding, p));
            let arrival = joined.elapsed().as_secs_f64() * 1000.0;
            let mut st = lock(&stats);
            let r = st.remote.entry(owner.clone()).or_default();
            let counter = if is_video {
                &mut r.video_rtp
            } else {
                &mut r.audio_rtp
            };
            counter.record(seq, ts, rate, arrival, map.len(), key);
        }
        gst::PadProbeReturn::Ok
    });
    pipeline
        .add(&sink)
        .map_err(|e| MediaError::Pipeline(format!("add counter: {e}")))?;
    let _ = sink.sync_state_with_parent();
    pad.link(&sink_pad)
        .map_err(|e| MediaError::Pipeline(format!("link counter: {e:?}")))?;
    Ok(sink)
}

/// The payload of an RTP packet (after CSRCs and header extensions).
fn rtp_payload(p: &[u8]) -> Option<&[u8]> {
    let mut i = 12 + 4 * usize::from(p.first()? & 0x0f);
    if p[0] & 0x10 != 0 {
        let len = u16::from_be_bytes([*p.get(i + 2)?, *p.get(i + 3)?]);
        i += 4 + 4 * usize::from(len);
    }
    p.get(i..)
}

fn new_webrtcbin(
    name: &str,
    cfg: &PeerConfig,
    pc: PcKind,
    out: mpsc::UnboundedSender<Out>,
) -> anyhow::Result<gst::Element> {
    let bin = gst::ElementFactory::make("webrtcbin").name(name).build()?;
    ice::configure(
        &bin,
        &crate::config::IceSettings {
            local_ips: cfg.ice_local_ips.clone(),
            ..Default::default()
        },
    );
    bin.connect("on-ice-candidate", false, move |values| {
        let mline = values.get(1).and_then(|v| v.get::<u32>().ok())?;
        let candidate = values.get(2).and_then(|v| v.get::<String>().ok())?;
        let _ = out.send(Out::Msg(ClientMessage::Ice {
            pc,
            candidate,
            sdp_mline_index: mline,
        }));
        None
    });
    Ok(bin)
}

impl TestPeer {
    /// Joins the room behind `cfg.link`; returns once the server said `joined`.
    pub async fn join(cfg: PeerConfig) -> anyhow::Result<Self> {
        gst::init()?;
        let (ws_url, token) = split_link(&cfg.link)?;
        let (ws, _) = tokio_tungstenite::connect_async(ws_url.as_str())
            .await
            .with_context(|| format!("connecting {ws_url}"))?;
        let (mut ws_tx, mut ws_rx) = ws.split();
        let join = ClientMessage::Join {
            version: crate::signaling::PROTOCOL_VERSION,
            token,
            session: cfg.session.clone(),
            display_name: cfg.name.clone(),
        };
        ws_tx
            .send(Message::Text(serde_json::to_string(&join)?))
            .await?;
        // Wait for joined (or a refusal).
        let (pid, session) = loop {
            let frame = tokio::time::timeout(Duration::from_secs(10), ws_rx.next())
                .await
                .context("no answer to join")?
                .ok_or_else(|| anyhow!("socket closed before joined"))??;
            let Message::Text(text) = frame else { continue };
            match serde_json::from_str::<ServerMessage>(&text)? {
                ServerMessage::Joined {
                    participant_id,
                    session,
                    ..
                } => break (participant_id, session),
                ServerMessage::Error { code, message, .. } => {
                    bail!("join refused: {code}: {message}")
                }
                _ => continue,
            }
        };
        let joined_at = Instant::now();
        let stats: Shared = Arc::new(Mutex::new(PeerStats {
            participant_id: Some(pid.clone()),
            session: Some(session),
            ..Default::default()
        }));
        let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Out>();
        let own_pipeline = cfg.shared.is_none();
        let (pipeline, source) = match &cfg.shared {
            Some(shared) => (
                shared.pipeline.clone(),
                cfg.publish.then(|| shared.source.clone()),
            ),
            None => {
                let pipeline = gst::Pipeline::with_name(&format!("peer_{}", cfg.name));
                let source = if cfg.publish {
                    Some(EncodedSource::new(
                        &pipeline,
                        &SourceSpec {
                            color: Some(cfg.color),
                            freq: cfg.freq,
                            volume: cfg.volume,
                            codec: cfg.codec,
                            video_kbps: 300,
                        },
                    )?)
                } else {
                    None
                };
                (pipeline, source)
            }
        };
        let name = format!("{}_{}", cfg.name, pid);
        let subscribe = new_webrtcbin(
            &format!("sub_{name}"),
            &cfg,
            PcKind::Subscribe,
            out_tx.clone(),
        )?;
        if cfg.sink == SinkMode::Count {
            // Count packets as they arrive: no playout delay.
            subscribe.set_property("latency", 0u32);
        }
        pipeline.add(&subscribe)?;
        let owned: OwnedRef = Arc::default();
        owned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .elements
            .push(subscribe.clone());
        // Which participant each subscribe m-line carries, from the latest offer.
        let mids: Arc<Mutex<HashMap<String, ParticipantId>>> = Arc::default();
        {
            let weak = pipeline.downgrade();
            let mids = mids.clone();
            let stats = stats.clone();
            let mode = cfg.sink;
            let owned = owned.clone();
            subscribe.connect_pad_added(move |_, pad| {
                if pad.direction() != gst::PadDirection::Src {
                    return;
                }
                let Some(pipeline) = weak.upgrade() else {
                    return;
                };
                let mid = pad
                    .property::<Option<gst_webrtc::WebRTCRTPTransceiver>>("transceiver")
                    .and_then(|t| t.mid())
                    .map(|m| m.to_string())
                    .unwrap_or_default();
                let owner = mids
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&mid)
                    .cloned();
                let Some(owner) = owner else {
                    tracing::warn!(mid, "track of unknown owner");
                    return;
                };
                let attached = match mode {
                    SinkMode::Decode => {
                        attach_decoder(&pipeline, pad, owner, stats.clone(), joined_at)
                    }
                    SinkMode::Count => {
                        attach_counter(&pipeline, pad, owner, stats.clone(), joined_at)
                    }
                };
                match attached {
                    Ok(e) => owned
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .elements
                        .push(e),
                    Err(e) => tracing::warn!("cannot receive: {e}"),
                }
            });
        }
        let level = Arc::new(AtomicU8::new(
            cfg.level
                .or(source.as_ref().map(|s| s.level))
                .unwrap_or(127),
        ));
        let mut publish = None;
        if let Some(source) = &source {
            let bin = new_webrtcbin(
                &format!("pub_{name}"),
                &cfg,
                PcKind::Publish,
                out_tx.clone(),
            )?;
            pipeline.add(&bin)?;
            let branches = PublishBranch::prepare_all(&pipeline, &bin, source, level.clone())?;
            bin.sync_state_with_parent()?;
            let mut o = owned.lock().unwrap_or_else(|p| p.into_inner());
            o.branches = branches;
            o.elements.push(bin.clone());
            publish = Some(bin);
        }
        subscribe.sync_state_with_parent()?;
        if own_pipeline {
            pipeline.set_state(gst::State::Playing)?;
        }
        if let Some(bin) = &publish {
            let offer = sdp_ops::create_and_set_local(bin, "offer").await?;
            let _ = out_tx.send(Out::Msg(ClientMessage::PublishOffer { sdp: offer }));
        }
        let task_stats = stats.clone();
        let out = out_tx.clone();
        let task_owned = owned.clone();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    out = out_rx.recv() => {
                        let frame = match out {
                            Some(Out::Msg(m)) => serde_json::to_string(&m).unwrap_or_default(),
                            Some(Out::Raw(t)) => t,
                            Some(Out::Leave) => {
                                let _ = ws_tx.send(Message::Text(r#"{"type":"leave"}"#.into())).await;
                                let _ = ws_tx.close().await;
                                break;
                            }
                            None => break,
                        };
                        if ws_tx.send(Message::Text(frame)).await.is_err() {
                            break;
                        }
                    }
                    frame = ws_rx.next() => {
                        let text = match frame {
                            Some(Ok(Message::Text(t))) => t,
                            Some(Ok(_)) => continue,
                            _ => break,
                        };
                        let Ok(msg) = serde_json::from_str::<ServerMessage>(&text) else { continue };
                        if let Err(e) = handle_server_message(msg, publish.as_ref(), &subscribe, &mids, &task_stats, &out_tx, &task_owned).await {
                            tracing::warn!("test peer: {e}");
                            lock(&task_stats).errors.push(format!("local: {e}"));
                        }
                    }
                }
            }
            lock(&task_stats).disconnected = true;
        });
        Ok(Self {
            stats,
            out,
            task,
            pipeline,
            own_pipeline,
            owned,
            level,
            id: pid,
            joined_at,
        })
    }

    /// Changes the RFC 6464 level sent with this peer's audio (0 loudest, 127 silence).
    pub fn set_level(&self, level: u8) {
        self.level
            .store(level.min(127), std::sync::atomic::Ordering::Relaxed);
    }

    /// A copy of what was seen so far.
    pub fn stats(&self) -> PeerStats {
        lock(&self.stats).clone()
    }

    /// Session token from `joined` (to reconnect as the same participant).
    pub fn session(&self) -> Option<String> {
        lock(&self.stats).session.clone()
    }

    /// Tells the server whose video this peer shows (`None`: everyone's).
    pub fn set_visible(&self, participants: Option<Vec<ParticipantId>>) {
        let _ = self
            .out
            .send(Out::Msg(ClientMessage::SetVisible { participants }));
    }

    /// Sends a raw text frame (for bad-input tests).
    pub fn send_raw(&self, text: &str) {
        let _ = self.out.send(Out::Raw(text.to_owned()));
    }

    /// Says goodbye and closes the socket.
    pub async fn leave(self) {
        let _ = self.out.send(Out::Leave);
        let deadline = Instant::now() + Duration::from_secs(2);
        while !self.task.is_finished() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn handle_server_message(
    msg: ServerMessage,
    publish: Option<&gst::Element>,
    subscribe: &gst::Element,
    mids: &Mutex<HashMap<String, ParticipantId>>,
    stats: &Shared,
    out: &mpsc::UnboundedSender<Out>,
    owned: &OwnedRef,
) -> Result<(), MediaError> {
    match msg {
        ServerMessage::PublishAnswer { sdp } => {
            let desc = sdp_ops::parse_description(WebRTCSDPType::Answer, &sdp)?;
            let Some(publish) = publish else {
                return Err(MediaError::Negotiation("answer without an offer".into()));
            };
            sdp_ops::set_remote(publish, &desc).await?;
            // Negotiated: the shared encoders may now feed this publisher.
            let mut o = owned.lock().unwrap_or_else(|p| p.into_inner());
            for b in o.branches.iter_mut() {
                b.connect()
                    .map_err(|e| MediaError::Pipeline(e.to_string()))?;
            }
        }
        ServerMessage::SubscribeOffer { sdp, tracks } => {
            tracing::debug!(?tracks, "subscribe offer:\n{sdp}");
            {
                let mut m = mids.lock().unwrap_or_else(|p| p.into_inner());
                for t in tracks {
                    m.insert(t.mid, t.participant_id);
                }
            }
            lock(stats).subscribe_offers += 1;
            let desc = sdp_ops::parse_description(WebRTCSDPType::Offer, &sdp)?;
            sdp_ops::set_remote(subscribe, &desc).await?;
            let answer = sdp_ops::create_and_set_local(subscribe, "answer").await?;
            let _ = out.send(Out::Msg(ClientMessage::SubscribeAnswer { sdp: answer }));
        }
        ServerMessage::Ice {
            pc,
            candidate,
            sdp_mline_index,
        } => {
            {
                let mut s = lock(stats);
                if s.server_candidates.len() < 64 {
                    s.server_candidates.push(candidate.clone());
                }
            }
            let bin = match pc {
                PcKind::Publish => publish,
                PcKind::Subscribe => Some(subscribe),
            };
            if let Some(bin) = bin {
                sdp_ops::add_candidate(bin, sdp_mline_index, &candidate);
            }
        }
        ServerMessage::Joined { participants, .. } => {
            lock(stats).present = participants.into_iter().map(|p| p.id).collect();
        }
        ServerMessage::ParticipantJoined { participant } => {
            let mut s = lock(stats);
            if !s.present.contains(&participant.id) {
                s.present.push(participant.id);
            }
        }
        ServerMessage::ParticipantLeft { participant_id, .. } => {
            lock(stats).present.retain(|p| *p != participant_id);
        }
        ServerMessage::ActiveSpeakers { speakers } => lock(stats).speakers = speakers,
        ServerMessage::Error { code, .. } => lock(stats).errors.push(code),
        ServerMessage::RoomClosed => lock(stats).errors.push("room_closed".into()),
        _ => {}
    }
    Ok(())
}
