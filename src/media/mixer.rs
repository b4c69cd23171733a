//! The composite of a room: every published track decoded, videos laid out
//! by `compositor`, audio summed by `audiomixer`, each encoded once into a
//! tee that outputs (recordings, MCU participants, broadcasts) take from.
//!
//! Live and never stalled by an input: a live (invisible) video source and a
//! silent live tone keep both aggregators producing; `ignore-inactive-pads` and a
//! fixed latency mean a frozen or departed participant only freezes its tile.
//! Inputs are added and removed while the room runs; removing one releases
//! its aggregator pad first (which unblocks its thread), then tears the
//! branch down on a thread of its own.

use super::codecs::{Codec, EncoderSettings, Selection, make_encoder};
use super::layout::{LayoutMode, layout};
use super::rtp::TrackKind;
use super::{MediaError, make};
use crate::ids::{ParticipantId, TrackId};
use gst::prelude::*;

/// Output picture and encoding of the composite.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MixerConfig {
    /// Width, pixels.
    pub width: i32,
    /// Height, pixels.
    pub height: i32,
    /// Frames per second.
    pub fps: i32,
    /// H.264 bitrate, kbit/s.
    pub video_kbps: u32,
    /// AAC bitrate, kbit/s.
    pub audio_kbps: u32,
    /// Arrangement of the tiles.
    pub layout: LayoutMode,
}

impl Default for MixerConfig {
    fn default() -> Self {
        Self {
            width: 1280,
            height: 720,
            fps: 30,
            video_kbps: 2500,
            audio_kbps: 128,
            layout: LayoutMode::Grid,
        }
    }
}

/// Time an aggregator waits for late inputs, and the latency it assumes for
/// inputs plugged in later (jitterbuffer + decoder).
const AGGREGATOR_LATENCY_NS: u64 = 100_000_000;
const MIN_UPSTREAM_LATENCY_NS: u64 = 300_000_000;

struct Input {
    track: TrackId,
    owner: ParticipantId,
    kind: TrackKind,
    bin: gst::Bin,
    tee: gst::Element,
    tee_pad: gst::Pad,
    mixer_pad: gst::Pad,
    /// Shown in the layout (video that is not muted).
    shown: bool,
    /// Audio left out of the mix (muted by the participant or a host).
    muted: bool,
    /// Audio: the decoded sound, which the main mix and every MCU mix take.
    decoded: Option<(gst::Element, gst::Pad)>,
}

/// The composite of one room.
pub struct Mixer {
    config: MixerConfig,
    compositor: gst::Element,
    audiomixer: gst::Element,
    /// Encoded H.264 (parsed, with SPS/PPS on every keyframe).
    pub video: gst::Element,
    /// Encoded AAC (parsed).
    pub audio_aac: gst::Element,
    /// The raw composite picture (I420).
    pub raw: gst::Element,
    /// The raw mix (S16LE, 48 kHz, stereo).
    pub pcm: gst::Element,
    elements: Vec<gst::Element>,
    inputs: Vec<Input>,
    focus: Option<ParticipantId>,
    /// The composite as VP8 RTP, for MCU participants.
    mcu_video: Option<McuVideo>,
    /// Per MCU participant: everyone's audio but theirs, as Opus RTP.
    mcu_audio: Vec<McuAudio>,
}

/// The composite picture encoded for MCU participants.
struct McuVideo {
    elements: Vec<gst::Element>,
    raw_pad: gst::Pad,
    rtp: gst::Element,
    ssrc: u32,
}

/// One MCU participant's audio: a mix of everyone else.
struct McuAudio {
    owner: ParticipantId,
    mixer: gst::Element,
    elements: Vec<gst::Element>,
    /// (input track, its decoded tee, tee pad, mixer pad).
    links: Vec<(TrackId, gst::Element, gst::Pad, gst::Pad)>,
    rtp: gst::Element,
    ssrc: u32,
}

impl McuAudio {
    fn link(&mut self, track: &TrackId, dec: &gst::Element, muted: bool) -> Result<(), MediaError> {
        let tee_pad = dec
            .request_pad_simple("src_%u")
            .ok_or_else(|| MediaError::Pipeline("tee pad".into()))?;
        let mix_pad = self
            .mixer
            .request_pad_simple("sink_%u")
            .ok_or_else(|| MediaError::Pipeline("audiomixer pad".into()))?;
        mix_pad.set_property("mute", muted);
        tee_pad
            .link(&mix_pad)
            .map_err(|e| MediaError::Pipeline(format!("mix-minus link: {e:?}")))?;
        self.links
            .push((track.clone(), dec.clone(), tee_pad, mix_pad));
        Ok(())
    }

    fn unlink(&mut self, track: &TrackId) {
        self.links.retain(|(t, dec, tee_pad, mix_pad)| {
            if t != track {
                return true;
            }
            dec.release_request_pad(tee_pad);
            self.mixer.release_request_pad(mix_pad);
            false
        });
    }
}

/// RTP caps of an MCU output with SSRC `ssrc`, as subscribers are offered
/// it (offers map m-lines to tracks by SSRC).
pub fn mcu_format(kind: TrackKind, ssrc: u32) -> Option<super::rtp::ForwardFormat> {
    let caps = match kind {
        TrackKind::Video => gst::Caps::builder("application/x-rtp")
            .field("media", "video")
            .field("encoding-name", "VP8")
            .field("clock-rate", 90000i32)
            .field("ssrc", ssrc)
            .build(),
        TrackKind::Audio => gst::Caps::builder("application/x-rtp")
            .field("media", "audio")
            .field("encoding-name", "OPUS")
            .field("clock-rate", 48000i32)
            .field("encoding-params", "2")
            .field("minptime", "10")
            .field("useinbandfec", "1")
            .field("ssrc", ssrc)
            .build(),
    };
    super::rtp::forward_format(&caps)
}

fn new_ssrc() -> u32 {
    rand::random::<u32>().max(1)
}

fn add_chain(pipeline: &gst::Pipeline, chain: &[gst::Element]) -> Result<(), MediaError> {
    pipeline
        .add_many(chain)
        .map_err(|e| MediaError::Pipeline(format!("add mixer elements: {e}")))?;
    gst::Element::link_many(chain)
        .map_err(|e| MediaError::Pipeline(format!("link mixer elements: {e}")))
}

/// Brings a chain listed upstream → downstream (sources first) to the
/// pipeline's state, the other way round. A live source started before the
/// elements after it pushes into pads that are not active yet, gets
/// FLUSHING back and pauses its task for good: the mix then never produces
/// (a recording or broadcast waits forever for its first audio), and it
/// happens only when the starting thread is descheduled for longer than the
/// source's first buffer takes (a busy machine).
fn start_downstream_first(chain: &[gst::Element]) {
    for e in chain.iter().rev() {
        let _ = e.sync_state_with_parent();
    }
}

fn capsfilter(caps: &str) -> Result<gst::Element, MediaError> {
    let f = make("capsfilter", None)?;
    f.set_property_from_str("caps", caps);
    Ok(f)
}

/// A live silence source, its caps, an `audiomixer` it keeps producing
/// (inputs come and go as pads), and the mix's caps: unlinked, in chain order.
fn live_audio_mix() -> Result<[gst::Element; 4], MediaError> {
    const CAPS: &str = "audio/x-raw,format=S16LE,rate=48000,channels=2,layout=interleaved";
    let silence = make("audiotestsrc", None)?;
    silence.set_property("is-live", true);
    silence.set_property_from_str("wave", "silence");
    let mixer = make("audiomixer", None)?;
    mixer.set_property("latency", AGGREGATOR_LATENCY_NS);
    mixer.set_property("min-upstream-latency", MIN_UPSTREAM_LATENCY_NS);
    mixer.set_property("ignore-inactive-pads", true);
    // Output time starts with the first input, however long the room ran.
    mixer.set_property_from_str("start-time-selection", "first");
    Ok([silence, capsfilter(CAPS)?, mixer, capsfilter(CAPS)?])
}

fn queue() -> Result<gst::Element, MediaError> {
    let q = make("queue", None)?;
    q.set_property("max-size-buffers", 0u32);
    q.set_property("max-size-bytes", 0u32);
    q.set_property("max-size-time", 2_000_000_000u64);
    Ok(q)
}

/// A published track to mix: its tee carries the RTP of `codec`.
pub struct MixInput<'a> {
    /// The track.
    pub track: &'a TrackId,
    /// Who publishes it.
    pub owner: &'a ParticipantId,
    /// Audio or video.
    pub kind: TrackKind,
    /// RTP encoding name (`VP8`, `H264`, `OPUS`).
    pub codec: &'a str,
    /// The track's fan-out tee.
    pub tee: &'a gst::Element,
}

impl Mixer {
    /// Output picture and encoding.
    pub fn config(&self) -> MixerConfig {
        self.config
    }

    /// Builds the composite into `pipeline` (playing) with the encoders of `codecs`.
    pub fn new(
        pipeline: &gst::Pipeline,
        config: MixerConfig,
        codecs: &Selection,
    ) -> Result<Self, MediaError> {
        let (w, h, fps) = (config.width, config.height, config.fps);
        let h264 = codecs
            .encoder(Codec::H264)
            .ok_or_else(|| MediaError::MissingElement("an H.264 encoder (x264enc)".into()))?;
        let aac = codecs
            .encoder(Codec::Aac)
            .ok_or_else(|| MediaError::MissingElement("an AAC encoder (avenc_aac)".into()))?;

        // Video: live black background → compositor → encoder → tee.
        let bg = make("videotestsrc", None)?;
        bg.set_property("is-live", true);
        bg.set_property_from_str("pattern", "black");
        // The live source only paces the compositor (it keeps producing
        // with nobody in the picture): a tiny frame, never drawn (alpha 0);
        // the compositor's own background fills the picture.
        let bg_caps = capsfilter(&format!(
            "video/x-raw,format=I420,width=16,height=16,framerate={fps}/1"
        ))?;
        let compositor = make("compositor", None)?;
        compositor.set_property_from_str("background", "black");
        compositor.set_property("latency", AGGREGATOR_LATENCY_NS);
        compositor.set_property("min-upstream-latency", MIN_UPSTREAM_LATENCY_NS);
        compositor.set_property("ignore-inactive-pads", true);
        // Output time starts with the first input (the background), not at
        // zero: the room's pipeline may have run long before the mixer.
        compositor.set_property_from_str("start-time-selection", "first");
        let out_caps = capsfilter(&format!(
            "video/x-raw,format=I420,width={w},height={h},framerate={fps}/1"
        ))?;
        let vq = queue()?;
        let encoder = make_encoder(
            h264,
            &EncoderSettings {
                bitrate_kbps: config.video_kbps,
                keyframe_interval: (fps * 2) as u32,
                low_latency: true,
            },
        )?;
        // Constrained baseline: what every WebRTC viewer (WHEP) and
        // browser decoder takes.
        let profile = capsfilter(super::broadcast::H264_PROFILE_CAPS)?;
        let parse = make("h264parse", None)?;
        parse.set_property("config-interval", -1i32);
        // Byte-stream, whatever the outputs prefer: the tee settles on what
        // all its branches take, and a payloader listing `avc` first made
        // h264parse switch to it, which MPEG-TS (HLS) refuses — the
        // composite stopped (seen in a CI run). Every output takes
        // byte-stream (recordings and RTMP parse again), as the broadcast
        // renditions already do.
        let stream_format = capsfilter("video/x-h264,stream-format=byte-stream,alignment=au")?;
        let video = make("tee", None)?;
        video.set_property("allow-not-linked", true);
        // The raw picture, for outputs that encode it their own way (MCU).
        let raw = make("tee", None)?;
        raw.set_property("allow-not-linked", true);
        add_chain(pipeline, &[bg.clone(), bg_caps.clone()])?;
        add_chain(
            pipeline,
            &[compositor.clone(), out_caps.clone(), raw.clone()],
        )?;
        add_chain(
            pipeline,
            &[
                vq.clone(),
                encoder.clone(),
                profile.clone(),
                parse.clone(),
                stream_format.clone(),
                video.clone(),
            ],
        )?;
        raw.link(&vq)
            .map_err(|e| MediaError::Pipeline(format!("raw tee: {e}")))?;
        let bg_pad = compositor
            .request_pad_simple("sink_%u")
            .ok_or_else(|| MediaError::Pipeline("compositor pad".into()))?;
        bg_pad.set_property("zorder", 0u32);
        bg_pad.set_property("alpha", 0.0f64);
        bg_caps
            .static_pad("src")
            .ok_or_else(|| MediaError::Pipeline("caps pad".into()))?
            .link(&bg_pad)
            .map_err(|e| MediaError::Pipeline(format!("background: {e:?}")))?;

        // Audio: live silence → audiomixer → AAC → tee.
        let [silence, silence_caps, audiomixer, mix_caps] = live_audio_mix()?;
        let aq = queue()?;
        let aconv = make("audioconvert", None)?;
        let aenc = make_encoder(
            aac,
            &EncoderSettings {
                bitrate_kbps: config.audio_kbps,
                keyframe_interval: 1,
                low_latency: true,
            },
        )?;
        let aparse = make("aacparse", None)?;
        let audio_aac = make("tee", None)?;
        audio_aac.set_property("allow-not-linked", true);
        let pcm = make("tee", None)?;
        pcm.set_property("allow-not-linked", true);
        add_chain(
            pipeline,
            &[
                silence.clone(),
                silence_caps.clone(),
                audiomixer.clone(),
                mix_caps.clone(),
                pcm.clone(),
                aq.clone(),
                aconv.clone(),
                aenc.clone(),
                aparse.clone(),
                audio_aac.clone(),
            ],
        )?;

        let elements = vec![
            bg,
            bg_caps,
            compositor.clone(),
            out_caps,
            raw.clone(),
            vq,
            encoder,
            profile,
            parse,
            stream_format,
            video.clone(),
            silence,
            silence_caps,
            audiomixer.clone(),
            mix_caps,
            pcm.clone(),
            aq,
            aconv,
            aenc,
            aparse,
            audio_aac.clone(),
        ];
        start_downstream_first(&elements);
        Ok(Self {
            config,
            compositor,
            audiomixer,
            video,
            audio_aac,
            raw,
            pcm,
            elements,
            inputs: Vec::new(),
            focus: None,
            mcu_video: None,
            mcu_audio: Vec::new(),
        })
    }

    /// Decodes a published track into the composite.
    pub fn add_input(
        &mut self,
        pipeline: &gst::Pipeline,
        input: MixInput<'_>,
        codecs: &Selection,
    ) -> Result<(), MediaError> {
        let MixInput {
            track,
            owner,
            kind,
            codec,
            tee,
        } = input;
        if self.inputs.iter().any(|i| &i.track == track) {
            return Ok(());
        }
        let decoder = match codec {
            "VP8" => codecs.decoder(Codec::Vp8),
            "H264" => codecs.decoder(Codec::H264),
            "OPUS" => codecs.decoder(Codec::Opus),
            _ => None,
        }
        .ok_or_else(|| MediaError::MissingElement(format!("a {codec} decoder")))?;
        let description = match (kind, codec) {
            (TrackKind::Video, "VP8") => {
                format!(
                    "queue leaky=downstream max-size-buffers=0 max-size-bytes=0 max-size-time=1000000000 ! rtpvp8depay request-keyframe=true wait-for-keyframe=true ! {decoder} ! videoconvert"
                )
            }
            (TrackKind::Video, "H264") => {
                format!(
                    "queue leaky=downstream max-size-buffers=0 max-size-bytes=0 max-size-time=1000000000 ! rtph264depay request-keyframe=true wait-for-keyframe=true ! h264parse ! {decoder} ! videoconvert"
                )
            }
            (TrackKind::Audio, _) => {
                format!(
                    "queue leaky=downstream max-size-buffers=0 max-size-bytes=0 max-size-time=1000000000 ! rtpopusdepay ! {decoder} plc=true ! audioconvert ! audioresample ! capsfilter caps=audio/x-raw,format=S16LE,rate=48000,channels=2"
                )
            }
            _ => return Err(MediaError::Pipeline(format!("cannot mix {codec}"))),
        };
        let bin = gst::parse::bin_from_description(&description, true)
            .map_err(|e| MediaError::Pipeline(format!("mixer input: {e}")))?;
        bin.set_property("name", format!("mix_{track}"));
        // A stream the decoder chokes on must not stop the publisher's tee
        // (everyone else's forwarding).
        let sink = super::isolating_sink(&bin, "sink")?;
        pipeline
            .add(&bin)
            .map_err(|e| MediaError::Pipeline(format!("add mixer input: {e}")))?;
        let aggregator = match kind {
            TrackKind::Video => &self.compositor,
            TrackKind::Audio => &self.audiomixer,
        };
        let mixer_pad = aggregator
            .request_pad_simple("sink_%u")
            .ok_or_else(|| MediaError::Pipeline("aggregator refused a pad".into()))?;
        if kind == TrackKind::Video {
            mixer_pad.set_property("zorder", 1u32);
            mixer_pad.set_property_from_str("sizing-policy", "keep-aspect-ratio");
        }
        let src = bin
            .static_pad("src")
            .ok_or_else(|| MediaError::Pipeline("input src".into()))?;
        let decoded = match kind {
            TrackKind::Video => {
                src.link(&mixer_pad)
                    .map_err(|e| MediaError::Pipeline(format!("link mixer input: {e:?}")))?;
                None
            }
            TrackKind::Audio => {
                // Decoded once; the room's mix and each MCU mix take from it.
                let dec = make("tee", None)?;
                dec.set_property("allow-not-linked", true);
                pipeline
                    .add(&dec)
                    .map_err(|e| MediaError::Pipeline(format!("add decoded tee: {e}")))?;
                src.link(
                    &dec.static_pad("sink")
                        .ok_or_else(|| MediaError::Pipeline("tee sink".into()))?,
                )
                .map_err(|e| MediaError::Pipeline(format!("link decoded tee: {e:?}")))?;
                let main = dec
                    .request_pad_simple("src_%u")
                    .ok_or_else(|| MediaError::Pipeline("tee pad".into()))?;
                main.link(&mixer_pad)
                    .map_err(|e| MediaError::Pipeline(format!("link mixer input: {e:?}")))?;
                let _ = dec.sync_state_with_parent();
                for m in self.mcu_audio.iter_mut().filter(|m| &m.owner != owner) {
                    m.link(track, &dec, false)?;
                }
                Some((dec, main))
            }
        };
        let _ = bin.sync_state_with_parent();
        let tee_pad = tee
            .request_pad_simple("src_%u")
            .ok_or_else(|| MediaError::Pipeline("tee pad".into()))?;
        tee_pad
            .link(&sink)
            .map_err(|e| MediaError::Pipeline(format!("link tee to mixer: {e:?}")))?;
        self.inputs.push(Input {
            track: track.clone(),
            owner: owner.clone(),
            kind,
            bin,
            tee: tee.clone(),
            tee_pad,
            mixer_pad,
            shown: true,
            muted: false,
            decoded,
        });
        self.relayout();
        Ok(())
    }

    /// Takes `track` out of the composite. Returns the elements to stop (on
    /// a thread that may block).
    pub fn remove_input(&mut self, track: &TrackId) -> Vec<gst::Element> {
        let Some(i) = self.inputs.iter().position(|i| &i.track == track) else {
            return Vec::new();
        };
        let input = self.inputs.remove(i);
        input.tee.release_request_pad(&input.tee_pad);
        for m in &mut self.mcu_audio {
            m.unlink(track);
        }
        // Releasing the aggregator pad flushes it, which frees a thread
        // blocked pushing into it; then the branch can stop.
        let aggregator = match input.kind {
            TrackKind::Video => &self.compositor,
            TrackKind::Audio => &self.audiomixer,
        };
        aggregator.release_request_pad(&input.mixer_pad);
        self.relayout();
        let mut out: Vec<gst::Element> = vec![input.bin.upcast()];
        if let Some((dec, _)) = input.decoded {
            out.push(dec);
        }
        out
    }

    /// The composite as VP8 RTP (a tee, and its SSRC), created on first use.
    pub fn mcu_video(
        &mut self,
        pipeline: &gst::Pipeline,
        codecs: &Selection,
    ) -> Result<(gst::Element, u32), MediaError> {
        if let Some(v) = &self.mcu_video {
            return Ok((v.rtp.clone(), v.ssrc));
        }
        let ssrc = new_ssrc();
        let vp8 = codecs
            .encoder(Codec::Vp8)
            .ok_or_else(|| MediaError::MissingElement("a VP8 encoder (vp8enc)".into()))?;
        let q = make("queue", None)?;
        q.set_property_from_str("leaky", "downstream");
        q.set_property("max-size-buffers", 0u32);
        q.set_property("max-size-bytes", 0u32);
        q.set_property("max-size-time", 500_000_000u64);
        let enc = make_encoder(
            vp8,
            &EncoderSettings {
                bitrate_kbps: 1500,
                keyframe_interval: (self.config.fps * 2) as u32,
                low_latency: true,
            },
        )?;
        let pay = make("rtpvp8pay", None)?;
        pay.set_property("pt", 96u32);
        pay.set_property("ssrc", ssrc);
        pay.set_property_from_str("picture-id-mode", "15-bit");
        let rtp = make("tee", None)?;
        rtp.set_property("allow-not-linked", true);
        let elements = vec![q.clone(), enc, pay, rtp.clone()];
        add_chain(pipeline, &elements)?;
        // Playing before the running raw tee pushes into it.
        start_downstream_first(&elements);
        let raw_pad = self
            .raw
            .request_pad_simple("src_%u")
            .ok_or_else(|| MediaError::Pipeline("raw tee pad".into()))?;
        raw_pad
            .link(
                &q.static_pad("sink")
                    .ok_or_else(|| MediaError::Pipeline("queue pad".into()))?,
            )
            .map_err(|e| MediaError::Pipeline(format!("MCU video: {e:?}")))?;
        self.mcu_video = Some(McuVideo {
            elements,
            raw_pad,
            rtp: rtp.clone(),
            ssrc,
        });
        Ok((rtp, ssrc))
    }

    /// `owner`'s MCU audio as Opus RTP (a tee, and its SSRC): everyone's
    /// sound but theirs.
    pub fn mcu_audio(
        &mut self,
        pipeline: &gst::Pipeline,
        owner: &ParticipantId,
        codecs: &Selection,
    ) -> Result<(gst::Element, u32), MediaError> {
        if let Some(m) = self.mcu_audio.iter().find(|m| &m.owner == owner) {
            return Ok((m.rtp.clone(), m.ssrc));
        }
        let ssrc = new_ssrc();
        let opus = codecs
            .encoder(Codec::Opus)
            .ok_or_else(|| MediaError::MissingElement("an Opus encoder (opusenc)".into()))?;
        let [silence, silence_caps, mixer, caps] = live_audio_mix()?;
        let conv = make("audioconvert", None)?;
        let enc = make_encoder(
            opus,
            &EncoderSettings {
                bitrate_kbps: 48,
                keyframe_interval: 1,
                low_latency: true,
            },
        )?;
        let pay = make("rtpopuspay", None)?;
        pay.set_property("pt", 111u32);
        pay.set_property("ssrc", ssrc);
        let rtp = make("tee", None)?;
        rtp.set_property("allow-not-linked", true);
        let elements = vec![
            silence,
            silence_caps,
            mixer.clone(),
            caps,
            conv,
            enc,
            pay,
            rtp.clone(),
        ];
        add_chain(pipeline, &elements)?;
        start_downstream_first(&elements);
        let mut out = McuAudio {
            owner: owner.clone(),
            mixer,
            elements,
            links: Vec::new(),
            rtp: rtp.clone(),
            ssrc,
        };
        for i in self
            .inputs
            .iter()
            .filter(|i| i.kind == TrackKind::Audio && &i.owner != owner)
        {
            if let Some((dec, _)) = &i.decoded {
                out.link(&i.track, dec, i.muted)?;
            }
        }
        self.mcu_audio.push(out);
        Ok((rtp, ssrc))
    }

    /// Drops `owner`'s MCU audio; returns the elements to stop.
    pub fn remove_mcu(&mut self, owner: &ParticipantId) -> Vec<gst::Element> {
        let Some(i) = self.mcu_audio.iter().position(|m| &m.owner == owner) else {
            return Vec::new();
        };
        let mut m = self.mcu_audio.remove(i);
        let tracks: Vec<TrackId> = m.links.iter().map(|l| l.0.clone()).collect();
        for t in &tracks {
            m.unlink(t);
        }
        m.elements
    }

    /// Whether MCU participants use the composite.
    pub fn has_mcu(&self) -> bool {
        !self.mcu_audio.is_empty()
    }

    /// Shows or hides a participant's video (muted video leaves the grid).
    pub fn set_shown(&mut self, owner: &ParticipantId, shown: bool) {
        let mut changed = false;
        for i in self
            .inputs
            .iter_mut()
            .filter(|i| &i.owner == owner && i.kind == TrackKind::Video)
        {
            changed |= i.shown != shown;
            i.shown = shown;
        }
        if changed {
            self.relayout();
        }
    }

    /// Applies a participant's mute state: muted audio leaves the mix,
    /// muted video leaves the grid.
    pub fn set_muted(&mut self, owner: &ParticipantId, audio_muted: bool, video_muted: bool) {
        for i in self
            .inputs
            .iter_mut()
            .filter(|i| &i.owner == owner && i.kind == TrackKind::Audio && i.muted != audio_muted)
        {
            i.mixer_pad.set_property("mute", audio_muted);
            i.muted = audio_muted;
            // Nor in anyone's MCU mix.
            for m in &self.mcu_audio {
                for (_, _, _, pad) in m.links.iter().filter(|l| l.0 == i.track) {
                    pad.set_property("mute", audio_muted);
                }
            }
        }
        self.set_shown(owner, !video_muted);
    }

    /// Arrangement of the tiles from now on.
    pub fn set_layout(&mut self, layout: LayoutMode) {
        if self.config.layout != layout {
            self.config.layout = layout;
            self.relayout();
        }
    }

    /// Who the speaker layout puts large.
    pub fn set_focus(&mut self, owner: Option<ParticipantId>) {
        if self.focus != owner {
            self.focus = owner;
            if self.config.layout == LayoutMode::Speaker {
                self.relayout();
            }
        }
    }

    /// Participants (in tile order) and the rectangle of each, for tests and clients.
    pub fn tiles(&self) -> Vec<(ParticipantId, super::layout::Rect)> {
        let shown: Vec<&Input> = self
            .inputs
            .iter()
            .filter(|i| i.kind == TrackKind::Video && i.shown)
            .collect();
        let focus = self
            .focus
            .as_ref()
            .and_then(|f| shown.iter().position(|i| &i.owner == f));
        let rects = layout(
            self.config.layout,
            shown.len(),
            focus,
            self.config.width,
            self.config.height,
        );
        shown.iter().map(|i| i.owner.clone()).zip(rects).collect()
    }

    fn relayout(&self) {
        let tiles = self.tiles();
        for input in self.inputs.iter().filter(|i| i.kind == TrackKind::Video) {
            match tiles
                .iter()
                .find(|(owner, _)| owner == &input.owner)
                .filter(|_| input.shown)
            {
                Some((_, r)) => {
                    input.mixer_pad.set_property("xpos", r.x);
                    input.mixer_pad.set_property("ypos", r.y);
                    input.mixer_pad.set_property("width", r.w);
                    input.mixer_pad.set_property("height", r.h);
                    input.mixer_pad.set_property("alpha", 1.0f64);
                }
                None => input.mixer_pad.set_property("alpha", 0.0f64),
            }
        }
    }

    /// Tracks being mixed.
    pub fn inputs(&self) -> Vec<TrackId> {
        self.inputs.iter().map(|i| i.track.clone()).collect()
    }

    /// Everything to stop when the mixer goes (inputs first).
    pub fn into_elements(mut self) -> Vec<gst::Element> {
        let tracks: Vec<TrackId> = self.inputs.iter().map(|i| i.track.clone()).collect();
        let mut out = Vec::new();
        for t in tracks {
            out.extend(self.remove_input(&t));
        }
        let owners: Vec<ParticipantId> = self.mcu_audio.iter().map(|m| m.owner.clone()).collect();
        for o in owners {
            out.extend(self.remove_mcu(&o));
        }
        if let Some(v) = self.mcu_video.take() {
            self.raw.release_request_pad(&v.raw_pad);
            out.extend(v.elements);
        }
        out.append(&mut self.elements);
        out
    }
}
