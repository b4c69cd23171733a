//! `roomcast loadgen mixer`: the cost of composing. Four 360p VP8 inputs
//! (files, played at their real pace) are decoded, laid out in a 2×2 grid at
//! 1280×720, 30 fps and encoded to H.264 — once by roomcast's own mixer (the
//! code rooms use, with the encoder `pipelines/codecs.toml` picks) and once by
//! `ffmpeg` with the same x264 settings. Both run in real time; the figure is
//! CPU seconds per second of output, measured over the same window.

use crate::ids::{ParticipantId, TrackId};
use crate::media::codecs;
use crate::media::mixer::{MixInput, Mixer, MixerConfig};
use crate::media::rtp::TrackKind;
use anyhow::{Context, anyhow};
use clap::Args;
use gst::prelude::*;
use serde::Serialize;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Flags of `loadgen mixer`.
#[derive(Debug, Args)]
pub struct MixerBenchArgs {
    /// Seconds of output per run (the first 3 are warm-up, not measured).
    #[arg(long, default_value_t = 30)]
    pub seconds: u64,
    /// Number of inputs (laid out as roomcast's grid; ffmpeg only does 4).
    #[arg(long, default_value_t = 4)]
    pub inputs: usize,
    /// Skip the ffmpeg run.
    #[arg(long)]
    pub no_ffmpeg: bool,
    /// Directory with `codecs.toml`.
    #[arg(long, default_value = "pipelines")]
    pub pipelines_dir: PathBuf,
    /// Also write roomcast's composite here (Matroska, left unfinalized:
    /// it plays, without a duration), to look at.
    #[arg(long)]
    pub output: Option<PathBuf>,
}

const WARMUP_S: u64 = 3;
const FPS: u64 = 30;

/// What one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct MixReport {
    /// Who mixed.
    pub label: String,
    /// Encoder element or codec.
    pub encoder: String,
    /// Seconds of output measured.
    pub output_s: f64,
    /// CPU seconds used meanwhile.
    pub cpu_s: f64,
    /// CPU seconds per second of output.
    pub cpu_per_output_s: f64,
}

fn cpu_of(pid: u32) -> f64 {
    super::scenario::sample_process(pid)
        .map(|s| s.cpu_s)
        .unwrap_or(0.0)
}

/// Writes `n` VP8 WebM files of 640×360 moving pictures, `seconds` long.
fn make_inputs(dir: &Path, n: usize, seconds: u64) -> anyhow::Result<Vec<PathBuf>> {
    let patterns = ["ball", "smpte", "snow", "pinwheel", "spokes", "gradient"];
    let mut files = Vec::new();
    for i in 0..n {
        let path = dir.join(format!("in{i}.webm"));
        let desc = format!(
            "videotestsrc num-buffers={} pattern={} horizontal-speed=4 ! video/x-raw,width=640,height=360,framerate=30/1 ! vp8enc deadline=1 cpu-used=4 target-bitrate=800000 keyframe-max-dist=60 ! webmmux ! filesink location=\"{}\"",
            seconds * FPS,
            patterns[i % patterns.len()],
            path.display()
        );
        run_to_eos(&desc).with_context(|| format!("writing {}", path.display()))?;
        files.push(path);
    }
    Ok(files)
}

fn run_to_eos(desc: &str) -> anyhow::Result<()> {
    let p = gst::parse::launch(desc)?
        .downcast::<gst::Pipeline>()
        .map_err(|_| anyhow!("not a pipeline"))?;
    p.set_state(gst::State::Playing)?;
    let bus = p.bus().ok_or_else(|| anyhow!("no bus"))?;
    let mut result = Ok(());
    for msg in bus.iter_timed(gst::ClockTime::from_seconds(600)) {
        match msg.view() {
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => {
                result = Err(anyhow!("{}", e.error()));
                break;
            }
            _ => {}
        }
    }
    p.set_state(gst::State::Null)?;
    result
}

/// roomcast's mixer fed by the files as RTP, as a room feeds it.
fn run_roomcast(files: &[PathBuf], args: &MixerBenchArgs) -> anyhow::Result<MixReport> {
    let selection = codecs::probe(&args.pipelines_dir);
    let encoder = selection
        .encoder(codecs::Codec::H264)
        .unwrap_or("none")
        .to_owned();
    let pipeline = gst::Pipeline::new();
    let mut tees = Vec::new();
    for (i, f) in files.iter().enumerate() {
        // Not ghosting unlinked pads: the demuxer's pad comes later, and
        // the payloader's output is ghosted by hand.
        let bin = gst::parse::bin_from_description(
            &format!(
                "filesrc location=\"{}\" ! matroskademux ! clocksync ! rtpvp8pay name=pay pt=96 mtu=1200",
                f.display()
            ),
            false,
        )?;
        let pay_src = bin
            .by_name("pay")
            .and_then(|p| p.static_pad("src"))
            .ok_or_else(|| anyhow!("payloader"))?;
        bin.add_pad(
            &gst::GhostPad::builder_with_target(&pay_src)?
                .name("src")
                .build(),
        )?;
        bin.set_property("name", format!("input{i}"));
        // The tee sits in the pipeline itself, as a room's track tees do.
        let tee = gst::ElementFactory::make("tee")
            .property("allow-not-linked", true)
            .build()?;
        pipeline.add_many([bin.upcast_ref::<gst::Element>(), &tee])?;
        bin.link(&tee)?;
        tees.push(tee);
    }
    pipeline.set_state(gst::State::Playing)?;
    let mut mixer = Mixer::new(&pipeline, MixerConfig::default(), &selection)?;
    for tee in &tees {
        mixer.add_input(
            &pipeline,
            MixInput {
                track: &TrackId::generate(),
                owner: &ParticipantId::generate(),
                kind: TrackKind::Video,
                codec: "VP8",
                tee,
            },
            &selection,
        )?;
    }
    let frames = Arc::new(AtomicU64::new(0));
    for (tee, count) in [(&mixer.video, true), (&mixer.audio_aac, false)] {
        let sink = gst::ElementFactory::make("fakesink")
            .property("sync", false)
            .property("async", false)
            .build()?;
        pipeline.add(&sink)?;
        sink.sync_state_with_parent()?;
        if count {
            let frames = frames.clone();
            sink.static_pad("sink")
                .ok_or_else(|| anyhow!("sink pad"))?
                .add_probe(gst::PadProbeType::BUFFER, move |_, _| {
                    frames.fetch_add(1, Ordering::Relaxed);
                    gst::PadProbeReturn::Ok
                });
        }
        tee.link(&sink)?;
    }
    if let Some(out) = &args.output {
        let save = gst::parse::bin_from_description(
            &format!(
                "queue ! h264parse ! matroskamux ! filesink async=false location=\"{}\"",
                out.display()
            ),
            true,
        )?;
        pipeline.add(&save)?;
        save.sync_state_with_parent()?;
        mixer.video.link(&save)?;
    }
    std::thread::sleep(Duration::from_secs(WARMUP_S));
    let (cpu0, frames0) = (cpu_of(std::process::id()), frames.load(Ordering::Relaxed));
    std::thread::sleep(Duration::from_secs(
        args.seconds.saturating_sub(WARMUP_S + 1),
    ));
    let (cpu1, frames1) = (cpu_of(std::process::id()), frames.load(Ordering::Relaxed));
    let _ = pipeline.set_state(gst::State::Null);
    drop(mixer);
    Ok(report("roomcast", encoder, frames1 - frames0, cpu1 - cpu0))
}

fn report(label: &str, encoder: String, frames: u64, cpu_s: f64) -> MixReport {
    let output_s = frames as f64 / FPS as f64;
    MixReport {
        label: label.into(),
        encoder,
        output_s,
        cpu_s,
        cpu_per_output_s: if output_s > 0.0 {
            cpu_s / output_s
        } else {
            0.0
        },
    }
}

/// ffmpeg doing the same: xstack 2×2, libx264 with the mixer's settings
/// (veryfast, zerolatency, CBR 2500 kbit/s with a 600 ms buffer, keyframe
/// every 2 s), AAC 128 kbit/s of silence like the mixer's empty audio.
fn run_ffmpeg(files: &[PathBuf], args: &MixerBenchArgs) -> anyhow::Result<MixReport> {
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-nostats", "-loglevel", "error"]);
    for f in files {
        cmd.arg("-re").arg("-i").arg(f);
    }
    cmd.args([
        "-re",
        "-f",
        "lavfi",
        "-i",
        "anullsrc=r=48000:cl=stereo",
        "-filter_complex",
        "[0:v][1:v][2:v][3:v]xstack=inputs=4:layout=0_0|w0_0|0_h0|w0_h0,format=yuv420p[v]",
        "-map",
        "[v]",
        "-map",
        "4:a",
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-tune",
        "zerolatency",
        "-b:v",
        "2500k",
        "-maxrate",
        "2500k",
        "-bufsize",
        "1500k",
        "-g",
        "60",
        "-r",
        "30",
        "-c:a",
        "aac",
        "-b:a",
        "128k",
        "-t",
    ])
    .arg(args.seconds.to_string())
    .args(["-progress", "pipe:1", "-f", "null", "-"])
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit());
    let mut child = cmd.spawn().context("run ffmpeg (apt install ffmpeg)")?;
    let pid = child.id();
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow!("ffmpeg stdout"))?;
    // -progress prints `frame=N` blocks about twice a second.
    let start = Instant::now();
    let mut first: Option<(f64, u64)> = None;
    let mut last: Option<(f64, u64)> = None;
    let end = Duration::from_secs(args.seconds.saturating_sub(1));
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line?;
        let Some(n) = line
            .strip_prefix("frame=")
            .and_then(|v| v.trim().parse::<u64>().ok())
        else {
            continue;
        };
        let t = start.elapsed();
        if t >= Duration::from_secs(WARMUP_S) && first.is_none() {
            first = Some((cpu_of(pid), n));
        } else if first.is_some() && t <= end {
            last = Some((cpu_of(pid), n));
        }
    }
    child.wait()?;
    let ((c0, f0), (c1, f1)) = first
        .zip(last)
        .ok_or_else(|| anyhow!("ffmpeg ran too short to measure"))?;
    Ok(report("ffmpeg", "libx264".into(), f1 - f0, c1 - c0))
}

/// Runs the comparison and prints a table.
pub fn run(args: MixerBenchArgs) -> anyhow::Result<()> {
    gst::init()?;
    let dir = tempfile::tempdir()?;
    eprintln!(
        "mixer bench: writing {} inputs of {} s",
        args.inputs, args.seconds
    );
    let files = make_inputs(dir.path(), args.inputs, args.seconds + 5)?;
    let mut reports = vec![run_roomcast(&files, &args)?];
    if !args.no_ffmpeg && args.inputs == 4 {
        reports.push(run_ffmpeg(&files, &args)?);
    }
    println!("| mixer | encoder | output measured | CPU | CPU-s per output-s |");
    println!("|---|---|---|---|---|");
    for r in &reports {
        println!(
            "| {} | {} | {:.1} s | {:.2} s | {:.3} |",
            r.label, r.encoder, r.output_s, r.cpu_s, r.cpu_per_output_s
        );
    }
    if let [ours, theirs] = &reports[..]
        && theirs.cpu_per_output_s > 0.0
    {
        println!(
            "\nroomcast / ffmpeg: {:.2}×",
            ours.cpu_per_output_s / theirs.cpu_per_output_s
        );
    }
    println!("{}", serde_json::to_string(&reports).unwrap_or_default());
    Ok(())
}
