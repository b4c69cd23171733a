//! Encoder/decoder discovery in the GStreamer registry, hardware first.
//! (A first version: the full preference list and property mapping live
//! with the mixer.)

use std::collections::BTreeMap;

const H264_ENCODERS: &[&str] = &[
    "nvh264enc",
    "nvcudah264enc",
    "vah264enc",
    "vaapih264enc",
    "qsvh264enc",
    "v4l2h264enc",
    "x264enc",
    "openh264enc",
];
const VP8_ENCODERS: &[&str] = &[
    "vavp8enc",
    "vaapivp8enc",
    "qsvvp8enc",
    "v4l2vp8enc",
    "vp8enc",
];
const OPUS_ENCODERS: &[&str] = &["opusenc"];
const H264_DECODERS: &[&str] = &[
    "nvh264dec",
    "vah264dec",
    "vaapih264dec",
    "qsvh264dec",
    "v4l2h264dec",
    "avdec_h264",
    "openh264dec",
];
const VP8_DECODERS: &[&str] = &[
    "nvvp8dec",
    "vavp8dec",
    "vaapivp8dec",
    "qsvvp8dec",
    "v4l2vp8dec",
    "vp8dec",
];
const OPUS_DECODERS: &[&str] = &["opusdec"];

/// Hardware family of an element name.
pub fn hw_family(element: &str) -> &'static str {
    if element.starts_with("nv") {
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

/// First of `candidates` that `available` knows.
pub fn pick<'a>(candidates: &[&'a str], available: impl Fn(&str) -> bool) -> Option<&'a str> {
    candidates.iter().copied().find(|c| available(c))
}

/// What the registry offers: (hardware family, encoders, decoders).
pub fn probe() -> (String, BTreeMap<String, String>, BTreeMap<String, String>) {
    let available = |name: &str| gst::ElementFactory::find(name).is_some();
    let mut enc = BTreeMap::new();
    let mut dec = BTreeMap::new();
    for (codec, list) in [
        ("h264", H264_ENCODERS),
        ("vp8", VP8_ENCODERS),
        ("opus", OPUS_ENCODERS),
    ] {
        if let Some(e) = pick(list, available) {
            enc.insert(codec.to_owned(), e.to_owned());
        }
    }
    for (codec, list) in [
        ("h264", H264_DECODERS),
        ("vp8", VP8_DECODERS),
        ("opus", OPUS_DECODERS),
    ] {
        if let Some(e) = pick(list, available) {
            dec.insert(codec.to_owned(), e.to_owned());
        }
    }
    let hw = enc
        .values()
        .chain(dec.values())
        .map(|e| hw_family(e))
        .find(|f| *f != "none")
        .unwrap_or("none");
    (hw.to_owned(), enc, dec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hardware_first() {
        let with_gpu = |n: &str| ["nvh264enc", "x264enc"].contains(&n);
        assert_eq!(pick(H264_ENCODERS, with_gpu), Some("nvh264enc"));
        let cpu_only = |n: &str| ["x264enc", "openh264enc"].contains(&n);
        assert_eq!(pick(H264_ENCODERS, cpu_only), Some("x264enc"));
        assert_eq!(pick(H264_ENCODERS, |_| false), None);
        assert_eq!(hw_family("vah264enc"), "va");
        assert_eq!(hw_family("vaapih264enc"), "vaapi");
        assert_eq!(hw_family("x264enc"), "none");
    }
}
