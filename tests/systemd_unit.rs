//! `systemd/tfe-node-agent.service`, checked by the real `systemd-analyze verify` and read for the
//! properties the agent relies on.
//!
//! What `systemd-analyze verify` does and does not tell (systemd 252, Debian 12):
//! - a bad value or an unknown key is a warning on stderr (`<file>:<line>: Failed to parse ...`,
//!   `Unknown key ...`) and the exit status stays 0, so the check here is "stderr is empty", not
//!   the exit status alone;
//! - an ExecStart= binary that does not exist is an error (exit status 1), so the unit is verified
//!   from a copy whose ExecStart= points at the binary cargo built;
//! - units named in After= are loaded and verified too when they exist: stub docker.service and
//!   replicated*.service sit next to the copy (the unit's own directory comes first in the search
//!   path; `SYSTEMD_UNIT_PATH=<dir>:` says so explicitly and keeps the system directories for
//!   network-online.target, multi-user.target and the default dependencies), so a machine with
//!   docker installed checks the same thing as one without.
//!
//! No stderr line is acceptable for the good unit.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const UNIT_NAME: &str = "tfe-node-agent.service";
const INSTALLED_BIN: &str = "/usr/bin/tfe-node-agent";
const CONFIG_PATH: &str = "/etc/tfe-node-agent/agent.toml";
const AGENT_BIN: &str = env!("CARGO_BIN_EXE_tfe-node-agent");
/// The units the agent is ordered after that this machine may not have.
const STUBBED_UNITS: &[&str] = &[
    "docker.service",
    "replicated.service",
    "replicated-ui.service",
    "replicated-operator.service",
];

fn unit_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("systemd")
        .join(UNIT_NAME)
}

fn unit_text() -> String {
    let path = unit_path();
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// `text` with the one line `from` replaced by `to`; panics when `from` is not exactly one line.
fn replace_line(text: &str, from: &str, to: &str) -> String {
    let hits = text.lines().filter(|l| *l == from).count();
    assert_eq!(hits, 1, "expected exactly one line {from:?} in the unit");
    text.lines()
        .map(|l| if l == from { to } else { l })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// A path as the first word of an Exec line: quoted, `%` escaped (systemd specifiers).
fn exec_path(path: &str) -> String {
    assert!(
        !path.contains(['"', '\\', '\n']),
        "cannot put {path:?} in an Exec line"
    );
    format!("\"{}\"", path.replace('%', "%%"))
}

/// The unit as installed, but with ExecStart= pointing at the binary cargo built.
fn with_built_binary(text: &str) -> String {
    let prefix = format!("ExecStart={INSTALLED_BIN} ");
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with(&prefix)).collect();
    assert_eq!(
        lines.len(),
        1,
        "expected one line starting with {prefix:?} in the unit"
    );
    let built = format!(
        "ExecStart={} {}",
        exec_path(AGENT_BIN),
        &lines[0][prefix.len()..]
    );
    replace_line(text, lines[0], &built)
}

fn systemd_analyze(args: &[&str]) -> Command {
    let mut cmd = Command::new("systemd-analyze");
    cmd.args(args)
        .env_remove("SYSTEMD_LOG_LEVEL")
        .env_remove("SYSTEMD_LOG_TARGET")
        .env("SYSTEMD_LOG_COLOR", "0")
        .env("SYSTEMD_PAGER", "cat");
    cmd
}

fn run(mut cmd: Command) -> Output {
    match cmd.output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "systemd-analyze is not installed: run tests/setup.sh (it installs the Debian \
             package `systemd`, which provides it)"
        ),
        Err(e) => panic!("running {cmd:?}: {e}"),
    }
}

/// Runs `systemd-analyze verify` on `text` saved as tfe-node-agent.service in a temp dir, with
/// stubs for the units it is ordered after. Returns the problems: every stderr and stdout line,
/// and a non-zero exit status; empty means clean.
fn verify(text: &str) -> Vec<String> {
    let dir = tempfile::tempdir().expect("temp dir");
    let unit = dir.path().join(UNIT_NAME);
    std::fs::write(&unit, text).expect("writing the unit copy");
    for stub in STUBBED_UNITS {
        std::fs::write(
            dir.path().join(stub),
            format!(
                "[Unit]\nDescription=stub for tests/systemd_unit.rs\n\n[Service]\nExecStart={}\n",
                exec_path(AGENT_BIN)
            ),
        )
        .expect("writing a stub unit");
    }
    let mut cmd = systemd_analyze(&["verify", "--man=no"]);
    cmd.arg(&unit);
    // The trailing colon appends the built-in search path.
    cmd.env(
        "SYSTEMD_UNIT_PATH",
        format!("{}:", dir.path().to_str().expect("UTF-8 temp dir")),
    );
    let out = run(cmd);
    let mut problems: Vec<String> = String::from_utf8_lossy(&out.stderr)
        .lines()
        .chain(String::from_utf8_lossy(&out.stdout).lines())
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect();
    if !out.status.success() {
        problems.push(format!("systemd-analyze verify exited with {}", out.status));
    }
    problems
}

#[test]
fn systemd_analyze_verify_accepts_the_unit() {
    let problems = verify(&with_built_binary(&unit_text()));
    assert!(
        problems.is_empty(),
        "systemd-analyze verify {}:\n{}",
        unit_path().display(),
        problems.join("\n")
    );
}

/// Negative controls: each broken copy must draw a complaint that names the unit file and the bad
/// value, so a clean result above means systemd really read and accepted every line.
#[test]
fn systemd_analyze_verify_rejects_broken_units() {
    let good = with_built_binary(&unit_text());
    let broken = [
        ("Type=notify", "Type=notfiy", "notfiy"),
        ("TimeoutStopSec=5min", "TimeoutStopSec=soon", "soon"),
        ("KillMode=process", "KilMode=process", "KilMode"),
        ("WatchdogSec=5min", "WatchdogSec=often", "often"),
        (
            "StateDirectoryMode=0700",
            "StateDirectoryMode=0x700",
            "0x700",
        ),
    ];
    for (from, to, culprit) in broken {
        let problems = verify(&replace_line(&good, from, to));
        assert!(
            problems
                .iter()
                .any(|p| p.contains(UNIT_NAME) && p.contains(culprit)),
            "{to:?} drew no complaint naming {UNIT_NAME} and {culprit:?}; got:\n{}",
            problems.join("\n")
        );
    }

    // The installed path does not exist here: verify must fail on it, which is why the good
    // unit is checked with ExecStart= pointing at the built binary.
    let missing = format!("{INSTALLED_BIN}-does-not-exist");
    let unit = replace_line(
        &good,
        good.lines().find(|l| l.starts_with("ExecStart=")).unwrap(),
        &format!("ExecStart={missing} --config {CONFIG_PATH} run"),
    );
    let problems = verify(&unit);
    assert!(
        problems.iter().any(|p| p.contains(&missing))
            && problems.iter().any(|p| p.contains("exited with")),
        "a missing ExecStart= binary did not fail verify; got:\n{}",
        problems.join("\n")
    );
}

/// `section -> key -> values`, every assignment kept in order (After= may be repeated). Enough of
/// systemd's syntax for this file: `[Section]`, `Key=value`, `#`/`;` comments, `\` continuations.
fn parse_unit(text: &str) -> BTreeMap<String, BTreeMap<String, Vec<String>>> {
    let mut sections: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    let mut section = String::new();
    let mut pending = String::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if pending.is_empty() && (line.is_empty() || line.starts_with(['#', ';'])) {
            continue;
        }
        if let Some(cont) = line.strip_suffix('\\') {
            pending.push_str(cont);
            pending.push(' ');
            continue;
        }
        let line = std::mem::take(&mut pending) + line;
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_string();
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("line {}: not Key=value: {raw:?}", n + 1));
        assert!(!section.is_empty(), "line {}: outside a section", n + 1);
        sections
            .entry(section.clone())
            .or_default()
            .entry(key.trim().to_string())
            .or_default()
            .push(value.trim().to_string());
    }
    assert!(pending.is_empty(), "the unit ends in a continuation line");
    sections
}

#[test]
fn unit_has_what_the_agent_relies_on() {
    let unit = parse_unit(&unit_text());
    let values = |section: &str, key: &str| -> Vec<String> {
        unit.get(section)
            .and_then(|s| s.get(key))
            .cloned()
            .unwrap_or_default()
    };
    let one = |section: &str, key: &str| -> String {
        let v = values(section, key);
        assert_eq!(
            v.len(),
            1,
            "[{section}] {key}= should be set once, got {v:?}"
        );
        v[0].clone()
    };
    let words = |section: &str, key: &str| -> Vec<String> {
        values(section, key)
            .iter()
            .flat_map(|v| v.split_whitespace().map(str::to_string))
            .collect()
    };

    assert_eq!(one("Service", "Type"), "notify");
    assert_eq!(one("Service", "NotifyAccess"), "main");
    assert_eq!(one("Service", "KillMode"), "process");
    assert_eq!(
        one("Service", "ExecStart"),
        format!("{INSTALLED_BIN} --config {CONFIG_PATH} run")
    );
    assert_eq!(one("Unit", "ConditionPathExists"), CONFIG_PATH);
    assert_eq!(one("Service", "StateDirectory"), "tfe-node-agent");
    assert_eq!(one("Service", "StateDirectoryMode"), "0700");
    assert_eq!(one("Service", "ConfigurationDirectory"), "tfe-node-agent");
    assert_eq!(one("Service", "ConfigurationDirectoryMode"), "0700");
    assert_eq!(one("Service", "Restart"), "on-failure");
    for key in ["TimeoutStartSec", "TimeoutStopSec"] {
        let v = one("Service", key);
        assert!(
            !v.is_empty() && v != "infinity" && v != "0",
            "[Service] {key}={v} must be a finite time"
        );
    }

    // The watchdog the agent pings while its loops tick (src/observe/watchdog.rs): set, finite,
    // and long enough for one whole AWS call (3 tries of 20 s + backoff) inside a loop's turn.
    let watchdog = one("Service", "WatchdogSec");
    let seconds = match watchdog.strip_suffix("min") {
        Some(m) => m.parse::<u64>().map(|m| m * 60),
        None => watchdog.trim_end_matches('s').parse::<u64>(),
    }
    .unwrap_or_else(|e| panic!("[Service] WatchdogSec={watchdog}: {e}"));
    assert!(
        (2 * 70..=10 * 60).contains(&seconds),
        "[Service] WatchdogSec={watchdog} should be between 140 s and 10 min"
    );
    assert_eq!(one("Service", "RuntimeDirectory"), "tfe-node-agent");
    assert_eq!(one("Service", "RuntimeDirectoryMode"), "0750");

    // Stopped before docker and Replicated at shutdown, so the drain can still reach them.
    let after = words("Unit", "After");
    for needed in ["network-online.target"].iter().chain(STUBBED_UNITS) {
        assert!(
            after.iter().any(|u| u == needed),
            "After= lacks {needed}: {after:?}"
        );
    }
    assert!(words("Unit", "Wants")
        .iter()
        .any(|u| u == "network-online.target"));
    // ... but never requires them: install.sh installs them on the first boot.
    for key in ["Requires", "Requisite", "BindsTo", "PartOf"] {
        let deps = words("Unit", key);
        assert!(
            !deps
                .iter()
                .any(|u| u.starts_with("docker") || u.starts_with("replicated")),
            "[Unit] {key}= must not name docker or Replicated units: {deps:?}"
        );
    }
    assert!(words("Install", "WantedBy")
        .iter()
        .any(|u| u == "multi-user.target"));

    // Nothing that would break install.sh (root, sudo, writes /etc /usr /var /opt /tmp, docker).
    for key in [
        "NoNewPrivileges",
        "ProtectSystem",
        "ProtectHome",
        "PrivateTmp",
        "PrivateDevices",
        "ProtectKernelModules",
        "ProtectKernelTunables",
        "ProtectControlGroups",
        "ProtectClock",
        "RestrictSUIDSGID",
        "ReadOnlyPaths",
        "User",
        "DynamicUser",
    ] {
        for v in values("Service", key) {
            assert!(
                ["no", "false", "0", "off", ""].contains(&v.as_str()),
                "[Service] {key}={v} would get in install.sh's way"
            );
        }
    }
}

/// The ExecStart= command line is one the binary accepts (`run` exists, `--config` is global).
#[test]
fn exec_start_command_line_parses() {
    let out = Command::new(AGENT_BIN)
        .args(["--config", CONFIG_PATH, "run", "--help"])
        .output()
        .expect("running the agent");
    assert!(
        out.status.success(),
        "{AGENT_BIN} --config {CONFIG_PATH} run --help: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}
