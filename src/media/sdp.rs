//! Text-level SDP rewriting for offers from publishers.
//!
//! Browsers offer a dozen codecs plus RTX/RED/FEC. The SFU forwards VP8,
//! H.264 (packetization-mode 1) and Opus unchanged, so before webrtcbin
//! answers we remove everything else from the offer: the answer then only
//! accepts what every subscriber can be sent. Pure string work, no GStreamer.

use std::collections::HashSet;

/// Why an offer was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    /// Not an SDP session description.
    #[error("not an SDP session description")]
    NotSdp,
    /// A media section offers no codec we forward.
    #[error("no supported codec in the {0} section (VP8, H.264 or Opus are forwarded)")]
    NoSupportedCodec(String),
    /// Nothing to publish.
    #[error("the offer has no audio or video section")]
    NoMedia,
    /// More sections than a participant may publish.
    #[error("the offer has more than {MAX_PUBLISH_SECTIONS} media sections")]
    TooManySections,
}

/// Most m-sections a publish offer may carry (a camera, a microphone, a
/// screen share and its audio, with room to spare).
pub const MAX_PUBLISH_SECTIONS: usize = 8;

/// Codec of a payload type as announced in `a=rtpmap` / `a=fmtp`.
#[derive(Debug, Default, Clone)]
struct PayloadInfo {
    encoding: String,
    fmtp: String,
}

fn line_pt<'a>(line: &'a str, prefix: &str) -> Option<(&'a str, &'a str)> {
    let rest = line.strip_prefix(prefix)?;
    let (pt, tail) = rest.split_once([' ', '\t']).unwrap_or((rest, ""));
    pt.bytes().all(|b| b.is_ascii_digit()).then_some((pt, tail))
}

fn fmtp_param<'a>(fmtp: &'a str, key: &str) -> Option<&'a str> {
    fmtp.split(';').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k.trim().eq_ignore_ascii_case(key)).then_some(v.trim())
    })
}

/// Choose the payload types to keep in one media section.
fn choose(
    kind: &str,
    order: &[String],
    infos: &std::collections::HashMap<String, PayloadInfo>,
) -> Vec<String> {
    let info = |pt: &String| infos.get(pt).cloned().unwrap_or_default();
    match kind {
        "audio" => order
            .iter()
            .filter(|pt| info(pt).encoding.eq_ignore_ascii_case("opus"))
            .take(1)
            .cloned()
            .collect(),
        "video" => {
            let mut keep: Vec<String> = order
                .iter()
                .filter(|pt| info(pt).encoding.eq_ignore_ascii_case("vp8"))
                .take(1)
                .cloned()
                .collect();
            // One H.264 format: packetization-mode 1, constrained baseline preferred.
            let h264: Vec<&String> = order
                .iter()
                .filter(|pt| {
                    let i = info(pt);
                    i.encoding.eq_ignore_ascii_case("h264")
                        && fmtp_param(&i.fmtp, "packetization-mode") == Some("1")
                })
                .collect();
            let baseline = h264.iter().find(|pt| {
                fmtp_param(&info(pt).fmtp, "profile-level-id")
                    .is_some_and(|p| p.to_ascii_lowercase().starts_with("42e0"))
            });
            if let Some(pt) = baseline.or(h264.first()) {
                keep.push((*pt).clone());
            }
            keep
        }
        _ => order.to_vec(),
    }
}

/// Keeps only forwarded codecs in every audio/video section of `sdp`.
pub fn filter_publish_offer(sdp: &str) -> Result<String, SdpError> {
    let sdp = sdp.replace("\r\n", "\n");
    if !sdp.trim_start().starts_with("v=0") {
        return Err(SdpError::NotSdp);
    }
    // Split into the session part and media sections.
    let mut sections: Vec<Vec<&str>> = vec![Vec::new()];
    for line in sdp.lines() {
        if line.starts_with("m=") {
            sections.push(Vec::new());
        }
        if let Some(last) = sections.last_mut() {
            last.push(line);
        }
    }
    if sections.len() - 1 > MAX_PUBLISH_SECTIONS {
        return Err(SdpError::TooManySections);
    }
    let mut out: Vec<String> = sections[0].iter().map(|l| l.to_string()).collect();
    let mut media_count = 0;
    for section in &sections[1..] {
        let mline = section[0];
        let parts: Vec<&str> = mline.split_whitespace().collect();
        if parts.len() < 4 {
            return Err(SdpError::NotSdp);
        }
        let kind = parts[0].trim_start_matches("m=");
        if kind != "audio" && kind != "video" {
            out.extend(section.iter().map(|l| l.to_string()));
            continue;
        }
        media_count += 1;
        let order: Vec<String> = parts[3..].iter().map(|s| s.to_string()).collect();
        let mut infos = std::collections::HashMap::<String, PayloadInfo>::new();
        let mut rtx_ssrcs = HashSet::new();
        for line in &section[1..] {
            if let Some((pt, tail)) = line_pt(line, "a=rtpmap:") {
                infos.entry(pt.to_owned()).or_default().encoding =
                    tail.split('/').next().unwrap_or("").trim().to_owned();
            } else if let Some((pt, tail)) = line_pt(line, "a=fmtp:") {
                infos.entry(pt.to_owned()).or_default().fmtp = tail.trim().to_owned();
            } else if let Some(group) = line.strip_prefix("a=ssrc-group:FID ") {
                rtx_ssrcs.extend(group.split_whitespace().skip(1).map(str::to_owned));
            }
        }
        let keep = choose(kind, &order, &infos);
        if keep.is_empty() {
            return Err(SdpError::NoSupportedCodec(kind.to_owned()));
        }
        let keep_set: HashSet<&str> = keep.iter().map(String::as_str).collect();
        out.push(format!(
            "{} {} {} {}",
            parts[0],
            parts[1],
            parts[2],
            keep.join(" ")
        ));
        for line in &section[1..] {
            let pt_line = ["a=rtpmap:", "a=fmtp:", "a=rtcp-fb:"]
                .iter()
                .find_map(|p| line_pt(line, p));
            if let Some((pt, _)) = pt_line
                && pt != "*"
                && !keep_set.contains(pt)
            {
                continue;
            }
            if line.starts_with("a=ssrc-group:") {
                continue;
            }
            if let Some(rest) = line.strip_prefix("a=ssrc:") {
                let ssrc = rest.split_whitespace().next().unwrap_or("");
                if rtx_ssrcs.contains(ssrc) {
                    continue;
                }
            }
            out.push(line.to_string());
        }
    }
    if media_count == 0 {
        return Err(SdpError::NoMedia);
    }
    let mut text = out.join("\r\n");
    text.push_str("\r\n");
    Ok(text)
}

/// One m-section of an SDP as the SFU needs to know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaSection {
    /// `a=mid`.
    pub mid: Option<String>,
    /// First `a=ssrc`.
    pub ssrc: Option<u32>,
    /// `a=inactive` or port 0 without bundle.
    pub inactive: bool,
}

/// Lists the m-sections of `sdp` with their mid and first SSRC.
pub fn media_sections(sdp: &str) -> Vec<MediaSection> {
    let mut out: Vec<MediaSection> = Vec::new();
    for line in sdp.lines().map(str::trim_end) {
        if line.starts_with("m=") {
            out.push(MediaSection {
                mid: None,
                ssrc: None,
                inactive: false,
            });
            continue;
        }
        let Some(cur) = out.last_mut() else { continue };
        if let Some(mid) = line.strip_prefix("a=mid:") {
            cur.mid = Some(mid.trim().to_owned());
        } else if let Some(rest) = line.strip_prefix("a=ssrc:") {
            if cur.ssrc.is_none() {
                cur.ssrc = rest.split_whitespace().next().and_then(|s| s.parse().ok());
            }
        } else if line == "a=inactive" {
            cur.inactive = true;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn sections_with_mid_and_ssrc() {
        let sdp = "v=0\r\nm=audio 9 X 111\r\na=ssrc:42 cname:x\r\na=ssrc:42 msid:y\r\na=mid:audio0\r\n\
m=video 0 X 96\r\na=inactive\r\na=mid:video1\r\n";
        let s = media_sections(sdp);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].mid.as_deref(), Some("audio0"));
        assert_eq!(s[0].ssrc, Some(42));
        assert!(!s[0].inactive);
        assert!(s[1].inactive);
        assert_eq!(s[1].ssrc, None);
    }

    use super::*;

    const CHROME_OFFER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendonly\r\n\
a=rtpmap:111 opus/48000/2\r\na=rtcp-fb:111 transport-cc\r\na=fmtp:111 minptime=10;useinbandfec=1\r\n\
a=rtpmap:63 red/48000/2\r\na=fmtp:63 111/111\r\na=rtpmap:9 G722/8000\r\na=rtpmap:0 PCMU/8000\r\n\
a=ssrc:11 cname:x\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96 97 102 103 104 105 45\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\na=sendonly\r\n\
a=rtpmap:96 VP8/90000\r\na=rtcp-fb:96 nack pli\r\na=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=96\r\n\
a=rtpmap:102 H264/90000\r\na=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f\r\n\
a=rtpmap:103 rtx/90000\r\na=fmtp:103 apt=102\r\n\
a=rtpmap:104 H264/90000\r\na=fmtp:104 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n\
a=rtpmap:105 rtx/90000\r\na=fmtp:105 apt=104\r\na=rtpmap:45 AV1/90000\r\n\
a=ssrc-group:FID 21 22\r\na=ssrc:21 cname:x\r\na=ssrc:22 cname:x\r\n";

    #[test]
    fn keeps_vp8_one_h264_and_opus() {
        let out = filter_publish_offer(CHROME_OFFER).unwrap();
        assert!(out.contains("m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"), "{out}");
        assert!(
            out.contains("m=video 9 UDP/TLS/RTP/SAVPF 96 104\r\n"),
            "{out}"
        );
        assert!(out.contains("a=fmtp:111 minptime=10;useinbandfec=1"));
        assert!(out.contains("a=rtcp-fb:96 nack pli"));
        for gone in [
            "rtx/",
            "red/",
            "G722",
            "PCMU",
            "AV1",
            "a=fmtp:102",
            "a=ssrc-group",
            "a=ssrc:22",
        ] {
            assert!(!out.contains(gone), "{gone} left in {out}");
        }
        assert!(out.contains("a=ssrc:21 cname:x"));
        assert!(out.contains("a=group:BUNDLE 0 1"));
    }

    #[test]
    fn refuses_what_cannot_be_forwarded() {
        assert_eq!(filter_publish_offer("hello"), Err(SdpError::NotSdp));
        assert_eq!(
            filter_publish_offer("v=0\r\ns=-\r\nm=video 9 RTP/AVP 45\r\na=rtpmap:45 AV1/90000\r\n"),
            Err(SdpError::NoSupportedCodec("video".into()))
        );
        assert_eq!(
            filter_publish_offer("v=0\r\ns=-\r\n"),
            Err(SdpError::NoMedia)
        );
        assert_eq!(
            filter_publish_offer("v=0\r\nm=video\r\n"),
            Err(SdpError::NotSdp)
        );
        let many = format!(
            "v=0\r\n{}",
            "m=audio 9 X 111\r\na=rtpmap:111 opus/48000/2\r\n".repeat(MAX_PUBLISH_SECTIONS + 1)
        );
        assert_eq!(filter_publish_offer(&many), Err(SdpError::TooManySections));
    }
}
