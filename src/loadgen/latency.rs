//! `roomcast loadgen latency`: glass-to-glass latency of a broadcast, over
//! WHEP and over HLS.
//!
//! A synthetic participant (our WebSocket signaling, as every loadgen peer)
//! publishes a picture that carries the time it was captured: the whole
//! 320×240 frame is a grid of 8 × 4 blocks, grey for 0 and white for 1,
//! 24 bits of milliseconds (modulo 2^24) and an 8-bit CRC, painted into the
//! raw I420 frames by a pad probe on the test source. The blocks are 40×60
//! pixels, so they survive the composite's scaling and two H.264 encodings;
//! the reader finds the picture (anything brighter than the black background
//! or borders), samples the middle of each block and keeps only codes whose
//! CRC matches.
//!
//! The room broadcasts that participant (or the composite), and two viewers
//! in this process read the code back from decoded frames, one after the
//! other: a WHEP viewer (webrtcbin, H.264 decoded by `avdec_h264`) and an
//! HLS player (`playbin3` on the media playlist: `souphttpsrc`, `hlsdemux2`,
//! `tsdemux`, `avdec_h264`). Latency = the time a frame is shown (an
//! `appsink` that syncs to the clock, as a player's video sink does) minus
//! the time in its code; for WHEP also the time it leaves the decoder. Both
//! ends read the same clock. While the HLS player plays, the media playlist
//! is polled every 50 ms and the first picture of each new segment decoded:
//! how old a segment's start is when it gets listed, the floor for any
//! player. Alongside, an LL-HLS client follows the same playlist with
//! blocking reloads (`_HLS_msn`/`_HLS_part` of the part the last answer
//! hinted) and decodes the first picture of each new independent part: how
//! old a keyframe is when the playlist lists its part.
//!
//! `ROOMCAST_LATENCY_DUMP=frame.pgm` writes the luma of the first frame
//! whose code did not read, to see what a viewer got.

use super::hlsbench::{Roomcast, loadavg, machine};
use super::peer::{PeerConfig, SharedMedia, SinkMode, TestPeer, VideoCodec};
use super::source::{EncodedSource, SourceSpec};
use crate::config::IceSettings;
use crate::media::{ice, peer as sdp_ops};
use anyhow::{Context, anyhow, bail};
use clap::Args;
use gst::prelude::*;
use gst_video::prelude::*;
use gst_webrtc::{
    WebRTCICEGatheringState, WebRTCRTPTransceiver, WebRTCRTPTransceiverDirection, WebRTCSDPType,
    WebRTCSessionDescription,
};
use serde::Serialize;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// What the room broadcasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LatencySource {
    /// The room's composite (the host's "Go live").
    Composite,
    /// The publisher's own tracks.
    Participant,
}

/// Flags of `loadgen latency`.
#[derive(Debug, Args)]
pub struct LatencyArgs {
    /// What the broadcast shows.
    #[arg(long, value_enum, default_value_t = LatencySource::Composite)]
    pub source: LatencySource,
    /// Renditions, comma separated (`none`: one, as the source is; an H.264
    /// participant is then passed through without re-encoding).
    #[arg(long, default_value = "720p")]
    pub renditions: String,
    /// The publisher's video codec.
    #[arg(long, value_enum, default_value_t = VideoCodec::Vp8)]
    pub codec: VideoCodec,
    /// The publisher's video bitrate, kbit/s.
    #[arg(long, default_value_t = 800)]
    pub publish_kbps: u32,
    /// Seconds of WHEP frames measured (after 3 s of warm-up).
    #[arg(long, default_value_t = 10)]
    pub whep_seconds: u64,
    /// Seconds of HLS frames measured (after 2 s of warm-up).
    #[arg(long, default_value_t = 20)]
    pub hls_seconds: u64,
    /// The WHEP viewer's jitter buffer (webrtcbin `latency`), ms.
    #[arg(long, default_value_t = 50)]
    pub whep_jitter_ms: u32,
    /// HLS player: `playbin3` (hlsdemux2: starts 3 target durations from the
    /// live edge, as the HLS spec advises and hls.js does) or `playbin`
    /// (hlsdemux: starts at the first segment listed).
    #[arg(long, default_value = "playbin3")]
    pub hls_player: String,
    /// Skip the WHEP viewer.
    #[arg(long)]
    pub no_whep: bool,
    /// Skip the HLS viewer.
    #[arg(long)]
    pub no_hls: bool,
    /// Write the results as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

// ---------------------------------------------------------------------------
// The time code.

/// Columns and rows of the code's blocks.
const COLS: usize = 8;
const ROWS: usize = 4;
/// Bits of time in the code (milliseconds modulo 2^24: 4.6 hours).
const TIME_BITS: u32 = 24;
const TIME_MASK: u32 = (1 << TIME_BITS) - 1;
/// Luma of a 0 block and of a 1 block (video range); the background is 16.
const LUMA_ZERO: u8 = 100;
const LUMA_ONE: u8 = 235;
/// Brighter than this is picture, not background.
const LUMA_PICTURE: u8 = 60;

/// Milliseconds on the clock both ends read, modulo 2^24.
fn now_ms() -> u32 {
    static T0: OnceLock<Instant> = OnceLock::new();
    (T0.get_or_init(Instant::now).elapsed().as_millis() as u64 & TIME_MASK as u64) as u32
}

/// CRC-8 (polynomial 0x07) of the three bytes of a time.
fn crc8(value: u32) -> u8 {
    let mut crc = 0u8;
    for byte in [(value >> 16) as u8, (value >> 8) as u8, value as u8] {
        crc ^= byte;
        for _ in 0..8 {
            crc = if crc & 0x80 != 0 {
                (crc << 1) ^ 0x07
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The 32 bits drawn, first block first: 24 of time, 8 of CRC.
fn code_bits(value: u32) -> u32 {
    ((value & TIME_MASK) << 8) | crc8(value & TIME_MASK) as u32
}

/// Paints `value` over a whole luma plane (`w`×`h`, `stride`).
pub fn paint_code(luma: &mut [u8], stride: usize, w: usize, h: usize, value: u32) {
    let bits = code_bits(value);
    for y in 0..h {
        let row = (y * ROWS / h).min(ROWS - 1);
        let line = &mut luma[y * stride..y * stride + w];
        for (x, px) in line.iter_mut().enumerate() {
            let col = (x * COLS / w).min(COLS - 1);
            let bit = (bits >> (31 - (row * COLS + col))) & 1;
            *px = if bit == 1 { LUMA_ONE } else { LUMA_ZERO };
        }
    }
}

/// Reads a code back from a luma plane: finds the picture (brighter than
/// the background), averages the middle of each block, checks the CRC.
pub fn read_code(luma: &[u8], stride: usize, w: usize, h: usize) -> Option<u32> {
    let (mut x0, mut y0, mut x1, mut y1) = (usize::MAX, usize::MAX, 0usize, 0usize);
    for y in (0..h).step_by(2) {
        let line = luma.get(y * stride..y * stride + w)?;
        for x in (0..w).step_by(2) {
            if line[x] > LUMA_PICTURE {
                x0 = x0.min(x);
                x1 = x1.max(x);
                y0 = y0.min(y);
                y1 = y1.max(y);
            }
        }
    }
    if x1 < x0 + 4 * COLS || y1 < y0 + 4 * ROWS {
        return None;
    }
    let (bw, bh) = (
        (x1 + 2 - x0) as f64 / COLS as f64,
        (y1 + 2 - y0) as f64 / ROWS as f64,
    );
    let threshold = (LUMA_ZERO as u32 + LUMA_ONE as u32) / 2;
    let mut bits = 0u32;
    for row in 0..ROWS {
        for col in 0..COLS {
            // The middle half of the block, every other pixel.
            let cx = x0 as f64 + (col as f64 + 0.5) * bw;
            let cy = y0 as f64 + (row as f64 + 0.5) * bh;
            let (xa, xb) = ((cx - bw / 4.0) as usize, (cx + bw / 4.0) as usize);
            let (ya, yb) = ((cy - bh / 4.0) as usize, (cy + bh / 4.0) as usize);
            let (mut sum, mut n) = (0u32, 0u32);
            for y in (ya..=yb.min(h - 1)).step_by(2) {
                for x in (xa..=xb.min(w - 1)).step_by(2) {
                    sum += luma[y * stride + x] as u32;
                    n += 1;
                }
            }
            let bit = n > 0 && sum / n > threshold;
            bits = (bits << 1) | bit as u32;
        }
    }
    let value = bits >> 8;
    (crc8(value) as u32 == bits & 0xff).then_some(value)
}

/// Milliseconds from `code` to now, across the 2^24 wrap.
fn age_ms(code: u32) -> u32 {
    now_ms().wrapping_sub(code) & TIME_MASK
}

/// Reads the code of an I420 buffer with the caps of `pad`.
fn code_of(pad: &gst::Pad, buffer: &gst::BufferRef) -> Option<u32> {
    let caps = pad.current_caps()?;
    let info = gst_video::VideoInfo::from_caps(&caps).ok()?;
    let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, &info).ok()?;
    let stride = usize::try_from(*frame.plane_stride().first()?).ok()?;
    let luma = frame.plane_data(0).ok()?;
    read_code(luma, stride, info.width() as usize, info.height() as usize)
}

/// With `ROOMCAST_LATENCY_DUMP=file.pgm`, writes the luma of a frame whose
/// code did not read (to see what the viewer got).
fn dump_luma(pad: &gst::Pad, buffer: Option<&gst::BufferRef>) {
    let Some(path) = std::env::var_os("ROOMCAST_LATENCY_DUMP") else {
        return;
    };
    let Some((buffer, caps)) = buffer.zip(pad.current_caps()) else {
        return;
    };
    let Ok(info) = gst_video::VideoInfo::from_caps(&caps) else {
        return;
    };
    let Ok(frame) = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, &info) else {
        return;
    };
    let (w, h) = (info.width() as usize, info.height() as usize);
    let stride = frame.plane_stride()[0] as usize;
    let Ok(luma) = frame.plane_data(0) else {
        return;
    };
    let mut out = format!("P5\n{w} {h}\n255\n").into_bytes();
    for y in 0..h {
        out.extend_from_slice(&luma[y * stride..y * stride + w]);
    }
    let _ = std::fs::write(path, out);
}

/// Paints the capture time into every raw frame leaving `pad` (I420).
fn stamp_frames(pad: &gst::Pad) {
    pad.add_probe(gst::PadProbeType::BUFFER, |pad, info| {
        let Some(caps) = pad.current_caps() else {
            return gst::PadProbeReturn::Ok;
        };
        let Ok(vinfo) = gst_video::VideoInfo::from_caps(&caps) else {
            return gst::PadProbeReturn::Ok;
        };
        if let Some(buffer) = info.buffer_mut() {
            let value = now_ms();
            let b = buffer.make_mut();
            if let Ok(mut frame) = gst_video::VideoFrameRef::from_buffer_ref_writable(b, &vinfo) {
                let stride = frame.plane_stride()[0] as usize;
                let (w, h) = (vinfo.width() as usize, vinfo.height() as usize);
                if let Ok(luma) = frame.plane_data_mut(0) {
                    paint_code(luma, stride, w, h, value);
                }
                for plane in 1..3 {
                    if let Ok(chroma) = frame.plane_data_mut(plane) {
                        chroma.fill(128);
                    }
                }
            }
        }
        gst::PadProbeReturn::Ok
    });
}

// ---------------------------------------------------------------------------
// Viewers.

/// Latencies seen by one viewer.
#[derive(Debug, Default)]
struct Samples {
    /// Count only while set.
    recording: AtomicBool,
    inner: Mutex<SampleLists>,
}

#[derive(Debug, Default)]
struct SampleLists {
    decoded_ms: Vec<u32>,
    shown_ms: Vec<u32>,
    unreadable: u64,
    codes: std::collections::HashSet<u32>,
    first_frame: Option<Instant>,
    size: Option<(u32, u32)>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// `videoconvert ! I420 ! appsink` that syncs to the clock: frames are read
/// when they would be shown, and (probe on its pad) when they arrive.
fn video_sink(samples: Arc<Samples>) -> anyhow::Result<gst::Bin> {
    let bin = gst::parse::bin_from_description(
        "videoconvert ! video/x-raw,format=I420 ! appsink name=sink sync=true max-buffers=4 drop=false enable-last-sample=false qos=false",
        true,
    )?;
    let sink = bin
        .by_name("sink")
        .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
        .ok_or_else(|| anyhow!("appsink"))?;
    let pad = sink
        .static_pad("sink")
        .ok_or_else(|| anyhow!("appsink pad"))?;
    {
        let samples = samples.clone();
        pad.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
            if let Some(buffer) = info.buffer() {
                let code = code_of(pad, buffer);
                let mut s = lock(&samples.inner);
                if s.first_frame.is_none() {
                    s.first_frame = Some(Instant::now());
                    s.size = pad.current_caps().and_then(|c| {
                        let st = c.structure(0)?;
                        Some((
                            st.get::<i32>("width").ok()? as u32,
                            st.get::<i32>("height").ok()? as u32,
                        ))
                    });
                }
                if samples.recording.load(Ordering::Relaxed)
                    && let Some(code) = code
                {
                    s.decoded_ms.push(age_ms(code));
                }
            }
            gst::PadProbeReturn::Ok
        });
    }
    let pad_for_caps = pad.clone();
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                if !samples.recording.load(Ordering::Relaxed) {
                    return Ok(gst::FlowSuccess::Ok);
                }
                let code = sample.buffer().and_then(|b| code_of(&pad_for_caps, b));
                let mut s = lock(&samples.inner);
                match code {
                    Some(code) => {
                        s.shown_ms.push(age_ms(code));
                        s.codes.insert(code);
                    }
                    None => {
                        s.unreadable += 1;
                        if s.unreadable == 1 {
                            dump_luma(&pad_for_caps, sample.buffer());
                        }
                    }
                }
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
    Ok(bin)
}

/// Errors posted on a pipeline's bus.
fn collect_errors(pipeline: &gst::Pipeline) -> anyhow::Result<Arc<Mutex<Vec<String>>>> {
    let errors: Arc<Mutex<Vec<String>>> = Arc::default();
    let bus = pipeline.bus().ok_or_else(|| anyhow!("no bus"))?;
    let e2 = errors.clone();
    bus.set_sync_handler(move |_, msg| {
        if let gst::MessageView::Error(e) = msg.view() {
            let mut errors = lock(&e2);
            if errors.len() < 8 {
                errors.push(format!("{}: {:?}", e.error(), e.debug()));
            }
        }
        gst::BusSyncReply::Drop
    });
    Ok(errors)
}

/// A WHEP viewer on webrtcbin: recvonly H.264 + Opus, offer with every
/// candidate (no trickle), answer from the 201.
async fn whep_viewer(
    whep_url: &str,
    token: Option<String>,
    jitter_ms: u32,
    samples: Arc<Samples>,
) -> anyhow::Result<(gst::Pipeline, Arc<Mutex<Vec<String>>>, Option<String>)> {
    let pipeline = gst::Pipeline::with_name("latency_whep");
    match negotiate_whep(&pipeline, whep_url, token, jitter_ms, samples).await {
        Ok((errors, resource)) => Ok((pipeline, errors, resource)),
        Err(e) => {
            stop(pipeline).await;
            Err(e)
        }
    }
}

async fn negotiate_whep(
    pipeline: &gst::Pipeline,
    whep_url: &str,
    token: Option<String>,
    jitter_ms: u32,
    samples: Arc<Samples>,
) -> anyhow::Result<(Arc<Mutex<Vec<String>>>, Option<String>)> {
    let errors = collect_errors(pipeline)?;
    let webrtcbin = gst::ElementFactory::make("webrtcbin").build()?;
    ice::configure(
        &webrtcbin,
        &IceSettings {
            local_ips: vec![IpAddr::from([127, 0, 0, 1])],
            ..Default::default()
        },
    );
    webrtcbin.set_property("latency", jitter_ms);
    for caps in [
        "application/x-rtp,media=video,encoding-name=H264,payload=102,clock-rate=90000,packetization-mode=(string)1,profile-level-id=(string)42e01f,rtcp-fb-nack-pli=(boolean)true",
        "application/x-rtp,media=audio,encoding-name=OPUS,payload=111,clock-rate=48000,encoding-params=(string)2",
    ] {
        let caps: gst::Caps = caps.parse().map_err(|_| anyhow!("caps {caps}"))?;
        webrtcbin.emit_by_name::<WebRTCRTPTransceiver>(
            "add-transceiver",
            &[&WebRTCRTPTransceiverDirection::Recvonly, &caps],
        );
    }
    let (gathered_tx, mut gathered) = tokio::sync::watch::channel(false);
    webrtcbin.connect_notify(Some("ice-gathering-state"), move |bin, _| {
        if bin.property::<WebRTCICEGatheringState>("ice-gathering-state")
            == WebRTCICEGatheringState::Complete
        {
            gathered_tx.send_replace(true);
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
    {
        let weak = pipeline.downgrade();
        webrtcbin.connect_pad_added(move |_, pad| {
            if pad.direction() != gst::PadDirection::Src {
                return;
            }
            let Some(pipeline) = weak.upgrade() else {
                return;
            };
            if let Err(e) = attach_whep_output(&pipeline, pad, samples.clone()) {
                eprintln!("latency: WHEP viewer cannot decode: {e:#}");
            }
        });
    }
    pipeline.add(&webrtcbin)?;
    pipeline.set_state(gst::State::Playing)?;
    sdp_ops::create_and_set_local(&webrtcbin, "offer").await?;
    let _ = tokio::time::timeout(Duration::from_secs(5), gathered.wait_for(|d| *d)).await;
    let local = webrtcbin
        .property::<Option<WebRTCSessionDescription>>("local-description")
        .and_then(|d| d.sdp().as_text().ok())
        .ok_or_else(|| anyhow!("no local description"))?;
    let offer = add_candidates(&local, &lock(&candidates));
    let url = whep_url.to_owned();
    let (answer, resource) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let mut req = ureq::post(&url)
            .timeout(Duration::from_secs(15))
            .set("Content-Type", "application/sdp");
        if let Some(t) = &token {
            req = req.set("Authorization", &format!("Bearer {t}"));
        }
        let resp = req
            .send_string(&offer)
            .map_err(|e| anyhow!("POST {url}: {e}"))?;
        if resp.status() != 201 {
            bail!("POST {url}: {}", resp.status());
        }
        let resource = resp.header("Location").and_then(|l| {
            url::Url::parse(&url)
                .and_then(|u| u.join(l))
                .ok()
                .map(String::from)
        });
        Ok((resp.into_string()?, resource))
    })
    .await??;
    let desc = sdp_ops::parse_description(WebRTCSDPType::Answer, &answer)?;
    sdp_ops::set_remote(&webrtcbin, &desc).await?;
    Ok((errors, resource))
}

/// Puts `candidates` into the m-sections of `sdp` that have none.
fn add_candidates(sdp: &str, candidates: &[(u32, String)]) -> String {
    let mut out = Vec::new();
    let mut section: Option<u32> = None;
    let mut own = false;
    let flush = |out: &mut Vec<String>, section: Option<u32>, own: bool| {
        if let Some(m) = section
            && !own
        {
            for (_, c) in candidates.iter().filter(|(i, _)| *i == m) {
                out.push(format!("a={}", c.strip_prefix("a=").unwrap_or(c)));
            }
        }
    };
    for line in sdp.lines().filter(|l| !l.is_empty()) {
        if line.starts_with("m=") {
            flush(&mut out, section, own);
            section = Some(section.map_or(0, |s| s + 1));
            own = false;
        } else if line.starts_with("a=candidate:") {
            own = true;
        }
        out.push(line.to_owned());
    }
    flush(&mut out, section, own);
    out.join("\r\n") + "\r\n"
}

/// Video: depayload, decode, read; audio: dropped after the jitter buffer.
fn attach_whep_output(
    pipeline: &gst::Pipeline,
    pad: &gst::Pad,
    samples: Arc<Samples>,
) -> anyhow::Result<()> {
    let caps = pad.current_caps().unwrap_or_else(|| pad.query_caps(None));
    let encoding = caps
        .structure(0)
        .and_then(|s| s.get::<&str>("encoding-name").ok())
        .unwrap_or("")
        .to_ascii_uppercase();
    let bin: gst::Bin = match encoding.as_str() {
        "H264" | "VP8" => {
            let depay = if encoding == "H264" {
                "rtph264depay request-keyframe=true wait-for-keyframe=true ! h264parse ! avdec_h264 max-threads=1"
            } else {
                "rtpvp8depay request-keyframe=true wait-for-keyframe=true ! avdec_vp8 max-threads=1"
            };
            let dec = gst::parse::bin_from_description(depay, true)?;
            let bin = gst::Bin::new();
            let sink = video_sink(samples)?;
            bin.add_many([dec.upcast_ref::<gst::Element>(), sink.upcast_ref()])?;
            dec.link(&sink)?;
            let target = dec
                .static_pad("sink")
                .ok_or_else(|| anyhow!("decoder pad"))?;
            bin.add_pad(&gst::GhostPad::with_target(&target)?)?;
            bin
        }
        _ => gst::parse::bin_from_description("fakesink sync=false async=false", true)?,
    };
    pipeline.add(&bin)?;
    bin.sync_state_with_parent()?;
    let sink = bin.static_pad("sink").ok_or_else(|| anyhow!("sink pad"))?;
    pad.link(&sink).map_err(|e| anyhow!("link: {e:?}"))?;
    Ok(())
}

/// An HLS player: `playbin` on the media playlist, video into the reading
/// sink, audio into a syncing `fakesink`.
fn hls_player(
    player: &str,
    playlist_url: &str,
    samples: Arc<Samples>,
) -> anyhow::Result<(gst::Pipeline, Arc<Mutex<Vec<String>>>)> {
    if !matches!(player, "playbin" | "playbin3") {
        bail!("--hls-player: playbin or playbin3");
    }
    let playbin = gst::ElementFactory::make(player)
        .property("uri", playlist_url)
        .build()
        .context("playbin")?;
    let pipeline = playbin
        .clone()
        .downcast::<gst::Pipeline>()
        .map_err(|_| anyhow!("playbin is not a pipeline"))?;
    let errors = collect_errors(&pipeline)?;
    playbin.set_property("video-sink", video_sink(samples)?.upcast::<gst::Element>());
    let audio = gst::ElementFactory::make("fakesink")
        .property("sync", true)
        .build()?;
    playbin.set_property("audio-sink", &audio);
    pipeline.set_state(gst::State::Playing)?;
    Ok((pipeline, errors))
}

/// A segment as it appeared in the playlist.
struct Listed {
    /// [`now_ms`] when the playlist first listed it.
    at_ms: u32,
    /// Its bytes, fetched at once.
    data: Vec<u8>,
}

/// Polls the media playlist every 50 ms until `stop`; fetches every segment
/// that appears after the first poll.
fn watch_playlist(url: &str, stop: &AtomicBool) -> Vec<Listed> {
    let base = url.rsplit_once('/').map(|(b, _)| b).unwrap_or(url);
    let mut seen: Option<std::collections::HashSet<String>> = None;
    let mut out = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        if let Ok((200, body)) = super::hlsbench::get(url) {
            let segs = super::hlsbench::playlist_segments(&String::from_utf8_lossy(&body));
            let at_ms = now_ms();
            match &mut seen {
                None => seen = Some(segs.into_iter().collect()),
                Some(seen) => {
                    for seg in segs {
                        if seen.insert(seg.clone())
                            && let Ok((200, data)) = super::hlsbench::get(&format!("{base}/{seg}"))
                        {
                            out.push(Listed { at_ms, data });
                        }
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    out
}

/// The value of `URI="…"` in an attribute list.
fn uri_attribute(attrs: &str) -> Option<&str> {
    let rest = &attrs[attrs.find("URI=\"")? + 5..];
    Some(&rest[..rest.find('"')?])
}

/// Follows the LL-HLS media playlist with blocking reloads (each request
/// asks for the part the last answer hinted) until `stop`; fetches every
/// independent part (a keyframe's) that appears after the first answer,
/// stamped with the time its listing arrived.
fn watch_parts(url: &str, stop: &AtomicBool) -> Vec<Listed> {
    let base = url.rsplit_once('/').map(|(b, _)| b).unwrap_or(url);
    let mut seen: Option<std::collections::HashSet<String>> = None;
    let mut next: Option<(u64, u32)> = None;
    let mut out = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let request = match next {
            Some((msn, part)) => format!("{url}?_HLS_msn={msn}&_HLS_part={part}"),
            None => url.to_owned(),
        };
        let Ok((200, body)) = super::hlsbench::get(&request) else {
            next = None;
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        let at_ms = now_ms();
        let text = String::from_utf8_lossy(&body);
        let first = seen.is_none();
        let seen = seen.get_or_insert_with(Default::default);
        for attrs in text.lines().filter_map(|l| l.strip_prefix("#EXT-X-PART:")) {
            let Some(uri) = uri_attribute(attrs) else {
                continue;
            };
            if seen.insert(uri.to_owned())
                && !first
                && attrs.contains("INDEPENDENT=YES")
                && let Ok((200, data)) = super::hlsbench::get(&format!("{base}/{uri}"))
            {
                out.push(Listed { at_ms, data });
            }
        }
        next = text
            .lines()
            .filter_map(|l| l.strip_prefix("#EXT-X-PRELOAD-HINT:"))
            .find_map(uri_attribute)
            .and_then(crate::media::hls::parse_name)
            .and_then(|(msn, part)| Some((msn, part?)));
        if next.is_none() {
            // Not an LL-HLS playlist (or it ended): plain polling.
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    out
}

/// The code of the first picture of an MPEG-TS segment.
fn first_code(data: &[u8]) -> anyhow::Result<Option<u32>> {
    let file = tempfile::NamedTempFile::new()?;
    std::fs::write(file.path(), data)?;
    let pipeline = gst::parse::launch(&format!(
        "filesrc location=\"{}\" ! tsdemux ! h264parse ! avdec_h264 ! videoconvert ! video/x-raw,format=I420 ! appsink name=sink sync=false",
        file.path().display()
    ))?
    .downcast::<gst::Pipeline>()
    .map_err(|_| anyhow!("not a pipeline"))?;
    let sink = pipeline
        .by_name("sink")
        .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
        .ok_or_else(|| anyhow!("appsink"))?;
    pipeline.set_state(gst::State::Playing)?;
    let sample = sink.try_pull_sample(gst::ClockTime::from_seconds(5));
    let _ = pipeline.set_state(gst::State::Null);
    let Some(sample) = sample else {
        return Ok(None);
    };
    let (Some(buffer), Some(caps)) = (sample.buffer(), sample.caps()) else {
        return Ok(None);
    };
    let info = gst_video::VideoInfo::from_caps(caps)?;
    let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, &info)
        .map_err(|_| anyhow!("map"))?;
    Ok(read_code(
        frame.plane_data(0)?,
        frame.plane_stride()[0] as usize,
        info.width() as usize,
        info.height() as usize,
    ))
}

/// Playlist listing − capture of the first picture, per segment (or part).
fn availability(listed: &[Listed], path: &str) -> PathReport {
    let mut ages = Vec::new();
    let mut unreadable = 0;
    for l in listed {
        match first_code(&l.data) {
            Ok(Some(code)) => ages.push(l.at_ms.wrapping_sub(code) & TIME_MASK),
            _ => unreadable += 1,
        }
    }
    ages.sort_unstable();
    PathReport {
        path: path.into(),
        frames: ages.len(),
        distinct: ages.len(),
        unreadable,
        p50: pct(&ages, 0.5),
        p95: pct(&ages, 0.95),
        min: ages.first().copied(),
        max: ages.last().copied(),
        ..Default::default()
    }
}

// ---------------------------------------------------------------------------
// The run.

/// One path's figures, milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PathReport {
    /// `whep` or `hls`.
    pub path: String,
    /// Frames shown (and read) while measuring.
    pub frames: usize,
    /// Distinct capture times among them.
    pub distinct: usize,
    /// Frames whose code did not read (CRC mismatch).
    pub unreadable: u64,
    /// Shown − captured, p50.
    pub p50: Option<u32>,
    /// p95.
    pub p95: Option<u32>,
    /// Minimum.
    pub min: Option<u32>,
    /// Maximum.
    pub max: Option<u32>,
    /// Decoded − captured, p50 (WHEP; for HLS frames wait for their turn).
    pub decoded_p50: Option<u32>,
    /// Decoded − captured, p95.
    pub decoded_p95: Option<u32>,
    /// Seconds from starting the viewer to its first frame.
    pub first_frame_s: Option<f64>,
    /// Decoded picture size.
    pub size: Option<(u32, u32)>,
    /// Pipeline errors.
    pub errors: Vec<String>,
}

fn pct(sorted: &[u32], p: f64) -> Option<u32> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted.get(i).copied()
}

fn report(
    path: &str,
    samples: &Samples,
    started: Instant,
    errors: &Mutex<Vec<String>>,
) -> PathReport {
    let s = lock(&samples.inner);
    let mut shown = s.shown_ms.clone();
    shown.sort_unstable();
    // Only a WHEP viewer decodes as frames arrive; an HLS player decodes
    // ahead and its frames wait at the sink (nor is its preroll a first frame).
    let whep = path == "WHEP";
    let mut decoded = if whep {
        s.decoded_ms.clone()
    } else {
        Vec::new()
    };
    decoded.sort_unstable();
    PathReport {
        path: path.into(),
        frames: shown.len(),
        distinct: s.codes.len(),
        unreadable: s.unreadable,
        p50: pct(&shown, 0.5),
        p95: pct(&shown, 0.95),
        min: shown.first().copied(),
        max: shown.last().copied(),
        decoded_p50: pct(&decoded, 0.5),
        decoded_p95: pct(&decoded, 0.95),
        first_frame_s: s
            .first_frame
            .filter(|_| whep)
            .map(|t| t.saturating_duration_since(started).as_secs_f64()),
        size: s.size,
        errors: lock(errors).clone(),
    }
}

/// Waits for the first frame (bounded), warms up, records for `seconds`.
async fn measure(
    samples: &Samples,
    first_within: Duration,
    warmup: u64,
    seconds: u64,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + first_within;
    while lock(&samples.inner).first_frame.is_none() {
        if Instant::now() > deadline {
            bail!("no frame within {first_within:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(warmup)).await;
    samples.recording.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    samples.recording.store(false, Ordering::Relaxed);
    Ok(())
}

async fn stop(pipeline: gst::Pipeline) {
    let _ = tokio::task::spawn_blocking(move || pipeline.set_state(gst::State::Null)).await;
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(f).await?
}

/// Publishes the time-coded picture into a room, broadcasts it, watches it.
async fn publish_and_watch(
    args: &LatencyArgs,
    server: &Arc<Roomcast>,
    pipeline: &gst::Pipeline,
    renditions: &[String],
) -> anyhow::Result<Vec<PathReport>> {
    let source = EncodedSource::new(
        pipeline,
        &SourceSpec {
            color: Some(0x808080),
            codec: args.codec,
            video_kbps: args.publish_kbps,
            ..Default::default()
        },
    )?;
    let testsrc = pipeline
        .iterate_elements()
        .into_iter()
        .flatten()
        .find(|e| e.factory().is_some_and(|f| f.name() == "videotestsrc"))
        .ok_or_else(|| anyhow!("no videotestsrc in the publisher"))?;
    stamp_frames(
        &testsrc
            .static_pad("src")
            .ok_or_else(|| anyhow!("videotestsrc pad"))?,
    );
    let s = server.clone();
    let room = blocking(move || s.admin("POST", "/api/v1/rooms", r#"{"name":"latency"}"#)).await?;
    let room_id = room["id"]
        .as_str()
        .ok_or_else(|| anyhow!("room id"))?
        .to_owned();
    let mut cfg = PeerConfig::new(
        room["host_url"]
            .as_str()
            .ok_or_else(|| anyhow!("host_url"))?,
        "clock",
    );
    cfg.codec = args.codec;
    cfg.sink = SinkMode::Count;
    cfg.shared = Some(SharedMedia {
        pipeline: pipeline.clone(),
        source,
    });
    let peer = TestPeer::join(cfg).await.context("publisher join")?;
    let deadline = Instant::now() + Duration::from_secs(15);
    while peer.sent().0 < 30 {
        if Instant::now() > deadline {
            bail!("the publisher sent no video: {:?}", peer.stats().errors);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let src = match args.source {
        LatencySource::Composite => "composite".to_owned(),
        LatencySource::Participant => peer.id.to_string(),
    };
    let (s, rid, rs) = (server.clone(), room_id.clone(), renditions.to_vec());
    // Watched once its HLS lists 3 segments (restarted if it stalls, see
    // hlsbench); WHEP alone: once it is live.
    let no_hls = args.no_hls;
    let (b, stalls) = blocking(move || {
        let r: Vec<&str> = rs.iter().map(String::as_str).collect();
        if !no_hls {
            return s.broadcast_with_segments(&rid, Some(&src), &r, 3);
        }
        let b = s.start_broadcast(&rid, Some(&src), &r)?;
        let path = format!(
            "/api/v1/broadcasts/{}",
            b["id"].as_str().unwrap_or_default()
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let b = s.admin("GET", &path, "")?;
            if b["state"] == "live" {
                return Ok((b, 0));
            }
            if Instant::now() > deadline {
                bail!("broadcast not live within 20 s: {b}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    })
    .await?;
    if stalls > 0 {
        eprintln!("latency: {stalls} broadcast start(s) stalled (restarted)");
    }
    let bid = b["id"]
        .as_str()
        .ok_or_else(|| anyhow!("broadcast id"))?
        .to_owned();
    eprintln!("latency: broadcast {bid}: {b}");
    let rendition = b["renditions"]
        .as_array()
        .and_then(|r| r.first())
        .and_then(|r| r.as_str())
        .unwrap_or("source")
        .to_owned();
    let mut reports = Vec::new();

    if !args.no_whep {
        let whep_url = b["whep_url"].as_str().ok_or_else(|| anyhow!("whep_url"))?;
        eprintln!("latency: WHEP viewer on {whep_url}");
        let samples = Arc::new(Samples::default());
        let started = Instant::now();
        // Private rooms: the viewer token is the watch link's `#t=`.
        let token = b["watch_url"]
            .as_str()
            .and_then(|u| u.split_once("#t="))
            .map(|(_, t)| t.to_owned());
        let (viewer, errors, resource) = whep_viewer(
            whep_url,
            token.clone(),
            args.whep_jitter_ms,
            samples.clone(),
        )
        .await?;
        let r = measure(&samples, Duration::from_secs(15), 3, args.whep_seconds).await;
        // Leave as a WHEP client does: DELETE the session.
        if let Some(resource) = resource {
            let _ = blocking(move || {
                let mut req = ureq::delete(&resource).timeout(Duration::from_secs(5));
                if let Some(t) = &token {
                    req = req.set("Authorization", &format!("Bearer {t}"));
                }
                req.call().map_err(|e| anyhow!("DELETE {resource}: {e}"))
            })
            .await
            .map_err(|e| eprintln!("latency: {e:#}"));
        }
        stop(viewer).await;
        if let Err(e) = r {
            eprintln!("latency: WHEP: {e:#} {:?}", lock(&errors));
        }
        reports.push(report("WHEP", &samples, started, &errors));
    }
    if !args.no_hls {
        let url = format!("{}/hls/{bid}/{rendition}/index.m3u8", server.base);
        eprintln!("latency: HLS player on {url}");
        let samples = Arc::new(Samples::default());
        let started = Instant::now();
        let stop_watch = Arc::new(AtomicBool::new(false));
        let watcher = {
            let (url, stop_watch) = (url.clone(), stop_watch.clone());
            tokio::task::spawn_blocking(move || watch_playlist(&url, &stop_watch))
        };
        let part_watcher = {
            let (url, stop_watch) = (url.clone(), stop_watch.clone());
            tokio::task::spawn_blocking(move || watch_parts(&url, &stop_watch))
        };
        let (player, errors) = hls_player(&args.hls_player, &url, samples.clone())?;
        let r = measure(&samples, Duration::from_secs(30), 2, args.hls_seconds).await;
        stop(player).await;
        stop_watch.store(true, Ordering::Relaxed);
        if let Err(e) = r {
            eprintln!("latency: HLS: {e:#} {:?}", lock(&errors));
        }
        reports.push(report(
            &format!("HLS ({})", args.hls_player),
            &samples,
            started,
            &errors,
        ));
        let listed = watcher.await?;
        reports.push(
            blocking(move || Ok(availability(&listed, "HLS segment listed (first picture)")))
                .await?,
        );
        let parts = part_watcher.await?;
        reports.push(
            blocking(move || {
                Ok(availability(
                    &parts,
                    "LL-HLS independent part listed (blocking reload; first picture)",
                ))
            })
            .await?,
        );
    }
    peer.leave().await;
    Ok(reports)
}

/// Runs the measurement and prints a table.
pub async fn run(args: LatencyArgs) -> anyhow::Result<()> {
    gst::init()?;
    now_ms();
    let renditions: Vec<String> = args
        .renditions
        .split(',')
        .map(str::trim)
        .filter(|r| !r.is_empty() && *r != "none")
        .map(str::to_owned)
        .collect();
    let load = loadavg();
    let server = Arc::new(blocking(Roomcast::start).await?);

    // The publisher: time-coded picture, our signaling.
    let pipeline = gst::Pipeline::with_name("latency_pub");
    pipeline.set_state(gst::State::Playing)?;
    let reports = publish_and_watch(&args, &server, &pipeline, &renditions).await;
    stop(pipeline).await;
    let reports = reports?;

    let ms = |v: Option<u32>| v.map(|v| v.to_string()).unwrap_or_else(|| "–".into());

    println!(
        "\nMeasured {} on {}; load average {load} at start; {}; source {:?}, renditions [{}], publisher {:?} {} kbit/s, WHEP jitter buffer {} ms.\n",
        crate::model::now_rfc3339(),
        machine(),
        gst::version_string(),
        args.source,
        renditions.join(", "),
        args.codec,
        args.publish_kbps,
        args.whep_jitter_ms,
    );
    println!(
        "| path | frames shown | distinct | unreadable | shown − captured p50 / p95 ms | min / max ms | decoded − captured p50 / p95 ms | first frame s | size |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in &reports {
        println!(
            "| {} | {} | {} | {} | {} / {} | {} / {} | {} / {} | {} | {} |",
            r.path,
            r.frames,
            r.distinct,
            r.unreadable,
            ms(r.p50),
            ms(r.p95),
            ms(r.min),
            ms(r.max),
            ms(r.decoded_p50),
            ms(r.decoded_p95),
            r.first_frame_s
                .map(|s| format!("{s:.1}"))
                .unwrap_or_else(|| "–".into()),
            r.size
                .map(|(w, h)| format!("{w}×{h}"))
                .unwrap_or_else(|| "–".into()),
        );
        for e in &r.errors {
            println!("  {} error: {e}", r.path);
        }
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&reports)?)?;
    }
    if reports
        .iter()
        // The listing paths sample one picture per segment or keyframe part.
        .filter(|r| !r.path.contains(" listed "))
        .any(|r| r.frames < 100)
    {
        bail!("fewer than 100 frames read on some path");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_reads_back() {
        let (w, h) = (320, 240);
        let mut luma = vec![0u8; w * h];
        for value in [0, 1, 12345, TIME_MASK, 0xa5a5a5] {
            paint_code(&mut luma, w, w, h, value);
            assert_eq!(read_code(&luma, w, w, h), Some(value));
        }
    }

    #[test]
    fn a_code_survives_scaling_into_a_black_frame() {
        let (w, h) = (320, 240);
        let mut small = vec![0u8; w * h];
        paint_code(&mut small, w, w, h, 987654);
        // Half size (a 2×2 grid tile), off-centre in a 1280×720 black frame
        // with a stride wider than the picture.
        let (fw, fh, stride) = (1280, 720, 1344);
        let mut frame = vec![16u8; stride * fh];
        let (ox, oy) = (500, 301);
        for y in 0..h / 2 {
            for x in 0..w / 2 {
                frame[(oy + y) * stride + ox + x] = small[(2 * y) * w + 2 * x];
            }
        }
        assert_eq!(read_code(&frame, stride, fw, fh), Some(987654));
        // A flipped bit fails the CRC.
        let mut bad = small.clone();
        for y in 0..60 {
            for x in 0..40 {
                bad[y * w + x] = if bad[y * w + x] == LUMA_ONE {
                    LUMA_ZERO
                } else {
                    LUMA_ONE
                };
            }
        }
        assert_eq!(read_code(&bad, w, w, h), None);
    }

    #[test]
    fn ages_cross_the_wrap() {
        let now = now_ms();
        assert!(age_ms(now.wrapping_sub(40) & TIME_MASK) >= 40);
    }
}
