//! WHEP and WHIP (draft-ietf-wish-whep / -whip) on the media side: the
//! client offers once, without trickle, and the answer carries every
//! candidate of ours. For WHEP we pick, per m-line of the viewer's offer,
//! the payload type of the codec we send (H.264 packetization-mode 1, Opus)
//! and relabel our packets with it.

use super::rtp::TrackKind;
use super::{MediaError, ice};
use gst::prelude::*;
use gst_webrtc::WebRTCICEGatheringState;
use std::net::IpAddr;
use std::time::Duration;

/// One m-line of a viewer's offer we will send on.
#[derive(Debug, Clone)]
pub struct OfferedLine {
    /// m-line index.
    pub index: u32,
    /// Audio or video.
    pub kind: TrackKind,
    /// The payload type the viewer gave our codec.
    pub pt: u8,
    /// RTP caps of that payload type, as offered.
    pub caps: gst::Caps,
}

/// How much a candidate format suits us (higher is better; `None`: unusable).
fn score(kind: TrackKind, encoding: &str, fmtp: &str) -> Option<u32> {
    match kind {
        TrackKind::Audio => encoding.eq_ignore_ascii_case("opus").then_some(1),
        TrackKind::Video => {
            if !encoding.eq_ignore_ascii_case("H264") {
                return None;
            }
            let fmtp = fmtp.to_ascii_lowercase();
            if !fmtp.contains("packetization-mode=1") {
                return None;
            }
            // Constrained baseline first: what every decoder takes.
            Some(if fmtp.contains("profile-level-id=42e0") {
                3
            } else if fmtp.contains("profile-level-id=4200") {
                2
            } else {
                1
            })
        }
    }
}

/// The m-lines of `offer` to send on, with our codec's payload type in each.
/// Fails when the offer cannot receive H.264 video (WHEP viewers must).
pub fn choose_lines(offer: &gst_sdp::SDPMessageRef) -> Result<Vec<OfferedLine>, MediaError> {
    let mut out = Vec::new();
    for (index, media) in offer.medias().enumerate() {
        let kind = match media.media() {
            Some("video") => TrackKind::Video,
            Some("audio") => TrackKind::Audio,
            _ => continue,
        };
        if media.attribute_val("sendonly").is_some() || media.attribute_val("inactive").is_some() {
            continue;
        }
        let mut best: Option<(u32, u8)> = None;
        for rtpmap in media.attributes().filter(|a| a.key() == "rtpmap") {
            let Some(value) = rtpmap.value() else {
                continue;
            };
            let mut it = value.split_whitespace();
            let (Some(pt), Some(enc)) = (it.next(), it.next()) else {
                continue;
            };
            let Ok(pt) = pt.parse::<u8>() else { continue };
            let encoding = enc.split('/').next().unwrap_or("");
            let fmtp = media
                .attributes()
                .filter(|a| a.key() == "fmtp")
                .filter_map(|a| a.value())
                .find(|v| v.split_whitespace().next() == Some(&pt.to_string()))
                .unwrap_or("");
            if let Some(s) = score(kind, encoding, fmtp)
                && best.is_none_or(|(b, _)| s > b)
            {
                best = Some((s, pt));
            }
        }
        let Some((_, pt)) = best else { continue };
        let Some(mut caps) = media.caps_from_media(i32::from(pt)) else {
            continue;
        };
        {
            let caps = caps.make_mut();
            if let Some(s) = caps.structure_mut(0) {
                s.set_name("application/x-rtp");
                // Header extensions and transport-cc are not produced here.
                let drop: Vec<String> = s
                    .fields()
                    .filter(|f| f.starts_with("extmap-") || *f == "rtcp-fb-transport-cc")
                    .map(|f| f.to_string())
                    .collect();
                for f in drop {
                    s.remove_field(&f);
                }
            }
        }
        out.push(OfferedLine {
            index: index as u32,
            kind,
            pt,
            caps,
        });
    }
    if !out.iter().any(|l| l.kind == TrackKind::Video) {
        return Err(MediaError::BadSdp(
            "the offer cannot receive H.264 video (packetization-mode=1)".into(),
        ));
    }
    Ok(out)
}

/// Waits (bounded) until `webrtcbin` has gathered its candidates and returns
/// its local description with them, the host addresses rewritten to
/// `public_ip` when one is set.
pub async fn gathered_local_sdp(
    webrtcbin: &gst::Element,
    public_ip: Option<IpAddr>,
) -> Result<String, MediaError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let state = webrtcbin.property::<WebRTCICEGatheringState>("ice-gathering-state");
        if state == WebRTCICEGatheringState::Complete || tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let desc = webrtcbin
        .property::<Option<gst_webrtc::WebRTCSessionDescription>>("local-description")
        .ok_or_else(|| MediaError::Negotiation("no local description".into()))?;
    let text = desc
        .sdp()
        .as_text()
        .map_err(|e| MediaError::Negotiation(format!("local description: {e}")))?;
    Ok(text
        .split_inclusive('\n')
        .map(|line| match line.strip_prefix("a=candidate:") {
            Some(_) => {
                let trimmed = line.trim_end();
                let c = ice::rewrite_candidate(&trimmed[2..], public_ip);
                format!("a={c}\r\n")
            }
            None => line.to_owned(),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHROME_OFFER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96 102 106 127\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=recvonly\r\na=rtcp-mux\r\n\
a=rtpmap:96 VP8/90000\r\na=rtpmap:102 H264/90000\r\na=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f\r\n\
a=rtpmap:106 H264/90000\r\na=fmtp:106 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n\
a=rtpmap:127 H264/90000\r\na=fmtp:127 level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42e01f\r\n\
a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r\na=rtcp-fb:106 transport-cc\r\na=rtcp-fb:106 nack pli\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111 0\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\na=recvonly\r\na=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;useinbandfec=1\r\na=rtpmap:0 PCMU/8000\r\n";

    #[test]
    fn picks_constrained_baseline_and_opus() {
        gst::init().unwrap();
        let msg = gst_sdp::SDPMessage::parse_buffer(CHROME_OFFER.as_bytes()).unwrap();
        let lines = choose_lines(&msg).unwrap();
        assert_eq!(lines.len(), 2);
        assert_eq!(
            (lines[0].index, lines[0].kind, lines[0].pt),
            (0, TrackKind::Video, 106)
        );
        assert_eq!(
            (lines[1].index, lines[1].kind, lines[1].pt),
            (1, TrackKind::Audio, 111)
        );
        let s = lines[0].caps.structure(0).unwrap();
        assert_eq!(s.name(), "application/x-rtp");
        assert_eq!(s.get::<i32>("payload").unwrap(), 106);
        assert!(!s.has_field("rtcp-fb-transport-cc"));
        assert!(s.fields().all(|f| !f.starts_with("extmap-")));
    }

    #[test]
    fn an_offer_without_h264_is_refused() {
        gst::init().unwrap();
        let vp8_only = CHROME_OFFER.replace("H264", "H265");
        let msg = gst_sdp::SDPMessage::parse_buffer(vp8_only.as_bytes()).unwrap();
        assert!(matches!(choose_lines(&msg), Err(MediaError::BadSdp(_))));
    }
}
