//! CPU time of the calling thread, for benches on a machine other work may share: wall time
//! grows with that load, the thread's own CPU time does not.

/// CPU time consumed by this thread, in ns (Linux schedstat), when available.
pub fn thread_cpu_ns() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    text.split_whitespace().next()?.parse().ok()
}
