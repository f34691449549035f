//! `replicated admin node-drain`, run so that it outlives the agent: its own process group, its
//! output appended to `drain.log` and its exit status written to `drain.status` by a tiny shell
//! wrapper. A restarted agent finds the drain by pid + start time + boot id and waits for it;
//! it never starts a second one.

use super::process::SCRUBBED_ENV;
use super::TfeError;
use crate::host;
use crate::ports::{DrainState, TrackedProcess};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use std::fs::{self, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

const STATUS_FILE: &str = "drain.status";
const LOG_FILE: &str = "drain.log";
/// After SIGTERM to the drain's group, how long before SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(10);
/// `$1` is the status file; the rest is the command. The status is written atomically, after
/// the command ended on its own (a signal to the group ends the wrapper too: no status).
const WRAPPER: &str = r#"status=$1; shift; "$@"; rc=$?; printf '%s\n' "$rc" > "$status.tmp" && mv -f "$status.tmp" "$status"; exit $rc"#;

/// The drain's files, and how much of its log was already forwarded.
#[derive(Debug)]
pub struct DrainFiles {
    pub dir: PathBuf,
    /// `None` until known: an adopted drain's earlier output was logged by the earlier agent.
    log_offset: Mutex<Option<u64>>,
}

impl DrainFiles {
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
            log_offset: Mutex::new(None),
        }
    }

    fn status(&self) -> PathBuf {
        self.dir.join(STATUS_FILE)
    }

    fn log(&self) -> PathBuf {
        self.dir.join(LOG_FILE)
    }

    pub fn start(&self, replicated: &Path) -> Result<TrackedProcess, TfeError> {
        let io = |path: PathBuf| move |source| TfeError::DrainFiles { path, source };
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(io(self.dir.clone()))?;
        match fs::remove_file(self.status()) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(self.status())(e)),
            _ => {}
        }
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(self.log())
            .map_err(io(self.log()))?;
        let offset = log.metadata().map_or(0, |m| m.len());
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(WRAPPER)
            .arg("tfe-node-drain")
            .arg(self.status())
            .arg(replicated)
            .args(["admin", "--tty=0", "node-drain"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(io(self.log()))?)
            .stderr(log)
            .process_group(0);
        for var in SCRUBBED_ENV {
            cmd.env_remove(var);
        }
        let mut child = cmd.spawn().map_err(|source| TfeError::Spawn {
            command: format!("{} admin --tty=0 node-drain", replicated.display()),
            source,
        })?;
        let process = host::track(child.id() as i32);
        // Reap it when it ends (if the agent dies first, init does).
        std::thread::spawn(move || {
            let _ = child.wait();
        });
        *self.log_offset.lock().expect("drain log offset") = Some(offset);
        Ok(process)
    }

    pub fn state(&self, drain: &TrackedProcess) -> DrainState {
        self.forward_log();
        if let Some(code) = self.exit_status() {
            return DrainState::Exited(code);
        }
        if host::is_alive(drain) {
            return DrainState::Running;
        }
        // It may have written its status between the two looks.
        self.exit_status()
            .map_or(DrainState::Vanished, DrainState::Exited)
    }

    pub async fn stop(&self, drain: &TrackedProcess) {
        if !host::is_alive(drain) {
            return;
        }
        let group = Pid::from_raw(drain.pid);
        log::warn!("stopping node-drain (process group {})", drain.pid);
        let _ = killpg(group, Signal::SIGTERM);
        let deadline = tokio::time::Instant::now() + KILL_GRACE;
        while host::is_alive(drain) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if host::is_alive(drain) {
            log::warn!("node-drain ignored SIGTERM; killing its process group");
        }
        let _ = killpg(group, Signal::SIGKILL);
        self.forward_log();
    }

    fn exit_status(&self) -> Option<i32> {
        fs::read_to_string(self.status()).ok()?.trim().parse().ok()
    }

    /// Logs the drain's new complete lines as `node-drain: …`.
    fn forward_log(&self) {
        let mut offset = self.log_offset.lock().expect("drain log offset");
        let Ok(mut file) = fs::File::open(self.log()) else {
            return;
        };
        let len = file.metadata().map_or(0, |m| m.len());
        let start = *offset.get_or_insert(len);
        if len <= start || file.seek(SeekFrom::Start(start)).is_err() {
            return;
        }
        let mut new = Vec::new();
        if file.take(1 << 20).read_to_end(&mut new).is_err() {
            return;
        }
        let Some(end) = new.iter().rposition(|b| *b == b'\n') else {
            return;
        };
        for line in String::from_utf8_lossy(&new[..end]).lines() {
            log::info!("node-drain: {}", line.trim_end());
        }
        *offset = Some(start + end as u64 + 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait_for(files: &DrainFiles, drain: &TrackedProcess) -> DrainState {
        for _ in 0..100 {
            match files.state(drain) {
                DrainState::Running => std::thread::sleep(Duration::from_millis(50)),
                other => return other,
            }
        }
        DrainState::Running
    }

    fn fake(dir: &Path, script: &str) -> PathBuf {
        let path = dir.join("replicated");
        fs::write(&path, format!("#!/bin/sh\n{script}\n")).unwrap();
        fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        path
    }

    #[test]
    fn exit_status_is_kept_in_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let tool = fake(dir.path(), "echo \"args: $*\"; exit 3");
        let files = DrainFiles::new(&dir.path().join("state"));
        let drain = files.start(&tool).unwrap();
        assert!(drain.start_ticks > 0);
        assert_eq!(wait_for(&files, &drain), DrainState::Exited(3));
        let log = fs::read_to_string(files.log()).unwrap();
        assert_eq!(log, "args: admin --tty=0 node-drain\n");
        // Another agent (a restart) sees the same outcome from the files alone.
        assert_eq!(
            DrainFiles::new(&files.dir).state(&drain),
            DrainState::Exited(3)
        );
    }

    #[test]
    fn a_killed_drain_vanishes_and_a_foreign_pid_is_not_it() {
        let dir = tempfile::tempdir().unwrap();
        let tool = fake(dir.path(), "sleep 30");
        let files = DrainFiles::new(dir.path());
        let drain = files.start(&tool).unwrap();
        assert_eq!(files.state(&drain), DrainState::Running);
        let other_boot = TrackedProcess {
            boot_id: "another-boot".into(),
            ..drain.clone()
        };
        assert_eq!(files.state(&other_boot), DrainState::Vanished);
        let reused = TrackedProcess {
            start_ticks: drain.start_ticks + 1,
            ..drain.clone()
        };
        assert_eq!(files.state(&reused), DrainState::Vanished);
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
            .block_on(files.stop(&drain));
        assert_eq!(wait_for(&files, &drain), DrainState::Vanished);
    }
}
