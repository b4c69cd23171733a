//! The standard `process_*` series, read from `/proc/self` at scrape time
//! (a few small file reads; nothing is sampled in the background).
//!
//! Names and meanings are those of the Prometheus client libraries, so
//! existing dashboards work unchanged. Off Linux nothing is written.

use super::{Exposition, Kind};

/// Clock ticks per second of `/proc/<pid>/stat` times. Linux reports them
/// in USER_HZ, which is 100 on every architecture we run on (the Prometheus
/// clients assume the same).
const USER_HZ: f64 = 100.0;

/// What `/proc/self` says now.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProcessStats {
    /// User + system CPU time, seconds.
    pub cpu_seconds: f64,
    /// Resident set size, bytes.
    pub resident_bytes: u64,
    /// Virtual memory size, bytes.
    pub virtual_bytes: u64,
    /// OS threads.
    pub threads: u64,
    /// Open file descriptors.
    pub open_fds: Option<u64>,
    /// Soft limit on file descriptors.
    pub max_fds: Option<u64>,
    /// Start time, seconds since the Unix epoch.
    pub start_time_seconds: Option<f64>,
}

/// Fields of `/proc/<pid>/stat` we use.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Stat {
    utime: u64,
    stime: u64,
    threads: u64,
    /// Ticks after boot.
    starttime: u64,
    vsize: u64,
}

/// Parses `/proc/<pid>/stat`. The command name (field 2) may hold spaces
/// and parentheses, so fields are counted from the last `)`.
fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // f[0] is field 3 (state): field n is f[n - 3].
    let num = |n: usize| f.get(n - 3)?.parse::<u64>().ok();
    Some(Stat {
        utime: num(14)?,
        stime: num(15)?,
        threads: num(20)?,
        starttime: num(22)?,
        vsize: num(23)?,
    })
}

/// `VmRSS` of `/proc/<pid>/status`, bytes.
fn parse_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The soft "Max open files" of `/proc/<pid>/limits`.
fn parse_max_fds(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// `btime` of `/proc/stat`: boot time, seconds since the Unix epoch.
fn parse_btime(stat: &str) -> Option<u64> {
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

/// Reads `/proc/self`; `None` where there is no procfs.
pub fn read() -> Option<ProcessStats> {
    let stat = parse_stat(&std::fs::read_to_string("/proc/self/stat").ok()?)?;
    let resident_bytes = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| parse_rss(&s))
        .unwrap_or(0);
    let open_fds = std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|d| d.count() as u64);
    let max_fds = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|s| parse_max_fds(&s));
    let start_time_seconds = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| parse_btime(&s))
        .map(|boot| boot as f64 + stat.starttime as f64 / USER_HZ);
    Some(ProcessStats {
        cpu_seconds: (stat.utime + stat.stime) as f64 / USER_HZ,
        resident_bytes,
        virtual_bytes: stat.vsize,
        threads: stat.threads,
        open_fds,
        max_fds,
        start_time_seconds,
    })
}

/// Writes the `process_*` families (nothing where `/proc` is missing).
pub fn write(e: &mut Exposition) {
    let Some(p) = read() else {
        return;
    };
    e.single(
        "process_cpu_seconds_total",
        Kind::Counter,
        "Total user and system CPU time spent in seconds.",
        p.cpu_seconds,
    );
    e.single(
        "process_resident_memory_bytes",
        Kind::Gauge,
        "Resident memory size in bytes.",
        p.resident_bytes,
    );
    e.single(
        "process_virtual_memory_bytes",
        Kind::Gauge,
        "Virtual memory size in bytes.",
        p.virtual_bytes,
    );
    e.single(
        "process_threads",
        Kind::Gauge,
        "Number of OS threads in the process.",
        p.threads,
    );
    if let Some(n) = p.open_fds {
        e.single(
            "process_open_fds",
            Kind::Gauge,
            "Number of open file descriptors.",
            n,
        );
    }
    if let Some(n) = p.max_fds {
        e.single(
            "process_max_fds",
            Kind::Gauge,
            "Maximum number of open file descriptors.",
            n,
        );
    }
    if let Some(h) = crate::media::heap::stats() {
        e.family(
            "roomcast_heap_bytes",
            Kind::Gauge,
            "Heap as the allocator counts it: in use (allocated, not freed) and free (freed, kept by the allocator).",
        )
        .sample("roomcast_heap_bytes", &[("state", "in_use")], h.in_use)
        .sample("roomcast_heap_bytes", &[("state", "free")], h.free);
    }
    if let Some(t) = p.start_time_seconds {
        e.single(
            "process_start_time_seconds",
            Kind::Gauge,
            "Start time of the process since unix epoch in seconds.",
            t,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_counted_from_the_last_parenthesis() {
        // A command name with a space and a parenthesis.
        let text = "4242 (room cast) x) S 1 4242 4242 0 -1 4194560 1200 0 0 0 \
                    250 130 0 0 20 0 37 0 98765 1234567890 5000 18446744073709551615";
        assert_eq!(
            parse_stat(text),
            Some(Stat {
                utime: 250,
                stime: 130,
                threads: 37,
                starttime: 98765,
                vsize: 1_234_567_890,
            })
        );
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) S 1 2"), None);
    }

    #[test]
    fn status_limits_and_boot_time() {
        let status = "Name:\troomcast\nVmSize:\t  900000 kB\nVmRSS:\t   51200 kB\nThreads:\t37\n";
        assert_eq!(parse_rss(status), Some(51200 * 1024));
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max open files            1024                 524288               files     \n";
        assert_eq!(parse_max_fds(limits), Some(1024));
        assert_eq!(
            parse_btime("cpu  1 2 3\nbtime 1700000000\nprocesses 5\n"),
            Some(1_700_000_000)
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_reads() {
        let p = read().expect("procfs");
        assert!(p.resident_bytes > 0 && p.threads >= 1);
        assert!(p.open_fds.is_some_and(|n| n >= 3));
        let mut e = Exposition::new();
        write(&mut e);
        let text = e.finish();
        for name in [
            "process_cpu_seconds_total ",
            "process_resident_memory_bytes ",
            "process_open_fds ",
            "process_threads ",
            #[cfg(target_env = "gnu")]
            "roomcast_heap_bytes{state=\"in_use\"} ",
        ] {
            assert!(text.contains(name), "{name} missing in\n{text}");
        }
    }
}
