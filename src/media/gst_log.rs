//! GStreamer's own log, bridged into `tracing`: its WARNING and ERROR
//! messages become `warn!`/`error!` events with target `gstreamer` (fields
//! `category` and `object`), so they reach the same output, format and
//! `RUST_LOG` filter as everything else (`RUST_LOG=gstreamer=error` keeps
//! only errors, `gstreamer=off` none).
//!
//! A misbehaving element can log thousands of lines a second (GStreamer
//! 1.22's `rtpsession` warns once per packet sent when it does not know the
//! pipeline latency), so the bridge is rate-limited: the same category and
//! message (the same line of GStreamer code, whatever numbers the text
//! carries) at most once a second, less and less often while it keeps
//! coming (the wait doubles up to a minute), and at most [`BURST`] messages a
//! second in all; the next message that goes out says how many were held
//! back. A message held back costs a hash and a lock: it is never formatted (a
//! WARNING of a category in [`EXPECTED_WARNINGS`] is, to tell whether it is
//! one of them: a few microseconds). Secrets that could appear in a message (a
//! link's `#t=` token, `token=` parameters, Bearer tokens, RTMP stream keys)
//! are replaced by `…`.
//!
//! Without `GST_DEBUG` the default stderr logger is removed and the threshold
//! set to what `RUST_LOG` lets through (WARNING, ERROR or nothing); with
//! `GST_DEBUG` set, GStreamer's own output and thresholds stay as asked and
//! the bridge forwards whatever WARNING/ERROR messages those let through.

use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

/// The same category and message (call site) are forwarded at most once per this long.
pub const REPEAT_INTERVAL: Duration = Duration::from_secs(1);
/// A message that keeps coming is forwarded less and less often (the wait
/// doubles while some are held back), down to once per this long.
pub const MAX_REPEAT_INTERVAL: Duration = Duration::from_secs(60);
/// Messages forwarded per second, all categories together.
pub const BURST: u32 = 20;
/// Distinct messages remembered (older ones are forgotten first).
const MAX_KEYS: usize = 1024;

/// GStreamer WARNINGs that every normal call produces and that say nothing
/// is wrong: `(category, start of the message, object name prefix or "")`.
/// They go out at DEBUG instead of WARN (still rate-limited) and are counted
/// as `expected`, so a WARN line from GStreamer means something.
const EXPECTED_WARNINGS: &[(&str, &str, &str)] = &[
    // A publisher's offer has m-lines the server has no transceiver for
    // yet: webrtcbin makes receive-only ones, which is what a publish
    // connection is.
    (
        "webrtcbin",
        "did not find compatible transceiver for offer caps",
        "",
    ),
    // At each negotiation webrtcbin 1.22 tries every FEC decoder of the
    // bundled transport on every transceiver, and warns for each decoder
    // that belongs to another m-line (gstwebrtcbin.c,
    // try_match_transceiver_with_fec_decoder).
    (
        "webrtcbin",
        "failed to match fec decoder with transceiver",
        "",
    ),
    // libnice's source pushes before its pad is linked, while ICE starts.
    ("GST_PADS", "could not send sticky events", "nicesrc"),
    // A mixer asks for latency before its live inputs know theirs.
    ("aggregator", "Latency query failed", ""),
    // The audio resampler rounds a filter length for 48 kHz.
    ("audio-resampler", "can't find exact taps", ""),
];

/// Whether a WARNING is one of [`EXPECTED_WARNINGS`].
pub fn is_expected(category: &str, text: &str, object: Option<&str>) -> bool {
    EXPECTED_WARNINGS.iter().any(|(c, start, prefix)| {
        *c == category
            && text.starts_with(start)
            && (prefix.is_empty() || object.is_some_and(|o| o.starts_with(prefix)))
    })
}

/// Whether some message of `category` could be expected (checked before
/// anything is formatted, so other categories cost nothing more).
fn may_be_expected(category: &str) -> bool {
    EXPECTED_WARNINGS.iter().any(|(c, _, _)| *c == category)
}

/// What the limiter says of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Forward it; `suppressed` messages were held back since the last one.
    Emit {
        /// Messages held back since the last one forwarded.
        suppressed: u64,
    },
    /// Drop it (counted).
    Suppress,
}

/// One message's state in the limiter.
#[derive(Debug, Clone, Copy)]
struct Seen {
    /// Last forwarded.
    at: Instant,
    /// Not forwarded again before `at + wait`.
    wait: Duration,
    /// The last one held back.
    last_held: Option<Instant>,
}

/// Rate limiter of the bridge. Time comes in as an argument, so it is
/// tested without waiting.
#[derive(Debug)]
pub struct LogLimiter {
    interval: Duration,
    max_interval: Duration,
    burst: u32,
    seen: HashMap<u64, Seen>,
    window_start: Option<Instant>,
    in_window: u32,
    suppressed: u64,
}

impl LogLimiter {
    /// At most once per `interval` per key (backing off to `max_interval`
    /// while a key keeps repeating), at most `burst` per `interval` in all.
    pub fn new(interval: Duration, max_interval: Duration, burst: u32) -> Self {
        Self {
            interval,
            max_interval,
            burst,
            seen: HashMap::new(),
            window_start: None,
            in_window: 0,
            suppressed: 0,
        }
    }

    /// Decides for a message with `key` (a hash of its category and call
    /// site) at `now`.
    pub fn check(&mut self, key: u64, now: Instant) -> Verdict {
        if let Some(s) = self.seen.get_mut(&key)
            && now.saturating_duration_since(s.at) < s.wait
        {
            s.last_held = Some(now);
            self.suppressed += 1;
            return Verdict::Suppress;
        }
        match self.window_start {
            Some(s) if now.saturating_duration_since(s) < self.interval => {}
            _ => {
                self.window_start = Some(now);
                self.in_window = 0;
            }
        }
        if self.in_window >= self.burst {
            self.suppressed += 1;
            return Verdict::Suppress;
        }
        self.in_window += 1;
        // Still coming (one was held back within the last interval): wait
        // twice as long; quiet for a while: start over.
        let interval = self.interval;
        let wait = match self.seen.get(&key) {
            Some(s)
                if s.last_held
                    .is_some_and(|t| now.saturating_duration_since(t) < interval) =>
            {
                (s.wait * 2).min(self.max_interval)
            }
            _ => interval,
        };
        if self.seen.len() >= MAX_KEYS && !self.seen.contains_key(&key) {
            self.seen
                .retain(|_, s| now.saturating_duration_since(s.at) < s.wait);
            if self.seen.len() >= MAX_KEYS {
                self.seen.clear();
            }
        }
        self.seen.insert(
            key,
            Seen {
                at: now,
                wait,
                last_held: None,
            },
        );
        Verdict::Emit {
            suppressed: std::mem::take(&mut self.suppressed),
        }
    }
}

static LIMITER: LazyLock<Mutex<LogLimiter>> =
    LazyLock::new(|| Mutex::new(LogLimiter::new(REPEAT_INTERVAL, MAX_REPEAT_INTERVAL, BURST)));
static WARNINGS: AtomicU64 = AtomicU64::new(0);
static ERRORS: AtomicU64 = AtomicU64::new(0);
static SUPPRESSED: AtomicU64 = AtomicU64::new(0);
static EXPECTED: AtomicU64 = AtomicU64::new(0);

/// GStreamer messages seen so far.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counts {
    /// WARNINGs, less the expected ones.
    pub warnings: u64,
    /// WARNINGs of [`EXPECTED_WARNINGS`].
    pub expected: u64,
    /// ERRORs.
    pub errors: u64,
    /// Held back by the rate limit.
    pub suppressed: u64,
}

/// GStreamer messages seen so far.
pub fn counts() -> Counts {
    Counts {
        warnings: WARNINGS.load(Ordering::Relaxed),
        expected: EXPECTED.load(Ordering::Relaxed),
        errors: ERRORS.load(Ordering::Relaxed),
        suppressed: SUPPRESSED.load(Ordering::Relaxed),
    }
}

/// Installs the bridge. Call once, after `gst::init` and after the
/// `tracing` subscriber is set up (its filter decides the threshold).
pub fn install() {
    let threshold = if tracing::enabled!(target: "gstreamer", tracing::Level::WARN) {
        gst::DebugLevel::Warning
    } else if tracing::enabled!(target: "gstreamer", tracing::Level::ERROR) {
        gst::DebugLevel::Error
    } else {
        return;
    };
    if std::env::var_os("GST_DEBUG").is_none() {
        gst::log::remove_default_log_function();
        gst::log::set_default_threshold(threshold);
    }
    gst::log::add_log_function(|category, level, file, _function, line, object, message| {
        let error = match level {
            gst::DebugLevel::Error => true,
            gst::DebugLevel::Warning => false,
            _ => return,
        };
        // Object name and text are formatted only for what goes out: a
        // per-packet warning costs a hash and a lock, not a string.
        forward(
            category.name(),
            error,
            (file.as_str(), line),
            || object.map(|o| o.to_string()),
            || message.get().map(|m| m.as_str().to_owned()),
        );
    });
}

/// A message's text or object name: formatted already, or only when asked.
enum Lazy<F> {
    Later(F),
    Done(Option<String>),
}

impl<F: FnOnce() -> Option<String>> Lazy<F> {
    fn get(self) -> Option<String> {
        match self {
            Lazy::Later(f) => f(),
            Lazy::Done(v) => v,
        }
    }
}

/// Counts, rate-limits, redacts and emits one message. `site` (file and
/// line of the GStreamer code that logs) identifies the message: the same
/// message with different numbers in it is still the same message.
fn forward(
    category: &str,
    error: bool,
    site: (&str, u32),
    object: impl FnOnce() -> Option<String>,
    text: impl FnOnce() -> Option<String>,
) {
    // Only messages of the expected list's categories are formatted before
    // the rate limit says they go out.
    let (object, text) = if !error && may_be_expected(category) {
        let (object, text) = (object(), text());
        if text
            .as_deref()
            .is_some_and(|t| is_expected(category, t, object.as_deref()))
        {
            EXPECTED.fetch_add(1, Ordering::Relaxed);
            if tracing::enabled!(target: "gstreamer", tracing::Level::DEBUG) {
                let object = object.as_deref().map(redact);
                let text = text.as_deref().map(|t| redact(t.trim_end()));
                tracing::debug!(
                    target: "gstreamer",
                    category,
                    object = object.as_deref().unwrap_or("-"),
                    expected = true,
                    "{}",
                    text.as_deref().unwrap_or_default()
                );
            }
            return;
        }
        (Lazy::Done(object), Lazy::Done(text))
    } else {
        (Lazy::Later(object), Lazy::Later(text))
    };
    if error {
        ERRORS.fetch_add(1, Ordering::Relaxed);
    } else {
        WARNINGS.fetch_add(1, Ordering::Relaxed);
    }
    let enabled = if error {
        tracing::enabled!(target: "gstreamer", tracing::Level::ERROR)
    } else {
        tracing::enabled!(target: "gstreamer", tracing::Level::WARN)
    };
    if !enabled {
        return;
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (category, site).hash(&mut h);
    let verdict = LIMITER
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .check(h.finish(), Instant::now());
    let suppressed = match verdict {
        Verdict::Suppress => {
            SUPPRESSED.fetch_add(1, Ordering::Relaxed);
            return;
        }
        Verdict::Emit { suppressed } => suppressed,
    };
    let Some(text) = text.get() else {
        return;
    };
    let text = redact(text.trim_end()).into_owned();
    let object = object.get().map(|o| redact(&o).into_owned());
    let object = object.as_deref().unwrap_or("-");
    let held = if suppressed > 0 {
        format!(" ({suppressed} GStreamer messages held back before this one)")
    } else {
        String::new()
    };
    if error {
        tracing::error!(target: "gstreamer", category, object, "{text}{held}");
    } else {
        tracing::warn!(target: "gstreamer", category, object, "{text}{held}");
    }
}

/// Where a secret value that starts at `start` ends.
fn value_end(text: &str, start: usize) -> usize {
    text[start..]
        .find(|c: char| {
            c.is_whitespace()
                || matches!(
                    c,
                    '&' | '"' | '\'' | '<' | '>' | ',' | ';' | ')' | ']' | '}'
                )
        })
        .map_or(text.len(), |i| start + i)
}

/// `text` with secrets replaced by `…`: the value after `token=`, `#t=` or
/// `Bearer `, and the last path segment of `rtmp://`/`rtmps://` URLs (the
/// stream key).
pub fn redact(text: &str) -> Cow<'_, str> {
    // ASCII lowercasing keeps byte offsets.
    let lower = text.to_ascii_lowercase();
    let mut cuts: Vec<(usize, usize)> = Vec::new();
    for marker in ["token=", "#t=", "bearer "] {
        let mut from = 0;
        while let Some(i) = lower[from..].find(marker) {
            let start = from + i + marker.len();
            let end = value_end(text, start);
            if end > start {
                cuts.push((start, end));
            }
            from = start;
        }
    }
    for scheme in ["rtmp://", "rtmps://"] {
        let mut from = 0;
        while let Some(i) = lower[from..].find(scheme) {
            let rest = from + i + scheme.len();
            let end = text[rest..]
                .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>'))
                .map_or(text.len(), |j| rest + j);
            if let Some(slash) = text[rest..end].rfind('/') {
                let start = rest + slash + 1;
                if end > start {
                    cuts.push((start, end));
                }
            }
            from = rest;
        }
    }
    if cuts.is_empty() {
        return Cow::Borrowed(text);
    }
    cuts.sort_unstable();
    let mut out = String::with_capacity(text.len());
    let mut pos = 0;
    for (start, end) in cuts {
        if start < pos {
            // Overlaps a cut already made.
            pos = pos.max(end);
            continue;
        }
        out.push_str(&text[pos..start]);
        out.push('…');
        pos = end;
    }
    out.push_str(&text[pos..]);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn limiter() -> LogLimiter {
        LogLimiter::new(Duration::from_secs(1), Duration::from_secs(8), 20)
    }

    #[test]
    fn the_same_message_goes_out_once_a_second() {
        let mut l = limiter();
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        assert_eq!(l.check(1, ms(0)), Verdict::Emit { suppressed: 0 });
        // A flood of the same message within the second: held back.
        for n in 1..1000 {
            assert_eq!(l.check(1, ms(n / 2)), Verdict::Suppress);
        }
        // Another message is not held back by the first.
        assert_eq!(l.check(2, ms(600)), Verdict::Emit { suppressed: 999 });
        assert_eq!(l.check(1, ms(999)), Verdict::Suppress);
        // A second later it goes out again, saying how many were held back.
        assert_eq!(l.check(1, ms(1000)), Verdict::Emit { suppressed: 1 });
        // A message that comes now and then is never held back.
        for n in 1..10 {
            assert_eq!(
                l.check(2, ms(600 + n * 1500)),
                Verdict::Emit { suppressed: 0 }
            );
        }
    }

    #[test]
    fn a_message_that_keeps_coming_backs_off() {
        let mut l = limiter();
        let t0 = Instant::now();
        // 100 a second for a minute.
        let emitted: Vec<u64> = (0..6000u64)
            .filter(|n| {
                matches!(
                    l.check(7, t0 + Duration::from_millis(n * 10)),
                    Verdict::Emit { .. }
                )
            })
            .map(|n| n * 10)
            .collect();
        // Waits of 1, 2, 4, then 8 s (the cap here) between lines.
        assert_eq!(
            emitted,
            [
                0, 1000, 3000, 7000, 15000, 23000, 31000, 39000, 47000, 55000
            ]
        );
        // Quiet for longer than the wait: back to once a second.
        let later = t0 + Duration::from_secs(70);
        assert!(matches!(l.check(7, later), Verdict::Emit { .. }));
        assert!(matches!(
            l.check(7, later + Duration::from_secs(1)),
            Verdict::Emit { .. }
        ));
    }

    #[test]
    fn many_different_messages_are_capped_per_second() {
        let mut l = limiter();
        let t0 = Instant::now();
        let emitted = (0..500u64)
            .filter(|k| matches!(l.check(*k, t0), Verdict::Emit { .. }))
            .count();
        assert_eq!(emitted, 20);
        // The next window lets another burst through; the first of it
        // reports everything held back.
        let later = t0 + Duration::from_secs(1);
        assert_eq!(l.check(10_000, later), Verdict::Emit { suppressed: 480 });
        let emitted = (10_001..10_500u64)
            .filter(|k| matches!(l.check(*k, later), Verdict::Emit { .. }))
            .count();
        assert_eq!(emitted, 19);
    }

    #[test]
    fn memory_stays_bounded() {
        let mut l = LogLimiter::new(Duration::from_millis(1), Duration::from_millis(1), u32::MAX);
        let t0 = Instant::now();
        for k in 0..10 * MAX_KEYS as u64 {
            l.check(k, t0 + Duration::from_millis(k));
        }
        assert!(l.seen.len() <= MAX_KEYS);
    }

    #[test]
    fn secrets_are_redacted() {
        assert_eq!(
            redact("opening http://h/r/r_1#t=eyJhbGc.sig now"),
            "opening http://h/r/r_1#t=… now"
        );
        assert_eq!(
            redact("GET /whep/b_1?token=abc123&x=1"),
            "GET /whep/b_1?token=…&x=1"
        );
        assert_eq!(
            redact("Authorization: Bearer rc_0123456789"),
            "Authorization: Bearer …"
        );
        assert_eq!(
            redact("Could not connect to rtmp://host:1935/live/SECRET_KEY: refused"),
            "Could not connect to rtmp://host:1935/live/… refused"
        );
        assert_eq!(
            redact("location=\"rtmps://h/app/k?x=1\" token=t"),
            "location=\"rtmps://h/app/…\" token=…"
        );
        assert!(matches!(
            redact("no secrets in here: webrtcbin0"),
            Cow::Borrowed(_)
        ));
        assert_eq!(redact("token="), "token=");
    }

    /// A `tracing` writer into a shared buffer.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Runs `f` with a `tracing` subscriber filtered by `gstreamer=warn`;
    /// gives back what it wrote.
    fn logged(f: impl FnOnce()) -> String {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_env_filter("gstreamer=warn")
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let bytes = captured.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn expected_warnings_are_told_apart() {
        let offer = "did not find compatible transceiver for offer caps application/x-rtp, \
                     media=(string)audio, will only receive";
        assert!(is_expected("webrtcbin", offer, Some("pub_p_x")));
        assert!(is_expected("webrtcbin", offer, None));
        // The same words from another category, or another message.
        assert!(!is_expected("rtpbin", offer, None));
        assert!(!is_expected(
            "webrtcbin",
            "failed to set remote description",
            None
        ));
        // Sticky events that a nicesrc could not send are expected; from
        // anything else they are not.
        let sticky = "could not send sticky events";
        assert!(is_expected("GST_PADS", sticky, Some("nicesrc3:src")));
        assert!(!is_expected("GST_PADS", sticky, Some("queue7:src")));
        assert!(!is_expected("GST_PADS", sticky, None));
    }

    #[test]
    fn expected_warnings_go_out_at_debug() {
        let before = counts();
        let text = logged(|| {
            forward(
                "webrtcbin",
                false,
                ("gstwebrtcbin.c", 7001),
                || Some("pub_p_1".into()),
                || Some("failed to match fec decoder with transceiver".into()),
            );
            forward(
                "webrtcbin",
                false,
                ("gstwebrtcbin.c", 7002),
                || Some("pub_p_1".into()),
                || Some("an unexpected webrtcbin warning".into()),
            );
        });
        let after = counts();
        assert!(!text.contains("fec decoder"), "{text}");
        assert!(
            text.contains("WARN") && text.contains("an unexpected webrtcbin warning"),
            "{text}"
        );
        assert!(after.expected > before.expected);
        assert!(after.warnings > before.warnings);
    }

    #[test]
    fn gstreamer_warnings_arrive_in_tracing_redacted_and_limited() {
        gst::init().expect("gst init");
        let text = logged(|| {
            // What the installed log function calls, without touching
            // GStreamer's global log setup (other tests share the process).
            // One call site logging a flood, with a different number each time.
            for n in 0..50 {
                forward(
                    "bridgetest",
                    false,
                    ("gstfoo.c", 42),
                    || Some("webrtcbin7".into()),
                    || Some(format!("cannot reach turn://u:p@h?token=s3cret ({n})")),
                );
            }
            forward(
                "bridgetest",
                true,
                ("gstfoo.c", 43),
                || None,
                || Some("bridge test error".into()),
            );
            // Filtered out by RUST_LOG's equivalent: not written.
            tracing::info!(target: "gstreamer", "bridge test info");
        });
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(
            lines[0].contains("WARN") && lines[0].contains("gstreamer"),
            "{text}"
        );
        assert!(lines[0].contains("category=\"bridgetest\""), "{text}");
        assert!(lines[0].contains("object=\"webrtcbin7\""), "{text}");
        assert!(
            lines[0].contains("token=…") && !text.contains("s3cret"),
            "{text}"
        );
        assert!(
            lines[1].contains("ERROR") && lines[1].contains("49 GStreamer messages held back"),
            "{text}"
        );
        assert!(counts().suppressed >= 49);

        // The real path: installed, fed by GStreamer's own log macros.
        let text = logged(|| {
            install();
            let cat = gst::DebugCategory::new("bridgetest2", gst::DebugColorFlags::empty(), None);
            cat.set_threshold(gst::DebugLevel::Info);
            gst::warning!(cat, "from GStreamer: http://h/r/r_1#t=abc");
            gst::info!(cat, "info is not bridged");
        });
        assert!(text.contains("category=\"bridgetest2\""), "{text}");
        assert!(
            text.contains("from GStreamer: http://h/r/r_1#t=…"),
            "{text}"
        );
        assert!(!text.contains("info is not bridged"), "{text}");
    }
}
