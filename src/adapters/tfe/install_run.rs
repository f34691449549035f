//! install.sh, run detached so that its outcome survives the agent: an agent killed mid-install
//! (kill -9, OOM, a crash; systemd's KillMode=process spares the install) must not run install.sh
//! a second time when it comes back. The run is recorded in `install.pid` (which instance, which
//! process, since when) and its exit status in `install.status`; the next call adopts it.

use super::detached::Detached;
use super::install;
use super::process::{self, ProcessError};
use super::TfeError;
use crate::adapters::host;
use crate::model::tfe::{DrainState, TrackedProcess};
use crate::ports::InstallCommand;
use crate::sys::time::unix_now;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How often a running install is looked at (and its new output forwarded).
const POLL: Duration = Duration::from_millis(200);

/// What `install.pid` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct InstallRecord {
    instance_id: String,
    /// Unix seconds: the timeout counts from here, across agent restarts.
    started_at: u64,
    #[serde(flatten)]
    process: TrackedProcess,
}

pub(super) async fn install(
    files: &Detached,
    sha256: Option<&str>,
    plan: &InstallCommand,
) -> Result<(), TfeError> {
    let record_path = files.dir.join("install.pid");
    if let Some(outcome) = adopt(files, &record_path, plan).await {
        return outcome;
    }
    if let Some(expected) = sha256 {
        check_digest(&plan.script, expected)?;
    }
    // `bash install.sh …`, from the script's own directory (the airgap bundle requires it).
    let mut args = vec![plan.script.to_string_lossy().into_owned()];
    args.extend(plan.args.iter().cloned());
    let (process, gate) = files.start(Path::new("/bin/bash"), &args, plan.script.parent())?;
    let record = InstallRecord {
        instance_id: plan.instance_id.clone(),
        started_at: unix_now(),
        process,
    };
    // Dropping this future (a termination during boot, a signal) stops the install with it;
    // only an agent that dies leaves it running, and that is what the record is for.
    let mut guard = StopOnDrop {
        process: Some(record.process.clone()),
        record: record_path.clone(),
    };
    let bytes = serde_json::to_vec(&record).expect("an install record serializes");
    if let Err(e) = crate::sys::fsutil::atomic_write(&record_path, &bytes, 0o600, None) {
        // Without the record a restarted agent cannot adopt this run: it never starts.
        drop(gate);
        drop(guard);
        return Err(TfeError::DetachedFiles {
            path: record_path,
            source: std::io::Error::other(crate::error_chain(&e)),
        });
    }
    // Recorded: only now may install.sh run.
    gate.go().map_err(|source| TfeError::DetachedFiles {
        path: files.dir.clone(),
        source,
    })?;
    let outcome = wait(files, &record, plan).await;
    guard.disarm();
    outcome
}

/// The outcome of a run recorded by an earlier agent, if there is one to adopt; `None` means
/// "start install.sh" (nothing recorded, or the recorded run vanished without a status).
async fn adopt(
    files: &Detached,
    record_path: &PathBuf,
    plan: &InstallCommand,
) -> Option<Result<(), TfeError>> {
    let bytes = std::fs::read(record_path).ok()?;
    let record = match serde_json::from_slice::<InstallRecord>(&bytes) {
        Ok(r) if r.instance_id == plan.instance_id => r,
        Ok(r) => {
            log::info!(
                "ignoring the install record of instance {} (not this instance: baked into the image?)",
                r.instance_id
            );
            stop_foreign(&r.process).await;
            return None;
        }
        Err(e) => {
            log::warn!(
                "install record {} is unreadable ({e}); treating the install as never started",
                record_path.display()
            );
            if let Ok(p) = serde_json::from_slice::<TrackedProcess>(&bytes) {
                stop_foreign(&p).await;
            }
            return None;
        }
    };
    let age = unix_now().saturating_sub(record.started_at);
    match files.state(&record.process) {
        DrainState::Running => {
            log::warn!(
                "install.sh started by an earlier agent {age}s ago (pid {}) is still running: waiting for it instead of starting it again",
                record.process.pid
            );
            let mut guard = StopOnDrop {
                process: Some(record.process.clone()),
                record: record_path.clone(),
            };
            let outcome = wait(files, &record, plan).await;
            guard.disarm();
            Some(outcome)
        }
        DrainState::Exited(code) => {
            log::warn!(
                "install.sh started by an earlier agent {age}s ago ended while no agent watched it, with exit status {code}: {}",
                if code == 0 { "taking its success, not running it again" } else { "taking its failure" }
            );
            Some(exit_outcome(plan, code))
        }
        DrainState::Vanished => {
            log::warn!(
                "install.sh started by an earlier agent {age}s ago (pid {}) ended without leaving its status (killed, or the machine rebooted): running it again",
                record.process.pid
            );
            None
        }
        DrainState::NeverStarted => {
            log::warn!(
                "the install recorded by an earlier agent {age}s ago never ran (that agent stopped before letting it run): running install.sh now"
            );
            None
        }
    }
}

/// Waits for the run to end, forwarding its output; kills its group at the timeout, counted
/// from the recorded start.
async fn wait(
    files: &Detached,
    record: &InstallRecord,
    plan: &InstallCommand,
) -> Result<(), TfeError> {
    // Counted from the recorded start: an adopted run has used part of its time already.
    let used = Duration::from_secs(unix_now().saturating_sub(record.started_at));
    let deadline = tokio::time::Instant::now() + plan.timeout.saturating_sub(used);
    loop {
        match files.state(&record.process) {
            DrainState::Exited(code) => return exit_outcome(plan, code),
            DrainState::Vanished | DrainState::NeverStarted => {
                return Err(TfeError::Exited {
                    command: display(plan),
                    status: "no exit status (killed from outside)".into(),
                    stderr: "see the install.sh lines logged above".into(),
                })
            }
            DrainState::Running if tokio::time::Instant::now() >= deadline => {
                log::warn!("install.sh timed out; sending SIGTERM to its process group");
                files.stop(&record.process).await;
                return Err(TfeError::Process(ProcessError::TimedOut {
                    command: display(plan),
                    timeout: plan.timeout,
                }));
            }
            DrainState::Running => tokio::time::sleep(POLL).await,
        }
    }
}

fn exit_outcome(plan: &InstallCommand, code: i32) -> Result<(), TfeError> {
    if code == 0 {
        return Ok(());
    }
    Err(TfeError::Exited {
        command: display(plan),
        status: format!("exit status: {code}"),
        stderr: "see the install.sh lines logged above".into(),
    })
}

fn display(plan: &InstallCommand) -> String {
    std::iter::once(format!("/bin/bash {}", plan.script.display()))
        .chain(plan.args.iter().cloned())
        .collect::<Vec<_>>()
        .join(" ")
}

fn check_digest(script: &Path, expected: &str) -> Result<(), TfeError> {
    let actual = install::sha256_file(script).map_err(|source| TfeError::ReadScript {
        path: script.to_path_buf(),
        source,
    })?;
    if !actual.eq_ignore_ascii_case(expected.trim()) {
        return Err(TfeError::DigestMismatch {
            path: script.to_path_buf(),
            expected: expected.trim().to_string(),
            actual,
        });
    }
    Ok(())
}

/// An install of another instance or of an older agent that still runs is stopped: it is not
/// ours to adopt, and two installs must never run at once.
async fn stop_foreign(process: &TrackedProcess) {
    if host::is_alive(process) {
        log::warn!(
            "an install.sh this agent cannot adopt (pid {}) is still running; stopping its process group first",
            process.pid
        );
        process::stop_group(process).await;
    }
}

/// Kills the install's process group and forgets the run if dropped while armed (the boot was
/// cancelled: nothing may keep installing behind the agent's back).
struct StopOnDrop {
    process: Option<TrackedProcess>,
    record: PathBuf,
}

impl StopOnDrop {
    fn disarm(&mut self) {
        self.process = None;
    }
}

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if let Some(p) = self.process.take() {
            if host::is_alive(&p) {
                let _ = killpg(Pid::from_raw(p.pid), Signal::SIGKILL);
            }
            let _ = std::fs::remove_file(&self.record);
        }
    }
}

#[cfg(test)]
mod tests;
