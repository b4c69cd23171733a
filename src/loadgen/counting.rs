//! Receive-side accounting of one RTP stream without decoding it: packets,
//! bytes, loss from sequence-number gaps, interarrival jitter (RFC 3550
//! §6.4.1) and the arrival of the first keyframe.

use serde::{Deserialize, Serialize};

/// Counters of one received stream.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StreamCounter {
    /// Packets received.
    pub packets: u64,
    /// Payload bytes received (RTP header included).
    pub bytes: u64,
    /// Packets expected from the sequence numbers seen (first to highest).
    pub expected: u64,
    /// Interarrival jitter, milliseconds.
    pub jitter_ms: f64,
    /// Milliseconds from the receiver's join to the first packet.
    pub first_packet_ms: Option<u64>,
    /// Milliseconds from the receiver's join to the first keyframe (video).
    pub first_keyframe_ms: Option<u64>,
    #[serde(skip)]
    base_seq: Option<u64>,
    #[serde(skip)]
    max_seq: u64,
    #[serde(skip)]
    last_transit: Option<f64>,
    #[serde(skip)]
    jitter_units: f64,
}

impl StreamCounter {
    /// Accounts one packet: its sequence number, RTP timestamp, the clock
    /// rate, arrival time in ms since the receiver joined, size and whether
    /// it starts a keyframe.
    pub fn record(
        &mut self,
        seq: u16,
        rtp_ts: u32,
        clock_rate: u32,
        arrival_ms: f64,
        size: usize,
        keyframe: bool,
    ) {
        self.packets += 1;
        self.bytes += size as u64;
        if self.first_packet_ms.is_none() {
            self.first_packet_ms = Some(arrival_ms as u64);
        }
        if keyframe && self.first_keyframe_ms.is_none() {
            self.first_keyframe_ms = Some(arrival_ms as u64);
        }
        // Extended sequence number: the closest value to the highest seen.
        let ext = match self.base_seq {
            None => {
                self.base_seq = Some(u64::from(seq) + (1 << 16));
                self.max_seq = u64::from(seq) + (1 << 16);
                self.max_seq
            }
            Some(_) => {
                let cycle = self.max_seq & !0xffff;
                let candidates = [cycle.wrapping_sub(1 << 16), cycle, cycle + (1 << 16)];
                let ext = candidates
                    .iter()
                    .map(|c| c + u64::from(seq))
                    .min_by_key(|e| e.abs_diff(self.max_seq))
                    .unwrap_or(self.max_seq);
                self.max_seq = self.max_seq.max(ext);
                ext
            }
        };
        if let Some(base) = self.base_seq {
            if ext < base {
                self.base_seq = Some(ext);
            }
            self.expected = self.max_seq - self.base_seq.unwrap_or(base) + 1;
        }
        // RFC 3550 jitter in timestamp units, reported in ms.
        if clock_rate > 0 {
            let rate = f64::from(clock_rate);
            let transit = arrival_ms * rate / 1000.0 - f64::from(rtp_ts);
            if let Some(last) = self.last_transit {
                let mut d = (transit - last).abs();
                // A timestamp wrap looks like a huge jump: ignore it.
                if d > f64::from(u32::MAX) / 2.0 {
                    d = 0.0;
                }
                self.jitter_units += (d - self.jitter_units) / 16.0;
            }
            self.last_transit = Some(transit);
            self.jitter_ms = self.jitter_units * 1000.0 / rate;
        }
    }

    /// Packets lost (expected but not received; never negative).
    pub fn lost(&self) -> u64 {
        self.expected.saturating_sub(self.packets)
    }

    /// Adds another stream's totals (for aggregates).
    pub fn absorb(&mut self, other: &StreamCounter) {
        self.packets += other.packets;
        self.bytes += other.bytes;
        self.expected += other.expected;
        self.jitter_ms = self.jitter_ms.max(other.jitter_ms);
    }
}

/// Whether an RTP payload starts a keyframe (VP8 or H.264).
pub fn is_keyframe(encoding: &str, payload: &[u8]) -> bool {
    match encoding {
        "VP8" => vp8_keyframe(payload),
        "H264" => h264_keyframe(payload),
        _ => false,
    }
}

fn vp8_keyframe(p: &[u8]) -> bool {
    // RFC 7741 payload descriptor.
    let Some(&b0) = p.first() else { return false };
    let (x, s, pid) = (b0 & 0x80 != 0, b0 & 0x10 != 0, b0 & 0x07);
    if !s || pid != 0 {
        return false;
    }
    let mut i = 1;
    if x {
        let Some(&b1) = p.get(1) else { return false };
        i = 2;
        if b1 & 0x80 != 0 {
            // Picture id: 7 or 15 bits.
            i += if p.get(i).is_some_and(|b| b & 0x80 != 0) {
                2
            } else {
                1
            };
        }
        if b1 & 0x40 != 0 {
            i += 1;
        }
        if b1 & 0x30 != 0 {
            i += 1;
        }
    }
    // VP8 frame header: bit 0 of the first byte is 0 for keyframes.
    p.get(i).is_some_and(|h| h & 0x01 == 0)
}

fn h264_keyframe(p: &[u8]) -> bool {
    let Some(&b0) = p.first() else { return false };
    let idr_or_sps = |t: u8| t == 5 || t == 7;
    match b0 & 0x1f {
        t @ 1..=23 => idr_or_sps(t),
        24 => {
            // STAP-A: (size, NAL)…
            let mut i = 1;
            while i + 2 < p.len() {
                let size = usize::from(u16::from_be_bytes([p[i], p[i + 1]]));
                if p.get(i + 2).is_some_and(|n| idr_or_sps(n & 0x1f)) {
                    return true;
                }
                i += 2 + size;
            }
            false
        }
        28 => p
            .get(1)
            .is_some_and(|fu| fu & 0x80 != 0 && idr_or_sps(fu & 0x1f)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_packets_in_same_counts_out() {
        let mut c = StreamCounter::default();
        // 100 packets, 20 ms apart, perfectly paced: no loss, no jitter.
        for i in 0..100u16 {
            c.record(
                65500u16.wrapping_add(i),
                960 * u32::from(i),
                48_000,
                20.0 * f64::from(i),
                100,
                false,
            );
        }
        assert_eq!(
            (c.packets, c.expected, c.lost(), c.bytes),
            (100, 100, 0, 10_000)
        );
        assert!(c.jitter_ms < 0.001, "{}", c.jitter_ms);
        assert_eq!(c.first_packet_ms, Some(0));

        // 10 of the next 100 go missing, one arrives late and out of order.
        let mut d = StreamCounter::default();
        for i in 0..100u16 {
            if i % 10 == 3 {
                continue;
            }
            let seq = if i == 50 {
                51
            } else if i == 51 {
                50
            } else {
                i
            };
            d.record(
                seq,
                3000 * u32::from(seq),
                90_000,
                33.0 * f64::from(i),
                1000,
                seq == 0,
            );
        }
        assert_eq!((d.packets, d.expected, d.lost()), (90, 100, 10));
        assert_eq!(d.first_keyframe_ms, Some(0));

        // Arrival jitter: every other packet 10 ms late.
        let mut j = StreamCounter::default();
        for i in 0..400u16 {
            let late = if i % 2 == 1 { 10.0 } else { 0.0 };
            j.record(
                i,
                960 * u32::from(i),
                48_000,
                20.0 * f64::from(i) + late,
                100,
                false,
            );
        }
        assert!((j.jitter_ms - 10.0).abs() < 1.0, "{}", j.jitter_ms);
    }

    #[test]
    fn keyframes_are_recognised() {
        // VP8: S=1, PID=0, no X; frame header P bit 0 → keyframe.
        assert!(is_keyframe("VP8", &[0x10, 0x00, 0x9d]));
        assert!(!is_keyframe("VP8", &[0x10, 0x01]));
        assert!(!is_keyframe("VP8", &[0x00, 0x00]), "not a partition start");
        // With X, I (15-bit picture id): 0x90 0x80 0x81 0x23 then header.
        assert!(is_keyframe("VP8", &[0x90, 0x80, 0x81, 0x23, 0x00]));
        assert!(!is_keyframe("VP8", &[0x90, 0x80, 0x81, 0x23, 0x01]));
        // H.264: IDR, SPS in STAP-A, FU-A start of IDR, and a P slice.
        assert!(is_keyframe("H264", &[0x65, 0x88]));
        assert!(is_keyframe(
            "H264",
            &[0x78, 0x00, 0x02, 0x67, 0x42, 0x00, 0x02, 0x68, 0xce]
        ));
        assert!(is_keyframe("H264", &[0x7c, 0x85, 0x88]));
        assert!(
            !is_keyframe("H264", &[0x7c, 0x05, 0x88]),
            "FU-A continuation"
        );
        assert!(!is_keyframe("H264", &[0x41, 0x9a]));
        assert!(!is_keyframe("OPUS", &[0x00]));
        assert!(!is_keyframe("VP8", &[]));
    }
}
