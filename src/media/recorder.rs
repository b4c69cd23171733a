//! Recording branches: `tee → queue → (depay/parse) → mux → filesink`, added
//! while the room runs and finished by sending EOS into the branch only.
//!
//! Files are fragmented MP4 (a fragment per second: a killed server leaves
//! a file that plays up to the last fragment) or Matroska (clusters written
//! as they come; duration and cues once finished). MP4 cannot carry VP8, so a VP8 track of an MP4
//! `tracks` recording is written as WebM-compatible Matroska.

use super::{MediaError, make};
use crate::ids::RecordingId;
use crate::model::RecordingFormat;
use gst::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// A recording branch finished writing (EOS reached the file) or failed.
#[derive(Debug)]
pub struct BranchDone {
    /// Recording.
    pub recording: RecordingId,
    /// File written.
    pub file: PathBuf,
}

/// One file being written.
pub struct RecordingBranch {
    recording: RecordingId,
    bin: gst::Bin,
    /// (tee, tee pad, branch sink pad).
    links: Vec<(gst::Element, gst::Pad, gst::Pad)>,
    /// The file.
    pub file: PathBuf,
    /// It records the composite (the mixer must stay).
    pub composite: bool,
    done: Arc<AtomicBool>,
}

/// File extension of a container.
pub fn extension(format: RecordingFormat) -> &'static str {
    match format {
        RecordingFormat::Mp4 => "mp4",
        RecordingFormat::Mkv => "mkv",
    }
}

/// Recording outputs from `pipelines/recording.toml`: muxers and file names.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct Templates {
    /// MP4 settings.
    pub mp4: MuxerTemplate,
    /// Matroska settings.
    pub mkv: MuxerTemplate,
    /// File names.
    pub files: FileNames,
}

/// The container element of a format.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct MuxerTemplate {
    /// One element in gst-launch syntax, e.g. `mp4mux fragment-duration=1000`.
    pub muxer: String,
}

/// How recording files are named (without extension).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct FileNames {
    /// The composite's file.
    pub composite: String,
    /// A track's file: `{participant}`, `{kind}`, `{track}` are replaced.
    pub track: String,
}

/// The built-in copy of `pipelines/recording.toml`.
pub const DEFAULT_TEMPLATES: &str = include_str!("../../pipelines/recording.toml");

static TEMPLATES: std::sync::OnceLock<Templates> = std::sync::OnceLock::new();

impl Templates {
    /// Parses and checks a template file (every muxer must build).
    pub fn parse(text: &str) -> Result<Self, String> {
        let t: Templates = toml::from_str(text).map_err(|e| e.to_string())?;
        for m in [&t.mp4.muxer, &t.mkv.muxer] {
            build_muxer(m)?;
        }
        if t.files.composite.is_empty() || t.files.track.is_empty() {
            return Err("file names must not be empty".into());
        }
        Ok(t)
    }

    /// Reads `dir/recording.toml`, falling back to the built-in copy.
    pub fn load(dir: &Path) -> Self {
        let path = dir.join("recording.toml");
        if let Ok(text) = std::fs::read_to_string(&path) {
            match Self::parse(&text) {
                Ok(t) => return t,
                Err(e) => tracing::warn!("{}: {e}; using the built-in templates", path.display()),
            }
        }
        Self::builtin()
    }

    fn builtin() -> Self {
        Self::parse(DEFAULT_TEMPLATES).unwrap_or_else(|_| Templates {
            mp4: MuxerTemplate {
                muxer: "mp4mux fragment-duration=1000".into(),
            },
            mkv: MuxerTemplate {
                muxer: "matroskamux".into(),
            },
            files: FileNames {
                composite: "composite".into(),
                track: "{participant}-{kind}-{track}".into(),
            },
        })
    }

    /// Makes these the templates recordings use (once, at start).
    pub fn install(self) {
        let _ = TEMPLATES.set(self);
    }

    /// The templates in use.
    pub fn current() -> &'static Templates {
        TEMPLATES.get_or_init(Self::builtin)
    }

    /// The composite's file name (without extension).
    pub fn composite_stem(&self) -> String {
        plain(&self.files.composite)
    }

    /// A track's file name (without extension).
    pub fn track_stem(&self, participant: &str, kind: &str, track: &str) -> String {
        plain(
            &self
                .files
                .track
                .replace("{participant}", participant)
                .replace("{kind}", kind)
                .replace("{track}", track),
        )
    }

    fn muxer(&self, format: RecordingFormat) -> Result<gst::Element, MediaError> {
        let desc = match format {
            RecordingFormat::Mp4 => &self.mp4.muxer,
            RecordingFormat::Mkv => &self.mkv.muxer,
        };
        build_muxer(desc).map_err(MediaError::Pipeline)
    }
}

/// Keeps letters, digits, `-`, `_` and `.` (a file name, never a path).
fn plain(name: &str) -> String {
    let s: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .collect();
    let s = s.trim_start_matches('.');
    if s.is_empty() {
        "recording".into()
    } else {
        s.chars().take(150).collect()
    }
}

fn build_muxer(desc: &str) -> Result<gst::Element, String> {
    let e = gst::parse::launch(desc).map_err(|e| format!("muxer \"{desc}\": {e}"))?;
    // Several elements parse into a pipeline (or bin).
    if e.is::<gst::Bin>() {
        return Err(format!("muxer \"{desc}\" must be one element"));
    }
    for t in ["video_%u", "audio_%u"] {
        if e.pad_template(t).is_none() {
            return Err(format!("muxer \"{desc}\" has no {t} pads"));
        }
    }
    Ok(e)
}

impl RecordingBranch {
    fn build(
        pipeline: &gst::Pipeline,
        recording: &RecordingId,
        name: &str,
        format: RecordingFormat,
        inputs: &[(&gst::Element, &str, bool)],
        file: &Path,
        events: mpsc::UnboundedSender<BranchDone>,
    ) -> Result<Self, MediaError> {
        let bin = gst::Bin::with_name(&format!("rec_{recording}_{name}"));
        let mux = Templates::current().muxer(format)?;
        let sink = make("filesink", None)?;
        sink.set_property("location", file.to_string_lossy().as_ref());
        sink.set_property("sync", false);
        sink.set_property("async", false);
        // Every write goes straight to the file: what the muxer wrote
        // before its EOS (the final header) is on disk when `BranchDone`
        // is sent, and a killed server loses nothing buffered in here.
        sink.set_property_from_str("buffer-mode", "unbuffered");
        bin.add_many([&mux, &sink])
            .map_err(|e| MediaError::Pipeline(format!("recording: {e}")))?;
        mux.link(&sink)
            .map_err(|e| MediaError::Pipeline(format!("recording mux: {e}")))?;
        let mut sink_pads = Vec::new();
        for (i, (_, chain, is_audio)) in inputs.iter().enumerate() {
            let part = gst::parse::bin_from_description(chain, true)
                .map_err(|e| MediaError::Pipeline(format!("recording chain {chain}: {e}")))?;
            bin.add(&part)
                .map_err(|e| MediaError::Pipeline(format!("recording chain: {e}")))?;
            let src = part
                .static_pad("src")
                .ok_or_else(|| MediaError::Pipeline("chain src".into()))?;
            let template = if *is_audio { "audio_%u" } else { "video_%u" };
            if !*is_audio {
                // A file starts with a keyframe: earlier frames would not decode.
                let started = AtomicBool::new(false);
                src.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
                    if let Some(gst::PadProbeData::Buffer(b)) = &info.data {
                        if !started.load(Ordering::Relaxed)
                            && b.flags().contains(gst::BufferFlags::DELTA_UNIT)
                        {
                            return gst::PadProbeReturn::Drop;
                        }
                        started.store(true, Ordering::Relaxed);
                    }
                    gst::PadProbeReturn::Ok
                });
            }
            let mux_pad = mux
                .request_pad_simple(template)
                .ok_or_else(|| MediaError::Pipeline(format!("muxer refused {template}")))?;
            src.link(&mux_pad)
                .map_err(|e| MediaError::Pipeline(format!("link to muxer: {e:?}")))?;
            let sink_pad = part
                .static_pad("sink")
                .ok_or_else(|| MediaError::Pipeline("chain sink".into()))?;
            let ghost = gst::GhostPad::builder_with_target(&sink_pad)
                .map_err(|e| MediaError::Pipeline(format!("ghost pad: {e}")))?
                .name(format!("sink_{i}"))
                .build();
            bin.add_pad(&ghost)
                .map_err(|e| MediaError::Pipeline(format!("ghost pad: {e}")))?;
            sink_pads.push(ghost.upcast::<gst::Pad>());
        }
        // EOS reaching the file means it is complete.
        let done = Arc::new(AtomicBool::new(false));
        {
            let done = done.clone();
            let recording = recording.clone();
            let file = file.to_owned();
            let events = Mutex::new(events);
            sink.static_pad("sink")
                .ok_or_else(|| MediaError::Pipeline("filesink pad".into()))?
                .add_probe(gst::PadProbeType::EVENT_DOWNSTREAM, move |_, info| {
                    if let Some(gst::PadProbeData::Event(ev)) = &info.data
                        && ev.type_() == gst::EventType::Eos
                        && !done.swap(true, Ordering::SeqCst)
                    {
                        let tx = events.lock().unwrap_or_else(|p| p.into_inner());
                        let _ = tx.send(BranchDone {
                            recording: recording.clone(),
                            file: file.clone(),
                        });
                    }
                    gst::PadProbeReturn::Ok
                });
        }
        pipeline
            .add(&bin)
            .map_err(|e| MediaError::Pipeline(format!("add recording: {e}")))?;
        let _ = bin.sync_state_with_parent();
        let mut links = Vec::new();
        for ((tee, _, _), sink_pad) in inputs.iter().zip(sink_pads) {
            let tee_pad = tee
                .request_pad_simple("src_%u")
                .ok_or_else(|| MediaError::Pipeline("tee pad".into()))?;
            tee_pad
                .link(&sink_pad)
                .map_err(|e| MediaError::Pipeline(format!("link tee to recording: {e:?}")))?;
            links.push(((*tee).clone(), tee_pad, sink_pad));
        }
        Ok(Self {
            recording: recording.clone(),
            bin,
            links,
            file: file.to_owned(),
            composite: name == "composite",
            done,
        })
    }

    /// The composite: H.264 video and AAC audio of the mixer.
    pub fn composite(
        pipeline: &gst::Pipeline,
        recording: &RecordingId,
        video: &gst::Element,
        audio: &gst::Element,
        format: RecordingFormat,
        dir: &Path,
        events: mpsc::UnboundedSender<BranchDone>,
    ) -> Result<Self, MediaError> {
        let file = dir.join(format!(
            "{}.{}",
            Templates::current().composite_stem(),
            extension(format)
        ));
        let q = "queue max-size-buffers=0 max-size-bytes=0 max-size-time=3000000000";
        let inputs = [
            (video, format!("{q} ! h264parse"), false),
            (audio, format!("{q} ! aacparse"), true),
        ];
        let refs: Vec<(&gst::Element, &str, bool)> = inputs
            .iter()
            .map(|(t, c, a)| (*t, c.as_str(), *a))
            .collect();
        Self::build(
            pipeline,
            recording,
            "composite",
            format,
            &refs,
            &file,
            events,
        )
    }

    /// One published track, as published (no re-encoding), into
    /// `base` plus the format's extension.
    pub fn track(
        pipeline: &gst::Pipeline,
        recording: &RecordingId,
        tee: &gst::Element,
        codec: &str,
        format: RecordingFormat,
        base: &Path,
        events: mpsc::UnboundedSender<BranchDone>,
    ) -> Result<Self, MediaError> {
        let stem = base
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| MediaError::Pipeline(format!("bad file name {}", base.display())))?;
        let q = "queue max-size-buffers=0 max-size-bytes=0 max-size-time=3000000000";
        let (chain, format) = match codec {
            "VP8" => (
                format!("{q} ! rtpvp8depay wait-for-keyframe=true"),
                RecordingFormat::Mkv,
            ),
            "H264" => (
                format!("{q} ! rtph264depay wait-for-keyframe=true ! h264parse"),
                format,
            ),
            "OPUS" => (format!("{q} ! rtpopusdepay ! opusparse"), format),
            other => return Err(MediaError::Pipeline(format!("cannot record {other}"))),
        };
        let file = base.with_file_name(format!("{stem}.{}", extension(format)));
        let is_audio = codec == "OPUS";
        Self::build(
            pipeline,
            recording,
            stem,
            format,
            &[(tee, chain.as_str(), is_audio)],
            &file,
            events,
        )
    }

    /// The recording this branch belongs to.
    pub fn recording(&self) -> &RecordingId {
        &self.recording
    }

    /// Whether the file is complete.
    pub fn is_done(&self) -> bool {
        self.done.load(Ordering::SeqCst)
    }

    /// Stops feeding the branch and sends EOS through it; `BranchDone`
    /// follows when the file is complete.
    pub fn finish(&mut self) {
        for (tee, tee_pad, sink_pad) in self.links.drain(..) {
            tee.release_request_pad(&tee_pad);
            sink_pad.send_event(gst::event::Eos::new());
        }
    }

    /// The branch's elements, to stop and remove once done (or abandoned).
    pub fn into_bin(mut self) -> gst::Bin {
        for (tee, tee_pad, _) in self.links.drain(..) {
            tee.release_request_pad(&tee_pad);
        }
        self.bin.clone()
    }

    /// Whether the branch takes its data from `tee`.
    pub fn reads(&self, tee: &gst::Element) -> bool {
        self.links.iter().any(|(t, _, _)| t == tee)
    }

    /// Whether a bus message came from inside this branch.
    pub fn owns(&self, obj: &gst::Object) -> bool {
        obj.has_as_ancestor(&self.bin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_templates_parse() {
        gst::init().unwrap();
        let t = Templates::parse(DEFAULT_TEMPLATES).expect("built-in templates");
        assert_eq!(t.composite_stem(), "composite");
        assert_eq!(
            t.track_stem("p_1", "video", "t_2"),
            "p_1-video-t_2".to_owned()
        );
        let mux = t.muxer(RecordingFormat::Mp4).unwrap();
        assert_eq!(mux.property::<u32>("fragment-duration"), 1000);
    }

    #[test]
    fn bad_templates_are_refused() {
        gst::init().unwrap();
        let with = |mp4: &str| {
            format!(
                "[mp4]\nmuxer = \"{mp4}\"\n[mkv]\nmuxer = \"matroskamux\"\n[files]\ncomposite = \"c\"\ntrack = \"{{track}}\"\n"
            )
        };
        assert!(Templates::parse(&with("mp4mux")).is_ok());
        for bad in ["nosuchmux", "fakesink", "mp4mux ! filesink", ""] {
            assert!(Templates::parse(&with(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn file_names_stay_file_names() {
        gst::init().unwrap();
        let t = Templates {
            files: FileNames {
                composite: "../../etc/passwd".into(),
                track: "{participant}/{kind} {track}".into(),
            },
            ..Templates::builtin()
        };
        assert_eq!(t.composite_stem(), "etcpasswd");
        assert_eq!(t.track_stem("p", "audio", "t"), "paudiot");
        let empty = Templates {
            files: FileNames {
                composite: "..".into(),
                track: "x".into(),
            },
            ..Templates::builtin()
        };
        assert_eq!(empty.composite_stem(), "recording");
    }
}
