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
    done: Arc<AtomicBool>,
}

/// File extension of a container.
pub fn extension(format: RecordingFormat) -> &'static str {
    match format {
        RecordingFormat::Mp4 => "mp4",
        RecordingFormat::Mkv => "mkv",
    }
}

fn muxer(format: RecordingFormat) -> Result<gst::Element, MediaError> {
    match format {
        RecordingFormat::Mp4 => {
            let m = make("mp4mux", None)?;
            // Fragmented: playable up to the last complete second if we die.
            m.set_property("fragment-duration", 1000u32);
            Ok(m)
        }
        // Clusters are written as they come, so a killed server leaves a
        // playable file; a finished one also gets its duration and cues.
        RecordingFormat::Mkv => make("matroskamux", None),
    }
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
        let mux = muxer(format)?;
        let sink = make("filesink", None)?;
        sink.set_property("location", file.to_string_lossy().as_ref());
        sink.set_property("sync", false);
        sink.set_property("async", false);
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
        let file = dir.join(format!("composite.{}", extension(format)));
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
