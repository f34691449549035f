//! Secret hygiene (issue 9, proof 4): one whole `run` — boot, in service, scale-in, node-drain,
//! terminate hook, SIGTERM, exit — with every secret the config supports (the shared settings,
//! the license, the console password, the TLS certificate and key, the CA bundle, and the agent's
//! own AWS secret key), each holding characters that JSON-escape, URL-encode and base64 differently
//! from the raw value. Every byte the agent emits is gathered and searched for every secret in
//! every encoding `common::hygiene` knows:
//! - its stdout and stderr;
//! - every file under its state_dir, and every other file it wrote except the TFE config files
//!   (replicated.conf, the settings file, the license, the server-path certificate and key), which
//!   hold secrets by design and are excluded by name;
//! - the argv and environment of every child it started, as the fake TFE tools record them in
//!   their call log, with their parent's (the `sh`/`bash` wrappers the agent puts in between; a
//!   parent that is the agent itself is not a child and is skipped), and those of a recording
//!   `systemctl`.
//!
//! The scanner is proven twice: the TFE config files must hold the secrets it looks for, and a
//! negative control plants a value in each encoding in a temp file and must find it.

mod common;

use base64::Engine;
use common::hygiene::{files_under, full_encodings, Scanner};
use common::*;
use serde_json::{json, Value};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BOOT: Duration = Duration::from_secs(90);
const DRAIN: Duration = Duration::from_secs(60);

/// Shared-secret settings that take any text: quotes, backslashes, non-ASCII, `+/=`, `%`, `&`,
/// `<>`, spaces, control characters; each distinct so a finding names which one leaked.
fn tricky_settings() -> Vec<(&'static str, String)> {
    vec![
        (
            "enc_password",
            "enc\"quote\\back\\slash+/=ümlaut-漢字-🔑-SECRET-1".into(),
        ),
        (
            "pg_password",
            "pg pass%20+with space&amp;<tag>'single'-SECRET-2".into(),
        ),
        ("redis_pass", "redis\nnew\tline\u{1}ctl+/=-SECRET-3".into()),
        ("install_id", "+/=+/==//++base64ish-SECRET-4".into()),
        ("root_secret", "ééé-àçcents-ß-ø-SECRET-5".into()),
        (
            "user_token",
            "tok/with/slashes?and=query&x=1#frag-SECRET-6".into(),
        ),
        (
            "archivist_token",
            "arch\\\\double-backslash\"\"-SECRET-7".into(),
        ),
        ("cookie_hash", "cookie;%;\u{7f}~!*'()-SECRET-8".into()),
        // The hex ones must stay hex; their hex, base64 and URL forms still differ from raw.
        (
            "internal_api_token",
            "5f1e0a9b8c7d6e5f4a3b2c1d0e9f8a7b".into(),
        ),
        (
            "registry_session_encryption_key",
            "0123456789abcdef0123456789abcdef".into(),
        ),
        (
            "registry_session_secret_key",
            "fedcba9876543210fedcba9876543210".into(),
        ),
    ]
}

const LICENSE: &[u8] = b"\x00\xffLICENSE+/=\"\\\xe2\x82\xac-rli-SECRET-9\n\xfe";
const CONSOLE_PASSWORD: &str = "console\"pw\\ü+/= 🔑-SECRET-10";
const TLS_CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIBcert+/=SECRET-11-body-line-one\nY2VydC1TRUNSRVQtbGluZS10d28=\n-----END CERTIFICATE-----\n";
const TLS_KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIIEkey+/=SECRET-12-body-line-one\na2V5LVNFQ1JFVC1saW5lLXR3bw==\n-----END PRIVATE KEY-----\n";
const CA_BUNDLE: &str =
    "-----BEGIN CERTIFICATE-----\nMIIBca+/=SECRET-13-bundle-line\n-----END CERTIFICATE-----\n";
/// The agent's own credentials: children must not get them (README, "Secrets stay secret").
const AWS_SECRET_KEY: &str = "aws/Secret+Key=SECRET-14/wJalrXUtnFEMI";

/// Every secret as `(label, value)`.
fn secrets() -> Vec<(String, Vec<u8>)> {
    let mut all: Vec<(String, Vec<u8>)> = tricky_settings()
        .into_iter()
        .map(|(k, v)| (format!("setting {k}"), v.into_bytes()))
        .collect();
    all.push(("the license".into(), LICENSE.to_vec()));
    all.push(("the console password".into(), CONSOLE_PASSWORD.into()));
    all.push(("the TLS certificate".into(), TLS_CERT.into()));
    all.push(("the TLS key".into(), TLS_KEY.into()));
    all.push(("the CA bundle".into(), CA_BUNDLE.into()));
    all.push(("the AWS secret access key".into(), AWS_SECRET_KEY.into()));
    all
}

/// A `systemctl` that records its argv and environment in `systemctl.record`, and its parent's
/// in `systemctl.parent.<pid>` (skipped when the parent is the agent itself), then says
/// "running" (so SIGTERM stops only the agent).
fn recording_systemctl(dir: &Path) -> (PathBuf, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let record = dir.join("systemctl.record");
    let script = dir.join("systemctl");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n{{ echo \"argv: $0 $*\"; env; }} >> '{0}'\n\
             {{ tr '\\0' ' ' < /proc/$PPID/cmdline; echo; tr '\\0' '\\n' < /proc/$PPID/environ; }} \
             >> '{1}.parent.'$PPID\necho running\n",
            record.display(),
            dir.join("systemctl").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    (script, record)
}

/// The agent, its raw output collected as it comes.
struct Running {
    child: std::process::Child,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
}

impl Running {
    fn start(mut cmd: std::process::Command) -> Self {
        let mut child = cmd.spawn().expect("spawn agent");
        let collect = |mut r: Box<dyn Read + Send>| {
            let buf = Arc::new(Mutex::new(Vec::new()));
            let sink = buf.clone();
            std::thread::spawn(move || {
                let mut chunk = [0u8; 8192];
                while let Ok(n) = r.read(&mut chunk) {
                    if n == 0 {
                        break;
                    }
                    sink.lock().unwrap().extend_from_slice(&chunk[..n]);
                }
            });
            buf
        };
        let stdout = collect(Box::new(child.stdout.take().unwrap()));
        let stderr = collect(Box::new(child.stderr.take().unwrap()));
        Running {
            child,
            stdout,
            stderr,
        }
    }

    fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    fn wait_line(&self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.stderr_text().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "no {needle:?} within {timeout:?}; stderr:\n{}",
                self.stderr_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(200)); // the readers' last bytes
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "agent did not exit within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The argv and environment of every child in the fake tools' call log, and of each child's
/// parent unless that is the agent itself, as `(where, bytes)`.
fn child_processes(node: &Node, agent_pid: i64) -> (Vec<(String, Vec<u8>)>, Vec<Value>) {
    let mut parts = Vec::new();
    let starts: Vec<Value> = node
        .calls()
        .into_iter()
        .filter(|c| c["event"] == "start")
        .collect();
    let env_text = |env: &Value| -> Vec<u8> {
        env.as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| format!("{k}={}\n", v.as_str().unwrap_or_default()))
                    .collect::<String>()
            })
            .unwrap_or_default()
            .into_bytes()
    };
    let argv_text = |argv: &Value| -> Vec<u8> {
        argv.as_array()
            .map(|a| {
                a.iter()
                    .map(|w| w.as_str().unwrap_or_default())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default()
            .into_bytes()
    };
    for c in &starts {
        let what = format!(
            "{} {} (pid {})",
            c["tool"].as_str().unwrap_or("?"),
            String::from_utf8_lossy(&argv_text(&c["argv"])),
            c["pid"]
        );
        parts.push((format!("argv of {what}"), argv_text(&c["argv"])));
        parts.push((format!("environment of {what}"), env_text(&c["env"])));
        let parent = &c["parent"];
        if parent.is_object() && parent["pid"].as_i64() != Some(agent_pid) {
            parts.push((
                format!("argv of the parent of {what}"),
                argv_text(&parent["argv"]),
            ));
            parts.push((
                format!("environment of the parent of {what}"),
                env_text(&parent["env"]),
            ));
        }
    }
    (parts, starts)
}

/// A node whose config uses every secret, with a recording `systemctl`.
struct HygieneNode {
    node: Node,
    systemctl: PathBuf,
    systemctl_record: PathBuf,
}

fn hygiene_node() -> HygieneNode {
    let mut shared = serde_json::Map::new();
    for (k, v) in tricky_settings() {
        shared.insert(k.into(), json!(v));
    }
    let node = Node::with(Hooks::default(), Value::Object(shared));
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    node.put_secret("tfe/hygiene-license", SecretValue::Binary(b64(LICENSE)));
    node.put_secret("tfe/console", SecretValue::String(CONSOLE_PASSWORD.into()));
    node.put_secret("tfe/tls-cert", SecretValue::String(TLS_CERT.into()));
    node.put_secret("tfe/tls-key", SecretValue::String(TLS_KEY.into()));
    node.put_secret("tfe/ca", SecretValue::String(CA_BUNDLE.into()));
    let (systemctl, systemctl_record) = recording_systemctl(node.dir.path());
    node.set_behaviour(json!({"drain_duration_s": 0.5}));
    node.write_config(&format!(
        r#"license = "tfe/license" => license = "tfe/hygiene-license"
# console_password = "tfe/console" => console_password = "tfe/console"
# tls_cert = "tfe/tls-cert"  tls_key = "tfe/tls-key"  ca_bundle = "tfe/ca" => tls_cert = "tfe/tls-cert"\ntls_key = "tfe/tls-key"\nca_bundle = "tfe/ca"
tls_bootstrap_type = "self-signed" => tls_bootstrap_type = "server-path"
# systemctl = "/usr/bin/systemctl" => systemctl = "{}"
poll_interval = "1s" => poll_interval = "200ms"
wait_state_timeout = "5m" => wait_state_timeout = "30s""#,
        systemctl.display()
    ));
    HygieneNode {
        node,
        systemctl,
        systemctl_record,
    }
}

impl HygieneNode {
    fn start(&self) -> Running {
        let mut cmd = self.node.agent(&["run"]);
        cmd.env("AWS_SECRET_ACCESS_KEY", AWS_SECRET_KEY);
        Running::start(cmd)
    }

    fn sigterm(&self, agent: &mut Running) -> Option<i32> {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(agent.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        agent.wait_exit(Duration::from_secs(20))
    }

    /// Every byte the agent emitted, as `(where, bytes)`, and the call log's start records.
    fn emitted(&self, agent: &Running) -> (Vec<(String, Vec<u8>)>, Vec<Value>) {
        let node = &self.node;
        let etc = node.path("etc");
        let fake = node.fake_state();
        // The TFE config files hold secrets by design (that is what they are for): excluded by
        // name.
        let by_design = [
            "replicated.conf",
            "ptfe-settings.json",
            "ptfe-license.rli",
            "cert.pem",
            "key.pem",
        ];
        let is_by_design = |p: &Path| {
            p.parent() == Some(etc.as_path())
                && by_design
                    .iter()
                    .any(|n| p.file_name().is_some_and(|f| f == *n))
        };
        // Not the agent's output: the test's own inputs, and the fake tools' state (their
        // "daemon database" holds the imported settings, as TFE's does); their call log is read
        // record by record instead. The systemctl record is read as a file: it is all children.
        let agent_itself = node.path(&format!("systemctl.parent.{}", agent.child.id()));
        let not_emitted = |p: &Path| {
            p.starts_with(&fake)
                || p == node.config.as_path()
                || p == self.systemctl.as_path()
                || p == agent_itself.as_path()
        };
        let mut parts = vec![
            ("stdout".to_string(), agent.stdout.lock().unwrap().clone()),
            ("stderr".to_string(), agent.stderr.lock().unwrap().clone()),
        ];
        parts.extend(files_under(node.dir.path(), &|p: &Path| {
            is_by_design(p) || not_emitted(p)
        }));
        let (children, starts) = child_processes(node, agent.child.id() as i64);
        parts.extend(children);
        (parts, starts)
    }
}

#[test]
fn no_secret_reaches_output_files_or_any_child_in_a_whole_boot_and_termination() {
    let h = hygiene_node();
    let node = &h.node;
    let mut agent = h.start();
    let agent_pid = agent.child.id() as i64;
    agent.wait_line("is in service", BOOT);
    node.scale_in(0.0);
    agent.wait_line("terminate hook tfe-terminate released with CONTINUE", DRAIN);
    let code = h.sigterm(&mut agent);
    assert_eq!(code, Some(0), "stderr:\n{}", agent.stderr_text());
    assert_eq!(
        node.emulator.resolutions(),
        vec![
            ("tfe-launch".into(), "CONTINUE".into(), "complete".into()),
            ("tfe-terminate".into(), "CONTINUE".into(), "complete".into()),
        ],
        "the whole lifecycle ran"
    );

    let (parts, starts) = h.emitted(&agent);
    let state_files: Vec<&String> = parts
        .iter()
        .map(|(p, _)| p)
        .filter(|p| p.contains("/state/"))
        .collect();
    assert!(
        state_files.iter().any(|p| p.ends_with("state.json"))
            && state_files.iter().any(|p| p.ends_with("drain.log")),
        "the state dir has what a whole lifecycle leaves: {state_files:?}"
    );
    // The children that must have been seen, so the scan covered each kind.
    let kinds = |word: &str| {
        starts
            .iter()
            .filter(|c| {
                c["argv"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|w| w == word))
            })
            .count()
    };
    assert_eq!(
        starts.iter().filter(|c| c["tool"] == "install.sh").count(),
        1
    );
    for word in ["status", "health-check", "node-drain", "stop"] {
        assert!(kinds(word) >= 1, "no {word} call was recorded");
    }
    let wrapped = starts
        .iter()
        .filter(|c| {
            c["parent"]["pid"].as_i64() != Some(agent_pid)
                && c["parent"]["argv"][0]
                    .as_str()
                    .is_some_and(|a| a.ends_with("sh"))
        })
        .count();
    assert!(
        wrapped >= 1,
        "no child behind an sh/bash wrapper was recorded"
    );

    let scanner = Scanner::new(&secrets());
    let leaks = scanner.leaks(&parts);
    assert!(
        leaks.is_empty(),
        "secret values found where the agent must never put them:\n  {}",
        leaks.join("\n  ")
    );

    // The scanner finds what is there: each file-borne secret is in its TFE file.
    let etc = node.path("etc");
    let in_file = |name: &str| -> Vec<String> {
        let bytes = std::fs::read(etc.join(name)).unwrap();
        scanner.find(&bytes)
    };
    let settings = in_file("ptfe-settings.json");
    for (key, _) in tricky_settings() {
        assert!(
            settings
                .iter()
                .any(|f| f.starts_with(&format!("setting {key} "))),
            "{key} not found in the settings file: {settings:?}"
        );
    }
    assert!(settings.iter().any(|f| f.starts_with("the CA bundle ")));
    assert!(in_file("replicated.conf")
        .iter()
        .any(|f| f.starts_with("the console password ")));
    assert!(in_file("ptfe-license.rli")
        .iter()
        .any(|f| f == "the license (raw)"));
    assert!(in_file("cert.pem")
        .iter()
        .any(|f| f == "the TLS certificate (raw)"));
    assert!(in_file("key.pem").iter().any(|f| f == "the TLS key (raw)"));
    println!(
        "secret hygiene: {} secrets in {} forms searched in {} places ({} bytes, {} child processes): no leak",
        secrets().len(),
        scanner.needles().len(),
        parts.len(),
        parts.iter().map(|(_, b)| b.len()).sum::<usize>(),
        starts.len()
    );
}

/// The one child the lifecycle above never starts: on a SIGTERM with no termination under way
/// the agent asks `systemctl is-system-running` whether the whole system is stopping.
#[test]
fn a_sigterm_in_service_asks_systemctl_without_handing_it_a_secret() {
    let h = hygiene_node();
    let mut agent = h.start();
    agent.wait_line("is in service", BOOT);
    assert_eq!(h.sigterm(&mut agent), Some(0), "{}", agent.stderr_text());
    let record = std::fs::read(&h.systemctl_record).unwrap_or_default();
    assert!(
        String::from_utf8_lossy(&record).contains("is-system-running"),
        "the SIGTERM asked systemctl"
    );
    let (parts, _) = h.emitted(&agent);
    assert!(parts.iter().any(|(p, _)| p.ends_with("systemctl.record")));
    let leaks = Scanner::new(&secrets()).leaks(&parts);
    assert!(
        leaks.is_empty(),
        "secret values found where the agent must never put them:\n  {}",
        leaks.join("\n  ")
    );
}

#[test]
fn the_scanner_finds_a_planted_value_in_every_encoding_and_nothing_in_clean_text() {
    // The same gathering and scanning code as above, over planted files.
    let dir = tempfile::tempdir().unwrap();
    let secret = CONSOLE_PASSWORD.as_bytes();
    let scanner = Scanner::new(&[("planted", secret)]);
    let mut planted: Vec<(String, Vec<u8>)> = full_encodings(secret)
        .into_iter()
        .map(|(name, bytes)| (name.to_string(), bytes))
        .collect();
    let doc = json!({"password": CONSOLE_PASSWORD}).to_string();
    for pad in 0..3 {
        // base64 of a document that holds the value, at each alignment.
        let text = format!("{}{doc}", "x".repeat(pad));
        planted.push((
            format!("base64 of a JSON document, offset {pad}"),
            base64::engine::general_purpose::STANDARD
                .encode(text.as_bytes())
                .into_bytes(),
        ));
    }
    planted.push(("JSON document".into(), doc.clone().into_bytes()));
    planted.push((
        "Python-style ASCII JSON".into(),
        b"{\"p\": \"console\\\"pw\\\\\\u00fc+/= \\ud83d\\udd11-SECRET-10\"}".to_vec(),
    ));
    let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    planted.push(("hex".into(), hex.into_bytes()));
    let url: String = secret
        .iter()
        .map(|&b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();
    planted.push(("URL-encoded".into(), url.into_bytes()));
    planted.push(("raw".into(), secret.to_vec()));
    for (i, (name, bytes)) in planted.iter().enumerate() {
        let mut content = b"some log line before\n".to_vec();
        content.extend_from_slice(bytes);
        content.extend_from_slice(b"\nand after\n");
        std::fs::write(dir.path().join(format!("{i}.log")), content).unwrap();
        let found = scanner.leaks(&files_under(dir.path(), &|p: &Path| {
            p.file_name().unwrap() != format!("{i}.log").as_str()
        }));
        assert!(!found.is_empty(), "a value planted as {name} was not found");
    }
    // Clean text, and near misses (the value with one character changed), are not findings.
    let mut near = secret.to_vec();
    near[3] ^= 0x01;
    std::fs::write(
        dir.path().join("clean.log"),
        [b"console pw redacted: <redacted>\n".as_slice(), &near].concat(),
    )
    .unwrap();
    let clean = scanner.leaks(&files_under(dir.path(), &|p: &Path| {
        p.file_name().unwrap() != "clean.log"
    }));
    assert!(clean.is_empty(), "false findings: {clean:?}");
}
