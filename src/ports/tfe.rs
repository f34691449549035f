//! The TFE tools (install.sh, replicatedctl, `replicated admin`) as the flows see them.

use crate::model::drift::LiveSettings;
use crate::model::tfe::{
    AppStatus, DrainState, HealthReport, SupportBundleRun, SystemStatus, TrackedProcess,
};
use std::future::Future;
use std::time::Duration;

/// How to run install.sh.
#[derive(Debug, Clone)]
pub struct InstallCommand {
    /// The run is recorded for this instance only: a record baked into an AMI is not adopted.
    pub instance_id: String,
    pub script: std::path::PathBuf,
    pub args: Vec<String>,
    pub timeout: Duration,
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
    fn install(&self, plan: &InstallCommand) -> impl Future<Output = Result<(), ToolError>> + Send;
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
    /// `replicated admin --tty=0 app-config -k KEY -v VALUE`: changes one setting of the running
    /// app, on this node, until the app restarts (then it takes effect). Only for values that may
    /// be in argv (never a secret's).
    fn app_config_set(
        &self,
        key: &str,
        value: &str,
    ) -> impl Future<Output = Result<(), ToolError>> + Send;
    /// `replicated admin --tty=0 support-bundle` to completion (bounded by a timeout): TFE's
    /// own bundle of every node, uploaded to the object store in Active/Active. What it printed,
    /// as far as understood; a non-zero exit or a timeout is an error.
    fn support_bundle(&self) -> impl Future<Output = Result<SupportBundleRun, ToolError>> + Send;
    /// `replicatedctl version`: the Replicated version line, as printed.
    fn replicated_version(&self) -> impl Future<Output = Result<String, ToolError>> + Send;
    /// `replicatedctl app-config export --hidden`: every app-config item TFE runs with, the
    /// hidden (secret) ones included; items without a value are left out. For drift detection.
    fn app_config_export(&self) -> impl Future<Output = Result<LiveSettings, ToolError>> + Send;
}
