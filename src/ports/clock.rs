//! Time as the flows see it.

use std::future::Future;
use std::time::Duration;

/// Time, so orchestration can run under tokio's paused clock in tests: `now`/`sleep` for waits,
/// `unix_now` for what the state record keeps across restarts and reboots.
pub trait Clock: Sync {
    fn now(&self) -> tokio::time::Instant;
    fn sleep(&self, duration: Duration) -> impl Future<Output = ()> + Send;
    /// Wall-clock seconds since the epoch.
    fn unix_now(&self) -> u64;
    /// Wall-clock milliseconds since the epoch (the repave's step times and downtime).
    fn unix_now_ms(&self) -> u64 {
        self.unix_now() * 1000
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct TokioClock;

impl Clock for TokioClock {
    fn now(&self) -> tokio::time::Instant {
        tokio::time::Instant::now()
    }
    fn sleep(&self, duration: Duration) -> impl Future<Output = ()> + Send {
        tokio::time::sleep(duration)
    }
    fn unix_now(&self) -> u64 {
        crate::sys::time::unix_now()
    }
    fn unix_now_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }
}
