//! RTMP push: each target is a pipeline of its own (`appsrc` → `flvmux` →
//! `rtmp2sink`), fed from the broadcast's appsinks. A target that fails
//! (refused, dropped, slow) is torn down and retried with back-off; the room
//! and the other targets never see it, because nothing flows back into the
//! room's pipeline from a target.

use super::MediaError;
use gst::prelude::*;
use serde::Serialize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A target's state, as the API reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RtmpState {
    /// Connecting (first attempt).
    Connecting,
    /// Data is acknowledged by the server.
    Live,
    /// Lost or refused; retrying after a pause.
    Reconnecting,
    /// Stopped for good (broadcast ended, or the URL is unusable).
    Failed,
    /// The broadcast ended.
    Ended,
}

/// One target's public status.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct RtmpStatus {
    /// Where it goes (`rtmp://host/app/key`; the key is the last segment).
    pub url: String,
    /// State.
    pub state: RtmpState,
    /// Connection attempts so far.
    pub attempts: u32,
    /// Last error, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The inputs of one connected target.
#[derive(Debug)]
struct TargetInput {
    video: gst_app::AppSrc,
    audio: gst_app::AppSrc,
    /// Running time of the first keyframe: the target's time zero.
    base: Mutex<Option<gst::ClockTime>>,
}

impl TargetInput {
    fn push(&self, sample: &gst::Sample, video: bool) {
        let Some(buffer) = sample.buffer() else {
            return;
        };
        // Compare running times: encoders shift their timestamps (x264enc
        // by 1000 h) and say so in the segment.
        let segment = sample
            .segment()
            .and_then(|s| s.downcast_ref::<gst::ClockTime>().cloned());
        let running = |t: Option<gst::ClockTime>| match (&segment, t) {
            (Some(seg), Some(t)) => seg.to_running_time(t),
            (None, t) => t,
            _ => None,
        };
        let Some(pts) = running(buffer.pts()) else {
            return;
        };
        let base = {
            let mut base = self.base.lock().unwrap_or_else(|p| p.into_inner());
            match *base {
                Some(b) => b,
                None => {
                    // Start at a keyframe, so the far end can decode at once.
                    if !video || buffer.flags().contains(gst::BufferFlags::DELTA_UNIT) {
                        return;
                    }
                    *base = Some(pts);
                    pts
                }
            }
        };
        let Some(rel) = pts.checked_sub(base) else {
            tracing::trace!(video, %pts, %base, "RTMP: before the first keyframe, dropped");
            return;
        };
        let mut out = buffer.copy();
        {
            let b = out.make_mut();
            b.set_pts(rel);
            b.set_dts(
                running(buffer.dts())
                    .and_then(|d| d.checked_sub(base))
                    .or(Some(rel)),
            );
        }
        let caps = sample.caps().map(|c| c.to_owned());
        let mut builder = gst::Sample::builder().buffer(&out);
        if let Some(caps) = &caps {
            builder = builder.caps(caps);
        }
        let src = if video { &self.video } else { &self.audio };
        let _ = src.push_sample(&builder.build());
    }
}

/// Samples from the broadcast, handed to every connected target.
#[derive(Debug)]
pub struct RtmpFeed {
    targets: Mutex<Vec<Arc<TargetInput>>>,
    has_audio: AtomicBool,
    closed: AtomicBool,
}

impl RtmpFeed {
    /// A feed with no target yet.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            targets: Mutex::new(Vec::new()),
            has_audio: AtomicBool::new(false),
            closed: AtomicBool::new(false),
        })
    }

    fn attach(self: &Arc<Self>, bin: &gst::Bin, video: bool) -> Result<(), MediaError> {
        let sink = bin
            .by_name("sink")
            .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
            .ok_or_else(|| MediaError::Pipeline("RTMP appsink".into()))?;
        let weak = Arc::downgrade(self);
        sink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |sink| {
                    let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    if let Some(feed) = weak.upgrade() {
                        let targets = feed.targets.lock().unwrap_or_else(|p| p.into_inner());
                        for t in targets.iter() {
                            t.push(&sample, video);
                        }
                    }
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
        Ok(())
    }

    /// Takes the H.264 (AVC) appsink of `bin` (named `sink`).
    pub fn attach_video(self: &Arc<Self>, bin: &gst::Bin) -> Result<(), MediaError> {
        self.attach(bin, true)
    }

    /// Takes the AAC appsink of `bin` (named `sink`).
    pub fn attach_audio(self: &Arc<Self>, bin: &gst::Bin) -> Result<(), MediaError> {
        self.has_audio.store(true, Ordering::Relaxed);
        self.attach(bin, false)
    }

    /// The broadcast ended: targets stop.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    fn add(&self, t: Arc<TargetInput>) {
        self.targets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(t);
    }

    fn remove(&self, t: &Arc<TargetInput>) {
        self.targets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|x| !Arc::ptr_eq(x, t));
    }
}

/// Whether `url` is an RTMP URL we can push to.
pub fn valid_url(url: &str) -> bool {
    let Some(rest) = url
        .strip_prefix("rtmp://")
        .or_else(|| url.strip_prefix("rtmps://"))
    else {
        return false;
    };
    let mut parts = rest.splitn(2, '/');
    let host = parts.next().unwrap_or("");
    let path = parts.next().unwrap_or("");
    url.len() <= 1024
        && !host.is_empty()
        && path.contains('/')
        && !url.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// Longest pause between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

fn target_pipeline(
    url: &str,
    with_audio: bool,
) -> Result<(gst::Pipeline, Arc<TargetInput>), MediaError> {
    let description = format!(
        "appsrc name=v is-live=true format=time max-bytes=8000000 leaky-type=downstream ! queue ! flvmux name=mux streamable=true latency=200000000 ! rtmp2sink name=out sync=false async=false timeout=10 {}",
        if with_audio {
            "appsrc name=a is-live=true format=time max-bytes=1000000 leaky-type=downstream ! queue ! aacparse ! mux."
        } else {
            ""
        }
    );
    let pipeline = gst::parse::launch(&description)
        .map_err(|e| MediaError::Pipeline(format!("RTMP pipeline: {e}")))?
        .downcast::<gst::Pipeline>()
        .map_err(|_| MediaError::Pipeline("RTMP pipeline".into()))?;
    let out = pipeline
        .by_name("out")
        .ok_or_else(|| MediaError::Pipeline("rtmp2sink".into()))?;
    out.set_property("location", url);
    let appsrc = |name: &str| {
        pipeline
            .by_name(name)
            .and_then(|e| e.downcast::<gst_app::AppSrc>().ok())
    };
    let video = appsrc("v").ok_or_else(|| MediaError::Pipeline("RTMP appsrc".into()))?;
    // Without audio, a source nobody feeds (never linked) stands in.
    let audio = appsrc("a").unwrap_or_else(|| gst_app::AppSrc::builder().build());
    Ok((
        pipeline,
        Arc::new(TargetInput {
            video,
            audio,
            base: Mutex::new(None),
        }),
    ))
}

/// Bytes the RTMP server has acknowledged (or sent, when the element does
/// not report acknowledgements).
fn bytes_out(pipeline: &gst::Pipeline) -> u64 {
    let Some(stats) = pipeline
        .by_name("out")
        .map(|e| e.property::<gst::Structure>("stats"))
    else {
        return 0;
    };
    stats
        .iter()
        .filter(|(k, _)| k.contains("out-bytes") || k.contains("bytes-sent"))
        .filter_map(|(_, v)| v.get::<u64>().ok())
        .max()
        .unwrap_or(0)
}

/// Runs target `index` of `status` until the feed closes: connects, pushes,
/// and on any failure waits (1 s, 2 s, 4 s … 30 s) and connects again.
pub async fn run_target(feed: Arc<RtmpFeed>, status: Arc<Mutex<Vec<RtmpStatus>>>, index: usize) {
    let set = |state: RtmpState, error: Option<String>, attempt: bool| {
        let mut s = status.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = s.get_mut(index) {
            t.state = state;
            if state == RtmpState::Live {
                t.error = None;
            }
            if error.is_some() {
                t.error = error;
            }
            if attempt {
                t.attempts += 1;
            }
        }
    };
    let url = {
        let s = status.lock().unwrap_or_else(|p| p.into_inner());
        match s.get(index) {
            Some(t) => t.url.clone(),
            None => return,
        }
    };
    let mut backoff = Duration::from_secs(1);
    loop {
        if feed.is_closed() {
            set(RtmpState::Ended, None, false);
            return;
        }
        // The first attempt is `connecting`; later ones stay `reconnecting`
        // until data flows again.
        let first = status
            .lock()
            .map(|s| s.get(index).is_some_and(|t| t.attempts == 0))
            .unwrap_or(false);
        set(
            if first {
                RtmpState::Connecting
            } else {
                RtmpState::Reconnecting
            },
            None,
            true,
        );
        let outcome = push_once(&feed, &url, |live| {
            if live {
                set(RtmpState::Live, None, false);
            }
        })
        .await;
        match outcome {
            Ok(()) => {
                set(RtmpState::Ended, None, false);
                return;
            }
            Err((message, was_live)) => {
                // GStreamer's message may quote the location, key included.
                let said = super::gst_log::redact(&message);
                tracing::warn!(target_url = %redact(&url), "RTMP target: {said}");
                if was_live {
                    backoff = Duration::from_secs(1);
                }
                set(RtmpState::Reconnecting, Some(message), false);
            }
        }
        let until = tokio::time::Instant::now() + backoff;
        while tokio::time::Instant::now() < until {
            if feed.is_closed() {
                set(RtmpState::Ended, None, false);
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// The URL with its stream key hidden (for logs).
pub fn redact(url: &str) -> String {
    match url.rfind('/') {
        Some(i) => format!("{}/…", &url[..i]),
        None => "…".into(),
    }
}

/// One connection: returns `Ok` when the feed closed, `Err((why, was_live))` on failure.
async fn push_once(
    feed: &Arc<RtmpFeed>,
    url: &str,
    on_live: impl Fn(bool),
) -> Result<(), (String, bool)> {
    let with_audio = feed.has_audio.load(Ordering::Relaxed);
    let (pipeline, input) = target_pipeline(url, with_audio).map_err(|e| (e.to_string(), false))?;
    let bus = pipeline.bus().ok_or_else(|| ("no bus".to_owned(), false))?;
    if let Err(e) = pipeline.set_state(gst::State::Playing) {
        stop(pipeline).await;
        return Err((format!("cannot start: {e}"), false));
    }
    feed.add(input.clone());
    let mut live = false;
    let mut last_bytes = 0u64;
    let mut stalled_ticks = 0u32;
    let result = loop {
        if feed.is_closed() {
            break Ok(());
        }
        let mut error = None;
        while let Some(msg) = bus.pop() {
            match msg.view() {
                gst::MessageView::Error(err) => {
                    super::stats::pipeline_error(super::stats::Branch::Rtmp);
                    error = Some(err.error().to_string());
                    break;
                }
                gst::MessageView::Eos(_) => {
                    error = Some("connection closed".into());
                    break;
                }
                _ => {}
            }
        }
        if let Some(e) = error {
            break Err((e, live));
        }
        let bytes = bytes_out(&pipeline);
        if bytes > last_bytes {
            stalled_ticks = 0;
            if !live && input.base.lock().map(|b| b.is_some()).unwrap_or(false) {
                live = true;
                on_live(true);
            }
        } else if live {
            stalled_ticks += 1;
            // Nothing acknowledged for 10 s: the connection is dead.
            if stalled_ticks > 40 {
                break Err(("no data acknowledged for 10 s".into(), live));
            }
        }
        last_bytes = bytes;
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    feed.remove(&input);
    if result.is_ok() {
        // Tell the server we are done (FCUnpublish/deleteStream on EOS).
        let _ = input.video.end_of_stream();
        let _ = input.audio.end_of_stream();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while tokio::time::Instant::now() < deadline {
            if bus
                .pop_filtered(&[gst::MessageType::Eos, gst::MessageType::Error])
                .is_some()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    stop(pipeline).await;
    result
}

async fn stop(pipeline: gst::Pipeline) {
    let _ = tokio::task::spawn_blocking(move || {
        let _ = pipeline.set_state(gst::State::Null);
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtmp_urls_are_checked() {
        assert!(valid_url("rtmp://a.rtmp.youtube.com/live2/abcd-efgh"));
        assert!(valid_url("rtmps://live-api-s.facebook.com:443/rtmp/KEY"));
        assert!(valid_url("rtmp://127.0.0.1:1935/live/test"));
        assert!(!valid_url("http://x/live/k"));
        assert!(!valid_url("rtmp://host"));
        assert!(!valid_url("rtmp://host/app"));
        assert!(!valid_url("rtmp://host/app/key with space"));
        assert!(!valid_url("rtmp:///app/key"));
    }

    #[test]
    fn stream_keys_are_not_logged() {
        assert_eq!(redact("rtmp://h/live/SECRET"), "rtmp://h/live/…");
    }
}
