//! The process's resident memory (Linux, from /proc/self/status): the run summary's peak, and
//! the bench's measurements.

/// Peak resident memory since the start or the last [`reset_peak_rss`], in bytes.
pub fn peak_rss() -> Option<u64> {
    proc_status_bytes("VmHWM:")
}

/// Resident memory now, in bytes.
pub fn rss_now() -> Option<u64> {
    proc_status_bytes("VmRSS:")
}

/// A size line of /proc/self/status (given in kB), in bytes.
fn proc_status_bytes(field: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with(field))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
}

pub fn reset_peak_rss() {
    // Writing 5 to clear_refs resets VmHWM to the current RSS (Linux ≥ 4.0).
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}
