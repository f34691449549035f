//! One TFE node's world (secrets in moto, an instance with hooks in the emulator, the fake TFE
//! tools' state, the agent's config) and the real agent binary run in it, in the background
//! ([`Agent`]) or to completion ([`Run`]). No secret value may appear in the agent's output.

use super::emulator::Emulator;
use super::moto::{AwsKey, Moto, SecretValue};
use super::processes::repo;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One TFE node's world: secrets in moto, an ASG instance with hooks in the emulator, the fake
/// TFE tools' state dir, and the agent's config and output paths in a temp dir.
pub struct Node {
    pub dir: tempfile::TempDir,
    /// This node's own moto, or one shared by several nodes (see `Node::on_moto`).
    pub moto: Arc<Moto>,
    /// The moto account holding this node's secrets (None: the default account of its own moto).
    pub account: Option<String>,
    /// The agent's AWS credentials (they select `account`).
    pub aws_key: AwsKey,
    pub emulator: Emulator,
    pub instance_id: String,
    pub imds_port: u64,
    pub config: PathBuf,
}

pub const SHARED_SECRET_VALUES: &[&str] = &[
    "enc-SECRET-767fee4e6046de48",
    "pg-SECRET-password",
    "redis-SECRET-pass",
    "28f5d86814893a45faafbff52ad1efc0",
    "e41028914bbe63f1bb6f3c6a59be7cd5",
    "87c07f934a979d9e071dc30bdc570dd4",
    "8975b57fb001517fe009b310da90afcd",
    "5ae19acaf6d4fdc75caa8fd9256c5576",
    "80fc62a320240b02e28da24c3554e1c4",
    "978a42cd38a567d7fb1456c8991cb541",
    "99934b8d65bf743a324a42de4491fb95",
    // Of a license's size: preflight refuses a short line as a placeholder.
    "LICENSE-SECRET-BYTES-3f1c9a7e5b2d4086a1e7c3b9d5f20468-0c7e1a9b3d5f7264e8a0c2b4d6f81357",
];

pub fn shared_secret() -> Value {
    let v = SHARED_SECRET_VALUES;
    json!({
        "enc_password": v[0], "pg_password": v[1], "redis_pass": v[2],
        "install_id": v[3], "root_secret": v[4], "user_token": v[5], "archivist_token": v[6],
        "cookie_hash": v[7], "internal_api_token": v[8],
        "registry_session_encryption_key": v[9], "registry_session_secret_key": v[10],
    })
}

/// Creates a node's secrets in moto `account` (None: moto's default account): `tfe/shared` (this
/// JSON) and `tfe/license` (the last of [`SHARED_SECRET_VALUES`], as SecretBinary).
fn put_node_secrets(moto: &Moto, account: Option<&str>, shared: &Value) {
    moto.put_secret_in(
        account,
        "tfe/shared",
        SecretValue::String(shared.to_string()),
    );
    use base64::Engine;
    let license = base64::engine::general_purpose::STANDARD.encode(SHARED_SECRET_VALUES[11]);
    moto.put_secret_in(account, "tfe/license", SecretValue::Binary(license));
}

impl Moto {
    /// moto holding a node's secrets: `tfe/shared` (this JSON) and `tfe/license`.
    pub fn with_secrets(shared: Value) -> Self {
        let moto = Moto::start();
        put_node_secrets(&moto, None, &shared);
        moto
    }
}

/// Hook settings for a node.
pub struct Hooks {
    pub launch_timeout: u64,
    pub terminate_timeout: u64,
    /// The group's RetentionTriggers.TerminateHookAbandon = retain.
    pub retain: bool,
    /// A spot instance (IMDS instance-life-cycle = spot).
    pub spot: bool,
}

impl Default for Hooks {
    fn default() -> Self {
        Hooks {
            launch_timeout: 60,
            terminate_timeout: 60,
            retain: false,
            spot: false,
        }
    }
}

impl Node {
    /// A launched instance (Pending:Wait on `tfe-launch`), valid secrets, fast fake TFE.
    pub fn new() -> Self {
        Self::with(Hooks::default(), shared_secret())
    }

    pub fn with(hooks: Hooks, shared: Value) -> Self {
        Self::build(
            hooks,
            Some(shared),
            Arc::new(Moto::start()),
            None,
            AwsKey::testing(),
        )
    }

    /// As [`Node::with`], with Secrets Manager at `moto`, which already holds the node's secrets
    /// (see [`Moto::with_secrets`]) or forwards to one that does.
    pub fn with_moto(hooks: Hooks, moto: Moto) -> Self {
        Self::build(hooks, None, Arc::new(moto), None, AwsKey::testing())
    }

    /// Like `new`, with the secrets in a fresh account of a moto server shared with other nodes
    /// (starting moto costs about a second of CPU; a table of many small cases shares one). The
    /// secret ids are the same as in `new`: each account has its own.
    pub fn on_moto(moto: &Arc<Moto>) -> Self {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let account = format!("{}", 200_000_000_000 + n);
        let key = moto.access_key_in(Some(&account), "tfe-node");
        Self::build(
            Hooks::default(),
            Some(shared_secret()),
            moto.clone(),
            Some(account),
            key,
        )
    }

    /// `shared`: the secrets to create for this node (None: `moto` holds them already).
    fn build(
        hooks: Hooks,
        shared: Option<Value>,
        moto: Arc<Moto>,
        account: Option<String>,
        aws_key: AwsKey,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let acct = account.as_deref();
        if let Some(shared) = shared {
            put_node_secrets(&moto, acct, &shared);
        }
        let emulator = Emulator::start();
        emulator.post(
            "/_emulator/groups",
            json!({"name": "tfe-asg", "hooks": [
                {"name": "tfe-launch", "transition": "autoscaling:EC2_INSTANCE_LAUNCHING",
                 "heartbeat_timeout": hooks.launch_timeout, "default_result": "ABANDON"},
                {"name": "tfe-terminate", "transition": "autoscaling:EC2_INSTANCE_TERMINATING",
                 "heartbeat_timeout": hooks.terminate_timeout, "default_result": "CONTINUE"}],
                 "retain_on_terminate_abandon": hooks.retain}),
        );
        let inst = emulator.post(
            "/_emulator/instances",
            json!({"group": "tfe-asg", "private_ip": "10.0.1.5", "spot": hooks.spot}),
        );
        let node = Node {
            config: dir.path().join("agent.toml"),
            instance_id: inst["id"].as_str().unwrap().to_string(),
            imds_port: inst["imds_port"].as_u64().unwrap(),
            dir,
            moto,
            account,
            aws_key,
            emulator,
        };
        std::fs::create_dir_all(node.fake_state()).unwrap();
        node.set_behaviour(json!({}));
        node.write_config("");
        node
    }

    /// Creates a secret in this node's moto account.
    pub fn put_secret(&self, name: &str, value: SecretValue) {
        self.moto
            .put_secret_in(self.account.as_deref(), name, value);
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn fake_state(&self) -> PathBuf {
        self.path("fake-tfe")
    }

    /// Fake TFE knobs; `replicated_conf` and the daemon user are always set to this node's.
    pub fn set_behaviour(&self, mut knobs: Value) {
        knobs["replicated_conf"] = json!(self.path("etc/replicated.conf"));
        knobs["replicated_user"] = json!("nobody");
        if knobs.get("install_duration_s").is_none() {
            knobs["install_duration_s"] = json!(0.2);
        }
        if knobs.get("app_started_after_s").is_none() {
            knobs["app_started_after_s"] = json!(0.8);
        }
        if knobs.get("system_ready_after_s").is_none() {
            knobs["system_ready_after_s"] = json!(0.3);
        }
        std::fs::write(self.fake_state().join("behaviour.json"), knobs.to_string()).unwrap();
    }

    /// The agent config: the documented example with this node's paths, edited by
    /// `replacements`: one `old => new` per line, where a literal `\n` in `new` is a line break.
    pub fn write_config(&self, replacements: &str) {
        let fake_tools = repo().join("tests/fake-tfe");
        let mut text =
            std::fs::read_to_string(repo().join("packaging/agent.toml.example")).unwrap();
        let etc = self.path("etc");
        text = text
            .replace("/opt/tfe/install.sh", &fake_tools.join("install.sh").to_string_lossy())
            .replace("/usr/local/bin/replicatedctl", &fake_tools.join("replicatedctl").to_string_lossy())
            .replace("/usr/local/bin/replicated\"", &format!("{}\"", fake_tools.join("replicated").to_string_lossy()))
            .replace("/etc/replicated.conf", &etc.join("replicated.conf").to_string_lossy())
            .replace("/etc/ptfe-settings.json", &etc.join("ptfe-settings.json").to_string_lossy())
            .replace("/etc/ptfe-license.rli", &etc.join("ptfe-license.rli").to_string_lossy())
            .replace("/var/lib/tfe-node-agent", &self.path("state").to_string_lossy())
            .replace("\npoll_interval = \"5s\"", "\npoll_interval = \"200ms\"")
            .replace(
                "state_dir =",
                &format!("file_owner = \"nobody\"\ntls_cert = \"{0}/cert.pem\"\ntls_key = \"{0}/key.pem\"\nstate_dir =", etc.display()),
            );
        text = with_test_listen(text);
        // Test agents join no cluster (the example names a Redis) unless a test turns it on
        // (`enabled = false => enabled = true`, with the redis_* settings pointed at its Redis).
        assert!(
            text.contains("\n[cluster]"),
            "the example has a [cluster] section"
        );
        text = text.replacen("\n[cluster]", "\n[cluster]\nenabled = false\n#", 1);
        // Likewise no preflight (the Redis, PostgreSQL and bucket the settings name do not exist)
        // unless a test turns it on: `enabled=false => enabled=true` (spelt without spaces, so
        // that the cluster's `enabled = false => …` leaves it alone).
        assert!(
            text.contains("\n[preflight]"),
            "the example has a [preflight] section"
        );
        text = text.replacen("\n[preflight]", "\n[preflight]\nenabled=false\n#", 1);
        for line in replacements.lines().filter(|l| !l.trim().is_empty()) {
            // "old => new" edits the example line by line.
            let (old, new) = line
                .split_once(" => ")
                .expect("replacement is `old => new`");
            assert!(text.contains(old), "config has no {old:?}");
            // A literal `\n` in `new` starts a new line (to add keys under a section header).
            text = text.replace(old, &new.replace("\\n", "\n"));
        }
        std::fs::write(&self.config, text).unwrap();
    }

    /// `replicated admin app-config -k KEY -v VALUE` as an operator runs it on this node (the
    /// fake tool, on this node's fake state).
    pub fn set_live(&self, key: &str, value: &str) {
        let out = Command::new(repo().join("tests/fake-tfe/replicated"))
            .args(["admin", "app-config", "-k", key, "-v", value])
            .env("FAKE_TFE_STATE", self.fake_state())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "replicated admin app-config -k {key}: {:?}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn agent(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tfe-node-agent"));
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("TFE_NODE_AGENT_CONFIG", &self.config)
            .env("AWS_ACCESS_KEY_ID", &self.aws_key.id)
            .env("AWS_SECRET_ACCESS_KEY", &self.aws_key.secret)
            .env("AWS_CONFIG_FILE", self.path("no-aws-config"))
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                self.path("no-aws-credentials"),
            )
            .env("AWS_ENDPOINT_URL_SECRETS_MANAGER", &self.moto.url)
            .env("AWS_ENDPOINT_URL_AUTO_SCALING", &self.emulator.url)
            .env(
                "AWS_EC2_METADATA_SERVICE_ENDPOINT",
                format!("http://127.0.0.1:{}", self.imds_port),
            )
            .env("FAKE_TFE_STATE", self.fake_state())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    /// Starts the agent in the background; its stderr is collected as it comes.
    pub fn start(&self, args: &[&str]) -> Agent {
        let mut child = self.agent(args).spawn().expect("spawn agent");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let err = child.stderr.take().unwrap();
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });
        Agent { child, lines }
    }

    /// Asks the emulator to terminate this instance (scale-in); `delay` seconds between IMDS
    /// saying Terminated and the wait state.
    pub fn scale_in(&self, delay: f64) {
        self.emulator.post(
            &format!("/_emulator/instances/{}/terminate", self.instance_id),
            json!({"wait_state_delay": delay}),
        );
    }

    /// The fake node-drain's counters.
    pub fn drains(&self) -> Value {
        std::fs::read_to_string(self.fake_state().join("drain.json"))
            .map(|t| serde_json::from_str(&t).unwrap())
            .unwrap_or(json!({"drains_started": 0}))
    }

    /// Calls of one fake tool command (e.g. "node-drain", "stop"), start events only.
    pub fn tool_calls(&self, word: &str) -> Vec<Value> {
        tool_starts(self.calls(), word)
    }

    /// Runs the agent to completion (bounded), asserting it printed no secret value.
    pub fn run(&self, args: &[&str], timeout: Duration) -> Run {
        let child = self.agent(args).spawn().expect("spawn agent");
        let run = Run::wait(child, timeout);
        run.assert_no_secrets();
        run
    }

    /// The fake tools' call log, as written.
    fn calls_text(&self) -> String {
        std::fs::read_to_string(self.fake_state().join("calls.jsonl")).unwrap_or_default()
    }

    /// The fake tools' call log.
    pub fn calls(&self) -> Vec<Value> {
        self.calls_text()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    pub fn install_runs(&self) -> Vec<Value> {
        self.calls()
            .into_iter()
            .filter(|c| c["tool"] == "install.sh" && c["event"] == "start")
            .collect()
    }

    /// The pid of the child the fake install.sh starts when told to hang.
    pub fn install_child_pid(&self) -> i32 {
        std::fs::read_to_string(self.fake_state().join("install-child.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    pub fn instance(&self) -> Value {
        self.emulator
            .get(&format!("/_emulator/instances/{}", self.instance_id))
    }

    /// No secret value in the fake tools' argv either.
    pub fn assert_no_secrets_in_calls(&self) {
        let text = self.calls_text();
        for s in SHARED_SECRET_VALUES {
            assert!(
                !text.contains(s),
                "a secret value reached a TFE tool's argv"
            );
        }
    }
}

/// Where a test agent's HTTP API listens: a free loopback port of its own, so that agents run in
/// parallel never fight over the default one. [`Agent::api_url`] reads back the port it took; a
/// test edits this line (`TEST_LISTEN => listen = …`) to listen elsewhere.
pub const TEST_LISTEN: &str = "listen = \"127.0.0.1:0\"";

/// `text` (the example config) with `[observe] listen` set to [`TEST_LISTEN`]: the example's own
/// `listen` line replaced, or the section added when the example has none.
fn with_test_listen(text: String) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let header = lines
        .iter()
        .position(|l| l.trim_start().starts_with("[observe]"));
    match header {
        None => {
            lines.push(String::new());
            lines.push("[observe]".into());
            lines.push(TEST_LISTEN.into());
        }
        Some(h) => {
            let end = lines[h + 1..]
                .iter()
                .position(|l| l.trim_start().starts_with('['))
                .map_or(lines.len(), |i| h + 1 + i);
            let listen = (h + 1..end).find(|&i| {
                let l = lines[i].trim_start().trim_start_matches('#').trim_start();
                l.starts_with("listen ") || l.starts_with("listen=")
            });
            match listen {
                Some(i) => lines[i] = TEST_LISTEN.into(),
                None => lines.insert(h + 1, TEST_LISTEN.into()),
            }
        }
    }
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

/// A running agent. Dropping it kills it.
pub struct Agent {
    pub child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Agent {
    /// An agent started elsewhere, its stderr collected into `lines` by a reader thread.
    pub fn from_parts(child: Child, lines: Arc<Mutex<Vec<String>>>) -> Self {
        Agent { child, lines }
    }

    /// Waits (bounded) for a stderr line containing `needle`; returns all lines so far.
    pub fn wait_line(&self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let text = self.stderr();
            if text.lines().any(|l| l.contains(needle)) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "no line with {needle:?} within {timeout:?}; saw:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits (bounded) for the agent to log where its HTTP API listens on TCP and returns that
    /// base URL (`http://127.0.0.1:PORT`, the port it took for `:0`).
    pub fn api_url(&self, timeout: Duration) -> String {
        const SAYS: &str = "HTTP API listening on http://";
        let text = self.wait_line(SAYS, timeout);
        let line = text.lines().find(|l| l.contains(SAYS)).unwrap();
        let at = line.find(SAYS).unwrap() + SAYS.len() - "http://".len();
        line[at..].split_whitespace().next().unwrap().to_string()
    }

    pub fn stderr(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), signal).unwrap();
    }

    /// Waits (bounded) for the agent to exit; returns its exit code and checks its output for
    /// secret values.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "agent did not exit within {timeout:?}; stderr:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        std::thread::sleep(Duration::from_millis(100)); // the reader thread's last lines
        let text = self.stderr();
        for s in SHARED_SECRET_VALUES {
            assert!(
                !text.contains(s),
                "a secret value appeared in the agent's output"
            );
        }
        status.code()
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A finished agent run.
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn wait(mut child: Child, timeout: Duration) -> Run {
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        let out_t = std::thread::spawn(move || read_all(out));
        let err_t = std::thread::spawn(move || read_all(err));
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break Some(s);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let run = Run {
            code: status.and_then(|s| s.code()),
            stdout: out_t.join().unwrap(),
            stderr: err_t.join().unwrap(),
        };
        assert!(
            status.is_some(),
            "agent did not exit within {timeout:?}; stderr:\n{}",
            run.stderr
        );
        run
    }

    pub fn assert_no_secrets(&self) {
        for s in SHARED_SECRET_VALUES {
            assert!(
                !self.stdout.contains(s) && !self.stderr.contains(s),
                "a secret value appeared in the agent's output"
            );
        }
    }

    pub fn assert_code(&self, code: i32) {
        assert_eq!(
            self.code,
            Some(code),
            "exit code; stderr:\n{}\nstdout:\n{}",
            self.stderr,
            self.stdout
        );
    }
}

fn read_all(mut r: impl Read) -> String {
    let mut s = String::new();
    let _ = r.read_to_string(&mut s);
    s
}

/// What `Emulator::resolutions` shows after exactly one resolution of the launch hook.
pub fn launch_resolved(result: &str, cause: &str) -> Vec<(String, String, String)> {
    vec![("tfe-launch".into(), result.into(), cause.into())]
}

/// The start events of one fake tool command (e.g. "node-drain", "stop") in a fake's call log.
pub fn tool_starts(calls: Vec<Value>, word: &str) -> Vec<Value> {
    calls
        .into_iter()
        .filter(|c| {
            c["event"] == "start"
                && c["argv"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|w| w == word))
        })
        .collect()
}
