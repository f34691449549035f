//! The TFE tools (install.sh, replicatedctl, `replicated admin`) behind the
//! [`TfeTools`](crate::ports::TfeTools) port, run as child processes.

pub mod detached;
pub mod install;
mod install_run;
pub mod parse;
pub mod process;

use crate::model::drift::LiveSettings;
use crate::model::tfe::{
    AppStatus, DrainState, HealthReport, SupportBundleRun, SystemStatus, TrackedProcess,
};
use crate::ports::{InstallCommand, TfeTools, ToolError};
use detached::Detached;
use process::{ProcessError, Spec};
use std::path::PathBuf;
use std::time::Duration;

/// How long a status query may take before it counts as a failed poll.
const QUERY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long `replicated admin support-bundle` may take: it collects and uploads every node's
/// bundle, which takes minutes on a busy cluster (its duration is undocumented).
pub const SUPPORT_BUNDLE_TIMEOUT: Duration = Duration::from_secs(15 * 60);

#[derive(Debug, thiserror::Error)]
pub enum TfeError {
    #[error(transparent)]
    Process(#[from] ProcessError),
    #[error("{command} exited with {status}: {stderr}")]
    Exited {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("cannot understand the output of {command}: {detail}")]
    Parse { command: String, detail: String },
    #[error("cannot start {command}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot prepare a detached tool's files at {path}")]
    DetachedFiles {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read install script {path}")]
    ReadScript {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("install script {path} has SHA-256 {actual}, but [install].sha256 pins {expected}; refusing to run it")]
    DigestMismatch {
        path: PathBuf,
        expected: String,
        actual: String,
    },
}

impl TfeError {
    fn command(&self) -> String {
        match self {
            TfeError::Process(ProcessError::Spawn { command, .. })
            | TfeError::Process(ProcessError::TimedOut { command, .. })
            | TfeError::Process(ProcessError::Wait { command, .. })
            | TfeError::Exited { command, .. }
            | TfeError::Parse { command, .. }
            | TfeError::Spawn { command, .. } => command.clone(),
            TfeError::DetachedFiles { path, .. }
            | TfeError::ReadScript { path, .. }
            | TfeError::DigestMismatch { path, .. } => path.display().to_string(),
        }
    }
}

/// What the flows see: the adapter's own error kinds stay here.
impl From<TfeError> for ToolError {
    fn from(e: TfeError) -> Self {
        match e {
            TfeError::Process(ProcessError::TimedOut { command, timeout }) => {
                ToolError::TimedOut { command, timeout }
            }
            other => ToolError::Failed {
                command: other.command(),
                detail: crate::error_chain(&other),
            },
        }
    }
}

/// The real tools, at the paths from `[tools]`.
#[derive(Debug)]
pub struct CliTfe {
    pub replicatedctl: PathBuf,
    pub replicated: PathBuf,
    /// `[install].sha256`, checked right before the script runs.
    pub install_sha256: Option<String>,
    /// node-drain's status and log files (in `[paths].state_dir`).
    pub drain: Detached,
    /// install.sh's status, log and run record (in `[paths].state_dir`).
    pub install: Detached,
    /// A started node-drain waiting for its release (the drain is recorded in between).
    drain_gate: std::sync::Mutex<Option<(TrackedProcess, detached::Gate)>>,
}

impl CliTfe {
    pub fn new(
        tools: &crate::config::ToolsSection,
        install_sha256: Option<String>,
        state_dir: &std::path::Path,
    ) -> Self {
        Self {
            replicatedctl: tools.replicatedctl.clone(),
            replicated: tools.replicated.clone(),
            install_sha256,
            drain: Detached::drain(state_dir),
            install: Detached::new(state_dir, "install", "install.sh"),
            drain_gate: std::sync::Mutex::new(None),
        }
    }
}

impl CliTfe {
    async fn query(&self, spec: Spec) -> Result<String, TfeError> {
        let (status, stdout, stderr) = process::run_captured(&spec, QUERY_TIMEOUT).await?;
        if !status.success() {
            return Err(TfeError::Exited {
                command: spec.display(),
                status: status.to_string(),
                stderr: last_line(&stderr),
            });
        }
        Ok(stdout)
    }
}

fn last_line(text: &str) -> String {
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .to_string()
}

impl TfeTools for CliTfe {
    async fn install(&self, plan: &InstallCommand) -> Result<(), ToolError> {
        Ok(install_run::install(&self.install, self.install_sha256.as_deref(), plan).await?)
    }

    fn start_drain(&self) -> Result<TrackedProcess, ToolError> {
        let args = ["admin", "--tty=0", "node-drain"].map(String::from);
        let (process, gate) = self.drain.start(&self.replicated, &args, None)?;
        *self.drain_gate.lock().expect("drain gate") = Some((process.clone(), gate));
        Ok(process)
    }

    fn release_drain(&self, drain: &TrackedProcess) -> Result<(), ToolError> {
        let held = self.drain_gate.lock().expect("drain gate").take();
        let command = format!("{} admin --tty=0 node-drain", self.replicated.display());
        match held {
            Some((process, gate)) if process == *drain => {
                gate.go().map_err(|e| ToolError::Failed {
                    command,
                    detail: format!("cannot let node-drain run: {e}"),
                })
            }
            _ => Err(ToolError::Failed {
                command,
                detail: format!("no started drain with pid {} to release", drain.pid),
            }),
        }
    }

    fn drain_state(&self, drain: &TrackedProcess) -> DrainState {
        self.drain.state(drain)
    }

    async fn stop_drain(&self, drain: &TrackedProcess) {
        self.drain.stop(drain).await;
    }

    async fn app_stop(&self) -> Result<(), ToolError> {
        self.query(Spec::new(&self.replicatedctl, &["app", "stop"]))
            .await
            .map(drop)
            .map_err(ToolError::from)
    }

    async fn app_start(&self) -> Result<(), ToolError> {
        self.query(Spec::new(&self.replicatedctl, &["app", "start"]))
            .await
            .map(drop)
            .map_err(ToolError::from)
    }

    async fn system_status(&self) -> Result<SystemStatus, ToolError> {
        let spec = Spec::new(&self.replicatedctl, &["system", "status"]);
        let out = self.query(spec.clone()).await?;
        Ok(
            parse::system_status(&out).map_err(|detail| TfeError::Parse {
                command: spec.display(),
                detail,
            })?,
        )
    }

    async fn app_status(&self) -> Result<AppStatus, ToolError> {
        let spec = Spec::new(&self.replicatedctl, &["app", "status"]);
        let out = self.query(spec.clone()).await?;
        Ok(parse::app_status(&out).map_err(|detail| TfeError::Parse {
            command: spec.display(),
            detail,
        })?)
    }

    async fn health_check(&self) -> Result<HealthReport, ToolError> {
        let spec = Spec::new(&self.replicated, &["admin", "--tty=0", "health-check"]);
        // The exit status on failure is undocumented: the summary line decides.
        let (status, stdout, stderr) = process::run_captured(&spec, QUERY_TIMEOUT)
            .await
            .map_err(TfeError::from)?;
        Ok(
            parse::health_check(&stdout).map_err(|detail| match status.success() {
                true => TfeError::Parse {
                    command: spec.display(),
                    detail,
                },
                false => TfeError::Exited {
                    command: spec.display(),
                    status: status.to_string(),
                    stderr: last_line(&stderr),
                },
            })?,
        )
    }

    async fn app_config_set(&self, key: &str, value: &str) -> Result<(), ToolError> {
        let args = ["admin", "--tty=0", "app-config", "-k", key, "-v", value];
        self.query(Spec::new(&self.replicated, &args))
            .await
            .map(drop)
            .map_err(ToolError::from)
    }

    async fn support_bundle(&self) -> Result<SupportBundleRun, ToolError> {
        let spec = Spec::new(&self.replicated, &["admin", "--tty=0", "support-bundle"]);
        let (status, stdout, stderr) = process::run_captured(&spec, SUPPORT_BUNDLE_TIMEOUT)
            .await
            .map_err(TfeError::from)?;
        if !status.success() {
            return Err(TfeError::Exited {
                command: spec.display(),
                status: status.to_string(),
                stderr: last_line(&stderr),
            }
            .into());
        }
        Ok(SupportBundleRun::parse(&stdout))
    }

    async fn replicated_version(&self) -> Result<String, ToolError> {
        let out = self
            .query(Spec::new(&self.replicatedctl, &["version"]))
            .await?;
        Ok(out.trim().to_string())
    }

    async fn app_config_export(&self) -> Result<LiveSettings, ToolError> {
        let spec = Spec::new(&self.replicatedctl, &["app-config", "export", "--hidden"]);
        // The output holds every secret setting: wiped once parsed.
        let out = zeroize::Zeroizing::new(self.query(spec.clone()).await?);
        Ok(
            parse::app_config_export(&out).map_err(|detail| TfeError::Parse {
                command: spec.display(),
                detail,
            })?,
        )
    }
}
