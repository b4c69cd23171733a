//! Giving freed pipeline memory back to the system.
//!
//! A composite recording or a broadcast decodes, scales and encodes on
//! many streaming threads; glibc gives each thread's arena its own free
//! lists and keeps what a torn-down branch freed, so the server's RSS
//! stepped up with every composite and stayed there (the soak saw
//! +40–120 MiB per recording). After a teardown, a background thread asks
//! glibc to return free pages (`malloc_trim`), at most once per interval,
//! off the streaming threads and the room tasks; and the process keeps as
//! many arenas as there are CPUs instead of glibc's eight per CPU. Both
//! together kept the soak room's RSS flat (`scripts/soak`, see
//! docs/benchmarks.md); trimming alone still stepped up +18 % in 5 minutes.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How often the trimmer looks whether something was torn down.
const INTERVAL: Duration = Duration::from_secs(3);

static PENDING: AtomicBool = AtomicBool::new(false);
static TRIMMER: OnceLock<()> = OnceLock::new();

/// Elements were torn down: their memory goes back to the system soon.
pub fn released() {
    PENDING.store(true, Ordering::Release);
    TRIMMER.get_or_init(|| {
        let spawned = std::thread::Builder::new()
            .name("heap-trim".into())
            .spawn(|| {
                loop {
                    std::thread::sleep(INTERVAL);
                    if PENDING.swap(false, Ordering::AcqRel) {
                        trim();
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::warn!("cannot start the heap trimmer: {e}");
        }
    });
}

/// Caps glibc's malloc arenas at the number of CPUs (at least 2), unless
/// the operator set `MALLOC_ARENA_MAX`. Call before any thread starts.
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        let arenas = libc::c_int::try_from(cpus.max(2)).unwrap_or(libc::c_int::MAX);
        // SAFETY: mallopt only sets a tunable of glibc's allocator.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, arenas);
        }
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() {
    // SAFETY: malloc_trim only walks glibc's own arenas under their locks.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}
