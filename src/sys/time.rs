//! Wall-clock time as the records keep it. The flows ask the `Clock` port (which uses this); the
//! adapters, the recorder and the HTTP API call it directly.

/// Seconds since the epoch (0 for a clock set before 1970).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
