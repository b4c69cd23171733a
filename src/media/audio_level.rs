//! Audio levels from the RTP header extension of RFC 6464
//! (`urn:ietf:params:rtp-hdrext:ssrc-audio-level`): who is speaking, without
//! decoding any audio.
//!
//! Publishers put the level of each packet in a header extension when the
//! answer negotiates it. webrtcbin 1.22 writes no `a=extmap` into answers of
//! its own, so [`add_to_answer`] adds the offer's id back to the answer; a
//! pad probe then reads the level of every packet ([`read_level`]) into a
//! per-track [`LevelMeter`].

use std::sync::atomic::{AtomicU32, Ordering};

/// The RFC 6464 extension URI.
pub const URI: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";

/// The id the offer gives the audio-level extension (first audio section).
pub fn offered_id(sdp: &str) -> Option<u8> {
    let mut in_audio = false;
    for line in sdp.lines().map(str::trim_end) {
        if let Some(m) = line.strip_prefix("m=") {
            in_audio = m.starts_with("audio");
        } else if in_audio
            && let Some((id, uri)) = line
                .strip_prefix("a=extmap:")
                .and_then(|r| r.split_once(' '))
            && uri.trim() == URI
        {
            // `a=extmap:<id>[/<direction>] <uri>`
            return id
                .split('/')
                .next()
                .and_then(|i| i.parse().ok())
                .filter(|i| (1..=14).contains(i));
        }
    }
    None
}

/// Adds `a=extmap:<id> <URI>` to every audio section of an answer that lacks it.
pub fn add_to_answer(sdp: &str, id: u8) -> String {
    let line = format!("a=extmap:{id} {URI}");
    let mut out = Vec::new();
    let mut in_audio = false;
    let mut has = false;
    let close = |out: &mut Vec<String>, in_audio: bool, has: bool| {
        if in_audio && !has {
            out.push(line.clone());
        }
    };
    for l in sdp.lines().map(str::trim_end) {
        if l.starts_with("m=") {
            close(&mut out, in_audio, has);
            in_audio = l.starts_with("m=audio");
            has = false;
        } else if l.starts_with("a=extmap:") && l.ends_with(URI) {
            has = true;
        }
        out.push(l.to_owned());
    }
    close(&mut out, in_audio, has);
    let mut text = out.join("\r\n");
    text.push_str("\r\n");
    text
}

/// The level (0 = loudest … 127 = silence, in −dBov) of an RTP packet that
/// carries the extension with `id`, one-byte (RFC 8285 0xBEDE) or two-byte form.
pub fn read_level(packet: &[u8], id: u8) -> Option<u8> {
    if packet.len() < 12 || packet[0] >> 6 != 2 || packet[0] & 0x10 == 0 {
        return None;
    }
    let csrc = usize::from(packet[0] & 0x0f);
    let ext = 12 + 4 * csrc;
    let header = packet.get(ext..ext + 4)?;
    let profile = u16::from_be_bytes([header[0], header[1]]);
    let len = usize::from(u16::from_be_bytes([header[2], header[3]])) * 4;
    let body = packet.get(ext + 4..ext + 4 + len)?;
    let mut i = 0;
    if profile == 0xBEDE {
        while i < body.len() {
            let b = body[i];
            if b == 0 {
                i += 1;
                continue;
            }
            let (eid, elen) = (b >> 4, usize::from(b & 0x0f) + 1);
            if eid == 15 {
                break;
            }
            if eid == id {
                return body.get(i + 1).map(|v| v & 0x7f);
            }
            i += 1 + elen;
        }
    } else if profile & 0xfff0 == 0x1000 {
        while i + 1 < body.len() {
            let (eid, elen) = (body[i], usize::from(body[i + 1]));
            if eid == 0 {
                i += 1;
                continue;
            }
            if eid == id && elen >= 1 {
                return body.get(i + 2).map(|v| v & 0x7f);
            }
            i += 2 + elen;
        }
    }
    None
}

/// Returns `packet` with a one-byte-form header extension carrying `level`
/// under `id` (for packets that have no extension yet; others are returned
/// unchanged). Used by synthetic publishers.
pub fn with_level(packet: &[u8], id: u8, level: u8, voice: bool) -> Vec<u8> {
    if packet.len() < 12 || packet[0] >> 6 != 2 || packet[0] & 0x10 != 0 {
        return packet.to_vec();
    }
    let header_len = 12 + 4 * usize::from(packet[0] & 0x0f);
    if packet.len() < header_len {
        return packet.to_vec();
    }
    let mut out = Vec::with_capacity(packet.len() + 8);
    out.extend_from_slice(&packet[..header_len]);
    out[0] |= 0x10;
    out.extend_from_slice(&[
        0xBE,
        0xDE,
        0,
        1,
        id << 4,
        (u8::from(voice) << 7) | (level & 0x7f),
        0,
        0,
    ]);
    out.extend_from_slice(&packet[header_len..]);
    out
}

/// The RFC 6464 level (−dBov, 0..=127) of a full-scale sine at `volume` (0..=1).
pub fn level_of_sine(volume: f64) -> u8 {
    if volume <= 0.0 {
        return 127;
    }
    let rms = volume / std::f64::consts::SQRT_2;
    (-20.0 * rms.log10()).clamp(0.0, 127.0).round() as u8
}

/// Smoothed loudness of one audio track, updated from a streaming thread and
/// read by the room task. Loudness is `127 - level`: 0 for silence, ~90–110
/// for speech.
#[derive(Debug, Default)]
pub struct LevelMeter {
    /// Exponential moving average of the loudness, ×256.
    ema: AtomicU32,
}

impl LevelMeter {
    /// Feeds the level of one packet (a ~20 ms frame): the average follows
    /// with a time constant of about 200 ms.
    pub fn update(&self, level: u8) {
        let loud = u32::from(127 - level.min(127)) << 8;
        let _ = self
            .ema
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
                Some((old * 9 + loud) / 10)
            });
    }

    /// Current loudness, 0..=127.
    pub fn loudness(&self) -> u8 {
        (self.ema.load(Ordering::Relaxed) >> 8).min(127) as u8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet_one_byte(id: u8, level: u8) -> Vec<u8> {
        let mut p = vec![0x90, 111, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1];
        // profile 0xBEDE, length 1 word: [id|len=0] [level] pad pad
        p.extend_from_slice(&[0xBE, 0xDE, 0, 1, (id << 4), 0x80 | level, 0, 0]);
        p.extend_from_slice(&[1, 2, 3]);
        p
    }

    #[test]
    fn reads_one_and_two_byte_extensions() {
        assert_eq!(read_level(&packet_one_byte(1, 30), 1), Some(30));
        assert_eq!(read_level(&packet_one_byte(1, 30), 2), None);
        // Two other elements before ours.
        let mut p = vec![0x90, 111, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0xBE, 0xDE, 0, 2];
        p.extend_from_slice(&[0x21, 0xaa, 0xbb, 0x30, 0xcc, 0x50, 42, 0]);
        assert_eq!(read_level(&p, 5), Some(42));
        let mut two = vec![0x90, 111, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0x10, 0x00, 0, 1];
        two.extend_from_slice(&[3, 1, 77, 0]);
        assert_eq!(read_level(&two, 3), Some(77));
        // No extension bit, truncated packets.
        assert_eq!(
            read_level(&[0x80, 111, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1], 1),
            None
        );
        assert_eq!(read_level(&packet_one_byte(1, 30)[..14], 1), None);
        assert_eq!(read_level(&[], 1), None);
    }

    #[test]
    fn inserted_levels_read_back() {
        let plain = [0x80u8, 111, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 9, 9, 9];
        let with = with_level(&plain, 3, 25, true);
        assert_eq!(read_level(&with, 3), Some(25));
        assert_eq!(&with[with.len() - 3..], &[9, 9, 9]);
        assert_eq!(
            with_level(&with, 3, 99, true),
            with,
            "packets with an extension are left alone"
        );
        assert_eq!(level_of_sine(0.0), 127);
        assert_eq!(level_of_sine(1.0), 3);
        assert!((20..=30).contains(&level_of_sine(0.05)));
    }

    #[test]
    fn extmap_round_trip() {
        let offer = "v=0\r\nm=audio 9 X 111\r\na=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n\
a=mid:0\r\nm=video 9 X 96\r\na=extmap:3 urn:x\r\n";
        assert_eq!(offered_id(offer), Some(1));
        assert_eq!(
            offered_id(
                "v=0\r\nm=video 9 X 96\r\na=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n"
            ),
            None
        );
        let answer = "v=0\r\nm=audio 9 X 111\r\na=mid:0\r\nm=video 9 X 96\r\na=mid:1\r\n";
        let out = add_to_answer(answer, 1);
        assert!(
            out.contains(
                "a=mid:0\r\na=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\nm=video"
            ),
            "{out}"
        );
        assert_eq!(
            add_to_answer(&out, 1).matches("ssrc-audio-level").count(),
            1
        );
    }

    #[test]
    fn meter_follows_speech_and_decays() {
        let m = LevelMeter::default();
        assert_eq!(m.loudness(), 0);
        for _ in 0..50 {
            m.update(20);
        }
        assert!(m.loudness() > 100, "{}", m.loudness());
        for _ in 0..50 {
            m.update(127);
        }
        assert!(m.loudness() < 5, "{}", m.loudness());
    }
}
