//! The TFE tools (install.sh, replicatedctl, `replicated admin`) behind the
//! [`TfeTools`](crate::ports::TfeTools) port, run as child processes.

pub mod drain;
pub mod install;
pub mod parse;
pub mod process;

use crate::ports::{
    AppStatus, DrainState, HealthReport, InstallPlan, SystemStatus, TfeTools, TrackedProcess,
};
use drain::DrainFiles;
use process::{ProcessError, Spec};
use std::path::PathBuf;
use std::time::Duration;

/// How long a status query may take before it counts as a failed poll.
const QUERY_TIMEOUT: Duration = Duration::from_secs(60);

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
    #[error("cannot prepare node-drain's files at {path}")]
    DrainFiles {
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

/// The real tools, at the paths from `[tools]`.
#[derive(Debug)]
pub struct CliTfe {
    pub replicatedctl: PathBuf,
    pub replicated: PathBuf,
    /// `[install].sha256`, checked right before the script runs.
    pub install_sha256: Option<String>,
    /// node-drain's status and log files (in `[paths].state_dir`).
    pub drain: DrainFiles,
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
    async fn install(&self, plan: &InstallPlan) -> Result<(), TfeError> {
        if let Some(expected) = &self.install_sha256 {
            let actual =
                install::sha256_file(&plan.script).map_err(|source| TfeError::ReadScript {
                    path: plan.script.clone(),
                    source,
                })?;
            if !actual.eq_ignore_ascii_case(expected.trim()) {
                return Err(TfeError::DigestMismatch {
                    path: plan.script.clone(),
                    expected: expected.trim().to_string(),
                    actual,
                });
            }
        }
        // `bash install.sh …`, from the script's own directory (the airgap bundle requires it).
        let mut args = vec![plan.script.to_string_lossy().into_owned()];
        args.extend(plan.args.iter().cloned());
        let track = self.drain.dir.join("install.pid");
        process::stop_leftover(&track, "install.sh").await;
        let spec = Spec {
            track: Some(track),
            program: "/bin/bash".into(),
            args,
            cwd: plan.script.parent().map(PathBuf::from),
            label: plan
                .script
                .file_name()
                .map_or_else(|| "install.sh".into(), |n| n.to_string_lossy().into_owned()),
        };
        let status = process::run_logged(&spec, plan.timeout).await?;
        if !status.success() {
            return Err(TfeError::Exited {
                command: spec.display(),
                status: status.to_string(),
                stderr: "see the install.sh lines logged above".into(),
            });
        }
        Ok(())
    }

    fn start_drain(&self) -> Result<TrackedProcess, TfeError> {
        self.drain.start(&self.replicated)
    }

    fn drain_state(&self, drain: &TrackedProcess) -> DrainState {
        self.drain.state(drain)
    }

    async fn stop_drain(&self, drain: &TrackedProcess) {
        self.drain.stop(drain).await
    }

    async fn app_stop(&self) -> Result<(), TfeError> {
        self.query(Spec::new(&self.replicatedctl, &["app", "stop"]))
            .await
            .map(drop)
    }

    async fn app_start(&self) -> Result<(), TfeError> {
        self.query(Spec::new(&self.replicatedctl, &["app", "start"]))
            .await
            .map(drop)
    }

    async fn system_status(&self) -> Result<SystemStatus, TfeError> {
        let spec = Spec::new(&self.replicatedctl, &["system", "status"]);
        let out = self.query(spec.clone()).await?;
        parse::system_status(&out).map_err(|detail| TfeError::Parse {
            command: spec.display(),
            detail,
        })
    }

    async fn app_status(&self) -> Result<AppStatus, TfeError> {
        let spec = Spec::new(&self.replicatedctl, &["app", "status"]);
        let out = self.query(spec.clone()).await?;
        parse::app_status(&out).map_err(|detail| TfeError::Parse {
            command: spec.display(),
            detail,
        })
    }

    async fn health_check(&self) -> Result<HealthReport, TfeError> {
        let spec = Spec::new(&self.replicated, &["admin", "--tty=0", "health-check"]);
        // The exit status on failure is undocumented: the summary line decides.
        let (status, stdout, stderr) = process::run_captured(&spec, QUERY_TIMEOUT).await?;
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
        })
    }
}
