//! Running a TFE tool as a child: in its own process group (so a timeout or a shutdown can kill
//! everything it started), stdin from /dev/null (it must never wait on a prompt), no AWS credentials
//! or systemd notify socket in its environment, and its output streamed line by line into our log.

use crate::adapters::host;
use crate::model::tfe::TrackedProcess;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};

pub(crate) use crate::adapters::host::SCRUBBED_ENV;

/// After SIGTERM to the group, how long before SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(10);
/// Most output kept from a captured command.
const CAPTURE_LIMIT: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("cannot start {command}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{command} did not finish within {}; its process group was killed", humantime::format_duration(*timeout))]
    TimedOut { command: String, timeout: Duration },
    #[error("waiting for {command} failed")]
    Wait {
        command: String,
        #[source]
        source: std::io::Error,
    },
}

/// A command line; `label` names it in logs and errors (the program's file name and first args).
#[derive(Debug, Clone)]
pub struct Spec {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub cwd: Option<PathBuf>,
    /// Names the command in log lines ("install.sh: …" rather than "bash: …").
    pub label: String,
}

impl Spec {
    pub fn new(program: impl Into<PathBuf>, args: &[&str]) -> Self {
        let program = program.into();
        Self {
            label: file_name(&program),
            program,
            args: args.iter().map(|a| a.to_string()).collect(),
            cwd: None,
        }
    }

    /// The command as it would be typed (arguments never hold secrets).
    pub fn display(&self) -> String {
        std::iter::once(self.program.to_string_lossy().into_owned())
            .chain(self.args.iter().cloned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn spawn(&self) -> Result<(Child, GroupGuard), ProcessError> {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        for var in SCRUBBED_ENV {
            cmd.env_remove(var);
        }
        if let Some(dir) = &self.cwd {
            cmd.current_dir(dir);
        }
        let child = cmd.spawn().map_err(|source| ProcessError::Spawn {
            command: self.display(),
            source,
        })?;
        let pgid = child.id().map(|id| Pid::from_raw(id as i32));
        Ok((child, GroupGuard { pgid }))
    }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Kills the whole process group if dropped while armed: a cancelled (dropped) run leaves nothing.
/// Removes the tracking record either way: the child is done.
struct GroupGuard {
    pgid: Option<Pid>,
}

impl GroupGuard {
    fn disarm(&mut self) {
        self.pgid = None;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.pgid.take() {
            let _ = killpg(pgid, Signal::SIGKILL);
        }
    }
}

/// Stops a recorded process group that outlives its starter (install.sh, node-drain): SIGTERM,
/// up to [`KILL_GRACE`] for it to go, then SIGKILL for whatever is left. Says whether it went on
/// SIGTERM alone.
pub(crate) async fn stop_group(process: &TrackedProcess) -> bool {
    if !host::is_alive(process) {
        return true;
    }
    let group = Pid::from_raw(process.pid);
    let _ = killpg(group, Signal::SIGTERM);
    let deadline = tokio::time::Instant::now() + KILL_GRACE;
    while host::is_alive(process) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let gone = !host::is_alive(process);
    let _ = killpg(group, Signal::SIGKILL);
    gone
}

/// Runs to completion, logging every output line as `<name>: <line>`.
pub async fn run_logged(spec: &Spec, timeout: Duration) -> Result<ExitStatus, ProcessError> {
    let (mut child, mut guard) = spec.spawn()?;
    let name = spec.label.clone();
    let out = tokio::spawn(log_lines(child.stdout.take(), name.clone(), false));
    let err = tokio::spawn(log_lines(child.stderr.take(), name, true));
    let status = wait_or_kill(spec, &mut child, &mut guard, timeout).await?;
    drain_readers([out, err]).await;
    Ok(status)
}

/// Runs to completion and returns (status, stdout, stderr).
pub async fn run_captured(
    spec: &Spec,
    timeout: Duration,
) -> Result<(ExitStatus, String, String), ProcessError> {
    let (mut child, mut guard) = spec.spawn()?;
    let out = tokio::spawn(capture(child.stdout.take()));
    let err = tokio::spawn(capture(child.stderr.take()));
    let status = wait_or_kill(spec, &mut child, &mut guard, timeout).await?;
    let stdout = out.await.unwrap_or_default();
    let stderr = err.await.unwrap_or_default();
    Ok((status, stdout, stderr))
}

async fn wait_or_kill(
    spec: &Spec,
    child: &mut Child,
    guard: &mut GroupGuard,
    timeout: Duration,
) -> Result<ExitStatus, ProcessError> {
    let waited = tokio::time::timeout(timeout, child.wait()).await;
    match waited {
        Ok(Ok(status)) => {
            guard.disarm();
            Ok(status)
        }
        Ok(Err(source)) => Err(ProcessError::Wait {
            command: spec.display(),
            source,
        }),
        Err(_) => {
            if let Some(pgid) = guard.pgid {
                log::warn!(
                    "{} timed out; sending SIGTERM to its process group",
                    spec.label
                );
                let _ = killpg(pgid, Signal::SIGTERM);
                if tokio::time::timeout(KILL_GRACE, child.wait())
                    .await
                    .is_err()
                {
                    log::warn!("{} ignored SIGTERM; killing its process group", spec.label);
                }
            }
            // Whatever of the group is left (stragglers that ignored SIGTERM) goes now.
            if let Some(pgid) = guard.pgid.take() {
                let _ = killpg(pgid, Signal::SIGKILL);
            }
            let _ = child.wait().await;
            Err(ProcessError::TimedOut {
                command: spec.display(),
                timeout,
            })
        }
    }
}

/// A grandchild may keep the pipes open after the child exits; do not wait on it forever.
async fn drain_readers(readers: [tokio::task::JoinHandle<()>; 2]) {
    for reader in readers {
        let abort = reader.abort_handle();
        if tokio::time::timeout(Duration::from_secs(2), reader)
            .await
            .is_err()
        {
            abort.abort();
        }
    }
}

async fn log_lines(stream: Option<impl AsyncRead + Unpin>, name: String, stderr: bool) {
    let Some(stream) = stream else { return };
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let text = String::from_utf8_lossy(&line);
                let text = text.trim_end();
                if stderr {
                    log::info!("{name} (stderr): {text}");
                } else {
                    log::info!("{name}: {text}");
                }
            }
        }
    }
}

async fn capture(stream: Option<impl AsyncRead + Unpin>) -> String {
    use tokio::io::AsyncReadExt;
    let Some(stream) = stream else {
        return String::new();
    };
    let mut buf = Vec::new();
    let _ = stream
        .take(CAPTURE_LIMIT as u64)
        .read_to_end(&mut buf)
        .await;
    String::from_utf8_lossy(&buf).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Exited (no /proc entry) or a zombie nobody reaped yet.
    fn is_gone(pid: i32) -> bool {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        stat.is_empty() || stat.split_whitespace().nth(2) == Some("Z")
    }

    fn sh(script: &str) -> Spec {
        Spec::new("/bin/sh", &["-c", script])
    }

    #[tokio::test]
    async fn captures_output_and_status() {
        let (status, out, err) = run_captured(
            &sh("echo hi; echo oops >&2; exit 3"),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
        assert_eq!(status.code(), Some(3));
        assert_eq!(out, "hi\n");
        assert_eq!(err, "oops\n");
    }

    #[tokio::test]
    async fn stdin_is_empty_and_credentials_are_scrubbed() {
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "not-for-children");
        let (_, out, _) = run_captured(
            &sh("read x; echo \"read=$? x=[$x] key=[${AWS_SECRET_ACCESS_KEY:-}]\""),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
        assert_eq!(out, "read=1 x=[] key=[]\n");
    }

    #[tokio::test]
    async fn timeout_kills_the_whole_process_group() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("grandchild.pid");
        let script = format!("sleep 300 & echo $! > {}; wait", pidfile.display());
        let err = run_logged(&sh(&script), Duration::from_millis(500))
            .await
            .unwrap_err();
        assert!(matches!(err, ProcessError::TimedOut { .. }), "{err}");
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // The grandchild got the group's signal; give the kernel a moment to reap it.
        let gone = (0..50).any(|_| {
            std::thread::sleep(Duration::from_millis(20));
            is_gone(pid)
        });
        assert!(gone, "grandchild {pid} survived the timeout");
    }

    #[tokio::test]
    async fn dropping_the_future_kills_the_group() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("child.pid");
        let script = format!("echo $$ > {}; sleep 300", pidfile.display());
        let spec = sh(&script);
        let run = run_logged(&spec, Duration::from_secs(600));
        let _ = tokio::time::timeout(Duration::from_millis(300), run).await;
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let gone = (0..50).any(|_| {
            std::thread::sleep(Duration::from_millis(20));
            is_gone(pid)
        });
        assert!(gone, "child {pid} survived cancellation");
    }
}
