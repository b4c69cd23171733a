//! Giving freed pipeline memory back to the system.
//!
//! A composite recording or a broadcast decodes, scales and encodes on
//! many streaming threads; glibc gives each thread's arena its own free
//! lists and keeps what a torn-down branch freed, so the server's RSS
//! stepped up with every composite and stayed there (the soak saw
//! +40–120 MiB per recording). After a teardown, a background thread asks
//! glibc to return free pages (`malloc_trim`), at most once per interval,
//! off the streaming threads and the room tasks.

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

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() {
    // SAFETY: malloc_trim only walks glibc's own arenas under their locks.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}
