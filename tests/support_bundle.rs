//! `tfe-node-agent support-bundle`, end to end: the real binary against moto (the secrets), the
//! Auto Scaling + IMDSv2 emulator and the fake TFE tools, with a fake `journalctl` script. The
//! bundle's contents are unpacked and checked; a secret value planted in the journal, in
//! drain.log, or base64-encoded inside a larger blob makes it refuse (exit 14) with nothing left.

mod common;

use base64::Engine;
use common::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const BOOT: Duration = Duration::from_secs(90);
const BUNDLE: Duration = Duration::from_secs(60);

/// A `journalctl` that prints `lines` (and records its argv), like `-o short-iso` would.
fn fake_journalctl(node: &Node, lines: &str) -> PathBuf {
    let path = node.path("journalctl");
    let text = node.path("journal.txt");
    std::fs::write(&text, lines).unwrap();
    let script = format!(
        "#!/bin/sh\necho \"$@\" > {dir}/journalctl.argv\ncat {text}\n",
        dir = node.dir.path().display(),
        text = text.display()
    );
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// The node's config with `[tools].journalctl` at `journalctl`.
fn configure(node: &Node, journalctl: &Path, extra: &str) {
    node.write_config(&format!(
        "[tools] => [tools]\\njournalctl = \"{}\"\n{extra}",
        journalctl.display()
    ));
}

const JOURNAL: &str = "2026-12-03T17:00:00+0000 ip-10-0-1-5 tfe-node-agent[812]: boot started\n2026-12-03T17:00:09+0000 ip-10-0-1-5 tfe-node-agent[812]: in service\n";

/// Files of a `.tar.gz`: name (without the top directory) -> (mode, bytes).
fn unpack(path: &Path) -> (String, BTreeMap<String, (u32, Vec<u8>)>) {
    let gz = flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap());
    let mut archive = tar::Archive::new(gz);
    let mut files = BTreeMap::new();
    let mut top = String::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        let (dir, file) = name.split_once('/').expect("under one top directory");
        top = dir.to_string();
        let mode = entry.header().mode().unwrap();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).unwrap();
        files.insert(file.to_string(), (mode, bytes));
    }
    (top, files)
}

/// The archive path the command printed.
fn printed_archive(stdout: &str) -> PathBuf {
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("agent bundle: "))
        .unwrap_or_else(|| panic!("no archive path printed:\n{stdout}"));
    PathBuf::from(line.trim_end_matches(" (mode 0600)"))
}

fn assert_no_secret_in(what: &str, bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    for s in SHARED_SECRET_VALUES {
        assert!(!text.contains(s), "a secret value is in {what}");
    }
}

fn files_in(dir: &Path) -> Vec<String> {
    match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

#[test]
fn bundle_holds_every_file_with_a_right_manifest_and_reports_where_tfe_put_its_own() {
    let node = Node::new();
    let journalctl = fake_journalctl(&node, JOURNAL);
    let socket = node.path("run/agent.sock");
    configure(
        &node,
        &journalctl,
        &format!(
            "{TEST_LISTEN} => listen = [\"127.0.0.1:0\", \"unix:{}\"]",
            socket.display()
        ),
    );
    let agent = node.start(&["run"]);
    let api = agent.api_url(BOOT);
    let deadline = Instant::now() + BOOT;
    loop {
        let body = ureq::get(&format!("{api}/status"))
            .call()
            .unwrap()
            .into_string()
            .unwrap();
        let doc: Value = serde_json::from_str(&body).unwrap();
        // In service, and the first drift comparison (right after ready) done: in the bundle.
        if doc["phase"] == "in-service" && !doc["drift"].is_null() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not in service and compared: {doc:#}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = node.path("bundles");
    let run = node.run(
        &[
            "support-bundle",
            "--output",
            out.to_str().unwrap(),
            "--journal-lines",
            "50",
        ],
        BUNDLE,
    );
    run.assert_code(0);

    // TFE's bundle: the job, its prefix in the bucket, and the object the fake uploaded there.
    let job = run
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("TFE's support bundle: job "))
        .unwrap_or_else(|| panic!("no job id:\n{}", run.stdout))
        .to_string();
    assert!(job.len() == 20 && job.ends_with('Z'), "{job}");
    let prefix = format!("support-bundles/{job}/");
    assert!(
        run.stdout.contains("  bucket: tfe-data\n"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains(&format!("  prefix: {prefix}\n")),
        "{}",
        run.stdout
    );
    let uploaded = node
        .fake_state()
        .join("object-store/tfe-data")
        .join(&prefix)
        .join("10.0.1.5");
    let objects = files_in(&uploaded);
    assert!(
        objects.len() == 1
            && objects[0].starts_with("replicated-support")
            && objects[0].ends_with(".tar.gz"),
        "{objects:?}"
    );
    assert!(run
        .stdout
        .contains(&format!("  bundle: {prefix}10.0.1.5/{}", objects[0])));

    // The agent's bundle: root's (the test's user) only, every expected file, mode 0600 inside.
    let archive = printed_archive(&run.stdout);
    assert_eq!(archive.parent().unwrap(), out);
    let meta = std::fs::metadata(&archive).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o600);
    assert_eq!(meta.uid(), nix::unistd::geteuid().as_raw());
    assert_eq!(
        files_in(&out).len(),
        1,
        "no temp file left: {:?}",
        files_in(&out)
    );
    let (top, files) = unpack(&archive);
    assert!(top.starts_with("tfe-node-agent-support-"), "{top}");
    let names: Vec<&str> = files.keys().map(String::as_str).collect();
    for want in [
        "MANIFEST",
        "agent.toml",
        "drift.json",
        "install.log",
        "journal.txt",
        "state.json",
        "status.json",
        "tfe-support-bundle.txt",
        "versions.txt",
    ] {
        assert!(names.contains(&want), "{want} missing: {names:?}");
    }
    assert!(files.values().all(|(mode, _)| *mode == 0o600));
    for (name, (_, bytes)) in &files {
        assert_no_secret_in(name, bytes);
    }
    let text = |name: &str| String::from_utf8(files[name].1.clone()).unwrap();
    // The /status of the agent that runs, and state.json as recorded.
    let status: Value = serde_json::from_str(&text("status.json")).unwrap();
    assert_eq!(status["instance_id"], node.instance_id.as_str());
    let state: Value = serde_json::from_str(&text("state.json")).unwrap();
    assert_eq!(state["instance_id"], node.instance_id.as_str());
    let drift: Value = serde_json::from_str(&text("drift.json")).unwrap();
    assert_eq!(drift["drifted"], false, "{drift:#}");
    assert_eq!(text("journal.txt"), JOURNAL);
    let argv = std::fs::read_to_string(node.path("journalctl.argv")).unwrap();
    assert_eq!(
        argv.trim(),
        "-u tfe-node-agent -n 50 -o short-iso --no-pager"
    );
    assert_eq!(
        text("agent.toml"),
        std::fs::read_to_string(&node.config).unwrap()
    );
    let versions = text("versions.txt");
    assert!(versions.contains(env!("CARGO_PKG_VERSION")), "{versions}");
    assert!(versions.contains("2.53.7"), "{versions}");
    assert!(text("tfe-support-bundle.txt").contains(&prefix));

    // The MANIFEST: every file with its size and source; what is absent, and why.
    let manifest = text("MANIFEST");
    for (name, (_, bytes)) in files.iter().filter(|(n, _)| *n != "MANIFEST") {
        let row = manifest
            .lines()
            .find(|l| l.starts_with(&format!("{name}\t")))
            .unwrap_or_else(|| panic!("{name} not in the MANIFEST:\n{manifest}"));
        let cols: Vec<&str> = row.split('\t').collect();
        assert_eq!(cols[1], bytes.len().to_string(), "{row}");
        assert!(!cols[2].is_empty(), "{row}");
    }
    for absent in ["cluster.json\t", "drain.log\t", "drain.status\t"] {
        let after = manifest.split("not included:").nth(1).unwrap();
        assert!(after.contains(absent), "{absent} not noted:\n{manifest}");
    }
    assert!(
        manifest.contains("secret scan: passed; 12 secret value(s)"),
        "{manifest}"
    );
    drop(agent);
}

/// A booted node with no agent running: what a refused bundle leaves (nothing) and says.
fn refused(node: &Node, plant: impl FnOnce(&Node), file: &str, encoding: &str) {
    plant(node);
    let out = node.path("bundles");
    let run = node.run(
        &[
            "support-bundle",
            "--skip-tfe",
            "--output",
            out.to_str().unwrap(),
        ],
        BUNDLE,
    );
    run.assert_code(14);
    assert!(
        run.stderr.contains("refused") && run.stderr.contains(&format!("{file}: ")),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains(encoding), "{encoding}: {}", run.stderr);
    assert!(
        run.stderr.contains("no bundle was written"),
        "{}",
        run.stderr
    );
    assert!(
        files_in(&out).is_empty(),
        "left behind: {:?}",
        files_in(&out)
    );
}

#[test]
fn a_planted_secret_in_the_journal_in_drain_log_or_base64_encoded_refuses_the_bundle() {
    let node = Node::new();
    let journalctl = fake_journalctl(&node, JOURNAL);
    configure(&node, &journalctl, "");
    node.run(&["boot"], BOOT).assert_code(0);
    let pg = SHARED_SECRET_VALUES[1];

    // In a journal line, as is.
    refused(
        &node,
        |n| {
            fake_journalctl(n, &format!("{JOURNAL}2026-12-03T17:01:00+0000 x tfe-node-agent[812]: dsn postgres://tfe:{pg}@db\n"));
        },
        "journal.txt",
        "raw",
    );
    // The license, base64-encoded inside a larger blob, one byte off the 3-byte grid.
    refused(
        &node,
        |n| {
            let mut blob = b"X".to_vec();
            blob.extend_from_slice(SHARED_SECRET_VALUES[11].as_bytes());
            blob.extend_from_slice(b"trailer");
            let b64 = base64::engine::general_purpose::STANDARD.encode(&blob);
            fake_journalctl(
                n,
                &format!("{JOURNAL}2026-12-03T17:02:00+0000 x tfe-node-agent[812]: blob={b64}\n"),
            );
        },
        "journal.txt",
        "base64 (byte offset 1 mod 3)",
    );
    // In drain.log (the journal clean again).
    refused(
        &node,
        |n| {
            fake_journalctl(n, JOURNAL);
            let log = n.path("state/drain.log");
            std::fs::write(
                &log,
                format!("Draining node...\nredis pass {}\n", SHARED_SECRET_VALUES[2]),
            )
            .unwrap();
        },
        "drain.log",
        "raw",
    );
    // Clean again: the bundle is written.
    std::fs::remove_file(node.path("state/drain.log")).unwrap();
    let out = node.path("bundles");
    let run = node.run(
        &[
            "support-bundle",
            "--skip-tfe",
            "--output",
            out.to_str().unwrap(),
        ],
        BUNDLE,
    );
    run.assert_code(0);
    assert!(
        run.stdout.contains("skipped (--skip-tfe)"),
        "{}",
        run.stdout
    );
    let (_, files) = unpack(&printed_archive(&run.stdout));
    let manifest = String::from_utf8(files["MANIFEST"].1.clone()).unwrap();
    assert!(
        manifest.contains("status.json\tno running agent answered"),
        "{manifest}"
    );
    assert!(
        node.tool_calls("support-bundle").is_empty(),
        "--skip-tfe ran it"
    );
}

#[test]
fn a_failed_tfe_bundle_and_a_missing_journalctl_still_give_the_agents_bundle() {
    let node = Node::new();
    configure(&node, &node.path("no-such-journalctl"), "");
    node.run(&["boot"], BOOT).assert_code(0);
    node.set_behaviour(json!({"support_bundle_exit_code": 3}));
    let out = node.path("bundles");
    let run = node.run(
        &["support-bundle", "--output", out.to_str().unwrap()],
        BUNDLE,
    );
    run.assert_code(17);
    assert!(
        run.stdout.contains("TFE's support bundle failed:")
            && run.stdout.contains("exit status: 3"),
        "{}",
        run.stdout
    );
    let (_, files) = unpack(&printed_archive(&run.stdout));
    assert!(!files.contains_key("journal.txt"));
    let manifest = String::from_utf8(files["MANIFEST"].1.clone()).unwrap();
    assert!(
        manifest.contains("journal.txt\t") && manifest.contains("no-such-journalctl is not there"),
        "{manifest}"
    );
    assert_eq!(node.tool_calls("support-bundle").len(), 1);
}
