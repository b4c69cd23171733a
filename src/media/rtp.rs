//! What we forward: caps clean-up and payload-type normalisation.
//!
//! Every forwarded track is re-labelled with one payload type per codec
//! (VP8 96, H.264 102, Opus 111) so that tracks from different publishers
//! never clash inside one BUNDLE toward a subscriber. Header-extension ids
//! (`extmap-*`) are the publisher's and mean nothing to subscribers, so they
//! are dropped from the caps.

/// Kind of a track.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TrackKind {
    /// Audio.
    Audio,
    /// Video.
    Video,
}

impl TrackKind {
    /// `audio` / `video`.
    pub fn as_str(self) -> &'static str {
        match self {
            TrackKind::Audio => "audio",
            TrackKind::Video => "video",
        }
    }
}

/// Payload type the SFU uses for a codec toward subscribers.
pub fn canonical_payload(encoding: &str) -> Option<u8> {
    match encoding.to_ascii_uppercase().as_str() {
        "VP8" => Some(96),
        "H264" => Some(102),
        "OPUS" => Some(111),
        _ => None,
    }
}

/// A publisher's track as the SFU forwards it.
#[derive(Debug, Clone)]
pub struct ForwardFormat {
    /// Audio or video.
    pub kind: TrackKind,
    /// `VP8`, `H264`, `OPUS`.
    pub codec: String,
    /// Canonical payload type.
    pub payload: u8,
    /// Caps offered to subscribers.
    pub caps: gst::Caps,
}

const KEEP_FIELDS: &[&str] = &[
    "media",
    "encoding-name",
    "clock-rate",
    "ssrc",
    "encoding-params",
    "packetization-mode",
    "profile-level-id",
    "level-asymmetry-allowed",
    "sprop-parameter-sets",
    "useinbandfec",
    "minptime",
    "stereo",
    "sprop-stereo",
    "rtcp-fb-nack",
    "rtcp-fb-nack-pli",
    "rtcp-fb-ccm-fir",
];

/// The caps to offer subscribers for a publisher's pad caps, or `None`
/// when the codec is not one the SFU forwards.
pub fn forward_format(caps: &gst::CapsRef) -> Option<ForwardFormat> {
    let s = caps.structure(0)?;
    if s.name() != "application/x-rtp" {
        return None;
    }
    let kind = match s.get::<&str>("media").ok()? {
        "audio" => TrackKind::Audio,
        "video" => TrackKind::Video,
        _ => return None,
    };
    let codec = s.get::<&str>("encoding-name").ok()?.to_ascii_uppercase();
    let payload = canonical_payload(&codec)?;
    let mut out = gst::Structure::new_empty("application/x-rtp");
    for field in KEEP_FIELDS {
        if let Ok(v) = s.value(*field) {
            out.set_value(*field, v.clone());
        }
    }
    out.set("payload", i32::from(payload));
    out.set("encoding-name", codec.as_str());
    // Always let subscribers ask for keyframes.
    out.set("rtcp-fb-nack-pli", true);
    out.set("rtcp-fb-ccm-fir", true);
    out.set("rtcp-fb-nack", true);
    Some(ForwardFormat {
        kind,
        codec,
        payload,
        caps: gst::Caps::builder_full().structure(out).build(),
    })
}

/// Sets the payload type of an RTP packet in place.
pub fn set_payload_type(packet: &mut [u8], pt: u8) {
    if packet.len() >= 12 && packet[0] >> 6 == 2 {
        packet[1] = (packet[1] & 0x80) | (pt & 0x7f);
    }
}

/// Payload type of an RTP packet.
pub fn payload_type(packet: &[u8]) -> Option<u8> {
    (packet.len() >= 12 && packet[0] >> 6 == 2).then(|| packet[1] & 0x7f)
}

/// Rewrites the payload type of `buffer` when it differs; copies only then.
pub fn normalise_buffer(buffer: &mut gst::Buffer, pt: u8) {
    let differs = buffer
        .map_readable()
        .ok()
        .and_then(|m| payload_type(&m))
        .is_some_and(|old| old != pt);
    if differs {
        let b = buffer.make_mut();
        if let Ok(mut map) = b.map_writable() {
            set_payload_type(&mut map, pt);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_type_rewrite_keeps_marker_bit() {
        let mut p = [0x80u8, 0x80 | 100, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1];
        set_payload_type(&mut p, 96);
        assert_eq!(p[1], 0x80 | 96);
        assert_eq!(payload_type(&p), Some(96));
        let mut short = [0x80u8, 5];
        set_payload_type(&mut short, 96);
        assert_eq!(short[1], 5);
    }

    #[test]
    fn caps_are_cleaned_and_relabelled() {
        gst::init().unwrap();
        let caps: gst::Caps = "application/x-rtp, media=(string)video, payload=(int)100, clock-rate=(int)90000, \
             encoding-name=(string)H264, packetization-mode=(string)1, ssrc=(uint)42, \
             extmap-3=(string)urn:ietf:params:rtp-hdrext:sdes:mid, rtcp-fb-transport-cc=(boolean)true, a-foo=(string)x"
            .parse()
            .unwrap();
        let f = forward_format(&caps).unwrap();
        assert_eq!(f.kind, TrackKind::Video);
        assert_eq!(f.payload, 102);
        let s = f.caps.structure(0).unwrap();
        assert_eq!(s.get::<i32>("payload").unwrap(), 102);
        assert_eq!(s.get::<u32>("ssrc").unwrap(), 42);
        assert!(!s.has_field("extmap-3"));
        assert!(!s.has_field("a-foo"));
        assert!(!s.has_field("rtcp-fb-transport-cc"));
        assert!(s.get::<bool>("rtcp-fb-nack-pli").unwrap());
        let vp9: gst::Caps =
            "application/x-rtp, media=(string)video, encoding-name=(string)VP9, payload=(int)98"
                .parse()
                .unwrap();
        assert!(forward_format(&vp9).is_none());
    }
}
