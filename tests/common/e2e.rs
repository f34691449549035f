//! What the end-to-end scenarios (`tests/e2e_nspawn.rs`, `tests/e2e_qemu.rs`) share: the guest
//! image, the .deb in a loopback apt repo, what is laid into the guest around the real package,
//! and the checks on what the guest's disk and journal show afterwards.

use super::{repo, spawn_on_any_port, template, Node, Proc, SHARED_SECRET_VALUES};
use serde_json::{json, Value};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// The units the agent's unit is ordered after (stand-ins in the image, see tests/e2e/image.sh).
pub const STAND_INS: &[&str] = &[
    "docker.service",
    "replicated.service",
    "replicated-ui.service",
    "replicated-operator.service",
];

/// Runs `cmd`; panics with its output unless it succeeds.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e} (run `bash tests/setup.sh`)"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn require_root(what: &str) {
    assert!(
        nix::unistd::geteuid().is_root(),
        "{what} needs root (mount, systemd-nspawn, loop devices)"
    );
}

/// The directory of the cached image `variant` (tests/e2e/image.sh builds it when missing).
pub fn image(variant: &str) -> PathBuf {
    let out = run(Command::new("bash")
        .arg(repo().join("tests/e2e/image.sh"))
        .arg(variant)
        .stderr(Stdio::inherit()));
    let text = String::from_utf8_lossy(&out.stdout);
    PathBuf::from(text.lines().last().expect("image.sh printed a path").trim())
}

/// The .deb from `packaging/build.sh`.
pub fn build_deb() -> PathBuf {
    super::packages::build().deb
}

/// A flat apt repository (`deb [trusted=yes] URL ./`) holding one .deb, served on 127.0.0.1.
pub struct AptRepo {
    pub port: u16,
    _server: Proc,
    _dir: tempfile::TempDir,
}

impl AptRepo {
    pub fn serve(deb: &Path) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(deb, dir.path().join(deb.file_name().unwrap())).unwrap();
        let index = run(Command::new("dpkg-scanpackages")
            .args(["--multiversion", "."])
            .current_dir(dir.path()));
        std::fs::write(dir.path().join("Packages"), &index.stdout).unwrap();
        let mut cmd = Command::new("python3");
        // -u: the "Serving HTTP on 127.0.0.1 port N" line is printed once bound, unbuffered.
        cmd.args(["-u", "-m", "http.server", "--bind", "127.0.0.1", "0"])
            .current_dir(dir.path());
        let (server, port) = spawn_on_any_port(cmd, "127.0.0.1 port ", Duration::from_secs(20));
        AptRepo {
            port,
            _server: server,
            _dir: dir,
        }
    }
}

/// `url` (an `http://127.0.0.1:PORT` of a host-side server) as the guest reaches it via `host`.
fn from_guest(url: &str, host: &str) -> String {
    url.replace("127.0.0.1", host)
}

/// Writes into the guest's root what the test supplies around the real package: the NoCloud seed,
/// the fake TFE tools at the template's paths with their state dir, and the AWS endpoints. `host`
/// is the address at which the guest reaches the host's loopback servers.
pub fn prepare_guest(root: &Path, node: &Node, apt: &AptRepo, host: &str) {
    let seed = root.join("var/lib/cloud/seed/nocloud");
    std::fs::create_dir_all(&seed).unwrap();
    let repo_url = format!("http://{host}:{}/", apt.port);
    std::fs::write(seed.join("user-data"), user_data(&repo_url)).unwrap();
    std::fs::write(
        seed.join("meta-data"),
        format!(
            "instance-id: {}\nlocal-hostname: tfe-e2e\n",
            node.instance_id
        ),
    )
    .unwrap();

    let tools = root.join("opt/tfe");
    std::fs::create_dir_all(&tools).unwrap();
    for name in ["install.sh", "replicatedctl", "replicated"] {
        std::fs::copy(repo().join("tests/fake-tfe").join(name), tools.join(name)).unwrap();
    }
    // The tools' Python package (its modules only, no __pycache__).
    std::fs::create_dir_all(tools.join("faketfe")).unwrap();
    for entry in std::fs::read_dir(repo().join("tests/fake-tfe/faketfe")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "py") {
            std::fs::copy(&path, tools.join("faketfe").join(path.file_name().unwrap())).unwrap();
        }
    }
    for name in ["replicatedctl", "replicated"] {
        std::os::unix::fs::symlink(
            format!("/opt/tfe/{name}"),
            root.join("usr/local/bin").join(name),
        )
        .unwrap();
    }
    let state = root.join("var/lib/fake-tfe");
    std::fs::create_dir_all(&state).unwrap();
    // A drain of a few seconds, so a wrong shutdown order would show.
    let knobs = json!({"install_duration_s": 0.5, "system_ready_after_s": 0.5,
                       "app_started_after_s": 1.0, "drain_duration_s": 3.0});
    std::fs::write(state.join("behaviour.json"), knobs.to_string()).unwrap();

    // On EC2 the SDK finds these on its own (instance profile, regional endpoints, IMDS).
    let dropin = root.join("etc/systemd/system/tfe-node-agent.service.d");
    std::fs::create_dir_all(&dropin).unwrap();
    std::fs::write(
        dropin.join("e2e.conf"),
        format!(
            "[Service]\n\
             Environment=AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing\n\
             Environment=AWS_ENDPOINT_URL_SECRETS_MANAGER={}\n\
             Environment=AWS_ENDPOINT_URL_AUTO_SCALING={}\n\
             Environment=AWS_EC2_METADATA_SERVICE_ENDPOINT=http://{host}:{}\n\
             Environment=FAKE_TFE_STATE=/var/lib/fake-tfe\n",
            from_guest(&node.moto.url, host),
            from_guest(&node.emulator.url, host),
            node.imds_port
        ),
    )
    .unwrap();
}

/// `cloud-init/baked-ami.yaml` rendered for the test node, plus the apt source and package that
/// stand in for an AMI with the package baked in.
fn user_data(repo_url: &str) -> String {
    let name = "baked-ami.yaml";
    let text = std::fs::read_to_string(repo().join("cloud-init").join(name)).unwrap();
    let rendered = template::render(name, &text, |var| {
        Some(
            match var {
                "secret_shared_id" => "tfe/shared",
                "secret_license_id" => "tfe/license",
                "release_sequence" => "504",
                "tfe_hostname" => "tfe.example.com",
                "pg_netloc" => "tfe-db.example.internal:5432",
                "pg_dbname" => "tfe",
                "pg_user" => "tfe",
                "s3_bucket" => "tfe-data",
                "aws_region" => "us-east-1",
                "redis_host" => "tfe-redis.example.internal",
                "launch_hook" => "tfe-launch",
                "terminate_hook" => "tfe-terminate",
                _ => return None,
            }
            .to_string(),
        )
    });
    // The guest's host checks run for real; its Redis, PostgreSQL and bucket are names only.
    let install = "\n      [install]\n";
    assert!(
        rendered.contains(install),
        "the template has an [install] section"
    );
    let rendered = rendered.replacen(
        install,
        "\n      [preflight]\n      skip = [\"redis\", \"postgres\", \"object_storage\"]\n\n      [install]\n",
        1,
    );
    assert!(
        !rendered.contains("\napt:") && !rendered.contains("\npackages:"),
        "the template now has its own apt/packages keys; merge them here instead of appending"
    );
    format!(
        "{rendered}\n# e2e only: the package comes from the test's loopback apt repo.\n\
         apt:\n  preserve_sources_list: false\n  sources_list: |\n    deb [trusted=yes] {repo_url} ./\n\
         packages:\n  - tfe-node-agent\n"
    )
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// The uid of `user` in the guest's /etc/passwd.
fn guest_uid(root: &Path, user: &str) -> u32 {
    std::fs::read_to_string(root.join("etc/passwd"))
        .unwrap()
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f[0] == user).then(|| f[2].parse().unwrap())
        })
        .unwrap_or_else(|| panic!("no user {user} in the guest"))
}

/// cloud-init ended without errors, the package is installed, and the config and the files the
/// agent wrote have their modes and owners.
pub fn assert_installed_and_configured(root: &Path) {
    let result = std::fs::read_to_string(root.join("var/lib/cloud/data/result.json"))
        .expect("cloud-init's result.json");
    let result: Value = serde_json::from_str(&result).unwrap();
    assert_eq!(
        result["v1"]["errors"],
        json!([]),
        "cloud-init reported errors"
    );
    let status = std::fs::read_to_string(root.join("var/lib/dpkg/status")).unwrap();
    assert!(
        status
            .split("\n\n")
            .any(|p| p.starts_with("Package: tfe-node-agent\n")
                && p.contains("\nStatus: install ok installed\n")),
        "tfe-node-agent is not installed in the guest"
    );
    assert_eq!(mode(&root.join("etc/tfe-node-agent")), 0o700);
    let toml = root.join("etc/tfe-node-agent/agent.toml");
    assert_eq!(
        (mode(&toml), std::fs::metadata(&toml).unwrap().uid()),
        (0o600, 0)
    );
    let replicated = guest_uid(root, "replicated");
    for file in ["etc/ptfe-settings.json", "etc/replicated.conf"] {
        let meta = std::fs::metadata(root.join(file)).unwrap();
        assert_eq!(
            (meta.permissions().mode() & 0o777, meta.uid()),
            (0o600, replicated),
            "{file}"
        );
    }
    assert_eq!(mode(&root.join("var/lib/tfe-node-agent")), 0o700);
}

/// The guest's persistent journal under `root`, oldest first, one JSON object per entry.
pub fn journal(root: &Path) -> Vec<Value> {
    let out = run(Command::new("journalctl")
        .arg("-D")
        .arg(root.join("var/log/journal"))
        .args(["-o", "json", "--no-pager"]));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("journalctl -o json line"))
        .collect()
}

/// The agent's milestones in the guest's journal carry their journald fields: `MESSAGE_ID` (the
/// milestone's fixed id, so `journalctl MESSAGE_ID=…` finds it), `PHASE` (as recorded when it was
/// logged), `INSTANCE_ID`, and `ASG_NAME` / `HOOK_NAME` once known. For a node that booted, served
/// and drained at a poweroff (no ASG termination, so no terminate hook released).
pub fn assert_milestones_carry_journal_fields(root: &Path, node: &Node) {
    use tfe_node_agent::telemetry::Milestone;
    let journal = journal(root);
    let field = |e: &Value, k: &str| e[k].as_str().map(str::to_string);
    let entries = |m: Milestone| -> Vec<&Value> {
        journal
            .iter()
            .filter(|e| e["MESSAGE_ID"] == m.message_id())
            .collect()
    };
    let one = |m: Milestone| -> &Value {
        let found = entries(m);
        assert_eq!(
            found.len(),
            1,
            "want one journal entry with MESSAGE_ID {} ({}), got {found:?}",
            m.message_id(),
            m.as_str()
        );
        found[0]
    };
    // ASG_NAME: unknown at the boot's start, known from the launch release on; in between it
    // depends on whether the hook's lookup (beside the work) answered first.
    const ABSENT: &[Option<&str>] = &[None];
    const EITHER: &[Option<&str>] = &[None, Some("tfe-asg")];
    const KNOWN: &[Option<&str>] = &[Some("tfe-asg")];
    let want = [
        (Milestone::BootStarted, "booting", ABSENT, "tfe-launch"),
        (Milestone::SecretsFetched, "booting", EITHER, "tfe-launch"),
        (Milestone::FilesWritten, "booting", EITHER, "tfe-launch"),
        (Milestone::InstallStarted, "booting", EITHER, "tfe-launch"),
        (
            Milestone::InstallFinished,
            "installed",
            EITHER,
            "tfe-launch",
        ),
        (Milestone::Ready, "ready", EITHER, "tfe-launch"),
        (Milestone::LaunchReleased, "in-service", KNOWN, "tfe-launch"),
        (
            Milestone::TerminationNoticed,
            "draining",
            KNOWN,
            "tfe-terminate",
        ),
        (Milestone::DrainStarted, "draining", KNOWN, "tfe-terminate"),
        // A shutdown's drain is done with node-drain alone (no terminate hook to answer).
        (Milestone::DrainFinished, "drained", KNOWN, "tfe-terminate"),
    ];
    for (m, phase, groups, hook) in want {
        let e = one(m);
        let what = format!("{} entry {e}", m.as_str());
        assert_eq!(e["SYSLOG_IDENTIFIER"], "tfe-node-agent", "{what}");
        assert_eq!(field(e, "PHASE").as_deref(), Some(phase), "{what}");
        assert_eq!(
            field(e, "INSTANCE_ID"),
            Some(node.instance_id.clone()),
            "{what}"
        );
        assert!(groups.contains(&field(e, "ASG_NAME").as_deref()), "{what}");
        assert_eq!(field(e, "HOOK_NAME").as_deref(), Some(hook), "{what}");
    }
    assert_eq!(
        message(one(Milestone::LaunchReleased)),
        "launch hook tfe-launch released with CONTINUE"
    );
    for m in [Milestone::TerminateReleased, Milestone::BootFailed] {
        assert!(entries(m).is_empty(), "unexpected {} entry", m.as_str());
    }
    // journald indexes the field: a match on it finds the entry.
    let id = Milestone::BootStarted.message_id();
    let out = run(Command::new("journalctl")
        .arg("-D")
        .arg(root.join("var/log/journal"))
        .args(["-o", "cat", "--no-pager"])
        .arg(format!("MESSAGE_ID={id}")));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines().count() == 1 && text.starts_with("boot of instance "),
        "journalctl MESSAGE_ID={id}: {text:?}"
    );
}

fn message(entry: &Value) -> &str {
    entry["MESSAGE"].as_str().unwrap_or("")
}

/// Index of the first journal entry matching `pred`, naming `what` if there is none.
fn position(journal: &[Value], what: &str, pred: impl Fn(&Value) -> bool) -> usize {
    journal.iter().position(pred).unwrap_or_else(|| {
        let text: Vec<String> = journal
            .iter()
            .map(|e| format!("{}: {}", e["SYSLOG_IDENTIFIER"], message(e)))
            .collect();
        panic!("no journal entry for {what}; journal:\n{}", text.join("\n"))
    })
}

/// The node's whole life as the guest's journal and disk tell it, after a `poweroff`: the launch
/// hook released, then the unit ready (Type=notify: "Started" only after READY=1); at shutdown
/// SIGTERM while the system stops → node-drain finished → the unit stopped → only then the docker
/// and replicated stand-ins stop (the reverse of the unit's After=). One drain, the terminate hook
/// untouched (no ASG termination), no secret value anywhere in the journal.
pub fn assert_served_then_drained_before_docker_stopped(root: &Path, node: &Node) {
    assert_eq!(
        node.emulator.resolutions(),
        vec![(
            "tfe-launch".to_string(),
            "CONTINUE".to_string(),
            "complete".to_string()
        )]
    );
    assert_eq!(node.emulator.api_calls("CompleteLifecycleAction"), 1);
    let journal = journal(root);
    let agent = |e: &Value| e["SYSLOG_IDENTIFIER"] == "tfe-node-agent";
    let unit = |e: &Value, prefix: &str| {
        e["UNIT"] == "tfe-node-agent.service" && message(e).starts_with(prefix)
    };
    let released = position(&journal, "the launch hook released", |e| {
        agent(e) && message(e) == "launch hook tfe-launch released with CONTINUE"
    });
    let started = position(&journal, "systemd's Started tfe-node-agent.service", |e| {
        unit(e, "Started ")
    });
    let sigterm = position(&journal, "the agent's shutdown notice", |e| {
        agent(e) && message(e).contains("the system is shutting down with no ASG termination")
    });
    let drained = position(&journal, "node-drain finished", |e| {
        agent(e) && message(e) == "node-drain finished"
    });
    let stopped = position(&journal, "systemd's Stopped tfe-node-agent.service", |e| {
        unit(e, "Stopped ")
    });
    let order = [released, started, sigterm, drained, stopped];
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "journal order released/started/SIGTERM/drained/stopped: {order:?}"
    );
    for unit in STAND_INS {
        let stop = position(&journal, &format!("{unit} stopping"), |e| {
            message(e) == format!("e2e stand-in {unit} stopping")
        });
        assert!(
            stopped < stop,
            "{unit} began stopping (entry {stop}) before the agent had stopped (entry {stopped})"
        );
    }
    let drains: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("var/lib/fake-tfe/drain.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(drains["drains_started"], 1, "{drains}");
    let text: String = journal
        .iter()
        .map(|e| format!("{}\n", message(e)))
        .collect();
    for secret in SHARED_SECRET_VALUES {
        assert!(
            !text.contains(secret),
            "a secret value reached the guest's journal"
        );
    }
}
