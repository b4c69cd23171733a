//! A room's live broadcast: the composite (or one participant's tracks)
//! encoded once per rendition and fanned out to HLS, WHEP viewers and RTMP
//! targets.
//!
//! ```text
//! source video ─┬─ (passthrough H.264)          ─┐
//!               └─ decode → scale → encode ×N   ─┴─ rendition tee ─┬─ mpegtsmux → HLS writer (per rendition)
//!                                                                  ├─ rtph264pay → RTP tee → WHEP viewers
//!                                                                  └─ appsink → RTMP targets
//! source audio ── AAC tee (HLS, RTMP) · Opus RTP tee (WHEP)
//! ```
//!
//! Every branch starts with a leaky queue, so a slow output drops its own
//! data and never stalls the room. Nothing is encoded that the source
//! already has: an H.264 participant without renditions is passed through.

use super::codecs::{Codec, EncoderSettings, Selection, encoder_description};
use super::hls::HlsLive;
use super::rtmp::RtmpFeed;
use super::rtp::TrackKind;
use super::{MediaError, make};
use crate::ids::BroadcastId;
use gst::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One rung of the ABR ladder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rendition {
    /// Its name in the API and the HLS paths (`720p`).
    pub name: &'static str,
    /// Width, pixels.
    pub width: i32,
    /// Height, pixels.
    pub height: i32,
    /// H.264 bitrate, kbit/s.
    pub video_kbps: u32,
}

/// The renditions a broadcast may ask for, largest first.
pub const LADDER: [Rendition; 5] = [
    Rendition {
        name: "1080p",
        width: 1920,
        height: 1080,
        video_kbps: 5000,
    },
    Rendition {
        name: "720p",
        width: 1280,
        height: 720,
        video_kbps: 2500,
    },
    Rendition {
        name: "480p",
        width: 854,
        height: 480,
        video_kbps: 1200,
    },
    Rendition {
        name: "360p",
        width: 640,
        height: 360,
        video_kbps: 800,
    },
    Rendition {
        name: "240p",
        width: 426,
        height: 240,
        video_kbps: 400,
    },
];

/// The ladder rung called `name`.
pub fn rendition(name: &str) -> Option<Rendition> {
    LADDER.iter().copied().find(|r| r.name == name)
}

/// H.264 that every WebRTC viewer and browser decoder takes.
pub const H264_PROFILE_CAPS: &str = "video/x-h264,profile=constrained-baseline";

/// AAC bitrate of broadcasts, kbit/s.
const AUDIO_KBPS: u32 = 128;
/// HLS segment length, seconds (keyframes come at least this often).
pub const HLS_SEGMENT_S: u32 = super::hls::SEGMENT_TARGET.as_secs() as u32;
/// Fixed payload types of the broadcast's own RTP (viewers get theirs).
const H264_PT: u8 = 102;
const OPUS_PT: u8 = 111;

/// Where the broadcast's picture and sound come from.
pub enum Source {
    /// The room's mixer.
    Composite {
        /// Encoded H.264 of the composite.
        encoded: gst::Element,
        /// The raw composite picture.
        raw: gst::Element,
        /// Encoded AAC of the mix.
        aac: gst::Element,
        /// The raw mix.
        pcm: gst::Element,
        /// Composite size.
        width: i32,
        /// Composite size.
        height: i32,
        /// Composite bitrate, kbit/s.
        video_kbps: u32,
    },
    /// One participant's tracks, as published (RTP tees).
    Tracks {
        /// Video tee and its RTP encoding name.
        video: Option<(gst::Element, String)>,
        /// Opus audio tee.
        audio: Option<gst::Element>,
    },
}

/// What to produce.
#[derive(Debug, Clone)]
pub struct Outputs {
    /// Write HLS under this directory.
    pub hls_dir: Option<PathBuf>,
    /// Where the HLS writers publish how far they got.
    pub hls_live: HlsLive,
    /// Produce RTP for WHEP viewers.
    pub whep: bool,
    /// Feed RTMP targets.
    pub rtmp: bool,
    /// Renditions asked for (empty: one, as the source is).
    pub renditions: Vec<Rendition>,
}

/// One encoded rendition.
#[derive(Debug, Clone)]
pub struct VideoRendition {
    /// Name (`720p`, or `source` for a passthrough).
    pub name: String,
    /// Size, when known.
    pub size: Option<(i32, i32)>,
    /// Bitrate for the master playlist, kbit/s.
    pub kbps: u32,
    /// Parsed H.264 (byte-stream, whole access units).
    pub tee: gst::Element,
}

/// The broadcast's outputs in the room's pipeline.
pub struct BroadcastMedia {
    /// Which broadcast.
    pub id: BroadcastId,
    /// Element factories of the encoders it added.
    pub encoders: Vec<String>,
    /// Video is re-encoded.
    pub transcode_video: bool,
    /// Audio is re-encoded.
    pub transcode_audio: bool,
    /// Renditions, largest first.
    pub renditions: Vec<VideoRendition>,
    /// H.264 RTP (of the first rendition) for WHEP viewers.
    pub whep_video: Option<gst::Element>,
    /// Opus RTP for WHEP viewers.
    pub whep_audio: Option<gst::Element>,
    /// Appsinks taking `whep_video` / `whep_audio` to the WHEP egress.
    pub whep_sinks: Vec<(TrackKind, gst_app::AppSink)>,
    /// RTMP targets take from this.
    pub rtmp: Option<Arc<RtmpFeed>>,
    bins: Vec<gst::Element>,
    /// Tee pads this broadcast requested (released first on stop).
    links: Vec<(gst::Element, gst::Pad)>,
    /// Branches to link to running tees once they are all playing.
    pending: Vec<(gst::Element, gst::Pad)>,
    hls: Vec<gst::Element>,
}

const LEAKY: &str =
    "queue leaky=downstream max-size-buffers=0 max-size-bytes=0 max-size-time=2000000000";

/// A bin from a gst-launch description with its first sink / last src ghosted.
fn chain(pipeline: &gst::Pipeline, name: &str, description: &str) -> Result<gst::Bin, MediaError> {
    let bin = gst::parse::bin_from_description(description, true)
        .map_err(|e| MediaError::Pipeline(format!("broadcast {name}: {e}")))?;
    bin.set_property("name", name);
    pipeline
        .add(&bin)
        .map_err(|e| MediaError::Pipeline(format!("add broadcast {name}: {e}")))?;
    Ok(bin)
}

fn new_tee(pipeline: &gst::Pipeline) -> Result<gst::Element, MediaError> {
    let tee = make("tee", None)?;
    tee.set_property("allow-not-linked", true);
    pipeline
        .add(&tee)
        .map_err(|e| MediaError::Pipeline(format!("add tee: {e}")))?;
    Ok(tee)
}

fn pad(e: &impl IsA<gst::Element>, name: &str) -> Result<gst::Pad, MediaError> {
    e.static_pad(name)
        .ok_or_else(|| MediaError::Pipeline(format!("no {name} pad")))
}

impl BroadcastMedia {
    /// Builds the outputs of broadcast `id` from `source` into `pipeline`.
    pub fn new(
        pipeline: &gst::Pipeline,
        id: &BroadcastId,
        source: Source,
        outputs: &Outputs,
        codecs: &Selection,
    ) -> Result<Self, MediaError> {
        let mut me = Self {
            id: id.clone(),
            encoders: Vec::new(),
            transcode_video: false,
            transcode_audio: false,
            renditions: Vec::new(),
            whep_video: None,
            whep_audio: None,
            whep_sinks: Vec::new(),
            rtmp: None,
            bins: Vec::new(),
            links: Vec::new(),
            pending: Vec::new(),
            hls: Vec::new(),
        };
        match me.build(pipeline, source, outputs, codecs) {
            Ok(()) => Ok(me),
            Err(e) => {
                // Stopped off the caller's thread: the room's task holds
                // the room's lock, and a streaming thread of these bins may
                // be waiting for it.
                super::tear_down_later(
                    pipeline,
                    me.into_elements(),
                    std::time::Duration::ZERO,
                    "broadcast-teardown",
                );
                Err(e)
            }
        }
    }

    fn build(
        &mut self,
        pipeline: &gst::Pipeline,
        source: Source,
        outputs: &Outputs,
        codecs: &Selection,
    ) -> Result<(), MediaError> {
        let h264 = codecs.encoder(Codec::H264).unwrap_or("x264enc").to_owned();
        let (aac, opus_rtp) = match source {
            Source::Composite {
                encoded,
                raw,
                aac,
                pcm,
                width,
                height,
                video_kbps,
            } => {
                let wanted = if outputs.renditions.is_empty() {
                    vec![Rendition {
                        name: LADDER
                            .iter()
                            .find(|r| (r.width, r.height) == (width, height))
                            .map_or("source", |r| r.name),
                        width,
                        height,
                        video_kbps,
                    }]
                } else {
                    outputs.renditions.clone()
                };
                for r in wanted {
                    let tee = if (r.width, r.height) == (width, height) {
                        encoded.clone()
                    } else {
                        self.scaled(pipeline, &raw, &r, &h264)?
                    };
                    self.renditions.push(VideoRendition {
                        name: r.name.to_owned(),
                        size: Some((r.width, r.height)),
                        kbps: r.video_kbps,
                        tee,
                    });
                }
                let opus_rtp = if outputs.whep {
                    let opus = codecs.encoder(Codec::Opus).unwrap_or("opusenc");
                    let bin = self.branch(
                        pipeline,
                        &pcm,
                        "opus",
                        &format!(
                            "{LEAKY} ! audioconvert ! audioresample ! {opus} ! rtpopuspay pt={OPUS_PT} ssrc={}",
                            new_ssrc()
                        ),
                    )?;
                    self.encoders.push(opus.to_owned());
                    Some(self.tee_after(pipeline, &bin)?)
                } else {
                    None
                };
                (Some(aac), opus_rtp)
            }
            Source::Tracks { video, audio } => {
                if let Some((tee, codec)) = video {
                    self.track_video(pipeline, &tee, &codec, outputs, codecs, &h264)?;
                }
                let aac = match &audio {
                    Some(tee) if outputs.hls_dir.is_some() || outputs.rtmp => {
                        let enc = codecs.encoder(Codec::Aac).unwrap_or("avenc_aac");
                        let dec = codecs.decoder(Codec::Opus).unwrap_or("opusdec");
                        let settings = EncoderSettings {
                            bitrate_kbps: AUDIO_KBPS,
                            keyframe_interval: 1,
                            low_latency: true,
                        };
                        let bin = self.branch(
                            pipeline,
                            tee,
                            "aac",
                            &format!(
                                "{LEAKY} ! rtpopusdepay ! {dec} plc=true ! audioconvert ! audioresample ! {} ! aacparse",
                                encoder_description(enc, &settings)
                            ),
                        )?;
                        self.encoders.push(enc.to_owned());
                        self.transcode_audio = true;
                        Some(self.tee_after(pipeline, &bin)?)
                    }
                    _ => None,
                };
                (aac, audio.filter(|_| outputs.whep))
            }
        };

        if let Some(dir) = &outputs.hls_dir {
            self.hls(pipeline, dir, &outputs.hls_live, aac.as_ref())?;
        }
        if outputs.whep {
            self.whep_audio = opus_rtp;
            if let Some(top) = self.renditions.first().map(|r| r.tee.clone())
                && self.whep_video.is_none()
            {
                let bin = self.branch(
                    pipeline,
                    &top,
                    "rtp",
                    &format!(
                        "{LEAKY} ! rtph264pay config-interval=-1 aggregate-mode=zero-latency mtu=1200 pt={H264_PT} ssrc={}",
                        new_ssrc()
                    ),
                )?;
                self.whep_video = Some(self.tee_after(pipeline, &bin)?);
            }
            let tees = [
                (TrackKind::Video, self.whep_video.clone()),
                (TrackKind::Audio, self.whep_audio.clone()),
            ];
            for (kind, tee) in tees {
                let Some(tee) = tee else { continue };
                // No queue: the egress's callback only copies and queues.
                // Not async: a sink that prerolls on its own in a running
                // pipeline was seen to stay in PAUSED (no sample ever came).
                let bin = self.branch(
                    pipeline,
                    &tee,
                    &format!("whep{}", kind.as_str()),
                    "appsink name=sink sync=false async=false max-buffers=64 drop=true enable-last-sample=false",
                )?;
                let sink = bin
                    .by_name("sink")
                    .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
                    .ok_or_else(|| MediaError::Pipeline("WHEP appsink".into()))?;
                self.whep_sinks.push((kind, sink));
            }
        }
        if outputs.rtmp {
            let feed = RtmpFeed::new();
            if let Some(top) = self.renditions.first().map(|r| r.tee.clone()) {
                let bin = self.branch(
                    pipeline,
                    &top,
                    "rtmpv",
                    "queue leaky=downstream max-size-buffers=0 max-size-bytes=0 max-size-time=2000000000 ! h264parse ! capsfilter caps=video/x-h264,stream-format=avc,alignment=au ! appsink name=sink sync=false max-buffers=300 drop=true",
                )?;
                feed.attach_video(&bin)?;
            }
            if let Some(aac) = &aac {
                let bin = self.branch(
                    pipeline,
                    aac,
                    "rtmpa",
                    "queue leaky=downstream max-size-buffers=0 max-size-bytes=0 max-size-time=2000000000 ! appsink name=sink sync=false max-buffers=300 drop=true",
                )?;
                feed.attach_audio(&bin)?;
            }
            self.rtmp = Some(feed);
        }
        // Everything plays before it is linked to a running tee: a tee that
        // pushes into a pad that is not active yet gets FLUSHING back and
        // stops its source (the room's mixer, a publisher's stream).
        for b in self.bins.iter().rev() {
            b.sync_state_with_parent()
                .map_err(|e| MediaError::Pipeline(format!("start broadcast: {e}")))?;
        }
        for (tee, sink) in std::mem::take(&mut self.pending) {
            let tee_pad = tee
                .request_pad_simple("src_%u")
                .ok_or_else(|| MediaError::Pipeline("tee refused a pad".into()))?;
            self.links.push((tee.clone(), tee_pad.clone()));
            // No caps check: it asks the source for its formats, and a
            // mixer that has just started may not know them yet (`Noformat`
            // now and then). A branch that cannot take the tee's format
            // fails on its own: its sink pad keeps the error from the tee,
            // and the room ends the broadcast on the bus error.
            tee_pad
                .link_full(&sink, gst::PadLinkCheck::HIERARCHY)
                .map_err(|e| MediaError::Pipeline(format!("link broadcast: {e:?}")))?;
        }
        Ok(())
    }

    /// A bin named `{id}_{what}` fed by a new pad of `tee`.
    fn branch(
        &mut self,
        pipeline: &gst::Pipeline,
        tee: &gst::Element,
        what: &str,
        description: &str,
    ) -> Result<gst::Bin, MediaError> {
        let bin = chain(pipeline, &format!("{}_{what}", self.id), description)?;
        self.bins.push(bin.clone().upcast());
        let sink = super::isolating_sink(&bin, "sink")?;
        self.pending.push((tee.clone(), sink));
        Ok(bin)
    }

    /// A new tee after `bin`'s output.
    fn tee_after(
        &mut self,
        pipeline: &gst::Pipeline,
        bin: &gst::Bin,
    ) -> Result<gst::Element, MediaError> {
        let tee = new_tee(pipeline)?;
        self.bins.push(tee.clone());
        pad(bin, "src")?
            .link(&pad(&tee, "sink")?)
            .map_err(|e| MediaError::Pipeline(format!("link broadcast tee: {e:?}")))?;
        Ok(tee)
    }

    /// Encodes raw video from `raw` (scaled to `size` when given) into a
    /// new rendition tee of constrained-baseline H.264.
    fn encoded(
        &mut self,
        pipeline: &gst::Pipeline,
        raw: &gst::Element,
        name: &str,
        size: Option<(i32, i32)>,
        kbps: u32,
        h264: &str,
    ) -> Result<gst::Element, MediaError> {
        let settings = EncoderSettings {
            bitrate_kbps: kbps,
            keyframe_interval: 30 * HLS_SEGMENT_S,
            low_latency: true,
        };
        let scale = size.map_or(String::new(), |(w, h)| {
            format!(
                "videoscale ! videoconvert ! capsfilter caps=video/x-raw,width={w},height={h},pixel-aspect-ratio=1/1 ! "
            )
        });
        let bin = self.branch(
            pipeline,
            raw,
            name,
            &format!(
                "{LEAKY} ! {scale}{} ! capsfilter caps={H264_PROFILE_CAPS} ! h264parse config-interval=-1 ! capsfilter caps=video/x-h264,stream-format=byte-stream,alignment=au",
                encoder_description(h264, &settings)
            ),
        )?;
        self.encoders.push(h264.to_owned());
        self.transcode_video = true;
        self.tee_after(pipeline, &bin)
    }

    /// Scales raw video from `raw` to `r` and encodes it; returns its tee.
    fn scaled(
        &mut self,
        pipeline: &gst::Pipeline,
        raw: &gst::Element,
        r: &Rendition,
        h264: &str,
    ) -> Result<gst::Element, MediaError> {
        self.encoded(
            pipeline,
            raw,
            r.name,
            Some((r.width, r.height)),
            r.video_kbps,
            h264,
        )
    }

    /// A participant's video: passed through when it is H.264 and no
    /// rendition is asked for, decoded once and encoded per rendition otherwise.
    fn track_video(
        &mut self,
        pipeline: &gst::Pipeline,
        tee: &gst::Element,
        codec: &str,
        outputs: &Outputs,
        codecs: &Selection,
        h264: &str,
    ) -> Result<(), MediaError> {
        if codec == "H264" && outputs.renditions.is_empty() {
            let bin = self.branch(
                pipeline,
                tee,
                "source",
                &format!(
                    "{LEAKY} ! rtph264depay request-keyframe=true wait-for-keyframe=true ! h264parse config-interval=-1 ! capsfilter caps=video/x-h264,stream-format=byte-stream,alignment=au"
                ),
            )?;
            let out = self.tee_after(pipeline, &bin)?;
            self.renditions.push(VideoRendition {
                name: "source".into(),
                size: None,
                kbps: 2500,
                tee: out,
            });
            if outputs.whep {
                // Viewers get the publisher's own packets.
                self.whep_video = Some(tee.clone());
            }
            return Ok(());
        }
        let (depay, codec_id) = match codec {
            "H264" => (
                "rtph264depay request-keyframe=true wait-for-keyframe=true ! h264parse",
                Codec::H264,
            ),
            "VP8" => (
                "rtpvp8depay request-keyframe=true wait-for-keyframe=true",
                Codec::Vp8,
            ),
            other => return Err(MediaError::Pipeline(format!("cannot broadcast {other}"))),
        };
        let dec = codecs
            .decoder(codec_id)
            .ok_or_else(|| MediaError::MissingElement(format!("a {codec} decoder")))?;
        let bin = self.branch(
            pipeline,
            tee,
            "decode",
            &format!("{LEAKY} ! {depay} ! {dec} ! videoconvert"),
        )?;
        let raw = self.tee_after(pipeline, &bin)?;
        if outputs.renditions.is_empty() {
            // Same size as published: encode without scaling.
            let out = self.encoded(pipeline, &raw, "source", None, 2500, h264)?;
            self.renditions.push(VideoRendition {
                name: "source".into(),
                size: None,
                kbps: 2500,
                tee: out,
            });
            return Ok(());
        }
        for r in outputs.renditions.clone() {
            let tee = self.scaled(pipeline, &raw, &r, h264)?;
            self.renditions.push(VideoRendition {
                name: r.name.to_owned(),
                size: Some((r.width, r.height)),
                kbps: r.video_kbps,
                tee,
            });
        }
        Ok(())
    }

    /// One HLS writer (segments and LL-HLS parts) per rendition, and the
    /// master playlist.
    fn hls(
        &mut self,
        pipeline: &gst::Pipeline,
        dir: &Path,
        live: &HlsLive,
        aac: Option<&gst::Element>,
    ) -> Result<(), MediaError> {
        for r in self.renditions.clone() {
            let rdir = dir.join(&r.name);
            std::fs::create_dir_all(&rdir)
                .map_err(|e| MediaError::Pipeline(format!("HLS directory: {e}")))?;
            let bin = super::hls::rendition_bin(
                &format!("{}_hls_{}", self.id, r.name),
                LEAKY,
                &rdir,
                live,
                &r.name,
                aac.is_some(),
            )?;
            pipeline
                .add(&bin)
                .map_err(|e| MediaError::Pipeline(format!("add HLS: {e}")))?;
            self.bins.push(bin.clone().upcast());
            self.hls.push(bin.clone().upcast());
            let mut inputs = vec![("v", r.tee.clone())];
            if let Some(aac) = aac {
                inputs.push(("a", aac.clone()));
            }
            for (name, tee) in inputs {
                let q = bin
                    .by_name(name)
                    .ok_or_else(|| MediaError::Pipeline("HLS queue".into()))?;
                let ghost = super::isolating_ghost(&bin, name, &pad(&q, "sink")?)?;
                self.pending.push((tee.clone(), ghost));
            }
        }
        let master = master_playlist(&self.renditions, aac.is_some());
        std::fs::write(dir.join("index.m3u8"), master)
            .map_err(|e| MediaError::Pipeline(format!("HLS master playlist: {e}")))?;
        Ok(())
    }

    /// Ends the HLS playlists (EOS into each HLS writer), then lets go of every
    /// tee. Returns the elements to stop and remove (on a thread that may block).
    pub fn into_elements(self) -> Vec<gst::Element> {
        for (tee, pad) in &self.links {
            tee.release_request_pad(pad);
        }
        for bin in &self.hls {
            for p in bin.sink_pads() {
                p.send_event(gst::event::Eos::new());
            }
        }
        if let Some(feed) = &self.rtmp {
            feed.close();
        }
        self.bins
    }
}

fn new_ssrc() -> u32 {
    rand::random::<u32>().max(1)
}

/// The master playlist listing each rendition's media playlist.
pub fn master_playlist(renditions: &[VideoRendition], audio: bool) -> String {
    let mut s = String::from("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-INDEPENDENT-SEGMENTS\n");
    let codecs = if audio {
        "avc1.42e01f,mp4a.40.2"
    } else {
        "avc1.42e01f"
    };
    for r in renditions {
        let bandwidth = (u64::from(r.kbps) + if audio { u64::from(AUDIO_KBPS) } else { 0 }) * 1100;
        s.push_str(&format!("#EXT-X-STREAM-INF:BANDWIDTH={bandwidth}"));
        if let Some((w, h)) = r.size {
            s.push_str(&format!(",RESOLUTION={w}x{h}"));
        }
        s.push_str(&format!(",CODECS=\"{codecs}\"\n{}/index.m3u8\n", r.name));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ladder_names_resolve() {
        assert_eq!(rendition("720p").map(|r| r.width), Some(1280));
        assert_eq!(rendition("240p").map(|r| r.height), Some(240));
        assert!(rendition("4k").is_none());
    }

    #[test]
    fn master_playlist_lists_every_rendition() {
        gst::init().unwrap();
        let tee = gst::ElementFactory::make("tee").build().unwrap();
        let rs = vec![
            VideoRendition {
                name: "720p".into(),
                size: Some((1280, 720)),
                kbps: 2500,
                tee: tee.clone(),
            },
            VideoRendition {
                name: "360p".into(),
                size: Some((640, 360)),
                kbps: 800,
                tee,
            },
        ];
        let m = master_playlist(&rs, true);
        assert!(m.starts_with("#EXTM3U\n"));
        assert!(m.contains("RESOLUTION=1280x720"));
        assert!(m.contains("RESOLUTION=640x360"));
        assert!(m.contains("\n720p/index.m3u8\n"));
        assert!(m.contains("\n360p/index.m3u8\n"));
        assert!(m.contains("BANDWIDTH=2890800"));
    }
}
