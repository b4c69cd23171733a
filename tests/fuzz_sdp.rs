//! Property tests of everything that reads an SDP a client sent: the
//! publish-offer filter and m-line listing (`media::sdp`), the audio-level
//! extension lookup, GStreamer's parse into a session description
//! (`peer::parse_description`), the WHEP answer (`egress::answer_offer`: str0m and our m-line choice)
//! and the ICE candidate check. Inputs are arbitrary text and real offers
//! (Chrome, Firefox, OBS/WHIP, a WHEP viewer) with lines dropped, repeated,
//! swapped or replaced and fields inside lines changed. None may panic;
//! what they accept must be consistent.
//!
//! 256 cases per property (`PROPTEST_CASES` overrides: see docs/testing.md).

use gst_webrtc::WebRTCSDPType;
#[path = "common/proptest_config.rs"]
mod proptest_config;

use proptest::prelude::*;
use roomcast::media::{MediaError, audio_level, egress, ice, peer, sdp};

/// Chrome publishing a camera and a microphone (unified plan, BUNDLE, RTX, RED, FEC).
const CHROME_PUBLISH: &str = "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
a=group:BUNDLE 0 1\r\na=extmap-allow-mixed\r\na=msid-semantic: WMS stream0\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126\r\nc=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\n\
a=candidate:1467250027 1 udp 2122260223 192.168.1.2 46243 typ host generation 0 network-id 1\r\n\
a=candidate:435653019 1 tcp 1518280447 192.168.1.2 9 typ host tcptype active generation 0 network-id 1\r\n\
a=ice-ufrag:EsAw\r\na=ice-pwd:bP+XJMM09aR8AiX1jdukzR6Y\r\na=ice-options:trickle\r\n\
a=fingerprint:sha-256 D2:FA:0E:C3:22:59:5E:14:95:69:92:3D:13:B4:84:24:2C:C2:A2:C0:3E:FD:34:8E:5E:EA:6F:AF:52:CE:E6:0F\r\n\
a=setup:actpass\r\na=mid:0\r\na=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n\
a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time\r\n\
a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r\n\
a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\na=sendonly\r\na=msid:stream0 audio0\r\na=rtcp-mux\r\n\
a=rtpmap:111 opus/48000/2\r\na=rtcp-fb:111 transport-cc\r\na=fmtp:111 minptime=10;useinbandfec=1\r\n\
a=rtpmap:63 red/48000/2\r\na=fmtp:63 111/111\r\na=rtpmap:9 G722/8000\r\na=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\na=rtpmap:13 CN/8000\r\na=rtpmap:110 telephone-event/48000\r\n\
a=rtpmap:126 telephone-event/8000\r\na=ssrc:3735928559 cname:Yq/Lx4X2QbhEzWbq\r\n\
a=ssrc:3735928559 msid:stream0 audio0\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96 97 102 103 104 105 106 107 108 109 127 125 39 40 45 46 98 99 100 101 112 113 116 117 118\r\n\
c=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\na=ice-ufrag:EsAw\r\na=ice-pwd:bP+XJMM09aR8AiX1jdukzR6Y\r\n\
a=ice-options:trickle\r\n\
a=fingerprint:sha-256 D2:FA:0E:C3:22:59:5E:14:95:69:92:3D:13:B4:84:24:2C:C2:A2:C0:3E:FD:34:8E:5E:EA:6F:AF:52:CE:E6:0F\r\n\
a=setup:actpass\r\na=mid:1\r\na=extmap:14 urn:ietf:params:rtp-hdrext:toffset\r\n\
a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time\r\na=extmap:13 urn:3gpp:video-orientation\r\n\
a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r\n\
a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\n\
a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id\r\n\
a=extmap:11 urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id\r\na=sendonly\r\n\
a=msid:stream0 video0\r\na=rtcp-mux\r\na=rtcp-rsize\r\na=rtpmap:96 VP8/90000\r\n\
a=rtcp-fb:96 goog-remb\r\na=rtcp-fb:96 transport-cc\r\na=rtcp-fb:96 ccm fir\r\na=rtcp-fb:96 nack\r\n\
a=rtcp-fb:96 nack pli\r\na=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=96\r\na=rtpmap:102 H264/90000\r\n\
a=rtcp-fb:102 nack pli\r\na=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f\r\n\
a=rtpmap:103 rtx/90000\r\na=fmtp:103 apt=102\r\na=rtpmap:104 H264/90000\r\n\
a=fmtp:104 level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42001f\r\n\
a=rtpmap:105 rtx/90000\r\na=fmtp:105 apt=104\r\na=rtpmap:106 H264/90000\r\n\
a=rtcp-fb:106 nack pli\r\na=fmtp:106 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n\
a=rtpmap:107 rtx/90000\r\na=fmtp:107 apt=106\r\na=rtpmap:108 H264/90000\r\n\
a=fmtp:108 level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42e01f\r\n\
a=rtpmap:109 rtx/90000\r\na=fmtp:109 apt=108\r\na=rtpmap:127 H264/90000\r\n\
a=fmtp:127 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=4d001f\r\n\
a=rtpmap:125 rtx/90000\r\na=fmtp:125 apt=127\r\na=rtpmap:39 H264/90000\r\n\
a=fmtp:39 level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=4d001f\r\n\
a=rtpmap:40 rtx/90000\r\na=fmtp:40 apt=39\r\na=rtpmap:45 AV1/90000\r\na=fmtp:45 level-idx=5;profile=0;tier=0\r\n\
a=rtpmap:46 rtx/90000\r\na=fmtp:46 apt=45\r\na=rtpmap:98 VP9/90000\r\na=fmtp:98 profile-id=0\r\n\
a=rtpmap:99 rtx/90000\r\na=fmtp:99 apt=98\r\na=rtpmap:100 VP9/90000\r\na=fmtp:100 profile-id=2\r\n\
a=rtpmap:101 rtx/90000\r\na=fmtp:101 apt=100\r\na=rtpmap:112 H264/90000\r\n\
a=fmtp:112 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=64001f\r\n\
a=rtpmap:113 rtx/90000\r\na=fmtp:113 apt=112\r\na=rtpmap:116 red/90000\r\na=rtpmap:117 rtx/90000\r\n\
a=fmtp:117 apt=116\r\na=rtpmap:118 ulpfec/90000\r\na=ssrc-group:FID 2863311530 3149642683\r\n\
a=ssrc:2863311530 cname:Yq/Lx4X2QbhEzWbq\r\na=ssrc:2863311530 msid:stream0 video0\r\n\
a=ssrc:3149642683 cname:Yq/Lx4X2QbhEzWbq\r\na=ssrc:3149642683 msid:stream0 video0\r\n";

/// Firefox publishing (different ordering, `a=sendrecv`, `a=extmap` with directions).
const FIREFOX_PUBLISH: &str = "v=0\r\no=mozilla...THIS_IS_SDPARTA-99.0 1873452112 0 IN IP4 0.0.0.0\r\n\
s=-\r\nt=0 0\r\na=fingerprint:sha-256 5B:0F:6D:22:33:1D:FA:FE:3C:6A:C6:76:3A:6C:7F:95:0A:0D:4C:3E:9E:42:7F:48:70:37:60:30:28:F4:55:57\r\n\
a=group:BUNDLE 0 1\r\na=ice-options:trickle\r\na=msid-semantic:WMS *\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 109 9 0 8 101\r\nc=IN IP4 0.0.0.0\r\na=sendrecv\r\n\
a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\na=extmap:2/recvonly urn:ietf:params:rtp-hdrext:csrc-audio-level\r\n\
a=extmap:3 urn:ietf:params:rtp-hdrext:sdes:mid\r\na=fmtp:109 maxplaybackrate=48000;stereo=1;useinbandfec=1\r\n\
a=fmtp:101 0-15\r\na=ice-pwd:b7a1b5d3d0c0a4e6c2f0e1d2c3b4a596\r\na=ice-ufrag:8f1c2d3e\r\na=mid:0\r\n\
a=msid:{5c1d} {7a2b}\r\na=rtcp-mux\r\na=rtpmap:109 opus/48000/2\r\na=rtpmap:9 G722/8000/1\r\n\
a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000/1\r\na=setup:actpass\r\n\
a=ssrc:1044250521 cname:{0c7d}\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 120 124 121 125 126 127 97 98\r\nc=IN IP4 0.0.0.0\r\na=sendrecv\r\n\
a=extmap:3 urn:ietf:params:rtp-hdrext:sdes:mid\r\na=extmap:4 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time\r\n\
a=extmap:5 urn:ietf:params:rtp-hdrext:toffset\r\na=extmap:6/recvonly http://www.webrtc.org/experiments/rtp-hdrext/playout-delay\r\n\
a=extmap:7 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r\n\
a=fmtp:126 profile-level-id=42e01f;level-asymmetry-allowed=1;packetization-mode=1\r\n\
a=fmtp:97 profile-level-id=42e01f;level-asymmetry-allowed=1\r\na=fmtp:120 max-fs=12288;max-fr=60\r\n\
a=fmtp:124 apt=120\r\na=fmtp:121 max-fs=12288;max-fr=60\r\na=fmtp:125 apt=121\r\na=fmtp:127 apt=126\r\n\
a=fmtp:98 apt=97\r\na=ice-pwd:b7a1b5d3d0c0a4e6c2f0e1d2c3b4a596\r\na=ice-ufrag:8f1c2d3e\r\na=mid:1\r\n\
a=msid:{5c1d} {9f8e}\r\na=rtcp-fb:120 nack\r\na=rtcp-fb:120 nack pli\r\na=rtcp-fb:120 ccm fir\r\n\
a=rtcp-fb:120 goog-remb\r\na=rtcp-fb:120 transport-cc\r\na=rtcp-fb:126 nack pli\r\na=rtcp-mux\r\na=rtcp-rsize\r\n\
a=rtpmap:120 VP8/90000\r\na=rtpmap:124 rtx/90000\r\na=rtpmap:121 VP9/90000\r\na=rtpmap:125 rtx/90000\r\n\
a=rtpmap:126 H264/90000\r\na=rtpmap:127 rtx/90000\r\na=rtpmap:97 H264/90000\r\na=rtpmap:98 rtx/90000\r\n\
a=setup:actpass\r\na=ssrc:3367402210 cname:{0c7d}\r\na=ssrc:3011766185 cname:{0c7d}\r\n\
a=ssrc-group:FID 3367402210 3011766185\r\n";

/// OBS 30 publishing over WHIP (H.264 and Opus, no trickle).
const OBS_WHIP: &str = "v=0\r\no=rtc 3767197920 0 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
a=group:BUNDLE 0 1\r\na=group:LS 0 1\r\na=msid-semantic:WMS *\r\na=setup:actpass\r\n\
a=ice-ufrag:PQrs\r\na=ice-pwd:1a2b3c4d5e6f7a8b9c0d1e2f\r\na=ice-options:ice2,trickle\r\n\
a=fingerprint:sha-256 0C:1D:2E:3F:40:51:62:73:84:95:A6:B7:C8:D9:EA:FB:0C:1D:2E:3F:40:51:62:73:84:95:A6:B7:C8:D9:EA:FB\r\n\
m=audio 50000 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 127.0.0.1\r\na=mid:0\r\na=sendonly\r\n\
a=ssrc:1 cname:obs\r\na=ssrc:1 msid:obs obs-audio\r\na=msid:obs obs-audio\r\na=rtcp-mux\r\n\
a=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;maxaveragebitrate=96000;stereo=1;sprop-stereo=1;useinbandfec=1\r\n\
a=candidate:1 1 UDP 2122317823 127.0.0.1 50000 typ host\r\na=end-of-candidates\r\n\
m=video 50000 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 127.0.0.1\r\na=mid:1\r\na=sendonly\r\n\
a=ssrc:2 cname:obs\r\na=ssrc:2 msid:obs obs-video\r\na=msid:obs obs-video\r\na=rtcp-mux\r\n\
a=rtpmap:96 H264/90000\r\na=rtcp-fb:96 nack\r\na=rtcp-fb:96 nack pli\r\na=rtcp-fb:96 goog-remb\r\n\
a=fmtp:96 profile-level-id=42e01f;packetization-mode=1;level-asymmetry-allowed=1\r\n";

/// A browser watching over WHEP (receive only).
const WHEP_VIEWER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96 102 106 127\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=recvonly\r\na=rtcp-mux\r\n\
a=ice-ufrag:abcd\r\na=ice-pwd:0123456789abcdef01234567\r\na=setup:actpass\r\n\
a=fingerprint:sha-256 D2:FA:0E:C3:22:59:5E:14:95:69:92:3D:13:B4:84:24:2C:C2:A2:C0:3E:FD:34:8E:5E:EA:6F:AF:52:CE:E6:0F\r\n\
a=rtpmap:96 VP8/90000\r\na=rtpmap:102 H264/90000\r\n\
a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f\r\n\
a=rtpmap:106 H264/90000\r\na=fmtp:106 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n\
a=rtpmap:127 H264/90000\r\na=fmtp:127 level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42e01f\r\n\
a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r\n\
a=rtcp-fb:106 transport-cc\r\na=rtcp-fb:106 nack pli\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111 0\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\na=recvonly\r\na=rtcp-mux\r\n\
a=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;useinbandfec=1\r\na=rtpmap:0 PCMU/8000\r\n";

const CORPUS: &[&str] = &[CHROME_PUBLISH, FIREFOX_PUBLISH, OBS_WHIP, WHEP_VIEWER];

/// Values that break field parsers: empty, signs, overflow, separators, control characters.
const NASTY: &[&str] = &[
    "",
    " ",
    "0",
    "-1",
    "255",
    "256",
    "4294967295",
    "4294967296",
    "99999999999999999999999",
    "*",
    "/",
    ":",
    ";",
    "=",
    "a=",
    "m=",
    "m=video",
    "v=0",
    "\t",
    "\r",
    "\u{0}",
    "é",
    "💥",
    "H264",
    "opus",
    "VP8",
    "rtx",
    "apt=",
    "packetization-mode=1",
    "profile-level-id=42e01f",
    "urn:ietf:params:rtp-hdrext:ssrc-audio-level",
];

#[derive(Debug, Clone)]
enum LineEdit {
    Drop(prop::sample::Index),
    Repeat(prop::sample::Index),
    Swap(prop::sample::Index, prop::sample::Index),
    Replace(prop::sample::Index, String),
    /// Replace one token of a line (split at ` `, `:`, `/`, `=`, `;`).
    Field(prop::sample::Index, prop::sample::Index, String),
    Truncate(prop::sample::Index),
}

fn replacement() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(NASTY).prop_map(str::to_owned),
        1 => "\\PC{0,16}",
        1 => any::<String>(),
        1 => "[0-9]{1,25}",
    ]
}

fn line_edit() -> impl Strategy<Value = LineEdit> {
    use prop::sample::Index;
    prop_oneof![
        1 => any::<Index>().prop_map(LineEdit::Drop),
        1 => any::<Index>().prop_map(LineEdit::Repeat),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(a, b)| LineEdit::Swap(a, b)),
        1 => (any::<Index>(), replacement()).prop_map(|(a, s)| LineEdit::Replace(a, s)),
        3 => (any::<Index>(), any::<Index>(), replacement())
            .prop_map(|(a, b, s)| LineEdit::Field(a, b, s)),
        1 => any::<Index>().prop_map(LineEdit::Truncate),
    ]
}

fn apply(sdp: &str, edits: &[LineEdit], ending: &str) -> String {
    let mut lines: Vec<String> = sdp.lines().map(str::to_owned).collect();
    for edit in edits {
        if lines.is_empty() {
            break;
        }
        let n = lines.len();
        match edit {
            LineEdit::Drop(i) => {
                lines.remove(i.index(n));
            }
            LineEdit::Repeat(i) => {
                let l = lines[i.index(n)].clone();
                lines.insert(i.index(n), l);
            }
            LineEdit::Swap(a, b) => lines.swap(a.index(n), b.index(n)),
            LineEdit::Replace(i, s) => lines[i.index(n)] = s.clone(),
            LineEdit::Field(i, j, s) => {
                let line = &lines[i.index(n)];
                let cuts: Vec<usize> = line
                    .char_indices()
                    .filter(|(_, c)| matches!(c, ' ' | ':' | '/' | '=' | ';'))
                    .map(|(i, _)| i)
                    .collect();
                let mut bounds = vec![0];
                for c in cuts {
                    bounds.push(c);
                    bounds.push(c + 1);
                }
                bounds.push(line.len());
                // Token k spans bounds[2k]..bounds[2k+1].
                let k = j.index(bounds.len() / 2);
                let (from, to) = (bounds[2 * k], bounds[2 * k + 1]);
                lines[i.index(n)] = format!("{}{}{}", &line[..from], s, &line[to..]);
            }
            LineEdit::Truncate(i) => {
                let line = &lines[i.index(n)];
                let at = line.floor_char_boundary(i.index(line.len() + 1));
                lines[i.index(n)] = line[..at].to_owned();
            }
        }
    }
    let mut out = lines.join(ending);
    out.push_str(ending);
    out
}

/// A real offer with a few lines or fields changed, and its line endings.
fn mutated_sdp() -> impl Strategy<Value = String> {
    (
        prop::sample::select(CORPUS),
        prop::collection::vec(line_edit(), 1..6),
        prop::sample::select(&["\r\n", "\n", "\r", "\r\r\n"][..]),
    )
        .prop_map(|(sdp, edits, ending)| apply(sdp, &edits, ending))
}

/// Any text, text made of SDP-looking lines, or a mutated real offer.
fn sdp_text() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => any::<String>(),
        1 => "(v=0\r\n)?([a-z]=[ -~]{0,40}\r?\n){0,30}",
        4 => mutated_sdp(),
    ]
}

thread_local! {
    /// GLib criticals and warnings logged on this thread (GStreamer's
    /// `g_return_if_fail` checks land here: each is a bug to fix).
    static CRITICALS: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn init() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        gst::init().expect("GStreamer");
        gst::glib::log_set_default_handler(|domain, level, message| {
            use gst::glib::LogLevel;
            if matches!(
                level,
                LogLevel::Critical | LogLevel::Warning | LogLevel::Error
            ) {
                let line = format!("{domain:?} {level:?}: {message}");
                CRITICALS.with(|c| c.borrow_mut().push(line));
            }
        });
    });
}

/// Runs `f`, failing the case if GLib complained meanwhile.
fn quietly<T>(f: impl FnOnce() -> T) -> Result<T, TestCaseError> {
    init();
    CRITICALS.with(|c| c.borrow_mut().clear());
    let out = f();
    let logged = CRITICALS.with(|c| std::mem::take(&mut *c.borrow_mut()));
    prop_assert!(logged.is_empty(), "GLib logged: {:?}", logged);
    Ok(out)
}

/// Everything the server does with a publisher's offer, as `RoomMedia::publish_offer` does it.
fn publish_path(text: &str) -> Result<(), TestCaseError> {
    let sections = text.lines().filter(|l| l.starts_with("m=")).count();
    if let Ok(filtered) = sdp::filter_publish_offer(text) {
        prop_assert!(filtered.starts_with("v=0"), "{}", filtered);
        prop_assert!(filtered.ends_with("\r\n"));
        prop_assert!(sections <= sdp::MAX_PUBLISH_SECTIONS);
        let kept = filtered.lines().filter(|l| l.starts_with("m=")).count();
        prop_assert_eq!(kept, sections, "every m-section is kept");
        for m in filtered
            .lines()
            .filter(|l| l.starts_with("m=audio") || l.starts_with("m=video"))
        {
            prop_assert!(
                m.split_whitespace().count() >= 4,
                "a codec is left in {}",
                m
            );
        }
        let _ = audio_level::offered_id(&filtered);
        // GStreamer may still refuse it (it stops reading at a NUL byte, for
        // one): an `invalid_sdp` for the client, as long as nothing panics
        // or trips GLib's checks.
        let _ = quietly(|| peer::parse_description(WebRTCSDPType::Offer, &filtered))?;
    }
    Ok(())
}

/// 256 cases unless `PROPTEST_CASES` says otherwise (see `proptest_config`).
fn config() -> ProptestConfig {
    proptest_config::config(file!())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn publish_offers_are_filtered_or_refused(text in sdp_text()) {
        publish_path(&text)?;
    }

    #[test]
    fn media_sections_match_the_m_lines(text in sdp_text()) {
        let sections = sdp::media_sections(&text);
        let m_lines = text.lines().filter(|l| l.trim_end().starts_with("m=")).count();
        prop_assert_eq!(sections.len(), m_lines);
    }

    #[test]
    fn the_audio_level_id_is_one_byte_extension(text in sdp_text()) {
        if let Some(id) = audio_level::offered_id(&text) {
            prop_assert!((1..=14).contains(&id));
        }
    }

    #[test]
    fn descriptions_parse_or_are_refused(text in sdp_text()) {
        for kind in [WebRTCSDPType::Offer, WebRTCSDPType::Answer] {
            if let Ok(desc) = quietly(|| peer::parse_description(kind, &text))? {
                prop_assert!(desc.sdp().medias_len() > 0);
            }
        }
    }

    #[test]
    fn whep_offers_are_answered_or_refused(text in sdp_text()) {
        // As `Egress::add_viewer` does it.
        if let Ok((answer, lines)) = quietly(|| egress::answer_offer(&text))? {
            prop_assert!(lines >= 1);
            prop_assert!(answer.contains("m=video"), "{answer}");
        }
    }

    #[test]
    fn candidates_are_checked_without_panicking(
        candidate in prop_oneof![
            any::<String>(),
            "(a=)?candidate:[0-9]{1,10} [0-9] (UDP|udp|tcp) [0-9]{1,12} [0-9.:a-f]{1,40} [0-9]{1,6} typ (host|srflx|relay)( [ -~]{0,30})?",
        ],
        public in proptest::option::of(any::<std::net::Ipv4Addr>()),
    ) {
        if peer::candidate_is_plausible(&candidate) {
            let c = candidate.strip_prefix("a=").unwrap_or(&candidate);
            prop_assert!(c.is_empty() || c.len() <= 1024);
            prop_assert!(!c.contains(['\r', '\n', '\0']));
        }
        let _ = ice::rewrite_candidate(&candidate, public.map(std::net::IpAddr::V4));
    }
}

#[test]
fn the_corpus_is_accepted() {
    init();
    for offer in [CHROME_PUBLISH, FIREFOX_PUBLISH, OBS_WHIP] {
        let filtered = sdp::filter_publish_offer(offer).unwrap_or_else(|e| panic!("{e}: {offer}"));
        assert!(peer::parse_description(WebRTCSDPType::Offer, &filtered).is_ok());
        assert_eq!(audio_level::offered_id(offer).is_some(), offer != OBS_WHIP);
    }
    let (answer, lines) = egress::answer_offer(WHEP_VIEWER).expect("H.264 and Opus");
    assert_eq!(lines, 2, "{answer}");
    assert!(answer.contains("a=sendonly"), "{answer}");
    // Without H.264 packetization-mode 1 a viewer is refused.
    let vp8_only = WHEP_VIEWER.replace("H264", "H265");
    assert!(matches!(
        egress::answer_offer(&vp8_only),
        Err(MediaError::BadSdp(_))
    ));
}

/// The watch on GLib's log works: GStreamer's own check of an empty buffer is caught.
#[test]
fn glib_criticals_fail_a_case() {
    let caught = quietly(|| gst_sdp::SDPMessage::parse_buffer(b"").is_err());
    assert!(caught.is_err(), "{caught:?}");
    assert!(
        peer::parse_description(WebRTCSDPType::Offer, "").is_err(),
        "refused before GStreamer sees it"
    );
}
