//! Who is speaking, and whose audio is forwarded when only the last N
//! speakers are (large rooms). Pure logic over loudness readings and time,
//! so it is tested without media.

use crate::ids::ParticipantId;
use std::collections::{HashMap, HashSet};
use std::time::Instant;

/// Loudness (127 − level in −dBov) from which someone counts as speaking
/// (about −77 dBov: quiet speech, above a typical microphone's noise floor).
pub const START_SPEAKING: u8 = 50;
/// Loudness under which a speaker counts as silent again (hysteresis).
pub const STOP_SPEAKING: u8 = 35;

/// Tracks speakers over time.
#[derive(Debug, Default)]
pub struct Speakers {
    speaking: Vec<ParticipantId>,
    last_spoke: HashMap<ParticipantId, Instant>,
}

impl Speakers {
    /// Feeds one reading per audio publisher (loudness 0..=127). Returns the
    /// new list of speakers, loudest first, when the set or its order changed.
    pub fn update(
        &mut self,
        levels: &[(ParticipantId, u8)],
        now: Instant,
    ) -> Option<Vec<ParticipantId>> {
        let mut loud: Vec<(&ParticipantId, u8)> = levels
            .iter()
            .filter(|(pid, l)| {
                let threshold = if self.speaking.contains(pid) {
                    STOP_SPEAKING
                } else {
                    START_SPEAKING
                };
                *l >= threshold
            })
            .map(|(p, l)| (p, *l))
            .collect();
        loud.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        for (pid, _) in &loud {
            self.last_spoke.insert((*pid).clone(), now);
        }
        let speaking: Vec<ParticipantId> = loud.into_iter().map(|(p, _)| p.clone()).collect();
        if speaking == self.speaking {
            return None;
        }
        self.speaking = speaking.clone();
        Some(speaking)
    }

    /// Current speakers, loudest first.
    pub fn speaking(&self) -> &[ParticipantId] {
        &self.speaking
    }

    /// Whose audio is forwarded when at most `n` streams are: the `n` most
    /// recent speakers among `publishers` (in join order; people who never
    /// spoke fill up by join order). `None` means everyone's.
    pub fn forwarded(
        &self,
        publishers: &[ParticipantId],
        n: usize,
    ) -> Option<HashSet<ParticipantId>> {
        if n == 0 || publishers.len() <= n {
            return None;
        }
        let mut ranked: Vec<(usize, &ParticipantId)> = publishers.iter().enumerate().collect();
        ranked.sort_by(|(ia, a), (ib, b)| {
            let (ta, tb) = (self.last_spoke.get(*a), self.last_spoke.get(*b));
            tb.cmp(&ta).then(ia.cmp(ib))
        });
        Some(ranked.into_iter().take(n).map(|(_, p)| p.clone()).collect())
    }

    /// Forgets someone who left.
    pub fn forget(&mut self, pid: &ParticipantId) {
        self.last_spoke.remove(pid);
        self.speaking.retain(|p| p != pid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ids(n: usize) -> Vec<ParticipantId> {
        (0..n)
            .map(|i| ParticipantId::parse(&format!("p_{i}")).unwrap())
            .collect()
    }

    #[test]
    fn speakers_are_ordered_and_have_hysteresis() {
        let p = ids(3);
        let mut s = Speakers::default();
        let t = Instant::now();
        assert_eq!(s.update(&[(p[0].clone(), 10), (p[1].clone(), 20)], t), None);
        assert_eq!(
            s.update(
                &[(p[0].clone(), 90), (p[1].clone(), 100), (p[2].clone(), 49)],
                t
            ),
            Some(vec![p[1].clone(), p[0].clone()])
        );
        // p0 drops to 40: still speaking (above STOP_SPEAKING); p2 at 45 not yet.
        assert_eq!(
            s.update(
                &[(p[0].clone(), 40), (p[1].clone(), 100), (p[2].clone(), 45)],
                t
            ),
            None
        );
        assert_eq!(
            s.update(
                &[(p[0].clone(), 30), (p[1].clone(), 100), (p[2].clone(), 45)],
                t
            ),
            Some(vec![p[1].clone()])
        );
        s.forget(&p[1]);
        assert!(s.speaking().is_empty());
    }

    #[test]
    fn last_n_keeps_the_most_recent_speakers() {
        let p = ids(5);
        let mut s = Speakers::default();
        let t0 = Instant::now();
        // Nobody spoke: the first three by join order.
        let first: HashSet<_> = p[..3].iter().cloned().collect();
        assert_eq!(s.forwarded(&p, 3), Some(first));
        assert_eq!(
            s.forwarded(&p[..3], 3),
            None,
            "all forwarded when few publish"
        );
        assert_eq!(s.forwarded(&p, 0), None, "0 means no limit");
        s.update(&[(p[4].clone(), 100)], t0);
        s.update(&[(p[3].clone(), 100)], t0 + Duration::from_secs(1));
        let f = s.forwarded(&p, 3).unwrap();
        assert!(
            f.contains(&p[3]) && f.contains(&p[4]) && f.contains(&p[0]),
            "{f:?}"
        );
        // Falling silent does not drop a speaker until someone else speaks.
        s.update(
            &[(p[3].clone(), 0), (p[4].clone(), 0)],
            t0 + Duration::from_secs(2),
        );
        assert_eq!(s.forwarded(&p, 3).unwrap(), f);
        s.update(&[(p[1].clone(), 100)], t0 + Duration::from_secs(3));
        let g = s.forwarded(&p, 3).unwrap();
        assert!(
            g.contains(&p[1]) && g.contains(&p[3]) && g.contains(&p[4]),
            "{g:?}"
        );
    }
}
