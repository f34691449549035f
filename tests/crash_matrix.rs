//! The crash matrix (issue 9, proof 2): `kill -9` of the agent alone — systemd's `KillMode=process`
//! spares its children, so install.sh and node-drain keep running — at every phase boundary of boot
//! and of termination, and at seeded random times across a whole lifecycle; then `tfe-node-agent
//! run` again with the same config and state dir (for termination: the same scale-in still in
//! progress), as systemd's `Restart=` would. The end state must equal an uninterrupted run's:
//!
//! - the launch hook resolved exactly once, with CONTINUE (the emulator's resolutions);
//! - install.sh completed at most once (the fake's call log: install.sh runs that reached their end
//!   with exit 0);
//! - node-drain started at most once (the fake's `drain.json`), and the terminate hook resolved once
//!   with CONTINUE;
//! - each hook wait completed exactly once: one `CompleteLifecycleAction` answered 200 per hook;
//! - no partial or temporary file in the state dir or next to the TFE files, which are the same
//!   bytes and modes as the uninterrupted run's;
//! - `state.json` valid JSON every time it is looked at — sampled whenever it changes, while the
//!   agents run — and, at the end, the same record as the uninterrupted run's (except the
//!   terminate hook's outcome after a CompleteLifecycleAction that took effect while its answer
//!   died with the agent: the restarted agent cannot know, and records what it finds; the note
//!   says so, and the emulator's single CONTINUE is checked as always).
//!
//! Boot rows end when the restarted agent is in service and compare with the uninterrupted run at
//! that point; termination rows scale in once the node is in service and end, like the random
//! rows, when the terminate hook is released.
//!
//! A boundary is found from what the agent shows: its stderr milestones, the `STATUS=` it sends to
//! `$NOTIFY_SOCKET` (a socket of the test's own), `state.json`'s fields, and the files that appear
//! (`install.pid`, `install.status`, `drain.status`, the fake tools' own records). The kill goes out
//! right after the boundary appears. A window the agent crosses in microseconds is made to hold by
//! stopping a peer with SIGSTOP first: the agent itself ahead of an external event (install.sh or
//! node-drain ending), or the emulator so that a CompleteLifecycleAction the agent sent is taken
//! only after the agent died (the response lost with it). Each row then checks where the kill
//! really landed; a kill that landed past its window is reported as skipped with the reason, never
//! as passed.
//!
//! Environment: `TFE_CRASH_SEED` replays the random kill times (the seed is always printed; it
//! fixes each time as a fraction of the uninterrupted run's length, measured in the same run, so a
//! replay kills at the same point of the lifecycle give or take the machine's speed),
//! `TFE_CRASH_RANDOM` (default 6) sets how many, `TFE_CRASH_THREADS` (default 3) how many rows run
//! at once, `TFE_CRASH_ONLY` runs only the rows whose names contain one of its `|`-separated parts
//! (`random` for the random points).

mod common;

use common::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};
use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// The fake tools slowed so that every window worth hitting lasts a while: install.sh's progress
/// spreads over 3 s (it starts the daemon about a second in), the app comes up 3 s after the
/// daemon (about a second of readiness polling after install.sh ends), node-drain takes 2 s and
/// `app stop` 1 s.
fn knobs() -> Value {
    json!({
        "install_duration_s": 3.0,
        "system_ready_after_s": 0.3,
        "app_started_after_s": 3.0,
        "drain_duration_s": 2.0,
        "app_stop_duration_s": 1.0,
    })
}

/// Fast termination polls (and, added per node, a `systemctl` that says the system is running,
/// so the SIGTERM that ends each row stops only the agent).
const CONFIG: &str = r#"poll_interval = "1s" => poll_interval = "200ms"
wait_state_timeout = "5m" => wait_state_timeout = "30s""#;

/// Bounds for each wait of a row.
const BOOT: Duration = Duration::from_secs(60);
const TERMINATE: Duration = Duration::from_secs(60);
/// After a kill: how long the orphans of the killed agent get to show themselves (a spawned
/// install.sh logs its start), and a wrapper to write its status file.
const SETTLE: Duration = Duration::from_millis(400);

// ------------------------------------------------------------------------------------ the table

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Part {
    /// Killed during the boot; the row ends when the restarted agent is in service.
    Boot,
    /// Scaled in once in service, killed during the termination; the row ends when the terminate
    /// hook is released.
    Termination,
}

/// Who is held with SIGSTOP before the kill, and from when.
#[derive(Clone, Copy)]
enum Hold {
    /// The agent, so that an external event (a child ending) happens before it can record it.
    Agent(fn(&Obs) -> bool),
    /// The emulator, so that a CompleteLifecycleAction the agent sent is taken only after the
    /// agent died (its response lost with it).
    Emulator(fn(&Obs) -> bool),
}

/// One phase boundary: the kill goes out as soon as `trigger` holds; `missed` says, once the agent
/// is dead, whether the kill landed past the window (and why).
struct Row {
    name: &'static str,
    /// How the boundary is detected.
    detect: &'static str,
    part: Part,
    hold: Option<Hold>,
    trigger: fn(&Obs) -> bool,
    /// How long after the trigger the kill goes out (0: at once).
    delay_ms: u64,
    missed: fn(&Obs) -> Option<String>,
}

fn rows() -> Vec<Row> {
    use Part::*;
    vec![
        Row {
            name: "boot started",
            detect: "state.json phase `booting` (saved before stderr `boot of instance`)",
            part: Boot,
            hold: None,
            trigger: |o| o.state_is("/phase", "booting") || o.line("boot of instance"),
            delay_ms: 0,
            missed: |o| o.line("fetched ").then(|| "the secrets were already fetched".into()),
        },
        Row {
            name: "state.json being replaced",
            detect: "fsutil's temp file `.state.json.tmp-PID` in the state dir (written, not yet renamed)",
            part: Boot,
            hold: None,
            trigger: |o| o.temp_in(STATE, ".state.json.tmp"),
            delay_ms: 0,
            missed: |o| {
                (!o.kill.temp_files.iter().any(|n| n.contains(".state.json.tmp")))
                    .then(|| "the temp file was already renamed".into())
            },
        },
        Row {
            name: "secrets being fetched",
            detect: "STATUS=fetching secrets on $NOTIFY_SOCKET",
            part: Boot,
            hold: None,
            trigger: |o| o.status("fetching secrets"),
            delay_ms: 0,
            missed: |o| {
                o.line("fetched ")
                    .then(|| "the agent had logged `fetched …` already".into())
            },
        },
        Row {
            name: "a TFE file being replaced",
            detect: "fsutil's temp file `.NAME.tmp-PID` beside the TFE files (written, not yet renamed)",
            part: Boot,
            hold: None,
            // The temp file lives for microseconds; the first `wrote …` line as a fallback, so a
            // busy machine that never sees it kills anyway (and the row says it missed its
            // window) rather than wait for nothing (CI once ran the whole boot past it).
            trigger: |o| o.temp_in(ETC, ".tmp") || o.line("wrote "),
            delay_ms: 0,
            missed: |o| {
                (!o.kill.temp_files.iter().any(|n| n.starts_with("etc/")))
                    .then(|| "the temp file was already renamed".into())
            },
        },
        Row {
            name: "files written",
            detect: "stderr `wrote …replicated.conf` (the last file), before install.sh runs",
            part: Boot,
            hold: None,
            trigger: |o| o.line("replicated.conf (mode"),
            delay_ms: 0,
            missed: |o| {
                (o.kill.install_started || o.install_starts() > 0 || o.kill.tool_running("install.sh"))
                    .then(|| "the agent had already spawned install.sh".into())
            },
        },
        Row {
            name: "install.sh started, not recorded",
            detect: "fsutil's temp file `.install.pid.tmp-PID` in the state dir (install.sh spawned, its record not yet renamed into place)",
            part: Boot,
            hold: None,
            // The temp file lives for microseconds; the record as a fallback, so a busy machine
            // that never sees it kills anyway (and the row says it missed its window) rather than
            // wait for nothing.
            trigger: |o| o.temp_in(STATE, ".install.pid.tmp") || o.file(STATE, "install.pid"),
            delay_ms: 0,
            missed: |o| {
                o.file(STATE, "install.pid")
                    .then(|| "install.pid was already in place".into())
            },
        },
        Row {
            name: "install.sh started",
            detect: "`install.pid` in the state dir, or install.sh's start in the fake's call log",
            part: Boot,
            hold: None,
            trigger: |o| o.file(STATE, "install.pid") || o.install_starts() > 0,
            delay_ms: 0,
            missed: |o| {
                o.kill.daemon_started.then(|| {
                    "install.sh had already started the daemon (mid-install)".into()
                })
            },
        },
        Row {
            name: "mid-install",
            detect: "the fake's `daemon.json` (install.sh is past `Starting replicated`)",
            part: Boot,
            hold: None,
            trigger: |o| o.file(FAKE, "daemon.json"),
            delay_ms: 0,
            missed: |o| {
                o.kill
                    .install_completed
                    .then(|| "install.sh had already finished".into())
            },
        },
        Row {
            name: "install.sh finished, not recorded",
            detect: "install.sh's end (exit 0) in the call log, and `install.status` when the agent keeps one; the agent held with SIGSTOP from mid-install",
            part: Boot,
            hold: Some(Hold::Agent(|o| o.file(FAKE, "daemon.json"))),
            trigger: |o| {
                o.install_completions() > 0
                    && (o.file(STATE, "install.status") || !o.file(STATE, "install.log"))
            },
            delay_ms: 0,
            missed: |o| {
                o.state_has("/installed_release")
                    .then(|| "state.json already recorded the install".into())
            },
        },
        Row {
            name: "install recorded",
            detect: "state.json `installed_release` set",
            part: Boot,
            hold: None,
            trigger: |o| o.state_has("/installed_release"),
            delay_ms: 0,
            missed: |o| {
                o.healthy()
                    .then(|| "state.json already recorded TFE healthy".into())
            },
        },
        Row {
            name: "readiness",
            detect: "install recorded and a `replicatedctl` status query in the call log",
            part: Boot,
            hold: None,
            trigger: |o| o.state_has("/installed_release") && o.tool_starts("replicatedctl", "status") > 0,
            delay_ms: 0,
            missed: |o| {
                o.healthy()
                    .then(|| "state.json already recorded TFE healthy".into())
            },
        },
        Row {
            name: "healthy",
            detect: "state.json phase `ready`",
            part: Boot,
            hold: None,
            trigger: |o| o.state_is("/phase", "ready"),
            delay_ms: 0,
            missed: |o| {
                o.kill.launch_resolved.then(|| {
                    "the agent had already sent CompleteLifecycleAction".into()
                })
            },
        },
        Row {
            name: "launch hook released, not recorded",
            detect: "state.json phase `ready`, the emulator held with SIGSTOP from `installed_release`, 300 ms for the agent's CompleteLifecycleAction to be on its way",
            part: Boot,
            hold: Some(Hold::Emulator(|o| o.state_has("/installed_release"))),
            trigger: |o| o.state_is("/phase", "ready"),
            delay_ms: 300,
            missed: |o| {
                (!o.kill.launch_resolved)
                    .then(|| "the agent had not sent CompleteLifecycleAction yet".into())
            },
        },
        Row {
            name: "launch hook released",
            detect: "state.json `launch_hook` = CONTINUE",
            part: Boot,
            hold: None,
            trigger: |o| o.state_is("/launch_hook", "CONTINUE"),
            delay_ms: 0,
            missed: |_| None,
        },
        Row {
            name: "notice recorded",
            detect: "state.json `termination` set",
            part: Termination,
            hold: None,
            trigger: |o| o.state_has("/termination"),
            delay_ms: 0,
            missed: |o| {
                (o.kill.drain_running_tool
                    || o.drain_starts() > 0
                    || o.state_has("/termination/drain/process"))
                .then(|| "the agent had already spawned node-drain".into())
            },
        },
        Row {
            name: "node-drain started, not recorded",
            // Since the drain is recorded before it is logged, nothing outside the agent shows
            // this window (microseconds between the spawn and the record); the row then says it
            // missed its window. The window's guarantee is unit-tested: a run whose gate is
            // dropped never starts the tool (adapters/tfe/detached.rs), and a recorded drain that
            // never ran is started once by the restarted agent (node/terminate/tests.rs).
            detect: "stderr `node-drain started` or the record (the spawn itself is not visible)",
            part: Termination,
            hold: None,
            // The record as a fallback: should the line change, the row still kills (and then
            // says it missed its window) rather than wait for nothing.
            trigger: |o| {
                o.line("node-drain started") || o.state_has("/termination/drain/process")
            },
            delay_ms: 0,
            missed: |o| {
                o.state_has("/termination/drain/process")
                    .then(|| "state.json had already recorded the drain".into())
            },
        },
        Row {
            name: "node-drain recorded",
            detect: "state.json drain state `running`",
            part: Termination,
            hold: None,
            trigger: |o| o.state_is("/termination/drain/state", "running"),
            delay_ms: 0,
            missed: |o| {
                o.kill
                    .drain_status
                    .then(|| "node-drain had already finished".into())
            },
        },
        Row {
            name: "mid-drain",
            detect: "the fake's `drain.json` drains_started ≥ 1 (node-drain is running)",
            part: Termination,
            hold: None,
            trigger: |o| o.drains_started() > 0,
            delay_ms: 0,
            missed: |o| {
                o.kill
                    .drain_status
                    .then(|| "node-drain had already finished".into())
            },
        },
        Row {
            name: "node-drain finished, not recorded",
            detect: "`drain.status` in the state dir; the agent held with SIGSTOP from mid-drain",
            part: Termination,
            hold: Some(Hold::Agent(|o| o.drains_started() > 0)),
            trigger: |o| o.file(STATE, "drain.status"),
            delay_ms: 0,
            missed: |o| {
                o.state_is("/termination/drain/state", "finished")
                    .then(|| "state.json already recorded the drain's end".into())
            },
        },
        Row {
            name: "app stop",
            detect: "`replicatedctl app stop` in the call log",
            part: Termination,
            hold: None,
            trigger: |o| o.tool_starts("replicatedctl", "stop") > 0,
            delay_ms: 0,
            missed: |o| {
                o.state_is_true("/termination/app_stopped")
                    .then(|| "state.json already recorded the app stopped".into())
            },
        },
        Row {
            name: "wait state seen",
            detect: "state.json `wait_state_seen_at` set",
            part: Termination,
            hold: None,
            trigger: |o| o.state_has("/termination/wait_state_seen_at"),
            delay_ms: 0,
            missed: |o| {
                o.kill
                    .terminate_resolved
                    .then(|| "the terminate hook was already released".into())
            },
        },
        Row {
            name: "terminate hook released, not recorded",
            detect: "state.json `app_stopped`, the emulator held with SIGSTOP from `app stop`, 300 ms for the agent's CompleteLifecycleAction to be on its way",
            part: Termination,
            hold: Some(Hold::Emulator(|o| o.tool_starts("replicatedctl", "stop") > 0)),
            trigger: |o| o.state_is_true("/termination/app_stopped"),
            delay_ms: 300,
            missed: |o| {
                (!o.kill.terminate_resolved)
                    .then(|| "the agent had not sent CompleteLifecycleAction yet".into())
            },
        },
        Row {
            name: "terminate hook released",
            detect: "state.json termination `hook` set",
            part: Termination,
            hold: None,
            trigger: |o| o.state_has("/termination/hook"),
            delay_ms: 0,
            missed: |_| None,
        },
    ]
}

/// A kill point: a phase boundary, or a random time (after the agent's first start) across a
/// whole lifecycle, scaling in as soon as the node is in service.
enum Point {
    Boundary(Row),
    Random(Duration),
}

// ------------------------------------------------------------------------------ what is seen

const STATE: &str = "state";
const FAKE: &str = "fake-tfe";
const ETC: &str = "etc";

enum Ev {
    Line(usize, String),
    Notify(String),
    Eof(usize),
}

/// Where things stood at the kill (the fake tools' side is taken at once, since orphans go on)
/// and right after it (the emulator, the orphans).
#[derive(Default, Clone)]
struct AtKill {
    install_started: bool,
    install_completed: bool,
    daemon_started: bool,
    drain_status: bool,
    drain_running_tool: bool,
    launch_resolved: bool,
    terminate_resolved: bool,
    /// Command lines of this node's TFE tool processes alive after the kill.
    tools: Vec<String>,
    /// Temp files (`sub/name`) in the state dir or beside the TFE files at the kill.
    temp_files: Vec<String>,
    /// state.json as the killed agent left it.
    state: Option<Value>,
}

impl AtKill {
    fn tool_running(&self, word: &str) -> bool {
        self.tools.iter().any(|t| t.contains(word))
    }
}

/// Everything a row saw, from the agents' stderr, their notifications and the files.
struct Obs {
    dir: PathBuf,
    lines: Vec<(usize, String)>,
    statuses: Vec<String>,
    eof: [bool; 2],
    /// The last state.json that parsed; every read counts as a sample.
    state: Option<Value>,
    state_sig: Option<Sig>,
    state_samples: usize,
    state_invalid: Vec<String>,
    calls: Vec<Value>,
    calls_offset: u64,
    drain_json: Option<Value>,
    drain_sig: Option<Sig>,
    kill: AtKill,
}

impl Obs {
    fn new(dir: &Path) -> Self {
        Obs {
            dir: dir.to_owned(),
            lines: Vec::new(),
            statuses: Vec::new(),
            eof: [false; 2],
            state: None,
            state_sig: None,
            state_samples: 0,
            state_invalid: Vec::new(),
            calls: Vec::new(),
            calls_offset: 0,
            drain_json: None,
            drain_sig: None,
            kill: AtKill::default(),
        }
    }

    fn take(&mut self, ev: Ev) {
        match ev {
            Ev::Line(i, l) => self.lines.push((i, l)),
            Ev::Notify(s) => self.statuses.push(s),
            Ev::Eof(i) => self.eof[i] = true,
        }
    }

    fn path(&self, sub: &str, name: &str) -> PathBuf {
        self.dir.join(sub).join(name)
    }

    fn file(&self, sub: &str, name: &str) -> bool {
        self.path(sub, name).exists()
    }

    /// A file whose name contains `part` in `sub` (a temp file of an atomic write).
    fn temp_in(&self, sub: &str, part: &str) -> bool {
        std::fs::read_dir(self.dir.join(sub)).is_ok_and(|d| {
            d.flatten()
                .any(|e| e.file_name().to_string_lossy().contains(part))
        })
    }

    /// Re-reads what changed: state.json (each read is a sample that must parse), the fake's
    /// call log (complete lines only) and drain.json.
    fn poll(&mut self) {
        let path = self.path(STATE, "state.json");
        if let Some((sig, bytes)) = read_if_changed(&path, self.state_sig) {
            self.state_sig = Some(sig);
            self.state_samples += 1;
            match serde_json::from_slice::<Value>(&bytes) {
                Ok(v) => self.state = Some(v),
                Err(e) => self.state_invalid.push(format!(
                    "{e} in {:?}",
                    String::from_utf8_lossy(&bytes[..bytes.len().min(160)])
                )),
            }
        }
        let path = self.path(FAKE, "drain.json");
        if let Some((sig, bytes)) = read_if_changed(&path, self.drain_sig) {
            self.drain_sig = Some(sig);
            self.drain_json = serde_json::from_slice(&bytes).ok();
        }
        if let Ok(mut f) = std::fs::File::open(self.path(FAKE, "calls.jsonl")) {
            let len = f.metadata().map_or(0, |m| m.len());
            if len > self.calls_offset && f.seek(SeekFrom::Start(self.calls_offset)).is_ok() {
                let mut new = Vec::new();
                if f.read_to_end(&mut new).is_ok() {
                    if let Some(end) = new.iter().rposition(|b| *b == b'\n') {
                        for line in new[..end].split(|b| *b == b'\n') {
                            if let Ok(v) = serde_json::from_slice(line) {
                                self.calls.push(v);
                            }
                        }
                        self.calls_offset += end as u64 + 1;
                    }
                }
            }
        }
    }

    fn line(&self, needle: &str) -> bool {
        self.lines.iter().any(|(_, l)| l.contains(needle))
    }

    fn line_of(&self, agent: usize, needle: &str) -> bool {
        self.lines
            .iter()
            .any(|(i, l)| *i == agent && l.contains(needle))
    }

    fn status(&self, needle: &str) -> bool {
        self.statuses.iter().any(|s| s.contains(needle))
    }

    fn st(&self, pointer: &str) -> Option<&Value> {
        self.state.as_ref()?.pointer(pointer)
    }

    fn state_has(&self, pointer: &str) -> bool {
        self.st(pointer).is_some_and(|v| !v.is_null())
    }

    fn state_is(&self, pointer: &str, want: &str) -> bool {
        self.st(pointer).and_then(Value::as_str) == Some(want)
    }

    fn state_is_true(&self, pointer: &str) -> bool {
        self.st(pointer).and_then(Value::as_bool) == Some(true)
    }

    /// TFE healthy was recorded (phase ready, or anything later in the boot).
    fn healthy(&self) -> bool {
        self.state_is("/phase", "ready") || self.state_has("/launch_hook")
    }

    /// The killed agent's CompleteLifecycleAction for the terminate hook took effect, but it died
    /// before recording it.
    fn terminate_response_lost(&self) -> bool {
        self.kill.terminate_resolved
            && self
                .kill
                .state
                .as_ref()
                .and_then(|s| s.pointer("/termination/hook"))
                .is_none_or(Value::is_null)
    }

    fn in_service(&self) -> bool {
        self.state_is("/phase", "in-service") && self.state_has("/launch_hook")
    }

    fn terminated(&self) -> bool {
        self.state_is("/phase", "drained") && self.state_has("/termination/hook")
    }

    fn calls_of(&self, tool: &str, event: &str) -> impl Iterator<Item = &Value> {
        let (tool, event) = (tool.to_string(), event.to_string());
        self.calls
            .iter()
            .filter(move |c| c["tool"] == tool.as_str() && c["event"] == event.as_str())
    }

    fn install_starts(&self) -> usize {
        self.calls_of("install.sh", "start").count()
    }

    /// install.sh runs that reached their end with exit 0.
    fn install_completions(&self) -> usize {
        self.calls_of("install.sh", "end")
            .filter(|c| c["exit_code"] == 0)
            .count()
    }

    fn tool_starts(&self, tool: &str, word: &str) -> usize {
        self.calls_of(tool, "start")
            .filter(|c| {
                c["argv"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|w| w == word))
            })
            .count()
    }

    fn drain_starts(&self) -> usize {
        self.tool_starts("replicated", "node-drain")
    }

    fn drains_started(&self) -> u64 {
        self.drain_json
            .as_ref()
            .and_then(|d| d["drains_started"].as_u64())
            .unwrap_or(0)
    }

    /// The furthest milestone reached, for the report.
    fn landing(&self) -> String {
        let k = &self.kill;
        let reached: [(&str, bool); 17] = [
            (
                "boot started",
                self.state_has("/phase") || self.line("boot of instance"),
            ),
            ("secrets fetched", self.line("fetched ")),
            ("files written", self.line("replicated.conf (mode")),
            // A spawned install.sh shows itself after the settle (its start line, its process).
            (
                "install.sh started",
                k.install_started || self.install_starts() > 0 || k.tool_running("install.sh"),
            ),
            ("install.sh mid-way", k.daemon_started),
            ("install.sh finished", k.install_completed),
            ("install recorded", self.state_has("/installed_release")),
            ("healthy recorded", self.healthy()),
            ("launch hook released", k.launch_resolved),
            ("launch release recorded", self.state_has("/launch_hook")),
            ("termination recorded", self.state_has("/termination")),
            (
                "node-drain started",
                self.line("node-drain started") || k.drain_running_tool || self.drain_starts() > 0,
            ),
            (
                "node-drain recorded",
                self.state_has("/termination/drain/process"),
            ),
            ("node-drain finished", k.drain_status),
            (
                "app stopped recorded",
                self.state_is_true("/termination/app_stopped"),
            ),
            ("terminate hook released", k.terminate_resolved),
            (
                "terminate release recorded",
                self.state_has("/termination/hook"),
            ),
        ];
        let last = reached.iter().rposition(|(_, r)| *r);
        match last {
            None => "before the boot started".into(),
            Some(i) if i + 1 == reached.len() => format!("after {}", reached[i].0),
            Some(i) => format!("after {}, before {}", reached[i].0, reached[i + 1].0),
        }
    }

    fn tail(&self) -> String {
        let from = self.lines.len().saturating_sub(12);
        self.lines[from..]
            .iter()
            .map(|(i, l)| format!("  [agent {i}] {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

type Sig = (u64, i64, i64, u64);

fn read_if_changed(path: &Path, old: Option<Sig>) -> Option<(Sig, Vec<u8>)> {
    let meta = std::fs::metadata(path).ok()?;
    let sig = (meta.ino(), meta.mtime(), meta.mtime_nsec(), meta.len());
    if Some(sig) == old {
        return None;
    }
    std::fs::read(path).ok().map(|bytes| (sig, bytes))
}

// ------------------------------------------------------------------------------ one node's run

/// A running `tfe-node-agent run`; killed when dropped.
struct AgentProc {
    child: Child,
}

impl AgentProc {
    fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        let _ = kill(self.pid(), Signal::SIGCONT);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends SIGCONT to a stopped peer when dropped, whatever happened meanwhile.
struct Stopped(Pid);

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = kill(self.0, Signal::SIGCONT);
    }
}

/// A node, its agent(s), and everything seen of them.
struct Harness {
    node: Node,
    tx: Sender<Ev>,
    rx: Receiver<Ev>,
    obs: Obs,
    sock: PathBuf,
    stop: Arc<AtomicBool>,
    agents: usize,
    /// Scale in as soon as the node is in service (once).
    auto_scale_in: bool,
    scaled_in: bool,
    started: Instant,
}

impl Harness {
    fn new() -> Self {
        let node = Node::with(Hooks::default(), shared_secret());
        node.set_behaviour(knobs());
        let systemctl = node.path("systemctl");
        std::fs::write(&systemctl, "#!/bin/sh\necho running\n").unwrap();
        std::fs::set_permissions(&systemctl, std::fs::Permissions::from_mode(0o755)).unwrap();
        node.write_config(&format!(
            "{CONFIG}\n# systemctl = \"/usr/bin/systemctl\" => systemctl = \"{}\" #",
            systemctl.display()
        ));
        let (tx, rx) = mpsc::channel();
        let sock = node.path("notify.sock");
        let socket = UnixDatagram::bind(&sock).expect("bind the notify socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        {
            let (tx, stop) = (tx.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(n) = socket.recv(&mut buf) {
                        for part in String::from_utf8_lossy(&buf[..n]).lines() {
                            if tx.send(Ev::Notify(part.to_string())).is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
        let obs = Obs::new(node.dir.path());
        Harness {
            node,
            tx,
            rx,
            obs,
            sock,
            stop,
            agents: 0,
            auto_scale_in: false,
            scaled_in: false,
            started: Instant::now(),
        }
    }

    /// `tfe-node-agent run`, as systemd starts it (with our notify socket).
    fn start_agent(&mut self) -> AgentProc {
        let index = self.agents;
        self.agents += 1;
        let mut cmd = self.node.agent(&["run"]);
        cmd.env("NOTIFY_SOCKET", &self.sock).stdout(Stdio::null());
        let mut child = cmd.spawn().expect("spawn the agent");
        let err = child.stderr.take().unwrap();
        let tx = self.tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                if tx.send(Ev::Line(index, line)).is_err() {
                    return;
                }
            }
            let _ = tx.send(Ev::Eof(index));
        });
        if index == 0 {
            self.started = Instant::now();
        }
        AgentProc { child }
    }

    /// One look: every event so far (waiting at most 1 ms for the first), then the files.
    fn pump(&mut self) {
        if let Ok(ev) = self.rx.recv_timeout(Duration::from_millis(1)) {
            self.obs.take(ev);
        }
        while let Ok(ev) = self.rx.try_recv() {
            self.obs.take(ev);
        }
        self.obs.poll();
        if self.auto_scale_in && !self.scaled_in && self.obs.in_service() {
            self.scaled_in = true;
            self.node.scale_in(0.0);
        }
    }

    fn until(
        &mut self,
        what: &str,
        timeout: Duration,
        mut done: impl FnMut(&Obs) -> bool,
    ) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            self.pump();
            if done(&self.obs) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{what}: not seen within {timeout:?}; last lines:\n{}",
                    self.obs.tail()
                ));
            }
        }
    }

    /// SIGKILL, then what the fake tools show at once; then (after the agent is reaped and its
    /// stderr is read to the end) the emulator and the orphans.
    fn kill_agent(&mut self, agent: &mut AgentProc, index: usize, resume: Option<Stopped>) {
        kill(agent.pid(), Signal::SIGKILL).expect("SIGKILL the agent");
        let _ = agent.child.wait();
        self.obs.poll();
        self.obs.kill = AtKill {
            install_started: self.obs.install_starts() > 0 || self.obs.file(STATE, "install.pid"),
            temp_files: temp_files(&self.node),
            install_completed: self.obs.install_completions() > 0,
            daemon_started: self.obs.file(FAKE, "daemon.json"),
            drain_status: self.obs.file(STATE, "drain.status"),
            ..AtKill::default()
        };
        drop(resume);
        self.obs.kill.state = self.obs.state.clone();
        let _ = self.until("the killed agent's stderr", Duration::from_secs(5), |o| {
            o.eof[index]
        });
        std::thread::sleep(SETTLE);
        self.pump();
        let hooks: Vec<String> = self
            .node
            .emulator
            .resolutions()
            .into_iter()
            .map(|(h, _, _)| h)
            .collect();
        self.obs.kill.launch_resolved = hooks.iter().any(|h| h == "tfe-launch");
        self.obs.kill.terminate_resolved = hooks.iter().any(|h| h == "tfe-terminate");
        self.obs.kill.tools = node_tools(&self.node);
        self.obs.kill.drain_running_tool = self.obs.kill.tool_running("node-drain");
    }

    /// SIGTERM (the system is running: only the agent stops) and its exit code.
    fn stop_agent(&mut self, agent: &mut AgentProc) -> Result<Option<i32>, String> {
        kill(agent.pid(), Signal::SIGTERM).map_err(|e| e.to_string())?;
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            self.pump();
            if let Some(status) = agent.child.try_wait().map_err(|e| e.to_string())? {
                return Ok(status.code());
            }
            if Instant::now() >= deadline {
                return Err("the agent did not stop within 15 s of SIGTERM".into());
            }
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Orphans of killed agents (an install.sh, a node-drain) started for this node only.
        for (pid, _) in node_processes(&self.node) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

/// This node's TFE tool processes (their environment names this node's fake state dir), not the
/// agents themselves.
fn node_processes(node: &Node) -> Vec<(i32, String)> {
    let needle = format!("FAKE_TFE_STATE={}", node.fake_state().display());
    let mut found = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in dir.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        if !environ.split(|b| *b == 0).any(|kv| kv == needle.as_bytes()) {
            continue;
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let zombie = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z');
        if !zombie && !cmdline.contains("tfe-node-agent") {
            found.push((pid, cmdline));
        }
    }
    found
}

fn node_tools(node: &Node) -> Vec<String> {
    node_processes(node).into_iter().map(|(_, c)| c).collect()
}

// ------------------------------------------------------------------------- the uninterrupted run

/// What an uninterrupted run ends with.
#[derive(Clone)]
struct Baseline {
    in_service_after: Duration,
    full_lifecycle: Duration,
    boot_record: Value,
    final_record: Value,
    launch_hook: Value,
    files: BTreeMap<String, (u32, String)>,
}

/// The parts of state.json that describe the outcome (no times, pids or boot ids).
fn record(state: &Value) -> Value {
    let t = &state["termination"];
    json!({
        "phase": state["phase"],
        "installed_release": state["installed_release"],
        "restart_app": state.get("restart_app").cloned().unwrap_or(json!(false)),
        "termination": if t.is_null() { Value::Null } else { json!({
            "source": t["source"],
            "drain": t["drain"]["state"],
            "drain_outcome": t["drain"]["outcome"],
            "app_stopped": t["app_stopped"],
            "wait_state_seen": !t["wait_state_seen_at"].is_null(),
            "hook": t["hook"],
        })},
    })
}

/// The TFE files (name → mode, content with this node's directory replaced).
fn tfe_files(node: &Node) -> BTreeMap<String, (u32, String)> {
    let root = node.dir.path().display().to_string();
    let mut files = BTreeMap::new();
    if let Ok(dir) = std::fs::read_dir(node.path(ETC)) {
        // Temp files are reported by `temp_files`; these are the files themselves.
        for e in dir
            .flatten()
            .filter(|e| !e.file_name().to_string_lossy().contains(".tmp"))
        {
            let path = e.path();
            let text = String::from_utf8_lossy(&std::fs::read(&path).unwrap_or_default())
                .replace(&root, "<node>");
            files.insert(
                e.file_name().to_string_lossy().into_owned(),
                (mode_of(&path), text),
            );
        }
    }
    files
}

fn baseline() -> Result<Baseline, String> {
    let mut h = Harness::new();
    let mut agent = h.start_agent();
    h.until("in service", BOOT, |o| o.in_service())?;
    let in_service_after = h.started.elapsed();
    let boot_record = record(h.obs.state.as_ref().unwrap());
    let launch_hook = h.obs.st("/launch_hook").cloned().unwrap_or(Value::Null);
    h.node.scale_in(0.0);
    h.until("terminate hook released", TERMINATE, |o| o.terminated())?;
    let full_lifecycle = h.started.elapsed();
    let code = h.stop_agent(&mut agent)?;
    let base = Baseline {
        in_service_after,
        full_lifecycle,
        boot_record,
        final_record: record(h.obs.state.as_ref().unwrap()),
        launch_hook,
        files: tfe_files(&h.node),
    };
    // The control must meet every check itself.
    let failures = check(&h, Part::Termination, &base, code);
    if !failures.is_empty() {
        return Err(format!(
            "the uninterrupted run fails the checks:\n  {}",
            failures.join("\n  ")
        ));
    }
    Ok(base)
}

// ---------------------------------------------------------------------------------- the checks

fn check(h: &Harness, part: Part, base: &Baseline, exit: Option<i32>) -> Vec<String> {
    let mut f = Vec::new();
    let o = &h.obs;
    let mut expect = |ok: bool, what: String| {
        if !ok {
            f.push(what);
        }
    };
    let resolutions = h.node.emulator.resolutions();
    let of = |hook: &str| -> Vec<String> {
        resolutions
            .iter()
            .filter(|(h, _, _)| h == hook)
            .map(|(_, r, c)| format!("{r} ({c})"))
            .collect()
    };
    let launch = of("tfe-launch");
    expect(
        launch == ["CONTINUE (complete)"],
        format!("launch hook resolutions {launch:?}; expected exactly one CONTINUE (complete)"),
    );
    let completes: BTreeMap<String, usize> = h
        .node
        .emulator
        .events("api")
        .iter()
        .filter(|e| e["action"] == "CompleteLifecycleAction" && e["status"] == 200)
        .fold(BTreeMap::new(), |mut m, e| {
            let hook = e["params"]["LifecycleHookName"].as_str().unwrap_or("?");
            *m.entry(hook.to_string()).or_default() += 1;
            m
        });
    let want: BTreeMap<String, usize> = match part {
        Part::Boot => [("tfe-launch".to_string(), 1)].into(),
        Part::Termination => [
            ("tfe-launch".to_string(), 1),
            ("tfe-terminate".to_string(), 1),
        ]
        .into(),
    };
    expect(
        completes == want,
        format!("CompleteLifecycleAction answered 200: {completes:?}; expected {want:?} (each hook wait completed exactly once)"),
    );
    let installs = o.install_completions();
    expect(
        installs == 1,
        format!(
            "install.sh completed {installs} times (calls.jsonl end lines with exit 0; {} started); expected at most once, and once for a node in service",
            o.install_starts()
        ),
    );
    let drains = o.drains_started();
    match part {
        Part::Boot => expect(
            drains == 0,
            format!("node-drain started {drains} times during a boot; expected none"),
        ),
        Part::Termination => {
            let completed = o
                .drain_json
                .as_ref()
                .map_or(json!(null), |d| d["drains_completed"].clone());
            expect(
                drains == 1 && completed == 1,
                format!("node-drain started {drains} times, completed {completed}; expected started at most once, and once for an installed node (drain.json)"),
            );
            let terminate = of("tfe-terminate");
            expect(
                terminate == ["CONTINUE (complete)"],
                format!("terminate hook resolutions {terminate:?}; expected exactly one CONTINUE (complete)"),
            );
        }
    }
    expect(
        o.state_invalid.is_empty(),
        format!(
            "state.json was not valid JSON in {} of {} samples: {:?}",
            o.state_invalid.len(),
            o.state_samples,
            o.state_invalid
        ),
    );
    let leftovers = temp_files(&h.node);
    expect(
        leftovers.is_empty(),
        format!("temporary or partial files remain: {leftovers:?}; expected none"),
    );
    let mut final_record = o.state.as_ref().map(record).unwrap_or(Value::Null);
    if o.terminate_response_lost() {
        // The killed agent's CompleteLifecycleAction took effect, its answer died with it: the
        // restarted agent finds the action gone and records what it sees (checked above: the
        // emulator resolved the hook once, with CONTINUE). The rest of the record must match.
        if let Some(hook) = final_record.pointer_mut("/termination/hook") {
            *hook = base.final_record["termination"]["hook"].clone();
        }
    }
    let want_record = match part {
        Part::Boot => &base.boot_record,
        Part::Termination => &base.final_record,
    };
    expect(
        &final_record == want_record,
        format!("state.json ends as {final_record}; the uninterrupted run's: {want_record}"),
    );
    let files = tfe_files(&h.node);
    expect(
        files == base.files,
        format!(
            "TFE files {:?} differ from the uninterrupted run's {:?} (names, modes or bytes)",
            files
                .iter()
                .map(|(n, (m, t))| format!("{n} {m:o} {} bytes", t.len()))
                .collect::<Vec<_>>(),
            base.files
                .iter()
                .map(|(n, (m, t))| format!("{n} {m:o} {} bytes", t.len()))
                .collect::<Vec<_>>()
        ),
    );
    expect(
        exit == Some(0),
        format!("the restarted agent exited with {exit:?} on SIGTERM; expected 0"),
    );
    let text: String = o
        .lines
        .iter()
        .map(|(_, l)| l.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    expect(
        !SHARED_SECRET_VALUES.iter().any(|s| text.contains(s)),
        "a secret value appeared in the agents' output".into(),
    );
    f
}

/// Files named like a temp file (fsutil's `.NAME.tmp-PID`, a wrapper's `NAME.tmp`) in the state
/// dir or beside the TFE files, and files there that are empty or do not parse when they should.
fn temp_files(node: &Node) -> Vec<String> {
    let mut found = Vec::new();
    for sub in [STATE, ETC] {
        let Ok(dir) = std::fs::read_dir(node.path(sub)) else {
            continue;
        };
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let path = e.path();
            let bytes = std::fs::read(&path).unwrap_or_default();
            let partial = match name.as_str() {
                n if n.ends_with(".json") || n.ends_with(".pid") || n == "replicated.conf" => {
                    serde_json::from_slice::<Value>(&bytes).is_err()
                }
                n if n.ends_with(".status") => String::from_utf8_lossy(&bytes)
                    .trim()
                    .parse::<i32>()
                    .is_err(),
                n if n.ends_with(".log") || n.ends_with(".sock") => false,
                _ => bytes.is_empty(),
            };
            if name.contains(".tmp") || partial {
                found.push(format!("{sub}/{name}"));
            }
        }
    }
    found
}

// ---------------------------------------------------------------------------------- one row

enum Verdict {
    Passed,
    Skipped(String),
    Failed(Vec<String>),
}

struct Report {
    name: String,
    /// Where the kill landed past its window, if it did.
    missed: Option<String>,
    state_samples: usize,
    detect: String,
    verdict: Verdict,
    landing: String,
    killed_after: Option<Duration>,
    notes: Vec<String>,
    took: Duration,
}

fn run_point(point: &Point, base: &BaselineCell) -> Report {
    let began = Instant::now();
    let (name, detect) = match point {
        Point::Boundary(r) => (r.name.to_string(), r.detect.to_string()),
        Point::Random(t) => (
            format!("random {:.2}s", t.as_secs_f64()),
            format!("{:.2} s after the agent's first start", t.as_secs_f64()),
        ),
    };
    let mut report = Report {
        name,
        missed: None,
        state_samples: 0,
        detect,
        verdict: Verdict::Passed,
        landing: String::new(),
        killed_after: None,
        notes: Vec::new(),
        took: Duration::ZERO,
    };
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        run_point_inner(point, base, &mut report)
    }));
    report.verdict = match outcome {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => Verdict::Failed(vec![e]),
        Err(panic) => Verdict::Failed(vec![format!(
            "panicked: {}",
            panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default()
        )]),
    };
    report.took = began.elapsed();
    report
}

fn run_point_inner(
    point: &Point,
    base: &BaselineCell,
    report: &mut Report,
) -> Result<Verdict, String> {
    let part = match point {
        Point::Boundary(row) => row.part,
        Point::Random(_) => Part::Termination,
    };
    let mut h = Harness::new();
    h.auto_scale_in = part == Part::Termination;
    let mut first = h.start_agent();

    // Up to the kill.
    let mut held = None;
    match point {
        Point::Boundary(row) => {
            if let Some(hold) = row.hold {
                let (when, pid) = match hold {
                    Hold::Agent(when) => (when, first.pid()),
                    Hold::Emulator(when) => (when, Pid::from_raw(h.node.emulator.pid())),
                };
                h.until("the moment to hold a peer", BOOT + TERMINATE, when)?;
                kill(pid, Signal::SIGSTOP).map_err(|e| e.to_string())?;
                held = Some((hold, Stopped(pid)));
            }
            h.until(
                &format!("kill point `{}`", row.name),
                BOOT + TERMINATE,
                row.trigger,
            )?;
            if row.delay_ms > 0 {
                // Time for the agent to send what the held emulator will take after the kill.
                let delay = Duration::from_millis(row.delay_ms);
                let t0 = Instant::now();
                h.until("the delay", delay * 2, |_| t0.elapsed() >= delay)?;
            }
        }
        Point::Random(t) => {
            let t = *t;
            let started = h.started;
            h.until("the random kill time", t + Duration::from_secs(5), |_| {
                started.elapsed() >= t
            })?;
        }
    }
    report.killed_after = Some(h.started.elapsed());
    let resume = match held {
        Some((Hold::Emulator(_), stopped)) => Some(stopped),
        Some((Hold::Agent(_), stopped)) => {
            // SIGKILL ends a stopped process too; nothing to resume.
            std::mem::forget(stopped);
            None
        }
        None => None,
    };
    h.kill_agent(&mut first, 0, resume);
    drop(first);
    report.landing = h.obs.landing();
    let missed = match point {
        Point::Boundary(row) => (row.missed)(&h.obs),
        Point::Random(_) => None,
    };

    // The restart, to the end of the part.
    let statuses_before = h.obs.statuses.len();
    let mut second = h.start_agent();
    // READY=1 from the restarted agent: it is up (its signal handling too) and past its boot.
    let ready = move |o: &Obs| o.statuses[statuses_before..].iter().any(|s| s == "READY=1");
    match part {
        Part::Boot => h.until("the restarted agent in service", BOOT, |o| {
            o.in_service() && o.line_of(1, "is in service") && ready(o)
        })?,
        Part::Termination => h.until("the terminate hook released", BOOT + TERMINATE, |o| {
            o.terminated() && ready(o)
        })?,
    }
    let code = h.stop_agent(&mut second)?;
    let base = base.wait()?;
    let failures = check(&h, part, &base, code);
    if h.obs.terminate_response_lost() {
        report.notes.push(format!(
            "terminate hook released by the killed agent, its response lost; the restarted agent recorded {}",
            h.obs.st("/termination/hook").cloned().unwrap_or(Value::Null)
        ));
    }
    if h.obs.st("/launch_hook") != Some(&base.launch_hook) {
        report.notes.push(format!(
            "state.json launch_hook is {}, the uninterrupted run's {}",
            h.obs.st("/launch_hook").cloned().unwrap_or(Value::Null),
            base.launch_hook
        ));
    }
    report.state_samples = h.obs.state_samples;
    report.notes.push(format!(
        "{} state.json samples, all valid: {}; install.sh started {}×",
        h.obs.state_samples,
        h.obs.state_invalid.is_empty(),
        h.obs.install_starts()
    ));
    report.missed = missed.clone();
    Ok(match (failures.is_empty(), missed) {
        (false, _) => Verdict::Failed(failures),
        (true, Some(why)) => Verdict::Skipped(why),
        (true, None) => Verdict::Passed,
    })
}

// ------------------------------------------------------------------------------ the baseline cell

/// The uninterrupted run's result, awaited by the rows that compare with it.
#[derive(Default)]
struct BaselineCell {
    value: Mutex<Option<Result<Baseline, String>>>,
    ready: Condvar,
}

impl BaselineCell {
    fn set(&self, v: Result<Baseline, String>) {
        *self.value.lock().unwrap() = Some(v);
        self.ready.notify_all();
    }

    fn wait(&self) -> Result<Baseline, String> {
        let guard = self.value.lock().unwrap();
        let (guard, _) = self
            .ready
            .wait_timeout_while(guard, Duration::from_secs(240), |v| v.is_none())
            .unwrap();
        match guard.as_ref() {
            Some(Ok(b)) => Ok(b.clone()),
            Some(Err(e)) => Err(format!("no baseline: {e}")),
            None => Err("the uninterrupted run did not finish in time".into()),
        }
    }
}

// ------------------------------------------------------------------------------ seeded randomness

/// splitmix64: a few lines, and the same sequence for the same seed everywhere.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Straight to stderr, past the test harness's capture: the seed and the figures belong in every
/// run's log (the README's test command runs without --nocapture), not only in a failure's.
fn say(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.trim()
                .parse()
                .unwrap_or_else(|_| panic!("{name}={v:?} is not a number"))
        })
        .unwrap_or(default)
}

// ---------------------------------------------------------------------------------- the test

#[test]
fn kill_9_at_every_phase_boundary_and_at_random_times_leaves_the_same_end_state_as_an_uninterrupted_run(
) {
    let began = Instant::now();
    let seed = match std::env::var("TFE_CRASH_SEED") {
        Ok(v) => v.trim().parse::<u64>().expect("TFE_CRASH_SEED is a number"),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    };
    let only: Vec<String> = std::env::var("TFE_CRASH_ONLY")
        .map(|v| v.split('|').map(|s| s.trim().to_string()).collect())
        .unwrap_or_default();
    let randoms = if only.is_empty() || only.iter().any(|o| o == "random") {
        env_number("TFE_CRASH_RANDOM", 6) as usize
    } else {
        0
    };
    let threads = env_number("TFE_CRASH_THREADS", 3).max(1) as usize;
    say(&format!("crash matrix: seed {seed} (replay with TFE_CRASH_SEED={seed}), {randoms} random kill points, {threads} rows at a time"));

    eprintln!(
        "\nkill points (phase boundaries):\n| part | name | how it is detected |\n|---|---|---|"
    );
    let mut points: VecDeque<Point> = VecDeque::new();
    for row in rows() {
        eprintln!("| {:?} | {} | {} |", row.part, row.name, row.detect);
        if only.is_empty() || only.iter().any(|o| row.name.contains(o.as_str())) {
            points.push_back(Point::Boundary(row));
        }
    }
    eprintln!();

    let base = Arc::new(BaselineCell::default());
    // The random times need the lifecycle's length: they are drawn once the baseline is known,
    // by the worker that runs the baseline, and queued behind the boundaries.
    let queue = Arc::new(Mutex::new(points));
    let reports = Arc::new(Mutex::new(Vec::<Report>::new()));
    let pending_randoms = Arc::new(Mutex::new(randoms));
    let baseline_taken = Arc::new(AtomicBool::new(false));

    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (queue, reports, base, pending, taken) = (
                queue.clone(),
                reports.clone(),
                base.clone(),
                pending_randoms.clone(),
                baseline_taken.clone(),
            );
            std::thread::spawn(move || {
                if !taken.swap(true, Ordering::SeqCst) {
                    let t = Instant::now();
                    let b = baseline();
                    match &b {
                        Ok(b) => eprintln!(
                            "uninterrupted run: in service after {:.1} s, terminate hook released after {:.1} s (took {:.1} s)",
                            b.in_service_after.as_secs_f64(),
                            b.full_lifecycle.as_secs_f64(),
                            t.elapsed().as_secs_f64()
                        ),
                        Err(e) => eprintln!("uninterrupted run FAILED: {e}"),
                    }
                    if let Ok(b) = &b {
                        let mut rng = SplitMix(seed);
                        let n = std::mem::take(&mut *pending.lock().unwrap());
                        let mut q = queue.lock().unwrap();
                        for _ in 0..n {
                            let at = b.full_lifecycle.mul_f64(rng.unit());
                            q.push_back(Point::Random(at));
                        }
                    }
                    base.set(b);
                }
                loop {
                    let Some(point) = queue.lock().unwrap().pop_front() else {
                        break;
                    };
                    let r = run_point(&point, &base);
                    eprintln!(
                        "{:<8} {:<38} killed at {:>5} — {}{} ({:.1} s)",
                        match &r.verdict {
                            Verdict::Passed => "passed",
                            Verdict::Skipped(_) => "SKIPPED",
                            Verdict::Failed(_) => "FAILED",
                        },
                        r.name,
                        r.killed_after
                            .map_or("-".into(), |d| format!("{:.2}s", d.as_secs_f64())),
                        r.landing,
                        match &r.missed {
                            Some(why) => format!("; missed its window: {why}"),
                            None => String::new(),
                        },
                        r.took.as_secs_f64()
                    );
                    reports.lock().unwrap().push(r);
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("worker");
    }
    let baseline_error = base.wait().err();
    let reports = std::mem::take(&mut *reports.lock().unwrap());
    let passed = reports
        .iter()
        .filter(|r| matches!(r.verdict, Verdict::Passed))
        .count();
    let skipped: Vec<_> = reports
        .iter()
        .filter_map(|r| match &r.verdict {
            Verdict::Skipped(why) => Some(format!("{} (killed {}): {why}", r.name, r.landing)),
            _ => None,
        })
        .collect();
    let failed: Vec<_> = reports
        .iter()
        .filter_map(|r| match &r.verdict {
            Verdict::Failed(why) => Some(format!(
                "{} [{}] (killed {}, {}{}):\n    - {}\n    notes: {}",
                r.name,
                r.detect,
                r.killed_after
                    .map_or("-".into(), |d| format!("{:.2}s", d.as_secs_f64())),
                r.landing,
                r.missed
                    .as_ref()
                    .map_or(String::new(), |m| format!("; past its window: {m}")),
                why.join("\n    - "),
                r.notes.join("; ")
            )),
            _ => None,
        })
        .collect();
    for r in &reports {
        for n in r.notes.iter().filter(|n| !n.contains("samples")) {
            eprintln!("note: {}: {n}", r.name);
        }
    }
    say(&format!(
        "crash matrix: {} kill points, {passed} passed, {} skipped (missed their window), {} failed; seed {seed}; {:.0} s",
        reports.len(),
        skipped.len(),
        failed.len(),
        began.elapsed().as_secs_f64()
    ));
    eprintln!(
        "state.json: {} samples across the rows, each read whenever it changed",
        reports.iter().map(|r| r.state_samples).sum::<usize>()
    );
    for s in &skipped {
        eprintln!("skipped: {s}");
    }
    assert!(
        baseline_error.is_none(),
        "{}",
        baseline_error.unwrap_or_default()
    );
    assert!(
        failed.is_empty(),
        "{} of {} kill points failed (seed {seed}):\n{}",
        failed.len(),
        reports.len(),
        failed.join("\n")
    );
}
