//! A token bucket per client address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Allows `burst` requests at once, refilled at one per `every`.
pub struct RateLimiter {
    burst: f64,
    every: Duration,
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

impl RateLimiter {
    /// A limiter.
    pub fn new(burst: u32, every: Duration) -> Self {
        Self {
            burst: f64::from(burst),
            every,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `addr` at `now`; false when none is left.
    pub fn check(&self, addr: IpAddr, now: Instant) -> bool {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() > 10_000 {
            // Forget full buckets so the map cannot grow without bound.
            let (burst, every) = (self.burst, self.every);
            buckets.retain(|_, (tokens, at)| {
                *tokens + now.duration_since(*at).as_secs_f64() / every.as_secs_f64() < burst
            });
        }
        let (tokens, at) = buckets.entry(addr).or_insert((self.burst, now));
        let refill = now.duration_since(*at).as_secs_f64() / self.every.as_secs_f64();
        *tokens = (*tokens + refill).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refill() {
        let l = RateLimiter::new(2, Duration::from_secs(10));
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let t = Instant::now();
        assert!(l.check(a, t));
        assert!(l.check(a, t));
        assert!(!l.check(a, t));
        assert!(l.check(b, t));
        assert!(l.check(a, t + Duration::from_secs(10)));
        assert!(!l.check(a, t + Duration::from_secs(11)));
    }
}
