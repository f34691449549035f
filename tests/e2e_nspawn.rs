//! End to end with the real systemd 252 and cloud-init 22.4 of Debian bookworm, booted with
//! `systemd-nspawn` (recipes: ../shared/notes/e2e-vm.md):
//!
//! 1. `packaging/build.sh` builds the .deb; it is served from a flat apt repo on 127.0.0.1.
//! 2. The guest (tests/e2e/image.sh, cached; an overlayfs instance per run) gets a NoCloud seed
//!    whose user data is `cloud-init/baked-ami.yaml` rendered as Terraform would, plus the two
//!    keys that stand in for "the package is in the AMI": an apt source (the loopback repo) and
//!    `packages: [tfe-node-agent]`. It also gets the fake TFE tools at the paths the template
//!    names and a unit drop-in pointing the AWS SDK at moto and the emulator on the host's
//!    loopback (the guest shares the host's network namespace).
//! 3. cloud-init installs the package, writes agent.toml and starts the unit; the agent boots the
//!    node against the emulators and the launch hook gets CONTINUE.
//! 4. `systemctl poweroff` in the guest: the journal must show the agent's drain finished and the
//!    unit stopped before the docker and replicated stand-in units stop.
//!
//! Needs root, systemd-nspawn, mmdebstrap and dpkg-scanpackages (tests/setup.sh installs them) and
//! deb.debian.org for the first image build (about a minute; cached afterwards).

mod common;

use common::*;
use serde_json::{json, Value};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const STAND_INS: &[&str] = &[
    "docker.service",
    "replicated.service",
    "replicated-ui.service",
    "replicated-operator.service",
];

fn run(cmd: &mut Command) -> Output {
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

fn last_line(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// The .deb from `packaging/build.sh` (its second-to-last stdout line).
fn build_deb() -> PathBuf {
    let out = run(Command::new("bash")
        .arg(repo().join("packaging/build.sh"))
        .current_dir(repo())
        .stderr(Stdio::inherit()));
    let text = String::from_utf8_lossy(&out.stdout);
    let deb = text
        .lines()
        .find(|l| l.ends_with(".deb"))
        .expect("build.sh printed the .deb's path");
    PathBuf::from(deb.trim())
}

/// A flat apt repository (`deb [trusted=yes] URL ./`) holding `deb`, served on 127.0.0.1.
struct AptRepo {
    url: String,
    _server: Proc,
    _dir: tempfile::TempDir,
}

impl AptRepo {
    fn serve(deb: &Path) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(deb, dir.path().join(deb.file_name().unwrap())).unwrap();
        let index = run(Command::new("dpkg-scanpackages")
            .args(["--multiversion", "."])
            .current_dir(dir.path()));
        std::fs::write(dir.path().join("Packages"), &index.stdout).unwrap();
        let port = free_port();
        let server = Command::new("python3")
            .args([
                "-m",
                "http.server",
                "--bind",
                "127.0.0.1",
                &port.to_string(),
            ])
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start python3 -m http.server");
        wait_for("apt repo server", Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        AptRepo {
            url: format!("http://127.0.0.1:{port}/"),
            _server: Proc(server),
            _dir: dir,
        }
    }
}

/// A booted nspawn guest on an overlayfs instance of the cached image. Dropping it halts the
/// guest (bounded), kills what is left and unmounts the instance.
struct Guest {
    root: PathBuf,
    console: PathBuf,
    nspawn: Child,
    _dir: tempfile::TempDir,
}

impl Guest {
    /// Mounts an instance of `image`, lets `prepare` write into it, and boots it.
    fn boot(image: &Path, prepare: impl FnOnce(&Path)) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("tfe-e2e-")
            .tempdir()
            .unwrap();
        let root = dir.path().join("merged");
        for d in ["upper", "work", "merged"] {
            std::fs::create_dir(dir.path().join(d)).unwrap();
        }
        let opts = format!(
            "lowerdir={},upperdir={},workdir={}",
            image.display(),
            dir.path().join("upper").display(),
            dir.path().join("work").display()
        );
        run(Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o", &opts])
            .arg(&root));
        let console = dir.path().join("console.log");
        // From here on Drop unmounts, even if `prepare` or the spawn panics.
        let mut guest = Guest {
            root,
            console,
            nspawn: Command::new("true").spawn().unwrap(),
            _dir: dir,
        };
        prepare(&guest.root);
        let log = std::fs::File::create(&guest.console).unwrap();
        guest.nspawn = Command::new("systemd-nspawn")
            .arg("-D")
            .arg(&guest.root)
            // No systemd on the host: no machine registration, no scope unit. read-only keeps the
            // console in our log (passive loses it).
            .args([
                "--boot",
                "--register=no",
                "--keep-unit",
                "--console=read-only",
            ])
            .args(["--machine", "tfe-e2e"])
            .env("SYSTEMD_NSPAWN_UNIFIED_HIERARCHY", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start systemd-nspawn");
        guest
    }

    fn path(&self, p: &str) -> PathBuf {
        self.root.join(p.trim_start_matches('/'))
    }

    fn console(&self) -> String {
        std::fs::read_to_string(&self.console).unwrap_or_default()
    }

    fn running(&mut self) -> bool {
        self.nspawn.try_wait().unwrap().is_none()
    }

    /// The guest's PID 1 as the host sees it: nspawn's child.
    fn leader(&self) -> i32 {
        let nspawn = self.nspawn.id().to_string();
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .find(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .ok()
                    .and_then(|s| {
                        // "pid (comm) state ppid ...": comm may hold spaces, so split after ')'.
                        let rest = s.rsplit_once(')')?.1;
                        rest.split_whitespace().nth(1).map(|p| p == nspawn)
                    })
                    .unwrap_or(false)
            })
            .expect("systemd-nspawn has a child (the guest's init)")
    }

    /// Runs `args` inside the guest (all its namespaces); returns the output, whatever the status.
    fn exec(&self, args: &[&str]) -> Output {
        Command::new("nsenter")
            .args(["-t", &self.leader().to_string(), "-a"])
            .args(args)
            .output()
            .expect("nsenter")
    }

    /// Waits (bounded) until `ready`, failing with the console if the guest stops first.
    fn wait(&mut self, what: &str, timeout: Duration, mut ready: impl FnMut(&Guest) -> bool) {
        let deadline = Instant::now() + timeout;
        loop {
            if ready(self) {
                return;
            }
            assert!(
                self.running(),
                "the guest stopped before {what}; console:\n{}",
                self.console()
            );
            assert!(
                Instant::now() < deadline,
                "no {what} within {timeout:?}; console:\n{}",
                self.console()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.nspawn.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the guest did not power off within {timeout:?}; console:\n{}",
                self.console()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// The guest's persistent journal, oldest first, one JSON object per entry.
    fn journal(&self) -> Vec<Value> {
        let out = run(Command::new("journalctl")
            .arg("-D")
            .arg(self.path("/var/log/journal"))
            .args(["-o", "json", "--no-pager"]));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).expect("journalctl -o json line"))
            .collect()
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        if self.running() {
            // SIGTERM makes nspawn halt the guest cleanly; after that, end its PID namespace.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.nspawn.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = Instant::now() + Duration::from_secs(30);
            while self.running() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            if self.running() {
                let leader = self.leader();
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(leader),
                    nix::sys::signal::Signal::SIGKILL,
                );
                let _ = self.nspawn.kill();
                let _ = self.nspawn.wait();
            }
        }
        let _ = Command::new("umount").arg("-l").arg(&self.root).status();
    }
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

/// Writes into the guest instance what the test supplies around the real package: the NoCloud
/// seed, the fake TFE tools at the template's paths with their state dir, and the AWS endpoints.
fn prepare_guest(root: &Path, node: &Node, user_data: &str) {
    let seed = root.join("var/lib/cloud/seed/nocloud");
    std::fs::create_dir_all(&seed).unwrap();
    std::fs::write(seed.join("user-data"), user_data).unwrap();
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
    for name in ["install.sh", "replicatedctl", "replicated", "faketfe.py"] {
        std::fs::copy(repo().join("tests/fake-tfe").join(name), tools.join(name)).unwrap();
    }
    let bin = root.join("usr/local/bin");
    for name in ["replicatedctl", "replicated"] {
        std::os::unix::fs::symlink(format!("/opt/tfe/{name}"), bin.join(name)).unwrap();
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
             Environment=AWS_EC2_METADATA_SERVICE_ENDPOINT=http://127.0.0.1:{}\n\
             Environment=FAKE_TFE_STATE=/var/lib/fake-tfe\n",
            node.moto.url, node.emulator.url, node.imds_port
        ),
    )
    .unwrap();
}

/// `cloud-init/baked-ami.yaml` rendered for this node, plus the apt source and package that stand
/// in for an AMI with the package baked in.
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
fn guest_uid(guest: &Guest, user: &str) -> u32 {
    std::fs::read_to_string(guest.path("/etc/passwd"))
        .unwrap()
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f[0] == user).then(|| f[2].parse().unwrap())
        })
        .unwrap_or_else(|| panic!("no user {user} in the guest"))
}

#[test]
fn cloud_init_installs_and_starts_the_agent_and_poweroff_drains_before_docker_stops() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the nspawn end-to-end test needs root (mount, systemd-nspawn)"
    );
    let image = PathBuf::from(last_line(&run(Command::new("bash")
        .arg(repo().join("tests/e2e/image.sh"))
        .stderr(Stdio::inherit()))));
    let deb = build_deb();
    let apt = AptRepo::serve(&deb);
    let node = Node::with(
        Hooks {
            launch_timeout: 120,
            ..Hooks::default()
        },
        shared_secret(),
    );

    let started = Instant::now();
    let mut guest = Guest::boot(&image, |root| {
        prepare_guest(root, &node, &user_data(&apt.url))
    });

    guest.wait(
        "cloud-init's boot-finished",
        Duration::from_secs(180),
        |g| {
            let dir = g.path("/var/lib/cloud/instances");
            std::fs::read_dir(dir)
                .map(|d| d.flatten().any(|e| e.path().join("boot-finished").exists()))
                .unwrap_or(false)
        },
    );
    let cloud_init_done = started.elapsed();
    let result = std::fs::read_to_string(guest.path("/var/lib/cloud/data/result.json")).unwrap();
    let result: Value = serde_json::from_str(&result).unwrap();
    assert_eq!(
        result["v1"]["errors"],
        json!([]),
        "cloud-init reported errors; console:\n{}",
        guest.console()
    );
    let version = guest.exec(&["dpkg-query", "-W", "-f", "${Version}", "tfe-node-agent"]);
    assert!(
        version.status.success(),
        "tfe-node-agent is not installed in the guest; console:\n{}",
        guest.console()
    );

    guest.wait("launch hook CONTINUE", Duration::from_secs(120), |_| {
        node.emulator
            .resolutions()
            .iter()
            .any(|(hook, result, _)| hook == "tfe-launch" && result == "CONTINUE")
    });
    let launched = started.elapsed();
    // Type=notify: active only after READY=1, which the agent sends once the hook is released.
    guest.wait("the unit active", Duration::from_secs(20), |g| {
        g.exec(&[
            "systemctl",
            "is-active",
            "--quiet",
            "tfe-node-agent.service",
        ])
        .status
        .success()
    });
    let show = guest.exec(&[
        "systemctl",
        "show",
        "-p",
        "NRestarts,UnitFileState,Result",
        "tfe-node-agent.service",
    ]);
    let show = String::from_utf8_lossy(&show.stdout).into_owned();
    for want in ["NRestarts=0", "UnitFileState=enabled", "Result=success"] {
        assert!(show.lines().any(|l| l == want), "want {want}, got:\n{show}");
    }
    assert_eq!(
        node.emulator.resolutions(),
        vec![(
            "tfe-launch".to_string(),
            "CONTINUE".to_string(),
            "complete".to_string()
        )]
    );

    // What cloud-init and the agent left on the guest's disk.
    assert_eq!(mode(&guest.path("/etc/tfe-node-agent")), 0o700);
    let toml = guest.path("/etc/tfe-node-agent/agent.toml");
    assert_eq!(
        (mode(&toml), std::fs::metadata(&toml).unwrap().uid()),
        (0o600, 0)
    );
    let replicated = guest_uid(&guest, "replicated");
    for file in ["/etc/ptfe-settings.json", "/etc/replicated.conf"] {
        let meta = std::fs::metadata(guest.path(file)).unwrap();
        assert_eq!(
            (meta.permissions().mode() & 0o777, meta.uid()),
            (0o600, replicated),
            "{file}"
        );
    }
    assert_eq!(mode(&guest.path("/var/lib/tfe-node-agent")), 0o700);

    // A plain shutdown: SIGTERM while the system is stopping → a bounded drain, then the unit
    // stops, and only then docker and Replicated (reverse of the unit's After=).
    let off = guest.exec(&["systemctl", "poweroff"]);
    assert!(off.status.success(), "systemctl poweroff: {off:?}");
    let status = guest.wait_exit(Duration::from_secs(180));
    assert!(status.success(), "systemd-nspawn exited with {status}");
    let total = started.elapsed();

    let journal = guest.journal();
    let agent = |e: &Value| e["SYSLOG_IDENTIFIER"] == "tfe-node-agent";
    let sigterm = position(&journal, "the agent's shutdown notice", |e| {
        agent(e) && message(e).contains("the system is shutting down with no ASG termination")
    });
    let drained = position(&journal, "node-drain finished", |e| {
        agent(e) && message(e) == "node-drain finished"
    });
    let stopped = position(&journal, "systemd's Stopped tfe-node-agent.service", |e| {
        e["UNIT"] == "tfe-node-agent.service" && message(e).starts_with("Stopped ")
    });
    assert!(
        sigterm < drained && drained < stopped,
        "{sigterm} < {drained} < {stopped}"
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
        &std::fs::read_to_string(guest.path("/var/lib/fake-tfe/drain.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(drains["drains_started"], 1, "{drains}");
    // No ASG termination: the terminate hook was never touched.
    assert_eq!(node.emulator.api_calls("CompleteLifecycleAction"), 1);

    let text: String = journal
        .iter()
        .map(|e| format!("{}\n", message(e)))
        .collect();
    for secret in SHARED_SECRET_VALUES {
        assert!(
            !text.contains(secret) && !guest.console().contains(secret),
            "a secret value reached the guest's journal or console"
        );
    }
    eprintln!(
        "e2e timings: boot → cloud-init boot-finished {:.1?}, → launch CONTINUE {:.1?}, \
         → powered off {:.1?}",
        cloud_init_done, launched, total
    );
}
