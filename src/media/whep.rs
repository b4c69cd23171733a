//! WHEP and WHIP (draft-ietf-wish-whep / -whip) on the media side: the
//! client offers once, without trickle, and the answer carries every
//! candidate of ours. A WHEP viewer's offer is answered by the broadcast's
//! egress (`egress.rs`); here we read that answer for the m-lines we send on
//! and the payload type of our codec in each (H.264 packetization-mode 1,
//! constrained baseline preferred, and Opus), which our packets are
//! relabelled with.

use super::rtp::TrackKind;
use super::{MediaError, ice};
use gst::prelude::*;
use gst_webrtc::WebRTCICEGatheringState;
use std::net::IpAddr;
use std::time::Duration;

/// One m-line of our answer to a viewer that we send on.
#[derive(Debug, Clone)]
pub struct AnsweredLine {
    /// m-line index.
    pub index: u32,
    /// Audio or video.
    pub kind: TrackKind,
    /// The payload type of our codec in it.
    pub pt: u8,
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

/// The m-lines of our answer to a WHEP viewer that send, with the payload
/// type of our codec in each. Fails when none can carry H.264 video.
pub fn answered_lines(answer: &gst_sdp::SDPMessageRef) -> Result<Vec<AnsweredLine>, MediaError> {
    let mut out = Vec::new();
    for (index, media) in answer.medias().enumerate() {
        let kind = match media.media() {
            Some("video") => TrackKind::Video,
            Some("audio") => TrackKind::Audio,
            _ => continue,
        };
        if media.attribute_val("recvonly").is_some()
            || media.attribute_val("inactive").is_some()
            || media.port() == 0
        {
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
        out.push(AnsweredLine {
            index: index as u32,
            kind,
            pt,
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

    /// Our answer to a Chrome offer, as the egress writes it (two H.264
    /// formats accepted, one of them packetization-mode 0).
    const ANSWER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 102 106 127\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendonly\r\na=rtcp-mux\r\n\
a=rtpmap:102 H264/90000\r\na=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f\r\n\
a=rtpmap:106 H264/90000\r\na=fmtp:106 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n\
a=rtpmap:127 H264/90000\r\na=fmtp:127 level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42e01f\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\na=sendonly\r\na=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;useinbandfec=1\r\n";

    fn lines(sdp: &str) -> Result<Vec<AnsweredLine>, MediaError> {
        gst::init().unwrap();
        let msg = gst_sdp::SDPMessage::parse_buffer(sdp.as_bytes()).unwrap();
        answered_lines(&msg)
    }

    #[test]
    fn picks_constrained_baseline_and_opus() {
        let lines = lines(ANSWER).unwrap();
        assert_eq!(lines.len(), 2);
        assert_eq!(
            (lines[0].index, lines[0].kind, lines[0].pt),
            (0, TrackKind::Video, 106)
        );
        assert_eq!(
            (lines[1].index, lines[1].kind, lines[1].pt),
            (1, TrackKind::Audio, 111)
        );
    }

    #[test]
    fn lines_that_do_not_send_are_skipped() {
        let rejected = ANSWER.replace("m=audio 9", "m=audio 0");
        assert_eq!(lines(&rejected).unwrap().len(), 1);
        let inactive = ANSWER.replace("a=mid:1\r\na=sendonly", "a=mid:1\r\na=inactive");
        assert_eq!(lines(&inactive).unwrap().len(), 1);
    }

    #[test]
    fn an_answer_without_h264_is_refused() {
        let no_h264 = ANSWER.replace("H264", "H265");
        assert!(matches!(lines(&no_h264), Err(MediaError::BadSdp(_))));
        let mode_0_only = ANSWER.replace("packetization-mode=1", "packetization-mode=0");
        assert!(matches!(lines(&mode_0_only), Err(MediaError::BadSdp(_))));
    }
}
