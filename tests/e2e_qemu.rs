//! The end-to-end scenario of `tests/e2e_nspawn.rs` in a full QEMU virtual machine: a real kernel,
//! udev, systemd-networkd with a DHCP lease, ACPI power button. Its own target, not part of
//! `tests/run.sh` (1–3 minutes under TCG on this machine kind):
//!
//! ```sh
//! cargo test --test e2e_qemu -- --ignored --nocapture
//! ```
//!
//! - Disk: the `vm` image (tests/e2e/image.sh: cloud kernel, 6 MB initrd) with the same per-run
//!   additions as the nspawn guest, written into a fresh ext4 image with `mkfs.ext4 -d`.
//! - QEMU comes from the `qemu-tools` image, run through chroot in a private mount namespace:
//!   this machine kind's backported qemu-utils conflicts with bookworm's qemu-system-x86, and the
//!   host's packages are left alone. TCG: /dev/kvm here is PVM, which boots no stock kernel
//!   (`TFE_E2E_QEMU_ACCEL=kvm` on a host with VMX/SVM).
//! - Network: user mode with `restrict=on` (no route anywhere); each host server (apt repo, moto,
//!   the emulator, the instance's IMDS) is reachable at 10.0.2.100 on its own port through a
//!   `guestfwd` to 127.0.0.1.
//! - Shutdown: `system_powerdown` on the monitor (the power button, like an EC2 stop); the disk is
//!   then loop-mounted read-only and its journal read.

mod common;

use common::e2e::*;
use common::*;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The host as the guest reaches it (guestfwd addresses live in QEMU's 10.0.2.0/24).
const HOST: &str = "10.0.2.100";

fn port_of(url: &str) -> u16 {
    url.rsplit(':')
        .next()
        .unwrap()
        .trim_matches('/')
        .parse()
        .unwrap()
}

/// A running QEMU; dropping it kills it and unmounts what the test mounted.
struct Vm {
    work: tempfile::TempDir,
    qemu: Child,
    mounted: Vec<PathBuf>,
}

impl Vm {
    /// Builds the disk from the `vm` image plus `prepare`'s additions and starts QEMU with
    /// `forwards` (host ports reachable from the guest at HOST).
    fn start(prepare: impl FnOnce(&Path), forwards: &[u16]) -> Self {
        let guest_image = image("vm");
        let tools = image("qemu-tools");
        let work = tempfile::Builder::new()
            .prefix("tfe-e2e-vm-")
            .tempdir()
            .unwrap();
        // Owned: `work` moves into the Vm below, which removes the directory when dropped.
        let w = work.path().to_path_buf();
        let mut vm = Vm {
            qemu: Command::new("true").spawn().unwrap(),
            mounted: Vec::new(),
            work,
        };
        for d in ["upper", "wk", "merged", "disk"] {
            std::fs::create_dir(w.join(d)).unwrap();
        }
        let opts = format!(
            "lowerdir={},upperdir={},workdir={}",
            guest_image.join("rootfs").display(),
            w.join("upper").display(),
            w.join("wk").display()
        );
        let merged = w.join("merged");
        run(Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o", &opts])
            .arg(&merged));
        vm.mounted.push(merged.clone());
        prepare(&merged);
        // A root file system the kernel mounts at /dev/vda; fstab stays empty (`rw` on the
        // command line).
        run(Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", "e2eroot", "-d"])
            .arg(&merged)
            .arg(w.join("disk.raw"))
            .arg("2G"));
        vm.unmount(&merged);
        for f in ["vmlinuz", "initrd.img"] {
            std::fs::copy(guest_image.join(f), w.join(f)).unwrap();
        }

        let accel = std::env::var("TFE_E2E_QEMU_ACCEL").unwrap_or_else(|_| "tcg".into());
        let netdev = forwards
            .iter()
            .fold("user,id=n0,restrict=on,ipv6=off".to_string(), |acc, p| {
                format!("{acc},guestfwd=tcp:{HOST}:{p}-cmd:nc 127.0.0.1 {p}")
            });
        let qemu = [
            "qemu-system-x86_64",
            "-accel",
            &accel,
            "-m",
            "1024",
            "-smp",
            "1",
            "-display",
            "none",
            "-no-reboot",
            "-kernel",
            "/work/vmlinuz",
            "-initrd",
            "/work/initrd.img",
            "-append",
            "root=/dev/vda rw console=ttyS0",
            "-drive",
            "file=/work/disk.raw,if=virtio,format=raw",
            "-netdev",
            &netdev,
            "-device",
            "virtio-net-pci,netdev=n0",
            "-monitor",
            "unix:/work/monitor.sock,server=on,wait=off",
            "-serial",
            "file:/work/console.log",
        ];
        // QEMU runs from the tools root; /work is this run's directory. The mounts live in a
        // private mount namespace and vanish with it.
        let script = r#"set -e
T=$1; W=$2; shift 2
mkdir -p "$T/work"
mount --bind /dev "$T/dev"
mount -t proc proc "$T/proc"
mount --bind "$W" "$T/work"
exec chroot "$T" "$@""#;
        vm.qemu = Command::new("unshare")
            .args([
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                script,
                "sh",
            ])
            .arg(tools.join("rootfs"))
            .arg(&w)
            .args(qemu)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(w.join("qemu.log")).unwrap())
            .stderr(Stdio::from(
                std::fs::File::create(w.join("qemu.err")).unwrap(),
            ))
            .spawn()
            .expect("start unshare/chroot qemu-system-x86_64");
        vm
    }

    fn unmount(&mut self, path: &Path) {
        run(Command::new("umount").arg(path));
        self.mounted.retain(|p| p != path);
    }

    fn console(&self) -> String {
        let read = |f: &str| std::fs::read_to_string(self.work.path().join(f)).unwrap_or_default();
        format!("{}{}", read("qemu.err"), read("console.log"))
    }

    fn wait(&mut self, what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        while !ready() {
            assert!(
                self.qemu.try_wait().unwrap().is_none(),
                "QEMU stopped before {what}; console:\n{}",
                self.console()
            );
            assert!(
                Instant::now() < deadline,
                "no {what} within {timeout:?}; console:\n{}",
                self.console()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// The power button (HMP `system_powerdown`), then QEMU's exit (-no-reboot).
    fn power_down(&mut self, timeout: Duration) {
        let sock = self.work.path().join("monitor.sock");
        let mut mon = std::os::unix::net::UnixStream::connect(&sock).expect("QEMU monitor");
        mon.write_all(b"system_powerdown\n").unwrap();
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(s) = self.qemu.try_wait().unwrap() {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "the VM did not power off within {timeout:?}; console:\n{}",
                self.console()
            );
            std::thread::sleep(Duration::from_millis(250));
        };
        assert!(status.success(), "QEMU exited with {status}");
    }

    /// The powered-off disk, mounted read-only.
    fn mount_disk(&mut self) -> PathBuf {
        let dir = self.work.path().join("disk");
        run(Command::new("mount")
            .args(["-o", "loop,ro"])
            .arg(self.work.path().join("disk.raw"))
            .arg(&dir));
        self.mounted.push(dir.clone());
        dir
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.qemu.kill();
        let _ = self.qemu.wait();
        for p in self.mounted.drain(..) {
            let _ = Command::new("umount").arg("-l").arg(&p).status();
        }
    }
}

#[test]
#[ignore = "QEMU/TCG, 1-3 minutes: cargo test --test e2e_qemu -- --ignored --nocapture"]
fn vm_cloud_init_installs_and_starts_the_agent_and_power_button_drains_before_docker_stops() {
    require_root("the QEMU end-to-end test");
    let apt = AptRepo::serve(&build_deb());
    let node = Node::with(
        Hooks {
            launch_timeout: 600,
            ..Hooks::default()
        },
        shared_secret(),
    );
    let forwards = [
        apt.port,
        port_of(&node.moto.url),
        port_of(&node.emulator.url),
        node.imds_port as u16,
    ];
    let started = Instant::now();
    let mut vm = Vm::start(|root| prepare_guest(root, &node, &apt, HOST), &forwards);
    vm.wait("launch hook CONTINUE", Duration::from_secs(600), || {
        node.emulator
            .resolutions()
            .iter()
            .any(|(hook, result, _)| hook == "tfe-launch" && result == "CONTINUE")
    });
    let launched = started.elapsed();
    vm.power_down(Duration::from_secs(300));
    let total = started.elapsed();

    let disk = vm.mount_disk();
    assert_installed_and_configured(&disk);
    assert_served_then_drained_before_docker_stopped(&disk, &node);
    eprintln!(
        "e2e (QEMU) timings: start → launch CONTINUE {:.1?}, → powered off {:.1?}",
        launched, total
    );
}
