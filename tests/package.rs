//! The .deb (cargo-deb) and the .rpm (cargo-generate-rpm) built by `bash packaging/build.sh`,
//! inspected with the distributions' own tools: `dpkg-deb` and `rpm -qp`. The build runs once per
//! test binary (a fresh clone works; it takes a release build). Tools: `tests/setup.sh` installs
//! cargo-deb, cargo-generate-rpm, dpkg and rpm.
//!
//! Nothing is installed and no maintainer script is run: the scripts are only read (and
//! syntax-checked with `sh -n`) for what they must and must never do.

#[path = "common/packages.rs"]
mod packages;

use packages::Packages;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

const DOC: &str = "/usr/share/doc/tfe-node-agent";
const EXAMPLE: &str = "/etc/tfe-node-agent/agent.toml.example";
const DEB_UNIT: &str = "/lib/systemd/system/tfe-node-agent.service";
const RPM_UNIT: &str = "/usr/lib/systemd/system/tfe-node-agent.service";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Panics naming tests/setup.sh when `cmd args` cannot run at all.
fn require(cmd: &str, args: &[&str], what: &str) {
    let ok = Command::new(cmd)
        .args(args)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        ok,
        "`{cmd} {}` failed: {what} is missing; run `bash tests/setup.sh` to install it",
        args.join(" ")
    );
}

fn run(cmd: &str, args: &[&str]) -> Output {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {cmd}: {e} (run `bash tests/setup.sh`)"));
    assert!(
        out.status.success(),
        "`{cmd} {}` failed ({}):\n{}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(cmd: &str, args: &[&str]) -> String {
    String::from_utf8(run(cmd, args).stdout).expect("utf-8 output")
}

/// Builds the packages once per test binary, after checking the tools are there.
fn packages() -> &'static Packages {
    static PACKAGES: OnceLock<Packages> = OnceLock::new();
    PACKAGES.get_or_init(|| {
        require("cargo", &["deb", "--version"], "cargo-deb");
        require(
            "cargo",
            &["generate-rpm", "--version"],
            "cargo-generate-rpm",
        );
        require("dpkg-deb", &["--version"], "dpkg-deb (Debian package dpkg)");
        require("rpm", &["--version"], "rpm (Debian package rpm)");
        packages::build()
    })
}

fn deb() -> &'static str {
    packages().deb.to_str().expect("utf-8 path")
}

fn rpm() -> &'static str {
    packages().rpm.to_str().expect("utf-8 path")
}

/// The cloud-init templates of the repo, as installed paths under `DOC/cloud-init/`.
fn cloud_init_templates() -> Vec<(PathBuf, String)> {
    let mut found: Vec<(PathBuf, String)> = std::fs::read_dir(repo().join("cloud-init"))
        .expect("reading cloud-init/")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| {
            let name = p.file_name().unwrap().to_str().unwrap().to_owned();
            (p, format!("{DOC}/cloud-init/{name}"))
        })
        .collect();
    found.sort();
    assert!(found.len() >= 2, "expected the cloud-init templates");
    found
}

/// The operator's manual of the repo (`docs/operate/*.md`), as installed paths under
/// `DOC/operate/`. Only this part of `docs/` is shipped: development and design notes are not.
fn operate_docs() -> Vec<(PathBuf, String)> {
    let mut found: Vec<(PathBuf, String)> = std::fs::read_dir(repo().join("docs/operate"))
        .expect("reading docs/operate/")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .map(|p| {
            let name = p.file_name().unwrap().to_str().unwrap().to_owned();
            (p, format!("{DOC}/operate/{name}"))
        })
        .collect();
    found.sort();
    assert!(
        found
            .iter()
            .any(|(_, dest)| dest == &format!("{DOC}/operate/README.md")),
        "expected docs/operate/README.md, the manual's index"
    );
    found
}

/// (repo source, installed path, mode) of every file both packages carry. The unit's directory
/// differs: `unit` is DEB_UNIT or RPM_UNIT.
fn expected_files(unit: &str) -> Vec<(PathBuf, String, u32)> {
    let mut files = vec![
        (
            repo().join("target/release/tfe-node-agent"),
            "/usr/bin/tfe-node-agent".to_owned(),
            0o755,
        ),
        (
            repo().join("systemd/tfe-node-agent.service"),
            unit.to_owned(),
            0o644,
        ),
        (
            repo().join("packaging/agent.toml.example"),
            EXAMPLE.to_owned(),
            0o600,
        ),
        (repo().join("README.md"), format!("{DOC}/README.md"), 0o644),
        (
            repo().join("packaging/iam-policy.json"),
            format!("{DOC}/iam-policy.json"),
            0o644,
        ),
        (
            repo().join("packaging/iam-repave-policy.json"),
            format!("{DOC}/iam-repave-policy.json"),
            0o644,
        ),
    ];
    for (src, dest) in cloud_init_templates() {
        files.push((src, dest, 0o644));
    }
    for (src, dest) in operate_docs() {
        files.push((src, dest, 0o644));
    }
    files
}

/// Lines of a maintainer script that would start or enable the agent: never allowed, cloud-init
/// does that once agent.toml exists.
fn starting_lines(script: &str) -> Vec<String> {
    script
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.contains("systemctl start")
                || l.contains("enable --now")
                || l.contains("systemctl enable")
                || l.contains("systemctl restart")
                || l.contains("systemctl reload-or-restart")
                || l.contains("deb-systemd-invoke")
        })
        .map(str::to_owned)
        .collect()
}

/// What the install/upgrade script must do (deb postinst, rpm %post).
fn check_post_install(name: &str, script: &str) {
    for needle in [
        "[ -d /run/systemd/system ]",
        "systemctl daemon-reload",
        "install -d -o root -g root -m 0700 /etc/tfe-node-agent",
        "chmod 0700 /etc/tfe-node-agent",
        "[ -f /etc/tfe-node-agent/agent.toml ]",
        "systemctl is-enabled --quiet",
        "systemctl is-active --quiet",
        "systemctl try-restart --no-block",
    ] {
        assert!(
            script.contains(needle),
            "{name} lacks {needle:?}:\n{script}"
        );
    }
    assert_eq!(starting_lines(script), Vec::<String>::new(), "{name}");
}

/// What the removal script must do (deb prerm, rpm %preun).
fn check_pre_remove(name: &str, script: &str) {
    for needle in ["systemctl stop \"$unit\"", "systemctl disable \"$unit\""] {
        assert!(
            script.contains(needle),
            "{name} lacks {needle:?}:\n{script}"
        );
    }
    assert_eq!(starting_lines(script), Vec::<String>::new(), "{name}");
}

fn check_post_remove(name: &str, script: &str) {
    assert!(
        script.contains("systemctl daemon-reload"),
        "{name} lacks daemon-reload:\n{script}"
    );
    assert!(
        !script.lines().any(|l| l.trim_start().starts_with("rm ")),
        "{name} must never delete agent.toml or the state:\n{script}"
    );
    assert_eq!(starting_lines(script), Vec::<String>::new(), "{name}");
}

fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

#[test]
fn deb_installs_the_files_with_their_modes_and_contents() {
    let root = tempfile::tempdir().unwrap();
    run("dpkg-deb", &["-x", deb(), root.path().to_str().unwrap()]);
    for (src, dest, mode) in expected_files(DEB_UNIT) {
        let got = root.path().join(dest.trim_start_matches('/'));
        assert!(got.is_file(), "{dest} missing from the .deb");
        assert_eq!(mode_of(&got), mode, "mode of {dest} in the .deb");
        if dest != "/usr/bin/tfe-node-agent" {
            // cargo-deb strips the binary; everything else must be the repo's file, byte for byte.
            assert!(
                std::fs::read(&got).unwrap() == std::fs::read(&src).unwrap(),
                "{dest} in the .deb differs from {}",
                src.display()
            );
        }
    }
    let policy: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            root.path()
                .join("usr/share/doc/tfe-node-agent/iam-policy.json"),
        )
        .unwrap(),
    )
    .expect("iam-policy.json in the .deb is JSON");
    assert_eq!(policy["Version"], "2012-10-17");
    // The real config is cloud-init's, never the package's.
    assert!(!root.path().join("etc/tfe-node-agent/agent.toml").exists());
    // The unit's Documentation= points at the packaged operator's manual, which is there.
    let unit = std::fs::read_to_string(root.path().join(DEB_UNIT.trim_start_matches('/'))).unwrap();
    let manual = format!("{DOC}/operate/README.md");
    assert!(
        unit.contains(&format!("Documentation=file:{manual}")),
        "Documentation= of the unit is not file:{manual}"
    );
    assert!(root.path().join(manual.trim_start_matches('/')).is_file());
    // Developer and design notes stay in the source tree.
    for dir in ["development", "design"] {
        assert!(
            !root
                .path()
                .join(DOC.trim_start_matches('/'))
                .join(dir)
                .exists(),
            "{DOC}/{dir} must not be shipped"
        );
    }
    // The binary runs.
    let bin = root.path().join("usr/bin/tfe-node-agent");
    let help = run(bin.to_str().unwrap(), &["--help"]);
    assert!(String::from_utf8_lossy(&help.stdout).contains("run"));
}

#[test]
fn deb_files_are_owned_by_root() {
    let listing = stdout("dpkg-deb", &["-c", deb()]);
    let mut paths = BTreeSet::new();
    for line in listing.lines() {
        // drwxr-xr-x root/root         0 2024-01-01 00:00 ./usr/bin/
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert!(fields.len() >= 6, "odd dpkg-deb -c line {line:?}");
        // cargo-deb writes numeric owners: 0/0 is root/root.
        assert!(
            fields[1] == "root/root" || fields[1] == "0/0",
            "not root-owned: {line}"
        );
        paths.insert(
            fields[5]
                .trim_start_matches('.')
                .trim_end_matches('/')
                .to_owned(),
        );
    }
    for (_, dest, _) in expected_files(DEB_UNIT) {
        assert!(
            paths.contains(&dest),
            "{dest} not in dpkg-deb -c:\n{listing}"
        );
    }
}

#[test]
fn deb_control_conffiles_and_maintainer_scripts() {
    let ctrl = tempfile::tempdir().unwrap();
    let dir = ctrl.path().join("DEBIAN");
    run("dpkg-deb", &["-e", deb(), dir.to_str().unwrap()]);

    let conffiles = std::fs::read_to_string(dir.join("conffiles")).expect("a conffiles file");
    assert_eq!(
        conffiles.lines().collect::<Vec<_>>(),
        [EXAMPLE],
        "conffiles: only the example config (agent.toml is cloud-init's)"
    );
    let control = stdout("dpkg-deb", &["-f", deb(), "Package", "Version"]);
    assert!(control.contains("Package: tfe-node-agent"), "{control}");
    assert!(
        control.contains(&format!("Version: {}", env!("CARGO_PKG_VERSION"))),
        "{control}"
    );

    // The scripts are ours, unchanged: cargo-deb added no systemd snippets (no enable/start).
    for name in ["postinst", "prerm", "postrm"] {
        let got = dir.join(name);
        assert_eq!(mode_of(&got), 0o755, "mode of DEBIAN/{name}");
        assert_eq!(
            std::fs::read_to_string(&got).unwrap(),
            std::fs::read_to_string(repo().join("packaging/deb").join(name)).unwrap(),
            "DEBIAN/{name} differs from packaging/deb/{name}"
        );
        run("sh", &["-n", got.to_str().unwrap()]);
    }
    assert!(!dir.join("preinst").exists(), "no preinst expected");
    let script = |n: &str| std::fs::read_to_string(dir.join(n)).unwrap();
    check_post_install("postinst", &script("postinst"));
    assert!(
        script("postinst").contains("if [ -n \"$2\" ]"),
        "restart only on upgrade"
    );
    check_pre_remove("prerm", &script("prerm"));
    check_post_remove("postrm", &script("postrm"));
}

/// `rpm -qp --qf` over every file: path, octal mode, owner, group, flags.
fn rpm_files() -> Vec<(String, u32, String, String, String)> {
    let out = stdout(
        "rpm",
        &[
            "-qp",
            "--qf",
            "[%{FILENAMES}\\t%{FILEMODES:octal}\\t%{FILEUSERNAME}\\t%{FILEGROUPNAME}\\t%{FILEFLAGS:fflags}\\n]",
            rpm(),
        ],
    );
    out.lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            assert_eq!(f.len(), 5, "odd rpm --qf line {l:?}");
            let mode = u32::from_str_radix(f[1], 8).unwrap_or_else(|_| panic!("mode in {l:?}"));
            (
                f[0].to_owned(),
                mode,
                f[2].to_owned(),
                f[3].to_owned(),
                f[4].to_owned(),
            )
        })
        .collect()
}

#[test]
fn rpm_lists_the_same_files_with_modes_owners_and_config_flags() {
    let expected = expected_files(RPM_UNIT);
    let listed: BTreeSet<String> = stdout("rpm", &["-qlp", rpm()])
        .lines()
        .map(str::to_owned)
        .collect();
    let want: BTreeSet<String> = expected.iter().map(|(_, d, _)| d.clone()).collect();
    assert!(
        want.is_subset(&listed),
        "rpm -qlp lacks {:?}",
        want.difference(&listed).collect::<Vec<_>>()
    );
    // Same contents as the .deb but for the unit's directory.
    let deb_want: BTreeSet<String> = expected_files(DEB_UNIT)
        .into_iter()
        .map(|(_, d, _)| {
            if d == DEB_UNIT {
                RPM_UNIT.to_owned()
            } else {
                d
            }
        })
        .collect();
    assert_eq!(want, deb_want);

    let files = rpm_files();
    for (_, dest, mode) in &expected {
        let (_, got_mode, user, group, flags) = files
            .iter()
            .find(|f| &f.0 == dest)
            .unwrap_or_else(|| panic!("{dest} not in the rpm"));
        assert_eq!(got_mode & 0o7777, *mode, "mode of {dest} in the rpm");
        assert_eq!(got_mode & 0o170000, 0o100000, "{dest} is a regular file");
        assert_eq!((user.as_str(), group.as_str()), ("root", "root"), "{dest}");
        if dest == EXAMPLE {
            // %config(noreplace): an upgrade never overwrites an edited copy.
            assert!(
                flags.contains('c') && flags.contains('n'),
                "{dest} flags {flags:?}"
            );
        } else if dest.starts_with(DOC) {
            assert!(
                flags.contains('d') && !flags.contains('c'),
                "{dest} flags {flags:?}"
            );
        } else {
            assert!(!flags.contains('c'), "{dest} must not be a config file");
        }
    }
    let configs = stdout("rpm", &["-qp", "--configfiles", rpm()]);
    assert_eq!(configs.lines().collect::<Vec<_>>(), [EXAMPLE]);
    let name = stdout("rpm", &["-qp", "--qf", "%{NAME} %{VERSION}", rpm()]);
    assert_eq!(
        name,
        format!("tfe-node-agent {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn rpm_scriptlets_never_start_the_agent() {
    let scripts = stdout("rpm", &["-qp", "--scripts", rpm()]);
    // rpm prints each as a header line "<name> scriptlet:" (rpm 4.18; older ones add
    // " (using /bin/sh)") followed by its text.
    let is_header = |l: &str| l.contains(" scriptlet") && l.ends_with(':') && !l.starts_with(' ');
    let section = |header: &str| -> String {
        let mut lines = scripts.lines().skip_while(|l| !l.starts_with(header));
        assert!(
            lines.next().is_some(),
            "no {header:?} in rpm --scripts:\n{scripts}"
        );
        lines
            .take_while(|l| !is_header(l))
            .collect::<Vec<_>>()
            .join("\n")
    };
    for (header, file) in [
        ("postinstall scriptlet", "post.sh"),
        ("preuninstall scriptlet", "preun.sh"),
        ("postuninstall scriptlet", "postun.sh"),
    ] {
        let body = section(header);
        let src = std::fs::read_to_string(repo().join("packaging/rpm").join(file)).unwrap();
        assert_eq!(
            body.trim_end(),
            src.trim_end(),
            "{header} differs from packaging/rpm/{file}"
        );
        run(
            "sh",
            &[
                "-n",
                repo().join("packaging/rpm").join(file).to_str().unwrap(),
            ],
        );
    }
    assert!(
        !scripts.contains("preinstall scriptlet"),
        "no %pre expected"
    );
    check_post_install("%post", &section("postinstall scriptlet"));
    assert!(
        section("postinstall scriptlet").contains("[ \"$1\" -ge 2 ]"),
        "restart only on upgrade"
    );
    check_pre_remove("%preun", &section("preuninstall scriptlet"));
    assert!(
        section("preuninstall scriptlet").contains("[ \"$1\" -eq 0 ]"),
        "stop only on removal"
    );
    check_post_remove("%postun", &section("postuninstall scriptlet"));
}
