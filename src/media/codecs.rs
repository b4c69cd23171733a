//! Encoder/decoder selection, hardware first, and the one place that knows
//! each element's property names and units.
//!
//! The preference lists come from `pipelines/codecs.toml` (operators can
//! reorder them); the first element the GStreamer registry has wins. The
//! registry is behind a trait so the choice is unit-tested for machines with
//! and without hardware codecs.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

/// The preference file built into the binary (`pipelines/codecs.toml`).
pub const DEFAULT_PREFERENCES: &str = include_str!("../../pipelines/codecs.toml");

/// A codec roomcast encodes or decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Codec {
    /// H.264.
    H264,
    /// VP8.
    Vp8,
    /// AAC.
    Aac,
    /// Opus.
    Opus,
}

impl Codec {
    /// Name in the preference file and the system report.
    pub fn name(self) -> &'static str {
        match self {
            Codec::H264 => "h264",
            Codec::Vp8 => "vp8",
            Codec::Aac => "aac",
            Codec::Opus => "opus",
        }
    }

    /// Every codec.
    pub const ALL: [Codec; 4] = [Codec::H264, Codec::Vp8, Codec::Aac, Codec::Opus];
}

/// Preference lists per codec, best first.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct Preferences {
    /// Encoders.
    #[serde(default)]
    pub encoders: BTreeMap<String, Vec<String>>,
    /// Decoders.
    #[serde(default)]
    pub decoders: BTreeMap<String, Vec<String>>,
}

impl Preferences {
    /// Parses a preference file.
    pub fn parse(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// `dir/codecs.toml` when it exists and parses, else the built-in copy.
    pub fn load(dir: &Path) -> Self {
        let path = dir.join("codecs.toml");
        match std::fs::read_to_string(&path) {
            Ok(text) => match Self::parse(&text) {
                Ok(p) => return p,
                Err(e) => tracing::warn!("{}: {e}; using the built-in preferences", path.display()),
            },
            Err(_) => tracing::debug!(
                "{} not found; using the built-in preferences",
                path.display()
            ),
        }
        Self::parse(DEFAULT_PREFERENCES).unwrap_or_default()
    }
}

/// What elements exist (the GStreamer registry, or a list in tests).
pub trait Registry {
    /// Whether `element` can be made.
    fn has(&self, element: &str) -> bool;
}

/// The real GStreamer registry.
#[derive(Debug, Clone, Copy, Default)]
pub struct GstRegistry;

impl Registry for GstRegistry {
    fn has(&self, element: &str) -> bool {
        gst::ElementFactory::find(element).is_some()
    }
}

impl<F: Fn(&str) -> bool> Registry for F {
    fn has(&self, element: &str) -> bool {
        self(element)
    }
}

/// Hardware family of an element name.
pub fn hw_family(element: &str) -> &'static str {
    if element.starts_with("nv") || element.starts_with("cuda") {
        "nvcodec"
    } else if element.starts_with("vaapi") {
        "vaapi"
    } else if element.starts_with("va") {
        "va"
    } else if element.starts_with("qsv") {
        "qsv"
    } else if element.starts_with("v4l2") {
        "v4l2"
    } else {
        "none"
    }
}

/// First of `candidates` that `registry` knows.
pub fn pick<'a>(candidates: &'a [String], registry: &impl Registry) -> Option<&'a str> {
    candidates
        .iter()
        .map(String::as_str)
        .find(|c| registry.has(c))
}

/// What was chosen on this machine.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Selection {
    /// Encoder per codec.
    pub encoders: BTreeMap<String, String>,
    /// Decoder per codec.
    pub decoders: BTreeMap<String, String>,
}

impl Selection {
    /// Picks an encoder and a decoder per codec.
    pub fn choose(prefs: &Preferences, registry: &impl Registry) -> Self {
        let mut s = Selection::default();
        for codec in Codec::ALL {
            let name = codec.name();
            if let Some(e) = prefs.encoders.get(name).and_then(|l| pick(l, registry)) {
                s.encoders.insert(name.to_owned(), e.to_owned());
            }
            if let Some(d) = prefs.decoders.get(name).and_then(|l| pick(l, registry)) {
                s.decoders.insert(name.to_owned(), d.to_owned());
            }
        }
        s
    }

    /// The encoder chosen for `codec`.
    pub fn encoder(&self, codec: Codec) -> Option<&str> {
        self.encoders.get(codec.name()).map(String::as_str)
    }

    /// The decoder chosen for `codec`.
    pub fn decoder(&self, codec: Codec) -> Option<&str> {
        self.decoders.get(codec.name()).map(String::as_str)
    }

    /// The hardware family in use (`none` when every choice is software).
    pub fn hw_acceleration(&self) -> &'static str {
        self.encoders
            .values()
            .chain(self.decoders.values())
            .map(|e| hw_family(e))
            .find(|f| *f != "none")
            .unwrap_or("none")
    }
}

/// How an encoder should behave, in our units.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EncoderSettings {
    /// Target bitrate, kbit/s.
    pub bitrate_kbps: u32,
    /// Frames between keyframes (video).
    pub keyframe_interval: u32,
    /// Tune for latency over compression.
    pub low_latency: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    BitsPerSecond,
    KilobitsPerSecond,
}

/// Property names of one element.
struct Mapping {
    bitrate: Option<(&'static str, Unit)>,
    keyframes: Option<&'static str>,
    /// Set always (rate control, speed).
    always: &'static [(&'static str, &'static str)],
    /// Set when `low_latency`.
    low_latency: &'static [(&'static str, &'static str)],
}

fn mapping(element: &str) -> Option<Mapping> {
    use Unit::*;
    let m = |bitrate, keyframes, always, low_latency| Mapping {
        bitrate,
        keyframes,
        always,
        low_latency,
    };
    Some(match element {
        "x264enc" => m(
            Some(("bitrate", KilobitsPerSecond)),
            Some("key-int-max"),
            &[("speed-preset", "veryfast"), ("b-adapt", "false")],
            &[("tune", "zerolatency")],
        ),
        "openh264enc" => m(
            Some(("bitrate", BitsPerSecond)),
            Some("gop-size"),
            &[("rate-control", "bitrate"), ("complexity", "low")],
            &[],
        ),
        "nvh264enc" => m(
            Some(("bitrate", KilobitsPerSecond)),
            Some("gop-size"),
            &[("rc-mode", "cbr")],
            &[("preset", "low-latency-hq"), ("zerolatency", "true")],
        ),
        "nvcudah264enc" => m(
            Some(("bitrate", KilobitsPerSecond)),
            Some("gop-size"),
            &[("rc-mode", "cbr")],
            &[("tune", "ultra-low-latency")],
        ),
        "vah264enc" => m(
            Some(("bitrate", KilobitsPerSecond)),
            Some("key-int-max"),
            &[("rate-control", "cbr")],
            &[("b-frames", "0")],
        ),
        "vaapih264enc" => m(
            Some(("bitrate", KilobitsPerSecond)),
            Some("keyframe-period"),
            &[("rate-control", "cbr")],
            &[("max-bframes", "0")],
        ),
        "qsvh264enc" => m(
            Some(("bitrate", KilobitsPerSecond)),
            Some("gop-size"),
            &[("rate-control", "cbr")],
            &[("low-latency", "true")],
        ),
        "vp8enc" => m(
            Some(("target-bitrate", BitsPerSecond)),
            Some("keyframe-max-dist"),
            &[("end-usage", "cbr"), ("cpu-used", "8")],
            &[("deadline", "1"), ("lag-in-frames", "0")],
        ),
        "vavp8enc" => m(
            Some(("bitrate", KilobitsPerSecond)),
            Some("key-int-max"),
            &[("rate-control", "cbr")],
            &[],
        ),
        "vaapivp8enc" => m(
            Some(("bitrate", KilobitsPerSecond)),
            Some("keyframe-period"),
            &[("rate-control", "cbr")],
            &[],
        ),
        "avenc_aac" | "voaacenc" | "opusenc" => m(Some(("bitrate", BitsPerSecond)), None, &[], &[]),
        "fdkaacenc" => m(Some(("bitrate", BitsPerSecond)), None, &[], &[]),
        _ => return None,
    })
}

/// The `(property, value)` pairs that configure `element` for `settings`,
/// in GStreamer's units (empty for an element we do not know).
pub fn encoder_properties(
    element: &str,
    settings: &EncoderSettings,
) -> Vec<(&'static str, String)> {
    let Some(m) = mapping(element) else {
        return Vec::new();
    };
    let mut out: Vec<(&'static str, String)> = Vec::new();
    if let Some((name, unit)) = m.bitrate {
        let value = match unit {
            Unit::BitsPerSecond => u64::from(settings.bitrate_kbps) * 1000,
            Unit::KilobitsPerSecond => u64::from(settings.bitrate_kbps),
        };
        out.push((name, value.to_string()));
    }
    if let Some(name) = m.keyframes {
        out.push((name, settings.keyframe_interval.max(1).to_string()));
    }
    out.extend(m.always.iter().map(|(k, v)| (*k, (*v).to_owned())));
    if settings.low_latency {
        out.extend(m.low_latency.iter().map(|(k, v)| (*k, (*v).to_owned())));
    }
    out
}

/// `element prop=value …` in gst-launch syntax.
pub fn encoder_description(element: &str, settings: &EncoderSettings) -> String {
    let mut s = element.to_owned();
    for (k, v) in encoder_properties(element, settings) {
        s.push_str(&format!(" {k}={v}"));
    }
    s
}

/// Makes and configures an encoder (properties it lacks are skipped).
pub fn make_encoder(
    element: &str,
    settings: &EncoderSettings,
) -> Result<gst::Element, super::MediaError> {
    use gst::prelude::*;
    let e = super::make(element, None)?;
    for (k, v) in encoder_properties(element, settings) {
        if e.has_property(k) {
            e.set_property_from_str(k, &v);
        }
    }
    Ok(e)
}

/// The selection on this machine, with the preferences in `dir`.
pub fn probe(dir: &Path) -> Selection {
    Selection::choose(&Preferences::load(dir), &GstRegistry)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefs() -> Preferences {
        Preferences::parse(DEFAULT_PREFERENCES).unwrap()
    }

    fn video(bitrate_kbps: u32) -> EncoderSettings {
        EncoderSettings {
            bitrate_kbps,
            keyframe_interval: 60,
            low_latency: true,
        }
    }

    #[test]
    fn the_built_in_preferences_put_hardware_first() {
        let p = prefs();
        let h264 = &p.encoders["h264"];
        assert_eq!(h264.first().map(String::as_str), Some("nvh264enc"));
        assert!(
            h264.iter().position(|e| e == "x264enc") > h264.iter().position(|e| e == "vah264enc")
        );
        for codec in Codec::ALL {
            assert!(p.encoders.contains_key(codec.name()), "{codec:?}");
            assert!(p.decoders.contains_key(codec.name()), "{codec:?}");
        }
    }

    #[test]
    fn a_machine_with_an_nvidia_gpu() {
        let registry = |e: &str| {
            [
                "nvh264enc",
                "nvh264dec",
                "x264enc",
                "vp8enc",
                "vp8dec",
                "avdec_h264",
                "opusenc",
                "opusdec",
                "avenc_aac",
            ]
            .contains(&e)
        };
        let s = Selection::choose(&prefs(), &registry);
        assert_eq!(s.encoder(Codec::H264), Some("nvh264enc"));
        assert_eq!(s.decoder(Codec::H264), Some("nvh264dec"));
        assert_eq!(s.encoder(Codec::Vp8), Some("vp8enc"));
        assert_eq!(s.hw_acceleration(), "nvcodec");
        assert_eq!(
            encoder_description("nvh264enc", &video(2500)),
            "nvh264enc bitrate=2500 gop-size=60 rc-mode=cbr preset=low-latency-hq zerolatency=true"
        );
    }

    #[test]
    fn a_machine_with_va_only() {
        let registry =
            |e: &str| ["vah264enc", "vah264dec", "vavp8dec", "x264enc", "vp8enc"].contains(&e);
        let s = Selection::choose(&prefs(), &registry);
        assert_eq!(s.encoder(Codec::H264), Some("vah264enc"));
        assert_eq!(s.decoder(Codec::Vp8), Some("vavp8dec"));
        assert_eq!(s.hw_acceleration(), "va");
        assert_eq!(
            encoder_description("vah264enc", &video(1000)),
            "vah264enc bitrate=1000 key-int-max=60 rate-control=cbr b-frames=0"
        );
    }

    #[test]
    fn a_machine_without_hardware() {
        let registry = |e: &str| {
            [
                "x264enc",
                "openh264enc",
                "vp8enc",
                "vp8dec",
                "avdec_h264",
                "opusenc",
                "avenc_aac",
            ]
            .contains(&e)
        };
        let s = Selection::choose(&prefs(), &registry);
        assert_eq!(s.encoder(Codec::H264), Some("x264enc"));
        assert_eq!(s.encoder(Codec::Aac), Some("avenc_aac"));
        assert_eq!(s.hw_acceleration(), "none");
        // Units: x264 takes kbit/s, vp8enc and the audio encoders bit/s.
        assert_eq!(
            encoder_description("x264enc", &video(2000)),
            "x264enc bitrate=2000 key-int-max=60 speed-preset=veryfast b-adapt=false tune=zerolatency"
        );
        let batch = EncoderSettings {
            low_latency: false,
            ..video(2000)
        };
        assert_eq!(
            encoder_description("x264enc", &batch),
            "x264enc bitrate=2000 key-int-max=60 speed-preset=veryfast b-adapt=false"
        );
        assert_eq!(
            encoder_description("vp8enc", &video(800)),
            "vp8enc target-bitrate=800000 keyframe-max-dist=60 end-usage=cbr cpu-used=8 deadline=1 lag-in-frames=0"
        );
        assert_eq!(
            encoder_description("avenc_aac", &video(128)),
            "avenc_aac bitrate=128000"
        );
        // Without openh264 or x264, no H.264 encoder at all.
        let none = |e: &str| e == "vp8enc";
        assert_eq!(
            Selection::choose(&prefs(), &none).encoder(Codec::H264),
            None
        );
    }

    #[test]
    fn operators_can_reorder_and_unknown_elements_keep_defaults() {
        let p = Preferences::parse("[encoders]\nh264 = [\"openh264enc\", \"x264enc\"]\n").unwrap();
        let registry = |e: &str| ["x264enc", "openh264enc"].contains(&e);
        assert_eq!(
            Selection::choose(&p, &registry).encoder(Codec::H264),
            Some("openh264enc")
        );
        assert_eq!(encoder_description("someenc", &video(1)), "someenc");
        assert!(Preferences::parse("encoders = 5").is_err());
    }

    #[test]
    fn hardware_families() {
        assert_eq!(hw_family("vah264enc"), "va");
        assert_eq!(hw_family("vaapih264enc"), "vaapi");
        assert_eq!(hw_family("nvcudah264enc"), "nvcodec");
        assert_eq!(hw_family("qsvh264enc"), "qsv");
        assert_eq!(hw_family("v4l2h264enc"), "v4l2");
        assert_eq!(hw_family("x264enc"), "none");
    }
}
