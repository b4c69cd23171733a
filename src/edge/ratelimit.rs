//! Per-address rate limits: a token bucket per client address and class of
//! request, and the filter that applies them to every route of the table.
//!
//! Which class an endpoint belongs to is written in its table entry
//! ([`Endpoint::rate_limit`]), so the OpenAPI document lists the 429 of
//! exactly the endpoints that can answer it. Calls that carry the admin
//! token are never limited: the admin is one trusted party whose scripts may
//! provision rooms in bulk, and a leaked admin token is lost whatever the
//! limits. A refusal is a 429 with `Retry-After` and the error code
//! `rate_limited`.

use super::endpoints::{self, Endpoint, Limit};
use super::errors::ApiError;
use super::{App, with_app};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use warp::{Filter, Rejection};

/// `burst` requests at once, then one per `every`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Requests allowed at once.
    pub burst: u32,
    /// Time that earns one more.
    pub every: Duration,
}

/// Room creation without the admin token (`public_create`).
pub const PUBLIC_CREATE: Rate = Rate {
    burst: 20,
    every: Duration::from_secs(3),
};
/// Admin endpoints called without a valid admin token (they answer 401):
/// the admin token cannot be guessed at speed.
pub const WITHOUT_ADMIN_TOKEN: Rate = Rate {
    burst: 60,
    every: Duration::from_secs(1),
};
/// Signaling WebSocket connections (each is one join). A whole office
/// behind one NAT reconnecting after a restart fits in the burst.
pub const SIGNALING: Rate = Rate {
    burst: 100,
    every: Duration::from_millis(200),
};
/// WHEP offers (each one costs a `webrtcbin`).
pub const WHEP: Rate = Rate {
    burst: 100,
    every: Duration::from_millis(200),
};
/// WHIP offers (ingest; few per room, and token-checked).
pub const WHIP: Rate = Rate {
    burst: 20,
    every: Duration::from_secs(2),
};

/// Buckets are kept per address; IPv6 clients per /64, the block one
/// customer usually gets (otherwise a client could rotate through 2^64
/// addresses).
pub fn address_key(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(_) => addr,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// What taking a token gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Allowed.
    Allowed,
    /// Refused: try again after this long. `first` is true for the first
    /// refusal since the address was last allowed (the one worth a log line).
    Refused {
        /// Wait before one more request is allowed.
        retry_after: Duration,
        /// The first refusal of this burst.
        first: bool,
    },
}

/// A token bucket per address: `burst` requests at once, refilled at one per `every`.
pub struct RateLimiter {
    burst: f64,
    every: Duration,
    /// Per address: tokens left, when they were counted, refused since.
    buckets: Mutex<HashMap<IpAddr, (f64, Instant, bool)>>,
}

/// Buckets kept before full ones are forgotten.
const MAX_BUCKETS: usize = 10_000;

impl RateLimiter {
    /// A limiter.
    pub fn new(burst: u32, every: Duration) -> Self {
        Self {
            burst: f64::from(burst.max(1)),
            every: every.max(Duration::from_micros(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// A limiter of this rate.
    pub fn with_rate(rate: Rate) -> Self {
        Self::new(rate.burst, rate.every)
    }

    /// Takes one token for `addr` at `now`; false when none is left.
    pub fn check(&self, addr: IpAddr, now: Instant) -> bool {
        self.take(addr, now) == Verdict::Allowed
    }

    /// Takes one token for `addr` at `now`.
    pub fn take(&self, addr: IpAddr, now: Instant) -> Verdict {
        let addr = address_key(addr);
        let every = self.every.as_secs_f64();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() > MAX_BUCKETS {
            // Forget full buckets so the map cannot grow without bound.
            let burst = self.burst;
            buckets.retain(|_, (tokens, at, _)| {
                *tokens + now.saturating_duration_since(*at).as_secs_f64() / every < burst
            });
        }
        let (tokens, at, refused) = buckets.entry(addr).or_insert((self.burst, now, false));
        let refill = now.saturating_duration_since(*at).as_secs_f64() / every;
        *tokens = (*tokens + refill).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            *refused = false;
            Verdict::Allowed
        } else {
            let first = !*refused;
            *refused = true;
            Verdict::Refused {
                retry_after: Duration::from_secs_f64((1.0 - *tokens) * every),
                first,
            }
        }
    }
}

/// The limiters of a server, one per class of [`Limit`].
pub struct Limits {
    enabled: bool,
    public_create: RateLimiter,
    without_admin_token: RateLimiter,
    signaling: RateLimiter,
    whep: RateLimiter,
    whip: RateLimiter,
}

impl Limits {
    /// The limits of the constants above; `enabled: false` turns them all
    /// off (`--rate-limit false`: load tests from one address).
    pub fn new(enabled: bool) -> Self {
        Self {
            enabled,
            public_create: RateLimiter::with_rate(PUBLIC_CREATE),
            without_admin_token: RateLimiter::with_rate(WITHOUT_ADMIN_TOKEN),
            signaling: RateLimiter::with_rate(SIGNALING),
            whep: RateLimiter::with_rate(WHEP),
            whip: RateLimiter::with_rate(WHIP),
        }
    }

    /// Whether per-address limits apply at all.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Takes a token of `class` for `addr`.
    pub fn take(&self, class: Limit, addr: IpAddr, now: Instant) -> Verdict {
        if !self.enabled {
            return Verdict::Allowed;
        }
        let limiter = match class {
            Limit::PublicCreate => &self.public_create,
            Limit::WithoutAdminToken => &self.without_admin_token,
            Limit::Signaling => &self.signaling,
            Limit::Whep => &self.whep,
            Limit::Whip => &self.whip,
        };
        limiter.take(addr, now)
    }
}

/// The class that limits this call of `ep`, if any: admin-token calls are exempt.
fn class_of(ep: &Endpoint, is_admin: bool) -> Option<Limit> {
    let class = ep.rate_limit()?;
    match class {
        Limit::PublicCreate | Limit::WithoutAdminToken if is_admin => None,
        _ => Some(class),
    }
}

/// Refuses a request over its per-address limit with 429 before any route
/// sees it. Requests no entry serves, and those of unknown address (only
/// in-process tests), are let through.
pub fn guard(app: Arc<App>) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    endpoints::requested()
        .and(super::listener::remote())
        .and(warp::header::optional::<String>("authorization"))
        .and(with_app(app))
        .and_then(
            |ep: Option<&'static Endpoint>,
             addr: Option<SocketAddr>,
             auth: Option<String>,
             app: Arc<App>| async move {
                let (Some(ep), Some(addr)) = (ep, addr) else {
                    return Ok(());
                };
                if !app.limits.enabled() {
                    return Ok(());
                }
                let Some(class) = class_of(ep, super::is_admin(&app, auth.as_deref())) else {
                    return Ok(());
                };
                match app.limits.take(class, addr.ip(), Instant::now()) {
                    Verdict::Allowed => Ok(()),
                    Verdict::Refused { retry_after, first } => {
                        let ip = address_key(addr.ip());
                        if first {
                            tracing::info!(%ip, limit = ?class, path = ep.path, "rate limited");
                        } else {
                            tracing::debug!(%ip, limit = ?class, path = ep.path, "rate limited");
                        }
                        Err(warp::reject::custom(ApiError::rate_limited(retry_after)))
                    }
                }
            },
        )
        .untuple_one()
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

    #[test]
    fn refusals_say_when_to_come_back_and_log_once() {
        let l = RateLimiter::new(1, Duration::from_secs(4));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let t = Instant::now();
        assert_eq!(l.take(a, t), Verdict::Allowed);
        assert_eq!(
            l.take(a, t + Duration::from_secs(1)),
            Verdict::Refused {
                retry_after: Duration::from_secs(3),
                first: true
            }
        );
        assert!(matches!(
            l.take(a, t + Duration::from_secs(2)),
            Verdict::Refused { first: false, .. }
        ));
        // A clock that goes backwards (two threads racing) does not panic.
        assert!(matches!(l.take(a, t), Verdict::Refused { .. }));
        assert_eq!(l.take(a, t + Duration::from_secs(8)), Verdict::Allowed);
    }

    #[test]
    fn ipv6_clients_share_their_64() {
        let l = RateLimiter::new(1, Duration::from_secs(60));
        let t = Instant::now();
        assert!(l.check("2001:db8:1:2::1".parse().unwrap(), t));
        assert!(!l.check("2001:db8:1:2:ffff::9".parse().unwrap(), t));
        assert!(l.check("2001:db8:1:3::1".parse().unwrap(), t));
        assert_eq!(
            address_key("::ffff:192.0.2.7".parse().unwrap()),
            "192.0.2.7".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn disabled_limits_allow_everything() {
        let l = Limits::new(false);
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let t = Instant::now();
        for _ in 0..1000 {
            assert_eq!(l.take(Limit::Whip, a, t), Verdict::Allowed);
        }
        let l = Limits::new(true);
        let refused = (0..1000)
            .filter(|_| l.take(Limit::Whip, a, t) != Verdict::Allowed)
            .count();
        assert_eq!(refused, 1000 - WHIP.burst as usize);
    }

    #[test]
    fn the_admin_is_exempt_where_a_token_is_checked() {
        assert_eq!(
            class_of(&endpoints::CREATE_ROOM, false),
            Some(Limit::PublicCreate)
        );
        assert_eq!(class_of(&endpoints::CREATE_ROOM, true), None);
        assert_eq!(
            class_of(&endpoints::PATCH_ROOM, false),
            Some(Limit::WithoutAdminToken)
        );
        assert_eq!(class_of(&endpoints::PATCH_ROOM, true), None);
        assert_eq!(class_of(&endpoints::WHEP_OFFER, true), Some(Limit::Whep));
        assert_eq!(
            class_of(&endpoints::SIGNALING, false),
            Some(Limit::Signaling)
        );
        assert_eq!(class_of(&endpoints::HLS_FILE, false), None);
        assert_eq!(class_of(&endpoints::HEALTHZ, false), None);
    }
}
