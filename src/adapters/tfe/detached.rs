//! Tools that must outlive the agent — `replicated admin node-drain` and install.sh — run
//! detached: their own process group, output appended to `<name>.log`, and the exit status
//! written to `<name>.status` by a tiny shell wrapper once the tool ends on its own. An agent
//! killed meanwhile (systemd's KillMode=process spares children) leaves them running; the
//! restarted agent finds them by pid + start time + boot id, waits for them and reads their
//! status: it never starts a second one.

use super::process::{self, SCRUBBED_ENV};
use super::TfeError;
use crate::adapters::host;
use crate::model::tfe::{DrainState, TrackedProcess};
use std::fs::{self, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

/// `$1` is the status file; the rest is the command. The wrapper first waits for the agent's
/// "go" on its stdin, which the agent sends only once it has recorded the run: an agent killed
/// in between leaves no record, and its wrapper then reads end-of-file and exits (125) without
/// running the tool, so a restarted agent can start it without running it twice. Killed after
/// the record but before the "go", the wrapper leaves `never-started` as its status: the record
/// then names a run that never ran, which a restarted agent may start again. The tool gets
/// /dev/null as stdin. The status is written atomically, after the command ended on its own (a
/// signal to the group ends the wrapper too: no status).
const WRAPPER: &str = r#"IFS= read -r go && [ "$go" = go ] || { printf 'never-started\n' > "$1.tmp" && mv -f "$1.tmp" "$1"; exit 125; }; status=$1; shift; "$@" </dev/null; rc=$?; printf '%s\n' "$rc" > "$status.tmp" && mv -f "$status.tmp" "$status"; exit $rc"#;

/// A started run that waits for its "go". Dropping it without [`Gate::go`] ends the run before
/// the tool starts.
#[derive(Debug)]
pub struct Gate(std::process::ChildStdin);

impl Gate {
    /// Lets the wrapper run the tool; call it once the run is recorded.
    pub fn go(mut self) -> std::io::Result<()> {
        use std::io::Write;
        self.0.write_all(b"go\n")?;
        self.0.flush()
    }
}

/// One detached tool's files (`<dir>/<name>.status`, `<dir>/<name>.log`), and how much of its
/// log was already forwarded into the agent's log.
#[derive(Debug)]
pub struct Detached {
    pub dir: PathBuf,
    name: &'static str,
    /// Prefix of forwarded log lines (`node-drain: …`, `install.sh: …`).
    label: String,
    /// `None` until known: an adopted run's earlier output was logged by the earlier agent.
    log_offset: Mutex<Option<u64>>,
}

impl Detached {
    pub fn new(dir: &Path, name: &'static str, label: &str) -> Self {
        Self {
            dir: dir.to_owned(),
            name,
            label: label.to_string(),
            log_offset: Mutex::new(None),
        }
    }

    /// node-drain's files.
    pub fn drain(dir: &Path) -> Self {
        Self::new(dir, "drain", "node-drain")
    }

    pub fn status(&self) -> PathBuf {
        self.dir.join(format!("{}.status", self.name))
    }

    pub fn log(&self) -> PathBuf {
        self.dir.join(format!("{}.log", self.name))
    }

    /// Starts `program args…` in `cwd`, detached but held at its gate until [`Gate::go`]; a
    /// status left by an earlier run is removed first (its outcome was read before this is
    /// called).
    pub fn start(
        &self,
        program: &Path,
        args: &[String],
        cwd: Option<&Path>,
    ) -> Result<(TrackedProcess, Gate), TfeError> {
        let io = |path: PathBuf| move |source| TfeError::DetachedFiles { path, source };
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
            .arg(format!("tfe-{}", self.name))
            .arg(self.status())
            .arg(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(log.try_clone().map_err(io(self.log()))?)
            .stderr(log)
            .process_group(0);
        if let Some(dir) = cwd {
            cmd.current_dir(dir);
        }
        for var in SCRUBBED_ENV {
            cmd.env_remove(var);
        }
        let mut child = cmd.spawn().map_err(|source| TfeError::Spawn {
            command: std::iter::once(program.display().to_string())
                .chain(args.iter().cloned())
                .collect::<Vec<_>>()
                .join(" "),
            source,
        })?;
        let process = host::track(child.id() as i32);
        let gate = Gate(child.stdin.take().expect("stdin is piped"));
        // Reap it when it ends (if the agent dies first, init does).
        std::thread::spawn(move || {
            let _ = child.wait();
        });
        *self.log_offset.lock().expect("log offset") = Some(offset);
        Ok((process, gate))
    }

    pub fn state(&self, run: &TrackedProcess) -> DrainState {
        self.forward_log();
        if let Some(code) = self.exit_status() {
            return DrainState::Exited(code);
        }
        if self.never_started() {
            return DrainState::NeverStarted;
        }
        if host::is_alive(run) {
            return DrainState::Running;
        }
        // It may have written its status between the two looks.
        match self.exit_status() {
            Some(code) => DrainState::Exited(code),
            None if self.never_started() => DrainState::NeverStarted,
            None => DrainState::Vanished,
        }
    }

    /// The wrapper ended without its "go": the tool never ran.
    fn never_started(&self) -> bool {
        fs::read_to_string(self.status()).is_ok_and(|s| s.trim() == "never-started")
    }

    pub async fn stop(&self, run: &TrackedProcess) {
        if !host::is_alive(run) {
            return;
        }
        log::warn!("stopping {} (process group {})", self.label, run.pid);
        if !process::stop_group(run).await {
            log::warn!("{} ignored SIGTERM; killed its process group", self.label);
        }
        self.forward_log();
    }

    /// The exit status the wrapper wrote, if the tool ended on its own.
    pub fn exit_status(&self) -> Option<i32> {
        fs::read_to_string(self.status()).ok()?.trim().parse().ok()
    }

    /// Logs the tool's new complete lines as `<label>: …`.
    pub fn forward_log(&self) {
        let mut offset = self.log_offset.lock().expect("log offset");
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
            log::info!("{}: {}", self.label, line.trim_end());
        }
        *offset = Some(start + end as u64 + 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait_for(files: &Detached, drain: &TrackedProcess) -> DrainState {
        for _ in 0..100 {
            match files.state(drain) {
                DrainState::Running => std::thread::sleep(std::time::Duration::from_millis(50)),
                other => return other,
            }
        }
        DrainState::Running
    }

    fn node_drain_args() -> Vec<String> {
        ["admin", "--tty=0", "node-drain"]
            .map(String::from)
            .to_vec()
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
        let files = Detached::drain(&dir.path().join("state"));
        let (drain, gate) = files.start(&tool, &node_drain_args(), None).unwrap();
        gate.go().unwrap();
        assert!(drain.start_ticks > 0);
        assert_eq!(wait_for(&files, &drain), DrainState::Exited(3));
        let log = fs::read_to_string(files.log()).unwrap();
        assert_eq!(log, "args: admin --tty=0 node-drain\n");
        // Another agent (a restart) sees the same outcome from the files alone.
        assert_eq!(
            Detached::drain(&files.dir).state(&drain),
            DrainState::Exited(3)
        );
    }

    #[test]
    fn a_run_whose_gate_is_dropped_never_starts_the_tool() {
        // The agent died between starting the run and recording it: nothing may run unrecorded.
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("ran");
        let tool = fake(dir.path(), &format!("touch {}", marker.display()));
        let files = Detached::drain(dir.path());
        let (run, gate) = files.start(&tool, &node_drain_args(), None).unwrap();
        drop(gate);
        assert_eq!(wait_for(&files, &run), DrainState::NeverStarted);
        assert!(!marker.exists(), "the tool ran without its go");
        assert!(files.exit_status().is_none());
    }

    #[test]
    fn a_killed_drain_vanishes_and_a_foreign_pid_is_not_it() {
        let dir = tempfile::tempdir().unwrap();
        let tool = fake(dir.path(), "sleep 30");
        let files = Detached::drain(dir.path());
        let (drain, gate) = files.start(&tool, &node_drain_args(), None).unwrap();
        gate.go().unwrap();
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
