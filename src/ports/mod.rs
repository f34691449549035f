//! The boundary to the outside world. Orchestration (`boot`, `hook`, `readiness`) is generic over
//! these traits; `aws::*` and `tfe::*` implement them for real, and tests drive the real binary
//! against emulators speaking the same wire protocols.

use crate::sys::secret::{Secret, SecretBytes};
use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

// ---------------------------------------------------------------- Secrets Manager

/// What Secrets Manager returned for one id.
#[derive(Debug, Clone)]
pub enum SecretPayload {
    String(Secret),
    Binary(SecretBytes),
}

#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("secret {id:?} was not found in Secrets Manager")]
    NotFound { id: String },
    #[error("access to secret {id:?} was denied: {detail}")]
    AccessDenied { id: String, detail: String },
    #[error("fetching secret {id:?} failed: {detail}")]
    Fetch { id: String, detail: String },
    /// A failure that may pass: throttling, a 5xx, a dropped connection, a timeout.
    #[error("fetching secret {id:?} failed for now: {detail}")]
    Unavailable { id: String, detail: String },
    #[error("secret {id:?} has neither SecretString nor SecretBinary")]
    Empty { id: String },
}

impl SecretsError {
    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, SecretsError::Unavailable { .. })
    }
}

pub trait SecretSource: Sync {
    /// Fetches every id; the result maps each requested id to its payload. Any failure fails the
    /// whole fetch: a node must never be built from part of its secrets.
    fn fetch(
        &self,
        ids: &[String],
        version_stage: Option<&str>,
    ) -> impl Future<Output = Result<BTreeMap<String, SecretPayload>, SecretsError>> + Send;
}

// ---------------------------------------------------------------- Auto Scaling

/// This instance as DescribeAutoScalingInstances sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AsgInstance {
    pub group: String,
    pub lifecycle_state: String,
}

/// A lifecycle hook as DescribeLifecycleHooks reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookInfo {
    pub name: String,
    pub transition: String,
    pub heartbeat_timeout: Duration,
    pub global_timeout: Duration,
    pub default_result: String,
}

pub const LAUNCHING: &str = "autoscaling:EC2_INSTANCE_LAUNCHING";
pub const TERMINATING: &str = "autoscaling:EC2_INSTANCE_TERMINATING";

/// The lifecycle action to heartbeat or complete: by instance id, which needs no token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookAction {
    pub group: String,
    pub hook: String,
    pub instance_id: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum HookResult {
    Continue,
    Abandon,
}

impl HookResult {
    pub fn as_str(self) -> &'static str {
        match self {
            HookResult::Continue => "CONTINUE",
            HookResult::Abandon => "ABANDON",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AsgError {
    /// ValidationError "No active Lifecycle Action found ...": not (or no longer) in a wait state.
    #[error("{op}: no active lifecycle action: {message}")]
    NoActiveAction { op: &'static str, message: String },
    #[error("{op}: throttled by Auto Scaling")]
    Throttled { op: &'static str },
    /// A failure that may pass: HTTP 5xx, a dropped connection, a timeout.
    #[error("{op} failed: {detail}")]
    Call { op: &'static str, detail: String },
    /// Refused for good (access denied, a bad parameter): retrying cannot help.
    #[error("{op} was refused: {detail}")]
    Rejected { op: &'static str, detail: String },
}

impl AsgError {
    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, AsgError::Throttled { .. } | AsgError::Call { .. })
    }
}

pub trait AutoScaling: Sync {
    fn describe_instance(
        &self,
        instance_id: &str,
    ) -> impl Future<Output = Result<Option<AsgInstance>, AsgError>> + Send;
    fn describe_hook(
        &self,
        group: &str,
        hook: &str,
    ) -> impl Future<Output = Result<Option<HookInfo>, AsgError>> + Send;
    fn heartbeat(&self, action: &HookAction) -> impl Future<Output = Result<(), AsgError>> + Send;
    fn complete(
        &self,
        action: &HookAction,
        result: HookResult,
    ) -> impl Future<Output = Result<(), AsgError>> + Send;
}

// ---------------------------------------------------------------- Instance metadata (IMDSv2)

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub instance_id: String,
    pub region: String,
    pub private_ipv4: String,
}

#[derive(Debug, thiserror::Error)]
#[error("instance metadata {path}: {detail}")]
pub struct ImdsError {
    pub path: String,
    pub detail: String,
}

pub trait InstanceMetadata: Sync {
    fn identity(&self) -> impl Future<Output = Result<Identity, ImdsError>> + Send;
    /// One item; `None` when IMDS answers 404 (for notices: "nothing announced").
    fn get(&self, path: &str) -> impl Future<Output = Result<Option<String>, ImdsError>> + Send;
    /// An item that never changes on an instance, asked once and then cached.
    fn get_static(&self, path: &str) -> impl Future<Output = Result<String, ImdsError>> + Send;
}

// ---------------------------------------------------------------- TFE tools

/// How to run install.sh.
#[derive(Debug, Clone)]
pub struct InstallPlan {
    /// The run is recorded for this instance only: a record baked into an AMI is not adopted.
    pub instance_id: String,
    pub script: std::path::PathBuf,
    pub args: Vec<String>,
    pub timeout: Duration,
}

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
    pub state: String,
    pub desired_state: String,
    pub is_transitioning: bool,
    pub error: String,
}

impl AppStatus {
    /// The documented "installation is complete" predicate.
    pub fn is_started(&self) -> bool {
        self.state == "started" && self.desired_state == "started" && !self.is_transitioning
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

/// A TFE tool call that failed, as the flows need to see it.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// Ran past its time; its process group was killed.
    #[error("{command} did not finish within {}; its process group was killed", humantime::format_duration(*timeout))]
    TimedOut { command: String, timeout: Duration },
    /// Could not be run, or ran and failed: a non-zero exit, output not understood, a refused
    /// digest. `detail` is the whole cause, one line.
    #[error("{detail}")]
    Failed { command: String, detail: String },
}

pub trait TfeTools: Sync {
    /// Runs install.sh to completion (or kills its process group at the timeout). The run
    /// outlives an agent killed meanwhile; the next call adopts it (waits for it, or reads the
    /// status it left) instead of starting install.sh a second time.
    fn install(&self, plan: &InstallPlan) -> impl Future<Output = Result<(), ToolError>> + Send;
    fn system_status(&self) -> impl Future<Output = Result<SystemStatus, ToolError>> + Send;
    fn app_status(&self) -> impl Future<Output = Result<AppStatus, ToolError>> + Send;
    fn health_check(&self) -> impl Future<Output = Result<HealthReport, ToolError>> + Send;
    /// Starts `replicated admin --tty=0 node-drain` detached from the agent (own process group,
    /// output and exit status to files), so it outlives an agent restart.
    fn start_drain(&self) -> Result<TrackedProcess, ToolError>;
    /// Lets a started drain run node-drain. Called once the drain is recorded: a drain started
    /// but never released (the agent died in between) ends without running node-drain.
    fn release_drain(&self, drain: &TrackedProcess) -> Result<(), ToolError>;
    /// Where a drain is; also forwards its new output lines into the log.
    fn drain_state(&self, drain: &TrackedProcess) -> DrainState;
    /// SIGTERM to the drain's process group, SIGKILL after a grace period.
    fn stop_drain(&self, drain: &TrackedProcess) -> impl Future<Output = ()> + Send;
    /// `replicatedctl app stop` / `app start` (asynchronous: poll `app_status` after).
    fn app_stop(&self) -> impl Future<Output = Result<(), ToolError>> + Send;
    fn app_start(&self) -> impl Future<Output = Result<(), ToolError>> + Send;
}

// ---------------------------------------------------------------- Clock

/// Time, so orchestration can run under tokio's paused clock in tests: `now`/`sleep` for waits,
/// `unix_now` for what the state record keeps across restarts and reboots.
pub trait Clock: Sync {
    fn now(&self) -> tokio::time::Instant;
    fn sleep(&self, duration: Duration) -> impl Future<Output = ()> + Send;
    /// Wall-clock seconds since the epoch.
    fn unix_now(&self) -> u64;
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
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }
}

/// The outside world, bundled for the orchestration.
#[derive(Debug)]
pub struct World<S, A, M, T, C> {
    pub secrets: S,
    pub asg: A,
    pub imds: M,
    pub tfe: T,
    pub clock: C,
}
