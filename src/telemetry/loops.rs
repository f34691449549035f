//! Liveness of the agent's control loops. A loop enters the registry when it starts running
//! (the guard leaves it when the loop's future ends or is dropped) and ticks once per turn; a
//! loop that has not ticked within three of its intervals is stuck. `/livez` and the systemd
//! watchdog both read [`Loops::check`], so "alive" means one thing everywhere.

use serde::{Deserialize, Serialize};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;
use tokio::time::Instant;

/// The loops that report liveness.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LoopName {
    /// The IMDS termination watcher (`[termination].poll_interval`).
    Watcher,
    /// The readiness poll of TFE (`[readiness].poll_interval`).
    Readiness,
    /// Heartbeats of a held launch hook.
    LaunchHeartbeat,
    /// Heartbeats of a held terminate hook.
    TerminateHeartbeat,
    /// The wait for node-drain (and for `replicatedctl app stop`) to finish.
    Drain,
    /// This node's record in the cluster store (`[cluster].heartbeat_interval`).
    Cluster,
    /// The comparison of the rendered settings with TFE's live ones (`[drift].interval`).
    Drift,
}

impl LoopName {
    pub fn as_str(self) -> &'static str {
        match self {
            LoopName::Watcher => "watcher",
            LoopName::Readiness => "readiness",
            LoopName::LaunchHeartbeat => "launch-heartbeat",
            LoopName::TerminateHeartbeat => "terminate-heartbeat",
            LoopName::Drain => "drain",
            LoopName::Cluster => "cluster",
            LoopName::Drift => "drift",
        }
    }
}

/// A loop is stuck when it has not ticked for this many of its intervals…
const INTERVALS: u32 = 3;
/// …and never sooner than this: one turn of a loop includes its own bounded request (an IMDS
/// read with its retries, a TFE tool call), which at a 1 s interval can take longer than 3 s
/// without anything being wrong.
const FLOOR: Duration = Duration::from_secs(10);

#[derive(Debug)]
struct Entry {
    id: u64,
    name: LoopName,
    interval: Duration,
    last_tick: Instant,
}

#[derive(Debug, Default)]
pub struct Loops {
    entries: Mutex<(u64, Vec<Entry>)>,
}

/// One loop's place in the registry; dropping it takes the loop out.
#[derive(Debug)]
pub struct LoopGuard {
    loops: &'static Loops,
    id: u64,
}

/// One running loop as `/livez?verbose` and `/status` show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoopReport {
    pub name: LoopName,
    pub interval_seconds: f64,
    pub since_tick_seconds: f64,
    pub stuck_after_seconds: f64,
    pub stuck: bool,
}

/// The loops the agent runs, process-wide.
pub fn loops() -> &'static Loops {
    static LOOPS: OnceLock<Loops> = OnceLock::new();
    LOOPS.get_or_init(Loops::default)
}

impl Loops {
    /// Registers a loop that ticks about every `interval`; it counts as just ticked.
    pub fn enter(&'static self, name: LoopName, interval: Duration) -> LoopGuard {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.0 += 1;
        let id = entries.0;
        entries.1.push(Entry {
            id,
            name,
            interval,
            last_tick: Instant::now(),
        });
        LoopGuard { loops: self, id }
    }

    fn tick(&self, id: u64) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = entries.1.iter_mut().find(|e| e.id == id) {
            e.last_tick = Instant::now();
        }
    }

    fn leave(&self, id: u64) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.1.retain(|e| e.id != id);
    }

    /// Every running loop at `now`, in a stable order.
    pub fn check(&self, now: Instant) -> Vec<LoopReport> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let mut reports: Vec<LoopReport> = entries
            .1
            .iter()
            .map(|e| {
                let since = now.saturating_duration_since(e.last_tick);
                let limit = stuck_after(e.interval);
                LoopReport {
                    name: e.name,
                    interval_seconds: e.interval.as_secs_f64(),
                    since_tick_seconds: since.as_secs_f64(),
                    stuck_after_seconds: limit.as_secs_f64(),
                    stuck: since > limit,
                }
            })
            .collect();
        reports.sort_by_key(|r| r.name);
        reports
    }

    /// The names of the stuck loops at `now` (empty: alive).
    pub fn stuck(&self, now: Instant) -> Vec<LoopName> {
        self.check(now)
            .into_iter()
            .filter(|r| r.stuck)
            .map(|r| r.name)
            .collect()
    }
}

impl LoopGuard {
    /// The loop made one turn.
    pub fn tick(&self) {
        self.loops.tick(self.id);
    }
}

impl Drop for LoopGuard {
    fn drop(&mut self) {
        self.loops.leave(self.id);
    }
}

/// How long a loop of `interval` may go without a tick.
pub fn stuck_after(interval: Duration) -> Duration {
    (interval * INTERVALS).max(FLOOR)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry() -> &'static Loops {
        Box::leak(Box::default())
    }

    #[tokio::test(start_paused = true)]
    async fn a_loop_is_stuck_after_three_intervals_and_alive_again_on_its_next_tick() {
        let loops = registry();
        let watcher = loops.enter(LoopName::Watcher, Duration::from_secs(5));
        assert!(loops.stuck(Instant::now()).is_empty());
        tokio::time::advance(Duration::from_secs(15)).await;
        assert!(
            loops.stuck(Instant::now()).is_empty(),
            "exactly 3 intervals"
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(loops.stuck(Instant::now()), vec![LoopName::Watcher]);
        watcher.tick();
        assert!(loops.stuck(Instant::now()).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_short_interval_has_a_floor_and_a_finished_loop_leaves() {
        let loops = registry();
        let beat = loops.enter(LoopName::LaunchHeartbeat, Duration::from_secs(1));
        tokio::time::advance(Duration::from_secs(9)).await;
        assert!(loops.stuck(Instant::now()).is_empty());
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(loops.stuck(Instant::now()), vec![LoopName::LaunchHeartbeat]);
        drop(beat);
        assert!(loops.check(Instant::now()).is_empty());
    }
}
