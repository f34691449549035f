//! End to end with the real systemd 252 and cloud-init 22.4 of Debian bookworm, booted with
//! `systemd-nspawn` (recipes: docs/development/e2e.md):
//!
//! 1. `packaging/build.sh` builds the .deb; it is served from a flat apt repo on 127.0.0.1.
//! 2. The guest (`tests/e2e/image.sh`, cached; an overlayfs instance per run) gets a NoCloud seed
//!    whose user data is `cloud-init/baked-ami.yaml` rendered as Terraform would, plus the two
//!    keys that stand in for "the package is in the AMI": an apt source (the loopback repo) and
//!    `packages: [tfe-node-agent]`. It also gets the fake TFE tools at the paths the template
//!    names and a unit drop-in pointing the AWS SDK at moto and the emulator on the host's
//!    loopback (the guest shares the host's network namespace). See `tests/common/e2e.rs`.
//! 3. cloud-init installs the package, writes agent.toml and starts the unit; the agent boots the
//!    node against the emulators and the launch hook gets CONTINUE.
//!    The unit has its watchdog, and the HTTP API answers /readyz 200 on its default listener.
//! 4. `systemctl poweroff` in the guest: the journal must show the agent's drain finished and the
//!    unit stopped before the docker and replicated stand-in units stop, and the agent's
//!    milestones with their journald fields (MESSAGE_ID, PHASE, INSTANCE_ID, ASG_NAME, HOOK_NAME).
//!
//! Needs root, systemd-nspawn, mmdebstrap and dpkg-scanpackages (tests/setup.sh installs them) and
//! deb.debian.org for the first image build (about 100 s; cached afterwards).

mod common;

use common::e2e::*;
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

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

#[test]
fn cloud_init_installs_and_starts_the_agent_and_poweroff_drains_before_docker_stops() {
    require_root("the nspawn end-to-end test");
    let image = image("nspawn").join("rootfs");
    let apt = AptRepo::serve(&build_deb());
    let node = Node::with(
        Hooks {
            launch_timeout: 120,
            ..Hooks::default()
        },
        shared_secret(),
    );

    let started = Instant::now();
    let mut guest = Guest::boot(&image, |root| prepare_guest(root, &node, &apt, "127.0.0.1"));
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
    assert_installed_and_configured(&guest.root);
    // The unit's watchdog reached the agent's service (the agent pings it, see
    // src/observe/watchdog.rs; a missed ping would have restarted it: NRestarts=0 above).
    let watchdog = guest.exec(&[
        "systemctl",
        "show",
        "-p",
        "WatchdogUSec",
        "tfe-node-agent.service",
    ]);
    let watchdog = String::from_utf8_lossy(&watchdog.stdout).trim().to_string();
    assert!(
        watchdog.starts_with("WatchdogUSec=")
            && !["WatchdogUSec=0", "WatchdogUSec=infinity", "WatchdogUSec="]
                .contains(&watchdog.as_str()),
        "{watchdog:?}"
    );
    // The HTTP API on its default listener: the guest shares the host's loopback. /status names
    // this node, so the answer is this agent's.
    let api = "http://127.0.0.1:18800";
    let ready = ureq::get(&format!("{api}/readyz")).call();
    assert!(
        matches!(&ready, Ok(r) if r.status() == 200),
        "GET /readyz of a node in service: {ready:?}"
    );
    let status: serde_json::Value = ureq::get(&format!("{api}/status"))
        .call()
        .expect("GET /status")
        .into_json()
        .expect("/status is JSON");
    assert_eq!(status["instance_id"], node.instance_id.as_str(), "{status}");
    assert_eq!(status["phase"], "in-service", "{status}");

    let off = guest.exec(&["systemctl", "poweroff"]);
    assert!(off.status.success(), "systemctl poweroff: {off:?}");
    let status = guest.wait_exit(Duration::from_secs(180));
    assert!(status.success(), "systemd-nspawn exited with {status}");
    let total = started.elapsed();

    assert_served_then_drained_before_docker_stopped(&guest.root, &node);
    assert_milestones_carry_journal_fields(&guest.root, &node);
    for secret in SHARED_SECRET_VALUES {
        assert!(
            !guest.console().contains(secret),
            "a secret value reached the guest's console"
        );
    }
    eprintln!(
        "e2e timings: boot → cloud-init boot-finished {:.1?}, → launch CONTINUE {:.1?}, \
         → powered off {:.1?}",
        cloud_init_done, launched, total
    );
}
