//! Helpers shared by the test binaries of this directory. Times are CPU times where Linux
//! tells them (else wall time): the machine running the tests may be busy with other work,
//! which a wall clock would count.

use std::time::{Duration, Instant};

fn wall() -> Duration {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed()
}

/// CPU time of this thread.
#[allow(dead_code)] // Not every test binary uses both.
pub fn thread_cpu_time() -> Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .map_or_else(wall, Duration::from_nanos)
}

/// CPU time of the whole process (every thread), in 10 ms ticks: a chat template renders on a
/// thread of its own.
pub fn process_cpu_time() -> Duration {
    let ticks = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // The fields after the command name, which is in parentheses: utime is the 12th.
            let rest = &s[s.rfind(')')? + 2..];
            let mut f = rest.split_whitespace().skip(11);
            let user: u64 = f.next()?.parse().ok()?;
            let system: u64 = f.next()?.parse().ok()?;
            Some(user + system)
        });
    ticks.map_or_else(wall, |t| Duration::from_millis(t * 10))
}
