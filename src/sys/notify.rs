//! systemd notifications (Type=notify). Without $NOTIFY_SOCKET (a manual run, tests) they are no-ops.

use sd_notify::NotifyState;

pub fn status(text: &str) {
    send(&[NotifyState::Status(text)]);
}

pub fn ready(text: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(text)]);
}

pub fn stopping(text: &str) {
    send(&[NotifyState::Stopping, NotifyState::Status(text)]);
}

/// Asks systemd for `extra` more time to stop (sent again before it runs out).
pub fn extend_timeout(extra: std::time::Duration) {
    let usec = u32::try_from(extra.as_micros()).unwrap_or(u32::MAX);
    send(&[NotifyState::ExtendTimeoutUsec(usec)]);
}

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(false, states) {
        log::debug!("sd_notify failed: {e}");
    }
}

/// The unit's watchdog interval (`WatchdogSec=`), when systemd asks this process for pings.
pub fn watchdog_interval() -> Option<std::time::Duration> {
    let mut usec = 0;
    if sd_notify::watchdog_enabled(false, &mut usec) && usec > 0 {
        Some(std::time::Duration::from_micros(usec))
    } else {
        None
    }
}

/// `WATCHDOG=1`: the agent is alive.
pub fn watchdog() {
    send(&[NotifyState::Watchdog]);
}
