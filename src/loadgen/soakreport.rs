//! The soak's figures and its verdict: samples of the server process taken
//! during `loadgen soak`, the rules that call a run flat or leaking, and the
//! markdown section it writes into docs/benchmarks.md. Pure functions over
//! samples, so the rules are tested without a server.

use serde::Serialize;
use std::collections::HashMap;
use std::hash::Hash;

/// The server and the room at one moment of the run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Sample {
    /// Seconds since everyone had joined.
    pub t_s: f64,
    /// Server resident memory (`VmRSS`), KiB.
    pub rss_kib: u64,
    /// Server heap in use as its allocator counts it, KiB (`None`: not reported).
    pub heap_kib: Option<u64>,
    /// Server heap freed but kept by its allocator, KiB.
    pub heap_free_kib: Option<u64>,
    /// Server threads.
    pub threads: u64,
    /// Server open file descriptors (entries of `/proc/<pid>/fd`).
    pub fds: u64,
    /// Server CPU since the previous sample, % of one core.
    pub cpu_pct: f64,
    /// Load generator CPU since the previous sample, % of one core.
    pub loadgen_cpu_pct: f64,
    /// Participants in the room as the API counts them (`None`: no answer).
    pub participants: Option<u64>,
    /// Synthetic participants connected.
    pub peers: usize,
    /// … of whom video and audio arrived since the previous sample.
    pub receiving: usize,
    /// … of whom no video arrived.
    pub no_video: usize,
    /// … of whom no audio arrived.
    pub no_audio: usize,
    /// Loss since the previous sample (sequence gaps at the receivers), %.
    pub loss_pct: f64,
    /// Participants replaced so far.
    pub churns: u64,
    /// Recordings made so far.
    pub recordings: u64,
    /// Broadcasts made so far.
    pub broadcasts: u64,
    /// What ran besides the meeting when the sample was taken.
    pub activity: String,
}

/// Packets one synthetic participant received so far, all senders together.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Received {
    /// Video packets.
    pub video: u64,
    /// Video packets expected from the sequence numbers.
    pub video_expected: u64,
    /// Audio packets.
    pub audio: u64,
    /// Audio packets expected.
    pub audio_expected: u64,
}

/// What arrived between two readings of every participant's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Delivery {
    /// Participants in the later reading.
    pub peers: usize,
    /// … whose video and audio both advanced.
    pub receiving: usize,
    /// … whose video did not advance.
    pub no_video: usize,
    /// … whose audio did not advance.
    pub no_audio: usize,
    /// Packets lost ÷ expected, all streams, %.
    pub loss_pct: f64,
}

/// Compares two readings. A participant absent from `before` joined in
/// between and counts from zero; one absent from `after` left and is ignored.
pub fn delivery<K: Eq + Hash>(
    before: &HashMap<K, Received>,
    after: &HashMap<K, Received>,
) -> Delivery {
    let (mut receiving, mut no_video, mut no_audio) = (0, 0, 0);
    let (mut packets, mut expected) = (0u64, 0u64);
    for (id, now) in after {
        let then = before.get(id).copied().unwrap_or_default();
        let (video, audio) = (now.video > then.video, now.audio > then.audio);
        receiving += usize::from(video && audio);
        no_video += usize::from(!video);
        no_audio += usize::from(!audio);
        packets += (now.video + now.audio).saturating_sub(then.video + then.audio);
        expected += (now.video_expected + now.audio_expected)
            .saturating_sub(then.video_expected + then.audio_expected);
    }
    Delivery {
        peers: after.len(),
        receiving,
        no_video,
        no_audio,
        loss_pct: if expected > 0 {
            expected.saturating_sub(packets) as f64 / expected as f64 * 100.0
        } else {
            0.0
        },
    }
}

/// The check after the run: churn stopped, everyone's media for a few seconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EndCheck {
    /// Seconds it watched.
    pub seconds: f64,
    /// Participants in the room per the API.
    pub participants: Option<u64>,
    /// Synthetic participants connected.
    pub peers: usize,
    /// … receiving video and audio.
    pub receiving: usize,
    /// … receiving no video.
    pub no_video: usize,
    /// … receiving no audio.
    pub no_audio: usize,
    /// Loss over the check, %.
    pub loss_pct: f64,
}

/// The churn and the side activities, and how they went.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Ops {
    /// Participants replaced.
    pub churns: u64,
    /// Replacements that failed.
    pub churn_failures: u64,
    /// Recordings started, stopped, finalized and deleted.
    pub recordings: u64,
    /// Recordings that failed somewhere along the way.
    pub recording_failures: u64,
    /// Broadcasts started, watched over WHEP and ended.
    pub broadcasts: u64,
    /// Broadcasts that failed.
    pub broadcast_failures: u64,
    /// The first failures, in words.
    pub errors: Vec<String>,
}

impl Ops {
    /// Keeps a failure's message (the first 20).
    pub fn note(&mut self, what: &str, e: &anyhow::Error) {
        if self.errors.len() < 20 {
            self.errors.push(format!("{what}: {e:#}"));
        }
    }
}

/// What a run must stay within.
#[derive(Debug, Clone, Serialize)]
pub struct Limits {
    /// Samples before this many seconds are warm-up.
    pub warmup_s: f64,
    /// Length of the compared windows, seconds.
    pub window_s: f64,
    /// RSS of the last window within ± this % of the first.
    pub rss_pct: f64,
    /// Threads and fds may grow by this % of the first window …
    pub growth_pct: f64,
    /// … or by this many, whichever is more.
    pub growth_abs: f64,
    /// Loss at the end below this, %.
    pub loss_pct: f64,
    /// Participants expected in the room.
    pub participants: usize,
}

impl Limits {
    /// Windows for a run of `total_s`: 5 minutes, or a quarter of a run
    /// shorter than 20 minutes; the first window is the warm-up.
    pub fn for_run(total_s: f64, participants: usize) -> Self {
        let window_s = (total_s / 4.0).min(300.0);
        Self {
            warmup_s: window_s,
            window_s,
            rss_pct: 10.0,
            growth_pct: 2.0,
            growth_abs: 5.0,
            loss_pct: 1.0,
            participants,
        }
    }

    /// How much threads or fds may grow from `baseline`.
    pub fn allowed_growth(&self, baseline: f64) -> f64 {
        (baseline * self.growth_pct / 100.0).max(self.growth_abs)
    }
}

/// Medians of the quiet samples of one window.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Window {
    /// Start, seconds.
    pub from_s: f64,
    /// End, seconds.
    pub to_s: f64,
    /// Samples the medians are of.
    pub samples: usize,
    /// Median RSS, KiB.
    pub rss_kib: f64,
    /// Median heap in use, KiB (`None`: not reported).
    pub heap_kib: Option<f64>,
    /// Median heap kept free by the allocator, KiB.
    pub heap_free_kib: Option<f64>,
    /// Median threads.
    pub threads: f64,
    /// Median fds.
    pub fds: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Medians over the samples with `from_s <= t_s <= to_s` (`None`: no
/// sample). Samples taken while a recording, a broadcast or a replacement
/// ran are left out (their pipelines and threads come and go) unless every
/// sample of the window is such.
pub fn window(samples: &[Sample], from_s: f64, to_s: f64) -> Option<Window> {
    let all: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.t_s >= from_s && s.t_s <= to_s)
        .collect();
    let quiet: Vec<&Sample> = all
        .iter()
        .copied()
        .filter(|s| s.activity.is_empty())
        .collect();
    let inside = if quiet.is_empty() { all } else { quiet };
    if inside.is_empty() {
        return None;
    }
    let of = |f: fn(&Sample) -> u64| median(inside.iter().map(|s| f(s) as f64).collect());
    let of_some = |f: fn(&Sample) -> Option<u64>| {
        let v: Vec<f64> = inside
            .iter()
            .filter_map(|s| f(s))
            .map(|x| x as f64)
            .collect();
        (!v.is_empty()).then(|| median(v))
    };
    Some(Window {
        from_s,
        to_s,
        samples: inside.len(),
        rss_kib: of(|s| s.rss_kib),
        heap_kib: of_some(|s| s.heap_kib),
        heap_free_kib: of_some(|s| s.heap_free_kib),
        threads: of(|s| s.threads),
        fds: of(|s| s.fds),
    })
}

/// The outcome of a run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Verdict {
    /// The first window after the warm-up.
    pub baseline: Option<Window>,
    /// The last window of the run.
    pub last: Option<Window>,
    /// RSS change from `baseline` to `last`, %.
    pub rss_change_pct: Option<f64>,
    /// Threads added from `baseline` to `last` (medians).
    pub threads_growth: Option<f64>,
    /// File descriptors added.
    pub fds_growth: Option<f64>,
    /// Why the run fails (empty: it passes).
    pub failures: Vec<String>,
}

impl Verdict {
    /// No failure.
    pub fn pass(&self) -> bool {
        self.failures.is_empty()
    }
}

/// Judges a run: memory flat, threads and fds not growing (medians of the
/// first window after the warm-up against the last window), everyone in the
/// room and receiving at the end with little loss, every operation done.
pub fn verdict(samples: &[Sample], end: &EndCheck, ops: &Ops, limits: &Limits) -> Verdict {
    let mut v = Verdict::default();
    let last_t = samples.iter().map(|s| s.t_s).fold(0.0, f64::max);
    v.baseline = window(
        samples,
        limits.warmup_s,
        limits.warmup_s + limits.window_s - 0.001,
    );
    v.last = window(samples, last_t - limits.window_s + 0.001, last_t);
    match (v.baseline, v.last) {
        (Some(b), Some(l)) => {
            if l.from_s < b.to_s {
                v.failures.push(format!(
                    "the run is too short for its windows (last window from {:.0} s, first until {:.0} s)",
                    l.from_s, b.to_s
                ));
            }
            if b.rss_kib > 0.0 {
                let change = (l.rss_kib - b.rss_kib) / b.rss_kib * 100.0;
                v.rss_change_pct = Some(change);
                if change.abs() > limits.rss_pct {
                    v.failures.push(format!(
                        "RSS changed {change:+.1} % ({:.1} → {:.1} MiB; limit ±{} %)",
                        b.rss_kib / 1024.0,
                        l.rss_kib / 1024.0,
                        limits.rss_pct
                    ));
                }
            }
            let grew = |name: &str, first: f64, last: f64, out: &mut Vec<String>| {
                let allowed = limits.allowed_growth(first);
                if last - first > allowed {
                    out.push(format!(
                        "{name} grew {first:.0} → {last:.0} (more than +{allowed:.0})"
                    ));
                }
                last - first
            };
            v.threads_growth = Some(grew("threads", b.threads, l.threads, &mut v.failures));
            v.fds_growth = Some(grew("file descriptors", b.fds, l.fds, &mut v.failures));
        }
        _ => v
            .failures
            .push("no samples in the compared windows".to_owned()),
    }
    let n = limits.participants;
    if end.participants != Some(n as u64) {
        v.failures.push(format!(
            "the API counts {} participants in the room at the end, not {n}",
            end.participants
                .map(|p| p.to_string())
                .unwrap_or_else(|| "no".into())
        ));
    }
    if end.receiving < n {
        v.failures.push(format!(
            "{} of {n} participants received video and audio at the end",
            end.receiving
        ));
    }
    if end.loss_pct >= limits.loss_pct {
        v.failures.push(format!(
            "loss at the end {:.2} % (limit < {} %)",
            end.loss_pct, limits.loss_pct
        ));
    }
    let failed = ops.churn_failures + ops.recording_failures + ops.broadcast_failures;
    if failed > 0 {
        v.failures.push(format!(
            "{failed} operations failed ({} replacements, {} recordings, {} broadcasts)",
            ops.churn_failures, ops.recording_failures, ops.broadcast_failures
        ));
    }
    v
}

/// The samples closest to every `every_s` seconds from the start, and the last one.
pub fn table_rows(samples: &[Sample], every_s: f64) -> Vec<&Sample> {
    let Some(last) = samples.last() else {
        return Vec::new();
    };
    let mut rows: Vec<&Sample> = Vec::new();
    let mut mark = 0.0;
    while mark <= last.t_s + 0.001 && every_s > 0.0 {
        let near = samples
            .iter()
            .min_by(|a, b| (a.t_s - mark).abs().total_cmp(&(b.t_s - mark).abs()));
        if let Some(s) = near
            && !rows.iter().any(|r| std::ptr::eq(*r, s))
        {
            rows.push(s);
        }
        mark += every_s;
    }
    if !rows.iter().any(|r| std::ptr::eq(*r, last)) {
        rows.push(last);
    }
    rows
}

/// `19/20 (1 without audio)`.
fn receiving(receiving: usize, of: usize, no_video: usize, no_audio: usize) -> String {
    let mut missing = Vec::new();
    if no_video > 0 {
        missing.push(format!("{no_video} without video"));
    }
    if no_audio > 0 {
        missing.push(format!("{no_audio} without audio"));
    }
    if missing.is_empty() {
        format!("{receiving}/{of}")
    } else {
        format!("{receiving}/{of} ({})", missing.join(", "))
    }
}

fn minutes(t_s: f64) -> String {
    let t = t_s.round() as u64;
    format!("{}:{:02}", t / 60, t % 60)
}

/// `41.2 in use + 9.8 free MiB`, or `–`.
fn heap(in_use_kib: Option<f64>, free_kib: Option<f64>) -> String {
    match (in_use_kib, free_kib) {
        (Some(u), Some(f)) => format!("{:.1} in use + {:.1} free", u / 1024.0, f / 1024.0),
        _ => "–".to_owned(),
    }
}

/// One line of progress per sample.
pub fn progress_line(s: &Sample) -> String {
    format!(
        "[{:>6}] RSS {:.1} MiB (heap {}), {} threads, {} fds, server {:.0} % CPU, loadgen {:.0} %, {} in the room, {} receiving, loss {:.2} %; replaced {}, recordings {}, broadcasts {}{}",
        minutes(s.t_s),
        s.rss_kib as f64 / 1024.0,
        heap(
            s.heap_kib.map(|k| k as f64),
            s.heap_free_kib.map(|k| k as f64)
        ),
        s.threads,
        s.fds,
        s.cpu_pct,
        s.loadgen_cpu_pct,
        s.participants
            .map(|p| p.to_string())
            .unwrap_or_else(|| "?".into()),
        receiving(s.receiving, s.peers, s.no_video, s.no_audio),
        s.loss_pct,
        s.churns,
        s.recordings,
        s.broadcasts,
        if s.activity.is_empty() {
            String::new()
        } else {
            format!(" [{}]", s.activity)
        }
    )
}

/// The samples table, the windows compared, the end check and the verdict (markdown).
pub fn markdown(
    samples: &[Sample],
    end: &EndCheck,
    ops: &Ops,
    limits: &Limits,
    v: &Verdict,
) -> String {
    let mut out = String::from(
        "| time (min) | server RSS MiB | heap MiB (in use + free) | threads | fds | server CPU % (1 core) | loadgen CPU % | in the room (API) | receiving | loss % | replaced / recordings / broadcasts so far | running |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for s in table_rows(samples, limits.window_s) {
        out.push_str(&format!(
            "| {} | {:.1} | {} | {} | {} | {:.0} | {:.0} | {} | {} | {:.2} | {} / {} / {} | {} |\n",
            minutes(s.t_s),
            s.rss_kib as f64 / 1024.0,
            heap(
                s.heap_kib.map(|k| k as f64),
                s.heap_free_kib.map(|k| k as f64)
            ),
            s.threads,
            s.fds,
            s.cpu_pct,
            s.loadgen_cpu_pct,
            s.participants
                .map(|p| p.to_string())
                .unwrap_or_else(|| "–".into()),
            receiving(s.receiving, s.peers, s.no_video, s.no_audio),
            s.loss_pct,
            s.churns,
            s.recordings,
            s.broadcasts,
            if s.activity.is_empty() {
                "–"
            } else {
                &s.activity
            },
        ));
    }
    if let (Some(b), Some(l)) = (v.baseline, v.last) {
        let ok = |pass: bool| if pass { "ok" } else { "**exceeded**" };
        let rss = v.rss_change_pct.unwrap_or(0.0);
        let threads = v.threads_growth.unwrap_or(0.0);
        let fds = v.fds_growth.unwrap_or(0.0);
        out.push_str(&format!(
            "\nMedians of the quiet samples (nothing but the meeting running) in the first window after the warm-up ({}–{} min, {} samples) and in the last ({}–{} min, {} samples):\n\n\
             | | first window | last window | change | limit | |\n|---|---|---|---|---|---|\n\
             | server RSS MiB | {:.1} | {:.1} | {rss:+.1} % | ±{} % | {} |\n\
             | threads | {:.0} | {:.0} | {threads:+.0} | +{:.0} | {} |\n\
             | file descriptors | {:.0} | {:.0} | {fds:+.0} | +{:.0} | {} |\n\
             | heap MiB, in use + free (not judged) | {} | {} | | | |\n",
            minutes(b.from_s),
            minutes(b.to_s),
            b.samples,
            minutes(l.from_s),
            minutes(l.to_s),
            l.samples,
            b.rss_kib / 1024.0,
            l.rss_kib / 1024.0,
            limits.rss_pct,
            ok(rss.abs() <= limits.rss_pct),
            b.threads,
            l.threads,
            limits.allowed_growth(b.threads),
            ok(threads <= limits.allowed_growth(b.threads)),
            b.fds,
            l.fds,
            limits.allowed_growth(b.fds),
            ok(fds <= limits.allowed_growth(b.fds)),
            heap(b.heap_kib, b.heap_free_kib),
            heap(l.heap_kib, l.heap_free_kib),
        ));
    }
    out.push_str(&format!(
        "\nAt the end ({:.0} s watched, churn stopped): {} of {} in the room per the API, {} receiving video and audio, loss {:.2} %.\n",
        end.seconds,
        end.participants
            .map(|p| p.to_string())
            .unwrap_or_else(|| "–".into()),
        limits.participants,
        receiving(end.receiving, limits.participants, end.no_video, end.no_audio),
        end.loss_pct,
    ));
    out.push_str(&format!(
        "Done: {} participants replaced, {} recordings, {} broadcasts watched over WHEP; failed: {} / {} / {}.\n",
        ops.churns,
        ops.recordings,
        ops.broadcasts,
        ops.churn_failures,
        ops.recording_failures,
        ops.broadcast_failures,
    ));
    for e in &ops.errors {
        out.push_str(&format!("- {e}\n"));
    }
    if v.pass() {
        out.push_str("\n**Verdict: pass.**\n");
    } else {
        out.push_str(&format!(
            "\n**Verdict: fail** — {}.\n",
            v.failures.join("; ")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(
        rss: impl Fn(f64) -> u64,
        threads: impl Fn(f64) -> u64,
        fds: impl Fn(f64) -> u64,
    ) -> Vec<Sample> {
        (0..=60)
            .map(|k| {
                let t = k as f64 * 30.0;
                Sample {
                    t_s: t,
                    rss_kib: rss(t),
                    threads: threads(t),
                    fds: fds(t),
                    ..Default::default()
                }
            })
            .collect()
    }

    fn good_end() -> EndCheck {
        EndCheck {
            seconds: 10.0,
            participants: Some(20),
            peers: 20,
            receiving: 20,
            loss_pct: 0.1,
            ..Default::default()
        }
    }

    fn limits() -> Limits {
        Limits::for_run(1800.0, 20)
    }

    #[test]
    fn windows_of_a_30_minute_run_are_5_minutes_after_5_of_warm_up() {
        let l = limits();
        assert_eq!((l.warmup_s, l.window_s), (300.0, 300.0));
        let short = Limits::for_run(240.0, 20);
        assert_eq!((short.warmup_s, short.window_s), (60.0, 60.0));
    }

    #[test]
    fn a_flat_run_passes_despite_warm_up_growth_and_spikes() {
        // Memory climbs during the warm-up, then stays; one sample in the
        // last window has extra threads and fds (the median ignores it).
        let mut s = run(
            |t| {
                if t < 300.0 {
                    80_000 + t as u64 * 100
                } else {
                    120_000 + (t as u64 % 90) * 20
                }
            },
            |t| if t == 1650.0 { 420 } else { 380 },
            |t| {
                if t == 1650.0 {
                    300
                } else {
                    200 + (t as u64 / 30) % 3
                }
            },
        );
        let v = verdict(&s, &good_end(), &Ops::default(), &limits());
        assert!(v.pass(), "{:?}", v.failures);
        let (b, l) = (v.baseline.unwrap(), v.last.unwrap());
        assert_eq!((b.from_s, b.samples), (300.0, 10));
        assert_eq!(l.samples, 10);
        assert_eq!(l.threads, 380.0);
        // Half the last window's samples fall on recordings, with a
        // pipeline's worth of threads, fds and memory: left out.
        for x in s
            .iter_mut()
            .filter(|x| x.t_s > 1500.0 && ((x.t_s / 30.0) as u64).is_multiple_of(2))
        {
            x.activity = "recording".into();
            x.threads += 40;
            x.fds += 30;
            x.rss_kib += 40_000;
        }
        let v = verdict(&s, &good_end(), &Ops::default(), &limits());
        assert!(v.pass(), "{:?}", v.failures);
        assert_eq!(v.last.unwrap().samples, 5);
    }

    #[test]
    fn memory_that_keeps_growing_fails() {
        // +25 KiB per second: 120 MiB → ~151 MiB between the windows.
        let s = run(|t| 120_000 + t as u64 * 25, |_| 380, |_| 200);
        let v = verdict(&s, &good_end(), &Ops::default(), &limits());
        assert!(!v.pass());
        assert!(v.rss_change_pct.unwrap() > 10.0);
        assert!(
            v.failures[0].starts_with("RSS changed +"),
            "{:?}",
            v.failures
        );
    }

    #[test]
    fn a_thread_or_fd_leak_fails_beyond_its_tolerance() {
        // One thread per minute: +20 between the windows' medians, more than 2 % of 380.
        let s = run(|_| 120_000, |t| 380 + (t / 60.0) as u64, |_| 200);
        let v = verdict(&s, &good_end(), &Ops::default(), &limits());
        assert_eq!(v.threads_growth, Some(20.5));
        assert_eq!(v.failures.len(), 1, "{:?}", v.failures);
        assert!(v.failures[0].starts_with("threads grew"));
        // Four more fds stay within +5.
        let s = run(
            |_| 120_000,
            |_| 380,
            |t| if t >= 1500.0 { 204 } else { 200 },
        );
        assert!(verdict(&s, &good_end(), &Ops::default(), &limits()).pass());
        let s = run(
            |_| 120_000,
            |_| 380,
            |t| if t >= 1500.0 { 206 } else { 200 },
        );
        let v = verdict(&s, &good_end(), &Ops::default(), &limits());
        assert!(
            v.failures[0].starts_with("file descriptors grew"),
            "{:?}",
            v.failures
        );
    }

    #[test]
    fn the_end_check_and_failed_operations_count() {
        let s = run(|_| 120_000, |_| 380, |_| 200);
        let mut end = good_end();
        end.receiving = 19;
        end.loss_pct = 1.5;
        end.participants = Some(19);
        let ops = Ops {
            recording_failures: 1,
            ..Default::default()
        };
        let v = verdict(&s, &end, &ops, &limits());
        assert_eq!(v.failures.len(), 4, "{:?}", v.failures);
        let md = markdown(&s, &end, &ops, &limits(), &v);
        assert!(md.contains("**Verdict: fail**"));
        // A row every 5 minutes: 0:00, 5:00, …, 30:00.
        let rows: Vec<&str> = md
            .lines()
            .filter(|l| l.starts_with("| ") && l.as_bytes()[2].is_ascii_digit())
            .collect();
        assert_eq!(rows.len(), 7, "{rows:?}");
        assert!(rows[6].starts_with("| 30:00 |"));
    }

    #[test]
    fn delivery_counts_joiners_from_zero_and_ignores_leavers() {
        let r = |video, audio, lost| Received {
            video,
            video_expected: video + lost,
            audio,
            audio_expected: audio,
        };
        let before: HashMap<&str, Received> = [
            ("a", r(100, 50, 0)),
            ("b", r(100, 50, 0)),
            ("gone", r(10, 10, 0)),
        ]
        .into();
        let after: HashMap<&str, Received> = [
            ("a", r(200, 100, 2)),
            ("b", r(200, 50, 0)),
            ("new", r(48, 50, 0)),
        ]
        .into();
        let d = delivery(&before, &after);
        assert_eq!(d.peers, 3);
        // b's audio stalled.
        assert_eq!((d.receiving, d.no_video, d.no_audio), (2, 0, 1));
        // 2 lost of 100 + 50 + 100 + 0 + 48 + 2 + 50 expected.
        assert!(
            (d.loss_pct - 2.0 / 350.0 * 100.0).abs() < 1e-9,
            "{}",
            d.loss_pct
        );
    }
}
