//! The systemd watchdog (`WatchdogSec=` in the unit): `WATCHDOG=1` every half interval while
//! every control loop ticks in time — the same liveness `/livez` reports. A stuck agent stops
//! pinging and systemd restarts it; the restarted agent adopts a running drain as after any
//! restart.

use crate::sys::notify;
use crate::telemetry::loops;

/// Runs for the life of the agent; returns at once when the unit has no watchdog.
pub async fn run() {
    let Some(interval) = notify::watchdog_interval() else {
        return;
    };
    let every = interval / 2;
    log::debug!("systemd watchdog: pinging every {every:?} while the agent's loops are alive");
    let mut said_stuck = false;
    loop {
        let stuck = loops().stuck(tokio::time::Instant::now());
        if stuck.is_empty() {
            notify::watchdog();
            if said_stuck {
                log::info!("the agent's loops tick again; systemd watchdog pings resumed");
                said_stuck = false;
            }
        } else if !said_stuck {
            let names: Vec<&str> = stuck.iter().map(|n| n.as_str()).collect();
            log::error!(
                "stuck control loop(s): {}; not pinging the systemd watchdog (systemd restarts the agent after {interval:?} without a ping)",
                names.join(", ")
            );
            said_stuck = true;
        }
        tokio::time::sleep(every).await;
    }
}
