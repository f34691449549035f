//! What the TFE tools report, as types: Replicated's system and app status, the health check, and
//! a child process (install.sh, node-drain) the agent started and must find again.

use std::collections::BTreeMap;
use std::fmt;

/// `replicatedctl system status`: every subsystem and whether all are "ready".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemStatus {
    pub statuses: BTreeMap<String, String>,
}

impl SystemStatus {
    pub fn all_ready(&self) -> bool {
        !self.statuses.is_empty() && self.statuses.values().all(|s| s == "ready")
    }
}

/// `replicatedctl app status`, first (only) app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppStatus {
    pub state: AppState,
    pub desired_state: AppState,
    pub is_transitioning: bool,
    pub error: String,
}

impl AppStatus {
    /// The documented "installation is complete" predicate.
    pub fn is_started(&self) -> bool {
        self.state == AppState::Started
            && self.desired_state == AppState::Started
            && !self.is_transitioning
    }
}

/// The app's state in `replicatedctl app status` (`State`, `DesiredState`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppState {
    Started,
    Starting,
    Stopped,
    Stopping,
    /// A state this agent does not know; shown, never acted on.
    Other(String),
}

impl AppState {
    pub fn parse(text: &str) -> Self {
        match text {
            "started" => AppState::Started,
            "starting" => AppState::Starting,
            "stopped" => AppState::Stopped,
            "stopping" => AppState::Stopping,
            other => AppState::Other(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            AppState::Started => "started",
            AppState::Starting => "starting",
            AppState::Stopped => "stopped",
            AppState::Stopping => "stopping",
            AppState::Other(text) => text,
        }
    }
}

impl fmt::Display for AppState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&str> for AppState {
    fn from(text: &str) -> Self {
        AppState::parse(text)
    }
}

impl PartialEq<String> for AppState {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for AppState {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// `replicated admin health-check`, judged by its summary line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthReport {
    pub passed: bool,
    /// Names of failed checks (from `checking: <Name>...` blocks that end in an error).
    pub failed_checks: Vec<String>,
    pub summary: String,
}

/// A child the agent started and recorded (node-drain, install.sh), identified well enough to
/// find it again after an agent restart (a pid alone could be reused).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TrackedProcess {
    pub pid: i32,
    /// Field 22 of /proc/<pid>/stat: clock ticks after boot at which it started.
    pub start_ticks: u64,
    pub boot_id: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainState {
    Running,
    Exited(i32),
    /// Gone without leaving its exit status (killed, or the machine rebooted).
    Vanished,
    /// Ended before it was let run (its starter died before recording it): the tool never ran.
    NeverStarted,
}
