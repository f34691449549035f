//! Facts about the machine itself: which boot this is, and whether the system is going down.

use crate::model::tfe::TrackedProcess;
use crate::ports::{Host, JournalError};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";

/// Environment variables no child of the agent inherits: credentials and our systemd channel.
pub(crate) const SCRUBBED_ENV: &[&str] = &[
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "NOTIFY_SOCKET",
];

/// Changes on every boot: tells "the machine rebooted" from "the agent restarted".
pub fn boot_id() -> String {
    std::fs::read_to_string(BOOT_ID)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// The [`Host`] port: the boot id from the kernel, "is the system stopping" from systemctl.
#[derive(Debug, Clone)]
pub struct SystemHost {
    systemctl: PathBuf,
    journalctl: PathBuf,
}

impl SystemHost {
    pub fn new(systemctl: &Path, journalctl: &Path) -> Self {
        Self {
            systemctl: systemctl.to_owned(),
            journalctl: journalctl.to_owned(),
        }
    }
}

impl Host for SystemHost {
    fn boot_id(&self) -> String {
        boot_id()
    }
    fn system_stopping(&self) -> impl Future<Output = bool> + Send {
        system_is_stopping(&self.systemctl)
    }
    fn journal(&self, lines: u32) -> impl Future<Output = Result<Vec<u8>, JournalError>> + Send {
        journal(&self.journalctl, lines)
    }
}

/// How long journalctl may take to print the last entries.
const JOURNAL_TIMEOUT: Duration = Duration::from_secs(30);

/// `journalctl -u tfe-node-agent -n N -o short-iso --no-pager`.
async fn journal(journalctl: &Path, lines: u32) -> Result<Vec<u8>, JournalError> {
    let command = format!(
        "{} -u tfe-node-agent -n {lines} -o short-iso --no-pager",
        journalctl.display()
    );
    let mut cmd = tokio::process::Command::new(journalctl);
    cmd.args(["-u", "tfe-node-agent", "-n", &lines.to_string()])
        .args(["-o", "short-iso", "--no-pager"])
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    for var in SCRUBBED_ENV {
        cmd.env_remove(var);
    }
    let failed = |detail: String| JournalError::Failed {
        command: command.clone(),
        detail,
    };
    match tokio::time::timeout(JOURNAL_TIMEOUT, cmd.output()).await {
        Ok(Ok(out)) if out.status.success() => Ok(out.stdout),
        Ok(Ok(out)) => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let last = stderr.lines().rev().find(|l| !l.trim().is_empty());
            Err(failed(format!(
                "{}: {}",
                out.status,
                last.unwrap_or("(no output on stderr)").trim()
            )))
        }
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => Err(JournalError::Missing {
            command: journalctl.display().to_string(),
        }),
        Ok(Err(e)) => Err(failed(format!("cannot run it: {e}"))),
        Err(_) => Err(failed(format!(
            "did not finish within {}",
            humantime::format_duration(JOURNAL_TIMEOUT)
        ))),
    }
}

/// Whether the whole system is shutting down (`systemctl is-system-running` says "stopping"),
/// as opposed to only this unit being stopped or restarted.
pub async fn system_is_stopping(systemctl: &Path) -> bool {
    let mut cmd = tokio::process::Command::new(systemctl);
    cmd.arg("is-system-running")
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    for var in SCRUBBED_ENV {
        cmd.env_remove(var);
    }
    let run = cmd.output();
    match tokio::time::timeout(Duration::from_secs(5), run).await {
        // Its exit status is non-zero for every state but "running": read the text instead.
        Ok(Ok(out)) => String::from_utf8_lossy(&out.stdout).trim() == "stopping",
        Ok(Err(e)) => {
            log::warn!(
                "cannot run {} is-system-running: {e}; assuming the system is not stopping",
                systemctl.display()
            );
            false
        }
        Err(_) => {
            log::warn!("{} is-system-running did not answer within 5s; assuming the system is not stopping", systemctl.display());
            false
        }
    }
}

/// Records a just-started child (read before anything can reap it: a zombie keeps its entry).
pub fn track(pid: i32) -> TrackedProcess {
    TrackedProcess {
        pid,
        start_ticks: process_start(pid).map_or(0, |(ticks, _)| ticks),
        boot_id: boot_id(),
    }
}

/// The same process (pid, start time, boot), still running (a zombie has ended).
pub fn is_alive(process: &TrackedProcess) -> bool {
    process.boot_id == boot_id()
        && process_start(process.pid)
            .is_some_and(|(ticks, state)| ticks == process.start_ticks && state != 'Z')
}

/// (start time in clock ticks after boot, state letter) from /proc/<pid>/stat.
fn process_start(pid: i32) -> Option<(u64, char)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: fields count from the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    let ticks = fields.get(19)?.parse().ok()?;
    Some((ticks, state))
}
