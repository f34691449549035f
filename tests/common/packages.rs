//! The .deb and the .rpm as `bash packaging/build.sh` builds them (a release build, then cargo-deb
//! and cargo-generate-rpm), for tests/package.rs and the end-to-end tests.

use std::path::PathBuf;
use std::process::Command;

pub struct Packages {
    pub deb: PathBuf,
    pub rpm: PathBuf,
}

/// Runs `bash packaging/build.sh`; its last two stdout lines are the .deb and the .rpm, each
/// checked to be a file of that kind under target/.
pub fn build() -> Packages {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("bash")
        .arg(repo.join("packaging/build.sh"))
        .current_dir(&repo)
        .output()
        .expect("running bash packaging/build.sh");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "bash packaging/build.sh failed ({}):\n{text}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() >= 2, "build.sh printed no paths: {text:?}");
    let (deb, rpm) = (
        PathBuf::from(lines[lines.len() - 2]),
        PathBuf::from(lines[lines.len() - 1]),
    );
    assert!(
        deb.extension().is_some_and(|e| e == "deb") && deb.is_file(),
        "{deb:?}"
    );
    assert!(
        rpm.extension().is_some_and(|e| e == "rpm") && rpm.is_file(),
        "{rpm:?}"
    );
    for p in [&deb, &rpm] {
        assert!(
            p.starts_with(repo.join("target")),
            "{p:?} is not under target/"
        );
    }
    Packages { deb, rpm }
}
