//! What the agent tells about itself while it runs: its counters and gauges (`metrics`), the
//! liveness of its control loops (`loops`) and the journal ids of its milestones (`milestone`).
//! The first two are process-wide, written by the flows and the adapters as things happen and read
//! by the HTTP API and the systemd watchdog; nothing here does I/O of its own except reading
//! `/proc/self` for the process metrics at scrape time.

pub mod loops;
pub mod metrics;
pub mod milestone;
mod process;

pub use loops::{loops, LoopGuard, LoopName, Loops};
pub use metrics::metrics;
pub use milestone::Milestone;
