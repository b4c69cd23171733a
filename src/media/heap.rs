//! Giving freed pipeline memory back to the system.
//!
//! A composite recording or a broadcast decodes, scales and encodes on
//! many streaming threads; glibc gives each thread's arena its own free
//! lists and keeps what a torn-down branch freed, so the server's RSS
//! stepped up with every composite and stayed there (the soak saw
//! +40–120 MiB per recording). After a teardown, a background thread asks
//! glibc to return free pages (`malloc_trim`), at most once per interval,
//! off the streaming threads and the room tasks. The process also keeps as
//! many arenas as there are CPUs instead of glibc's eight per CPU, and
//! allocations of 128 KiB and more (video frames, encoder buffers) always
//! get their own mapping, returned whole on free (glibc otherwise raises
//! that threshold after the first large free and serves frames from the
//! arenas, where they fragment). Measured with `scripts/soak` (see
//! docs/benchmarks.md): trimming alone, RSS +18.6 % in 5 minutes; with the
//! arena cap, +15.4 % in 8 minutes with churn every 30 s; with the mapping
//! threshold too, +7.4 % on that same run.

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

/// Allocations this large or larger get a mapping of their own.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 128 * 1024;

/// Caps glibc's malloc arenas at the number of CPUs (at least 2) and fixes
/// the mapping threshold at 128 KiB, unless the operator set
/// `MALLOC_ARENA_MAX` / `MALLOC_MMAP_THRESHOLD_`; makes GLib's slice
/// allocator use malloc (`G_SLICE=always-malloc`, unless set). Call before
/// any thread starts.
///
/// GLib 2.74 (Debian 12) still has its own slice allocator under
/// `g_slice_*`, which GStreamer uses for buffers, events and messages: its
/// per-thread magazines and slabs keep freed chunks, malloc counts them in
/// use, and `malloc_trim` cannot return them. GLib 2.76 made `g_slice` a
/// plain malloc wrapper for that reason; this does the same here.
pub fn tune_allocator() {
    if std::env::var_os("G_SLICE").is_none() {
        // SAFETY: called first thing in `main`, before any thread exists
        // that could read the environment concurrently.
        unsafe { std::env::set_var("G_SLICE", "always-malloc") };
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
            let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
            let arenas = libc::c_int::try_from(cpus.max(2)).unwrap_or(libc::c_int::MAX);
            // SAFETY: mallopt only sets a tunable of glibc's allocator.
            unsafe {
                libc::mallopt(libc::M_ARENA_MAX, arenas);
            }
        }
        if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
            // SAFETY: as above.
            unsafe {
                libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
            }
        }
    }
}

/// What the allocator holds: bytes handed out and bytes it keeps free.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeapStats {
    /// Allocated and not yet freed (arena chunks and own mappings).
    pub in_use: u64,
    /// Freed but kept by the allocator (not returned to the system).
    pub free: u64,
}

/// The allocator's own figures, summed over its arenas (`mallinfo2`);
/// `None` where the allocator is not glibc's. Takes each arena's lock
/// briefly: for a scrape, not a hot path.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn stats() -> Option<HeapStats> {
    // SAFETY: mallinfo2 only reads glibc's arenas under their locks.
    let m = unsafe { libc::mallinfo2() };
    let total = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
    Some(HeapStats {
        in_use: total(m.uordblks).saturating_add(total(m.hblkhd)),
        free: total(m.fordblks),
    })
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn stats() -> Option<HeapStats> {
    None
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

#[cfg(test)]
mod tests {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn stats_see_an_allocation() {
        // Large enough that other tests running meanwhile do not blur it.
        const SIZE: u64 = 256 << 20;
        let block = vec![0u8; SIZE as usize];
        let during = super::stats().expect("glibc");
        assert!(during.in_use >= SIZE, "{during:?}");
        drop(block);
        let after = super::stats().expect("glibc");
        assert!(
            after.in_use + SIZE / 2 <= during.in_use,
            "{during:?} {after:?}"
        );
    }
}
