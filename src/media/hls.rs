//! HLS with Low-Latency HLS parts, written by the server itself.
//!
//! Each rendition's H.264 (and the broadcast's AAC) go into `mpegtsmux`;
//! its MPEG-TS comes out of an appsink into a [`Writer`], which cuts it:
//! - into **segments** at keyframes, about [`SEGMENT_TARGET`] long
//!   (`seg00042.ts`), what every HLS player plays;
//! - into **parts** of at most [`PART_TARGET`] (`seg00042.3.ts`), listed
//!   with `EXT-X-PART` for the newest segments, for LL-HLS players.
//!
//! One media playlist serves both: players without LL-HLS ignore the part
//! tags. The playlist offers blocking reloads (`CAN-BLOCK-RELOAD`) and
//! hints the next part (`EXT-X-PRELOAD-HINT`); the HTTP edge holds such
//! requests until the [`Position`] published through [`HlsLive`] reaches
//! them. Every file is written whole and renamed into place, so a file
//! that can be read is complete; old segments and parts are deleted.

use super::MediaError;
use gst::prelude::*;
use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// Segments are cut at the first keyframe after this much media (the
/// encoders put one every 2 s).
pub const SEGMENT_TARGET: Duration = Duration::from_secs(2);
/// Longest part, as the playlist announces it (`PART-TARGET`).
pub const PART_TARGET: Duration = Duration::from_millis(500);
/// Parts are cut at the first packet after this much media: the next
/// frame (≤ 100 ms at 10 fps) still fits in [`PART_TARGET`].
const PART_CUT: Duration = Duration::from_millis(400);
/// Segments a media playlist lists.
const LISTED: usize = 6;
/// Of those, the newest ones also list their parts (3 target durations,
/// as the LL-HLS spec asks for at least).
const WITH_PARTS: usize = 3;
/// Segment files kept on disk (players behind the playlist finish theirs).
pub const KEPT: usize = 10;

/// How far a rendition's playlist has got: segment `msn` is being written
/// and its first `parts` parts are complete (and listed), every earlier
/// segment is complete.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Position {
    /// Media sequence number of the segment being written.
    pub msn: u64,
    /// Its complete parts.
    pub parts: u32,
    /// The playlist has ended (`EXT-X-ENDLIST`): nothing more will come.
    pub ended: bool,
}

impl Position {
    /// Whether the playlist lists part `part` of segment `msn` (or, with
    /// no part, the whole segment `msn`).
    pub fn has(&self, msn: u64, part: Option<u32>) -> bool {
        match part {
            None => msn < self.msn,
            Some(p) => msn < self.msn || (msn == self.msn && p < self.parts),
        }
    }
}

/// Where each rendition of one broadcast's HLS stands; the writers publish,
/// the HTTP edge waits on it (blocking playlist reloads, hinted parts).
#[derive(Debug, Clone, Default)]
pub struct HlsLive {
    renditions: Arc<Mutex<HashMap<String, watch::Sender<Position>>>>,
}

impl HlsLive {
    fn sender(&self, rendition: &str) -> watch::Sender<Position> {
        let mut m = self.renditions.lock().unwrap_or_else(|p| p.into_inner());
        m.entry(rendition.to_owned())
            .or_insert_with(|| watch::channel(Position::default()).0)
            .clone()
    }

    /// The position of `rendition`, to wait on; `None` before its writer
    /// started.
    pub fn watch(&self, rendition: &str) -> Option<watch::Receiver<Position>> {
        let m = self.renditions.lock().unwrap_or_else(|p| p.into_inner());
        m.get(rendition).map(watch::Sender::subscribe)
    }

    /// Marks every rendition ended (the broadcast stopped without the
    /// writers seeing their end): nobody waits for parts that never come.
    pub fn end_all(&self) {
        let m = self.renditions.lock().unwrap_or_else(|p| p.into_inner());
        for tx in m.values() {
            tx.send_modify(|p| p.ended = true);
        }
    }
}

/// `seg00042.ts` → (42, None); `seg00042.3.ts` → (42, Some(3)); anything
/// else → `None`.
pub fn parse_name(name: &str) -> Option<(u64, Option<u32>)> {
    let stem = name.strip_prefix("seg")?.strip_suffix(".ts")?;
    let digits = |s: &str| !s.is_empty() && s.len() <= 10 && s.bytes().all(|b| b.is_ascii_digit());
    match stem.split_once('.') {
        None if digits(stem) => Some((stem.parse().ok()?, None)),
        Some((s, p)) if digits(s) && digits(p) => Some((s.parse().ok()?, Some(p.parse().ok()?))),
        _ => None,
    }
}

fn segment_name(msn: u64) -> String {
    format!("seg{msn:05}.ts")
}

fn part_name(msn: u64, part: usize) -> String {
    format!("seg{msn:05}.{part}.ts")
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Part {
    duration: f64,
    independent: bool,
}

#[derive(Debug, Clone, PartialEq)]
struct Segment {
    msn: u64,
    parts: Vec<Part>,
}

impl Segment {
    /// Seconds: its parts, end to end.
    fn duration(&self) -> f64 {
        self.parts.iter().map(|p| p.duration).sum()
    }
}

/// The media playlist: the listed segments (oldest first), the parts of
/// the segment being written, whether it ended.
fn media_playlist(done: &VecDeque<Segment>, current: Option<&Segment>, ended: bool) -> String {
    let listed: Vec<&Segment> = done
        .iter()
        .skip(done.len().saturating_sub(LISTED))
        .collect();
    let longest = listed.iter().map(|s| s.duration()).fold(0.0, f64::max);
    // Whole seconds, never below the cut target (players size buffers by it).
    let target = (longest.round() as u64)
        .max(SEGMENT_TARGET.as_secs())
        .max(1);
    let part_target = PART_TARGET.as_secs_f64();
    let mut s = String::with_capacity(2048);
    let _ = write!(
        s,
        "#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-TARGETDURATION:{target}\n#EXT-X-PART-INF:PART-TARGET={part_target:.3}\n#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK={:.3}\n#EXT-X-MEDIA-SEQUENCE:{}\n",
        part_target * 3.0,
        listed
            .first()
            .map(|s| s.msn)
            .or(current.map(|c| c.msn))
            .unwrap_or(0)
    );
    let with_parts = listed.len().saturating_sub(WITH_PARTS);
    let parts = |s: &mut String, seg: &Segment| {
        for (i, p) in seg.parts.iter().enumerate() {
            let _ = writeln!(
                s,
                "#EXT-X-PART:DURATION={:.3},URI=\"{}\"{}",
                p.duration,
                part_name(seg.msn, i),
                if p.independent {
                    ",INDEPENDENT=YES"
                } else {
                    ""
                }
            );
        }
    };
    for (i, seg) in listed.iter().enumerate() {
        if i >= with_parts {
            parts(&mut s, seg);
        }
        let _ = write!(
            s,
            "#EXTINF:{:.3},\n{}\n",
            seg.duration(),
            segment_name(seg.msn)
        );
    }
    if ended {
        s.push_str("#EXT-X-ENDLIST\n");
    } else if let Some(c) = current {
        parts(&mut s, c);
        let _ = writeln!(
            s,
            "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"{}\"",
            part_name(c.msn, c.parts.len())
        );
    }
    s
}

/// Writes `data` to `dir/name` whole: into a temporary name, then renamed.
fn write_whole(dir: &Path, name: &str, data: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, data)?;
    std::fs::rename(&tmp, dir.join(name))
}

/// What one 188-byte TS packet is, as far as cutting goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Packet {
    /// Program tables (PAT, PMT): they go with the packet after them (the
    /// muxer repeats them just before each keyframe).
    Table,
    /// The first packet of a video frame (PES with stream id 0xE0–0xEF),
    /// with its decode timestamp (90 kHz; the presentation one if none).
    VideoStart(u64),
    /// Anything else.
    Other,
}

fn classify(p: &[u8]) -> Packet {
    if p.len() < 188 || p[0] != 0x47 {
        return Packet::Other;
    }
    let start = p[1] & 0x40 != 0;
    let pid = (u16::from(p[1] & 0x1f) << 8) | u16::from(p[2]);
    let control = (p[3] >> 4) & 3;
    let offset = if control & 2 != 0 {
        5 + usize::from(p[4])
    } else {
        4
    };
    let Some(payload) = p.get(offset..).filter(|_| control & 1 != 0) else {
        return Packet::Other;
    };
    if pid == 0 || (start && !payload.starts_with(&[0, 0, 1])) {
        return Packet::Table;
    }
    if !start || payload.len() < 19 || !(0xe0..=0xef).contains(&payload[3]) {
        return Packet::Other;
    }
    let ts = |b: &[u8]| {
        (u64::from(b[0] >> 1) & 7) << 30
            | u64::from(b[1]) << 22
            | u64::from(b[2] >> 1) << 15
            | u64::from(b[3]) << 7
            | u64::from(b[4] >> 1)
    };
    match payload[7] >> 6 {
        3 => Packet::VideoStart(ts(&payload[14..19])),
        2 => Packet::VideoStart(ts(&payload[9..14])),
        _ => Packet::Other,
    }
}

/// A 90 kHz, 33-bit timestamp turned into nanoseconds that only go
/// forward (wrap-around included); a frame that goes back is not a place
/// to cut.
#[derive(Debug, Default)]
struct Clock {
    last: Option<u64>,
    ns: u64,
    /// The last step forward, ns (about a frame).
    step: u64,
}

impl Clock {
    /// The time of a frame stamped `ts` and whether it is later than the
    /// last (`false`: the same stamp); `None` when it goes back.
    fn advance(&mut self, ts: u64) -> Option<(u64, bool)> {
        const WRAP: u64 = 1 << 33;
        let Some(last) = self.last else {
            self.last = Some(ts);
            return Some((self.ns, true));
        };
        let delta = (ts + WRAP - last) % WRAP;
        if delta == 0 {
            return Some((self.ns, false));
        }
        if delta > WRAP / 2 {
            return None;
        }
        self.last = Some(ts);
        self.step = delta * 100_000 / 9;
        self.ns += self.step;
        Some((self.ns, true))
    }
}

/// Cuts one rendition's MPEG-TS into segments and parts; see the module.
/// Times are nanoseconds of the writer's [`Clock`].
struct Writer {
    dir: PathBuf,
    position: watch::Sender<Position>,
    /// Complete segments still on disk, oldest first.
    done: VecDeque<Segment>,
    /// The segment being written, its bytes, and where it started.
    current: Option<(Segment, Vec<u8>, u64)>,
    /// The part being written: bytes, start, begins with a keyframe.
    part: Option<(Vec<u8>, u64, bool)>,
    /// Table packets waiting for the packet they precede.
    tables: Vec<u8>,
    /// The newest run of table packets: a segment whose keyframe came
    /// without them starts with these.
    last_tables: Vec<u8>,
    /// A packet of `tables` was flagged as a keyframe's.
    tables_key: bool,
    clock: Clock,
    /// Why writing failed; set once, nothing is written after.
    error: Option<String>,
    /// The error went on the bus.
    reported: bool,
}

impl Writer {
    fn new(dir: PathBuf, position: watch::Sender<Position>) -> Self {
        Self {
            dir,
            position,
            done: VecDeque::new(),
            current: None,
            part: None,
            tables: Vec::new(),
            last_tables: Vec::new(),
            tables_key: false,
            clock: Clock::default(),
            error: None,
            reported: false,
        }
    }

    /// One buffer of MPEG-TS from the muxer; `keyframe`: it holds the
    /// start of a keyframe (the muxer's buffer flags).
    fn push(&mut self, data: &[u8], keyframe: bool) {
        if self.error.is_some() {
            return;
        }
        for p in data.chunks(188) {
            match classify(p) {
                Packet::Table => {
                    if self.tables.is_empty() {
                        self.last_tables.clear();
                        self.tables_key = false;
                    }
                    // The muxer flags the first packet of a keyframe's
                    // group: often the tables before it.
                    self.tables_key |= keyframe;
                    self.tables.extend_from_slice(p);
                    self.last_tables.extend_from_slice(p);
                    continue;
                }
                Packet::VideoStart(ts) => {
                    if let Some((t, new)) = self.clock.advance(ts) {
                        self.frame_at(t, new, keyframe || self.tables_key);
                    }
                }
                Packet::Other => {}
            }
            // Nothing is written before the first frame: a segment starts
            // with its tables and a frame.
            if let (Some((_, seg, _)), Some((part, _, _))) =
                (self.current.as_mut(), self.part.as_mut())
            {
                for bytes in [&self.tables[..], p] {
                    seg.extend_from_slice(bytes);
                    part.extend_from_slice(bytes);
                }
            }
            self.tables.clear();
            self.tables_key = false;
        }
    }

    /// A video frame starts at `t` (`new`: later than the last one, not
    /// more of it): a new segment (keyframe, long enough), a new part
    /// (long enough), or neither. Nothing starts before the first keyframe:
    /// every segment begins with one.
    fn frame_at(&mut self, t: u64, new: bool, keyframe: bool) {
        if !new {
            if !keyframe {
                return;
            }
            // A keyframe stamped like the frame before it (passed-through
            // H.264 whose keyframe came without a time), or the second PES
            // of a keyframe (the muxer may flag that one, not the first).
            if let Some((_, start, independent)) = self.part.as_mut()
                && *start == t
            {
                *independent = true;
                return;
            }
        }
        let segment_due = match &self.current {
            None => keyframe,
            Some((_, _, start)) => {
                keyframe && t.saturating_sub(*start) >= SEGMENT_TARGET.as_nanos() as u64 * 3 / 4
            }
        };
        let part_due = self
            .part
            .as_ref()
            .is_some_and(|(_, start, _)| t.saturating_sub(*start) >= PART_CUT.as_nanos() as u64);
        if segment_due {
            self.close_part(t, false);
            self.close_segment(false);
            let msn = self.next_msn();
            self.current = Some((
                Segment {
                    msn,
                    parts: Vec::new(),
                },
                Vec::with_capacity(512 * 1024),
                t,
            ));
            self.part = Some((Vec::with_capacity(128 * 1024), t, keyframe));
            if self.tables.is_empty() {
                self.tables.clone_from(&self.last_tables);
            }
            // The playlist lists the finished segment and hints the new
            // one's first part: it is never without a hint while live.
            self.publish(false);
        } else if part_due {
            self.close_part(t, true);
            self.part = Some((Vec::with_capacity(128 * 1024), t, keyframe));
        }
    }

    fn next_msn(&self) -> u64 {
        match (&self.current, self.done.back()) {
            (Some((c, _, _)), _) => c.msn + 1,
            (None, Some(d)) => d.msn + 1,
            // Goes on from an earlier writer of this rendition (the
            // broadcast's outputs were rebuilt): names are never reused.
            (None, None) => {
                let p = *self.position.borrow();
                if p == Position::default() {
                    0
                } else {
                    p.msn + 1
                }
            }
        }
    }

    /// Ends the part being written at `end`; `publish`: and lists it
    /// (not when its segment ends too: the playlist is written once the
    /// next segment started, so it never hints a part that will not come).
    fn close_part(&mut self, end: u64, publish: bool) {
        let (Some((seg, _, _)), Some((data, start, independent))) =
            (self.current.as_mut(), self.part.take())
        else {
            return;
        };
        let duration = end.saturating_sub(start) as f64 / 1e9;
        let name = part_name(seg.msn, seg.parts.len());
        if let Err(e) = write_whole(&self.dir, &name, &data) {
            self.fail(&name, &e);
            return;
        }
        seg.parts.push(Part {
            duration,
            independent,
        });
        if publish {
            self.publish(false);
        }
    }

    /// Ends the segment being written (its last part is closed already);
    /// the playlist is written when the stream `ended`, else by the caller
    /// once the next segment started.
    fn close_segment(&mut self, ended: bool) {
        if let Some((seg, data, _)) = self.current.take() {
            let name = segment_name(seg.msn);
            if !seg.parts.is_empty() {
                match write_whole(&self.dir, &name, &data) {
                    Ok(()) => self.done.push_back(seg),
                    Err(e) => self.fail(&name, &e),
                }
            }
        }
        while self.done.len() > KEPT {
            if let Some(old) = self.done.pop_front() {
                let _ = std::fs::remove_file(self.dir.join(segment_name(old.msn)));
            }
        }
        // Parts of segments no longer listed with parts.
        let keep_parts_from = self.done.len().saturating_sub(WITH_PARTS + 1);
        for seg in self.done.iter_mut().take(keep_parts_from) {
            for i in 0..seg.parts.len() {
                let _ = std::fs::remove_file(self.dir.join(part_name(seg.msn, i)));
            }
        }
        if ended {
            self.publish(true);
        }
    }

    /// The stream ended: the last part and segment are closed, the
    /// playlist gets its `EXT-X-ENDLIST`.
    fn finish(&mut self) {
        // The last part ends a frame (as long as the one before) after
        // its last frame started.
        if self.part.is_some() {
            let t = self.clock.ns + self.clock.step;
            self.close_part(t, false);
        }
        self.close_segment(true);
    }

    /// Writes the playlist, then tells the waiting requests.
    fn publish(&mut self, ended: bool) {
        let current = self.current.as_ref().map(|(s, _, _)| s);
        let text = media_playlist(&self.done, current, ended);
        let p = Position {
            msn: current.map_or_else(|| self.done.back().map_or(0, |d| d.msn + 1), |c| c.msn),
            parts: current.map_or(0, |c| c.parts.len() as u32),
            ended,
        };
        if let Err(e) = write_whole(&self.dir, "index.m3u8", text.as_bytes()) {
            self.fail("index.m3u8", &e);
        }
        self.position.send_replace(p);
    }

    /// A file could not be written (a full disk): the writer stops, and
    /// the error goes on the bus once (the room ends this output).
    fn fail(&mut self, name: &str, e: &std::io::Error) {
        if self.error.is_none() {
            self.error = Some(format!(
                "HLS file {name} not written in {}: {e}",
                self.dir.display()
            ));
        }
    }
}

/// The HLS bin of one rendition: queues named `v` (and `a` when `audio`)
/// into `mpegtsmux`, cut by a [`Writer`] into `dir`, which publishes on
/// `live` under `rendition`. Sink pads are left for the caller to ghost.
pub fn rendition_bin(
    name: &str,
    queue: &str,
    dir: &Path,
    live: &HlsLive,
    rendition: &str,
    audio: bool,
) -> Result<gst::Bin, MediaError> {
    let description = format!(
        "{queue} name=v ! mux. mpegtsmux name=mux ! appsink name=out sync=false async=false max-buffers=0 drop=false wait-on-eos=false{}",
        if audio {
            format!(" {queue} name=a ! mux.")
        } else {
            String::new()
        }
    );
    let bin = gst::parse::bin_from_description(&description, false)
        .map_err(|e| MediaError::Pipeline(format!("HLS {rendition}: {e}")))?;
    bin.set_property("name", name);
    let sink = bin
        .by_name("out")
        .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
        .ok_or_else(|| MediaError::Pipeline("HLS appsink".into()))?;
    // The muxer orders by time: a buffer without any timestamp stays at the
    // head of its pad forever and the video stops. Passed-through H.264
    // has such buffers (keyframes and parameter sets from the depayloader);
    // they get the time of the frame before plus its duration.
    if let Some(pad) = bin.by_name("v").and_then(|e| e.static_pad("sink")) {
        let last: Mutex<Option<(gst::ClockTime, gst::ClockTime)>> = Mutex::new(None);
        pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            let Some(gst::PadProbeData::Buffer(b)) = &mut info.data else {
                return gst::PadProbeReturn::Ok;
            };
            let mut last = last.lock().unwrap_or_else(|p| p.into_inner());
            match b.pts().or(b.dts()) {
                Some(t) => *last = Some((t, b.duration().unwrap_or(gst::ClockTime::ZERO))),
                None => {
                    let Some((t, d)) = *last else {
                        // Nothing to go by yet: not muxable.
                        return gst::PadProbeReturn::Drop;
                    };
                    let stamped = b.make_mut();
                    stamped.set_pts(t + d);
                    *last = Some((t + d, gst::ClockTime::ZERO));
                }
            }
            gst::PadProbeReturn::Ok
        });
    }
    let writer = Arc::new(Mutex::new(Writer::new(
        dir.to_owned(),
        live.sender(rendition),
    )));
    let on_eos = writer.clone();
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                let mut w = writer.lock().unwrap_or_else(|p| p.into_inner());
                let push = |w: &mut Writer, b: &gst::BufferRef| {
                    if let Ok(map) = b.map_readable() {
                        w.push(&map, !b.flags().contains(gst::BufferFlags::DELTA_UNIT));
                    }
                };
                if let Some(list) = sample.buffer_list() {
                    for b in list.iter() {
                        push(&mut w, b);
                    }
                } else if let Some(b) = sample.buffer() {
                    push(&mut w, b);
                }
                if w.error.is_none() {
                    return Ok(gst::FlowSuccess::Ok);
                }
                if !w.reported {
                    w.reported = true;
                    let e = w.error.clone().unwrap_or_default();
                    sink.post_error_message(gst::error_msg!(gst::ResourceError::Write, ["{}", e]));
                }
                Err(gst::FlowError::Error)
            })
            .eos(move |_| {
                on_eos.lock().unwrap_or_else(|p| p.into_inner()).finish();
            })
            .build(),
    );
    Ok(bin)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(msn: u64, parts: usize) -> Segment {
        Segment {
            msn,
            parts: (0..parts)
                .map(|i| Part {
                    duration: 0.4,
                    independent: i == 0,
                })
                .collect(),
        }
    }

    #[test]
    fn names() {
        assert_eq!(parse_name("seg00001.ts"), Some((1, None)));
        assert_eq!(parse_name("seg00042.3.ts"), Some((42, Some(3))));
        assert_eq!(parse_name(&part_name(7, 2)), Some((7, Some(2))));
        assert_eq!(parse_name(&segment_name(7)), Some((7, None)));
        for bad in [
            "seg.ts",
            "../x.ts",
            "seg0001.ts.bak",
            "index.m3u8",
            "seg1..ts",
            "seg1.2.3.ts",
            "seg1.x.ts",
            ".seg1.ts.tmp",
        ] {
            assert_eq!(parse_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn clock_goes_forward_across_the_wrap() {
        let mut c = Clock::default();
        assert_eq!(c.advance((1 << 33) - 90_000), Some((0, true)));
        assert_eq!(c.advance((1 << 33) - 87_000), Some((33_333_333, true)));
        // More of the same frame.
        assert_eq!(c.advance((1 << 33) - 87_000), Some((33_333_333, false)));
        // Back: not a place to cut.
        assert_eq!(c.advance((1 << 33) - 88_000), None);
        // Past the wrap.
        assert_eq!(c.advance(3_000), Some((1_033_333_333, true)));
    }

    #[test]
    fn packets() {
        let mut pat = [0xffu8; 188];
        pat[..5].copy_from_slice(&[0x47, 0x40, 0x00, 0x10, 0x00]);
        assert_eq!(classify(&pat), Packet::Table);
        // A PES start on PID 65, stream 0xE0, PTS and DTS.
        let mut v = [0xffu8; 188];
        v[..4].copy_from_slice(&[0x47, 0x40, 0x41, 0x10]);
        v[4..13].copy_from_slice(&[0, 0, 1, 0xe0, 0, 0, 0x80, 0xc0, 10]);
        let stamp = |ts: u64, marker: u8| {
            [
                marker | (((ts >> 30) as u8 & 7) << 1) | 1,
                (ts >> 22) as u8,
                (((ts >> 15) as u8) << 1) | 1,
                (ts >> 7) as u8,
                ((ts as u8) << 1) | 1,
            ]
        };
        v[13..18].copy_from_slice(&stamp(900_000, 0x30));
        v[18..23].copy_from_slice(&stamp(897_000, 0x10));
        assert_eq!(classify(&v), Packet::VideoStart(897_000));
        // The same on an audio stream id: not a frame to cut at.
        v[7] = 0xc0;
        assert_eq!(classify(&v), Packet::Other);
        // A continuation packet.
        v[1] = 0x00;
        assert_eq!(classify(&v), Packet::Other);
        assert_eq!(classify(&v[..100]), Packet::Other);
    }

    /// A TS packet: 0 a table, 1 a video PES start stamped `ts`, 2 an
    /// audio PES start, else `raw` as it is.
    fn packet(kind: u8, ts: u64, raw: &[u8]) -> Vec<u8> {
        let mut p = vec![0xffu8; 188];
        match kind {
            0 => p[..5].copy_from_slice(&[0x47, 0x40, 0x00, 0x10, 0x00]),
            1 | 2 => {
                p[..4].copy_from_slice(&[0x47, 0x40, 0x41, 0x10]);
                let sid = if kind == 1 { 0xe0 } else { 0xc0 };
                p[4..13].copy_from_slice(&[0, 0, 1, sid, 0, 0, 0x80, 0x80, 5]);
                p[13..18].copy_from_slice(&[
                    0x21 | (((ts >> 30) as u8 & 7) << 1),
                    (ts >> 22) as u8,
                    (((ts >> 15) as u8) << 1) | 1,
                    (ts >> 7) as u8,
                    ((ts as u8) << 1) | 1,
                ]);
            }
            _ => return raw.to_vec(),
        }
        p
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// Whatever comes out of the muxer (a publisher's stream passed
        /// through: any timestamps, keyframes anywhere, junk), the writer
        /// never panics, its position only moves forward, and it ends.
        #[test]
        fn any_stream_is_cut_without_panics(
            packets in proptest::collection::vec(
                (0u8..4, 0u64..(1 << 33), proptest::prelude::any::<bool>(),
                 proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400)),
                0..200,
            )
        ) {
            let dir = tempfile::tempdir().unwrap();
            let (tx, rx) = watch::channel(Position::default());
            let mut w = Writer::new(dir.path().to_owned(), tx);
            let mut last = Position::default();
            for (kind, ts, key, raw) in packets {
                w.push(&packet(kind, ts, &raw), key);
                let p = *rx.borrow();
                proptest::prop_assert!(
                    p.msn > last.msn || (p.msn == last.msn && p.parts >= last.parts),
                    "{last:?} -> {p:?}"
                );
                // A live playlist always hints the part its position waits for.
                if p != last {
                    let text = std::fs::read_to_string(dir.path().join("index.m3u8")).unwrap();
                    let hint = text
                        .lines()
                        .find_map(|l| l.strip_prefix("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\""))
                        .and_then(|u| parse_name(u.trim_end_matches('"')));
                    proptest::prop_assert_eq!(hint, Some((p.msn, Some(p.parts))), "{}", text);
                }
                last = p;
            }
            w.finish();
            proptest::prop_assert!(rx.borrow().ended);
        }
    }

    #[test]
    fn positions() {
        let p = Position {
            msn: 5,
            parts: 2,
            ended: false,
        };
        assert!(p.has(4, None));
        assert!(!p.has(5, None));
        assert!(p.has(5, Some(1)));
        assert!(!p.has(5, Some(2)));
        assert!(p.has(4, Some(9)));
        assert!(!p.has(6, Some(0)));
    }

    #[test]
    fn the_playlist_lists_parts_near_the_live_edge() {
        let done: VecDeque<Segment> = (3..11).map(|m| seg(m, 5)).collect();
        let current = seg(11, 2);
        let text = media_playlist(&done, Some(&current), false);
        assert!(text.starts_with("#EXTM3U\n"), "{text}");
        // The last 6 complete segments (5..=10); parts of the last 3 (8, 9,
        // 10) and of the current one.
        for present in [
            "#EXT-X-TARGETDURATION:2\n",
            "#EXT-X-PART-INF:PART-TARGET=0.500\n",
            "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.500\n",
            "#EXT-X-MEDIA-SEQUENCE:5\n",
            "#EXTINF:2.000,\nseg00010.ts\n",
            "#EXT-X-PART:DURATION=0.400,URI=\"seg00008.0.ts\",INDEPENDENT=YES\n",
            "#EXT-X-PART:DURATION=0.400,URI=\"seg00008.1.ts\"\n",
            "URI=\"seg00011.1.ts\"",
        ] {
            assert!(text.contains(present), "no {present:?} in\n{text}");
        }
        for absent in ["seg00004.ts", "seg00007.0.ts"] {
            assert!(!text.contains(absent), "{absent:?} in\n{text}");
        }
        assert!(
            text.ends_with("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"seg00011.2.ts\"\n"),
            "{text}"
        );
        let ended = media_playlist(&done, None, true);
        assert!(ended.ends_with("#EXT-X-ENDLIST\n"), "{ended}");
        assert!(!ended.contains("PRELOAD-HINT"), "{ended}");
    }

    /// Real H.264 and AAC through mpegtsmux into the writer: segments at
    /// keyframes, parts within the target, files on disk as listed.
    #[test]
    fn a_real_stream_is_cut_into_segments_and_parts() {
        gst::init().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let live = HlsLive::default();
        let pipeline = gst::Pipeline::new();
        let src = gst::parse::bin_from_description(
            "videotestsrc num-buffers=180 ! video/x-raw,width=160,height=120,framerate=30/1 ! x264enc key-int-max=60 tune=zerolatency speed-preset=ultrafast ! h264parse ! queue name=vq \
             audiotestsrc num-buffers=280 samplesperbuffer=1024 ! audio/x-raw,rate=48000 ! avenc_aac ! aacparse ! queue name=aq",
            false,
        )
        .unwrap();
        let bin = rendition_bin("hls", "queue", dir.path(), &live, "source", true).unwrap();
        pipeline
            .add_many([src.upcast_ref::<gst::Element>(), bin.upcast_ref()])
            .unwrap();
        let ghost = |b: &gst::Bin, q: &str, pad: &str| {
            let target = b.by_name(q).unwrap().static_pad(pad).unwrap();
            let g = gst::GhostPad::builder_with_target(&target)
                .unwrap()
                .name(q)
                .build();
            b.add_pad(&g).unwrap();
            g
        };
        ghost(&src, "vq", "src")
            .link(&ghost(&bin, "v", "sink"))
            .unwrap();
        ghost(&src, "aq", "src")
            .link(&ghost(&bin, "a", "sink"))
            .unwrap();
        let mut rx = live.watch("source").unwrap();
        pipeline.set_state(gst::State::Playing).unwrap();
        let bus = pipeline.bus().unwrap();
        let msg = bus
            .timed_pop_filtered(
                gst::ClockTime::from_seconds(30),
                &[gst::MessageType::Eos, gst::MessageType::Error],
            )
            .expect("end of stream");
        assert_eq!(msg.type_(), gst::MessageType::Eos, "{msg:?}");
        pipeline.set_state(gst::State::Null).unwrap();
        let p = *rx.borrow_and_update();
        assert!(p.ended, "{p:?}");
        // 6 s of video, a keyframe every 2 s: 3 segments.
        assert_eq!(p.msn, 3, "{p:?}");
        let playlist = std::fs::read_to_string(dir.path().join("index.m3u8")).unwrap();
        assert!(playlist.ends_with("#EXT-X-ENDLIST\n"), "{playlist}");
        for msn in 0..3 {
            let name = segment_name(msn);
            assert!(playlist.contains(&format!("\n{name}\n")), "{playlist}");
            let whole = std::fs::read(dir.path().join(&name)).unwrap();
            assert_eq!(whole.len() % 188, 0);
            assert_eq!(whole[0], 0x47, "a segment starts with a TS packet");
            // The parts of a segment are the segment, in order.
            let mut joined = Vec::new();
            for i in 0.. {
                match std::fs::read(dir.path().join(part_name(msn, i))) {
                    Ok(d) => joined.extend(d),
                    Err(_) => break,
                }
            }
            assert_eq!(joined, whole, "parts of {name}");
        }
        let durations: Vec<f64> = playlist
            .lines()
            .filter_map(|l| l.strip_prefix("#EXT-X-PART:DURATION="))
            .map(|l| l.split(',').next().unwrap().parse().unwrap())
            .collect();
        assert!(durations.len() >= 12, "{playlist}");
        assert!(
            durations
                .iter()
                .all(|d| *d <= PART_TARGET.as_secs_f64() + 1e-3),
            "{durations:?}"
        );
        let independent = playlist.matches("INDEPENDENT=YES").count();
        assert_eq!(independent, 3, "each segment's first part: {playlist}");
    }
}
