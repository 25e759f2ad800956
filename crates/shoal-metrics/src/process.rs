//! The process's own metrics, read from `/proc/self` at every scrape:
//! resident memory, CPU time, open file descriptors and threads.
//!
//! They are rendered straight into the scrape's text rather than kept in the
//! recorder: CPU time is a fractional counter, which the `metrics` facade's
//! integer counters cannot hold, and reading them costs four small reads.
//! Off Linux (no `/proc/self/stat`) nothing is rendered.
//!
//! | name | type | meaning |
//! | --- | --- | --- |
//! | `shoal_process_resident_memory_bytes` | gauge | resident set size |
//! | `shoal_process_cpu_seconds_total` | counter | user and system CPU time |
//! | `shoal_process_open_fds` | gauge | open file descriptors |
//! | `shoal_process_threads` | gauge | threads of the process |

use std::fmt::Write as _;

/// What `/proc/self/stat` says that the metrics need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// User and system CPU time, in clock ticks.
    pub utime_ticks: u64,
    pub stime_ticks: u64,
    pub threads: u64,
    /// Resident set size, in pages.
    pub rss_pages: u64,
}

/// One reading of every process metric.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub resident_bytes: u64,
    pub cpu_seconds: f64,
    pub open_fds: u64,
    pub threads: u64,
}

/// Parses the text of `/proc/PID/stat` (see proc(5)). The command name, the
/// second field, is in parentheses and may hold spaces and parentheses of
/// its own, so the fields are counted from the last `)`.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let (_, rest) = text.rsplit_once(')')?;
    // After the name: field 3 (state) is index 0, so field N is index N - 3.
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    let field = |n: usize| -> Option<u64> { fields.get(n - 3)?.parse().ok() };
    Some(Stat { utime_ticks: field(14)?, stime_ticks: field(15)?, threads: field(20)?, rss_pages: field(24)? })
}

/// Turns a [`Stat`] into a [`Sample`], given the clock ticks per second and
/// the page size in bytes (from `sysconf`).
pub fn to_sample(stat: Stat, ticks_per_s: u64, page_bytes: u64, open_fds: u64) -> Sample {
    Sample {
        resident_bytes: stat.rss_pages.saturating_mul(page_bytes),
        cpu_seconds: (stat.utime_ticks + stat.stime_ticks) as f64 / ticks_per_s.max(1) as f64,
        open_fds,
        threads: stat.threads,
    }
}

/// Open file descriptors of this process: the entries of `/proc/self/fd`,
/// less the one the listing itself holds open.
pub fn open_fds() -> Option<u64> {
    let n = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
    Some(n.saturating_sub(1))
}

fn sysconf(name: libc::c_int) -> Option<u64> {
    // SAFETY: sysconf only reads a configuration value.
    let v = unsafe { libc::sysconf(name) };
    (v > 0).then_some(v as u64)
}

/// Reads every process metric now (None where `/proc` is not available).
pub fn sample() -> Option<Sample> {
    let stat = parse_stat(&std::fs::read_to_string("/proc/self/stat").ok()?)?;
    let ticks = sysconf(libc::_SC_CLK_TCK).unwrap_or(100);
    let page = sysconf(libc::_SC_PAGESIZE).unwrap_or(4096);
    Some(to_sample(stat, ticks, page, open_fds().unwrap_or(0)))
}

/// Appends the process metrics to a scrape's text.
pub fn render(out: &mut String) {
    if let Some(s) = sample() {
        render_sample(out, &s);
    }
}

/// Appends `s` in the Prometheus text format.
pub fn render_sample(out: &mut String, s: &Sample) {
    let mut family = |name: &str, kind: &str, help: &str, value: &dyn std::fmt::Display| {
        // Writing to a String cannot fail.
        let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n\n");
    };
    family("shoal_process_resident_memory_bytes", "gauge", "Resident set size of the process.", &s.resident_bytes);
    family("shoal_process_cpu_seconds_total", "counter", "User and system CPU time of the process.", &s.cpu_seconds);
    family("shoal_process_open_fds", "gauge", "Open file descriptors of the process.", &s.open_fds);
    family("shoal_process_threads", "gauge", "Threads of the process.", &s.threads);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real line, with a command name that holds a space and a parenthesis.
    const STAT: &str = "4242 (shoal (x) y) S 1 4242 4242 0 -1 4194560 1500 0 0 0 250 75 0 0 20 0 17 0 \
                        123456 987654321 2048 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 1 0 0 0 0 0";

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        let s = parse_stat(STAT).unwrap();
        assert_eq!(s, Stat { utime_ticks: 250, stime_ticks: 75, threads: 17, rss_pages: 2048 });
        let sample = to_sample(s, 100, 4096, 9);
        assert_eq!(sample.resident_bytes, 2048 * 4096);
        assert!((sample.cpu_seconds - 3.25).abs() < 1e-9);
        assert_eq!((sample.open_fds, sample.threads), (9, 17));
    }

    #[test]
    fn a_short_or_garbled_stat_is_refused() {
        assert_eq!(parse_stat(""), None);
        assert_eq!(parse_stat("4242 (shoal) S 1 2 3"), None);
        assert_eq!(parse_stat(&STAT.replace(" 250 ", " x ")), None);
    }

    #[test]
    fn the_live_process_is_read() {
        let before = sample().expect("/proc/self is readable");
        assert!(before.resident_bytes > 0 && before.threads >= 1 && before.open_fds >= 3, "{before:?}");
        // Many, so that other tests closing a few meanwhile cannot hide them.
        let extra: Vec<std::fs::File> = (0..64).map(|_| std::fs::File::open("/proc/self/stat").unwrap()).collect();
        assert!(open_fds().unwrap() >= before.open_fds + 32, "opened files count");
        drop(extra);
    }

    #[test]
    fn rendering_is_prometheus_text() {
        let mut out = String::new();
        render_sample(&mut out, &Sample { resident_bytes: 10, cpu_seconds: 1.5, open_fds: 3, threads: 2 });
        assert!(out.contains("# TYPE shoal_process_cpu_seconds_total counter\nshoal_process_cpu_seconds_total 1.5\n"));
        assert!(out.contains("# TYPE shoal_process_threads gauge\nshoal_process_threads 2\n"));
        assert_eq!(out.matches("# TYPE").count(), 4);
    }
}
