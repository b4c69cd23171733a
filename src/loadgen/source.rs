//! Synthetic media: encode a test picture and tone once ([`EncodedSource`]),
//! then give each publisher its own payloaders (own SSRC, own audio level)
//! fed from the shared encoders ([`PublishBranch`]).

use crate::media::audio_level;
use anyhow::{Context, anyhow};
use gst::prelude::*;
use gst_webrtc::{WebRTCRTPTransceiver, WebRTCRTPTransceiverDirection};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

/// RTP packets a publisher sent, per kind.
#[derive(Debug, Clone, Default)]
pub struct SentCounters {
    /// Video packets.
    pub video: Arc<AtomicU64>,
    /// Audio packets.
    pub audio: Arc<AtomicU64>,
}

/// Video codec a synthetic publisher sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum VideoCodec {
    /// VP8 (vp8enc).
    #[default]
    Vp8,
    /// H.264 (x264enc, constrained baseline).
    H264,
}

/// What a source shows and plays.
#[derive(Debug, Clone)]
pub struct SourceSpec {
    /// Solid colour 0xRRGGBB, or `None` for noise (the full bitrate, as a camera).
    pub color: Option<u32>,
    /// Tone, Hz.
    pub freq: f64,
    /// Tone volume 0..=1.
    pub volume: f64,
    /// Video codec.
    pub codec: VideoCodec,
    /// Video bitrate, kbit/s.
    pub video_kbps: u32,
    /// Sync marks: for the first [`PULSE_MS`] of every second the picture is
    /// white and the tone plays; the rest of the time the picture has its
    /// colour and the audio is silent. Audio/video sync tests look for the marks.
    pub pulse: bool,
}

/// Length of a sync mark (see [`SourceSpec::pulse`]), milliseconds.
pub const PULSE_MS: u64 = 200;

fn in_pulse(t_ns: u64) -> bool {
    t_ns % 1_000_000_000 < PULSE_MS * 1_000_000
}

/// Paints raw I420 frames white during a pulse.
fn flash_video(pad: &gst::Pad) {
    pad.add_probe(gst::PadProbeType::BUFFER, |_, info| {
        if let Some(buffer) = info.buffer_mut()
            && buffer.pts().is_some_and(|t| in_pulse(t.nseconds()))
        {
            let b = buffer.make_mut();
            if let Ok(mut map) = b.map_writable() {
                // 320x240 I420: luma plane, then two chroma planes.
                let luma = (320 * 240).min(map.len());
                map[..luma].fill(235);
                map[luma..].fill(128);
            }
        }
        gst::PadProbeReturn::Ok
    });
}

/// Silences S16 mono 48 kHz audio outside pulses, sample by sample.
fn gate_audio(pad: &gst::Pad) {
    pad.add_probe(gst::PadProbeType::BUFFER, |_, info| {
        if let Some(buffer) = info.buffer_mut()
            && let Some(pts) = buffer.pts()
        {
            let start = pts.nseconds();
            let b = buffer.make_mut();
            if let Ok(mut map) = b.map_writable() {
                for (i, sample) in map.chunks_exact_mut(2).enumerate() {
                    let t = start + i as u64 * 1_000_000_000 / 48_000;
                    if !in_pulse(t) {
                        sample.fill(0);
                    }
                }
            }
        }
        gst::PadProbeReturn::Ok
    });
}

impl Default for SourceSpec {
    fn default() -> Self {
        Self {
            color: None,
            freq: 440.0,
            volume: 0.4,
            codec: VideoCodec::Vp8,
            video_kbps: 300,
            pulse: false,
        }
    }
}

/// Encoders of one test picture and tone, ending in tees any number of
/// publishers take from.
#[derive(Debug)]
pub struct EncodedSource {
    video_tee: gst::Element,
    audio_tee: gst::Element,
    /// Codec of `video_tee`.
    pub codec: VideoCodec,
    /// RFC 6464 level of the tone.
    pub level: u8,
}

impl EncodedSource {
    /// Adds the encoders to `pipeline` (already playing or not).
    pub fn new(pipeline: &gst::Pipeline, spec: &SourceSpec) -> anyhow::Result<Arc<Self>> {
        let color = format!(
            "{:#010x}",
            0xff00_0000u32 | (spec.color.unwrap_or(0) & 0xff_ffff)
        );
        let pattern: &[(&str, &str)] = match spec.color {
            Some(_) => &[("pattern", "solid-color"), ("foreground-color", &color)],
            None => &[
                ("pattern", "ball"),
                ("motion", "wavy"),
                ("background-color", "0xff203060"),
            ],
        };
        let kbps = spec.video_kbps.max(50);
        let (vp8_bitrate, x264_bitrate) = ((kbps * 1000).to_string(), kbps.to_string());
        let mut video: Vec<(&str, Vec<(&str, &str)>)> = vec![
            ("videotestsrc", [&[("is-live", "true")], pattern].concat()),
            (
                "capsfilter",
                vec![(
                    "caps",
                    "video/x-raw,format=I420,width=320,height=240,framerate=30/1",
                )],
            ),
            ("videoconvert", vec![]),
        ];
        match spec.codec {
            VideoCodec::Vp8 => video.push((
                "vp8enc",
                vec![
                    ("deadline", "1"),
                    ("cpu-used", "8"),
                    ("target-bitrate", &vp8_bitrate),
                    ("keyframe-max-dist", "3000"),
                    ("error-resilient", "default"),
                    ("end-usage", "cbr"),
                ],
            )),
            VideoCodec::H264 => {
                video.push((
                    "x264enc",
                    vec![
                        ("tune", "zerolatency"),
                        ("speed-preset", "ultrafast"),
                        ("bitrate", &x264_bitrate),
                        ("key-int-max", "3000"),
                    ],
                ));
                video.push((
                    "capsfilter",
                    vec![("caps", "video/x-h264,profile=constrained-baseline")],
                ));
            }
        }
        video.push(("tee", vec![("allow-not-linked", "true")]));
        let (freq, volume) = (spec.freq.to_string(), spec.volume.to_string());
        let audio: Vec<(&str, Vec<(&str, &str)>)> = vec![
            (
                "audiotestsrc",
                vec![
                    ("is-live", "true"),
                    ("wave", "sine"),
                    ("freq", &freq),
                    ("volume", &volume),
                ],
            ),
            (
                "capsfilter",
                vec![(
                    "caps",
                    "audio/x-raw,format=S16LE,rate=48000,channels=1,layout=interleaved",
                )],
            ),
            ("audioconvert", vec![]),
            ("audioresample", vec![]),
            ("opusenc", vec![("bitrate", "32000")]),
            ("tee", vec![("allow-not-linked", "true")]),
        ];
        // Elements go straight into the pipeline (not a child bin), so
        // publishers' payloaders can link to the tees directly.
        let (video_tee, video_caps) = add_chain(pipeline, &video).context("video source")?;
        let (audio_tee, audio_caps) = add_chain(pipeline, &audio).context("audio source")?;
        if spec.pulse {
            flash_video(&video_caps);
            gate_audio(&audio_caps);
        }
        Ok(Arc::new(Self {
            video_tee,
            audio_tee,
            codec: spec.codec,
            level: audio_level::level_of_sine(spec.volume),
        }))
    }
}

/// Makes, configures (properties from strings), adds and links a chain of
/// elements; returns the last one and the source pad of the second (the
/// raw picture or sound, for probes).
fn add_chain(
    pipeline: &gst::Pipeline,
    chain: &[(&str, Vec<(&str, &str)>)],
) -> anyhow::Result<(gst::Element, gst::Pad)> {
    let mut elements = Vec::new();
    for (factory, props) in chain {
        let e = gst::ElementFactory::make(factory)
            .build()
            .with_context(|| format!("element {factory}"))?;
        for (k, v) in props {
            e.set_property_from_str(k, v);
        }
        elements.push(e);
    }
    pipeline.add_many(&elements)?;
    gst::Element::link_many(&elements)?;
    let raw = elements
        .get(1)
        .and_then(|e| e.static_pad("src"))
        .ok_or_else(|| anyhow!("chain too short"))?;
    for e in &elements {
        e.sync_state_with_parent()?;
    }
    let last = elements
        .last()
        .cloned()
        .ok_or_else(|| anyhow!("empty chain"))?;
    Ok((last, raw))
}

/// One publisher's payloader and its m-line, fed from a shared tee once the
/// answer has arrived (webrtcbin holds unnegotiated pads, which would stall
/// every publisher of the shared encoder). A small leaky queue in front of
/// the payloader keeps any one publisher from ever stalling the encoder.
#[derive(Debug)]
pub struct PublishBranch {
    tee: gst::Element,
    queue: gst::Element,
    payloader: gst::Element,
    tee_pad: Option<gst::Pad>,
}

/// Id of the audio-level extension synthetic publishers offer.
pub const AUDIO_LEVEL_ID: u8 = 1;

impl PublishBranch {
    /// Adds a video and an audio branch of `source` to `webrtcbin` (m-lines
    /// only, until [`PublishBranch::connect`]). `level` is the RFC 6464
    /// level put on every audio packet; it can change while running.
    pub fn prepare_all(
        pipeline: &gst::Pipeline,
        webrtcbin: &gst::Element,
        source: &EncodedSource,
        level: Arc<AtomicU8>,
        sent: &SentCounters,
    ) -> anyhow::Result<Vec<PublishBranch>> {
        let (vpay, vcaps) = match source.codec {
            VideoCodec::Vp8 => (
                "rtpvp8pay pt=96 mtu=1200 picture-id-mode=15-bit",
                "application/x-rtp,media=video,encoding-name=VP8,payload=96,clock-rate=90000",
            ),
            VideoCodec::H264 => (
                "rtph264pay pt=102 mtu=1200 config-interval=-1 aggregate-mode=zero-latency",
                "application/x-rtp,media=video,encoding-name=H264,payload=102,clock-rate=90000,packetization-mode=(string)1",
            ),
        };
        let video = Self::prepare(
            pipeline,
            webrtcbin,
            &source.video_tee,
            vpay,
            vcaps,
            None,
            sent.video.clone(),
        )?;
        let acaps = format!(
            "application/x-rtp,media=audio,encoding-name=OPUS,payload=111,clock-rate=48000,encoding-params=(string)2,extmap-{AUDIO_LEVEL_ID}=(string){}",
            audio_level::URI
        );
        let audio = Self::prepare(
            pipeline,
            webrtcbin,
            &source.audio_tee,
            "rtpopuspay pt=111 auto-header-extension=false",
            &acaps,
            Some(level),
            sent.audio.clone(),
        )?;
        Ok(vec![video, audio])
    }

    fn prepare(
        pipeline: &gst::Pipeline,
        webrtcbin: &gst::Element,
        tee: &gst::Element,
        payloader: &str,
        caps: &str,
        level: Option<Arc<AtomicU8>>,
        sent: Arc<AtomicU64>,
    ) -> anyhow::Result<Self> {
        let ssrc: u32 = rand::random::<u32>() | 1;
        let payloader = gst::parse::launch(&format!("{payloader} ssrc={ssrc}"))?;
        let caps: gst::Caps = format!("{caps},ssrc=(uint){ssrc},rtcp-fb-nack-pli=true")
            .parse()
            .map_err(|_| anyhow!("caps {caps}"))?;
        let sink_pad = webrtcbin
            .request_pad_simple("sink_%u")
            .ok_or_else(|| anyhow!("webrtcbin sink pad"))?;
        let transceiver = sink_pad.property::<WebRTCRTPTransceiver>("transceiver");
        transceiver.set_direction(WebRTCRTPTransceiverDirection::Sendonly);
        transceiver.set_codec_preferences(Some(&caps));
        pipeline.add(&payloader)?;
        let src = payloader
            .static_pad("src")
            .ok_or_else(|| anyhow!("payloader src"))?;
        // Payloaders push single buffers or lists (rtpvp8pay): count and tag both.
        src.add_probe(
            gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST,
            move |_, info| {
                let tag = |buffer: &mut gst::Buffer| {
                    sent.fetch_add(1, Ordering::Relaxed);
                    if let Some(level) = &level {
                        add_level(buffer, level.load(Ordering::Relaxed));
                    }
                };
                match &mut info.data {
                    Some(gst::PadProbeData::Buffer(buffer)) => tag(buffer),
                    Some(gst::PadProbeData::BufferList(list)) => {
                        list.make_mut().foreach_mut(|mut b, _| {
                            tag(&mut b);
                            std::ops::ControlFlow::Continue(Some(b))
                        });
                    }
                    _ => {}
                }
                gst::PadProbeReturn::Ok
            },
        );
        src.link(&sink_pad)?;
        let queue = gst::ElementFactory::make("queue")
            .property_from_str("leaky", "downstream")
            .property("max-size-buffers", 0u32)
            .property("max-size-bytes", 0u32)
            .property("max-size-time", 200_000_000u64)
            .build()?;
        pipeline.add(&queue)?;
        queue.link(&payloader)?;
        payloader.sync_state_with_parent()?;
        queue.sync_state_with_parent()?;
        Ok(Self {
            tee: tee.clone(),
            queue,
            payloader,
            tee_pad: None,
        })
    }

    /// Starts the flow (after the answer).
    pub fn connect(&mut self) -> anyhow::Result<()> {
        if self.tee_pad.is_some() {
            return Ok(());
        }
        let pad = self
            .tee
            .request_pad_simple("src_%u")
            .ok_or_else(|| anyhow!("tee src pad"))?;
        let sink = self
            .queue
            .static_pad("sink")
            .ok_or_else(|| anyhow!("queue sink"))?;
        pad.link(&sink)?;
        self.tee_pad = Some(pad);
        Ok(())
    }

    /// Stops the flow and removes the payloader.
    pub fn remove(mut self, pipeline: &gst::Pipeline) {
        if let Some(pad) = self.tee_pad.take() {
            self.tee.release_request_pad(&pad);
        }
        for e in [&self.queue, &self.payloader] {
            let _ = e.set_state(gst::State::Null);
            let _ = pipeline.remove(e);
        }
    }
}

/// Rewrites `buffer` with the RFC 6464 extension carrying `level`.
fn add_level(buffer: &mut gst::Buffer, level: u8) {
    let Some(bytes) = buffer
        .map_readable()
        .ok()
        .map(|m| audio_level::with_level(&m, AUDIO_LEVEL_ID, level, level < 127))
    else {
        return;
    };
    let mut out = gst::Buffer::from_mut_slice(bytes);
    if let Some(dst) = out.get_mut() {
        let _ = buffer.copy_into(
            dst,
            gst::BufferCopyFlags::FLAGS | gst::BufferCopyFlags::TIMESTAMPS,
            ..,
        );
    }
    *buffer = out;
}
